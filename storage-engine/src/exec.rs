//! Scanning on one core: for each file the core owns in a query, prune row groups by statistics
//! and pages by the page index, load the pages still needed (from the buffer pool, else read with
//! direct I/O and decode), evaluate the filter into selection masks with the SIMD kernels, and
//! feed the selected rows to grouping/aggregation or to the row collector.
//!
//! Late materialisation: the filter's columns are loaded first; the other columns are loaded only
//! for pages that have at least one selected row. `COUNT(*)` over ranges the statistics prove
//! all-matching is answered without reading data.

use crate::aggregate::{GroupRows, GroupState};
use crate::buffer_pool::{BufferPool, Frame, PageKey};
use crate::error::{Error, Result};
use crate::kernels::scalar::holds;
use crate::kernels::{words_for, CmpOp, Kernels};
use crate::manifest::ColumnDef;
use crate::plan::{Filter, Mode, Plan, SortKey, Test, ValueExpr};
use crate::prune::{self, Segments, Truth};
use crate::reader::{self, FileMeta};
use crate::runtime::{self, DirectFile};
use crate::stats::{self, ColumnStats};
use crate::value::{Scalar, MICROS_PER_DAY};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, BooleanArray, Date32Array};
use arrow_buffer::{BooleanBuffer, Buffer};
use arrow_schema::DataType;
use futures::StreamExt;
use hashbrown::HashMap;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// Files a core scans concurrently for one query.
const FILES_IN_FLIGHT: usize = 4;

/// Per-core state: owned by one executor, never shared.
pub struct CoreState {
    pub core: usize,
    pub pool: BufferPool,
    pub metadata: MetadataCache,
    pub kernels: Kernels,
}

/// Footers and page indexes of recently used files with their open handles, bounded in bytes.
pub struct MetadataCache {
    budget_bytes: usize,
    inner: RefCell<MetadataInner>,
}

#[derive(Default)]
struct MetadataInner {
    entries: HashMap<u64, (Rc<FileMeta>, Rc<DirectFile>)>,
    order: VecDeque<u64>,
    bytes: usize,
}

impl MetadataCache {
    pub fn new(budget_bytes: usize) -> MetadataCache {
        MetadataCache {
            budget_bytes,
            inner: RefCell::new(MetadataInner::default()),
        }
    }

    fn get(&self, id: u64) -> Option<(Rc<FileMeta>, Rc<DirectFile>)> {
        self.inner.borrow().entries.get(&id).cloned()
    }

    fn insert(&self, id: u64, meta: Rc<FileMeta>, file: Rc<DirectFile>) {
        let mut inner = self.inner.borrow_mut();
        if meta.bytes > self.budget_bytes || inner.entries.contains_key(&id) {
            return;
        }
        while inner.bytes + meta.bytes > self.budget_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((evicted, _)) = inner.entries.remove(&old) {
                inner.bytes -= evicted.bytes;
            }
        }
        inner.bytes += meta.bytes;
        inner.order.push_back(id);
        inner.entries.insert(id, (meta, file));
    }

    pub fn clear(&self) {
        *self.inner.borrow_mut() = MetadataInner::default();
    }

    /// Drops the entries of the given files (closing their descriptors once no scan holds them).
    pub fn evict_files(&self, ids: &hashbrown::HashSet<u64>) {
        let mut inner = self.inner.borrow_mut();
        for id in ids {
            if let Some((meta, _)) = inner.entries.remove(id) {
                inner.bytes -= meta.bytes;
            }
        }
        let MetadataInner { entries, order, .. } = &mut *inner;
        order.retain(|id| entries.contains_key(id));
    }
}

/// One file of a query, assigned to one core.
#[derive(Clone, Debug)]
pub struct FileTask {
    /// Identifies the file in the buffer pool and metadata cache.
    pub cache_id: u64,
    pub path: PathBuf,
    pub rows: u64,
    /// What the manifest's file statistics say about the filter.
    pub truth: Truth,
    /// Per column: whether the manifest allows a NaN in this file. Parquet's row-group and page
    /// statistics cannot rule NaN out (see `stats`), so this is what lets them prune floats.
    pub nan_possible: Vec<bool>,
}

impl FileTask {
    /// Row-group or page statistics of `column`, NaN ruled out when the file has none.
    fn refine(&self, column: usize, mut stats: ColumnStats) -> ColumnStats {
        stats.nan_possible &= self.nan_possible.get(column).copied().unwrap_or(true);
        stats
    }
}

/// Counters of one query, summed over cores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanStats {
    pub files_total: u64,
    pub files_pruned: u64,
    pub row_groups_total: u64,
    pub row_groups_pruned: u64,
    pub pages_total: u64,
    pub pages_pruned: u64,
    pub rows_total: u64,
    /// Rows whose filter was evaluated or whose values were aggregated/returned.
    pub rows_scanned: u64,
    /// Rows counted from statistics alone.
    pub rows_from_statistics: u64,
    /// Bytes read from disk (footers and pages); a warm query reads none.
    pub bytes_read: u64,
    /// Decoded bytes of the pages the query scanned, whether from the buffer pool or the disk.
    pub bytes_scanned: u64,
    pub pool_hits: u64,
    pub pool_misses: u64,
}

