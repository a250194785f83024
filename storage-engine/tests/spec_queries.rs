//! The spec's four queries on a generated events table, checked against answers computed
//! directly from the generated rows, plus what pruning and the buffer pool must show.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use std::collections::BTreeMap;
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::value::{parse_timestamp, MICROS_PER_DAY};
use tessera_storage_engine::{Engine, EngineConfig};

const ROWS: u64 = 300_000;

fn setup() -> (tempfile::TempDir, Engine, Vec<RecordBatch>) {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<RecordBatch> = (0..ROWS)
        .step_by(65_536)
        .map(|first| events_chunk(first, 65_536.min(ROWS - first), ROWS, 7))
        .collect();
    let mut writer = TableWriter::open(
        dir.path(),
        "acme",
        "events",
        &batches[0].schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.cores = 2;
    config.pin_cores = false;
    config.buffer_pool_bytes = 512 << 20;
    // These tests watch the buffer pool: repeated aggregations must not come from the
    // partial-result cache (tests/partial_cache.rs covers it).
    config.partial_cache_bytes = 0;
    let engine = Engine::open(config).unwrap();
    (dir, engine, batches)
}

fn rows<'a>(batches: &'a [RecordBatch]) -> impl Iterator<Item = (usize, &'a RecordBatch)> + 'a {
    batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| (i, b)))
}

#[test]
fn spec_queries_match_direct_computation() {
    let (_dir, engine, batches) = setup();

    // Point lookup.
    let result = engine
        .sql("acme", "SELECT * FROM events WHERE id = 123457")
        .unwrap();
    assert_eq!(result.num_rows(), 1);
    let batch = &result.batches[0];
    assert_eq!(batch.num_columns(), 8);
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>().value(0),
        123_457
    );
    let expected_payload = rows(&batches)
        .find(|(i, b)| b.column(0).as_primitive::<Int64Type>().value(*i) == 123_457)
        .map(|(i, b)| b.column(7).as_string::<i32>().value(i).to_owned())
        .unwrap();
    assert_eq!(
        batch.column(7).as_string::<i32>().value(0),
        expected_payload
    );
    let scan = &result.stats.scan;
    assert!(
        scan.files_pruned + 1 >= scan.files_total,
        "point lookup should touch one file: {scan:?}"
    );

    // Time-range count.
    let low = parse_timestamp("2024-01-01").unwrap();
    let high = parse_timestamp("2024-01-31 23:59:59").unwrap();
    let result = engine
        .sql("acme", "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '2024-01-01' AND '2024-01-31 23:59:59'")
        .unwrap();
    let expected = rows(&batches)
        .filter(|(i, b)| {
            let t = b
                .column(1)
                .as_primitive::<TimestampMicrosecondType>()
                .value(*i);
            t >= low && t <= high
        })
        .count() as i64;
    assert_eq!(
        result.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        expected
    );
    assert!(
        result.stats.scan.rows_from_statistics > 0,
        "whole files inside the range count from statistics"
    );

    // SUM by category.
    let result = engine
        .sql(
            "acme",
            "SELECT category, SUM(amount) FROM events GROUP BY category ORDER BY category",
        )
        .unwrap();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (i, b) in rows(&batches) {
        let amount = b.column(4).as_primitive::<Float64Type>();
        let entry = expected
            .entry(b.column(3).as_string::<i32>().value(i).to_owned())
            .or_default();
        if amount.is_valid(i) {
            *entry += amount.value(i);
        }
    }
    let batch = &result.batches[0];
    assert_eq!(batch.num_rows(), expected.len());
    for (row, (category, sum)) in expected.iter().enumerate() {
        assert_eq!(batch.column(0).as_string::<i32>().value(row), category);
        let got = batch.column(1).as_primitive::<Float64Type>().value(row);
        assert!(
            (got - sum).abs() <= 1e-6 * sum.abs().max(1.0),
            "{category}: {got} vs {sum}"
        );
    }

    // Per-day per-category AVG.
    let result = engine
        .sql(
            "acme",
            "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '2024-01-01' \
             GROUP BY DATE(timestamp), category ORDER BY DATE(timestamp), category",
        )
        .unwrap();
    let mut expected: BTreeMap<(i64, String), (f64, u64)> = BTreeMap::new();
    for (i, b) in rows(&batches) {
        let t = b
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .value(i);
        let amount = b.column(4).as_primitive::<Float64Type>();
        if t < low {
            continue;
        }
        let entry = expected
            .entry((
                t.div_euclid(MICROS_PER_DAY),
                b.column(3).as_string::<i32>().value(i).to_owned(),
            ))
            .or_default();
        if amount.is_valid(i) {
            entry.0 += amount.value(i);
            entry.1 += 1;
        }
    }
    let batch = &result.batches[0];
    assert_eq!(batch.num_rows(), expected.len());
    for (row, ((day, category), (sum, count))) in expected.iter().enumerate() {
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<arrow_array::types::Date32Type>()
                .value(row) as i64,
            *day
        );
        assert_eq!(batch.column(1).as_string::<i32>().value(row), category);
        let avg = batch.column(2).as_primitive::<Float64Type>();
        if *count == 0 {
            assert!(avg.is_null(row));
        } else {
            let want = sum / *count as f64;
            assert!((avg.value(row) - want).abs() <= 1e-9 * want.abs().max(1.0));
        }
    }
}

