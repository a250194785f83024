//! Distributed queries, the storage side. A table hash-partitioned over nodes is one table per
//! partition; the node a client asks sends the query to each partition as a *fragment*
//! (`CoreContext::run_partial_into`), which answers with its partial result in
//! `query::partial`'s encoding (group keys and aggregate states merged over its cores but not
//! finished, or row values), and merges the fragments' answers (`Merger`) exactly as a query on
//! one node finishes its cores' (`finish`: final aggregate values, ORDER BY, LIMIT). Moving the
//! batches between nodes is the RPC layer's.

use super::{
    buffered_scan, finish, output_schema, row_columns, value_sources, BatchSink, CoreContext,
    PreparedQuery, QueryResult, QueryStats,
};
use crate::error::{Error, Result};
use crate::io::runtime;
use crate::query::aggregate::{self, AccState, GroupRows};
use crate::query::exec::{self, BufferedScan, CoreOutput, FileTask, ScanStats};
use crate::query::kernels::CmpOp;
use crate::query::memory::Reservation;
use crate::query::partial;
use crate::query::plan::{self, Filter, Mode, Plan, Test};
use crate::query::sql;
use crate::table::manifest::ColumnDef;
use crate::value::partition_of;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::SchemaRef;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

/// Whether a plan's partial results are final rows in all but their columns: rows without
/// ORDER BY, which a merge only forwards (`Merger::streams`).
fn streams(plan: &Plan) -> bool {
    matches!(plan.mode, Mode::Rows { .. }) && plan.order_by.is_empty()
}

impl CoreContext {
    /// Runs a prepared query as a fragment of a distributed query: as `run_into`, but what
    /// `sink` gets is the partial result in `partial::schema(plan)` (the returned
    /// `QueryResult.schema`). Rows without ORDER BY stream as `run_into` streams them (a LIMIT
    /// still stops the scan); rows with ORDER BY come as one batch, sorted and cut to the
    /// LIMIT, with every value column (hidden sort columns too); groups come merged over the
    /// cores, each group's parts folded in core order, but neither finished (states, not
    /// values) nor limited (a group may have rows in other partitions): one batch per hash
    /// partition of the keys that holds groups, one row without GROUP BY (of empty states when
    /// no row matched). EXPLAIN is refused.
    pub async fn run_partial_into<S: BatchSink>(
        &self,
        prepared: PreparedQuery,
        sink: &mut S,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let PreparedQuery {
            class,
            manifest,
            plan,
            tasks,
            pruning,
            explain,
            _epoch,
        } = prepared;
        if explain {
            return Err(Error::plan(
                "EXPLAIN is not a fragment: explain the query on the node that was asked",
            ));
        }
        let schema = partial::schema(&plan);
        let buffered = buffered_scan(&manifest);
        let memory = self.memory.reserve();
        // The tenant's task queues: its CPU shares on every core, its pages in every pool.
        let lane = (class, runtime::Group::tenant(&manifest.tenant));
        let mut scan = if streams(&plan) {
            self.stream_on_cores(
                lane,
                &plan,
                &|chunk| partial::encode_rows(&plan, chunk),
                tasks,
                &buffered,
                sink,
                &memory,
            )
            .await?
        } else {
            let (this, plan, memory) = (self.clone(), plan.clone(), memory.clone());
            let (batches, scan) = runtime::run_in_group(lane.0, lane.1, async move {
                this.partial_on_cores(&plan, tasks, &buffered, &memory)
                    .await
            })
            .await?;
            for batch in batches {
                sink.send(batch).await?;
            }
            scan
        };
        pruning.add_to(&mut scan);
        Ok(QueryResult {
            schema,
            batches: Vec::new(),
            stats: QueryStats {
                scan,
                elapsed: started.elapsed(),
                class,
            },
            explain: None,
        })
    }

