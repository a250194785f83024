//! Imports into a replicated table. The leader writes the files (`ImportStreamServer`) and:
//!
//! 1. sends each, once written, to every in-sync follower (`Shipper`), which stages it
//!    (`Tenant.stageImport`, `ImportReplica.put`); at **prepare**, each follower checks every
//!    file against its entry (size, CRC-32) and makes it durable, still staged; with fewer
//!    than `write_quorum` replicas holding them all, nothing is imported;
//! 2. **publish**, as one write of the table (`Cluster::pass`: a catch-up or a comparison of
//!    replicas sees the import on every in-sync replica or on none): the followers that
//!    missed the import leave the in-sync set first (the leader copies them the table later),
//!    then the leader publishes, then each follower does; one that fails leaves the in-sync set.
//!
//! A client may send its import to any node: one that does not lead the table forwards the
//! stream to the leader as it comes (`ForwardedImportServer`); a partitioned table's node
//! splits it over its partitions' leaders (`PartitionedImportServer`).

use super::*;
use crate::client::{ImportStager, ImportWriter};
use crate::cluster::{Cluster, Placement};
use tessera_storage_engine::table::writer::StagedFile;

/// Bytes of a file per `ImportReplica.put`.
const PIECE_BYTES: u64 = 1 << 20;

/// A replicated import's files, staged on the followers that took them.
#[derive(Default)]
pub(super) struct Prepared {
    /// The leader epoch they were sent under; 0 when the table is not replicated.
    epoch: u64,
    stagers: Vec<(String, ImportStager)>,
    /// In-sync followers that did not take them, and why.
    missed: Vec<(String, String)>,
}

/// Where a leader's import stands, for its errors: `table` and what the replicas hold.
fn quorum_error(placement: &Placement, durable: usize, needed: usize, why: &[String]) -> Error {
    error(
        "unavailable",
        format!(
            "the import's files are durable on {durable} of {} replicas of {} and {needed} are \
             needed ({}); nothing was imported",
            placement.replicas.len(),
            placement.table,
            why.join("; ")
        ),
    )
}

/// The table's placement, as long as this node leads it at `epoch` (any epoch when 0).
fn led(cluster: &Cluster, tenant: &str, table: &str, epoch: u64) -> Result<Arc<Placement>, Error> {
    match cluster.placement(tenant, table) {
        Some(p) if p.leader == cluster.node_id() && (epoch == 0 || p.epoch == epoch) => Ok(p),
        Some(p) => Err(error(
            "unavailable",
            format!(
                "the leadership of {table} moved to {} during the import; nothing was imported",
                p.leader
            ),
        )),
        None => Err(error(
            "not_found",
            format!("table {table} is no longer placed in the cluster; nothing was imported"),
        )),
    }
}

/// What the leader's writing hands the shipping task.
enum Shipment {
    File(StagedFile),
    /// Every file is sent: prepare them. (The channel closing without it: the import was
    /// abandoned, and the followers discard what they got.)
    End,
}

/// Sends a replicated import's files to the table's in-sync followers while the leader writes
/// them (a task of its own: each file once written, to every follower at once), then has each
/// prepare them. The import fails, with nothing imported anywhere, unless `write_quorum`
/// replicas (the leader among them) then hold them all.
pub(super) struct Shipper {
    files: futures::channel::mpsc::UnboundedSender<Shipment>,
    /// Files handed over so far.
    shipped: usize,
    done: futures::channel::oneshot::Receiver<Result<Prepared, Error>>,
}

impl Shipper {
    /// Starts shipping an import of `tenant/table` (this node must lead it) whose files are
    /// staged in `staging_dir`.
    pub(super) fn start(
        cluster: &Arc<Cluster>,
        (tenant, table): (&str, &str),
        staging_dir: std::path::PathBuf,
    ) -> Result<Shipper, Error> {
        let placement = led(cluster, tenant, table, 0)?;
        let (files, receiver) = futures::channel::mpsc::unbounded();
        let (report, done) = futures::channel::oneshot::channel();
        let cluster = cluster.clone();
        runtime::spawn_local(async move {
            let shipped = ship(&cluster, &placement, &staging_dir, receiver).await;
            if let Some(shipped) = shipped {
                let _ = report.send(shipped);
            }
        });
        Ok(Shipper {
            files,
            shipped: 0,
            done,
        })
    }

