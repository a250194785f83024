//! Scanning on one core: for each file the core owns in a query, prune row groups by statistics
//! and pages by the page index, load the pages still needed (from the buffer pool, else read with
//! direct I/O and decode), evaluate the filter into selection masks with the SIMD kernels, and
//! feed the selected rows to grouping/aggregation or to the row collector.
//!
//! Late materialisation: the filter's columns are loaded first; the other columns are loaded only
//! for pages that have at least one selected row. `COUNT(*)` over ranges the statistics prove
//! all-matching is answered without reading data.

mod filter;
mod pages;
pub mod partials;
mod permits;
mod rows;

pub use filter::{evaluate, file_truth};
pub use rows::sort_rows;

use pages::{column_slice, load_pages, pages_for, pieces, Pages};
use partials::{Partial, PartialCache};
use permits::Permits;
use rows::{row_value, TOP_K_COMPACT_ROWS};

use crate::error::{Error, Result};
use crate::io::buffer_pool::BufferPool;
use crate::io::runtime::{self, DirectFile};
use crate::query::aggregate::{AccState, GroupMerger, GroupRows, GroupState};
use crate::query::kernels::Kernels;
use crate::query::memory::{Charge, Reservation};
use crate::query::plan::{Mode, Plan, SortKey, ValueExpr};
use crate::query::prune::{self, Segments, Truth};
use crate::table::manifest::{ColumnDef, FileEntry, TableManifest};
use crate::table::reader::{self, FileMeta};
use crate::table::stats::{self, ColumnStats};
use arrow_array::{Array, ArrayRef, BooleanArray};
use arrow_buffer::{BooleanBuffer, Buffer};
use arrow_schema::DataType;
use futures::StreamExt;
use hashbrown::HashMap;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// Files a core reads and decodes concurrently for one query: while one decodes, the others'
/// reads are in flight (cold scan of 368 day files on 2 cores: 4 -> 8 took it from ~560 to
/// ~600 MiB/s; 16 was no better).
const FILES_IN_FLIGHT: usize = 8;
/// Files a core works on concurrently for one query: those past `FILES_IN_FLIGHT` read their
/// footers and page indexes (small reads, when not cached) while the others decode.
const FILES_OPENING: usize = 32;

/// Per-core state: owned by one executor, never shared.
pub struct CoreState {
    pub core: usize,
    pub pool: BufferPool,
    pub metadata: MetadataCache,
    /// Partial results of query fragments over this core's files.
    pub partials: PartialCache,
    pub kernels: Kernels,
    /// Streaming ingestion on this core: its log, buffers and producers.
    pub ingest: Rc<crate::ingest::IngestCore>,
    /// Tenants' quota resources as last applied on this core (`CoreContext::apply_quota`).
    pub quotas: RefCell<HashMap<String, (u32, u32, u64)>>,
}

/// Which buffered rows a query reads on each core: the table's incarnation, and per log the
/// mark of its manifest (rows at or below it are read from files).
#[derive(Debug)]
pub struct BufferedScan {
    pub tenant: String,
    pub table: String,
    pub incarnation: u64,
    pub marks: std::collections::BTreeMap<String, u64>,
}

/// Footers and page indexes of recently used files with their open handles, bounded in bytes
/// (`budget_bytes`, counting each `FileMeta::bytes`) and in files (`files_max`, descriptors held
/// open); the oldest entry goes first. It outlives the buffer pool's pages (`Engine::clear_caches`
/// keeps it), as a node keeps the metadata of the files it serves.
pub struct MetadataCache {
    budget_bytes: usize,
    /// Open files held at most: each entry keeps its descriptor open.
    files_max: usize,
    inner: RefCell<MetadataInner>,
}

#[derive(Default)]
struct MetadataInner {
    entries: HashMap<u64, (Rc<FileMeta>, Rc<DirectFile>)>,
    order: VecDeque<u64>,
    bytes: usize,
    /// Files a scan is loading now, with the scans waiting for the same file (each file's
    /// metadata is read once however many scans want it at once).
    loading: HashMap<u64, Vec<futures::channel::oneshot::Sender<()>>>,
    counters: MetadataCounters,
}

/// What a core's metadata cache holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataCounters {
    pub files: u64,
    pub bytes: u64,
    /// Files whose footer and page index were read from disk.
    pub loads: u64,
    pub evictions: u64,
}

impl MetadataCache {
    pub fn new(budget_bytes: usize, files_max: usize) -> MetadataCache {
        MetadataCache {
            budget_bytes,
            files_max: files_max.max(1),
            inner: RefCell::new(MetadataInner::default()),
        }
    }

    fn get(&self, id: u64) -> Option<(Rc<FileMeta>, Rc<DirectFile>)> {
        self.inner.borrow().entries.get(&id).cloned()
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.borrow_mut();
        if let Some((removed, _)) = inner.entries.remove(&id) {
            inner.bytes -= removed.bytes;
            inner.order.retain(|&o| o != id);
        }
    }