impl ScanStats {
    pub fn add(&mut self, other: &ScanStats) {
        self.files_total += other.files_total;
        self.files_pruned += other.files_pruned;
        self.row_groups_total += other.row_groups_total;
        self.row_groups_pruned += other.row_groups_pruned;
        self.pages_total += other.pages_total;
        self.pages_pruned += other.pages_pruned;
        self.rows_total += other.rows_total;
        self.rows_scanned += other.rows_scanned;
        self.rows_from_statistics += other.rows_from_statistics;
        self.bytes_read += other.bytes_read;
        self.bytes_scanned += other.bytes_scanned;
        self.pool_hits += other.pool_hits;
        self.pool_misses += other.pool_misses;
    }
}

/// What one core returns for a query.
pub enum CoreOutput {
    /// Row mode: columns of `Mode::Rows::values`, as chunks.
    Rows(Vec<Vec<ArrayRef>>),
    Groups(GroupRows),
}

enum Sink {
    Rows {
        values: Vec<ValueExpr>,
        chunks: Vec<Vec<ArrayRef>>,
        rows: u64,
        /// LIMIT without ORDER BY: stop scanning once this many rows are found.
        stop_after: Option<u64>,
        /// ORDER BY with LIMIT: keep only the best `k` rows, compacting as rows accumulate.
        top_k: Option<(Vec<SortKey>, usize)>,
        /// Streaming (no ORDER BY): chunks go to the coordinator as they are made, not at the end.
        out: Option<RowSender>,
        /// The coordinator stopped listening (its LIMIT is met, or the query was cancelled).
        closed: bool,
    },
    Groups(GroupState),
    /// `SELECT COUNT(*)` without GROUP BY: only a count is needed.
    Count(u64),
}

impl Sink {
    fn full(&self) -> bool {
        match self {
            Sink::Rows {
                rows,
                stop_after,
                closed,
                ..
            } => *closed || stop_after.is_some_and(|limit| *rows >= limit),
            _ => false,
        }
    }
}

/// Where a core streams row chunks (columns of `Mode::Rows::values`) to the coordinator. Bounded,
/// so a coordinator that is behind (a slow client) holds the scan back.
pub type RowSender = futures::channel::mpsc::Sender<Vec<ArrayRef>>;

/// Scans `files` for `plan` on this core. With `prune_only`, reads metadata and counts what
/// pruning does without decoding data (for EXPLAIN). With `out` (row mode without ORDER BY),
/// row chunks are sent there as they are made instead of being returned.
pub async fn execute(
    state: Rc<CoreState>,
    plan: Arc<Plan>,
    files: Vec<FileTask>,
    prune_only: bool,
    out: Option<RowSender>,
) -> Result<(CoreOutput, ScanStats)> {
    let mut stats = ScanStats::default();
    let sink = match &plan.mode {
        Mode::Rows { values } => Sink::Rows {
            values: values.clone(),
            chunks: Vec::new(),
            rows: 0,
            stop_after: if plan.order_by.is_empty() {
                plan.limit
            } else {
                None
            },
            top_k: match (plan.order_by.is_empty(), plan.limit) {
                (false, Some(limit)) => Some((
                    plan.order_by.clone(),
                    usize::try_from(limit).unwrap_or(usize::MAX),
                )),
                _ => None,
            },
            out: out.filter(|_| plan.order_by.is_empty()),
            closed: false,
        },
        Mode::Groups { keys, aggregates }
            if keys.is_empty()
                && !aggregates.is_empty()
                && aggregates
                    .iter()
                    .all(|a| a.function == crate::sql::AggregateFunction::CountStar) =>
        {
            Sink::Count(0)
        }
        Mode::Groups { keys, aggregates } => Sink::Groups(GroupState::new(keys, aggregates)),
    };
    let (hits_before, misses_before) = {
        let c = state.pool.counters();
        (c.hits, c.misses)
    };
    // Several files in flight overlap one file's I/O waits with another's decoding; they share
    // the sink, borrowed only between awaits (one thread, so never twice at once).
    let sink = RefCell::new(sink);
    {
        let mut scans = futures::stream::iter(files.iter())
            .map(|task| {
                let (state, plan, sink) = (&state, &plan, &sink);
                async move {
                    let mut file_stats = ScanStats::default();
                    let result =
                        scan_file(state, plan, task, sink, &mut file_stats, prune_only).await;
                    (result, file_stats)
                }
            })
            .buffer_unordered(FILES_IN_FLIGHT);
        while let Some((result, file_stats)) = scans.next().await {
            stats.add(&file_stats);
            result?;
            if sink.borrow().full() {
                break;
            }
        }
    }
    flush_rows(&sink).await;
    let sink = sink.into_inner();
    let counters = state.pool.counters();
    stats.pool_hits = counters.hits - hits_before;
    stats.pool_misses = counters.misses - misses_before;
    let output = match sink {
        Sink::Rows { chunks, .. } => CoreOutput::Rows(chunks),
        Sink::Groups(groups) => CoreOutput::Groups(groups.finish()),
        Sink::Count(count) => {
            let Mode::Groups { aggregates, .. } = &plan.mode else {
                return Err(Error::Internal("count sink in row mode".into()));
            };
            let states = aggregates
                .iter()
                .map(|_| crate::aggregate::AccState::Count(count))
                .collect();
            CoreOutput::Groups(vec![(Vec::new(), states)])
        }
    };
    Ok((output, stats))
}

