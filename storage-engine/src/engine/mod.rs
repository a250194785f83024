//! The embedded engine: owns the per-core executors, plans a query on the caller's thread (parse,
//! bind, prune files by manifest statistics), sends each core its share of the files, and merges
//! the cores' partial results (groups merged by key, rows concatenated, then ORDER BY and LIMIT).
//! Files go to cores by a stable hash of the file, so the same pages always land in the same
//! core's buffer pool. A query of a partitioned table runs here as fragments, one per partition,
//! merged by the node that was asked (`fragment`).

mod fragment;
mod maintenance;

pub use fragment::Merger;
pub use maintenance::{CompactionConfig, CompactionReport, TenantCompaction};

use crate::error::{Error, Result};
use crate::ingest::{
    self, recovery::RecoveryReport, Ack, AdoptedLog, Epochs, IngestConfig, IngestCore, NodeLogs,
};
use crate::io::buffer_pool::BufferPool;
use crate::io::buffer_pool::PoolCounters;
use crate::io::runtime::{self, CoreOptions, CorePool, JobError, Peers, TaskClass};
use crate::io::{host, io_shares};
use crate::query::aggregate::{self, AccState, GroupRows};
use crate::query::exec::{self, CoreOutput, CoreState, FileTask, MetadataCache, ScanStats};
use crate::query::kernels::Kernels;
use crate::query::memory::{MemoryPool, Reservation};
use crate::query::plan::{self, Mode, OutputRef, Plan};
use crate::query::prune::Truth;
use crate::query::sql::{self, Statement};
use crate::table::manifest::{self, TableManifest};
use crate::table::quota::TenantQuota;
use crate::value::{ColumnType, Scalar};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{Field, Schema, SchemaRef};
use futures::StreamExt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Engine settings. Byte budgets are totals, split evenly across cores.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub cores: usize,
    /// Pin executor i to the i-th CPU this process may use (`host::choose_cpus`).
    pub pin_cores: bool,
    /// Explicit CPUs, one per core (`tessera serve --cpus`); each must be in the allowed set.
    pub cpus: Option<Vec<usize>>,
    /// Open data files each core keeps cached; None: from the descriptor limit, raised to its
    /// hard limit at open (`host::cached_files_per_core`).
    pub cached_files_per_core: Option<usize>,
    pub buffer_pool_bytes: u64,
    pub metadata_cache_bytes: u64,
    /// Partial aggregates of query fragments per immutable file (`exec::partials`); 0 turns
    /// the cache off.
    pub partial_cache_bytes: u64,
    /// A file of at least this many rows is scanned by every core, each taking a share of its
    /// row groups, or a range of rows in each when it has fewer row groups than cores (so a
    /// table of few large files, even one row group, keeps every core busy).
    pub split_file_rows: u64,
    /// Registered I/O memory per executor; None picks a size that fits `ulimit -l`
    /// (`host::io_memory_per_core`).
    pub io_memory_bytes: Option<usize>,
    pub spin_before_park_us: u64,
    /// How long a task runs before it yields to waiting work (`runtime::CoreOptions`).
    pub time_slice: Duration,
    /// CPU shares of scans over much data against short queries' 1000 on every core.
    pub throughput_shares: usize,
    /// Memory one query's state (groups, rows collected for ORDER BY, merge and sort) may hold.
    pub query_memory_bytes: u64,
    /// Memory every running query's state together may hold on the node.
    pub query_memory_budget_bytes: u64,
    /// Streaming ingestion: flush thresholds and the memory its buffers may hold.
    pub ingest: IngestConfig,
    /// Merging small files (`maintenance`).
    pub compaction: CompactionConfig,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_cores: true,
            cpus: None,
            cached_files_per_core: None,
            buffer_pool_bytes: 4 << 30,
            metadata_cache_bytes: 256 << 20,
            partial_cache_bytes: 128 << 20,
            split_file_rows: 256 << 10,
            io_memory_bytes: None,
            spin_before_park_us: 0,
            time_slice: runtime::DEFAULT_TIME_SLICE,
            throughput_shares: runtime::DEFAULT_THROUGHPUT_SHARES,
            query_memory_bytes: 4 << 30,
            query_memory_budget_bytes: 8 << 30,
            ingest: IngestConfig::default(),
            compaction: CompactionConfig::default(),
        }
    }
}

/// Counters and timing of one query.
#[derive(Clone, Debug)]
pub struct QueryStats {
    pub scan: ScanStats,
    pub elapsed: Duration,
    /// The task queue it ran in.
    pub class: TaskClass,
}

/// A query planned on one core and ready to run there (`CoreContext::prepare`).
pub struct PreparedQuery {
    class: TaskClass,
    manifest: Arc<TableManifest>,
    plan: Arc<Plan>,
    tasks: Vec<FileTask>,
    pruning: Pruning,
    explain: bool,
    _epoch: ingest::EpochGuard,
}

impl PreparedQuery {
    /// The task queue and admission lane the query runs in.
    pub fn class(&self) -> TaskClass {
        self.class
    }

    /// True for EXPLAIN, which reads no data.
    pub fn is_explain(&self) -> bool {
        self.explain
    }
}

#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub stats: QueryStats,
    /// For EXPLAIN: the plan text (the batches then hold it as one column too).
    pub explain: Option<String>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Memory by budget area (`Engine::memory_report`).
#[derive(Clone, Debug)]
pub struct MemoryReport {
    /// `query_processing`, `parquet_cache`, `metadata_cache`, `partial_cache`,
    /// `ingest_buffers`: each enforced (queries fail with `limit`, caches evict, appends wait).
    pub areas: Vec<MemoryArea>,
    /// Age of the oldest acknowledged row not yet published in a file (`None`: none buffered).
    pub ingest_oldest: Option<Duration>,
}

#[derive(Clone, Debug)]
pub struct MemoryArea {
    pub name: &'static str,
    pub budget_bytes: u64,
    pub used_bytes: u64,
}

/// What one core holds of each area.
struct CoreMemory {
    pool: u64,
    metadata: u64,
    partials: u64,
    ingest: u64,
    oldest_unflushed: Option<Instant>,
}

impl CoreMemory {
    fn of(state: &CoreState) -> CoreMemory {
        CoreMemory {
            pool: state.pool.counters().bytes_used,
            metadata: state.metadata.counters().bytes,
            partials: state.partials.counters().bytes_used,
            ingest: state.ingest.memory_used(),
            oldest_unflushed: state.ingest.oldest_unflushed(),
        }
    }
}

impl MemoryReport {
    fn new(config: &EngineConfig, query_used: u64, cores: &[CoreMemory]) -> MemoryReport {
        let sum = |field: fn(&CoreMemory) -> u64| cores.iter().map(field).sum::<u64>();
        let area = |name, budget_bytes, used_bytes| MemoryArea {
            name,
            budget_bytes,
            used_bytes,
        };
        MemoryReport {
            areas: vec![
                area(
                    "query_processing",
                    config.query_memory_budget_bytes,
                    query_used,
                ),
                area("parquet_cache", config.buffer_pool_bytes, sum(|c| c.pool)),
                area(
                    "metadata_cache",
                    config.metadata_cache_bytes,
                    sum(|c| c.metadata),
                ),
                area(
                    "partial_cache",
                    config.partial_cache_bytes,
                    sum(|c| c.partials),
                ),
                area(
                    "ingest_buffers",
                    config.ingest.memory_bytes,
                    sum(|c| c.ingest),
                ),
            ],
            ingest_oldest: cores
                .iter()
                .filter_map(|c| c.oldest_unflushed)
                .min()
                .map(|oldest| oldest.elapsed()),
        }
    }
}

pub struct Engine {
    config: Arc<EngineConfig>,
    cores: CorePool<CoreState>,
    memory: Arc<MemoryPool>,
    /// Which core coordinates the next query (round robin).
    next_coordinator: AtomicUsize,
    /// What start-up recovery replayed from earlier runs' logs (`None`: another process owns
    /// the logs, and this engine does not ingest).
    recovery: Option<RecoveryReport>,
    /// Held while this engine owns the data directory's write-ahead logs.
    _wal_lock: Option<std::fs::File>,
    /// Compaction rounds run on request, so each starts with the next tenant.
    compaction_rounds: AtomicUsize,
}