    /// Files handed over so far: the writer's next new file is its `shipped()`th.
    pub(super) fn shipped(&self) -> usize {
        self.shipped
    }

    /// Hands over files newly staged (the writer's files from the `shipped()`th on).
    pub(super) fn send(&mut self, new_files: Vec<StagedFile>) {
        self.shipped += new_files.len();
        for file in new_files {
            let _ = self.files.unbounded_send(Shipment::File(file));
        }
    }

    /// Waits for every follower to have every file handed over prepared.
    pub(super) async fn finish(self) -> Result<Prepared, Error> {
        let _ = self.files.unbounded_send(Shipment::End);
        self.done
            .await
            .unwrap_or_else(|_| Err(error("internal", "the import's shipping task stopped")))
    }
}

/// The shipping task: `None` when the import was abandoned.
async fn ship(
    cluster: &Cluster,
    placement: &Placement,
    staging_dir: &std::path::Path,
    mut shipments: futures::channel::mpsc::UnboundedReceiver<Shipment>,
) -> Option<Result<Prepared, Error>> {
    let wait = cluster.replication_timeout;
    let followers: Vec<&crate::cluster::Replica> = placement
        .replicas
        .iter()
        .filter(|r| r.node_id != cluster.node_id() && placement.is_in_sync(&r.node_id))
        .collect();
    let opens = followers.iter().map(|replica| async move {
        let opened = async {
            if replica.address.is_empty() {
                return Err("the catalog has no address for it".to_owned());
            }
            let session = cluster
                .session(&replica.address, &placement.tenant, false)
                .await
                .map_err(|e| e.to_string())?;
            let stager = runtime::timeout(
                wait,
                session.stage_import(&placement.table, placement.epoch),
            )
            .await;
            answered("starting the import", wait, stager)
        };
        (*replica, opened.await)
    });
    let mut live = Vec::new();
    let mut prepared = Prepared {
        epoch: placement.epoch,
        ..Default::default()
    };
    let lost = |replica: &crate::cluster::Replica, why: String, missed: &mut Vec<_>| {
        cluster.forget_peer(&replica.address);
        missed.push((replica.node_id.clone(), why));
    };
    for (replica, opened) in futures::future::join_all(opens).await {
        match opened {
            Ok(stager) => live.push((replica, stager)),
            Err(why) => lost(replica, why, &mut prepared.missed),
        }
    }
    let mut all = Vec::new();
    loop {
        match futures::StreamExt::next(&mut shipments).await {
            None => return None,
            Some(Shipment::End) => break,
            Some(Shipment::File(file)) => {
                let sends = live
                    .iter()
                    .map(|(_, stager)| send_file(stager, staging_dir, &file, wait));
                let mut sent = futures::future::join_all(sends).await.into_iter();
                live.retain(|(replica, _)| match sent.next() {
                    Some(Err(why)) => {
                        lost(replica, why, &mut prepared.missed);
                        false
                    }
                    _ => true,
                });
                all.push(file);
            }
        }
    }
    let list = match serde_json::to_vec(&all) {
        Ok(list) => list,
        Err(e) => return Some(Err(error("internal", e))),
    };
    let prepares = live.iter().map(|(_, stager)| async {
        let answer = runtime::timeout(wait, stager.prepare(list.clone())).await;
        answered("preparing the import", wait, answer)
    });
    let outcomes = futures::future::join_all(prepares).await;
    for ((replica, stager), outcome) in live.into_iter().zip(outcomes) {
        match outcome {
            Ok(_) => prepared.stagers.push((replica.node_id.clone(), stager)),
            Err(why) => lost(replica, why, &mut prepared.missed),
        }
    }
    let needed = placement.write_quorum.max(1) as usize;
    let durable = 1 + prepared.stagers.len();
    if durable < needed {
        let why: Vec<String> = prepared
            .missed
            .iter()
            .map(|(node, why)| format!("{node}: {why}"))
            .collect();
        return Some(Err(quorum_error(placement, durable, needed, &why)));
    }
    Some(Ok(prepared))
}

