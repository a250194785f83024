//! Writing tables: normalises incoming Arrow batches to the engine's column types, splits them by
//! partition (UTC date of the time column, then optional columns), buffers each partition, and
//! writes sorted Parquet files with the table's writer settings (row group and page sizes,
//! dictionary, compression, statistics and page index). Files are fsynced before the manifest that
//! lists them is published; until then no reader can see them.
//!
//! A value that does not fit its column's type, and a NULL in a NOT NULL column, fail the import
//! with an error naming the column and the row (counted from 1 across the whole import).
//!
//! An import writes its files into a staging directory of its own (`_staging/<id>` in the table
//! directory, never listed by a manifest) and takes the table lock only to publish: it then
//! renames them into their partitions under fresh file ids and swaps in the manifest. A slow
//! import therefore never holds up another one.
//!
//! This is the import path; the durable WAL-based ingestion of a later issue feeds the same
//! `TableWriter`.

use crate::error::{Error, Result};
use crate::io::crash::{self, Event};
use crate::io::direct_writer::DirectFileWriter;
use crate::table::manifest::{
    self, ColumnDef, Compression, FileEntry, PartitionSpec, TableLock, TableManifest,
    WriterSettings,
};
use crate::table::stats::{self, ColumnStats};
use crate::value::{engine_type, format_date, ColumnType, Scalar, MICROS_PER_DAY};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use hashbrown::HashMap;
use parquet::arrow::ArrowWriter;
use parquet::basic::ZstdLevel;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of one import into a table.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Partition spec for a new table; `time_column: None` picks the first timestamp column.
    /// Ignored for an existing table (its manifest decides).
    pub partition: Option<PartitionSpec>,
    /// Writer settings for a new table (an existing table keeps its own).
    pub writer: Option<WriterSettings>,
    /// Bytes of decoded rows buffered across partitions before the largest are flushed.
    pub buffer_bytes_max: Option<u64>,
    /// Set when streaming ingestion flushes buffered rows: the table must exist as this
    /// incarnation, and the published manifest records what the flush covers.
    pub ingest: Option<IngestUpdate>,
    /// Set by compaction: the files (ids in the table as this incarnation) the import's rows
    /// come from. Publishing removes them from the manifest in the same swap that adds the new
    /// files, and fails, applying nothing, if any of them is no longer listed.
    pub replaces: Option<(u64, Vec<u64>)>,
}

/// What an ingestion flush adds to the manifest it publishes (see `manifest::IngestMarks`).
#[derive(Clone, Debug, Default)]
pub struct IngestUpdate {
    pub incarnation: u64,
    /// Per log id, the highest LSN the flushed rows come from.
    pub logs: Vec<(String, u64)>,
    /// Log ids still in use: marks of other logs are dropped (their segments are gone).
    /// `None` keeps every mark.
    pub live_logs: Option<Vec<String>>,
    /// Producers' windows, replacing the manifest's entries for them.
    pub producers: Vec<(String, crate::ingest::window::ProducerWindow)>,
}

const BUFFER_BYTES_DEFAULT: u64 = 1 << 30;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PartitionKey {
    day: Option<i64>,
    values: Vec<String>,
}

impl PartitionKey {
    fn directory(&self, spec: &PartitionSpec) -> PathBuf {
        let mut path = PathBuf::new();
        if let Some(day) = self.day {
            path.push(format!("date={}", format_date(day)));
        }
        for (column, value) in spec.columns.iter().zip(&self.values) {
            path.push(format!("{column}={}", escape_partition_value(value)));
        }
        path
    }
}

fn escape_partition_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.' {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    if escaped.is_empty() || escaped.starts_with('.') {
        escaped.insert(0, '%');
    }
    escaped
}

#[derive(Default)]
struct PartitionBuffer {
    batches: Vec<RecordBatch>,
    bytes: u64,
}

/// A file an import wrote and has not published: what a replicated import's leader sends its
/// followers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StagedFile {
    /// The partition directory it goes to, relative to the table directory ("" for none).
    pub directory: String,
    /// Its entry; `path` is its name in the staging directory until it is published.
    pub entry: FileEntry,
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub manifest_version: u64,
    /// The entries of the files a compaction replaced (see `ImportOptions::replaces`).
    pub replaced: Vec<FileEntry>,
}

pub struct TableWriter {
    data_dir: PathBuf,
    /// The table as it was when the import began (or the new table it creates); publishing
    /// re-reads the current manifest under the lock and appends to that.
    manifest: TableManifest,
    creates_table: bool,
    schema: SchemaRef,
    time_index: Option<usize>,
    partition_indexes: Vec<usize>,
    buffers: HashMap<PartitionKey, PartitionBuffer>,
    buffered_bytes: u64,
    buffer_bytes_max: u64,
    staging: Staging,
    /// Files written to the staging directory: their partition directory and entry (`path`
    /// relative to the staging directory until published).
    staged: Vec<(PathBuf, FileEntry)>,
    rows: u64,
    ingest: Option<IngestUpdate>,
    replaces: Option<(u64, Vec<u64>)>,
}

/// Where an import's files wait until it commits.
const STAGING_DIR: &str = "_staging";
/// In a staging directory: the file its import holds an exclusive `flock` on while it runs, so a
/// later import can tell an abandoned staging directory (owner gone) from one in use.
const STAGING_OWNER_FILE: &str = "_owner";
/// A staging directory is built under this prefix and renamed once its owner lock is held.
const STAGING_NEW_PREFIX: &str = ".new-";

/// One import's staging directory; removed (with whatever is left in it) when dropped.
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
    _owner: std::fs::File,
}

