//! Hostile and careless clients: garbage, oversized and deeply nested messages, clients that
//! vanish mid-stream or stop reading, more queries than the node admits. Each must cost the
//! server nothing lasting, and other clients keep being served.

mod common;

use common::{block_on, start, token};
use futures::StreamExt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tessera_rpc::auth::Role;
use tessera_rpc::{Client, Limits};

/// Reads until the server closes the connection; panics if it stays open for `within`.
fn expect_closed(mut stream: TcpStream, within: Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("connection still open after {within:?}: {e}"),
        }
    }
}

/// A normal client still gets answers.
fn still_serves(server: &common::TestServer) {
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let output = session
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
        assert_eq!(output.num_rows(), 1);
    });
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn idle(server: &common::TestServer) {
    let metrics = server.server.metrics();
    wait_until("no running queries and no connections", || {
        metrics.queries_running.get() == 0 && metrics.connections.get() == 0
    });
}

#[test]
fn garbage_and_oversized_frames_close_the_connection() {
    let server = start(10_000, common::default_limits());
    let mut garbage = TcpStream::connect(server.server.address()).unwrap();
    let bytes: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = garbage.write_all(&bytes);
    expect_closed(garbage, Duration::from_secs(10));
    // A frame header announcing one segment of 2 Gi words: refused from the header alone.
    let mut huge = TcpStream::connect(server.server.address()).unwrap();
    huge.write_all(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f])
        .unwrap();
    expect_closed(huge, Duration::from_secs(10));
    // Too many segments.
    let mut segments = TcpStream::connect(server.server.address()).unwrap();
    segments.write_all(&[0xff, 0xff, 0, 0, 1, 0, 0, 0]).unwrap();
    expect_closed(segments, Duration::from_secs(10));
    still_serves(&server);
    idle(&server);
}

#[test]
fn a_message_over_the_size_limit_is_refused() {
    let limits = Limits {
        traversal_limit_words: 128 << 10, // 1 MiB
        ..common::default_limits()
    };
    let server = start(10_000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let error = client.login(&"x".repeat(2 << 20)).await.unwrap_err();
        assert_eq!(error.code(), "limit", "{error}");
        assert!(error.to_string().contains("too large"), "{error}");
    });
    still_serves(&server);
    idle(&server);
}

/// A raw bootstrap and login call whose params nest `depth` structs where the token should be,
/// framed as the two-party protocol expects.
fn nested_login(depth: usize) -> Vec<u8> {
    use capnp_rpc::rpc_capnp::{message, payload};
    let mut out = Vec::new();
    let mut bootstrap = capnp::message::Builder::new_default();
    bootstrap
        .init_root::<message::Builder>()
        .init_bootstrap()
        .set_question_id(0);
    capnp::serialize::write_message(&mut out, &bootstrap).unwrap();
    let mut call_message = capnp::message::Builder::new_default();
    {
        let mut call = call_message.init_root::<message::Builder>().init_call();
        call.set_question_id(1);
        call.set_interface_id(
            <tessera_schema::tessera_capnp::gateway::Client as capnp::traits::HasTypeId>::TYPE_ID,
        );
        call.set_method_id(0);
        call.reborrow()
            .init_target()
            .init_promised_answer()
            .set_question_id(0);
        // `Payload` has a pointer first, like `LoginParams`: a chain of them nests `depth` deep.
        let mut node = call.init_params().init_content();
        for _ in 0..depth {
            node = node.init_as::<payload::Builder>().init_content();
        }
    }
    capnp::serialize::write_message(&mut out, &call_message).unwrap();
    out
}

