//! What an import refuses: values that do not fit the column's type (never turned into NULL),
//! NULLs in NOT NULL columns, and what it leaves behind when it fails (nothing published). Also
//! that the table lock is only taken to publish, so a slow import never blocks another.

use arrow_array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampSecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::path::Path;
use std::sync::Arc;

mod support;
use tessera_storage_engine::table::manifest;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};

fn batch(columns: Vec<(&str, ArrayRef, bool)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, array, _)| array).collect(),
    )
    .unwrap()
}

fn ids(values: Vec<Option<u64>>) -> RecordBatch {
    batch(vec![(
        "id",
        Arc::new(UInt64Array::from(values)) as ArrayRef,
        true,
    )])
}

/// Writes `batches` into a new or existing table and returns the error of the first write or of
/// the commit.
fn import_error(dir: &Path, table: &str, batches: &[RecordBatch]) -> String {
    let mut writer = TableWriter::open(
        dir,
        "t",
        table,
        &batches[0].schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    for batch in batches {
        if let Err(e) = writer.write(batch) {
            return e.to_string();
        }
    }
    match writer.finish() {
        Ok(summary) => panic!("the import committed {} rows", summary.rows),
        Err(e) => e.to_string(),
    }
}

fn import(dir: &Path, table: &str, batches: &[RecordBatch]) -> u64 {
    let mut writer = TableWriter::open(
        dir,
        "t",
        table,
        &batches[0].schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap().rows
}

fn assert_names(error: &str, column: &str, row: u64) {
    assert!(
        error.contains(&format!("column {column}")),
        "error does not name column {column}: {error}"
    );
    assert!(
        error.contains(&format!("row {row}")),
        "error does not name row {row}: {error}"
    );
}

/// Parquet (and `part-*`) files anywhere under the table directory, staging included.
fn parquet_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn uint64_above_i64_max_fails_naming_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let first = ids(vec![Some(1), Some(2), Some(3)]);
    let second = ids(vec![Some(4), Some((1 << 63) + 5), Some(6)]);
    let error = import_error(dir.path(), "numbers", &[first, second]);
    // Rows count from 1 across the whole input: the bad value is the fifth row.
    assert_names(&error, "id", 5);
    assert!(error.contains("9223372036854775813"), "{error}");
    assert!(manifest::load(dir.path(), "t", "numbers")
        .unwrap()
        .is_none());
}

#[test]
fn failed_import_into_existing_table_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(import(dir.path(), "numbers", &[ids(vec![Some(1)])]), 1);
    // Enough rows before the bad one that a small buffer has already flushed files.
    let good = ids((0..10_000).map(Some).collect());
    let bad = ids(vec![Some(u64::MAX)]);
    let mut writer = TableWriter::open(
        dir.path(),
        "t",
        "numbers",
        &good.schema(),
        &ImportOptions {
            buffer_bytes_max: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    writer.write(&good).unwrap();
    let error = writer.write(&bad).unwrap_err().to_string();
    assert_names(&error, "id", 10_001);
    drop(writer);
    let manifest = manifest::load(dir.path(), "t", "numbers").unwrap().unwrap();
    assert_eq!((manifest.version, manifest.total_rows()), (1, 1));
    // What the failed import wrote is gone: only the published file remains.
    let table_dir = manifest::table_dir(dir.path(), "t", "numbers");
    assert_eq!(parquet_files(&table_dir).len(), 1);
}

#[test]
fn second_and_millisecond_timestamps_out_of_range_fail() {
    let dir = tempfile::tempdir().unwrap();
    let seconds = batch(vec![(
        "ts",
        Arc::new(TimestampSecondArray::from(vec![
            Some(0),
            None,
            Some(i64::MAX / 10),
        ])) as ArrayRef,
        true,
    )]);
    let error = import_error(dir.path(), "seconds", &[seconds]);
    assert_names(&error, "ts", 3);

    let millis = batch(vec![(
        "ts",
        Arc::new(TimestampMillisecondArray::from(vec![
            Some(i64::MIN / 10),
            Some(0),
        ])) as ArrayRef,
        true,
    )]);
    let error = import_error(dir.path(), "millis", &[millis]);
    assert_names(&error, "ts", 1);
    assert!(manifest::load(dir.path(), "t", "seconds")
        .unwrap()
        .is_none());
    assert!(manifest::load(dir.path(), "t", "millis").unwrap().is_none());
}

#[test]
fn strings_that_are_not_numbers_fail_instead_of_becoming_null() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        import(
            dir.path(),
            "numbers",
            &[batch(vec![(
                "n",
                Arc::new(Int64Array::from(vec![1])) as ArrayRef,
                true
            )])]
        ),
        1
    );
    // A batch whose column holds text where the table holds int64 (e.g. a later batch of an RPC
    // stream): converting it must not quietly store NULLs.
    let mut writer = TableWriter::open(
        dir.path(),
        "t",
        "numbers",
        &Schema::new(vec![Field::new("n", DataType::Int64, true)]),
        &ImportOptions::default(),
    )
    .unwrap();
    let text = batch(vec![(
        "n",
        Arc::new(StringArray::from(vec![Some("7"), None, Some("seven")])) as ArrayRef,
        true,
    )]);
    let error = writer.write(&text).unwrap_err().to_string();
    assert_names(&error, "n", 3);
}

