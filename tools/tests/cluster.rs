//! The cluster's membership end to end, each piece in its own process: coordinators over an
//! embedded catalog or a real PostgreSQL, three `tessera serve --coordinator` nodes; nodes
//! register and heartbeat, a node killed with SIGKILL is marked down, nodes keep serving with
//! every coordinator down, a coordinator restarted loses nothing, and with two coordinators on
//! PostgreSQL the standby takes the leader lease over when the leader is killed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{ok, path, Process};

/// Waits for a stderr line containing `text`.
fn wait_for(process: &Process, text: &str) -> String {
    process.wait_for_line(&format!("saying {text:?}"), |l| l.contains(text))
}

/// The address after `" on "` in a log line.
fn address_in(line: &str) -> String {
    line.split(" serving on ")
        .nth(1)
        .or_else(|| line.split(" on ").nth(1))
        .and_then(|rest| rest.split([' ', '"', '(']).next())
        .unwrap()
        .to_owned()
}

struct Cluster {
    dir: tempfile::TempDir,
    secret: PathBuf,
    operator: String,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "a test secret that is long enough!!\n").unwrap();
        let operator = ok(&[
            "token",
            "--secret-file",
            path(&secret),
            "--role",
            "operator",
        ])
        .trim()
        .to_owned();
        Cluster {
            dir,
            secret,
            operator,
        }
    }

    /// A coordinator on `catalog` (`--catalog URL` or `--catalog-dir DIR`); its process and address.
    fn coordinator(&self, id: &str, catalog: &[&str], listen: &str) -> (Process, String) {
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["coordinator", "--listen", listen, "--id", id])
                .args(catalog)
                .args(["--jwt-secret-file", path(&self.secret)])
                .args(["--lease-ms", "1500", "--node-timeout-ms", "2000"])
                .args(["--heartbeat-ms", "200"]),
        );
        let line = wait_for(&process, "serving on");
        let address = address_in(&line);
        (process, address)
    }

    fn node(&self, id: &str, coordinators: &str, rack: &str) -> Process {
        let data = self.dir.path().join(id);
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["serve", "--data", path(&data), "--listen", "127.0.0.1:0"])
                .args(["--http", "off", "--cores", "1"])
                .args(["--jwt-secret-file", path(&self.secret)])
                .args(["--coordinator", coordinators, "--node-id", id])
                .args(["--labels", &format!("host={id},rack={rack}")])
                .env("TESSERA_COORDINATOR_TOKEN", &self.operator),
        );
        wait_for(&process, "tessera serving");
        process
    }

    fn status(&self, coordinators: &str) -> serde_json::Value {
        let out = ok(&[
            "admin",
            "cluster",
            "status",
            "--addr",
            coordinators,
            "--token",
            &self.operator,
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    }

    /// Waits until `test` holds for the status; the status.
    fn wait_status(
        &self,
        coordinators: &str,
        what: &str,
        test: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(coordinators);
            if test(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "never {what}: {status:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn states(status: &serde_json::Value) -> Vec<(String, String)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_owned(),
                n["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all(ids: &[&str], state: &str) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (id.to_string(), state.to_owned()))
        .collect()
}

/// The membership scenario against one catalog: three nodes register, one killed is marked
/// down, the coordinator restarted (killed) keeps every node, and the living ones are up again.
fn membership(cluster: &Cluster, catalog: &[&str]) {
    let (coordinator, address) = cluster.coordinator("c1", catalog, "127.0.0.1:0");
    let nodes: Vec<Process> = [("n1", "r1"), ("n2", "r2"), ("n3", "r1")]
        .iter()
        .map(|(id, rack)| cluster.node(id, &address, rack))
        .collect();
    let status = cluster.wait_status(&address, "all up", |s| {
        states(s) == all(&["n1", "n2", "n3"], "up")
    });
    assert_eq!(status["leader"], "c1", "{status:#}");
    let n1_status = status["nodes"][0].clone();
    assert_eq!(n1_status["labels"]["rack"], "r1");
    assert_eq!(n1_status["labels"]["host"], "n1");
    assert!(
        n1_status["disk_capacity_bytes"].as_u64().unwrap() > 0,
        "{n1_status}"
    );
    assert!(n1_status["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    // A node killed stops heartbeating and is marked down after the node timeout.
    let mut nodes = nodes.into_iter();
    let (n1, n2, n3) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    n2.kill();
    cluster.wait_status(&address, "n2 down", |s| {
        states(s)
            == vec![
                ("n1".into(), "up".into()),
                ("n2".into(), "down".into()),
                ("n3".into(), "up".into()),
            ]
    });

    // The coordinator killed and started again on the same catalog: every node is still
    // known, the living ones heartbeat again (to the new process, on a new port).
    let port = address.rsplit_once(':').unwrap().1.to_owned();
    coordinator.kill();
    // With no coordinator at all, a node keeps serving: an import and a query on n1.
    let n1_address = n1_status["address"].as_str().unwrap().to_owned();
    let token = ok(&[
        "token",
        "--secret-file",
        path(&cluster.secret),
        "--tenant",
        "acme",
        "--role",
        "admin",
    ])
    .trim()
    .to_owned();
    let input = cluster.dir.path().join(format!("events-{port}.parquet"));
    ok(&["gen", "events", "--rows", "5000", "--out", path(&input)]);
    ok(&[
        "import",
        "--addr",
        &n1_address,
        "--token",
        &token,
        "--table",
        "events",
        path(&input),
    ]);
    let count = ok(&[
        "sql",
        "--addr",
        &n1_address,
        "--token",
        &token,
        "--format",
        "csv",
        "SELECT COUNT(*) FROM events",
    ]);
    assert_eq!(count.lines().nth(1), Some("5000"), "{count}");
    let (_coordinator, again) = cluster.coordinator("c1", catalog, &format!("127.0.0.1:{port}"));
    assert_eq!(again, address);
    let status = cluster.wait_status(&address, "n1 and n3 back", |s| {
        states(s)
            == vec![
                ("n1".into(), "up".into()),
                ("n2".into(), "down".into()),
                ("n3".into(), "up".into()),
            ]
    });
    assert_eq!(status["leader"], "c1", "{status:#}");
    drop((n1, n3));
}

#[test]
fn an_embedded_catalog_keeps_the_membership_across_coordinator_restarts() {
    let cluster = Cluster::new();
    let dir = cluster.dir.path().join("catalog");
    membership(&cluster, &["--catalog-dir", path(&dir)]);
    assert!(Path::new(&dir).join("catalog.db").exists());
}

#[test]
fn a_postgres_catalog_keeps_the_membership_and_a_standby_takes_over_from_a_killed_leader() {
    let postgres = tessera_coordinator::testing::PostgresServer::start();
    let cluster = Cluster::new();
    membership(&cluster, &["--catalog", &postgres.url]);

    // Two coordinators on the same catalog: one leads, the other stands by.
    let (first, a) = cluster.coordinator("ca", &["--catalog", &postgres.url], "127.0.0.1:0");
    let (second, b) = cluster.coordinator("cb", &["--catalog", &postgres.url], "127.0.0.1:0");
    let both = format!("{a},{b}");
    let _n4 = cluster.node("n4", &both, "r3");
    // The restarted c1 of `membership` is gone: its lease runs out and ca or cb takes it.
    let status = cluster.wait_status(&both, "led by ca or cb with n4 up", |s| {
        (s["leader"] == "ca" || s["leader"] == "cb")
            && s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["node_id"] == "n4" && n["state"] == "up")
    });
    let (leader, standby, standby_address) = if status["leader"] == "ca" {
        (first, "cb", b.clone())
    } else {
        (second, "ca", a.clone())
    };
    let epoch = status["leader_epoch"].as_u64().unwrap();
    let killed = Instant::now();
    leader.kill();
    let status = cluster.wait_status(&standby_address, "the standby leading", |s| {
        s["leader"] == standby
    });
    let takeover = killed.elapsed();
    assert!(
        status["leader_epoch"].as_u64().unwrap() > epoch,
        "{status:#}"
    );
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}"
    );
    eprintln!("standby took the leader lease {takeover:?} after the leader was killed");
    // The node follows: it heartbeats to the standby, and stays up.
    std::thread::sleep(Duration::from_millis(2500));
    let status = cluster.status(&standby_address);
    let n4 = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "n4")
        .unwrap();
    assert_eq!(n4["state"], "up", "{status:#}");
    assert!(n4["last_seen_ms_ago"].as_i64().unwrap() < 1500, "{n4}");
}
