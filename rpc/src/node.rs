//! What every core's connections share: the node's limits, token verification and counters.
//! Both the server (which builds it) and the capability objects (which read it) depend on this
//! module, never on each other.

use crate::admission::Admission;
use crate::auth::Verifier;
use crate::metrics::Metrics;
use crate::query_log::QueryLog;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest incoming message, in 8-byte words (Cap'n Proto's traversal limit).
    pub traversal_limit_words: usize,
    /// Deepest pointer nesting in an incoming message.
    pub nesting_limit: i32,
    pub calls_in_flight_per_connection: usize,
    pub connections_max: usize,
    /// Queries scanning much data (the throughput class) running on the node at once
    /// (`CONCURRENT_QUERIES`).
    pub concurrent_queries: usize,
    /// Short queries (the latency class: point lookups, ranges the statistics mostly answer)
    /// running at once; they have slots of their own, so they never queue behind scans.
    pub concurrent_short_queries: usize,
    /// Queries that may wait for a slot, per class; one more is refused with `overloaded`.
    pub admission_queue: usize,
    /// How long a query waits for a slot before `overloaded`.
    pub admission_wait: Duration,
    /// A connection with no call in flight and nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// A sink that accepts nothing for this long fails its query (the client stopped reading).
    pub stall_timeout: Duration,
    /// Target Arrow IPC bytes per `BatchSink.push`.
    pub push_bytes: usize,
    /// Cap'n Proto streaming flow-control window per connection, in bytes.
    pub flow_window_bytes: usize,
    /// Rows an `importBatches` stream buffers before it writes files.
    pub import_buffer_bytes: u64,
    /// Threads doing blocking file-system work (import writes and commits, table creation and
    /// removal) at once on the node; work beyond waits up to `admission_wait`, then gets
    /// `overloaded`.
    pub blocking_threads_max: usize,
    /// Memory one query's result may hold on the server (from `MAX_MEMORY_GB`).
    pub query_memory_bytes: u64,
    /// Largest batch (Arrow IPC bytes) one `IngestStream.append` takes.
    pub ingest_batch_bytes: u64,
    /// Finished queries the node keeps for the `query_stats` table (oldest dropped first).
    pub query_stats_capacity: usize,
    /// Queries at least this slow are logged at warn (others at info).
    pub slow_query: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            traversal_limit_words: 8 << 20,
            nesting_limit: 64,
            calls_in_flight_per_connection: 64,
            connections_max: 10_000,
            concurrent_queries: 16,
            concurrent_short_queries: 64,
            admission_queue: 1024,
            admission_wait: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(30),
            push_bytes: 1 << 20,
            flow_window_bytes: 4 << 20,
            import_buffer_bytes: 256 << 20,
            blocking_threads_max: 32,
            query_memory_bytes: 4 << 30,
            ingest_batch_bytes: 256 << 20,
            query_stats_capacity: 10_000,
            slow_query: Duration::from_secs(1),
        }
    }
}

/// What every core's connections share: settings, token verification, counters. Atomics only.
pub struct Shared {
    /// Replaced whole when the node reloads its keys (SIGHUP): `Shared::verifier`.
    pub verifier: RwLock<Arc<Verifier>>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// Query slots and their queues (`Limits::concurrent_queries` and friends).
    pub admission: Arc<Admission>,
    /// Tenants' quota objects and their enforcement.
    pub quotas: crate::quota::Quotas,
    /// Blocking threads running (`Limits::blocking_threads_max`).
    pub blocking_threads: AtomicUsize,
    pub connections: AtomicUsize,
    pub started: Instant,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub address: SocketAddr,
    pub max_memory_bytes: u64,
    pub tls: Option<futures_rustls::TlsAcceptor>,
    /// The shared final-result cache in Redis, when configured.
    pub result_cache: Option<crate::result_cache::ResultCache>,
    /// Recent queries: the log lines and the `query_stats` table.
    pub query_log: QueryLog,
    /// Set when the node stops (SIGTERM): no new connection, query or write is taken.
    pub draining: AtomicBool,
    /// The node's cluster, when it is a member of one (`tessera serve --coordinator`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Shared {
    /// The token verifier in force now.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
