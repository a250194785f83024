//! Upkeep of tables while the node serves: tenant-aware compaction rounds, retention, and the
//! deletion of the files they retire once no query that could still read them runs.
//!
//! A compaction *round* visits every tenant, starting one further each round, and gives each
//! its own budget of file bytes to merge (`CompactionConfig`): a tenant writing a storm of
//! small files gets its budget every round and no more, so other tenants' partitions are
//! compacted in the same round. Merging runs on a thread of its own at a lower CPU priority
//! (the cores keep serving). A query over many small files is never refused: it is slower
//! until compaction catches up.
//!
//! Deleting: compaction and retention publish a manifest without the old files
//! (`table::maintenance`); the files stay on disk, retired, until no query registered before
//! the publication (`ingest::Epochs`) is running; then every core drops their pages and
//! descriptors and the files are deleted.

use super::{file_cache_id, CoreContext, Engine};
use crate::error::{Error, Result};
use crate::io::{host, runtime};
use crate::table::maintenance::{self as table_maintenance, CompactionPolicy, Dropped, Job};
use crate::table::manifest::{self, FileEntry, TableManifest};
use crate::table::replica::ReplicaCopy;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often queries still reading retired files are looked for.
const RETIRE_POLL: Duration = Duration::from_millis(20);

/// Compaction settings of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionConfig {
    /// Time between background rounds; `None`: compaction runs only when asked
    /// (`Engine::compact`, the Admin RPC).
    pub interval: Option<Duration>,
    /// Every tenant's file-count target per partition and job size, unless overridden.
    pub policy: CompactionPolicy,
    /// File bytes one tenant's jobs may merge per round (at least one job runs).
    pub tenant_bytes_per_round: u64,
    /// Per-tenant overrides.
    pub tenants: BTreeMap<String, TenantCompaction>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval: None,
            policy: CompactionPolicy::default(),
            tenant_bytes_per_round: 256 << 20,
            tenants: BTreeMap::new(),
        }
    }
}

/// One tenant's compaction settings where they differ from the node's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantCompaction {
    pub files_per_partition: Option<usize>,
    pub bytes_per_round: Option<u64>,
}

/// What a compaction round did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactionReport {
    pub jobs: u64,
    /// Files merged away, and the files written in their place.
    pub files_removed: u64,
    pub files_written: u64,
    pub bytes_read: u64,
    /// Jobs that failed (each is logged; the table is unchanged by them).
    pub failed: u64,
    /// Per tenant visited, the file bytes its jobs merged, in visiting order.
    pub tenants: Vec<(String, u64)>,
}

impl CompactionConfig {
    fn for_tenant(&self, tenant: &str) -> (CompactionPolicy, u64) {
        let mut policy = self.policy.clone();
        let mut budget = self.tenant_bytes_per_round;
        if let Some(custom) = self.tenants.get(tenant) {
            policy.files_per_partition = custom
                .files_per_partition
                .unwrap_or(policy.files_per_partition);
            budget = custom.bytes_per_round.unwrap_or(budget);
        }
        (policy, budget)
    }
}

