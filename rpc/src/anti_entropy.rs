//! Anti-entropy: a table's leader comparing what its in-sync replicas hold and repairing a
//! replica that differs. Each replica flushes its buffered rows into files of its own, so
//! replicas hold the same rows in different files: they are compared by content, not by file.
//!
//! Every `anti_entropy_interval`, for each table this node leads with in-sync followers:
//! 1. hold the table's writes back (`Cluster::pause`: those in flight finish first), so every
//!    in-sync replica holds exactly the batches the leader holds (a follower that missed one
//!    has been taken out of the in-sync set before the write ended);
//! 2. ask every replica for its *summary* at once (`Tenant.replicaSummary`; the leader its
//!    own): rows, and per column the non-NULL values, minimum and maximum. These come from the
//!    manifests' statistics and the buffered rows, so holding writes back costs milliseconds;
//! 3. let writes go on, then compare. A follower whose summary differs from the leader's
//!    leaves the in-sync set, and the leader copies the table to it (`catch_up`). When every
//!    follower (two or more) agrees with the others and not with the leader, the leader is
//!    the odd one: it leaves the in-sync set itself, leadership moves to a follower, and the
//!    new leader copies the table back to it.
//!
//! Scrub (`catch_up::scrub`) checks each file against its own checksum; this finds what a
//! checksum cannot: a replica missing or holding extra rows or values (a lost file, a batch
//! applied twice or never, a bug in a flush or compaction).

use crate::client::ClientError;
use crate::cluster::{Cluster, Placement, Replica};
use crate::node::Shared;
use arrow_array::{Array, RecordBatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tessera_storage_engine::engine::CoreContext;
use tessera_storage_engine::io::runtime;
use tessera_storage_engine::query::sql::{self, Statement};
use tessera_storage_engine::table::manifest::{self, ColumnDef};
use tessera_storage_engine::value::ColumnType;

/// How long the replicas have to answer while the table's writes are held back.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What one replica of a table holds, in a form every replica computes alike.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub rows: u64,
    pub columns: BTreeMap<String, ColumnSummary>,
    /// The content digest of every row (`table::digest`, hex); absent while a file written
    /// before digests existed is listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSummary {
    /// Non-NULL values.
    pub values: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

impl Summary {
    /// The first difference from `other`, in words; `None` when they are equal (digests are
    /// compared when both have one).
    pub fn difference(&self, other: &Summary) -> Option<String> {
        if self.rows != other.rows {
            return Some(format!("{} rows against {}", self.rows, other.rows));
        }
        if let (Some(mine), Some(theirs)) = (&self.digest, &other.digest) {
            if mine != theirs {
                return Some(format!("content digest {mine} against {theirs}"));
            }
        }
        let names = self.columns.keys().chain(other.columns.keys());
        for name in names {
            let (mine, theirs) = (self.columns.get(name), other.columns.get(name));
            if mine != theirs {
                let show = |c: Option<&ColumnSummary>| {
                    c.map_or("no such column".to_owned(), |c| {
                        format!(
                            "{} values, min {}, max {}",
                            c.values,
                            c.min.as_deref().unwrap_or("-"),
                            c.max.as_deref().unwrap_or("-")
                        )
                    })
                };
                return Some(format!(
                    "column {name}: {} against {}",
                    show(mine),
                    show(theirs)
                ));
            }
        }
        None
    }
}

/// Whether MIN and MAX apply to a column of this type.
fn ordered(column_type: ColumnType) -> bool {
    !matches!(column_type, ColumnType::Boolean | ColumnType::Binary)
}

/// The statement summarising `table`: `count(*)`, then per column `count`, and `min` and `max`
/// where the type has an order.
fn statement(table: &str, columns: &[ColumnDef]) -> Result<Statement, String> {
    let mut items = vec!["count(*)".to_owned()];
    for column in columns {
        let name = format!("\"{}\"", column.name);
        items.push(format!("count({name})"));
        if ordered(column.column_type) {
            items.push(format!("min({name})"));
            items.push(format!("max({name})"));
        }
    }
    // Named after parsing: a partition's name (`events.p3`) is no SQL identifier.
    let text = format!("SELECT {} FROM summarised", items.join(", "));
    let mut statement = sql::parse(&text).map_err(|e| format!("{e}"))?;
    let Statement::Query(query) = &mut statement else {
        return Err("not a query".into());
    };
    query.table = table.to_owned();
    Ok(statement)
}

/// One value of a one-row result as text (floats' -0 as 0: which of two equal zeros a MIN
/// keeps depends on the order rows are met in, which differs between replicas).
fn rendered(column: &dyn Array) -> Result<Option<String>, String> {
    if column.is_null(0) {
        return Ok(None);
    }
    let text = arrow_cast::display::array_value_to_string(column, 0).map_err(|e| e.to_string())?;
    Ok(Some(if text == "-0" || text == "-0.0" {
        text[1..].to_owned()
    } else {
        text
    }))
}

fn count(column: &dyn Array) -> Result<u64, String> {
    column
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .filter(|c| !c.is_empty() && !c.is_null(0))
        .map(|c| c.value(0).max(0) as u64)
        .ok_or_else(|| "a count that is not one BIGINT".to_owned())
}

/// This node's summary of its copy of `tenant`'s `table`.
pub(crate) async fn summarise(
    context: &CoreContext,
    shared: &Shared,
    tenant: &str,
    table: &str,
) -> Result<Summary, tessera_storage_engine::Error> {
    let (data_dir, owner, name) = (shared.data_dir.clone(), tenant.to_owned(), table.to_owned());
    // The engine's parsed copy (a stat when unchanged), which `prepare` below reads again.
    let manifest = runtime::spawn_blocking(move || manifest::load_cached(&data_dir, &owner, &name))
        .await?
        .ok_or_else(|| tessera_storage_engine::Error::NoSuchTable {
            tenant: tenant.to_owned(),
            table: table.to_owned(),
        })?;
    let internal = |e: String| {
        tessera_storage_engine::Error::Internal(format!("summarising table {table}: {e}"))
    };
    let statement = statement(table, &manifest.columns).map_err(internal)?;
    // One snapshot for the digest and the statement (the prepared query holds it).
    let prepared = context.prepare(tenant, statement).await?;
    let (_, digest) = context.content_digest(&prepared).await?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    let result = context.run_into(prepared, &mut batches).await?;
    let batch = arrow_select::concat::concat_batches(&result.schema, &batches)
        .map_err(|e| internal(e.to_string()))?;
    if batch.num_rows() != 1 {
        return Err(internal(format!("{} result rows", batch.num_rows())));
    }
    let mut at = 0;
    let mut next = || {
        at += 1;
        batch.column(at - 1).clone()
    };
    let mut summary = Summary {
        rows: count(next().as_ref()).map_err(internal)?,
        columns: BTreeMap::new(),
        digest: digest.map(|d| format!("{d:016x}")),
    };
    for column in &manifest.columns {
        let mut one = ColumnSummary {
            values: count(next().as_ref()).map_err(internal)?,
            ..Default::default()
        };
        if ordered(column.column_type) {
            one.min = rendered(next().as_ref()).map_err(internal)?;
            one.max = rendered(next().as_ref()).map_err(internal)?;
        }
        summary.columns.insert(column.name.clone(), one);
    }
    Ok(summary)
}

/// Compares the replicas of every table this node leads (and holds in sync) that has in-sync
/// followers up, one table after the other.
pub(crate) async fn round(context: &CoreContext, shared: &Shared, cluster: &Cluster) {
    let led = cluster.held_placements().into_iter().filter(|p| {
        p.leader == cluster.node_id()
            && p.is_in_sync(cluster.node_id())
            && !followers(cluster, p).is_empty()
    });
    for placement in led {
        if shared.draining() {
            return;
        }
        if let Err(reason) = compare(context, shared, cluster, &placement).await {
            tracing::warn!(
                tenant = %placement.tenant,
                table = %placement.table,
                reason = %reason,
                "comparing a table's replicas failed"
            );
        }
    }
}

/// The in-sync followers of a placement that are up and reachable.
fn followers<'a>(cluster: &Cluster, placement: &'a Placement) -> Vec<&'a Replica> {
    placement
        .replicas
        .iter()
        .filter(|r| {
            r.node_id != cluster.node_id()
                && r.up
                && !r.address.is_empty()
                && placement.is_in_sync(&r.node_id)
        })
        .collect()
}