/// A table as `ask_buffering_cores` hands it to each core: tenant, table, incarnation, and
/// the marks of the manifest read (per log, the highest LSN in files).
type BufferedTable = (
    Arc<str>,
    Arc<str>,
    u64,
    Arc<std::collections::BTreeMap<String, ingest::wal::Lsn>>,
);

/// The engine as seen from inside one of its cores: queries started here are coordinated by this
/// core (it merges the partial results) and fan out to every core over the core mesh. The RPC
/// server runs on each core and uses this, so a query never leaves the core that owns its
/// connection except to scan.
#[derive(Clone)]
pub struct CoreContext {
    state: Rc<CoreState>,
    peers: Rc<Peers<CoreState>>,
    config: Arc<EngineConfig>,
    memory: Arc<MemoryPool>,
}

const PROBE_FILE: &str = ".tessera-probe";

impl Engine {
    pub fn open(config: EngineConfig) -> Result<Engine> {
        if config.cores == 0 {
            return Err(Error::Config("cores must be at least 1".into()));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::io(&config.data_dir, e))?;
        let probe = config.data_dir.join(PROBE_FILE);
        if std::fs::metadata(&probe).map(|m| m.len()).unwrap_or(0) == 0 {
            std::fs::write(&probe, vec![b'T'; 4096]).map_err(|e| Error::io(&probe, e))?;
        }
        let cpus = host::choose_cpus(
            &host::allowed_cpus(),
            config.cpus.as_deref(),
            config.cores,
            config.pin_cores,
        )?;
        let io_memory_bytes = match config.io_memory_bytes {
            Some(bytes) => bytes,
            None => host::io_memory_per_core(config.cores)?,
        };
        let open_files = host::raise_open_files_limit();
        let files_per_core = config
            .cached_files_per_core
            .unwrap_or_else(|| host::cached_files_per_core(open_files, config.cores));
        let options = CoreOptions {
            cores: config.cores,
            cpus,
            io_memory_bytes,
            spin_before_park_us: config.spin_before_park_us,
            probe_file: Some(probe),
            time_slice: config.time_slice,
            throughput_shares: config.throughput_shares,
        };
        // The logs belong to one process: it adopts what earlier runs left, and ingests.
        let wal_lock = ingest::lock_logs(&config.data_dir)?;
        let mut recovery = match &wal_lock {
            Some(_) => Some(ingest::recovery::recover(&config.data_dir)?),
            None => None,
        };
        let boot = manifest::new_incarnation();
        let logs = Arc::new(NodeLogs {
            cores: config.cores,
            own: (0..config.cores)
                .map(|c| format!("{boot:016x}-{c}"))
                .collect(),
            adopted: recovery
                .as_mut()
                .map(|r| std::mem::take(&mut r.logs))
                .unwrap_or_default()
                .into_iter()
                .map(|(id, dir)| AdoptedLog::new(id, dir))
                .collect(),
        });
        let epochs = Arc::new(Epochs::new(config.cores));
        let ingest_enabled = wal_lock.is_some();
        let (ingest_config, data_dir) = (config.ingest.clone(), config.data_dir.clone());
        let pool_bytes = (config.buffer_pool_bytes / config.cores as u64) as usize;
        let metadata_bytes = (config.metadata_cache_bytes / config.cores as u64) as usize;
        let partial_bytes = (config.partial_cache_bytes / config.cores as u64) as usize;
        let kernels = Kernels::detect();
        let core_logs = logs.clone();
        let cores = CorePool::start(&options, move |core| CoreState {
            core,
            pool: BufferPool::new(pool_bytes),
            metadata: MetadataCache::new(metadata_bytes, files_per_core),
            partials: exec::partials::PartialCache::new(partial_bytes),
            kernels,
            ingest: Rc::new(IngestCore::new(
                core,
                &data_dir,
                core_logs.clone(),
                epochs.clone(),
                ingest_config.clone(),
                ingest_enabled,
            )),
            quotas: Default::default(),
        })
        .map_err(|e| Error::Config(format!("cannot start executors: {e}")))?;
        let engine = Engine {
            memory: MemoryPool::new(config.query_memory_budget_bytes, config.query_memory_bytes),
            config: Arc::new(config),
            cores,
            next_coordinator: AtomicUsize::new(0),
            recovery: None,
            _wal_lock: wal_lock,
            compaction_rounds: AtomicUsize::new(0),
        };
        let mut engine = engine;
        if let Some(recovery) = recovery {
            engine.adopt(&logs, recovery.records, recovery.windows);
            engine.recovery = Some(recovery.report);
        }
        // The process that owns the logs owns the files: it alone compacts them.
        if let (Some(interval), true) = (engine.config.compaction.interval, ingest_enabled) {
            futures::executor::block_on(engine.on_core(0, move |context| async move {
                context.start_compacting(interval);
            }))?;
        }
        Ok(engine)
    }

    /// Hands recovered records to cores (one core per adopted log) and windows to their
    /// producers' owner cores, after counting, per adopted log, the (table, core) buffers that
    /// will hold its records; a log with none is removed now. Blocks until every core has them.
    fn adopt(
        &self,
        logs: &Arc<NodeLogs>,
        records: Vec<ingest::Recovered>,
        windows: Vec<(Arc<TableManifest>, String, ingest::window::ProducerWindow)>,
    ) {
        let cores = self.cores.cores();
        let owner = |m: &TableManifest, producer: &str| {
            ingest::owner_core(&m.tenant, &m.table, producer, cores)
        };
        let mut buffers = vec![hashbrown::HashSet::new(); logs.adopted.len()];
        let mut by_core: Vec<(Vec<ingest::Recovered>, Vec<_>)> =
            (0..cores).map(|_| (Vec::new(), Vec::new())).collect();
        // All records of one log go to one core: a log's mark in a manifest says which of its
        // records are in files, so only one core may flush them. A window goes to its producer's
        // owner core, and to every core adopting records of that producer: the flush that lets
        // their log be removed must persist their keys too.
        let mut adopters = hashbrown::HashSet::new();
        for record in records {
            let core = record.log % cores;
            let m = &record.manifest;
            buffers[record.log].insert((m.tenant.clone(), m.table.clone(), m.incarnation, core));
            adopters.insert((m.incarnation, record.producer.clone(), core));
            by_core[core].0.push(record);
        }
        for window in windows {
            let (m, producer) = (&window.0, &window.1);
            let owner = owner(m, producer);
            for core in (0..cores).filter(|&core| {
                core != owner && adopters.contains(&(m.incarnation, producer.clone(), core))
            }) {
                by_core[core].1.push(window.clone());
            }
            by_core[owner].1.push(window);
        }
        for (log, buffers) in logs.adopted.iter().zip(&buffers) {
            log.expect(buffers.len() as u64);
            if buffers.is_empty() {
                log.remove();
            }
        }
        let calls: Vec<_> = by_core
            .into_iter()
            .enumerate()
            .map(|(core, (records, windows))| {
                self.on_core(core, move |context| async move {
                    context.state.ingest.adopt(records, windows);
                })
            })
            .collect();
        futures::executor::block_on(futures::future::join_all(calls));
    }

    /// Flushes every buffered row of streaming ingestion on every core to files (fsynced and
    /// published), so a stopping node leaves its logs with nothing to replay. Blocks the
    /// calling thread; the number of files written.
    pub fn flush_all_ingest(&self) -> Result<u64> {
        let mut files = 0;
        for flushed in
            self.on_every_core(|context| async move { context.state.ingest.flush_all().await })
        {
            files += flushed?;
        }
        Ok(files)
    }

    /// What start-up recovery replayed; `None` when another process owns the logs.
    pub fn recovery(&self) -> Option<&RecoveryReport> {
        self.recovery.as_ref()
    }