    fn insert(&self, id: u64, meta: Rc<FileMeta>, file: Rc<DirectFile>) {
        let mut inner = self.inner.borrow_mut();
        inner.counters.loads += 1;
        if meta.bytes > self.budget_bytes || inner.entries.contains_key(&id) {
            return;
        }
        while inner.bytes + meta.bytes > self.budget_bytes || inner.entries.len() >= self.files_max
        {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((evicted, _)) = inner.entries.remove(&old) {
                inner.bytes -= evicted.bytes;
                inner.counters.evictions += 1;
            }
        }
        inner.bytes += meta.bytes;
        inner.order.push_back(id);
        inner.entries.insert(id, (meta, file));
    }

    /// `None` when the caller is to load `id` (it is marked as loading until the returned
    /// guard drops); else a receiver that completes when the scan loading it is done (loaded,
    /// failed or cancelled: the caller looks again).
    fn start_load(
        &self,
        id: u64,
    ) -> std::result::Result<LoadGuard<'_>, futures::channel::oneshot::Receiver<()>> {
        let mut inner = self.inner.borrow_mut();
        match inner.loading.get_mut(&id) {
            Some(waiters) => {
                let (sender, receiver) = futures::channel::oneshot::channel();
                waiters.push(sender);
                Err(receiver)
            }
            None => {
                inner.loading.insert(id, Vec::new());
                Ok(LoadGuard { cache: self, id })
            }
        }
    }

    pub fn counters(&self) -> MetadataCounters {
        let inner = self.inner.borrow();
        MetadataCounters {
            files: inner.entries.len() as u64,
            bytes: inner.bytes as u64,
            ..inner.counters
        }
    }

    pub fn clear(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.entries.clear();
        inner.order.clear();
        inner.bytes = 0;
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

/// A file's metadata being loaded by one scan; dropping it (done, failed or cancelled) wakes the
/// scans waiting for the same file.
struct LoadGuard<'a> {
    cache: &'a MetadataCache,
    id: u64,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        let waiters = self.cache.inner.borrow_mut().loading.remove(&self.id);
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(());
        }
    }
}

/// One file of a query, assigned to one core: a view of its manifest entry (nothing copied
/// per file and query).
#[derive(Clone, Debug)]
pub struct FileTask {
    /// Identifies the file in the buffer pool and metadata cache.
    pub cache_id: u64,
    pub rows: u64,
    /// What the manifest's file statistics say about the filter.
    pub truth: Truth,
    pub manifest: Arc<TableManifest>,
    /// The file's index in `manifest.files`.
    pub index: usize,
    /// The table's directory, which file paths are relative to.
    pub table_dir: Arc<PathBuf>,
    /// This task's share of the file's row groups: those whose number modulo `of` is `index`
    /// (a large file is split so every core scans a share of it).
    pub slice: Slice,
}

/// A share of a file's row groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub index: u32,
    pub of: u32,
}

impl Slice {
    pub const WHOLE: Slice = Slice { index: 0, of: 1 };
}

impl FileTask {
    /// The rows of row group `row_group` (of `row_groups`, holding `rows` rows) this task scans,
    /// or `None` when it scans none. With at least as many row groups as shares, each share takes
    /// whole row groups (those whose number modulo the shares is its own); with fewer, every
    /// share takes its range of rows in every row group, cut at the page boundaries `bounds`
    /// nearest to equal parts, so one large row group keeps every core busy.
    fn rows_of(
        &self,
        row_group: usize,
        row_groups: usize,
        rows: u32,
        bounds: &[u32],
    ) -> Option<Range<u32>> {
        let Slice { index, of } = self.slice;
        if row_groups >= of as usize {
            return (row_group % of as usize == index as usize).then_some(0..rows);
        }
        let cut = |share: u32| -> u32 {
            let target = (rows as u64 * share as u64 / of as u64) as u32;
            bounds
                .iter()
                .copied()
                .min_by_key(|&bound| bound.abs_diff(target))
                .unwrap_or(target)
                .min(rows)
        };
        let (start, end) = (
            cut(index),
            if index + 1 == of {
                rows
            } else {
                cut(index + 1)
            },
        );
        let start = if index == 0 { 0 } else { start };
        (start < end).then_some(start..end)
    }

    /// Whether this task accounts for row group `row_group` in the statistics: the share that
    /// takes it whole, or the first share when every share takes part of it.
    fn counts(&self, row_group: usize, row_groups: usize) -> bool {
        let Slice { index, of } = self.slice;
        if row_groups >= of as usize {
            row_group % of as usize == index as usize
        } else {
            index == 0
        }
    }

    /// Whether this task accounts for the whole file where a share cannot: its row count, and
    /// answers statistics give for the file as a whole.
    fn lead(&self) -> bool {
        self.slice.index == 0
    }

