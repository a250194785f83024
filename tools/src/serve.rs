//! `tessera serve`: settings from a TOML file, overridden by environment variables and flags
//! (flag > environment > file > default), then the RPC server until SIGINT/SIGTERM.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_rpc::auth::{AuthConfig, KeyKind, KeySpec};
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
    max_memory_gb: Option<f64>,
    parquet_cache_size_gb: Option<f64>,
    concurrent_queries: Option<usize>,
    /// Partial aggregates cached per immutable file and buffered chunk, MiB (0: off).
    partial_cache_mb: Option<u64>,
    /// Busy-poll before parking an idle core, µs (lower latency, more idle CPU).
    spin_before_park_us: Option<u64>,
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
    /// Buffered rows the node holds before appends wait for flushes (default 1024).
    memory_mib: Option<u64>,
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
}

const GIB: f64 = (1u64 << 30) as f64;

fn read_key(path: &Path) -> Result<Vec<u8>, String> {
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
    let max_memory_gb = args.max_memory_gb.or(file.max_memory_gb).unwrap_or(16.0);
    let cache_gb = args
        .parquet_cache_size_gb
        .or(file.parquet_cache_size_gb)
        .unwrap_or(max_memory_gb / 2.0);
    if !(max_memory_gb > 0.0 && cache_gb > 0.0 && cache_gb < max_memory_gb) {
        return Err(format!(
            "PARQUET_CACHE_SIZE_GB ({cache_gb}) must be positive and below MAX_MEMORY_GB ({max_memory_gb})"
        ));
    }
    engine.buffer_pool_bytes = (cache_gb * GIB) as u64;
    engine.spin_before_park_us = file.spin_before_park_us.unwrap_or(0);
    if let Some(mib) = file.partial_cache_mb {
        engine.partial_cache_bytes = mib << 20;
    }

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
    if let Some(v) = ingest.memory_mib {
        engine.ingest.memory_bytes = v.max(1) << 20;
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
    limits.query_memory_bytes = (max_memory_gb * GIB / 4.0) as u64;
    // Query state draws on what the page cache leaves of MAX_MEMORY_GB.
    engine.query_memory_bytes = limits.query_memory_bytes;
    engine.query_memory_budget_bytes = ((max_memory_gb - cache_gb) * GIB) as u64;

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
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7070))),
        http,
        auth,
        limits,
        max_memory_bytes: (max_memory_gb * GIB) as u64,
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
    Ok(Resolved { engine, server })
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

pub fn run(args: &ServeArgs) -> Result<(), String> {
    let resolved = resolve(args)?;
    let data = resolved.engine.data_dir.clone();
    let engine = Engine::open(resolved.engine).map_err(|e| e.to_string())?;
    if let Some(report) = engine.recovery() {
        for torn in &report.torn {
            eprintln!("tessera: write-ahead log: dropped a torn tail: {torn}");
        }
        if report.records > 0 {
            eprintln!(
                "tessera: write-ahead log: {} record(s) in {} log(s); {} replayed into tables \
                 ({} rows), the rest already in files",
                report.records, report.logs, report.replayed, report.rows
            );
        }
    }
    let server = Server::start(engine, resolved.server).map_err(|e| e.to_string())?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    eprintln!(
        "tessera serving {} on {} (HTTP {})",
        data.display(),
        server.address(),
        server
            .http_address()
            .map_or("off".to_string(), |a| a.to_string())
    );
    while !STOP.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("tessera stopping");
    drop(server);
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
                "data_path = \"/srv/x\"\nconcurrent_queries = 3\nmax_memory_gb = 8\npartial_cache_mb = 0\n[limits]\nidle_timeout_seconds = 9\nadmission_queue = 7\nconcurrent_short_queries = 5\ntime_slice_us = 3000\nthroughput_shares = 100\n[result_cache]\nredis_url = \"redis://cache:6379/1\"\nttl_seconds = 60\n[[auth.keys]]\nkind = \"hs256\"\nfile = \"{}\"\n",
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
    fn a_key_is_required() {
        let error = resolve(&ServeArgs::default()).unwrap_err();
        assert!(error.contains("--jwt-secret-file"), "{error}");
    }
}
