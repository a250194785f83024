//! Streaming ingestion over RPC: each acknowledged batch is visible to the next query, a key
//! sent again (on a new connection) is applied once, a reader may not ingest, a bad batch
//! applies nothing and leaves the stream usable, a batch cut off by a lost connection applies
//! nothing and can be sent again under its key, and batches sent from many connections at
//! once all arrive exactly once.

mod common;

use common::{block_on, default_limits, events, start, token};
use tessera_rpc::auth::Role;
use tessera_rpc::client::Session;
use tessera_rpc::Client;
use tessera_storage_engine::gen::events_chunk;

async fn session(address: &str, role: Role) -> Session {
    let client = Client::connect(address).await.unwrap();
    client.login(&token(Some("acme"), role)).await.unwrap()
}

async fn count(session: &Session) -> i64 {
    let output = session
        .query_collect("SELECT COUNT(*) FROM events")
        .await
        .unwrap();
    let column = output.batches[0].column(0);
    column
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .value(0)
}

#[test]
fn acknowledged_batches_are_visible_and_applied_once() {
    let server = start(10_000, default_limits());
    let address = server.address();
    block_on(async {
        let writer = session(&address, Role::Writer).await;
        let mut stream = writer.ingest_stream("events", "loader-1").await.unwrap();
        let mut expected = 10_000;
        for sequence in 0..5u64 {
            let batch = events_chunk(sequence * 1000, 1000, 5000, sequence);
            let ack = stream.append(sequence, &batch).await.unwrap();
            assert!(ack.durable && !ack.duplicate, "{ack:?}");
            assert_eq!((ack.rows, ack.sequence), (1000, sequence));
            expected += 1000;
            // Read-your-writes: the next query, on another connection, sees the batch.
            let reader = session(&address, Role::Reader).await;
            assert_eq!(count(&reader).await, expected);
        }
        // A reconnecting producer resends its last batch: acknowledged, not applied again.
        drop(stream);
        let again = session(&address, Role::Writer).await;
        let mut stream = again.ingest_stream("events", "loader-1").await.unwrap();
        let ack = stream
            .append(4, &events_chunk(4000, 1000, 5000, 4))
            .await
            .unwrap();
        assert!(ack.duplicate && ack.durable, "{ack:?}");
        assert_eq!(count(&again).await, expected);
        // Flushed to Parquet, the answer is the same.
        assert!(stream.flush().await.unwrap() >= 1);
        assert_eq!(count(&again).await, expected);
        // A reader may not ingest.
        let reader = session(&address, Role::Reader).await;
        let error = match reader.ingest_stream("events", "r").await {
            Err(error) => error,
            Ok(_) => panic!("a reader opened an ingest stream"),
        };
        assert_eq!(error.code(), "permission", "{error}");
    });
}

#[test]
fn a_bad_batch_applies_nothing_and_the_stream_goes_on() {
    let server = start(1000, default_limits());
    let address = server.address();
    block_on(async {
        let writer = session(&address, Role::Writer).await;
        let mut stream = writer.ingest_stream("events", "p").await.unwrap();
        let bad = arrow_array::RecordBatch::try_from_iter([(
            "color",
            std::sync::Arc::new(arrow_array::StringArray::from(vec!["red"])) as _,
        )])
        .unwrap();
        let error = stream.append(1, &bad).await.unwrap_err();
        assert_eq!(error.code(), "invalid", "{error}");
        // It lacks NOT NULL columns; its new column is not added either.
        assert!(
            error.to_string().contains("column id is missing"),
            "{error}"
        );
        // Bytes that are not a whole IPC stream.
        let error = stream.append_ipc(2, vec![0xff; 64]).await.unwrap_err();
        assert_eq!(error.code(), "invalid", "{error}");
        assert_eq!(count(&writer).await, 1000);
        let ack = stream.append(1, &events(100)[0]).await.unwrap();
        assert!(!ack.duplicate);
        assert_eq!(count(&writer).await, 1100);
        // A missing table.
        let error = match writer.ingest_stream("nope", "p").await {
            Err(error) => error,
            Ok(_) => panic!("opened a stream on a missing table"),
        };
        assert_eq!(error.code(), "not_found", "{error}");
    });
}

#[test]
fn many_producers_at_once_each_batch_exactly_once() {
    let server = start(1000, default_limits());
    let address = server.address();
    const PRODUCERS: u64 = 8;
    const BATCHES: u64 = 6;
    block_on(async {
        let tasks = (0..PRODUCERS).map(|producer| {
            let address = address.clone();
            async move {
                let writer = session(&address, Role::Writer).await;
                let mut stream = writer
                    .ingest_stream("events", &format!("worker-{producer}"))
                    .await
                    .unwrap();
                for sequence in 0..BATCHES {
                    let batch = events_chunk(0, 500, 500, producer * 100 + sequence);
                    stream.append(sequence, &batch).await.unwrap();
                    // Every other batch is resent: a retry after a lost acknowledgement.
                    if sequence % 2 == 1 {
                        assert!(stream.append(sequence, &batch).await.unwrap().duplicate);
                    }
                }
            }
        });
        futures::future::join_all(tasks).await;
        let reader = session(&address, Role::Reader).await;
        assert_eq!(
            count(&reader).await,
            1000 + (PRODUCERS * BATCHES * 500) as i64
        );
    });
}

#[test]
fn a_connection_lost_mid_batch_applies_nothing_and_the_key_stays_free() {
    let server = start(1000, default_limits());
    let address = server.address();
    let batch = events_chunk(0, 2_000, 2_000, 77);
    let mut ipc = Vec::new();
    {
        let mut writer =
            arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        for start in (0..2_000).step_by(500) {
            writer.write(&batch.slice(start, 500)).unwrap();
        }
        writer.finish().unwrap();
    }
    block_on(async {
        {
            let client = Client::connect(&address).await.unwrap();
            let writer = client
                .login(&token(Some("acme"), Role::Writer))
                .await
                .unwrap();
            let mut stream = writer.ingest_stream("events", "cut").await.unwrap();
            // Two thirds of the batch, cut inside a message; then the connection goes.
            stream.write_ipc(&ipc[..ipc.len() * 2 / 3]).await.unwrap();
            drop(stream);
            drop(writer);
            drop(client);
        }
        let reader = session(&address, Role::Reader).await;
        assert_eq!(count(&reader).await, 1000);
        // The same key on a new connection: applied now, and once.
        let writer = session(&address, Role::Writer).await;
        let mut stream = writer.ingest_stream("events", "cut").await.unwrap();
        let ack = stream.append_ipc(1, ipc.clone()).await.unwrap();
        assert!(!ack.duplicate && ack.rows == 2_000, "{ack:?}");
        assert!(stream.append_ipc(1, ipc).await.unwrap().duplicate);
        assert_eq!(count(&reader).await, 3000);
    });
}
