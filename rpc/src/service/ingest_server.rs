//! `IngestStream`: one producer's batches into one table, each made durable (write-ahead log,
//! fsync) by the producer's owner core before it is acknowledged (`CoreContext::ingest`).

use super::*;
use crate::client::IngestAck;
use crate::cluster::{Cluster, Origin, Placement};
use arrow_buffer::Buffer;
use tessera_schema::tessera_capnp::ingest_stream;

/// The batch being received: its Arrow IPC bytes in the pieces they arrived in, each copied once
/// out of its RPC message (what the log keeps), and decoded as they arrive (framing checks and
/// message caps of `ipc_frames`) into batches that view those pieces. A failure poisons only
/// this batch: its `append` reports it, and the stream goes on with the next batch.
pub(super) struct IngestStreamServer {
    connection: Rc<Connection>,
    identity: Identity,
    tenant: String,
    table: String,
    producer: String,
    stream: RefCell<IpcStreamReader>,
    raw: RefCell<Vec<Buffer>>,
    batches: RefCell<Vec<RecordBatch>>,
    /// The schema the batch being received declared.
    schema: RefCell<Option<SchemaRef>>,
    failure: RefCell<Option<Error>>,
    /// A client's, or a peer's (`Gateway.peerLogin`).
    origin: Origin,
    /// On a replica session: the leader epoch the table's leader sends at (0: none given).
    leader_epoch: u64,
    /// Partitioned tables: the columns of the last batch sent to every partition (a batch
    /// with other columns goes to every partition, with no rows for some, so each has them).
    sent_columns: RefCell<Option<Vec<String>>>,
    /// What creates the table on a follower that lacks it (read from the manifest once).
    replica_spec: RefCell<Option<Arc<crate::client::TableSpec>>>,
}

/// The cluster and the table's placement in it.
type Placed = (Arc<Cluster>, Arc<Placement>);

impl IngestStreamServer {
    pub(super) fn new(
        connection: Rc<Connection>,
        identity: Identity,
        tenant: String,
        table: String,
        producer: String,
        origin: Origin,
        leader_epoch: u64,
    ) -> IngestStreamServer {
        let reader = IpcStreamReader::new(connection.shared.limits.ingest_batch_bytes);
        IngestStreamServer {
            connection,
            identity,
            tenant,
            table,
            producer,
            stream: RefCell::new(reader),
            raw: RefCell::default(),
            batches: RefCell::default(),
            schema: RefCell::default(),
            failure: RefCell::new(None),
            origin,
            leader_epoch,
            sent_columns: RefCell::new(None),
            replica_spec: RefCell::new(None),
        }
    }

    /// In a cluster, for a table that has a placement: the cluster and the placement. None
    /// for a leader's replicated batch (it applies here only). A forwarded batch must find
    /// this node its leader: forwarded writes are never forwarded again.
    fn placed(&self) -> Result<Option<Placed>, Error> {
        let Some(cluster) = self.connection.shared.cluster.clone() else {
            return Ok(None);
        };
        if self.origin == Origin::Replica {
            cluster
                .check_leader_epoch(&self.tenant, &self.table, self.leader_epoch)
                .map_err(|e| error("unavailable", e))?;
            return Ok(None);
        }
        let placement = cluster.placement(&self.tenant, &self.table);
        if self.origin == Origin::Forwarded
            && placement
                .as_ref()
                .is_none_or(|p| p.leader != cluster.node_id())
        {
            return Err(error(
                "unavailable",
                format!(
                    "node {} does not lead table {} (its routing table is at version {})",
                    cluster.node_id(),
                    self.table,
                    cluster.routing_version()
                ),
            ));
        }
        Ok(placement.map(|placement| (cluster, placement)))
    }

    /// For a client's batch into a partitioned table: the cluster and its partitions.
    async fn partitioned(&self) -> Result<Option<super::partitioned::Partitioned>, Error> {
        super::partitioned::partitioned(&self.connection, self.origin, &self.tenant, &self.table)
            .await
    }

