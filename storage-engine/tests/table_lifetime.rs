//! Table lifetimes: a table dropped and created again under the same name (same partition path,
//! same file id, same file size) must never be answered from the old table's cached footers, open
//! descriptors or decoded pages; dropping frees what the cores cached; drops racing imports never
//! let two writers hold one table or lose a published file.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::path::Path;
use std::sync::Arc;
use support::{engine, engine_with};
use tessera_storage_engine::table::manifest;
use tessera_storage_engine::table::verify::verify_table;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

/// `rows` rows on one day, every `v` equal to `value`: files for different values have the same
/// size (one-entry dictionary, the same run lengths).
fn batch(rows: usize, value: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]));
    let day = 1_704_067_200_000_000i64; // 2024-01-01
    let ts = TimestampMicrosecondArray::from((0..rows as i64).map(|i| day + i).collect::<Vec<_>>());
    let v = Int64Array::from(vec![value; rows]);
    RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(v)]).unwrap()
}

fn try_import(dir: &Path, table: &str, batch: &RecordBatch) -> tessera_storage_engine::Result<()> {
    let mut writer = TableWriter::open(
        dir,
        "acme",
        table,
        &batch.schema(),
        &ImportOptions::default(),
    )?;
    writer.write(batch)?;
    writer.finish().map(|_| ())
}

fn import(dir: &Path, table: &str, batch: &RecordBatch) {
    try_import(dir, table, batch).unwrap();
}

fn sum_v(engine: &Engine) -> i64 {
    let result = engine.sql("acme", "SELECT SUM(v) FROM t").unwrap();
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn only_file(dir: &Path) -> manifest::FileEntry {
    let manifest = manifest::load(dir, "acme", "t").unwrap().unwrap();
    assert_eq!(manifest.files.len(), 1);
    manifest.files[0].clone()
}

/// The old defect: caches were keyed by (tenant, table, file id, path), a new table starts its
/// file ids at 1 again, and nothing was evicted, so the deleted file's footer, descriptor and
/// decoded pages answered for the new table. Here the table directory is deleted behind the
/// engine's back (as a drop by another process would), so only the cache key can tell.
#[test]
fn recreated_table_with_same_file_id_path_and_size_is_never_served_stale() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    import(dir.path(), "t", &batch(10_000, 1));
    let old = only_file(dir.path());
    for _ in 0..4 {
        // Every core coordinates once, so every core's caches are warm.
        assert_eq!(sum_v(&engine), 10_000);
    }
    std::fs::remove_dir_all(dir.path().join("acme").join("t")).unwrap();
    import(dir.path(), "t", &batch(10_000, 3));
    let new = only_file(dir.path());
    assert_eq!(
        (&old.path, old.id, old.bytes),
        (&new.path, new.id, new.bytes),
        "the case needs the same path, id and size"
    );
    for _ in 0..4 {
        assert_eq!(sum_v(&engine), 30_000);
    }
}

#[test]
fn drop_table_evicts_every_cores_cached_pages_and_a_recreated_table_reads_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    import(dir.path(), "t", &batch(10_000, 1));
    for _ in 0..4 {
        assert_eq!(sum_v(&engine), 10_000);
    }
    let pooled = |engine: &Engine| -> u64 { engine.pool_counters().iter().map(|c| c.pages).sum() };
    assert!(pooled(&engine) > 0);
    assert!(engine.drop_table("acme", "t").unwrap());
    assert_eq!(pooled(&engine), 0, "dropping the table frees its pages");
    assert!(!engine.drop_table("acme", "t").unwrap());
    let error = engine.sql("acme", "SELECT SUM(v) FROM t").unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");

    import(dir.path(), "t", &batch(10_000, 5));
    for _ in 0..4 {
        assert_eq!(sum_v(&engine), 50_000);
    }
}

#[test]
fn incarnation_is_kept_by_appends_and_changed_by_recreation() {
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), "t", &batch(100, 1));
    let first = manifest::load(dir.path(), "acme", "t").unwrap().unwrap();
    assert_ne!(first.incarnation, 0);
    import(dir.path(), "t", &batch(100, 1));
    let appended = manifest::load(dir.path(), "acme", "t").unwrap().unwrap();
    assert_eq!(appended.incarnation, first.incarnation);
    assert_eq!(appended.files.len(), 2);
    manifest::drop_table(dir.path(), "acme", "t")
        .unwrap()
        .unwrap();
    import(dir.path(), "t", &batch(100, 1));
    let recreated = manifest::load(dir.path(), "acme", "t").unwrap().unwrap();
    assert_ne!(recreated.incarnation, first.incarnation);
}

/// The old defect: the lock file lived in the table directory, so a drop deleted it while held;
/// a waiting importer and a new one then both held "the" lock, wrote the same part file, and each
/// one's orphan cleanup deleted the other's files. Rounds of imports racing drops (of the table
/// and of the tenant) must leave either no table or one whose every listed file verifies.
#[test]
fn drops_racing_imports_never_leave_a_table_with_missing_or_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = Arc::new(dir.path().to_owned());
    for round in 0..30 {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let data = data.clone();
                std::thread::spawn(move || match (worker + round) % 4 {
                    0 => {
                        let _ = manifest::drop_table(&data, "acme", "t").unwrap();
                    }
                    1 if round % 3 == 0 => {
                        let _ = manifest::drop_tenant(&data, "acme").unwrap();
                    }
                    // An import racing a drop may be refused ("was dropped"), never half done.
                    _ => {
                        if let Err(error) = try_import(&data, "t", &batch(2_000, worker as i64)) {
                            assert!(error.to_string().contains("was dropped"), "{error}");
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        if let Some(manifest) = manifest::load(&data, "acme", "t").unwrap() {
            let (_, problems) =
                verify_table(&data, "acme", "t").unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                problems.is_empty(),
                "round {round}: {problems:?} (manifest lists {} files)",
                manifest.files.len()
            );
        }
    }
}

/// Descriptors this process holds open on files under `dir`.
fn open_files_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            target.starts_with(dir) && target.extension().is_some_and(|e| e == "parquet")
        })
        .count()
}

/// Each core keeps at most `cached_files_per_core` files open, however many files a query reads.
#[test]
fn cached_open_files_are_bounded_per_core() {
    let dir = tempfile::tempdir().unwrap();
    for value in 0..30 {
        import(dir.path(), "t", &batch(100, value));
    }
    let engine = engine_with(dir.path(), |config| config.cached_files_per_core = Some(3));
    for _ in 0..3 {
        assert_eq!(sum_v(&engine), 100 * (0..30).sum::<i64>());
        // An evicted file's descriptor is closed by its core's io_uring after the query
        // returns, so on a loaded machine the count settles a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut open = open_files_under(dir.path());
        while open > 6 && std::time::Instant::now() < deadline {
            #[allow(clippy::disallowed_methods)] // a test thread, not a core
            std::thread::sleep(std::time::Duration::from_millis(20));
            open = open_files_under(dir.path());
        }
        assert!(open <= 6, "{open} data files open 10 s after the query");
    }
}
