//! `Tenant`: queries (admitted under `CONCURRENT_QUERIES`, streamed to the client's `BatchSink`,
//! cancellable by tag), table listing and description, and the way to `Admin` and `ImportStream`.

use super::*;
use crate::query_log::{self, QueryLog, QueryRecord};
use crate::result_cache::{CachedResult, ResultCache};

pub(super) struct TenantServer {
    pub(super) connection: Rc<Connection>,
    pub(super) tenant: String,
    pub(super) identity: Identity,
    /// Running queries of this capability by client tag, for `cancel`.
    pub(super) running: RefCell<RunningQueries>,
    /// Identifies a query among those sharing its tag, so it can unregister itself.
    pub(super) next_query: Cell<u64>,
    /// A client's, or a peer's (`Gateway.peerLogin`).
    pub(super) origin: Origin,
}

/// Abort handles of running queries by client tag, each with the id of its query.
pub(super) type RunningQueries = HashMap<u64, Vec<(u64, AbortHandle)>>;

/// One query's entry in its capability's registry; dropping it removes the entry.
struct Running<'a> {
    running: &'a RefCell<RunningQueries>,
    tag: u64,
    id: u64,
}

impl<'a> Running<'a> {
    fn register(
        running: &'a RefCell<RunningQueries>,
        next_query: &Cell<u64>,
        tag: u64,
        handle: AbortHandle,
    ) -> Running<'a> {
        let id = next_query.get();
        next_query.set(id.wrapping_add(1));
        running
            .borrow_mut()
            .entry(tag)
            .or_default()
            .push((id, handle));
        Running { running, tag, id }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.running.borrow_mut();
        if let Some(handles) = running.get_mut(&self.tag) {
            handles.retain(|(id, _)| *id != self.id);
            if handles.is_empty() {
                running.remove(&self.tag);
            }
        }
    }
}

impl TenantServer {
    fn check(&self) -> Result<(), Error> {
        check_expiry(&self.identity)
    }

    /// For a call only a table's leader makes, over a replica session (opened with a node
    /// token, `Gateway.peerLogin`): else `permission`, saying `what` it is for.
    fn replica_only(&self, what: &str) -> Result<(), Error> {
        self.check()?;
        self.connection.check_serving()?;
        if self.origin != Origin::Replica {
            return Err(error("permission", what));
        }
        Ok(())
    }

    /// Plans the query, answers it from the shared result cache if that holds it, else waits
    /// for a slot of its class and runs it into `sink` (storing the result in the cache).
    async fn run_query(
        &self,
        statement: Statement,
        sql: &str,
        sink: batch_sink::Client,
        arrival: Instant,
    ) -> Result<QueryStats, Error> {
        let context = &self.connection.context;
        let shared = &self.connection.shared;
        let (Statement::Query(query) | Statement::Explain(query)) = &statement;
        if query.table == query_log::TABLE {
            return self.run_query_stats(statement, sink, arrival).await;
        }
        if let Some((cluster, parts)) = self.partitioned(&query.table).await? {
            return match statement {
                Statement::Query(query) => {
                    self.query_partitioned(&cluster, &parts, query, sql, sink)
                        .await
                }
                Statement::Explain(query) => {
                    let text = self
                        .explain_partitioned(&cluster, &parts, query, sql)
                        .await?;
                    self.send_plan(&text, sink).await
                }
            };
        }
        if let Some((cluster, placement)) = self.placed_elsewhere(&query.table) {
            return self
                .forward_query(&cluster, &placement, sql, sink, arrival)
                .await;
        }
        // The parsed statement, normalised (spacing, case of keywords): part of the cache key.
        let normalised = shared
            .result_cache
            .as_ref()
            .map(|_| format!("{statement:?}"));
        let prepared = context
            .prepare(&self.tenant, statement)
            .await
            .map_err(engine_error)?;
        // Short queries are not cached: running one costs about a round trip to Redis.
        let cacheable =
            !prepared.is_explain() && prepared.class() == runtime::TaskClass::Throughput;
        let cached = match (&shared.result_cache, normalised) {
            (Some(cache), Some(query)) if cacheable => {
                let version = context
                    .data_version(&prepared)
                    .await
                    .map_err(engine_error)?;
                Some((cache, ResultCache::key(&self.tenant, &version, &query)))
            }
            _ => None,
        };
        // Loaded before admission: its concurrency quota applies to this query.
        let quota = shared
            .quotas
            .get(&self.tenant)
            .await
            .map_err(engine_error)?;
        let limits = &shared.limits;
        let mut out = PushSink::new(&sink, limits);
        if quota.result_bytes > 0 {
            out.quota = Some((self.tenant.as_str(), quota.result_bytes, &shared.quotas));
        }
        if let Some((cache, key)) = &cached {
            if let Some(hit) = cache.get(key, &shared.metrics).await {
                // A hit takes no query slot: it sends stored bytes.
                let started = Instant::now();
                for chunk in hit.ipc.chunks(limits.push_bytes.max(1)) {
                    out.push(chunk.to_vec()).await?;
                }
                let stats = QueryStats {
                    rows_returned: hit.rows,
                    scan: Default::default(),
                    elapsed_micros: started.elapsed().as_micros() as u64,
                    batches: hit.batches,
                    ipc_bytes: out.bytes,
                    queued_micros: started.duration_since(arrival).as_micros() as u64,
                };
                return finish_call(&sink, stats, limits).await;
            }
            out.record = Some(Vec::new());
            out.record_max = cache.max_result_bytes();
        }
        context.apply_quota(&self.tenant, &quota).await;
        let _slot = admit(shared, prepared.class(), &self.tenant).await?;
        let started = Instant::now();
        let queued_micros = started.duration_since(arrival).as_micros() as u64;
        shared
            .metrics
            .query_queue_seconds
            .observe(queued_micros as f64 / 1e6);
        let result = match context.run_into(prepared, &mut out).await {
            Ok(result) => result,
            // A failure of our own sink explains itself better than the engine's "cancelled".
            Err(e) => return Err(out.failure.take().unwrap_or_else(|| engine_error(e))),
        };
        out.finish(&result.schema).await?;
        let stats = QueryStats {
            rows_returned: out.rows,
            scan: result.stats.scan.clone(),
            elapsed_micros: started.elapsed().as_micros() as u64,
            batches: out.batches,
            ipc_bytes: out.bytes,
            queued_micros,
        };
        let stats = finish_call(&sink, stats, limits).await?;
        if let (Some((cache, key)), Some(ipc)) = (cached, out.record.take()) {
            let result = CachedResult {
                rows: out.rows,
                batches: out.batches,
                ipc,
            };
            cache.put(&key, &result, &shared.metrics).await;
        }
        Ok(stats)
    }
}

