//! Schema evolution through streaming ingestion: a batch may add nullable columns; rows written
//! before (in files, in memory, in the log) read NULL in them, through flushes, compaction and a
//! restart. A batch whose value does not fit its column's type, or whose new column has a type
//! the engine cannot hold, fails naming the column, and nothing of it is applied.

mod support;

use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, ListArray, RecordBatch, StringArray};
use std::sync::Arc;
use support::{engine_with, scalar, timestamps, write_table, DAY_MICROS};
use tessera_storage_engine::table::manifest;
use tessera_storage_engine::table::writer::ImportOptions;
use tessera_storage_engine::Engine;

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

/// `rows` rows at day `day`, user_id `first..`, and `region` if given.
fn batch(day: i64, first: i64, rows: i64, region: Option<&str>) -> RecordBatch {
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        (
            "ts",
            timestamps((0..rows).map(|r| DAY_MICROS + day * 86_400_000_000 + r)),
        ),
        (
            "user_id",
            Arc::new(Int64Array::from_iter_values(first..first + rows)),
        ),
    ];
    if let Some(region) = region {
        columns.push((
            "region",
            Arc::new(StringArray::from_iter_values((0..rows).map(|_| region))),
        ));
    }
    RecordBatch::try_from_iter(columns).unwrap()
}

/// (rows with no region, rows in "eu", sum of user_id in "eu").
fn regions(engine: &Engine) -> (i64, i64, i64) {
    (
        scalar(engine, "SELECT COUNT(*) FROM t WHERE region IS NULL"),
        scalar(engine, "SELECT COUNT(*) FROM t WHERE region = 'eu'"),
        scalar(engine, "SELECT SUM(user_id) FROM t WHERE region = 'eu'"),
    )
}

#[test]
fn a_batch_adds_a_nullable_column_that_earlier_rows_read_as_null_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let first = batch(0, 0, 100, None);
    write_table(
        dir.path(),
        "acme",
        "t",
        vec![
            ("ts", first.column(0).clone()),
            ("user_id", first.column(1).clone()),
        ],
        &ImportOptions::default(),
    );
    // Compaction merges any two files of a partition.
    let compacting = |config: &mut tessera_storage_engine::EngineConfig| {
        config.compaction.policy.files_per_partition = 1;
    };
    let engine = engine_with(dir.path(), compacting);
    // In the log and in memory, before the table gains the column.
    engine
        .ingest("acme", "t", "p", 1, ipc(&batch(1, 1000, 50, None)))
        .unwrap();
    assert!(engine.sql("acme", "SELECT region FROM t").is_err());
    // The imported file read once: its metadata is cached for the table's two columns.
    let before: i64 = (0..100).chain(1000..1050).sum();
    assert_eq!(scalar(&engine, "SELECT SUM(user_id) FROM t"), before);

    let ack = engine
        .ingest("acme", "t", "p", 2, ipc(&batch(1, 5000, 30, Some("eu"))))
        .unwrap();
    assert!(!ack.duplicate);
    let columns = manifest::load(dir.path(), "acme", "t")
        .unwrap()
        .unwrap()
        .columns;
    assert_eq!(columns.len(), 3);
    assert!(columns[2].name == "region" && columns[2].nullable);
    let eu_sum: i64 = (5000..5030).sum();
    // Old file, old buffered rows and new buffered rows together.
    assert_eq!(regions(&engine), (150, 30, eu_sum));
    // The old file read again for the new column (NULL in every row of it).
    assert_eq!(scalar(&engine, "SELECT COUNT(region) FROM t"), 30);
    assert_eq!(
        scalar(&engine, "SELECT SUM(user_id) FROM t WHERE region IS NULL"),
        before
    );
    let grouped = engine
        .sql(
            "acme",
            "SELECT region, COUNT(*) FROM t GROUP BY region ORDER BY region",
        )
        .unwrap();
    assert_eq!(grouped.num_rows(), 2);

    // Into files; then day 0's imported file (two columns) and a flushed one (three) are
    // merged by compaction.
    engine.flush_ingest("acme", "t").unwrap();
    assert_eq!(regions(&engine), (150, 30, eu_sum));
    engine
        .ingest("acme", "t", "p", 3, ipc(&batch(0, 9000, 10, None)))
        .unwrap();
    engine.flush_ingest("acme", "t").unwrap();
    let report = engine.compact_table("acme", "t").unwrap();
    assert_eq!(
        (report.files_removed, report.files_written),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(regions(&engine), (160, 30, eu_sum));

    // A restart replays what the log still holds against the evolved table.
    engine
        .ingest("acme", "t", "q", 1, ipc(&batch(2, 20_000, 5, Some("eu"))))
        .unwrap();
    drop(engine);
    let engine = engine_with(dir.path(), compacting);
    let eu_sum = eu_sum + (20_000..20_005).sum::<i64>();
    assert_eq!(regions(&engine), (160, 35, eu_sum));

    // A value its column cannot hold, or a new column of a type the engine cannot hold: an
    // error naming the column, nothing applied, the schema unchanged.
    let wrong = RecordBatch::try_from_iter(vec![
        ("ts", timestamps([DAY_MICROS])),
        (
            "user_id",
            Arc::new(StringArray::from(vec!["seven"])) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from(vec!["eu"])) as ArrayRef,
        ),
    ])
    .unwrap();
    let error = engine
        .ingest("acme", "t", "p", 10, ipc(&wrong))
        .unwrap_err();
    assert!(error.to_string().contains("user_id"), "{error}");
    let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1)])]);
    let unsupported = RecordBatch::try_from_iter(vec![
        ("ts", timestamps([DAY_MICROS])),
        ("user_id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("tags", Arc::new(list) as ArrayRef),
    ])
    .unwrap();
    let error = engine
        .ingest("acme", "t", "p", 11, ipc(&unsupported))
        .unwrap_err();
    assert!(error.to_string().contains("tags"), "{error}");
    assert_eq!(regions(&engine), (160, 35, eu_sum));
    assert_eq!(
        manifest::load(dir.path(), "acme", "t")
            .unwrap()
            .unwrap()
            .columns
            .len(),
        3
    );
}
