//! What the schema promises a client, checked over RPC: `cancel` after a query finished,
//! expiry at login equal to expiry at calls, `createTable` validating its whole spec, and the
//! query counters meaning what the schema says.

mod common;

use common::{block_on, start, token, SECRET};
use tessera_rpc::auth::{self, KeyKind, Role, TokenRequest};
use tessera_rpc::client::{ColumnInfo, Compression, TableSpec};
use tessera_rpc::codes::ErrorCode;
use tessera_rpc::{Client, Session};

fn session(server: &common::TestServer, role: Role) -> (Client, Session) {
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client.login(&token(Some("acme"), role)).await.unwrap();
        (client, session)
    })
}

#[test]
fn cancel_after_a_query_finished_returns_false() {
    let server = start(1000, common::default_limits());
    let (_client, session) = session(&server, Role::Reader);
    block_on(async {
        for tag in 1..=50u64 {
            let mut stream = session
                .query_tagged("SELECT COUNT(*) FROM events", tag)
                .await
                .unwrap();
            use futures::StreamExt;
            while let Some(batch) = stream.next().await {
                batch.unwrap();
            }
        }
        // A query that failed is unregistered too.
        let mut failed = session
            .query_tagged("SELECT * FROM nowhere", 99)
            .await
            .unwrap();
        use futures::StreamExt;
        while let Some(item) = failed.next().await {
            if item.is_err() {
                break;
            }
        }
        for tag in (1..=50u64).chain([99]) {
            assert!(
                !session.cancel(tag).await.unwrap(),
                "tag {tag}: the query finished, so nothing runs under it"
            );
        }
    });
}

fn token_with_ttl(ttl_seconds: i64) -> String {
    auth::mint(
        &TokenRequest {
            subject: "test".into(),
            tenant: Some("acme".into()),
            role: Role::Reader,
            ttl_seconds,
            key_id: None,
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
        KeyKind::Hs256,
        SECRET,
    )
    .unwrap()
}

#[test]
fn login_refuses_a_token_the_capability_would_refuse() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        // Expired five seconds ago: inside the nbf clock-skew leeway, but past exp.
        let error = client.login(&token_with_ttl(-5)).await.unwrap_err();
        assert_eq!(error.code(), "unauthenticated", "{error}");
        assert_eq!(error.error_code(), Some(ErrorCode::Unauthenticated));
        assert!(error.to_string().contains("expired"), "{error}");
        // A live token logs in and its capability answers.
        let session = client.login(&token_with_ttl(600)).await.unwrap();
        session.tables().await.unwrap();
    });
}

fn column(name: &str, column_type: &str) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        column_type: column_type.into(),
        nullable: true,
    }
}

fn spec(name: &str, columns: Vec<ColumnInfo>, time_column: Option<&str>) -> TableSpec {
    TableSpec {
        name: name.into(),
        columns,
        time_column: time_column.map(str::to_owned),
        partition_by: Vec::new(),
        compression: Compression::Snappy,
    }
}

#[test]
fn create_table_refuses_a_bad_spec_and_leaves_nothing_on_disk() {
    let server = start(1000, common::default_limits());
    let (_client, session) = session(&server, Role::Admin);
    let good = || vec![column("ts", "timestamp"), column("n", "int64")];
    let cases: Vec<(TableSpec, &str)> = vec![
        (
            spec("t1", good(), Some("n")),
            "time column n is int64, not timestamp",
        ),
        (
            spec("t2", good(), Some("missing")),
            "time column missing is not a column",
        ),
        (
            spec(
                "t3",
                vec![column("ts", "timestamp"), column("", "int64")],
                None,
            ),
            "column 2: empty name",
        ),
        (
            spec(
                "t4",
                vec![column("ts", "timestamp"), column("TS", "int64")],
                None,
            ),
            "column ts appears twice",
        ),
        (
            spec(
                "t5",
                vec![column("ts", "timestamp"), column("a/b", "int64")],
                None,
            ),
            "column \"a/b\"",
        ),
        (
            TableSpec {
                partition_by: vec!["region".into()],
                ..spec("t6", good(), None)
            },
            "partition column region is not a column",
        ),
        (
            spec(
                "t7",
                vec![column("ts", "timestamp"), column("x", "int128")],
                None,
            ),
            "unknown type \"int128\"",
        ),
        (spec("t8", Vec::new(), None), "at least one column"),
        (spec("x/y", good(), None), "table name \"x/y\""),
        (spec("", good(), None), "table name \"\""),
    ];
    block_on(async {
        for (spec, expected) in cases {
            let name = spec.name.clone();
            let error = session.create_table(spec).await.unwrap_err();
            assert_eq!(
                error.error_code(),
                Some(ErrorCode::Invalid),
                "{name}: {error}"
            );
            assert!(
                error.to_string().contains(expected),
                "{name}: {error:?} should contain {expected:?}"
            );
        }
        assert!(session
            .tables()
            .await
            .unwrap()
            .iter()
            .all(|t| t.name == "events"));
    });
    let tenant_dir = server.dir.path().join("acme");
    let mut left: Vec<String> = std::fs::read_dir(&tenant_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["events".to_string()], "nothing left on disk");
    // A good spec still works, and a second create of the same name fails without touching it.
    block_on(async {
        let table = session
            .create_table(spec("fine", good(), Some("ts")))
            .await
            .unwrap();
        assert_eq!(table.time_column.as_deref(), Some("ts"));
        let error = session
            .create_table(spec("fine", good(), Some("ts")))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
    });
}

#[test]
fn pages_total_counts_pages_of_unfiltered_scans() {
    let server = start(200_000, common::default_limits());
    let (_client, session) = session(&server, Role::Reader);
    block_on(async {
        let output = session
            .query_collect("SELECT SUM(amount) FROM events")
            .await
            .unwrap();
        let stats = output.stats.scan;
        assert!(stats.pool_misses + stats.pool_hits > 0, "{stats:?}");
        assert!(
            stats.pages_total >= stats.pool_misses + stats.pool_hits,
            "every page decoded or served lies in an opened row group: {stats:?}"
        );
        assert_eq!(stats.pages_pruned, 0, "{stats:?}");
    });
}

#[test]
fn server_errors_reach_the_client_as_typed_codes() {
    let server = start(1000, common::default_limits());
    let (client, reader) = session(&server, Role::Reader);
    block_on(async {
        let sql = reader.query_collect("SELEC nonsense").await.unwrap_err();
        assert_eq!(sql.error_code(), Some(ErrorCode::Sql), "{sql}");
        let missing = reader.describe("nowhere").await.unwrap_err();
        assert_eq!(missing.error_code(), Some(ErrorCode::NotFound), "{missing}");
        let role = reader.drop_table("events").await.unwrap_err();
        assert_eq!(role.error_code(), Some(ErrorCode::Permission), "{role}");
        let refused = client.login("not a token").await.unwrap_err();
        assert_eq!(
            refused.error_code(),
            Some(ErrorCode::Unauthenticated),
            "{refused}"
        );
    });
}