    /// Names this task's part in the partial-result cache.
    fn part_id(&self) -> u64 {
        if self.slice == Slice::WHOLE {
            return self.cache_id;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(
            &(self.cache_id, self.slice.index, self.slice.of),
            &mut hasher,
        );
        std::hash::Hasher::finish(&hasher)
    }

    /// The core of `cores` that scans this task: a file's slices go to different cores, and
    /// the same share always to the same core (its pages stay in that core's pool).
    pub fn core(&self, cores: usize) -> usize {
        (self.cache_id.wrapping_add(self.slice.index as u64) % cores as u64) as usize
    }

    pub fn entry(&self) -> &FileEntry {
        &self.manifest.files[self.index]
    }

    pub fn path(&self) -> PathBuf {
        self.table_dir.join(&self.entry().path)
    }

    /// The manifest's statistics of `column` over the whole file (`None` for a column added
    /// after the file was written, before padding).
    pub fn column_stats(&self, column: usize) -> Option<&ColumnStats> {
        self.entry().columns.get(column)
    }

    /// Row-group or page statistics of `column`, NaN ruled out when the file has none (the
    /// manifest's count: Parquet's row-group and page statistics cannot rule NaN out).
    fn refine(&self, column: usize, mut stats: ColumnStats) -> ColumnStats {
        stats.nan_possible &= self.column_stats(column).is_none_or(|c| c.nan_possible);
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
    /// Files and buffered chunks whose partial result came from the partial-result cache
    /// (nothing read).
    pub files_cached: u64,
    /// Bytes read from disk (footers and pages); a warm query reads none.
    pub bytes_read: u64,
    /// Decoded bytes of the pages the query scanned, whether from the buffer pool or the disk.
    pub bytes_scanned: u64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    /// Partitions of the table (its files' directories), and those whose every file the
    /// manifest's statistics pruned. Set once per query, by its coordinator.
    pub partitions_total: u64,
    pub partitions_pruned: u64,
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
        self.files_cached += other.files_cached;
        self.bytes_read += other.bytes_read;
        self.bytes_scanned += other.bytes_scanned;
        self.pool_hits += other.pool_hits;
        self.pool_misses += other.pool_misses;
        self.partitions_total += other.partitions_total;
        self.partitions_pruned += other.partitions_pruned;
    }
}

/// What one core returns for a query.
pub enum CoreOutput {
    /// Row mode: columns of `Mode::Rows::values`, as chunks.
    Rows(Vec<Vec<ArrayRef>>),
    Groups(GroupRows),
    /// Groups split by key hash (`aggregate::partition`): part `p` is merged on core `p`.
    Partitioned(Vec<GroupRows>),
}

impl CoreOutput {
    /// Splits grouped output with GROUP BY keys into `parts` for a merge on every core; other
    /// output is returned as it is.
    pub fn partition(self, plan: &Plan, parts: usize) -> CoreOutput {
        match (self, &plan.mode) {
            (CoreOutput::Groups(rows), Mode::Groups { keys, .. }) if !keys.is_empty() => {
                CoreOutput::Partitioned(crate::query::aggregate::partition(rows, parts))
            }
            (output, _) => output,
        }
    }
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
        /// Bytes of `chunks` while they are collected (not streamed), and their reservation.
        bytes: u64,
        charge: Charge,
    },
    Groups(GroupState, Charge),
    /// `SELECT COUNT(*)` without GROUP BY: only a count is needed.
    Count(u64),
}