/// Sends one staged file to a follower, a piece at a time.
async fn send_file(
    stager: &ImportStager,
    staging_dir: &std::path::Path,
    file: &StagedFile,
    wait: std::time::Duration,
) -> Result<(), String> {
    let path = Arc::new(staging_dir.join(&file.entry.path));
    let mut offset = 0;
    while offset < file.entry.bytes {
        let length = PIECE_BYTES.min(file.entry.bytes - offset);
        let piece = crate::catch_up::read_piece(path.clone(), offset, length).await?;
        let put = runtime::timeout(wait, stager.put(&file.entry.path, offset, piece)).await;
        answered("sending a file", wait, put)?;
        offset += length;
    }
    Ok(())
}

/// A peer's answer within `wait`, or why there is none.
fn answered<T>(
    what: &str,
    wait: std::time::Duration,
    answer: Option<Result<T, crate::client::ClientError>>,
) -> Result<T, String> {
    match answer {
        Some(answer) => answer.map_err(|e| format!("{what}: {e}")),
        None => Err(format!("{what}: no answer within {wait:?}")),
    }
}

/// Publishes a prepared import on this node (`publish_here`) and on every follower that took
/// it, as one write of the table; see the module's description. The summary is this node's.
pub(super) async fn publish_everywhere<F>(
    cluster: &Arc<Cluster>,
    (tenant, table): (&str, &str),
    prepared: Prepared,
    publish_here: F,
) -> Result<tessera_storage_engine::table::writer::ImportSummary, Error>
where
    F: std::future::Future<
        Output = Result<tessera_storage_engine::table::writer::ImportSummary, Error>,
    >,
{
    let _pass = cluster.pass(tenant, table).await;
    let placement = led(cluster, tenant, table, prepared.epoch)?;
    // Followers in sync now without the import's files (they missed them, or a catch-up put
    // them back meanwhile) leave the in-sync set before it is published.
    let staged: Vec<&str> = prepared.stagers.iter().map(|(n, _)| n.as_str()).collect();
    let mut placement = placement;
    for replica in &placement.clone().replicas {
        let node = replica.node_id.as_str();
        if node == cluster.node_id() || !placement.is_in_sync(node) || staged.contains(&node) {
            continue;
        }
        let why = prepared
            .missed
            .iter()
            .find(|(n, _)| n == node)
            .map_or("it was put back in sync during the import", |(_, why)| {
                why.as_str()
            });
        placement = cluster
            .set_in_sync(&placement, node, false)
            .await
            .map_err(|e| {
                error(
                    "unavailable",
                    format!(
                        "replica {node} of {table} missed the import and could not be marked \
                     behind ({e}); nothing was imported"
                    ),
                )
            })?;
        tracing::warn!(table = %table, node = %node, reason = %why, "a replica missed an import: taken out of the in-sync set");
    }
    let summary = publish_here.await?;
    let wait = cluster.replication_timeout;
    let publishes = prepared.stagers.iter().map(|(node, stager)| async move {
        let published = match runtime::timeout(wait, stager.publish()).await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("no answer within {wait:?}")),
        };
        (node.as_str(), published)
    });
    let mut durable = 1;
    let mut failures = Vec::new();
    // A replica without the import still in sync could lead without it: then the import is
    // not acknowledged.
    let mut in_sync_without = false;
    for (node, published) in futures::future::join_all(publishes).await {
        match published {
            Ok(()) => durable += 1,
            Err(why) => {
                tracing::warn!(table = %table, node = %node, reason = %why, "a replica failed to publish an import: taken out of the in-sync set");
                failures.push(format!("{node}: {why}"));
                if let Err(e) = cluster.set_in_sync(&placement, node, false).await {
                    failures.push(format!("{node} could not be marked behind: {e}"));
                    in_sync_without = true;
                }
            }
        }
    }
    let needed = placement.write_quorum.max(1) as usize;
    if durable < needed || in_sync_without {
        return Err(error(
            "unavailable",
            format!(
                "the import is published on this node, the leader of {table}, and on {durable} \
                 of {} replicas ({needed} needed), but it is not acknowledged ({}); its rows are \
                 visible: check the table before importing them again",
                placement.replicas.len(),
                failures.join("; ")
            ),
        ));
    }
    Ok(summary)
}

/// A client's import into a replicated table this node does not lead: forwarded as it comes
/// to the leader's `ImportStream` (over a forwarded peer session), which checks, writes and
/// replicates it.
pub(super) struct ForwardedImportServer {
    connection: Rc<Connection>,
    identity: Identity,
    /// Writes not yet forwarded, in arrival order.
    queue: RefCell<std::collections::VecDeque<Vec<u8>>>,
    /// The leader's import; `None` once committed or failed.
    leader: futures::lock::Mutex<Option<ImportWriter>>,
    leader_id: String,
    failure: RefCell<Option<Error>>,
}

