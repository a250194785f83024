//! Float SUM and AVG are bit-identical from run to run: a core folds its files' partial results
//! in file order and the coordinator folds the cores' in core order, whichever finishes first.
//! The data makes the order visible: magnitudes from 1e-3 to 1e17 of both signs, in files of
//! very different sizes (so reads finish out of order), on two cores.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Float64Array, StringArray};
use std::path::Path;
use std::sync::Arc;
use support::{engine, timestamps, write_table, DAY_MICROS};
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::ImportOptions;
use tessera_storage_engine::Engine;

/// A value whose rounding depends on what it is added to.
fn amount(i: u64) -> f64 {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
    let magnitude = 10f64.powi((x % 21) as i32 - 3);
    let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
    sign * magnitude * (1.0 + (x % 997) as f64 / 997.0)
}

fn import(dir: &Path, file: u64, rows: u64) {
    let ids = (0..rows).map(|i| file * 1_000_000 + i);
    let options = ImportOptions {
        writer: Some(WriterSettings {
            row_group_bytes: 64 << 10,
            page_rows_max: 512,
            ..WriterSettings::default()
        }),
        ..ImportOptions::default()
    };
    write_table(
        dir,
        "t",
        "events",
        vec![
            ("ts", timestamps(ids.clone().map(|i| DAY_MICROS + i as i64))),
            (
                "category",
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| ["a", "b", "c"][(i % 3) as usize]),
                )) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Float64Array::from_iter_values(ids.map(amount))),
            ),
        ],
        &options,
    );
}

/// Every float of the result, as bits.
fn bits(engine: &Engine, sql: &str) -> Vec<u64> {
    let result = engine.sql("t", sql).unwrap();
    let mut out = Vec::new();
    for batch in &result.batches {
        for column in batch.columns() {
            if let Some(floats) = column.as_primitive_opt::<Float64Type>() {
                out.extend(floats.values().iter().map(|v| v.to_bits()));
            }
        }
    }
    out
}

#[test]
fn float_sums_are_the_same_on_every_run() {
    let dir = tempfile::tempdir().unwrap();
    // Large files and small ones, interleaved, so reads of later files finish first.
    for file in 0..24u64 {
        let rows = if file % 4 == 0 { 60_000 } else { 50 + file * 7 };
        import(dir.path(), file, rows);
    }
    let queries = [
        "SELECT SUM(amount), AVG(amount) FROM events",
        "SELECT category, SUM(amount), AVG(amount) FROM events GROUP BY category ORDER BY category",
        "SELECT SUM(amount) FROM events WHERE category <> 'b'",
    ];
    let first = engine(dir.path());
    let expected: Vec<Vec<u64>> = queries.iter().map(|q| bits(&first, q)).collect();
    drop(first);
    for run in 0..12 {
        // Fresh engines read from disk (cold) and again from the pool (warm).
        let engine = engine(dir.path());
        for _ in 0..2 {
            for (query, expected) in queries.iter().zip(&expected) {
                assert_eq!(&bits(&engine, query), expected, "run {run}: {query}");
            }
        }
    }
}
