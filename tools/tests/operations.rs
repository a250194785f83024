//! `tessera serve` as systemd runs it: readiness, reload and stopping announced on
//! `NOTIFY_SOCKET`; JSON log lines with one line per query and slow queries at warn; SIGHUP
//! applying what may change live and naming what needs a restart; SIGTERM draining, flushing
//! buffered rows to files and exiting 0; `--check-config`; `tessera admin node status`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{ok, path, tessera, Process};

struct Node {
    dir: tempfile::TempDir,
    data: PathBuf,
    secret: PathBuf,
    config: PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a test secret that is long enough!!\n").unwrap();
        let config = dir.path().join("tessera.toml");
        Node {
            dir,
            data,
            secret,
            config,
        }
    }

    /// Writes the config file: `extra` goes at the top level, before any section.
    fn configure(&self, extra: &str, log: &str) {
        std::fs::write(
            &self.config,
            format!(
                "data_path = \"{}\"\nlisten = \"127.0.0.1:0\"\nhttp = \"off\"\ncores = 2\n{extra}\n\
                 [memory]\nmax_memory_gb = 4\n\
                 [log]\nformat = \"json\"\n{log}\n\
                 [ingest]\nflush_seconds = 3600\n\
                 [compaction]\ninterval_seconds = 0\n\
                 [[auth.keys]]\nkind = \"hs256\"\nfile = \"{}\"\n",
                path(&self.data),
                path(&self.secret)
            ),
        )
        .unwrap();
    }

    fn token(&self, tenant: Option<&str>, role: &str) -> String {
        let mut args = vec!["token", "--secret-file", path(&self.secret), "--role", role];
        if let Some(tenant) = tenant {
            args.extend(["--tenant", tenant]);
        }
        ok(&args).trim().to_owned()
    }
}

/// A `tessera serve` child whose stderr lines are collected.
struct Serving {
    process: Process,
    address: String,
}

impl Serving {
    fn wait_for(&self, what: &str, test: impl Fn(&str) -> bool) -> String {
        self.process.wait_for_line(what, test)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.process.child.id() as i32, signal) },
            0
        );
    }
}