    /// Makes one batch (a whole Arrow IPC stream) durable in `tenant/table` under the key
    /// (producer, sequence), as `CoreContext::ingest`. Blocks the calling thread.
    pub fn ingest(
        &self,
        tenant: &str,
        table: &str,
        producer: &str,
        sequence: u64,
        ipc: Vec<u8>,
    ) -> Result<Ack> {
        let (tenant, table, producer) = (tenant.to_owned(), table.to_owned(), producer.to_owned());
        futures::executor::block_on(self.on_core(0, move |context| async move {
            let batches = ingest::decode_ipc(&ipc)?;
            let ipc = vec![arrow_buffer::Buffer::from_vec(ipc)];
            context
                .ingest(&tenant, &table, &producer, sequence, batches, ipc)
                .await
        }))?
    }

    /// Flushes every core's buffered rows of a table to Parquet; returns the files written.
    pub fn flush_ingest(&self, tenant: &str, table: &str) -> Result<u64> {
        let (tenant, table) = (tenant.to_owned(), table.to_owned());
        futures::executor::block_on(self.on_core(0, move |context| async move {
            context.flush_ingest(&tenant, &table).await
        }))?
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Bytes of query state reserved by running queries.
    pub fn query_memory_used(&self) -> u64 {
        self.memory.used()
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn cores(&self) -> usize {
        self.cores.cores()
    }

    /// Runs one SQL statement for `tenant`, blocking the calling thread.
    pub fn sql(&self, tenant: &str, text: &str) -> Result<QueryResult> {
        futures::executor::block_on(self.sql_async(tenant, text))
    }

    pub async fn sql_async(&self, tenant: &str, text: &str) -> Result<QueryResult> {
        let statement = sql::parse(text)?;
        self.execute(tenant, statement).await
    }

    /// Runs a parsed statement for `tenant`, coordinated by the next core in turn.
    pub async fn execute(&self, tenant: &str, statement: Statement) -> Result<QueryResult> {
        let coordinator =
            self.next_coordinator.fetch_add(1, Ordering::Relaxed) % self.cores.cores();
        let tenant = tenant.to_owned();
        self.on_core(coordinator, move |context| async move {
            context.execute(&tenant, statement).await
        })
        .await?
    }

    /// Runs `job` on core `core` with that core's context; an error if it panicked or the
    /// engine is stopping.
    pub async fn on_core<F, Fut, T>(&self, core: usize, job: F) -> Result<T, JobError>
    where
        F: FnOnce(CoreContext) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (config, memory) = (self.config.clone(), self.memory.clone());
        self.cores
            .run_on(core, move |state, peers| {
                job(CoreContext {
                    state,
                    peers,
                    config,
                    memory,
                })
            })
            .await
    }

    /// Cores that did not run a trivial job within `timeout`: wedged by a job that never yields,
    /// or stopped. Blocks the calling thread up to `timeout`.
    pub fn unresponsive_cores(&self, timeout: Duration) -> Vec<usize> {
        let count = self.cores.cores();
        let (answers, answered) = std::sync::mpsc::channel();
        for core in 0..count {
            let answers = answers.clone();
            // The job is queued now; its answer comes on `answers`, not on the dropped future.
            drop(self.cores.run_on(core, move |_, _| async move {
                let _ = answers.send(core);
            }));
        }
        drop(answers);
        let deadline = Instant::now() + timeout;
        let mut alive = vec![false; count];
        while alive.iter().any(|a| !a) {
            let left = deadline.saturating_duration_since(Instant::now());
            match answered.recv_timeout(left) {
                Ok(core) => alive[core] = true,
                Err(_) => break,
            }
        }
        (0..count).filter(|&core| !alive[core]).collect()
    }

    /// Runs `job` on every core at once and returns the outputs of those that answered, in
    /// core order. Blocks the calling thread.
    fn on_every_core<F, Fut, T>(&self, job: F) -> Vec<T>
    where
        F: FnOnce(CoreContext) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let receivers: Vec<_> = (0..self.cores.cores())
            .map(|core| self.on_core(core, job.clone()))
            .collect();
        futures::executor::block_on(futures::future::join_all(receivers))
            .into_iter()
            .flatten()
            .collect()
    }

    /// Partial-result cache counters per core.
    pub fn partial_counters(&self) -> Vec<exec::partials::PartialCounters> {
        self.on_every_core(|context| async move { context.state.partials.counters() })
    }

    /// Bytes of decoded pages each tenant with a buffer-pool floor holds, over every core.
    pub fn tenant_pool_bytes(&self) -> Vec<(String, u64)> {
        let per_core = self.on_every_core(|context| async move {
            let state = &context.state;
            let quotas = state.quotas.borrow();
            quotas
                .keys()
                .filter_map(|tenant| {
                    let owner = runtime::Group::tenant(tenant);
                    let bytes = state.pool.owned_bytes(owner)?;
                    Some((tenant.clone(), bytes as u64))
                })
                .collect::<Vec<_>>()
        });
        let mut total: std::collections::BTreeMap<String, u64> = Default::default();
        for (tenant, bytes) in per_core.into_iter().flatten() {
            *total.entry(tenant).or_default() += bytes;
        }
        total.into_iter().collect()
    }

    /// What the node's memory holds against each of its budgets, and how far streaming
    /// ingestion's flushes are behind. Blocks the calling thread (one job on every core).
    pub fn memory_report(&self) -> MemoryReport {
        let cores = self.on_every_core(|context| async move { CoreMemory::of(&context.state) });
        MemoryReport::new(&self.config, self.memory.used(), &cores)
    }

    /// Buffer pool counters per core.
    pub fn pool_counters(&self) -> Vec<PoolCounters> {
        self.on_every_core(|context| async move { context.pool_counters() })
    }

    /// Metadata cache counters per core.
    pub fn metadata_counters(&self) -> Vec<exec::MetadataCounters> {
        self.on_every_core(|context| async move { context.state.metadata.counters() })
    }

    /// Drops a table (`manifest::drop_table`) and makes every core forget what it cached of it;
    /// false if there was no such table. Blocks the calling thread.
    pub fn drop_table(&self, tenant: &str, table: &str) -> Result<bool> {
        let Some(dropped) = manifest::drop_table(&self.config.data_dir, tenant, table)? else {
            return Ok(false);
        };
        futures::executor::block_on(self.on_core(0, move |context| async move {
            context.forget_tables(&[dropped]).await
        }))?;
        Ok(true)
    }

    /// Makes the data cold as it is on a running node whose pages were evicted: empties every
    /// core's buffer pool (decoded pages) and partial-result cache, and keeps the metadata cache
    /// (footers, page indexes, page bounds and open descriptors: small, bounded by
    /// `metadata_cache_bytes`), which a node keeps for every file it serves. The next query
    /// reads and decodes every page it needs, and no footer (cold-run benchmarks).
    pub fn clear_caches(&self) {
        self.clear(false);
    }

    /// Empties the metadata cache too: the next query opens every file as for the first time
    /// (footer and page index read again).
    pub fn clear_all_caches(&self) {
        self.clear(true);
    }

    fn clear(&self, metadata: bool) {
        self.on_every_core(move |context| async move {
            context.state.pool.clear();
            context.state.partials.clear();
            if metadata {
                context.state.metadata.clear();
            }
        });
    }
}

