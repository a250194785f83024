//! Partitioned tables in a cluster. A partitioned table is `count` tables of its own, one per
//! hash partition (`<table>.p<i>`), each placed, replicated and led apart. The node a client
//! asks plans a query, prunes partitions by the partition key, sends the query as a fragment to
//! one replica of each partition left (this node's own first, then the replica running fewest
//! fragments; another one too when the first is slow: hedging) and merges their partial
//! results (`engine::Merger`). A client's batch is split by the hash of its partition key, and
//! each part goes to its partition's leader under the batch's key.

use super::tenant_server::{finish_call, PushSink};
use super::*;
use crate::cluster::{Cluster, PartitionOf, Placement, KEY_INT, KEY_STRING};
use crate::stats::QueryStats;
use arrow_schema::DataType;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tessera_storage_engine::engine::{Merger, PreparedQuery};
use tessera_storage_engine::query::exec::ScanStats;
use tessera_storage_engine::query::sql::Query;

/// The partitions of a partitioned table, by index.
pub(super) type Partitions = Vec<Arc<Placement>>;

/// The cluster and a table's partitions.
pub(super) type Partitioned = (Arc<Cluster>, Partitions);

/// In a cluster, for a client's call naming a partitioned table: the cluster and the
/// table's partitions (`unavailable` while the routing table holds only some of them). A
/// table just created through another node reaches this node's routing table with the next
/// heartbeat: one the routing table lacks, or holds only some partitions of, and that this
/// node does not hold either, is looked up again in the catalog first.
pub(super) async fn partitioned(
    connection: &Connection,
    origin: Origin,
    tenant: &str,
    table: &str,
) -> Result<Option<Partitioned>, Error> {
    if origin != Origin::Client {
        return Ok(None);
    }
    let Some(cluster) = connection.shared.cluster.clone() else {
        return Ok(None);
    };
    let unknown = || {
        cluster.placement(tenant, table).is_none()
            && manifest::validate_name("table", table).is_ok()
            && !manifest::table_dir(connection.data_dir(), tenant, table).is_dir()
    };
    let parts = match cluster.partitions(tenant, table) {
        Ok(None) if unknown() => match cluster.look_up_routing().await {
            // Without a catalog to ask (coordinators down), the table is as this node knows it.
            Err(_) => None,
            Ok(()) => cluster
                .partitions(tenant, table)
                .map_err(|e| error("unavailable", e))?,
        },
        Ok(parts) => parts,
        Err(incomplete) => {
            cluster
                .refresh_routing()
                .await
                .map_err(|e| error("unavailable", format!("{incomplete}; the catalog: {e}")))?;
            cluster
                .partitions(tenant, table)
                .map_err(|e| error("unavailable", e))?
        }
    };
    Ok(parts.map(|parts| (cluster, parts)))
}

/// One fragment's answer: its partial batches and counters.
type Fragment = (Vec<RecordBatch>, ScanStats);

/// Why a replica did not answer a fragment.
enum Failure {
    /// Unreachable, or not serving the partition now: another replica may answer.
    Elsewhere(String),
    /// Its answer (bad SQL, a limit): the query's answer too.
    Answer(Error),
}