impl ForwardedImportServer {
    /// Opens the import on the table's leader; when it cannot be reached, once more after
    /// fetching the routing table again (leadership or its address may have changed). `None`
    /// when this node turns out to lead the table now: the import is this node's to take.
    pub(super) async fn open(
        connection: Rc<Connection>,
        identity: Identity,
        cluster: &Cluster,
        placement: &Placement,
    ) -> Result<Option<ForwardedImportServer>, Error> {
        let opened = match open_on_leader(cluster, placement).await {
            Err(e) if cluster.refresh_routing().await.is_ok() => {
                match cluster.placement(&placement.tenant, &placement.table) {
                    Some(now) if now.leader == cluster.node_id() => return Ok(None),
                    Some(now) => open_on_leader(cluster, &now).await,
                    None => Err(e),
                }
            }
            other => other,
        };
        let (leader_id, writer) = opened?;
        Ok(Some(ForwardedImportServer {
            connection,
            identity,
            queue: RefCell::default(),
            leader: futures::lock::Mutex::new(Some(writer)),
            leader_id,
            failure: RefCell::new(None),
        }))
    }

    fn fail(&self, failure: Error) -> Error {
        self.failure.borrow_mut().get_or_insert(failure).clone()
    }

    fn check_open(&self) -> Result<(), Error> {
        check_expiry(&self.identity)?;
        match self.failure.borrow().as_ref() {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// Forwards the queued writes in order; one forwarder at a time.
    async fn forward(&self, leader: &mut Option<ImportWriter>) -> Result<(), Error> {
        let writer = leader
            .as_mut()
            .ok_or_else(|| error("invalid", "this import stream is already committed"))?;
        loop {
            let Some(bytes) = self.queue.borrow_mut().pop_front() else {
                return Ok(());
            };
            writer
                .write_ipc(bytes)
                .await
                .map_err(|e| self.fail(forwarded_error(&self.leader_id, e)))?;
        }
    }
}

/// An import of the table on its leader (as the placement gives it), over a forwarded session.
async fn open_on_leader(
    cluster: &Cluster,
    placement: &Placement,
) -> Result<(String, ImportWriter), Error> {
    let leader = placement
        .reachable_leader()
        .map_err(|e| error("unavailable", format!("{e}; nothing was imported")))?;
    let opened = async {
        let session = cluster
            .session(&leader.address, &placement.tenant, true)
            .await?;
        session.import_writer(&placement.table).await
    };
    match opened.await {
        Ok(writer) => Ok((leader.node_id.clone(), writer)),
        Err(e) => {
            cluster.forget_peer(&leader.address);
            Err(forwarded_error(&leader.node_id, e))
        }
    }
}

/// The leader's answer as it gave it; failing to reach it, an error naming it.
fn forwarded_error(leader: &str, e: crate::client::ClientError) -> Error {
    passed_on(e, |e| {
        format!("forwarding the import to the table's leader {leader}: {e}; nothing was imported")
    })
}

impl import_stream::Server for ForwardedImportServer {
    fn write(
        self: Rc<Self>,
        params: import_stream::WriteParams,
    ) -> impl std::future::Future<Output = Result<(), Error>> + 'static {
        // Queued when dispatched, so writes keep their order.
        let queued = self.connection.enter().and_then(|guard| {
            self.check_open()?;
            let bytes = params.get()?.get_ipc()?.to_vec();
            self.queue.borrow_mut().push_back(bytes);
            Ok(guard)
        });
        async move {
            let _guard = queued?;
            let mut leader = self.leader.lock().await;
            self.forward(&mut leader).await
        }
    }

    async fn prepare(
        self: Rc<Self>,
        _: import_stream::PrepareParams,
        _: import_stream::PrepareResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check_open()?;
        let mut leader = self.leader.lock().await;
        self.forward(&mut leader).await?;
        let writer = leader.as_mut().expect("forward checked it");
        writer
            .prepare()
            .await
            .map_err(|e| self.fail(forwarded_error(&self.leader_id, e)))
    }

    async fn commit(
        self: Rc<Self>,
        _: import_stream::CommitParams,
        mut results: import_stream::CommitResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check_open()?;
        let mut leader = self.leader.lock().await;
        self.forward(&mut leader).await?;
        let writer = leader.take().expect("forward checked it");
        let summary = writer
            .commit()
            .await
            .map_err(|e| self.fail(forwarded_error(&self.leader_id, e)))?;
        let mut out = results.get();
        out.set_rows(summary.rows);
        out.set_files(summary.files);
        out.set_bytes(summary.bytes);
        out.set_version(summary.version);
        Ok(())
    }
}

/// A client's import into a partitioned table: each batch split by the hash of its partition
/// key and each part sent, as it comes, to an import of its own on the partition's leader
/// (over forwarded peer sessions; each leader checks, writes and replicates its part). At
/// `commit` every partition's import is prepared (staged on a quorum of its replicas) before
/// any is published, so a failure before then imports nothing anywhere.
pub(super) struct PartitionedImportServer {
    connection: Rc<Connection>,
    identity: Identity,
    cluster: Arc<Cluster>,
    parts: super::partitioned::Partitions,
    stream: RefCell<IpcStreamReader>,
    /// The partition key's column in the stream (known from its schema).
    key: Cell<Option<usize>>,
    /// Decoded batches not yet sent, in arrival order.
    queue: RefCell<std::collections::VecDeque<RecordBatch>>,
    /// Per partition, its leader's import once it has rows; taken at `commit`.
    imports: futures::lock::Mutex<Vec<Option<(String, ImportWriter)>>>,
    failure: RefCell<Option<Error>>,
    prepared: Cell<bool>,
    committed: Cell<bool>,
}

impl PartitionedImportServer {
    pub(super) fn new(
        connection: Rc<Connection>,
        identity: Identity,
        (cluster, parts): super::partitioned::Partitioned,
    ) -> PartitionedImportServer {
        let message_bytes_max = connection.shared.limits.import_buffer_bytes;
        let count = parts.len();
        PartitionedImportServer {
            connection,
            identity,
            cluster,
            parts,
            stream: RefCell::new(IpcStreamReader::new(message_bytes_max)),
            key: Cell::new(None),
            queue: RefCell::default(),
            imports: futures::lock::Mutex::new((0..count).map(|_| None).collect()),
            failure: RefCell::new(None),
            prepared: Cell::new(false),
            committed: Cell::new(false),
        }
    }