impl CoreContext {
    /// This core's number.
    pub fn core(&self) -> usize {
        self.peers.me()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// This core's buffer pool counters.
    pub fn pool_counters(&self) -> PoolCounters {
        self.state.pool.counters()
    }

    /// Forgets the dropped tables' parsed manifests, and makes every core forget what it caches
    /// of them: footers and open descriptors, and decoded pages. The caches are keyed by table incarnation,
    /// so nothing stale could be served anyway; this frees the memory and closes deleted files.
    /// Makes every core enforce `tenant`'s CPU shares, IO shares and buffer-pool floor
    /// (split evenly over the cores' pools) from `quota`; nothing to do when this core already
    /// has these values. Called before each of the tenant's queries and when its quota changes.
    pub async fn apply_quota(&self, tenant: &str, quota: &TenantQuota) {
        let resources = quota.resources();
        if self.state.quotas.borrow().get(tenant) == Some(&resources)
            || (resources == (0, 0, 0) && !self.state.quotas.borrow().contains_key(tenant))
        {
            return;
        }
        let (group, cores) = (runtime::Group::tenant(tenant), self.peers.count());
        let calls = (0..cores).map(|peer| {
            let tenant = tenant.to_owned();
            self.peers
                .call(&self.state, peer, move |state, _| async move {
                    let (cpu, io, floor) = resources;
                    runtime::set_group_shares(group, cpu as usize);
                    io_shares::set_shares(group, io as usize);
                    state.pool.set_floor(group, (floor / cores as u64) as usize);
                    let mut quotas = state.quotas.borrow_mut();
                    if resources == (0, 0, 0) {
                        quotas.remove(&tenant);
                    } else {
                        quotas.insert(tenant, resources);
                    }
                })
        });
        futures::future::join_all(calls).await;
    }

    pub async fn forget_tables(&self, dropped: &[TableManifest]) {
        let files: hashbrown::HashSet<u64> = dropped
            .iter()
            .flat_map(|m| m.files.iter().map(move |f| file_cache_id(m, f)))
            .collect();
        let tables: Arc<Vec<(String, String)>> = Arc::new(
            dropped
                .iter()
                .map(|m| (m.tenant.clone(), m.table.clone()))
                .collect(),
        );
        let (data_dir, forget) = (self.config.data_dir.clone(), tables.clone());
        runtime::spawn_blocking(move || {
            for (tenant, table) in forget.iter() {
                manifest::forget_cached(&data_dir, tenant, table);
            }
        })
        .await;
        let files = Arc::new(files);
        let calls = (0..self.peers.count()).map(|peer| {
            let (files, tables) = (files.clone(), tables.clone());
            self.peers
                .call(&self.state, peer, move |state, _| async move {
                    state.metadata.evict_files(&files);
                    state.pool.evict_files(&files);
                    state.partials.evict_files(&files);
                    for (tenant, table) in tables.iter() {
                        state.ingest.forget(tenant, table).await;
                    }
                })
        });
        futures::future::join_all(calls).await;
    }

    /// The version of the data `prepared` reads, as text: the table's incarnation and manifest
    /// version, then per write-ahead log the highest LSN of the table's rows buffered in memory
    /// above the manifest's marks (what the query's scan of buffered rows takes). The rows a
    /// query reads are those of its version or later ones, and any row acknowledged before
    /// this call is in the version, so a result cached under it is never stale.
    pub async fn data_version(&self, prepared: &PreparedQuery) -> Result<String> {
        let manifest = &prepared.manifest;
        let answers = self
            .ask_buffering_cores(
                manifest,
                |ingest, (tenant, table, incarnation, marks)| async move {
                    Ok(ingest.buffered_high(&tenant, &table, incarnation, &marks))
                },
            )
            .await?;
        let mut highs: Vec<(Arc<str>, ingest::wal::Lsn)> = answers.into_iter().flatten().collect();
        highs.sort();
        let mut version = format!("{}.{}", manifest.incarnation, manifest.version);
        for (log, lsn) in highs {
            version.push_str(&format!(",{log}={lsn}"));
        }
        Ok(version)
    }

    /// The rows and content digest (`table::digest`) of everything the prepared query reads:
    /// its manifest's files (the digests their entries record: `None` when a file has none)
    /// and every core's buffered chunks above the manifest's marks, as one snapshot.
    pub async fn content_digest(&self, prepared: &PreparedQuery) -> Result<(u64, Option<u64>)> {
        let manifest = &prepared.manifest;
        let buffered = self
            .ask_buffering_cores(
                manifest,
                |ingest, (tenant, table, incarnation, marks)| async move {
                    ingest
                        .buffered_digest(&tenant, &table, incarnation, &marks)
                        .await
                },
            )
            .await?;
        let mut rows = manifest.total_rows();
        let mut digest = manifest
            .files
            .iter()
            .try_fold(0u64, |sum, file| Some(sum.wrapping_add(file.digest?)));
        for (buffered_rows, buffered_digest) in buffered {
            rows += buffered_rows;
            digest = digest.map(|d| d.wrapping_add(buffered_digest));
        }
        Ok((rows, digest))
    }

    /// Runs `job` on every core that may hold buffered rows (`Epochs::holds_rows`; the others
    /// have nothing to add, see `scatter`) with that core's ingestion state and the manifest's
    /// table (tenant, table, incarnation, marks); the answers.
    async fn ask_buffering_cores<F, Fut, T>(
        &self,
        manifest: &TableManifest,
        job: F,
    ) -> Result<Vec<T>>
    where
        F: FnOnce(Rc<ingest::IngestCore>, BufferedTable) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
        T: Send + 'static,
    {
        let table: BufferedTable = (
            Arc::from(manifest.tenant.as_str()),
            Arc::from(manifest.table.as_str()),
            manifest.incarnation,
            Arc::new(manifest.ingest.logs.clone()),
        );
        let calls = (0..self.peers.count())
            .filter(|&peer| self.state.ingest.core_holds_rows(peer))
            .map(|peer| {
                let (job, table) = (job.clone(), table.clone());
                self.peers.call(&self.state, peer, move |state, _| {
                    job(state.ingest.clone(), table)
                })
            });
        let mut answers = Vec::new();
        for answer in futures::future::join_all(calls).await {
            answers.push(answer??);
        }
        Ok(answers)
    }

    /// `Engine::memory_report`, from inside a core, with the buffer pools' hits and misses
    /// summed over every core.
    pub async fn memory_report(&self) -> Result<(MemoryReport, u64, u64)> {
        let calls = (0..self.peers.count()).map(|peer| {
            self.peers.call(&self.state, peer, |state, _| async move {
                let pool = state.pool.counters();
                (CoreMemory::of(&state), pool.hits, pool.misses)
            })
        });
        let (mut cores, mut hits, mut misses) = (Vec::new(), 0, 0);
        for answer in futures::future::join_all(calls).await {
            let (core, core_hits, core_misses) = answer?;
            cores.push(core);
            hits += core_hits;
            misses += core_misses;
        }
        let report = MemoryReport::new(&self.config, self.memory.used(), &cores);
        Ok((report, hits, misses))
    }

    pub async fn sql(&self, tenant: &str, text: &str) -> Result<QueryResult> {
        let statement = sql::parse(text)?;
        self.execute(tenant, statement).await
    }

    /// Makes one batch durable in `tenant/table` under (producer, sequence) and visible to the
    /// next query: converted to the table's columns here (`ingest::prepare`), then logged and
    /// buffered by the producer's owner core (`ingest::owner_core`). `ipc` is the batch as the
    /// client sent it (an Arrow IPC stream, in the pieces it arrived in), which is what the log
    /// keeps; `batches` are decoded from it, viewing its bytes.
    pub async fn ingest(
        &self,
        tenant: &str,
        table: &str,
        producer: &str,
        sequence: u64,
        batches: Vec<RecordBatch>,
        ipc: ingest::wal::Payload,
    ) -> Result<Ack> {
        ingest::validate_producer(producer)?;
        let (data_dir, owner, name) = (
            self.config.data_dir.clone(),
            tenant.to_owned(),
            table.to_owned(),
        );
        let load = move || manifest::load_cached(&data_dir, &owner, &name);
        let missing = || Error::NoSuchTable {
            tenant: tenant.to_owned(),
            table: table.to_owned(),
        };
        let mut manifest = runtime::spawn_blocking(load.clone())
            .await?
            .ok_or_else(missing)?;
        // A batch with columns the table lacks adds them first (nullable), in a publication of
        // its own: the record in the log then always matches a durable schema.
        let added = ingest::added_columns(&manifest.columns, &batches)?;
        if !added.is_empty() {
            // The batch must fit the evolved table before the table evolves: a batch that fails
            // changes nothing, its schema included.
            let evolved: Vec<_> = manifest.columns.iter().chain(&added).cloned().collect();
            ingest::prepare(&evolved, &batches)?;
            let (data_dir, owner, name, incarnation) = (
                self.config.data_dir.clone(),
                tenant.to_owned(),
                table.to_owned(),
                manifest.incarnation,
            );
            runtime::spawn_blocking(move || {
                manifest::add_columns(&data_dir, &owner, &name, incarnation, &added)
            })
            .await?;
            manifest = runtime::spawn_blocking(load).await?.ok_or_else(missing)?;
        }
        let mut prepared = ingest::prepare(&manifest.columns, &batches)?;
        // A batch of no rows only declared its columns.
        prepared.retain(|b| b.num_rows() > 0);
        drop(batches);
        let core = ingest::owner_core(tenant, table, producer, self.peers.count());
        let producer = producer.to_owned();
        self.peers
            .call(&self.state, core, move |state, _| async move {
                state
                    .ingest
                    .append(&manifest, &producer, sequence, prepared, ipc)
                    .await
            })
            .await?
    }

    /// Flushes every core's buffered rows of `tenant/table`; returns the files written.
    pub async fn flush_ingest(&self, tenant: &str, table: &str) -> Result<u64> {
        let calls = (0..self.peers.count()).map(|peer| {
            let (tenant, table) = (tenant.to_owned(), table.to_owned());
            self.peers
                .call(&self.state, peer, move |state, _| async move {
                    state.ingest.flush(&tenant, &table).await
                })
        });
        let mut files = 0;
        for result in futures::future::join_all(calls).await {
            files += result??;
        }
        Ok(files)
    }

    /// Runs a parsed statement for `tenant`, coordinated by this core, and collects the result.
    pub async fn execute(&self, tenant: &str, statement: Statement) -> Result<QueryResult> {
        let mut batches = Vec::new();
        let mut result = self.execute_into(tenant, statement, &mut batches).await?;
        result.batches = batches;
        Ok(result)
    }

    /// Runs a parsed statement for `tenant`, coordinated by this core, handing the result to
    /// `sink` batch by batch (`prepare`, then `run_into`).
    pub async fn execute_into<S: BatchSink>(
        &self,
        tenant: &str,
        statement: Statement,
        sink: &mut S,
    ) -> Result<QueryResult> {
        let prepared = self.prepare(tenant, statement).await?;
        self.run_into(prepared, sink).await
    }

    /// Runs a statement over rows held in memory rather than files (a system table such as
    /// `query_stats`, whose rows `batch` holds in `columns`' order and types) on this core,
    /// with the same binding, filters, aggregates, ORDER BY and LIMIT as a table's.
    pub async fn execute_rows<S: BatchSink>(
        &self,
        statement: Statement,
        columns: &[manifest::ColumnDef],
        batch: RecordBatch,
        sink: &mut S,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let Statement::Query(query) = statement else {
            return Err(Error::Plan(
                "EXPLAIN is for tables; a system table is held in memory".into(),
            ));
        };
        let plan = plan::bind(&query, columns)?;
        let chunk = Rc::new(crate::ingest::MemChunk::new(
            Arc::from("system"),
            0,
            batch,
            columns,
        ));
        let memory = self.memory.reserve();
        let (output, scan) = exec::execute_chunks(&self.state, &plan, &[chunk], &memory).await?;
        let result = finish(&plan, vec![output], &memory)?;
        sink.send(result).await?;
        Ok(QueryResult {
            schema: output_schema(&plan),
            batches: Vec::new(),
            stats: QueryStats {
                scan,
                elapsed: started.elapsed(),
                class: TaskClass::Latency,
            },
            explain: None,
        })
    }

    /// Plans a statement for `tenant`: reads the table's manifest, binds the query and prunes
    /// files by their statistics, which tells its class (`PreparedQuery::class`) before it runs.
    /// Rows a flush moves from buffers into files stay in memory until the prepared query is
    /// run or dropped.
    pub async fn prepare(&self, tenant: &str, statement: Statement) -> Result<PreparedQuery> {
        let (query, explain) = match statement {
            Statement::Query(query) => (query, false),
            Statement::Explain(query) => (query, true),
        };
        // Registered before the manifest is read (`ingest::Epochs`).
        let epoch = self.state.ingest.enter_query();
        // The parsed manifest if unchanged (a stat, here); else read and parse off the core.
        let data_dir = &self.config.data_dir;
        let manifest = match manifest::cached_unchanged(data_dir, tenant, &query.table) {
            Some(manifest) => Some(manifest),
            None => {
                let (data_dir, owner, table) =
                    (data_dir.clone(), tenant.to_owned(), query.table.clone());
                runtime::spawn_blocking(move || manifest::load_cached(&data_dir, &owner, &table))
                    .await?
            }
        }
        .ok_or_else(|| Error::NoSuchTable {
            tenant: tenant.to_owned(),
            table: query.table.clone(),
        })?;
        #[cfg(test)]
        {
            let pause = exec::fail_points::QUERY_PAUSE_MS.load(Ordering::Relaxed);
            if pause > 0 {
                runtime::sleep(Duration::from_millis(pause)).await;
            }
        }
        let plan = Arc::new(plan::bind(&query, &manifest.columns)?);
        let (tasks, pruning) = file_tasks(&self.config, &manifest, &plan);
        Ok(PreparedQuery {
            class: query_class(&plan, &tasks),
            manifest,
            plan,
            tasks,
            pruning,
            explain,
            _epoch: epoch,
        })
    }

    /// Runs a prepared query, handing the result to `sink` batch by batch; the returned
    /// `QueryResult` then holds no batches. Row queries without ORDER BY stream: cores send
    /// chunks as they scan and wait while `sink` is behind, so memory stays bounded whatever
    /// the result's size. Other queries deliver their one merged batch at the end.
    pub async fn run_into<S: BatchSink>(
        &self,
        prepared: PreparedQuery,
        sink: &mut S,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let PreparedQuery {
            class,
            manifest,
            plan,
            tasks,
            pruning,
            explain,
            _epoch,
        } = prepared;
        let schema = output_schema(&plan);
        let buffered = buffered_scan(&manifest);
        let streaming =
            !explain && plan.order_by.is_empty() && matches!(plan.mode, Mode::Rows { .. });
        let memory = self.memory.reserve();
        // The tenant's task queues: its CPU shares on every core, its pages in every pool.
        let lane = (class, runtime::Group::tenant(&manifest.tenant));
        let (batch, mut scan) = if streaming {
            (
                None,
                self.stream_on_cores(
                    lane,
                    &plan,
                    &|chunk| row_batch(&plan, &schema, chunk),
                    tasks,
                    &buffered,
                    sink,
                    &memory,
                )
                .await?,
            )
        } else {
            // Scanning, merging and sorting run in the query's class on every core.
            let (this, plan, buffered, memory) =
                (self.clone(), plan.clone(), buffered.clone(), memory.clone());
            runtime::run_in_group(lane.0, lane.1, async move {
                this.run_on_cores(&plan, tasks, &buffered, explain, &memory)
                    .await
            })
            .await?
        };
        pruning.add_to(&mut scan);
        let mut result = QueryResult {
            schema,
            batches: Vec::new(),
            stats: QueryStats {
                scan,
                elapsed: Duration::ZERO,
                class,
            },
            explain: None,
        };
        if explain {
            let text = explain_text(&manifest, &plan, &result.stats.scan, class);
            result.schema = Arc::new(Schema::new(vec![Field::new(
                "plan",
                arrow_schema::DataType::Utf8,
                false,
            )]));
            let lines: StringArray = text.lines().map(Some).collect();
            let batch = RecordBatch::try_new(result.schema.clone(), vec![Arc::new(lines)])
                .map_err(|e| Error::Internal(e.to_string()))?;
            sink.send(batch).await?;
            result.explain = Some(text);
        } else if let Some(batch) = batch {
            sink.send(batch).await?;
        }
        result.stats.elapsed = started.elapsed();
        Ok(result)
    }

    /// Runs the scan on every core: this core sends each peer its share of the files over the
    /// core mesh and merges the partial results they send back (with `finish` unless only
    /// pruning is asked for).
    async fn run_on_cores(
        &self,
        plan: &Arc<Plan>,
        tasks: Vec<FileTask>,
        buffered: &Arc<exec::BufferedScan>,
        prune_only: bool,
        memory: &Arc<Reservation>,
    ) -> Result<(Option<RecordBatch>, ScanStats)> {
        let (outputs, scan) = self
            .scatter(plan, tasks, buffered, prune_only, None, memory)
            .await?;
        let batch = if prune_only {
            None
        } else if outputs
            .iter()
            .any(|o| matches!(o, CoreOutput::Partitioned(_)))
        {
            Some(self.merge_partitions(plan, outputs, memory).await?)
        } else {
            Some(finish(plan, outputs, memory)?)
        };
        Ok((batch, scan))
    }

    /// Merges grouped outputs split by key hash on every core, partition `p` on core `p`
    /// (`finish_partition`), then concatenates the partitions' rows, sorts and limits here.
    async fn merge_partitions(
        &self,
        plan: &Arc<Plan>,
        outputs: Vec<CoreOutput>,
        memory: &Arc<Reservation>,
    ) -> Result<RecordBatch> {
        let chunks = self
            .on_partitions(plan, outputs, memory, finish_partition)
            .await?;
        sorted_batch(plan, chunks, &(0..plan.outputs.len()).collect::<Vec<_>>())
    }

    /// Runs `job` on every core `p` over partition `p` of the grouped `outputs` (split by key
    /// hash, `CoreOutput::Partitioned`), the parts in core order; its answers in core order.
    async fn on_partitions<T: Send + 'static>(
        &self,
        plan: &Arc<Plan>,
        outputs: Vec<CoreOutput>,
        memory: &Arc<Reservation>,
        job: fn(&Plan, Vec<GroupRows>, &Reservation) -> Result<T>,
    ) -> Result<Vec<T>> {
        let count = self.peers.count();
        let mut parts: Vec<Vec<GroupRows>> = (0..count).map(|_| Vec::new()).collect();
        // `outputs` are in core order, so each partition's parts are too.
        for output in outputs {
            let CoreOutput::Partitioned(split) = output else {
                return Err(Error::Internal(
                    "a core's groups were not partitioned".into(),
                ));
            };
            for (part, rows) in split.into_iter().enumerate() {
                parts
                    .get_mut(part)
                    .ok_or_else(|| Error::Internal("more partitions than cores".into()))?
                    .push(rows);
            }
        }
        // Peers first, this core last (see `scatter`).
        let me = self.peers.me();
        let mut parts: Vec<(usize, Vec<GroupRows>)> = parts.into_iter().enumerate().collect();
        parts.sort_by_key(|(peer, _)| *peer == me);
        let calls = parts.into_iter().map(|(peer, rows)| {
            let (plan, memory) = (plan.clone(), memory.clone());
            async move {
                let answer = self
                    .peers
                    .call(&self.state, peer, move |_, _| async move {
                        job(&plan, rows, &memory)
                    })
                    .await;
                (peer, answer)
            }
        });
        let mut results = futures::future::join_all(calls).await;
        results.sort_by_key(|(peer, _)| *peer);
        let mut answers = Vec::with_capacity(results.len());
        for (_, answer) in results {
            answers.push(answer??);
        }
        Ok(answers)
    }