    /// Splits the batch by the hash of its partition key and sends each part, under the
    /// batch's key, to its partition's leader, all at once. Acknowledged once every part is;
    /// a part that fails fails the batch, and sending it again applies each part once (each
    /// partition keeps the producer's window of its own).
    async fn append_partitioned(
        &self,
        cluster: &Arc<Cluster>,
        parts: &[Arc<Placement>],
        sequence: u64,
        batches: &[RecordBatch],
    ) -> Result<IngestAck, Error> {
        let of = parts[0].partition.clone().expect("a partition");
        let columns: Option<Vec<String>> = batches.first().map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().to_lowercase())
                .collect()
        });
        let to_all = columns.is_some() && *self.sent_columns.borrow() != columns;
        let split = super::partitioned::split_batch(&of, batches, to_all)?;
        let sends = split.into_iter().map(|part| {
            let placement = parts[part.partition as usize].clone();
            async move {
                let leader = placement.reachable_leader()?;
                let key = (
                    self.tenant.as_str(),
                    placement.table.as_str(),
                    self.producer.as_str(),
                );
                let ack = cluster
                    .send_batch(&leader.address, key, sequence, &[part.ipc], None)
                    .await
                    .map_err(|e| {
                        format!(
                            "partition {} (leader {}): {e}",
                            placement.table, leader.node_id
                        )
                    })?;
                Ok::<_, String>((part.rows, ack))
            }
        });
        // A duplicate when every part holding rows was (parts carrying only the columns do
        // not count); a batch of no rows is none.
        let mut ack = IngestAck {
            rows: 0,
            durable: true,
            duplicate: false,
            sequence,
        };
        let mut row_parts = 0;
        let mut duplicates = 0;
        let mut failures = Vec::new();
        for sent in futures::future::join_all(sends).await {
            match sent {
                Ok((true, part)) => {
                    ack.rows += part.rows;
                    row_parts += 1;
                    duplicates += part.duplicate as usize;
                }
                Ok((false, _)) => {}
                Err(e) => failures.push(e),
            }
        }
        ack.duplicate = row_parts > 0 && duplicates == row_parts;
        if !failures.is_empty() {
            return Err(error(
                "unavailable",
                format!(
                    "the batch is not acknowledged ({}); send it again with its key (the parts \
                     already durable are applied once)",
                    failures.join("; ")
                ),
            ));
        }
        if to_all {
            *self.sent_columns.borrow_mut() = columns;
        }
        if !ack.duplicate {
            let metrics = &self.connection.shared.metrics;
            metrics.ingested_rows.inc_by(ack.rows);
        }
        Ok(ack)
    }

    /// Sends the batch to the table's leader and returns its answer.
    async fn forward(
        &self,
        cluster: &Cluster,
        placement: &Placement,
        sequence: u64,
        raw: &[Buffer],
    ) -> Result<IngestAck, Error> {
        let leader = placement
            .reachable_leader()
            .map_err(|e| error("unavailable", e))?;
        let pieces: Vec<Vec<u8>> = raw.iter().map(|piece| piece.to_vec()).collect();
        let key = (
            self.tenant.as_str(),
            self.table.as_str(),
            self.producer.as_str(),
        );
        cluster
            .send_batch(&leader.address, key, sequence, &pieces, None)
            .await
            .map_err(|e| {
                error(
                    "unavailable",
                    format!(
                        "forwarding the batch to the table's leader {}: {e}; send it again with \
                         its key",
                        leader.node_id
                    ),
                )
            })
    }

    /// As the table's leader: makes the batch durable here and sends it to every follower at
    /// once. It is acknowledged once every in-sync follower has it durable, or has been taken
    /// out of the in-sync set in the catalog (under this leader's epoch) after failing, and at
    /// least `write_quorum` in-sync replicas (this one among them) have it: so any in-sync
    /// replica, the only kind leadership moves to, holds every acknowledged batch. Followers
    /// out of sync are sent nothing: the leader copies the table to them (`catch_up`).
    async fn replicate(
        &self,
        cluster: Arc<Cluster>,
        placement: &Placement,
        sequence: u64,
        batches: Vec<RecordBatch>,
        raw: Vec<Buffer>,
    ) -> Result<tessera_storage_engine::ingest::Ack, Error> {
        let spec = self.replica_spec().await?;
        let pieces: Arc<Vec<Vec<u8>>> = Arc::new(raw.iter().map(|piece| piece.to_vec()).collect());
        let mut followers = futures::stream::FuturesUnordered::new();
        for replica in placement
            .replicas
            .iter()
            .filter(|r| r.node_id != cluster.node_id() && placement.is_in_sync(&r.node_id))
        {
            let (sender, receiver) = oneshot::channel();
            let (cluster, pieces, spec) = (cluster.clone(), pieces.clone(), spec.clone());
            let epoch = placement.epoch;
            let (address, node) = (replica.address.clone(), replica.node_id.clone());
            let (tenant, table, producer) = (
                self.tenant.clone(),
                self.table.clone(),
                self.producer.clone(),
            );
            runtime::spawn_local(async move {
                let sent = if address.is_empty() {
                    Err("the catalog has no address for it".to_string())
                } else {
                    let key = (tenant.as_str(), table.as_str(), producer.as_str());
                    cluster
                        .send_batch(&address, key, sequence, &pieces, Some((&spec, epoch)))
                        .await
                };
                let _ = sender.send(sent);
            });
            followers.push(async move {
                let sent = receiver
                    .await
                    .unwrap_or_else(|_| Err("the replication task stopped".to_string()));
                (node, sent)
            });
        }
        let ack = self.ingest_here(sequence, batches, raw).await?;
        let needed = placement.write_quorum.max(1) as usize;
        let mut durable = 1;
        let mut failures = Vec::new();
        let mut behind = Vec::new();
        while let Some((node, sent)) = futures::StreamExt::next(&mut followers).await {
            match sent {
                Ok(_) => durable += 1,
                Err(e) => {
                    failures.push(format!("{node}: {e}"));
                    behind.push((node, e));
                }
            }
        }
        for (node, reason) in behind {
            // Before any acknowledgement without it (and whatever else fails: the batch is
            // then not acknowledged at all).
            cluster
                .set_in_sync(placement, &node, false)
                .await
                .map_err(|e| {
                    error(
                        "unavailable",
                        format!(
                            "replica {node} of {} missed the batch and could not be marked \
                             behind ({e}); the batch is not acknowledged: send it again with \
                             its key (it is applied once)",
                            self.table
                        ),
                    )
                })?;
            tracing::warn!(
                table = %self.table,
                node = %node,
                reason = %reason,
                "a replica missed a batch: taken out of the in-sync set"
            );
        }
        if durable < needed {
            return Err(error(
                "unavailable",
                format!(
                    "the batch is durable on {durable} of {} replicas of {} and {needed} are \
                     needed ({}); send it again with its key (it is applied once)",
                    placement.replicas.len(),
                    self.table,
                    failures.join("; ")
                ),
            ));
        }
        Ok(ack)
    }

    /// Makes the batch durable in this node's log (`CoreContext::ingest`).
    async fn ingest_here(
        &self,
        sequence: u64,
        batches: Vec<RecordBatch>,
        raw: Vec<Buffer>,
    ) -> Result<tessera_storage_engine::ingest::Ack, Error> {
        self.connection
            .context
            .ingest(
                &self.tenant,
                &self.table,
                &self.producer,
                sequence,
                batches,
                raw,
            )
            .await
            .map_err(engine_error)
    }

    async fn replica_spec(&self) -> Result<Arc<crate::client::TableSpec>, Error> {
        if let Some(spec) = self.replica_spec.borrow().clone() {
            return Ok(spec);
        }
        let manifest = load_table(self.connection.data_dir(), &self.tenant, &self.table).await?;
        let spec = Arc::new(crate::cluster::table_spec(&manifest));
        *self.replica_spec.borrow_mut() = Some(spec.clone());
        Ok(spec)
    }

    fn receive(&self, bytes: &[u8]) -> Result<(), Error> {
        let limit = self.connection.shared.limits.ingest_batch_bytes;
        let received: u64 = self.raw.borrow().iter().map(|p| p.len() as u64).sum();
        let total = received + bytes.len() as u64;
        if total > limit {
            return Err(error(
                "limit",
                format!(
                    "a batch may have at most {limit} bytes of Arrow IPC; send smaller batches"
                ),
            ));
        }
        let piece = Buffer::from(bytes);
        let decoded = self
            .stream
            .borrow_mut()
            .push_buffer(&piece)
            .map_err(|e| error("invalid", e))?;
        self.raw.borrow_mut().push(piece);
        for item in decoded {
            if let Decoded::Schema(schema) = &item {
                *self.schema.borrow_mut() = Some(schema.clone());
            }
            if let Decoded::Batch(batch) = item {
                if batch.num_rows() > 0 {
                    self.batches.borrow_mut().push(batch);
                }
            }
        }
        Ok(())
    }

    /// Takes the batch received since the last `append`, leaving the stream ready for the next.
    fn take(&self) -> Result<(Vec<RecordBatch>, Vec<Buffer>), Error> {
        let reader = std::mem::replace(
            &mut *self.stream.borrow_mut(),
            IpcStreamReader::new(self.connection.shared.limits.ingest_batch_bytes),
        );
        let raw = std::mem::take(&mut *self.raw.borrow_mut());
        let mut batches = std::mem::take(&mut *self.batches.borrow_mut());
        // A batch of no rows still declares its columns (a partitioned table's leader sends
        // one to partitions a batch with a new column has no rows for: every partition grows).
        if let Some(schema) = self.schema.borrow_mut().take() {
            if batches.is_empty() && !schema.fields().is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
        }
        if let Some(failure) = self.failure.borrow_mut().take() {
            return Err(failure);
        }
        reader
            .finish()
            .map_err(|e| error("invalid", format!("{e}; nothing of this batch was applied")))?;
        Ok((batches, raw))
    }
}

