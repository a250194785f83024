//! Writing tables: normalises incoming Arrow batches to the engine's column types, splits them by
//! partition (UTC date of the time column, then optional columns), buffers each partition, and
//! writes sorted Parquet files with the table's writer settings (row group and page sizes,
//! dictionary, compression, statistics and page index). Files are fsynced before the manifest that
//! lists them is published; until then no reader can see them.
//!
//! This is the import path; the durable WAL-based ingestion of a later issue feeds the same
//! `TableWriter`.

use crate::error::{Error, Result};
use crate::manifest::{
    self, ColumnDef, Compression, FileEntry, PartitionSpec, TableLock, TableManifest,
    WriterSettings,
};
use crate::stats::{self, ColumnStats};
use crate::value::{format_date, ColumnType, MICROS_PER_DAY};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType};
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

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct ImportSummary {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub manifest_version: u64,
}

pub struct TableWriter {
    data_dir: PathBuf,
    manifest: TableManifest,
    schema: SchemaRef,
    time_index: Option<usize>,
    partition_indexes: Vec<usize>,
    buffers: HashMap<PartitionKey, PartitionBuffer>,
    buffered_bytes: u64,
    buffer_bytes_max: u64,
    new_files: Vec<FileEntry>,
    rows: u64,
    _lock: TableLock,
}

/// Maps an input Arrow type to the engine's column type, or explains why it cannot.
pub fn engine_type(name: &str, data_type: &DataType) -> Result<ColumnType> {
    Ok(match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColumnType::Int32
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ColumnType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float64,
        DataType::Timestamp(_, _) | DataType::Date64 => ColumnType::Timestamp,
        other => ColumnType::from_arrow(other)
            .ok_or_else(|| Error::Import(format!("column {name} has unsupported type {other}")))?,
    })
}

