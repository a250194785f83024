//! A 10 M-row `SELECT *` streams through the RPC server without hitting message limits and
//! without the server holding the result: the process's resident memory stays far below the
//! result's size while it streams.

mod common;

use common::{block_on, start_with_pool, token};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tessera_rpc::auth::Role;
use tessera_rpc::metrics::resident_bytes;
use tessera_rpc::Client;

const ROWS: u64 = 10_000_000;

#[test]
fn ten_million_rows_stream_with_bounded_memory() {
    // A small buffer pool, so what the pool keeps does not hide what the query holds.
    let server = start_with_pool(ROWS, common::default_limits(), 32 << 20);
    let baseline = resident_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let (rows, ipc_bytes) = block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        let mut stream = session.query("SELECT * FROM events").await.unwrap();
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            rows += batch.unwrap().num_rows() as u64;
        }
        (rows, stream.stats().unwrap().ipc_bytes)
    });
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(rows, ROWS);
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "streamed {rows} rows, {} MiB of Arrow IPC; resident memory grew by at most {} MiB",
        ipc_bytes >> 20,
        growth >> 20
    );
    assert!(
        ipc_bytes > 512 << 20,
        "the result is large: {ipc_bytes} bytes"
    );
    // Server and client share this process: both together must stay well under the result.
    assert!(
        growth < 384 << 20,
        "resident memory grew by {} MiB while streaming a {} MiB result",
        growth >> 20,
        ipc_bytes >> 20
    );
}