/// One table: summaries taken with writes held back, then compared; differing replicas leave
/// the in-sync set.
async fn compare(
    context: &CoreContext,
    shared: &Shared,
    cluster: &Cluster,
    placement: &Placement,
) -> Result<(), String> {
    let (tenant, table) = (placement.tenant.as_str(), placement.table.as_str());
    let followers = followers(cluster, placement);
    // Once with writes going on, answers unused: every replica hashes the rows buffered since
    // it last did, so the summaries taken with writes held back hash only what came since.
    let ask = |replica: &Replica| {
        let address = replica.address.clone();
        async move {
            let summary = async {
                let session = cluster.session(&address, tenant, false).await?;
                session.replica_summary(table, placement.epoch).await
            };
            runtime::timeout(ANSWER_WITHIN, summary).await
        }
    };
    let _ = futures::join!(
        futures::future::join_all(followers.iter().map(|r| ask(r))),
        summarise(context, shared, tenant, table)
    );
    let wait = cluster.replication_timeout;
    let Some(paused) = cluster.pause(tenant, table, wait).await else {
        return Err(format!(
            "the writes in flight did not finish within {wait:?}"
        ));
    };
    // The placement once writes are held: one that changed meanwhile is compared next round.
    let now = cluster.placement(tenant, table);
    if now.as_ref().is_none_or(|p| {
        p.epoch != placement.epoch
            || p.in_sync != placement.in_sync
            || p.leader != cluster.node_id()
    }) {
        return Ok(());
    }
    let asked = futures::future::join_all(followers.iter().map(|replica| async move {
        let answer = match ask(replica).await {
            Some(Ok(json)) => serde_json::from_str::<Summary>(&json)
                .map_err(|e| Answer::Unusable(format!("an unreadable summary: {e}"))),
            Some(Err(e)) => Err(Answer::from_error(e)),
            None => Err(Answer::Unusable(format!(
                "no answer within {ANSWER_WITHIN:?}"
            ))),
        };
        (*replica, answer)
    }));
    let own = summarise(context, shared, tenant, table);
    let (own, answers) = futures::join!(own, asked);
    drop(paused);
    let own = own.map_err(|e| format!("this node's summary: {e}"))?;
    shared.metrics.replica_comparisons.inc();

    let mut differing = Vec::new();
    let mut summaries = Vec::new();
    for (replica, answer) in answers {
        let node = replica.node_id.clone();
        match answer {
            Ok(summary) => match own.difference(&summary) {
                None => {}
                Some(difference) => {
                    summaries.push(summary);
                    differing.push((node, difference));
                }
            },
            Err(Answer::Differs(difference)) => differing.push((node, difference)),
            Err(Answer::Unusable(reason)) => {
                tracing::warn!(
                    tenant = %tenant,
                    table = %table,
                    node = %node,
                    reason = %reason,
                    "a replica gave no summary to compare"
                );
                cluster.forget_peer(&replica.address);
            }
        }
    }
    if differing.is_empty() {
        return Ok(());
    }
    // Two or more followers, every one differing from the leader and all alike: the leader
    // differs.
    let leader_odd = followers.len() >= 2
        && summaries.len() == followers.len()
        && summaries.windows(2).all(|w| w[0] == w[1]);
    let placement = now.expect("checked above");
    if leader_odd {
        shared.metrics.replica_differences.inc();
        tracing::error!(
            tenant = %tenant,
            table = %table,
            difference = %differing[0].1,
            followers = differing.len(),
            "this leader's copy differs from every follower's, which agree: it leaves the \
             in-sync set to be copied again"
        );
        cluster
            .set_in_sync(&placement, cluster.node_id(), false)
            .await
            .map_err(|e| format!("taking this leader out of sync: {e}"))?;
        return Ok(());
    }
    for (node, difference) in differing {
        shared.metrics.replica_differences.inc();
        tracing::error!(
            tenant = %tenant,
            table = %table,
            node = %node,
            difference = %difference,
            "a follower's copy differs from the leader's: it leaves the in-sync set to be \
             copied again"
        );
        cluster
            .set_in_sync(&placement, &node, false)
            .await
            .map_err(|e| format!("taking follower {node} out of sync: {e}"))?;
    }
    Ok(())
}

