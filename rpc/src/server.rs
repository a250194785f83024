//! The tenant node as a server. Every core's executor binds the same port (SO_REUSEPORT), accepts
//! its share of connections and runs the Cap'n Proto RPC system for them; a query arriving on a
//! connection is coordinated by that connection's core and fans out over all cores through the
//! engine. The capability objects (`service.rs`) hold the verified identity: no method takes a
//! tenant name from the client.
//!
//! Limits, each with an error that says which one: message size (traversal limit) and nesting
//! on every incoming message, calls in flight per connection, open connections, queries running
//! on the node (`CONCURRENT_QUERIES`: beyond it a query waits up to `admission_wait`, then gets
//! `overloaded`), a sink that stops reading (`stall_timeout`), and idle connections.

use crate::admission::Admission;
use crate::auth::{AuthConfig, Verifier};
use crate::metrics::{self, HttpServer, Metrics, NodeProbe};
use crate::node::{Limits, Shared};
use crate::service::{self, Connection};
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::io::{AsyncReadExt, BufReader, BufWriter};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_storage_engine::engine::CoreContext;
use tessera_storage_engine::io::runtime::{self, TcpConnection, TcpListener};
use tessera_storage_engine::Engine;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The HTTP side port for `/metrics` and `/health`; `None` serves none.
    pub http: Option<SocketAddr>,
    pub auth: AuthConfig,
    pub limits: Limits,
    /// Memory the node may use (`MAX_MEMORY_GB`), for `memory_usage_percent`.
    pub max_memory_bytes: u64,
    /// TLS on the RPC port; `None` serves plain TCP.
    pub tls: Option<TlsFiles>,
    /// The shared final-result cache in Redis (`--redis-url`); `None`: off.
    pub result_cache: Option<crate::result_cache::ResultCacheConfig>,
    /// Membership of a cluster: placement, replication and forwarding (`None`: a lone node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// PEM files of the server's certificate chain and private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A TLS handshake that takes longer than this closes the connection.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running server. Dropping it stops accepting, closes every connection and stops the cores.
pub struct Server {
    shared: Arc<Shared>,
    http: Option<HttpServer>,
    engine: Arc<Engine>,
    _lock: DataDirLock,
}

