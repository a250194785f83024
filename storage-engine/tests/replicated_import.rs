//! An import a table's leader stages and sends to its followers (`TableWriter::stage`,
//! `open_for_copies`, `replica::put_piece`, `adopt`): each follower publishes the leader's
//! files as files of its own, with the same rows, statistics and content digests; a file
//! whose bytes do not match its entry, or an entry naming a path outside the staging
//! directory, is refused and nothing changes.

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::path::Path;
use std::sync::Arc;
use tessera_storage_engine::table::manifest::{self, TableManifest};
use tessera_storage_engine::table::replica::put_piece;
use tessera_storage_engine::table::writer::{ImportOptions, StagedFile, TableWriter};
use tessera_storage_engine::Error;

/// `rows` rows over `days` days from 2024-01-01, `v` counting from `first`.
fn batch(rows: i64, days: i64, first: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]));
    let start = 1_704_067_200_000_000i64;
    let step = days * 86_400_000_000 / rows;
    let ts =
        TimestampMicrosecondArray::from((0..rows).map(|i| start + i * step).collect::<Vec<_>>());
    let v = Int64Array::from((first..first + rows).collect::<Vec<_>>());
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

/// The sum of the files' digests and their rows: what replicas holding the same rows share.
fn content(manifest: &TableManifest) -> (u64, u64) {
    let digest = manifest
        .files
        .iter()
        .map(|f| f.digest.expect("a digest"))
        .fold(0u64, u64::wrapping_add);
    (manifest.total_rows(), digest)
}

