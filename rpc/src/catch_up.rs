//! A leader bringing its followers back into the in-sync set. A follower that missed a batch
//! (down, slow, cut off) is taken out of the in-sync set before the batch is acknowledged
//! (`IngestStreamServer::replicate`); it keeps receiving batches, but may lack some. Once it is
//! up again, the table's leader replaces its copy of the table by its own, node to node:
//!
//! 1. flush the table's buffered rows, then send every file its manifest lists (writes go on);
//! 2. hold the table's writes back (`Cluster::pause`: those in flight finish first), flush
//!    again, send the files written meanwhile, and commit the manifest: the follower installs
//!    the files under a new incarnation, dropping whatever it held (`ReplicaCopy`), with the
//!    producers' windows of the manifest, so a batch it receives again is a duplicate;
//! 3. put the follower back in sync in the catalog (fenced by this leader's epoch), and let
//!    writes go on: from now on each waits for the follower too.
//!
//! Every file is checked on arrival against the size and CRC-32 its manifest entry gives. A
//! replica the catalog moved to another node (re-replication, its node down past the grace
//! period) is created there the same way, and removed from the node that comes back
//! (`trim`) once a routing table fetched then says it no longer holds it. A replica whose
//! files fail their checksums (`scrub`) takes itself out of sync to be copied again.
//! Runs on core 0 of every node of a cluster, one table and follower at a time; a failed
//! attempt is retried later, backing off.

use crate::client::{ClientError, ReplicaInstaller};
use crate::cluster::{Cluster, Placement, Replica};
use crate::node::Shared;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_storage_engine::engine::CoreContext;
use tessera_storage_engine::io::runtime;
use tessera_storage_engine::table::manifest::{self, TableManifest};
use tessera_storage_engine::table::verify;

/// How often a leader looks for followers to bring back.
const ROUND: Duration = Duration::from_secs(1);
/// The first wait after a failed attempt; it doubles up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Rounds between looks for local tables the catalog no longer places here.
const TRIM_ROUNDS: u64 = 5;
/// Bytes of a file per `ReplicaInstaller.put`.
const PIECE_BYTES: u64 = 1 << 20;

/// What one catch-up copied.
#[derive(Debug, Default)]
struct Copied {
    files: u64,
    bytes: u64,
    rows: u64,
}

/// A copy's progress as the node reports it (`Cluster::copy_progress`), cleared on drop; and
/// its pace (`Cluster::copy_bytes_per_second`).
struct Progress<'a> {
    cluster: &'a Cluster,
    table: (&'a str, &'a str),
    to: &'a str,
    /// Bytes of the files known to need sending.
    total: u64,
    started: Instant,
}

impl Progress<'_> {
    /// Records `sent` bytes, and waits as long as the copy runs ahead of its rate.
    async fn report(&self, sent: u64) {
        let total = self.total.max(sent);
        self.cluster
            .copy_progress(self.table, self.to, Some((sent, total)));
        let rate = self.cluster.copy_bytes_per_second;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
                runtime::sleep(ahead).await;
            }
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        self.cluster.copy_progress(self.table, self.to, None);
    }
}

/// Brings this node's led tables' followers back in sync, for as long as the node runs.
pub(crate) async fn run(context: CoreContext, shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    // (tenant, table, node) → (next attempt, wait after the next failure).
    let mut retry: HashMap<(String, String, String), (Instant, Duration)> = HashMap::new();
    let mut rounds = 0u64;
    let mut last_scrub = Instant::now();
    let mut last_comparison = Instant::now();
    let mut quotas_applied = std::collections::BTreeMap::new();
    loop {
        runtime::sleep(ROUND).await;
        if shared.draining() {
            continue;
        }
        apply_quotas(&context, &shared, &cluster, &mut quotas_applied).await;
        rounds += 1;
        if rounds.is_multiple_of(TRIM_ROUNDS) {
            if let Err(reason) = trim(&context, &shared, &cluster).await {
                tracing::warn!(reason = %reason, "removing replicas moved elsewhere failed");
            }
        }
        if last_scrub.elapsed() >= cluster.scrub_interval {
            last_scrub = Instant::now();
            if let Err(reason) = scrub(&shared, &cluster).await {
                tracing::warn!(reason = %reason, "checking this node's replicas failed");
            }
        }
        if last_comparison.elapsed() >= cluster.anti_entropy_interval {
            last_comparison = Instant::now();
            crate::anti_entropy::round(&context, &shared, &cluster).await;
        }
        let led = cluster
            .held_placements()
            .into_iter()
            .filter(|p| p.leader == cluster.node_id());
        for placement in led {
            for replica in placement
                .replicas
                .iter()
                .filter(|r| r.up && !r.address.is_empty() && !placement.is_in_sync(&r.node_id))
            {
                let key = (
                    placement.tenant.clone(),
                    placement.table.clone(),
                    replica.node_id.clone(),
                );
                if retry.get(&key).is_some_and(|(at, _)| Instant::now() < *at) {
                    continue;
                }
                let started = Instant::now();
                match catch_up(&context, &shared, &cluster, &placement, replica).await {
                    Ok(copied) => {
                        retry.remove(&key);
                        tracing::info!(
                            tenant = %placement.tenant,
                            table = %placement.table,
                            node = %replica.node_id,
                            files = copied.files,
                            bytes = copied.bytes,
                            rows = copied.rows,
                            seconds = started.elapsed().as_secs_f64(),
                            "a follower caught up and is back in the in-sync set"
                        );
                    }
                    Err(reason) => {
                        let wait = retry
                            .get(&key)
                            .map_or(RETRY_MIN, |(_, wait)| (*wait * 2).min(RETRY_MAX));
                        retry.insert(key, (Instant::now() + wait, wait));
                        tracing::warn!(
                            tenant = %placement.tenant,
                            table = %placement.table,
                            node = %replica.node_id,
                            reason = %reason,
                            retry_in_seconds = wait.as_secs_f64(),
                            "catching a follower up failed"
                        );
                    }
                }
            }
        }
    }
}