impl Server {
    /// Starts serving `engine`'s data directory: refuses when another process already serves it
    /// or already listens on the port.
    pub fn start(engine: Engine, config: ServerConfig) -> Result<Server, ServerError> {
        let lock = DataDirLock::acquire(engine.data_dir())?;
        let verifier =
            Verifier::new(config.auth).map_err(|e| ServerError::Config(e.to_string()))?;
        let tls = match &config.tls {
            Some(files) => Some(futures_rustls::TlsAcceptor::from(
                crate::tls::server_config(&files.certificate, &files.key)
                    .map_err(ServerError::Config)?,
            )),
            None => None,
        };
        // glommio binds with SO_REUSEPORT, so a second server would bind the same port silently;
        // a plain bind first makes a port already in use an error.
        let address = std::net::TcpListener::bind(config.listen)
            .and_then(|probe| probe.local_addr())
            .map_err(|source| ServerError::Io {
                what: format!("cannot listen on {}", config.listen),
                source,
            })?;
        let metrics = Arc::new(Metrics::new());
        let admission = Admission::new(
            config.limits.concurrent_short_queries,
            config.limits.concurrent_queries,
            config.limits.admission_queue,
            config.limits.admission_wait,
        );
        let result_cache = config
            .result_cache
            .map(crate::result_cache::ResultCache::new)
            .transpose()
            .map_err(ServerError::Config)?;
        let shared = Arc::new(Shared {
            verifier: std::sync::RwLock::new(Arc::new(verifier)),
            query_log: crate::query_log::QueryLog::new(
                config.limits.query_stats_capacity,
                config.limits.slow_query,
                config
                    .cluster
                    .as_ref()
                    .map_or_else(|| address.to_string(), |c| c.node_id().to_owned()),
            ),
            draining: std::sync::atomic::AtomicBool::new(false),
            metrics: metrics.clone(),
            quotas: crate::quota::Quotas::new(
                engine.data_dir().to_owned(),
                admission.clone(),
                metrics.clone(),
            ),
            admission,
            limits: config.limits,
            blocking_threads: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            started: Instant::now(),
            data_dir: engine.data_dir().to_owned(),
            cores: engine.cores(),
            address,
            max_memory_bytes: config.max_memory_bytes,
            tls,
            result_cache,
            cluster: config.cluster,
        });
        let engine = Arc::new(engine);
        let bound: Vec<_> = (0..engine.cores())
            .map(|core| {
                let shared = shared.clone();
                engine.on_core(core, move |context| async move {
                    let listener = TcpListener::bind(address)?;
                    runtime::spawn_local(accept_loop(context, shared, listener));
                    Ok::<_, std::io::Error>(())
                })
            })
            .collect();
        for result in futures::executor::block_on(futures::future::join_all(bound)) {
            result
                .map_err(|e| ServerError::Config(format!("a core failed during start-up: {e:?}")))?
                .map_err(|source| ServerError::Io {
                    what: format!("cannot listen on {address}"),
                    source,
                })?;
        }
        if shared.cluster.is_some() {
            let shared = shared.clone();
            futures::executor::block_on(engine.on_core(0, move |context| async move {
                runtime::spawn_local(crate::catch_up::run(context, shared));
            }))
            .map_err(|e| ServerError::Config(format!("core 0 failed during start-up: {e:?}")))?;
        }
        let http = match config.http {
            Some(http_address) => {
                let probe: Arc<dyn NodeProbe> = Arc::new(Probe {
                    engine: Arc::downgrade(&engine),
                    shared: shared.clone(),
                });
                Some(
                    HttpServer::start(http_address, metrics, probe).map_err(|source| {
                        ServerError::Io {
                            what: format!("cannot serve HTTP on {http_address}"),
                            source,
                        }
                    })?,
                )
            }
            None => None,
        };
        Ok(Server {
            shared,
            http,
            engine,
            _lock: lock,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::address)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The node's metrics, for threads that outlive a borrow of the server.
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops taking work: every core closes its listener, and new queries, imports and
    /// appends on open connections are refused with `unavailable`. Then waits up to `timeout`
    /// for running queries and writes to finish, and flushes streaming ingestion's buffered
    /// rows to files (fsynced and published). What it did, for the log.
    pub fn drain(&self, timeout: Duration) -> DrainReport {
        let started = Instant::now();
        self.shared.draining.store(true, Ordering::SeqCst);
        let busy = || {
            let (running, queued) = self.shared.admission.load();
            running + queued + self.shared.blocking_threads.load(Ordering::SeqCst)
        };
        while busy() > 0 && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(20));
        }
        let unfinished = busy();
        let flushed = self.engine.flush_all_ingest();
        DrainReport {
            waited: started.elapsed(),
            unfinished,
            flushed,
        }
    }

    /// Applies the settings that may change while the node serves (SIGHUP): token keys and
    /// their checks, admission slots, queue and wait, the `query_stats` capacity and the
    /// slow-query threshold. A bad key leaves the old ones in force.
    pub fn reload(&self, auth: AuthConfig, limits: &Limits) -> Result<(), ServerError> {
        let verifier = Verifier::new(auth).map_err(|e| ServerError::Config(e.to_string()))?;
        *self
            .shared
            .verifier
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(verifier);
        self.shared.admission.set_limits(
            limits.concurrent_short_queries,
            limits.concurrent_queries,
            limits.admission_queue,
            limits.admission_wait,
        );
        self.shared
            .query_log
            .configure(limits.query_stats_capacity, limits.slow_query);
        Ok(())
    }

    /// True once every core answers a trivial job within a second (for the watchdog).
    pub fn healthy(&self) -> bool {
        self.engine
            .unresponsive_cores(HEALTH_CORE_TIMEOUT)
            .is_empty()
    }
}