async fn open_meta(
    state: &CoreState,
    task: &FileTask,
    columns: &[ColumnDef],
    stats: &mut ScanStats,
) -> Result<(Rc<FileMeta>, Rc<DirectFile>)> {
    if let Some(cached) = state.metadata.get(task.cache_id) {
        return Ok(cached);
    }
    let file = DirectFile::open(&task.path)
        .await
        .map_err(|e| Error::io(&task.path, e))?;
    let meta = reader::load_file_meta(&file, &task.path, columns, &mut stats.bytes_read).await?;
    let (meta, file) = (Rc::new(meta), Rc::new(file));
    state
        .metadata
        .insert(task.cache_id, meta.clone(), file.clone());
    Ok((meta, file))
}

async fn scan_file(
    state: &CoreState,
    plan: &Plan,
    task: &FileTask,
    sink: &RefCell<Sink>,
    stats: &mut ScanStats,
    prune_only: bool,
) -> Result<()> {
    stats.rows_total += task.rows;
    if task.truth == Truth::Always && !prune_only {
        if let Sink::Count(count) = &mut *sink.borrow_mut() {
            *count += task.rows;
            stats.rows_from_statistics += task.rows;
            return Ok(());
        }
    }
    let (meta, file) = open_meta(state, task, &plan.columns, stats).await?;
    let filter_columns = plan.filter_columns();
    // Every column the scan may read: the page counters cover all of their pages.
    let mut read_columns = filter_columns.clone();
    for column in plan.value_columns() {
        if !read_columns.contains(&column) {
            read_columns.push(column);
        }
    }
    for row_group in 0..meta.row_groups() {
        if sink.borrow().full() {
            break;
        }
        runtime::yield_if_needed().await;
        let rows = meta.row_group_rows(row_group);
        stats.row_groups_total += 1;
        let group_meta = meta.metadata.row_group(row_group);
        let truth = match (&plan.filter, task.truth) {
            (None, _) | (_, Truth::Always) => Truth::Always,
            (Some(filter), _) => prune::classify(filter, &|column| {
                let chunk = group_meta.column(column);
                Some(task.refine(
                    column,
                    stats::from_parquet(
                        plan.columns[column].column_type,
                        chunk.statistics(),
                        rows as u64,
                    ),
                ))
            }),
        };
        let pages: u64 = read_columns
            .iter()
            .map(|&c| meta.page_bounds[row_group][c].len() as u64 - 1)
            .sum();
        stats.pages_total += pages;
        if truth == Truth::Never {
            stats.row_groups_pruned += 1;
            stats.pages_pruned += pages;
            continue;
        }
        let segments = match (&plan.filter, truth) {
            (Some(filter), Truth::Maybe) => {
                let page_index = meta.metadata.page_index_for_row_group(row_group);
                prune::segments(filter, rows, &|column| {
                    let index = page_index.column_index(column)?;
                    let bounds = &meta.page_bounds[row_group][column];
                    Some(
                        bounds
                            .windows(2)
                            .enumerate()
                            .map(|(page, w)| {
                                let page_rows = (w[1] - w[0]) as u64;
                                (
                                    w[1],
                                    task.refine(
                                        column,
                                        stats::from_column_index(
                                            plan.columns[column].column_type,
                                            index,
                                            page,
                                            page_rows,
                                        ),
                                    ),
                                )
                            })
                            .collect(),
                    )
                })
            }
            (_, truth) => Segments::uniform(rows, truth),
        };
        for &column in &read_columns {
            let bounds = &meta.page_bounds[row_group][column];
            stats.pages_pruned += bounds
                .windows(2)
                .filter(|w| {
                    segments.ranges().all(|(range, truth)| {
                        truth == Truth::Never || range.end <= w[0] || range.start >= w[1]
                    })
                })
                .count() as u64;
        }
        if prune_only {
            continue;
        }
        scan_row_group(
            state,
            plan,
            task,
            &meta,
            &file,
            row_group,
            &segments,
            &filter_columns,
            sink,
            stats,
        )
        .await?;
        flush_rows(sink).await;
    }
    Ok(())
}

/// Sends the row chunks collected so far to the coordinator, when streaming. A chunk leaves the
/// sink only once the channel has room for it, so a scan cancelled while waiting (another file
/// met the LIMIT) loses nothing. A closed receiver marks the sink full, which ends the scan.
async fn flush_rows(sink: &RefCell<Sink>) {
    let mut out = match &*sink.borrow() {
        Sink::Rows {
            chunks,
            out: Some(out),
            closed: false,
            ..
        } if !chunks.is_empty() => out.clone(),
        _ => return,
    };
    loop {
        let ready = futures::future::poll_fn(|context| out.poll_ready(context)).await;
        let mut borrowed = sink.borrow_mut();
        let Sink::Rows { chunks, closed, .. } = &mut *borrowed else {
            return;
        };
        if chunks.is_empty() {
            return;
        }
        if ready.is_err() || out.start_send(chunks.remove(0)).is_err() {
            *closed = true;
            return;
        }
    }
}

