//! A table's content digest (`table::digest`, `CoreContext::content_digest`) depends on its
//! rows only: the same rows buffered, flushed, compacted or imported in one go give one digest,
//! and a row more or a value changed gives another. Replicas that flush the same batches into
//! files of their own are compared by it (anti-entropy).

mod support;

use arrow_array::RecordBatch;
use support::engine;
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::query::sql;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

/// (rows, digest) of acme's events as the engine reads them now.
fn digest(engine: &Engine) -> (u64, Option<u64>) {
    futures::executor::block_on(engine.on_core(0, |context| async move {
        let statement = sql::parse("SELECT COUNT(*) FROM events")?;
        let prepared = context.prepare("acme", statement).await?;
        context.content_digest(&prepared).await
    }))
    .unwrap()
    .unwrap()
}

/// Imports `batches` into a new `events` table, in one import.
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

#[test]
fn the_same_rows_give_one_digest_however_they_are_stored() {
    let base = events_chunk(0, 1000, 1000, 1);
    let extra = events_chunk(1000, 600, 2000, 2);

    // One replica: imported rows, then batches from two producers, buffered.
    let streamed = tempfile::tempdir().unwrap();
    import(streamed.path(), std::slice::from_ref(&base));
    let engine_a = engine(streamed.path());
    for (i, start) in [0, 200, 400].into_iter().enumerate() {
        let producer = if i % 2 == 0 { "p1" } else { "p2" };
        engine_a
            .ingest(
                "acme",
                "events",
                producer,
                i as u64,
                ipc(&extra.slice(start, 200)),
            )
            .unwrap();
    }
    let buffered = digest(&engine_a);
    assert_eq!(buffered.0, 1600);
    assert!(buffered.1.is_some(), "every file written here has a digest");

    // Flushed into files, then compacted: the same rows, the same digest.
    assert!(engine_a.flush_ingest("acme", "events").unwrap() >= 1);
    assert_eq!(digest(&engine_a), buffered);
    engine_a.compact_table("acme", "events").unwrap();
    assert_eq!(digest(&engine_a), buffered);
    // Every file holds the rows its digest was made of.
    let (_, problems) =
        tessera_storage_engine::table::verify::verify_table(streamed.path(), "acme", "events")
            .unwrap();
    assert_eq!(problems, []);

    // Another replica: every row imported at once, in another order.
    let imported = tempfile::tempdir().unwrap();
    import(imported.path(), &[extra.clone(), base.clone()]);
    let engine_b = engine(imported.path());
    assert_eq!(digest(&engine_b), buffered);

    // A row more, or a value changed: another digest.
    engine_a
        .ingest(
            "acme",
            "events",
            "p1",
            9,
            ipc(&events_chunk(1600, 1, 2000, 2)),
        )
        .unwrap();
    let more = digest(&engine_a);
    assert_eq!(more.0, 1601);
    assert_ne!(more.1, buffered.1);
    let changed = tempfile::tempdir().unwrap();
    import(
        changed.path(),
        &[base.clone(), events_chunk(1000, 600, 2000, 3)],
    );
    let engine_c = engine(changed.path());
    let other = digest(&engine_c);
    assert_eq!(other.0, 1600);
    assert_ne!(other.1, buffered.1);
}

/// `tessera verify` (and a cluster node's scrub) reads each file's rows against the digest its
/// manifest entry records: a file rewritten with a value changed, its size and CRC-32 updated
/// to match (as a faulty writer would leave it), is found.
#[test]
fn verify_finds_a_file_whose_rows_are_not_those_its_digest_was_made_of() {
    use tessera_storage_engine::table::{manifest, verify};
    let dir = tempfile::tempdir().unwrap();
    import(dir.path(), &[events_chunk(0, 1000, 1000, 1)]);
    let (checked, problems) = verify::verify_table(dir.path(), "acme", "events").unwrap();
    assert!(checked >= 1);
    assert_eq!(problems, []);

    let mut table = manifest::load(dir.path(), "acme", "events")
        .unwrap()
        .unwrap();
    let path = manifest::table_dir(dir.path(), "acme", "events").join(&table.files[0].path);
    let file = std::fs::File::open(&path).unwrap();
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    let batch = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let user = batch.schema().index_of("user_id").unwrap();
    let mut ids: Vec<i64> = batch
        .column(user)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .values()
        .to_vec();
    ids[batch.num_rows() / 2] += 1;
    let mut columns = batch.columns().to_vec();
    columns[user] = std::sync::Arc::new(arrow_array::Int64Array::from(ids));
    let changed = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let mut out = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut out, changed.schema(), None).unwrap();
    writer.write(&changed).unwrap();
    writer.close().unwrap();
    std::fs::write(&path, &out).unwrap();
    table.files[0].bytes = out.len() as u64;
    table.files[0].crc32 = Some(crc32fast::hash(&out));
    table.version += 1;
    manifest::publish(dir.path(), &table).unwrap();

    let (_, problems) = verify::verify_table(dir.path(), "acme", "events").unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].message.starts_with("content digest"),
        "{problems:?}"
    );
}
