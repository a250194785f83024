//! `tessera serve`: settings from a TOML file, overridden by environment variables and flags
//! (flag > environment > file > default), then the RPC server until SIGINT/SIGTERM.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_coordinator::catalog::{CatalogFile, FilesReport};
use tessera_rpc::auth::{AuthConfig, KeyKind, KeySpec};
use tessera_rpc::cluster::Cluster;
use tessera_rpc::{Limits, Server, ServerConfig, TlsFiles};
use tessera_storage_engine::io::host;
use tessera_storage_engine::{Engine, EngineConfig};

/// Flags of `tessera serve`; each also has an environment name where the spec gives one.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "DATA_PATH")]
    pub data: Option<PathBuf>,
    /// RPC address (default 0.0.0.0:7070).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP address for /metrics and /health (default 127.0.0.1:9090; "off" disables it).
    #[arg(long)]
    pub http: Option<String>,
    /// File holding the HS256 token secret (at least 32 bytes).
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Executor cores (default: every CPU this process may use).
    #[arg(long)]
    pub cores: Option<usize>,
    /// CPUs to pin the executors to, one per core, as `taskset -c` writes them (e.g. 2-5,8);
    /// each must be in the process's allowed set. Default: the first allowed CPUs.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory the node may use, GiB; a query's result may hold at most a quarter of it.
    #[arg(long, env = "MAX_MEMORY_GB")]
    pub max_memory_gb: Option<f64>,
    /// Buffer pool (decoded pages) size, GiB.
    #[arg(long, env = "PARQUET_CACHE_SIZE_GB")]
    pub parquet_cache_size_gb: Option<f64>,
    /// Queries running at once before new ones queue briefly and then get `overloaded`.
    #[arg(long, env = "CONCURRENT_QUERIES")]
    pub concurrent_queries: Option<usize>,
    /// TLS certificate chain (PEM) for the RPC port; with --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Keep whole query results in this Redis (`redis://[user:password@]host[:port][/db]`),
    /// shared by every node using it; keyed by tenant, query and the version of the data read,
    /// so never stale. Off by default.
    #[arg(long, env = "TESSERA_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Check the configuration (file, environment and flags), print the settings it resolves
    /// to, and exit: 0 when the node would start with them.
    #[arg(long)]
    pub check_config: bool,
    /// Coordinators to register with and heartbeat to, HOST:PORT[,HOST:PORT...] (the node
    /// follows whichever answers).
    #[arg(long, value_delimiter = ',', requires = "node_id")]
    pub coordinator: Vec<String>,
    /// This node's name in the cluster ([a-z0-9_-], unique).
    #[arg(long)]
    pub node_id: Option<String>,
    /// The RPC address clients and peers reach this node at (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Failure-domain labels, KEY=VALUE[,KEY=VALUE...] (e.g. host=a,rack=r1).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// A node token (`tessera token --role node`), presented to the coordinators and to peer
    /// nodes (replication, forwarded writes).
    #[arg(long, env = "TESSERA_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// How long a table's leader waits for an in-sync follower to acknowledge a batch before
    /// it takes the follower out of the in-sync set (it stays out until it catches up).
    #[arg(long, default_value_t = 30_000)]
    pub replication_timeout_ms: u64,
    /// How often the node reads every file of its in-sync replicas against their CRC-32 (a
    /// damaged copy leaves the in-sync set and is copied again from the table's leader), s.
    #[arg(long, default_value_t = 21_600)]
    pub scrub_interval_s: u64,
    /// How often a table's leader compares what its in-sync replicas hold (rows, and each
    /// column's values, minimum and maximum, with the table's writes held back for the moment
    /// it takes); a replica that differs is copied again, s.
    #[arg(long, default_value_t = 600)]
    pub anti_entropy_interval_s: u64,
    /// The most MiB a second a copy of a table to another node sends (catching a follower up,
    /// re-replication, moving a replica onto a new node); 0: no limit.
    #[arg(long, default_value_t = 256)]
    pub copy_mib_per_s: u64,
    /// How long a fragment of a query over a partitioned table may run on one replica before
    /// the same fragment is also sent to another (the first answer is used), ms.
    #[arg(long, default_value_t = 500)]
    pub hedge_after_ms: u64,
}

/// The TOML file. Unknown keys are errors, so a typo never silently falls back to a default.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    http: Option<String>,
    cores: Option<usize>,
    cpus: Option<String>,
    concurrent_queries: Option<usize>,
    /// Busy-poll before parking an idle core, µs (lower latency, more idle CPU).
    spin_before_park_us: Option<u64>,
    /// On SIGTERM, how long running queries and writes may take to finish (default 30).
    drain_timeout_seconds: Option<u64>,
    #[serde(default)]
    memory: MemoryFile,
    #[serde(default)]
    log: LogFile,
    #[serde(default)]
    query_stats: QueryStatsFile,
    #[serde(default)]
    auth: AuthFile,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    ingest: IngestFile,
    #[serde(default)]
    compaction: CompactionFile,
    tls: Option<TlsFile>,
    #[serde(default)]
    result_cache: ResultCacheFile,
}

/// `[memory]`: what the node may use in all, and its budgets, each enforced: queries past
/// theirs fail with `limit`, caches evict, appends wait for flushes.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct MemoryFile {
    /// All the node may use, GiB (`MAX_MEMORY_GB`; default 16).
    max_memory_gb: Option<f64>,
    /// Decoded Parquet pages (the buffer pool), GiB (`PARQUET_CACHE_SIZE_GB`; default half).
    parquet_cache_gb: Option<f64>,
    /// Parquet footers and page indexes, MiB (default 256, at most 1/32 of the total).
    metadata_cache_mb: Option<u64>,
    /// Partial aggregates per immutable file, MiB (0: off; default 128, at most 1/64).
    partial_cache_mb: Option<u64>,
    /// Rows of streaming ingestion buffered before flushes, MiB (default 1024, at most 1/8).
    ingest_buffer_mb: Option<u64>,
    /// Groups, sorts and results of all running queries, GiB (default: what the others leave).
    query_processing_gb: Option<f64>,
}

