//! Shared by the engine's end-to-end tests: a table written from named columns, and an engine on
//! two unpinned cores (tests share the machine).
#![allow(dead_code)] // each test binary uses its own share

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use std::path::Path;
use std::sync::Arc;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

/// 2024-01-01T00:00:00 in microseconds.
pub const DAY_MICROS: i64 = 19_723 * 86_400 * 1_000_000;

pub fn timestamps(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values))
}

/// Imports one batch of `columns` into `tenant/table` (created by the first import).
pub fn write_table(
    dir: &Path,
    tenant: &str,
    table: &str,
    columns: Vec<(&str, ArrayRef)>,
    options: &ImportOptions,
) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut writer = TableWriter::open(dir, tenant, table, &batch.schema(), options).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

/// Imports `rows` generated events (`gen::events_chunk`, spread over `rows` seconds) into
/// `tenant/events`.
pub fn write_events(dir: &Path, tenant: &str, rows: u64, seed: u64) {
    let batch = tessera_storage_engine::gen::events_chunk(0, rows, rows, seed);
    let options = ImportOptions::default();
    let mut writer = TableWriter::open(dir, tenant, "events", &batch.schema(), &options).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

/// An engine on two unpinned cores, shaped further by `configure`.
pub fn engine_with(dir: &Path, configure: impl FnOnce(&mut EngineConfig)) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.pin_cores = false;
    config.buffer_pool_bytes = 64 << 20;
    configure(&mut config);
    Engine::open(config).unwrap()
}

pub fn engine(dir: &Path) -> Engine {
    engine_with(dir, |_| {})
}

/// The Parquet files under `dir`, at any depth, staging directories left out.
pub fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("_staging") {
                out.extend(parquet_files(&path));
            }
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// The single integer a query of tenant acme answers (a count or a sum).
pub fn scalar(engine: &Engine, sql: &str) -> i64 {
    let result = engine.sql("acme", sql).unwrap();
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}
