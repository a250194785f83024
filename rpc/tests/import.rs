//! Imports over RPC: what is refused (values that do not fit, NULLs in NOT NULL columns, bytes
//! that are not a whole Arrow IPC stream, expired tokens) commits nothing; a slow uploader does
//! not hold up other imports; blocking work runs on a bounded number of threads.

mod common;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::writer::{FileWriter, StreamWriter};
use arrow_schema::{DataType, Field, Schema};
use common::{block_on, start, token};
use std::sync::Arc;
use std::time::Duration;
use tessera_rpc::auth::{self, KeyKind, Role, TokenRequest};
use tessera_rpc::client::{ClientError, ColumnInfo, Session, TableSpec};
use tessera_rpc::{Client, Limits};

fn column(name: &str, column_type: &str, nullable: bool) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        column_type: column_type.into(),
        nullable,
    }
}

/// `numbers (id int64 NOT NULL, label string)`, created over RPC.
async fn create_numbers(admin: &Session) {
    let info = admin
        .create_table(TableSpec {
            name: "numbers".into(),
            columns: vec![
                column("id", "int64", false),
                column("label", "string", true),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!info.columns[0].nullable);
}

fn numbers(ids: ArrayRef, labels: Vec<Option<&str>>) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", ids.data_type().clone(), true),
        Field::new("label", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![ids, Arc::new(StringArray::from(labels))],
    )
    .unwrap()
}

fn good_rows(first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let labels: Vec<Option<&str>> = ids.iter().map(|_| Some("ok")).collect();
    numbers(Arc::new(Int64Array::from(ids)), labels)
}

async fn rows_of(session: &Session, table: &str) -> u64 {
    session.describe(table).await.unwrap().rows
}

fn admin_token() -> String {
    token(Some("acme"), Role::Admin)
}

fn assert_invalid(error: &ClientError, words: &str) {
    assert_eq!(error.code(), "invalid", "{error}");
    assert!(
        error.to_string().to_lowercase().contains(words),
        "error does not say {words:?}: {error}"
    );
}

#[test]
fn uint64_above_i64_max_is_refused_naming_column_and_row() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        // One stream holds one schema: both batches are UInt64 (which fits int64 until 2^63).
        let first = UInt64Array::from(vec![10, 11, 12, 13]);
        let first = numbers(Arc::new(first), vec![Some("a"); 4]);
        let ids = UInt64Array::from(vec![1, 2, (1u64 << 63) + 5]);
        let batch = numbers(Arc::new(ids), vec![Some("a"), Some("b"), Some("c")]);
        let error = admin
            .import("numbers", vec![first, batch])
            .await
            .unwrap_err();
        assert_invalid(&error, "column id, row 7");
        assert!(error.to_string().contains("9223372036854775813"), "{error}");
        assert_eq!(rows_of(&admin, "numbers").await, 0);
        let result = admin
            .query_collect("SELECT COUNT(*) FROM numbers WHERE id IS NULL")
            .await
            .unwrap();
        assert_eq!(
            result.batches[0].column(0).as_ref(),
            &Int64Array::from(vec![0]) as &dyn arrow_array::Array
        );
    });
}

#[test]
fn null_in_not_null_column_is_refused_naming_column_and_row() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        let ids = Int64Array::from(vec![Some(1), None]);
        let batch = numbers(Arc::new(ids), vec![Some("a"), None]);
        let error = admin.import("numbers", vec![batch]).await.unwrap_err();
        assert_invalid(&error, "column id, row 2");
        assert!(error.to_string().contains("NOT NULL"), "{error}");
        assert_eq!(rows_of(&admin, "numbers").await, 0);
        // NULLs in the nullable column are fine.
        let ids = Int64Array::from(vec![1, 2]);
        let batch = numbers(Arc::new(ids), vec![Some("a"), None]);
        assert_eq!(admin.import("numbers", vec![batch]).await.unwrap().rows, 2);
    });
}