/// What `Server::drain` did.
#[derive(Debug)]
pub struct DrainReport {
    pub waited: Duration,
    /// Queries and writes still running when the drain timeout passed (cancelled at exit).
    pub unfinished: usize,
    /// Files streaming ingestion's flush wrote, or why it failed (the logs keep the rows).
    pub flushed: Result<u64, tessera_storage_engine::Error>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The HTTP thread holds only a weak reference to the engine; stop it first, then the
        // cores stop when the last reference to the engine goes.
        self.http.take();
    }
}

/// How long `/health` waits for each core to run a trivial job.
const HEALTH_CORE_TIMEOUT: Duration = Duration::from_secs(1);

struct Probe {
    engine: std::sync::Weak<Engine>,
    shared: Arc<Shared>,
}

impl NodeProbe for Probe {
    fn refresh(&self, metrics: &Metrics) {
        if let Some(engine) = self.engine.upgrade() {
            let counters = engine.pool_counters();
            // The cores' counters only grow: the exported counters advance to their sums.
            let advance = |counter: &prometheus_client::metrics::counter::Counter, to: u64| {
                counter.inc_by(to.saturating_sub(counter.get()));
            };
            advance(
                &metrics.buffer_pool_hits,
                counters.iter().map(|c| c.hits).sum(),
            );
            advance(
                &metrics.buffer_pool_misses,
                counters.iter().map(|c| c.misses).sum(),
            );
            metrics
                .buffer_pool_bytes
                .set(counters.iter().map(|c| c.bytes_used as i64).sum());
            let memory = engine.memory_report();
            for area in &memory.areas {
                let labels = vec![("area".to_owned(), area.name.to_owned())];
                metrics
                    .memory_budget_bytes
                    .get_or_create(&labels)
                    .set(area.budget_bytes as i64);
                metrics
                    .memory_used_bytes
                    .get_or_create(&labels)
                    .set(area.used_bytes as i64);
                if area.name == "ingest_buffers" {
                    metrics.ingest_buffered_bytes.set(area.used_bytes as i64);
                }
            }
            metrics
                .ingest_oldest_buffered_seconds
                .set(memory.ingest_oldest.map_or(0.0, |age| age.as_secs_f64()));
            let partials = engine.partial_counters();
            let sum = |field: fn(
                &tessera_storage_engine::query::exec::partials::PartialCounters,
            ) -> u64| { partials.iter().map(|c| field(c) as i64).sum() };
            metrics.partial_cache_hits.set(sum(|c| c.hits));
            metrics.partial_cache_misses.set(sum(|c| c.misses));
            metrics.partial_cache_bytes.set(sum(|c| c.bytes_used));
            metrics.partial_cache_evictions.set(sum(|c| c.evictions));
            for (tenant, bytes) in engine.tenant_pool_bytes() {
                metrics
                    .tenant_pool_bytes
                    .get_or_create(&vec![("tenant".to_owned(), tenant)])
                    .set(bytes as i64);
            }
        }
        if let Some((used, capacity)) = metrics::disk_usage(&self.shared.data_dir) {
            metrics.disk_used_bytes.set(used as i64);
            metrics.disk_capacity_bytes.set(capacity as i64);
        }
        let budget = self.shared.max_memory_bytes.max(1) as f64;
        metrics
            .memory_usage_percent
            .set(metrics::resident_bytes() as f64 * 100.0 / budget);
    }

    fn health(&self) -> (bool, String) {
        let unresponsive = match self.engine.upgrade() {
            Some(engine) => engine.unresponsive_cores(HEALTH_CORE_TIMEOUT),
            None => (0..self.shared.cores).collect(),
        };
        let status = match (self.engine.upgrade().is_some(), unresponsive.is_empty()) {
            (false, _) => "stopping",
            // Load balancers take a draining node out before its listeners close.
            _ if self.shared.draining() => "draining",
            (true, true) => "ok",
            (true, false) => "unresponsive cores",
        };
        let body = format!(
            "{{\"status\":\"{status}\",\"address\":\"{}\",\"cores\":{},\"unresponsive_cores\":{unresponsive:?},\"uptime_seconds\":{},\"connections\":{},\"queries_running\":{}}}\n",
            self.shared.address,
            self.shared.cores,
            self.shared.started.elapsed().as_secs(),
            self.shared.connections.load(Ordering::Relaxed),
            self.shared.admission.load().0,
        );
        (status == "ok", body)
    }
}

