//! Reading Parquet through the direct-I/O path: footer and page index (via parquet's metadata
//! push decoder), and single data pages decoded into Arrow arrays (via the push decoder with a
//! row selection that covers exactly that page, so only that page and its dictionary are read).
//! The decoders say which byte ranges they need; this module reads them with `DirectFile`,
//! coalescing neighbours and issuing them concurrently.
//!
//! Outside bytes enter decoding here, so this is where size caps and `catch_unwind` live: a
//! corrupt file becomes an `Error::CorruptFile` naming it, never a panic or an unbounded
//! allocation.

use crate::error::{Error, Result};
use crate::io::runtime::DirectFile;
use crate::table::manifest::ColumnDef;
use crate::value::engine_type;
use crate::value::ColumnType;
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use parquet::arrow::push_decoder::{ParquetPushDecoderBuilder, RowGroupSelection};
use parquet::arrow::ProjectionMask;
use parquet::basic::Encoding;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataPushDecoder};
use parquet::DecodeResult;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Footer plus page index larger than this is treated as corrupt.
pub const METADATA_BYTES_MAX: u64 = 256 << 20;
/// One decoded page larger than this many rows is treated as corrupt.
pub const PAGE_ROWS_MAX: u64 = 1 << 26;
/// Ranges closer than this are read as one.
const COALESCE_GAP_BYTES: u64 = 64 << 10;
/// Neighbouring ranges are merged into reads of at most this many bytes (a single range larger
/// than this is one read): large enough for the device's sequential rate, small enough that a
/// row group's reads are several, all in flight together (io_uring depth, as fio's iodepth).
pub const READ_BYTES_MAX: u64 = 2 << 20;
/// Bytes read at once from a file's end when its metadata is loaded: the footer and, as writers
/// place it just before, usually the page index, so one read serves both (the decoder asks for
/// what lies outside).
const FOOTER_PREFETCH_BYTES: u64 = 64 << 10;

/// Everything the engine needs to plan and decode one file, cached per core.
pub struct FileMeta {
    pub path: PathBuf,
    pub metadata: Arc<ParquetMetaData>,
    pub reader: ArrowReaderMetadata,
    /// Per row group, per table column: first row of each page, then the row group's row count.
    /// A column the file lacks has one page.
    pub page_bounds: Vec<Vec<Vec<u32>>>,
    pub bytes: usize,
    /// The table's columns the file holds: the first `present` (the table gained the others
    /// since, and the file's rows read NULL in them).
    pub present: usize,
    /// Arrow types of the table's columns, for the NULLs of those the file lacks.
    types: Vec<DataType>,
}

impl FileMeta {
    /// Whether the file lacks `column` (added to the table after it was written).
    pub fn lacks(&self, column: usize) -> bool {
        column >= self.present
    }

    /// The table's columns when the file was loaded (those it lacks included).
    pub fn columns(&self) -> usize {
        self.types.len()
    }

    /// `rows` NULLs of `column`'s type.
    pub fn nulls(&self, column: usize, rows: usize) -> arrow_array::ArrayRef {
        arrow_array::new_null_array(&self.types[column], rows)
    }

    pub fn row_groups(&self) -> usize {
        self.metadata.num_row_groups()
    }

    pub fn row_group_rows(&self, row_group: usize) -> u32 {
        self.metadata.row_group(row_group).num_rows() as u32
    }
}

fn corrupt(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::corrupt(path, message)
}

/// Runs `f` on outside bytes, turning a panic inside the parquet crate into an error naming `path`.
fn guarded<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> parquet::errors::Result<T>,
) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(corrupt(path, error)),
        Err(_) => Err(corrupt(
            path,
            format!("the Parquet decoder panicked while {what}"),
        )),
    }
}

/// Where file bytes come from: a direct-I/O file on a core, or memory (tests and fuzzing).
pub trait ByteSource {
    fn size(&self) -> u64;
    fn read_at(
        &self,
        offset: u64,
        length: usize,
    ) -> impl std::future::Future<Output = std::io::Result<Bytes>>;
}

