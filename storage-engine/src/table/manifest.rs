//! Table manifests: the schema, partition spec, writer settings and the list of Parquet files
//! (with row counts, sizes and per-column statistics) of one table, stored as
//! `<data>/<tenant>/<table>/_manifest.json`. A manifest is published atomically (write a temp file,
//! fsync, rename over, fsync the directory), so a reader sees the old or the new version, never a
//! half-written one, and a file becomes visible only once it is durable and listed.
//!
//! Blocking `std::fs` is used here on purpose: manifests are read once per query plan (outside the
//! cores' hot path) and written by imports.

use crate::error::{Error, Result};
use crate::io::crash::{self, Event};
use crate::table::stats::ColumnStats;
use crate::value::ColumnType;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "_manifest.json";
pub const FORMAT_VERSION: u32 = 1;
/// Manifests larger than this are refused rather than parsed (a corrupt length, not a real table).
pub const MANIFEST_BYTES_MAX: u64 = 1 << 30;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    pub nullable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Snappy,
    Zstd,
    None,
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        match text.to_ascii_lowercase().as_str() {
            "snappy" => Ok(Compression::Snappy),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            other => Err(Error::Config(format!(
                "unknown compression {other:?} (expected snappy, zstd or none)"
            ))),
        }
    }
}

/// How files are laid out and written. Defaults follow the spec: 500 MB files, 128 MB row
/// groups, 1 MB pages, dictionary encoding, snappy, statistics and page index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriterSettings {
    pub compression: Compression,
    pub target_file_bytes: u64,
    pub row_group_bytes: u64,
    pub page_bytes: u64,
    /// Second cap on page size, in rows: smaller pages make the page index prune finer.
    pub page_rows_max: u64,
    pub dictionary: bool,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            compression: Compression::Snappy,
            target_file_bytes: 500 << 20,
            row_group_bytes: 128 << 20,
            page_bytes: 1 << 20,
            page_rows_max: 20_000,
            dictionary: true,
        }
    }
}

/// Partition keys: the UTC date of `time_column` (if any), then `columns` (e.g. `category`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub time_column: Option<String>,
    pub columns: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: u64,
    /// Relative to the table directory, e.g. `date=2024-01-01/part-000042.parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// CRC-32 of the whole file as written, to detect silent corruption (`tessera verify`).
    #[serde(default)]
    pub crc32: Option<u32>,
    /// One entry per schema column, in schema order.
    pub columns: Vec<ColumnStats>,
    /// The content digest of the file's rows (`table::digest`), written with the file; absent
    /// from files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableManifest {
    pub format_version: u32,
    pub tenant: String,
    pub table: String,
    /// Identifies this incarnation of the table: random, chosen when the table is created, kept
    /// by every publish. A table dropped and created again under the same name gets a new one, so
    /// caches keyed by it (decoded pages, footers, open files) never serve the old table's data.
    /// Manifests written before it existed read as 0.
    #[serde(default)]
    pub incarnation: u64,
    /// Incremented on every publish.
    pub version: u64,
    pub columns: Vec<ColumnDef>,
    pub partition: PartitionSpec,
    /// The column rows are sorted by within each file, if any.
    pub sort_column: Option<String>,
    pub writer: WriterSettings,
    pub next_file_id: u64,
    pub files: Vec<FileEntry>,
    /// What streaming ingestion has moved into `files` (absent before it existed).
    #[serde(default)]
    pub ingest: IngestMarks,
}

/// Streaming ingestion's state in a manifest, published with the files a flush writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestMarks {
    /// Per write-ahead log id: the highest LSN of this table whose rows are in `files`. Records
    /// at or below it are skipped when the log is replayed, and queries skip buffered rows at
    /// or below it (they read them from the files).
    pub logs: std::collections::BTreeMap<String, u64>,
    /// Per producer: the sequence numbers it has made durable in this table (at least those in
    /// `files`; the log holds the rest).
    pub producers: std::collections::BTreeMap<String, crate::ingest::window::ProducerWindow>,
}

