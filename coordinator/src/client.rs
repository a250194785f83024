//! Talking to coordinators: one-shot calls (`status`, for `tessera admin cluster status`) and the
//! node agent a `tessera serve --coordinator` runs (register, then heartbeat; on any failure try
//! the next coordinator of the list, so the node follows whichever is up).

use crate::catalog::{CatalogFile, FilesReport, NodeRegistration, NodeReport, TableFiles};
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_rpc::cluster::{Metadata, PartitionOf, Placement, Replica, Routing};
use tessera_schema::tessera_capnp::{coordinator, coordinator_gateway, table_placement};

/// Called with each newer routing table a node agent fetches.
pub type OnRouting = Arc<dyn Fn(Routing) + Send + Sync>;

/// A table a node leads, with its files as its manifest lists them now.
#[derive(Clone, Debug)]
pub struct LedFiles {
    pub tenant: String,
    pub table: String,
    pub report: Arc<FilesReport>,
}

/// What a node agent sends before each heartbeat's wait: the node's state, and the files of
/// the tables it leads (each sent to the catalog only when its manifest changed).
#[derive(Clone, Debug, Default)]
pub struct Beat {
    pub report: NodeReport,
    pub files: Vec<LedFiles>,
}

/// A node as `status` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterNode {
    pub node_id: String,
    pub address: String,
    pub http_address: String,
    pub cores: u32,
    pub labels: Vec<(String, String)>,
    pub version: String,
    pub up: bool,
    pub incarnation: u64,
    pub last_seen_ms: i64,
    pub disk_used_bytes: u64,
    pub disk_capacity_bytes: u64,
    pub queries_running: u32,
    /// What it copies to other nodes now (JSON, `Cluster::copying`; "" when nothing).
    pub copying: String,
    /// The sizes of the tables it leads (JSON, `catalog::table_bytes_json`).
    pub table_bytes: String,
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterStatus {
    pub nodes: Vec<ClusterNode>,
    /// The coordinator holding the leader lease ("" when none holds an unexpired one).
    pub leader: String,
    pub leader_epoch: u64,
    pub catalog: String,
    /// The coordinator that answered.
    pub coordinator: String,
    pub now_ms: i64,
}

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, capnp::Error> {
    Ok(reader?.to_string()?)
}

/// Connects to `address`, logs in with `token`, and runs `job` with the coordinator capability,
/// all within `timeout`, on a runtime of this thread's own.
fn with_coordinator<T, F, Fut>(
    address: &str,
    token: &str,
    timeout: Duration,
    job: F,
) -> Result<T, String>
where
    F: FnOnce(coordinator::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, capnp::Error>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let work = async {
            let coordinator = connect(address, token).await?;
            job(coordinator).await.map_err(|e| error_text(&e))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("coordinator {address} did not answer within {timeout:?}"))?
    })
}

/// The message of a call's error, without capnp's "remote exception" prefix.
fn error_text(error: &capnp::Error) -> String {
    error
        .extra
        .strip_prefix("remote exception: ")
        .unwrap_or(&error.extra)
        .to_owned()
}