impl CoreContext {
    /// One compaction round (see the module comment), tenants visited from the `start`-th on.
    pub async fn compact_round(&self, start: usize) -> Result<CompactionReport> {
        let data_dir = self.config.data_dir.clone();
        let mut tenants =
            runtime::spawn_blocking(move || manifest::list_tenants(&data_dir)).await?;
        if !tenants.is_empty() {
            let start = start % tenants.len();
            tenants.rotate_left(start);
        }
        let mut report = CompactionReport::default();
        for tenant in tenants {
            let (policy, budget) = self.config.compaction.for_tenant(&tenant);
            let mut spent = 0;
            let (data_dir, owner) = (self.config.data_dir.clone(), tenant.clone());
            let tables = runtime::spawn_blocking(move || {
                let mut manifests = Vec::new();
                for table in manifest::list_tables(&data_dir, &owner)? {
                    manifests.extend(manifest::load(&data_dir, &owner, &table)?);
                }
                Ok::<_, Error>(manifests)
            })
            .await;
            let tables = match tables {
                Ok(tables) => tables,
                // Dropped meanwhile, or unreadable: the next round sees.
                Err(_) => continue,
            };
            'tenant: for table in tables {
                for job in table_maintenance::plan(&table, &policy) {
                    if spent > 0 && spent + job.bytes() > budget {
                        break 'tenant;
                    }
                    spent += job.bytes();
                    match self.compact_job(&table, job).await {
                        Ok((removed, written)) => {
                            report.jobs += 1;
                            report.files_removed += removed;
                            report.files_written += written;
                        }
                        Err(error) => {
                            report.failed += 1;
                            tracing::error!(
                                "compaction of {tenant}/{} failed (the table is unchanged): \
                                 {error}",
                                table.table
                            );
                        }
                    }
                }
            }
            report.bytes_read += spent;
            report.tenants.push((tenant, spent));
        }
        Ok(report)
    }

    /// Compacts one table now, budget aside: jobs run until every partition is within the
    /// tenant's file-count target (or no two of its files fit one job).
    /// A job that loses a race (a background round merged some of its files first) is
    /// planned again; an error that persists (`ATTEMPTS` failures in a row, no job done in
    /// between) is returned. A lost race is the background round's progress, so with many
    /// partitions several may be lost in one call (seen: three under a loaded CI machine).
    pub async fn compact_table(&self, tenant: &str, table: &str) -> Result<CompactionReport> {
        const ATTEMPTS: u32 = 5;
        let (policy, _) = self.config.compaction.for_tenant(tenant);
        let mut report = CompactionReport::default();
        let mut failures = 0;
        'plan: loop {
            let (data_dir, owner, name) = (
                self.config.data_dir.clone(),
                tenant.to_owned(),
                table.to_owned(),
            );
            let manifest =
                runtime::spawn_blocking(move || manifest::load(&data_dir, &owner, &name))
                    .await?
                    .ok_or_else(|| Error::NoSuchTable {
                        tenant: tenant.to_owned(),
                        table: table.to_owned(),
                    })?;
            let jobs = table_maintenance::plan(&manifest, &policy);
            if jobs.is_empty() {
                return Ok(report);
            }
            for job in jobs {
                let bytes = job.bytes();
                match self.compact_job(&manifest, job).await {
                    Ok((removed, written)) => {
                        failures = 0;
                        report.jobs += 1;
                        report.files_removed += removed;
                        report.files_written += written;
                        report.bytes_read += bytes;
                    }
                    Err(error) => {
                        failures += 1;
                        if failures >= ATTEMPTS {
                            return Err(error);
                        }
                        continue 'plan;
                    }
                }
            }
        }
    }

    /// Merges one job's files; returns the files removed and written.
    async fn compact_job(&self, table: &TableManifest, job: Job) -> Result<(u64, u64)> {
        let data_dir = self.config.data_dir.clone();
        let summary = runtime::spawn_thread("tessera-compact", move || {
            host::lower_thread_priority();
            table_maintenance::compact(&data_dir, &job)
        })
        .await
        .map_err(|e| Error::Internal(format!("cannot start a compaction thread: {e}")))??;
        let counts = (summary.replaced.len() as u64, summary.files);
        self.retire(table, summary.replaced).await;
        Ok(counts)
    }

    /// Drops the date partitions of `tenant/table` before `cutoff` (`YYYY-MM-DD`) in one
    /// manifest publication, after flushing the table's buffered rows (so rows acknowledged
    /// before the call are dropped with their partitions too).
    pub async fn drop_partitions_before(
        &self,
        tenant: &str,
        table: &str,
        cutoff: &str,
    ) -> Result<Dropped> {
        self.flush_ingest(tenant, table).await?;
        let (data_dir, owner, name, date) = (
            self.config.data_dir.clone(),
            tenant.to_owned(),
            table.to_owned(),
            cutoff.to_owned(),
        );
        let (before, dropped) = runtime::spawn_blocking(move || {
            let before = manifest::load(&data_dir, &owner, &name)?;
            let dropped =
                table_maintenance::drop_partitions_before(&data_dir, &owner, &name, &date)?;
            Ok::<_, Error>((before, dropped))
        })
        .await?;
        if let Some(before) = before {
            self.retire(&before, dropped.files.clone()).await;
        }
        Ok(dropped)
    }

    /// Installs a copy of a table received from another replica (`ReplicaCopy::install`, on
    /// a thread of its own: it reads every copied file for its checksum), then makes every core
    /// drop the rows it buffered for the replaced incarnation and its producers' windows, and
    /// retires the replaced files. Returns the installed manifest.
    pub async fn install_replica(
        &self,
        copy: ReplicaCopy,
        source: TableManifest,
    ) -> Result<TableManifest> {
        let installed = runtime::spawn_thread("tessera-install", move || copy.install(&source))
            .await
            .map_err(|e| Error::Internal(format!("cannot start an install thread: {e}")))??;
        let replaced = &installed.replaced;
        let key = (
            replaced.tenant.clone(),
            replaced.table.clone(),
            replaced.incarnation,
        );
        let calls = (0..self.peers.count()).map(|peer| {
            let key = key.clone();
            self.peers
                .call(&self.state, peer, move |state, _| async move {
                    state.ingest.forget_table(&key).await
                })
        });
        futures::future::join_all(calls).await;
        self.retire(replaced, replaced.files.clone()).await;
        Ok(installed.installed)
    }

    /// Deletes retired files of `table` once no query registered before now is running, and
    /// makes every core forget their pages and descriptors. Returns at once; the deletion
    /// runs as a task of this core.
    async fn retire(&self, table: &TableManifest, files: Vec<FileEntry>) {
        if files.is_empty() {
            return;
        }
        let epoch = self.state.ingest.bump_epoch();
        let table_dir = manifest::table_dir(&self.config.data_dir, &table.tenant, &table.table);
        let paths: Vec<PathBuf> = files.iter().map(|f| table_dir.join(&f.path)).collect();
        let ids: Arc<hashbrown::HashSet<u64>> =
            Arc::new(files.iter().map(|f| file_cache_id(table, f)).collect());
        let this = self.clone();
        runtime::spawn_local(async move {
            while this.state.ingest.queries_before_running(epoch) {
                runtime::sleep(RETIRE_POLL).await;
            }
            let calls = (0..this.peers.count()).map(|peer| {
                let ids = ids.clone();
                this.peers
                    .call(&this.state, peer, move |state, _| async move {
                        state.metadata.evict_files(&ids);
                        state.pool.evict_files(&ids);
                        state.partials.evict_files(&ids);
                    })
            });
            futures::future::join_all(calls).await;
            if let Err(error) =
                runtime::spawn_blocking(move || table_maintenance::delete_retired(&paths)).await
            {
                tracing::error!("deleting retired files failed (a restart retries): {error}");
            }
        });
    }

    /// Runs a compaction round every `interval`, for as long as the core runs.
    pub(super) fn start_compacting(&self, interval: Duration) {
        let this = self.clone();
        // Compaction's reads and merges take the CPU short queries leave.
        runtime::spawn_local_in(runtime::TaskClass::Throughput, async move {
            let mut round = 0;
            loop {
                runtime::sleep(interval).await;
                if let Err(error) = this.compact_round(round).await {
                    tracing::error!("compaction round failed: {error}");
                }
                round += 1;
            }
        });
    }
}