impl ByteSource for DirectFile {
    fn size(&self) -> u64 {
        DirectFile::size(self)
    }

    async fn read_at(&self, offset: u64, length: usize) -> std::io::Result<Bytes> {
        DirectFile::read_at(self, offset, length).await
    }
}

impl ByteSource for Bytes {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    async fn read_at(&self, offset: u64, length: usize) -> std::io::Result<Bytes> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        match start.checked_add(length) {
            Some(end) if end <= self.len() => Ok(self.slice(start..end)),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end",
            )),
        }
    }
}

/// Reads `ranges` (coalescing neighbours into reads of up to `READ_BYTES_MAX`, all reads in
/// flight at once) and returns one buffer per requested range. Counts bytes read into
/// `bytes_read`.
pub async fn read_ranges<S: ByteSource>(
    file: &S,
    path: &Path,
    ranges: &[Range<u64>],
    bytes_read: &mut u64,
) -> Result<Vec<Bytes>> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for &i in &order {
        let range = &ranges[i];
        if range.start > range.end || range.end > file.size() {
            return Err(corrupt(
                path,
                format!(
                    "byte range {range:?} lies outside the {}-byte file",
                    file.size()
                ),
            ));
        }
        match merged.last_mut() {
            // Overlapping ranges must share a read (each range is a slice of one read);
            // neighbours share one while it stays within `READ_BYTES_MAX`.
            Some(last)
                if range.start < last.end
                    || (range.start <= last.end + COALESCE_GAP_BYTES
                        && range.end.max(last.end) - last.start <= READ_BYTES_MAX) =>
            {
                last.end = last.end.max(range.end)
            }
            _ => merged.push(range.clone()),
        }
    }
    let reads = merged
        .iter()
        .map(|range| file.read_at(range.start, (range.end - range.start) as usize));
    let buffers = futures::future::try_join_all(reads)
        .await
        .map_err(|e| Error::io(path, e))?;
    *bytes_read += buffers.iter().map(|b| b.len() as u64).sum::<u64>();
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        // The merged range that starts at or before this one must contain it.
        let index = merged
            .partition_point(|m| m.start <= range.start)
            .saturating_sub(1);
        let containing = merged
            .get(index)
            .filter(|m| m.start <= range.start && range.end <= m.end)
            .ok_or_else(|| {
                Error::Internal(format!("byte range {range:?} lost while coalescing"))
            })?;
        let start = (range.start - containing.start) as usize;
        let end = (range.end - containing.start) as usize;
        out.push(buffers[index].slice(start..end));
    }
    Ok(out)
}

/// Reads a file's footer and page index (bounded by `METADATA_BYTES_MAX`).
pub async fn load_metadata<S: ByteSource>(
    file: &S,
    path: &Path,
    bytes_read: &mut u64,
) -> Result<ParquetMetaData> {
    let mut decoder = guarded(path, "reading the footer", || {
        ParquetMetaDataPushDecoder::try_new(file.size())
    })?
    .with_page_index_policy(PageIndexPolicy::Optional);
    let tail = file.size().saturating_sub(FOOTER_PREFETCH_BYTES)..file.size();
    let mut requested = tail.end - tail.start;
    if !tail.is_empty() {
        let buffers = read_ranges(file, path, std::slice::from_ref(&tail), bytes_read).await?;
        guarded(path, "reading the footer", || {
            decoder.push_ranges(vec![tail], buffers)
        })?;
    }
    loop {
        match guarded(path, "decoding the footer", || decoder.try_decode())? {
            DecodeResult::NeedsData(ranges) => {
                requested += ranges
                    .iter()
                    .map(|r| r.end.saturating_sub(r.start))
                    .sum::<u64>();
                if requested > METADATA_BYTES_MAX {
                    return Err(corrupt(
                        path,
                        format!("metadata exceeds {METADATA_BYTES_MAX} bytes"),
                    ));
                }
                let buffers = read_ranges(file, path, &ranges, bytes_read).await?;
                guarded(path, "reading the footer", || {
                    decoder.push_ranges(ranges, buffers)
                })?;
            }
            DecodeResult::Data(metadata) => {
                check_chunk_ranges(path, &metadata, file.size())?;
                return Ok(metadata);
            }
            DecodeResult::Finished => return Err(corrupt(path, "no metadata found")),
        }
    }
}

