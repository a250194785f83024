//! Streaming ingestion through the engine: acknowledged rows are visible to the next query,
//! a key is applied once, flushes move rows into files without changing any answer, and an
//! engine that stops without flushing (as after `kill -9`) replays its log at the next start.

mod support;

use arrow_array::RecordBatch;
use support::{engine, scalar};
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::Engine;

/// A batch as an Arrow IPC stream of record batches of at most 40 rows, as clients cut them.
fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    for start in (0..batch.num_rows()).step_by(40) {
        writer
            .write(&batch.slice(start, 40.min(batch.num_rows() - start)))
            .unwrap();
    }
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

fn create_events(dir: &std::path::Path) {
    support::write_events(dir, "acme", 1000, 1);
}

/// Answers that must not change when rows move from buffers to files.
const QUERIES: &[&str] = &[
    "SELECT COUNT(*) FROM events",
    "SELECT COUNT(*) FROM events WHERE amount > 50",
    "SELECT SUM(user_id) FROM events",
    "SELECT COUNT(*) FROM events WHERE timestamp >= TIMESTAMP '2024-01-15 00:00:00'",
];

fn answers(engine: &Engine) -> Vec<i64> {
    QUERIES.iter().map(|q| scalar(engine, q)).collect()
}

#[test]
fn acknowledged_rows_are_visible_at_once_and_a_key_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    create_events(dir.path());
    let engine = engine(dir.path());
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1000);
    let batch = events_chunk(1000, 500, 2000, 2);
    let ack = engine
        .ingest("acme", "events", "p1", 1, ipc(&batch))
        .unwrap();
    assert_eq!((ack.rows, ack.duplicate), (500, false));
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1500);
    let again = engine
        .ingest("acme", "events", "p1", 1, ipc(&batch))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1500);
    // Another producer with the same sequence number is another key.
    engine
        .ingest("acme", "events", "p2", 1, ipc(&batch))
        .unwrap();
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 2000);
    let before = answers(&engine);
    assert!(engine.flush_ingest("acme", "events").unwrap() >= 1);
    assert_eq!(answers(&engine), before);
    // Once flushed, the key is still known.
    assert!(
        engine
            .ingest("acme", "events", "p1", 1, ipc(&batch))
            .unwrap()
            .duplicate
    );
    drop(engine);
    let engine = engine_reopened(dir.path());
    assert_eq!(answers(&engine), before);
    assert!(
        engine
            .ingest("acme", "events", "p2", 1, ipc(&batch))
            .unwrap()
            .duplicate
    );
}

fn engine_reopened(dir: &std::path::Path) -> Engine {
    support::engine(dir)
}

#[test]
fn an_engine_stopped_without_flushing_replays_its_log_and_remembers_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    create_events(dir.path());
    let engine = engine(dir.path());
    for sequence in 0..6u64 {
        let batch = events_chunk(1000 + sequence * 100, 100, 2000, 10 + sequence);
        let producer = if sequence % 2 == 0 { "even" } else { "odd" };
        engine
            .ingest("acme", "events", producer, sequence, ipc(&batch))
            .unwrap();
    }
    // Half of it flushed, the rest only in the log.
    engine.flush_ingest("acme", "events").unwrap();
    for sequence in 6..10u64 {
        let batch = events_chunk(1000 + sequence * 100, 100, 2000, 10 + sequence);
        engine
            .ingest("acme", "events", "late", sequence, ipc(&batch))
            .unwrap();
    }
    let before = answers(&engine);
    assert_eq!(before[0], 2000);
    // No flush, no shutdown work: what a killed process leaves.
    drop(engine);
    let engine = engine_reopened(dir.path());
    let report = engine.recovery().unwrap();
    assert_eq!(report.replayed, 4, "{report:?}");
    assert_eq!(answers(&engine), before);
    for (producer, sequence) in [("late", 7), ("even", 2), ("odd", 5)] {
        let batch = events_chunk(0, 10, 10, 99);
        let ack = engine
            .ingest("acme", "events", producer, sequence, ipc(&batch))
            .unwrap();
        assert!(ack.duplicate, "{producer} {sequence}");
    }
    assert_eq!(answers(&engine), before);
    // Once the adopted rows are flushed, their logs are removed: a third start replays nothing.
    engine.flush_ingest("acme", "events").unwrap();
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(
        logs.is_empty(),
        "logs left after their rows were flushed: {logs:?}"
    );
    drop(engine);
    let engine = engine_reopened(dir.path());
    assert_eq!(engine.recovery().unwrap().replayed, 0);
    assert_eq!(answers(&engine), before);
}

