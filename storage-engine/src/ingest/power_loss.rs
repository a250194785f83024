//! Simulated power loss (`io::crash::sim`) under streaming ingestion: writers ingest, flush and
//! rotate segments, and compaction merges the flushed files and deletes the ones it replaced,
//! while the model records every fsync, rename and removal; at a random event
//! the power goes, and the image a restart would find (every write since the last fsync kept
//! or lost block by block) is recovered. Every batch acknowledged before the loss is there
//! exactly once, no batch is there twice, and resending every batch leaves each exactly once,
//! across a second restart too. `TESSERA_POWER_LOSS_SEEDS` sets the number of losses;
//! `TESSERA_CRASH_TRACE` prints each event and keeps each run's directory.
#![allow(clippy::disallowed_types)] // test threads, not cores

use crate::io::crash::sim;
use crate::table::writer::{ImportOptions, TableWriter};
use crate::{Engine, EngineConfig};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const ROWS: i64 = 200;
const PRODUCERS: i64 = 3;
const BATCHES: i64 = 12;
/// 2024-01-01T00:00:00 in microseconds.
const DAY_MICROS: i64 = 19_723 * 86_400 * 1_000_000;

fn batch(producer: i64, sequence: i64) -> RecordBatch {
    let day = (sequence % 2) * 86_400_000_000;
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..ROWS).map(|r| DAY_MICROS + day + r * 1000),
            )),
        ),
        (
            "producer",
            Arc::new(Int64Array::from_iter_values((0..ROWS).map(|_| producer))),
        ),
        (
            "seq",
            Arc::new(Int64Array::from_iter_values((0..ROWS).map(|_| sequence))),
        ),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

fn engine(dir: &Path) -> Engine {
    open(dir, "")
}

/// The engine on `dir`; `context` says which run failed to open.
fn open(dir: &Path, context: &str) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.pin_cores = false;
    config.buffer_pool_bytes = 16 << 20;
    // Small segments and flushes: rotations, flushes and segment removals all happen.
    config.ingest.segment_bytes = 64 << 10;
    config.ingest.flush_bytes = 48 << 10;
    // More than two files in a day's partition are merged.
    config.compaction.policy.files_per_partition = 2;
    Engine::open(config).unwrap_or_else(|e| panic!("{context}: open {}: {e}", dir.display()))
}

fn rows_by_key(engine: &Engine) -> BTreeMap<(i64, i64), i64> {
    let result = engine
        .sql(
            "acme",
            "SELECT producer, seq, COUNT(*) FROM t GROUP BY producer, seq",
        )
        .unwrap();
    let mut counts = BTreeMap::new();
    for batch in &result.batches {
        let column = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
        let (producers, sequences, rows) = (column(0), column(1), column(2));
        for i in 0..batch.num_rows() {
            counts.insert((producers.value(i), sequences.value(i)), rows.value(i));
        }
    }
    counts
}

/// Runs the workload on `data` with power lost at event `crash_at`; returns the events seen
/// and each acknowledgement with the number of events seen when it arrived.
fn workload(
    data: &Path,
    crash_at: Option<u64>,
    seed: u64,
    image: &Path,
) -> (u64, Vec<(i64, i64, u64)>) {
    sim::watch(data, crash_at, seed, image);
    let engine = engine(data);
    let acks = Mutex::new(Vec::new());
    let writers = std::sync::atomic::AtomicI64::new(PRODUCERS);
    let compactions = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while writers.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let report = engine.compact().unwrap();
                assert_eq!(report.failed, 0, "{report:?}");
                compactions.fetch_add(report.jobs, std::sync::atomic::Ordering::SeqCst);
                #[allow(clippy::disallowed_methods)] // a test thread, not a core
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        for producer in 0..PRODUCERS {
            let writers = &writers;
            // Counted down however the writer ends (a panic too), so compaction stops.
            struct Done<'a>(&'a std::sync::atomic::AtomicI64);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            let (engine, acks) = (&engine, &acks);
            scope.spawn(move || {
                let _done = Done(writers);
                for sequence in 0..BATCHES {
                    let ack = engine
                        .ingest(
                            "acme",
                            "t",
                            &format!("p{producer}"),
                            sequence as u64,
                            ipc(&batch(producer, sequence)),
                        )
                        .unwrap();
                    assert!(!ack.duplicate);
                    acks.lock()
                        .unwrap()
                        .push((producer, sequence, sim::events(data)));
                    if producer == 0 && sequence % 4 == 3 {
                        engine.flush_ingest("acme", "t").unwrap();
                    }
                }
            });
        }
    });
    drop(engine);
    let (events, _) = sim::unwatch(data);
    if crash_at.is_none() {
        // Without a loss, compaction must have had work, or this test would not cover it.
        assert!(compactions.into_inner() > 0, "no compaction ran");
    }
    (events, acks.into_inner().unwrap())
}

