//! The node's Prometheus metrics and the HTTP side port that serves them (`/metrics`, `/health`).
//! Metrics are atomics shared by every core; the HTTP server is one plain thread, off the cores.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

pub struct Metrics {
    registry: Registry,
    pub queries_total: Counter,
    pub query_errors_total: Counter,
    pub queries_rejected_overloaded: Counter,
    pub query_duration_seconds: Histogram,
    pub query_queue_seconds: Histogram,
    pub queries_waiting: Gauge,
    pub data_scanned_bytes: Counter,
    pub data_read_bytes: Counter,
    pub rows_returned: Counter,
    pub ipc_bytes_sent: Counter,
    pub imported_rows: Counter,
    pub ingested_rows: Counter,
    pub ingested_bytes: Counter,
    pub queries_running: Gauge,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub logins_failed: Counter,
    pub memory_usage_percent: Gauge<f64, AtomicU64>,
    /// Sums of the cores' pool counters, advanced to them at each scrape.
    pub buffer_pool_hits: Counter,
    pub buffer_pool_misses: Counter,
    pub buffer_pool_bytes: Gauge,
    pub partial_cache_hits: Gauge,
    pub partial_cache_misses: Gauge,
    pub partial_cache_bytes: Gauge,
    pub partial_cache_evictions: Gauge,
    /// The shared final-result cache (`--redis-url`): lookups answered, lookups missed,
    /// results stored, and calls to Redis that failed (the query then ran as without it).
    pub result_cache_hits: Counter,
    pub result_cache_misses: Counter,
    pub result_cache_stores: Counter,
    pub result_cache_errors: Counter,
    /// Per tenant and limit (`concurrent_queries`, `result_bytes`, ...): its quota (0: none).
    pub tenant_quota: Family<Labels, Gauge>,
    /// Per tenant and limit: queries and writes refused (or appends held back) by its quota.
    pub tenant_quota_refusals: Family<Labels, Counter>,
    /// Per tenant: bytes of its table files when last measured.
    pub tenant_storage_bytes: Family<Labels, Gauge>,
    /// Per tenant: its queries running now.
    pub tenant_queries_running: Family<Labels, Gauge>,
    /// Per tenant with a buffer-pool floor: bytes of its decoded pages in the pools.
    pub tenant_pool_bytes: Family<Labels, Gauge>,
    /// Per tenant: queries finished, and those that failed (both made at a tenant's first query).
    pub tenant_queries: Family<Labels, Counter>,
    pub tenant_query_errors: Family<Labels, Counter>,
    /// The file system holding the data directory: bytes in use and its size.
    pub disk_used_bytes: Gauge,
    pub disk_capacity_bytes: Gauge,
    /// Per memory area (`engine::MemoryReport`): its budget and what it holds.
    pub memory_budget_bytes: Family<Labels, Gauge>,
    pub memory_used_bytes: Family<Labels, Gauge>,
    /// Rows of streaming ingestion buffered and not yet in files, and the age of the oldest.
    pub ingest_buffered_bytes: Gauge,
    pub ingest_oldest_buffered_seconds: Gauge<f64, AtomicU64>,
    /// Anti-entropy (`anti_entropy`): comparisons of a led table's replicas, and replicas found
    /// holding other rows than the rest (each then copied again).
    pub replica_comparisons: Counter,
    pub replica_differences: Counter,
    /// 1, labelled with the node's software version.
    pub build_info: Family<Labels, Gauge>,
}

