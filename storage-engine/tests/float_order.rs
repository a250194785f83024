//! One rule for floats, PostgreSQL's: NaN equals NaN and sorts above every number (`+inf`
//! included), `-0.0` equals `0.0`. Each test goes through the whole engine (import, statistics
//! pruning at file, row-group and page level, kernels, aggregation, sort) on tables whose pages
//! hold two rows each, so a NaN shares pages with numbers the statistics describe.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::path::Path;
use std::sync::Arc;
use support::{engine, DAY_MICROS};
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

/// Imports `(id, amount)` rows, in this order, two rows a page.
fn table(dir: &Path, name: &str, amounts: &[Option<f64>]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
    ]));
    let n = amounts.len() as i64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            (0..n).map(|i| DAY_MICROS + i),
        )),
        Arc::new(Int64Array::from_iter_values(1..=n)),
        Arc::new(Float64Array::from(amounts.to_vec())),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let options = ImportOptions {
        writer: Some(WriterSettings {
            page_rows_max: 2,
            ..WriterSettings::default()
        }),
        ..ImportOptions::default()
    };
    let mut writer = TableWriter::open(dir, "t", name, &batch.schema(), &options).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

fn column(engine: &Engine, sql: &str, index: usize) -> ArrayRef {
    let result = engine
        .sql("t", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let parts: Vec<&dyn Array> = result
        .batches
        .iter()
        .map(|b| b.column(index).as_ref())
        .collect();
    arrow_select::concat::concat(&parts).unwrap()
}

fn count(engine: &Engine, table: &str, filter: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {filter}");
    column(engine, &sql, 0).as_primitive::<Int64Type>().value(0)
}

fn float(engine: &Engine, sql: &str) -> Option<f64> {
    let array = column(engine, sql, 0);
    array
        .is_valid(0)
        .then(|| array.as_primitive::<Float64Type>().value(0))
}

/// `id`: 1..=10; pages [1, NaN] [3, -NaN] [NULL, -0] [0, inf] [-inf, 2].
fn mixed() -> Vec<Option<f64>> {
    vec![
        Some(1.0),
        Some(f64::NAN),
        Some(3.0),
        Some(-f64::NAN),
        None,
        Some(-0.0),
        Some(0.0),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(2.0),
    ]
}

#[test]
fn nan_is_above_every_number_in_filters_and_statistics() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "mixed", &mixed());
    // No NULLs: the file's statistics alone would call `<=` true for every row.
    table(dir.path(), "dense", &[Some(f64::NAN), Some(1.0), Some(2.0)]);
    let engine = engine(dir.path());
    let cases = [
        ("mixed", "amount <= 10", 6),
        ("mixed", "amount < 5", 6),
        ("mixed", "amount > 10", 3),
        ("mixed", "amount >= 3", 4),
        ("mixed", "amount <> 3", 8),
        ("mixed", "amount = 3", 1),
        ("mixed", "NOT (amount < 5)", 3),
        ("mixed", "NOT (amount >= 5)", 6),
        ("mixed", "amount BETWEEN -1 AND 1", 3),
        ("mixed", "amount NOT BETWEEN -1 AND 1", 6),
        ("mixed", "amount IN (3, 0)", 3),
        ("mixed", "amount NOT IN (3, 0)", 6),
        ("mixed", "amount = 0", 2),
        ("mixed", "amount < 0", 1),
        ("mixed", "amount > 0", 6),
        ("dense", "amount <= 5", 2),
        ("dense", "amount > 5", 1),
        ("dense", "amount <> 5", 3),
        ("dense", "NOT (amount <= 5)", 1),
    ];
    let mut wrong = Vec::new();
    for (table, filter, expected) in cases {
        let got = count(&engine, table, filter);
        if got != expected {
            wrong.push(format!(
                "{table} WHERE {filter}: {got}, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn max_of_a_column_with_nan_is_nan_and_min_skips_nan_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let forward = mixed();
    let backward: Vec<Option<f64>> = forward.iter().rev().copied().collect();
    table(dir.path(), "forward", &forward);
    table(dir.path(), "backward", &backward);
    table(
        dir.path(),
        "nans",
        &[None, Some(-f64::NAN), Some(f64::NAN), None],
    );
    table(dir.path(), "zeros", &[Some(0.0), Some(-0.0), Some(0.0)]);
    table(
        dir.path(),
        "zeros_back",
        &[Some(-0.0), Some(0.0), Some(-0.0)],
    );
    let engine = engine(dir.path());
    for name in ["forward", "backward"] {
        let max = float(&engine, &format!("SELECT MAX(amount) FROM {name}"));
        assert!(max.is_some_and(f64::is_nan), "{name}: MAX {max:?}");
        let min = float(&engine, &format!("SELECT MIN(amount) FROM {name}"));
        assert_eq!(min, Some(f64::NEG_INFINITY), "{name}: MIN");
        let min_positive = float(
            &engine,
            &format!("SELECT MIN(amount) FROM {name} WHERE amount > 2.5"),
        );
        assert_eq!(min_positive, Some(3.0), "{name}: MIN above 2.5");
    }
    let min = float(&engine, "SELECT MIN(amount) FROM nans");
    assert!(min.is_some_and(f64::is_nan), "all-NaN MIN {min:?}");
    // -0.0 and 0.0 are equal; which one comes back must not depend on the order read.
    for name in ["zeros", "zeros_back"] {
        let min = float(&engine, &format!("SELECT MIN(amount) FROM {name}"));
        let max = float(&engine, &format!("SELECT MAX(amount) FROM {name}"));
        assert_eq!(
            min.map(f64::to_bits),
            Some((-0.0f64).to_bits()),
            "{name}: MIN"
        );
        assert_eq!(max.map(f64::to_bits), Some(0.0f64.to_bits()), "{name}: MAX");
    }
}

/// The amounts as classes PostgreSQL's order cannot tell apart: "NaN", "0", a number, "NULL".
fn classes(array: &ArrayRef) -> Vec<String> {
    let floats = array.as_primitive::<Float64Type>();
    (0..floats.len())
        .map(|i| match floats.is_valid(i).then(|| floats.value(i)) {
            None => "NULL".to_string(),
            Some(v) if v.is_nan() => "NaN".to_string(),
            Some(0.0) => "0".to_string(),
            Some(v) => v.to_string(),
        })
        .collect()
}

#[test]
fn order_by_puts_nan_after_every_number_ascending_and_first_descending() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "mixed", &mixed());
    let engine = engine(dir.path());
    let ascending = ["-inf", "0", "0", "1", "2", "3", "inf", "NaN", "NaN", "NULL"];
    let descending = ["NULL", "NaN", "NaN", "inf", "3", "2", "1", "0", "0", "-inf"];
    for (sql, expected) in [
        ("SELECT amount FROM mixed ORDER BY amount", &ascending[..]),
        (
            "SELECT amount FROM mixed ORDER BY amount DESC",
            &descending[..],
        ),
        (
            "SELECT amount FROM mixed ORDER BY amount LIMIT 8",
            &ascending[..8],
        ),
        (
            "SELECT amount FROM mixed ORDER BY amount DESC LIMIT 3",
            &descending[..3],
        ),
    ] {
        assert_eq!(classes(&column(&engine, sql, 0)), expected, "{sql}");
    }
}

#[test]
fn group_by_a_float_puts_every_nan_in_one_group_and_both_zeros_in_one() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "mixed", &mixed());
    let engine = engine(dir.path());
    let sql = "SELECT amount, COUNT(*) FROM mixed GROUP BY amount ORDER BY amount";
    let keys = classes(&column(&engine, sql, 0));
    let counts: Vec<i64> = column(&engine, sql, 1)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(keys, ["-inf", "0", "1", "2", "3", "inf", "NaN", "NULL"]);
    assert_eq!(counts, [1, 2, 1, 1, 1, 1, 2, 1]);
}

#[test]
fn statistics_still_prune_and_count_floats_the_writer_saw_no_nan_in() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "clean", &[Some(1.0), Some(2.0), Some(3.0)]);
    let engine = engine(dir.path());
    let none = engine
        .sql("t", "SELECT COUNT(*) FROM clean WHERE amount > 5")
        .unwrap();
    assert_eq!(
        none.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        0
    );
    assert_eq!(none.stats.scan.files_pruned, 1);
    let all = engine
        .sql("t", "SELECT COUNT(*) FROM clean WHERE amount <= 5")
        .unwrap();
    assert_eq!(
        all.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        3
    );
    assert_eq!(all.stats.scan.rows_from_statistics, 3);
}