/// `[log]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct LogFile {
    /// A `tracing` filter: `info`, `warn`, `info,tessera_rpc=debug` (default info; RUST_LOG wins).
    level: Option<String>,
    /// auto (text on a terminal, JSON lines otherwise), json or text.
    format: Option<crate::logging::Format>,
    /// Queries at least this slow are logged at warn (default 1000).
    slow_query_ms: Option<u64>,
}

/// `[query_stats]`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct QueryStatsFile {
    /// Finished queries kept for the `query_stats` table (default 10000).
    capacity: Option<usize>,
}

/// `[result_cache]`: the shared final-result cache in Redis (off unless a URL is given).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ResultCacheFile {
    /// As `--redis-url`.
    redis_url: Option<String>,
    /// How long a stored result lives, seconds (default 300).
    ttl_seconds: Option<u64>,
    /// Largest result stored, MiB of Arrow IPC (default 4).
    max_result_mib: Option<u64>,
    /// Timeout of each call to Redis, milliseconds (default 100).
    timeout_ms: Option<u64>,
}

/// `[compaction]`: merging small files, tenant by tenant.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct CompactionFile {
    /// Seconds between background rounds; 0 turns background compaction off (default 10).
    interval_seconds: Option<u64>,
    /// A partition with more files than this is compacted (default 8).
    files_per_partition: Option<usize>,
    /// File MiB one job merges at most; its rows are sorted in memory (default 64).
    job_mib: Option<u64>,
    /// File MiB one tenant's jobs may merge per round (default 256).
    tenant_mib_per_round: Option<u64>,
    /// Per-tenant overrides: `[compaction.tenants.acme]` with `files_per_partition` and
    /// `mib_per_round`.
    #[serde(default)]
    tenants: std::collections::BTreeMap<String, TenantCompactionFile>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct TenantCompactionFile {
    files_per_partition: Option<usize>,
    mib_per_round: Option<u64>,
}

/// `[ingest]`: streaming ingestion.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct IngestFile {
    /// A table's buffered rows on one core are flushed to Parquet at this size (default 128).
    flush_mib: Option<u64>,
    /// ... or when the oldest is this old (default 30).
    flush_seconds: Option<u64>,
    /// Largest batch one append takes, in MiB of Arrow IPC (default 256).
    max_batch_mib: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: Option<u64>,
    #[serde(default)]
    keys: Vec<KeyFile>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: Option<String>,
    /// hs256 (file holds the secret), eddsa or rs256 (file holds the PEM public key).
    kind: String,
    file: PathBuf,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_message_mib: Option<usize>,
    nesting_limit: Option<i32>,
    calls_in_flight_per_connection: Option<usize>,
    max_connections: Option<usize>,
    admission_wait_ms: Option<u64>,
    /// Queries that may wait for a slot, per class (beyond: `overloaded`).
    admission_queue: Option<usize>,
    /// Short queries (point lookups, ranges statistics mostly answer) running at once.
    concurrent_short_queries: Option<usize>,
    /// Microseconds a task runs before it yields to waiting work on its core (default 500).
    time_slice_us: Option<u64>,
    /// CPU shares of scans over much data against short queries' 1000.
    throughput_shares: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    stall_timeout_seconds: Option<u64>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug)]
pub struct Resolved {
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub log_level: String,
    pub log_format: crate::logging::Format,
    /// On SIGTERM, how long running queries and writes may take to finish.
    pub drain_timeout: Duration,
}

const GIB: f64 = (1u64 << 30) as f64;

pub(crate) fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // A secret file written by `echo` ends in a newline that is not part of the secret.
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Ok(bytes)
}