impl TableManifest {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// The system table of a node's recent queries (served by the RPC layer from memory); no
/// table may be created under its name.
pub const QUERY_STATS_TABLE: &str = "query_stats";

/// Tenant and table names become directory names: keep them to a safe alphabet.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    if kind == "table" && name == QUERY_STATS_TABLE {
        return Err(Error::Config(format!(
            "{name:?} is a system table (the node's recent queries): choose another table name"
        )));
    }
    // A partition of a partitioned table in a cluster is stored as `<table>.p<index>`.
    let base = match name.rsplit_once(".p") {
        Some((base, index))
            if kind == "table"
                && !index.is_empty()
                && index.len() <= 5
                && index.bytes().all(|b| b.is_ascii_digit())
                && (index == "0" || !index.starts_with('0')) =>
        {
            base
        }
        _ => name,
    };
    let valid = !base.is_empty()
        && name.len() <= 128
        && !base.starts_with(['.', '_', '-'])
        && base
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid {kind} name {name:?}: use 1-128 characters of a-z, 0-9, '_' and '-', not starting with '.', '_' or '-'"
        )))
    }
}

pub fn table_dir(data_dir: &Path, tenant: &str, table: &str) -> PathBuf {
    data_dir.join(tenant).join(table)
}

/// (length, (modification time, inode), parsed manifest). Not enough on its own: publications
/// alternate between two inode numbers (each temporary file takes the one the publication
/// before last freed), and within one tick of the file-system clock two versions of equal
/// length look the same. Hence `Cache::publications`.
type CachedManifest = (
    u64,
    (std::time::SystemTime, u64),
    std::sync::Arc<TableManifest>,
);

#[derive(Default)]
struct Cache {
    entries: std::collections::HashMap<PathBuf, CachedManifest>,
    /// Per manifest path, the publications this process has made. A load that raced one (it
    /// read the file before a publication that finished before it could cache its copy) does
    /// not cache what it read: its copy could pass for a later version.
    publications: std::collections::HashMap<PathBuf, u64>,
}

/// Manifests parsed by the node, revalidated by (length, mtime) on every use. Threads that may
/// block use it through `load_cached` (it stats and reads files); a core only tries it
/// (`cached_unchanged`: a stat of a manifest whose inode is in memory, and the lock only if free),
/// so no core ever waits on its lock (one of the engine's two locks, with `maintenance`'s set of
/// retired files).
#[allow(clippy::disallowed_types)]
static CACHE: std::sync::LazyLock<std::sync::Mutex<Cache>> =
    std::sync::LazyLock::new(Default::default);

#[allow(clippy::disallowed_types)]
fn cache() -> std::sync::MutexGuard<'static, Cache> {
    // The map stays consistent whatever panicked while holding it: entries are inserted whole.
    CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The parsed copy of a table's manifest if the file is unchanged since it was parsed, without
/// waiting: `None` when there is no such copy, the file is gone, or the cache is busy (then
/// `load_cached` answers, off the core). One `stat` of a file read moments ago: its inode is in
/// memory, so no disk I/O (a point lookup under load no longer waits for a blocking thread).
#[allow(clippy::disallowed_types)]
pub fn cached_unchanged(
    data_dir: &Path,
    tenant: &str,
    table: &str,
) -> Option<std::sync::Arc<TableManifest>> {
    validate_name("tenant", tenant).ok()?;
    validate_name("table", table).ok()?;
    let path = table_dir(data_dir, tenant, table).join(MANIFEST_FILE);
    let stamp = stamp(&path).ok()?;
    let cache = match CACHE.try_lock() {
        Ok(cache) => cache,
        Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return None,
    };
    cache
        .entries
        .get(&path)
        .filter(|(l, m, _)| (*l, *m) == stamp)
        .map(|(_, _, manifest)| manifest.clone())
}

/// What tells a manifest file's versions apart: its length, modification time and inode.
fn stamp(path: &Path) -> std::io::Result<(u64, (std::time::SystemTime, u64))> {
    let metadata = std::fs::metadata(path)?;
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    Ok((metadata.len(), (metadata.modified()?, inode)))
}