    /// Row mode without ORDER BY: every core streams chunks here as it scans; each becomes a
    /// batch for `sink` (`batch_of`), until the LIMIT is met or the sink refuses (which stops
    /// the cores).
    #[allow(clippy::too_many_arguments)]
    async fn stream_on_cores<S: BatchSink>(
        &self,
        lane: (TaskClass, runtime::Group),
        plan: &Arc<Plan>,
        batch_of: &dyn Fn(Vec<ArrayRef>) -> Result<RecordBatch>,
        tasks: Vec<FileTask>,
        buffered: &Arc<exec::BufferedScan>,
        sink: &mut S,
        memory: &Arc<Reservation>,
    ) -> Result<ScanStats> {
        // A few chunks in flight per core: enough to overlap scanning with sending.
        let (sender, mut receiver) = futures::channel::mpsc::channel(2 * self.peers.count());
        // The cores scan in the query's class; chunks are delivered in this task's.
        let (this, scan_plan, buffered, memory) =
            (self.clone(), plan.clone(), buffered.clone(), memory.clone());
        let scatter = runtime::run_in_group(lane.0, lane.1, async move {
            this.scatter(&scan_plan, tasks, &buffered, false, Some(sender), &memory)
                .await
        });
        let mut remaining = plan.limit.unwrap_or(u64::MAX);
        let deliver = async {
            while remaining > 0 {
                let Some(chunk) = receiver.next().await else {
                    break;
                };
                let mut batch = batch_of(chunk)?;
                if batch.num_rows() as u64 > remaining {
                    batch = batch.slice(0, remaining as usize);
                }
                remaining -= batch.num_rows() as u64;
                if batch.num_rows() > 0 {
                    sink.send(batch).await?;
                }
            }
            // Dropping the receiver tells the cores to stop.
            drop(receiver);
            Ok::<_, Error>(())
        };
        let (scattered, delivered) = futures::join!(scatter, deliver);
        delivered?;
        Ok(scattered?.1)
    }