impl Sink {
    /// Moves this sink's share of the query's memory reservation to what it holds now; fails
    /// with `limit` when that is more than the query may have. Streamed rows are bounded by the
    /// channel to the coordinator instead.
    fn account(&mut self, memory: &Reservation) -> Result<()> {
        match self {
            Sink::Rows {
                bytes,
                charge,
                out: None,
                ..
            } => charge.set(memory, *bytes),
            Sink::Groups(groups, charge) => charge.set(memory, groups.memory_bytes()),
            _ => Ok(()),
        }
    }

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
    buffered: Arc<BufferedScan>,
    prune_only: bool,
    out: Option<RowSender>,
    memory: Arc<Reservation>,
) -> Result<(CoreOutput, ScanStats)> {
    let mut stats = ScanStats::default();
    let sink = new_sink(&plan, &files, out);
    let (hits_before, misses_before) = {
        let c = state.pool.counters();
        (c.hits, c.misses)
    };
    // Several files in flight overlap one file's I/O waits with another's decoding. Rows and
    // counts go to one shared sink, borrowed only between awaits (one thread, so never twice at
    // once). Groups with a float SUM or AVG are kept per file and folded in file order, so the
    // sums do not depend on which read finished first. Other aggregates do not depend on order
    // and share one state (per-file states cost a merge per file: ~6x on 1 M groups), unless
    // the plan's last run on this core made few groups (`partials::PER_FILE_GROUPS_MAX`): then
    // they are kept per file too, so the cache keeps them.
    let fingerprints = match &sink {
        Sink::Count(_) | Sink::Groups(..) if !prune_only && state.partials.enabled() => {
            partials::Fingerprints::of(&plan)
        }
        _ => None,
    };
    let plan_key = match &sink {
        Sink::Groups(..) => fingerprints.map(|f| f.plan_key()),
        _ => None,
    };
    let per_file_groups = match (&sink, &plan.mode) {
        (Sink::Groups(..), Mode::Groups { aggregates, .. }) => {
            aggregates
                .iter()
                .any(|a| matches!(AccState::empty(a), AccState::SumFloat { .. }))
                || plan_key.is_some_and(|key| state.partials.few_groups(key))
        }
        _ => false,
    };
    // Per-file results are cached when each file's part is computed on its own anyway
    // (float sums, few groups), or is a count (`partials`).
    let fingerprint = match &sink {
        Sink::Count(_) => fingerprints,
        Sink::Groups(..) if per_file_groups => fingerprints,
        _ => None,
    };
    // MIN, MAX and COUNT without GROUP BY over files whose statistics answer them.
    let answers_from_statistics = !prune_only && matches!(sink, Sink::Groups(..));
    let sink = RefCell::new(sink);
    let mut groups = GroupMerger::default();
    let mut groups_charge = Charge::default();
    // The fold of every file's part, cached under the exact list of parts it folds: a repeated
    // aggregation over files that have not changed merges none of them again.
    let fold_key = match (fingerprint, per_file_groups) {
        (Some(fingerprints), true) => Some(partials::fold_key(
            &fingerprints,
            files.iter().map(|t| (t.part_id(), t.truth)),
        )),
        _ => None,
    };
    let folded = fold_key.and_then(|key| state.partials.get(key, partials::FOLD));
    if let Some(Partial::Groups(rows)) = &folded {
        groups.add_shared(rows);
        groups_charge.set(&memory, groups.memory_bytes())?;
        stats.rows_total += files
            .iter()
            .filter(|t| t.lead())
            .map(|t| t.rows)
            .sum::<u64>();
        stats.files_cached += files.len() as u64;
    }
    let mut all_files = true;
    let permits = Permits::new(FILES_IN_FLIGHT);
    if folded.is_none() {
        let mut scans = futures::stream::iter(files.iter().enumerate())
            .map(|(index, task)| {
                let (state, plan, sink, memory) = (&state, &plan, &sink, &memory);
                let permits = &permits;
                async move {
                    let mut file_stats = ScanStats::default();
                    if answers_from_statistics {
                        if let (Some(states), Mode::Groups { aggregates, .. }) =
                            (states_from_statistics(plan, task), &plan.mode)
                        {
                            // The file's lead share answers for the whole file.
                            let part = if task.lead() {
                                file_stats.rows_total += task.rows;
                                file_stats.rows_from_statistics += task.rows;
                                GroupRows::single(&states, aggregates)
                            } else {
                                GroupRows::default()
                            };
                            return Ok::<_, Error>((
                                index,
                                Ok(()),
                                file_stats,
                                Some(Rc::new(part)),
                            ));
                        }
                    }
                    // A file every row of which matches is the same part whatever the filter.
                    let fingerprint = fingerprint.map(|f| f.for_file(task.truth));
                    let cached = fingerprint.and_then(|f| state.partials.get(task.part_id(), f));
                    if let Some(cached) = cached {
                        if task.lead() {
                            file_stats.rows_total += task.rows;
                        }
                        file_stats.files_cached += 1;
                        let part = match cached {
                            Partial::Groups(rows) => Some(rows),
                            Partial::Count(count) => {
                                if let Sink::Count(total) = &mut *sink.borrow_mut() {
                                    *total += count;
                                }
                                None
                            }
                        };
                        return Ok::<_, Error>((index, Ok(()), file_stats, part));
                    }
                    // A sink of the file's own when its part is kept apart (float sums) or
                    // cached; the shared one otherwise.
                    let own = if per_file_groups {
                        Some(Sink::Groups(
                            group_state(plan, std::slice::from_ref(task)),
                            Charge::default(),
                        ))
                    } else if fingerprint.is_some() {
                        Some(Sink::Count(0))
                    } else {
                        None
                    }
                    .map(RefCell::new);
                    let result = scan_file(
                        state,
                        plan,
                        task,
                        own.as_ref().unwrap_or(sink),
                        memory,
                        &mut file_stats,
                        prune_only,
                        permits,
                    )
                    .await;
                    let part = match own.map(RefCell::into_inner) {
                        Some(Sink::Groups(part, mut charge)) => {
                            let part = Rc::new(part.finish());
                            // The folded groups are charged as the core's from here on.
                            charge.set(memory, 0)?;
                            if let (Ok(()), Some(f)) = (&result, fingerprint) {
                                state.partials.insert_groups(task.part_id(), f, &part);
                            }
                            Some(part)
                        }
                        Some(Sink::Count(count)) if result.is_ok() => {
                            if let Sink::Count(total) = &mut *sink.borrow_mut() {
                                *total += count;
                            }
                            if let Some(f) = fingerprint {
                                state
                                    .partials
                                    .insert(task.part_id(), f, Partial::Count(count));
                            }
                            None
                        }
                        _ => None,
                    };
                    Ok::<_, Error>((index, result, file_stats, part))
                }
            })
            .buffer_unordered(FILES_OPENING);
        // Parts of files that finished before an earlier file, by file index.
        let mut waiting: BTreeMap<usize, Rc<GroupRows>> = BTreeMap::new();
        let mut next_part = 0;
        while let Some(scanned) = scans.next().await {
            let (index, result, file_stats, part) = scanned?;
            stats.add(&file_stats);
            result?;
            if let Some(part) = part {
                if per_file_groups {
                    waiting.insert(index, part);
                    while let Some(part) = waiting.remove(&next_part) {
                        groups.add_shared(&part);
                        next_part += 1;
                    }
                } else {
                    // A part proven by statistics: no float sums, so order is free.
                    groups.add_shared(&part);
                }
                groups_charge.set(&memory, groups.memory_bytes())?;
            }
            if sink.borrow().full() {
                all_files = false;
                break;
            }
        }
        if let (Some(key), true) = (fold_key, all_files) {
            if state.partials.keeps(groups.rows()) {
                let fold = Rc::new(groups.rows().clone());
                state.partials.insert_groups(key, partials::FOLD, &fold);
            }
        }
    }
    // Buffered rows of streaming ingestion, after the files, oldest first.
    if !sink.borrow().full() {
        let chunks = state.ingest.snapshot(
            &buffered.tenant,
            &buffered.table,
            buffered.incarnation,
            &buffered.marks,
        );
        // Chunk by chunk, each its own part, when parts are kept apart (float sums fold chunk by
        // chunk, cached or not, so the cache never changes an answer's bits) or cached (a
        // buffered chunk never changes either); into the shared sink otherwise.
        let per_chunk = per_file_groups || fingerprint.is_some();
        if per_chunk && matches!(plan.mode, Mode::Groups { .. }) {
            for chunk in &chunks {
                let id = chunk_cache_id(&buffered, chunk);
                let fingerprint = fingerprint.map(|f| f.for_file(Truth::Maybe));
                let cached = fingerprint.and_then(|f| state.partials.get(id, f));
                let part = match cached {
                    Some(part) => {
                        stats.rows_total += chunk.batch.num_rows() as u64;
                        stats.files_cached += 1;
                        part
                    }
                    None => {
                        let own = RefCell::new(if per_file_groups {
                            Sink::Groups(group_state(&plan, &[]), Charge::default())
                        } else {
                            Sink::Count(0)
                        });
                        scan_chunks(
                            &state,
                            &plan,
                            std::slice::from_ref(chunk),
                            &own,
                            &memory,
                            &mut stats,
                            prune_only,
                        )
                        .await?;
                        let part = match own.into_inner() {
                            Sink::Groups(part, mut charge) => {
                                charge.set(&memory, 0)?;
                                Partial::Groups(Rc::new(part.finish()))
                            }
                            Sink::Count(count) => Partial::Count(count),
                            Sink::Rows { .. } => unreachable!("made as groups or a count above"),
                        };
                        match (&part, fingerprint) {
                            (Partial::Groups(rows), Some(f)) => {
                                state.partials.insert_groups(id, f, rows)
                            }
                            (Partial::Count(_), Some(f)) => {
                                state.partials.insert(id, f, part.clone())
                            }
                            (_, None) => {}
                        }
                        part
                    }
                };
                match part {
                    Partial::Groups(rows) => {
                        groups.add_shared(&rows);
                        groups_charge.set(&memory, groups.memory_bytes())?;
                    }
                    Partial::Count(count) => {
                        if let Sink::Count(total) = &mut *sink.borrow_mut() {
                            *total += count;
                        }
                    }
                }
            }
        } else if !chunks.is_empty() {
            scan_chunks(
                &state, &plan, &chunks, &sink, &memory, &mut stats, prune_only,
            )
            .await?;
        }
    }
    flush_rows(&sink).await;
    let sink = sink.into_inner();
    let counters = state.pool.counters();
    stats.pool_hits = counters.hits - hits_before;
    stats.pool_misses = counters.misses - misses_before;
    let output = match sink {
        Sink::Rows { chunks, .. } => CoreOutput::Rows(chunks),
        // Without float sums the order rows are added in changes nothing: one shared state,
        // and the parts statistics proved.
        Sink::Groups(shared, _) if !per_file_groups => {
            groups.add(shared.finish());
            let rows = groups.finish();
            if let Some(key) = plan_key {
                state.partials.saw_groups(key, rows.len as u64);
            }
            CoreOutput::Groups(rows)
        }
        Sink::Groups(..) => {
            let rows = groups.finish();
            if let Some(key) = plan_key {
                state.partials.saw_groups(key, rows.len as u64);
            }
            CoreOutput::Groups(rows)
        }
        Sink::Count(count) => count_output(&plan, count)?,
    };
    Ok((output, stats))
}