pub fn resolve(args: &ServeArgs) -> Result<Resolved, String> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data = args
        .data
        .clone()
        .or(file.data_path)
        .unwrap_or_else(|| PathBuf::from("./data"));
    let mut engine = EngineConfig::new(&data);
    let cores = args.cores.or(file.cores);
    if let Some(cores) = cores {
        engine.cores = cores;
    }
    if let Some(text) = args.cpus.as_ref().or(file.cpus.as_ref()) {
        let cpus = host::parse_cpu_list(text).map_err(|e| e.to_string())?;
        if cores.is_some_and(|cores| cores != cpus.len()) {
            return Err(format!(
                "--cores {} and --cpus {text} ({} CPUs) disagree: give one CPU per core",
                engine.cores,
                cpus.len()
            ));
        }
        engine.cores = cpus.len();
        engine.cpus = Some(cpus);
    }
    let memory = resolve_memory(args, &file.memory)?;
    engine.buffer_pool_bytes = memory.parquet_cache;
    engine.metadata_cache_bytes = memory.metadata_cache;
    engine.partial_cache_bytes = memory.partial_cache;
    engine.ingest.memory_bytes = memory.ingest_buffers;
    engine.query_memory_budget_bytes = memory.query_processing;
    engine.spin_before_park_us = file.spin_before_park_us.unwrap_or(0);

    let mut keys = Vec::new();
    if let Some(path) = &args.jwt_secret_file {
        keys.push(KeySpec {
            id: None,
            kind: KeyKind::Hs256,
            material: read_key(path)?,
        });
    }
    for key in &file.auth.keys {
        let kind = match key.kind.as_str() {
            "hs256" => KeyKind::Hs256,
            "eddsa" => KeyKind::EdDsa,
            "rs256" => KeyKind::Rs256,
            other => {
                return Err(format!(
                    "auth key kind {other:?}: use hs256, eddsa or rs256"
                ))
            }
        };
        keys.push(KeySpec {
            id: key.id.clone(),
            kind,
            material: read_key(&key.file)?,
        });
    }
    if keys.is_empty() {
        return Err(
            "no token key: pass --jwt-secret-file or list [[auth.keys]] in the config file".into(),
        );
    }
    let mut auth = AuthConfig::new(keys);
    if let Some(issuer) = &file.auth.issuer {
        auth.issuer = issuer.clone();
    }
    if let Some(audience) = &file.auth.audience {
        auth.audience = audience.clone();
    }
    if let Some(leeway) = file.auth.leeway_seconds {
        auth.leeway_seconds = leeway;
    }

    let mut limits = Limits::default();
    let l = &file.limits;
    if let Some(mib) = l.max_message_mib {
        limits.traversal_limit_words = mib << 17;
    }
    if let Some(v) = l.nesting_limit {
        limits.nesting_limit = v;
    }
    if let Some(v) = l.calls_in_flight_per_connection {
        limits.calls_in_flight_per_connection = v;
    }
    if let Some(v) = l.max_connections {
        limits.connections_max = v;
    }
    if let Some(v) = l.admission_wait_ms {
        limits.admission_wait = Duration::from_millis(v);
    }
    if let Some(v) = l.admission_queue {
        limits.admission_queue = v;
    }
    if let Some(v) = l.concurrent_short_queries {
        limits.concurrent_short_queries = v.max(1);
    }
    if let Some(v) = l.time_slice_us {
        engine.time_slice = Duration::from_micros(v.clamp(50, 1_000_000));
    }
    if let Some(v) = l.throughput_shares {
        engine.throughput_shares = v.clamp(1, 1000);
    }
    if let Some(v) = l.idle_timeout_seconds {
        limits.idle_timeout = Duration::from_secs(v);
    }
    if let Some(v) = l.stall_timeout_seconds {
        limits.stall_timeout = Duration::from_secs(v);
    }
    if let Some(v) = args.concurrent_queries.or(file.concurrent_queries) {
        if v == 0 {
            return Err("CONCURRENT_QUERIES must be at least 1".into());
        }
        limits.concurrent_queries = v;
    }
    let ingest = &file.ingest;
    if let Some(v) = ingest.flush_mib {
        engine.ingest.flush_bytes = v.max(1) << 20;
    }
    if let Some(v) = ingest.flush_seconds {
        engine.ingest.flush_age = Duration::from_secs(v.max(1));
    }
    if let Some(v) = ingest.max_batch_mib {
        limits.ingest_batch_bytes = v.max(1) << 20;
    }
    let compaction = &file.compaction;
    engine.compaction.interval = match compaction.interval_seconds.unwrap_or(10) {
        0 => None,
        seconds => Some(Duration::from_secs(seconds)),
    };
    if let Some(v) = compaction.files_per_partition {
        engine.compaction.policy.files_per_partition = v.max(1);
    }
    if let Some(v) = compaction.job_mib {
        engine.compaction.policy.job_bytes = v.max(1) << 20;
    }
    if let Some(v) = compaction.tenant_mib_per_round {
        engine.compaction.tenant_bytes_per_round = v.max(1) << 20;
    }
    for (tenant, custom) in &compaction.tenants {
        engine.compaction.tenants.insert(
            tenant.clone(),
            tessera_storage_engine::engine::TenantCompaction {
                files_per_partition: custom.files_per_partition.map(|v| v.max(1)),
                bytes_per_round: custom.mib_per_round.map(|v| v.max(1) << 20),
            },
        );
    }
    // One query's state and result may hold a quarter of the node, within the queries' budget.
    limits.query_memory_bytes = (memory.max / 4).min(memory.query_processing);
    engine.query_memory_bytes = limits.query_memory_bytes;
    let log = &file.log;
    let log_level = log.level.clone().unwrap_or_else(|| "info".into());
    crate::logging::check_level(&log_level)?;
    limits.slow_query = Duration::from_millis(log.slow_query_ms.unwrap_or(1000));
    if let Some(capacity) = file.query_stats.capacity {
        limits.query_stats_capacity = capacity;
    }

    let http = match args.http.clone().or(file.http) {
        Some(text) if text == "off" => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| format!("bad HTTP address {text:?} (HOST:PORT or off)"))?,
        ),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let cache_file = &file.result_cache;
    let result_cache = args
        .redis_url
        .clone()
        .or(cache_file.redis_url.clone())
        .map(|url| {
            let mut cache = tessera_rpc::ResultCacheConfig::new(url);
            if let Some(seconds) = cache_file.ttl_seconds {
                cache.ttl = Duration::from_secs(seconds.max(1));
            }
            if let Some(mib) = cache_file.max_result_mib {
                cache.max_result_bytes = (mib << 20) as usize;
            }
            if let Some(ms) = cache_file.timeout_ms {
                cache.timeout = Duration::from_millis(ms.max(1));
            }
            cache
        });
    let server = ServerConfig {
        result_cache,
        // Set once the node's identity in the cluster is known (`join_cluster`).
        cluster: None,
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7070))),
        http,
        auth,
        limits,
        max_memory_bytes: memory.max,
        tls: match (&args.tls_cert, &args.tls_key, &file.tls) {
            (Some(certificate), Some(key), _) => Some(TlsFiles {
                certificate: certificate.clone(),
                key: key.clone(),
            }),
            (_, _, Some(tls)) => Some(TlsFiles {
                certificate: tls.cert.clone(),
                key: tls.key.clone(),
            }),
            _ => None,
        },
    };
    Ok(Resolved {
        engine,
        server,
        log_level,
        log_format: log.format.unwrap_or(crate::logging::Format::Auto),
        drain_timeout: Duration::from_secs(file.drain_timeout_seconds.unwrap_or(30)),
    })
}