#[test]
fn a_batch_that_does_not_fit_the_table_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    create_events(dir.path());
    let engine = engine(dir.path());
    let bad = RecordBatch::try_from_iter([(
        "color",
        std::sync::Arc::new(arrow_array::StringArray::from(vec!["red"])) as _,
    )])
    .unwrap();
    let error = engine
        .ingest("acme", "events", "p", 1, ipc(&bad))
        .unwrap_err();
    assert_eq!(error.code(), "invalid", "{error}");
    // It lacks NOT NULL columns; its new column is not added either.
    assert!(
        error.to_string().contains("column id is missing"),
        "{error}"
    );
    let columns = tessera_storage_engine::table::manifest::load(dir.path(), "acme", "events")
        .unwrap()
        .unwrap()
        .columns;
    assert!(columns.iter().all(|c| c.name != "color"));
    let error = engine
        .ingest("acme", "nope", "p", 1, ipc(&bad))
        .unwrap_err();
    assert_eq!(error.code(), "not_found", "{error}");
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1000);
    // The failed key is free: the right batch under it is applied.
    let good = events_chunk(1000, 10, 2000, 3);
    assert!(
        !engine
            .ingest("acme", "events", "p", 1, ipc(&good))
            .unwrap()
            .duplicate
    );
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1010);
}

/// The one log segment holding records, and the offsets of its commit groups.
fn segment_with_groups(dir: &std::path::Path) -> (std::path::PathBuf, Vec<usize>) {
    let logs = dir.join("_wal");
    for log in std::fs::read_dir(logs).unwrap() {
        let log = log.unwrap().path();
        if !log.is_dir() {
            continue;
        }
        for segment in std::fs::read_dir(&log).unwrap() {
            let path = segment.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let groups: Vec<usize> = (4096..data.len())
                .step_by(4096)
                .filter(|&at| &data[at..at + 4] == b"GRP1")
                .collect();
            if !groups.is_empty() {
                return (path, groups);
            }
        }
    }
    panic!("no log segment holds a group");
}

/// Three batches of one producer, each its own commit group, left in the log (no flush).
fn three_logged_batches(dir: &std::path::Path) {
    create_events(dir);
    let engine = engine(dir);
    for sequence in 0..3u64 {
        let batch = events_chunk(1000 + sequence * 100, 100, 2000, sequence);
        engine
            .ingest("acme", "events", "p", sequence, ipc(&batch))
            .unwrap();
    }
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1300);
}

#[test]
fn a_torn_last_record_is_dropped_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    three_logged_batches(dir.path());
    let (segment, groups) = segment_with_groups(dir.path());
    assert_eq!(groups.len(), 3);
    // The last group loses its end, as if the power failed during its write.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(groups[2] as u64 + 100).unwrap();
    drop(file);
    let engine = engine(dir.path());
    let report = engine.recovery().unwrap();
    assert_eq!(report.replayed, 2, "{report:?}");
    assert_eq!(report.torn.len(), 1, "{report:?}");
    assert!(
        report.torn[0].contains(&format!("offset {}", groups[2])),
        "{report:?}"
    );
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1200);
}

#[test]
fn a_corrupt_record_in_the_middle_stops_recovery_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    three_logged_batches(dir.path());
    let (segment, groups) = segment_with_groups(dir.path());
    let mut data = std::fs::read(&segment).unwrap();
    data[groups[1] + 200] ^= 0x5a;
    std::fs::write(&segment, &data).unwrap();
    let mut config = tessera_storage_engine::EngineConfig::new(dir.path());
    config.cores = 2;
    config.pin_cores = false;
    let error = match Engine::open(config) {
        Err(error) => error,
        Ok(_) => panic!("recovery skipped a corrupt record followed by acknowledged ones"),
    };
    let text = error.to_string();
    assert_eq!(error.code(), "corrupt", "{text}");
    assert!(text.contains(&segment.display().to_string()), "{text}");
    assert!(text.contains(&format!("offset {}", groups[1])), "{text}");
    // Nothing was applied or deleted: the log is still there for an operator to look at.
    assert!(segment.exists());
}