impl TenantServer {
    /// A client's query of a partitioned table: fragments on the partitions the WHERE clause
    /// may need, merged here, then streamed as any result.
    pub(super) async fn query_partitioned(
        &self,
        cluster: &Arc<Cluster>,
        parts: &Partitions,
        query: Query,
        sql: &str,
        sink: batch_sink::Client,
    ) -> Result<QueryStats, Error> {
        let started = Instant::now();
        let shared = &self.connection.shared;
        let merger = self.merger(cluster, parts, &query).await?;
        let of = parts[0].partition.clone().expect("a partition");
        let chosen: Vec<&Arc<Placement>> = match merger.partitions(&of.key, of.count) {
            Some(indexes) => parts
                .iter()
                .filter(|p| indexes.contains(&p.partition.as_ref().map_or(0, |o| o.index)))
                .collect(),
            None => parts.iter().collect(),
        };
        let pruned = (parts.len() - chosen.len()) as u64;
        let quota = shared
            .quotas
            .get(&self.tenant)
            .await
            .map_err(engine_error)?;
        let mut out = PushSink::new(&sink, &shared.limits);
        if quota.result_bytes > 0 {
            out.quota = Some((self.tenant.as_str(), quota.result_bytes, &shared.quotas));
        }
        let mut scan = ScanStats::default();
        if merger.streams() {
            // Rows without ORDER BY: each partition's rows go on as they come, one partition
            // after the other, until the LIMIT is met.
            let mut remaining = merger.limit().unwrap_or(u64::MAX);
            for part in chosen {
                if remaining == 0 {
                    break;
                }
                let (batches, stats) = self.fragment(cluster, part, sql, &merger).await?;
                scan.add(&stats);
                for batch in batches {
                    let mut batch = merger.project(batch).map_err(engine_error)?;
                    if batch.num_rows() as u64 > remaining {
                        batch = batch.slice(0, remaining as usize);
                    }
                    remaining -= batch.num_rows() as u64;
                    out.push_batch(batch).await?;
                    if remaining == 0 {
                        break;
                    }
                }
            }
        } else {
            let fragments = chosen
                .iter()
                .map(|part| self.fragment(cluster, part, sql, &merger));
            let mut partials = Vec::new();
            for answer in futures::future::join_all(fragments).await {
                let (batches, stats) = answer?;
                scan.add(&stats);
                partials.extend(batches);
            }
            let merged = merger.merge(partials).map_err(engine_error)?;
            out.push_batch(merged).await?;
        }
        out.finish(&merger.schema()).await?;
        // A partition pruned here counts as one pruned partition.
        scan.partitions_total += pruned;
        scan.partitions_pruned += pruned;
        let stats = QueryStats {
            rows_returned: out.rows,
            scan,
            elapsed_micros: started.elapsed().as_micros() as u64,
            batches: out.batches,
            ipc_bytes: out.bytes,
            queued_micros: 0,
        };
        finish_call(&sink, stats, &shared.limits).await
    }

    /// EXPLAIN of a partitioned table: the partitions the key prunes, then each partition's
    /// plan on the replica a query would run it on (this node's first), fetched at once.
    pub(super) async fn explain_partitioned(
        &self,
        cluster: &Arc<Cluster>,
        parts: &Partitions,
        query: Query,
        sql: &str,
    ) -> Result<String, Error> {
        let merger = self.merger(cluster, parts, &query).await?;
        let of = parts[0].partition.clone().expect("a partition");
        let chosen = merger.partitions(&of.key, of.count);
        let kept: Vec<&Arc<Placement>> = parts
            .iter()
            .filter(|p| {
                let index = p.partition.as_ref().map_or(0, |o| o.index);
                chosen.as_ref().is_none_or(|c| c.contains(&index))
            })
            .collect();
        let mut text = format!(
            "partitioned table {}: {} partitions by the hash of {}, {} pruned by it\n",
            of.table,
            of.count,
            of.key,
            parts.len() - kept.len()
        );
        let plans = futures::future::join_all(kept.iter().map(|part| async move {
            let Some((node, address)) = cluster.fragment_order(part).into_iter().next() else {
                return Err(no_replica(part, &[]));
            };
            let plan = if node == cluster.node_id() {
                let (Statement::Query(query) | Statement::Explain(query)) =
                    partition_statement(sql, &part.table)?;
                let result = self
                    .connection
                    .context
                    .execute(&self.tenant, Statement::Explain(query))
                    .await
                    .map_err(engine_error)?;
                result.explain.unwrap_or_default()
            } else {
                let session = cluster
                    .session(&address, &self.tenant, false)
                    .await
                    .map_err(|e| error("unavailable", format!("{node}: {e}")))?;
                session
                    .explain_partition(sql, &part.table)
                    .await
                    .map_err(|e| error("unavailable", format!("{node}: {e}")))?
            };
            Ok::<_, Error>((part.table.clone(), node, plan))
        }))
        .await;
        for plan in plans {
            let (table, node, plan) = plan?;
            text.push_str(&format!("partition {table} on {node}:\n"));
            for line in plan.lines() {
                text.push_str(&format!("  {line}\n"));
            }
        }
        Ok(text)
    }

