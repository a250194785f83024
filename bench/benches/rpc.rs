//! RPC over loopback against a real server on two cores: the round trip of a point query (what
//! the network and protocol add over embedded execution, measured beside it), and the streamed
//! throughput of a large `SELECT` in bytes of Arrow IPC and rows per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use tessera_rpc::auth::{self, AuthConfig, KeyKind, KeySpec, Role, TokenRequest};
use tessera_rpc::{Client, Limits, Server, ServerConfig};
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

const ROWS: u64 = 2_000_000;
const SECRET: &[u8] = b"benchmark secret of at least 32 bytes";

fn server(dir: &std::path::Path) -> Server {
    let first = events_chunk(0, 65_536, ROWS, 7);
    let mut writer = TableWriter::open(
        dir,
        "bench",
        "events",
        &first.schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    for start in (0..ROWS).step_by(65_536) {
        writer
            .write(&events_chunk(start, 65_536.min(ROWS - start), ROWS, 7))
            .unwrap();
    }
    writer.finish().unwrap();
    let mut config = EngineConfig::new(dir);
    config.cores = 2;
    config.buffer_pool_bytes = 2 << 30;
    Server::start(
        Engine::open(config).unwrap(),
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http: None,
            auth: AuthConfig::new(vec![KeySpec {
                id: None,
                kind: KeyKind::Hs256,
                material: SECRET.to_vec(),
            }]),
            limits: Limits::default(),
            max_memory_bytes: 8 << 30,
            tls: None,
            result_cache: None,
            cluster: None,
        },
    )
    .unwrap()
}

fn token() -> String {
    auth::mint(
        &TokenRequest {
            subject: "bench".into(),
            tenant: Some("bench".into()),
            role: Role::Reader,
            ttl_seconds: 3600,
            key_id: None,
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
        KeyKind::Hs256,
        SECRET,
    )
    .unwrap()
}

fn rpc(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let session = runtime.block_on(async {
        let client = Client::connect(&server.address().to_string())
            .await
            .unwrap();
        client.login(&token()).await.unwrap()
    });
    let point = "SELECT * FROM events WHERE id = 1234567";
    let mut group = c.benchmark_group("point_query");
    group.throughput(Throughput::Elements(1));
    group.bench_function("embedded", |b| {
        b.iter(|| server.engine().sql("bench", point).unwrap())
    });
    group.bench_function("rpc_round_trip", |b| {
        b.iter(|| runtime.block_on(session.query_collect(point)).unwrap())
    });
    group.finish();

    let all = "SELECT * FROM events";
    let (ipc_bytes, rows) = runtime.block_on(async {
        let output = session.query_collect(all).await.unwrap();
        (output.stats.ipc_bytes, output.stats.rows_returned)
    });
    let mut group = c.benchmark_group("stream_select_all");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(ipc_bytes));
    group.bench_function("ipc_bytes", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut stream = session.query(all).await.unwrap();
                let mut seen = 0;
                while let Some(batch) = stream.next().await {
                    seen += batch.unwrap().num_rows() as u64;
                }
                assert_eq!(seen, rows);
            })
        })
    });
    group.throughput(Throughput::Elements(rows));
    group.bench_function("rows", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut stream = session.query(all).await.unwrap();
                while let Some(batch) = stream.next().await {
                    batch.unwrap();
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, rpc);
criterion_main!(benches);