#[test]
fn warm_queries_are_served_from_the_buffer_pool() {
    let (_dir, engine, _) = setup();
    let sql = "SELECT category, SUM(amount) FROM events GROUP BY category ORDER BY category";
    let cold = engine.sql("acme", sql).unwrap();
    assert!(cold.stats.scan.bytes_read > 0);
    assert!(cold.stats.scan.pool_misses > 0);
    let warm = engine.sql("acme", sql).unwrap();
    assert_eq!(
        warm.stats.scan.bytes_read, 0,
        "a warm query reads nothing: {:?}",
        warm.stats.scan
    );
    assert_eq!(warm.stats.scan.pool_misses, 0);
    assert!(warm.stats.scan.pool_hits > 0);
    assert!(cold.stats.scan.bytes_scanned > 0);
    assert_eq!(
        warm.stats.scan.bytes_scanned, cold.stats.scan.bytes_scanned,
        "a warm query scans what a cold one does, from the pool"
    );
    let (cold, warm) = (&cold.batches[0], &warm.batches[0]);
    assert_eq!(cold.column(0), warm.column(0));
    let (a, b) = (
        cold.column(1).as_primitive::<Float64Type>(),
        warm.column(1).as_primitive::<Float64Type>(),
    );
    // Files finish in any order, so float sums may differ in the last bits.
    assert!(a
        .values()
        .iter()
        .zip(b.values())
        .all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0)));
    engine.clear_caches();
    let again = engine.sql("acme", sql).unwrap();
    assert!(
        again.stats.scan.bytes_read > 0,
        "after clearing, data is read again"
    );
}

#[test]
fn explain_reports_pruning_without_reading_pages() {
    let (_dir, engine, _) = setup();
    let result = engine
        .sql("acme", "EXPLAIN SELECT * FROM events WHERE id = 5")
        .unwrap();
    let text = result.explain.unwrap();
    assert!(text.contains("files"), "{text}");
    assert!(result.stats.scan.files_pruned > 0);
    assert_eq!(result.stats.scan.pool_misses, 0, "EXPLAIN decodes no pages");
}

#[test]
fn query_errors_name_the_problem() {
    let (_dir, engine, _) = setup();
    let error = engine
        .sql("acme", "SELECT nope FROM events")
        .unwrap_err()
        .to_string();
    assert!(error.contains("nope"), "{error}");
    let error = engine
        .sql("acme", "SELECT * FROM missing")
        .unwrap_err()
        .to_string();
    assert!(error.contains("missing"), "{error}");
    let error = engine
        .sql("acme", "SELECT * FROM events WHERE id = 'x'")
        .unwrap_err()
        .to_string();
    assert!(error.contains("id"), "{error}");
    let error = engine
        .sql("acme", "SELECT * FROM events WHERE timestamp > 'soon'")
        .unwrap_err()
        .to_string();
    assert!(error.contains("soon"), "{error}");
    let error = engine
        .sql("other", "SELECT * FROM events")
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not exist"), "{error}");
    // The engine keeps serving.
    assert_eq!(
        engine
            .sql("acme", "SELECT COUNT(*) FROM events")
            .unwrap()
            .num_rows(),
        1
    );
}

#[test]
fn a_query_larger_than_the_pool_streams_through_it() {
    let (dir, engine, _) = setup();
    let sql = "SELECT status, COUNT(*), SUM(amount), MAX(payload) FROM events GROUP BY status ORDER BY status";
    let expected = engine.sql("acme", sql).unwrap();
    drop(engine);
    let mut config = EngineConfig::new(dir.path());
    config.cores = 2;
    config.pin_cores = false;
    config.buffer_pool_bytes = 1 << 20;
    config.partial_cache_bytes = 0;
    let small = Engine::open(config).unwrap();
    let first = small.sql("acme", sql).unwrap();
    let second = small.sql("acme", sql).unwrap();
    for result in [&first, &second] {
        let (a, b) = (&expected.batches[0], &result.batches[0]);
        assert_eq!(a.column(0), b.column(0));
        assert_eq!(a.column(1), b.column(1));
        assert_eq!(a.column(3), b.column(3));
    }
    let counters = small.pool_counters();
    assert!(
        counters.iter().all(|c| c.bytes_used <= c.bytes_budget),
        "{counters:?}"
    );
    assert!(
        counters
            .iter()
            .map(|c| c.evictions + c.bypassed)
            .sum::<u64>()
            > 0,
        "{counters:?}"
    );
    assert!(
        second.stats.scan.bytes_read > 0,
        "the table does not fit, so it is read again"
    );
}