/// The sink a core's scan for `plan` feeds: rows (streamed to `out` when given), a count, or
/// groups.
fn new_sink(plan: &Plan, files: &[FileTask], out: Option<RowSender>) -> Sink {
    match &plan.mode {
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
            bytes: 0,
            charge: Charge::default(),
        },
        Mode::Groups { keys, aggregates }
            if keys.is_empty()
                && !aggregates.is_empty()
                && aggregates
                    .iter()
                    .all(|a| a.function == crate::query::sql::AggregateFunction::CountStar) =>
        {
            Sink::Count(0)
        }
        Mode::Groups { .. } => Sink::Groups(group_state(plan, files), Charge::default()),
    }
}

/// Scans rows held in memory (a system table such as `query_stats`) for `plan` on this core:
/// pruned by their bounds, filtered and fed to a sink as buffered rows are.
pub async fn execute_chunks(
    state: &CoreState,
    plan: &Plan,
    chunks: &[Rc<crate::ingest::MemChunk>],
    memory: &Reservation,
) -> Result<(CoreOutput, ScanStats)> {
    let sink = RefCell::new(new_sink(plan, &[], None));
    let mut stats = ScanStats::default();
    scan_chunks(state, plan, chunks, &sink, memory, &mut stats, false).await?;
    let output = match sink.into_inner() {
        Sink::Rows { chunks, .. } => CoreOutput::Rows(chunks),
        Sink::Groups(groups, _) => CoreOutput::Groups(groups.finish()),
        Sink::Count(count) => count_output(plan, count)?,
    };
    Ok((output, stats))
}