/// Like `load`, but reuses the parsed copy while the file is unchanged. Blocks (file system).
pub fn load_cached(
    data_dir: &Path,
    tenant: &str,
    table: &str,
) -> Result<Option<std::sync::Arc<TableManifest>>> {
    validate_name("tenant", tenant)?;
    validate_name("table", table)?;
    let path = table_dir(data_dir, tenant, table).join(MANIFEST_FILE);
    let publications = cache().publications.get(&path).copied().unwrap_or(0);
    let (length, modified) = match stamp(&path) {
        Ok(stamp) => stamp,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(path, error)),
    };
    let hit = cache()
        .entries
        .get(&path)
        .filter(|(l, m, _)| *l == length && *m == modified)
        .map(|(_, _, manifest)| manifest.clone());
    if let Some(manifest) = hit {
        return Ok(Some(manifest));
    }
    let Some(manifest) = load(data_dir, tenant, table)? else {
        return Ok(None);
    };
    let manifest = std::sync::Arc::new(manifest);
    let mut cache = cache();
    if cache.publications.get(&path).copied().unwrap_or(0) != publications {
        return Ok(Some(manifest));
    }
    if cache.entries.len() >= 1024 {
        cache.entries.clear();
    }
    cache
        .entries
        .insert(path, (length, modified, manifest.clone()));
    Ok(Some(manifest))
}

/// Forgets the parsed copy of a table's manifest (after a drop: a new table's manifest may have
/// the same length and a modification time within the same clock tick).
pub fn forget_cached(data_dir: &Path, tenant: &str, table: &str) {
    let path = table_dir(data_dir, tenant, table).join(MANIFEST_FILE);
    cache().entries.remove(&path);
}

/// Loads a table's manifest; `Ok(None)` when the table does not exist.
pub fn load(data_dir: &Path, tenant: &str, table: &str) -> Result<Option<TableManifest>> {
    validate_name("tenant", tenant)?;
    validate_name("table", table)?;
    let path = table_dir(data_dir, tenant, table).join(MANIFEST_FILE);
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(path, error)),
    };
    if metadata.len() > MANIFEST_BYTES_MAX {
        return Err(Error::CorruptManifest {
            path,
            message: format!(
                "{} bytes is over the {MANIFEST_BYTES_MAX}-byte limit",
                metadata.len()
            ),
        });
    }
    // A drop may remove the table between the two calls: then there is no table.
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io(path, error)),
    };
    parse(&bytes, path).map(Some)
}

/// Parses and checks a manifest's JSON (`path`: where it comes from, for errors); pads the
/// statistics of files older than columns added later.
pub fn parse(bytes: &[u8], path: PathBuf) -> Result<TableManifest> {
    let manifest: TableManifest =
        serde_json::from_slice(bytes).map_err(|e| Error::CorruptManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(Error::CorruptManifest {
            path,
            message: format!("unsupported format version {}", manifest.format_version),
        });
    }
    if let Some(column) = manifest.columns.iter().find(|c| !c.column_type.is_valid()) {
        return Err(Error::CorruptManifest {
            path,
            message: format!(
                "column {} has an invalid type {} (a decimal's precision must be 1 to 38 and its scale at most the precision)",
                column.name, column.column_type
            ),
        });
    }
    let mut manifest = manifest;
    let columns = manifest.columns.len();
    for file in &mut manifest.files {
        // A file written before the table gained nullable columns holds NULL in them.
        let added_later = manifest
            .columns
            .get(file.columns.len()..)
            .unwrap_or_default();
        if file.columns.len() > columns
            || added_later.iter().any(|c| !c.nullable)
            || !is_safe_relative_path(&file.path)
        {
            return Err(Error::CorruptManifest {
                path,
                message: format!("file entry {:?} is inconsistent with the table", file.path),
            });
        }
        file.columns
            .resize(columns, crate::table::stats::ColumnStats::nulls(file.rows));
    }
    Ok(manifest)
}

pub(crate) fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Publishes `manifest` atomically (temp file, fsync, rename, fsync directory).
pub fn publish(data_dir: &Path, manifest: &TableManifest) -> Result<()> {
    let dir = table_dir(data_dir, &manifest.tenant, &manifest.table);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let target = dir.join(MANIFEST_FILE);
    let temp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let mut file = std::fs::File::create(&temp).map_err(|e| Error::io(&temp, e))?;
    file.write_all(&bytes).map_err(|e| Error::io(&temp, e))?;
    file.sync_all().map_err(|e| Error::io(&temp, e))?;
    crash::after(Event::SyncFile(&temp));
    drop(file);
    let renamed = std::fs::rename(&temp, &target).map_err(|e| Error::io(&target, e));
    // Counted even when the rename failed (it may have happened): loads that raced it do not
    // cache what they read.
    {
        let mut cache = cache();
        *cache.publications.entry(target.clone()).or_default() += 1;
        cache.entries.remove(&target);
    }
    renamed?;
    crash::after(Event::Rename(&target));
    sync_dir(&dir)?;
    // This process's next load sees the new version without parsing it again.
    if let Ok(metadata) = std::fs::metadata(&target) {
        if let Ok(modified) = metadata.modified() {
            let key = (modified, std::os::unix::fs::MetadataExt::ino(&metadata));
            cache().entries.insert(
                target,
                (metadata.len(), key, std::sync::Arc::new(manifest.clone())),
            );
        }
    }
    Ok(())
}