/// The Arrow schema the engine stores for a manifest's columns.
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
        let lock = TableLock::acquire(data_dir, tenant, table)?;
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
        let manifest = match manifest::load(data_dir, tenant, table)? {
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
                }
            }
        };
        remove_orphans(&manifest::table_dir(data_dir, tenant, table), &manifest)?;
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
            schema,
            time_index,
            partition_indexes,
            buffers: HashMap::new(),
            buffered_bytes: 0,
            buffer_bytes_max: options.buffer_bytes_max.unwrap_or(BUFFER_BYTES_DEFAULT),
            new_files: Vec::new(),
            rows: 0,
            _lock: lock,
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
        let batch = self.normalise(batch)?;
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

    /// Writes every buffered partition and publishes the manifest listing the new files.
    pub fn finish(mut self) -> Result<ImportSummary> {
        let mut keys: Vec<PartitionKey> = self.buffers.keys().cloned().collect();
        keys.sort_by(|a, b| (a.day, &a.values).cmp(&(b.day, &b.values)));
        for key in keys {
            self.flush_partition(&key)?;
        }
        let summary = ImportSummary {
            rows: self.rows,
            files: self.new_files.len() as u64,
            bytes: self.new_files.iter().map(|f| f.bytes).sum(),
            manifest_version: self.manifest.version + 1,
        };
        self.manifest.files.append(&mut self.new_files);
        self.manifest.version += 1;
        manifest::publish(&self.data_dir, &self.manifest)?;
        Ok(summary)
    }

    fn normalise(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if batch.num_columns() != self.schema.fields().len() {
            return Err(Error::Import(format!(
                "batch has {} columns, table has {}",
                batch.num_columns(),
                self.schema.fields().len()
            )));
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (array, field) in batch.columns().iter().zip(self.schema.fields()) {
            columns.push(normalise_array(array, field)?);
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| Error::Import(e.to_string()))
    }

    fn key_of(&self, batch: &RecordBatch, row: usize) -> PartitionKey {
        let day = self.time_index.and_then(|index| {
            let times = batch
                .column(index)
                .as_primitive::<TimestampMicrosecondType>();
            times
                .is_valid(row)
                .then(|| times.value(row).div_euclid(MICROS_PER_DAY))
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
        let table_dir =
            manifest::table_dir(&self.data_dir, &self.manifest.tenant, &self.manifest.table);
        let partition_dir = table_dir.join(&directory);
        std::fs::create_dir_all(&partition_dir).map_err(|e| Error::io(&partition_dir, e))?;
        let mut start = 0;
        while start < batch.num_rows() {
            let id = self.manifest.next_file_id;
            self.manifest.next_file_id += 1;
            let relative = directory.join(format!("part-{id:06}.parquet"));
            let (entry, written_rows) =
                write_file(&table_dir, &relative, id, &batch, start, &self.manifest)?;
            start += written_rows;
            self.new_files.push(entry);
        }
        manifest::sync_dir(&partition_dir)?;
        // New directories up to the data directory (tenant and table included, for a new table)
        // must reach the disk too.
        let mut dir = partition_dir.as_path();
        while dir != self.data_dir {
            let Some(parent) = dir.parent() else { break };
            manifest::sync_dir(parent)?;
            dir = parent;
        }
        Ok(())
    }
}

/// Deletes Parquet files under the table directory that the manifest does not list: leftovers of
/// an import that died before publishing (never visible to readers). Runs under the table lock.
fn remove_orphans(table_dir: &Path, manifest: &TableManifest) -> Result<usize> {
    let listed: hashbrown::HashSet<PathBuf> = manifest
        .files
        .iter()
        .map(|f| table_dir.join(&f.path))
        .collect();
    let mut removed = 0;
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
                pending.push(path);
            } else if name.starts_with("part-")
                && name.ends_with(".parquet")
                && !listed.contains(&path)
            {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn describe_columns(columns: &[ColumnDef]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.column_type.name()))
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

fn normalise_array(array: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    let target = field.data_type();
    if array.data_type() == target {
        return Ok(array.clone());
    }
    let error = |e: arrow_schema::ArrowError| {
        Error::Import(format!(
            "column {}: cannot convert {} to {target}: {e}",
            field.name(),
            array.data_type()
        ))
    };
    if let DataType::Timestamp(_, zone) = array.data_type() {
        // Stored timestamps are UTC instants without a zone: convert the unit keeping the zone
        // (an instant-preserving cast), then drop the zone without changing the values. Zone-less
        // input is taken as UTC.
        let micros = arrow_cast::cast(
            array,
            &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
        )
        .map_err(error)?;
        let micros = micros
            .as_primitive::<TimestampMicrosecondType>()
            .clone()
            .with_timezone_opt(None::<String>);
        return Ok(Arc::new(micros));
    }
    arrow_cast::cast(array, target).map_err(error)
}

fn sort_by_column(batch: &RecordBatch, index: usize) -> Result<RecordBatch> {
    let column = batch.column(index);
    let times = column.as_primitive::<TimestampMicrosecondType>();
    let sorted = times.null_count() == 0 && times.values().windows(2).all(|w| w[0] <= w[1]);
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
    let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    let handle = file.try_clone().map_err(|e| Error::io(&path, e))?;
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
    let crc32 = writer.inner().hasher.clone().finalize();
    drop(writer);
    handle.sync_all().map_err(|e| Error::io(&path, e))?;
    let bytes = handle.metadata().map_err(|e| Error::io(&path, e))?.len();
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
        // Parquet statistics cannot rule NaN out (see `stats`); our own count of the rows written
        // is exact, and lets pruning trust this file's bounds and every page's in it.
        merged.nan_possible = batch
            .column(index)
            .as_primitive_opt::<Float64Type>()
            .is_some_and(|floats| {
                floats
                    .slice(start, offset - start)
                    .iter()
                    .any(|v| v.is_some_and(f64::is_nan))
            });
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
    };
    Ok((entry, rows))
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

/// One problem `verify_table` found.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyProblem {
    pub path: PathBuf,
    pub message: String,
}

/// Checks every file of a table against its manifest entry: present, same size and CRC-32, and
/// decodable page by page through the engine's reader. Returns the files checked and the problems.
pub fn verify_table(
    data_dir: &Path,
    tenant: &str,
    table: &str,
) -> Result<(usize, Vec<VerifyProblem>)> {
    let manifest = manifest::load(data_dir, tenant, table)?.ok_or_else(|| Error::NoSuchTable {
        tenant: tenant.to_owned(),
        table: table.to_owned(),
    })?;
    let table_dir = manifest::table_dir(data_dir, tenant, table);
    let mut problems = Vec::new();
    for entry in &manifest.files {
        let path = table_dir.join(&entry.path);
        let problem = |message: String| VerifyProblem {
            path: path.clone(),
            message,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) => {
                problems.push(problem(error.to_string()));
                continue;
            }
        };
        if bytes.len() as u64 != entry.bytes {
            problems.push(problem(format!(
                "{} bytes, the manifest says {}",
                bytes.len(),
                entry.bytes
            )));
            continue;
        }
        if let Some(expected) = entry.crc32 {
            let actual = crc32fast::hash(&bytes);
            if actual != expected {
                problems.push(problem(format!(
                    "CRC-32 {actual:08x}, the manifest says {expected:08x}"
                )));
                continue;
            }
        }
        let source = bytes::Bytes::from(bytes);
        match futures::executor::block_on(crate::reader::verify_file(&source, &path)) {
            Ok(rows) if rows == entry.rows => {}
            Ok(rows) => problems.push(problem(format!(
                "{rows} rows, the manifest says {}",
                entry.rows
            ))),
            Err(error) => problems.push(problem(error.to_string())),
        }
    }
    Ok((manifest.files.len(), problems))
}
