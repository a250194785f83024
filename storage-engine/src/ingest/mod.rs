//! Durable streaming ingestion, thread-per-core.
//!
//! A batch for (tenant, table, producer) is handled by one core, the producer's *owner*
//! (`owner_core`), so a producer's idempotency window and the order of its batches live on one
//! core without locks. The owner checks the key against the window, appends the batch to its
//! write-ahead log (`wal`, group commit) and, once that is durable, adds the rows to its
//! in-memory buffer of the table (`TableBuffer`), where queries find them at once. A flush
//! writes a buffer's rows as Parquet through the import writer and publishes a manifest that
//! records, per log, the highest LSN the files now hold and the producers' windows; the log
//! segments whose records are all in published files are then deleted.
//!
//! A query reads each core's buffered chunks with an LSN above its manifest's mark for that
//! core's log, so a row is read from a buffer or from a file, never both and never neither.
//! Flushed chunks stay readable until no query that started before their manifest was published
//! is still running (`Epochs`).

pub mod recovery;
pub mod wal;
pub mod window;

use crate::error::{Error, Result};
use crate::io::crash::{self, Event};
use crate::io::runtime;
use crate::table::manifest::{ColumnDef, TableManifest};
use crate::table::stats::ColumnStats;
use crate::table::writer::{self, ImportOptions, IngestUpdate, TableWriter};
use crate::value::{ColumnType, Scalar};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use futures::channel::oneshot;
use hashbrown::{HashMap, HashSet};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal::{Lsn, WalWriter};
use window::{ProducerWindow, Seen};

/// The directory of the write-ahead logs, inside the data directory.
pub const WAL_DIR: &str = "_wal";

/// Ingestion settings (per node; budgets are split across cores).
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Bytes of buffered rows a table's buffer on one core holds before it is flushed.
    pub flush_bytes: u64,
    /// Buffered rows older than this are flushed whatever their size.
    pub flush_age: Duration,
    /// Bytes of buffered rows (live and being flushed) every core together may hold; past it,
    /// appends wait for flushes.
    pub memory_bytes: u64,
    /// Bytes reserved for each log segment file (a larger group gets a segment its size).
    pub segment_bytes: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            flush_bytes: 128 << 20,
            flush_age: Duration::from_secs(30),
            memory_bytes: 1 << 30,
            segment_bytes: wal::SEGMENT_BYTES,
        }
    }
}

/// How long an append waits for buffer memory before it fails with `unavailable`.
const BACKPRESSURE_WAIT_MAX: Duration = Duration::from_secs(60);

/// The core that owns a producer's batches into a table.
pub fn owner_core(tenant: &str, table: &str, producer: &str, cores: usize) -> usize {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in tenant
        .bytes()
        .chain([0])
        .chain(table.bytes())
        .chain([0])
        .chain(producer.bytes())
    {
        hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
    }
    (hash % cores.max(1) as u64) as usize
}

/// A producer name: 1 to 128 bytes.
pub fn validate_producer(producer: &str) -> Result<()> {
    if producer.is_empty() || producer.len() > 128 {
        return Err(Error::Import(format!(
            "a producer name has 1 to 128 bytes, not {}",
            producer.len()
        )));
    }
    Ok(())
}

/// What `append` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub rows: u64,
    /// The key was already durable: nothing was applied.
    pub duplicate: bool,
}

/// The columns of `batches` the table lacks, as nullable table columns (schema evolution: a
/// batch may add nullable columns; rows written before read NULL in them). An error names a
/// column whose type the engine cannot hold.
pub fn added_columns(columns: &[ColumnDef], batches: &[RecordBatch]) -> Result<Vec<ColumnDef>> {
    let mut added: Vec<ColumnDef> = Vec::new();
    for batch in batches {
        for field in batch.schema().fields() {
            let name = field.name().to_lowercase();
            if columns.iter().chain(&added).any(|c| c.name == name) {
                continue;
            }
            added.push(ColumnDef {
                column_type: crate::value::engine_type(&name, field.data_type())?,
                name,
                nullable: true,
            });
        }
    }
    Ok(added)
}