/// fsyncs a directory so a rename or new entry in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    crash::after(Event::SyncDir(dir));
    Ok(())
}

/// A new random table incarnation (never 0, which marks manifests older than incarnations).
pub fn new_incarnation() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if filled == bytes.len() as isize {
        u64::from_le_bytes(bytes)
    } else {
        // No kernel randomness: the clock and the process still make a collision very unlikely.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
    };
    random.max(1)
}

/// Lock files live here, outside the directories they guard, so deleting a table or a tenant
/// never deletes a lock someone holds or waits for. The name cannot be a tenant's (`validate_name`
/// refuses a leading '_'). Lock files are never removed: removing one while another process waits
/// on it would let two holders in.
pub const LOCK_DIR: &str = "_locks";

/// Advisory lock on one table: exclusive while its manifest changes (publish, drop), shared while
/// an import writes into its staging directory (so a drop waits for that write and the write never
/// recreates a dropped table's directories). It holds its tenant's lock shared, so a tenant drop
/// waits for every table operation and excludes new ones.
pub struct TableLock {
    _tenant: TenantLock,
    _file: std::fs::File,
}

impl TableLock {
    /// The exclusive lock.
    pub fn acquire(data_dir: &Path, tenant: &str, table: &str) -> Result<TableLock> {
        TableLock::take(data_dir, tenant, table, libc::LOCK_EX)
    }

    /// The shared lock.
    pub fn shared(data_dir: &Path, tenant: &str, table: &str) -> Result<TableLock> {
        TableLock::take(data_dir, tenant, table, libc::LOCK_SH)
    }

    fn take(data_dir: &Path, tenant: &str, table: &str, operation: libc::c_int) -> Result<Self> {
        validate_name("table", table)?;
        let tenant_lock = TenantLock::acquire(data_dir, tenant, false)?;
        // '.' cannot appear in a name, so `<tenant>.<table>` never collides with another pair.
        let file = flock(data_dir, &format!("{tenant}.{table}.lock"), operation)?;
        Ok(TableLock {
            _tenant: tenant_lock,
            _file: file,
        })
    }
}

/// Advisory lock on a tenant: shared by table operations, exclusive while the tenant is dropped.
pub struct TenantLock {
    _file: std::fs::File,
}

impl TenantLock {
    pub fn acquire(data_dir: &Path, tenant: &str, exclusive: bool) -> Result<TenantLock> {
        validate_name("tenant", tenant)?;
        let operation = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        Ok(TenantLock {
            _file: flock(data_dir, &format!("{tenant}.lock"), operation)?,
        })
    }
}

/// Opens (creating it if needed) `<data>/_locks/<name>` and takes `operation` on it, blocking.
fn flock(data_dir: &Path, name: &str, operation: libc::c_int) -> Result<std::fs::File> {
    let dir = data_dir.join(LOCK_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a valid, owned descriptor; no memory is shared with the kernel.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(file);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(&path, error));
        }
    }
}

/// Drops a table under its lock: the manifest goes first (so a crash part-way leaves no
/// half-visible table), then the directory. Returns the dropped manifest, `None` if there was no
/// table; the caller evicts what caches hold of it (`CoreContext::forget_tables`).
pub fn drop_table(data_dir: &Path, tenant: &str, table: &str) -> Result<Option<TableManifest>> {
    let _lock = TableLock::acquire(data_dir, tenant, table)?;
    let Some(manifest) = load(data_dir, tenant, table)? else {
        return Ok(None);
    };
    remove_table_files(data_dir, tenant, table)?;
    Ok(Some(manifest))
}

