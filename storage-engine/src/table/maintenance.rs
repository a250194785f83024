//! Rewriting a table's files in place: compaction (the small files of a partition merged into
//! one sorted file) and retention (whole date partitions dropped). Both publish a manifest
//! without the old files under the table lock; the old files are *retired*, not deleted: queries
//! that read the previous manifest may still open them, so the engine deletes them once none
//! of those runs (`maintenance::Retirement` in the engine layer). Retired paths are registered
//! here, process-wide, so that no import's orphan sweep takes them meanwhile.

use crate::error::{Error, Result};
use crate::io::crash::{self, Event};
use crate::table::manifest::{self, ColumnDef, FileEntry, TableLock, TableManifest};
use crate::table::writer::{self, ImportOptions, ImportSummary, TableWriter};
use crate::value::{format_date, parse_date};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rows per batch read from a file being compacted.
const READ_BATCH_ROWS: usize = 65_536;

/// Retired paths, process-wide. Like the manifest cache, only threads that may block use it
/// (imports' publication, compaction, deletion: all off the cores), so no core waits on it.
#[allow(clippy::disallowed_types)]
fn retired() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    static RETIRED: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());
    // Consistent whatever panicked while holding it: paths are inserted and removed whole.
    RETIRED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks files a published manifest no longer lists but running queries may still read.
pub fn retire(paths: impl IntoIterator<Item = PathBuf>) {
    retired().extend(paths);
}

/// True while `path` is retired and not yet deleted.
pub fn is_retired(path: &Path) -> bool {
    retired().contains(path)
}

/// Deletes retired files (a file already gone is fine) and fsyncs their directories.
pub fn delete_retired(paths: &[PathBuf]) -> Result<()> {
    let mut directories = Vec::new();
    let mut first_error = None;
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => crash::after(Event::Remove(path)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                first_error.get_or_insert(Error::io(path, error));
                continue;
            }
        }
        if let Some(parent) = path.parent() {
            if !directories.contains(&parent) {
                directories.push(parent);
            }
        }
    }
    for dir in directories {
        // An emptied partition directory goes too (a later file recreates it).
        if std::fs::remove_dir(dir).is_ok() {
            if let Some(parent) = dir.parent() {
                let _ = manifest::sync_dir(parent);
            }
        } else {
            let _ = manifest::sync_dir(dir);
        }
    }
    let mut set = retired();
    for path in paths {
        set.remove(path);
    }
    first_error.map_or(Ok(()), Err)
}

/// When a partition's small files are merged.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionPolicy {
    /// A partition with more files than this is compacted.
    pub files_per_partition: usize,
    /// File bytes one compaction job reads at most (its rows are held in memory to be sorted).
    pub job_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            files_per_partition: 8,
            job_bytes: 64 << 20,
        }
    }
}

/// One compaction: files of one partition of one table incarnation to merge into one.
#[derive(Clone, Debug)]
pub struct Job {
    pub tenant: String,
    pub table: String,
    pub incarnation: u64,
    /// The partition's directory, relative to the table (`date=2024-01-01`).
    pub partition: String,
    pub files: Vec<FileEntry>,
    /// The table's columns when the job was planned (older files hold only the first ones).
    pub columns: Vec<ColumnDef>,
}