    /// An EXPLAIN's text as a query result: one `plan` column, a row per line.
    pub(super) async fn send_plan(
        &self,
        text: &str,
        sink: batch_sink::Client,
    ) -> Result<QueryStats, Error> {
        let started = Instant::now();
        let limits = &self.connection.shared.limits;
        let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
        let lines: arrow_array::StringArray = text.lines().map(Some).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(lines)])
            .map_err(|e| error("internal", e.to_string()))?;
        let mut out = PushSink::new(&sink, limits);
        out.push_batch(batch).await?;
        out.finish(&schema).await?;
        let stats = QueryStats {
            rows_returned: out.rows,
            elapsed_micros: started.elapsed().as_micros() as u64,
            batches: out.batches,
            ipc_bytes: out.bytes,
            ..Default::default()
        };
        finish_call(&sink, stats, limits).await
    }

    /// The columns of a partitioned table, as one of its partitions has them: one held here
    /// in sync (its parsed manifest, cached by the engine), else as a replica last described
    /// them (cached in `Cluster`; `fresh` asks again, after a query naming a column the cached
    /// list lacks).
    async fn partition_columns(
        &self,
        cluster: &Arc<Cluster>,
        parts: &Partitions,
        fresh: bool,
    ) -> Result<Arc<Vec<ColumnDef>>, Error> {
        let data_dir = self.connection.data_dir();
        for part in parts.iter().filter(|p| p.is_in_sync(cluster.node_id())) {
            let manifest = match manifest::cached_unchanged(data_dir, &self.tenant, &part.table) {
                Some(manifest) => Some(manifest),
                None => {
                    let (dir, tenant, table) =
                        (data_dir.to_owned(), self.tenant.clone(), part.table.clone());
                    runtime::spawn_blocking(move || manifest::load_cached(&dir, &tenant, &table))
                        .await
                        .ok()
                        .flatten()
                }
            };
            if let Some(manifest) = manifest {
                return Ok(Arc::new(manifest.columns.clone()));
            }
        }
        let table = parts[0]
            .partition
            .as_ref()
            .map_or("", |of| of.table.as_str());
        if !fresh {
            if let Some(columns) = cluster.described_columns(&self.tenant, table) {
                return Ok(columns);
            }
        }
        let info = self.describe_elsewhere(cluster, &parts[0]).await?;
        let columns = info
            .columns
            .iter()
            .map(|c| {
                let column_type = ColumnType::parse(&c.column_type).ok_or_else(|| {
                    error(
                        "internal",
                        format!(
                            "partition {}: column type {:?}",
                            parts[0].table, c.column_type
                        ),
                    )
                })?;
                Ok(ColumnDef {
                    name: c.name.clone(),
                    column_type,
                    nullable: c.nullable,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(cluster.keep_described_columns(&self.tenant, table, columns))
    }

    /// The merger of `query`'s fragments: bound against the partitions' columns, asked again
    /// once when a cached column list does not bind.
    async fn merger(
        &self,
        cluster: &Arc<Cluster>,
        parts: &Partitions,
        query: &Query,
    ) -> Result<Merger, Error> {
        let context = &self.connection.context;
        let columns = self.partition_columns(cluster, parts, false).await?;
        match context.merger(query, &columns) {
            Ok(merger) => Ok(merger),
            Err(_) => {
                let columns = self.partition_columns(cluster, parts, true).await?;
                context.merger(query, &columns).map_err(engine_error)
            }
        }
    }

    /// A partitioned table described as one: the columns of the partition that has most (they
    /// are only ever appended), the other counts summed over its partitions.
    pub(super) async fn describe_partitioned(
        &self,
        cluster: &Arc<Cluster>,
        parts: &Partitions,
    ) -> Result<crate::client::TableInfo, Error> {
        let infos = futures::future::join_all(parts.iter().map(|part| async move {
            if part.is_in_sync(cluster.node_id()) {
                if let Ok(manifest) =
                    load_table(self.connection.data_dir(), &self.tenant, &part.table).await
                {
                    return Ok(crate::cluster::table_info(&manifest));
                }
            }
            self.describe_elsewhere(cluster, part).await
        }))
        .await;
        let mut whole: Option<crate::client::TableInfo> = None;
        for info in infos {
            let info = info?;
            match &mut whole {
                None => whole = Some(info),
                Some(whole) => {
                    if info.columns.len() > whole.columns.len() {
                        whole.columns = info.columns;
                    }
                    whole.rows += info.rows;
                    whole.files += info.files;
                    whole.bytes += info.bytes;
                    whole.version = whole.version.max(info.version);
                }
            }
        }
        let mut whole = whole.ok_or_else(|| error("internal", "a table without partitions"))?;
        if let Some(of) = &parts[0].partition {
            whole.name = of.table.clone();
        }
        Ok(whole)
    }

    /// One partition's partial result, from this node's replica if it is in sync, else from
    /// the replica running fewest fragments; a replica that cannot answer is replaced by the
    /// next, and one that has not answered after `Cluster::hedge_after` is joined by the next
    /// (the first answer wins; the other is dropped, which cancels it).
    async fn fragment(
        &self,
        cluster: &Arc<Cluster>,
        part: &Placement,
        sql: &str,
        merger: &Merger,
    ) -> Result<Fragment, Error> {
        let mut order = cluster.fragment_order(part).into_iter();
        let mut running = FuturesUnordered::new();
        let mut failures = Vec::new();
        let start = |node: String, address: String| {
            let load = cluster.fragment_started(&node);
            async move {
                let answer = if node == cluster.node_id() {
                    self.fragment_here(&part.table, sql).await
                } else {
                    self.fragment_on(cluster, &address, &part.table, sql).await
                };
                drop(load);
                (node, answer)
            }
        };
        match order.next() {
            Some((node, address)) => running.push(start(node, address)),
            None => return Err(no_replica(part, &failures)),
        }
        loop {
            let hedge = async {
                if order.len() == 0 {
                    futures::future::pending::<()>().await;
                }
                runtime::sleep(cluster.hedge_after).await;
            };
            let next = futures::select_biased! {
                answer = running.next() => Some(answer),
                () = futures::FutureExt::fuse(hedge) => None,
            };
            match next {
                // The slowest replica so far gets company.
                None => {
                    if let Some((node, address)) = order.next() {
                        tracing::info!(partition = %part.table, node = %node, "fragment hedged");
                        running.push(start(node, address));
                    }
                }
                Some(None) => return Err(no_replica(part, &failures)),
                Some(Some((_, Ok(fragment)))) => {
                    check_partial(part, merger, &fragment.0)?;
                    return Ok(fragment);
                }
                Some(Some((_, Err(Failure::Answer(e))))) => return Err(e),
                Some(Some((node, Err(Failure::Elsewhere(why))))) => {
                    failures.push(format!("{node}: {why}"));
                    if let Some((node, address)) = order.next() {
                        running.push(start(node, address));
                    } else if running.is_empty() {
                        return Err(no_replica(part, &failures));
                    }
                }
            }
        }
    }

    /// A fragment on this node's replica of `partition`.
    async fn fragment_here(&self, partition: &str, sql: &str) -> Result<Fragment, Failure> {
        let (prepared, _slot) = prepare_fragment(&self.connection, &self.tenant, partition, sql)
            .await
            .map_err(Failure::Answer)?;
        let mut batches = Vec::new();
        let result = self
            .connection
            .context
            .run_partial_into(prepared, &mut batches)
            .await
            .map_err(|e| Failure::Answer(engine_error(e)))?;
        Ok((batches, result.stats.scan))
    }

    /// A fragment on a peer's replica of `partition`, over a peer session.
    async fn fragment_on(
        &self,
        cluster: &Cluster,
        address: &str,
        partition: &str,
        sql: &str,
    ) -> Result<Fragment, Failure> {
        let unreachable = |e: crate::client::ClientError| {
            cluster.forget_peer(address);
            Failure::Elsewhere(e.to_string())
        };
        let session = cluster
            .session(address, &self.tenant, false)
            .await
            .map_err(unreachable)?;
        let mut stream = match session.query_partial(sql, partition).await {
            Ok(stream) => stream,
            Err(e) => return Err(peer_failure(e)),
        };
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch.map_err(peer_failure)?);
        }
        let stats = stream.stats().cloned().unwrap_or_default();
        Ok((batches, stats.scan))
    }

    /// `Tenant.queryPartial` (a peer asks): `sql` over this node's in-sync replica of
    /// `partition`, its partial result streamed into `sink`.
    pub(super) async fn serve_partial(
        &self,
        sql: &str,
        partition: &str,
        sink: batch_sink::Client,
    ) -> Result<QueryStats, Error> {
        if self.origin == Origin::Client {
            return Err(error(
                "permission",
                "partial results are for the nodes of a cluster (a peer session)",
            ));
        }
        let cluster = self
            .connection
            .shared
            .cluster
            .clone()
            .ok_or_else(|| error("invalid", "this node is not in a cluster"))?;
        let held = cluster
            .placement(&self.tenant, partition)
            .is_some_and(|p| p.partition.is_some() && p.is_in_sync(cluster.node_id()));
        if !held {
            return Err(error(
                "unavailable",
                format!(
                    "node {} holds no in-sync replica of {partition}",
                    cluster.node_id()
                ),
            ));
        }
        let started = Instant::now();
        let limits = &self.connection.shared.limits;
        let (prepared, _slot) =
            prepare_fragment(&self.connection, &self.tenant, partition, sql).await?;
        let mut out = PushSink::new(&sink, limits);
        let outcome = self
            .connection
            .context
            .run_partial_into(prepared, &mut out)
            .await;
        out.conclude(outcome, started, 0).await
    }
}

/// Plans `sql`, a query of a partitioned table, over this node's copy of `partition`, and
/// waits for a slot of its class: a fragment ready to run.
async fn prepare_fragment(
    connection: &Connection,
    tenant: &str,
    partition: &str,
    sql: &str,
) -> Result<(PreparedQuery, QuerySlot), Error> {
    let Statement::Query(query) = partition_statement(sql, partition)? else {
        return Err(error("invalid", "EXPLAIN is not a fragment"));
    };
    let prepared = connection
        .context
        .prepare(tenant, Statement::Query(query))
        .await
        .map_err(engine_error)?;
    let slot = admit(&connection.shared, prepared.class(), tenant).await?;
    Ok((prepared, slot))
}

/// `sql`, a statement on a partitioned table, made a statement on its partition `partition`.
pub(super) fn partition_statement(sql: &str, partition: &str) -> Result<Statement, Error> {
    let mut statement = sql::parse(sql).map_err(|e| engine_error(e.into()))?;
    let (Statement::Query(query) | Statement::Explain(query)) = &mut statement;
    let of = partition.rsplit_once(".p").map(|(table, _)| table);
    if of != Some(query.table.as_str()) {
        return Err(error(
            "invalid",
            format!("{partition} is not a partition of {}", query.table),
        ));
    }
    query.table = partition.to_owned();
    Ok(statement)
}

/// Checks that a fragment's batches have the partial columns this node's plan expects: a
/// partition whose columns differ (schema evolution that reached only some partitions), or a
/// peer of another version, fails the query naming the partition, never merges wrongly.
fn check_partial(part: &Placement, merger: &Merger, batches: &[RecordBatch]) -> Result<(), Error> {
    for batch in batches {
        merger.check(&batch.schema()).map_err(|e| {
            error(
                "internal",
                format!("partition {}: {e} (do its columns differ?)", part.table),
            )
        })?;
    }
    Ok(())
}

/// A peer's error: its own answer, or a sign to try another replica (unreachable, not serving
/// the partition now, overloaded).
fn peer_failure(e: crate::client::ClientError) -> Failure {
    match e.error_code() {
        None => Failure::Elsewhere(e.to_string()),
        Some(_) if ["unavailable", "overloaded", "not_found"].contains(&e.code()) => {
            Failure::Elsewhere(e.to_string())
        }
        Some(_) => Failure::Answer(Error::failed(e.to_string())),
    }
}

fn no_replica(part: &Placement, failures: &[String]) -> Error {
    error(
        "unavailable",
        format!(
            "no replica of partition {} could answer ({}); no partial answer is given",
            part.table,
            if failures.is_empty() {
                "none is up and in sync".to_owned()
            } else {
                failures.join("; ")
            }
        ),
    )
}

/// Splits a client's batch by its partition key: for each partition holding rows, the rows as
/// one Arrow IPC stream; with `to_all`, every other partition too gets the batch's columns with
/// no rows (so columns the batch adds reach every partition). A missing key column puts every
/// row in partition 0 (its rows are NULL there); a key column of another kind than the
/// table's is refused.
pub(super) fn split_batch(
    of: &PartitionOf,
    batches: &[RecordBatch],
    to_all: bool,
) -> Result<Vec<SplitPart>, Error> {
    let count = of.count.max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); count as usize];
    for batch in batches {
        let Some(index) = batch.schema().index_of(&of.key).ok() else {
            parts[0].push(batch.clone());
            continue;
        };
        for (p, rows) in split_rows(of, batch, index)?.into_iter().enumerate() {
            parts[p].extend(rows);
        }
    }
    let mut out = Vec::new();
    for (p, mut part) in parts.into_iter().enumerate() {
        let rows = !part.is_empty();
        match batches.first() {
            Some(first) if part.is_empty() && to_all => {
                part.push(RecordBatch::new_empty(first.schema()))
            }
            _ if part.is_empty() => continue,
            _ => {}
        }
        let mut writer = StreamWriter::try_new(Vec::new(), &part[0].schema())
            .map_err(|e| error("internal", format!("encoding a batch: {e}")))?;
        for batch in &part {
            writer
                .write(batch)
                .map_err(|e| error("internal", format!("encoding a batch: {e}")))?;
        }
        let bytes = writer
            .into_inner()
            .map_err(|e| error("internal", format!("encoding a batch: {e}")))?;
        out.push(SplitPart {
            partition: p as u32,
            ipc: bytes,
            rows,
        });
    }
    Ok(out)
}