/// Reads every file of this node's in-sync replicas against the size and CRC-32 its manifest
/// gives (and decodes it: `verify_table`), on a thread of its own at a lower priority. A
/// replica with a damaged file leaves the in-sync set (a leader steps down to an in-sync
/// follower): its table's leader then copies the table to it again.
async fn scrub(shared: &Shared, cluster: &Cluster) -> Result<(), String> {
    let held = cluster
        .held_placements()
        .into_iter()
        .filter(|p| p.is_in_sync(cluster.node_id()));
    for placement in held {
        let (data_dir, tenant, table) = (
            shared.data_dir.clone(),
            placement.tenant.clone(),
            placement.table.clone(),
        );
        let damaged = runtime::spawn_thread("tessera-scrub", move || {
            damaged_files(&data_dir, &tenant, &table)
        })
        .await
        .map_err(|e| format!("cannot start a scrub thread: {e}"))??;
        if damaged.is_empty() {
            continue;
        }
        tracing::error!(
            tenant = %placement.tenant,
            table = %placement.table,
            damage = %damaged.join("; "),
            "a replica's files are damaged: it leaves the in-sync set to be copied again"
        );
        cluster
            .set_in_sync(&placement, cluster.node_id(), false)
            .await
            .map_err(|e| format!("taking the damaged replica out of sync: {e}"))?;
    }
    Ok(())
}

/// The damaged files of a table here, each with what is wrong. Blocking.
fn damaged_files(data_dir: &Path, tenant: &str, table: &str) -> Result<Vec<String>, String> {
    tessera_storage_engine::io::host::lower_thread_priority();
    let (_, problems) = match verify::verify_table(data_dir, tenant, table) {
        Ok(checked) => checked,
        Err(tessera_storage_engine::Error::NoSuchTable { .. }) => return Ok(Vec::new()),
        Err(error) => return Err(error.to_string()),
    };
    if problems.is_empty() {
        return Ok(Vec::new());
    }
    // A file compaction retired meanwhile is gone, not damaged.
    let table_dir = manifest::table_dir(data_dir, tenant, table);
    let listed: HashSet<std::path::PathBuf> = manifest::load(data_dir, tenant, table)
        .map_err(|e| e.to_string())?
        .map(|m| m.files.iter().map(|f| table_dir.join(&f.path)).collect())
        .unwrap_or_default();
    Ok(problems
        .into_iter()
        .filter(|p| listed.contains(&p.path))
        .map(|p| format!("{}: {}", p.path.display(), p.message))
        .collect())
}

