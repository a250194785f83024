//! A node's part in a cluster (`tessera serve --coordinator`): the routing table it caches (which
//! nodes hold each table, which of them leads), the way to place a new table (through the
//! coordinators, `Metadata`), and its sessions with peer nodes (`Gateway.peerLogin`, role node),
//! over which a table's leader replicates each ingested batch and other nodes forward writes.
//! Coordinators are never in the data path: a batch goes from the client's node to the leader
//! and from the leader to its followers, node to node.
//!
//! Peer calls go through the Rust client library, which runs each connection on a thread of its
//! own; the maps of connections and streams below are behind mutexes, taken only to look up or
//! replace an entry (never across an await), and only on the write path, never a query's.

use crate::client::{ClientError, ColumnInfo, IngestAck, IngestStream, Session, TableSpec};
use futures::lock::Mutex as AsyncMutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tessera_storage_engine::io::runtime;
use tessera_storage_engine::table::manifest::{ColumnDef, Compression, TableManifest};

/// One node holding a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub node_id: String,
    /// Its RPC address ("" when the catalog no longer knows the node).
    pub address: String,
    pub up: bool,
}

/// Where a table lives: its replicas, the leader first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub tenant: String,
    pub table: String,
    pub replication_factor: u32,
    pub write_quorum: u32,
    pub leader: String,
    /// Grows whenever the leader changes.
    pub epoch: u64,
    pub replicas: Vec<Replica>,
    /// Node ids of the replicas holding every acknowledged batch (the leader among them).
    pub in_sync: Vec<String>,
    /// Set when this is one hash partition of a partitioned table.
    pub partition: Option<PartitionOf>,
}

/// One hash partition of a table: placed, replicated, led and stored as a table of its own
/// named `<table>.p<index>` (`partition_name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOf {
    pub table: String,
    pub index: u32,
    pub count: u32,
    /// The column whose hash (`tessera_storage_engine::value::partition_of`) picks a row's
    /// partition, and its kind (`KEY_INT` or `KEY_STRING`).
    pub key: String,
    pub key_type: String,
}

/// The kinds of partition key: integer columns (every width, dates and timestamps hash as the
/// same integer) and string columns.
pub const KEY_INT: &str = "int";
pub const KEY_STRING: &str = "string";

/// The name partition `index` of `table` is placed and stored under.
pub fn partition_name(table: &str, index: u32) -> String {
    format!("{table}.p{index}")
}

impl Placement {
    pub fn holds(&self, node_id: &str) -> bool {
        self.replicas.iter().any(|r| r.node_id == node_id)
    }

    pub fn leader_replica(&self) -> Option<&Replica> {
        self.replicas.iter().find(|r| r.node_id == self.leader)
    }

    /// The leader's replica, when the catalog has its address; else why not.
    pub fn reachable_leader(&self) -> Result<&Replica, String> {
        self.leader_replica()
            .filter(|r| !r.address.is_empty())
            .ok_or_else(|| format!("table {} has no reachable leader now", self.table))
    }

    pub fn is_in_sync(&self, node_id: &str) -> bool {
        self.in_sync.iter().any(|n| n == node_id)
    }

    /// The replicas that may answer for the table: up and in sync, the leader first.
    pub fn answering(&self) -> Vec<&Replica> {
        let mut answering: Vec<&Replica> = self
            .replicas
            .iter()
            .filter(|r| r.up && self.is_in_sync(&r.node_id) && !r.address.is_empty())
            .collect();
        answering.sort_by_key(|r| r.node_id != self.leader);
        answering
    }

    /// Replicas whose node is up and that hold every acknowledged batch.
    pub fn healthy(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.up && self.is_in_sync(&r.node_id))
            .count()
    }
}

/// The routing table as a coordinator last gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    pub version: u64,
    pub tables: Vec<Placement>,
    /// Tenants' quota objects (JSON) the catalog holds, by tenant.
    pub quotas: std::collections::BTreeMap<String, String>,
}

/// A node of the cluster as the catalog knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    pub address: String,
    pub up: bool,
}

