//! Query memory is reserved as state grows: a GROUP BY with many groups, or an ORDER BY without
//! LIMIT, fails with `limit` once its state passes the query's cap, while queries whose state is
//! small (few groups, a LIMIT) run; a failed query returns what it held.

mod support;

use arrow_array::{ArrayRef, Float64Array, Int64Array};
use std::sync::Arc;
use support::{engine_with, timestamps, write_table, DAY_MICROS};
use tessera_storage_engine::table::writer::ImportOptions;

const ROWS: i64 = 300_000;

#[test]
fn big_group_by_and_unlimited_order_by_fail_with_limit_as_their_state_grows() {
    let dir = tempfile::tempdir().unwrap();
    write_table(
        dir.path(),
        "t",
        "events",
        vec![
            ("ts", timestamps((0..ROWS).map(|i| DAY_MICROS + i))),
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..ROWS)) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(Float64Array::from_iter_values((0..ROWS).map(|i| i as f64))),
            ),
        ],
        &ImportOptions::default(),
    );
    // 300k groups or rows need several MiB; a few hundred groups or rows need far less.
    let engine = engine_with(dir.path(), |config| {
        config.query_memory_bytes = 2 << 20;
        config.query_memory_budget_bytes = 64 << 20;
    });
    for sql in [
        "SELECT id, SUM(amount) FROM events GROUP BY id",
        "SELECT id, amount FROM events ORDER BY amount DESC",
    ] {
        let error = engine.sql("t", sql).unwrap_err();
        assert_eq!(error.code(), "limit", "{sql}: {error}");
        assert!(error.to_string().contains("query memory"), "{error}");
        assert_eq!(engine.query_memory_used(), 0, "{sql} returned its memory");
    }
    for sql in [
        "SELECT DATE(ts), SUM(amount) FROM events GROUP BY DATE(ts)",
        "SELECT id, amount FROM events ORDER BY amount DESC LIMIT 10",
        "SELECT id FROM events WHERE id < 1000 ORDER BY id",
        "SELECT COUNT(*), SUM(amount) FROM events",
    ] {
        engine
            .sql("t", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_eq!(engine.query_memory_used(), 0);
}
