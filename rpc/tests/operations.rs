//! What an operator relies on: the `query_stats` table (a tenant's own recent queries, bounded),
//! the node's status, a drain that refuses new work and flushes buffered rows, and a reload of
//! keys and limits while the node serves.

mod common;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use common::{block_on, default_limits, start, token};
use std::time::Duration;
use tessera_rpc::auth::{self, AuthConfig, KeyKind, KeySpec, Role, TokenRequest};
use tessera_rpc::client::Session;
use tessera_rpc::{Client, Limits};
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::manifest;

async fn login(address: &str, tenant: &str, role: Role) -> Session {
    let client = Client::connect(address).await.unwrap();
    client.login(&token(Some(tenant), role)).await.unwrap()
}

async fn rows(session: &Session, sql: &str) -> RecordBatch {
    let output = session
        .query_collect(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    arrow_select::concat::concat_batches(&output.schema, &output.batches).unwrap()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let array = batch.column_by_name(column).unwrap();
    let array = array.as_any().downcast_ref::<Int64Array>().unwrap();
    array.iter().map(|v| v.unwrap()).collect()
}

fn texts(batch: &RecordBatch, column: &str) -> Vec<String> {
    let array = batch.column_by_name(column).unwrap();
    let array = array.as_any().downcast_ref::<StringArray>().unwrap();
    array
        .iter()
        .map(|v| v.unwrap_or("NULL").to_owned())
        .collect()
}

/// Partition directories of a table on disk: the independent count of its partitions.
fn partitions_on_disk(dir: &std::path::Path) -> i64 {
    std::fs::read_dir(dir.join("acme").join("events"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains('=')
        })
        .count() as i64
}

#[test]
fn query_stats_holds_a_tenants_own_recent_queries() {
    let server = start(200_000, default_limits());
    let address = server.address();
    let partitions = partitions_on_disk(server.dir.path());
    assert!(partitions > 1, "the test table spans several days");
    block_on(async {
        let acme = login(&address, "acme", Role::Reader).await;
        let globex = login(&address, "globex", Role::Reader).await;
        rows(&acme, "SELECT COUNT(*) FROM events").await;
        let groups = rows(
            &acme,
            "SELECT category, SUM(amount) FROM events GROUP BY category",
        )
        .await
        .num_rows() as i64;
        // Before every row: every partition is pruned.
        rows(
            &acme,
            "SELECT COUNT(*) FROM events WHERE timestamp < '1971-01-01 00:00:00'",
        )
        .await;
        acme.query_collect("SELECT nope FROM events")
            .await
            .unwrap_err();
        rows(&globex, "SELECT COUNT(*) FROM secrets").await;

        // The spec's troubleshooting query, verbatim.
        let slow = rows(
            &acme,
            "SELECT query_id, partitions_scanned, partitions_pruned FROM query_stats WHERE execution_time > 30",
        )
        .await;
        assert_eq!(slow.num_rows(), 0);
        assert_eq!(slow.num_columns(), 3);

        let all = rows(
            &acme,
            "SELECT sql, status, rows, partitions_scanned, partitions_pruned, files_scanned, tenant, error, execution_time \
             FROM query_stats ORDER BY started_at",
        )
        .await;
        // The troubleshooting query above is there too: a query is recorded once it ends.
        let sql = texts(&all, "sql");
        assert_eq!(sql.len(), 5, "{sql:?}");
        assert!(texts(&all, "tenant").iter().all(|t| t == "acme"));
        assert_eq!(
            texts(&all, "status"),
            ["ok", "ok", "ok", "sql", "ok"],
            "{sql:?}"
        );
        let errors = texts(&all, "error");
        assert!(errors[3].contains("nope"), "{errors:?}");
        assert_eq!(errors[0], "NULL");
        assert_eq!(ints(&all, "rows")[..3], [1, groups, 1]);
        let scanned = ints(&all, "partitions_scanned");
        let pruned = ints(&all, "partitions_pruned");
        assert_eq!((scanned[0], pruned[0]), (partitions, 0));
        assert_eq!((scanned[2], pruned[2]), (0, partitions));
        assert!(ints(&all, "files_scanned")[0] >= partitions);
        let times = all.column_by_name("execution_time").unwrap();
        let times = times.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(times.iter().all(|t| t.unwrap() > 0.0 && t.unwrap() < 30.0));

        // Filters, groups and limits work on it as on any table.
        let by_status = rows(
            &acme,
            "SELECT status, COUNT(*) AS n FROM query_stats GROUP BY status ORDER BY status",
        )
        .await;
        assert_eq!(texts(&by_status, "status"), ["ok", "sql"]);
        assert_eq!(ints(&by_status, "n"), [5, 1]);

        // globex sees its own queries only.
        let theirs = rows(&globex, "SELECT sql FROM query_stats").await;
        assert_eq!(texts(&theirs, "sql"), ["SELECT COUNT(*) FROM secrets"]);

        // It is read-only and reserved.
        let error = acme
            .query_collect("EXPLAIN SELECT * FROM query_stats")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "sql", "{error}");
    });
    let error = manifest::validate_name("table", "query_stats").unwrap_err();
    assert!(error.to_string().contains("system table"), "{error}");
}