/// Drops a tenant and all its tables under the tenant's exclusive lock (no table operation runs
/// meanwhile). Returns the dropped tables' manifests, `None` if the tenant did not exist.
pub fn drop_tenant(data_dir: &Path, tenant: &str) -> Result<Option<Vec<TableManifest>>> {
    let _lock = TenantLock::acquire(data_dir, tenant, true)?;
    let dir = data_dir.join(tenant);
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut dropped = Vec::new();
    for table in list_tables(data_dir, tenant)? {
        if let Some(manifest) = load(data_dir, tenant, &table)? {
            remove_table_files(data_dir, tenant, &table)?;
            dropped.push(manifest);
        }
    }
    remove_tree(&dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(Some(dropped))
}

fn remove_table_files(data_dir: &Path, tenant: &str, table: &str) -> Result<()> {
    let dir = table_dir(data_dir, tenant, table);
    let manifest_path = dir.join(MANIFEST_FILE);
    std::fs::remove_file(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    crash::after(Event::Remove(&manifest_path));
    sync_dir(&dir)?;
    remove_tree(&dir)
}

/// `remove_dir_all`, tolerating an import that is removing its own staging directory inside
/// `dir` at the same time (an entry vanishing under us); nothing creates entries meanwhile, as
/// the caller holds the lock that excludes writers.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() => return Ok(()),
            Err(_) if attempts < 8 => attempts += 1,
            Err(e) => return Err(Error::io(dir, e)),
        }
    }
}

/// Schema evolution: appends nullable `columns` to the table (this incarnation) in one
/// publication, under the table lock. A column another writer added meanwhile with the same
/// type is fine; with another type it is an error naming the column. Files written before
/// hold NULL in the new columns.
pub fn add_columns(
    data_dir: &Path,
    tenant: &str,
    table: &str,
    incarnation: u64,
    columns: &[ColumnDef],
) -> Result<()> {
    let _lock = TableLock::acquire(data_dir, tenant, table)?;
    let mut current = load(data_dir, tenant, table)?
        .filter(|m| m.incarnation == incarnation)
        .ok_or_else(|| Error::NoSuchTable {
            tenant: tenant.to_owned(),
            table: table.to_owned(),
        })?;
    let mut changed = false;
    for column in columns {
        match current.columns.iter().find(|c| c.name == column.name) {
            Some(existing) if existing.column_type == column.column_type => {}
            Some(existing) => {
                return Err(Error::Import(format!(
                    "column {} is {} in the table, {} in the batch",
                    column.name, existing.column_type, column.column_type
                )))
            }
            None => {
                current.columns.push(ColumnDef {
                    nullable: true,
                    ..column.clone()
                });
                changed = true;
            }
        }
    }
    if changed {
        current.version += 1;
        publish(data_dir, &current)?;
    }
    Ok(())
}

/// Lists the tenants of a data directory (directories with a valid tenant name), sorted.
pub fn list_tenants(data_dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let mut tenants: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| validate_name("tenant", name).is_ok())
        .collect();
    tenants.sort();
    Ok(tenants)
}

/// Lists the tables of a tenant (directories holding a manifest), sorted.
pub fn list_tables(data_dir: &Path, tenant: &str) -> Result<Vec<String>> {
    validate_name("tenant", tenant)?;
    let dir = data_dir.join(tenant);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io(dir, error)),
    };
    let mut tables = Vec::new();
    for entry in entries.flatten() {
        if entry.path().join(MANIFEST_FILE).is_file() {
            if let Some(name) = entry.file_name().to_str() {
                tables.push(name.to_owned());
            }
        }
    }
    tables.sort();
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn a_partition_of_a_table_has_a_name_of_its_own_and_nothing_else_with_a_dot_passes() {
        for good in ["events", "events.p0", "events.p17", "a-b_c.p99999"] {
            assert!(validate_name("table", good).is_ok(), "{good}");
        }
        for bad in [
            "events.p",
            "events.p01",
            "events.p123456",
            "events.x1",
            ".p1",
            "events.p1.p2",
            "Events.p1",
            "events.p-1",
        ] {
            assert!(validate_name("table", bad).is_err(), "{bad}");
        }
        // Tenants have no partitions.
        assert!(validate_name("tenant", "acme.p1").is_err());
    }
}
