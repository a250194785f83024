//! A server on loopback over a generated events table, and tokens for it.

#![allow(dead_code)]

use arrow_array::RecordBatch;
use std::time::Duration;
use tessera_rpc::auth::{self, AuthConfig, KeyKind, KeySpec, Role, TokenRequest};
use tessera_rpc::{Limits, Server, ServerConfig};
use tessera_storage_engine::gen::events_chunk;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

pub const SECRET: &[u8] = b"a test secret that is long enough!!";

pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn address(&self) -> String {
        self.server.address().to_string()
    }

    pub fn engine(&self) -> &Engine {
        self.server.engine()
    }
}

pub fn events(rows: u64) -> Vec<RecordBatch> {
    (0..rows)
        .step_by(65_536)
        .map(|first| events_chunk(first, 65_536.min(rows - first), rows, 7))
        .collect()
}

pub fn write_table(dir: &std::path::Path, tenant: &str, table: &str, batches: &[RecordBatch]) {
    let mut writer = TableWriter::open(
        dir,
        tenant,
        table,
        &batches[0].schema(),
        &ImportOptions::default(),
    )
    .unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
}

pub fn default_limits() -> Limits {
    Limits {
        idle_timeout: Duration::from_secs(60),
        stall_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// A server over a temp data directory holding `acme/events` with `rows` rows and
/// `globex/secrets` with a few.
pub fn start(rows: u64, limits: Limits) -> TestServer {
    start_with_pool(rows, limits, 256 << 20)
}

pub fn start_tls(rows: u64, tls: tessera_rpc::TlsFiles) -> TestServer {
    start_configured(rows, default_limits(), 256 << 20, Some(tls))
}

pub fn start_with_pool(rows: u64, limits: Limits, pool_bytes: u64) -> TestServer {
    start_configured(rows, limits, pool_bytes, None)
}

fn start_configured(
    rows: u64,
    limits: Limits,
    pool_bytes: u64,
    tls: Option<tessera_rpc::TlsFiles>,
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), "acme", "events", &events(rows));
    write_table(dir.path(), "globex", "secrets", &events(1000));
    serve(dir, limits, pool_bytes, tls)
}

/// A server over a data directory an earlier server used (after that one stopped).
pub fn restart(dir: tempfile::TempDir, limits: Limits) -> TestServer {
    serve(dir, limits, 256 << 20, None)
}

fn serve(
    dir: tempfile::TempDir,
    limits: Limits,
    pool_bytes: u64,
    tls: Option<tessera_rpc::TlsFiles>,
) -> TestServer {
    serve_with_cache(dir, limits, pool_bytes, tls, None)
}

/// A server over `acme/events` with `rows` rows that keeps results in the Redis at `redis_url`.
pub fn start_with_result_cache(rows: u64, redis_url: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), "acme", "events", &events(rows));
    let cache = tessera_rpc::ResultCacheConfig::new(redis_url);
    serve_with_cache(dir, default_limits(), 256 << 20, None, Some(cache))
}

fn serve_with_cache(
    dir: tempfile::TempDir,
    limits: Limits,
    pool_bytes: u64,
    tls: Option<tessera_rpc::TlsFiles>,
    result_cache: Option<tessera_rpc::ResultCacheConfig>,
) -> TestServer {
    let mut engine = EngineConfig::new(dir.path());
    engine.cores = 2;
    engine.pin_cores = false;
    engine.buffer_pool_bytes = pool_bytes;
    let engine = Engine::open(engine).unwrap();
    let server = Server::start(
        engine,
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http: Some("127.0.0.1:0".parse().unwrap()),
            auth: AuthConfig::new(vec![KeySpec {
                id: None,
                kind: KeyKind::Hs256,
                material: SECRET.to_vec(),
            }]),
            limits,
            max_memory_bytes: 8 << 30,
            tls,
            result_cache,
            cluster: None,
        },
    )
    .unwrap();
    TestServer { server, dir }
}

pub fn token(tenant: Option<&str>, role: Role) -> String {
    auth::mint(
        &TokenRequest {
            subject: "test".into(),
            tenant: tenant.map(str::to_owned),
            role,
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

/// Runs a future to completion on a fresh tokio runtime (the client works under any runtime).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

pub fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = get_with_headers(address, path);
    (status, body)
}

/// Status, header block and body of `GET path`.
pub fn get_with_headers(address: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, headers.to_owned(), body.to_owned())
}

/// The value of an unlabelled sample in Prometheus text.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}
