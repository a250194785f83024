//! Input types from the outside world and how they are normalised: integers widen (a UInt64
//! above int64 is refused naming column and row), Float32 widens exactly, timestamps of every
//! unit and zone become the same UTC microseconds (nanoseconds floored), Date32 stays a date and
//! Date64 becomes a timestamp, legacy INT96 timestamps written by another tool (pyarrow) import
//! exactly, and binary columns (Binary, LargeBinary, BinaryView, FixedSizeBinary) are stored as
//! Parquet BYTE_ARRAY without a UTF8 annotation and can be selected, tested for NULL, counted,
//! compared with `X'..'` literals and grouped; what they cannot do is a clear error.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    ArrayRef, BinaryArray, BinaryViewArray, Date32Array, Date64Array, FixedSizeBinaryArray,
    Float32Array, Int16Array, Int8Array, LargeBinaryArray, RecordBatch, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt16Array,
    UInt32Array, UInt64Array, UInt8Array,
};
use arrow_schema::DataType;
use std::path::Path;
use std::sync::Arc;
use support::{engine, timestamps, write_table, DAY_MICROS};
use tessera_storage_engine::table::source;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

fn import_batch(
    dir: &Path,
    table: &str,
    batch: &RecordBatch,
) -> tessera_storage_engine::Result<()> {
    let mut writer =
        TableWriter::open(dir, "t", table, &batch.schema(), &ImportOptions::default())?;
    writer.write(batch)?;
    writer.finish().map(|_| ())
}

/// Imports a Parquet file through the import path (`source::open`, then `TableWriter`).
fn import_file(dir: &Path, table: &str, path: &Path) {
    let input = source::open(path).unwrap();
    let mut writer =
        TableWriter::open(dir, "t", table, &input.schema, &ImportOptions::default()).unwrap();
    for batch in input.batches {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.finish().unwrap();
}

fn column(engine: &Engine, sql: &str) -> ArrayRef {
    let result = engine
        .sql("t", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batches: Vec<RecordBatch> = result.batches;
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches)
        .unwrap()
        .column(0)
        .clone()
}

fn count(engine: &Engine, sql: &str) -> i64 {
    column(engine, sql).as_primitive::<Int64Type>().value(0)
}

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn integers_and_floats_widen_exactly_and_a_uint64_beyond_int64_names_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "i8",
            Arc::new(Int8Array::from(vec![i8::MIN, i8::MAX])) as ArrayRef,
        ),
        ("i16", Arc::new(Int16Array::from(vec![i16::MIN, i16::MAX]))),
        ("u8", Arc::new(UInt8Array::from(vec![0, u8::MAX]))),
        ("u16", Arc::new(UInt16Array::from(vec![0, u16::MAX]))),
        ("u32", Arc::new(UInt32Array::from(vec![0, u32::MAX]))),
        ("u64", Arc::new(UInt64Array::from(vec![0, i64::MAX as u64]))),
        ("f32", Arc::new(Float32Array::from(vec![0.1f32, f32::MIN]))),
    ])
    .unwrap();
    import_batch(dir.path(), "numbers", &batch).unwrap();
    let engine = engine(dir.path());
    let result = engine.sql("t", "SELECT * FROM numbers").unwrap();
    let types: Vec<&DataType> = result
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type())
        .collect();
    use DataType::*;
    assert_eq!(
        types,
        [&Int32, &Int32, &Int32, &Int32, &Int64, &Int64, &Float64]
    );
    let batch = &result.batches[0];
    let ints = |i: usize| {
        batch
            .column(i)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec()
    };
    let longs = |i: usize| {
        batch
            .column(i)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec()
    };
    assert_eq!(ints(0), [-128, 127]);
    assert_eq!(ints(1), [-32_768, 32_767]);
    assert_eq!(ints(2), [0, 255]);
    assert_eq!(ints(3), [0, 65_535]);
    assert_eq!(longs(4), [0, u32::MAX as i64]);
    assert_eq!(longs(5), [0, i64::MAX]);
    let floats = batch.column(6).as_primitive::<Float64Type>().values();
    assert_eq!(floats.to_vec(), [0.1f32 as f64, f32::MIN as f64]);

    let too_big = RecordBatch::try_from_iter(vec![(
        "counter",
        Arc::new(UInt64Array::from(vec![1, 2, i64::MAX as u64 + 1])) as ArrayRef,
    )])
    .unwrap();
    let error = import_batch(dir.path(), "counters", &too_big)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("counter")
            && error.contains("row 3")
            && error.contains("9223372036854775808"),
        "{error}"
    );
}