#[test]
fn acknowledged_batches_survive_simulated_power_loss_exactly_once() {
    let seeds: u64 = std::env::var("TESSERA_POWER_LOSS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let create = |data: &Path| {
        let first = batch(-1, 0);
        let mut writer = TableWriter::open(
            data,
            "acme",
            "t",
            &first.schema(),
            &ImportOptions::default(),
        )
        .unwrap();
        writer.write(&first).unwrap();
        writer.finish().unwrap();
    };
    // A run without loss counts the events a run has.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create(&data);
    let (total, _) = workload(&data, None, 0, &dir.path().join("unused"));
    assert!(
        total > 50,
        "only {total} durability events: the model sees too little"
    );
    let mut imaged = 0;
    for seed in 1..=seeds {
        let dir = tempfile::tempdir().unwrap();
        let (data, image) = (dir.path().join("data"), dir.path().join("image"));
        create(&data);
        let crash_at = 1 + (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % total;
        let (_, acks) = workload(&data, Some(crash_at), seed, &image);
        if !image.exists() {
            continue; // this run had fewer events
        }
        imaged += 1;
        let context = format!("seed {seed}, power lost at event {crash_at} of ~{total}");
        if std::env::var_os("TESSERA_CRASH_TRACE").is_some() {
            eprintln!("kept {:?}", dir.keep());
        }
        let engine = open(&image, &context);
        let counts = rows_by_key(&engine);
        for &(producer, sequence, seen) in &acks {
            if seen < crash_at {
                assert_eq!(
                    counts.get(&(producer, sequence)),
                    Some(&ROWS),
                    "{context}: batch {sequence} of p{producer}, acknowledged at event {seen}"
                );
            }
        }
        for (key, rows) in &counts {
            assert!(*rows == ROWS, "{context}: batch {key:?} has {rows} rows");
        }
        // Every batch sent again: each is then there exactly once, and stays so.
        for producer in 0..PRODUCERS {
            for sequence in 0..BATCHES {
                let ack = engine
                    .ingest(
                        "acme",
                        "t",
                        &format!("p{producer}"),
                        sequence as u64,
                        ipc(&batch(producer, sequence)),
                    )
                    .unwrap_or_else(|e| panic!("{context}: resend: {e}"));
                assert_eq!(
                    ack.duplicate,
                    counts.contains_key(&(producer, sequence)),
                    "{context}: resend of batch {sequence} of p{producer}"
                );
            }
        }
        let expected: BTreeMap<(i64, i64), i64> = (0..PRODUCERS)
            .flat_map(|p| (0..BATCHES).map(move |s| ((p, s), ROWS)))
            .chain([((-1, 0), ROWS)])
            .collect();
        assert_eq!(rows_by_key(&engine), expected, "{context}: after resending");
        drop(engine);
        let engine = self::engine(&image);
        assert_eq!(
            rows_by_key(&engine),
            expected,
            "{context}: after a second restart"
        );
    }
    assert!(
        imaged * 2 >= seeds,
        "only {imaged} of {seeds} runs reached their loss point"
    );
}