    fn fail(&self, failure: Error) -> Error {
        self.failure.borrow_mut().get_or_insert(failure).clone()
    }

    fn check_open(&self) -> Result<(), Error> {
        check_expiry(&self.identity)?;
        if let Some(failure) = self.failure.borrow().as_ref() {
            return Err(failure.clone());
        }
        if self.committed.get() || self.prepared.get() {
            return Err(error(
                "invalid",
                "this import stream is prepared or committed",
            ));
        }
        Ok(())
    }

    /// The partitioned table's spec (key column, count) and its name.
    fn of(&self) -> &crate::cluster::PartitionOf {
        self.parts[0].partition.as_ref().expect("a partition")
    }

    /// Checks and decodes a write's bytes into the ordered queue.
    fn decode(&self, bytes: &[u8]) -> Result<(), Error> {
        let decoded = self
            .stream
            .borrow_mut()
            .push(bytes)
            .map_err(|e| error("invalid", e))?;
        for item in decoded {
            match item {
                Decoded::Schema(schema) => {
                    let key = &self.of().key;
                    let index = schema
                        .fields()
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(key))
                        .ok_or_else(|| {
                            error(
                                "invalid",
                                format!(
                                    "the import has no column {key}, the partition key of table \
                                     {}; nothing was imported",
                                    self.of().table
                                ),
                            )
                        })?;
                    self.key.set(Some(index));
                }
                Decoded::Batch(batch) if batch.num_rows() > 0 => {
                    self.queue.borrow_mut().push_back(batch)
                }
                Decoded::Batch(_) => {}
            }
        }
        Ok(())
    }