/// Converts a batch to a table's columns: matched by name (lower case) in any order, a missing
/// nullable column filled with NULLs, types converted as for imports (a value that does not fit
/// and a NULL in a NOT NULL column are errors naming the column and row). Returns the record's
/// buffer chunks: one per record batch with rows, viewing the received bytes where no
/// conversion was needed (no copy).
pub fn prepare(columns: &[ColumnDef], batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    let schema = writer::nullable_schema(columns);
    let mut parts = Vec::with_capacity(batches.len());
    let mut rows_before = 0u64;
    for batch in batches {
        let input = batch.schema();
        let names: Vec<String> = input
            .fields()
            .iter()
            .map(|f| f.name().to_lowercase())
            .collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(Error::Import(format!("column {name} appears twice")));
            }
            if !columns.iter().any(|c| &c.name == name) {
                return Err(Error::Import(format!(
                    "column {name} is not in the table (its columns: {})",
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for (column, field) in columns.iter().zip(schema.fields()) {
            let array = match names.iter().position(|n| n == &column.name) {
                Some(index) => writer::normalise_array(batch.column(index), field, rows_before)?,
                None if column.nullable => {
                    arrow_array::new_null_array(field.data_type(), batch.num_rows())
                }
                None => {
                    return Err(Error::Import(format!(
                        "column {} is missing, and it is NOT NULL",
                        column.name
                    )))
                }
            };
            if !column.nullable {
                if let Some(row) = writer::first_null(&array) {
                    return Err(Error::Import(format!(
                        "column {}, row {}: NULL in a NOT NULL column",
                        column.name,
                        rows_before + row as u64 + 1
                    )));
                }
            }
            arrays.push(array);
        }
        rows_before += batch.num_rows() as u64;
        if batch.num_rows() > 0 {
            parts.push(
                RecordBatch::try_new(schema.clone(), arrays)
                    .map_err(|e| Error::Import(e.to_string()))?,
            );
        }
    }
    Ok(parts)
}

/// Bytes of memory a batch's rows hold: the slices its arrays view, not whole buffers they may
/// share with other batches (all columns of a batch decoded from one IPC message view one
/// buffer; counting it per column made buffers look full early and flush small files).
pub fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch
        .columns()
        .iter()
        .map(|array| {
            let data = array.to_data();
            data.get_slice_memory_size()
                .unwrap_or_else(|_| array.get_array_memory_size()) as u64
        })
        .sum()
}

/// A WAL record's payload: which table and key, then the batch as the client sent it (an Arrow
/// IPC stream).
pub struct Record {
    pub tenant: String,
    pub table: String,
    pub incarnation: u64,
    pub producer: String,
    pub sequence: u64,
    pub ipc: Vec<u8>,
}

const RECORD_BATCH: u8 = 1;

impl Record {
    /// The bytes that precede the batch's in its record (`decode` reads both).
    pub fn header(
        tenant: &str,
        table: &str,
        incarnation: u64,
        producer: &str,
        sequence: u64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + tenant.len() + table.len() + producer.len());
        out.push(RECORD_BATCH);
        out.extend_from_slice(&incarnation.to_le_bytes());
        out.extend_from_slice(&sequence.to_le_bytes());
        for text in [tenant, table, producer] {
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Record, String> {
        let mut at = 0usize;
        let mut take = |n: usize| -> std::result::Result<&[u8], String> {
            let slice = bytes
                .get(at..at + n)
                .ok_or_else(|| "record is truncated".to_string())?;
            at += n;
            Ok(slice)
        };
        if take(1)?[0] != RECORD_BATCH {
            return Err("unknown record kind".into());
        }
        let incarnation = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let sequence = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let mut text = || -> std::result::Result<String, String> {
            let length = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
            String::from_utf8(take(length)?.to_vec()).map_err(|e| e.to_string())
        };
        let (tenant, table, producer) = (text()?, text()?, text()?);
        Ok(Record {
            tenant,
            table,
            incarnation,
            producer,
            sequence,
            ipc: bytes[at..].to_vec(),
        })
    }
}

/// Decodes a whole Arrow IPC stream held in memory.
pub fn decode_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| Error::Import(format!("bad Arrow IPC stream: {e}")))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Import(format!("bad Arrow IPC stream: {e}")))
}

/// Rows of one appended batch, held in memory until their flush is published and no query
/// needs them.
pub struct MemChunk {
    /// The log holding the chunk's record, and the record's place in it.
    pub log: Arc<str>,
    pub lsn: Lsn,
    /// In the table's column order and types (all nullable).
    pub batch: RecordBatch,
    /// Per column: bounds of the chunk's values, for pruning as with files.
    pub stats: Vec<ColumnStats>,
    bytes: u64,
    /// Unique in this process (a record may make several chunks, one per partition): names
    /// the chunk in the partial-result cache.
    pub id: u64,
    /// When it was buffered (acknowledged, or replayed at start): how far flushing is behind.
    pub arrived: Instant,
    /// Its rows' content digest (`table::digest`), made when first asked for.
    digest: std::sync::OnceLock<u64>,
}

/// The next `MemChunk::id`.
static NEXT_CHUNK_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl MemChunk {
    pub fn new(log: Arc<str>, lsn: Lsn, batch: RecordBatch, columns: &[ColumnDef]) -> MemChunk {
        let stats = columns
            .iter()
            .zip(batch.columns())
            .map(|(c, a)| array_stats(c.column_type, a))
            .collect();
        let bytes = batch_bytes(&batch);
        MemChunk {
            log,
            lsn,
            batch,
            stats,
            bytes,
            id: NEXT_CHUNK_ID.fetch_add(1, Ordering::Relaxed),
            arrived: Instant::now(),
            digest: std::sync::OnceLock::new(),
        }
    }

    /// The content digest of the chunk's rows (`table::digest::rows`), made once.
    pub fn digest(&self) -> Result<u64> {
        if let Some(digest) = self.digest.get() {
            return Ok(*digest);
        }
        let digest = crate::table::digest::rows(&self.batch)?;
        Ok(*self.digest.get_or_init(|| digest))
    }
}

/// Min/max/null count of an array, for the column types pruning uses bounds of.
fn array_stats(column_type: ColumnType, array: &ArrayRef) -> ColumnStats {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let rows = array.len() as u64;
    let mut stats = ColumnStats::unknown(rows);
    stats.null_count = Some(array.null_count() as u64);
    stats.nan_possible = false;
    let bounds = match column_type {
        ColumnType::Int32 => min_max(array.as_primitive::<Int32Type>())
            .map(|(l, h)| (Scalar::Int(l as i64), Scalar::Int(h as i64))),
        ColumnType::Int64 => min_max(array.as_primitive::<Int64Type>())
            .map(|(l, h)| (Scalar::Int(l), Scalar::Int(h))),
        ColumnType::Timestamp => min_max(array.as_primitive::<TimestampMicrosecondType>())
            .map(|(l, h)| (Scalar::Int(l), Scalar::Int(h))),
        ColumnType::Date => min_max(array.as_primitive::<Date32Type>())
            .map(|(l, h)| (Scalar::Int(l as i64), Scalar::Int(h as i64))),
        _ => {
            stats.nan_possible = true;
            None
        }
    };
    if let Some((min, max)) = bounds {
        stats.min = min;
        stats.max = max;
    }
    stats
}

fn min_max<T: arrow_array::ArrowPrimitiveType>(
    array: &arrow_array::PrimitiveArray<T>,
) -> Option<(T::Native, T::Native)>
where
    T::Native: Ord,
{
    let mut values = array.iter().flatten();
    let first = values.next()?;
    Some(values.fold((first, first), |(l, h), v| (l.min(v), h.max(v))))
}

