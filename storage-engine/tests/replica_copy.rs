//! A copy of a table from another replica (`ReplicaCopy`, `CoreContext::install_replica`): it
//! replaces the node's rows with the source's, under a new incarnation and the source's
//! producer windows, while the old files stay for queries until retired; a copy whose file
//! does not match its manifest (size, CRC-32), lacks a file, or names a path outside the table
//! changes nothing.

mod support;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{engine, scalar};
use tessera_storage_engine::ingest::window::Seen;
use tessera_storage_engine::table::manifest::{self, TableManifest};
use tessera_storage_engine::table::replica::ReplicaCopy;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, Error};

/// `rows` rows on `days` days, `v` equal to `value`.
fn batch(rows: i64, days: i64, value: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]));
    let start = 1_704_067_200_000_000i64; // 2024-01-01
    let step = days * 86_400_000_000 / rows;
    let ts =
        TimestampMicrosecondArray::from((0..rows).map(|i| start + i * step).collect::<Vec<_>>());
    let v = Int64Array::from(vec![value; rows as usize]);
    RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(v)]).unwrap()
}

fn import(dir: &Path, batch: &RecordBatch) {
    let mut writer =
        TableWriter::open(dir, "acme", "t", &batch.schema(), &ImportOptions::default()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
}

fn load(dir: &Path) -> TableManifest {
    manifest::load(dir, "acme", "t").unwrap().unwrap()
}

/// Stages every file of `source` (in `source_dir`) into a copy on `target`, in two pieces each,
/// the second first.
fn stage(source_dir: &Path, source: &TableManifest, target: &Path) -> ReplicaCopy {
    let copy = ReplicaCopy::start(target, "acme", "t").unwrap();
    for file in &source.files {
        let bytes =
            std::fs::read(manifest::table_dir(source_dir, "acme", "t").join(&file.path)).unwrap();
        let half = bytes.len() / 2;
        copy.put(&file.path, half as u64, &bytes[half..]).unwrap();
        copy.put(&file.path, 0, &bytes[..half]).unwrap();
    }
    copy
}

fn install(
    engine: &Engine,
    copy: ReplicaCopy,
    source: TableManifest,
) -> Result<TableManifest, Error> {
    futures::executor::block_on(engine.on_core(0, move |context| async move {
        context.install_replica(copy, source).await
    }))
    .unwrap()
}

#[test]
fn an_installed_copy_replaces_the_rows_and_keeps_the_source_windows() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    import(source_dir.path(), &batch(30_000, 3, 1));
    import(source_dir.path(), &batch(5_000, 1, 2));
    import(target_dir.path(), &batch(7_000, 2, 5));
    let mut source = load(source_dir.path());
    source
        .ingest
        .producers
        .entry("p".into())
        .or_default()
        .insert(41);
    let before = load(target_dir.path());
    let engine = engine(target_dir.path());
    assert_eq!(scalar(&engine, "SELECT SUM(v) FROM t"), 35_000);

    let copy = stage(source_dir.path(), &source, target_dir.path());
    let installed = install(&engine, copy, source.clone()).unwrap();
    assert_ne!(installed.incarnation, before.incarnation);
    assert_ne!(installed.incarnation, source.incarnation);
    assert!(installed.version > before.version.max(source.version));
    assert_eq!(installed.files.len(), source.files.len());
    // New file ids past the old ones: no old path is reused while queries may read it.
    assert!(installed.files.iter().all(|f| f.id >= before.next_file_id));
    assert!(installed.ingest.logs.is_empty());
    assert!(matches!(
        installed.ingest.producers["p"].check(41),
        Seen::Durable
    ));
    assert_eq!(load(target_dir.path()), installed);
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM t"), 35_000);
    assert_eq!(scalar(&engine, "SELECT SUM(v) FROM t"), 40_000);
    let (checked, problems) =
        tessera_storage_engine::table::verify::verify_table(target_dir.path(), "acme", "t")
            .unwrap();
    assert_eq!(checked, source.files.len());
    assert!(problems.is_empty(), "{problems:?}");
    // The replaced files are deleted once no query reads them.
    let table_dir = manifest::table_dir(target_dir.path(), "acme", "t");
    let deadline = Instant::now() + Duration::from_secs(10);
    while before
        .files
        .iter()
        .any(|f| table_dir.join(&f.path).exists())
    {
        assert!(
            Instant::now() < deadline,
            "replaced files were never deleted"
        );
        #[allow(clippy::disallowed_methods)] // a test thread, not a core
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the staging directory is gone.
    assert!(!table_dir.join("_staging").exists());
}

#[test]
fn a_copy_that_does_not_match_its_manifest_changes_nothing() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    import(source_dir.path(), &batch(20_000, 2, 1));
    import(target_dir.path(), &batch(3_000, 1, 5));
    let source = load(source_dir.path());
    let before = load(target_dir.path());
    let engine = engine(target_dir.path());

    // One byte flipped in a file: its CRC-32 differs.
    let copy = stage(source_dir.path(), &source, target_dir.path());
    let first = &source.files[0];
    let original =
        std::fs::read(manifest::table_dir(source_dir.path(), "acme", "t").join(&first.path))
            .unwrap();
    copy.put(&first.path, 100, &[original[100] ^ 0x40]).unwrap();
    let error = install(&engine, copy, source.clone()).unwrap_err();
    assert!(matches!(error, Error::CorruptFile { .. }), "{error}");
    assert!(error.to_string().contains("CRC-32"), "{error}");

    // A file missing from the copy.
    let copy = stage(source_dir.path(), &source, target_dir.path());
    let mut more = source.clone();
    let mut extra = more.files[0].clone();
    extra.path = "date=2030-01-01/part-000999.parquet".into();
    more.files.push(extra);
    let error = install(&engine, copy, more).unwrap_err();
    assert!(error.to_string().contains("lacks this file"), "{error}");

    // A file cut short.
    let copy = ReplicaCopy::start(target_dir.path(), "acme", "t").unwrap();
    for file in &source.files {
        copy.put(&file.path, 0, &original[..10]).unwrap();
    }
    let error = install(&engine, copy, source.clone()).unwrap_err();
    assert!(error.to_string().contains("bytes copied"), "{error}");

    // Paths outside the table, or not data files, are refused as they arrive.
    let copy = ReplicaCopy::start(target_dir.path(), "acme", "t").unwrap();
    for path in ["../escape.parquet", "/etc/x.parquet", "_manifest.json", ""] {
        assert!(copy.put(path, 0, b"x").is_err(), "{path}");
    }
    // Another table's manifest.
    let mut other = source.clone();
    other.table = "u".into();
    assert!(install(&engine, copy, other).is_err());

    assert_eq!(load(target_dir.path()), before);
    assert_eq!(scalar(&engine, "SELECT SUM(v) FROM t"), 15_000);
    let table_dir = manifest::table_dir(target_dir.path(), "acme", "t");
    assert!(!table_dir.join("_staging").exists());
}

#[test]
fn a_copy_of_a_table_that_is_not_here_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = ReplicaCopy::start(dir.path(), "acme", "t").err().unwrap();
    assert!(matches!(error, Error::NoSuchTable { .. }), "{error}");
}