/// Every column chunk must lie inside the file: the decoders trust these offsets (and assert on
/// negative ones), so a corrupt footer is refused here with an error naming the chunk.
fn check_chunk_ranges(path: &Path, metadata: &ParquetMetaData, file_size: u64) -> Result<()> {
    for (row_group_index, row_group) in metadata.row_groups().iter().enumerate() {
        if row_group.num_rows() < 0 {
            return Err(corrupt(
                path,
                format!(
                    "row group {row_group_index} claims {} rows",
                    row_group.num_rows()
                ),
            ));
        }
        for (column_index, chunk) in row_group.columns().iter().enumerate() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or(chunk.data_page_offset());
            let length = chunk.compressed_size();
            let inside = start >= 0
                && length >= 0
                && chunk.data_page_offset() >= 0
                && (start as u64)
                    .checked_add(length as u64)
                    .is_some_and(|end| end <= file_size);
            if !inside {
                return Err(corrupt(
                    path,
                    format!("column chunk {column_index} of row group {row_group_index} ({length} bytes at {start}) lies outside the {file_size}-byte file"),
                ));
            }
        }
    }
    Ok(())
}

/// Reads and validates a file's footer and page index against the table's columns.
pub async fn load_file_meta<S: ByteSource>(
    file: &S,
    path: &Path,
    columns: &[ColumnDef],
    bytes_read: &mut u64,
) -> Result<FileMeta> {
    let metadata = load_metadata(file, path, bytes_read).await?;
    let metadata = Arc::new(metadata);
    let file_fields = check_schema(path, &metadata, columns)?;
    let present = file_fields.len();
    let hint = Arc::new(Schema::new(
        columns[..present]
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let data_type = if column.column_type == ColumnType::Utf8
                    && all_dictionary_encoded(&metadata, index)
                {
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
                } else {
                    column.column_type.to_arrow()
                };
                // The file's own nullability: parquet refuses a hint that differs from it.
                Field::new(&column.name, data_type, file_fields[index].is_nullable())
            })
            .collect::<Vec<_>>(),
    ));
    let options = ArrowReaderOptions::new()
        .with_schema(hint)
        .with_page_index_policy(PageIndexPolicy::Optional);
    let reader = guarded(path, "reading the schema", || {
        ArrowReaderMetadata::try_new(metadata.clone(), options)
    })?;
    let mut page_bounds = Vec::with_capacity(metadata.num_row_groups());
    for row_group in 0..metadata.num_row_groups() {
        let rows = metadata.row_group(row_group).num_rows();
        if rows < 0 || rows as u64 > u32::MAX as u64 {
            return Err(corrupt(
                path,
                format!("row group {row_group} claims {rows} rows"),
            ));
        }
        let page_index = metadata.page_index_for_row_group(row_group);
        let mut per_column = Vec::with_capacity(columns.len());
        for column in 0..columns.len() {
            let mut bounds: Vec<u32> = vec![0];
            if column >= present {
                bounds.push(rows as u32);
                per_column.push(bounds);
                continue;
            }
            if let Some(offsets) = page_index.offset_index(column) {
                // Pages must lie inside their column chunk (already checked to lie inside the file).
                let chunk = metadata.row_group(row_group).column(column);
                let chunk_start = chunk
                    .dictionary_page_offset()
                    .unwrap_or(chunk.data_page_offset());
                let chunk_end = chunk_start.saturating_add(chunk.compressed_size());
                for location in offsets.page_locations() {
                    let end = location
                        .offset
                        .checked_add(location.compressed_page_size as i64);
                    if location.offset < chunk_start
                        || location.compressed_page_size < 0
                        || end.is_none_or(|end| end > chunk_end)
                    {
                        return Err(corrupt(
                            path,
                            format!("offset index of column {column} in row group {row_group} points outside its column chunk"),
                        ));
                    }
                }
                for location in offsets.page_locations().iter().skip(1) {
                    let first = location.first_row_index;
                    let last = *bounds.last().unwrap_or(&0) as i64;
                    if first <= last || first >= rows {
                        return Err(corrupt(path, format!("offset index of column {column} in row group {row_group} is not increasing")));
                    }
                    bounds.push(first as u32);
                }
            }
            bounds.push(rows as u32);
            if bounds
                .windows(2)
                .any(|w| (w[1] - w[0]) as u64 > PAGE_ROWS_MAX)
            {
                return Err(corrupt(path, format!("a page of column {column} in row group {row_group} exceeds {PAGE_ROWS_MAX} rows")));
            }
            per_column.push(bounds);
        }
        page_bounds.push(per_column);
    }
    let bytes = metadata.memory_size()
        + page_bounds
            .iter()
            .flatten()
            .map(|b| b.len() * 4)
            .sum::<usize>();
    Ok(FileMeta {
        path: path.to_owned(),
        metadata,
        reader,
        page_bounds,
        bytes,
        present,
        types: columns.iter().map(|c| c.column_type.to_arrow()).collect(),
    })
}