impl ingest_stream::Server for IngestStreamServer {
    fn write(
        self: Rc<Self>,
        params: ingest_stream::WriteParams,
    ) -> impl std::future::Future<Output = Result<(), Error>> + 'static {
        let result = (|| {
            let _guard = self.connection.enter()?;
            check_expiry(&self.identity)?;
            if self.failure.borrow().is_some() {
                return Ok(());
            }
            let bytes = params.get()?.get_ipc()?;
            if let Err(e) = self.receive(bytes) {
                *self.failure.borrow_mut() = Some(e);
            }
            Ok(())
        })();
        async move { result }
    }

    async fn append(
        self: Rc<Self>,
        params: ingest_stream::AppendParams,
        mut results: ingest_stream::AppendResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.connection.check_serving()?;
        let sequence = params.get()?.get_sequence();
        let (batches, raw) = self.take()?;
        check_expiry(&self.identity)?;
        let bytes: u64 = raw.iter().map(|piece| piece.len() as u64).sum();
        let quotas = &self.connection.shared.quotas;
        let quota = quotas
            .check_storage(&self.tenant)
            .await
            .map_err(engine_error)?;
        let wait = quotas.ingest_wait(&self.tenant, &quota, bytes);
        if !wait.is_zero() {
            // Held back to the tenant's rate, not refused: the producer slows down.
            quotas.refused(&self.tenant, "ingest_bytes_per_second");
            runtime::sleep(wait).await;
        }
        if let Some((cluster, parts)) = self.partitioned().await? {
            let ack = self
                .append_partitioned(&cluster, &parts, sequence, &batches)
                .await?;
            write_ack(results.get().init_ack(), &ack);
            return Ok(());
        }
        let ack = match self.placed()? {
            Some((cluster, placement)) if placement.leader != cluster.node_id() => {
                // Not the leader: the leader acknowledges (and counts) the batch.
                let ack = self.forward(&cluster, &placement, sequence, &raw).await?;
                write_ack(results.get().init_ack(), &IngestAck { sequence, ..ack });
                return Ok(());
            }
            Some((cluster, placement)) => {
                let _pass = cluster.pass(&self.tenant, &self.table).await;
                // The placement as it is once let through (a catch-up may have changed it).
                let placement = cluster
                    .placement(&self.tenant, &self.table)
                    .unwrap_or(placement);
                if placement.leader != cluster.node_id() {
                    return Err(error(
                        "unavailable",
                        format!(
                            "the leadership of {} moved to {}; send the batch again with its key",
                            self.table, placement.leader
                        ),
                    ));
                }
                self.replicate(cluster, &placement, sequence, batches, raw)
                    .await?
            }
            None => self.ingest_here(sequence, batches, raw).await?,
        };
        if !ack.duplicate {
            quotas.ingested(&self.tenant, bytes);
            let metrics = &self.connection.shared.metrics;
            metrics.ingested_rows.inc_by(ack.rows);
            metrics.ingested_bytes.inc_by(bytes);
        }
        let mut out = results.get().init_ack();
        out.set_rows(ack.rows);
        out.set_durable(true);
        out.set_duplicate(ack.duplicate);
        out.set_sequence(sequence);
        Ok(())
    }

    async fn flush(
        self: Rc<Self>,
        _: ingest_stream::FlushParams,
        mut results: ingest_stream::FlushResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        // A partitioned table: this node's replicas of its partitions.
        let tables = match self.partitioned().await? {
            Some((cluster, parts)) => parts
                .iter()
                .filter(|p| p.holds(cluster.node_id()))
                .map(|p| p.table.clone())
                .collect(),
            None => vec![self.table.clone()],
        };
        let mut files = 0;
        for table in tables {
            files += self
                .connection
                .context
                .flush_ingest(&self.tenant, &table)
                .await
                .map_err(engine_error)?;
        }
        results.get().set_files(files);
        Ok(())
    }
}

/// An acknowledgement another node (or every partition's leader) gave, as this one gives it.
fn write_ack(mut out: tessera_schema::tessera_capnp::ingest_ack::Builder<'_>, ack: &IngestAck) {
    out.set_rows(ack.rows);
    out.set_durable(ack.durable);
    out.set_duplicate(ack.duplicate);
    out.set_sequence(ack.sequence);
}