    /// Sends the queued batches' parts to their partitions' imports, in order; one sender at
    /// a time (the caller holds `imports`).
    async fn send(&self, imports: &mut [Option<(String, ImportWriter)>]) -> Result<(), Error> {
        loop {
            let Some(batch) = self.queue.borrow_mut().pop_front() else {
                return Ok(());
            };
            let index = self
                .key
                .get()
                .ok_or_else(|| error("internal", "no schema"))?;
            let split = super::partitioned::split_rows(self.of(), &batch, index)?;
            for (p, rows) in split.iter().enumerate() {
                if rows.is_some() && imports[p].is_none() {
                    imports[p] = Some(open_on_leader(&self.cluster, &self.parts[p]).await?);
                }
            }
            let sends = imports
                .iter_mut()
                .zip(split)
                .filter_map(|(import, rows)| Some((import.as_mut()?, rows?)))
                .map(|((leader, import), rows)| async move {
                    import
                        .write(&rows)
                        .await
                        .map_err(|e| forwarded_error(leader, e))
                });
            for sent in futures::future::join_all(sends).await {
                sent?;
            }
        }
    }

    /// Sends what is queued, then prepares every partition's import at once; once.
    async fn prepare_all(
        &self,
        imports: &mut [Option<(String, ImportWriter)>],
    ) -> Result<(), Error> {
        if self.prepared.get() {
            return Ok(());
        }
        let whole = self.stream.borrow().finish();
        whole.map_err(|e| error("invalid", format!("{e}; nothing was imported")))?;
        self.send(imports).await?;
        let prepares = imports
            .iter_mut()
            .flatten()
            .map(|(leader, import)| async move {
                import
                    .prepare()
                    .await
                    .map_err(|e| forwarded_error(leader, e))
            });
        for prepared in futures::future::join_all(prepares).await {
            prepared?;
        }
        self.prepared.set(true);
        Ok(())
    }
}

impl import_stream::Server for PartitionedImportServer {
    fn write(
        self: Rc<Self>,
        params: import_stream::WriteParams,
    ) -> impl std::future::Future<Output = Result<(), Error>> + 'static {
        // Decoded when dispatched, so batches keep their order.
        let decoded = self.connection.enter().and_then(|guard| {
            self.check_open()?;
            let bytes = params.get()?.get_ipc()?;
            self.decode(bytes).map_err(|e| self.fail(e))?;
            Ok(guard)
        });
        async move {
            let _guard = decoded?;
            let mut imports = self.imports.lock().await;
            self.send(&mut imports).await.map_err(|e| self.fail(e))
        }
    }

    async fn prepare(
        self: Rc<Self>,
        _: import_stream::PrepareParams,
        _: import_stream::PrepareResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check_open()?;
        let mut imports = self.imports.lock().await;
        self.prepare_all(&mut imports)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn commit(
        self: Rc<Self>,
        _: import_stream::CommitParams,
        mut results: import_stream::CommitResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        if let Some(failure) = self.failure.borrow().as_ref() {
            return Err(failure.clone());
        }
        if self.committed.replace(true) {
            return Err(error("invalid", "this import stream is already committed"));
        }
        let mut imports = self.imports.lock().await;
        self.prepare_all(&mut imports)
            .await
            .map_err(|e| self.fail(e))?;
        let commits = imports
            .iter_mut()
            .enumerate()
            .filter_map(|(p, import)| Some((p, import.take()?)))
            .map(|(p, (leader, import))| async move {
                (
                    p,
                    import
                        .commit()
                        .await
                        .map_err(|e| forwarded_error(&leader, e)),
                )
            });
        let (mut done, mut failed) = (Vec::new(), Vec::new());
        let mut out = results.get();
        let (mut rows, mut files, mut bytes, mut version) = (0, 0, 0, 0);
        for (p, committed) in futures::future::join_all(commits).await {
            let name = self.parts[p].table.clone();
            match committed {
                Ok(summary) => {
                    rows += summary.rows;
                    files += summary.files;
                    bytes += summary.bytes;
                    version = version.max(summary.version);
                    done.push(name);
                }
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        if !failed.is_empty() {
            let published = if done.is_empty() {
                "nothing was imported".to_owned()
            } else {
                format!(
                    "the import is published on partitions {} only: check the table before \
                     importing its rows again",
                    done.join(", ")
                )
            };
            return Err(self.fail(error(
                "unavailable",
                format!("{} ({published})", failed.join("; ")),
            )));
        }
        out.set_rows(rows);
        out.set_files(files);
        out.set_bytes(bytes);
        out.set_version(version);
        Ok(())
    }
}