#[test]
fn deeply_nested_params_fail_the_call_and_the_server_serves_on() {
    let server = start(10_000, common::default_limits());
    let mut stream = TcpStream::connect(server.server.address()).unwrap();
    stream.write_all(&nested_login(200)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut reasons = Vec::new();
    while let Ok(message) =
        capnp::serialize::read_message(&mut reader, capnp::message::ReaderOptions::new())
    {
        use capnp_rpc::rpc_capnp::{message as rpc_message, return_};
        let root = message.get_root::<rpc_message::Reader>().unwrap();
        if let Ok(rpc_message::Return(answer)) = root.which() {
            let answer = answer.unwrap();
            if answer.get_answer_id() == 1 {
                if let Ok(return_::Exception(exception)) = answer.which() {
                    let reason = exception
                        .unwrap()
                        .get_reason()
                        .unwrap()
                        .to_string()
                        .unwrap();
                    reasons.push(reason);
                }
                break;
            }
        }
    }
    assert_eq!(reasons.len(), 1, "the login must fail with an exception");
    assert!(reasons[0].contains("text"), "{}", reasons[0]);
    drop(reader);
    still_serves(&server);
    idle(&server);
}

#[test]
fn clients_that_vanish_mid_stream_cost_nothing() {
    let server = start(1_000_000, common::default_limits());
    for _ in 0..3 {
        block_on(async {
            let client = Client::connect(&server.address()).await.unwrap();
            let session = client
                .login(&token(Some("acme"), Role::Reader))
                .await
                .unwrap();
            let mut stream = session.query("SELECT * FROM events").await.unwrap();
            let first = stream.next().await.unwrap().unwrap();
            assert!(first.num_rows() > 0);
            // Everything dropped here: stream, session, client and with them the socket.
        });
    }
    idle(&server);
    still_serves(&server);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_others_are_served() {
    let limits = Limits {
        stall_timeout: Duration::from_secs(2),
        ..common::default_limits()
    };
    let server = start(1_000_000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        // Never polled: the client's buffer fills, flow control stops the server's pushes.
        let mut stalled = session.query("SELECT * FROM events").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let metrics = server.server.metrics();
        assert_eq!(metrics.queries_running.get(), 1);
        // Others are served meanwhile.
        let other = Client::connect(&server.address()).await.unwrap();
        let reader = other
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        reader
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.queries_running.get() != 0 {
            assert!(
                Instant::now() < deadline,
                "the stalled query was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The stalled stream ends with the server's error once read.
        let mut error = None;
        while let Some(item) = stalled.next().await {
            if let Err(e) = item {
                error = Some(e);
                break;
            }
        }
        let error = error.expect("the stalled query must fail");
        assert_eq!(error.code(), "cancelled", "{error}");
    });
    idle(&server);
}

#[test]
fn overload_is_answered_quickly_and_admitted_queries_finish() {
    let limits = Limits {
        concurrent_queries: 1,
        admission_wait: Duration::from_millis(50),
        stall_timeout: Duration::from_secs(30),
        ..common::default_limits()
    };
    let server = start(1_000_000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let mut admitted = session.query("SELECT * FROM events").await.unwrap();
        let first = admitted.next().await.unwrap().unwrap();
        let mut rows = first.num_rows();
        for _ in 0..5 {
            let started = Instant::now();
            // A scan of the table: the throughput class, whose one slot is taken.
            let error = session
                .query_collect("SELECT SUM(amount) FROM events")
                .await
                .unwrap_err();
            assert_eq!(error.code(), "overloaded", "{error}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        }
        // Short queries have slots of their own: a point lookup runs beside the scan.
        let point = session
            .query_collect("SELECT * FROM events WHERE id = 77")
            .await
            .unwrap();
        assert_eq!(point.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        while let Some(batch) = admitted.next().await {
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, 1_000_000);
        session
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
        assert!(server.server.metrics().queries_rejected_overloaded.get() >= 5);
    });
    idle(&server);
}

#[test]
fn calls_in_flight_per_connection_are_bounded() {
    let limits = Limits {
        calls_in_flight_per_connection: 2,
        stall_timeout: Duration::from_secs(30),
        ..common::default_limits()
    };
    let server = start(1_000_000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = session.query("SELECT * FROM events").await.unwrap();
            stream.next().await.unwrap().unwrap();
            held.push(stream);
        }
        let error = session
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap_err();
        assert_eq!(error.code(), "limit", "{error}");
        drop(held);
        // Once the held queries are cancelled, calls are admitted again.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match session.query_collect("SELECT COUNT(*) FROM events").await {
                Ok(_) => break,
                Err(e) if e.code() == "limit" && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    idle(&server);
}

#[test]
fn idle_connections_are_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(400),
        ..common::default_limits()
    };
    let server = start(1000, limits);
    let started = Instant::now();
    let silent = TcpStream::connect(server.server.address()).unwrap();
    expect_closed(silent, Duration::from_secs(10));
    assert!(started.elapsed() >= Duration::from_millis(400));
    idle(&server);
}

#[test]
fn cancel_by_tag_stops_a_running_query() {
    let server = start(1_000_000, common::default_limits());
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let mut running = session
            .query_tagged("SELECT * FROM events", 77)
            .await
            .unwrap();
        running.next().await.unwrap().unwrap();
        assert!(!session.cancel(78).await.unwrap(), "no query has tag 78");
        assert!(session.cancel(77).await.unwrap());
        let mut error = None;
        while let Some(item) = running.next().await {
            if let Err(e) = item {
                error = Some(e);
                break;
            }
        }
        let error = error.expect("a cancelled query ends with an error");
        assert_eq!(error.code(), "cancelled", "{error}");
        // The session keeps working.
        session
            .query_collect("SELECT COUNT(*) FROM events")
            .await
            .unwrap();
    });
    idle(&server);
}

#[test]
fn a_query_that_waits_for_a_slot_reports_its_queue_time() {
    let limits = Limits {
        concurrent_queries: 1,
        admission_wait: Duration::from_secs(20),
        stall_timeout: Duration::from_secs(30),
        ..common::default_limits()
    };
    let server = start(1_000_000, limits);
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        // Holds the one throughput slot while its client reads nothing more.
        let mut holder = session.query("SELECT * FROM events").await.unwrap();
        holder.next().await.unwrap().unwrap();
        let waiter = async {
            let started = Instant::now();
            let output = session
                .query_collect("SELECT SUM(amount) FROM events")
                .await
                .unwrap();
            (output.stats, started.elapsed())
        };
        let release = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            while let Some(batch) = holder.next().await {
                batch.unwrap();
            }
        };
        let ((stats, waited), ()) = futures::join!(waiter, release);
        // The wait is counted from the call's arrival, and is most of what the client saw.
        assert!(stats.queued_micros >= 300_000, "{stats:?} after {waited:?}");
        assert!(
            stats.queued_micros <= waited.as_micros() as u64,
            "{stats:?}"
        );
    });
    idle(&server);
}