/// An Arrow IPC stream of `batches`, with or without its end-of-stream marker.
fn ipc_stream(batches: &[RecordBatch], end: bool) -> (Vec<u8>, Vec<usize>) {
    let mut writer = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
    let mut boundaries = vec![writer.get_ref().len()];
    for batch in batches {
        writer.write(batch).unwrap();
        boundaries.push(writer.get_ref().len());
    }
    if end {
        writer.finish().unwrap();
    }
    // `into_inner` would add the end-of-stream marker.
    (writer.get_ref().clone(), boundaries)
}

/// Sends `chunks` as raw writes, then commits; returns the first error.
async fn raw_import(session: &Session, chunks: Vec<Vec<u8>>) -> ClientError {
    let mut writer = session.import_writer("numbers").await.unwrap();
    for chunk in chunks {
        if let Err(e) = writer.write_ipc(chunk).await {
            return e;
        }
    }
    match writer.commit().await {
        Ok(summary) => panic!("committed {} rows", summary.rows),
        Err(e) => e,
    }
}

#[test]
fn bytes_that_are_not_an_ipc_stream_are_refused() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;

        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let error = raw_import(&admin, vec![random]).await;
        assert_invalid(&error, "continuation");

        let parquet_dir = tempfile::tempdir().unwrap();
        let files = tessera_storage_engine::gen::write_events(
            &parquet_dir.path().join("events.parquet"),
            1000,
            1,
            1,
            &mut |_| {},
        )
        .unwrap();
        let parquet = std::fs::read(&files[0]).unwrap();
        let error = raw_import(&admin, vec![parquet]).await;
        assert_invalid(&error, "parquet");

        let mut file = FileWriter::try_new(Vec::new(), &good_rows(0, 1).schema()).unwrap();
        file.write(&good_rows(0, 100)).unwrap();
        file.finish().unwrap();
        let error = raw_import(&admin, vec![file.into_inner().unwrap()]).await;
        assert_invalid(&error, "file format");

        assert_eq!(rows_of(&admin, "numbers").await, 0);
    });
}

#[test]
fn stream_cut_inside_a_message_or_without_end_marker_commits_nothing() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        let batches: Vec<RecordBatch> = (0..5).map(|i| good_rows(i * 1000, 1000)).collect();

        // Cut in the middle of the fifth batch: 4,000 whole rows before the cut.
        let (bytes, boundaries) = ipc_stream(&batches, true);
        let cut = (boundaries[4] + boundaries[5]) / 2;
        let error = raw_import(&admin, vec![bytes[..cut].to_vec()]).await;
        assert_invalid(&error, "truncated");

        // Whole messages, but no end-of-stream marker.
        let (bytes, _) = ipc_stream(&batches, false);
        let error = raw_import(&admin, vec![bytes]).await;
        assert_invalid(&error, "end-of-stream");

        // The same stream whole (split across writes anywhere) commits all 5,000 rows.
        let (bytes, _) = ipc_stream(&batches, true);
        let (head, tail) = bytes.split_at(cut);
        let mut writer = admin.import_writer("numbers").await.unwrap();
        writer.write_ipc(head.to_vec()).await.unwrap();
        writer.write_ipc(tail.to_vec()).await.unwrap();
        assert_eq!(writer.commit().await.unwrap().rows, 5000);
        assert_eq!(rows_of(&admin, "numbers").await, 5000);
    });
}

#[test]
fn stream_with_another_schema_is_refused() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        let labels = StringArray::from(vec!["1", "2"]);
        let batch = numbers(Arc::new(labels), vec![Some("a"), Some("b")]);
        let (bytes, _) = ipc_stream(&[batch], true);
        let error = raw_import(&admin, vec![bytes]).await;
        assert_invalid(&error, "schema mismatch");
        assert!(error.to_string().contains("id"), "{error}");
        assert_eq!(rows_of(&admin, "numbers").await, 0);
    });
}