    /// Sends each core its share of the files and gathers what they return.
    async fn scatter(
        &self,
        plan: &Arc<Plan>,
        tasks: Vec<FileTask>,
        buffered: &Arc<exec::BufferedScan>,
        prune_only: bool,
        out: Option<exec::RowSender>,
        memory: &Arc<Reservation>,
    ) -> Result<(Vec<CoreOutput>, ScanStats)> {
        let count = self.peers.count();
        let me = self.peers.me();
        let files_total = tasks.iter().filter(|t| t.slice.index == 0).count() as u64;
        let mut shares: Vec<Vec<FileTask>> = vec![Vec::new(); count];
        for task in tasks {
            shares[task.core(count)].push(task);
        }
        // Peers' shares first, this core's last: join_all polls in order, and the local share
        // runs until its first yield, so a peer listed after it would start a time slice late.
        // A peer with no file and no buffered rows (of any table) is not asked.
        let mut shares: Vec<(usize, Vec<FileTask>)> = shares
            .into_iter()
            .enumerate()
            .filter(|(peer, share)| {
                *peer == me || !share.is_empty() || self.state.ingest.core_holds_rows(*peer)
            })
            .collect();
        shares.sort_by_key(|(peer, _)| *peer == me);
        let calls: Vec<_> = shares
            .into_iter()
            .map(|(peer, share)| {
                let (plan, out, memory) = (plan.clone(), out.clone(), memory.clone());
                let buffered = buffered.clone();
                async move {
                    let result = self
                        .peers
                        .call(&self.state, peer, move |state, _| async move {
                            let (output, stats) = exec::execute(
                                state,
                                plan.clone(),
                                share,
                                buffered,
                                prune_only,
                                out,
                                memory,
                            )
                            .await?;
                            // Groups by key are merged on every core, each its partition.
                            Ok::<_, Error>((output.partition(&plan, count), stats))
                        })
                        .await;
                    (peer, result)
                }
            })
            .collect();
        // Only the cores hold senders now: the stream ends when the last core is done.
        drop(out);
        let mut results = futures::future::join_all(calls).await;
        // Merge in core order, whichever core coordinates, so float sums do not depend on it.
        results.sort_by_key(|(peer, _)| *peer);
        let mut outputs = Vec::with_capacity(results.len());
        let mut scan = ScanStats {
            files_total,
            ..Default::default()
        };
        for (_, result) in results {
            let (output, stats) = result??;
            scan.add(&stats);
            outputs.push(output);
        }
        Ok((outputs, scan))
    }
}

/// Where `CoreContext::execute_into` delivers a result, batch by batch and in order.
pub trait BatchSink {
    /// Takes the next batch; an error stops the query and is returned by `execute_into`.
    fn send(&mut self, batch: RecordBatch) -> impl Future<Output = Result<()>>;
}

impl BatchSink for Vec<RecordBatch> {
    async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        self.push(batch);
        Ok(())
    }
}

/// Names one file of one table incarnation in the buffer pool and the metadata cache. The
/// incarnation makes it unique across a drop and re-create that reuses names, ids and paths.
fn file_cache_id(manifest: &TableManifest, file: &manifest::FileEntry) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        &manifest.tenant,
        &manifest.table,
        manifest.incarnation,
        file.id,
        &file.path,
    )
        .hash(&mut hasher);
    hasher.finish()
}

/// Rows a query may decode up to which it runs in the latency class: point lookups and ranges
/// that statistics mostly answer, not scans of a table.
const LATENCY_CLASS_ROWS: u64 = 1 << 18;