fn all_dictionary_encoded(metadata: &ParquetMetaData, column: usize) -> bool {
    metadata.row_groups().iter().all(|row_group| {
        let chunk = row_group.column(column);
        chunk.dictionary_page_offset().is_some()
            && chunk.page_encoding_stats_mask().is_some_and(|mask| {
                mask.is_only(Encoding::PLAIN_DICTIONARY) || mask.is_only(Encoding::RLE_DICTIONARY)
            })
    })
}

/// Checks the file's columns against the table's: the same names and types in order, except
/// that the table may have gained nullable columns at its end since the file was written.
/// Returns the file's fields for the table columns it holds.
fn check_schema(
    path: &Path,
    metadata: &ParquetMetaData,
    columns: &[ColumnDef],
) -> Result<arrow_schema::Fields> {
    let mismatch = |message: String| Error::SchemaMismatch {
        path: path.to_owned(),
        message,
    };
    let descriptor = metadata.file_metadata().schema_descr();
    let schema = guarded(path, "reading the schema", || {
        parquet::arrow::parquet_to_arrow_schema(
            descriptor,
            metadata.file_metadata().key_value_metadata(),
        )
    })?;
    let present = schema.fields().len();
    let added_later = columns.get(present..).unwrap_or_default();
    if present > columns.len()
        || descriptor.num_columns() != present
        || added_later.iter().any(|c| !c.nullable)
    {
        return Err(mismatch(format!(
            "file has {} columns, table has {}",
            schema.fields().len(),
            columns.len()
        )));
    }
    for (field, column) in schema.fields().iter().zip(columns) {
        let found = engine_type(field.name(), field.data_type()).ok();
        if field.name() != &column.name || found != Some(column.column_type) {
            return Err(mismatch(format!(
                "file column {} {} where the table has {} {}",
                field.name(),
                field.data_type(),
                column.name,
                column.column_type.name()
            )));
        }
    }
    Ok(schema.fields().clone())
}

/// Bytes of a file read ahead (a row group's pages of several columns, in a few large reads),
/// served to the page decoders from memory; a range outside them is read from the file.
pub struct Prefetched<'a, S> {
    file: &'a S,
    /// Read ranges by start offset, disjoint.
    parts: Vec<(u64, Bytes)>,
    /// Bytes read from the file for ranges the parts did not hold.
    pub bytes_missed: std::cell::Cell<u64>,
}