/// Page index of the page containing `row`.
fn page_of(bounds: &[u32], row: u32) -> usize {
    bounds.partition_point(|&b| b <= row).saturating_sub(1)
}

type Pages = HashMap<(usize, usize), Rc<Frame>>;

/// Loads the `(column, page)` pages, from the pool or by decoding (all misses in flight together).
#[allow(clippy::too_many_arguments)]
async fn load_pages(
    state: &CoreState,
    task: &FileTask,
    meta: &FileMeta,
    file: &DirectFile,
    row_group: usize,
    wanted: Vec<(usize, usize)>,
    pages: &mut Pages,
    stats: &mut ScanStats,
) -> Result<()> {
    let mut misses = Vec::new();
    for (column, page) in wanted {
        if pages.contains_key(&(column, page)) {
            continue;
        }
        let key = PageKey {
            file_id: task.cache_id,
            row_group: row_group as u32,
            column: column as u32,
            page: page as u32,
        };
        match state.pool.get(&key) {
            Some(frame) => {
                stats.bytes_scanned += frame.bytes as u64;
                pages.insert((column, page), frame);
            }
            None => misses.push((column, page)),
        }
    }
    if misses.is_empty() {
        return Ok(());
    }
    // One decoder per column for all its missing pages; all columns' reads in flight together.
    let mut by_column: Vec<(usize, Vec<usize>)> = Vec::new();
    for &(column, page) in &misses {
        match by_column.iter_mut().find(|(c, _)| *c == column) {
            Some((_, pages)) => pages.push(page),
            None => by_column.push((column, vec![page])),
        }
    }
    by_column
        .iter_mut()
        .for_each(|(_, pages)| pages.sort_unstable());
    let decodes = by_column.iter().map(|(column, column_pages)| async move {
        let mut bytes_read = 0;
        let arrays = reader::decode_pages(
            file,
            meta,
            row_group,
            *column,
            column_pages,
            &mut bytes_read,
        )
        .await?;
        Ok::<_, Error>((arrays, bytes_read))
    });
    let decoded = futures::future::try_join_all(decodes).await?;
    for ((column, column_pages), (arrays, bytes_read)) in by_column.into_iter().zip(decoded) {
        stats.bytes_read += bytes_read;
        for (page, array) in column_pages.into_iter().zip(arrays) {
            let first_row = meta.page_bounds[row_group][column][page];
            let key = PageKey {
                file_id: task.cache_id,
                row_group: row_group as u32,
                column: column as u32,
                page: page as u32,
            };
            let frame = state.pool.insert(key, Frame::new(first_row, array));
            stats.bytes_scanned += frame.bytes as u64;
            pages.insert((column, page), frame);
        }
    }
    Ok(())
}

/// The slice of `column` for rows `range` of the row group.
fn column_slice(
    meta: &FileMeta,
    pages: &Pages,
    row_group: usize,
    column: usize,
    range: &Range<u32>,
) -> Result<ArrayRef> {
    let bounds = &meta.page_bounds[row_group][column];
    let page = page_of(bounds, range.start);
    let frame = pages
        .get(&(column, page))
        .ok_or_else(|| Error::Internal(format!("page {page} of column {column} not loaded")))?;
    let offset = (range.start - frame.first_row) as usize;
    let length = (range.end - range.start) as usize;
    if offset + length > frame.array.len() {
        return Err(Error::corrupt(
            &meta.path,
            format!("column {column} page {page} is shorter than its index says"),
        ));
    }
    Ok(frame.array.slice(offset, length))
}

/// Splits the non-Never segments at every page boundary of `columns`.
fn pieces(
    meta: &FileMeta,
    row_group: usize,
    segments: &Segments,
    columns: &[usize],
) -> Vec<(Range<u32>, Truth)> {
    let mut cuts: Vec<u32> = columns
        .iter()
        .flat_map(|&c| meta.page_bounds[row_group][c].iter().copied())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    for (range, truth) in segments.ranges() {
        if truth == Truth::Never || range.is_empty() {
            continue;
        }
        let mut start = range.start;
        for &cut in cuts.iter().filter(|&&c| c > range.start && c < range.end) {
            out.push((start..cut, truth));
            start = cut;
        }
        out.push((start..range.end, truth));
    }
    out
}

fn pages_for(
    meta: &FileMeta,
    row_group: usize,
    columns: &[usize],
    ranges: &[Range<u32>],
) -> Vec<(usize, usize)> {
    let mut wanted = Vec::new();
    for &column in columns {
        let bounds = &meta.page_bounds[row_group][column];
        for range in ranges {
            let first = page_of(bounds, range.start);
            let last = page_of(bounds, range.end - 1);
            for page in first..=last {
                if !wanted.contains(&(column, page)) {
                    wanted.push((column, page));
                }
            }
        }
    }
    wanted
}