/// The task queue a query scans in: `Latency` when the files left after pruning hold few rows
/// it must decode (a `COUNT(*)` over files the statistics prove all-matching decodes none),
/// `Throughput` otherwise.
fn query_class(plan: &Plan, tasks: &[FileTask]) -> TaskClass {
    let count_only = matches!(&plan.mode, Mode::Groups { keys, aggregates }
        if keys.is_empty() && aggregates.iter().all(|a| a.function == sql::AggregateFunction::CountStar));
    let rows: u64 = tasks
        .iter()
        .filter(|task| task.slice.index == 0 && !(count_only && task.truth == Truth::Always))
        .map(|task| task.rows)
        .sum();
    if rows <= LATENCY_CLASS_ROWS {
        TaskClass::Latency
    } else {
        TaskClass::Throughput
    }
}

/// One task per file the manifest statistics cannot rule out (a file of at least `split_rows`
/// rows: one per core, each scanning a share of its row groups), and the number ruled out.
/// What the manifest's statistics pruned before any file was opened.
#[derive(Clone, Copy, Debug, Default)]
struct Pruning {
    files: u64,
    /// Partitions (a file's directory, e.g. `date=2024-01-01`) of the table, and those none of
    /// whose files is left to read.
    partitions_total: u64,
    partitions_pruned: u64,
}

impl Pruning {
    /// Counts what the manifest's statistics pruned into a query's scan counters.
    fn add_to(&self, scan: &mut ScanStats) {
        scan.files_total += self.files;
        scan.files_pruned += self.files;
        scan.partitions_total = self.partitions_total;
        scan.partitions_pruned = self.partitions_pruned;
    }
}

/// The buffered rows of a table a query reads on each core (those above its manifest's marks).
fn buffered_scan(manifest: &TableManifest) -> Arc<exec::BufferedScan> {
    Arc::new(exec::BufferedScan {
        tenant: manifest.tenant.clone(),
        table: manifest.table.clone(),
        incarnation: manifest.incarnation,
        marks: manifest.ingest.logs.clone(),
    })
}

fn file_tasks(
    config: &EngineConfig,
    manifest: &Arc<TableManifest>,
    plan: &Plan,
) -> (Vec<FileTask>, Pruning) {
    let data_dir = &config.data_dir;
    let table_dir = Arc::new(manifest::table_dir(
        data_dir,
        &manifest.tenant,
        &manifest.table,
    ));
    let mut tasks = Vec::new();
    let mut pruned = 0;
    // Per partition: whether some file of it is read.
    let mut partitions: hashbrown::HashMap<&str, bool> = hashbrown::HashMap::new();
    for (index, file) in manifest.files.iter().enumerate() {
        let partition = file.path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let truth = exec::file_truth(plan.filter.as_ref(), &file.columns);
        let read = partitions.entry(partition).or_insert(false);
        if truth == Truth::Never {
            pruned += 1;
            continue;
        }
        *read = true;
        let shares = if config.cores > 1 && file.rows >= config.split_file_rows {
            config.cores as u32
        } else {
            1
        };
        for share in 0..shares {
            tasks.push(FileTask {
                cache_id: file_cache_id(manifest, file),
                rows: file.rows,
                truth,
                manifest: manifest.clone(),
                index,
                table_dir: table_dir.clone(),
                slice: exec::Slice {
                    index: share,
                    of: shares,
                },
            });
        }
    }
    let pruning = Pruning {
        files: pruned,
        partitions_total: partitions.len() as u64,
        partitions_pruned: partitions.values().filter(|&&read| !read).count() as u64,
    };
    (tasks, pruning)
}

