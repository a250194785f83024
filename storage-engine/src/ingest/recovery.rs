//! Start-up recovery: the write-ahead logs left by earlier runs are read before the node serves,
//! and their records not yet in files are handed back to buffers (`IngestCore::adopt`); the
//! logs stay until those rows are flushed, then are removed (`AdoptedLog`). Nothing is written
//! at start, so a node restarts quickly, and on a full disk too.
//!
//! For each record: the table must still exist as the incarnation the record names (a dropped
//! table's records are skipped), and records at or below the manifest's mark for their log are
//! already in files. The producers' windows are rebuilt from the manifests and the records, so
//! a batch resent after the restart is recognised as a duplicate.

use super::wal;
use super::window::ProducerWindow;
use super::{decode_ipc, prepare, Record, Recovered, REMOVED_LOG, WAL_DIR};
use crate::error::{Error, Result};
use crate::table::manifest::{self, TableManifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What recovery found.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub logs: usize,
    pub records: usize,
    /// Records whose rows were not in files yet: buffered again.
    pub replayed: usize,
    pub rows: u64,
    /// Torn tails dropped (never acknowledged): a description of each.
    pub torn: Vec<String>,
}

/// The logs of earlier runs and what they hold that is not in files.
#[derive(Default)]
pub struct Recovery {
    pub report: RecoveryReport,
    /// (id, directory) of each log read; `Recovered::log` indexes this.
    pub logs: Vec<(String, PathBuf)>,
    pub records: Vec<Recovered>,
    /// Per table and producer: the window from the manifest with the records' keys added.
    pub windows: Vec<(Arc<TableManifest>, String, ProducerWindow)>,
}

/// Reads the logs under `<data_dir>/_wal`. Blocking; runs before the cores serve.
pub fn recover(data_dir: &Path) -> Result<Recovery> {
    let root = data_dir.join(WAL_DIR);
    let mut recovery = Recovery::default();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(recovery),
        Err(error) => return Err(Error::io(&root, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        if entry.file_type().map_err(|e| Error::io(&root, e))?.is_dir() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if Path::new(&id).extension() == Some(std::ffi::OsStr::new(REMOVED_LOG)) {
                // A removal cut short: every record was in published files.
                std::fs::remove_dir_all(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                continue;
            }
            recovery.logs.push((id, entry.path()));
        }
    }
    recovery.logs.sort();
    let mut manifests: BTreeMap<(String, String), Option<Arc<TableManifest>>> = BTreeMap::new();
    let mut windows: BTreeMap<(String, String, String), ProducerWindow> = BTreeMap::new();
    let report = &mut recovery.report;
    for (index, (log_id, dir)) in recovery.logs.iter().enumerate() {
        let read = wal::read_log(dir)?;
        if let Some(end) = read.end {
            wal::seal(dir, end)?;
        }
        report.logs += 1;
        if let Some((path, offset, message)) = &read.torn {
            report.torn.push(format!(
                "{} at offset {offset}: {message} (a group never acknowledged; dropped)",
                path.display()
            ));
        }
        for record in read.records {
            report.records += 1;
            let decoded = Record::decode(&record.payload).map_err(|message| Error::CorruptWal {
                path: dir.clone(),
                offset: record.lsn,
                message,
            })?;
            let table_key = (decoded.tenant.clone(), decoded.table.clone());
            if !manifests.contains_key(&table_key) {
                let loaded = manifest::load(data_dir, &decoded.tenant, &decoded.table)?;
                manifests.insert(table_key.clone(), loaded.map(Arc::new));
            }
            let Some(manifest) = &manifests[&table_key] else {
                continue;
            };
            if manifest.incarnation != decoded.incarnation {
                continue;
            }
            let window = windows
                .entry((
                    decoded.tenant.clone(),
                    decoded.table.clone(),
                    decoded.producer.clone(),
                ))
                .or_insert_with(|| {
                    manifest
                        .ingest
                        .producers
                        .get(&decoded.producer)
                        .cloned()
                        .unwrap_or_default()
                });
            window.insert(decoded.sequence);
            if manifest
                .ingest
                .logs
                .get(log_id)
                .is_some_and(|&mark| record.lsn <= mark)
            {
                continue;
            }
            let batches = prepare(&manifest.columns, &decode_ipc(&decoded.ipc)?)?;
            report.replayed += 1;
            report.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            recovery.records.push(Recovered {
                manifest: manifest.clone(),
                log: index,
                lsn: record.lsn,
                producer: decoded.producer,
                sequence: decoded.sequence,
                batches,
            });
        }
    }
    for ((tenant, table, producer), window) in windows {
        if let Some(Some(manifest)) = manifests.get(&(tenant, table)) {
            recovery.windows.push((manifest.clone(), producer, window));
        }
    }
    Ok(recovery)
}
