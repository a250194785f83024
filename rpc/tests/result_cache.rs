//! The shared final-result cache against a real Redis (Debian's `redis-server`, started here on
//! a free port): a repeated query, however it is spaced or cased, is answered from Redis without
//! scanning; an acknowledged ingest batch and its flush each give the data a new version, so the
//! next answer includes the batch and is never an older stored result; with Redis gone, queries
//! still answer and the failure is counted. Short queries (point lookups) are not cached.

mod common;

use arrow_array::{Array, Float64Array, Int64Array, StringArray};
use common::{block_on, get, sample, start_with_result_cache, token};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tessera_rpc::auth::Role;
use tessera_rpc::client::Session;
use tessera_rpc::{Client, QueryOutput};
use tessera_storage_engine::gen::events_chunk;

/// A `redis-server` of our own, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install Debian's redis-server (.ci/run does)"
                )
            });
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut connection = client.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut connection).ok()?;
        Some(connection)
    }

    fn keys(&self) -> Vec<String> {
        let mut connection = self.connection().unwrap();
        redis::cmd("KEYS")
            .arg("tessera:result:*")
            .query(&mut connection)
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Enough rows that the query is no short one (those are not cached).
const ROWS: u64 = 300_000;

const QUERY: &str =
    "SELECT category, SUM(amount), COUNT(*) FROM events GROUP BY category ORDER BY category";

/// (category, sum, count) rows of a QUERY result.
fn rows(output: &QueryOutput) -> Vec<(String, f64, i64)> {
    let mut out = Vec::new();
    for batch in &output.batches {
        let names = batch.column(0).as_any().downcast_ref::<StringArray>();
        let sums = batch.column(1).as_any().downcast_ref::<Float64Array>();
        let counts = batch.column(2).as_any().downcast_ref::<Int64Array>();
        let (names, sums, counts) = (names.unwrap(), sums.unwrap(), counts.unwrap());
        for i in 0..batch.num_rows() {
            out.push((names.value(i).to_owned(), sums.value(i), counts.value(i)));
        }
    }
    out
}

fn total(output: &QueryOutput) -> i64 {
    rows(output).iter().map(|(_, _, count)| count).sum()
}

/// The first `Some` `probe` gives within 10 s.
fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn session(address: &str, role: Role) -> Session {
    let client = Client::connect(address).await.unwrap();
    client.login(&token(Some("acme"), role)).await.unwrap()
}

#[test]
fn results_come_from_redis_until_the_data_changes() {
    let redis = Redis::start();
    let server = start_with_result_cache(ROWS, &redis.url());
    let address = server.address();
    let http = server.server.http_address().unwrap();
    block_on(async {
        let reader = session(&address, Role::Reader).await;
        let first = reader.query_collect(QUERY).await.unwrap();
        assert!(first.stats.scan.bytes_scanned > 0);
        assert_eq!(total(&first), ROWS as i64);
        // Stored after the client has its result: wait for it.
        let keys = eventually(|| Some(redis.keys()).filter(|k| !k.is_empty()));
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].starts_with("tessera:result:v1:acme:"), "{keys:?}");

        // The same query, spaced and cased otherwise: from Redis, nothing scanned.
        let again = reader
            .query_collect(&QUERY.to_lowercase().replace(", ", " ,  "))
            .await
            .unwrap();
        assert_eq!(rows(&again), rows(&first));
        assert_eq!(again.stats.scan.bytes_scanned, 0);
        assert_eq!(again.stats.scan.rows_scanned, 0);
        assert_eq!(again.stats.rows_returned, first.stats.rows_returned);

        // An acknowledged batch changes the data's version: the next answer includes it.
        let writer = session(&address, Role::Writer).await;
        let mut stream = writer.ingest_stream("events", "loader").await.unwrap();
        let ack = stream
            .append(0, &events_chunk(100_000, 1000, 1000, 3))
            .await
            .unwrap();
        assert!(ack.durable);
        let after_ingest = reader.query_collect(QUERY).await.unwrap();
        assert_eq!(total(&after_ingest), ROWS as i64 + 1000);
        assert!(after_ingest.stats.scan.rows_scanned > 0);
        // ... and is itself stored: asked again, from Redis.
        eventually(|| (redis.keys().len() == 2).then_some(()));
        let repeated = reader.query_collect(QUERY).await.unwrap();
        assert_eq!(rows(&repeated), rows(&after_ingest));
        assert_eq!(repeated.stats.scan.rows_scanned, 0);

        // A flush moves the rows into a file: a new manifest version, the same rows.
        stream.flush().await.unwrap();
        let after_flush = reader.query_collect(QUERY).await.unwrap();
        assert_eq!(total(&after_flush), ROWS as i64 + 1000);
        assert!(after_flush.stats.scan.rows_scanned > 0);
        eventually(|| (redis.keys().len() == 3).then_some(()));
        // A point lookup is a short query: run, not cached.
        let point = reader
            .query_collect("SELECT id FROM events WHERE id = 5")
            .await
            .unwrap();
        assert_eq!(point.num_rows(), 1);

        let metrics = eventually(|| {
            let (_, metrics) = get(http, "/metrics");
            (sample(&metrics, "tessera_result_cache_stores_total") == 3.0).then_some(metrics)
        });
        assert_eq!(sample(&metrics, "tessera_result_cache_hits_total"), 2.0);
        assert_eq!(sample(&metrics, "tessera_result_cache_misses_total"), 3.0);
        assert_eq!(sample(&metrics, "tessera_result_cache_stores_total"), 3.0);
        assert_eq!(sample(&metrics, "tessera_result_cache_errors_total"), 0.0);
    });

    // Redis gone: queries answer as without it, and the failure is counted.
    drop(redis);
    block_on(async {
        let reader = session(&address, Role::Reader).await;
        let output = reader.query_collect(QUERY).await.unwrap();
        assert_eq!(total(&output), ROWS as i64 + 1000);
    });
    let (_, metrics) = get(http, "/metrics");
    assert!(sample(&metrics, "tessera_result_cache_errors_total") >= 1.0);
}