/// Label pairs of a per-tenant metric.
pub type Labels = Vec<(String, String)>;

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tessera");
        let metrics = Metrics {
            queries_total: Counter::default(),
            query_errors_total: Counter::default(),
            queries_rejected_overloaded: Counter::default(),
            query_duration_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 20)),
            query_queue_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 24)),
            queries_waiting: Gauge::default(),
            data_scanned_bytes: Counter::default(),
            data_read_bytes: Counter::default(),
            rows_returned: Counter::default(),
            ipc_bytes_sent: Counter::default(),
            imported_rows: Counter::default(),
            ingested_rows: Counter::default(),
            ingested_bytes: Counter::default(),
            queries_running: Gauge::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            logins_failed: Counter::default(),
            memory_usage_percent: Gauge::default(),
            buffer_pool_hits: Counter::default(),
            buffer_pool_misses: Counter::default(),
            buffer_pool_bytes: Gauge::default(),
            partial_cache_hits: Gauge::default(),
            partial_cache_misses: Gauge::default(),
            partial_cache_bytes: Gauge::default(),
            partial_cache_evictions: Gauge::default(),
            result_cache_hits: Counter::default(),
            result_cache_misses: Counter::default(),
            result_cache_stores: Counter::default(),
            result_cache_errors: Counter::default(),
            tenant_quota: Family::default(),
            tenant_quota_refusals: Family::default(),
            tenant_storage_bytes: Family::default(),
            tenant_queries_running: Family::default(),
            tenant_pool_bytes: Family::default(),
            tenant_queries: Family::default(),
            tenant_query_errors: Family::default(),
            disk_used_bytes: Gauge::default(),
            disk_capacity_bytes: Gauge::default(),
            memory_budget_bytes: Family::default(),
            memory_used_bytes: Family::default(),
            ingest_buffered_bytes: Gauge::default(),
            ingest_oldest_buffered_seconds: Gauge::default(),
            replica_comparisons: Counter::default(),
            replica_differences: Counter::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "queries",
            "Queries finished (successfully or not)",
            metrics.queries_total.clone(),
        );
        r.register(
            "query_errors",
            "Queries that failed",
            metrics.query_errors_total.clone(),
        );
        r.register(
            "queries_rejected_overloaded",
            "Queries refused because CONCURRENT_QUERIES were running",
            metrics.queries_rejected_overloaded.clone(),
        );
        r.register(
            "replica_comparisons",
            "Comparisons of the replicas of a table this node leads (anti-entropy)",
            metrics.replica_comparisons.clone(),
        );
        r.register(
            "replica_differences",
            "Replicas found holding other rows than the rest, each then copied again",
            metrics.replica_differences.clone(),
        );
        r.register(
            "query_duration_seconds",
            "Wall time of queries from admission to the last batch",
            metrics.query_duration_seconds.clone(),
        );
        r.register(
            "query_queue_seconds",
            "Time queries waited from arriving on their connection to taking a slot",
            metrics.query_queue_seconds.clone(),
        );
        r.register(
            "queries_waiting",
            "Queries waiting for a slot now",
            metrics.queries_waiting.clone(),
        );
        r.register(
            "data_scanned_bytes",
            "Decoded bytes of the pages queries scanned, from the buffer pools or the disk",
            metrics.data_scanned_bytes.clone(),
        );
        r.register(
            "data_read_bytes",
            "Bytes read from disk by queries",
            metrics.data_read_bytes.clone(),
        );
        r.register(
            "rows_returned",
            "Rows streamed to clients",
            metrics.rows_returned.clone(),
        );
        r.register(
            "ipc_bytes_sent",
            "Arrow IPC bytes streamed to clients",
            metrics.ipc_bytes_sent.clone(),
        );
        r.register(
            "imported_rows",
            "Rows committed by importBatches",
            metrics.imported_rows.clone(),
        );
        r.register(
            "ingested_rows",
            "Rows acknowledged durable by IngestStream.append (duplicates not counted)",
            metrics.ingested_rows.clone(),
        );
        r.register(
            "ingested_bytes",
            "Arrow IPC bytes acknowledged durable by IngestStream.append",
            metrics.ingested_bytes.clone(),
        );
        r.register(
            "queries_running",
            "Queries running now",
            metrics.queries_running.clone(),
        );
        r.register(
            "connections",
            "Open RPC connections",
            metrics.connections.clone(),
        );
        r.register(
            "connections_accepted",
            "RPC connections accepted",
            metrics.connections_total.clone(),
        );
        r.register(
            "logins_failed",
            "Logins refused",
            metrics.logins_failed.clone(),
        );
        r.register(
            "memory_usage_percent",
            "Resident memory as a percentage of MAX_MEMORY_GB",
            metrics.memory_usage_percent.clone(),
        );
        r.register(
            "buffer_pool_hits",
            "Decoded pages served from the buffer pools",
            metrics.buffer_pool_hits.clone(),
        );
        r.register(
            "buffer_pool_misses",
            "Pages read and decoded",
            metrics.buffer_pool_misses.clone(),
        );
        r.register(
            "buffer_pool_bytes",
            "Decoded bytes held by the buffer pools",
            metrics.buffer_pool_bytes.clone(),
        );
        r.register(
            "partial_cache_hits",
            "Files whose partial result a query took from the partial-result cache",
            metrics.partial_cache_hits.clone(),
        );
        r.register(
            "partial_cache_misses",
            "Files a cacheable query fragment had to scan",
            metrics.partial_cache_misses.clone(),
        );
        r.register(
            "partial_cache_bytes",
            "Bytes held by the partial-result cache",
            metrics.partial_cache_bytes.clone(),
        );
        r.register(
            "partial_cache_evictions",
            "Partial results evicted to make room",
            metrics.partial_cache_evictions.clone(),
        );
        r.register(
            "result_cache_hits",
            "Queries answered from the shared final-result cache (Redis)",
            metrics.result_cache_hits.clone(),
        );
        r.register(
            "result_cache_misses",
            "Queries the shared final-result cache did not hold",
            metrics.result_cache_misses.clone(),
        );
        r.register(
            "result_cache_stores",
            "Results stored in the shared final-result cache",
            metrics.result_cache_stores.clone(),
        );
        r.register(
            "result_cache_errors",
            "Calls to the shared final-result cache that failed (the query ran without it)",
            metrics.result_cache_errors.clone(),
        );
        r.register(
            "tenant_quota",
            "A tenant's quota by limit (0: no limit of that kind)",
            metrics.tenant_quota.clone(),
        );
        r.register(
            "tenant_quota_refusals",
            "Queries, imports and appends refused (appends: held back) by a tenant's quota",
            metrics.tenant_quota_refusals.clone(),
        );
        r.register(
            "tenant_storage_bytes",
            "Bytes of a tenant's table files when last measured",
            metrics.tenant_storage_bytes.clone(),
        );
        r.register(
            "tenant_queries_running",
            "A tenant's queries running now",
            metrics.tenant_queries_running.clone(),
        );
        r.register(
            "tenant_pool_bytes",
            "Bytes of decoded pages a tenant with a buffer-pool floor holds in the pools",
            metrics.tenant_pool_bytes.clone(),
        );
        r.register(
            "tenant_queries",
            "A tenant's queries finished (successfully or not)",
            metrics.tenant_queries.clone(),
        );
        r.register(
            "tenant_query_errors",
            "A tenant's queries that failed",
            metrics.tenant_query_errors.clone(),
        );
        r.register(
            "disk_used_bytes",
            "Bytes in use on the file system holding the data directory",
            metrics.disk_used_bytes.clone(),
        );
        r.register(
            "disk_capacity_bytes",
            "Size of the file system holding the data directory",
            metrics.disk_capacity_bytes.clone(),
        );
        r.register(
            "memory_budget_bytes",
            "Memory budget of an area (query_processing, parquet_cache, metadata_cache, partial_cache, ingest_buffers)",
            metrics.memory_budget_bytes.clone(),
        );
        r.register(
            "memory_used_bytes",
            "Memory an area holds now",
            metrics.memory_used_bytes.clone(),
        );
        r.register(
            "ingest_buffered_bytes",
            "Bytes of acknowledged rows buffered in memory, not yet flushed to files",
            metrics.ingest_buffered_bytes.clone(),
        );
        r.register(
            "ingest_oldest_buffered_seconds",
            "Age of the oldest acknowledged row not yet flushed to a file (0: none)",
            metrics.ingest_oldest_buffered_seconds.clone(),
        );
        r.register(
            "build_info",
            "The node's software version (value 1)",
            metrics.build_info.clone(),
        );
        metrics
            .build_info
            .get_or_create(&vec![(
                "version".to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            )])
            .set(1);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The content type of `render`'s text: prometheus-client writes OpenMetrics.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Resident set size of this process in bytes (0 if /proc is unavailable).
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// Bytes in use and total size of the file system holding `path` (`None` if statvfs fails).
pub fn disk_usage(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    let total = stat.f_blocks as u64 * block;
    let free = stat.f_bfree as u64 * block;
    Some((total.saturating_sub(free), total))
}