/// A JSON log line's fields (`None` for a line that is not JSON).
fn json(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

fn message_is(line: &str, message: &str) -> bool {
    json(line).is_some_and(|v| v["message"] == message)
}

fn serve(node: &Node, notify: &Path) -> Serving {
    let process = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--config", path(&node.config)])
            .env("NOTIFY_SOCKET", notify),
    );
    let mut serving = Serving {
        process,
        address: String::new(),
    };
    let line = serving.wait_for("saying it serves", |l| l.contains("tessera serving"));
    let message = json(&line).expect("a JSON line")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    serving.address = message
        .split(" on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    serving
}

/// The next notification on `socket`.
fn notification(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 1024];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn sql(serving: &Serving, token: &str, query: &str) -> String {
    ok(&[
        "sql",
        "--addr",
        &serving.address,
        "--token",
        token,
        "--format",
        "csv",
        query,
    ])
}

/// Rows in the files a table's manifest lists.
fn rows_in_files(data: &Path) -> u64 {
    let text = std::fs::read_to_string(data.join("acme/events/_manifest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rows"].as_u64().unwrap())
        .sum()
}

#[test]
fn serve_under_a_service_manager_reloads_and_drains() {
    let node = Node::new();
    node.configure("", "slow_query_ms = 600000");
    let notify_path = node.dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let serving = serve(&node, &notify_path);
    let ready = notification(&notify);
    assert!(ready.starts_with("READY=1\nSTATUS=serving"), "{ready}");

    // Rows ingested stay buffered (flush_seconds is an hour) until the node stops.
    let input = node.dir.path().join("events.parquet");
    ok(&["gen", "events", "--rows", "20000", "--out", path(&input)]);
    let admin = node.token(Some("acme"), "admin");
    ok(&[
        "ingest",
        "--addr",
        &serving.address,
        "--token",
        &admin,
        "--table",
        "events",
        path(&input),
    ]);
    assert_eq!(rows_in_files(&node.data), 0);
    let count = sql(&serving, &admin, "SELECT COUNT(*) FROM events");
    assert_eq!(count.lines().nth(1), Some("20000"), "{count}");

    // One JSON line per query, at info.
    let line = serving.wait_for("for the count", |l| {
        message_is(l, "query") && l.contains("SELECT COUNT(*) FROM events")
    });
    let fields = json(&line).unwrap();
    assert_eq!(fields["level"], "INFO", "{line}");
    assert_eq!(fields["tenant"], "acme", "{line}");
    assert_eq!(fields["status"], "ok", "{line}");
    assert_eq!(fields["rows"], 1, "{line}");
    assert!(fields["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(!fields["query_id"].as_str().unwrap().is_empty(), "{line}");

    // The spec's troubleshooting query, verbatim, through the CLI.
    let slow = sql(
        &serving,
        &admin,
        "SELECT query_id, partitions_scanned, partitions_pruned FROM query_stats WHERE execution_time > 30",
    );
    assert!(slow.lines().count() <= 1, "no query took 30 s: {slow}");

    // The operator's view of the node.
    let operator = node.token(None, "operator");
    let status = ok(&[
        "admin",
        "node",
        "status",
        "--addr",
        &serving.address,
        "--token",
        &operator,
    ]);
    for expected in [
        "parquet_cache",
        "query_processing",
        "ingest_buffers",
        "acme",
        "events",
        "hit rate",
        "1 tables",
    ] {
        assert!(status.contains(expected), "{expected} missing:\n{status}");
    }
    let status = ok(&[
        "admin",
        "node",
        "status",
        "--json",
        "--addr",
        &serving.address,
        "--token",
        &operator,
    ]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["ingest_lag_seconds"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    assert_eq!(status["memory_max_bytes"], 4u64 << 30, "{status}");
    // A tenant's token is no operator's.
    let refused = tessera(&[
        "admin",
        "node",
        "status",
        "--addr",
        &serving.address,
        "--token",
        &admin,
    ]);
    assert!(!refused.status.success());

    // SIGHUP: the slow-query threshold drops to 0 live; a new port needs a restart.
    node.configure("concurrent_queries = 3\n", "slow_query_ms = 0");
    std::fs::write(
        &node.config,
        std::fs::read_to_string(&node.config)
            .unwrap()
            .replace("127.0.0.1:0", "127.0.0.1:1"),
    )
    .unwrap();
    serving.signal(libc::SIGHUP);
    let reloading = notification(&notify);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(notification(&notify), "READY=1");
    let line = serving.wait_for("saying what reloaded", |l| {
        message_is(l, "configuration reloaded")
    });
    assert!(line.contains("concurrent_queries"), "{line}");
    assert!(line.contains("slow_query_ms"), "{line}");
    let line = serving.wait_for("naming what needs a restart", |l| {
        json(l).is_some_and(|v| {
            v["level"] == "WARN" && v["message"].as_str().unwrap().contains("restart")
        })
    });
    assert!(line.contains("listen"), "{line}");
    sql(&serving, &admin, "SELECT MAX(amount) FROM events");
    let line = serving.wait_for("at warn for a slow query", |l| message_is(l, "slow query"));
    assert!(line.contains("SELECT MAX(amount) FROM events"), "{line}");
    assert_eq!(json(&line).unwrap()["level"], "WARN");

    // SIGTERM: drain, flush the buffered rows into files, exit 0.
    let mut serving = serving;
    serving.signal(libc::SIGTERM);
    let stopping = notification(&notify);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = serving.process.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let line = serving.wait_for("saying it drained", |l| message_is(l, "drained"));
    let fields = json(&line).unwrap();
    assert!(fields["files_flushed"].as_u64().unwrap() >= 1, "{line}");
    assert_eq!(fields["unfinished"], 0, "{line}");
    assert_eq!(rows_in_files(&node.data), 20_000);
}

#[test]
fn check_config_validates_without_starting() {
    let node = Node::new();
    node.configure("", "level = \"info,tessera_rpc=debug\"");
    let output = tessera(&["serve", "--config", path(&node.config), "--check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("parquet_cache    2048 MiB"), "{stdout}");
    assert!(
        !node.data.exists(),
        "--check-config created the data directory"
    );
    std::fs::write(
        &node.config,
        std::fs::read_to_string(&node.config).unwrap().replace(
            "max_memory_gb = 4",
            "max_memory_gb = 4\nparquet_cache_gb = 5",
        ),
    )
    .unwrap();
    let output = tessera(&["serve", "--config", path(&node.config), "--check-config"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("do not fit max_memory_gb"), "{stderr}");
}