#[allow(clippy::too_many_arguments)]
async fn scan_row_group(
    state: &CoreState,
    plan: &Plan,
    task: &FileTask,
    meta: &FileMeta,
    file: &DirectFile,
    row_group: usize,
    segments: &Segments,
    filter_columns: &[usize],
    sink: &RefCell<Sink>,
    stats: &mut ScanStats,
) -> Result<()> {
    let value_columns = plan.value_columns();
    let count_only = matches!(*sink.borrow(), Sink::Count(_));
    let mut all_columns = filter_columns.to_vec();
    if !count_only {
        all_columns.extend(value_columns.iter().filter(|c| !filter_columns.contains(c)));
    }
    let pieces = pieces(meta, row_group, segments, &all_columns);
    // Phase 1: filter columns for the ranges whose truth is not settled by statistics.
    let mut pages = Pages::new();
    let maybe: Vec<Range<u32>> = pieces
        .iter()
        .filter(|(_, t)| *t == Truth::Maybe)
        .map(|(r, _)| r.clone())
        .collect();
    let wanted = pages_for(meta, row_group, filter_columns, &maybe);
    load_pages(
        state, task, meta, file, row_group, wanted, &mut pages, stats,
    )
    .await?;
    let mut masks: Vec<Option<Vec<u64>>> = Vec::with_capacity(pieces.len());
    let mut selected_ranges = Vec::new();
    for (range, truth) in &pieces {
        let length = (range.end - range.start) as usize;
        let mask = match (truth, &plan.filter) {
            (Truth::Maybe, Some(filter)) => {
                stats.rows_scanned += length as u64;
                let column = |c: usize| column_slice(meta, &pages, row_group, c, range);
                Some(evaluate(filter, &column, length, &state.kernels)?)
            }
            _ => None,
        };
        let selected = mask
            .as_ref()
            .map_or(length, |m| state.kernels.count_ones(m));
        if let Sink::Count(count) = &mut *sink.borrow_mut() {
            *count += selected as u64;
            if mask.is_none() {
                stats.rows_from_statistics += length as u64;
            }
        }
        if selected > 0 {
            selected_ranges.push(range.clone());
        }
        masks.push(mask);
    }
    if count_only {
        return Ok(());
    }
    // Phase 2: value columns, only for pages holding selected rows.
    let wanted = pages_for(meta, row_group, &value_columns, &selected_ranges);
    load_pages(
        state, task, meta, file, row_group, wanted, &mut pages, stats,
    )
    .await?;
    for ((range, truth), mask) in pieces.iter().zip(&masks) {
        let length = (range.end - range.start) as usize;
        if mask
            .as_ref()
            .is_some_and(|m| state.kernels.count_ones(m) == 0)
        {
            continue;
        }
        if *truth == Truth::Always {
            stats.rows_scanned += length as u64;
        }
        let column = |c: usize| column_slice(meta, &pages, row_group, c, range);
        {
            let mut sink = sink.borrow_mut();
            if sink.full() {
                break;
            }
            consume(
                &mut sink,
                &state.kernels,
                &value_columns,
                &column,
                mask.as_deref(),
                length,
            )?;
        }
        runtime::yield_if_needed().await;
    }
    Ok(())
}

/// Feeds one piece (rows of one page per column, `mask` selecting) to the sink.
fn consume(
    sink: &mut Sink,
    kernels: &Kernels,
    value_columns: &[usize],
    column: &dyn Fn(usize) -> Result<ArrayRef>,
    mask: Option<&[u64]>,
    length: usize,
) -> Result<()> {
    match sink {
        Sink::Groups(groups) => {
            let mut arrays: HashMap<usize, ArrayRef> = HashMap::new();
            for &c in value_columns {
                arrays.insert(c, column(c)?);
            }
            let lookup = |c: usize| {
                arrays
                    .get(&c)
                    .cloned()
                    .unwrap_or_else(|| arrow_array::new_null_array(&DataType::Null, length))
            };
            groups.update(kernels, &lookup, mask, length)?;
        }
        Sink::Rows {
            values,
            chunks,
            rows,
            stop_after,
            top_k,
            ..
        } => {
            let filter = mask.map(|m| {
                BooleanArray::new(
                    BooleanBuffer::new(Buffer::from_vec(m.to_vec()), 0, length),
                    None,
                )
            });
            let mut chunk = Vec::with_capacity(values.len());
            for value in values.iter() {
                let array = row_value(*value, &column(value.column())?)?;
                let array = match &filter {
                    Some(f) => arrow_select::filter::filter(&array, f)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                    None => array,
                };
                chunk.push(array);
            }
            let mut produced = chunk.first().map_or(0, |a| a.len()) as u64;
            if let Some(limit) = stop_after {
                let room = limit.saturating_sub(*rows);
                if produced > room {
                    chunk = chunk
                        .into_iter()
                        .map(|a| a.slice(0, room as usize))
                        .collect();
                    produced = room;
                }
            }
            *rows += produced;
            chunks.push(chunk);
            if let Some((keys, k)) = top_k {
                if *rows as usize > (*k).saturating_mul(4).max(TOP_K_COMPACT_ROWS) {
                    let merged = sort_rows(std::mem::take(chunks), keys, Some(*k))?;
                    *rows = merged.first().map_or(0, |a| a.len()) as u64;
                    chunks.push(merged);
                }
            }
        }
        Sink::Count(_) => {}
    }
    Ok(())
}