/// What `/health` and `/metrics` need from the node at request time.
pub trait NodeProbe: Send + Sync + 'static {
    /// Refreshes gauges that are sampled rather than counted (pool counters, memory).
    fn refresh(&self, metrics: &Metrics);
    /// Whether the node serves (every core answers), and one line of JSON describing it.
    fn health(&self) -> (bool, String);
}

/// What the HTTP side port answers, asked at request time (a node's, a coordinator's).
pub trait HttpProbe: Send + Sync + 'static {
    /// The OpenMetrics text exposition.
    fn metrics(&self) -> String;
    /// Whether the process serves, and one line of JSON describing it.
    fn health(&self) -> (bool, String);
}

/// A node's metrics and probe, answering the side port.
struct NodeHttp {
    metrics: Arc<Metrics>,
    probe: Arc<dyn NodeProbe>,
}

impl HttpProbe for NodeHttp {
    fn metrics(&self) -> String {
        self.probe.refresh(&self.metrics);
        self.metrics.render()
    }

    fn health(&self) -> (bool, String) {
        self.probe.health()
    }
}

/// The HTTP side port: one thread answering `/metrics` and `/health`.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    address: std::net::SocketAddr,
}

impl HttpServer {
    pub fn start(
        address: std::net::SocketAddr,
        metrics: Arc<Metrics>,
        probe: Arc<dyn NodeProbe>,
    ) -> std::io::Result<HttpServer> {
        HttpServer::serve(address, Arc::new(NodeHttp { metrics, probe }))
    }

    /// Serves `probe`'s answers on `address`.
    pub fn serve(
        address: std::net::SocketAddr,
        probe: Arc<dyn HttpProbe>,
    ) -> std::io::Result<HttpServer> {
        let server = tiny_http::Server::http(address)
            .map_err(|e| std::io::Error::other(format!("HTTP port {address}: {e}")))?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("HTTP port is not an IP socket"))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("tessera-http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let (status, content_type, body) = match request.url() {
                        "/metrics" => (200, Metrics::CONTENT_TYPE, probe.metrics()),
                        "/health" => {
                            let (serving, body) = probe.health();
                            (if serving { 200 } else { 503 }, "application/json", body)
                        }
                        _ => (
                            404,
                            "text/plain",
                            "not found: try /metrics or /health\n".into(),
                        ),
                    };
                    let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                        .expect("static header is valid");
                    let response = tiny_http::Response::from_string(body)
                        .with_status_code(status)
                        .with_header(header);
                    let _ = request.respond(response);
                }
            })?;
        Ok(HttpServer {
            server,
            thread: Some(thread),
            address,
        })
    }

    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
