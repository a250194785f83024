//! Corrupt, truncated, missing and mismatched files: the query fails with an error naming the
//! file and the problem, no panic, and other queries keep working.

use std::path::{Path, PathBuf};
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::manifest;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

fn table(dir: &Path, name: &str, rows: u64) {
    let batch = events_chunk(0, rows, rows, 1);
    let mut writer =
        TableWriter::open(dir, "t", name, &batch.schema(), &ImportOptions::default()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

fn engine(dir: &Path) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.pin_cores = false;
    config.buffer_pool_bytes = 64 << 20;
    Engine::open(config).unwrap()
}

fn first_file(dir: &Path, name: &str) -> PathBuf {
    let manifest = manifest::load(dir, "t", name).unwrap().unwrap();
    manifest::table_dir(dir, "t", name).join(&manifest.files[0].path)
}

fn assert_fails_naming(engine: &Engine, table: &str, file: &Path, problem: &str) {
    let error = engine
        .sql(
            "t",
            &format!("SELECT SUM(amount), COUNT(payload) FROM {table}"),
        )
        .unwrap_err()
        .to_string();
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        error.contains(name),
        "error does not name the file: {error}"
    );
    assert!(
        error.to_lowercase().contains(problem),
        "error does not say {problem:?}: {error}"
    );
    // Other tables are unaffected.
    let good = engine.sql("t", "SELECT COUNT(*) FROM good").unwrap();
    assert_eq!(good.num_rows(), 1);
}

#[test]
fn truncated_file_fails_only_that_query() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "good", 5_000);
    table(dir.path(), "events", 5_000);
    let file = first_file(dir.path(), "events");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_naming(&engine(dir.path()), "events", &file, "corrupt");
}

#[test]
fn corrupt_pages_fail_only_that_query() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "good", 5_000);
    table(dir.path(), "events", 5_000);
    let file = first_file(dir.path(), "events");
    let mut bytes = std::fs::read(&file).unwrap();
    // Scribble over the data pages, keep the footer intact.
    let end = bytes.len() / 2;
    for (i, byte) in bytes[4..end].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(31) ^ 0x5A;
    }
    std::fs::write(&file, &bytes).unwrap();
    assert_fails_naming(&engine(dir.path()), "events", &file, "corrupt");
}

#[test]
fn missing_file_fails_only_that_query() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "good", 5_000);
    table(dir.path(), "events", 5_000);
    let file = first_file(dir.path(), "events");
    std::fs::remove_file(&file).unwrap();
    assert_fails_naming(&engine(dir.path()), "events", &file, "no such file");
}

#[test]
fn file_with_another_schema_fails_only_that_query() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "good", 5_000);
    table(dir.path(), "events", 5_000);
    let file = first_file(dir.path(), "events");
    // Replace the file with a valid Parquet file of a different schema.
    let other = arrow_array::RecordBatch::try_from_iter(vec![(
        "x",
        std::sync::Arc::new(arrow_array::Int32Array::from(vec![1, 2, 3])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let out = std::fs::File::create(&file).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(out, other.schema(), None).unwrap();
    writer.write(&other).unwrap();
    writer.close().unwrap();
    assert_fails_naming(&engine(dir.path()), "events", &file, "schema");
}

#[test]
fn garbage_manifest_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    table(dir.path(), "good", 100);
    table(dir.path(), "events", 100);
    let path = manifest::table_dir(dir.path(), "t", "events").join(manifest::MANIFEST_FILE);
    std::fs::write(&path, b"{ not json").unwrap();
    let engine = engine(dir.path());
    let error = engine
        .sql("t", "SELECT COUNT(*) FROM events")
        .unwrap_err()
        .to_string();
    assert!(error.contains("_manifest.json"), "{error}");
    assert_eq!(
        engine
            .sql("t", "SELECT COUNT(*) FROM good")
            .unwrap()
            .num_rows(),
        1
    );
}

#[test]
fn metadata_pointing_outside_the_file_or_chunk_is_refused_before_decoding() {
    // Found by the parquet_scan fuzz target: a negative column-chunk offset, and an offset index
    // whose first page lies before its column chunk, each made the parquet crate panic. Both are
    // now refused while reading the footer and page index, with a message naming what is wrong.
    for (name, problem) in [
        ("fuzz-negative-chunk-offset.parquet", "outside the"),
        ("fuzz-page-before-chunk.parquet", "outside its column chunk"),
    ] {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
        let error = futures::executor::block_on(
            tessera_storage_engine::table::reader::verify_file(&bytes, Path::new(name)),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains(name) && error.contains(problem), "{error}");
    }
}

#[test]
fn verify_file_rejects_arbitrary_bytes_without_panicking() {
    let samples: Vec<Vec<u8>> = vec![
        vec![],
        b"PAR1".to_vec(),
        b"PAR1\0\0\0\0PAR1".to_vec(),
        b"PAR1\xff\xff\xff\x7fPAR1".to_vec(),
        (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ];
    for sample in samples {
        let bytes = bytes::Bytes::from(sample);
        let result = futures::executor::block_on(
            tessera_storage_engine::table::reader::verify_file(&bytes, Path::new("x.parquet")),
        );
        assert!(result.is_err());
    }
}