async fn accept_loop(context: CoreContext, shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let draining = async {
            while !shared.draining() {
                runtime::sleep(Duration::from_millis(50)).await;
            }
        };
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let draining = std::pin::pin!(draining);
            match futures::future::select(accept, draining).await {
                futures::future::Either::Left((accepted, _)) => accepted,
                // Stopping: the listener closes, so new connections go to other nodes.
                futures::future::Either::Right(_) => return,
            }
        };
        match accepted {
            Ok(connection) => {
                let open = shared.connections.fetch_add(1, Ordering::Relaxed);
                if open >= shared.limits.connections_max {
                    // Over the limit: closing at once is the clearest answer a client can get
                    // before it has said anything.
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                    drop(connection);
                    continue;
                }
                shared.metrics.connections.inc();
                shared.metrics.connections_total.inc();
                runtime::spawn_local(serve_connection(
                    context.clone(),
                    shared.clone(),
                    connection,
                ));
            }
            // Out of descriptors or a connection reset before accept: back off briefly.
            Err(_) => runtime::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection(context: CoreContext, shared: Arc<Shared>, connection: TcpConnection) {
    match shared.tls.clone() {
        Some(acceptor) => {
            // A failed or stalled handshake just closes the connection.
            if let Some(Ok(stream)) =
                runtime::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(connection)).await
            {
                run_rpc(context, shared.clone(), stream).await;
            }
        }
        None => run_rpc(context, shared.clone(), connection).await,
    }
    shared.connections.fetch_sub(1, Ordering::Relaxed);
    shared.metrics.connections.dec();
}

async fn run_rpc<S>(context: CoreContext, shared: Arc<Shared>, stream: S)
where
    S: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + 'static,
{
    let limits = shared.limits.clone();
    let (reader, writer) = stream.split();
    let last_read = Rc::new(Cell::new(Instant::now()));
    let reader = ActivityReader {
        inner: reader,
        last_read: last_read.clone(),
    };
    let mut options = capnp::message::ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(limits.traversal_limit_words))
        .nesting_limit(limits.nesting_limit);
    let mut network = twoparty::VatNetwork::new(
        BufReader::with_capacity(64 << 10, reader),
        BufWriter::with_capacity(64 << 10, writer),
        Side::Server,
        options,
    );
    network.set_window_size(limits.flow_window_bytes);
    let state = Rc::new(Connection::new(context, shared, last_read.clone()));
    let gateway = service::gateway(state.clone());
    let rpc = RpcSystem::new(Box::new(network), Some(gateway.client));
    let idle = async {
        loop {
            runtime::sleep(limits.idle_timeout / 4).await;
            if state.calls_in_flight() == 0 && last_read.get().elapsed() >= limits.idle_timeout {
                break;
            }
        }
    };
    let rpc = std::pin::pin!(rpc);
    let idle = std::pin::pin!(idle);
    // Either the peer went away (or sent something unreadable), or it was idle too long; both
    // end by dropping the RPC system, which closes the socket and cancels the calls still running.
    futures::future::select(rpc, idle).await;
}

/// Notes the time of every successful read, for the idle timeout.
struct ActivityReader<R> {
    inner: R,
    last_read: Rc<Cell<Instant>>,
}

impl<R: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for ActivityReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(context, buffer);
        if matches!(poll, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.last_read.set(Instant::now());
        }
        poll
    }
}

/// An exclusive lock on a data directory for as long as a server serves it.
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    fn acquire(data_dir: &Path) -> Result<DataDirLock, ServerError> {
        let path = data_dir.join(".tessera-serve.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ServerError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a valid, owned descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ServerError::Config(format!(
                "another process already serves {} (lock {} is held)",
                data_dir.display(),
                path.display()
            )));
        }
        Ok(DataDirLock { _file: file })
    }
}