/// Connects and logs in; the RPC system runs on the current `LocalSet`.
async fn connect(address: &str, token: &str) -> Result<coordinator::Client, String> {
    use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect to coordinator {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    let network = twoparty::VatNetwork::new(
        futures::io::BufReader::new(reader.compat()),
        futures::io::BufWriter::new(writer.compat_write()),
        Side::Client,
        Default::default(),
    );
    let mut rpc = RpcSystem::new(Box::new(network), None);
    let gateway: coordinator_gateway::Client = rpc.bootstrap(Side::Server);
    tokio::task::spawn_local(rpc);
    let mut request = gateway.login_request();
    request.get().set_token(token);
    let response = request.send().promise.await.map_err(|e| error_text(&e))?;
    response
        .get()
        .and_then(|r| r.get_coordinator())
        .map_err(|e| error_text(&e))
}

/// The cluster as the first coordinator of `addresses` that answers sees it.
pub fn status(addresses: &[String], token: &str) -> Result<ClusterStatus, String> {
    let mut errors = Vec::new();
    for address in addresses {
        let answer = with_coordinator(address, token, Duration::from_secs(5), |c| async move {
            let response = c.status_request().send().promise.await?;
            let r = response.get()?;
            let mut nodes = Vec::new();
            for node in r.get_nodes()? {
                let mut labels = Vec::new();
                for label in node.get_labels()? {
                    labels.push((text(label.get_key())?, text(label.get_value())?));
                }
                nodes.push(ClusterNode {
                    node_id: text(node.get_node_id())?,
                    address: text(node.get_address())?,
                    http_address: text(node.get_http_address())?,
                    cores: node.get_cores(),
                    labels,
                    version: text(node.get_version())?,
                    up: node.get_up(),
                    incarnation: node.get_incarnation(),
                    last_seen_ms: node.get_last_seen_millis(),
                    disk_used_bytes: node.get_disk_used_bytes(),
                    disk_capacity_bytes: node.get_disk_capacity_bytes(),
                    queries_running: node.get_queries_running(),
                    copying: text(node.get_copying())?,
                    table_bytes: text(node.get_table_bytes())?,
                });
            }
            Ok(ClusterStatus {
                nodes,
                leader: text(r.get_leader())?,
                leader_epoch: r.get_leader_epoch(),
                catalog: text(r.get_catalog())?,
                coordinator: text(r.get_coordinator())?,
                now_ms: r.get_now_millis(),
            })
        });
        match answer {
            Ok(status) => return Ok(status),
            Err(error) => errors.push(format!("{address}: {error}")),
        }
    }
    Err(format!("no coordinator answered: {}", errors.join("; ")))
}

/// The files of `tenant`'s `table` as its leader last reported them to the catalog (each with
/// its manifest entry); with `table` `None`, every table's counts.
pub fn table_files(
    addresses: &[String],
    token: &str,
    table: Option<(&str, &str)>,
) -> Result<Vec<TableFiles>, String> {
    let mut errors = Vec::new();
    let (tenant, name) = table.unwrap_or_default();
    for address in addresses {
        let answer = with_coordinator(address, token, Duration::from_secs(10), |c| async move {
            let mut request = c.table_files_request();
            request.get().set_tenant(tenant);
            request.get().set_table(name);
            let response = request.send().promise.await?;
            let mut tables = Vec::new();
            for one in response.get()?.get_tables()? {
                let mut files = Vec::new();
                for file in one.get_files()? {
                    files.push(CatalogFile {
                        path: text(file.get_path())?,
                        bytes: file.get_bytes(),
                        rows: file.get_rows(),
                        crc32: u32::try_from(file.get_crc32()).ok(),
                        entry_json: text(file.get_entry())?,
                    });
                }
                tables.push(TableFiles {
                    tenant: text(one.get_tenant())?,
                    table: text(one.get_table())?,
                    node: text(one.get_node())?,
                    epoch: one.get_epoch(),
                    manifest_version: one.get_manifest_version(),
                    file_count: one.get_file_count(),
                    rows: one.get_rows(),
                    bytes: one.get_bytes(),
                    files,
                    schema_json: text(one.get_schema())?,
                    settings_json: text(one.get_settings())?,
                });
            }
            Ok(tables)
        });
        match answer {
            Ok(tables) => return Ok(tables),
            Err(error) => errors.push(format!("{address}: {error}")),
        }
    }
    Err(format!("no coordinator answered: {}", errors.join("; ")))
}

fn read_placement(placement: table_placement::Reader<'_>) -> Result<Placement, capnp::Error> {
    let mut replicas = Vec::new();
    for replica in placement.get_replicas()? {
        replicas.push(Replica {
            node_id: text(replica.get_node_id())?,
            address: text(replica.get_address())?,
            up: replica.get_up(),
        });
    }
    Ok(Placement {
        tenant: text(placement.get_tenant())?,
        table: text(placement.get_table())?,
        replication_factor: u32::from(placement.get_replication_factor()),
        write_quorum: u32::from(placement.get_write_quorum()),
        leader: text(placement.get_leader())?,
        epoch: placement.get_epoch(),
        replicas,
        in_sync: placement
            .get_in_sync()?
            .iter()
            .map(text)
            .collect::<Result<_, _>>()?,
        partition: match text(placement.get_partition_of())? {
            of if of.is_empty() => None,
            of => Some(PartitionOf {
                table: of,
                index: placement.get_partition(),
                count: placement.get_partitions(),
                key: text(placement.get_partition_key())?,
                key_type: text(placement.get_partition_key_type())?,
            }),
        },
    })
}

async fn fetch_routing(coordinator: &coordinator::Client) -> Result<Routing, capnp::Error> {
    let response = coordinator.routing_request().send().promise.await?;
    let r = response.get()?;
    let mut tables = Vec::new();
    for table in r.get_tables()? {
        tables.push(read_placement(table)?);
    }
    // Each tenant's quota object, as the JSON text the catalog keeps.
    let quotas: serde_json::Map<String, serde_json::Value> = match r
        .get_quotas()?
        .to_str()
        .map_err(|e| capnp::Error::failed(e.to_string()))?
    {
        "" => Default::default(),
        text => serde_json::from_str(text)
            .map_err(|e| capnp::Error::failed(format!("the routing table's quotas: {e}")))?,
    };
    Ok(Routing {
        version: r.get_version(),
        tables,
        quotas: quotas
            .into_iter()
            .map(|(tenant, quota)| (tenant, quota.to_string()))
            .collect(),
    })
}

/// The routing table, from the first coordinator of `addresses` that answers.
pub fn routing(addresses: &[String], token: &str) -> Result<Routing, String> {
    let mut errors = Vec::new();
    for address in addresses {
        let answer = with_coordinator(address, token, Duration::from_secs(5), |c| async move {
            fetch_routing(&c).await
        });
        match answer {
            Ok(routing) => return Ok(routing),
            Err(error) => errors.push(format!("{address}: {error}")),
        }
    }
    Err(format!("no coordinator answered: {}", errors.join("; ")))
}

/// The coordinators as a node's way to the catalog (`tessera_rpc::cluster::Metadata`): each
/// call tries them in turn until one answers (only the leading one places tables).
pub struct Coordinators {
    addresses: Vec<String>,
    token: String,
}

impl Coordinators {
    pub fn new(addresses: Vec<String>, token: String) -> Coordinators {
        Coordinators { addresses, token }
    }
}

impl Metadata for Coordinators {
    fn nodes(&self) -> Result<Vec<tessera_rpc::cluster::Member>, String> {
        Ok(status(&self.addresses, &self.token)?
            .nodes
            .into_iter()
            .map(|n| tessera_rpc::cluster::Member {
                node_id: n.node_id,
                address: n.address,
                up: n.up,
            })
            .collect())
    }

    fn place_table(
        &self,
        tenant: &str,
        table: &str,
        replication_factor: u8,
        write_quorum: u8,
        partition: Option<&PartitionOf>,
    ) -> Result<Placement, String> {
        let mut errors = Vec::new();
        for address in &self.addresses {
            let placed = with_coordinator(address, &self.token, Duration::from_secs(10), |c| {
                let mut request = c.place_table_request();
                request.get().set_tenant(tenant);
                request.get().set_table(table);
                request.get().set_replication_factor(replication_factor);
                request.get().set_write_quorum(write_quorum);
                if let Some(partition) = partition {
                    request.get().set_partition_of(&partition.table);
                    request.get().set_partition(partition.index);
                    request.get().set_partitions(partition.count);
                    request.get().set_partition_key(&partition.key);
                    request.get().set_partition_key_type(&partition.key_type);
                }
                async move {
                    let response = request.send().promise.await?;
                    read_placement(response.get()?.get_placement()?)
                }
            });
            match placed {
                Ok(placement) => return Ok(placement),
                Err(error) => errors.push(format!("{address}: {error}")),
            }
        }
        Err(format!(
            "no coordinator could place the table (metadata changes wait for one): {}",
            errors.join("; ")
        ))
    }

    fn routing(&self) -> Result<Routing, String> {
        routing(&self.addresses, &self.token)
    }

    fn drop_table(&self, tenant: &str, table: &str) -> Result<bool, String> {
        let mut errors = Vec::new();
        for address in &self.addresses {
            let dropped = with_coordinator(address, &self.token, Duration::from_secs(10), |c| {
                let mut request = c.drop_table_request();
                request.get().set_tenant(tenant);
                request.get().set_table(table);
                async move {
                    let response = request.send().promise.await?;
                    Ok(response.get()?.get_dropped())
                }
            });
            match dropped {
                Ok(dropped) => return Ok(dropped),
                Err(error) => errors.push(format!("{address}: {error}")),
            }
        }
        Err(format!(
            "no coordinator could drop the table's placement (metadata changes wait for one): {}",
            errors.join("; ")
        ))
    }

    fn set_quota(&self, tenant: &str, quota_json: &str) -> Result<(), String> {
        let mut errors = Vec::new();
        for address in &self.addresses {
            let set = with_coordinator(address, &self.token, Duration::from_secs(10), |c| {
                let mut request = c.set_quota_request();
                request.get().set_tenant(tenant);
                request.get().set_quota(quota_json);
                async move {
                    request.send().promise.await?;
                    Ok(())
                }
            });
            match set {
                Ok(()) => return Ok(()),
                Err(error) => errors.push(format!("{address}: {error}")),
            }
        }
        Err(format!(
            "no coordinator could store the quota (metadata changes wait for one): {}",
            errors.join("; ")
        ))
    }

    fn set_in_sync(
        &self,
        table: (&str, &str),
        node: &str,
        in_sync: bool,
        epoch: u64,
    ) -> Result<Placement, String> {
        let mut errors = Vec::new();
        for address in &self.addresses {
            let changed = with_coordinator(address, &self.token, Duration::from_secs(5), |c| {
                let mut request = c.set_in_sync_request();
                let mut params = request.get();
                params.set_tenant(table.0);
                params.set_table(table.1);
                params.set_node_id(node);
                params.set_in_sync(in_sync);
                params.set_epoch(epoch);
                async move {
                    let response = request.send().promise.await?;
                    read_placement(response.get()?.get_placement()?)
                }
            });
            match changed {
                Ok(placement) => return Ok(placement),
                Err(error) => errors.push(format!("{address}: {error}")),
            }
        }
        Err(format!(
            "no coordinator changed the in-sync replicas: {}",
            errors.join("; ")
        ))
    }
}

/// Keeps a node registered with the coordinators: registers, then heartbeats, on a thread of
/// its own; stops when dropped.
pub struct NodeAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeAgent {
    /// `report` is asked for before each heartbeat.
    pub fn start(
        addresses: Vec<String>,
        token: String,
        registration: NodeRegistration,
        report: Arc<dyn Fn() -> Beat + Send + Sync>,
        on_routing: OnRouting,
    ) -> std::io::Result<NodeAgent> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let agent = Agent {
            addresses,
            token,
            registration,
            report,
            on_routing,
        };
        let thread = std::thread::Builder::new()
            .name("tessera-node-agent".into())
            .spawn(move || run_agent(agent, stopping))?;
        Ok(NodeAgent {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the agent's thread works with.
struct Agent {
    addresses: Vec<String>,
    token: String,
    registration: NodeRegistration,
    report: Arc<dyn Fn() -> Beat + Send + Sync>,
    on_routing: OnRouting,
}

fn run_agent(agent: Agent, stop: Arc<AtomicBool>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("node agent runtime: {error}");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut next = 0;
        let mut failing_since: Option<Instant> = None;
        // The routing version last handed to `on_routing`, across coordinators.
        let mut known = None;
        // (tenant, table) → the (epoch, manifest version) of the files the catalog has.
        let mut reported = HashMap::new();
        while !stop.load(Ordering::SeqCst) {
            let address = &agent.addresses[next % agent.addresses.len()];
            next += 1;
            let session = serve_session(&agent, address, &mut known, &mut reported, &stop).await;
            if let Err(error) = session {
                // One line per outage, not per attempt.
                if failing_since.is_none() {
                    tracing::warn!("coordinator {address}: {error}; trying the others");
                    failing_since = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}

/// Sends the catalog the files of each led table whose manifest changed since the last report
/// it took, for at most `REPORT_BUDGET` (the rest after the next heartbeat, so heartbeats stay
/// on time however many tables changed). A report the catalog refuses as fenced or for a table
/// it does not know (the leadership moved on) is not sent again for that manifest version.
/// How long one heartbeat's files reports may take.
const REPORT_BUDGET: Duration = Duration::from_millis(300);

async fn report_files(
    coordinator: &coordinator::Client,
    node: &str,
    files: Vec<LedFiles>,
    reported: &mut HashMap<(String, String), (u64, u64)>,
) -> Result<(), String> {
    reported.retain(|(tenant, table), _| {
        files
            .iter()
            .any(|f| f.tenant == *tenant && f.table == *table)
    });
    let started = Instant::now();
    for LedFiles {
        tenant,
        table,
        report,
    } in files
    {
        let key = (tenant.clone(), table.clone());
        let at = (report.epoch, report.manifest_version);
        if reported.get(&key) == Some(&at) {
            continue;
        }
        if started.elapsed() >= REPORT_BUDGET {
            break;
        }
        let mut request = coordinator.report_files_request();
        {
            let mut params = request.get();
            params.set_node_id(node);
            params.set_tenant(&tenant);
            params.set_table(&table);
            params.set_epoch(report.epoch);
            params.set_manifest_version(report.manifest_version);
            params.set_schema(&report.schema_json);
            params.set_settings(&report.settings_json);
            let mut list = params.init_files(report.files.len() as u32);
            for (i, file) in report.files.iter().enumerate() {
                let mut out = list.reborrow().get(i as u32);
                out.set_path(&file.path);
                out.set_bytes(file.bytes);
                out.set_rows(file.rows);
                out.set_crc32(file.crc32.map_or(-1, i64::from));
                out.set_entry(&file.entry_json);
            }
        }
        let sent = tokio::time::timeout(Duration::from_secs(3), request.send().promise)
            .await
            .map_err(|_| "reporting files timed out".to_string())?;
        match sent {
            Ok(_) => {}
            Err(error) => {
                let text = error_text(&error);
                if !(text.starts_with("unavailable: fenced") || text.starts_with("not_found")) {
                    return Err(format!("reporting the files of {table}: {text}"));
                }
                tracing::debug!(table = %table, reason = %text, "files report refused");
            }
        }
        reported.insert(key, at);
    }
    Ok(())
}

/// Registers with one coordinator and heartbeats until that fails or the agent stops; fetches
/// the routing table whenever a heartbeat shows a version other than `known`.
async fn serve_session(
    agent: &Agent,
    address: &str,
    known: &mut Option<u64>,
    reported: &mut HashMap<(String, String), (u64, u64)>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let registration = &agent.registration;
    let call_timeout = Duration::from_secs(3);
    let coordinator = tokio::time::timeout(call_timeout, connect(address, &agent.token))
        .await
        .map_err(|_| "no answer".to_string())??;
    let register = async {
        let mut request = coordinator.register_node_request();
        {
            let mut node = request.get().init_node();
            node.set_node_id(&registration.node_id);
            node.set_address(&registration.address);
            node.set_http_address(registration.http_address.as_deref().unwrap_or(""));
            node.set_cores(registration.cores);
            node.set_version(&registration.version);
            let mut labels = node.init_labels(registration.labels.len() as u32);
            for (i, (key, value)) in registration.labels.iter().enumerate() {
                let mut label = labels.reborrow().get(i as u32);
                label.set_key(key);
                label.set_value(value);
            }
        }
        let response = request.send().promise.await?;
        let r = response.get()?;
        Ok::<_, capnp::Error>((r.get_incarnation(), r.get_heartbeat_millis()))
    };
    let (incarnation, heartbeat_ms) = tokio::time::timeout(call_timeout, register)
        .await
        .map_err(|_| "registration timed out".to_string())?
        .map_err(|e| error_text(&e))?;
    tracing::info!(coordinator = %address, incarnation, "registered with the coordinator");
    let interval = Duration::from_millis(u64::from(heartbeat_ms.max(100)));
    while !stop.load(Ordering::SeqCst) {
        let Beat { report: now, files } = (agent.report)();
        let mut request = coordinator.heartbeat_request();
        {
            let mut params = request.get();
            params.set_node_id(&registration.node_id);
            params.set_disk_used_bytes(now.disk_used_bytes);
            params.set_disk_capacity_bytes(now.disk_capacity_bytes);
            params.set_queries_running(now.queries_running);
            params.set_copying(&now.copying);
            params.set_table_bytes(&now.table_bytes);
        }
        let response = tokio::time::timeout(call_timeout, request.send().promise)
            .await
            .map_err(|_| "heartbeat timed out".to_string())?
            .map_err(|e| error_text(&e))?;
        let version = response
            .get()
            .map_err(|e| error_text(&e))?
            .get_routing_version();
        if *known != Some(version) {
            let routing = tokio::time::timeout(call_timeout, fetch_routing(&coordinator))
                .await
                .map_err(|_| "fetching the routing table timed out".to_string())?
                .map_err(|e| error_text(&e))?;
            *known = Some(routing.version);
            tracing::info!(
                version = routing.version,
                tables = routing.tables.len(),
                "routing table updated"
            );
            (agent.on_routing)(routing);
        }
        report_files(&coordinator, &registration.node_id, files, reported).await?;
        let deadline = Instant::now() + interval;
        while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