/// Removes this node's copies of tables whose replicas the catalog moved to other nodes while
/// it was down (re-replication), once a routing table fetched now agrees.
async fn trim(context: &CoreContext, shared: &Shared, cluster: &Cluster) -> Result<(), String> {
    let data_dir = shared.data_dir.clone();
    let local = runtime::spawn_blocking(move || {
        let mut tables = Vec::new();
        for tenant in manifest::list_tenants(&data_dir)? {
            for table in manifest::list_tables(&data_dir, &tenant)? {
                tables.push((tenant.clone(), table));
            }
        }
        Ok::<_, tessera_storage_engine::Error>(tables)
    })
    .await
    .map_err(|e| e.to_string())?;
    let moved = |cluster: &Cluster| -> Vec<(String, String)> {
        local
            .iter()
            .filter(|(tenant, table)| {
                cluster
                    .placement(tenant, table)
                    .is_some_and(|p| !p.holds(cluster.node_id()))
            })
            .cloned()
            .collect()
    };
    if moved(cluster).is_empty() {
        return Ok(());
    }
    cluster.refresh_routing().await?;
    for (tenant, table) in moved(cluster) {
        let (data_dir, owner, name) = (shared.data_dir.clone(), tenant.clone(), table.clone());
        let dropped =
            runtime::spawn_blocking(move || manifest::drop_table(&data_dir, &owner, &name))
                .await
                .map_err(|e| e.to_string())?;
        if let Some(dropped) = dropped {
            context.forget_tables(&[dropped]).await;
            tracing::info!(
                tenant = %tenant,
                table = %table,
                "removed this node's copy of a table whose replica the catalog moved elsewhere"
            );
        }
    }
    Ok(())
}

async fn catch_up(
    context: &CoreContext,
    shared: &Shared,
    cluster: &Cluster,
    placement: &Placement,
    replica: &Replica,
) -> Result<Copied, String> {
    let (tenant, table) = (placement.tenant.as_str(), placement.table.as_str());
    let data_dir = shared.data_dir.as_path();
    let installer = open_installer(cluster, data_dir, placement, replica)
        .await
        .map_err(|e| format!("starting the copy on {}: {e}", replica.address))?;
    let mut sent = HashSet::new();
    let mut copied = Copied::default();
    // 1. The table's files as they are now; writes go on.
    let first = flushed_manifest(context, data_dir, tenant, table).await?;
    let mut progress = Progress {
        cluster,
        table: (tenant, table),
        to: &replica.node_id,
        total: first.total_bytes(),
        started: Instant::now(),
    };
    progress.report(0).await;
    send_files(
        &installer,
        data_dir,
        &first,
        &mut sent,
        &mut copied,
        &progress,
    )
    .await?;
    // 2. The rest, with writes held back.
    let wait = cluster.replication_timeout;
    let Some(paused) = cluster.pause(tenant, table, wait).await else {
        return Err(format!(
            "the writes in flight did not finish within {wait:?}"
        ));
    };
    let finish = async {
        let last = flushed_manifest(context, data_dir, tenant, table).await?;
        progress.total = copied.bytes
            + last
                .files
                .iter()
                .filter(|f| !sent.contains(&f.path))
                .map(|f| f.bytes)
                .sum::<u64>();
        send_files(
            &installer,
            data_dir,
            &last,
            &mut sent,
            &mut copied,
            &progress,
        )
        .await?;
        let json = serde_json::to_vec(&last).map_err(|e| e.to_string())?;
        let (files, rows) = installer
            .commit(json)
            .await
            .map_err(|e| format!("installing the copy: {e}"))?;
        if u64::from(files) != last.files.len() as u64 || rows != last.total_rows() {
            return Err(format!(
                "the follower installed {files} files and {rows} rows, the copy has {} and {}",
                last.files.len(),
                last.total_rows()
            ));
        }
        copied.rows = rows;
        // 3. Back in sync, under this leader's epoch.
        let now = cluster
            .placement(tenant, table)
            .filter(|p| p.leader == cluster.node_id())
            .ok_or_else(|| "this node no longer leads the table".to_owned())?;
        cluster
            .set_in_sync(&now, &replica.node_id, true)
            .await
            .map_err(|e| format!("putting the follower back in sync: {e}"))?;
        Ok::<_, String>(())
    };
    let finished = runtime::timeout(wait, finish).await;
    drop(paused);
    match finished {
        Some(result) => result.map(|()| copied),
        None => Err(format!(
            "the copy's last part did not finish within {wait:?} (writes went on)"
        )),
    }
}

/// Starts a copy on the follower, creating the table there first if it lacks it.
async fn open_installer(
    cluster: &Cluster,
    data_dir: &Path,
    placement: &Placement,
    replica: &Replica,
) -> Result<ReplicaInstaller, String> {
    let (tenant, table, epoch) = (&placement.tenant, &placement.table, placement.epoch);
    let session = cluster
        .session(&replica.address, tenant, false)
        .await
        .map_err(|e| e.to_string())?;
    match session.install_replica(table, epoch).await {
        Err(error) if error.error_code() == Some(crate::codes::ErrorCode::NotFound) => {
            let manifest = load(data_dir, tenant, table).await?;
            match session
                .create_table(crate::cluster::table_spec(&manifest))
                .await
            {
                Ok(_) => {}
                Err(error) if error.to_string().contains("already exists") => {}
                Err(error) => return Err(error.to_string()),
            }
            session.install_replica(table, epoch).await
        }
        other => other,
    }
    .map_err(|e: ClientError| e.to_string())
}

