//! A coordinator process: Cap'n Proto RPC (`CoordinatorGateway` → `Coordinator`) over its
//! catalog, and the leader loop. Stateless on top of the catalog: every coordinator answers
//! registrations, heartbeats and status from it; the one holding the leader lease (a row with a
//! fencing epoch, renewed every third of its time) also marks nodes down, and stops acting as
//! soon as it cannot renew within the lease's time.

use crate::catalog::{
    Catalog, CatalogError, CatalogFile, FilesReport, Lease, NodeRecord, NodeRegistration,
    NodeReport, NodeState, PartitionOf, TablePlacement,
};
use capnp::Error;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_rpc::auth::{AuthConfig, Role, Verifier};
use tessera_rpc::codes::{self, ErrorCode};
use tessera_schema::tessera_capnp::{
    cluster_node, coordinator, coordinator_gateway, table_placement,
};

/// The lease every coordinator competes for.
pub const LEADER_LEASE: &str = "coordinator-leader";

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub listen: SocketAddr,
    /// This coordinator's name (the lease holder), unique among the cluster's coordinators.
    pub id: String,
    pub auth: AuthConfig,
    /// How long a leader lease lasts unless renewed (renewed every third of it).
    pub lease: Duration,
    /// A node without a heartbeat for this long is marked down by the leader.
    pub node_timeout: Duration,
    /// How often nodes send heartbeats.
    pub heartbeat: Duration,
    /// A node down for this long (since its last heartbeat) has its replicas moved to other
    /// nodes (re-replication), unless it leads a table no in-sync follower could take over.
    pub rereplicate_after: Duration,
    /// Where to serve `/metrics` and `/health` (`None`: nowhere).
    pub http: Option<SocketAddr>,
}

impl CoordinatorConfig {
    pub fn new(listen: SocketAddr, id: impl Into<String>, auth: AuthConfig) -> Self {
        CoordinatorConfig {
            listen,
            id: id.into(),
            auth,
            lease: Duration::from_secs(3),
            node_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(1),
            rereplicate_after: Duration::from_secs(300),
            http: None,
        }
    }
}

/// The leader lease as this coordinator last held it, and until when it may act on it.
#[derive(Default)]
struct Leadership {
    lease: Option<Lease>,
    /// Local deadline: the lease's time counted from before the renewal was asked.
    valid_until: Option<Instant>,
}

impl Leadership {
    fn current(&self) -> Option<Lease> {
        match (&self.lease, self.valid_until) {
            (Some(lease), Some(until)) if Instant::now() < until => Some(lease.clone()),
            _ => None,
        }
    }
}

struct Shared {
    catalog: Arc<dyn Catalog>,
    verifier: Verifier,
    config: CoordinatorConfig,
    leadership: Mutex<Leadership>,
    stop: AtomicBool,
}

/// A running coordinator; dropping it stops serving and gives the lease up.
pub struct Coordinator {
    shared: Arc<Shared>,
    address: SocketAddr,
    threads: Vec<std::thread::JoinHandle<()>>,
    http: Option<tessera_rpc::metrics::HttpServer>,
}

/// The side port's answers, from the catalog at request time.
struct Probe(Arc<Shared>);

impl tessera_rpc::metrics::HttpProbe for Probe {
    fn metrics(&self) -> String {
        let leading = lock(&self.0.leadership).current();
        crate::metrics::render(self.0.catalog.as_ref(), leading.as_ref())
    }

    fn health(&self) -> (bool, String) {
        let leading = lock(&self.0.leadership).current();
        crate::metrics::health(self.0.catalog.as_ref(), &self.0.config.id, leading.as_ref())
    }
}

fn fail(code: ErrorCode, message: impl std::fmt::Display) -> Error {
    Error::failed(format!("{}: {message}", codes::text(code)))
}

fn catalog_error(error: CatalogError) -> Error {
    let code = match &error {
        CatalogError::Unavailable(_) => ErrorCode::Unavailable,
        CatalogError::Fenced(_) => ErrorCode::Unavailable,
        CatalogError::NotFound(_) => ErrorCode::NotFound,
        CatalogError::Invalid(_) => ErrorCode::Invalid,
        CatalogError::Schema(_) => ErrorCode::Internal,
    };
    fail(code, error)
}