impl Staging {
    pub(crate) fn create(table_dir: &Path) -> Result<Staging> {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let root = table_dir.join(STAGING_DIR);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-{nanos}-{sequence}", std::process::id());
        let building = root.join(format!("{STAGING_NEW_PREFIX}{name}"));
        // Another import may remove the (empty) root between our two calls, or while
        // `create_dir_all` finds it existing and then checks that it is a directory (it then
        // fails with "File exists"): try again.
        let mut attempts = 0;
        loop {
            let retry = |e: &std::io::Error| {
                matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::AlreadyExists
                )
            };
            match std::fs::create_dir_all(&root) {
                Ok(()) => {}
                Err(e) if retry(&e) && attempts < 8 => {
                    attempts += 1;
                    continue;
                }
                Err(e) => return Err(Error::io(&root, e)),
            }
            match std::fs::create_dir(&building) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
                Err(e) => return Err(Error::io(&building, e)),
            }
        }
        let owner_path = building.join(STAGING_OWNER_FILE);
        let owner = std::fs::File::create(&owner_path).map_err(|e| Error::io(&owner_path, e))?;
        if !try_lock(&owner).map_err(|e| Error::io(&owner_path, e))? {
            return Err(Error::Internal(format!(
                "{} is locked by another import",
                owner_path.display()
            )));
        }
        let dir = root.join(name);
        std::fs::rename(&building, &dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Staging { dir, _owner: owner })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Best effort: a directory left behind is removed by a later import of the table. The
        // root goes too when no other import uses it (removing a non-empty directory fails).
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(root) = self.dir.parent() {
            let _ = std::fs::remove_dir(root);
        }
    }
}

/// Takes an exclusive `flock` without waiting; false if another open file holds it.
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, owned descriptor; no memory is shared with the kernel.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(error)
}

/// Removes the staging directories of imports that are gone (their owner lock is free).
fn remove_abandoned_staging(table_dir: &Path) -> Result<()> {
    let root = table_dir.join(STAGING_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_NEW_PREFIX)
        {
            // Being set up right now, or abandoned while empty.
            continue;
        }
        let owner_path = path.join(STAGING_OWNER_FILE);
        let abandoned = match std::fs::File::open(&owner_path) {
            Ok(owner) => try_lock(&owner).map_err(|e| Error::io(&owner_path, e))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => true,
            Err(error) => return Err(Error::io(&owner_path, error)),
        };
        if abandoned {
            // A finished import removes its own directory without the table lock (its owner
            // file goes first), so the directory may vanish under us.
            manifest::remove_tree(&path)?;
        }
    }
    Ok(())
}