impl Engine {
    /// Runs one compaction round now (see the module comment), on core 0. Blocks the calling
    /// thread until the round's jobs are published; retired files are deleted shortly after,
    /// once no query still reads them.
    pub fn compact(&self) -> Result<CompactionReport> {
        let round = self
            .compaction_rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        futures::executor::block_on(self.on_core(0, move |context| async move {
            context.compact_round(round).await
        }))?
    }

    /// Compacts one table now (see `CoreContext::compact_table`). Blocks the calling thread.
    pub fn compact_table(&self, tenant: &str, table: &str) -> Result<CompactionReport> {
        let (tenant, table) = (tenant.to_owned(), table.to_owned());
        futures::executor::block_on(self.on_core(0, move |context| async move {
            context.compact_table(&tenant, &table).await
        }))?
    }

    /// Drops `tenant/table`'s date partitions before `cutoff` (`YYYY-MM-DD`), atomically (see
    /// `CoreContext::drop_partitions_before`). Blocks the calling thread.
    pub fn drop_partitions_before(
        &self,
        tenant: &str,
        table: &str,
        cutoff: &str,
    ) -> Result<Dropped> {
        let (tenant, table, cutoff) = (tenant.to_owned(), table.to_owned(), cutoff.to_owned());
        futures::executor::block_on(self.on_core(0, move |context| async move {
            context
                .drop_partitions_before(&tenant, &table, &cutoff)
                .await
        }))?
    }
}

#[cfg(test)]
mod tests {
    use crate::query::exec::fail_points::QUERY_PAUSE_MS;
    use crate::table::maintenance::CompactionPolicy;
    use crate::table::writer::{ImportOptions, TableWriter};
    use crate::{Engine, EngineConfig};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use std::sync::atomic::Ordering;

    /// A query that read the manifest listing the small files, and opens them only after a
    /// compaction replaced them, must still find them: they are deleted when it ends. (Deleting
    /// at once makes it fail: "No such file or directory".)
    #[test]
    fn a_query_that_read_the_old_manifest_still_reads_the_files_compaction_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::gen::events_chunk(0, 10, 1000, 1);
        let mut writer = TableWriter::open(
            dir.path(),
            "acme",
            "events",
            &first.schema(),
            &ImportOptions {
                buffer_bytes_max: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        for chunk in 0..100 {
            // 10 rows in a few hours: one partition, one file per chunk.
            writer
                .write(&crate::gen::events_chunk(chunk * 10, 10, 1_000_000, 1))
                .unwrap();
        }
        writer.finish().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.cores = 2;
        config.pin_cores = false;
        config.compaction.policy = CompactionPolicy {
            files_per_partition: 8,
            job_bytes: 64 << 20,
        };
        let engine = Engine::open(config).unwrap();
        // A sum: a count would come from the manifest without opening a file.
        let sum = || {
            let result = engine.sql("acme", "SELECT SUM(id) FROM events").unwrap();
            result.batches[0]
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0)
        };
        QUERY_PAUSE_MS.store(300, Ordering::Relaxed);
        std::thread::scope(|scope| {
            let query = scope.spawn(sum);
            #[allow(clippy::disallowed_methods)] // a test thread, not a core
            std::thread::sleep(std::time::Duration::from_millis(100));
            let report = engine.compact().unwrap();
            assert_eq!((report.jobs, report.files_removed), (1, 100));
            assert_eq!(query.join().unwrap(), 1000 * 1001 / 2);
        });
        QUERY_PAUSE_MS.store(0, Ordering::Relaxed);
        assert_eq!(sum(), 1000 * 1001 / 2);
    }
}