/// The `[memory]` budgets in bytes.
#[derive(Debug, PartialEq)]
struct Memory {
    max: u64,
    parquet_cache: u64,
    metadata_cache: u64,
    partial_cache: u64,
    ingest_buffers: u64,
    query_processing: u64,
}

fn resolve_memory(args: &ServeArgs, file: &MemoryFile) -> Result<Memory, String> {
    const MIB: u64 = 1 << 20;
    let max_gb = args.max_memory_gb.or(file.max_memory_gb).unwrap_or(16.0);
    if !(max_gb.is_finite() && max_gb > 0.0) {
        return Err(format!(
            "max_memory_gb (MAX_MEMORY_GB) must be positive, not {max_gb}"
        ));
    }
    let max = (max_gb * GIB) as u64;
    let cache_gb = args
        .parquet_cache_size_gb
        .or(file.parquet_cache_gb)
        .unwrap_or(max_gb / 2.0);
    if !(cache_gb.is_finite() && cache_gb > 0.0) {
        return Err(format!(
            "parquet_cache_gb (PARQUET_CACHE_SIZE_GB) must be positive, not {cache_gb}"
        ));
    }
    let parquet_cache = (cache_gb * GIB) as u64;
    let metadata_cache = file
        .metadata_cache_mb
        .map_or((256 * MIB).min(max / 32), |mb| mb.max(1) * MIB);
    let partial_cache = file
        .partial_cache_mb
        .map_or((128 * MIB).min(max / 64), |mb| mb * MIB);
    let ingest_buffers = file
        .ingest_buffer_mb
        .map_or((1024 * MIB).min(max / 8), |mb| mb.max(1) * MIB);
    let others = parquet_cache + metadata_cache + partial_cache + ingest_buffers;
    let query_processing = match file.query_processing_gb {
        Some(gb) if gb.is_finite() && gb > 0.0 => (gb * GIB) as u64,
        Some(gb) => return Err(format!("query_processing_gb must be positive, not {gb}")),
        None => max.saturating_sub(others),
    };
    let gib = |bytes: u64| bytes as f64 / GIB;
    if query_processing == 0 || others + query_processing > max {
        return Err(format!(
            "the [memory] budgets ({:.3} GiB) do not fit max_memory_gb ({max_gb} GiB): \
             parquet_cache {:.3}, metadata_cache {:.3}, partial_cache {:.3}, ingest_buffers \
             {:.3}, query_processing {:.3} GiB; lower a budget or raise max_memory_gb",
            gib(others + query_processing),
            gib(parquet_cache),
            gib(metadata_cache),
            gib(partial_cache),
            gib(ingest_buffers),
            gib(query_processing),
        ));
    }
    Ok(Memory {
        max,
        parquet_cache,
        metadata_cache,
        partial_cache,
        ingest_buffers,
        query_processing,
    })
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// What `--check-config` prints: the settings that decide the node's shape.
fn describe(resolved: &Resolved) -> String {
    let engine = &resolved.engine;
    let server = &resolved.server;
    let mib = |bytes: u64| format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64);
    let mut lines = vec![
        format!("data_path        {}", engine.data_dir.display()),
        format!("listen           {}", server.listen),
        format!(
            "http             {}",
            server.http.map_or("off".into(), |a| a.to_string())
        ),
        format!("cores            {}", engine.cores),
        format!("max_memory       {}", mib(server.max_memory_bytes)),
        format!("  parquet_cache    {}", mib(engine.buffer_pool_bytes)),
        format!("  metadata_cache   {}", mib(engine.metadata_cache_bytes)),
        format!("  partial_cache    {}", mib(engine.partial_cache_bytes)),
        format!("  ingest_buffers   {}", mib(engine.ingest.memory_bytes)),
        format!(
            "  query_processing {}",
            mib(engine.query_memory_budget_bytes)
        ),
        format!("per-query memory {}", mib(engine.query_memory_bytes)),
        format!("token keys       {}", server.auth.keys.len()),
        format!(
            "tls              {}",
            if server.tls.is_some() { "on" } else { "off" }
        ),
        format!(
            "result cache     {}",
            server.result_cache.as_ref().map_or("off", |_| "redis")
        ),
        format!(
            "log              {} ({:?})",
            resolved.log_level, resolved.log_format
        ),
        format!(
            "query_stats      {} queries; slow above {} ms",
            server.limits.query_stats_capacity,
            server.limits.slow_query.as_millis()
        ),
        format!("drain timeout    {} s", resolved.drain_timeout.as_secs()),
    ];
    lines.push(String::new());
    lines.join("\n")
}

/// The settings a SIGHUP cannot change, one `{:#?}` line each: what differs needs a restart.
fn restart_only(resolved: &Resolved) -> Vec<String> {
    let server = &resolved.server;
    let limits = Limits {
        // Reloaded live (`Server::reload`).
        concurrent_queries: 0,
        concurrent_short_queries: 0,
        admission_queue: 0,
        admission_wait: Duration::ZERO,
        query_stats_capacity: 0,
        slow_query: Duration::ZERO,
        ..server.limits.clone()
    };
    let mut lines: Vec<String> = format!("{:#?}\n{limits:#?}", resolved.engine)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.extend([
        format!("listen: {}", server.listen),
        format!("http: {:?}", server.http),
        format!("tls: {:?}", server.tls),
        format!("result_cache: {:?}", server.result_cache),
        format!("max_memory: {}", server.max_memory_bytes),
        format!("log.format: {:?}", resolved.log_format),
        format!("drain_timeout: {:?}", resolved.drain_timeout),
    ]);
    lines
}

