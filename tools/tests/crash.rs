//! Crash safety of streaming ingestion, against the real server process: writers ingest while
//! the server is killed with SIGKILL at a random moment, again and again; after every restart
//! each acknowledged batch is present exactly once, and no batch is present twice. Writers
//! resend the batch that was in flight when the server died, under the same key, as a real
//! client would. `TESSERA_CRASH_ITERATIONS` sets the number of kills (default 50).

use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Server;
use tessera_rpc::auth::{self, KeyKind, Role, TokenRequest};
use tessera_rpc::Client;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};

const SECRET: &str = "a test secret that is long enough!!";
const ROWS: usize = 300;
const WRITERS: i64 = 4;
/// 2024-01-01T00:00:00 in microseconds.
const DAY_MICROS: i64 = 19_723 * 86_400 * 1_000_000;

/// Rows of batch `sequence` of producer `producer`: they name their key, and spread over days.
fn batch(producer: i64, sequence: u64) -> RecordBatch {
    let rows = 0..ROWS as i64;
    let day = (sequence % 3) as i64 * 86_400_000_000;
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.clone().map(|r| DAY_MICROS + day + r * 1000),
            )),
        ),
        (
            "producer",
            Arc::new(Int64Array::from_iter_values(rows.clone().map(|_| producer))),
        ),
        (
            "seq",
            Arc::new(Int64Array::from_iter_values(
                rows.clone().map(|_| sequence as i64),
            )),
        ),
        ("row", Arc::new(Int64Array::from_iter_values(rows))),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

/// `tessera serve` on 2 cores; shows what it said about recovering the write-ahead log.
fn serve(data: &Path, secret: &Path) -> Server {
    let server = support::try_serve(data, secret, "127.0.0.1:0", &["--cores", "2"])
        .unwrap_or_else(|said| panic!("tessera serve stopped before listening:\n{said}"));
    for line in server.said.iter().filter(|l| l.contains("write-ahead")) {
        eprintln!("server: {line}");
    }
    server
}

fn token(role: Role) -> String {
    auth::mint(
        &TokenRequest {
            subject: "crash-test".into(),
            tenant: Some("acme".into()),
            role,
            ttl_seconds: 3600,
            key_id: None,
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
        KeyKind::Hs256,
        SECRET.as_bytes(),
    )
    .unwrap()
}

/// What one writer knows: the keys acknowledged, and the one sent without an answer.
#[derive(Default)]
struct WriterState {
    acknowledged: BTreeSet<u64>,
    in_flight: Option<u64>,
    next: u64,
}

/// Appends batches until the server goes away (or `stop`); resends the unanswered one first.
fn write_until_killed(address: &str, producer: i64, state: &Mutex<WriterState>, stop: &AtomicBool) {
    futures::executor::block_on(async {
        let Ok(client) = Client::connect(address).await else {
            return;
        };
        let Ok(session) = client.login(&token(Role::Writer)).await else {
            return;
        };
        let Ok(mut stream) = session
            .ingest_stream("crash", &format!("writer-{producer}"))
            .await
        else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            let sequence = {
                let mut state = state.lock().unwrap();
                let sequence = state.in_flight.unwrap_or(state.next);
                state.in_flight = Some(sequence);
                sequence
            };
            match stream.append(sequence, &batch(producer, sequence)).await {
                Ok(ack) => {
                    assert!(ack.durable);
                    {
                        let mut state = state.lock().unwrap();
                        state.acknowledged.insert(sequence);
                        state.in_flight = None;
                        state.next = state.next.max(sequence + 1);
                    }
                    // Writer 0 also flushes now and then: kills land in flushes too.
                    if producer == 0 && sequence % 4 == 3 && stream.flush().await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let code = error.code().to_owned();
                    assert!(
                        !matches!(code.as_str(), "invalid" | "permission" | "not_found"),
                        "{error}"
                    );
                    return;
                }
            }
        }
    });
}

/// Rows per (producer, sequence) as the server answers now.
fn rows_by_key(address: &str) -> BTreeMap<(i64, i64), i64> {
    futures::executor::block_on(async {
        let client = Client::connect(address).await.unwrap();
        let session = client.login(&token(Role::Reader)).await.unwrap();
        let output = session
            .query_collect("SELECT producer, seq, COUNT(*) FROM crash GROUP BY producer, seq")
            .await
            .unwrap();
        let mut counts = BTreeMap::new();
        for batch in &output.batches {
            let column = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone()
            };
            let (producers, sequences, rows) = (column(0), column(1), column(2));
            for i in 0..batch.num_rows() {
                counts.insert((producers.value(i), sequences.value(i)), rows.value(i));
            }
        }
        counts
    })
}

/// A small deterministic generator for the kill delays.
fn next_random(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn every_acknowledged_batch_survives_kill_9_exactly_once() {
    let iterations: usize = std::env::var("TESSERA_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    // `TESSERA_CRASH_DIR` keeps the data (and the servers' logs) for a look after a failure.
    let root = std::env::var_os("TESSERA_CRASH_DIR").map_or(dir.path().to_owned(), Into::into);
    let data = root.join("data");
    let secret = root.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let first = batch(-1, 0);
    let mut writer = TableWriter::open(
        &data,
        "acme",
        "crash",
        &first.schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    writer.write(&first).unwrap();
    writer.finish().unwrap();

    let writers: Vec<Arc<Mutex<WriterState>>> = (0..WRITERS)
        .map(|_| Arc::new(Mutex::new(WriterState::default())))
        .collect();
    let mut seed = 0x5eed_u64;
    let mut server = serve(&data, &secret);
    for iteration in 0..iterations {
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(producer, state)| {
                let (address, state, stop) = (server.address.clone(), state.clone(), stop.clone());
                std::thread::spawn(move || {
                    write_until_killed(&address, producer as i64, &state, &stop)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + next_random(&mut seed) % 400));
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("a writer failed");
        }
        drop(server);
        server = serve(&data, &secret);
        let counts = rows_by_key(&server.address);
        let mut expected_rows = ROWS as i64; // the seed batch
        for (producer, state) in writers.iter().enumerate() {
            let state = state.lock().unwrap();
            for &sequence in &state.acknowledged {
                let found = counts.get(&(producer as i64, sequence as i64)).copied();
                assert_eq!(
                    found,
                    Some(ROWS as i64),
                    "iteration {iteration}: acknowledged batch {sequence} of writer {producer}"
                );
            }
            expected_rows += state.acknowledged.len() as i64 * ROWS as i64;
            if let Some(sequence) = state.in_flight {
                if counts.contains_key(&(producer as i64, sequence as i64)) {
                    expected_rows += ROWS as i64;
                }
            }
        }
        for ((producer, sequence), rows) in &counts {
            assert_eq!(
                *rows, ROWS as i64,
                "iteration {iteration}: batch {sequence} of writer {producer} has {rows} rows"
            );
        }
        let total: i64 = counts.values().sum();
        assert_eq!(
            total, expected_rows,
            "iteration {iteration}: unexpected batches"
        );
    }
    let acknowledged: usize = writers
        .iter()
        .map(|w| w.lock().unwrap().acknowledged.len())
        .sum();
    eprintln!(
        "{acknowledged} batches acknowledged across {iterations} kills, each found exactly once"
    );
    assert!(
        acknowledged >= iterations,
        "too few batches were acknowledged ({acknowledged}) for the test to mean much"
    );
}