/// The Arrow schema the engine stores for a manifest's columns.
/// The table's columns as Arrow fields, every one nullable (as stored).
pub fn nullable_schema(columns: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.to_arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// `batch` (the table's first columns, as written before the table gained more) with NULL
/// columns appended up to `columns`, in `nullable_schema(columns)`.
pub fn pad_columns(batch: &RecordBatch, columns: &[ColumnDef]) -> Result<RecordBatch> {
    let schema = nullable_schema(columns);
    let mut arrays = batch.columns().to_vec();
    if arrays.len() > columns.len() {
        return Err(Error::Internal(format!(
            "a batch of {} columns for a table of {}",
            arrays.len(),
            columns.len()
        )));
    }
    for field in &schema.fields()[arrays.len()..] {
        arrays.push(arrow_array::new_null_array(
            field.data_type(),
            batch.num_rows(),
        ));
    }
    RecordBatch::try_new(schema, arrays).map_err(|e| Error::Import(e.to_string()))
}

pub fn arrow_schema(columns: &[ColumnDef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.column_type.to_arrow(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

impl TableWriter {
    /// Opens `tenant/table` for appending batches of `input_schema`, creating the table if needed.
    pub fn open(
        data_dir: &Path,
        tenant: &str,
        table: &str,
        input_schema: &Schema,
        options: &ImportOptions,
    ) -> Result<TableWriter> {
        manifest::validate_name("tenant", tenant)?;
        manifest::validate_name("table", table)?;
        let mut columns = Vec::with_capacity(input_schema.fields().len());
        for field in input_schema.fields() {
            let name = field.name().to_lowercase();
            if columns.iter().any(|c: &ColumnDef| c.name == name) {
                return Err(Error::Import(format!("duplicate column name {name}")));
            }
            columns.push(ColumnDef {
                column_type: engine_type(&name, field.data_type())?,
                name,
                nullable: field.is_nullable(),
            });
        }
        let existing = manifest::load(data_dir, tenant, table)?;
        let incarnation = options
            .ingest
            .as_ref()
            .map(|u| u.incarnation)
            .or(options.replaces.as_ref().map(|r| r.0));
        if let Some(incarnation) = incarnation {
            if existing
                .as_ref()
                .is_none_or(|m| m.incarnation != incarnation)
            {
                return Err(Error::NoSuchTable {
                    tenant: tenant.to_owned(),
                    table: table.to_owned(),
                });
            }
        }
        let creates_table = existing.is_none();
        let manifest = match existing {
            Some(existing) => {
                let compatible = existing.columns.len() == columns.len()
                    && existing
                        .columns
                        .iter()
                        .zip(&columns)
                        .all(|(a, b)| a.name == b.name && a.column_type == b.column_type);
                if !compatible {
                    return Err(Error::Import(format!(
                        "input schema {} does not match table {tenant}/{table} schema {}",
                        describe_columns(&columns),
                        describe_columns(&existing.columns)
                    )));
                }
                existing
            }
            None => {
                let mut partition = options.partition.clone().unwrap_or_default();
                if partition.time_column.is_none() {
                    partition.time_column = columns
                        .iter()
                        .find(|c| c.column_type == ColumnType::Timestamp)
                        .map(|c| c.name.clone());
                }
                for name in partition.time_column.iter().chain(&partition.columns) {
                    if !columns.iter().any(|c| &c.name == name) {
                        return Err(Error::Import(format!(
                            "partition column {name} is not in the input"
                        )));
                    }
                }
                if let Some(name) = &partition.time_column {
                    let column = columns.iter().find(|c| &c.name == name);
                    if let Some(c) = column.filter(|c| {
                        !matches!(c.column_type, ColumnType::Timestamp | ColumnType::Date)
                    }) {
                        return Err(Error::Import(format!(
                            "time column {name} is {}: partitioning by date needs a TIMESTAMP or DATE column",
                            c.column_type
                        )));
                    }
                }
                TableManifest {
                    format_version: manifest::FORMAT_VERSION,
                    tenant: tenant.to_owned(),
                    table: table.to_owned(),
                    incarnation: manifest::new_incarnation(),
                    version: 0,
                    sort_column: partition.time_column.clone(),
                    columns,
                    partition,
                    writer: options.writer.clone().unwrap_or_default(),
                    next_file_id: 1,
                    files: Vec::new(),
                    ingest: Default::default(),
                }
            }
        };
        let staging = {
            let _lock = TableLock::shared(data_dir, tenant, table)?;
            Staging::create(&manifest::table_dir(data_dir, tenant, table))?
        };
        // Every column may hold NULLs once several imports are merged, so the stored schema is
        // nullable throughout.
        let schema = arrow_schema(
            &manifest
                .columns
                .iter()
                .map(|c| ColumnDef {
                    nullable: true,
                    ..c.clone()
                })
                .collect::<Vec<_>>(),
        );
        let time_index = manifest
            .partition
            .time_column
            .as_ref()
            .and_then(|n| manifest.column_index(n));
        let partition_indexes = manifest
            .partition
            .columns
            .iter()
            .filter_map(|n| manifest.column_index(n))
            .collect();
        Ok(TableWriter {
            data_dir: data_dir.to_owned(),
            manifest,
            creates_table,
            schema,
            time_index,
            partition_indexes,
            buffers: HashMap::new(),
            buffered_bytes: 0,
            buffer_bytes_max: options.buffer_bytes_max.unwrap_or(BUFFER_BYTES_DEFAULT),
            staging,
            staged: Vec::new(),
            rows: 0,
            ingest: options.ingest.clone(),
            replaces: options.replaces.clone(),
        })
    }

    /// The schema batches are normalised to.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Buffers one batch (any schema whose columns match the table by position and type family).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.normalise(batch, self.rows)?;
        self.rows += batch.num_rows() as u64;
        // Slices share the batch's buffers: charge each part its share of the rows.
        let bytes_per_row = batch.get_array_memory_size() as u64 / batch.num_rows() as u64 + 1;
        for (key, part) in self.split(&batch)? {
            let bytes = part.num_rows() as u64 * bytes_per_row;
            let buffer = self.buffers.entry(key).or_default();
            buffer.batches.push(part);
            buffer.bytes += bytes;
            self.buffered_bytes += bytes;
        }
        while self.buffered_bytes > self.buffer_bytes_max {
            let largest = self
                .buffers
                .iter()
                .max_by_key(|(_, b)| b.bytes)
                .map(|(k, _)| k.clone());
            let Some(key) = largest else { break };
            self.flush_partition(&key)?;
        }
        Ok(())
    }

    /// Writes every buffered partition, then, under the table lock, moves the new files into the
    /// table and publishes the manifest listing them.
    pub fn finish(mut self) -> Result<ImportSummary> {
        self.flush_all()?;
        let (tenant, table) = (&self.manifest.tenant, &self.manifest.table);
        let _lock = TableLock::acquire(&self.data_dir, tenant, table)?;
        let changed = |what: &str| {
            Error::Import(format!(
                "table {tenant}/{table} {what} during this import; nothing was imported"
            ))
        };
        let mut current = match manifest::load(&self.data_dir, tenant, table)? {
            Some(current) => {
                // Columns added since (schema evolution) are fine: this import's rows read
                // NULL in them, as older files' do.
                let known = self.manifest.columns.len();
                if current.columns.get(..known) != Some(&self.manifest.columns[..])
                    || current.partition != self.manifest.partition
                {
                    return Err(changed("changed its columns or partitioning"));
                }
                // Another import may have created the table this one meant to create; an
                // existing table this one opened must still be the same incarnation.
                if !self.creates_table && current.incarnation != self.manifest.incarnation {
                    return Err(changed("was dropped and created again"));
                }
                current
            }
            None if self.creates_table => self.manifest.clone(),
            None => return Err(changed("was dropped")),
        };
        let table_dir = manifest::table_dir(&self.data_dir, tenant, table);
        if !self.staging.dir.is_dir() {
            return Err(changed("was dropped"));
        }
        remove_orphans(&table_dir, &current)?;
        remove_abandoned_staging(&table_dir)?;
        let mut replaced = Vec::new();
        if let Some((_, ids)) = &self.replaces {
            for id in ids {
                let Some(position) = current.files.iter().position(|f| f.id == *id) else {
                    return Err(Error::Import(format!(
                        "file {id} of {tenant}/{table} was removed during this compaction; \
                         nothing was changed"
                    )));
                };
                replaced.push(current.files.remove(position));
            }
        }
        let mut new_files = Vec::with_capacity(self.staged.len());
        let mut directories: Vec<PathBuf> = Vec::new();
        for (directory, mut entry) in std::mem::take(&mut self.staged) {
            let id = current.next_file_id;
            current.next_file_id += 1;
            let relative = directory.join(format!("part-{id:06}.parquet"));
            let partition_dir = table_dir.join(&directory);
            if !directories.contains(&partition_dir) {
                std::fs::create_dir_all(&partition_dir)
                    .map_err(|e| Error::io(&partition_dir, e))?;
                directories.push(partition_dir);
            }
            let staged = self.staging.dir.join(&entry.path);
            let target = table_dir.join(&relative);
            std::fs::rename(&staged, &target).map_err(|e| Error::io(&staged, e))?;
            crash::after(Event::Rename(&target));
            entry.id = id;
            entry.path = relative.to_string_lossy().into_owned();
            let rows = entry.rows;
            entry
                .columns
                .resize(current.columns.len(), ColumnStats::nulls(rows));
            new_files.push(entry);
        }
        // The renames (and new directories up to the data directory, tenant and table included
        // for a new table) reach the disk before the manifest that lists the files.
        let mut synced = hashbrown::HashSet::new();
        for partition_dir in &directories {
            let mut dir = partition_dir.as_path();
            while synced.insert(dir.to_owned()) {
                manifest::sync_dir(dir)?;
                if dir == self.data_dir {
                    break;
                }
                let Some(parent) = dir.parent() else { break };
                dir = parent;
            }
        }
        let summary = ImportSummary {
            rows: self.rows,
            files: new_files.len() as u64,
            bytes: new_files.iter().map(|f| f.bytes).sum(),
            manifest_version: current.version + 1,
            replaced,
        };
        current.files.append(&mut new_files);
        if let Some(update) = self.ingest.take() {
            let marks = &mut current.ingest;
            if let Some(live) = &update.live_logs {
                marks.logs.retain(|id, _| live.contains(id));
            }
            for (id, lsn) in update.logs {
                let mark = marks.logs.entry(id).or_default();
                *mark = (*mark).max(lsn);
            }
            for (producer, window) in update.producers {
                marks.producers.entry(producer).or_default().union(&window);
            }
            crate::ingest::window::forget_oldest(&mut marks.producers);
        }
        current.version += 1;
        // Replaced files stay on disk for the queries still reading them: until their deleter
        // (the engine) releases them, no orphan sweep may take them. (If the publication fails
        // they stay listed, or, when it failed after its rename, stay until a restart's sweep.)
        crate::table::maintenance::retire(summary.replaced.iter().map(|f| table_dir.join(&f.path)));
        manifest::publish(&self.data_dir, &current)?;
        Ok(summary)
    }

    /// Writes every buffered partition to staged files.
    fn flush_all(&mut self) -> Result<()> {
        let mut keys: Vec<PartitionKey> = self.buffers.keys().cloned().collect();
        keys.sort_by(|a, b| (a.day, &a.values).cmp(&(b.day, &b.values)));
        for key in keys {
            self.flush_partition(&key)?;
        }
        Ok(())
    }

    /// Writes every buffered row to staged files (fsynced, as every file written) and lists
    /// every file staged so far, for a replicated import's leader to send to its followers
    /// before it publishes (`finish`). The files are in `staging_dir`, named by their entries.
    pub fn stage(&mut self) -> Result<Vec<StagedFile>> {
        self.flush_all()?;
        Ok(self.staged_since(0))
    }

    /// The files staged so far (written whole and fsynced), from the `first`th on, without
    /// writing what is buffered: what a replicated import's leader sends while it writes.
    pub fn staged_since(&self, first: usize) -> Vec<StagedFile> {
        self.staged
            .get(first..)
            .unwrap_or_default()
            .iter()
            .map(|(directory, entry)| StagedFile {
                directory: directory.to_string_lossy().into_owned(),
                entry: entry.clone(),
            })
            .collect()
    }

    /// Where this import's files wait until it publishes.
    pub fn staging_dir(&self) -> &Path {
        &self.staging.dir
    }

    /// Opens `tenant/table`, which must exist, for an import whose files another replica wrote
    /// and sends: they are put into `staging_dir` (`replica::put_piece`), then `adopt`ed.
    pub fn open_for_copies(data_dir: &Path, tenant: &str, table: &str) -> Result<TableWriter> {
        let Some(existing) = manifest::load(data_dir, tenant, table)? else {
            return Err(Error::NoSuchTable {
                tenant: tenant.to_owned(),
                table: table.to_owned(),
            });
        };
        let schema = arrow_schema(&existing.columns);
        let mut writer = TableWriter::open(data_dir, tenant, table, &schema, &Default::default())?;
        if writer.creates_table {
            // Dropped between the two reads: never create it here.
            return Err(Error::NoSuchTable {
                tenant: tenant.to_owned(),
                table: table.to_owned(),
            });
        }
        writer.creates_table = false;
        Ok(writer)
    }

    /// Takes files another replica staged and sent into this import, each checked against its
    /// entry's size and CRC-32 and made durable; `finish` then publishes them with the table's
    /// next file ids. Nothing is taken when one fails.
    pub fn adopt(&mut self, files: Vec<StagedFile>) -> Result<()> {
        let columns = self.manifest.columns.len();
        let mut adopted = Vec::with_capacity(files.len());
        for file in files {
            let StagedFile { directory, entry } = file;
            let name_is_plain = Path::new(&entry.path).components().count() == 1;
            if !name_is_plain
                || !manifest::is_safe_relative_path(&entry.path)
                || !(directory.is_empty() || manifest::is_safe_relative_path(&directory))
                || entry.columns.len() != columns
                || adopted
                    .iter()
                    .any(|(_, e): &(PathBuf, FileEntry)| e.path == entry.path)
                || self.staged.iter().any(|(_, e)| e.path == entry.path)
            {
                return Err(Error::Import(format!(
                    "staged file {:?} in {directory:?} is inconsistent with table {}/{}",
                    entry.path, self.manifest.tenant, self.manifest.table
                )));
            }
            crate::table::replica::check_staged(&self.staging.dir, &entry)?;
            adopted.push((PathBuf::from(directory), entry));
        }
        manifest::sync_dir(&self.staging.dir)?;
        self.rows += adopted.iter().map(|(_, e)| e.rows).sum::<u64>();
        self.staged.append(&mut adopted);
        Ok(())
    }

    /// Converts a batch to the table's types; `rows_before` is the number of rows of this import
    /// before the batch (errors name rows counted from 1 across the import).
    fn normalise(&self, batch: &RecordBatch, rows_before: u64) -> Result<RecordBatch> {
        if batch.num_columns() != self.schema.fields().len() {
            return Err(Error::Import(format!(
                "batch has {} columns, table has {}",
                batch.num_columns(),
                self.schema.fields().len()
            )));
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for ((array, field), column) in batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .zip(&self.manifest.columns)
        {
            let array = normalise_array(array, field, rows_before)?;
            if !column.nullable {
                if let Some(row) = first_null(&array) {
                    return Err(Error::Import(format!(
                        "column {}, row {}: NULL in a NOT NULL column",
                        column.name,
                        rows_before + row as u64 + 1
                    )));
                }
            }
            columns.push(array);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| Error::Import(e.to_string()))
    }

    fn key_of(&self, batch: &RecordBatch, row: usize) -> PartitionKey {
        let day = self.time_index.and_then(|index| {
            let column = batch.column(index);
            if !column.is_valid(row) {
                return None;
            }
            // A TIMESTAMP's UTC date, or a DATE itself (days since the epoch).
            match column.as_primitive_opt::<TimestampMicrosecondType>() {
                Some(times) => Some(times.value(row).div_euclid(MICROS_PER_DAY)),
                None => column
                    .as_primitive_opt::<Date32Type>()
                    .map(|days| days.value(row) as i64),
            }
        });
        let values = self
            .partition_indexes
            .iter()
            .map(|&index| partition_value(batch.column(index), row))
            .collect();
        PartitionKey { day, values }
    }

    /// Splits a batch into per-partition slices. Sorted input yields long runs, sliced without copy.
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(PartitionKey, RecordBatch)>> {
        if self.time_index.is_none() && self.partition_indexes.is_empty() {
            return Ok(vec![(
                PartitionKey {
                    day: None,
                    values: Vec::new(),
                },
                batch.clone(),
            )]);
        }
        let mut runs: Vec<(PartitionKey, usize, usize)> = Vec::new();
        for row in 0..batch.num_rows() {
            let key = self.key_of(batch, row);
            match runs.last_mut() {
                Some((last, _, end)) if *last == key => *end = row + 1,
                _ => runs.push((key, row, row + 1)),
            }
        }
        if runs.len() <= batch.num_rows() / 64 + 1 {
            return Ok(runs
                .into_iter()
                .map(|(key, start, end)| (key, batch.slice(start, end - start)))
                .collect());
        }
        let mut rows_by_key: HashMap<PartitionKey, Vec<u32>> = HashMap::new();
        for (key, start, end) in runs {
            rows_by_key
                .entry(key)
                .or_default()
                .extend(start as u32..end as u32);
        }
        let mut parts = Vec::with_capacity(rows_by_key.len());
        for (key, rows) in rows_by_key {
            let indices = arrow_array::UInt32Array::from(rows);
            let part = arrow_select::take::take_record_batch(batch, &indices)
                .map_err(|e| Error::Import(e.to_string()))?;
            parts.push((key, part));
        }
        Ok(parts)
    }

    fn flush_partition(&mut self, key: &PartitionKey) -> Result<()> {
        let Some(buffer) = self.buffers.remove(key) else {
            return Ok(());
        };
        self.buffered_bytes -= buffer.bytes;
        let batch = arrow_select::concat::concat_batches(&self.schema, &buffer.batches)
            .map_err(|e| Error::Import(e.to_string()))?;
        drop(buffer);
        let batch = match self.time_index {
            Some(index) => sort_by_column(&batch, index)?,
            None => batch,
        };
        let directory = key.directory(&self.manifest.partition);
        // Shared with other imports' writes, exclusive of a drop: under it the staging directory
        // either still exists or the table was dropped (and nothing may recreate its directories).
        let _lock = TableLock::shared(&self.data_dir, &self.manifest.tenant, &self.manifest.table)?;
        if !self.staging.dir.is_dir() {
            return Err(Error::Import(format!(
                "table {}/{} was dropped during this import; nothing was imported",
                self.manifest.tenant, self.manifest.table
            )));
        }
        let mut start = 0;
        while start < batch.num_rows() {
            // Staged files get their table file id (and name) when the import publishes.
            let relative = PathBuf::from(format!("{:06}.parquet", self.staged.len() + 1));
            let (entry, written_rows) = write_file(
                &self.staging.dir,
                &relative,
                0,
                &batch,
                start,
                &self.manifest,
            )?;
            start += written_rows;
            self.staged.push((directory.clone(), entry));
        }
        Ok(())
    }
}

/// Deletes Parquet files under the table directory that the manifest does not list: leftovers of
/// an import that died while publishing (never visible to readers). Staging directories are left
/// to `remove_abandoned_staging`. Runs under the table lock.
fn remove_orphans(table_dir: &Path, manifest: &TableManifest) -> Result<usize> {
    let listed: hashbrown::HashSet<PathBuf> = manifest
        .files
        .iter()
        .map(|f| table_dir.join(&f.path))
        .collect();
    let mut removed = 0;
    let staging = table_dir.join(STAGING_DIR);
    let mut pending = vec![table_dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if path != staging {
                    pending.push(path);
                }
            } else if name.starts_with("part-")
                && name.ends_with(".parquet")
                && !listed.contains(&path)
                && !crate::table::maintenance::is_retired(&path)
            {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                crash::after(Event::Remove(&path));
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn describe_columns(columns: &[ColumnDef]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.column_type))
        .collect();
    format!("({})", parts.join(", "))
}

fn partition_value(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "__null__".to_owned();
    }
    match arrow_cast::display::ArrayFormatter::try_new(array.as_ref(), &Default::default()) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(_) => String::new(),
    }
}

/// The first row (from 0) holding a NULL.
pub(crate) fn first_null(array: &ArrayRef) -> Option<usize> {
    let nulls = array.logical_nulls()?;
    (nulls.null_count() > 0).then(|| nulls.iter().position(|valid| !valid))?
}

/// Casts with arrow's safe cast, which turns a value that does not fit into NULL, then refuses
/// any row that was a value before and is NULL after, naming the column, the row and the value.
fn cast_checked(
    array: &ArrayRef,
    target: &DataType,
    column: &str,
    rows_before: u64,
) -> Result<ArrayRef> {
    let cast = arrow_cast::cast(array, target).map_err(|e| {
        Error::Import(format!(
            "column {column}: cannot convert {} to {target}: {e}",
            array.data_type()
        ))
    })?;
    let Some(after) = cast.logical_nulls() else {
        return Ok(cast);
    };
    let before = array.logical_nulls();
    if after.null_count() == before.as_ref().map_or(0, |n| n.null_count()) {
        return Ok(cast);
    }
    let lost = (0..array.len())
        .find(|&row| after.is_null(row) && before.as_ref().is_none_or(|n| n.is_valid(row)));
    match lost {
        None => Ok(cast),
        Some(row) => {
            let value =
                arrow_cast::display::ArrayFormatter::try_new(array.as_ref(), &Default::default())
                    .map(|f| f.value(row).to_string())
                    .unwrap_or_default();
            Err(Error::Import(format!(
                "column {column}, row {}: value {value} ({}) does not fit the column's type {target}",
                rows_before + row as u64 + 1,
                array.data_type()
            )))
        }
    }
}

pub(crate) fn normalise_array(
    array: &ArrayRef,
    field: &Field,
    rows_before: u64,
) -> Result<ArrayRef> {
    let target = field.data_type();
    if let DataType::Decimal128(precision, scale) = target {
        return to_decimal(array, *precision, *scale, field.name(), rows_before);
    }
    if array.data_type() == target {
        return Ok(array.clone());
    }
    if let DataType::Timestamp(unit, _) = array.data_type() {
        return timestamp_micros(array, *unit, field.name(), rows_before);
    }
    cast_checked(array, target, field.name(), rows_before)
}

/// Stored timestamps are UTC instants in microseconds without a zone. A timestamp with a zone
/// holds UTC instants already (Arrow's rule), so only the unit changes; zone-less input is taken
/// as UTC. Seconds and milliseconds are multiplied (a value beyond the microsecond range fails
/// naming column and row); nanoseconds are floored to the microsecond they fall in, so
/// 1969-12-31 23:59:59.999999999 stays in 1969 (Arrow's cast would truncate toward zero).
fn timestamp_micros(
    array: &ArrayRef,
    unit: TimeUnit,
    column: &str,
    rows_before: u64,
) -> Result<ArrayRef> {
    use arrow_array::types::{
        TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    let raw: Vec<Option<i64>> = match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().iter().collect(),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .iter()
            .collect(),
        TimeUnit::Microsecond => array
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect(),
        TimeUnit::Nanosecond => array
            .as_primitive::<TimestampNanosecondType>()
            .iter()
            .collect(),
    };
    let mut out = Vec::with_capacity(raw.len());
    for (row, value) in raw.into_iter().enumerate() {
        let micros = match (value, unit) {
            (None, _) => None,
            (Some(v), TimeUnit::Second) => Some(v.checked_mul(1_000_000)),
            (Some(v), TimeUnit::Millisecond) => Some(v.checked_mul(1_000)),
            (Some(v), TimeUnit::Microsecond) => Some(Some(v)),
            (Some(v), TimeUnit::Nanosecond) => Some(Some(v.div_euclid(1_000))),
        };
        match micros {
            None => out.push(None),
            Some(Some(v)) => out.push(Some(v)),
            Some(None) => {
                return Err(Error::Import(format!(
                    "column {column}, row {}: value {} ({}) is beyond the range of microsecond timestamps",
                    rows_before + row as u64 + 1,
                    display_value(array, row),
                    array.data_type()
                )))
            }
        }
    }
    Ok(Arc::new(arrow_array::TimestampMicrosecondArray::from(out)))
}

/// Converts integers and decimals of any width and scale to DECIMAL(precision, scale) exactly:
/// a value with more fractional digits than `scale` (other than zeros), or more digits than
/// `precision`, fails naming the column, the row and the value. Also checks Decimal128 input
/// already of the target type: Arrow does not enforce a decimal's precision, and a value beyond
/// it would not survive Parquet's narrower physical types.
fn to_decimal(
    array: &ArrayRef,
    precision: u8,
    scale: i8,
    column: &str,
    rows_before: u64,
) -> Result<ArrayRef> {
    use arrow_array::types::{Decimal128Type, Decimal256Type, Decimal32Type, Decimal64Type};
    let source = array.data_type().clone();
    let integers;
    let (values, source_scale): (Box<dyn Iterator<Item = Option<i128>> + '_>, i8) = match &source {
        DataType::Decimal32(_, s) => (
            Box::new(
                array
                    .as_primitive::<Decimal32Type>()
                    .iter()
                    .map(|v| v.map(i128::from)),
            ),
            *s,
        ),
        DataType::Decimal64(_, s) => (
            Box::new(
                array
                    .as_primitive::<Decimal64Type>()
                    .iter()
                    .map(|v| v.map(i128::from)),
            ),
            *s,
        ),
        DataType::Decimal128(_, s) => (Box::new(array.as_primitive::<Decimal128Type>().iter()), *s),
        DataType::Decimal256(_, s) => {
            let wide = array.as_primitive::<Decimal256Type>();
            if let Some(row) = (0..wide.len())
                .find(|&row| wide.is_valid(row) && wide.value(row).to_i128().is_none())
            {
                return Err(Error::Import(format!(
                    "column {column}, row {}: value {} does not fit DECIMAL({precision},{scale})",
                    rows_before + row as u64 + 1,
                    display_value(array, row)
                )));
            }
            (
                Box::new(wide.iter().map(|v| v.and_then(|v| v.to_i128()))),
                *s,
            )
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            integers = cast_checked(array, &DataType::Int64, column, rows_before)?;
            (
                Box::new(
                    integers
                        .as_primitive::<arrow_array::types::Int64Type>()
                        .iter()
                        .map(|v| v.map(i128::from)),
                ),
                0,
            )
        }
        other => {
            return Err(Error::Import(format!(
                "column {column}: cannot convert {other} to DECIMAL({precision},{scale}) exactly"
            )))
        }
    };
    let shift = scale as i32 - source_scale as i32;
    let limit = crate::value::decimal_limit(precision);
    let mut out = Vec::with_capacity(array.len());
    for (row, value) in values.enumerate() {
        let Some(value) = value else {
            out.push(None);
            continue;
        };
        let factor = crate::value::pow10(shift.unsigned_abs());
        let converted = match factor {
            _ if value == 0 => Some(0),
            Some(factor) if shift >= 0 => value.checked_mul(factor),
            Some(factor) if value % factor == 0 => Some(value / factor),
            _ => None,
        };
        match converted {
            Some(v) if v.unsigned_abs() < limit.unsigned_abs() => out.push(Some(v)),
            _ => {
                let reason = if converted.is_none() && shift < 0 {
                    format!("has more than {scale} fractional digits")
                } else {
                    format!("has more than {precision} digits")
                };
                return Err(Error::Import(format!(
                    "column {column}, row {}: value {} ({source}) {reason}: it does not fit DECIMAL({precision},{scale}) exactly",
                    rows_before + row as u64 + 1,
                    display_value(array, row)
                )));
            }
        }
    }
    let decimals = arrow_array::Decimal128Array::from(out)
        .with_precision_and_scale(precision, scale)
        .map_err(|e| Error::Import(format!("column {column}: {e}")))?;
    Ok(Arc::new(decimals))
}

fn display_value(array: &ArrayRef, row: usize) -> String {
    arrow_cast::display::ArrayFormatter::try_new(array.as_ref(), &Default::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

fn sort_by_column(batch: &RecordBatch, index: usize) -> Result<RecordBatch> {
    let column = batch.column(index);
    let sorted = column.null_count() == 0
        && match (
            column.as_primitive_opt::<TimestampMicrosecondType>(),
            column.as_primitive_opt::<Date32Type>(),
        ) {
            (Some(times), _) => times.values().windows(2).all(|w| w[0] <= w[1]),
            (None, Some(days)) => days.values().windows(2).all(|w| w[0] <= w[1]),
            _ => false,
        };
    if sorted {
        return Ok(batch.clone());
    }
    let indices = arrow_ord::sort::sort_to_indices(column, None, None)
        .map_err(|e| Error::Import(e.to_string()))?;
    arrow_select::take::take_record_batch(batch, &indices).map_err(|e| Error::Import(e.to_string()))
}

/// Writer properties from table settings.
pub fn writer_properties(
    settings: &WriterSettings,
    sort_column: Option<usize>,
) -> WriterProperties {
    let compression = match settings.compression {
        Compression::Snappy => parquet::basic::Compression::SNAPPY,
        Compression::Zstd => parquet::basic::Compression::ZSTD(ZstdLevel::default()),
        Compression::None => parquet::basic::Compression::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(settings.dictionary)
        .set_data_page_size_limit(settings.page_bytes.max(1) as usize)
        .set_data_page_row_count_limit(settings.page_rows_max.max(1) as usize)
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(Some(settings.row_group_bytes.max(1) as usize))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(sort_column.map(|column| {
            vec![SortingColumn {
                column_idx: column as i32,
                descending: false,
                nulls_first: false,
            }]
        }))
        .build()
}

/// Writes rows `start..` of `batch` into one file until the target size; returns its manifest
/// entry and the number of rows written. The file is fsynced before this returns.
fn write_file(
    table_dir: &Path,
    relative: &Path,
    id: u64,
    batch: &RecordBatch,
    start: usize,
    manifest: &TableManifest,
) -> Result<(FileEntry, usize)> {
    const SLICE_ROWS: usize = 65_536;
    let path = table_dir.join(relative);
    let file = DirectFileWriter::create(&path).map_err(|e| Error::io(&path, e))?;
    let file = ChecksumWriter {
        inner: file,
        hasher: crc32fast::Hasher::new(),
    };
    let sort_column = manifest
        .sort_column
        .as_ref()
        .and_then(|n| manifest.column_index(n));
    let properties = writer_properties(&manifest.writer, sort_column);
    let parquet_error = |e: parquet::errors::ParquetError| {
        Error::Import(format!("writing {}: {e}", path.display()))
    };
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(parquet_error)?;
    let mut offset = start;
    while offset < batch.num_rows() {
        let length = SLICE_ROWS.min(batch.num_rows() - offset);
        writer
            .write(&batch.slice(offset, length))
            .map_err(parquet_error)?;
        offset += length;
        let written = writer.bytes_written() as u64 + writer.in_progress_size() as u64;
        if written >= manifest.writer.target_file_bytes {
            break;
        }
    }
    let metadata = writer.finish().map_err(parquet_error)?;
    let file = &mut writer.inner_mut().inner;
    file.finish()
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&path, e))?;
    crash::after(Event::SyncFile(&path));
    let bytes = file.bytes_written();
    let crc32 = writer.inner().hasher.clone().finalize();
    drop(writer);
    let mut columns: Vec<ColumnStats> = Vec::with_capacity(manifest.columns.len());
    for (index, column) in manifest.columns.iter().enumerate() {
        let mut merged: Option<ColumnStats> = None;
        for row_group in metadata.row_groups() {
            let chunk = row_group.column(index);
            let chunk_stats = stats::from_parquet(
                column.column_type,
                chunk.statistics(),
                row_group.num_rows() as u64,
            );
            match &mut merged {
                Some(m) => m.merge(&chunk_stats),
                None => merged = Some(chunk_stats),
            }
        }
        let mut merged = merged.unwrap_or_else(|| ColumnStats::unknown(0));
        if let Some(floats) = batch.column(index).as_primitive_opt::<Float64Type>() {
            float_stats_exact(&mut merged, &floats.slice(start, offset - start));
        } else {
            merged.nan_possible = false;
        }
        columns.push(merged);
    }
    let rows = offset - start;
    let entry = FileEntry {
        id,
        path: relative.to_string_lossy().into_owned(),
        rows: rows as u64,
        bytes,
        crc32: Some(crc32),
        columns,
        digest: Some(crate::table::digest::rows(&batch.slice(start, rows))?),
    };
    Ok((entry, rows))
}

/// Makes a float column's file statistics exact from one pass over the rows written. Parquet's
/// cannot rule NaN out and write a zero bound with a sign of their own (see `stats`); our count
/// of NaN lets pruning trust this file's bounds and every page's in it, and a zero bound gets
/// the sign of the values' own extreme (`-0.0` before `0.0`, as MIN and MAX order them).
fn float_stats_exact(stats: &mut ColumnStats, floats: &arrow_array::Float64Array) {
    let (mut nan, mut negative_zero, mut positive_zero) = (false, false, false);
    for value in floats.iter().flatten() {
        nan |= value.is_nan();
        if value == 0.0 {
            if value.is_sign_negative() {
                negative_zero = true;
            } else {
                positive_zero = true;
            }
        }
    }
    stats.nan_possible = nan;
    if let Scalar::Float(min) = &mut stats.min {
        if *min == 0.0 {
            *min = if negative_zero { -0.0 } else { 0.0 };
        }
    }
    if let Scalar::Float(max) = &mut stats.max {
        if *max == 0.0 {
            *max = if positive_zero { 0.0 } else { -0.0 };
        }
    }
    stats.zero_exact = true;
}

/// Passes writes through while computing the CRC-32 of everything written.
struct ChecksumWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: std::io::Write> std::io::Write for ChecksumWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parquet may widen a zero bound (`-0.0` as a minimum, `0.0` as a maximum, whatever the
    /// values); the writer's pass gives it the values' own sign, and counts NaN.
    #[test]
    fn float_statistics_get_the_sign_of_zero_and_the_nan_count_from_the_rows() {
        let widened = |min: f64, max: f64| ColumnStats {
            min: Scalar::Float(min),
            max: Scalar::Float(max),
            null_count: Some(0),
            rows: 3,
            nan_possible: true,
            zero_exact: false,
        };
        let exact = |mut stats: ColumnStats, values: Vec<Option<f64>>| {
            float_stats_exact(&mut stats, &arrow_array::Float64Array::from(values));
            let bits = |s: &Scalar| match s {
                Scalar::Float(v) => v.to_bits(),
                _ => u64::MAX,
            };
            (
                bits(&stats.min),
                bits(&stats.max),
                stats.nan_possible,
                stats.zero_exact,
            )
        };
        let (zero, negative_zero) = (0.0f64.to_bits(), (-0.0f64).to_bits());
        // Only +0.0: a minimum recorded as -0.0 is +0.0.
        let only_positive = vec![Some(0.0), Some(2.0), None];
        assert_eq!(
            exact(widened(-0.0, 2.0), only_positive),
            (zero, 2.0f64.to_bits(), false, true)
        );
        // Only -0.0 at the top: a maximum recorded as +0.0 is -0.0.
        let only_negative = vec![Some(-3.0), Some(-0.0)];
        assert_eq!(
            exact(widened(-3.0, 0.0), only_negative),
            ((-3.0f64).to_bits(), negative_zero, false, true)
        );
        // Both zeros: MIN is -0.0 and MAX is 0.0, as the engine orders them; a NaN is counted.
        let both = vec![Some(0.0), Some(-0.0), Some(f64::NAN)];
        assert_eq!(
            exact(widened(0.0, -0.0), both),
            (negative_zero, zero, true, true)
        );
    }
}
