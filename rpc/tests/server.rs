//! End to end over loopback: a real server on two cores, the Rust client, results compared with
//! the embedded engine's.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::RecordBatch;
use common::{block_on, start, token};
use futures::StreamExt;
use tessera_rpc::auth::Role;
use tessera_rpc::client::{ColumnInfo, TableSpec};
use tessera_rpc::Client;

fn concat(batches: &[RecordBatch]) -> Option<RecordBatch> {
    let first = batches.first()?;
    Some(arrow_select::concat::concat_batches(&first.schema(), batches).unwrap())
}

/// Equal batches, except that floats may differ in the last bits (sums merge in any order).
fn assert_same(remote: &[RecordBatch], local: &[RecordBatch], sql: &str) {
    let rows = |batches: &[RecordBatch]| batches.iter().map(|b| b.num_rows()).sum::<usize>();
    if rows(remote) == 0 || rows(local) == 0 {
        assert_eq!(rows(remote), rows(local), "{sql}");
        return;
    }
    let (Some(remote), Some(local)) = (concat(remote), concat(local)) else {
        unreachable!("both have rows");
    };
    assert_eq!(remote.num_rows(), local.num_rows(), "{sql}");
    for (a, b) in remote.columns().iter().zip(local.columns()) {
        match (
            a.as_primitive_opt::<Float64Type>(),
            b.as_primitive_opt::<Float64Type>(),
        ) {
            (Some(a), Some(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    let (x, y) = (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN));
                    assert!(
                        (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                        "{sql}: {x} != {y}"
                    );
                }
            }
            _ => assert_eq!(a, b, "{sql}"),
        }
    }
}

#[test]
fn query_results_equal_embedded_mode() {
    let server = start(200_000, common::default_limits());
    let queries = [
        "SELECT * FROM events WHERE id = 4242",
        "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '2024-01-01' AND '2024-01-31 23:59:59'",
        "SELECT category, SUM(amount) FROM events GROUP BY category ORDER BY category",
        "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '2024-01-01' GROUP BY DATE(timestamp), category ORDER BY DATE(timestamp), category",
        "SELECT id, user_id, amount FROM events WHERE amount > 990 ORDER BY id LIMIT 100",
        "SELECT * FROM events WHERE id < 0",
    ];
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        for sql in queries {
            let remote = session.query_collect(sql).await.unwrap();
            let local = server.engine().sql("acme", sql).unwrap();
            assert_eq!(remote.schema.fields(), local.schema.fields(), "{sql}");
            assert_same(&remote.batches, &local.batches, sql);
            assert_eq!(
                remote.stats.rows_returned as usize,
                local.num_rows(),
                "{sql}"
            );
        }
        let (protocol, _) = client.version().await.unwrap();
        assert_eq!(protocol, tessera_schema::PROTOCOL_VERSION);
        let (tenant, role, _) = session.whoami().await.unwrap();
        assert_eq!((tenant.as_str(), role), ("acme", Role::Reader));
    });
}

#[test]
fn large_results_stream_in_many_messages() {
    let rows = 1_000_000;
    let server = start(rows, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let mut stream = session.query("SELECT * FROM events").await.unwrap();
        let (mut seen, mut batches) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            seen += batch.unwrap().num_rows();
            batches += 1;
        }
        assert_eq!(seen as u64, rows);
        let stats = stream.stats().unwrap();
        assert_eq!(stats.rows_returned, rows);
        assert!(
            batches > 10,
            "{batches} batches: results must be pushed in pieces"
        );
        assert!(stats.ipc_bytes > 64 << 20, "more than one message's worth");
    });
}

#[test]
fn tables_describe_explain_and_errors() {
    let server = start(50_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let tables = session.tables().await.unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].name, "events");
        assert_eq!(tables[0].rows, 50_000);
        let events = session.describe("events").await.unwrap();
        assert_eq!(events.time_column.as_deref(), Some("timestamp"));
        assert!(events.columns.iter().any(|c| c.name == "category"));
        let plan = session
            .explain("SELECT COUNT(*) FROM events WHERE id = 5")
            .await
            .unwrap();
        assert!(plan.contains("Pruning"), "{plan}");
        let error = session
            .query_collect("SELECT nope FROM events")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "sql", "{error}");
        assert!(error.to_string().contains("nope"), "{error}");
        let error = session.query_collect("SELEC 1").await.unwrap_err();
        assert_eq!(error.code(), "sql", "{error}");
        let error = session.describe("missing").await.unwrap_err();
        assert_eq!(error.code(), "not_found", "{error}");
        // The connection still serves after errors.
        let output = session
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
        assert_eq!(output.num_rows(), 1);
    });
}

#[test]
fn admin_creates_imports_and_drops_tables() {
    let server = start(10_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client
            .login(&token(Some("acme"), Role::Admin))
            .await
            .unwrap();
        let batches = common::events(70_000);
        let columns = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| ColumnInfo {
                name: f.name().clone(),
                column_type: tessera_storage_engine::value::ColumnType::from_arrow(f.data_type())
                    .unwrap()
                    .name()
                    .into(),
                nullable: f.is_nullable(),
            })
            .collect();
        let created = admin
            .create_table(TableSpec {
                name: "copy".into(),
                columns,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(created.rows, 0);
        let error = admin
            .create_table(TableSpec {
                name: "copy".into(),
                columns: created.columns.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
        let summary = admin.import("copy", batches).await.unwrap();
        assert_eq!(summary.rows, 70_000);
        let count = admin
            .query_collect("SELECT COUNT(*), SUM(amount) FROM copy")
            .await
            .unwrap();
        let local = server
            .engine()
            .sql("acme", "SELECT COUNT(*), SUM(amount) FROM events")
            .unwrap();
        assert_eq!(count.batches[0].num_rows(), 1);
        assert_eq!(
            count.batches[0].column(0).as_ref(),
            &arrow_array::Int64Array::from(vec![70_000]) as &dyn arrow_array::Array
        );
        drop(local);
        // A writer imports too; a reader may not.
        let writer = client
            .login(&token(Some("acme"), Role::Writer))
            .await
            .unwrap();
        let summary = writer.import("copy", common::events(1000)).await.unwrap();
        assert_eq!(summary.rows, 1000);
        let reader = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let error = reader.import("copy", common::events(10)).await.unwrap_err();
        assert_eq!(error.code(), "permission", "{error}");
        let error = reader.drop_table("copy").await.unwrap_err();
        assert_eq!(error.code(), "permission", "{error}");
        assert!(admin.drop_table("copy").await.unwrap());
        assert!(!admin.drop_table("copy").await.unwrap());
        let error = admin
            .query_collect("SELECT COUNT(*) FROM copy")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "not_found", "{error}");
    });
}