/// Rows buffered before an ORDER BY ... LIMIT k scan compacts to its best k.
const TOP_K_COMPACT_ROWS: usize = 65_536;

/// Concatenates row chunks (all of one shape) and sorts them by `keys`, keeping the first `limit`.
pub fn sort_rows(
    chunks: Vec<Vec<ArrayRef>>,
    keys: &[SortKey],
    limit: Option<usize>,
) -> Result<Vec<ArrayRef>> {
    let internal = |e: arrow_schema::ArrowError| Error::Internal(e.to_string());
    let columns = if chunks.len() == 1 {
        chunks.into_iter().next().unwrap_or_default()
    } else {
        let width = chunks.first().map_or(0, |c| c.len());
        let mut columns = Vec::with_capacity(width);
        for i in 0..width {
            let parts: Vec<&dyn Array> = chunks.iter().map(|c| c[i].as_ref()).collect();
            columns.push(arrow_select::concat::concat(&parts).map_err(internal)?);
        }
        columns
    };
    let rows = columns.first().map_or(0, |c| c.len());
    if keys.is_empty() || rows == 0 {
        return Ok(columns);
    }
    let sort_columns: Vec<arrow_ord::sort::SortColumn> = keys
        .iter()
        .map(|key| arrow_ord::sort::SortColumn {
            values: sort_key(&columns[key.index]),
            options: Some(arrow_schema::SortOptions {
                descending: key.descending,
                nulls_first: key.descending,
            }),
        })
        .collect();
    let indices = arrow_ord::sort::lexsort_to_indices(&sort_columns, limit).map_err(internal)?;
    columns
        .iter()
        .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(internal)
}

/// The array `sort_rows` orders by: floats in PostgreSQL's order (`value::float_cmp`). Arrow
/// sorts floats by IEEE total order, which puts negative NaNs before every number and `-0.0`
/// before `0.0`; with every NaN made the positive one and `-0.0` made `0.0`, its order is ours.
fn sort_key(column: &ArrayRef) -> ArrayRef {
    match column.as_primitive_opt::<Float64Type>() {
        Some(floats) => Arc::new(floats.unary::<_, Float64Type>(|v| {
            if v.is_nan() {
                f64::NAN
            } else if v == 0.0 {
                0.0
            } else {
                v
            }
        })),
        None => column.clone(),
    }
}

/// The output array of `value` for a page slice.
fn row_value(value: ValueExpr, array: &ArrayRef) -> Result<ArrayRef> {
    match (value, array.data_type()) {
        (ValueExpr::Date(_), DataType::Timestamp(_, _)) => {
            let times = i64_values(array).unwrap_or(&[]);
            let days: Date32Array = times
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    array
                        .is_valid(i)
                        .then(|| t.div_euclid(MICROS_PER_DAY) as i32)
                })
                .collect();
            Ok(Arc::new(days))
        }
        _ => Ok(array.clone()),
    }
}

pub fn i64_values(array: &ArrayRef) -> Option<&[i64]> {
    match array.data_type() {
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().values()),
        DataType::Timestamp(_, _) => {
            Some(array.as_primitive::<TimestampMicrosecondType>().values())
        }
        _ => None,
    }
}

pub fn i32_values(array: &ArrayRef) -> Option<&[i32]> {
    match array.data_type() {
        DataType::Int32 => Some(array.as_primitive::<Int32Type>().values()),
        DataType::Date32 => Some(array.as_primitive::<Date32Type>().values()),
        _ => None,
    }
}

/// The value of row `row` as a scalar (for MIN/MAX and per-row paths).
pub fn scalar_at(value: ValueExpr, array: &ArrayRef, row: usize) -> Scalar {
    if array.is_null(row) {
        return Scalar::Null;
    }
    match (value, array.data_type()) {
        (ValueExpr::Date(_), DataType::Timestamp(_, _)) => Scalar::Int(
            i64_values(array)
                .map_or(0, |v| v[row])
                .div_euclid(MICROS_PER_DAY),
        ),
        (_, DataType::Int64 | DataType::Timestamp(_, _)) => {
            Scalar::Int(i64_values(array).map_or(0, |v| v[row]))
        }
        (_, DataType::Int32 | DataType::Date32) => {
            Scalar::Int(i32_values(array).map_or(0, |v| v[row]) as i64)
        }
        (_, DataType::Float64) => Scalar::Float(array.as_primitive::<Float64Type>().value(row)),
        (_, DataType::Boolean) => Scalar::Bool(array.as_boolean().value(row)),
        (_, DataType::Utf8) => Scalar::Str(array.as_string::<i32>().value(row).to_owned()),
        (_, DataType::Dictionary(_, _)) => {
            let dictionary = array.as_dictionary::<Int32Type>();
            let key = dictionary.keys().value(row) as usize;
            let values = dictionary.values().as_string::<i32>();
            if key < values.len() && values.is_valid(key) {
                Scalar::Str(values.value(key).to_owned())
            } else {
                Scalar::Null
            }
        }
        _ => Scalar::Null,
    }
}