#[test]
fn timestamps_of_every_unit_and_zone_become_the_same_utc_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    // 2024-03-31 01:30:00 UTC (03:30 in Paris, just after its clock change) and an instant
    // before 1970. Arrow timestamps with a zone hold UTC instants: the zone changes nothing.
    let seconds = [1_711_848_600i64, -86_401];
    let micros: Vec<i64> = seconds.iter().map(|s| s * 1_000_000).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "s_paris",
            Arc::new(TimestampSecondArray::from(seconds.to_vec()).with_timezone("Europe/Paris")),
        ),
        (
            "ms_plus2",
            Arc::new(
                TimestampMillisecondArray::from(
                    seconds.iter().map(|s| s * 1_000).collect::<Vec<_>>(),
                )
                .with_timezone("+02:00"),
            ),
        ),
        (
            "us_utc",
            Arc::new(TimestampMicrosecondArray::from(micros.clone()).with_timezone("UTC")),
        ),
        (
            "ns_none",
            Arc::new(TimestampNanosecondArray::from(
                seconds
                    .iter()
                    .map(|s| s * 1_000_000_000)
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "ns_minus5",
            Arc::new(
                TimestampNanosecondArray::from(
                    seconds
                        .iter()
                        .map(|s| s * 1_000_000_000 + 999)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("-05:00"),
            ),
        ),
        (
            "day",
            Arc::new(Date32Array::from(vec![19_813, -2])) as ArrayRef,
        ),
        (
            "day64",
            Arc::new(Date64Array::from(
                seconds.iter().map(|s| s * 1_000).collect::<Vec<_>>(),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    import_batch(dir.path(), "times", &batch).unwrap();
    let engine = engine(dir.path());
    let result = engine
        .sql("t", "SELECT * FROM times ORDER BY s_paris")
        .unwrap();
    let batch = &result.batches[0];
    let mut expected = micros.clone();
    expected.sort_unstable();
    for (index, field) in result.schema.fields().iter().enumerate() {
        if field.name() == "day" {
            assert_eq!(field.data_type(), &DataType::Date32);
            assert_eq!(
                batch
                    .column(index)
                    .as_primitive::<Date32Type>()
                    .values()
                    .to_vec(),
                [-2, 19_813]
            );
            continue;
        }
        assert_eq!(
            field.data_type(),
            &DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
            "{}",
            field.name()
        );
        let values = batch
            .column(index)
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec();
        assert_eq!(values, expected, "{}", field.name());
    }
    // Seconds beyond the microsecond range are refused, naming column and row.
    let far = RecordBatch::try_from_iter(vec![(
        "when",
        Arc::new(TimestampSecondArray::from(vec![0, i64::MAX / 10])) as ArrayRef,
    )])
    .unwrap();
    let error = import_batch(dir.path(), "far", &far)
        .unwrap_err()
        .to_string();
    assert!(error.contains("when") && error.contains("row 2"), "{error}");
}

/// `tests/data/int96-timestamps.parquet` and `int96-far-timestamps.parquet` were written by
/// pyarrow 26 with `use_deprecated_int96_timestamps=True` (see `tests/data/README.md`).
#[test]
fn legacy_int96_timestamps_written_by_pyarrow_import_as_exact_utc_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    // The files really hold INT96.
    for name in ["int96-timestamps.parquet", "int96-far-timestamps.parquet"] {
        use parquet::file::reader::FileReader;
        let file = std::fs::File::open(data(name)).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        assert_eq!(
            schema.column(1).physical_type(),
            parquet::basic::Type::INT96,
            "{name}"
        );
    }
    import_file(dir.path(), "legacy", &data("int96-timestamps.parquet"));
    import_file(dir.path(), "far", &data("int96-far-timestamps.parquet"));
    let engine = engine(dir.path());
    let values = |table: &str| -> Vec<Option<i64>> {
        column(&engine, &format!("SELECT ts FROM {table} ORDER BY id"))
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()
    };
    // Nanoseconds floored to the microsecond they fall in.
    assert_eq!(
        values("legacy"),
        vec![
            Some(0),                      // 1970-01-01 00:00:00
            Some(-1),                     // 1969-12-31 23:59:59.999999999
            Some(-2),                     // 1969-12-31 23:59:59.999998500
            Some(0),                      // 1970-01-01 00:00:00.000000999
            Some(1_709_210_096_789_012),  // 2024-02-29 12:34:56.789012345
            Some(-2_208_988_800_000_001), // 1899-12-31 23:59:59.999999999
            None,
            Some(-9_223_372_036_854_775), // 1677-09-21 00:12:43.145224808
        ]
    );
    // Dates no int64 of nanoseconds holds (the reader's default unit would wrap them).
    assert_eq!(
        values("far"),
        vec![Some(-12_212_553_600_000_000), Some(253_402_300_799_999_999)]
    );
    assert_eq!(
        count(
            &engine,
            "SELECT COUNT(*) FROM legacy WHERE ts < TIMESTAMP '1970-01-01 00:00:00'"
        ),
        4
    );
}

#[test]
fn binary_columns_are_stored_unannotated_and_support_selection_nulls_counts_and_equality() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Option<&[u8]>> = vec![
        Some(b"\x01\x02"),
        None,
        Some(b""),
        Some(b"\xff\x00\x10"),
        Some(b"\x01\x02"),
    ];
    write_table(
        dir.path(),
        "t",
        "blobs",
        vec![
            ("ts", timestamps((0..5).map(|i| DAY_MICROS + i))),
            ("payload", Arc::new(BinaryArray::from(rows.clone()))),
            (
                "large",
                Arc::new(LargeBinaryArray::from(rows.clone())) as ArrayRef,
            ),
            ("bview", Arc::new(BinaryViewArray::from(rows.clone()))),
            (
                "fixed",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        (0..5u8).map(|i| (i != 1).then_some([i, i])),
                        2,
                    )
                    .unwrap(),
                ),
            ),
        ],
        &ImportOptions::default(),
    );
    // Stored as BYTE_ARRAY without the UTF8 (STRING) annotation.
    let part = support::parquet_files(&dir.path().join("t").join("blobs"))[0].clone();
    {
        use parquet::file::reader::FileReader;
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(part).unwrap())
                .unwrap();
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        for index in 1..=4 {
            let column = schema.column(index);
            assert_eq!(column.physical_type(), parquet::basic::Type::BYTE_ARRAY);
            assert_eq!(column.logical_type_ref(), None, "{}", column.name());
            assert_eq!(column.converted_type(), parquet::basic::ConvertedType::NONE);
        }
    }
    let engine = engine(dir.path());
    let result = engine
        .sql(
            "t",
            "SELECT payload, large, bview, fixed FROM blobs ORDER BY ts",
        )
        .unwrap();
    let batch = &result.batches[0];
    for index in 0..3 {
        assert_eq!(batch.column(index).data_type(), &DataType::Binary);
        let got: Vec<Option<&[u8]>> = batch.column(index).as_binary::<i32>().iter().collect();
        assert_eq!(got, rows, "column {index}");
    }
    let fixed: Vec<Option<&[u8]>> = batch.column(3).as_binary::<i32>().iter().collect();
    assert_eq!(
        fixed,
        vec![
            Some(&[0u8, 0][..]),
            None,
            Some(&[2, 2]),
            Some(&[3, 3]),
            Some(&[4, 4])
        ]
    );
    for (sql, expected) in [
        ("SELECT COUNT(*) FROM blobs WHERE payload IS NULL", 1),
        ("SELECT COUNT(*) FROM blobs WHERE payload IS NOT NULL", 4),
        ("SELECT COUNT(payload) FROM blobs", 4),
        ("SELECT COUNT(*) FROM blobs WHERE payload = X'0102'", 2),
        ("SELECT COUNT(*) FROM blobs WHERE payload <> X'0102'", 2),
        ("SELECT COUNT(*) FROM blobs WHERE payload = X''", 1),
        (
            "SELECT COUNT(*) FROM blobs WHERE bview IN (X'FF0010', X'')",
            2,
        ),
        ("SELECT COUNT(*) FROM blobs WHERE NOT (large = X'0102')", 2),
        ("SELECT COUNT(*) FROM blobs WHERE fixed = X'0303'", 1),
        ("SELECT COUNT(*) FROM blobs WHERE payload = X'AB'", 0),
    ] {
        assert_eq!(count(&engine, sql), expected, "{sql}");
    }
    let groups = engine
        .sql(
            "t",
            "SELECT payload, COUNT(*) FROM blobs GROUP BY payload ORDER BY payload",
        )
        .unwrap();
    let batch = &groups.batches[0];
    let keys: Vec<Option<&[u8]>> = batch.column(0).as_binary::<i32>().iter().collect();
    let counts = batch
        .column(1)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(
        keys,
        vec![
            Some(&b""[..]),
            Some(b"\x01\x02"),
            Some(b"\xff\x00\x10"),
            None
        ]
    );
    assert_eq!(counts, [1, 2, 1, 1]);
    let max = column(&engine, "SELECT MAX(payload) FROM blobs");
    assert_eq!(max.as_binary::<i32>().value(0), b"\xff\x00\x10");
    for (sql, expected) in [
        ("SELECT SUM(payload) FROM blobs", "SUM"),
        ("SELECT AVG(payload) FROM blobs", "AVG"),
        ("SELECT * FROM blobs WHERE payload LIKE 'a%'", "payload"),
        ("SELECT * FROM blobs WHERE payload = 'abc'", "payload"),
        ("SELECT * FROM blobs WHERE payload = 12", "payload"),
        ("SELECT * FROM blobs WHERE payload = X'123'", "hex"),
    ] {
        let error = engine.sql("t", sql).unwrap_err().to_string();
        assert!(error.contains(expected), "{sql}: {error}");
    }
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

#[test]
fn streaming_ingestion_takes_binary_of_any_arrow_width_into_a_binary_column() {
    let dir = tempfile::tempdir().unwrap();
    write_table(
        dir.path(),
        "t",
        "events",
        vec![
            ("ts", timestamps([DAY_MICROS, DAY_MICROS])),
            (
                "payload",
                Arc::new(BinaryArray::from(vec![Some(&b"a"[..]), None])),
            ),
        ],
        &ImportOptions::default(),
    );
    let engine = engine(dir.path());
    let batch = RecordBatch::try_from_iter(vec![
        ("ts", timestamps([DAY_MICROS + 1, DAY_MICROS + 2])),
        (
            "payload",
            Arc::new(LargeBinaryArray::from(vec![
                Some(&b"\x00\x01"[..]),
                Some(b"a"),
            ])) as ArrayRef,
        ),
    ])
    .unwrap();
    engine.ingest("t", "events", "p", 1, ipc(&batch)).unwrap();
    assert_eq!(
        count(&engine, "SELECT COUNT(*) FROM events WHERE payload = X'61'"),
        2
    );
    engine.flush_ingest("t", "events").unwrap();
    assert_eq!(
        count(
            &engine,
            "SELECT COUNT(*) FROM events WHERE payload = X'0001'"
        ),
        1
    );
    assert_eq!(
        count(&engine, "SELECT COUNT(*) FROM events WHERE payload IS NULL"),
        1
    );
}