impl<'a, S: ByteSource> Prefetched<'a, S> {
    /// Reads `ranges` of `file` together (coalesced into reads of up to `READ_BYTES_MAX`).
    pub async fn read(
        file: &'a S,
        path: &Path,
        ranges: &[Range<u64>],
        bytes_read: &mut u64,
    ) -> Result<Prefetched<'a, S>> {
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        // Overlapping ranges are read as one, so every part is disjoint from the others.
        let mut disjoint: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match disjoint.last_mut() {
                Some(last) if range.start < last.end => last.end = last.end.max(range.end),
                _ => disjoint.push(range),
            }
        }
        let buffers = read_ranges(file, path, &disjoint, bytes_read).await?;
        Ok(Prefetched {
            file,
            parts: disjoint.iter().map(|r| r.start).zip(buffers).collect(),
            bytes_missed: std::cell::Cell::new(0),
        })
    }

    fn part(&self, offset: u64, length: usize) -> Option<Bytes> {
        let index = self
            .parts
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)?;
        let (start, bytes) = &self.parts[index];
        let from = usize::try_from(offset - start).ok()?;
        let to = from.checked_add(length)?;
        (to <= bytes.len()).then(|| bytes.slice(from..to))
    }
}

impl<S: ByteSource> ByteSource for Prefetched<'_, S> {
    fn size(&self) -> u64 {
        self.file.size()
    }

    async fn read_at(&self, offset: u64, length: usize) -> std::io::Result<Bytes> {
        if let Some(bytes) = self.part(offset, length) {
            return Ok(bytes);
        }
        let bytes = self.file.read_at(offset, length).await?;
        self.bytes_missed
            .set(self.bytes_missed.get() + bytes.len() as u64);
        Ok(bytes)
    }
}

/// The byte ranges decoding `pages` of `column` in `row_group` reads: the dictionary page and
/// those pages by the offset index, else the whole column chunk (what parquet's decoder asks
/// for, so a read ahead of them serves it).
pub fn page_ranges(
    meta: &FileMeta,
    row_group: usize,
    column: usize,
    pages: &[usize],
) -> Vec<Range<u64>> {
    let chunk = meta.metadata.row_group(row_group).column(column);
    // Checked to lie inside the file when the metadata was loaded.
    let chunk_start = chunk
        .dictionary_page_offset()
        .unwrap_or(chunk.data_page_offset())
        .max(0) as u64;
    let chunk_end = chunk_start + chunk.compressed_size().max(0) as u64;
    let whole: Vec<Range<u64>> = std::iter::once(chunk_start..chunk_end).collect();
    let bounds = &meta.page_bounds[row_group][column];
    if pages.len() + 1 >= bounds.len() {
        return whole;
    }
    let page_index = meta.metadata.page_index_for_row_group(row_group);
    let Some(offsets) = page_index.offset_index(column) else {
        return whole;
    };
    let locations = offsets.page_locations();
    let mut ranges = Vec::with_capacity(pages.len() + 1);
    if let Some(first) = locations.first() {
        if chunk.dictionary_page_offset().is_some() && first.offset as u64 > chunk_start {
            ranges.push(chunk_start..first.offset as u64);
        }
    }
    for &page in pages {
        match locations.get(page) {
            Some(location) => {
                let start = location.offset as u64;
                ranges.push(start..start + location.compressed_page_size as u64);
            }
            None => return whole,
        }
    }
    ranges
}