impl TenantServer {
    /// In a cluster, for a client's call naming a partitioned table: the cluster and the
    /// table's partitions.
    pub(super) async fn partitioned(
        &self,
        table: &str,
    ) -> Result<Option<super::partitioned::Partitioned>, Error> {
        super::partitioned::partitioned(&self.connection, self.origin, &self.tenant, table).await
    }

    /// In a cluster, for a client's query of a replicated table this node holds no in-sync
    /// replica of: the cluster and the table's placement.
    fn placed_elsewhere(
        &self,
        table: &str,
    ) -> Option<(Arc<crate::cluster::Cluster>, Arc<crate::cluster::Placement>)> {
        if self.origin != Origin::Client {
            return None;
        }
        let cluster = self.connection.shared.cluster.clone()?;
        let placement = cluster.placement(&self.tenant, table)?;
        // A replica out of sync may lack acknowledged rows: it answers no client.
        (!placement.is_in_sync(cluster.node_id())).then_some((cluster, placement))
    }

    /// Runs the query on a replica that holds the table (the leader first, then the other
    /// in-sync replicas that are up) and streams its result on; a replica that fails before
    /// any of the result was sent is replaced by the next, and a failure after that fails the
    /// query (never a partial answer presented as whole).
    async fn forward_query(
        &self,
        cluster: &crate::cluster::Cluster,
        placement: &crate::cluster::Placement,
        sql: &str,
        sink: batch_sink::Client,
        arrival: Instant,
    ) -> Result<QueryStats, Error> {
        let limits = &self.connection.shared.limits;
        let mut out = PushSink::new(&sink, limits);
        let started = Instant::now();
        let mut failures = Vec::new();
        for replica in placement.answering() {
            let attempt = async {
                let session = cluster
                    .session(&replica.address, &self.tenant, false)
                    .await?;
                session.query(sql).await
            }
            .await;
            let mut stream = match attempt {
                Ok(stream) => stream,
                Err(e) if e.error_code().is_none() => {
                    // Not the replica's answer: it could not be reached. Try the next.
                    cluster.forget_peer(&replica.address);
                    failures.push(format!("{}: {e}", replica.node_id));
                    continue;
                }
                // The replica's own answer (bad SQL, a limit): the client's answer too.
                Err(e) => return Err(forwarded_error(e)),
            };
            while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                out.push_batch(batch.map_err(forwarded_error)?).await?;
            }
            let schema = stream
                .schema()
                .ok_or_else(|| error("internal", "a replica's result had no schema"))?;
            out.finish(&schema).await?;
            let remote = stream.stats().cloned().unwrap_or_default();
            let stats = QueryStats {
                rows_returned: out.rows,
                scan: remote.scan,
                elapsed_micros: started.elapsed().as_micros() as u64,
                batches: out.batches,
                ipc_bytes: out.bytes,
                queued_micros: remote.queued_micros,
            };
            let _ = arrival;
            return finish_call(&sink, stats, limits).await;
        }
        Err(no_replica_answered(placement, &failures))
    }

    /// A table's description from a replica that holds it (the leader first, then the other
    /// in-sync replicas that are up; the next when one cannot be reached).
    pub(super) async fn describe_elsewhere(
        &self,
        cluster: &crate::cluster::Cluster,
        placement: &crate::cluster::Placement,
    ) -> Result<crate::client::TableInfo, Error> {
        let mut failures = Vec::new();
        for replica in placement.answering() {
            let attempt = async {
                let session = cluster
                    .session(&replica.address, &self.tenant, false)
                    .await?;
                session.describe(&placement.table).await
            };
            match attempt.await {
                Ok(info) => return Ok(info),
                Err(e) if e.error_code().is_none() => {
                    cluster.forget_peer(&replica.address);
                    failures.push(format!("{}: {e}", replica.node_id));
                }
                Err(e) => return Err(forwarded_error(e)),
            }
        }
        Err(no_replica_answered(placement, &failures))
    }

    /// Runs a statement over the tenant's rows of the node's `query_stats` (its recent
    /// queries, in memory): no query slot, nothing read from disk.
    /// The tenant's `query_stats` rows: this node's, and for a client's query in a cluster
    /// every other up node's too (each read over a peer session, which answers with its own).
    async fn query_stats_rows(&self) -> Result<RecordBatch, Error> {
        let shared = &self.connection.shared;
        let local = shared.query_log.table(Some(&self.tenant));
        let Some(cluster) = shared
            .cluster
            .as_ref()
            .filter(|_| self.origin == Origin::Client)
        else {
            return Ok(local);
        };
        gather_query_stats(cluster, local, |address| async move {
            let session = cluster.session(&address, &self.tenant, false).await?;
            let sql = format!("SELECT * FROM {}", query_log::TABLE);
            session.query_collect(&sql).await
        })
        .await
    }

    async fn run_query_stats(
        &self,
        statement: Statement,
        sink: batch_sink::Client,
        arrival: Instant,
    ) -> Result<QueryStats, Error> {
        let shared = &self.connection.shared;
        let quota = shared
            .quotas
            .get(&self.tenant)
            .await
            .map_err(engine_error)?;
        let limit = (quota.result_bytes > 0).then_some((self.tenant.as_str(), quota.result_bytes));
        let rows = self.query_stats_rows().await?;
        query_stats_into(&self.connection, statement, rows, sink, (limit, arrival)).await
    }
}