    /// A fragment's partial result when it does not stream: scans on every core, then merges
    /// the groups (partition `p` on core `p`, as `merge_partitions`) or sorts the rows.
    async fn partial_on_cores(
        &self,
        plan: &Arc<Plan>,
        tasks: Vec<FileTask>,
        buffered: &Arc<BufferedScan>,
        memory: &Arc<Reservation>,
    ) -> Result<(Vec<RecordBatch>, ScanStats)> {
        let (outputs, scan) = self
            .scatter(plan, tasks, buffered, false, None, memory)
            .await?;
        let batches = match &plan.mode {
            Mode::Rows { .. } => {
                let columns = row_columns(plan, outputs, memory)?;
                let limit = plan.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
                let mut columns = exec::sort_rows(vec![columns], &plan.order_by, limit)?;
                if let Some(limit) = limit {
                    columns = columns
                        .into_iter()
                        .map(|c| c.slice(0, limit.min(c.len())))
                        .collect();
                }
                vec![partial::encode_rows(plan, columns)?]
            }
            Mode::Groups { .. }
                if outputs
                    .iter()
                    .any(|o| matches!(o, CoreOutput::Partitioned(_))) =>
            {
                let batches = self
                    .on_partitions(plan, outputs, memory, merge_partition)
                    .await?;
                batches.into_iter().filter(|b| b.num_rows() > 0).collect()
            }
            Mode::Groups { .. } => {
                let parts = outputs
                    .into_iter()
                    .map(|output| match output {
                        CoreOutput::Groups(groups) => Ok(groups),
                        _ => Err(Error::Internal("a core's output is not groups".into())),
                    })
                    .collect::<Result<Vec<_>>>()?;
                // A partition without rows still answers its one group, of empty states.
                let mut groups = aggregate::merge(parts);
                if groups.is_empty() {
                    let Mode::Groups { aggregates, .. } = &plan.mode else {
                        return Err(Error::Internal("groups in row mode".into()));
                    };
                    let empty: Vec<AccState> = aggregates.iter().map(AccState::empty).collect();
                    groups = GroupRows::single(&empty, aggregates);
                }
                memory.grow(groups.memory_bytes())?;
                vec![partial::encode_groups(plan, &groups)?]
            }
        };
        Ok((batches, scan))
    }

    /// A merger of the fragments' partial results of `query` over a table of `columns` (bound
    /// here as on the fragments' nodes), holding query memory from this node's budget.
    pub fn merger(&self, query: &sql::Query, columns: &[ColumnDef]) -> Result<Merger> {
        let plan = Arc::new(plan::bind(query, columns)?);
        Ok(Merger {
            partial: partial::schema(&plan),
            output: output_schema(&plan),
            plan,
            memory: self.memory.reserve(),
        })
    }
}

/// One partition's groups from every core merged in core order (the float sums fold as in a
/// merge on one core) and encoded as partial groups: states, not values.
fn merge_partition(
    plan: &Plan,
    parts: Vec<GroupRows>,
    memory: &Reservation,
) -> Result<RecordBatch> {
    let groups = aggregate::merge(parts);
    memory.grow(groups.memory_bytes())?;
    partial::encode_groups(plan, &groups)
}

/// Merges the partial results of a distributed query's fragments into its answer, as the node
/// that was asked (`CoreContext::merger`). Its query memory is held until it is dropped.
pub struct Merger {
    plan: Arc<Plan>,
    partial: SchemaRef,
    output: SchemaRef,
    memory: Arc<Reservation>,
}

impl Merger {
    /// The columns of every fragment's partial result (`partial::schema`).
    pub fn partial_schema(&self) -> SchemaRef {
        self.partial.clone()
    }

    /// The columns of the answer.
    pub fn schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// True for rows without ORDER BY: the fragments' batches are forwarded as they arrive,
    /// each through `project`, and the caller stops at `limit`; other queries are `merge`d.
    pub fn streams(&self) -> bool {
        streams(&self.plan)
    }

    /// Checks a fragment's batch has the partial result's columns (an error saying what
    /// differs, never a wrong merge).
    pub fn check(&self, schema: &arrow_schema::Schema) -> Result<()> {
        partial::check(&self.plan, schema)
    }

    /// The query's LIMIT.
    pub fn limit(&self) -> Option<u64> {
        self.plan.limit
    }