#[test]
fn query_stats_keeps_at_most_its_capacity() {
    let limits = Limits {
        query_stats_capacity: 3,
        ..default_limits()
    };
    let server = start(1_000, limits);
    block_on(async {
        let acme = login(&server.address(), "acme", Role::Reader).await;
        for _ in 0..6 {
            rows(&acme, "SELECT COUNT(*) FROM events").await;
        }
        let kept = rows(&acme, "SELECT query_id FROM query_stats").await;
        assert_eq!(kept.num_rows(), 3);
        // The newest are kept: ids end in increasing sequence numbers 4, 5, 6.
        let ids: Vec<u64> = texts(&kept, "query_id")
            .iter()
            .map(|id| id.rsplit_once('-').unwrap().1.parse().unwrap())
            .collect();
        assert_eq!(ids, [4, 5, 6]);
    });
}

#[test]
fn node_status_reports_memory_disk_and_tables() {
    let server = start(50_000, default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let operator = client
            .operator_login(&token(None, Role::Operator))
            .await
            .unwrap();
        let acme = login(&server.address(), "acme", Role::Reader).await;
        rows(
            &acme,
            "SELECT category, SUM(amount) FROM events GROUP BY category",
        )
        .await;
        let status = operator.node_status().await.unwrap();
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(status.cores, 2);
        assert!(!status.draining);
        assert_eq!(status.memory_max_bytes, 8 << 30);
        assert!(status.resident_bytes > 0);
        let areas: Vec<&str> = status.memory.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            areas,
            [
                "query_processing",
                "parquet_cache",
                "metadata_cache",
                "partial_cache",
                "ingest_buffers"
            ]
        );
        let pool = &status.memory[1];
        assert_eq!(pool.budget_bytes, 256 << 20);
        assert!(pool.used_bytes > 0 && pool.used_bytes <= pool.budget_bytes);
        assert!(status.pool_misses > 0);
        assert!(status.disk_capacity_bytes >= status.disk_used_bytes);
        assert!(status.disk_used_bytes > 0);
        let events = status
            .tables
            .iter()
            .find(|t| t.tenant == "acme" && t.table == "events")
            .unwrap();
        let on_disk = manifest::load(server.dir.path(), "acme", "events")
            .unwrap()
            .unwrap();
        assert_eq!(events.rows, 50_000);
        assert_eq!(events.files, on_disk.files.len() as u64);
        assert_eq!(events.bytes, on_disk.total_bytes());
        assert!(status.tables.iter().any(|t| t.tenant == "globex"));
        // A tenant cannot ask.
        let tenant_login = client
            .operator_login(&token(Some("acme"), Role::Admin))
            .await;
        assert!(tenant_login.is_err());
    });
}