/// `local` query_stats rows and every other up node's in the cluster, read by `read` (given a
/// node's address); an up node that does not answer fails it, naming the node.
pub(super) async fn gather_query_stats<F, Fut>(
    cluster: &crate::cluster::Cluster,
    local: RecordBatch,
    read: F,
) -> Result<RecordBatch, Error>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<
        Output = Result<crate::client::QueryOutput, crate::client::ClientError>,
    >,
{
    let members = cluster.members().await.map_err(|e| {
        error(
            "unavailable",
            format!("the cluster's nodes are unknown (no coordinator answers): {e}"),
        )
    })?;
    let mut parts = vec![local];
    for member in members
        .iter()
        .filter(|m| m.up && m.node_id != cluster.node_id())
    {
        let answer = read(member.address.clone()).await.map_err(|e| {
            cluster.forget_peer(&member.address);
            error(
                "unavailable",
                format!(
                    "the queries of node {} could not be read ({e}); query_stats answers only \
                     with every up node's",
                    member.node_id
                ),
            )
        })?;
        parts.extend(answer.batches);
    }
    let schema = parts[0].schema();
    arrow_select::concat::concat_batches(&schema, &parts).map_err(|e| {
        error(
            "internal",
            format!("the nodes' query_stats differ in their columns: {e}"),
        )
    })
}

/// Runs `statement` over `rows` of the `query_stats` table into `sink`, within the tenant's
/// quota of result bytes if one is given.
pub(super) async fn query_stats_into(
    connection: &Connection,
    statement: Statement,
    rows: RecordBatch,
    sink: batch_sink::Client,
    (quota, arrival): (Option<(&str, u64)>, Instant),
) -> Result<QueryStats, Error> {
    let shared = &connection.shared;
    let limits = &shared.limits;
    let mut out = PushSink::new(&sink, limits);
    if let Some((tenant, bytes)) = quota {
        out.quota = Some((tenant, bytes, &shared.quotas));
    }
    let started = Instant::now();
    let outcome = connection
        .context
        .execute_rows(statement, &QueryLog::columns(), rows, &mut out)
        .await;
    let queued = started.duration_since(arrival).as_micros() as u64;
    out.conclude(outcome, started, queued).await
}