impl Job {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

fn partition_of(file: &FileEntry) -> &str {
    file.path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The compaction jobs a table needs under `policy`: for each partition holding more files
/// than the target (in path order), its smallest files that fit one job together, if at least
/// two do.
pub fn plan(manifest: &TableManifest, policy: &CompactionPolicy) -> Vec<Job> {
    let mut partitions: BTreeMap<&str, Vec<&FileEntry>> = BTreeMap::new();
    for file in &manifest.files {
        partitions.entry(partition_of(file)).or_default().push(file);
    }
    let mut jobs = Vec::new();
    for (partition, mut files) in partitions {
        if files.len() <= policy.files_per_partition.max(1) {
            continue;
        }
        files.sort_by_key(|f| (f.bytes, f.id));
        let mut chosen = Vec::new();
        let mut bytes = 0;
        for file in files {
            if bytes + file.bytes > policy.job_bytes {
                break;
            }
            bytes += file.bytes;
            chosen.push(file.clone());
        }
        if chosen.len() >= 2 {
            jobs.push(Job {
                tenant: manifest.tenant.clone(),
                table: manifest.table.clone(),
                incarnation: manifest.incarnation,
                partition: partition.to_owned(),
                files: chosen,
                columns: manifest.columns.clone(),
            });
        }
    }
    jobs
}

/// Merges a job's files into new files sorted by the table's time column (the table's writer
/// settings; one file unless the rows exceed the target file size) and publishes them in place
/// of the old ones. Fails, changing nothing, if the table was dropped or any of the files is no
/// longer listed. The replaced files are retired (see the module comment); the summary lists
/// them.
pub fn compact(data_dir: &Path, job: &Job) -> Result<ImportSummary> {
    let table_dir = manifest::table_dir(data_dir, &job.tenant, &job.table);
    let schema = writer::nullable_schema(&job.columns);
    let mut writer = TableWriter::open(
        data_dir,
        &job.tenant,
        &job.table,
        &schema,
        &ImportOptions {
            // All rows of the job in one sorted run.
            buffer_bytes_max: Some(u64::MAX),
            replaces: Some((job.incarnation, job.files.iter().map(|f| f.id).collect())),
            ..Default::default()
        },
    )?;
    for file in &job.files {
        let path = table_dir.join(&file.path);
        let handle = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(handle)
            .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
            .map_err(|e| corrupt(&path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(&path, e))?;
            writer.write(&writer::pad_columns(&batch, &job.columns)?)?;
        }
    }
    writer.finish()
}

fn corrupt(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::CorruptFile {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// What a retention run removed from a table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dropped {
    /// The partitions' dates, `YYYY-MM-DD`, oldest first.
    pub dates: Vec<String>,
    pub files: Vec<FileEntry>,
    pub rows: u64,
}

/// Drops, in one manifest publication, every file of `tenant/table` whose date partition is
/// before `cutoff` (`YYYY-MM-DD`). The files are retired, not deleted (see the module
/// comment). A table without date partitions is an error; nothing older: an empty result.
pub fn drop_partitions_before(
    data_dir: &Path,
    tenant: &str,
    table: &str,
    cutoff: &str,
) -> Result<Dropped> {
    let cutoff_day = parse_date(cutoff)
        .ok_or_else(|| Error::Config(format!("invalid date {cutoff:?} (expected YYYY-MM-DD)")))?;
    let _lock = TableLock::acquire(data_dir, tenant, table)?;
    let mut current =
        manifest::load(data_dir, tenant, table)?.ok_or_else(|| Error::NoSuchTable {
            tenant: tenant.to_owned(),
            table: table.to_owned(),
        })?;
    if current.partition.time_column.is_none() {
        return Err(Error::Config(format!(
            "table {tenant}/{table} is not partitioned by date"
        )));
    }
    let mut dropped = Dropped::default();
    let mut kept = Vec::with_capacity(current.files.len());
    for file in std::mem::take(&mut current.files) {
        let day = file
            .path
            .split('/')
            .next()
            .and_then(|p| p.strip_prefix("date="))
            .and_then(parse_date);
        match day {
            Some(day) if day < cutoff_day => {
                let date = format_date(day);
                if !dropped.dates.contains(&date) {
                    dropped.dates.push(date);
                }
                dropped.rows += file.rows;
                dropped.files.push(file);
            }
            _ => kept.push(file),
        }
    }
    current.files = kept;
    if dropped.files.is_empty() {
        return Ok(dropped);
    }
    dropped.dates.sort();
    current.version += 1;
    let table_dir = manifest::table_dir(data_dir, tenant, table);
    retire(dropped.files.iter().map(|f| table_dir.join(&f.path)));
    manifest::publish(data_dir, &current)?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::stats::ColumnStats;

    fn file(id: u64, path: &str, bytes: u64) -> FileEntry {
        FileEntry {
            id,
            path: path.into(),
            rows: 1,
            bytes,
            crc32: None,
            columns: Vec::<ColumnStats>::new(),
            digest: None,
        }
    }

    fn manifest(files: Vec<FileEntry>) -> TableManifest {
        TableManifest {
            format_version: manifest::FORMAT_VERSION,
            tenant: "t".into(),
            table: "e".into(),
            incarnation: 7,
            version: 1,
            columns: Vec::new(),
            partition: Default::default(),
            sort_column: None,
            writer: Default::default(),
            next_file_id: 100,
            files,
            ingest: Default::default(),
        }
    }

    #[test]
    fn only_partitions_over_the_target_are_compacted_smallest_files_first_within_a_job() {
        let policy = CompactionPolicy {
            files_per_partition: 3,
            job_bytes: 100,
        };
        let mut files = Vec::new();
        // Over the target: five files, of which the four smallest fit in 100 bytes.
        for (id, bytes) in [(1, 40), (2, 10), (3, 20), (4, 30), (5, 35)] {
            files.push(file(
                id,
                &format!("date=2024-01-01/part-{id:06}.parquet"),
                bytes,
            ));
        }
        // At the target: left alone.
        for id in 6..9 {
            files.push(file(
                id,
                &format!("date=2024-01-02/part-{id:06}.parquet"),
                1,
            ));
        }
        // Over the target, but no two files fit one job.
        for id in 9..14 {
            files.push(file(
                id,
                &format!("date=2024-01-03/part-{id:06}.parquet"),
                60,
            ));
        }
        let jobs = plan(&manifest(files), &policy);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].partition, "date=2024-01-01");
        let ids: Vec<u64> = jobs[0].files.iter().map(|f| f.id).collect();
        assert_eq!(ids, [2, 3, 4, 5]);
        assert_eq!(jobs[0].bytes(), 95);
    }
}