/// The rows of `batch` in each partition (`None`: none), by the key in column `index`.
pub(super) fn split_rows(
    of: &PartitionOf,
    batch: &RecordBatch,
    index: usize,
) -> Result<Vec<Option<RecordBatch>>, Error> {
    let count = of.count.max(1);
    let mut array = batch.column(index).clone();
    check_key_type(of, array.data_type())?;
    // Timestamps are stored in microseconds: the hash must see the value stored.
    if let DataType::Timestamp(unit, zone) = array.data_type() {
        if *unit != arrow_schema::TimeUnit::Microsecond {
            let stored = DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, zone.clone());
            array = arrow_cast::cast(&array, &stored)
                .map_err(|e| error("invalid", format!("partition key {}: {e}", of.key)))?;
        }
    }
    let rows =
        tessera_storage_engine::arrays::partition_rows(&array, count).map_err(engine_error)?;
    let mut indices: Vec<Vec<u32>> = vec![Vec::new(); count as usize];
    for (i, &p) in rows.iter().enumerate() {
        indices[p as usize].push(i as u32);
    }
    indices
        .into_iter()
        .map(|rows| {
            if rows.is_empty() {
                return Ok(None);
            }
            if rows.len() == batch.num_rows() {
                return Ok(Some(batch.clone()));
            }
            let indices = arrow_array::UInt32Array::from(rows);
            arrow_select::take::take_record_batch(batch, &indices)
                .map(Some)
                .map_err(|e| error("internal", format!("splitting a batch: {e}")))
        })
        .collect()
}