/// Runs a catalog call on tokio's blocking threads.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    call: impl FnOnce(&dyn Catalog) -> crate::catalog::Result<T> + Send + 'static,
) -> Result<T, Error> {
    let catalog = shared.catalog.clone();
    tokio::task::spawn_blocking(move || call(catalog.as_ref()))
        .await
        .map_err(|e| fail(ErrorCode::Internal, format!("catalog call failed: {e}")))?
        .map_err(catalog_error)
}

impl Coordinator {
    /// Applies the catalog's migrations, listens, and starts competing for the leader lease.
    pub fn start(
        catalog: Box<dyn Catalog>,
        config: CoordinatorConfig,
    ) -> Result<Coordinator, String> {
        let catalog: Arc<dyn Catalog> = Arc::from(catalog);
        let version = catalog.migrate().map_err(|e| e.to_string())?;
        tracing::info!(catalog = %catalog.describe(), schema_version = version, "catalog ready");
        let verifier = Verifier::new(config.auth.clone()).map_err(|e| e.to_string())?;
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            catalog,
            verifier,
            config,
            leadership: Mutex::new(Leadership::default()),
            stop: AtomicBool::new(false),
        });
        let serving = shared.clone();
        let server = std::thread::Builder::new()
            .name("tessera-coordinator".into())
            .spawn(move || serve(serving, listener))
            .map_err(|e| e.to_string())?;
        let leading = shared.clone();
        let leader = std::thread::Builder::new()
            .name("tessera-coordinator-lease".into())
            .spawn(move || lead(leading))
            .map_err(|e| e.to_string())?;
        let http = match shared.config.http {
            Some(at) => Some(
                tessera_rpc::metrics::HttpServer::serve(at, Arc::new(Probe(shared.clone())))
                    .map_err(|e| format!("cannot serve HTTP on {at}: {e}"))?,
            ),
            None => None,
        };
        Ok(Coordinator {
            shared,
            address,
            threads: vec![server, leader],
            http,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` and `/health` are served, if anywhere.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.address())
    }

    /// The leader lease this coordinator may act on now, if it holds it.
    pub fn leadership(&self) -> Option<Lease> {
        lock(&self.shared.leadership).current()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Hand over at once rather than after the lease's time.
        if let Some(lease) = lock(&self.shared.leadership).lease.take() {
            let _ = self.shared.catalog.release_lease(&lease);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The leader loop: take or renew the lease every third of its time; while held, mark nodes
/// down that missed the node timeout (fenced by the lease's epoch in the catalog).
fn lead(shared: Arc<Shared>) {
    let config = &shared.config;
    let ttl_ms = config.lease.as_millis() as i64;
    let mut was_leader = false;
    while !shared.stop.load(Ordering::SeqCst) {
        let asked = Instant::now();
        match shared
            .catalog
            .acquire_lease(LEADER_LEASE, &config.id, ttl_ms)
        {
            Ok(Some(lease)) => {
                if !was_leader {
                    tracing::info!(coordinator = %config.id, epoch = lease.epoch, "leader lease taken");
                }
                was_leader = true;
                let mut leadership = lock(&shared.leadership);
                leadership.lease = Some(lease);
                leadership.valid_until = Some(asked + config.lease);
            }
            Ok(None) => {
                if was_leader {
                    tracing::warn!(coordinator = %config.id, "leader lease lost to another coordinator");
                }
                was_leader = false;
                *lock(&shared.leadership) = Leadership::default();
            }
            // Keeps acting only until the lease it holds runs out (`Leadership::current`).
            Err(error) => tracing::warn!("renewing the leader lease failed: {error}"),
        }
        let leader = lock(&shared.leadership).current();
        if let Some(lease) = leader {
            match shared
                .catalog
                .mark_down(config.node_timeout.as_millis() as i64, &lease)
            {
                Ok(down) if !down.is_empty() => {
                    tracing::warn!(nodes = ?down, "nodes missed their heartbeats: marked down")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!("marking silent nodes down failed: {error}"),
            }
            match shared.catalog.move_leaders(&lease) {
                Ok(moved) => {
                    for table in moved {
                        tracing::warn!(
                            tenant = %table.tenant,
                            table = %table.table,
                            leader = %table.leader(),
                            epoch = table.epoch,
                            "the table's leader was down: leadership moved"
                        );
                    }
                }
                Err(error) => tracing::warn!("moving leaders off down nodes failed: {error}"),
            }
            if let Err(error) = rereplicate(&shared, &lease) {
                tracing::warn!("re-replication failed: {error}");
            }
            if let Err(error) = rebalance(&shared, &lease) {
                tracing::warn!("moving replicas between nodes failed: {error}");
            }
        }
        let pause = config.lease / 3;
        let deadline = Instant::now() + pause;
        while Instant::now() < deadline && !shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Moves each follower replica on a node down past `rereplicate_after` to an up node holding
/// none of its table (`placement::replacement`); the table's leader then copies the table to
/// it and puts it in sync. A table whose leader is down waits for its leadership to move.
fn rereplicate(shared: &Shared, lease: &Lease) -> Result<(), crate::catalog::CatalogError> {
    let catalog = &shared.catalog;
    let now = catalog.now_ms()?;
    let grace = shared.config.rereplicate_after.as_millis() as i64;
    let nodes = catalog.nodes()?;
    let gone: Vec<&str> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Down && now - n.last_seen_ms >= grace)
        .map(|n| n.registration.node_id.as_str())
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    for table in catalog.routing()?.tables {
        let mut holders = table.replicas.clone();
        for from in table.replicas.iter().skip(1) {
            if !gone.contains(&from.as_str()) || gone.contains(&table.leader()) {
                continue;
            }
            holders.retain(|h| h != from);
            let Some(to) = crate::placement::replacement(&nodes, &holders) else {
                tracing::warn!(
                    tenant = %table.tenant,
                    table = %table.table,
                    node = %from,
                    "a replica's node is gone and no other node can take it: the table runs \
                     with fewer replicas"
                );
                holders.push(from.clone());
                continue;
            };
            catalog.change_replica((&table.tenant, &table.table), Some(from), Some(&to), lease)?;
            tracing::warn!(
                tenant = %table.tenant,
                table = %table.table,
                from = %from,
                to = %to,
                "re-replicating: a replica moves off a node down past the grace period"
            );
            holders.push(to);
        }
    }
    Ok(())
}

/// Moves replicas onto nodes holding fewer (a node added to the cluster), one at a time
/// cluster-wide and only while every node is up and every table healthy: a replica is added
/// on the node holding fewest, out of sync (its table's leader copies the table to it, at the
/// node's copy-rate limit), and once it is in sync the follower on the node holding most of
/// them is removed (that node then deletes its copy). Replicas weigh their table's bytes once
/// every table's leader has reported its size, else one each (`placement::Weights`).
fn rebalance(shared: &Shared, lease: &Lease) -> Result<(), crate::catalog::CatalogError> {
    let catalog = &shared.catalog;
    let nodes = catalog.nodes()?;
    if nodes.is_empty() || nodes.iter().any(|n| n.state != NodeState::Up) {
        return Ok(());
    }
    let routing = catalog.routing()?;
    let weights = crate::placement::Weights::new(&nodes, &routing.tables);
    let loads = weights.loads(&nodes, &routing.tables);
    // A move under way: end it once the new replica is in sync.
    if let Some(table) = routing
        .tables
        .iter()
        .find(|t| t.replicas.len() as u32 > t.replication_factor)
    {
        if table.in_sync.len() < table.replicas.len() {
            return Ok(());
        }
        let from = weights
            .surplus(&loads, table)
            .expect("more replicas than the factor: followers exist");
        catalog.change_replica((&table.tenant, &table.table), Some(from), None, lease)?;
        tracing::info!(
            tenant = %table.tenant,
            table = %table.table,
            from = %from,
            "a replica moved: the copy on the new node is in sync, the old one is removed"
        );
        return Ok(());
    }
    if routing
        .tables
        .iter()
        .any(|t| t.in_sync.len() < t.replicas.len())
    {
        return Ok(());
    }
    let Some((index, to)) = weights.next_move(&loads, &routing.tables) else {
        return Ok(());
    };
    let table = &routing.tables[index];
    catalog.change_replica((&table.tenant, &table.table), None, Some(&to), lease)?;
    tracing::info!(
        tenant = %table.tenant,
        table = %table.table,
        to = %to,
        "moving a replica onto the node holding least"
    );
    Ok(())
}

/// The RPC thread: a current-thread tokio runtime serving every connection.
fn serve(shared: Arc<Shared>, listener: std::net::TcpListener) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("coordinator runtime: {error}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!("coordinator listener: {error}");
                return;
            }
        };
        while !shared.stop.load(Ordering::SeqCst) {
            let accepted =
                tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
            let Ok(Ok((stream, _))) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::task::spawn_local(async move {
                use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
                let (reader, writer) = stream.into_split();
                let network = twoparty::VatNetwork::new(
                    futures::io::BufReader::new(reader.compat()),
                    futures::io::BufWriter::new(writer.compat_write()),
                    Side::Server,
                    Default::default(),
                );
                let gateway: coordinator_gateway::Client =
                    capnp_rpc::new_client(GatewayServer { shared });
                let _ = RpcSystem::new(Box::new(network), Some(gateway.client)).await;
            });
        }
    });
}

struct GatewayServer {
    shared: Arc<Shared>,
}

impl coordinator_gateway::Server for GatewayServer {
    async fn login(
        self: Rc<Self>,
        params: coordinator_gateway::LoginParams,
        mut results: coordinator_gateway::LoginResults,
    ) -> Result<(), Error> {
        let token = params
            .get()?
            .get_token()?
            .to_str()
            .map_err(|_| fail(ErrorCode::Invalid, "the token is not UTF-8"))?;
        let identity = self
            .shared
            .verifier
            .verify(token)
            .map_err(|e| fail(ErrorCode::Unauthenticated, e))?;
        if !matches!(identity.role, Role::Operator | Role::Node) {
            return Err(fail(
                ErrorCode::Permission,
                format!(
                    "role {} cannot use a coordinator; use an operator or node token",
                    identity.role.name()
                ),
            ));
        }
        results
            .get()
            .set_coordinator(capnp_rpc::new_client(CoordinatorServer {
                shared: self.shared.clone(),
                expires_at: identity.expires_at,
            }));
        Ok(())
    }

    async fn version(
        self: Rc<Self>,
        _: coordinator_gateway::VersionParams,
        mut results: coordinator_gateway::VersionResults,
    ) -> Result<(), Error> {
        let mut results = results.get();
        results.set_protocol(1);
        results.set_server(env!("CARGO_PKG_VERSION"));
        Ok(())
    }
}

struct CoordinatorServer {
    shared: Arc<Shared>,
    /// Unix seconds: the login's token expiry.
    expires_at: i64,
}

impl CoordinatorServer {
    fn check(&self) -> Result<(), Error> {
        if tessera_rpc::auth::expired(self.expires_at) {
            return Err(fail(
                ErrorCode::Unauthenticated,
                "the token behind this capability has expired; log in again",
            ));
        }
        Ok(())
    }
}

fn text(reader: capnp::text::Reader<'_>) -> Result<String, Error> {
    reader
        .to_str()
        .map(str::to_owned)
        .map_err(|_| fail(ErrorCode::Invalid, "text is not UTF-8"))
}

fn write_node(mut out: cluster_node::Builder<'_>, node: &NodeRecord, up: bool) {
    let registration = &node.registration;
    out.set_node_id(&registration.node_id);
    out.set_address(&registration.address);
    out.set_http_address(registration.http_address.as_deref().unwrap_or(""));
    out.set_cores(registration.cores);
    out.set_version(&registration.version);
    out.set_up(up);
    out.set_incarnation(node.incarnation);
    out.set_last_seen_millis(node.last_seen_ms);
    out.set_registered_millis(node.registered_ms);
    out.set_disk_used_bytes(node.report.disk_used_bytes);
    out.set_disk_capacity_bytes(node.report.disk_capacity_bytes);
    out.set_queries_running(node.report.queries_running);
    out.set_copying(&node.report.copying);
    out.set_table_bytes(&node.report.table_bytes);
    let mut labels = out.init_labels(registration.labels.len() as u32);
    for (i, (key, value)) in registration.labels.iter().enumerate() {
        let mut label = labels.reborrow().get(i as u32);
        label.set_key(key);
        label.set_value(value);
    }
}

impl coordinator::Server for CoordinatorServer {
    async fn register_node(
        self: Rc<Self>,
        params: coordinator::RegisterNodeParams,
        mut results: coordinator::RegisterNodeResults,
    ) -> Result<(), Error> {
        self.check()?;
        let node = params.get()?.get_node()?;
        let mut labels = std::collections::BTreeMap::new();
        for label in node.get_labels()? {
            labels.insert(text(label.get_key()?)?, text(label.get_value()?)?);
        }
        let http = text(node.get_http_address()?)?;
        let registration = NodeRegistration {
            node_id: text(node.get_node_id()?)?,
            address: text(node.get_address()?)?,
            http_address: (!http.is_empty()).then_some(http),
            cores: node.get_cores(),
            labels,
            version: text(node.get_version()?)?,
        };
        let record = blocking(&self.shared, move |c| c.register_node(&registration)).await?;
        tracing::info!(
            node = %record.registration.node_id,
            address = %record.registration.address,
            incarnation = record.incarnation,
            "node registered"
        );
        let mut results = results.get();
        results.set_incarnation(record.incarnation);
        results.set_heartbeat_millis(self.shared.config.heartbeat.as_millis() as u32);
        Ok(())
    }

    async fn heartbeat(
        self: Rc<Self>,
        params: coordinator::HeartbeatParams,
        mut results: coordinator::HeartbeatResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let node_id = text(params.get_node_id()?)?;
        let report = NodeReport {
            disk_used_bytes: params.get_disk_used_bytes(),
            disk_capacity_bytes: params.get_disk_capacity_bytes(),
            queries_running: params.get_queries_running(),
            copying: text(params.get_copying()?)?,
            table_bytes: text(params.get_table_bytes()?)?,
        };
        let version = blocking(&self.shared, move |c| {
            c.heartbeat(&node_id, &report)?;
            c.routing_version()
        })
        .await?;
        results.get().set_routing_version(version);
        Ok(())
    }

    async fn status(
        self: Rc<Self>,
        _: coordinator::StatusParams,
        mut results: coordinator::StatusResults,
    ) -> Result<(), Error> {
        self.check()?;
        let (nodes, lease, now) = blocking(&self.shared, |c| {
            Ok((c.nodes()?, c.lease(LEADER_LEASE)?, c.now_ms()?))
        })
        .await?;
        let mut results = results.get();
        results.set_catalog(self.shared.catalog.describe());
        results.set_coordinator(&self.shared.config.id);
        results.set_now_millis(now);
        if let Some(lease) = lease.filter(|l| l.expires_ms > now) {
            results.set_leader(&lease.holder);
            results.set_leader_epoch(lease.epoch);
            results.set_leader_expires_millis(lease.expires_ms);
        }
        let mut list = results.init_nodes(nodes.len() as u32);
        for (i, node) in nodes.iter().enumerate() {
            let up = node.state == crate::catalog::NodeState::Up;
            write_node(list.reborrow().get(i as u32), node, up);
        }
        Ok(())
    }

    async fn place_table(
        self: Rc<Self>,
        params: coordinator::PlaceTableParams,
        mut results: coordinator::PlaceTableResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let tenant = text(params.get_tenant()?)?;
        let table = text(params.get_table()?)?;
        if tenant.is_empty() || table.is_empty() {
            return Err(fail(
                ErrorCode::Invalid,
                "a table needs a tenant and a name",
            ));
        }
        let replication_factor = match params.get_replication_factor() {
            0 => DEFAULT_REPLICATION_FACTOR,
            n => u32::from(n),
        };
        let write_quorum = match u32::from(params.get_write_quorum()) {
            0 => replication_factor / 2 + 1,
            n if n > replication_factor => {
                return Err(fail(
                    ErrorCode::Invalid,
                    format!("a write quorum of {n} is more than the {replication_factor} replicas"),
                ))
            }
            n => n,
        };
        let partition_of = text(params.get_partition_of()?)?;
        let partition = if partition_of.is_empty() {
            None
        } else {
            let partition = PartitionOf {
                table: partition_of,
                index: params.get_partition(),
                count: params.get_partitions(),
                key: text(params.get_partition_key()?)?,
                key_type: text(params.get_partition_key_type()?)?,
            };
            if partition.index >= partition.count || partition.name() != table {
                return Err(fail(
                    ErrorCode::Invalid,
                    format!(
                        "partition {} of {} partitions of {} cannot be named {table}",
                        partition.index, partition.count, partition.table
                    ),
                ));
            }
            Some(partition)
        };
        let lease = self.leading()?;
        let (placement, nodes) = blocking(&self.shared, move |c| {
            let nodes = c.nodes()?;
            let routing = c.routing()?;
            let siblings: Vec<&TablePlacement> = routing
                .tables
                .iter()
                .filter(|t| {
                    t.tenant == tenant
                        && t.partition.as_ref().map(|p| &p.table)
                            == partition.as_ref().map(|p| &p.table)
                        && partition.is_some()
                })
                .collect();
            let placement = match routing
                .tables
                .iter()
                .find(|t| t.tenant == tenant && t.table == table)
            {
                Some(existing) => existing.clone(),
                None => {
                    let replicas =
                        crate::placement::choose(&nodes, replication_factor as usize, &siblings)
                            .map_err(CatalogError::Unavailable)?;
                    let placement = TablePlacement {
                        tenant,
                        table,
                        replication_factor,
                        write_quorum,
                        epoch: 1,
                        in_sync: replicas.clone(),
                        replicas,
                        partition,
                    };
                    c.place_table(&placement, &lease)?
                }
            };
            Ok((placement, nodes))
        })
        .await?;
        tracing::info!(
            tenant = %placement.tenant,
            table = %placement.table,
            replicas = ?placement.replicas,
            "table placed"
        );
        write_placement(results.get().init_placement(), &placement, &nodes);
        Ok(())
    }

    async fn set_in_sync(
        self: Rc<Self>,
        params: coordinator::SetInSyncParams,
        mut results: coordinator::SetInSyncResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let tenant = text(params.get_tenant()?)?;
        let table = text(params.get_table()?)?;
        let node = text(params.get_node_id()?)?;
        let (in_sync, epoch) = (params.get_in_sync(), params.get_epoch());
        let lease = self.leading()?;
        let (placement, nodes) = blocking(&self.shared, move |c| {
            let placement = c.set_in_sync((&tenant, &table), &node, in_sync, epoch, &lease)?;
            Ok((placement, c.nodes()?))
        })
        .await?;
        tracing::warn!(
            tenant = %placement.tenant,
            table = %placement.table,
            in_sync = ?placement.in_sync,
            "a table's in-sync replicas changed"
        );
        write_placement(results.get().init_placement(), &placement, &nodes);
        Ok(())
    }

    async fn drop_table(
        self: Rc<Self>,
        params: coordinator::DropTableParams,
        mut results: coordinator::DropTableResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let tenant = text(params.get_tenant()?)?;
        let table = text(params.get_table()?)?;
        let lease = self.leading()?;
        let (owner, name) = (tenant.clone(), table.clone());
        let dropped = blocking(&self.shared, move |c| {
            c.drop_placement((&owner, &name), &lease)
        })
        .await?;
        if dropped {
            tracing::info!(tenant = %tenant, table = %table, "a table's placement was dropped");
        }
        results.get().set_dropped(dropped);
        Ok(())
    }

    async fn report_files(
        self: Rc<Self>,
        params: coordinator::ReportFilesParams,
        _: coordinator::ReportFilesResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let (node, tenant, table) = (
            text(params.get_node_id()?)?,
            text(params.get_tenant()?)?,
            text(params.get_table()?)?,
        );
        let mut report = FilesReport {
            epoch: params.get_epoch(),
            manifest_version: params.get_manifest_version(),
            schema_json: text(params.get_schema()?)?,
            settings_json: text(params.get_settings()?)?,
            files: Vec::new(),
        };
        report.files = params
            .get_files()?
            .iter()
            .map(|f| {
                Ok(CatalogFile {
                    path: text(f.get_path()?)?,
                    bytes: f.get_bytes(),
                    rows: f.get_rows(),
                    crc32: u32::try_from(f.get_crc32()).ok(),
                    entry_json: text(f.get_entry()?)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        blocking(&self.shared, move |c| {
            c.report_files((&tenant, &table), &node, &report)
        })
        .await
    }

    async fn table_files(
        self: Rc<Self>,
        params: coordinator::TableFilesParams,
        mut results: coordinator::TableFilesResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let (tenant, table) = (text(params.get_tenant()?)?, text(params.get_table()?)?);
        let tables = blocking(&self.shared, move |c| {
            c.files((!table.is_empty()).then_some((tenant.as_str(), table.as_str())))
        })
        .await?;
        let mut list = results.get().init_tables(tables.len() as u32);
        for (i, one) in tables.iter().enumerate() {
            let mut out = list.reborrow().get(i as u32);
            out.set_tenant(&one.tenant);
            out.set_table(&one.table);
            out.set_node(&one.node);
            out.set_epoch(one.epoch);
            out.set_manifest_version(one.manifest_version);
            out.set_file_count(one.file_count);
            out.set_rows(one.rows);
            out.set_bytes(one.bytes);
            out.set_schema(&one.schema_json);
            out.set_settings(&one.settings_json);
            let mut files = out.init_files(one.files.len() as u32);
            for (j, file) in one.files.iter().enumerate() {
                let mut f = files.reborrow().get(j as u32);
                f.set_path(&file.path);
                f.set_bytes(file.bytes);
                f.set_rows(file.rows);
                f.set_crc32(file.crc32.map_or(-1, i64::from));
                f.set_entry(&file.entry_json);
            }
        }
        Ok(())
    }

    async fn routing(
        self: Rc<Self>,
        _: coordinator::RoutingParams,
        mut results: coordinator::RoutingResults,
    ) -> Result<(), Error> {
        self.check()?;
        let (routing, nodes) = blocking(&self.shared, |c| Ok((c.routing()?, c.nodes()?))).await?;
        let mut results = results.get();
        results.set_version(routing.version);
        let quotas: serde_json::Map<String, serde_json::Value> = routing
            .quotas
            .iter()
            .filter_map(|(tenant, json)| Some((tenant.clone(), serde_json::from_str(json).ok()?)))
            .collect();
        results.set_quotas(serde_json::Value::Object(quotas).to_string());
        let mut list = results.init_tables(routing.tables.len() as u32);
        for (i, table) in routing.tables.iter().enumerate() {
            write_placement(list.reborrow().get(i as u32), table, &nodes);
        }
        Ok(())
    }

    async fn set_quota(
        self: Rc<Self>,
        params: coordinator::SetQuotaParams,
        _: coordinator::SetQuotaResults,
    ) -> Result<(), Error> {
        self.check()?;
        let params = params.get()?;
        let (tenant, quota) = (text(params.get_tenant()?)?, text(params.get_quota()?)?);
        let stored = tessera_rpc::quota::catalog_quota(&tenant, &quota)
            .map_err(|e| fail(ErrorCode::Invalid, e))?;
        let owner = tenant.clone();
        blocking(&self.shared, move |c| c.set_quota(&owner, &stored)).await?;
        tracing::info!(tenant = %tenant, "a tenant's quota was set");
        Ok(())
    }
}

impl CoordinatorServer {
    /// The leader lease, or `unavailable` on a coordinator that does not lead.
    fn leading(&self) -> Result<Lease, Error> {
        lock(&self.shared.leadership).current().ok_or_else(|| {
            fail(
                ErrorCode::Unavailable,
                format!(
                    "coordinator {} does not lead; ask another coordinator",
                    self.shared.config.id
                ),
            )
        })
    }
}

/// Replicas a table gets when its creator names none.
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;

fn write_placement(
    mut out: table_placement::Builder<'_>,
    placement: &TablePlacement,
    nodes: &[NodeRecord],
) {
    out.set_tenant(&placement.tenant);
    out.set_table(&placement.table);
    out.set_replication_factor(placement.replication_factor.min(255) as u8);
    out.set_write_quorum(placement.write_quorum.min(255) as u8);
    out.set_leader(placement.leader());
    out.set_epoch(placement.epoch);
    if let Some(partition) = &placement.partition {
        out.set_partition_of(&partition.table);
        out.set_partition(partition.index);
        out.set_partitions(partition.count);
        out.set_partition_key(&partition.key);
        out.set_partition_key_type(&partition.key_type);
    }
    let mut in_sync = out.reborrow().init_in_sync(placement.in_sync.len() as u32);
    for (i, id) in placement.in_sync.iter().enumerate() {
        in_sync.set(i as u32, id);
    }
    let mut replicas = out.init_replicas(placement.replicas.len() as u32);
    for (i, id) in placement.replicas.iter().enumerate() {
        let mut replica = replicas.reborrow().get(i as u32);
        replica.set_node_id(id);
        if let Some(node) = nodes.iter().find(|n| &n.registration.node_id == id) {
            replica.set_address(&node.registration.address);
            replica.set_up(node.state == NodeState::Up);
        }
    }
}
