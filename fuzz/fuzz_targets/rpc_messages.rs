//! Arbitrary bytes sent to a real tenant-node server over loopback, as one connection's whole
//! input: raw, or after well-formed requests the first byte chooses, so the fuzzer starts from
//! live capabilities: the bootstrap `Gateway` (question 0), `login` with a valid admin token
//! (question 1: a `Tenant`), `Tenant.admin` (question 2: an `Admin`), `Tenant.importBatches`
//! (question 3: an `ImportStream`) and `operatorLogin` with a valid operator token (question 4:
//! an `Operator`). Fuzzed calls can then target those answers (`promisedAnswer`).
//!
//! The server must never panic (a panic on a server core aborts the run) and never hang: once the
//! input is sent and the write side closed, it must finish and close the connection within
//! `ANSWER_WITHIN`; a connection still open after that fails the run as a hang.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

/// A server that has read the whole input and seen its end must close within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"fuzzing secret, at least 32 bytes long";

struct Target {
    address: SocketAddr,
    /// The well-formed requests each mode bit adds, in order.
    prefixes: Vec<Vec<u8>>,
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
        let options = tessera_storage_engine::table::writer::ImportOptions::default();
        let mut writer = tessera_storage_engine::table::writer::TableWriter::open(
            &dir,
            "acme",
            "events",
            &batch.schema(),
            &options,
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
                    material: SECRET.to_vec(),
                }]),
                limits,
                max_memory_bytes: 1 << 30,
                tls: None,
                result_cache: None,
                cluster: None,
            },
        )
        .unwrap();
        Target {
            address: server.address(),
            prefixes: prefixes(),
            _server: server,
            _dir: dir,
        }
    })
}

fn token(tenant: Option<&str>, role: tessera_rpc::auth::Role) -> String {
    tessera_rpc::auth::mint(
        &tessera_rpc::auth::TokenRequest {
            subject: "fuzz".into(),
            tenant: tenant.map(str::to_owned),
            role,
            ttl_seconds: 365 * 24 * 3600,
            key_id: None,
            issuer: tessera_rpc::auth::DEFAULT_ISSUER.into(),
            audience: tessera_rpc::auth::DEFAULT_AUDIENCE.into(),
        },
        tessera_rpc::auth::KeyKind::Hs256,
        SECRET,
    )
    .unwrap()
}

fn serialize(message: &capnp::message::Builder<capnp::message::HeapAllocator>) -> Vec<u8> {
    let mut out = Vec::new();
    capnp::serialize::write_message(&mut out, message).unwrap();
    out
}

/// A call (question `question`) of `method` of `interface` on the capability in pointer field
/// `field` of question `target`'s answer (`None`: the answer itself), with `params` filling the
/// parameter struct.
fn call(
    question: u32,
    target: u32,
    field: Option<u16>,
    interface: u64,
    method: u16,
    params: impl FnOnce(capnp::any_pointer::Builder<'_>),
) -> Vec<u8> {
    use capnp_rpc::rpc_capnp::message;
    let mut builder = capnp::message::Builder::new_default();
    let mut call = builder.init_root::<message::Builder>().init_call();
    call.set_question_id(question);
    call.set_interface_id(interface);
    call.set_method_id(method);
    let mut answer = call.reborrow().init_target().init_promised_answer();
    answer.set_question_id(target);
    if let Some(field) = field {
        answer.init_transform(1).get(0).set_get_pointer_field(field);
    } else {
        answer.init_transform(0);
    }
    params(call.init_params().init_content());
    serialize(&builder)
}

/// The well-formed requests the mode byte's bits choose from, in question order.
fn prefixes() -> Vec<Vec<u8>> {
    use capnp::traits::HasTypeId;
    use tessera_rpc::auth::Role;
    use tessera_schema::tessera_capnp::{gateway, tenant};
    let mut bootstrap = capnp::message::Builder::new_default();
    bootstrap
        .init_root::<capnp_rpc::rpc_capnp::message::Builder>()
        .init_bootstrap()
        .set_question_id(0);
    let admin_token = token(Some("acme"), Role::Admin);
    let operator_token = token(None, Role::Operator);
    vec![
        serialize(&bootstrap),
        call(1, 0, None, gateway::Client::TYPE_ID, 0, |params| {
            params
                .init_as::<gateway::login_params::Builder<'_>>()
                .set_token(admin_token.as_str());
        }),
        call(2, 1, Some(0), tenant::Client::TYPE_ID, 6, |params| {
            params.init_as::<tenant::admin_params::Builder<'_>>();
        }),
        call(3, 1, Some(0), tenant::Client::TYPE_ID, 4, |params| {
            params
                .init_as::<tenant::import_batches_params::Builder<'_>>()
                .set_table("events");
        }),
        call(4, 0, None, gateway::Client::TYPE_ID, 1, |params| {
            params
                .init_as::<gateway::operator_login_params::Builder<'_>>()
                .set_token(operator_token.as_str());
        }),
    ]
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
    let mut input = Vec::new();
    for (bit, prefix) in target.prefixes.iter().enumerate() {
        if mode & (1 << bit) != 0 {
            input.extend_from_slice(prefix);
        }
    }
    input.extend_from_slice(rest);
    let mut stream = TcpStream::connect(target.address).expect("the server stopped accepting");
    let _ = stream.write_all(&input);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = std::time::Instant::now() + ANSWER_WITHIN;
    let mut sink = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "hang: the server neither finished nor closed the connection within {ANSWER_WITHIN:?}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // Reset by the server: it closed on us, which is an answer.
            Err(_) => break,
        }
    }
    }
);