/// Decodes pages `pages` (ascending page numbers) of `column` in `row_group` with one decoder, so
/// a dictionary page is read and decoded once however many of its data pages are wanted. Returns
/// one array per page, each owning its buffers (so the buffer pool can count and free pages one
/// by one).
pub async fn decode_pages<S: ByteSource>(
    file: &S,
    meta: &FileMeta,
    row_group: usize,
    column: usize,
    pages: &[usize],
    bytes_read: &mut u64,
) -> Result<Vec<ArrayRef>> {
    let path = meta.path.as_path();
    let bounds = &meta.page_bounds[row_group][column];
    let group_rows = meta.row_group_rows(row_group);
    if pages.is_empty() {
        return Ok(Vec::new());
    }
    if pages.windows(2).any(|w| w[0] >= w[1]) || pages.iter().any(|&p| p + 1 >= bounds.len()) {
        return Err(Error::Internal(format!(
            "bad page list {pages:?} for column {column}"
        )));
    }
    let mut selectors = Vec::with_capacity(pages.len() * 2 + 1);
    let mut cursor = 0u32;
    let mut total = 0usize;
    for &page in pages {
        let (start, end) = (bounds[page], bounds[page + 1]);
        if start > cursor {
            selectors.push(RowSelector::skip((start - cursor) as usize));
        }
        selectors.push(RowSelector::select((end - start) as usize));
        total += (end - start) as usize;
        cursor = end;
    }
    if cursor < group_rows {
        selectors.push(RowSelector::skip((group_rows - cursor) as usize));
    }
    let selection = (total < group_rows as usize).then(|| RowSelection::from(selectors));
    let descriptor = meta.metadata.file_metadata().schema_descr();
    let mut decoder = guarded(path, "preparing a page decoder", || {
        ParquetPushDecoderBuilder::new_with_metadata(meta.reader.clone())
            .with_projection(ProjectionMask::leaves(descriptor, [column]))
            .with_batch_size(total.max(1))
            .with_row_group_selections(vec![RowGroupSelection::new(row_group, selection)])
            .build()
    })?;
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(1);
    loop {
        match guarded(path, "decoding a page", || decoder.try_decode())? {
            DecodeResult::NeedsData(ranges) => {
                let buffers = read_ranges(file, path, &ranges, bytes_read).await?;
                guarded(path, "decoding a page", || {
                    decoder.push_ranges(ranges, buffers)
                })?;
            }
            DecodeResult::Data(batch) => arrays.push(batch.column(0).clone()),
            DecodeResult::Finished => break,
        }
    }
    let array = match arrays.len() {
        1 => arrays.swap_remove(0),
        _ => {
            let parts: Vec<&dyn arrow_array::Array> = arrays.iter().map(|a| a.as_ref()).collect();
            arrow_select::concat::concat(&parts).map_err(|e| corrupt(path, e))?
        }
    };
    if array.len() != total {
        return Err(corrupt(
            path,
            format!(
                "row group {row_group} column {column}: expected {total} rows, decoded {}",
                array.len()
            ),
        ));
    }
    if pages.len() == 1 {
        return Ok(vec![array]);
    }
    // Copy each page out so it owns its memory.
    let data = array.to_data();
    let mut out = Vec::with_capacity(pages.len());
    let mut offset = 0usize;
    for &page in pages {
        let length = (bounds[page + 1] - bounds[page]) as usize;
        let mut copy = arrow_data::transform::MutableArrayData::new(vec![&data], false, length);
        copy.try_extend(0, offset, offset + length)
            .map_err(|e| corrupt(path, e))?;
        out.push(arrow_array::make_array(copy.freeze()));
        offset += length;
    }
    Ok(out)
}

/// The engine's column definitions for a file's own schema (for verifying arbitrary files).
pub fn columns_of(path: &Path, metadata: &ParquetMetaData) -> Result<Vec<ColumnDef>> {
    let schema = guarded(path, "reading the schema", || {
        parquet::arrow::parquet_to_arrow_schema(
            metadata.file_metadata().schema_descr(),
            metadata.file_metadata().key_value_metadata(),
        )
    })?;
    schema
        .fields()
        .iter()
        .map(|field| {
            Ok(ColumnDef {
                name: field.name().clone(),
                column_type: engine_type(field.name(), field.data_type())
                    .map_err(|e| corrupt(path, e))?,
                nullable: field.is_nullable(),
            })
        })
        .collect()
}