/// Names of the settings whose lines differ between two `restart_only` views.
fn changed(old: &[String], new: &[String]) -> Vec<String> {
    let mut names: Vec<String> = old
        .iter()
        .zip(new)
        .filter(|(a, b)| a != b)
        .map(|(line, _)| {
            let line = line.trim();
            line.split_once(':')
                .map_or(line, |(name, _)| name)
                .to_owned()
        })
        .collect();
    if old.len() != new.len() {
        names.push("list settings (CPUs, tenants' compaction, TLS or cache)".into());
    }
    names.dedup();
    names
}

/// Applies what a SIGHUP may change from the re-read configuration, and logs what changed
/// and what needs a restart.
fn reload(
    args: &ServeArgs,
    current: &mut Resolved,
    server: &Server,
    logger: &crate::logging::Logger,
) -> Result<(), String> {
    let new = resolve(args)?;
    let limits = &new.server.limits;
    server
        .reload(new.server.auth.clone(), limits)
        .map_err(|e| e.to_string())?;
    let mut applied = vec![format!("{} token key(s)", new.server.auth.keys.len())];
    if new.log_level != current.log_level {
        match logger.set_level(&new.log_level)? {
            true => applied.push(format!("log level {}", new.log_level)),
            false => applied.push("log level (RUST_LOG decides it; unchanged)".into()),
        }
    }
    let old = &current.server.limits;
    let live = [
        (
            "concurrent_queries",
            old.concurrent_queries != limits.concurrent_queries,
        ),
        (
            "concurrent_short_queries",
            old.concurrent_short_queries != limits.concurrent_short_queries,
        ),
        (
            "admission_queue",
            old.admission_queue != limits.admission_queue,
        ),
        (
            "admission_wait_ms",
            old.admission_wait != limits.admission_wait,
        ),
        (
            "query_stats.capacity",
            old.query_stats_capacity != limits.query_stats_capacity,
        ),
        ("slow_query_ms", old.slow_query != limits.slow_query),
    ];
    applied.extend(
        live.iter()
            .filter(|(_, differs)| *differs)
            .map(|(n, _)| n.to_string()),
    );
    let restart = changed(&restart_only(current), &restart_only(&new));
    tracing::info!(applied = %applied.join(", "), "configuration reloaded");
    if !restart.is_empty() {
        tracing::warn!(
            settings = %restart.join(", "),
            "configuration changes that need a restart were not applied"
        );
    }
    // The running node keeps the settings that need a restart.
    current.server.auth = new.server.auth;
    current.server.limits.concurrent_queries = limits.concurrent_queries;
    current.server.limits.concurrent_short_queries = limits.concurrent_short_queries;
    current.server.limits.admission_queue = limits.admission_queue;
    current.server.limits.admission_wait = limits.admission_wait;
    current.server.limits.query_stats_capacity = limits.query_stats_capacity;
    current.server.limits.slow_query = limits.slow_query;
    current.log_level = new.log_level;
    Ok(())
}

/// With `--coordinator`: the node's view of its cluster (placement through the coordinators,
/// sessions with peers), before the server starts.
fn cluster(args: &ServeArgs) -> Result<Option<Arc<Cluster>>, String> {
    if args.coordinator.is_empty() {
        return Ok(None);
    }
    let token = args.cluster_token.clone().ok_or(
        "--coordinator needs a node token (tessera token --role node): --cluster-token or \
         TESSERA_CLUSTER_TOKEN",
    )?;
    let node_id = args.node_id.clone().unwrap_or_default();
    tessera_coordinator::catalog::validate_node_id(&node_id).map_err(|e| e.to_string())?;
    let metadata = Arc::new(tessera_coordinator::client::Coordinators::new(
        args.coordinator.clone(),
        token.clone(),
    ));
    let mut cluster = Cluster::new(node_id, token, metadata);
    cluster.replication_timeout = Duration::from_millis(args.replication_timeout_ms.max(1));
    cluster.scrub_interval = Duration::from_secs(args.scrub_interval_s.max(1));
    cluster.anti_entropy_interval = Duration::from_secs(args.anti_entropy_interval_s.max(1));
    cluster.copy_bytes_per_second = args.copy_mib_per_s << 20;
    cluster.hedge_after = Duration::from_millis(args.hedge_after_ms.max(1));
    Ok(Some(Arc::new(cluster)))
}

/// With `--coordinator`: registers the node and keeps heartbeating (`NodeAgent`), which keeps
/// the cluster's routing table current.
fn join_cluster(
    args: &ServeArgs,
    cluster: Option<Arc<Cluster>>,
    server: &Server,
    data: &Path,
) -> Result<Option<tessera_coordinator::client::NodeAgent>, String> {
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    let token = args.cluster_token.clone().unwrap_or_default();
    let mut labels = std::collections::BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| format!("label {label:?} is not KEY=VALUE"))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    let registration = tessera_coordinator::catalog::NodeRegistration {
        node_id: args.node_id.clone().unwrap_or_default(),
        address: args
            .advertise
            .clone()
            .unwrap_or_else(|| server.address().to_string()),
        http_address: server.http_address().map(|a| a.to_string()),
        cores: server.engine().cores() as u32,
        labels,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let metrics = server.shared_metrics();
    let data = data.to_owned();
    let copies = cluster.clone();
    let listed = FileLists::default();
    let report = std::sync::Arc::new(move || {
        let (used, capacity) = tessera_rpc::metrics::disk_usage(&data).unwrap_or((0, 0));
        let (table_bytes, files) = led_tables(&copies, &data, &listed);
        tessera_coordinator::client::Beat {
            report: tessera_coordinator::catalog::NodeReport {
                disk_used_bytes: used,
                disk_capacity_bytes: capacity,
                queries_running: metrics.queries_running.get().max(0) as u32,
                copying: copies.copying(),
                table_bytes,
            },
            files,
        }
    });
    tessera_coordinator::client::NodeAgent::start(
        args.coordinator.clone(),
        token,
        registration,
        report,
        Arc::new(move |routing| cluster.set_routing(routing)),
    )
    .map(Some)
    .map_err(|e| format!("starting the node agent: {e}"))
}