/// Validity of `array` as bitmap words aligned to its first row, or None when it has no NULLs.
pub fn validity_words(array: &dyn Array) -> Option<Vec<u64>> {
    let nulls = array.logical_nulls()?;
    if nulls.null_count() == 0 {
        return None;
    }
    let chunks = nulls.inner().bit_chunks();
    let mut words: Vec<u64> = chunks.iter().collect();
    if chunks.remainder_len() > 0 {
        words.push(chunks.remainder_bits());
    }
    Some(words)
}

/// `mask AND validity(array)`, or None when that equals `mask` (no NULLs).
pub fn combine_with_validity(
    kernels: &Kernels,
    mask: Option<&[u64]>,
    array: &dyn Array,
    len: usize,
) -> Option<Vec<u64>> {
    let mut validity = validity_words(array)?;
    validity.resize(words_for(len), 0);
    if let Some(mask) = mask {
        kernels.and(&mut validity, mask);
    }
    Some(validity)
}

/// Evaluates a filter on `len` rows; `column(c)` gives column c's slice.
pub fn evaluate(
    filter: &Filter,
    column: &dyn Fn(usize) -> Result<ArrayRef>,
    len: usize,
    kernels: &Kernels,
) -> Result<Vec<u64>> {
    Ok(match filter {
        Filter::And(parts) | Filter::Or(parts) => {
            let is_and = matches!(filter, Filter::And(_));
            let mut out: Option<Vec<u64>> = None;
            for part in parts {
                let mask = evaluate(part, column, len, kernels)?;
                match &mut out {
                    None => out = Some(mask),
                    Some(acc) if is_and => kernels.and(acc, &mask),
                    Some(acc) => kernels.or(acc, &mask),
                }
            }
            out.unwrap_or_else(|| {
                let mut all = vec![0u64; words_for(len)];
                if is_and {
                    kernels.not(&mut all, len);
                }
                all
            })
        }
        Filter::Unknown => vec![0u64; words_for(len)],
        Filter::Leaf { column: c, test } => evaluate_test(&column(*c)?, test, len, kernels)?,
    })
}

fn evaluate_test(array: &ArrayRef, test: &Test, len: usize, kernels: &Kernels) -> Result<Vec<u64>> {
    let mut out = vec![0u64; words_for(len)];
    let validity = validity_words(array.as_ref());
    let validity = validity.as_deref();
    if let Test::IsNull { negated } = test {
        if *negated {
            kernels.is_not_null(validity, len, &mut out);
        } else {
            kernels.is_null(validity, len, &mut out);
        }
        return Ok(out);
    }
    if let Test::In {
        negated: true,
        list_has_null: true,
        ..
    } = test
    {
        return Ok(out);
    }
    match array.data_type() {
        DataType::Int64 | DataType::Timestamp(_, _) => {
            let values = i64_values(array).unwrap_or(&[]);
            match test {
                Test::Compare {
                    op,
                    value: Scalar::Int(v),
                } => kernels.cmp_i64(values, *op, *v, validity, &mut out),
                Test::Between {
                    low: Scalar::Int(l),
                    high: Scalar::Int(h),
                } => kernels.between_i64(values, *l, *h, validity, &mut out),
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let set: Vec<i64> = list
                        .iter()
                        .filter_map(|s| {
                            if let Scalar::Int(v) = s {
                                Some(*v)
                            } else {
                                None
                            }
                        })
                        .collect();
                    in_list(kernels, &mut out, validity, len, *negated, |o| {
                        kernels.in_i64(values, &set, validity, o)
                    });
                }
                _ => return Err(Error::Internal(format!("test {test:?} on an int64 column"))),
            }
        }
        DataType::Int32 | DataType::Date32 => {
            let values = i32_values(array).unwrap_or(&[]);
            match test {
                Test::Compare {
                    op,
                    value: Scalar::Int(v),
                } => match i32::try_from(*v) {
                    Ok(v) => kernels.cmp_i32(values, *op, v, validity, &mut out),
                    Err(_) => {
                        // Every int32 lies on the same side of an out-of-range constant, so the
                        // outcome is the same for all non-NULL rows: that of 0 against it.
                        if holds(0, *op, *v) {
                            kernels.is_not_null(validity, len, &mut out);
                        }
                    }
                },
                Test::Between {
                    low: Scalar::Int(l),
                    high: Scalar::Int(h),
                } => {
                    let low = (*l).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                    let high = (*h).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                    if l <= h && *l <= i32::MAX as i64 && *h >= i32::MIN as i64 {
                        kernels.between_i32(values, low, high, validity, &mut out);
                    }
                }
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let set: Vec<i32> = list
                        .iter()
                        .filter_map(|s| {
                            if let Scalar::Int(v) = s {
                                i32::try_from(*v).ok()
                            } else {
                                None
                            }
                        })
                        .collect();
                    in_list(kernels, &mut out, validity, len, *negated, |o| {
                        kernels.in_i32(values, &set, validity, o)
                    });
                }
                _ => return Err(Error::Internal(format!("test {test:?} on an int32 column"))),
            }
        }
        DataType::Float64 => {
            let values = array.as_primitive::<Float64Type>().values();
            let float = |s: &Scalar| match s {
                Scalar::Float(v) => Some(*v),
                Scalar::Int(v) => Some(*v as f64),
                _ => None,
            };
            match test {
                Test::Compare { op, value } => {
                    let v =
                        float(value).ok_or_else(|| Error::Internal("non-float constant".into()))?;
                    kernels.cmp_f64(values, *op, v, validity, &mut out)
                }
                Test::Between { low, high } => {
                    // A NaN bound is a value (PostgreSQL's order), not "no bound": a missing one
                    // is a planner bug.
                    let missing = || Error::Internal("non-float BETWEEN bound".into());
                    let (l, h) = (
                        float(low).ok_or_else(missing)?,
                        float(high).ok_or_else(missing)?,
                    );
                    kernels.between_f64(values, l, h, validity, &mut out)
                }
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let set: Vec<f64> = list.iter().filter_map(float).collect();
                    in_list(kernels, &mut out, validity, len, *negated, |o| {
                        kernels.in_f64(values, &set, validity, o)
                    });
                }
                _ => {
                    return Err(Error::Internal(format!(
                        "test {test:?} on a float64 column"
                    )))
                }
            }
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_dictionary::<Int32Type>();
            let entries = dictionary.values().as_string::<i32>();
            let mut dictionary_mask = vec![0u64; words_for(entries.len())];
            for entry in 0..entries.len() {
                if entries.is_valid(entry) && test_str(entries.value(entry), test) {
                    dictionary_mask[entry / 64] |= 1 << (entry % 64);
                }
            }
            let key_validity = dictionary
                .keys()
                .nulls()
                .map(|_| validity_words(dictionary.keys()))
                .unwrap_or(None);
            kernels.select_codes(
                dictionary.keys().values(),
                &dictionary_mask,
                entries.len(),
                key_validity.as_deref(),
                &mut out,
            );
        }
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            for row in 0..len {
                if strings.is_valid(row) && test_str(strings.value(row), test) {
                    out[row / 64] |= 1 << (row % 64);
                }
            }
        }
        DataType::Boolean => {
            let booleans = array.as_boolean();
            for row in 0..len {
                if booleans.is_valid(row) && test_scalar(&Scalar::Bool(booleans.value(row)), test) {
                    out[row / 64] |= 1 << (row % 64);
                }
            }
        }
        other => {
            return Err(Error::Internal(format!(
                "filter on unsupported type {other}"
            )))
        }
    }
    Ok(out)
}