/// Tells the client the result is complete. `done` follows every push (calls on one capability
/// are delivered in order); its reply confirms the client took the whole result before the
/// query call returns.
pub(super) async fn finish_call(
    sink: &batch_sink::Client,
    stats: QueryStats,
    limits: &crate::node::Limits,
) -> Result<QueryStats, Error> {
    let mut done = sink.done_request();
    stats.write(done.get().init_stats());
    runtime::timeout(limits.stall_timeout, done.send().promise)
        .await
        .ok_or_else(|| stalled(limits))?
        .map_err(|e| error("cancelled", format!("the result sink failed: {e}")))?;
    Ok(stats)
}

fn stalled(limits: &crate::node::Limits) -> Error {
    error(
        "cancelled",
        format!(
            "the client accepted no result data for {} s",
            limits.stall_timeout.as_secs()
        ),
    )
}

/// Streams a result into the client's `BatchSink` as Arrow IPC, about `push_bytes` per push,
/// waiting for flow control between pushes (a slow client slows the query, not the server's
/// memory).
pub(super) struct PushSink<'a> {
    sink: &'a batch_sink::Client,
    limits: &'a crate::node::Limits,
    writer: Option<StreamWriter<Vec<u8>>>,
    pub(super) batches: u64,
    pub(super) bytes: u64,
    pub(super) rows: u64,
    pub(super) failure: Option<Error>,
    /// The tenant and its quota of result bytes, if it has one.
    pub(super) quota: Option<(&'a str, u64, &'a crate::quota::Quotas)>,
    /// A copy of the bytes sent, for the result cache, while they stay within `record_max`.
    record: Option<Vec<u8>>,
    record_max: usize,
}

impl<'a> PushSink<'a> {
    /// Ends a call that ran the engine into this sink: the engine's outcome (a failure of the
    /// sink itself explains itself better than the engine's "cancelled"), the stream finished,
    /// the counters sent with `done`.
    pub(super) async fn conclude(
        &mut self,
        outcome: tessera_storage_engine::Result<tessera_storage_engine::QueryResult>,
        started: Instant,
        queued_micros: u64,
    ) -> Result<QueryStats, Error> {
        let result = match outcome {
            Ok(result) => result,
            Err(e) => return Err(self.failure.take().unwrap_or_else(|| engine_error(e))),
        };
        self.finish(&result.schema).await?;
        let stats = QueryStats {
            rows_returned: self.rows,
            scan: result.stats.scan,
            elapsed_micros: started.elapsed().as_micros() as u64,
            batches: self.batches,
            ipc_bytes: self.bytes,
            queued_micros,
        };
        finish_call(self.sink, stats, self.limits).await
    }

    pub(super) fn new(sink: &'a batch_sink::Client, limits: &'a crate::node::Limits) -> Self {
        PushSink {
            sink,
            limits,
            writer: None,
            batches: 0,
            bytes: 0,
            rows: 0,
            failure: None,
            quota: None,
            record: None,
            record_max: 0,
        }
    }

    fn writer(&mut self, schema: &SchemaRef) -> Result<&mut StreamWriter<Vec<u8>>, Error> {
        if self.writer.is_none() {
            let writer = StreamWriter::try_new(Vec::with_capacity(self.limits.push_bytes), schema)
                .map_err(ipc_error)?;
            self.writer = Some(writer);
        }
        Ok(self.writer.as_mut().expect("set above"))
    }

    pub(super) async fn push_batch(&mut self, batch: RecordBatch) -> Result<(), Error> {
        let held = batch.get_array_memory_size() as u64;
        if held > self.limits.query_memory_bytes {
            return Err(error(
                "limit",
                format!(
                    "the result holds {held} bytes, over the per-query limit of {} bytes; add a filter or LIMIT",
                    self.limits.query_memory_bytes
                ),
            ));
        }
        let rows = batch.num_rows();
        let row_bytes = (held as usize / rows.max(1)).max(1);
        let step = (self.limits.push_bytes / row_bytes).clamp(1, rows.max(1));
        let mut offset = 0;
        while offset < rows {
            let length = step.min(rows - offset);
            let push_bytes = self.limits.push_bytes;
            let writer = self.writer(&batch.schema())?;
            writer
                .write(&batch.slice(offset, length))
                .map_err(ipc_error)?;
            // Small batches (a streamed chunk per page run) are coalesced up to `push_bytes`.
            let full = writer.get_ref().len() >= push_bytes;
            let chunk = if full {
                std::mem::take(writer.get_mut())
            } else {
                Vec::new()
            };
            offset += length;
            self.batches += 1;
            self.rows += length as u64;
            if full {
                self.push(chunk).await?;
            }
        }
        Ok(())
    }