/// The report of each led table's manifest for the catalog, by (tenant, table), with the
/// (incarnation, manifest version, leader epoch) it was made at: made again only when the
/// manifest or the leadership changes.
type FileLists = std::sync::Mutex<
    std::collections::HashMap<(String, String), ((u64, u64, u64), Arc<FilesReport>)>,
>;

/// For each table this node leads, from its manifest: the bytes of its files, as a heartbeat
/// reports them (`catalog::table_bytes_json`), and its files for the catalog.
fn led_tables(
    cluster: &Cluster,
    data: &Path,
    lists: &FileLists,
) -> (String, Vec<tessera_coordinator::client::LedFiles>) {
    let mut lists = lists.lock().unwrap_or_else(|p| p.into_inner());
    let mut bytes = Vec::new();
    let mut files = Vec::new();
    let mut led = std::collections::HashSet::new();
    for placement in cluster.held_placements() {
        if placement.leader != cluster.node_id() {
            continue;
        }
        let (tenant, table) = (&placement.tenant, &placement.table);
        let Ok(Some(manifest)) =
            tessera_storage_engine::table::manifest::load_cached(data, tenant, table)
        else {
            continue;
        };
        let key = (tenant.clone(), table.clone());
        let version = (manifest.incarnation, manifest.version, placement.epoch);
        let report = match lists.get(&key) {
            Some((at, report)) if *at == version => report.clone(),
            _ => {
                let report = Arc::new(files_report(&manifest, placement.epoch));
                lists.insert(key.clone(), (version, Arc::clone(&report)));
                report
            }
        };
        bytes.push((tenant.clone(), table.clone(), manifest.total_bytes()));
        files.push(tessera_coordinator::client::LedFiles {
            tenant: tenant.clone(),
            table: table.clone(),
            report,
        });
        led.insert(key);
    }
    lists.retain(|key, _| led.contains(key));
    (
        tessera_coordinator::catalog::table_bytes_json(&bytes),
        files,
    )
}

/// What the catalog keeps of a manifest: its files with their statistics, the table's schema
/// and writer settings.
fn files_report(
    manifest: &tessera_storage_engine::table::manifest::TableManifest,
    epoch: u64,
) -> FilesReport {
    let schema = serde_json::json!({
        "columns": manifest.columns,
        "partition": manifest.partition,
        "sort_column": manifest.sort_column,
    });
    FilesReport {
        epoch,
        manifest_version: manifest.version,
        schema_json: schema.to_string(),
        settings_json: serde_json::to_string(&manifest.writer).unwrap_or_default(),
        files: manifest
            .files
            .iter()
            .map(|entry| CatalogFile {
                path: entry.path.clone(),
                bytes: entry.bytes,
                rows: entry.rows,
                crc32: entry.crc32,
                entry_json: serde_json::to_string(entry).unwrap_or_default(),
            })
            .collect(),
    }
}