fn in_list(
    kernels: &Kernels,
    out: &mut [u64],
    validity: Option<&[u64]>,
    len: usize,
    negated: bool,
    fill: impl FnOnce(&mut [u64]),
) {
    fill(out);
    if negated {
        kernels.not(out, len);
        if let Some(validity) = validity {
            kernels.and(out, validity);
        }
    }
}

/// Whether an ordering satisfies `op` (compared against `Equal`).
fn ordering_holds(order: std::cmp::Ordering, op: CmpOp) -> bool {
    holds(order, op, std::cmp::Ordering::Equal)
}

/// A test on one non-NULL scalar (the per-row path for booleans).
fn test_scalar(value: &Scalar, test: &Test) -> bool {
    match test {
        Test::Compare {
            op,
            value: constant,
        } => ordering_holds(value.total_cmp(constant), *op),
        Test::Between { low, high } => {
            value.total_cmp(low).is_ge() && value.total_cmp(high).is_le()
        }
        Test::In {
            values,
            negated,
            list_has_null,
        } => {
            let found = values.iter().any(|v| v.total_cmp(value).is_eq());
            if *negated {
                !found && !list_has_null
            } else {
                found
            }
        }
        Test::IsNull { negated } => *negated,
        Test::Like { .. } => false,
    }
}

/// A test on one non-NULL string.
fn test_str(text: &str, test: &Test) -> bool {
    match test {
        Test::Like {
            pattern,
            is_prefix,
            negated,
        } => {
            let matches = if *is_prefix {
                text.starts_with(pattern.as_str())
            } else {
                text == pattern
            };
            matches != *negated
        }
        Test::Compare {
            op,
            value: Scalar::Str(constant),
        } => ordering_holds(text.as_bytes().cmp(constant.as_bytes()), *op),
        Test::Between {
            low: Scalar::Str(low),
            high: Scalar::Str(high),
        } => text.as_bytes() >= low.as_bytes() && text.as_bytes() <= high.as_bytes(),
        Test::In {
            values,
            negated,
            list_has_null,
        } => {
            let found = values
                .iter()
                .any(|v| matches!(v, Scalar::Str(s) if s == text));
            if *negated {
                !found && !list_has_null
            } else {
                found
            }
        }
        _ => false,
    }
}

/// Statistics helper for tests and EXPLAIN: the file-level truth of a filter.
pub fn file_truth(filter: Option<&Filter>, file_stats: &[ColumnStats]) -> Truth {
    match filter {
        None => Truth::Always,
        Some(filter) => prune::classify(filter, &|c| file_stats.get(c).cloned()),
    }
}
