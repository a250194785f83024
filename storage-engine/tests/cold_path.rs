//! What a cold query reads: after `clear_caches` (pages and partial results gone, as on a node
//! whose data cache was evicted) only data pages, no footer; after `clear_all_caches` (first open)
//! every file's footer and page index once, however many scans want it at once. Answers are the
//! same bits either way.

mod support;

use parquet::file::reader::{FileReader, SerializedFileReader};

const ROWS: u64 = 120_000;

fn setup() -> (tempfile::TempDir, tessera_storage_engine::Engine) {
    let dir = tempfile::tempdir().unwrap();
    support::write_events(dir.path(), "acme", ROWS, 3);
    let engine = support::engine(dir.path());
    (dir, engine)
}

/// Compressed bytes of the named columns' chunks over every file (what a full scan of them reads).
fn chunk_bytes(dir: &std::path::Path, columns: &[&str]) -> (u64, usize) {
    let files = support::parquet_files(dir);
    let mut bytes = 0u64;
    for path in &files {
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        for row_group in reader.metadata().row_groups() {
            for chunk in row_group.columns() {
                if columns.contains(&chunk.column_path().string().as_str()) {
                    bytes += chunk.compressed_size() as u64;
                }
            }
        }
    }
    (bytes, files.len())
}

fn loads(engine: &tessera_storage_engine::Engine) -> u64 {
    engine.metadata_counters().iter().map(|c| c.loads).sum()
}

#[test]
fn a_cold_query_reads_pages_but_no_footer_and_answers_the_same() {
    let (dir, engine) = setup();
    let sql = "SELECT category, SUM(amount) FROM events GROUP BY category ORDER BY category";
    let first = engine.sql("acme", sql).unwrap();
    let (data_bytes, files) = chunk_bytes(dir.path(), &["category", "amount"]);
    assert!(files > 100, "one file per day: {files}");
    assert_eq!(
        loads(&engine),
        files as u64,
        "each file's metadata read once"
    );
    let held: u64 = engine.metadata_counters().iter().map(|c| c.files).sum();
    assert_eq!(held, files as u64);

    engine.clear_caches();
    let cold = engine.sql("acme", sql).unwrap();
    assert_eq!(cold.batches, first.batches, "same answer, same bits");
    assert_eq!(loads(&engine), files as u64, "no footer read again");
    let scan = &cold.stats.scan;
    assert!(scan.pool_misses > 0 && scan.pool_hits == 0, "{scan:?}");
    // category and amount are neighbouring chunks: their bytes, nothing more.
    assert_eq!(scan.bytes_read, data_bytes, "{scan:?}");

    let warm = engine.sql("acme", sql).unwrap();
    assert_eq!(warm.batches, first.batches);
    assert_eq!(warm.stats.scan.bytes_read, 0);

    engine.clear_all_caches();
    let first_open = engine.sql("acme", sql).unwrap();
    assert_eq!(first_open.batches, first.batches);
    assert_eq!(
        loads(&engine),
        2 * files as u64,
        "every file opened again, once"
    );
    assert!(first_open.stats.scan.bytes_read > data_bytes);
}

#[test]
fn a_dropped_table_leaves_no_metadata_behind_after_cold_runs() {
    let (_dir, engine) = setup();
    let sql = "SELECT SUM(amount) FROM events";
    engine.sql("acme", sql).unwrap();
    engine.clear_caches();
    engine.sql("acme", sql).unwrap();
    assert!(engine.metadata_counters().iter().any(|c| c.files > 0));
    assert!(engine.drop_table("acme", "events").unwrap());
    let held: u64 = engine.metadata_counters().iter().map(|c| c.files).sum();
    assert_eq!(held, 0, "a dropped table is forgotten by every core");
}