fn explain_text(
    manifest: &TableManifest,
    plan: &Plan,
    scan: &ScanStats,
    class: TaskClass,
) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "Scan {}/{} ({} files, {} rows)\n",
        manifest.tenant,
        manifest.table,
        manifest.files.len(),
        manifest.total_rows()
    ));
    match &plan.filter {
        Some(filter) => text.push_str(&format!("  filter: {}\n", describe_filter(filter, plan))),
        None => text.push_str("  filter: none\n"),
    }
    let names = |columns: &[usize]| -> String {
        columns
            .iter()
            .map(|&c| plan.columns[c].name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    text.push_str(&format!(
        "  filter columns: [{}]\n",
        names(&plan.filter_columns())
    ));
    text.push_str(&format!(
        "  value columns (late-materialised): [{}]\n",
        names(&plan.value_columns())
    ));
    match &plan.mode {
        Mode::Rows { .. } => text.push_str("Project rows\n"),
        Mode::Groups { keys, aggregates } => text.push_str(&format!(
            "Aggregate: {} group key(s), {} aggregate(s), dense ids per core, merged across cores\n",
            keys.len(),
            aggregates.len()
        )),
    }
    if !plan.order_by.is_empty() {
        text.push_str(&format!("Sort by {} key(s)\n", plan.order_by.len()));
    }
    if let Some(limit) = plan.limit {
        text.push_str(&format!("Limit {limit}\n"));
    }
    text.push_str(&format!("Runs in the {} class\n", class.name()));
    text.push_str(&format!(
        "Pruning: files {} of {} pruned by manifest statistics; row groups {} of {} pruned; filter-column pages {} of {} pruned by the page index; {} rows answerable from statistics\n",
        scan.files_pruned, scan.files_total, scan.row_groups_pruned, scan.row_groups_total, scan.pages_pruned, scan.pages_total, scan.rows_from_statistics
    ));
    text
}

fn describe_filter(filter: &plan::Filter, plan: &Plan) -> String {
    match filter {
        plan::Filter::And(parts) => format!(
            "({})",
            parts
                .iter()
                .map(|p| describe_filter(p, plan))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        plan::Filter::Or(parts) => format!(
            "({})",
            parts
                .iter()
                .map(|p| describe_filter(p, plan))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        plan::Filter::Unknown => "UNKNOWN".into(),
        plan::Filter::Leaf { column, test } => format!("{} {:?}", plan.columns[*column].name, test),
    }
}

/// The schema of a query's result.
fn output_schema(plan: &Plan) -> SchemaRef {
    Arc::new(Schema::new(
        plan.outputs
            .iter()
            .map(|o| Field::new(&o.name, o.column_type.to_arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// The Arrow type a row-mode value column is returned as.
fn value_type(plan: &Plan, value: &plan::ValueExpr) -> arrow_schema::DataType {
    match value {
        plan::ValueExpr::Date(_) => ColumnType::Date,
        plan::ValueExpr::Column(c) => plan.columns[*c].column_type,
    }
    .to_arrow()
}

/// The output column each row-mode output reads from the value columns.
fn value_sources(plan: &Plan) -> Vec<usize> {
    plan.outputs
        .iter()
        .map(|o| {
            if let OutputRef::Value(v) = o.source {
                v
            } else {
                0
            }
        })
        .collect()
}

/// One streamed chunk of value columns as a result batch.
fn row_batch(plan: &Plan, schema: &SchemaRef, chunk: Vec<ArrayRef>) -> Result<RecordBatch> {
    let Mode::Rows { values } = &plan.mode else {
        return Err(Error::Internal("row chunk in group mode".into()));
    };
    let internal = |e: arrow_schema::ArrowError| Error::Internal(e.to_string());
    let columns: Vec<ArrayRef> = chunk
        .into_iter()
        .zip(values)
        .map(|(array, value)| {
            let target = value_type(plan, value);
            if array.data_type() == &target {
                Ok(array)
            } else {
                arrow_cast::cast(&array, &target).map_err(internal)
            }
        })
        .collect::<Result<_>>()?;
    let output: Vec<ArrayRef> = value_sources(plan)
        .into_iter()
        .map(|i| columns[i].clone())
        .collect();
    let options = arrow_array::RecordBatchOptions::new()
        .with_row_count(Some(output.first().map_or(0, |c| c.len())));
    RecordBatch::try_new_with_options(schema.clone(), output, &options).map_err(internal)
}

/// Merges core outputs into the final batch: groups or rows, then ORDER BY and LIMIT.
/// The merged groups and the rows concatenated for sorting are charged to the query's `memory`.
/// (Groups with GROUP BY keys are merged on every core instead: `CoreContext::merge_partitions`.)
fn finish(plan: &Plan, outputs: Vec<CoreOutput>, memory: &Reservation) -> Result<RecordBatch> {
    // `columns` are the pre-output columns the sort keys index.
    let (columns, outputs_from): (Vec<ArrayRef>, Vec<usize>) = match &plan.mode {
        Mode::Groups { .. } => {
            let parts: Vec<_> = outputs
                .into_iter()
                .filter_map(|o| {
                    if let CoreOutput::Groups(g) = o {
                        Some(g)
                    } else {
                        None
                    }
                })
                .collect();
            let groups = aggregate::merge(parts);
            memory.grow(groups.memory_bytes())?;
            (
                group_columns(plan, groups)?,
                (0..plan.outputs.len()).collect(),
            )
        }
        Mode::Rows { .. } => (row_columns(plan, outputs, memory)?, value_sources(plan)),
    };
    sorted_batch(plan, vec![columns], &outputs_from)
}

/// The value columns of row-mode core outputs concatenated (each in its value's type), charged
/// to the query's `memory`.
fn row_columns(
    plan: &Plan,
    outputs: Vec<CoreOutput>,
    memory: &Reservation,
) -> Result<Vec<ArrayRef>> {
    let Mode::Rows { values } = &plan.mode else {
        return Err(Error::Internal("rows in group mode".into()));
    };
    let internal = |e: arrow_schema::ArrowError| Error::Internal(e.to_string());
    let mut per_column: Vec<Vec<ArrayRef>> = vec![Vec::new(); values.len()];
    for output in outputs {
        if let CoreOutput::Rows(chunks) = output {
            for chunk in chunks {
                for (i, array) in chunk.into_iter().enumerate() {
                    per_column[i].push(array);
                }
            }
        }
    }
    // Concatenation copies every collected row once more.
    let copied = per_column
        .iter()
        .flatten()
        .map(|a| a.get_array_memory_size() as u64)
        .sum();
    memory.grow(copied)?;
    let mut columns = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let target = value_type(plan, value);
        let parts: Vec<ArrayRef> = per_column[i]
            .iter()
            .map(|a| {
                if a.data_type() == &target {
                    Ok(a.clone())
                } else {
                    arrow_cast::cast(a, &target)
                }
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(internal)?;
        let refs: Vec<&dyn arrow_array::Array> = parts.iter().map(|a| a.as_ref()).collect();
        columns.push(if refs.is_empty() {
            arrow_array::new_empty_array(&target)
        } else {
            arrow_select::concat::concat(&refs).map_err(internal)?
        });
    }
    Ok(columns)
}

/// ORDER BY and LIMIT over pre-output column chunks, then the output columns (`outputs_from`
/// indexes the pre-output columns) as the result's batch.
fn sorted_batch(
    plan: &Plan,
    chunks: Vec<Vec<ArrayRef>>,
    outputs_from: &[usize],
) -> Result<RecordBatch> {
    let limit = plan.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let columns = exec::sort_rows(chunks, &plan.order_by, limit)?;
    let mut output: Vec<ArrayRef> = outputs_from.iter().map(|&i| columns[i].clone()).collect();
    if let Some(limit) = limit {
        output = output
            .into_iter()
            .map(|c| c.slice(0, limit.min(c.len())))
            .collect();
    }
    let options = arrow_array::RecordBatchOptions::new()
        .with_row_count(Some(output.first().map_or(0, |c| c.len())));
    RecordBatch::try_new_with_options(output_schema(plan), output, &options)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The output columns of merged groups (without GROUP BY: one row, empty states if none).
fn group_columns(plan: &Plan, groups: GroupRows) -> Result<Vec<ArrayRef>> {
    let Mode::Groups { keys, aggregates } = &plan.mode else {
        return Err(Error::Internal("groups in row mode".into()));
    };
    let groups = if keys.is_empty() && groups.is_empty() {
        let empty: Vec<AccState> = aggregates.iter().map(AccState::empty).collect();
        GroupRows::single(&empty, aggregates)
    } else {
        groups
    };
    let mut columns = Vec::with_capacity(plan.outputs.len());
    for output in &plan.outputs {
        let column: ArrayRef = match output.source {
            OutputRef::Key(k) => {
                let values: Vec<Scalar> = groups.keys(k).iter().map(|v| v.to_scalar()).collect();
                scalars_to_array(output.column_type, &values)
            }
            OutputRef::Aggregate(a) => match groups.counts(a) {
                // Counts need no conversion (a table's row count fits an i64).
                Some(counts) if output.column_type == ColumnType::Int64 => Arc::new(
                    Int64Array::from_iter_values(counts.iter().map(|&n| n as i64)),
                ),
                _ => {
                    let values: Vec<Scalar> = (0..groups.len())
                        .map(|g| groups.state(a, g).finish(&aggregates[a], &plan.columns))
                        .collect::<Result<_>>()?;
                    scalars_to_array(output.column_type, &values)
                }
            },
            OutputRef::Value(_) => return Err(Error::Internal("row value in group mode".into())),
        };
        columns.push(column);
    }
    Ok(columns)
}

/// One core's part of a partitioned merge: the groups of one hash partition from every core,
/// merged in core order (so float sums fold as in a merge on one core), made output columns,
/// and cut to the query's top rows when it has a LIMIT (the partitions hold disjoint keys, so
/// the best rows overall are among each partition's best).
fn finish_partition(
    plan: &Plan,
    parts: Vec<GroupRows>,
    memory: &Reservation,
) -> Result<Vec<ArrayRef>> {
    let groups = aggregate::merge(parts);
    memory.grow(groups.memory_bytes())?;
    let columns = group_columns(plan, groups)?;
    let Some(limit) = plan.limit else {
        return Ok(columns);
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let columns = exec::sort_rows(vec![columns], &plan.order_by, Some(limit))?;
    Ok(columns
        .into_iter()
        .map(|c| c.slice(0, limit.min(c.len())))
        .collect())
}

/// Builds an Arrow array of `column_type` from scalars (NULL where `Scalar::Null`).
pub fn scalars_to_array(column_type: ColumnType, values: &[Scalar]) -> ArrayRef {
    let int = |s: &Scalar| {
        if let Scalar::Int(v) = s {
            Some(*v)
        } else {
            None
        }
    };
    match column_type {
        ColumnType::Int64 => Arc::new(values.iter().map(int).collect::<Int64Array>()),
        ColumnType::Int32 => Arc::new(
            values
                .iter()
                .map(|s| int(s).map(|v| v as i32))
                .collect::<Int32Array>(),
        ),
        ColumnType::Date => Arc::new(
            values
                .iter()
                .map(|s| int(s).map(|v| v as i32))
                .collect::<Date32Array>(),
        ),
        ColumnType::Timestamp => Arc::new(
            values
                .iter()
                .map(int)
                .collect::<TimestampMicrosecondArray>(),
        ),
        ColumnType::Float64 => Arc::new(
            values
                .iter()
                .map(|s| match s {
                    Scalar::Float(v) => Some(*v),
                    Scalar::Int(v) => Some(*v as f64),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        ColumnType::Utf8 => Arc::new(
            values
                .iter()
                .map(|s| {
                    if let Scalar::Str(v) = s {
                        Some(v.as_str())
                    } else {
                        None
                    }
                })
                .collect::<StringArray>(),
        ),
        ColumnType::Boolean => Arc::new(
            values
                .iter()
                .map(|s| {
                    if let Scalar::Bool(v) = s {
                        Some(*v)
                    } else {
                        None
                    }
                })
                .collect::<BooleanArray>(),
        ),
        ColumnType::Decimal { .. } => {
            let array = values
                .iter()
                .map(|s| {
                    if let Scalar::Decimal(v) = s {
                        Some(*v)
                    } else {
                        None
                    }
                })
                .collect::<arrow_array::Decimal128Array>();
            // Only a planner bug could make the type invalid; keep the values then.
            match column_type.to_arrow() {
                arrow_schema::DataType::Decimal128(precision, scale) => Arc::new(
                    array
                        .clone()
                        .with_precision_and_scale(precision, scale)
                        .unwrap_or(array),
                ),
                _ => Arc::new(array),
            }
        }
        ColumnType::Binary => Arc::new(
            values
                .iter()
                .map(|s| {
                    if let Scalar::Bytes(v) = s {
                        Some(v.as_slice())
                    } else {
                        None
                    }
                })
                .collect::<arrow_array::BinaryArray>(),
        ),
    }
}