fn token_expiring_in(seconds: i64) -> String {
    auth::mint(
        &TokenRequest {
            subject: "test".into(),
            tenant: Some("acme".into()),
            role: Role::Writer,
            ttl_seconds: seconds,
            key_id: None,
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
        KeyKind::Hs256,
        common::SECRET,
    )
    .unwrap()
}

#[test]
fn token_expiring_mid_import_is_refused_at_the_next_call() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        let writer_session = client.login(&token_expiring_in(2)).await.unwrap();
        let (_, _, expires_at) = writer_session.whoami().await.unwrap();
        let mut writer = writer_session.import_writer("numbers").await.unwrap();
        writer.write(&good_rows(0, 10)).await.unwrap();
        while auth::now_seconds() <= expires_at {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let error = match writer.write(&good_rows(10, 10)).await {
            Err(e) => e,
            Ok(()) => writer.commit().await.unwrap_err(),
        };
        assert_eq!(error.code(), "unauthenticated", "{error}");
        assert!(error.to_string().contains("expired"), "{error}");
        assert_eq!(rows_of(&admin, "numbers").await, 0);
    });
}

#[test]
fn slow_uploader_does_not_block_another_import_of_the_table() {
    let server = start(1000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        let mut slow = admin.import_writer("numbers").await.unwrap();
        slow.write(&good_rows(0, 100)).await.unwrap();
        // The slow uploader pauses here; another import commits meanwhile.
        let other = Client::connect(&server.address()).await.unwrap();
        let fast = other.login(&admin_token()).await.unwrap();
        let committed = tokio::time::timeout(
            Duration::from_secs(120),
            fast.import("numbers", vec![good_rows(1000, 10)]),
        )
        .await
        .expect("the second import waited for the first one's commit")
        .unwrap();
        assert_eq!(committed.rows, 10);
        assert_eq!(rows_of(&admin, "numbers").await, 10);
        slow.write(&good_rows(100, 100)).await.unwrap();
        assert_eq!(slow.commit().await.unwrap().rows, 200);
        assert_eq!(rows_of(&admin, "numbers").await, 210);
    });
}

/// Threads of this process doing the server's blocking work (named `tessera-blocking`, or
/// `tessera-import` for a per-import worker; the kernel keeps 15 bytes of a name). Other tests
/// run servers in this process too, so all threads would not do.
fn work_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|name| {
                name.starts_with("tessera-blockin") || name.starts_with("tessera-import")
            })
        })
        .count()
}

#[test]
fn open_imports_do_not_hold_a_thread_each() {
    const IMPORTS: usize = 20;
    let limits = Limits {
        blocking_threads_max: 2,
        ..common::default_limits()
    };
    let server = start(1000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        create_numbers(&admin).await;
        let before = work_threads();
        let mut writers = Vec::new();
        for i in 0..IMPORTS {
            let mut writer = admin.import_writer("numbers").await.unwrap();
            writer.write(&good_rows(i as i64 * 10, 10)).await.unwrap();
            writers.push(writer);
        }
        let during = work_threads();
        // Work threads exist only while working (at most 2 at once): a thread that has just
        // finished may still be exiting, hence the slack; a thread per open import is 20.
        assert!(
            during < before + IMPORTS / 2,
            "{IMPORTS} open imports took {} threads",
            during.saturating_sub(before)
        );
        for writer in writers {
            assert_eq!(writer.commit().await.unwrap().rows, 10);
        }
        assert_eq!(rows_of(&admin, "numbers").await, IMPORTS as u64 * 10);
    });
}

#[test]
fn blocking_work_beyond_the_bound_is_refused_overloaded() {
    let limits = Limits {
        blocking_threads_max: 0,
        admission_wait: Duration::from_millis(50),
        ..common::default_limits()
    };
    let server = start(1000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let admin = client.login(&admin_token()).await.unwrap();
        let error = admin
            .create_table(TableSpec {
                name: "numbers".into(),
                columns: vec![column("id", "int64", false)],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), "overloaded", "{error}");
        let error = admin
            .import("events", common::events(10))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "overloaded", "{error}");
    });
}
