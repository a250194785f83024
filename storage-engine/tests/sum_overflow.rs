//! Integer SUM is exact: a result outside int64 is an error, never a wrapped number, grouped or
//! not; intermediate sums beyond int64 are fine when the result fits.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::path::Path;
use std::sync::Arc;
use support::{engine, DAY_MICROS};
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};

fn table(dir: &Path, name: &str, rows: &[(&str, i64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("category", DataType::Utf8, false),
        Field::new("qty", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            (0..rows.len() as i64).map(|i| DAY_MICROS + i),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let mut writer =
        TableWriter::open(dir, "t", name, &batch.schema(), &ImportOptions::default()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

#[test]
fn integer_sum_overflow_is_an_error_not_a_wrap() {
    let dir = tempfile::tempdir().unwrap();
    table(
        dir.path(),
        "over",
        &[("a", i64::MAX), ("b", 5), ("a", 1), ("b", 7)],
    );
    table(
        dir.path(),
        "under",
        &[("a", i64::MIN), ("a", -1), ("b", -3)],
    );
    table(
        dir.path(),
        "fits",
        &[
            ("a", i64::MAX),
            ("a", i64::MAX),
            ("a", i64::MIN),
            ("a", i64::MIN),
            ("a", 1),
        ],
    );
    let engine = engine(dir.path());
    for sql in [
        "SELECT SUM(qty) FROM over",
        "SELECT category, SUM(qty) FROM over GROUP BY category",
        "SELECT SUM(qty) FROM under",
        "SELECT category, SUM(qty) FROM under GROUP BY category ORDER BY 1",
    ] {
        let error = engine
            .sql("t", sql)
            .expect_err(&format!("{sql} answered instead of failing"))
            .to_string();
        assert!(error.contains("overflow"), "{sql}: {error}");
    }
    // The group that fits still answers when no group overflows.
    let result = engine
        .sql("t", "SELECT SUM(qty) FROM over WHERE category = 'b'")
        .unwrap();
    assert_eq!(
        result.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        12
    );
    // Partial sums past int64 are fine when the total fits: the sum is exact.
    let result = engine.sql("t", "SELECT SUM(qty) FROM fits").unwrap();
    assert_eq!(
        result.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        -1
    );
}
