//! A copy of a table made from another replica's files, installed in place of this node's copy
//! (a follower of a replicated table catching up with its leader). The files are staged in the
//! table's `_staging/` (never listed by a manifest, removed when the copy is abandoned), each
//! checked against the size and CRC-32 its manifest gives it, then moved into the table and
//! published with one manifest swap, under a new incarnation: every row this node buffered or
//! logged for the old incarnation is dropped with it (recovery skips records of another
//! incarnation), and the producers' windows come from the copied manifest, so batches the copy
//! already holds are acknowledged as duplicates when they arrive again.

use crate::error::{Error, Result};
use crate::table::manifest::{self, FileEntry, TableLock, TableManifest};
use crate::table::writer::Staging;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The largest file a copy accepts (a bound on what a peer can make this node write).
const FILE_BYTES_MAX: u64 = 1 << 40;

/// A copy being received: files staged, nothing visible yet. Dropping it removes the staging.
pub struct ReplicaCopy {
    data_dir: PathBuf,
    tenant: String,
    table: String,
    staging: Staging,
}

/// What an installation changed.
#[derive(Debug)]
pub struct Installed {
    /// The manifest the copy replaced (its files are retired: the caller deletes them once no
    /// query reads them).
    pub replaced: TableManifest,
    pub installed: TableManifest,
}

impl ReplicaCopy {
    /// Starts a copy of `tenant/table`, which must exist here. Blocking.
    pub fn start(data_dir: &Path, tenant: &str, table: &str) -> Result<ReplicaCopy> {
        if manifest::load(data_dir, tenant, table)?.is_none() {
            return Err(Error::NoSuchTable {
                tenant: tenant.to_owned(),
                table: table.to_owned(),
            });
        }
        let staging = Staging::create(&manifest::table_dir(data_dir, tenant, table))?;
        Ok(ReplicaCopy {
            data_dir: data_dir.to_owned(),
            tenant: tenant.to_owned(),
            table: table.to_owned(),
            staging,
        })
    }

    /// Writes `bytes` at `offset` of the staged file `path` (relative to the table directory,
    /// as the manifest lists it). Pieces may come in any order. Blocking.
    pub fn put(&self, path: &str, offset: u64, bytes: &[u8]) -> Result<()> {
        put_piece(&self.staging.dir, path, offset, bytes)
    }

    /// Checks every file `source` lists against its staged copy (size, CRC-32), moves them
    /// into the table under new file ids, and publishes `source`'s files, columns and producer
    /// windows as the table's, under a new incarnation. Nothing changes on an error. Blocking.
    pub fn install(self, source: &TableManifest) -> Result<Installed> {
        if source.tenant != self.tenant || source.table != self.table {
            return Err(Error::Import(format!(
                "the copy is of {}/{}, not {}/{}",
                source.tenant, source.table, self.tenant, self.table
            )));
        }
        for file in &source.files {
            check_staged(&self.staging.dir, file)?;
        }
        let _lock = TableLock::acquire(&self.data_dir, &self.tenant, &self.table)?;
        let Some(current) = manifest::load(&self.data_dir, &self.tenant, &self.table)? else {
            return Err(Error::NoSuchTable {
                tenant: self.tenant.clone(),
                table: self.table.clone(),
            });
        };
        let table_dir = manifest::table_dir(&self.data_dir, &self.tenant, &self.table);
        let mut installed = source.clone();
        installed.incarnation = manifest::new_incarnation();
        installed.version = current.version.max(source.version) + 1;
        // The source's logs are not this node's: its marks mean nothing here.
        installed.ingest.logs.clear();
        let mut directories = std::collections::BTreeSet::new();
        let mut next_id = current.next_file_id;
        for file in &mut installed.files {
            let directory = Path::new(&file.path)
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default();
            let relative = directory.join(format!("part-{next_id:06}.parquet"));
            let (from, to) = (self.staging.dir.join(&file.path), table_dir.join(&relative));
            let parent = to.parent().unwrap_or(&table_dir).to_owned();
            std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
            std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
            directories.insert(parent);
            file.id = next_id;
            file.path = relative.to_string_lossy().into_owned();
            next_id += 1;
        }
        installed.next_file_id = next_id;
        for directory in &directories {
            manifest::sync_dir(directory)?;
        }
        // The old files stay for the queries still reading them, out of any orphan sweep's
        // reach, until the caller deletes them.
        crate::table::maintenance::retire(current.files.iter().map(|f| table_dir.join(&f.path)));
        manifest::publish(&self.data_dir, &installed)?;
        Ok(Installed {
            replaced: current,
            installed,
        })
    }
}

/// Checks a staged file against its manifest entry and makes it durable.
pub(crate) fn check_staged(dir: &Path, entry: &FileEntry) -> Result<()> {
    let path = dir.join(&entry.path);
    let corrupt = |message: String| Error::CorruptFile {
        path: path.clone(),
        message,
    };
    let mut file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            corrupt("the copy lacks this file".to_owned())
        } else {
            Error::io(&path, e)
        }
    })?;
    let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    if size != entry.bytes {
        return Err(corrupt(format!(
            "{size} bytes copied, the manifest says {}",
            entry.bytes
        )));
    }
    if let Some(expected) = entry.crc32 {
        let mut hasher = crc32fast::Hasher::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer).map_err(|e| Error::io(&path, e))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        let actual = hasher.finalize();
        if actual != expected {
            return Err(corrupt(format!(
                "CRC-32 of the copy is {actual:08x}, the manifest says {expected:08x}"
            )));
        }
    }
    file.sync_all().map_err(|e| Error::io(&path, e))
}

/// Writes `bytes` at `offset` of the file `path` (relative, ending in `.parquet`) in the staging
/// directory `dir`. Pieces may come in any order. Blocking.
pub fn put_piece(dir: &Path, path: &str, offset: u64, bytes: &[u8]) -> Result<()> {
    if !manifest::is_safe_relative_path(path) || !path.ends_with(".parquet") {
        return Err(Error::Import(format!(
            "{path:?} is not a data file's path in a table"
        )));
    }
    if offset.saturating_add(bytes.len() as u64) > FILE_BYTES_MAX {
        return Err(Error::Import(format!(
            "{path}: a copied file may have at most {FILE_BYTES_MAX} bytes"
        )));
    }
    let target = dir.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&target)
        .map_err(|e| Error::io(&target, e))?;
    file.write_all_at(bytes, offset)
        .map_err(|e| Error::io(&target, e))
}