#[test]
fn a_drain_refuses_new_work_and_flushes_buffered_rows() {
    let server = start(10_000, default_limits());
    let address = server.address();
    let (writer, reader) = block_on(async {
        let writer = login(&address, "acme", Role::Writer).await;
        let reader = login(&address, "acme", Role::Reader).await;
        let mut stream = writer.ingest_stream("events", "p").await.unwrap();
        let ack = stream
            .append(1, &events_chunk(0, 500, 500, 1))
            .await
            .unwrap();
        assert!(ack.durable);
        (writer, reader)
    });
    let before = manifest::load(server.dir.path(), "acme", "events")
        .unwrap()
        .unwrap();
    let http = server.server.http_address().unwrap();
    assert_eq!(common::get(http, "/health").0, 200);
    let report = server.server.drain(Duration::from_secs(5));
    assert_eq!(report.unfinished, 0);
    let (status, health) = common::get(http, "/health");
    assert_eq!(status, 503);
    assert!(health.contains("\"status\":\"draining\""), "{health}");
    assert!(report.flushed.unwrap() >= 1);
    // The buffered rows are in files now.
    let after = manifest::load(server.dir.path(), "acme", "events")
        .unwrap()
        .unwrap();
    let file_rows = |m: &manifest::TableManifest| m.files.iter().map(|f| f.rows).sum::<u64>();
    assert_eq!(file_rows(&after), file_rows(&before) + 500);
    block_on(async {
        // Open connections are told why; new ones are not taken.
        let error = reader
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "unavailable", "{error}");
        assert!(error.to_string().contains("stopping"), "{error}");
        let error = match writer.ingest_stream("events", "q").await {
            Err(error) => error,
            Ok(_) => panic!("a stopping node opened an ingest stream"),
        };
        assert_eq!(error.code(), "unavailable", "{error}");
        // Each core closes its listener within its next 50 ms check.
        let mut refused = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(&address).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(refused, "the listener still accepts connections");
    });
}

#[test]
fn a_reload_rotates_keys_and_changes_the_query_log() {
    let server = start(1_000, default_limits());
    let address = server.address();
    let new_secret = b"another secret that is long enough!!!";
    let new_token = auth::mint(
        &TokenRequest {
            subject: "test".into(),
            tenant: Some("acme".into()),
            role: Role::Reader,
            ttl_seconds: 3600,
            key_id: Some("k2".into()),
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
        KeyKind::Hs256,
        new_secret,
    )
    .unwrap();
    block_on(async {
        let client = Client::connect(&address).await.unwrap();
        assert!(client.login(&new_token).await.is_err());
    });
    let before = block_on(login(&address, "acme", Role::Reader));
    // The key replaced (a rotation's last step); a smaller query log.
    let auth = AuthConfig::new(vec![KeySpec {
        id: Some("k2".into()),
        kind: KeyKind::Hs256,
        material: new_secret.to_vec(),
    }]);
    let limits = Limits {
        query_stats_capacity: 1,
        ..default_limits()
    };
    server.server.reload(auth, &limits).unwrap();
    block_on(async {
        let client = Client::connect(&address).await.unwrap();
        let session = client.login(&new_token).await.unwrap();
        let error = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "unauthenticated", "{error}");
        // A session opened before keeps the capability its login gave it.
        for _ in 0..3 {
            rows(&before, "SELECT COUNT(*) FROM events").await;
        }
        let kept = rows(&session, "SELECT query_id FROM query_stats").await;
        assert_eq!(kept.num_rows(), 1);
    });
    // A bad key set is refused and the keys in force stay.
    let error = server
        .server
        .reload(
            AuthConfig::new(vec![KeySpec {
                id: None,
                kind: KeyKind::Hs256,
                material: b"short".to_vec(),
            }]),
            &limits,
        )
        .unwrap_err();
    assert!(error.to_string().contains("32"), "{error}");
    block_on(async {
        let client = Client::connect(&address).await.unwrap();
        client.login(&new_token).await.unwrap();
    });
}

#[test]
fn a_drain_waits_for_a_running_query_up_to_its_timeout() {
    use futures::StreamExt;
    let server = start(1_000_000, default_limits());
    let address = server.address();
    let reader = block_on(login(&address, "acme", Role::Reader));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Not read yet: flow control holds the query, which keeps its slot.
    let mut stream = runtime
        .block_on(reader.query("SELECT * FROM events"))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.server.metrics().queries_running.get() != 1 {
        assert!(std::time::Instant::now() < deadline, "the query never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::scope(|scope| {
        // A short drain gives up on it and says so.
        let report = server.server.drain(Duration::from_millis(300));
        assert_eq!(report.unfinished, 1);
        assert!(report.waited >= Duration::from_millis(300));
        // A longer one waits while the client reads the rest.
        let drain = scope.spawn(|| server.server.drain(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!drain.is_finished(), "the drain did not wait for the query");
        let rows = runtime.block_on(async {
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                rows += batch.unwrap().num_rows();
            }
            rows
        });
        assert_eq!(rows, 1_000_000, "the running query finishes whole");
        let report = drain.join().unwrap();
        assert_eq!(report.unfinished, 0);
        assert!(report.waited >= Duration::from_millis(200));
        assert!(report.waited < Duration::from_secs(60));
    });
}