/// Why a follower's summary is not compared.
enum Answer {
    /// Its answer shows a difference (it lacks the table, or cannot bind the leader's columns).
    Differs(String),
    /// No answer to compare (unreachable, busy, fenced): compared next round.
    Unusable(String),
}

impl Answer {
    fn from_error(error: ClientError) -> Answer {
        use crate::codes::ErrorCode;
        match error.error_code() {
            Some(ErrorCode::NotFound) => Answer::Differs(format!("its copy is missing: {error}")),
            _ => Answer::Unusable(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: u64, min: &str) -> Summary {
        let mut columns = BTreeMap::new();
        columns.insert(
            "v".to_owned(),
            ColumnSummary {
                values: rows,
                min: Some(min.to_owned()),
                max: Some("9".to_owned()),
            },
        );
        Summary {
            rows,
            columns,
            digest: Some("00ff".into()),
        }
    }

    #[test]
    fn a_difference_names_rows_first_then_the_first_column_that_differs() {
        assert_eq!(summary(3, "1").difference(&summary(3, "1")), None);
        assert_eq!(
            summary(3, "1").difference(&summary(4, "1")).unwrap(),
            "3 rows against 4"
        );
        assert_eq!(
            summary(3, "1").difference(&summary(3, "0")).unwrap(),
            "column v: 3 values, min 1, max 9 against 3 values, min 0, max 9"
        );
        let mut other = summary(3, "1");
        other.digest = Some("0100".into());
        assert_eq!(
            summary(3, "1").difference(&other).unwrap(),
            "content digest 00ff against 0100"
        );
        // A replica with a file older than digests is compared by the rest.
        other.digest = None;
        assert_eq!(summary(3, "1").difference(&other), None);
        let mut missing = summary(3, "1");
        missing.columns.clear();
        assert!(summary(3, "1")
            .difference(&missing)
            .unwrap()
            .ends_with("against no such column"));
    }

    #[test]
    fn the_statement_counts_every_column_and_orders_only_ordered_types() {
        let columns = vec![
            ColumnDef {
                name: "v".into(),
                column_type: ColumnType::Int64,
                nullable: true,
            },
            ColumnDef {
                name: "flag".into(),
                column_type: ColumnType::Boolean,
                nullable: true,
            },
        ];
        let Statement::Query(query) = statement("events.p3", &columns).unwrap() else {
            panic!("a query");
        };
        assert_eq!(query.table, "events.p3");
        assert_eq!(query.projection.len(), 5, "{query:?}");
    }
}