/// A count-only sink's total as the groups of `COUNT(*)` aggregates.
fn count_output(plan: &Plan, count: u64) -> Result<CoreOutput> {
    let Mode::Groups { aggregates, .. } = &plan.mode else {
        return Err(Error::Internal("count sink in row mode".into()));
    };
    let states: Vec<AccState> = aggregates.iter().map(|_| AccState::Count(count)).collect();
    Ok(CoreOutput::Groups(GroupRows::single(&states, aggregates)))
}

/// A grouping state for `plan` over `files`: an integer key whose values the files' statistics
/// bound to a small enough range gets a direct id table (`GroupState::with_key_range`).
fn group_state(plan: &Plan, files: &[FileTask]) -> GroupState {
    use crate::value::{ColumnType as T, Scalar};
    let Mode::Groups { keys, aggregates } = &plan.mode else {
        return GroupState::new(&[], &[]);
    };
    let mut state = GroupState::new(keys, aggregates);
    let rows: u64 = files.iter().filter(|t| t.lead()).map(|t| t.rows).sum();
    for (k, key) in keys.iter().enumerate() {
        let ValueExpr::Column(c) = *key else {
            continue;
        };
        let integer = plan
            .columns
            .get(c)
            .is_some_and(|d| matches!(d.column_type, T::Int32 | T::Int64 | T::Date | T::Timestamp));
        if !integer || files.is_empty() {
            continue;
        }
        // The range of the files' non-NULL values; any file without bounds (unknown, not
        // all NULL) gives none.
        let mut range: Option<(i64, i64)> = None;
        let mut bounded = true;
        for task in files {
            match task.column_stats(c) {
                Some(ColumnStats {
                    min: Scalar::Int(min),
                    max: Scalar::Int(max),
                    ..
                }) => {
                    range =
                        Some(range.map_or((*min, *max), |(lo, hi)| (lo.min(*min), hi.max(*max))))
                }
                Some(stats) if stats.null_count == Some(stats.rows) => {}
                _ => bounded = false,
            }
        }
        if let (true, Some((min, max))) = (bounded, range) {
            // Not for a sparse range: the table is 4 bytes per possible key.
            let len = (max as i128 - min as i128 + 1) as u128;
            if len <= 2 * rows as u128 + 4096 {
                state = state.with_key_range(k, min, max);
            }
        }
    }
    state
}

/// The states of aggregates without GROUP BY over one whole file, proven by the manifest's
/// statistics of the file without reading it: COUNT(*), COUNT(column), and MIN/MAX of types
/// whose bounds are values of the column (integers, timestamps, dates, booleans, decimals; floats when
/// the writer counted no NaN, which Parquet keeps out of its bounds, and the bound is not a
/// zero whose sign Parquet may have changed (`ColumnStats::zero_exact`); not strings, which it
/// may truncate). `None` unless
/// every row of the file matches the filter and every aggregate is answered.
fn states_from_statistics(plan: &Plan, task: &FileTask) -> Option<Vec<AccState>> {
    use crate::query::sql::AggregateFunction as F;
    use crate::value::{ColumnType as T, Scalar};
    let Mode::Groups { keys, aggregates } = &plan.mode else {
        return None;
    };
    if !keys.is_empty() || task.truth != Truth::Always {
        return None;
    }
    aggregates
        .iter()
        .map(|aggregate| {
            let column = match aggregate.argument {
                None => None,
                Some(ValueExpr::Column(c)) => Some(c),
                Some(_) => return None,
            };
            let stats = match column {
                Some(c) => Some(task.column_stats(c).filter(|s| s.rows == task.rows)?),
                None => None,
            };
            match (aggregate.function, stats) {
                (F::CountStar, _) => Some(AccState::Count(task.rows)),
                (F::Count, Some(stats)) => {
                    Some(AccState::Count(task.rows.checked_sub(stats.null_count?)?))
                }
                (F::Min | F::Max, Some(stats)) => {
                    let column_type = plan.columns.get(column?)?.column_type;
                    let exact = match column_type {
                        T::Int32
                        | T::Int64
                        | T::Timestamp
                        | T::Date
                        | T::Boolean
                        | T::Decimal { .. } => true,
                        T::Float64 => !stats.nan_possible,
                        _ => false,
                    };
                    if !exact {
                        return None;
                    }
                    if stats.null_count? >= task.rows {
                        return Some(AccState::Extreme(Scalar::Null));
                    }
                    let bound = if aggregate.function == F::Min {
                        &stats.min
                    } else {
                        &stats.max
                    };
                    match bound {
                        Scalar::Null => None,
                        Scalar::Float(v) if *v == 0.0 && !stats.zero_exact => None,
                        bound => Some(AccState::Extreme(bound.clone())),
                    }
                }
                _ => None,
            }
        })
        .collect()
}

