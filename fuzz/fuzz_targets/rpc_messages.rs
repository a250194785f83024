//! Arbitrary bytes sent to a real tenant-node server over loopback, as one connection's whole
//! input: raw, or after a well-formed bootstrap request so the fuzzer reaches the capability
//! calls sooner. The server must answer or close the connection and never panic (a panic on a
//! server core aborts the run) or hang (each input waits at most two seconds for the close).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

struct Target {
    address: SocketAddr,
    _server: tessera_rpc::Server,
    _dir: std::path::PathBuf,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tessera-fuzz-rpc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let batch = tessera_storage_engine::gen::events_chunk(0, 1000, 1000, 7);
        let options = tessera_storage_engine::writer::ImportOptions::default();
        let mut writer = tessera_storage_engine::writer::TableWriter::open(
            &dir, "acme", "events", &batch.schema(), &options,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let mut config = tessera_storage_engine::EngineConfig::new(&dir);
        config.cores = 1;
        config.pin_cores = false;
        config.buffer_pool_bytes = 16 << 20;
        let engine = tessera_storage_engine::Engine::open(config).unwrap();
        let limits = tessera_rpc::Limits {
            stall_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let server = tessera_rpc::Server::start(
            engine,
            tessera_rpc::ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                http: None,
                auth: tessera_rpc::auth::AuthConfig::new(vec![tessera_rpc::auth::KeySpec {
                    id: None,
                    kind: tessera_rpc::auth::KeyKind::Hs256,
                    material: b"fuzzing secret, at least 32 bytes long".to_vec(),
                }]),
                limits,
                max_memory_bytes: 1 << 30,
                tls: None,
            },
        )
        .unwrap();
        Target {
            address: server.address(),
            _server: server,
            _dir: dir,
        }
    })
}

/// A well-formed two-party bootstrap request (question 0).
fn bootstrap() -> Vec<u8> {
    let mut message = capnp::message::Builder::new_default();
    message
        .init_root::<capnp_rpc::rpc_capnp::message::Builder>()
        .init_bootstrap()
        .set_question_id(0);
    let mut out = Vec::new();
    capnp::serialize::write_message(&mut out, &message).unwrap();
    out
}

fuzz_target!(
    init: {
        // libFuzzer's main is not Rust's, so SIGPIPE is not ignored: writing to a connection the
        // server already closed (which it must do to garbage) would kill the run.
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    },
    |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let target = target();
    let mut input = if mode & 1 == 1 { bootstrap() } else { Vec::new() };
    input.extend_from_slice(rest);
    let mut stream = TcpStream::connect(target.address).expect("the server stopped accepting");
    let _ = stream.write_all(&input);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    }
);