    /// A streamed fragment's batch of partial rows as the answer's columns (checked against
    /// the partial schema first).
    pub fn project(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if !self.streams() {
            return Err(Error::Internal(
                "only rows without ORDER BY are projected; merge the other partial results".into(),
            ));
        }
        let columns = partial::decode_rows(&self.plan, &batch)?;
        let output: Vec<ArrayRef> = value_sources(&self.plan)
            .into_iter()
            .map(|i| columns[i].clone())
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(self.output.clone(), output, &options)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The answer from every fragment's partial batches (in partition order, then arrival
    /// order): each checked and decoded, then finished as a query on one node finishes its
    /// cores' outputs: groups merged and their aggregates' values made (without GROUP BY and
    /// no group anywhere, one row of empty states: `COUNT` 0, `SUM` NULL), then ORDER BY and
    /// LIMIT. What it decodes and builds is charged to the query's memory, which fails with
    /// `limit` past its cap.
    pub fn merge(&self, parts: Vec<RecordBatch>) -> Result<RecordBatch> {
        let mut outputs = Vec::with_capacity(parts.len());
        for batch in &parts {
            let output = match &self.plan.mode {
                Mode::Groups { .. } => {
                    let groups = partial::decode_groups(&self.plan, batch)?;
                    self.memory.grow(groups.memory_bytes())?;
                    CoreOutput::Groups(groups)
                }
                Mode::Rows { .. } => {
                    let columns = partial::decode_rows(&self.plan, batch)?;
                    self.memory.grow(batch.get_array_memory_size() as u64)?;
                    CoreOutput::Rows(vec![columns])
                }
            };
            outputs.push(output);
        }
        drop(parts);
        finish(&self.plan, outputs, &self.memory)
    }

    /// The partitions (of `partitions`, by `value::partition_of` of `key_column`) that may hold
    /// rows the query's WHERE keeps, sorted: those of the values of `key = literal` or
    /// `key IN (...)` the filter requires (as a leaf, or within ANDs; an OR needs every branch
    /// to require some), none when it can never be true (a comparison with NULL). `None`: any
    /// partition may.
    pub fn partitions(&self, key_column: &str, partitions: u32) -> Option<Vec<u32>> {
        let key = self
            .plan
            .columns
            .iter()
            .position(|c| c.name == key_column)?;
        let filter = self.plan.filter.as_ref()?;
        let required = required_partitions(filter, key, partitions)?;
        Some(required.into_iter().collect())
    }
}

/// The partitions rows `filter` keeps may be in, when it restricts the key column `key` to
/// listed values (or is never true); `None` when it does not.
fn required_partitions(filter: &Filter, key: usize, partitions: u32) -> Option<BTreeSet<u32>> {
    match filter {
        Filter::Unknown => Some(BTreeSet::new()),
        Filter::Leaf { column, test } if *column == key => match test {
            Test::Compare {
                op: CmpOp::Eq,
                value,
            } => Some(BTreeSet::from([partition_of(value, partitions)])),
            // A NULL in the list matches nothing, and the binder keeps it out of `values`.
            Test::In {
                values,
                negated: false,
                ..
            } => Some(values.iter().map(|v| partition_of(v, partitions)).collect()),
            _ => None,
        },
        Filter::Leaf { .. } => None,
        // Rows must pass every part: any restriction holds, and several intersect.
        Filter::And(parts) => parts
            .iter()
            .filter_map(|part| required_partitions(part, key, partitions))
            .reduce(|a, b| a.intersection(&b).copied().collect()),
        // Rows pass some branch: restricted only when every branch is.
        Filter::Or(parts) => parts
            .iter()
            .map(|part| required_partitions(part, key, partitions))
            .try_fold(BTreeSet::new(), |mut all, part| {
                all.extend(part?);
                Some(all)
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::memory::MemoryPool;
    use crate::value::{ColumnType, Scalar};

    fn bound(sql: &str) -> Merger {
        let column = |name: &str, column_type| ColumnDef {
            name: name.into(),
            column_type,
            nullable: true,
        };
        let columns = [
            column("k", ColumnType::Int64),
            column("s", ColumnType::Utf8),
        ];
        let sql::Statement::Query(query) = sql::parse(sql).unwrap() else {
            panic!("not a query: {sql}")
        };
        let plan = Arc::new(plan::bind(&query, &columns).unwrap());
        Merger {
            partial: partial::schema(&plan),
            output: output_schema(&plan),
            plan,
            memory: MemoryPool::new(1 << 20, 1 << 20).reserve(),
        }
    }

    fn partitions(filter: &str, key: &str) -> Option<Vec<u32>> {
        bound(&format!("SELECT COUNT(*) FROM t WHERE {filter}")).partitions(key, 8)
    }

    #[test]
    fn partitions_follow_key_equalities_and_never_guess() {
        let of = |v: i64| partition_of(&Scalar::Int(v), 8);
        let sorted = |mut p: Vec<u32>| {
            p.sort();
            p.dedup();
            p
        };
        assert_eq!(partitions("k = 5", "k"), Some(vec![of(5)]));
        assert_eq!(partitions("5 = k", "k"), Some(vec![of(5)]));
        assert_eq!(
            partitions("k IN (1, 2, 3, 2, NULL)", "k"),
            Some(sorted(vec![of(1), of(2), of(3)]))
        );
        assert_eq!(partitions("s = 'x' AND k = 5", "k"), Some(vec![of(5)]));
        assert_eq!(
            partitions("(k = 5 AND s = 'x') AND k IN (5, 6)", "k"),
            Some(vec![of(5)])
        );
        assert_eq!(
            partitions("k = 1 OR k = 2", "k"),
            Some(sorted(vec![of(1), of(2)]))
        );
        assert_eq!(
            partitions("s = 'é'", "s"),
            Some(vec![partition_of(&Scalar::Str("é".into()), 8)])
        );
        // A comparison with NULL is never true: no partition.
        assert_eq!(partitions("k = NULL", "k"), Some(vec![]));
        assert_eq!(partitions("k IN (NULL)", "k"), Some(vec![]));
        for open in [
            "k <> 5",
            "NOT k = 5",
            "k NOT IN (1, 2)",
            "k > 5",
            "k = 1 OR s = 'x'",
            "s = 'x'",
            "k IS NULL",
        ] {
            assert_eq!(partitions(open, "k"), None, "{open}");
        }
        assert_eq!(partitions("k = 5", "missing"), None);
        assert_eq!(bound("SELECT COUNT(*) FROM t").partitions("k", 8), None);
    }

    #[test]
    fn a_merge_without_groups_anywhere_is_one_row_of_empty_states() {
        let merger = bound("SELECT COUNT(*), SUM(k), MAX(s) FROM t");
        assert!(!merger.streams());
        let batch = merger.merge(Vec::new()).unwrap();
        assert_eq!(batch.schema(), merger.schema());
        assert_eq!(batch.num_rows(), 1);
        use arrow_array::cast::AsArray;
        use arrow_array::Array;
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(0),
            0
        );
        assert!(batch.column(1).is_null(0) && batch.column(2).is_null(0));
        let grouped = bound("SELECT k, COUNT(*) FROM t GROUP BY k");
        assert_eq!(grouped.merge(Vec::new()).unwrap().num_rows(), 0);
    }

    #[test]
    fn a_merge_past_the_query_memory_cap_fails_with_limit() {
        let mut merger = bound("SELECT k, COUNT(*) FROM t GROUP BY k");
        merger.memory = MemoryPool::new(1 << 20, 1_000).reserve();
        let groups = GroupRows::from_parts(
            vec![(0..1_000).map(crate::value::KeyValue::Int).collect()],
            vec![crate::query::groups::Accumulator::Count(vec![1; 1_000])],
            1_000,
        );
        let batch = partial::encode_groups(&merger.plan, &groups).unwrap();
        let error = merger.merge(vec![batch]).unwrap_err();
        assert_eq!(error.code(), "limit", "{error}");
    }
}