/// How a node reaches the catalog (implemented over the coordinators by `tessera serve`).
pub trait Metadata: Send + Sync {
    /// The cluster's nodes; blocks the calling thread.
    fn nodes(&self) -> Result<Vec<Member>, String>;
    /// Places a new table, or one partition of one (or returns the placement it has); blocks
    /// the calling thread.
    fn place_table(
        &self,
        tenant: &str,
        table: &str,
        replication_factor: u8,
        write_quorum: u8,
        partition: Option<&PartitionOf>,
    ) -> Result<Placement, String>;
    /// The routing table as a coordinator has it now; blocks the calling thread.
    fn routing(&self) -> Result<Routing, String>;
    /// Removes a table's placement (every replica dropped it); false if it had none. Blocks
    /// the calling thread.
    fn drop_table(&self, tenant: &str, table: &str) -> Result<bool, String>;
    /// Stores `tenant`'s quota object (JSON) in the catalog, for every node to apply. Blocks
    /// the calling thread.
    fn set_quota(&self, tenant: &str, quota_json: &str) -> Result<(), String>;
    /// For the table's leader at `epoch`: takes `node` out of its in-sync replicas or puts it
    /// back; the placement after. Blocks the calling thread.
    fn set_in_sync(
        &self,
        table: (&str, &str),
        node: &str,
        in_sync: bool,
        epoch: u64,
    ) -> Result<Placement, String>;
}

/// Who a tenant capability serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A client: in a cluster, writes go to the table's leader and are replicated.
    Client,
    /// A peer forwarding a client's writes: this node must lead the table.
    Forwarded,
    /// The table's leader replicating to this node: writes apply here only.
    Replica,
}

/// (tenant, table, to node) → (bytes sent, bytes to send) of the copies a node sends.
type Copies = std::collections::BTreeMap<(String, String, String), (u64, u64)>;

/// How long connecting and logging in to a peer may take.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A table's columns, shared.
type Columns = Arc<Vec<ColumnDef>>;
/// Placements by (tenant, table).
type Placements = HashMap<(String, String), Arc<Placement>>;
/// (address, tenant, forwarded) of a peer session.
type SessionKey = (String, String, bool);
/// (address, tenant, table, producer, leader epoch: 0 when forwarded) of an ingest stream to
/// a peer.
type StreamKey = (String, String, String, String, u64);