async fn open_meta(
    state: &CoreState,
    task: &FileTask,
    columns: &[ColumnDef],
    stats: &mut ScanStats,
) -> Result<(Rc<FileMeta>, Rc<DirectFile>)> {
    let key = task.cache_id;
    // A file's metadata describes the table's columns when it was loaded (those the file
    // lacks read as NULL): once the table gains a column, the file is loaded again.
    let current = |cached: &(Rc<FileMeta>, Rc<DirectFile>)| cached.0.columns() == columns.len();
    if let Some(cached) = state.metadata.get(key) {
        if current(&cached) {
            return Ok(cached);
        }
        state.metadata.remove(key);
    }
    // Another scan on this core may be reading this file's metadata now: wait for it rather
    // than read it twice.
    let _guard = match state.metadata.start_load(key) {
        Ok(guard) => Some(guard),
        Err(loaded) => {
            let _ = loaded.await;
            if let Some(cached) = state.metadata.get(key).filter(current) {
                return Ok(cached);
            }
            // Its load failed or was cancelled, or the entry did not fit: read it here.
            None
        }
    };
    let path = task.path();
    let file = DirectFile::open(&path)
        .await
        .map_err(|e| Error::io(&path, e))?;
    let meta = reader::load_file_meta(&file, &path, columns, &mut stats.bytes_read).await?;
    let (meta, file) = (Rc::new(meta), Rc::new(file));
    state.metadata.insert(key, meta.clone(), file.clone());
    Ok((meta, file))
}

