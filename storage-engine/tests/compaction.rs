//! Compaction and retention through the engine: a query over thousands of small files works,
//! compaction merges them into sorted files without changing any answer (under live queries and
//! ingestion too), one tenant's storm of small files does not starve another's compaction, and
//! retention drops whole date partitions at once. Expected answers come from the rows the test
//! wrote, computed here, not from the engine.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{engine_with, timestamps, DAY_MICROS};
use tessera_storage_engine::table::maintenance::CompactionPolicy;
use tessera_storage_engine::table::manifest;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

const DAY: i64 = 86_400_000_000;

/// The day of row r of batches of `per_batch` rows: batch b lies in day b % days.
fn day_of(r: i64, per_batch: i64, days: i64) -> i64 {
    (r / per_batch) % days
}

/// Rows `first..first + count` (`first` a multiple of `count`), all in the day `day_of` gives,
/// in no order of time; user_id r * 7 + 1.
fn rows(first: i64, count: i64, days: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "ts",
            timestamps(
                ids.iter()
                    .map(|&r| DAY_MICROS + day_of(r, count, days) * DAY + (r * 7919) % DAY),
            ),
        ),
        (
            "user_id",
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|r| r * 7 + 1))),
        ),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

/// Imports `batches` batches of `rows_per_batch` rows into `tenant/events`, every batch
/// written as a file of its own.
fn small_files(dir: &Path, tenant: &str, batches: i64, rows_per_batch: i64, days: i64) {
    let first = rows(0, 1, days);
    let mut writer = TableWriter::open(
        dir,
        tenant,
        "events",
        &first.schema(),
        &ImportOptions {
            buffer_bytes_max: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    for batch in 0..batches {
        writer
            .write(&rows(batch * rows_per_batch, rows_per_batch, days))
            .unwrap();
    }
    writer.finish().unwrap();
}

fn compacting(config: &mut EngineConfig) {
    config.compaction.policy = CompactionPolicy {
        files_per_partition: 8,
        job_bytes: 64 << 20,
    };
}

fn count_and_sum(engine: &Engine, tenant: &str, filter: &str) -> (i64, i64) {
    let result = engine
        .sql(
            tenant,
            &format!("SELECT COUNT(*), SUM(user_id) FROM events {filter}"),
        )
        .unwrap();
    let batch = &result.batches[0];
    let value = |i: usize| {
        let column = batch.column(i).as_primitive::<Int64Type>();
        if column.is_valid(0) {
            column.value(0)
        } else {
            0
        }
    };
    (value(0), value(1))
}

/// What `count_and_sum` must say about rows `0..total` (batches of `per_batch` rows over
/// `days`), for rows whose day passes `keep`.
fn expected(total: i64, per_batch: i64, days: i64, keep: impl Fn(i64) -> bool) -> (i64, i64) {
    (0..total)
        .filter(|&r| keep(day_of(r, per_batch, days)))
        .fold((0, 0), |(count, sum), r| (count + 1, sum + r * 7 + 1))
}

fn files_listed(dir: &Path, tenant: &str) -> usize {
    manifest::load(dir, tenant, "events")
        .unwrap()
        .unwrap()
        .files
        .len()
}

/// Retired files are deleted shortly after no query reads them: waits for the files on disk to
/// be exactly those listed.
fn await_deletions(dir: &Path, tenant: &str) {
    let table_dir = manifest::table_dir(dir, tenant, "events");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (on_disk, listed) = (
            support::parquet_files(&table_dir).len(),
            files_listed(dir, tenant),
        );
        if on_disk == listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{on_disk} files on disk, {listed} listed, 10 s after compaction"
        );
        #[allow(clippy::disallowed_methods)] // a test thread, not a core
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn compact_until_done(engine: &Engine) -> u64 {
    let mut jobs = 0;
    loop {
        let report = engine.compact().unwrap();
        assert_eq!(report.failed, 0, "{report:?}");
        if report.jobs == 0 {
            return jobs;
        }
        jobs += report.jobs;
    }
}

#[test]
fn a_query_over_5000_small_files_works_and_compaction_merges_them_into_sorted_files() {
    let dir = tempfile::tempdir().unwrap();
    // 5,000 batches of 4 rows, each batch on one day: 1,250 files in each of 4 partitions.
    small_files(dir.path(), "acme", 5_000, 4, 4);
    assert_eq!(files_listed(dir.path(), "acme"), 5_000);
    let engine = engine_with(dir.path(), compacting);
    let all = expected(20_000, 4, 4, |_| true);
    let second_day = "WHERE ts >= TIMESTAMP '2024-01-02' AND ts < TIMESTAMP '2024-01-03'";
    assert_eq!(count_and_sum(&engine, "acme", ""), all);
    assert_eq!(
        count_and_sum(&engine, "acme", second_day),
        expected(20_000, 4, 4, |day| day == 1)
    );

    assert_eq!(compact_until_done(&engine), 4);
    let after = manifest::load(dir.path(), "acme", "events")
        .unwrap()
        .unwrap();
    assert_eq!(after.files.len(), 4, "one file per partition");
    assert_eq!(count_and_sum(&engine, "acme", ""), all);
    assert_eq!(
        count_and_sum(&engine, "acme", second_day),
        expected(20_000, 4, 4, |day| day == 1)
    );
    await_deletions(dir.path(), "acme");

    // Each merged file is sorted by time, and its statistics say what it holds.
    let table_dir = manifest::table_dir(dir.path(), "acme", "events");
    for file in &after.files {
        let handle = std::fs::File::open(table_dir.join(&file.path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(handle)
            .unwrap()
            .build()
            .unwrap();
        let mut times = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            times.extend(
                batch
                    .column(0)
                    .as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        assert_eq!(times.len() as u64, file.rows);
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{} unsorted",
            file.path
        );
    }
}

#[test]
fn compaction_racing_queries_and_ingestion_never_changes_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Days 0-1 hold 400 small files that never change; ingestion writes into days 2-3.
    small_files(dir.path(), "acme", 400, 5, 2);
    let engine = engine_with(dir.path(), |config| {
        compacting(config);
        config.ingest.flush_bytes = 16 << 10;
    });
    let fixed = expected(2_000, 5, 2, |_| true);
    let fixed_filter = "WHERE ts < TIMESTAMP '2024-01-03'";
    assert_eq!(count_and_sum(&engine, "acme", fixed_filter), fixed);
    const BATCH: i64 = 50;
    let acknowledged = AtomicI64::new(0);
    let writing = AtomicBool::new(true);
    let racing_jobs = AtomicI64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Ends the other loops however this one ends: a failed ingest must fail the test,
            // not leave them running forever.
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            let _done = Done(&writing);
            for sequence in 0..60 {
                // Rows 1_000_000 + ..., at days 2 and 3.
                let first = 1_000_000 + sequence * BATCH;
                let mut batch = rows(first, BATCH, 2);
                let shifted: ArrayRef = timestamps(
                    batch
                        .column(0)
                        .as_primitive::<TimestampMicrosecondType>()
                        .values()
                        .iter()
                        .map(|t| t + 2 * DAY),
                );
                batch =
                    RecordBatch::try_new(batch.schema(), vec![shifted, batch.column(1).clone()])
                        .unwrap();
                let mut ipc = Vec::new();
                {
                    let mut writer =
                        arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())
                            .unwrap();
                    writer.write(&batch).unwrap();
                    writer.finish().unwrap();
                }
                engine
                    .ingest("acme", "events", "writer", sequence as u64, ipc)
                    .unwrap();
                acknowledged.fetch_add(BATCH, Ordering::SeqCst);
                if sequence % 5 == 4 {
                    engine.flush_ingest("acme", "events").unwrap();
                }
            }
        });
        scope.spawn(|| {
            while writing.load(Ordering::SeqCst) {
                let report = engine.compact().unwrap();
                assert_eq!(report.failed, 0, "{report:?}");
                racing_jobs.fetch_add(report.jobs as i64, Ordering::SeqCst);
            }
        });
        while writing.load(Ordering::SeqCst) {
            assert_eq!(count_and_sum(&engine, "acme", fixed_filter), fixed);
            let before = acknowledged.load(Ordering::SeqCst);
            let (counted, _) = count_and_sum(&engine, "acme", "WHERE ts >= TIMESTAMP '2024-01-03'");
            let after = acknowledged.load(Ordering::SeqCst);
            assert!(
                before <= counted && counted <= after + BATCH,
                "counted {counted} ingested rows with {before}..{after} acknowledged"
            );
        }
    });
    assert!(
        racing_jobs.load(Ordering::SeqCst) > 2,
        "compaction ran during ingestion"
    );
    engine.flush_ingest("acme", "events").unwrap();
    compact_until_done(&engine);
    let ingested_sum: i64 = (1_000_000..1_000_000 + 60 * BATCH).map(|r| r * 7 + 1).sum();
    assert_eq!(
        count_and_sum(&engine, "acme", ""),
        (fixed.0 + 60 * BATCH, fixed.1 + ingested_sum)
    );
    let manifest = manifest::load(dir.path(), "acme", "events")
        .unwrap()
        .unwrap();
    let mut per_partition = std::collections::BTreeMap::new();
    for file in &manifest.files {
        *per_partition
            .entry(file.path.rsplit_once('/').unwrap().0.to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(per_partition.len(), 4);
    assert!(per_partition.values().all(|&n| n <= 8), "{per_partition:?}");
    await_deletions(dir.path(), "acme");
}

#[test]
fn one_tenants_storm_of_small_files_leaves_every_tenant_its_budget_each_round() {
    let dir = tempfile::tempdir().unwrap();
    // "astorm" sorts first, so the first round starts with it.
    small_files(dir.path(), "astorm", 600, 2, 6);
    small_files(dir.path(), "bquiet", 30, 2, 1);
    let engine = engine_with(dir.path(), |config| {
        compacting(config);
        // Less than one of astorm's partitions (100 files): one job per round.
        config.compaction.tenant_bytes_per_round = 4 << 10;
    });
    let first = engine.compact().unwrap();
    assert_eq!(first.jobs, 2, "{first:?}");
    assert_eq!(first.tenants[0].0, "astorm");
    assert_eq!(files_listed(dir.path(), "astorm"), 600 - 100 + 1);
    // The quiet tenant's partition is compacted in the same round, whatever the storm left.
    assert_eq!(first.tenants[1].0, "bquiet");
    assert_eq!(files_listed(dir.path(), "bquiet"), 1);
    // Later rounds finish the storm; answers never change.
    compact_until_done(&engine);
    assert_eq!(files_listed(dir.path(), "astorm"), 6);
    assert_eq!(
        count_and_sum(&engine, "astorm", ""),
        expected(1_200, 2, 6, |_| true)
    );
    assert_eq!(
        count_and_sum(&engine, "bquiet", ""),
        expected(60, 2, 1, |_| true)
    );
}

#[test]
fn retention_drops_whole_date_partitions_older_than_the_cutoff_buffered_rows_included() {
    let dir = tempfile::tempdir().unwrap();
    small_files(dir.path(), "acme", 40, 10, 4);
    let engine = engine_with(dir.path(), compacting);
    // Acknowledged but still in memory: a row of day 0 and one of day 3.
    let batch = RecordBatch::try_from_iter(vec![
        ("ts", timestamps([DAY_MICROS + 5, DAY_MICROS + 3 * DAY + 5])),
        (
            "user_id",
            Arc::new(Int64Array::from(vec![1_000_000_000, 2_000_000_000])) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut ipc = Vec::new();
    {
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    engine.ingest("acme", "events", "p", 1, ipc).unwrap();

    let error = engine
        .drop_partitions_before("acme", "events", "2024-13-01")
        .unwrap_err();
    assert!(error.to_string().contains("2024-13-01"), "{error}");
    assert!(engine
        .drop_partitions_before("acme", "nothing", "2024-01-01")
        .is_err());

    let dropped = engine
        .drop_partitions_before("acme", "events", "2024-01-03")
        .unwrap();
    assert_eq!(dropped.dates, ["2024-01-01", "2024-01-02"]);
    // 100 rows of each dropped day, plus the buffered row of day 0.
    assert_eq!(dropped.rows, 201);
    let (count, sum) = expected(400, 10, 4, |day| day >= 2);
    assert_eq!(
        count_and_sum(&engine, "acme", ""),
        (count + 1, sum + 2_000_000_000)
    );
    await_deletions(dir.path(), "acme");
    let table_dir = manifest::table_dir(dir.path(), "acme", "events");
    assert!(!table_dir.join("date=2024-01-01").exists());
    // Nothing older left: a second run drops nothing.
    let again = engine
        .drop_partitions_before("acme", "events", "2024-01-03")
        .unwrap();
    assert!(again.files.is_empty() && again.rows == 0);
}