#[test]
fn null_in_not_null_column_fails_naming_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]);
    // An empty import creates the table with `id` NOT NULL (as `createTable` does).
    TableWriter::open(
        dir.path(),
        "t",
        "strict",
        &schema,
        &ImportOptions::default(),
    )
    .unwrap()
    .finish()
    .unwrap();
    let rows = batch(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])) as ArrayRef,
            true,
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(0),
                None,
                Some(5),
            ])) as ArrayRef,
            true,
        ),
    ]);
    let error = import_error(dir.path(), "strict", &[rows]);
    assert_names(&error, "id", 3);
    assert!(error.contains("NOT NULL"), "{error}");
    let manifest = manifest::load(dir.path(), "t", "strict").unwrap().unwrap();
    assert_eq!(manifest.total_rows(), 0);
    // NULLs in a nullable column are fine.
    let ok = batch(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            true,
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![None, Some(5)])) as ArrayRef,
            true,
        ),
    ]);
    assert_eq!(import(dir.path(), "strict", &[ok]), 2);
}

#[test]
fn csv_value_beyond_the_inferred_type_fails_naming_column_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.csv");
    // The schema is inferred from the first 10,000 rows (int64); a later value does not fit.
    let mut text = String::from("id,name\n");
    for row in 0..10_050u64 {
        if row == 10_020 {
            text.push_str("9223372036854775813,x\n");
        } else {
            text.push_str(&format!("{row},x\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    let source = tessera_storage_engine::table::source::open(&path).unwrap();
    let mut writer = TableWriter::open(
        dir.path(),
        "t",
        "csv",
        &source.schema,
        &ImportOptions::default(),
    )
    .unwrap();
    let mut failure = None;
    for batch in source.batches {
        match batch.and_then(|batch| writer.write(&batch)) {
            Ok(()) => {}
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let error = failure.expect("the CSV import accepted a value that does not fit int64");
    assert!(error.contains("column id"), "{error}");
    assert!(error.contains("9223372036854775813"), "{error}");
}

#[test]
fn slow_import_does_not_block_another_import_of_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(import(dir.path(), "shared", &[ids(vec![Some(1)])]), 1);
    let first = ids(vec![Some(2), Some(3)]);
    // The first import has written rows (and flushed them to files) but not committed yet.
    let mut slow = TableWriter::open(
        dir.path(),
        "t",
        "shared",
        &first.schema(),
        &ImportOptions {
            buffer_bytes_max: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    slow.write(&first).unwrap();
    // The second import runs to its end on another thread meanwhile (with the lock held by the
    // first, it would wait until the first commits, which never happens here).
    let data_dir = dir.path().to_owned();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(import(&data_dir, "shared", &[ids(vec![Some(4)])]));
    });
    let second = receiver
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the second import waited for the first one's table lock");
    assert_eq!(second, 1);
    slow.write(&ids(vec![Some(5)])).unwrap();
    let summary = slow.finish().unwrap();
    assert_eq!(summary.rows, 3);
    let manifest = manifest::load(dir.path(), "t", "shared").unwrap().unwrap();
    assert_eq!((manifest.version, manifest.total_rows()), (3, 5));
    let table_dir = manifest::table_dir(dir.path(), "t", "shared");
    let mut listed: Vec<_> = manifest
        .files
        .iter()
        .map(|f| table_dir.join(&f.path))
        .collect();
    let mut present = parquet_files(&table_dir);
    listed.sort();
    present.sort();
    assert_eq!(listed, present, "files on disk differ from the manifest");
    let ids: std::collections::HashSet<u64> = manifest.files.iter().map(|f| f.id).collect();
    assert_eq!(ids.len(), manifest.files.len(), "file ids repeat");
}

/// A DATE column partitions by its own value, as a TIMESTAMP does by its UTC date (it panicked
/// before: the writer read every time column as microseconds); other types are refused by name.
#[test]
fn a_date_time_column_partitions_by_date_and_other_types_are_refused() {
    use arrow_array::Date32Array;
    let dir = tempfile::tempdir().unwrap();
    let rows = batch(vec![
        (
            "shipped",
            Arc::new(Date32Array::from(vec![
                Some(19_725),
                Some(0),
                None,
                Some(-1),
                Some(19_725),
            ])) as ArrayRef,
            true,
        ),
        (
            "qty",
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            true,
        ),
    ]);
    let by = |column: &str| ImportOptions {
        partition: Some(manifest::PartitionSpec {
            time_column: Some(column.to_owned()),
            columns: Vec::new(),
        }),
        ..ImportOptions::default()
    };
    let mut writer =
        TableWriter::open(dir.path(), "t", "dated", &rows.schema(), &by("shipped")).unwrap();
    writer.write(&rows).unwrap();
    assert_eq!(writer.finish().unwrap().rows, 5);
    let table = manifest::load(dir.path(), "t", "dated").unwrap().unwrap();
    let mut directories: Vec<String> = table
        .files
        .iter()
        .map(|f| f.path.split('/').next().unwrap().to_owned())
        .collect();
    directories.sort();
    directories.dedup();
    assert_eq!(
        directories.len(),
        4,
        "one partition per date and one for NULL: {directories:?}"
    );
    assert!(
        directories.iter().any(|d| d.contains("2024-01-03")),
        "{directories:?}"
    );
    assert!(
        directories.iter().any(|d| d.contains("1969-12-31")),
        "{directories:?}"
    );
    let engine = support::engine(dir.path());
    let result = engine
        .sql(
            "t",
            "SELECT COUNT(*), SUM(qty) FROM dated WHERE shipped >= '2024-01-01'",
        )
        .unwrap();
    let value = |c: usize| {
        use arrow_array::cast::AsArray;
        result.batches[0]
            .column(c)
            .as_primitive::<arrow_array::types::Int64Type>()
            .value(0)
    };
    assert_eq!((value(0), value(1)), (2, 6));

    let error = TableWriter::open(dir.path(), "t", "bad", &rows.schema(), &by("qty"))
        .err()
        .expect("an INT64 time column is refused")
        .to_string();
    assert!(error.contains("time column qty"), "{error}");
}
