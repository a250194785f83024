//! Start-up recovery: every write-ahead log left by an earlier run is replayed into the tables'
//! files, then removed, before the node serves.
//!
//! For each record: the table must still exist as the incarnation the record names (a dropped
//! table's records are skipped), and records at or below the manifest's mark for their log are
//! already in files. The rest of each table's records are written through the import writer in
//! one publication that also raises the marks and adds the records' keys to their producers'
//! windows, so a batch resent after the restart is recognised as a duplicate. Only then are the
//! logs deleted. A crash at any point leaves either the logs (replayed again, skipping what the
//! marks cover) or the published files.

use super::wal::{self, Lsn};
use super::window::ProducerWindow;
use super::{decode_ipc, prepare, write_batches, Record, WAL_DIR};
use crate::error::{Error, Result};
use crate::manifest::{self, TableManifest};
use crate::writer::IngestUpdate;
use arrow_array::RecordBatch;
use std::collections::BTreeMap;
use std::path::Path;

/// What recovery did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub logs: usize,
    pub records: usize,
    /// Records whose rows were written to tables now.
    pub replayed: usize,
    pub rows: u64,
    /// Torn tails dropped (never acknowledged): a description of each.
    pub torn: Vec<String>,
}

#[derive(Default)]
struct TableReplay {
    batches: Vec<RecordBatch>,
    logs: BTreeMap<String, Lsn>,
    producers: BTreeMap<String, ProducerWindow>,
}

/// Replays and removes the logs under `<data_dir>/_wal`. Blocking; runs before the cores serve.
pub fn recover(data_dir: &Path) -> Result<RecoveryReport> {
    let root = data_dir.join(WAL_DIR);
    let mut report = RecoveryReport::default();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(error) => return Err(Error::io(&root, error)),
    };
    let mut logs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        if entry.file_type().map_err(|e| Error::io(&root, e))?.is_dir() {
            logs.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    logs.sort();
    let mut manifests: BTreeMap<(String, String), Option<TableManifest>> = BTreeMap::new();
    let mut tables: BTreeMap<(String, String), TableReplay> = BTreeMap::new();
    for (log_id, dir) in &logs {
        let read = wal::read_log(dir)?;
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
            let manifest = match manifests.get(&table_key) {
                Some(manifest) => manifest,
                None => {
                    let loaded = manifest::load(data_dir, &decoded.tenant, &decoded.table)?;
                    manifests.entry(table_key.clone()).or_insert(loaded)
                }
            };
            let Some(manifest) = manifest else { continue };
            if manifest.incarnation != decoded.incarnation {
                continue;
            }
            if manifest
                .ingest
                .logs
                .get(log_id)
                .is_some_and(|&mark| record.lsn <= mark)
            {
                continue;
            }
            let batch = prepare(&manifest.columns, &decode_ipc(&decoded.ipc)?)?;
            report.replayed += 1;
            report.rows += batch.num_rows() as u64;
            let replay = tables.entry(table_key).or_default();
            replay.batches.push(batch);
            let mark = replay.logs.entry(log_id.clone()).or_default();
            *mark = (*mark).max(record.lsn);
            replay
                .producers
                .entry(decoded.producer.clone())
                .or_insert_with(|| {
                    manifest
                        .ingest
                        .producers
                        .get(&decoded.producer)
                        .cloned()
                        .unwrap_or_default()
                })
                .insert(decoded.sequence);
        }
    }
    for ((tenant, table), replay) in tables {
        let manifest = manifests[&(tenant.clone(), table.clone())]
            .as_ref()
            .expect("only existing tables are replayed");
        let update = IngestUpdate {
            incarnation: manifest.incarnation,
            logs: replay.logs.into_iter().collect(),
            live_logs: None,
            producers: replay.producers.into_iter().collect(),
        };
        write_batches(
            data_dir,
            &tenant,
            &table,
            &manifest.columns,
            &replay.batches,
            update,
        )?;
    }
    for (_, dir) in &logs {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    if !logs.is_empty() {
        manifest::sync_dir(&root)?;
    }
    Ok(report)
}