/// The leader's import of `rows`, staged: the writer and its files.
fn stage_on_leader(leader: &Path, rows: &RecordBatch) -> (TableWriter, Vec<StagedFile>) {
    let mut writer = TableWriter::open(
        leader,
        "acme",
        "t",
        &rows.schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    writer.write(rows).unwrap();
    let files = writer.stage().unwrap();
    (writer, files)
}

/// Sends the leader's staged files to a follower's import, in two pieces each, the second first.
fn send(from: &TableWriter, files: &[StagedFile], to: &TableWriter) {
    for file in files {
        let bytes = std::fs::read(from.staging_dir().join(&file.entry.path)).unwrap();
        let half = bytes.len() / 2;
        put_piece(
            to.staging_dir(),
            &file.entry.path,
            half as u64,
            &bytes[half..],
        )
        .unwrap();
        put_piece(to.staging_dir(), &file.entry.path, 0, &bytes[..half]).unwrap();
    }
}

#[test]
fn a_follower_publishes_the_leaders_staged_files_as_its_own() {
    let (leader, follower) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both replicas hold the same rows, in files of their own (the follower's in more files).
    import(leader.path(), &batch(3000, 3, 0));
    import(follower.path(), &batch(3000, 3, 0).slice(0, 1000));
    import(follower.path(), &batch(3000, 3, 0).slice(1000, 2000));
    assert_eq!(
        content(&load(leader.path())),
        content(&load(follower.path()))
    );

    let (writer, files) = stage_on_leader(leader.path(), &batch(5000, 4, 10_000));
    assert!(files.len() >= 4, "one file per day at least: {files:?}");
    assert!(files.iter().all(|f| f.directory.starts_with("date=")));
    assert_eq!(files.iter().map(|f| f.entry.rows).sum::<u64>(), 5000);
    let mut copy = TableWriter::open_for_copies(follower.path(), "acme", "t").unwrap();
    send(&writer, &files, &copy);
    copy.adopt(files.clone()).unwrap();
    // Staged on both, visible on neither.
    assert_eq!(load(follower.path()).total_rows(), 3000);
    assert_eq!(load(leader.path()).total_rows(), 3000);

    let on_leader = writer.finish().unwrap();
    let on_follower = copy.finish().unwrap();
    assert_eq!(
        (on_leader.rows, on_leader.files),
        (5000, files.len() as u64)
    );
    assert_eq!(
        (on_follower.rows, on_follower.files),
        (5000, files.len() as u64)
    );
    let (leader_manifest, follower_manifest) = (load(leader.path()), load(follower.path()));
    assert_eq!(content(&leader_manifest), content(&follower_manifest));
    assert_eq!(leader_manifest.total_rows(), 8000);
    // The follower's files are its own (its ids and names), in the leader's partitions.
    let table_dir = manifest::table_dir(follower.path(), "acme", "t");
    for file in &follower_manifest.files {
        assert!(file.path.starts_with("date=2024-01-0"), "{}", file.path);
        assert!(table_dir.join(&file.path).is_file(), "{}", file.path);
    }
    let staging = table_dir.join("_staging");
    assert!(!staging.exists(), "the follower's staging is gone");
}

#[test]
fn a_file_that_does_not_match_its_entry_or_leaves_the_staging_is_refused() {
    let (leader, follower) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    import(leader.path(), &batch(100, 1, 0));
    import(follower.path(), &batch(100, 1, 0));
    let (writer, files) = stage_on_leader(leader.path(), &batch(2000, 2, 100));

    // One byte changed in transit: the CRC-32 tells, and nothing is adopted.
    let copy = TableWriter::open_for_copies(follower.path(), "acme", "t").unwrap();
    send(&writer, &files, &copy);
    let first = &files[0].entry.path;
    put_piece(copy.staging_dir(), first, 100, &[0xAB]).unwrap();
    let mut copy = copy;
    let refused = copy.adopt(files.clone()).unwrap_err();
    assert!(matches!(refused, Error::CorruptFile { .. }), "{refused}");
    drop(copy);

    // A file missing.
    let mut copy = TableWriter::open_for_copies(follower.path(), "acme", "t").unwrap();
    send(&writer, &files[1..], &copy);
    let refused = copy.adopt(files.clone()).unwrap_err();
    assert!(refused.to_string().contains("lacks this file"), "{refused}");
    drop(copy);

    // Paths outside the staging directory or the table, and entries of another table's shape.
    let mut copy = TableWriter::open_for_copies(follower.path(), "acme", "t").unwrap();
    send(&writer, &files, &copy);
    let mut escaping = files.clone();
    escaping[0].directory = "../../other".into();
    assert!(copy.adopt(escaping).is_err());
    let mut nested = files.clone();
    nested[0].entry.path = format!("x/{}", nested[0].entry.path);
    assert!(copy.adopt(nested).is_err());
    let mut narrow = files.clone();
    narrow[0].entry.columns.pop();
    assert!(copy.adopt(narrow).is_err());
    assert!(put_piece(copy.staging_dir(), "../escape.parquet", 0, b"x").is_err());
    drop(copy);
    assert_eq!(load(follower.path()).total_rows(), 100, "nothing changed");

    // A table the follower lacks is not created by a copy.
    let empty = tempfile::tempdir().unwrap();
    let missing = TableWriter::open_for_copies(empty.path(), "acme", "t")
        .err()
        .unwrap();
    assert!(matches!(missing, Error::NoSuchTable { .. }), "{missing}");
    assert!(!empty.path().join("acme").join("t").exists());
}

#[test]
fn an_import_publishes_into_a_table_that_gained_a_column_meanwhile() {
    let (leader, follower) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    import(leader.path(), &batch(100, 1, 0));
    import(follower.path(), &batch(100, 1, 0));
    let (writer, files) = stage_on_leader(leader.path(), &batch(1000, 2, 100));
    let mut copy = TableWriter::open_for_copies(follower.path(), "acme", "t").unwrap();
    send(&writer, &files, &copy);
    copy.adopt(files).unwrap();
    // Streaming ingestion adds a nullable column on both replicas before they publish.
    let region = manifest::ColumnDef {
        name: "region".into(),
        column_type: tessera_storage_engine::value::ColumnType::Utf8,
        nullable: true,
    };
    for dir in [leader.path(), follower.path()] {
        let incarnation = load(dir).incarnation;
        manifest::add_columns(dir, "acme", "t", incarnation, std::slice::from_ref(&region))
            .unwrap();
    }
    writer.finish().unwrap();
    copy.finish().unwrap();
    for dir in [leader.path(), follower.path()] {
        let table = load(dir);
        assert_eq!(table.columns.len(), 3);
        assert_eq!(table.total_rows(), 1100);
        // The import's files read NULL in the new column, as the older file does.
        for file in &table.files {
            assert_eq!(file.columns.len(), 3, "{}", file.path);
            assert_eq!(file.columns[2].null_count, Some(file.rows), "{}", file.path);
        }
    }
    assert_eq!(
        content(&load(leader.path())),
        content(&load(follower.path()))
    );
}
