//! `tessera verify`: checks every file of a table against its manifest entry.

use crate::error::{Error, Result};
use crate::table::manifest;
use std::path::{Path, PathBuf};

/// One problem `verify_table` found.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyProblem {
    pub path: PathBuf,
    pub message: String,
}

/// Checks every file of a table against its manifest entry: present, same size and CRC-32,
/// decodable page by page through the engine's reader, and holding rows of the content digest
/// the entry records (`table::digest`: what the writer hashed is what the file holds). Returns
/// the files checked and the problems.
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
        match futures::executor::block_on(crate::table::reader::verify_file(&source, &path)) {
            Ok(rows) if rows == entry.rows => {}
            Ok(rows) => {
                problems.push(problem(format!(
                    "{rows} rows, the manifest says {}",
                    entry.rows
                )));
                continue;
            }
            Err(error) => {
                problems.push(problem(error.to_string()));
                continue;
            }
        }
        if let Some(expected) = entry.digest {
            match file_digest(source) {
                Ok(actual) if actual == expected => {}
                Ok(actual) => problems.push(problem(format!(
                    "content digest {actual:016x}, the manifest says {expected:016x}"
                ))),
                Err(error) => problems.push(problem(error)),
            }
        }
    }
    Ok((manifest.files.len(), problems))
}

/// The content digest of a Parquet file's rows (read whole with parquet's Arrow reader).
fn file_digest(bytes: bytes::Bytes) -> std::result::Result<u64, String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(65_536).build())
        .map_err(|e| e.to_string())?;
    let mut digest = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let rows = crate::table::digest::rows(&batch).map_err(|e| e.to_string())?;
        digest = digest.wrapping_add(rows);
    }
    Ok(digest)
}