    /// Ends the IPC stream (a result without rows still sends its schema).
    pub(super) async fn finish(&mut self, schema: &SchemaRef) -> Result<(), Error> {
        let writer = self.writer(schema)?;
        writer.finish().map_err(ipc_error)?;
        let tail = std::mem::take(writer.get_mut());
        self.push(tail).await
    }

    async fn push(&mut self, chunk: Vec<u8>) -> Result<(), Error> {
        if let Some((tenant, quota, quotas)) = self.quota {
            if self.bytes + chunk.len() as u64 > quota {
                quotas.refused(tenant, "result_bytes");
                return Err(error(
                    "limit",
                    format!(
                        "the result passes tenant {tenant}'s quota of {quota} result bytes; add a filter or LIMIT"
                    ),
                ));
            }
        }
        self.bytes += chunk.len() as u64;
        if let Some(record) = &mut self.record {
            if record.len() + chunk.len() <= self.record_max {
                record.extend_from_slice(&chunk);
            } else {
                self.record = None;
            }
        }
        let mut request = self.sink.push_request();
        request.get().set_ipc(&chunk);
        runtime::timeout(self.limits.stall_timeout, request.send())
            .await
            .ok_or_else(|| stalled(self.limits))?
            .map_err(|e| error("cancelled", format!("the result sink failed: {e}")))
    }
}

fn ipc_error(e: arrow_schema::ArrowError) -> Error {
    error("internal", format!("Arrow IPC: {e}"))
}

impl BatchSink for PushSink<'_> {
    async fn send(&mut self, batch: RecordBatch) -> tessera_storage_engine::Result<()> {
        self.push_batch(batch).await.map_err(|e| {
            let message = e.to_string();
            self.failure = Some(e);
            tessera_storage_engine::Error::Cancelled(message)
        })
    }
}

