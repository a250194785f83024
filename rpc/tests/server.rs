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
                    .name(),
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
        let summary = admin.import("copy", batches.clone()).await.unwrap();
        assert_eq!(summary.rows, 70_000);
        let count = admin
            .query_collect("SELECT COUNT(*), SUM(amount) FROM copy")
            .await
            .unwrap();
        assert_eq!(count.batches[0].num_rows(), 1);
        assert_eq!(
            count.batches[0].column(0).as_ref(),
            &arrow_array::Int64Array::from(vec![70_000]) as &dyn arrow_array::Array
        );
        // The sum computed directly from the rows sent (summed in another order: a tolerance).
        let index = batches[0].schema().index_of("amount").unwrap();
        let expected: f64 = batches
            .iter()
            .flat_map(|b| {
                b.column(index)
                    .as_primitive::<Float64Type>()
                    .iter()
                    .flatten()
            })
            .sum();
        let served = count.batches[0]
            .column(1)
            .as_primitive::<Float64Type>()
            .value(0);
        assert!(
            (served - expected).abs() <= 1e-9 * expected.abs(),
            "SUM(amount) over RPC {served}, computed {expected}"
        );
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

/// `rows` rows on one day with every `v` equal to `value`: tables of different values have files
/// of the same path, id and size, the exact case where stale cache entries used to answer.
fn constant_table(rows: usize, value: i64) -> Vec<RecordBatch> {
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]));
    let day = 1_704_067_200_000_000i64;
    let ts = arrow_array::TimestampMicrosecondArray::from(
        (0..rows as i64).map(|i| day + i).collect::<Vec<_>>(),
    );
    let v = arrow_array::Int64Array::from(vec![value; rows]);
    vec![RecordBatch::try_new(
        schema,
        vec![std::sync::Arc::new(ts), std::sync::Arc::new(v)],
    )
    .unwrap()]
}

/// Creates table `t` of `constant_table`'s shape and imports `rows` rows of `value`.
async fn create_constant_table(session: &tessera_rpc::client::Session, rows: usize, value: i64) {
    let column = |name: &str, column_type: &str| ColumnInfo {
        name: name.into(),
        column_type: column_type.into(),
        nullable: false,
    };
    session
        .create_table(TableSpec {
            name: "t".into(),
            columns: vec![column("ts", "timestamp"), column("v", "int64")],
            ..Default::default()
        })
        .await
        .unwrap();
    session
        .import("t", constant_table(rows, value))
        .await
        .unwrap();
}

async fn sum_v(session: &tessera_rpc::client::Session) -> i64 {
    let output = session.query_collect("SELECT SUM(v) FROM t").await.unwrap();
    output.batches[0]
        .column(0)
        .as_primitive::<arrow_array::types::Int64Type>()
        .value(0)
}

#[test]
fn dropped_and_recreated_tables_and_tenants_serve_only_new_rows() {
    let server = start(1_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let operator = client
            .operator_login(&token(None, Role::Operator))
            .await
            .unwrap();
        operator.create_tenant("beta").await.unwrap();
        let admin = client
            .login(&token(Some("beta"), Role::Admin))
            .await
            .unwrap();
        create_constant_table(&admin, 10_000, 1).await;
        for _ in 0..4 {
            assert_eq!(sum_v(&admin).await, 10_000);
        }
        let pages = |server: &common::TestServer| -> u64 {
            server
                .engine()
                .pool_counters()
                .iter()
                .map(|c| c.pages)
                .sum()
        };
        assert!(pages(&server) > 0);
        assert!(admin.drop_table("t").await.unwrap());
        assert_eq!(
            pages(&server),
            0,
            "a dropped table's pages leave every core's pool"
        );
        create_constant_table(&admin, 10_000, 2).await;
        for _ in 0..4 {
            assert_eq!(sum_v(&admin).await, 20_000);
        }

        // The same through a tenant drop: the admin's capability still names tenant beta.
        assert!(operator.drop_tenant("beta").await.unwrap());
        assert_eq!(
            pages(&server),
            0,
            "a dropped tenant's pages leave every core's pool"
        );
        operator.create_tenant("beta").await.unwrap();
        create_constant_table(&admin, 10_000, 3).await;
        for _ in 0..4 {
            assert_eq!(sum_v(&admin).await, 30_000);
        }
    });
}

#[test]
fn decimal_and_binary_columns_are_created_imported_and_served_as_arrow_types() {
    use arrow_array::{ArrayRef, BinaryArray, Decimal128Array, TimestampMicrosecondArray};
    use arrow_schema::DataType;
    use std::sync::Arc;
    let server = start(1_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client
            .login(&token(Some("acme"), Role::Admin))
            .await
            .unwrap();
        let column = |name: &str, column_type: &str| ColumnInfo {
            name: name.into(),
            column_type: column_type.into(),
            nullable: true,
        };
        let created = admin
            .create_table(TableSpec {
                name: "orders".into(),
                columns: vec![
                    column("ts", "timestamp"),
                    column("price", "decimal(15,2)"),
                    column("payload", "binary"),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        let types: Vec<&str> = created
            .columns
            .iter()
            .map(|c| c.column_type.as_str())
            .collect();
        assert_eq!(types, ["timestamp", "decimal(15,2)", "binary"]);
        let day = 1_704_067_200_000_000i64;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![day, day + 1, day + 2])) as ArrayRef,
            ),
            (
                "price",
                Arc::new(
                    Decimal128Array::from(vec![Some(10_050), Some(-25), None])
                        .with_precision_and_scale(15, 2)
                        .unwrap(),
                ),
            ),
            (
                "payload",
                Arc::new(BinaryArray::from(vec![
                    Some(&b"\x01"[..]),
                    None,
                    Some(b"ab"),
                ])),
            ),
        ])
        .unwrap();
        assert_eq!(admin.import("orders", vec![batch]).await.unwrap().rows, 3);
        for sql in [
            "SELECT SUM(price), AVG(price), MAX(price) FROM orders",
            "SELECT payload, price FROM orders WHERE payload = X'6162' OR price > 100.495 ORDER BY price",
        ] {
            let remote = admin.query_collect(sql).await.unwrap();
            let local = server.engine().sql("acme", sql).unwrap();
            assert_eq!(remote.schema.fields(), local.schema.fields(), "{sql}");
            assert_same(&remote.batches, &local.batches, sql);
        }
        let sums = admin
            .query_collect("SELECT SUM(price), AVG(price) FROM orders")
            .await
            .unwrap();
        let batch = &sums.batches[0];
        assert_eq!(batch.column(0).data_type(), &DataType::Decimal128(38, 2));
        assert_eq!(batch.column(1).data_type(), &DataType::Decimal128(38, 6));
        let value = |i: usize| {
            batch
                .column(i)
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .value(0)
        };
        // 100.50 - 0.25 = 100.25; its average over 2 values is 50.125000.
        assert_eq!((value(0), value(1)), (10_025, 50_125_000));
    });
}