/// A node's view of its cluster and its sessions with peers.
pub struct Cluster {
    node_id: String,
    /// A node token (role node), presented to coordinators and peers.
    token: String,
    metadata: Arc<dyn Metadata>,
    routing: RwLock<Arc<Placements>>,
    /// Tenants' quota objects (JSON) from the routing table held (`catch_up::apply_quotas`).
    quotas: Mutex<Arc<std::collections::BTreeMap<String, String>>>,
    version: std::sync::atomic::AtomicU64,
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    /// When the routing table was last fetched on demand (`look_up_routing`).
    looked_up: Mutex<Option<std::time::Instant>>,
    /// Open ingest streams to peers by (address, tenant, table, producer): a producer's batches
    /// to one peer go one after the other.
    streams: Mutex<HashMap<StreamKey, Arc<AsyncMutex<Option<IngestStream>>>>>,
    /// Per led table: the writes in flight, and whether a catch-up holds new ones back.
    gates: Mutex<HashMap<(String, String), Arc<WriteGate>>>,
    /// The cluster's nodes as last fetched (used while no coordinator answers).
    members: Mutex<Vec<Member>>,
    /// Copies of tables this node sends now.
    copies: Mutex<Copies>,
    /// Fragments of partitioned queries running on each node, as this node sent them.
    fragments: Arc<Mutex<HashMap<String, usize>>>,
    /// How long a fragment may run on one replica before another is asked too.
    pub hedge_after: Duration,
    /// The columns of partitioned tables as a replica last described them, by (tenant, table).
    described: Mutex<HashMap<(String, String), Columns>>,
    /// How long a peer has to acknowledge a replicated batch.
    pub replication_timeout: Duration,
    /// How often the files of this node's in-sync replicas are checked (`catch_up::scrub`).
    pub scrub_interval: Duration,
    /// How often this node compares the replicas of the tables it leads (`anti_entropy`).
    pub anti_entropy_interval: Duration,
    /// The most bytes a second one copy of a table to another node sends (0: no limit).
    pub copy_bytes_per_second: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .field("routing_version", &self.routing_version())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub fn new(node_id: String, token: String, metadata: Arc<dyn Metadata>) -> Cluster {
        Cluster {
            node_id,
            token,
            metadata,
            routing: RwLock::default(),
            quotas: Mutex::default(),
            version: Default::default(),
            sessions: Mutex::default(),
            looked_up: Mutex::default(),
            streams: Mutex::default(),
            gates: Mutex::default(),
            members: Mutex::default(),
            copies: Mutex::default(),
            fragments: Arc::default(),
            hedge_after: Duration::from_millis(500),
            described: Mutex::default(),
            replication_timeout: Duration::from_secs(30),
            scrub_interval: Duration::from_secs(6 * 3600),
            anti_entropy_interval: Duration::from_secs(600),
            copy_bytes_per_second: 256 << 20,
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The version of the routing table held (0: none yet).
    pub fn routing_version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the routing table with a newer one (an older one is ignored).
    pub fn set_routing(&self, routing: Routing) {
        let mut table = self.routing.write().unwrap_or_else(|p| p.into_inner());
        if routing.version < self.routing_version() {
            return;
        }
        let map = routing
            .tables
            .into_iter()
            .map(|p| ((p.tenant.clone(), p.table.clone()), Arc::new(p)))
            .collect();
        *table = Arc::new(map);
        *lock(&self.quotas) = Arc::new(routing.quotas);
        self.version
            .store(routing.version, std::sync::atomic::Ordering::SeqCst);
    }

    /// Tenants' quota objects (JSON) as the routing table held gives them.
    pub fn quotas(&self) -> Arc<std::collections::BTreeMap<String, String>> {
        lock(&self.quotas).clone()
    }

    /// Stores `tenant`'s quota object (JSON) in the catalog (every node applies it once its
    /// routing table has it), then fetches the routing table.
    pub async fn set_quota(&self, tenant: &str, quota_json: &str) -> Result<(), String> {
        let (metadata, owner, json) = (
            self.metadata.clone(),
            tenant.to_owned(),
            quota_json.to_owned(),
        );
        runtime::spawn_blocking(move || metadata.set_quota(&owner, &json)).await?;
        self.refresh_routing().await
    }

    /// The table's placement, if it has one.
    pub fn placement(&self, tenant: &str, table: &str) -> Option<Arc<Placement>> {
        let routing = self.routing.read().unwrap_or_else(|p| p.into_inner());
        routing.get(&(tenant.to_owned(), table.to_owned())).cloned()
    }

    /// The placements of a partitioned table's partitions, by index; `Ok(None)` when the table
    /// is not partitioned. An error when the routing table lacks some partition (it is being
    /// created or dropped).
    pub fn partitions(
        &self,
        tenant: &str,
        table: &str,
    ) -> Result<Option<Vec<Arc<Placement>>>, String> {
        let parts = self.partition_placements(tenant, table);
        if parts.is_empty() {
            return Ok(None);
        }
        let count = parts[0].partition.as_ref().map_or(0, |of| of.count) as usize;
        let complete = parts.len() == count
            && parts.iter().enumerate().all(|(i, p)| {
                p.partition
                    .as_ref()
                    .is_some_and(|of| of.index as usize == i)
            });
        if !complete {
            return Err(format!(
                "the routing table (version {}) holds {} of the {count} partitions of {table}: \
                 it is being created or dropped",
                self.routing_version(),
                parts.len()
            ));
        }
        Ok(Some(parts))
    }

    /// The placements of the partitions of `table` the routing table holds, by index (all of
    /// them unless it is being created or dropped).
    pub fn partition_placements(&self, tenant: &str, table: &str) -> Vec<Arc<Placement>> {
        let mut parts: Vec<Arc<Placement>> = self
            .placements()
            .into_iter()
            .filter(|p| {
                p.tenant == tenant && p.partition.as_ref().is_some_and(|of| of.table == table)
            })
            .collect();
        parts.sort_by_key(|p| p.partition.as_ref().map_or(0, |of| of.index));
        parts
    }

    /// Every table's placement.
    pub fn placements(&self) -> Vec<Arc<Placement>> {
        let routing = self.routing.read().unwrap_or_else(|p| p.into_inner());
        routing.values().cloned().collect()
    }

    /// The placements of the tables this node holds a replica of.
    pub fn held_placements(&self) -> Vec<Arc<Placement>> {
        let mut placements = self.placements();
        placements.retain(|p| p.holds(&self.node_id));
        placements
    }

    /// The table's placement, asking the coordinators for the routing table first when this
    /// node knows none (a table placed a moment ago by another node): a write to a replicated
    /// table must never be taken as a lone node's. `Ok(None)`: the table is not replicated.
    pub async fn placement_now(
        &self,
        tenant: &str,
        table: &str,
    ) -> Result<Option<Arc<Placement>>, String> {
        if let Some(placement) = self.placement(tenant, table) {
            return Ok(Some(placement));
        }
        self.refresh_routing().await?;
        Ok(self.placement(tenant, table))
    }

    /// Checks a batch or copy sent by a table's leader at `epoch` (0: not a leader's): refused
    /// once this node knows a later leader epoch of the table (the sender was deposed).
    pub fn check_leader_epoch(&self, tenant: &str, table: &str, epoch: u64) -> Result<(), String> {
        match self.placement(tenant, table) {
            Some(placement) if epoch > 0 && placement.epoch > epoch => Err(format!(
                "fenced: table {table} is led by {} at epoch {}, the sender led it at epoch \
                 {epoch}",
                placement.leader, placement.epoch
            )),
            _ => Ok(()),
        }
    }

    /// The cluster's nodes: as the coordinators say now, or as they last said while none
    /// answers.
    pub async fn members(&self) -> Result<Vec<Member>, String> {
        let metadata = self.metadata.clone();
        match runtime::spawn_blocking(move || metadata.nodes()).await {
            Ok(members) => {
                *lock(&self.members) = members.clone();
                Ok(members)
            }
            Err(error) => {
                let known = lock(&self.members).clone();
                if known.is_empty() {
                    Err(error)
                } else {
                    Ok(known)
                }
            }
        }
    }

    /// Records how far a copy of a table to `to` has got (`None`: it ended).
    pub fn copy_progress(&self, table: (&str, &str), to: &str, progress: Option<(u64, u64)>) {
        let key = (table.0.to_owned(), table.1.to_owned(), to.to_owned());
        let mut copies = lock(&self.copies);
        match progress {
            Some(progress) => copies.insert(key, progress),
            None => copies.remove(&key),
        };
    }

    /// The copies this node sends now, as JSON (`[{tenant, table, to, bytes, total}]`; "" when
    /// none), reported to the coordinators at each heartbeat.
    pub fn copying(&self) -> String {
        let copies = lock(&self.copies);
        if copies.is_empty() {
            return String::new();
        }
        let list: Vec<serde_json::Value> = copies
            .iter()
            .map(|((tenant, table, to), (bytes, total))| {
                serde_json::json!({
                    "tenant": tenant, "table": table, "to": to, "bytes": bytes, "total": total,
                })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    /// Fetches the routing table from the coordinators now.
    pub async fn refresh_routing(&self) -> Result<(), String> {
        let metadata = self.metadata.clone();
        let routing = runtime::spawn_blocking(move || metadata.routing()).await?;
        self.set_routing(routing);
        Ok(())
    }

    /// Fetches the routing table for a table it may lack (just created through another node),
    /// unless it was fetched so within the last quarter second: a client naming a table that
    /// does not exist, again and again, does not put a catalog read behind each call.
    pub async fn look_up_routing(&self) -> Result<(), String> {
        const FRESH: Duration = Duration::from_millis(250);
        {
            let mut last = lock(&self.looked_up);
            if last.is_some_and(|at| at.elapsed() < FRESH) {
                return Ok(());
            }
            *last = Some(std::time::Instant::now());
        }
        self.refresh_routing().await
    }

    /// Places a new table through the coordinators (or learns the placement it has), and
    /// keeps it in the routing table until the next version replaces it.
    pub async fn place_table(
        &self,
        tenant: &str,
        table: &str,
        replication_factor: u8,
        write_quorum: u8,
        partition: Option<PartitionOf>,
    ) -> Result<Arc<Placement>, String> {
        let (metadata, owner, name) = (self.metadata.clone(), tenant.to_owned(), table.to_owned());
        let placement = runtime::spawn_blocking(move || {
            metadata.place_table(
                &owner,
                &name,
                replication_factor,
                write_quorum,
                partition.as_ref(),
            )
        })
        .await?;
        Ok(self.keep(placement))
    }

    /// Removes a table's placement through the coordinators, and from the routing table.
    pub async fn drop_table(&self, tenant: &str, table: &str) -> Result<bool, String> {
        let (metadata, owner, name) = (self.metadata.clone(), tenant.to_owned(), table.to_owned());
        let dropped = runtime::spawn_blocking(move || metadata.drop_table(&owner, &name)).await?;
        self.edit_routing(|map| {
            map.remove(&(tenant.to_owned(), table.to_owned()));
        });
        Ok(dropped)
    }

    /// As the table's leader at `epoch`: takes `node` out of the table's in-sync replicas (or
    /// puts it back) in the catalog, and keeps the placement that results.
    pub async fn set_in_sync(
        &self,
        placement: &Placement,
        node: &str,
        in_sync: bool,
    ) -> Result<Arc<Placement>, String> {
        let (metadata, tenant, table, node, epoch) = (
            self.metadata.clone(),
            placement.tenant.clone(),
            placement.table.clone(),
            node.to_owned(),
            placement.epoch,
        );
        let placement = runtime::spawn_blocking(move || {
            metadata.set_in_sync((&tenant, &table), &node, in_sync, epoch)
        })
        .await?;
        Ok(self.keep(placement))
    }

    /// Puts one table's placement into the routing table (until the next version replaces it).
    fn keep(&self, placement: Placement) -> Arc<Placement> {
        let placement = Arc::new(placement);
        self.edit_routing(|map| {
            map.insert(
                (placement.tenant.clone(), placement.table.clone()),
                placement.clone(),
            );
        });
        placement
    }

    /// Changes the routing table held (a copy: queries hold the one they read).
    fn edit_routing(&self, edit: impl FnOnce(&mut Placements)) {
        let mut routing = self.routing.write().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&routing);
        edit(&mut map);
        *routing = Arc::new(map);
    }

    /// A session with the peer at `address` for `tenant` (cached): as its leader (writes
    /// apply there only) or, `forwarded`, handing it a client's writes as the table's leader.
    pub async fn session(
        &self,
        address: &str,
        tenant: &str,
        forwarded: bool,
    ) -> Result<Arc<Session>, ClientError> {
        let key = (address.to_owned(), tenant.to_owned(), forwarded);
        if let Some(session) = lock(&self.sessions).get(&key) {
            return Ok(session.clone());
        }
        let connect = async {
            let client = crate::client::Client::connect(address).await?;
            client.peer_login(&self.token, tenant, forwarded).await
        };
        // A peer whose host is cut off drops the connection attempt silently: give up early,
        // so a query or write moves on to another replica within the time.
        let session = match runtime::timeout(PEER_CONNECT_TIMEOUT, connect).await {
            Some(session) => Arc::new(session?),
            None => {
                return Err(ClientError::Connect {
                    address: address.to_owned(),
                    message: format!("no answer within {PEER_CONNECT_TIMEOUT:?}"),
                })
            }
        };
        lock(&self.sessions).insert(key, session.clone());
        Ok(session)
    }

    /// `sql` over the `query_stats` records of the peer at `address`, every tenant's (an
    /// operator login with this node's token, on a connection of its own).
    pub async fn operator_query(
        &self,
        address: &str,
        sql: &str,
    ) -> Result<crate::client::QueryOutput, ClientError> {
        let connect = async {
            let client = crate::client::Client::connect(address).await?;
            client.operator_login(&self.token).await
        };
        let session = runtime::timeout(PEER_CONNECT_TIMEOUT, connect)
            .await
            .ok_or_else(|| ClientError::Connect {
                address: address.to_owned(),
                message: format!("no answer within {PEER_CONNECT_TIMEOUT:?}"),
            })??;
        session.query_stats(sql, true).await
    }

    /// Forgets every session and stream with the peer at `address` (after a failure: the next
    /// call connects again).
    pub fn forget_peer(&self, address: &str) {
        lock(&self.sessions).retain(|(a, ..), _| a != address);
        lock(&self.streams).retain(|(a, ..), _| a != address);
    }

    /// Sends one batch (its Arrow IPC pieces) under (producer, sequence) to the peer at
    /// `address`: as the table's leader at an epoch to a follower, with `create` = (the spec
    /// making the table there first when the peer lacks it, the epoch); or, without `create`,
    /// forwarded to the table's leader. Waits at most
    /// `replication_timeout`.
    pub async fn send_batch(
        &self,
        address: &str,
        key: (&str, &str, &str),
        sequence: u64,
        pieces: &[Vec<u8>],
        create: Option<(&TableSpec, u64)>,
    ) -> Result<IngestAck, String> {
        let (tenant, table, producer) = key;
        let forwarded = create.is_none();
        let epoch = create.map_or(0, |(_, epoch)| epoch);
        let slot = lock(&self.streams)
            .entry((
                address.to_owned(),
                tenant.to_owned(),
                table.to_owned(),
                producer.to_owned(),
                epoch,
            ))
            .or_default()
            .clone();
        let work = async {
            let mut guard = slot.lock().await;
            // Out of its slot while in use: a send cut off half way (a cancelled call) leaves
            // the slot empty, and the next batch opens a new stream.
            let mut open = match guard.take() {
                Some(open) => open,
                None => {
                    let session = self.session(address, tenant, forwarded).await?;
                    let opened = match session.replica_stream(table, producer, epoch).await {
                        Err(error) if is_not_found(&error) && create.is_some() => {
                            let (spec, _) = create.expect("checked above");
                            match session.create_table(spec.clone()).await {
                                Ok(_) => {}
                                Err(error) if error.to_string().contains("already exists") => {}
                                Err(error) => return Err(error),
                            }
                            session.replica_stream(table, producer, epoch).await
                        }
                        other => other,
                    };
                    opened?
                }
            };
            for piece in pieces {
                open.write_ipc(piece).await?;
            }
            let ack = open.end_batch(sequence).await?;
            *guard = Some(open);
            Ok(ack)
        };
        let outcome = match runtime::timeout(self.replication_timeout, work).await {
            Some(result) => result.map_err(|e| e.to_string()),
            None => Err(format!(
                "no acknowledgement within {:?}",
                self.replication_timeout
            )),
        };
        if outcome.is_err() {
            self.forget_peer(address);
        }
        outcome
    }
}

/// Writes to one table a leader replicates, and a catch-up's pause of them (`Cluster::pass`,
/// `Cluster::pause`): the pause waits for the writes in flight and holds new ones back, so the
/// table's files then hold every batch the leader took.
#[derive(Default)]
struct WriteGate {
    paused: AtomicBool,
    writing: AtomicUsize,
}

/// How often a write held back or a pause waiting looks again.
const GATE_POLL: Duration = Duration::from_millis(2);

/// A write let through a table's gate; leaves it on drop.
pub struct WritePass(Arc<WriteGate>);

impl Drop for WritePass {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A table's writes held back; they go on when this is dropped.
pub struct WritesPaused(Arc<WriteGate>);

impl Drop for WritesPaused {
    fn drop(&mut self) {
        self.0.paused.store(false, Ordering::SeqCst);
    }
}

impl Cluster {
    fn gate(&self, tenant: &str, table: &str) -> Arc<WriteGate> {
        lock(&self.gates)
            .entry((tenant.to_owned(), table.to_owned()))
            .or_default()
            .clone()
    }

    /// Lets one write to the table through, once no catch-up pauses its writes.
    pub async fn pass(&self, tenant: &str, table: &str) -> WritePass {
        let gate = self.gate(tenant, table);
        loop {
            while gate.paused.load(Ordering::SeqCst) {
                runtime::sleep(GATE_POLL).await;
            }
            gate.writing.fetch_add(1, Ordering::SeqCst);
            // A pause that began meanwhile waits for this write unless it backs off now.
            if !gate.paused.load(Ordering::SeqCst) {
                return WritePass(gate);
            }
            gate.writing.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Holds new writes to the table back and waits for those in flight (at most `wait`;
    /// `None` when they did not finish in time, and writes go on).
    pub async fn pause(&self, tenant: &str, table: &str, wait: Duration) -> Option<WritesPaused> {
        let gate = self.gate(tenant, table);
        while gate.paused.swap(true, Ordering::SeqCst) {
            // Another catch-up of this table pauses it: wait for its end.
            runtime::sleep(GATE_POLL).await;
        }
        let paused = WritesPaused(gate);
        let deadline = std::time::Instant::now() + wait;
        while paused.0.writing.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= deadline {
                return None;
            }
            runtime::sleep(GATE_POLL).await;
        }
        Some(paused)
    }
}

fn is_not_found(error: &ClientError) -> bool {
    error.error_code() == Some(crate::codes::ErrorCode::NotFound)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a fragment running on a node until dropped (`Cluster::fragment_started`).
pub struct FragmentLoad {
    fragments: Arc<Mutex<HashMap<String, usize>>>,
    node: String,
}

impl Drop for FragmentLoad {
    fn drop(&mut self) {
        let mut fragments = lock(&self.fragments);
        if let Some(count) = fragments.get_mut(&self.node) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                fragments.remove(&self.node);
            }
        }
    }
}

impl Cluster {
    /// The replicas to run a fragment of `part` on, in the order to try them: this node's if
    /// it is in sync, then the other up, in-sync replicas running fewest fragments sent by
    /// this node (the leader first on a tie). (node id, address).
    pub fn fragment_order(&self, part: &Placement) -> Vec<(String, String)> {
        let fragments = lock(&self.fragments);
        let mut order: Vec<(bool, usize, usize, &Replica)> = part
            .answering()
            .into_iter()
            .enumerate()
            .map(|(rank, r)| {
                let load = fragments.get(&r.node_id).copied().unwrap_or(0);
                (r.node_id != self.node_id, load, rank, r)
            })
            .collect();
        order.sort_by_key(|(remote, load, rank, _)| (*remote, *load, *rank));
        order
            .into_iter()
            .map(|(_, _, _, r)| (r.node_id.clone(), r.address.clone()))
            .collect()
    }

    /// A partitioned table's columns as a replica last described them.
    pub fn described_columns(&self, tenant: &str, table: &str) -> Option<Arc<Vec<ColumnDef>>> {
        lock(&self.described)
            .get(&(tenant.to_owned(), table.to_owned()))
            .cloned()
    }

    /// Keeps a partitioned table's columns as a replica described them now.
    pub fn keep_described_columns(
        &self,
        tenant: &str,
        table: &str,
        columns: Vec<ColumnDef>,
    ) -> Arc<Vec<ColumnDef>> {
        let columns = Arc::new(columns);
        lock(&self.described).insert((tenant.to_owned(), table.to_owned()), columns.clone());
        columns
    }

    /// Counts a fragment on `node` until the guard is dropped.
    pub fn fragment_started(&self, node: &str) -> FragmentLoad {
        *lock(&self.fragments).entry(node.to_owned()).or_default() += 1;
        FragmentLoad {
            fragments: self.fragments.clone(),
            node: node.to_owned(),
        }
    }
}

/// A table's description from its manifest, as a peer would send it.
pub fn table_info(manifest: &TableManifest) -> crate::client::TableInfo {
    let spec = table_spec(manifest);
    crate::client::TableInfo {
        name: spec.name,
        columns: spec.columns,
        time_column: spec.time_column,
        partition_by: spec.partition_by,
        compression: spec.compression,
        rows: manifest.total_rows(),
        files: manifest.files.len() as u64,
        bytes: manifest.total_bytes(),
        version: manifest.version,
    }
}

/// The spec that creates a table like the one `manifest` describes (on a replica lacking it).
pub fn table_spec(manifest: &TableManifest) -> TableSpec {
    spec(
        &manifest.table,
        &manifest.columns,
        manifest.partition.time_column.clone(),
        manifest.partition.columns.clone(),
        manifest.writer.compression,
    )
}

/// A table spec from its parts, as the client library sends it.
pub fn spec(
    name: &str,
    columns: &[ColumnDef],
    time_column: Option<String>,
    partition_by: Vec<String>,
    compression: Compression,
) -> TableSpec {
    TableSpec {
        name: name.to_owned(),
        columns: columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                column_type: c.column_type.name().to_owned(),
                nullable: c.nullable,
            })
            .collect(),
        time_column,
        partition_by,
        compression: match compression {
            Compression::Snappy => crate::client::Compression::Snappy,
            Compression::Zstd => crate::client::Compression::Zstd,
            Compression::None => crate::client::Compression::None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A catalog that is never reached.
    struct Unreachable;

    impl Metadata for Unreachable {
        fn nodes(&self) -> Result<Vec<Member>, String> {
            Err("unreachable".into())
        }
        fn place_table(
            &self,
            _: &str,
            _: &str,
            _: u8,
            _: u8,
            _: Option<&PartitionOf>,
        ) -> Result<Placement, String> {
            Err("unreachable".into())
        }
        fn routing(&self) -> Result<Routing, String> {
            Err("unreachable".into())
        }
        fn drop_table(&self, _: &str, _: &str) -> Result<bool, String> {
            Err("unreachable".into())
        }
        fn set_quota(&self, _: &str, _: &str) -> Result<(), String> {
            Err("unreachable".into())
        }
        fn set_in_sync(
            &self,
            _: (&str, &str),
            _: &str,
            _: bool,
            _: u64,
        ) -> Result<Placement, String> {
            Err("unreachable".into())
        }
    }

    /// A node n1 whose coordinators are never reached.
    pub(crate) fn cluster_without_catalog() -> Cluster {
        Cluster::new("n1".into(), "token".into(), Arc::new(Unreachable))
    }

    fn cluster() -> Arc<Cluster> {
        Arc::new(cluster_without_catalog())
    }

    /// Runs `test` on a core of a one-core pool (the runtime's timers and tasks work there).
    fn on_a_core<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let pool = runtime::CorePool::start(&runtime::CoreOptions::unpinned(1), |_| ())
            .expect("pool starts");
        futures::executor::block_on(pool.run_on(0, move |_, _| test())).unwrap();
    }

    #[test]
    fn a_pause_waits_for_the_writes_in_flight_and_holds_new_ones_back() {
        on_a_core(|| async {
            let cluster = cluster();
            let pass = cluster.pass("acme", "events").await;
            // A write in flight: the pause gives up after its wait, and writes go on.
            let waited = cluster
                .pause("acme", "events", Duration::from_millis(20))
                .await;
            assert!(waited.is_none());
            drop(cluster.pass("acme", "events").await);
            // The write ends while the pause waits: the pause holds.
            let passed = std::rc::Rc::new(std::cell::Cell::new(false));
            let (ended, ending) = futures::channel::oneshot::channel();
            {
                let (cluster, passed) = (cluster.clone(), passed.clone());
                runtime::spawn_local(async move {
                    runtime::sleep(Duration::from_millis(10)).await;
                    drop(pass);
                    drop(cluster.pass("acme", "events").await);
                    passed.set(true);
                    let _ = ended.send(());
                });
            }
            let paused = cluster
                .pause("acme", "events", Duration::from_secs(5))
                .await
                .expect("the write in flight ended");
            // Held back meanwhile; another table's writes are not.
            drop(cluster.pass("acme", "other").await);
            runtime::sleep(Duration::from_millis(20)).await;
            assert!(!passed.get());
            drop(paused);
            ending.await.unwrap();
            assert!(passed.get());
        });
    }

    #[test]
    fn copies_in_progress_are_reported_until_they_end() {
        let cluster = cluster();
        assert_eq!(cluster.copying(), "");
        cluster.copy_progress(("acme", "events"), "n3", Some((1 << 20, 5 << 20)));
        let copying: serde_json::Value = serde_json::from_str(&cluster.copying()).unwrap();
        assert_eq!(
            copying,
            serde_json::json!([
                {"tenant": "acme", "table": "events", "to": "n3", "bytes": 1 << 20, "total": 5 << 20}
            ])
        );
        cluster.copy_progress(("acme", "events"), "n3", None);
        assert_eq!(cluster.copying(), "");
    }

    #[test]
    fn a_batch_from_an_older_leader_epoch_is_refused() {
        let cluster = cluster();
        let replica = |node: &str| Replica {
            node_id: node.into(),
            address: format!("{node}:1"),
            up: true,
        };
        cluster.set_routing(Routing {
            version: 3,
            quotas: Default::default(),
            tables: vec![Placement {
                tenant: "acme".into(),
                table: "events".into(),
                replication_factor: 2,
                write_quorum: 2,
                leader: "n2".into(),
                epoch: 4,
                replicas: vec![replica("n2"), replica("n1")],
                in_sync: vec!["n2".into(), "n1".into()],
                partition: None,
            }],
        });
        let refused = cluster.check_leader_epoch("acme", "events", 3).unwrap_err();
        assert!(refused.starts_with("fenced: "), "{refused}");
        assert!(refused.contains("led by n2 at epoch 4"), "{refused}");
        for epoch in [0, 4, 5] {
            cluster.check_leader_epoch("acme", "events", epoch).unwrap();
        }
        // A table the routing does not place: nothing to check against.
        cluster.check_leader_epoch("acme", "other", 1).unwrap();
        // An older routing table is ignored.
        cluster.set_routing(Routing {
            version: 2,
            ..Default::default()
        });
        assert!(cluster.check_leader_epoch("acme", "events", 3).is_err());
    }
}