pub fn run(args: &ServeArgs) -> Result<(), String> {
    let mut resolved = resolve(args)?;
    if args.check_config {
        print!("{}", describe(&resolved));
        println!("configuration OK");
        return Ok(());
    }
    let logger = crate::logging::init(&resolved.log_level, resolved.log_format)?;
    let notifier = crate::systemd::Notifier::from_env();
    let data = resolved.engine.data_dir.clone();
    let engine = Engine::open(resolved.engine.clone()).map_err(|e| e.to_string())?;
    if let Some(report) = engine.recovery() {
        for torn in &report.torn {
            tracing::warn!("write-ahead log: dropped a torn tail: {torn}");
        }
        if report.records > 0 {
            tracing::info!(
                records = report.records,
                logs = report.logs,
                replayed = report.replayed,
                rows = report.rows,
                "write-ahead log: records of earlier runs replayed into tables (the rest were already in files)"
            );
        }
    }
    let cluster = cluster(args)?;
    resolved.server.cluster = cluster.clone();
    let server = Server::start(engine, resolved.server.clone()).map_err(|e| e.to_string())?;
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_reload as *const () as libc::sighandler_t);
    }
    let http = server
        .http_address()
        .map_or("off".to_string(), |a| a.to_string());
    tracing::info!(
        "tessera serving {} on {} (HTTP {http})",
        data.display(),
        server.address()
    );
    let _agent = join_cluster(args, cluster, &server, &data)?;
    notifier.notify(&format!(
        "READY=1\nSTATUS=serving {} on {}",
        data.display(),
        server.address()
    ));
    let watchdog = notifier.watchdog_interval();
    let mut last_ping = std::time::Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if RELOAD.swap(false, Ordering::SeqCst) {
            notifier.reloading();
            if let Err(error) = reload(args, &mut resolved, &server, &logger) {
                tracing::error!("configuration not reloaded, the running one stays: {error}");
            }
            notifier.notify("READY=1");
        }
        // Pinged only while every core answers: a wedged node is restarted by systemd.
        if let Some(interval) = watchdog {
            if last_ping.elapsed() >= interval && server.healthy() {
                notifier.notify("WATCHDOG=1");
                last_ping = std::time::Instant::now();
            }
        }
    }
    notifier.notify("STOPPING=1\nSTATUS=draining");
    tracing::info!(
        timeout_seconds = resolved.drain_timeout.as_secs(),
        "tessera stopping: no new connections, queries or writes; waiting for running ones"
    );
    let report = server.drain(resolved.drain_timeout);
    match &report.flushed {
        Ok(files) => tracing::info!(
            waited_ms = report.waited.as_millis() as u64,
            unfinished = report.unfinished,
            files_flushed = files,
            "drained"
        ),
        Err(error) => tracing::error!(
            "flushing buffered rows failed; the write-ahead logs keep them for the next start: {error}"
        ),
    }
    drop(server);
    tracing::info!("tessera stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn compaction_settings_and_tenant_overrides_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
        let args = |text: &str| ServeArgs {
            config: Some(write(dir.path(), "tessera.toml", text)),
            jwt_secret_file: Some(secret.clone()),
            ..Default::default()
        };
        let defaults = resolve(&args("")).unwrap().engine.compaction;
        assert_eq!(defaults.interval, Some(Duration::from_secs(10)));
        let resolved = resolve(&args(
            "[compaction]\ninterval_seconds = 0\nfiles_per_partition = 4\njob_mib = 16\n\
             [compaction.tenants.acme]\nmib_per_round = 2\n",
        ))
        .unwrap()
        .engine
        .compaction;
        assert_eq!(resolved.interval, None);
        assert_eq!(resolved.policy.files_per_partition, 4);
        assert_eq!(resolved.policy.job_bytes, 16 << 20);
        assert_eq!(resolved.tenants["acme"].bytes_per_round, Some(2 << 20));
        assert_eq!(resolved.tenants["acme"].files_per_partition, None);
        let error = resolve(&args("[compaction]\nintervall_seconds = 1\n")).unwrap_err();
        assert!(error.contains("intervall_seconds"), "{error}");
    }

    #[test]
    fn flags_override_the_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
        let config = write(
            dir.path(),
            "tessera.toml",
            &format!(
                "data_path = \"/srv/x\"\nconcurrent_queries = 3\n[memory]\nmax_memory_gb = 8\npartial_cache_mb = 0\n[limits]\nidle_timeout_seconds = 9\nadmission_queue = 7\nconcurrent_short_queries = 5\ntime_slice_us = 3000\nthroughput_shares = 100\n[result_cache]\nredis_url = \"redis://cache:6379/1\"\nttl_seconds = 60\n[[auth.keys]]\nkind = \"hs256\"\nfile = \"{}\"\n",
                secret.display()
            ),
        );
        let mut args = ServeArgs {
            config: Some(config),
            ..Default::default()
        };
        let resolved = resolve(&args).unwrap();
        assert_eq!(resolved.engine.data_dir, PathBuf::from("/srv/x"));
        assert_eq!(resolved.server.limits.concurrent_queries, 3);
        assert_eq!(resolved.server.limits.idle_timeout, Duration::from_secs(9));
        assert_eq!(resolved.server.limits.admission_queue, 7);
        assert_eq!(resolved.server.limits.concurrent_short_queries, 5);
        assert_eq!(resolved.engine.time_slice, Duration::from_millis(3));
        assert_eq!(resolved.engine.throughput_shares, 100);
        assert_eq!(resolved.engine.partial_cache_bytes, 0);
        assert_eq!(resolved.engine.buffer_pool_bytes, 4 << 30);
        let cache = resolved.server.result_cache.unwrap();
        assert_eq!(cache.url, "redis://cache:6379/1");
        assert_eq!(cache.ttl, Duration::from_secs(60));
        assert_eq!(cache.max_result_bytes, 4 << 20);
        args.redis_url = Some("redis://other/".into());
        let resolved = resolve(&args).unwrap();
        assert_eq!(resolved.server.result_cache.unwrap().url, "redis://other/");
        args.concurrent_queries = Some(5);
        args.data = Some("/srv/y".into());
        let resolved = resolve(&args).unwrap();
        assert_eq!(resolved.server.limits.concurrent_queries, 5);
        assert_eq!(resolved.engine.data_dir, PathBuf::from("/srv/y"));
        args.cpus = Some("0-1".into());
        let resolved = resolve(&args).unwrap();
        assert_eq!(resolved.engine.cpus, Some(vec![0, 1]));
        assert_eq!(resolved.engine.cores, 2);
        args.cores = Some(3);
        let error = resolve(&args).unwrap_err();
        assert!(error.contains("disagree"), "{error}");
        args.cores = None;
        args.cpus = Some("1-0".into());
        assert!(resolve(&args).unwrap_err().contains("bad CPU list"));
        args.cpus = None;

        let typo = write(dir.path(), "typo.toml", "concurent_queries = 3\n");
        let error = resolve(&ServeArgs {
            config: Some(typo),
            jwt_secret_file: Some(secret),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.contains("concurent_queries"), "{error}");
    }

    #[test]
    fn memory_budgets_fit_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
        let args = |text: &str| ServeArgs {
            config: Some(write(dir.path(), "tessera.toml", text)),
            jwt_secret_file: Some(secret.clone()),
            ..Default::default()
        };
        // Defaults: half for pages, the fixed caches, and what is left for queries.
        let engine = resolve(&args("")).unwrap().engine;
        assert_eq!(engine.buffer_pool_bytes, 8 << 30);
        assert_eq!(engine.metadata_cache_bytes, 256 << 20);
        assert_eq!(engine.partial_cache_bytes, 128 << 20);
        assert_eq!(engine.ingest.memory_bytes, 1 << 30);
        assert_eq!(
            engine.query_memory_budget_bytes,
            (16u64 << 30) - (8 << 30) - (256 << 20) - (128 << 20) - (1 << 30)
        );
        // A small node scales the caches down instead of refusing to start.
        let small = resolve(&args("[memory]\nmax_memory_gb = 2\n")).unwrap();
        let engine = &small.engine;
        assert_eq!(engine.metadata_cache_bytes, 64 << 20);
        assert_eq!(engine.ingest.memory_bytes, 256 << 20);
        assert!(engine.query_memory_budget_bytes > 512 << 20);
        assert_eq!(small.server.max_memory_bytes, 2 << 30);
        let custom = resolve(&args(
            "[memory]\nmax_memory_gb = 4\nparquet_cache_gb = 1\nmetadata_cache_mb = 32\n\
             partial_cache_mb = 0\ningest_buffer_mb = 64\nquery_processing_gb = 2\n",
        ))
        .unwrap()
        .engine;
        assert_eq!(custom.buffer_pool_bytes, 1 << 30);
        assert_eq!(custom.partial_cache_bytes, 0);
        assert_eq!(custom.query_memory_budget_bytes, 2 << 30);
        assert_eq!(custom.query_memory_bytes, 1 << 30);
        let error = resolve(&args(
            "[memory]\nmax_memory_gb = 4\nparquet_cache_gb = 3\nquery_processing_gb = 2\n",
        ))
        .unwrap_err();
        assert!(error.contains("do not fit max_memory_gb"), "{error}");
        assert!(error.contains("query_processing 2.000"), "{error}");
        let error =
            resolve(&args("[memory]\nmax_memory_gb = 4\nparquet_cache_gb = 4\n")).unwrap_err();
        assert!(error.contains("do not fit"), "{error}");
        let error = resolve(&args("max_memory_gb = 4\n")).unwrap_err();
        assert!(error.contains("max_memory_gb"), "{error}");
        let error = resolve(&args("[log]\nlevel = \"loud\"\n")).unwrap_err();
        assert!(error.contains("log level"), "{error}");
    }

    #[test]
    fn a_reload_names_the_settings_that_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
        let args = |text: &str| ServeArgs {
            config: Some(write(dir.path(), "tessera.toml", text)),
            jwt_secret_file: Some(secret.clone()),
            ..Default::default()
        };
        let old = restart_only(&resolve(&args("concurrent_queries = 4\n")).unwrap());
        // Live settings differ: nothing needs a restart.
        let live = resolve(&args(
            "concurrent_queries = 9\n[limits]\nadmission_queue = 3\n[query_stats]\ncapacity = 5\n[log]\nslow_query_ms = 5\nlevel = \"debug\"\n",
        ))
        .unwrap();
        assert_eq!(changed(&old, &restart_only(&live)), Vec::<String>::new());
        let restart = resolve(&args(
            "concurrent_queries = 4\nlisten = \"127.0.0.1:7171\"\n[memory]\nparquet_cache_gb = 2\n",
        ))
        .unwrap();
        let names = changed(&old, &restart_only(&restart));
        assert!(names.iter().any(|n| n == "buffer_pool_bytes"), "{names:?}");
        assert!(names.iter().any(|n| n == "listen"), "{names:?}");
    }

    /// The packaged example documents every key, and the defaults it writes are the ones the
    /// node applies without it.
    #[test]
    fn the_example_config_lists_every_key_with_its_default() {
        const EXAMPLE: &str = include_str!("../deploy/tessera.toml");
        let file: FileConfig = toml::from_str(EXAMPLE).unwrap();
        // Every key is set, but those that have no default and stay commented out.
        let debug = format!("{file:?}");
        let mut unset: Vec<&str> = debug
            .match_indices(": None")
            .map(|(at, _)| {
                let name = &debug[..at];
                &name[name.rfind([' ', '{', '(']).unwrap() + 1..]
            })
            .collect();
        unset.sort();
        let mut optional = vec![
            "cores",
            "cpus",
            "id",
            "query_processing_gb",
            "redis_url",
            "tls",
        ];
        optional.sort();
        assert_eq!(unset, optional, "keys neither set nor known to be optional");
        for key in optional {
            assert!(
                EXAMPLE.contains(&format!("# {key} = ")) || EXAMPLE.contains(&format!("# [{key}]")),
                "{key} is not documented as a commented line"
            );
        }
        // Its values are the defaults: the same node as with an empty file, but for the paths.
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", "0123456789abcdef0123456789abcdef\n");
        let example = EXAMPLE
            .replace("/etc/tessera/jwt-secret", secret.to_str().unwrap())
            .replace("/var/lib/tessera", "./data");
        let resolved = |text: &str| {
            resolve(&ServeArgs {
                config: Some(write(dir.path(), "tessera.toml", text)),
                jwt_secret_file: text.is_empty().then(|| secret.clone()),
                ..Default::default()
            })
            .unwrap()
        };
        let (from_example, from_defaults) = (resolved(&example), resolved(""));
        assert_eq!(
            changed(&restart_only(&from_defaults), &restart_only(&from_example)),
            Vec::<String>::new()
        );
        assert_eq!(
            format!("{:?}", from_example.server.limits),
            format!("{:?}", from_defaults.server.limits)
        );
        assert_eq!(from_example.log_level, from_defaults.log_level);
    }

    #[test]
    fn a_key_is_required() {
        let error = resolve(&ServeArgs::default()).unwrap_err();
        assert!(error.contains("--jwt-secret-file"), "{error}");
    }
}