impl tenant::Server for TenantServer {
    async fn query(
        self: Rc<Self>,
        params: tenant::QueryParams,
        mut results: tenant::QueryResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let params = params.get()?;
        let sql = text(params.get_sql()?)?;
        let sink = params.get_sink()?;
        let tag = params.get_tag();
        let shared = self.connection.shared.clone();
        let arrival = self.connection.arrival();
        let started_at = std::time::SystemTime::now() - arrival.elapsed();
        let (handle, registration) = AbortHandle::new_pair();
        // Unregistered when this call ends, however it ends (success, error or dropped call).
        let _registered = Running::register(&self.running, &self.next_query, tag, handle);
        let outcome = match self
            .connection
            .check_serving()
            .and_then(|()| sql::parse(&sql).map_err(|e| engine_error(e.into())))
        {
            Ok(statement) => {
                Abortable::new(self.run_query(statement, &sql, sink, arrival), registration)
                    .await
                    .unwrap_or_else(|_| Err(error("cancelled", "the query was cancelled")))
            }
            Err(e) => Err(e),
        };
        let metrics = &shared.metrics;
        metrics.queries_total.inc();
        let tenant = vec![("tenant".to_owned(), self.tenant.clone())];
        metrics.tenant_queries.get_or_create(&tenant).inc();
        // Made at 0 with the tenant's first query, so its error rate has data from then on.
        let tenant_errors = metrics.tenant_query_errors.get_or_create(&tenant);
        let mut record = QueryRecord {
            query_id: shared.query_log.next_id(),
            tenant: self.tenant.clone(),
            sql,
            started_at_micros: started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64),
            execution_seconds: arrival.elapsed().as_secs_f64(),
            rows: 0,
            bytes_scanned: 0,
            files_scanned: 0,
            files_pruned: 0,
            partitions_scanned: 0,
            partitions_pruned: 0,
            status: "ok".into(),
            error: None,
        };
        let outcome = match outcome {
            Ok(stats) => {
                metrics
                    .query_duration_seconds
                    .observe(stats.elapsed_micros as f64 / 1e6);
                metrics.data_scanned_bytes.inc_by(stats.scan.bytes_scanned);
                metrics.data_read_bytes.inc_by(stats.scan.bytes_read);
                metrics.rows_returned.inc_by(stats.rows_returned);
                metrics.ipc_bytes_sent.inc_by(stats.ipc_bytes);
                let scan = &stats.scan;
                record.rows = stats.rows_returned;
                record.bytes_scanned = scan.bytes_scanned;
                record.files_scanned = scan.files_total - scan.files_pruned;
                record.files_pruned = scan.files_pruned;
                record.partitions_scanned = scan.partitions_total - scan.partitions_pruned;
                record.partitions_pruned = scan.partitions_pruned;
                stats.write(results.get().init_stats());
                Ok(())
            }
            Err(e) => {
                metrics.query_errors_total.inc();
                tenant_errors.inc();
                record.status = e
                    .extra
                    .split_once(": ")
                    .map_or("internal", |(code, _)| code)
                    .to_owned();
                record.error = Some(e.extra.clone());
                Err(e)
            }
        };
        drop(tenant_errors);
        // A query run for a peer (forwarded, or reading this node's query_stats) is recorded
        // once, on the node the client asked.
        if self.origin == Origin::Client {
            shared.query_log.record(record);
        }
        outcome
    }

    async fn query_partial(
        self: Rc<Self>,
        params: tenant::QueryPartialParams,
        mut results: tenant::QueryPartialResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        self.connection.check_serving()?;
        let params = params.get()?;
        let sql = text(params.get_sql()?)?;
        let partition = text(params.get_partition()?)?;
        let sink = params.get_sink()?;
        let (handle, registration) = AbortHandle::new_pair();
        // Cancelled with its tag, or when the asking node drops the call.
        let _registered =
            Running::register(&self.running, &self.next_query, params.get_tag(), handle);
        let stats = Abortable::new(self.serve_partial(&sql, &partition, sink), registration)
            .await
            .unwrap_or_else(|_| Err(error("cancelled", "the fragment was cancelled")))?;
        stats.write(results.get().init_stats());
        Ok(())
    }

    async fn explain(
        self: Rc<Self>,
        params: tenant::ExplainParams,
        mut results: tenant::ExplainResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let params = params.get()?;
        let sql = text(params.get_sql()?)?;
        let partition = text(params.get_partition()?)?;
        let statement = if partition.is_empty() {
            sql::parse(&sql).map_err(|e| engine_error(e.into()))?
        } else if self.origin == Origin::Client {
            return Err(error(
                "permission",
                "a partition's plan is for the nodes of a cluster (a peer session)",
            ));
        } else {
            super::partitioned::partition_statement(&sql, &partition)?
        };
        let (Statement::Query(query) | Statement::Explain(query)) = statement;
        if let Some((cluster, parts)) = self.partitioned(&query.table).await? {
            let plan = self
                .explain_partitioned(&cluster, &parts, query, &sql)
                .await?;
            results.get().set_plan(&plan);
            return Ok(());
        }
        let statement = Statement::Explain(query);
        let result = self
            .connection
            .context
            .execute(&self.tenant, statement)
            .await
            .map_err(engine_error)?;
        results
            .get()
            .set_plan(result.explain.as_deref().unwrap_or(""));
        Ok(())
    }

    async fn tables(
        self: Rc<Self>,
        _: tenant::TablesParams,
        mut results: tenant::TablesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let mut manifests = load_tables(self.connection.data_dir(), &self.tenant).await?;
        // In a cluster, the tenant's replicated tables this node does not serve, as a replica
        // that does describes them.
        let mut elsewhere = Vec::new();
        if let Some(cluster) = self.connection.shared.cluster.as_ref() {
            let mut partitioned = std::collections::BTreeSet::new();
            for placement in cluster.placements() {
                if placement.tenant != self.tenant {
                    continue;
                }
                if let Some(of) = &placement.partition {
                    // Listed once, as the table they are partitions of.
                    manifests.retain(|m| m.table != placement.table);
                    if self.origin == Origin::Client {
                        partitioned.insert(of.table.clone());
                    }
                    continue;
                }
                if let Some((cluster, placement)) = self.placed_elsewhere(&placement.table) {
                    manifests.retain(|m| m.table != placement.table);
                    elsewhere.push(self.describe_elsewhere(&cluster, &placement).await?);
                }
            }
            for table in partitioned {
                if let Some((cluster, parts)) = self.partitioned(&table).await? {
                    elsewhere.push(self.describe_partitioned(&cluster, &parts).await?);
                }
            }
        }
        let mut list = results
            .get()
            .init_tables((manifests.len() + elsewhere.len()) as u32);
        for (i, manifest) in manifests.iter().enumerate() {
            write_table_info(list.reborrow().get(i as u32), manifest);
        }
        for (i, info) in elsewhere.iter().enumerate() {
            write_peer_table_info(list.reborrow().get((manifests.len() + i) as u32), info);
        }
        Ok(())
    }

    async fn describe(
        self: Rc<Self>,
        params: tenant::DescribeParams,
        mut results: tenant::DescribeResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let table = text(params.get()?.get_table()?)?;
        if let Some((cluster, parts)) = self.partitioned(&table).await? {
            let info = self.describe_partitioned(&cluster, &parts).await?;
            write_peer_table_info(results.get().init_table(), &info);
            return Ok(());
        }
        if let Some((cluster, placement)) = self.placed_elsewhere(&table) {
            let info = self.describe_elsewhere(&cluster, &placement).await?;
            write_peer_table_info(results.get().init_table(), &info);
            return Ok(());
        }
        let manifest = load_table(self.connection.data_dir(), &self.tenant, &table).await?;
        write_table_info(results.get().init_table(), &manifest);
        Ok(())
    }

    async fn import_batches(
        self: Rc<Self>,
        params: tenant::ImportBatchesParams,
        mut results: tenant::ImportBatchesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        self.connection.check_serving()?;
        if !self.identity.role.can_write() {
            return Err(error(
                "permission",
                format!("role {} cannot import", self.identity.role.name()),
            ));
        }
        let table = text(params.get()?.get_table()?)?;
        let mut replicated = None;
        if let Some(cluster) = self.connection.shared.cluster.as_ref() {
            if let Some(partitioned) = self.partitioned(&table).await? {
                let server = super::replicated_import::PartitionedImportServer::new(
                    self.connection.clone(),
                    self.identity.clone(),
                    partitioned,
                );
                results.get().set_stream(capnp_rpc::new_client(server));
                return Ok(());
            }
            let placement = match self.origin {
                Origin::Replica => None,
                _ => cluster
                    .placement_now(&self.tenant, &table)
                    .await
                    .map_err(|e| error("unavailable", format!("the routing table: {e}")))?,
            };
            match placement {
                Some(placement) if placement.leader == cluster.node_id() => {
                    replicated = Some(cluster.clone());
                }
                Some(placement) if self.origin == Origin::Client => {
                    // The leader imports (and replicates) it; this node forwards the stream.
                    let forwarded = super::replicated_import::ForwardedImportServer::open(
                        self.connection.clone(),
                        self.identity.clone(),
                        cluster,
                        &placement,
                    )
                    .await?;
                    match forwarded {
                        Some(forwarded) => {
                            results.get().set_stream(capnp_rpc::new_client(forwarded));
                            return Ok(());
                        }
                        // This node leads it now (its routing table was behind).
                        None => replicated = Some(cluster.clone()),
                    }
                }
                Some(placement) => {
                    return Err(error(
                        "unavailable",
                        format!(
                            "node {} does not lead table {table} ({} does, as of routing \
                             version {})",
                            cluster.node_id(),
                            placement.leader,
                            cluster.routing_version()
                        ),
                    ))
                }
                None if self.origin == Origin::Replica => {
                    return Err(error(
                        "permission",
                        "a replica session does not import; a table's leader sends an \
                         import's files (stageImport)",
                    ))
                }
                None => {}
            }
        }
        let manifest = load_table(self.connection.data_dir(), &self.tenant, &table).await?;
        self.connection
            .shared
            .quotas
            .check_storage(&self.tenant)
            .await
            .map_err(engine_error)?;
        results
            .get()
            .set_stream(capnp_rpc::new_client(ImportStreamServer::new(
                self.connection.clone(),
                self.identity.clone(),
                manifest,
                replicated,
            )));
        Ok(())
    }

    async fn ingest(
        self: Rc<Self>,
        params: tenant::IngestParams,
        mut results: tenant::IngestResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        self.connection.check_serving()?;
        if !self.identity.role.can_write() {
            return Err(error(
                "permission",
                format!("role {} cannot ingest", self.identity.role.name()),
            ));
        }
        let params = params.get()?;
        let (table, producer) = (text(params.get_table()?)?, text(params.get_producer()?)?);
        let leader_epoch = params.get_leader_epoch();
        tessera_storage_engine::ingest::validate_producer(&producer).map_err(engine_error)?;
        // The table must exist now (here, or on the replicas of its placement when this node
        // holds none); each batch checks it again (it may be dropped meanwhile).
        let mut elsewhere = false;
        if let Some(cluster) = self.connection.shared.cluster.as_ref() {
            if self.origin != Origin::Replica {
                let placement = cluster
                    .placement_now(&self.tenant, &table)
                    .await
                    .map_err(|e| error("unavailable", format!("the routing table: {e}")))?;
                // A partitioned table's batches go to its partitions' leaders.
                elsewhere = placement.is_some_and(|p| !p.holds(cluster.node_id()))
                    || self.partitioned(&table).await?.is_some();
            }
        }
        if !elsewhere {
            load_table(self.connection.data_dir(), &self.tenant, &table).await?;
        }
        results
            .get()
            .set_stream(capnp_rpc::new_client(IngestStreamServer::new(
                self.connection.clone(),
                self.identity.clone(),
                self.tenant.clone(),
                table,
                producer,
                self.origin,
                leader_epoch,
            )));
        Ok(())
    }

    async fn install_replica(
        self: Rc<Self>,
        params: tenant::InstallReplicaParams,
        mut results: tenant::InstallReplicaResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.replica_only("only a table's leader installs a copy of it, over a replica session")?;
        let params = params.get()?;
        let (table, epoch) = (text(params.get_table()?)?, params.get_leader_epoch());
        let installer = ReplicaInstallerServer::start(
            self.connection.clone(),
            self.tenant.clone(),
            table,
            epoch,
        )
        .await?;
        results
            .get()
            .set_installer(capnp_rpc::new_client(installer));
        Ok(())
    }

    async fn stage_import(
        self: Rc<Self>,
        params: tenant::StageImportParams,
        mut results: tenant::StageImportResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.replica_only("only a table's leader sends an import's files, over a replica session")?;
        let params = params.get()?;
        let (table, epoch) = (text(params.get_table()?)?, params.get_leader_epoch());
        let stager =
            ImportReplicaServer::start(self.connection.clone(), self.tenant.clone(), table, epoch)
                .await?;
        results.get().set_stager(capnp_rpc::new_client(stager));
        Ok(())
    }

    async fn replica_summary(
        self: Rc<Self>,
        params: tenant::ReplicaSummaryParams,
        mut results: tenant::ReplicaSummaryResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.replica_only(
            "only a table's leader asks for a replica's summary, over a replica session",
        )?;
        let params = params.get()?;
        let (table, epoch) = (text(params.get_table()?)?, params.get_leader_epoch());
        if let Some(cluster) = self.connection.shared.cluster.as_ref() {
            cluster
                .check_leader_epoch(&self.tenant, &table, epoch)
                .map_err(|e| error("unavailable", e))?;
        }
        let summary = crate::anti_entropy::summarise(
            &self.connection.context,
            &self.connection.shared,
            &self.tenant,
            &table,
        )
        .await
        .map_err(engine_error)?;
        let json = serde_json::to_string(&summary).map_err(|e| error("internal", e))?;
        results.get().set_summary(&json);
        Ok(())
    }

    async fn cancel(
        self: Rc<Self>,
        params: tenant::CancelParams,
        mut results: tenant::CancelResults,
    ) -> Result<(), Error> {
        let tag = params.get()?.get_tag();
        let handles = self.running.borrow_mut().remove(&tag).unwrap_or_default();
        for (_, handle) in &handles {
            handle.abort();
        }
        results.get().set_cancelled(!handles.is_empty());
        Ok(())
    }

    async fn admin(
        self: Rc<Self>,
        _: tenant::AdminParams,
        mut results: tenant::AdminResults,
    ) -> Result<(), Error> {
        self.check()?;
        if self.identity.role != Role::Admin {
            return Err(error(
                "permission",
                format!("role {} has no admin capability", self.identity.role.name()),
            ));
        }
        results.get().set_admin(capnp_rpc::new_client(AdminServer {
            connection: self.connection.clone(),
            tenant: self.tenant.clone(),
            identity: self.identity.clone(),
            origin: self.origin,
        }));
        Ok(())
    }

    async fn whoami(
        self: Rc<Self>,
        _: tenant::WhoamiParams,
        mut results: tenant::WhoamiResults,
    ) -> Result<(), Error> {
        let mut out = results.get();
        out.set_tenant(&self.tenant);
        out.set_role(wire_role(self.identity.role));
        out.set_expires_at(self.identity.expires_at);
        Ok(())
    }
}

/// A peer's error, passed on under its own code (`codes`), or `unavailable` when the peer
/// could not be reached.
fn forwarded_error(e: crate::client::ClientError) -> Error {
    passed_on(e, |e| format!("a replica: {e}"))
}

/// No replica of the table could answer: why, per replica tried.
fn no_replica_answered(placement: &crate::cluster::Placement, failures: &[String]) -> Error {
    error(
        "unavailable",
        format!(
            "no replica of {} could answer ({})",
            placement.table,
            if failures.is_empty() {
                "none is up and in sync".to_owned()
            } else {
                failures.join("; ")
            }
        ),
    )
}