/// A log adopted at start may go to a core that does not own its producers (a log's records
/// all go to one core). That core's flush must persist those producers' keys with the mark
/// that lets the log be removed: otherwise, after one more restart, nothing remembers them and
/// a resent batch is applied twice (found by the crash test under load, after two restarts).
#[test]
fn keys_of_a_log_adopted_by_another_core_survive_its_flush_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    create_events(dir.path());
    // A producer owned by core 0: its batches go to core 0's log.
    let producer = (0..)
        .map(|i| format!("p{i}"))
        .find(|p| tessera_storage_engine::ingest::owner_core("acme", "events", p, 2) == 0)
        .unwrap();
    let engine = engine(dir.path());
    let batch = events_chunk(1000, 300, 2000, 7);
    engine
        .ingest("acme", "events", &producer, 1, ipc(&batch))
        .unwrap();
    drop(engine);
    // An earlier run's log directory without a segment sorts first, so at the next start the
    // log above is the second one adopted and goes to core 1.
    std::fs::create_dir(dir.path().join("_wal").join("0")).unwrap();
    let engine = engine_reopened(dir.path());
    assert_eq!(engine.recovery().unwrap().replayed, 1);
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1300);
    engine.flush_ingest("acme", "events").unwrap();
    let logs = std::fs::read_dir(dir.path().join("_wal"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(logs, 0, "the adopted logs are removed once flushed");
    drop(engine);
    let engine = engine_reopened(dir.path());
    let ack = engine
        .ingest("acme", "events", &producer, 1, ipc(&batch))
        .unwrap();
    assert!(ack.duplicate, "a resent batch was applied again");
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1300);
}

/// A log whose removal a crash cut short (renamed aside, then partly deleted) is neither read
/// nor an obstacle: recovery finishes removing it.
#[test]
fn a_log_removal_cut_short_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    create_events(dir.path());
    let removed = dir.path().join("_wal").join("0123456789abcdef-0.removed");
    std::fs::create_dir_all(&removed).unwrap();
    std::fs::write(removed.join("00000000000000000002.wal"), b"not a segment").unwrap();
    let engine = engine(dir.path());
    assert_eq!(engine.recovery().unwrap().logs, 0);
    assert!(!removed.exists());
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), 1000);
}

/// Batches of many record batches each while small flushes run all the time: no acknowledged
/// row is ever missing from a query. (When a record's parts were buffered as chunks one by
/// one, a flush could start between two of them and publish the record's LSN as flushed,
/// hiding the parts it had not taken until the next flush.)
#[test]
fn rows_of_a_batch_in_many_parts_stay_visible_through_flushes() {
    let dir = tempfile::tempdir().unwrap();
    create_events(dir.path());
    let engine = support::engine_with(dir.path(), |c| {
        c.ingest.flush_bytes = 64 << 10;
        c.ingest.memory_bytes = 512 << 10;
    });
    std::thread::scope(|scope| {
        for p in 0..2u64 {
            let engine = &engine;
            scope.spawn(move || {
                for s in 0..40u64 {
                    let batch = events_chunk(10_000 + (p * 40 + s) * 2000, 2000, 200_000, s);
                    engine
                        .ingest("acme", "events", &format!("p{p}"), s, ipc(&batch))
                        .unwrap();
                }
            });
        }
    });
    // Flushes spawned during the run finish over the next moments: every query meanwhile,
    // and after an explicit flush, counts every row.
    let expected = 1000 + 160_000;
    for _ in 0..15 {
        assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), expected);
        #[allow(clippy::disallowed_methods)] // a test thread, not a core
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    engine.flush_ingest("acme", "events").unwrap();
    assert_eq!(scalar(&engine, "SELECT COUNT(*) FROM events"), expected);
    let manifest = tessera_storage_engine::table::manifest::load(dir.path(), "acme", "events")
        .unwrap()
        .unwrap();
    assert_eq!(manifest.total_rows(), expected as u64);
}
