//! The partial-result cache: a repeated aggregation takes the parts of files it has seen from
//! the cache and scans only new files and buffered rows; its answers are bit-identical to an
//! engine without the cache, as the data changes between runs and after a table is dropped and
//! created again under the same name.

mod support;

use arrow_array::RecordBatch;
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

const QUERIES: [&str; 6] = [
    "SELECT status, COUNT(*), SUM(user_id), MIN(id), MAX(amount) FROM events GROUP BY status ORDER BY status",
    "SELECT category, SUM(amount), AVG(amount), COUNT(*) FROM events GROUP BY category ORDER BY category",
    "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '2023-07-20' GROUP BY DATE(timestamp), category ORDER BY 1, 2",
    "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '2023-07-03' AND '2023-07-09 12:00:00'",
    "SELECT COUNT(*) FROM events WHERE amount > 5000",
    "SELECT SUM(amount) FROM events WHERE category = 'electronics' AND amount < 100",
];

fn import(dir: &std::path::Path, batches: &[RecordBatch]) {
    let mut writer = TableWriter::open(
        dir,
        "acme",
        "events",
        &batches[0].schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
}

/// Each query's answer on `engine`, and how many files came from the cache in all.
fn run(engine: &Engine) -> (Vec<Vec<RecordBatch>>, u64) {
    let mut cached = 0;
    let answers = QUERIES
        .iter()
        .map(|sql| {
            let result = engine.sql("acme", sql).unwrap();
            cached += result.stats.scan.files_cached;
            result.batches
        })
        .collect();
    (answers, cached)
}

#[test]
fn repeated_aggregations_come_from_the_cache_and_equal_uncached_answers_as_data_changes() {
    let dir = tempfile::tempdir().unwrap();
    // 60 days of events: one file per day.
    let rows = 120_000;
    import(dir.path(), &[events_chunk(0, rows / 6, rows * 6, 3)]);
    let cached = support::engine(dir.path());
    let uncached = support::engine_with(dir.path(), |c| c.partial_cache_bytes = 0);

    let (first, hits) = run(&cached);
    assert_eq!(hits, 0, "a cold cache serves nothing");
    assert_eq!(first, run(&uncached).0);
    let (second, hits) = run(&cached);
    assert_eq!(second, first, "the cached answers are bit-identical");
    assert!(
        hits > 20,
        "the second run takes files from the cache ({hits})"
    );

    // More days arrive: the next run scans only the new files, answers match a fresh scan.
    import(dir.path(), &[events_chunk(rows / 6, rows / 6, rows * 6, 3)]);
    let (third, hits) = run(&cached);
    assert!(hits > 20, "{hits}");
    assert_ne!(third, first, "new rows change the answers");
    assert_eq!(third, run(&uncached).0);

    // Rows buffered by streaming ingestion: each buffered chunk's part is cached too.
    let more = events_chunk(rows / 3, 5_000, rows * 6, 3);
    let mut ipc = Vec::new();
    {
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &more.schema()).unwrap();
        writer.write(&more).unwrap();
        writer.finish().unwrap();
    }
    cached.ingest("acme", "events", "p", 1, ipc).unwrap();
    let (fourth, before) = run(&cached);
    assert_ne!(fourth, third);
    let (again, hits) = run(&cached);
    assert_eq!(again, fourth);
    assert!(
        hits > before,
        "the buffered chunk's parts come from the cache: {hits} vs {before}"
    );
    drop(uncached);
    cached.flush_ingest("acme", "events").unwrap();
    let (fifth, _) = run(&cached);
    // Counts are exact; float sums may differ in their last bits, as the flushed rows now
    // fold in file order instead of after the files.
    assert_eq!(fifth[3..5], fourth[3..5], "flushed rows are counted once");
    assert_eq!(
        fifth[0], fourth[0],
        "integer sums, counts, MIN and MAX are exact"
    );
    let fresh = support::engine_with(dir.path(), |c| c.partial_cache_bytes = 0);
    drop(cached);
    assert_eq!(fifth, run(&fresh).0);
}

#[test]
fn a_table_dropped_and_created_again_never_answers_from_the_old_cache() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &[events_chunk(0, 20_000, 200_000, 3)]);
    let engine = support::engine(dir.path());
    let (before, _) = run(&engine);
    assert!(run(&engine).1 > 0);
    assert!(engine.drop_table("acme", "events").unwrap());
    // Same name, same file ids and paths, other rows.
    import(dir.path(), &[events_chunk(0, 20_000, 200_000, 4)]);
    let (after, hits) = run(&engine);
    assert_eq!(hits, 0, "nothing of the old table is served");
    assert_ne!(after, before);
    let fresh = support::engine_with(dir.path(), |c| c.partial_cache_bytes = 0);
    drop(engine);
    assert_eq!(after, run(&fresh).0);
}

#[test]
fn buffered_rows_give_the_same_bits_with_and_without_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &[events_chunk(0, 5_000, 200_000, 3)]);
    let sql =
        "SELECT category, SUM(amount), AVG(amount) FROM events GROUP BY category ORDER BY category";
    let uncached = support::engine_with(dir.path(), |c| c.partial_cache_bytes = 0);
    // Several records, each making one chunk per day it spans.
    for sequence in 0..4 {
        let batch = events_chunk(5_000 + sequence * 3_000, 3_000, 200_000, 9);
        let mut ipc = Vec::new();
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        uncached
            .ingest("acme", "events", "p", sequence, ipc)
            .unwrap();
    }
    let expected = uncached.sql("acme", sql).unwrap().batches;
    drop(uncached);
    // The log is replayed into the buffers of an engine with the cache.
    let cached = support::engine(dir.path());
    assert_eq!(cached.sql("acme", sql).unwrap().batches, expected);
    assert_eq!(cached.sql("acme", sql).unwrap().batches, expected);
}

#[test]
fn a_grouping_without_float_sums_is_cached_per_file_once_its_groups_are_known_to_be_few() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 60_000;
    import(dir.path(), &[events_chunk(0, rows, rows * 30, 5)]);
    let engine = support::engine(dir.path());
    let uncached = support::engine_with(dir.path(), |c| c.partial_cache_bytes = 0);
    let few = "SELECT status, COUNT(*), SUM(user_id), MIN(id) FROM events GROUP BY status ORDER BY status";
    let many = "SELECT id, COUNT(*) FROM events GROUP BY id ORDER BY id LIMIT 5";
    let hits = |sql: &str| {
        let result = engine.sql("acme", sql).unwrap();
        assert_eq!(
            result.batches,
            uncached.sql("acme", sql).unwrap().batches,
            "{sql}"
        );
        result.stats.scan.files_cached
    };
    // First run: one shared state (the group count is not known yet); second: parts per file,
    // kept; third: every file from the cache.
    assert_eq!(hits(few), 0);
    assert_eq!(hits(few), 0);
    let files = engine
        .sql("acme", &format!("EXPLAIN {few}"))
        .unwrap()
        .stats
        .scan
        .files_total;
    assert!(files > 10, "{files} files");
    assert_eq!(hits(few), files);
    // 60,000 groups: a merge per file would cost more than the scan; never per file.
    for _ in 0..3 {
        assert_eq!(hits(many), 0);
    }
}