/// One partition's part of a split batch.
#[derive(Debug)]
pub(super) struct SplitPart {
    pub partition: u32,
    /// An Arrow IPC stream.
    pub ipc: Vec<u8>,
    /// False for a part that only carries the batch's columns.
    pub rows: bool,
}

/// The key column must be of the table's key kind: an integer column's values hash as
/// integers, a string column's as strings, so a value sent as the other kind would land in a
/// partition the query planner never looks in.
fn check_key_type(of: &PartitionOf, data_type: &DataType) -> Result<(), Error> {
    let integer = matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Timestamp(_, _)
    );
    let string = matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
    );
    let ok = match of.key_type.as_str() {
        KEY_INT => integer || data_type == &DataType::Null,
        KEY_STRING => string || data_type == &DataType::Null,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(error(
            "invalid",
            format!(
                "column {} is the partition key of {} ({} values); this batch has it as {}",
                of.key, of.table, of.key_type, data_type
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use tessera_storage_engine::value::{partition_of, Scalar};

    fn of(key_type: &str) -> PartitionOf {
        PartitionOf {
            table: "t".into(),
            index: 0,
            count: 4,
            key: "k".into(),
            key_type: key_type.into(),
        }
    }

    /// The rows of each part, decoded.
    fn parts(split: Vec<SplitPart>) -> Vec<(u32, Vec<RecordBatch>)> {
        split
            .into_iter()
            .map(
                |SplitPart {
                     partition: p,
                     ipc: bytes,
                     ..
                 }| {
                    let reader =
                        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                            .unwrap();
                    (p, reader.map(Result::unwrap).collect())
                },
            )
            .collect()
    }

    #[test]
    fn every_row_goes_to_the_partition_its_key_hashes_to() {
        let keys: Vec<i64> = vec![0, 1, -1, 42, i64::MIN, i64::MAX, 7, 8, 9];
        let key: ArrayRef = Arc::new(Int64Array::from(keys.clone()));
        let v: ArrayRef = Arc::new(StringArray::from_iter_values(
            keys.iter().map(|k| k.to_string()),
        ));
        let batch = RecordBatch::try_from_iter([("k", key), ("v", v)]).unwrap();
        let mut seen = 0;
        for (p, batches) in parts(split_batch(&of(KEY_INT), &[batch], false).unwrap()) {
            for batch in batches {
                let column = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                for k in column.values() {
                    assert_eq!(partition_of(&Scalar::Int(*k), 4), p, "{k}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, keys.len());
    }

    #[test]
    fn a_timestamp_key_hashes_as_the_microseconds_stored() {
        let millis = [1_767_225_600_123i64, 0, -5];
        let key: ArrayRef = Arc::new(TimestampMillisecondArray::from(millis.to_vec()));
        let batch = RecordBatch::try_from_iter([("k", key)]).unwrap();
        let split = parts(split_batch(&of(KEY_INT), &[batch], false).unwrap());
        let rows: usize = split
            .iter()
            .flat_map(|(_, b)| b)
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
        for (p, batches) in split {
            for batch in batches {
                let column = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<TimestampMillisecondArray>()
                    .unwrap();
                for ms in column.values() {
                    assert_eq!(partition_of(&Scalar::Int(ms * 1000), 4), p);
                }
            }
        }
    }

    #[test]
    fn a_key_of_the_other_kind_is_refused_and_a_missing_key_is_partition_zero() {
        let key: ArrayRef = Arc::new(StringArray::from(vec!["1"]));
        let batch = RecordBatch::try_from_iter([("k", key)]).unwrap();
        let refused = split_batch(&of(KEY_INT), &[batch], false).unwrap_err();
        assert!(refused.to_string().contains("partition key"), "{refused}");
        let v: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let batch = RecordBatch::try_from_iter([("v", v)]).unwrap();
        let split = split_batch(&of(KEY_STRING), &[batch], false).unwrap();
        assert_eq!(split.iter().map(|p| p.partition).collect::<Vec<_>>(), [0]);
    }
}