/// Flushes the table's buffered rows on every core, then reads its manifest.
async fn flushed_manifest(
    context: &CoreContext,
    data_dir: &Path,
    tenant: &str,
    table: &str,
) -> Result<TableManifest, String> {
    context
        .flush_ingest(tenant, table)
        .await
        .map_err(|e| format!("flushing the table: {e}"))?;
    load(data_dir, tenant, table).await
}

async fn load(data_dir: &Path, tenant: &str, table: &str) -> Result<TableManifest, String> {
    let (data_dir, owner, name) = (data_dir.to_owned(), tenant.to_owned(), table.to_owned());
    runtime::spawn_blocking(move || manifest::load(&data_dir, &owner, &name))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("table {table} is gone from this node"))
}

/// Sends the files of `manifest` not sent yet.
async fn send_files(
    installer: &ReplicaInstaller,
    data_dir: &Path,
    manifest: &TableManifest,
    sent: &mut HashSet<String>,
    copied: &mut Copied,
    progress: &Progress<'_>,
) -> Result<(), String> {
    let table_dir = manifest::table_dir(data_dir, &manifest.tenant, &manifest.table);
    for file in &manifest.files {
        if !sent.insert(file.path.clone()) {
            continue;
        }
        let path = Arc::new(table_dir.join(&file.path));
        let mut offset = 0;
        while offset < file.bytes {
            let length = PIECE_BYTES.min(file.bytes - offset);
            let piece = read_piece(path.clone(), offset, length).await?;
            installer
                .put(&file.path, offset, piece)
                .await
                .map_err(|e| format!("sending {}: {e}", file.path))?;
            offset += length;
            progress.report(copied.bytes + offset).await;
        }
        copied.files += 1;
        copied.bytes += file.bytes;
    }
    Ok(())
}

/// Applies the tenants' quota objects the routing table brought (set through any node,
/// `Coordinator.setQuota`) that differ from those applied last: stored on this node as
/// `Operator.setQuota` stores them, and in force on every core.
async fn apply_quotas(
    context: &CoreContext,
    shared: &Shared,
    cluster: &Cluster,
    applied: &mut std::collections::BTreeMap<String, String>,
) {
    for (tenant, json) in cluster.quotas().iter() {
        if applied.get(tenant) == Some(json) {
            continue;
        }
        let quota: tessera_storage_engine::table::quota::TenantQuota = match serde_json::from_str(
            json,
        ) {
            Ok(quota) => quota,
            Err(e) => {
                tracing::warn!(tenant = %tenant, reason = %e, "the catalog's quota object is not one this node reads");
                applied.insert(tenant.clone(), json.clone());
                continue;
            }
        };
        match shared.quotas.set(tenant, quota).await {
            Ok(()) => {
                context.apply_quota(tenant, &quota).await;
                applied.insert(tenant.clone(), json.clone());
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, reason = %e, "the catalog's quota could not be stored here");
            }
        }
    }
}

/// `length` bytes at `offset` of the file at `path`, read on a blocking thread.
pub(crate) async fn read_piece(
    path: Arc<std::path::PathBuf>,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, String> {
    let source = path.clone();
    runtime::spawn_blocking(move || {
        let mut piece = vec![0u8; length as usize];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(source.as_path())?,
            &mut piece,
            offset,
        )?;
        Ok::<_, std::io::Error>(piece)
    })
    .await
    .map_err(|e| format!("reading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_to_its_rate_and_reports_its_progress_until_it_ends() {
        let mut cluster = crate::cluster::tests::cluster_without_catalog();
        cluster.copy_bytes_per_second = 4 << 20;
        let cluster = Arc::new(cluster);
        let pool = runtime::CorePool::start(&runtime::CoreOptions::unpinned(1), |_| ())
            .expect("pool starts");
        let seen = futures::executor::block_on(pool.run_on(0, move |_, _| async move {
            let started = Instant::now();
            let progress = Progress {
                cluster: &cluster,
                table: ("acme", "events"),
                to: "n2",
                total: 8 << 20,
                started,
            };
            // 2 MiB at 4 MiB/s: due half a second after the start.
            progress.report(2 << 20).await;
            let paced = started.elapsed();
            let reported = cluster.copying();
            drop(progress);
            (paced, reported, cluster.copying())
        }))
        .unwrap();
        let (paced, reported, after) = seen;
        assert!(paced >= Duration::from_millis(450), "{paced:?}");
        let reported: serde_json::Value = serde_json::from_str(&reported).unwrap();
        assert_eq!(reported[0]["bytes"], 2 << 20);
        assert_eq!(reported[0]["total"], 8 << 20);
        assert_eq!(after, "", "an ended copy is no longer reported");
    }
}