/// Epochs of running queries, node-wide, so a core knows when no query can still need rows it
/// has flushed. A query registers the current epoch on its coordinating core before it reads its
/// manifest; a flush bumps the epoch after publishing, and its chunks are freed once no query
/// registered below the new epoch is running.
pub struct Epochs {
    current: AtomicU64,
    /// Per core: the oldest epoch a running query coordinated there registered (MAX: none).
    oldest: Box<[AtomicU64]>,
    /// Per core: bytes of buffered chunks it holds (live, flushing, retired). Raised before an
    /// append is acknowledged and lowered only when retired chunks are released, so a query
    /// may skip a core that holds none and has no file of its (`holds_rows`).
    held: Box<[AtomicU64]>,
}

impl Epochs {
    pub fn new(cores: usize) -> Epochs {
        Epochs {
            current: AtomicU64::new(1),
            oldest: (0..cores).map(|_| AtomicU64::new(u64::MAX)).collect(),
            held: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether `core` may hold buffered rows of any table.
    pub fn holds_rows(&self, core: usize) -> bool {
        self.held
            .get(core)
            .is_none_or(|held| held.load(Ordering::SeqCst) > 0)
    }

    fn bump(&self) -> u64 {
        self.current.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn oldest_running(&self) -> u64 {
        self.oldest
            .iter()
            .map(|o| o.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// A query's registration; dropping it ends the registration.
pub struct EpochGuard {
    ingest: Rc<IngestCore>,
    epoch: u64,
}

impl Drop for EpochGuard {
    fn drop(&mut self) {
        let ingest = &self.ingest;
        let mut running = ingest.running.borrow_mut();
        if let Some(count) = running.get_mut(&self.epoch) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.epoch);
            }
        }
        let oldest = running.keys().next().copied().unwrap_or(u64::MAX);
        ingest.epochs.oldest[ingest.core].store(oldest, Ordering::SeqCst);
    }
}

type TableKey = (String, String, u64);

/// A table incarnation's key in a core's buffers and windows.
fn table_key(manifest: &TableManifest) -> TableKey {
    (
        manifest.tenant.clone(),
        manifest.table.clone(),
        manifest.incarnation,
    )
}

/// One table's buffered rows on one core.
#[derive(Default)]
struct TableBuffer {
    columns: Vec<ColumnDef>,
    live: Vec<Rc<MemChunk>>,
    live_bytes: u64,
    /// When the oldest live chunk arrived.
    since: Option<Instant>,
    /// Chunks a running flush is writing.
    flushing: Vec<Rc<MemChunk>>,
    /// Flushed chunks some running query may still need, by the epoch of their publication.
    retired: Vec<(u64, Vec<Rc<MemChunk>>)>,
    flush_running: bool,
}

/// The node's logs: one per core written by this process, and those left by earlier runs whose
/// records were adopted into buffers at start (`recovery`), deleted once all are in files.
pub struct NodeLogs {
    pub cores: usize,
    /// By core.
    pub own: Vec<String>,
    pub adopted: Vec<AdoptedLog>,
}

/// The extension of a log directory being removed: recovery deletes it and reads nothing in it.
pub const REMOVED_LOG: &str = "removed";

pub struct AdoptedLog {
    pub id: String,
    pub dir: PathBuf,
    /// (table, core) buffers still holding unflushed records of this log.
    pending: AtomicU64,
}

impl AdoptedLog {
    pub fn new(id: String, dir: PathBuf) -> AdoptedLog {
        AdoptedLog {
            id,
            dir,
            pending: AtomicU64::new(0),
        }
    }

    /// Sets how many (table, core) buffers will hold this log's records, before any core
    /// adopts them (so none can remove the log while another still has to adopt).
    pub fn expect(&self, buffers: u64) {
        self.pending.store(buffers, Ordering::Release);
    }

    /// Removes the log's directory (all its records are in published files). Blocking. The
    /// directory is first renamed out of recovery's sight, so a removal cut short by a crash
    /// never leaves a log missing its seal or its first segments.
    pub fn remove(&self) {
        let removed = self.dir.with_extension(REMOVED_LOG);
        let result = std::fs::rename(&self.dir, &removed).and_then(|()| {
            crash::after(Event::Rename(&removed));
            std::fs::remove_dir_all(&removed)
        });
        match result {
            Ok(()) => {
                if let Some(parent) = self.dir.parent() {
                    let _ = crate::table::manifest::sync_dir(parent);
                }
            }
            Err(error) => tracing::error!(
                "removing replayed log {} failed: {error}",
                self.dir.display()
            ),
        }
    }
}

impl NodeLogs {
    /// Ids whose marks a manifest must keep.
    fn live(&self) -> Vec<String> {
        self.own
            .iter()
            .cloned()
            .chain(self.adopted.iter().map(|a| a.id.clone()))
            .collect()
    }
}

/// A record of an earlier run's log, for its owner core to buffer again (`IngestCore::adopt`).
pub struct Recovered {
    pub manifest: Arc<TableManifest>,
    /// Index into `NodeLogs::adopted`.
    pub log: usize,
    pub lsn: Lsn,
    pub producer: String,
    pub sequence: u64,
    pub batches: Vec<RecordBatch>,
}

/// A key being written: its entry in `IngestCore::in_flight`, removed when dropped.
struct FlightGuard {
    core: Rc<IngestCore>,
    flight: Option<(TableKey, String, u64)>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Some(flight) = self.flight.take() {
            self.core.in_flight.borrow_mut().remove(&flight);
        }
    }
}

/// Ingestion state of one core. Every buffered chunk of a given log is on one core (its own log
/// here; an adopted log on the core it was given to), because a flush publishes, per log, the
/// highest LSN it wrote, which says every record of that log up to it is in files.
pub struct IngestCore {
    core: usize,
    data_dir: PathBuf,
    config: IngestConfig,
    wal: Rc<WalWriter>,
    /// This core's log id.
    log: Arc<str>,
    logs: Arc<NodeLogs>,
    /// Per (table, adopted log): the highest adopted LSN this core still has to flush.
    adopted: RefCell<HashMap<(TableKey, usize), Lsn>>,
    epochs: Arc<Epochs>,
    /// Epochs of queries coordinated on this core, with their counts.
    running: RefCell<BTreeMap<u64, usize>>,
    tables: RefCell<HashMap<TableKey, TableBuffer>>,
    producers: RefCell<HashMap<(TableKey, String), ProducerWindow>>,
    in_flight: RefCell<HashSet<(TableKey, String, u64)>>,
    /// Per segment of this core's log: per table, the highest LSN of it there.
    segments: RefCell<BTreeMap<u64, HashMap<TableKey, Lsn>>>,
    /// Per table: the highest LSN whose rows are published in files.
    flushed: RefCell<HashMap<TableKey, Lsn>>,
    /// Bytes of chunks held (live, flushing, retired).
    memory_used: Cell<u64>,
    /// Appends waiting for memory.
    memory_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    ticking: Cell<bool>,
    /// Why the last flush failed, if it did (cleared by a successful one).
    last_flush_error: RefCell<Option<String>>,
    /// False when another process owns the data directory's logs.
    enabled: bool,
}

/// Takes the data directory's log lock (`_wal/.lock`, flock); `None` when another process
/// holds it (then this process must neither replay nor write logs).
pub fn lock_logs(data_dir: &Path) -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let dir = data_dir.join(WAL_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a valid descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    // The logs' directory must outlive a power loss before any record in it is acknowledged
    // (found by the crash model: a new `_wal` was not in the durable data directory).
    crate::table::manifest::sync_dir(data_dir)?;
    Ok(Some(file))
}

impl IngestCore {
    pub fn new(
        core: usize,
        data_dir: &Path,
        logs: Arc<NodeLogs>,
        epochs: Arc<Epochs>,
        config: IngestConfig,
        enabled: bool,
    ) -> IngestCore {
        let cores = logs.cores.max(1) as u64;
        let log_id = logs.own[core].clone();
        let config = IngestConfig {
            memory_bytes: (config.memory_bytes / cores).max(1 << 20),
            ..config
        };
        IngestCore {
            core,
            data_dir: data_dir.to_owned(),
            log: Arc::from(log_id.as_str()),
            wal: Rc::new(WalWriter::new(
                data_dir.join(WAL_DIR).join(&log_id),
                log_id,
                config.segment_bytes,
            )),
            logs,
            adopted: RefCell::default(),
            epochs,
            config,
            running: RefCell::default(),
            tables: RefCell::default(),
            producers: RefCell::default(),
            in_flight: RefCell::default(),
            segments: RefCell::default(),
            flushed: RefCell::default(),
            memory_used: Cell::new(0),
            memory_waiters: RefCell::default(),
            ticking: Cell::new(false),
            last_flush_error: RefCell::default(),
            enabled,
        }
    }

    /// Bytes of rows this core holds in memory.
    fn set_memory_used(&self, bytes: u64) {
        self.memory_used.set(bytes);
        if let Some(held) = self.epochs.held.get(self.core) {
            held.store(bytes, Ordering::SeqCst);
        }
    }

    /// Whether core `core` may hold buffered rows (`Epochs::holds_rows`).
    pub fn core_holds_rows(&self, core: usize) -> bool {
        self.epochs.holds_rows(core)
    }

    pub fn memory_used(&self) -> u64 {
        self.memory_used.get()
    }

    /// When the oldest row this core holds that is not yet published in a file was buffered.
    pub fn oldest_unflushed(&self) -> Option<Instant> {
        self.tables
            .borrow()
            .values()
            .flat_map(|buffer| buffer.flushing.iter().chain(&buffer.live))
            .map(|chunk| chunk.arrived)
            .min()
    }

    /// Starts a new epoch, for something just published that queries registered before it may
    /// still read the old way (see `Epochs`); returns the epoch.
    pub fn bump_epoch(&self) -> u64 {
        self.epochs.bump()
    }

    /// True while a query registered before `epoch` (node-wide) is running.
    pub fn queries_before_running(&self, epoch: u64) -> bool {
        self.epochs.oldest_running() < epoch
    }

    /// Registers a query about to read its manifest (see `Epochs`).
    pub fn enter_query(self: &Rc<Self>) -> EpochGuard {
        let epoch = self.epochs.current.load(Ordering::SeqCst);
        let mut running = self.running.borrow_mut();
        *running.entry(epoch).or_default() += 1;
        let oldest = running.keys().next().copied().unwrap_or(u64::MAX);
        self.epochs.oldest[self.core].store(oldest, Ordering::SeqCst);
        EpochGuard {
            ingest: self.clone(),
            epoch,
        }
    }

    /// The buffered chunks of a table a query must read: those above their log's mark in the
    /// query's manifest, oldest first.
    pub fn snapshot(
        &self,
        tenant: &str,
        table: &str,
        incarnation: u64,
        marks: &BTreeMap<String, Lsn>,
    ) -> Vec<Rc<MemChunk>> {
        let tables = self.tables.borrow();
        let Some(buffer) = tables.get(&(tenant.to_owned(), table.to_owned(), incarnation)) else {
            return Vec::new();
        };
        buffer
            .retired
            .iter()
            .flat_map(|(_, chunks)| chunks)
            .chain(&buffer.flushing)
            .chain(&buffer.live)
            .filter(|c| marks.get(&*c.log).is_none_or(|&mark| c.lsn > mark))
            .cloned()
            .collect()
    }

    /// The rows and content digest of the table's buffered chunks that `snapshot` with these
    /// marks would return (each chunk's digest made once, then kept with it).
    pub async fn buffered_digest(
        &self,
        tenant: &str,
        table: &str,
        incarnation: u64,
        marks: &BTreeMap<String, Lsn>,
    ) -> Result<(u64, u64)> {
        let (mut rows, mut digest) = (0u64, 0u64);
        for chunk in self.snapshot(tenant, table, incarnation, marks) {
            rows += chunk.batch.num_rows() as u64;
            digest = digest.wrapping_add(chunk.digest()?);
            runtime::yield_if_needed().await;
        }
        Ok((rows, digest))
    }

    /// Per log, the highest LSN of the table's buffered chunks that `snapshot` with these marks
    /// would return.
    pub fn buffered_high(
        &self,
        tenant: &str,
        table: &str,
        incarnation: u64,
        marks: &BTreeMap<String, Lsn>,
    ) -> Vec<(Arc<str>, Lsn)> {
        let mut highs: Vec<(Arc<str>, Lsn)> = Vec::new();
        for chunk in self.snapshot(tenant, table, incarnation, marks) {
            match highs.iter_mut().find(|(log, _)| **log == *chunk.log) {
                Some((_, high)) => *high = (*high).max(chunk.lsn),
                None => highs.push((chunk.log.clone(), chunk.lsn)),
            }
        }
        highs
    }

    /// Makes a batch durable under (producer, sequence) and buffers its rows; see the module
    /// comment. A producer this core has not seen since it started begins with its window in
    /// `manifest`.
    pub async fn append(
        self: &Rc<Self>,
        manifest: &TableManifest,
        producer: &str,
        sequence: u64,
        batches: Vec<RecordBatch>,
        ipc: wal::Payload,
    ) -> Result<Ack> {
        if !self.enabled {
            return Err(Error::Unavailable(format!(
                "another process owns the write-ahead log of {}: ingest through it",
                self.data_dir.display()
            )));
        }
        let key: TableKey = table_key(manifest);
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let producer_key = (key.clone(), producer.to_owned());
        let seen = self
            .producers
            .borrow_mut()
            .entry(producer_key.clone())
            .or_insert_with(|| {
                manifest
                    .ingest
                    .producers
                    .get(producer)
                    .cloned()
                    .unwrap_or_default()
            })
            .check(sequence);
        match seen {
            Seen::Durable => {
                return Ok(Ack {
                    rows,
                    duplicate: true,
                })
            }
            Seen::Forgotten { highest } => {
                return Err(Error::Import(format!(
                    "sequence {sequence} of producer {producer} is more than {} below its highest \
                     ({highest}): the node no longer knows whether it was applied",
                    window::WINDOW
                )))
            }
            Seen::New => {}
        }
        let flight = (key.clone(), producer.to_owned(), sequence);
        if !self.in_flight.borrow_mut().insert(flight.clone()) {
            return Err(Error::Unavailable(format!(
                "sequence {sequence} of producer {producer} is being written by another call; \
                 retry to learn its outcome"
            )));
        }
        // Held until the record's fate is known: by this call until the record is queued in
        // the log, then by the log's completion (which outlives a cancelled call).
        let flight = FlightGuard {
            core: self.clone(),
            flight: Some(flight),
        };
        self.append_new(manifest, key, producer_key, sequence, batches, ipc, flight)
            .await?;
        Ok(Ack {
            rows,
            duplicate: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_new(
        self: &Rc<Self>,
        manifest: &TableManifest,
        key: TableKey,
        producer_key: (TableKey, String),
        sequence: u64,
        batches: Vec<RecordBatch>,
        ipc: wal::Payload,
        flight: FlightGuard,
    ) -> Result<()> {
        self.start_ticking();
        let bytes: u64 = batches.iter().map(batch_bytes).sum();
        // Backpressure: wait while this core's buffers are full; fail only when flushes have
        // freed nothing for a long time (they are failing: the error names the cause).
        let waiting_since = Instant::now();
        while self.memory_used.get() > 0
            && self.memory_used.get() + bytes > self.config.memory_bytes
        {
            if waiting_since.elapsed() > BACKPRESSURE_WAIT_MAX {
                return Err(Error::Unavailable(format!(
                    "ingest buffers on this core hold {} bytes, their limit, and flushing has \
                     freed nothing for {} s{}",
                    self.memory_used.get(),
                    BACKPRESSURE_WAIT_MAX.as_secs(),
                    self.last_flush_error
                        .borrow()
                        .as_ref()
                        .map(|e| format!(": the last flush failed: {e}"))
                        .unwrap_or_default()
                )));
            }
            self.flush_largest();
            let (sender, receiver) = oneshot::channel();
            self.memory_waiters.borrow_mut().push(sender);
            let _ = runtime::timeout(Duration::from_millis(100), receiver).await;
        }
        // The record's bytes: its header, then the batch's pieces as they arrived (the log
        // copies each once, into its write buffers).
        let header = Record::header(&key.0, &key.1, key.2, &producer_key.1, sequence);
        let mut payload = Vec::with_capacity(1 + ipc.len());
        payload.push(Buffer::from_vec(header));
        payload.extend(ipc);
        let this = self.clone();
        let columns = manifest.columns.clone();
        let on_durable = Box::new(move |lsn: Lsn| {
            // In LSN order, before any later record's: a flush never takes a chunk whose
            // predecessor in the log is not buffered yet. The window learns the key before the
            // flight guard (dropped after this) lets a retry in.
            this.producers
                .borrow_mut()
                .entry(producer_key)
                .or_default()
                .insert(sequence);
            this.buffer(key, lsn, batches, &columns);
            drop(flight);
        });
        self.wal.append(payload, on_durable).await?;
        Ok(())
    }

    /// Adds a durable record's rows (its parts, one chunk each) to its table's buffer; flushes
    /// past `flush_bytes`. Every part is buffered before a flush may start: a flush that took
    /// some parts of a record would publish its LSN as flushed, hiding the others.
    fn buffer(
        self: &Rc<Self>,
        key: TableKey,
        lsn: Lsn,
        batches: Vec<RecordBatch>,
        columns: &[ColumnDef],
    ) {
        let chunks: Vec<Rc<MemChunk>> = batches
            .into_iter()
            .map(|batch| Rc::new(MemChunk::new(self.log.clone(), lsn, batch, columns)))
            .collect();
        let bytes: u64 = chunks.iter().map(|c| c.bytes).sum();
        self.set_memory_used(self.memory_used.get() + bytes);
        self.segments
            .borrow_mut()
            .entry(wal::lsn_segment(lsn))
            .or_default()
            .insert(key.clone(), lsn);
        let flush_now = {
            let mut tables = self.tables.borrow_mut();
            let buffer = tables.entry(key.clone()).or_default();
            // Columns are only ever added, at the end.
            if buffer.columns.len() < columns.len() {
                buffer.columns = columns.to_vec();
            }
            buffer.since.get_or_insert_with(Instant::now);
            buffer.live_bytes += bytes;
            buffer.live.extend(chunks);
            buffer.live_bytes >= self.config.flush_bytes
        };
        if flush_now {
            self.spawn_flush(key);
        }
    }

    fn start_ticking(self: &Rc<Self>) {
        if self.ticking.replace(true) {
            return;
        }
        let this = self.clone();
        runtime::spawn_local(async move {
            loop {
                runtime::sleep(Duration::from_millis(500)).await;
                this.tick();
            }
        });
    }

    /// Flushes buffers past their age and frees chunks no query needs any more.
    fn tick(self: &Rc<Self>) {
        let due: Vec<TableKey> = self
            .tables
            .borrow()
            .iter()
            .filter(|(_, b)| {
                !b.flush_running
                    && b.since
                        .is_some_and(|s| s.elapsed() >= self.config.flush_age)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.spawn_flush(key);
        }
        self.release_retired();
    }

    fn flush_largest(self: &Rc<Self>) {
        let largest = self
            .tables
            .borrow()
            .iter()
            .filter(|(_, b)| !b.flush_running && !b.live.is_empty())
            .max_by_key(|(_, b)| b.live_bytes)
            .map(|(k, _)| k.clone());
        if let Some(key) = largest {
            self.spawn_flush(key);
        }
    }

    fn spawn_flush(self: &Rc<Self>, key: TableKey) {
        let this = self.clone();
        runtime::spawn_local(async move {
            if let Err(error) = this.flush_table(&key).await {
                *this.last_flush_error.borrow_mut() = Some(error.to_string());
                tracing::error!(
                    "flushing buffered rows of {}/{} failed (they stay in memory and in the \
                     log; retried later): {error}",
                    key.0,
                    key.1
                );
            }
        });
    }

    /// Writes the table's live chunks to Parquet and publishes them; returns the files written.
    /// Waits for a flush of the table already running, then flushes what arrived since.
    pub async fn flush(self: &Rc<Self>, tenant: &str, table: &str) -> Result<u64> {
        let keys: Vec<TableKey> = self
            .tables
            .borrow()
            .keys()
            .filter(|k| k.0 == tenant && k.1 == table)
            .cloned()
            .collect();
        self.flush_tables(keys).await
    }

    /// Flushes every table's buffered rows on this core (a node stopping); the number of
    /// files written.
    pub async fn flush_all(self: &Rc<Self>) -> Result<u64> {
        let keys: Vec<TableKey> = self.tables.borrow().keys().cloned().collect();
        self.flush_tables(keys).await
    }

    async fn flush_tables(self: &Rc<Self>, keys: Vec<TableKey>) -> Result<u64> {
        let mut files = 0;
        for key in keys {
            while self
                .tables
                .borrow()
                .get(&key)
                .is_some_and(|b| b.flush_running)
            {
                runtime::sleep(Duration::from_millis(5)).await;
            }
            files += self.flush_table(&key).await?;
        }
        Ok(files)
    }

    async fn flush_table(self: &Rc<Self>, key: &TableKey) -> Result<u64> {
        let (chunks, columns) = {
            let mut tables = self.tables.borrow_mut();
            let Some(buffer) = tables.get_mut(key) else {
                return Ok(0);
            };
            if buffer.flush_running || buffer.live.is_empty() {
                return Ok(0);
            }
            buffer.flush_running = true;
            buffer.flushing = std::mem::take(&mut buffer.live);

            buffer.live_bytes = 0;
            buffer.since = None;
            (buffer.flushing.clone(), buffer.columns.clone())
        };
        let mut marks: BTreeMap<String, Lsn> = BTreeMap::new();
        for chunk in &chunks {
            let mark = marks.entry(chunk.log.to_string()).or_default();
            *mark = (*mark).max(chunk.lsn);
        }
        let producers: Vec<(String, ProducerWindow)> = self
            .producers
            .borrow()
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, p), w)| (p.clone(), w.clone()))
            .collect();
        let update = IngestUpdate {
            incarnation: key.2,
            logs: marks.iter().map(|(id, lsn)| (id.clone(), *lsn)).collect(),
            live_logs: Some(self.logs.live()),
            producers,
        };
        let batches: Vec<RecordBatch> = chunks.iter().map(|c| c.batch.clone()).collect();
        let (data_dir, tenant, table) = (self.data_dir.clone(), key.0.clone(), key.1.clone());
        // On a thread of its own: encoding a flush's Parquet takes long, and the core's blocking
        // thread must stay free for the manifest loads of its queries. At a lower priority:
        // the rows are durable already, and appends and queries are waited on (a flush that
        // falls behind fills the buffers, and backpressure then leaves it the CPU).
        let written = runtime::spawn_thread("tessera-flush", move || {
            crate::io::host::lower_thread_priority();
            write_batches(&data_dir, &tenant, &table, &columns, &batches, update)
        })
        .await
        .map_err(|e| Error::Internal(format!("cannot start a flush thread: {e}")))
        .and_then(|written| written);
        // A failure after the manifest was renamed into place (its directory's fsync, on a full
        // disk) still published the rows: flushing them again would store them twice. They count
        // as flushed, but not as durable enough to delete log segments (a later publication's
        // directory fsync covers this rename too).
        let (written, durable) = match written {
            Err(error) if !matches!(error, Error::NoSuchTable { .. }) => {
                let (data_dir, tenant, table) =
                    (self.data_dir.clone(), key.0.clone(), key.1.clone());
                let current = runtime::spawn_blocking(move || {
                    crate::table::manifest::load(&data_dir, &tenant, &table)
                })
                .await;
                let published = matches!(&current, Ok(Some(m)) if m.incarnation == key.2
                    && marks.iter().all(|(id, lsn)| m.ingest.logs.get(id).is_some_and(|m| m >= lsn)));
                if published {
                    (Ok(0), false)
                } else {
                    (Err(error), false)
                }
            }
            other => (other, true),
        };
        // What to do once the table's buffer is no longer borrowed.
        enum Next {
            Published(u64),
            Forget,
            Failed(Error),
        }
        let next = {
            let mut tables = self.tables.borrow_mut();
            let Some(buffer) = tables.get_mut(key) else {
                return written.map(|_| 0);
            };
            buffer.flush_running = false;
            let flushing = std::mem::take(&mut buffer.flushing);
            match written {
                Ok(files) => {
                    buffer.retired.push((self.epochs.bump(), flushing));
                    Next::Published(files)
                }
                // Dropped (or dropped and created again) meanwhile: its rows went with it.
                Err(Error::NoSuchTable { .. }) => Next::Forget,
                Err(error) => {
                    // Back in front of what arrived meanwhile, in LSN order; the tick retries.
                    let mut live = flushing;
                    live.append(&mut buffer.live);
                    buffer.live_bytes = live.iter().map(|c| c.bytes).sum();
                    buffer.live = live;
                    let now = Instant::now();
                    buffer.since = Some(now.checked_sub(self.config.flush_age / 2).unwrap_or(now));
                    Next::Failed(error)
                }
            }
        };
        match next {
            Next::Published(files) => {
                self.last_flush_error.borrow_mut().take();
                if let Some(&mark) = marks.get(&*self.log).filter(|_| durable) {
                    self.flushed.borrow_mut().insert(key.clone(), mark);
                }
                if durable {
                    self.settle_adopted(key, Some(&marks)).await;
                }
                self.release_retired();
                self.remove_flushed_segments().await;
                Ok(files)
            }
            Next::Forget => {
                self.forget_table(key).await;
                Ok(0)
            }
            Next::Failed(error) => Err(error),
        }
    }

    /// Frees flushed chunks no running query can need.
    fn release_retired(&self) {
        let oldest = self.epochs.oldest_running();
        let mut freed = 0;
        for buffer in self.tables.borrow_mut().values_mut() {
            buffer.retired.retain(|(epoch, chunks)| {
                let keep = *epoch > oldest;
                if !keep {
                    freed += chunks.iter().map(|c| c.bytes).sum::<u64>();
                }
                keep
            });
        }
        self.free(freed);
    }

    fn free(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.set_memory_used(self.memory_used.get().saturating_sub(bytes));
        for waiter in self.memory_waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Deletes log segments before the current one whose records are all in published files
    /// (or belong to dropped tables).
    async fn remove_flushed_segments(&self) {
        let current = self.wal.current_segment().unwrap_or(u64::MAX);
        let removable: Vec<u64> = {
            let flushed = self.flushed.borrow();
            let tables = self.tables.borrow();
            self.segments
                .borrow()
                .iter()
                .filter(|(&segment, held)| {
                    segment < current
                        && held.iter().all(|(key, lsn)| {
                            !tables.contains_key(key)
                                || flushed.get(key).is_some_and(|mark| mark >= lsn)
                        })
                })
                .map(|(&segment, _)| segment)
                .collect()
        };
        if removable.is_empty() {
            return;
        }
        let dir = self.wal.dir().to_owned();
        let paths: Vec<PathBuf> = removable
            .iter()
            .map(|&s| wal::segment_path(&dir, s))
            .collect();
        let removed = runtime::spawn_blocking(move || -> Result<()> {
            for path in &paths {
                match std::fs::remove_file(path) {
                    Ok(()) => crash::after(Event::Remove(path)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(path, e)),
                }
            }
            crate::table::manifest::sync_dir(&dir)
        })
        .await;
        match removed {
            Ok(()) => {
                let mut segments = self.segments.borrow_mut();
                for segment in removable {
                    segments.remove(&segment);
                }
            }
            Err(error) => tracing::error!("removing flushed log segments failed: {error}"),
        }
    }

    /// Counts adopted records of `key` as done: those `marks` cover, or all (`None`: the table
    /// is gone); removes an adopted log once no buffer on any core holds its records.
    async fn settle_adopted(&self, key: &TableKey, marks: Option<&BTreeMap<String, Lsn>>) {
        let done: Vec<usize> = {
            let mut adopted = self.adopted.borrow_mut();
            let done: Vec<usize> = adopted
                .iter()
                .filter(|((k, log), lsn)| {
                    k == key
                        && marks.is_none_or(|m| {
                            m.get(&self.logs.adopted[*log].id)
                                .is_some_and(|mark| mark >= *lsn)
                        })
                })
                .map(|((_, log), _)| *log)
                .collect();
            for log in &done {
                adopted.remove(&(key.clone(), *log));
            }
            // Windows kept only to be published with adopted records (`Engine::adopt`) are
            // dropped once this core holds none of the table's.
            if !done.is_empty() && !adopted.keys().any(|(k, _)| k == key) {
                let cores = self.logs.cores;
                self.producers.borrow_mut().retain(|(k, producer), _| {
                    k != key || owner_core(&k.0, &k.1, producer, cores) == self.core
                });
            }
            done
        };
        for log in done {
            if self.logs.adopted[log]
                .pending
                .fetch_sub(1, Ordering::AcqRel)
                == 1
            {
                let logs = self.logs.clone();
                runtime::spawn_blocking(move || logs.adopted[log].remove()).await;
            }
        }
    }

    /// Buffers records of earlier runs' logs (their rows are durable there) and the windows
    /// of their producers; they are flushed soon after.
    pub fn adopt(
        self: &Rc<Self>,
        records: Vec<Recovered>,
        windows: Vec<(Arc<TableManifest>, String, ProducerWindow)>,
    ) {
        for (manifest, producer, window) in windows {
            let key = table_key(&manifest);
            self.producers
                .borrow_mut()
                .entry((key, producer))
                .or_default()
                .union(&window);
        }
        let soon = Instant::now()
            .checked_sub(self.config.flush_age)
            .unwrap_or_else(Instant::now);
        for record in records {
            let manifest = &record.manifest;
            let key = table_key(manifest);
            let log = &self.logs.adopted[record.log];
            let chunks: Vec<Rc<MemChunk>> = record
                .batches
                .into_iter()
                .map(|batch| {
                    Rc::new(MemChunk::new(
                        Arc::from(log.id.as_str()),
                        record.lsn,
                        batch,
                        &manifest.columns,
                    ))
                })
                .collect();
            let bytes: u64 = chunks.iter().map(|c| c.bytes).sum();
            self.set_memory_used(self.memory_used.get() + bytes);
            {
                let mut adopted = self.adopted.borrow_mut();
                // Counted in `pending` before any core adopted (`AdoptedLog::expect`).
                let highest = adopted.entry((key.clone(), record.log)).or_insert(0);
                *highest = (*highest).max(record.lsn);
            }
            let mut tables = self.tables.borrow_mut();
            let buffer = tables.entry(key).or_default();
            if buffer.columns.len() < manifest.columns.len() {
                buffer.columns = manifest.columns.clone();
            }
            buffer.since = Some(soon);
            buffer.live_bytes += bytes;
            buffer.live.extend(chunks);
        }
        self.start_ticking();
    }

    /// Drops a table's buffers (the table was dropped).
    pub async fn forget_table(&self, key: &TableKey) {
        let removed = self.tables.borrow_mut().remove(key);
        if let Some(buffer) = removed {
            let bytes: u64 = buffer
                .live
                .iter()
                .chain(&buffer.flushing)
                .chain(buffer.retired.iter().flat_map(|(_, c)| c))
                .map(|c| c.bytes)
                .sum();
            self.free(bytes);
        }
        self.producers.borrow_mut().retain(|(k, _), _| k != key);
        self.settle_adopted(key, None).await;
    }

    /// Drops the buffers of every incarnation of `tenant/table`.
    pub async fn forget(&self, tenant: &str, table: &str) {
        let keys: Vec<TableKey> = self
            .tables
            .borrow()
            .keys()
            .filter(|k| k.0 == tenant && k.1 == table)
            .cloned()
            .collect();
        for key in keys {
            self.forget_table(&key).await;
        }
        self.producers
            .borrow_mut()
            .retain(|(k, _), _| !(k.0 == tenant && k.1 == table));
    }
}

/// Writes batches already in the table's columns into the table through the import writer,
/// publishing `update` with them. Blocking.
pub fn write_batches(
    data_dir: &Path,
    tenant: &str,
    table: &str,
    columns: &[ColumnDef],
    batches: &[RecordBatch],
    update: IngestUpdate,
) -> Result<u64> {
    // The table may have gained columns since some of the rows were buffered: they are
    // written with NULL there.
    let current = crate::table::manifest::load(data_dir, tenant, table)?;
    let columns = match &current {
        Some(m) if m.columns.len() > columns.len() => &m.columns,
        _ => columns,
    };
    let options = ImportOptions {
        ingest: Some(update),
        ..Default::default()
    };
    let schema = writer::nullable_schema(columns);
    let mut writer = TableWriter::open(data_dir, tenant, table, &schema, &options)?;
    for batch in batches {
        writer.write(&writer::pad_columns(batch, columns)?)?;
    }
    Ok(writer.finish()?.files)
}

#[cfg(test)]
mod power_loss;

#[cfg(test)]
mod tests {
    use crate::query::exec::fail_points::QUERY_PAUSE_MS;
    use crate::table::writer::{ImportOptions, TableWriter};
    use crate::{Engine, EngineConfig};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

    fn ipc(batch: &arrow_array::RecordBatch) -> Vec<u8> {
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        writer.into_inner().unwrap()
    }

    /// Queries that read their manifest just before a flush publishes, and scan after it, must
    /// still find the flushed rows in memory (`Epochs`): each pauses between the two while
    /// flushes run, so the window that is a few microseconds in production is 30 ms here.
    /// (Freeing flushed chunks at once makes this fail: "counted 1000 rows with 1100..1100".)
    #[test]
    fn a_query_that_read_the_old_manifest_still_finds_the_flushed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let first = crate::gen::events_chunk(0, 1000, 1000, 1);
        let mut writer = TableWriter::open(
            dir.path(),
            "acme",
            "events",
            &first.schema(),
            &ImportOptions::default(),
        )
        .unwrap();
        writer.write(&first).unwrap();
        writer.finish().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.cores = 2;
        config.pin_cores = false;
        let engine = Engine::open(config).unwrap();
        let count = || {
            let result = engine.sql("acme", "SELECT COUNT(*) FROM events").unwrap();
            result.batches[0]
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0)
        };
        const BATCH: u64 = 100;
        let acknowledged = AtomicI64::new(1000);
        let writing = AtomicBool::new(true);
        QUERY_PAUSE_MS.store(30, Ordering::Relaxed);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for sequence in 0..12u64 {
                    let batch = crate::gen::events_chunk(0, BATCH, BATCH, sequence);
                    engine
                        .ingest("acme", "events", "p", sequence, ipc(&batch))
                        .unwrap();
                    acknowledged.fetch_add(BATCH as i64, Ordering::SeqCst);
                    engine.flush_ingest("acme", "events").unwrap();
                    // A plain test thread, not a core: blocking it is the point.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(std::time::Duration::from_millis(7));
                }
                writing.store(false, Ordering::SeqCst);
            });
            while writing.load(Ordering::SeqCst) {
                let before = acknowledged.load(Ordering::SeqCst);
                let counted = count();
                let after = acknowledged.load(Ordering::SeqCst);
                assert!(
                    before <= counted && counted <= after + BATCH as i64,
                    "counted {counted} rows with {before}..{after} acknowledged"
                );
            }
        });
        QUERY_PAUSE_MS.store(0, Ordering::Relaxed);
        assert_eq!(count(), 1000 + 12 * BATCH as i64);
    }
}
