//! A large file is scanned by every core, each taking a share of its row groups (or, when it has
//! fewer row groups than cores, a range of rows in each): answers equal an engine that scans it
//! whole, and each row, row group and file is counted once.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::RecordBatch;
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};

const QUERIES: [&str; 7] = [
    "SELECT COUNT(*) FROM events",
    "SELECT COUNT(*) FROM events WHERE amount > 500",
    "SELECT category, COUNT(*), SUM(amount), MIN(id), MAX(user_id) FROM events GROUP BY category ORDER BY category",
    "SELECT MIN(id), MAX(id), COUNT(amount) FROM events",
    "SELECT id, amount FROM events WHERE user_id < 1000 ORDER BY id",
    "SELECT id FROM events ORDER BY amount DESC, id LIMIT 7",
    "SELECT status, AVG(amount) FROM events WHERE category = 'electronics' GROUP BY status ORDER BY status",
];

#[test]
fn shares_of_a_large_file_answer_as_the_whole_file() {
    // The writer cuts a row group at least every 65,536 rows: several row groups per core.
    let rows = check_layout(300_000, 8 << 10, 20_000);
    assert!(rows > 2, "{rows} row groups");
}

#[test]
fn shares_of_one_large_row_group_answer_as_the_whole_file() {
    // One row group of small pages: every core takes a range of its rows.
    let rows = check_layout(60_000, 1 << 30, 3_000);
    assert_eq!(rows, 1);
}

/// Writes `rows` events of one day as one file with these writer settings, checks every query split
/// across cores against the whole file, and returns the file's row groups.
fn check_layout(rows: u64, row_group_bytes: u64, page_rows_max: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let batch = events_chunk(0, rows, rows * 366, 5);
    let options = ImportOptions {
        writer: Some(WriterSettings {
            row_group_bytes,
            page_rows_max,
            ..WriterSettings::default()
        }),
        ..ImportOptions::default()
    };
    let mut writer =
        TableWriter::open(dir.path(), "acme", "events", &batch.schema(), &options).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let split = support::engine_with(dir.path(), |c| {
        c.split_file_rows = 1_000;
        c.partial_cache_bytes = 0;
    });
    let whole = support::engine_with(dir.path(), |c| {
        c.split_file_rows = u64::MAX;
        c.partial_cache_bytes = 0;
    });
    for sql in QUERIES {
        let (a, b) = (
            split.sql("acme", sql).unwrap(),
            whole.sql("acme", sql).unwrap(),
        );
        assert_eq!(a.stats.scan.files_total, 1, "{sql}");
        assert_eq!(a.stats.scan.rows_total, b.stats.scan.rows_total, "{sql}");
        assert_eq!(
            a.stats.scan.row_groups_total, b.stats.scan.row_groups_total,
            "{sql}"
        );
        assert_eq!(a.stats.scan.pages_total, b.stats.scan.pages_total, "{sql}");
        assert_eq!(
            a.stats.scan.row_groups_pruned, b.stats.scan.row_groups_pruned,
            "{sql}"
        );
        same(&a.batches, &b.batches, sql);
    }
    let explain = split
        .sql(
            "acme",
            "EXPLAIN SELECT COUNT(*) FROM events WHERE amount > 1",
        )
        .unwrap();
    explain.stats.scan.row_groups_total
}

/// Equal batches, floats within a relative 1e-9 (sums fold in another order across shares).
fn same(a: &[RecordBatch], b: &[RecordBatch], sql: &str) {
    let concat = |batches: &[RecordBatch]| {
        arrow_select::concat::concat_batches(&batches[0].schema(), batches).unwrap()
    };
    let (a, b) = (concat(a), concat(b));
    assert_eq!(a.num_rows(), b.num_rows(), "{sql}");
    for (x, y) in a.columns().iter().zip(b.columns()) {
        match (
            x.as_primitive_opt::<Float64Type>(),
            y.as_primitive_opt::<Float64Type>(),
        ) {
            (Some(x), Some(y)) => {
                for (p, q) in x.iter().zip(y.iter()) {
                    let (p, q) = (p.unwrap_or(0.0), q.unwrap_or(0.0));
                    assert!(
                        (p - q).abs() <= 1e-9 * q.abs().max(1.0),
                        "{sql}: {p} vs {q}"
                    );
                }
            }
            _ => assert_eq!(x, y, "{sql}"),
        }
    }
    let _ = a.column(0).as_primitive_opt::<Int64Type>();
}