#[allow(clippy::too_many_arguments)]
async fn scan_file(
    state: &CoreState,
    plan: &Plan,
    task: &FileTask,
    sink: &RefCell<Sink>,
    memory: &Reservation,
    stats: &mut ScanStats,
    prune_only: bool,
    permits: &Permits,
) -> Result<()> {
    #[cfg(test)]
    if fail_points::SCAN_PANICS.swap(false, std::sync::atomic::Ordering::AcqRel) {
        panic!("fail point: a scan task panics");
    }
    // A file's lead share counts its rows; the statistics count them once, there.
    if task.lead() {
        stats.rows_total += task.rows;
    }
    if task.truth == Truth::Always && !prune_only {
        if let Sink::Count(count) = &mut *sink.borrow_mut() {
            if task.lead() {
                *count += task.rows;
                stats.rows_from_statistics += task.rows;
            }
            return Ok(());
        }
    }
    let (meta, file) = open_meta(state, task, &plan.columns, stats).await?;
    let _decoding = permits.acquire().await;
    let filter_columns = plan.filter_columns();
    // Every column the scan may read: the page counters cover all of their pages.
    let mut read_columns = filter_columns.clone();
    for column in plan.value_columns() {
        if !read_columns.contains(&column) {
            read_columns.push(column);
        }
    }
    let row_groups = meta.row_groups();
    for row_group in 0..row_groups {
        let rows = meta.row_group_rows(row_group);
        let bounds = read_columns
            .first()
            .map_or(&[][..], |&c| &meta.page_bounds[row_group][c][..]);
        let (Some(share), counts) = (
            task.rows_of(row_group, row_groups, rows, bounds),
            task.counts(row_group, row_groups),
        ) else {
            continue;
        };
        if sink.borrow().full() {
            break;
        }
        runtime::yield_if_needed().await;
        // Statistics of the row group as a whole are counted by one share only.
        let mut counted = ScanStats::default();
        let tally = if counts { &mut *stats } else { &mut counted };
        tally.row_groups_total += 1;
        let group_meta = meta.metadata.row_group(row_group);
        let truth = match (&plan.filter, task.truth) {
            (None, _) | (_, Truth::Always) => Truth::Always,
            (Some(filter), _) => prune::classify(filter, &|column| {
                if meta.lacks(column) {
                    return Some(ColumnStats::nulls(rows as u64));
                }
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
        tally.pages_total += pages;
        if truth == Truth::Never {
            tally.row_groups_pruned += 1;
            tally.pages_pruned += pages;
            continue;
        }
        let segments = match (&plan.filter, truth) {
            (Some(filter), Truth::Maybe) => {
                let page_index = meta.metadata.page_index_for_row_group(row_group);
                prune::segments(filter, rows, &|column| {
                    if meta.lacks(column) {
                        return Some(vec![(rows, ColumnStats::nulls(rows as u64))]);
                    }
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
            tally.pages_pruned += bounds
                .windows(2)
                .filter(|w| {
                    segments.ranges().all(|(range, truth)| {
                        truth == Truth::Never || range.end <= w[0] || range.start >= w[1]
                    })
                })
                .count() as u64;
        }
        let segments = if share.len() as u32 == rows {
            segments
        } else {
            segments.within(share)
        };
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
        sink.borrow_mut().account(memory)?;
        flush_rows(sink).await;
    }
    Ok(())
}

/// Scans buffered chunks (rows not yet in files): pruned by their bounds as row groups are,
/// then filtered and fed to the sink whole.
async fn scan_chunks(
    state: &CoreState,
    plan: &Plan,
    chunks: &[Rc<crate::ingest::MemChunk>],
    sink: &RefCell<Sink>,
    memory: &Reservation,
    stats: &mut ScanStats,
    prune_only: bool,
) -> Result<()> {
    let value_columns = plan.value_columns();
    for chunk in chunks {
        if sink.borrow().full() {
            break;
        }
        runtime::yield_if_needed().await;
        let length = chunk.batch.num_rows();
        stats.rows_total += length as u64;
        let truth = match &plan.filter {
            None => Truth::Always,
            Some(filter) => prune::classify(filter, &|column| {
                Some(
                    chunk
                        .stats
                        .get(column)
                        .cloned()
                        .unwrap_or_else(|| ColumnStats::nulls(length as u64)),
                )
            }),
        };
        if truth == Truth::Never || prune_only {
            continue;
        }
        // Rows buffered before the table gained a column read NULL in it.
        let column = |c: usize| -> Result<ArrayRef> {
            match (chunk.batch.columns().get(c), plan.columns.get(c)) {
                (Some(array), _) => Ok(array.clone()),
                (None, Some(def)) => Ok(arrow_array::new_null_array(
                    &def.column_type.to_arrow(),
                    length,
                )),
                (None, None) => Err(Error::Internal(format!("no column {c}"))),
            }
        };
        stats.rows_scanned += length as u64;
        let mask = match (truth, &plan.filter) {
            (Truth::Maybe, Some(filter)) => {
                Some(evaluate(filter, &column, length, &state.kernels)?)
            }
            _ => None,
        };
        let selected = mask
            .as_ref()
            .map_or(length, |m| state.kernels.count_ones(m));
        {
            let mut sink = sink.borrow_mut();
            if let Sink::Count(count) = &mut *sink {
                *count += selected as u64;
                continue;
            }
            if selected > 0 {
                consume(
                    &mut sink,
                    &state.kernels,
                    &value_columns,
                    &column,
                    mask.as_deref(),
                    length,
                )?;
            }
            sink.account(memory)?;
        }
        flush_rows(sink).await;
    }
    Ok(())
}

/// Names a buffered chunk in the partial-result cache: its table's incarnation and its id,
/// which no other chunk of the process shares.
fn chunk_cache_id(buffered: &BufferedScan, chunk: &crate::ingest::MemChunk) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ("chunk", buffered.incarnation, chunk.id).hash(&mut hasher);
    hasher.finish()
}

/// Bytes the arrays of a row chunk hold.
pub fn chunk_bytes(chunk: &[ArrayRef]) -> u64 {
    chunk.iter().map(|a| a.get_array_memory_size() as u64).sum()
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
        Sink::Groups(groups, _) => {
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
            bytes,
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
            *bytes += chunk_bytes(&chunk);
            chunks.push(chunk);
            if let Some((keys, k)) = top_k {
                if *rows as usize > (*k).saturating_mul(4).max(TOP_K_COMPACT_ROWS) {
                    let merged = sort_rows(std::mem::take(chunks), keys, Some(*k))?;
                    *rows = merged.first().map_or(0, |a| a.len()) as u64;
                    *bytes = chunk_bytes(&merged);
                    chunks.push(merged);
                }
            }
        }
        Sink::Count(_) => {}
    }
    Ok(())
}

/// Faults tests inject into the scan path (each test binary is its own process under nextest).
#[cfg(test)]
pub(crate) mod fail_points {
    use std::sync::atomic::AtomicBool;

    /// The next file scan panics.
    pub static SCAN_PANICS: AtomicBool = AtomicBool::new(false);

    /// Queries pause this many milliseconds between reading their manifest and scanning.
    pub static QUERY_PAUSE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
}

#[cfg(test)]
mod tests {
    use crate::table::writer::{ImportOptions, TableWriter};
    use crate::{Engine, EngineConfig};
    use std::sync::atomic::Ordering;

    #[test]
    fn a_panicking_scan_fails_its_query_as_internal_and_the_next_query_runs() {
        let dir = tempfile::tempdir().unwrap();
        let batch = crate::gen::events_chunk(0, 5_000, 5_000, 7);
        let mut writer = TableWriter::open(
            dir.path(),
            "acme",
            "events",
            &batch.schema(),
            &ImportOptions::default(),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.cores = 2;
        config.pin_cores = false;
        // Every run must scan (a cached count would not reach the fail point).
        config.partial_cache_bytes = 0;
        let engine = Engine::open(config).unwrap();
        let sql = "SELECT COUNT(*) FROM events WHERE amount > 10";
        let expected = engine.sql("acme", sql).unwrap().batches;
        for _ in 0..4 {
            super::fail_points::SCAN_PANICS.store(true, Ordering::Release);
            let error = engine.sql("acme", sql).unwrap_err();
            assert_eq!(error.code(), "internal", "{error}");
            assert!(error.to_string().contains("panicked"), "{error}");
            // Every core still serves.
            assert_eq!(engine.sql("acme", sql).unwrap().batches, expected);
        }
    }
}