/// Reads a whole file through the engine's decoding path — footer, page index, every page of
/// every column — and returns its row count. Any corruption is an error naming `path`.
pub async fn verify_file<S: ByteSource>(file: &S, path: &Path) -> Result<u64> {
    let mut bytes_read = 0;
    // First pass with no column check, to learn the schema; then the real load.
    let probe = load_metadata(file, path, &mut bytes_read).await?;
    let columns = columns_of(path, &probe)?;
    let meta = load_file_meta(file, path, &columns, &mut bytes_read).await?;
    let mut rows = 0u64;
    for row_group in 0..meta.row_groups() {
        for column in 0..columns.len() {
            let pages: Vec<usize> = (0..meta.page_bounds[row_group][column].len() - 1).collect();
            decode_pages(file, &meta, row_group, column, &pages, &mut bytes_read).await?;
        }
        rows += meta.row_group_rows(row_group) as u64;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;

    /// A file in memory that records the reads made of it.
    struct Recorded {
        bytes: Bytes,
        reads: RefCell<Vec<Range<u64>>>,
    }

    impl ByteSource for Recorded {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }

        async fn read_at(&self, offset: u64, length: usize) -> std::io::Result<Bytes> {
            self.reads.borrow_mut().push(offset..offset + length as u64);
            self.bytes.read_at(offset, length).await
        }
    }

    fn file(size: usize) -> Recorded {
        Recorded {
            bytes: Bytes::from(
                (0..size)
                    .map(|i| (i * 7 + i / 251) as u8)
                    .collect::<Vec<u8>>(),
            ),
            reads: RefCell::new(Vec::new()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn coalesced_reads_return_the_bytes_of_each_range(
            ranges in proptest::collection::vec((0u64..12 << 20, 0u64..3 << 20), 0..24)
        ) {
            let size = 16usize << 20;
            let file = file(size);
            let ranges: Vec<Range<u64>> = ranges
                .into_iter()
                .map(|(start, length)| start..(start + length).min(size as u64))
                .collect();
            let mut bytes_read = 0;
            let out = futures::executor::block_on(read_ranges(
                &file,
                Path::new("f"),
                &ranges,
                &mut bytes_read,
            ))
            .unwrap();
            prop_assert_eq!(out.len(), ranges.len());
            for (range, bytes) in ranges.iter().zip(&out) {
                prop_assert_eq!(&bytes[..], &file.bytes[range.start as usize..range.end as usize]);
            }
            let reads = file.reads.borrow();
            prop_assert_eq!(bytes_read, reads.iter().map(|r| r.end - r.start).sum::<u64>());
            // A read longer than the bound holds overlapping ranges or one range that long.
            for read in reads.iter().filter(|r| r.end - r.start > READ_BYTES_MAX) {
                let inside: Vec<&Range<u64>> = ranges
                    .iter()
                    .filter(|r| read.start <= r.start && r.end <= read.end)
                    .collect();
                let longest = inside.iter().map(|r| r.end - r.start).max().unwrap_or(0);
                let overlapping = inside
                    .iter()
                    .any(|a| inside.iter().any(|b| a != b && a.start < b.end && b.start < a.end));
                prop_assert!(longest > READ_BYTES_MAX || overlapping, "{:?} in {:?}", read, ranges);
            }
        }
    }

    #[test]
    fn neighbouring_ranges_share_a_read_up_to_the_bound() {
        let file = file(8 << 20);
        let mib = 1u64 << 20;
        // Four adjacent 1 MiB ranges and one 64 KiB apart: two reads of 2 MiB, then the rest.
        let ranges = vec![
            0..mib,
            mib..2 * mib,
            2 * mib..3 * mib,
            3 * mib..4 * mib,
            4 * mib + (32 << 10)..5 * mib,
        ];
        let mut bytes_read = 0;
        futures::executor::block_on(read_ranges(&file, Path::new("f"), &ranges, &mut bytes_read))
            .unwrap();
        assert_eq!(
            *file.reads.borrow(),
            vec![0..2 * mib, 2 * mib..4 * mib, 4 * mib + (32 << 10)..5 * mib]
        );
    }

    #[test]
    fn prefetched_bytes_serve_ranges_inside_them_and_read_the_rest() {
        let file = file(1 << 20);
        let mut bytes_read = 0;
        let prefetched = futures::executor::block_on(Prefetched::read(
            &file,
            Path::new("f"),
            &[1000..5000, 4000..9000, 300_000..400_000],
            &mut bytes_read,
        ))
        .unwrap();
        assert_eq!(bytes_read, 8000 + 100_000);
        file.reads.borrow_mut().clear();
        let read = |offset: u64, length: usize| {
            futures::executor::block_on(prefetched.read_at(offset, length)).unwrap()
        };
        assert_eq!(read(1000, 8000), file.bytes.slice(1000..9000));
        assert_eq!(read(350_000, 50_000), file.bytes.slice(350_000..400_000));
        assert!(file.reads.borrow().is_empty(), "served from memory");
        assert_eq!(prefetched.bytes_missed.get(), 0);
        // Straddling a part's end, or outside every part: read from the file.
        assert_eq!(read(8000, 2000), file.bytes.slice(8000..10_000));
        assert_eq!(read(500_000, 10), file.bytes.slice(500_000..500_010));
        assert_eq!(prefetched.bytes_missed.get(), 2010);
    }

    /// `batch` as a Parquet file written by parquet's own writer with its defaults.
    fn parquet_bytes(batch: &arrow_array::RecordBatch) -> Bytes {
        let mut buffer = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut buffer, batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        Bytes::from(buffer)
    }

    /// Another tool's file with REQUIRED columns: parquet refuses a nullable schema hint for them,
    /// so the hint takes each column's nullability from the file.
    #[test]
    fn files_with_required_columns_decode() {
        use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter_values(
                    (0..1000).map(|i| format!("n{}", i % 7)),
                )),
            ],
        )
        .unwrap();
        let bytes = parquet_bytes(&batch);
        let columns = vec![
            ColumnDef {
                name: "id".into(),
                column_type: ColumnType::Int64,
                nullable: false,
            },
            ColumnDef {
                name: "name".into(),
                column_type: ColumnType::Utf8,
                nullable: false,
            },
        ];
        let mut read = 0;
        let meta = futures::executor::block_on(load_file_meta(
            &bytes,
            Path::new("required.parquet"),
            &columns,
            &mut read,
        ))
        .unwrap();
        for column in 0..2 {
            let arrays = futures::executor::block_on(decode_pages(
                &bytes,
                &meta,
                0,
                column,
                &[0],
                &mut read,
            ))
            .unwrap();
            assert_eq!(arrays[0].len(), 1000);
            assert_eq!(arrays[0].null_count(), 0);
        }
    }

    #[test]
    fn a_small_file_metadata_loads_in_one_read() {
        let batch = crate::gen::events_chunk(0, 20_000, 20_000, 1);
        let file = Recorded {
            bytes: parquet_bytes(&batch),
            reads: RefCell::new(Vec::new()),
        };
        let mut bytes_read = 0;
        let metadata =
            futures::executor::block_on(load_metadata(&file, Path::new("f"), &mut bytes_read))
                .unwrap();
        assert_eq!(metadata.file_metadata().num_rows(), 20_000);
        assert!(
            metadata
                .page_index_for_row_group(0)
                .offset_index(0)
                .is_some(),
            "page index read"
        );
        assert_eq!(file.reads.borrow().len(), 1, "{:?}", file.reads.borrow());
    }
}
