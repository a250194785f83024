//! The cluster's membership end to end, each piece in its own process: coordinators over an
//! embedded catalog or a real PostgreSQL, three `tessera serve --coordinator` nodes; nodes
//! register and heartbeat, a node killed with SIGKILL is marked down, nodes keep serving with
//! every coordinator down, a coordinator restarted loses nothing, and with two coordinators on
//! PostgreSQL the standby takes the leader lease over when the leader is killed. Replication:
//! a table placed on three nodes takes batches through any node (forwarded to its leader, sent
//! on to its followers), every replica answers the same, a follower killed costs nothing, the
//! leader killed hands over to the replica still in sync with every acknowledged row, and with
//! two of three replicas gone a write with a quorum of two fails clearly while reads go on.
//! Catch-up, re-replication, scrub and repair, drops, query_stats across nodes, and a leader
//! cut off by a network partition (namespaces and veth pairs, root only; skipped with a
//! message elsewhere) that acknowledges nothing and rejoins after healing.

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
    /// The nodes' token (role node): for coordinators and peers.
    node_token: String,
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
        let node_token = ok(&["token", "--secret-file", path(&secret), "--role", "node"])
            .trim()
            .to_owned();
        Cluster {
            dir,
            secret,
            operator,
            node_token,
        }
    }

    /// A coordinator on `catalog` (`--catalog URL` or `--catalog-dir DIR`); its process and address.
    fn coordinator(&self, id: &str, catalog: &[&str], listen: &str) -> (Process, String) {
        self.coordinator_with(id, catalog, listen, &[])
    }

    /// As `coordinator`, with `extra` arguments.
    fn coordinator_with(
        &self,
        id: &str,
        catalog: &[&str],
        listen: &str,
        extra: &[&str],
    ) -> (Process, String) {
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["coordinator", "--listen", listen, "--id", id])
                .args(catalog)
                .args(["--jwt-secret-file", path(&self.secret)])
                .args(["--lease-ms", "1500", "--node-timeout-ms", "2000"])
                .args(["--heartbeat-ms", "200"])
                .args(extra),
        );
        let line = wait_for(&process, "serving on");
        let address = address_in(&line);
        (process, address)
    }

    fn node(&self, id: &str, coordinators: &str, rack: &str) -> Process {
        self.node_with(id, coordinators, rack, &[])
    }

    /// As `node`, with `extra` arguments.
    fn node_with(&self, id: &str, coordinators: &str, rack: &str, extra: &[&str]) -> Process {
        let command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        self.start_node(command, "127.0.0.1:0", id, (coordinators, rack), extra)
    }

    /// A node in network namespace `namespace`, listening on `listen` there.
    fn node_in(&self, namespace: &str, listen: &str, id: &str, coordinators: &str) -> Process {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace, env!("CARGO_BIN_EXE_tessera")]);
        let extra = ["--replication-timeout-ms", "1500"];
        self.start_node(command, listen, id, (coordinators, id), &extra)
    }

    /// Runs `command` (which starts the binary) as node `id` in `rack`, listening on `listen`.
    fn start_node(
        &self,
        mut command: Command,
        listen: &str,
        id: &str,
        (coordinators, rack): (&str, &str),
        extra: &[&str],
    ) -> Process {
        let data = self.dir.path().join(id);
        let process = Process::spawn(
            command
                .args(["serve", "--data", path(&data), "--listen", listen])
                .args(["--http", "off", "--cores", "1"])
                .args(["--jwt-secret-file", path(&self.secret)])
                .args(["--coordinator", coordinators, "--node-id", id])
                .args(["--labels", &format!("host={id},rack={rack}")])
                // Replicas compared every second: a false difference would show as a copy.
                .args(["--anti-entropy-interval-s", "1"])
                .args(extra)
                .env("TESSERA_CLUSTER_TOKEN", &self.node_token),
        );
        wait_for(&process, "tessera serving");
        process
    }

    fn tenant_token(&self, tenant: &str, role: &str) -> String {
        ok(&[
            "token",
            "--secret-file",
            path(&self.secret),
            "--tenant",
            tenant,
            "--role",
            role,
        ])
        .trim()
        .to_owned()
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

    /// `tessera admin cluster files --json` for one of acme's tables: as its leader reported it.
    fn wait_files(
        &self,
        coordinators: &str,
        table: &str,
        what: &str,
        test: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = ok(&[
                "admin",
                "cluster",
                "files",
                "--addr",
                coordinators,
                "--token",
                &self.operator,
                "--tenant",
                "acme",
                "--table",
                table,
                "--json",
            ]);
            let files: serde_json::Value = serde_json::from_str(&out).unwrap();
            if test(&files[0]) {
                return files[0].clone();
            }
            assert!(Instant::now() < deadline, "never {what}: {files:#}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `test` holds for the status; the status.
    fn wait_status(
        &self,
        coordinators: &str,
        what: &str,
        test: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_status_of(coordinators, what, &Default::default(), test)
    }

    /// As `wait_status`, showing the nodes' logs when it never holds.
    fn wait_status_of(
        &self,
        coordinators: &str,
        what: &str,
        nodes: &std::collections::BTreeMap<String, Process>,
        test: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(coordinators);
            if test(&status) {
                return status;
            }
            if Instant::now() >= deadline {
                for (id, node) in nodes {
                    eprintln!("== node {id} said:\n{}", node.log());
                }
                panic!("never {what}: {status:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// (node id, `field`) of every node in the coordinators' status.
fn node_field(status: &serde_json::Value, field: &str) -> Vec<(String, String)> {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().to_owned(),
                n[field].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn states(status: &serde_json::Value) -> Vec<(String, String)> {
    node_field(status, "state")
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

    // A table on the two nodes left (n1 and n3), then the coordinator killed: with no
    // coordinator at all, writes into the table and queries go on from the routing the nodes
    // hold; a new table waits for a coordinator and says so. Then the coordinator started
    // again on the same catalog: every node is still known, the living ones heartbeat again.
    let port = address.rsplit_once(':').unwrap().1.to_owned();
    let address_of = addresses(&cluster.status(&address));
    let admin = cluster.tenant_token("acme", "admin");
    let client = Clients::new(&admin);
    client
        .block_on(
            client
                .session(&address_of["n1"])
                .create_replicated_table(events_spec(), 2, 2),
        )
        .unwrap();
    // n3 learns the placement with its next heartbeat (before the coordinator goes).
    n3.wait_for_line("n3 holding the placement", |l| {
        l.contains("routing table updated")
            && (l.contains("tables=1") || l.contains("\"tables\":1"))
    });
    coordinator.kill();
    let session = client.session(&address_of["n3"]);
    let mut stream = client
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    for batch in 0..5 {
        client
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    for node in ["n1", "n3"] {
        wait_for_rows(&address_of[node], &admin, (5000, sum_to(5000)));
    }
    let input = cluster.dir.path().join(format!("events-{port}.parquet"));
    ok(&["gen", "events", "--rows", "100", "--out", path(&input)]);
    let refused = support::tessera(&[
        "import",
        "--addr",
        &address_of["n1"],
        "--token",
        &admin,
        "--table",
        "other",
        path(&input),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("metadata changes wait for one"), "{stderr}");
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

/// The one table's entry in the coordinators' status.
fn status_table(cluster: &Cluster, coordinator: &str) -> serde_json::Value {
    cluster.status(coordinator)["tables"][0].clone()
}

/// Node addresses by id, from the coordinators' status.
fn addresses(status: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    node_field(status, "address").into_iter().collect()
}

/// Tenant sessions with nodes, on a runtime of the test's own.
struct Clients {
    runtime: tokio::runtime::Runtime,
    token: String,
}

impl Clients {
    fn new(token: &str) -> Clients {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Clients {
            runtime,
            token: token.to_owned(),
        }
    }

    fn block_on<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    fn session(&self, address: &str) -> tessera_rpc::Session {
        self.runtime.block_on(async {
            let client = tessera_rpc::Client::connect(address).await.unwrap();
            client.login(&self.token).await.unwrap()
        })
    }
}

/// `events (ts timestamp, v int64)`, partitioned by day of `ts`.
fn events_spec() -> tessera_rpc::client::TableSpec {
    let column = |name: &str, column_type: &str| tessera_rpc::client::ColumnInfo {
        name: name.into(),
        column_type: column_type.into(),
        nullable: false,
    };
    tessera_rpc::client::TableSpec {
        name: "events".into(),
        columns: vec![column("ts", "timestamp"), column("v", "int64")],
        time_column: Some("ts".into()),
        ..Default::default()
    }
}

/// A batch of `rows` events whose `v` runs from `first`.
fn events(first: i64, rows: i64) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, Int64Array, TimestampMicrosecondArray};
    let ts: ArrayRef = std::sync::Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (first..first + rows).map(|v| 1_767_225_600_000_000 + v * 1_000_000),
        )
        .with_timezone("UTC"),
    );
    let v: ArrayRef = std::sync::Arc::new(Int64Array::from_iter_values(first..first + rows));
    arrow_array::RecordBatch::try_from_iter([("ts", ts), ("v", v)]).unwrap()
}

/// `COUNT(*)` and `SUM(v)` of the events on the node at `address`.
fn count_and_sum(address: &str, token: &str) -> Result<(i64, i64), String> {
    let out = support::tessera(&[
        "sql",
        "--addr",
        address,
        "--token",
        token,
        "--format",
        "csv",
        // The partition test's nodes are on a private subnet, not loopback.
        "--insecure",
        "SELECT COUNT(*), SUM(v) FROM events",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let row = text.lines().nth(1).ok_or(text.clone())?;
    let (count, sum) = row.split_once(',').ok_or(text.clone())?;
    Ok((count.parse().unwrap(), sum.parse().unwrap_or(0)))
}

/// Waits until the node at `address` answers `expected` (replicas catch up within the
/// replication timeout; a quorum acknowledges before every replica has a batch).
fn wait_for_rows(address: &str, token: &str, expected: (i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = count_and_sum(address, token);
        if got.as_ref() == Ok(&expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address}: {got:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum of `v` over batches 0..n of 1,000 rows each (v runs from 0).
fn sum_to(rows: i64) -> i64 {
    rows * (rows - 1) / 2
}

/// Nodes (n1, n2, ... in racks r1, r2, ...) on one coordinator over an embedded catalog, and
/// `events` placed on three of them (RF 3, W 2) through n1.
struct Replicated {
    cluster: Cluster,
    _coordinator: Process,
    coordinator: String,
    nodes: std::collections::BTreeMap<String, Process>,
    /// RPC addresses by node id, as the nodes first registered.
    address: std::collections::BTreeMap<String, String>,
    /// The tenant's admin token, and sessions made with it.
    admin: String,
    clients: Clients,
    leader: String,
    followers: Vec<String>,
}

impl Replicated {
    fn start(count: usize, coordinator_args: &[&str]) -> Replicated {
        Replicated::start_with(count, coordinator_args, &[])
    }

    fn start_with(count: usize, coordinator_args: &[&str], node_args: &[&str]) -> Replicated {
        let cluster = Cluster::new();
        let catalog = cluster.dir.path().join("catalog");
        let (process, coordinator) = cluster.coordinator_with(
            "c1",
            &["--catalog-dir", path(&catalog)],
            "127.0.0.1:0",
            coordinator_args,
        );
        let ids: Vec<String> = (1..=count).map(|i| format!("n{i}")).collect();
        let nodes: std::collections::BTreeMap<String, Process> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let rack = format!("r{}", i + 1);
                (
                    id.clone(),
                    cluster.node_with(id, &coordinator, &rack, node_args),
                )
            })
            .collect();
        let names: Vec<&str> = ids.iter().map(String::as_str).collect();
        let status =
            cluster.wait_status(&coordinator, "all up", |s| states(s) == all(&names, "up"));
        let address = addresses(&status);
        let admin = cluster.tenant_token("acme", "admin");
        let clients = Clients::new(&admin);
        clients
            .block_on(
                clients
                    .session(&address["n1"])
                    .create_replicated_table(events_spec(), 3, 2),
            )
            .unwrap();
        let status = cluster.status(&coordinator);
        let placed = &status["tables"][0];
        assert_eq!(placed["table"], "events", "{status:#}");
        assert_eq!(placed["healthy_replicas"], 3, "{status:#}");
        let leader = placed["leader"].as_str().unwrap().to_owned();
        let followers = replica_ids(placed)
            .into_iter()
            .filter(|n| *n != leader)
            .collect();
        Replicated {
            cluster,
            _coordinator: process,
            coordinator,
            nodes,
            address,
            admin,
            clients,
            leader,
            followers,
        }
    }
}

/// The node ids of a table's replicas in the coordinators' status.
fn replica_ids(table: &serde_json::Value) -> Vec<String> {
    table["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_table_on_three_nodes_replicates_every_batch_and_a_quorum_decides() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start(3, &[]);
    let runtime = &clients.runtime;
    let session = |node: &str| clients.session(&address[node]);

    // Described on a replica.
    let described = runtime
        .block_on(session(&leader).describe("events"))
        .unwrap();
    assert_eq!(described.columns.len(), 2);

    // A table on two of the three nodes: the third takes its writes (forwarded to the
    // leader) and answers its queries (run on a replica, streamed on).
    let pair = tessera_rpc::client::TableSpec {
        name: "pair".into(),
        ..events_spec()
    };
    runtime
        .block_on(session("n1").create_replicated_table(pair, 2, 2))
        .unwrap();
    let status = cluster.status(&coordinator);
    let pair_placement = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "pair")
        .unwrap()
        .clone();
    let holders: Vec<&str> = pair_placement["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap())
        .collect();
    let outsider = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| !holders.contains(n))
        .unwrap();
    let via_outsider = session(outsider);
    let mut stream = runtime
        .block_on(via_outsider.ingest_stream("pair", "p"))
        .unwrap();
    for batch in 0..3 {
        runtime
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    let answer = runtime
        .block_on(via_outsider.query_collect("SELECT COUNT(*), SUM(v) FROM pair"))
        .unwrap();
    let count = answer.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(count, 3000);
    let missing = runtime
        .block_on(via_outsider.query_collect("SELECT nope FROM pair"))
        .unwrap_err();
    // The replica's own error, as it gave it.
    assert_eq!(missing.code(), "sql", "{missing}");
    assert!(
        missing.to_string().contains("unknown column nope"),
        "{missing}"
    );
    // Described and listed through the outsider, as a replica sees the table.
    let described = runtime.block_on(via_outsider.describe("pair")).unwrap();
    assert_eq!(described.columns.len(), 2);
    let listed = runtime.block_on(via_outsider.tables()).unwrap();
    let mut names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["events", "pair"]);
    // Dropped through the outsider: gone from both replicas and from the catalog.
    assert!(runtime.block_on(via_outsider.drop_table("pair")).unwrap());
    let status = cluster.status(&coordinator);
    assert!(
        status["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["table"] != "pair"),
        "{status:#}"
    );
    for holder in &holders {
        let copy = cluster.dir.path().join(holder).join("acme").join("pair");
        assert!(!copy.exists(), "{holder} kept its copy");
    }
    let gone = runtime
        .block_on(via_outsider.query_collect("SELECT COUNT(*) FROM pair"))
        .unwrap_err();
    assert_eq!(gone.code(), "not_found", "{gone}");

    // Written through a follower: forwarded to the leader, which replicates.
    let via = session(&followers[0]);
    let mut stream = runtime
        .block_on(via.ingest_stream("events", "producer-1"))
        .unwrap();
    for batch in 0..20 {
        let ack = runtime
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
        assert!(ack.durable && !ack.duplicate && ack.rows == 1000, "{ack:?}");
    }
    // A batch sent again is applied once, wherever it lands.
    let again = runtime
        .block_on(stream.append(7, &events(7000, 1000)))
        .unwrap();
    assert!(again.duplicate, "{again:?}");
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, (20_000, sum_to(20_000)));
    }
    // query_stats through any node holds every node's queries, each once, named by node.
    let stats = runtime
        .block_on(session("n1").query_collect(
            "SELECT node, COUNT(*) AS queries FROM query_stats \
             WHERE sql = 'SELECT COUNT(*), SUM(v) FROM events' GROUP BY node ORDER BY node",
        ))
        .unwrap();
    let asked = arrow_array::cast::AsArray::as_string::<i32>(stats.batches[0].column(0));
    assert_eq!(
        asked.iter().map(Option::unwrap).collect::<Vec<_>>(),
        ["n1", "n2", "n3"],
        "{:?}",
        stats.batches
    );
    // The nodes' reads of each other's query_stats are not queries of the tenant's.
    let peer_reads = runtime
        .block_on(session("n2").query_collect(
            "SELECT COUNT(*) FROM query_stats WHERE sql = 'SELECT * FROM query_stats'",
        ))
        .unwrap();
    let count = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
        peer_reads.batches[0].column(0),
    );
    assert_eq!(count.value(0), 0);
    // Another tenant's query is its own; an operator sees every tenant's, from every node.
    let other = cluster.tenant_token("other", "reader");
    sql_lines(&address["n3"], &other, "SELECT COUNT(*) FROM query_stats");
    let mine = sql_lines(
        &address["n1"],
        &admin,
        "SELECT COUNT(*) FROM query_stats WHERE tenant <> 'acme'",
    );
    assert_eq!(mine[1], "0", "{mine:?}");
    let seen = ok(&[
        "sql",
        "--addr",
        &address["n2"],
        "--token",
        &cluster.operator,
        "--operator",
        "--format",
        "csv",
        "SELECT tenant, node FROM query_stats WHERE sql LIKE 'SELECT COUNT(*)%' GROUP BY \
         tenant, node ORDER BY tenant, node",
    ]);
    let seen: Vec<&str> = seen.lines().skip(1).collect();
    assert_eq!(
        seen,
        ["acme,n1", "acme,n2", "acme,n3", "other,n3"],
        "{seen:?}"
    );
    // A node token reads a node's own records only; an operator's view is for operators.
    let refused = support::tessera(&[
        "sql",
        "--addr",
        &address["n2"],
        "--token",
        &cluster.node_token,
        "--operator",
        "SELECT COUNT(*) FROM query_stats",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("permission"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A follower killed: writes go on with the leader and the other follower (W = 2).
    nodes.remove(&followers[1]).unwrap().kill();
    let direct = session(&leader);
    let mut stream = runtime
        .block_on(direct.ingest_stream("events", "producer-2"))
        .unwrap();
    for batch in 20..40 {
        runtime
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    for node in [&leader, &followers[0]] {
        wait_for_rows(&address[node], &admin, (40_000, sum_to(40_000)));
    }
    cluster.wait_status(&coordinator, "the killed follower down", |s| {
        s["tables"][0]["healthy_replicas"] == 2
    });
    // The leader took it out of the in-sync set before acknowledging without it.
    let table = status_table(&cluster, &coordinator);
    let killed = table["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node_id"] == followers[1].as_str())
        .unwrap()
        .clone();
    assert_eq!(killed["in_sync"], false, "{table:#}");

    // The leader killed: leadership moves to the follower still in sync, which holds every
    // acknowledged batch. Writes needing two in-sync replicas now fail and say why; reads go on.
    let epoch = status_table(&cluster, &coordinator)["epoch"]
        .as_u64()
        .unwrap();
    nodes.remove(&leader).unwrap().kill();
    let survivor = followers[0].clone();
    let status = cluster.wait_status(&coordinator, "the survivor leading", |s| {
        s["tables"][0]["leader"] == survivor.as_str()
    });
    assert!(
        status["tables"][0]["epoch"].as_u64().unwrap() > epoch,
        "{status:#}"
    );
    wait_for_rows(&address[&survivor], &admin, (40_000, sum_to(40_000)));
    let direct = session(&survivor);
    let mut stream = runtime
        .block_on(direct.ingest_stream("events", "producer-3"))
        .unwrap();
    // Until the survivor's routing shows it leading, it forwards to the dead leader and fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        let refused = runtime
            .block_on(stream.append(40, &events(40_000, 1000)))
            .unwrap_err();
        assert_eq!(refused.code(), "unavailable", "{refused}");
        let message = refused.to_string();
        if message.contains("durable on 1 of 3 replicas") {
            break message;
        }
        assert!(Instant::now() < deadline, "{message}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(message.contains("send it again with its key"), "{message}");
    // The refused batch is durable on the survivor (and applied once when sent again).
    wait_for_rows(&address[&survivor], &admin, (41_000, sum_to(41_000)));
    let resent = runtime
        .block_on(stream.append(40, &events(40_000, 1000)))
        .unwrap_err();
    assert_eq!(resent.code(), "unavailable", "{resent}");
    wait_for_rows(&address[&survivor], &admin, (41_000, sum_to(41_000)));

    // A deposed leader (an older epoch) cannot have a replica take its batches.
    let epoch = status_table(&cluster, &coordinator)["epoch"]
        .as_u64()
        .unwrap();
    let peer = runtime.block_on(async {
        let client = tessera_rpc::Client::connect(&address[&survivor])
            .await
            .unwrap();
        client
            .peer_login(&cluster.node_token, "acme", false)
            .await
            .unwrap()
    });
    let mut deposed = runtime
        .block_on(peer.replica_stream("events", "deposed", epoch - 1))
        .unwrap();
    let fenced = runtime
        .block_on(deposed.append(0, &events(0, 10)))
        .unwrap_err();
    assert_eq!(fenced.code(), "unavailable", "{fenced}");
    assert!(fenced.to_string().contains("fenced"), "{fenced}");
    wait_for_rows(&address[&survivor], &admin, (41_000, sum_to(41_000)));

    // A replicated table is dropped only once every replica has dropped its copy: two are
    // down, so it stays placed (the survivor's copy is gone; dropping again finishes it).
    let refused = runtime
        .block_on(session(&survivor).drop_table("events"))
        .unwrap_err();
    assert_eq!(refused.code(), "unavailable", "{refused}");
    assert!(
        refused.to_string().contains("not dropped on every replica"),
        "{refused}"
    );
    let status = cluster.status(&coordinator);
    assert_eq!(status["tables"][0]["table"], "events", "{status:#}");
}

/// Appends batches of 1,000 events through `address` as `producer`, from `first` on, until
/// `stop` is set; each batch is sent again until acknowledged (its key makes it apply once).
/// Returns the number of batches acknowledged.
fn write_until(
    address: String,
    token: String,
    producer: &'static str,
    first: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<i64> {
    write_batches_until(address, token, ("events", producer, events), first, stop)
}

/// As `write_until`, into `table` with batches made by `make(first row, rows)`.
fn write_batches_until(
    address: String,
    token: String,
    (table, producer, make): (
        &'static str,
        &'static str,
        fn(i64, i64) -> arrow_array::RecordBatch,
    ),
    first: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let clients = Clients::new(&token);
        let session = clients.session(&address);
        let mut stream = clients
            .block_on(session.ingest_stream(table, producer))
            .unwrap();
        let mut batch = first;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            match clients.block_on(stream.append(batch as u64, &make(batch * 1000, 1000))) {
                Ok(ack) => {
                    assert!(ack.durable, "{ack:?}");
                    batch += 1;
                }
                Err(error) => {
                    assert_eq!(error.code(), "unavailable", "{error}");
                    assert!(Instant::now() < deadline, "{error}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        batch - first
    })
}

/// Writes `batch` to a Parquet file in `dir` (another writer than the engine's).
fn parquet_file(dir: &Path, name: &str, batch: &arrow_array::RecordBatch) -> PathBuf {
    let file = dir.join(name);
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    file
}

/// `tessera import` of `file` into `table` through the node at `address`.
fn import_into(table: &str, address: &str, token: &str, file: &Path) -> std::process::Output {
    support::tessera(&[
        "import",
        "--addr",
        address,
        "--token",
        token,
        "--table",
        table,
        path(file),
    ])
}

#[test]
fn a_bulk_import_into_a_replicated_table_reaches_every_replica_or_none() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start(3, &[]);
    let dir = cluster.dir.path();

    // Through a follower (forwarded to the leader as it comes), then through the leader: both
    // imports are on every replica, each answering from its own copy, once committed.
    let first = parquet_file(dir, "first.parquet", &events(0, 40_000));
    let out = import_into("events", &address[&followers[0]], &admin, &first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in ["n1", "n2", "n3"] {
        assert_eq!(
            count_and_sum(&address[node], &admin),
            Ok((40_000, sum_to(40_000))),
            "{node}"
        );
    }
    let session = clients.session(&address[&leader]);
    let summary = clients
        .block_on(session.import("events", vec![events(40_000, 20_000)]))
        .unwrap();
    assert_eq!(summary.rows, 20_000);
    let both = (60_000, sum_to(60_000));
    for node in ["n1", "n2", "n3"] {
        assert_eq!(count_and_sum(&address[node], &admin), Ok(both), "{node}");
    }
    // Streaming ingestion goes on beside imports.
    let mut stream = clients
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    clients
        .block_on(stream.append(0, &events(60_000, 1000)))
        .unwrap();

    // Every replica holds files of its own with the same rows: comparing replicas (every
    // second here) finds nothing to copy, and every replica stays in sync.
    std::thread::sleep(Duration::from_secs(3));
    let status = cluster.status(&coordinator);
    assert_eq!(status["tables"][0]["healthy_replicas"], 3, "{status:#}");
    let log = nodes[&leader].log();
    assert!(!log.contains("differs from"), "{log}");
    assert!(!log.contains("caught up"), "{log}");

    // A stream that is not the table's shape: refused with the leader's error, through a
    // follower too, and nothing imported.
    let wrong = dir.join("wrong.parquet");
    ok(&["gen", "events", "--rows", "100", "--out", path(&wrong)]);
    let out = import_into("events", &address[&followers[1]], &admin, &wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("schema mismatch") || stderr.contains("does not match"),
        "{stderr}"
    );

    // A new table created by the import: split into three partitions by `v`, two replicas
    // each, every row once whichever node answers.
    let out = support::tessera(&[
        "import",
        "--addr",
        &address[&followers[1]],
        "--token",
        &admin,
        "--table",
        "split",
        "--partitions",
        "3",
        "--partition-key",
        "v",
        "--replication-factor",
        "2",
        path(&first),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = cluster.status(&coordinator);
    let parts: Vec<&serde_json::Value> = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["table"].as_str().unwrap().starts_with("split.p"))
        .collect();
    assert_eq!(parts.len(), 3, "{status:#}");
    assert!(
        parts.iter().all(|t| replica_ids(t).len() == 2),
        "{status:#}"
    );
    for node in ["n1", "n2", "n3"] {
        let lines = sql_lines(&address[node], &admin, "SELECT COUNT(*), SUM(v) FROM split");
        assert_eq!(lines[1], format!("40000,{}", sum_to(40_000)), "{node}");
    }

    // One follower down: two of three replicas take the import (W = 2), and the one that
    // missed it leaves the in-sync set.
    let (down, last) = (followers[0].clone(), followers[1].clone());
    nodes.remove(&down).unwrap().kill();
    let third = parquet_file(dir, "third.parquet", &events(61_000, 9_000));
    let out = import_into("events", &address[&leader], &admin, &third);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = (70_000, sum_to(70_000));
    assert_eq!(count_and_sum(&address[&last], &admin), Ok(all));
    let status = cluster.status(&coordinator);
    assert_eq!(status["tables"][0]["healthy_replicas"], 2, "{status:#}");

    // Two down: the import is durable on the leader alone, so nothing is imported anywhere.
    nodes.remove(&last).unwrap().kill();
    let fourth = parquet_file(dir, "fourth.parquet", &events(70_000, 5_000));
    let out = import_into("events", &address[&leader], &admin, &fourth);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("durable on 1 of 3 replicas"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(count_and_sum(&address[&leader], &admin), Ok(all));

    // Both back: the leader copies them the table, and every replica answers the same.
    for (node, rack) in [(&down, "r8"), (&last, "r9")] {
        nodes.insert(node.clone(), cluster.node(node, &coordinator, rack));
    }
    let status = cluster.wait_status_of(&coordinator, "every replica back in sync", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    let address = addresses(&status);
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, all);
    }

    // Rows of the next day, then the first day's partitions dropped through a follower: on
    // every in-sync replica at once, and on every partition of a partitioned table.
    let status = cluster.status(&coordinator);
    let leader = status["tables"][0]["leader"].as_str().unwrap().to_owned();
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let next_day = parquet_file(dir, "next_day.parquet", &events(100_000, 10_000));
    let out = import_into("events", &address[follower], &admin, &next_day);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Compacted through a follower: every replica compacts its own copy, partitions too.
    for table in ["events", "split"] {
        ok(&[
            "admin",
            "compact",
            "--addr",
            &address[follower],
            "--token",
            &admin,
            "--table",
            table,
        ]);
    }
    let with_next_day = (80_000, sum_to(70_000) + (100_000..110_000).sum::<i64>());
    for node in ["n1", "n2", "n3"] {
        assert_eq!(
            count_and_sum(&address[node], &admin),
            Ok(with_next_day),
            "{node}"
        );
    }
    for table in ["events", "split"] {
        let dropped = ok(&[
            "admin",
            "drop-partitions",
            "--addr",
            &address[follower],
            "--token",
            &admin,
            "--table",
            table,
            "--before",
            "2026-01-02",
        ]);
        assert!(dropped.contains("2026-01-01"), "{table}: {dropped}");
    }
    let kept = (10_000, (100_000..110_000).sum::<i64>());
    for node in ["n1", "n2", "n3"] {
        assert_eq!(count_and_sum(&address[node], &admin), Ok(kept), "{node}");
        let lines = sql_lines(&address[node], &admin, "SELECT COUNT(*) FROM split");
        assert_eq!(lines[1], "0", "{node}");
    }
    // Replicas compared since agree: none is copied again.
    std::thread::sleep(Duration::from_secs(2));
    let log = nodes[&leader].log();
    assert!(!log.contains("differs from"), "{log}");

    // A tenant's quota set through one node is in the catalog and in force on every node:
    // with a storage quota of one byte, an import through any node is refused.
    let operator = |node: &str| {
        let address = address[node].clone();
        let token = cluster.operator.clone();
        clients.block_on(async move {
            let client = tessera_rpc::Client::connect(&address).await.unwrap();
            client.operator_login(&token).await.unwrap()
        })
    };
    let quota = tessera_rpc::client::TenantQuota {
        storage_bytes: 1,
        concurrent_queries: 7,
        ..Default::default()
    };
    clients
        .block_on(operator(follower).set_quota("acme", quota))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in ["n1", "n2", "n3"] {
        let session = operator(node);
        loop {
            let (held, _) = clients.block_on(session.quota("acme")).unwrap();
            if held == quota {
                break;
            }
            assert!(Instant::now() < deadline, "{node} holds {held:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = import_into("events", &address[node], &admin, &next_day);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{node}");
        assert!(stderr.contains("limit"), "{node}: {stderr}");
    }
    assert_eq!(count_and_sum(&address[&leader], &admin), Ok(kept));

    // A tenant whose tables are placed in the cluster is not dropped on one node.
    let refused = clients
        .block_on(operator(follower).drop_tenant("acme"))
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("placed in the cluster (events, split)"),
        "{refused}"
    );
}

/// Whether `dir` (a table's `_staging`) holds any Parquet file, at any depth.
fn holds_parquet(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.is_dir() && holds_parquet(&path) || path.extension().is_some_and(|e| e == "parquet")
    })
}

#[test]
fn an_import_interrupted_by_a_killed_replica_is_published_whole_or_not_at_all() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start(3, &[]);
    let staging = |node: &str| cluster.dir.path().join(node).join("acme/events/_staging");
    let session = clients.session(&address[&leader]);
    clients
        .block_on(session.import("events", vec![events(0, 10_000)]))
        .unwrap();
    let before = (10_000, sum_to(10_000));

    // Staged on every replica (prepared), then the leader killed before it publishes: the
    // followers discard the files, and nothing of the import is anywhere.
    let mut import = clients.block_on(session.import_writer("events")).unwrap();
    clients
        .block_on(import.write(&events(10_000, 30_000)))
        .unwrap();
    clients.block_on(import.prepare()).unwrap();
    for follower in &followers {
        assert!(
            holds_parquet(&staging(follower)),
            "{follower} staged nothing"
        );
    }
    nodes.remove(&leader).unwrap().kill();
    assert!(clients.block_on(import.commit()).is_err());
    let deadline = Instant::now() + Duration::from_secs(20);
    while followers.iter().any(|f| holds_parquet(&staging(f))) {
        assert!(
            Instant::now() < deadline,
            "a follower kept the staged import"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.wait_status(&coordinator, "a new leader", |s| {
        s["tables"][0]["leader"] != leader.as_str()
    });
    for follower in &followers {
        assert_eq!(
            count_and_sum(&address[follower], &admin),
            Ok(before),
            "{follower}"
        );
    }

    // The old leader back, then a follower killed once the import is staged: the leader and
    // the other replica publish it (W 2) and acknowledge; the killed one leaves the in-sync set
    // and, back, is copied the table with the import.
    nodes.insert(leader.clone(), cluster.node(&leader, &coordinator, "r8"));
    let status = cluster.wait_status_of(&coordinator, "three replicas in sync", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    let address = addresses(&status);
    // (Leadership may have moved back meanwhile.)
    let new_leader = status["tables"][0]["leader"].as_str().unwrap().to_owned();
    let victim = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != new_leader)
        .unwrap()
        .to_owned();
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != new_leader && *n != victim)
        .unwrap();
    let session = clients.session(&address[&new_leader]);
    let mut import = clients.block_on(session.import_writer("events")).unwrap();
    clients
        .block_on(import.write(&events(10_000, 30_000)))
        .unwrap();
    clients.block_on(import.prepare()).unwrap();
    nodes.remove(&victim).unwrap().kill();
    let summary = clients.block_on(import.commit()).unwrap();
    assert_eq!(summary.rows, 30_000);
    let after = (40_000, sum_to(40_000));
    assert_eq!(count_and_sum(&address[&new_leader], &admin), Ok(after));
    assert_eq!(count_and_sum(&address[other], &admin), Ok(after));
    nodes.insert(victim.clone(), cluster.node(&victim, &coordinator, "r9"));
    let status = cluster.wait_status_of(&coordinator, "the killed follower copied", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    let address = addresses(&status);
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, after);
    }
}

#[test]
fn a_follower_that_missed_batches_catches_up_and_holds_every_acknowledged_row() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start(3, &[]);
    let (behind, other) = (followers[0].clone(), followers[1].clone());
    let session = clients.session(&address[&leader]);
    let mut stream = clients
        .block_on(session.ingest_stream("events", "before"))
        .unwrap();
    for batch in 0..10 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    // Flushed to files on every replica, then more batches only in the logs and buffers.
    clients.block_on(stream.flush()).unwrap();
    // Its leader reports the files' size with its heartbeats (rebalancing weighs by it).
    cluster.wait_status(&coordinator, "the table's size reported", |s| {
        s["tables"][0]["bytes"].as_u64().is_some_and(|b| b > 0)
    });
    for batch in 10..15 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }

    // One follower killed: it misses batches and leaves the in-sync set.
    nodes.remove(&behind).unwrap().kill();
    for batch in 15..30 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    cluster.wait_status(&coordinator, "the killed follower out of sync", |s| {
        s["tables"][0]["healthy_replicas"] == 2
    });

    // Back, with what it had before (files, logs): while a producer writes on, the leader
    // copies the table to it and puts it back in sync.
    nodes.insert(behind.clone(), cluster.node(&behind, &coordinator, "r9"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_until(
        address[&leader].clone(),
        admin.clone(),
        "during",
        30,
        stop.clone(),
    );
    let status = cluster.wait_status_of(&coordinator, "the follower back in sync", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    let table = &status["tables"][0];
    assert!(
        table["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["in_sync"] == true),
        "{status:#}"
    );
    // Writes go on a little with the follower in sync (each now waits for it too).
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = writer.join().unwrap();
    assert!(
        during > 0,
        "no batch was acknowledged while the follower caught up"
    );
    let batches = 30 + during;
    let expected = (batches * 1000, sum_to(batches * 1000));
    let address = addresses(&cluster.status(&coordinator));
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, expected);
    }

    // The leader and the other follower killed: the caught-up follower is the one replica
    // left, leads, and holds every acknowledged row exactly once.
    nodes.remove(&leader).unwrap().kill();
    nodes.remove(&other).unwrap().kill();
    cluster.wait_status(&coordinator, "the caught-up follower leading", |s| {
        s["tables"][0]["leader"] == behind.as_str()
    });
    wait_for_rows(&address[&behind], &admin, expected);
    // It answers the same after a restart: its log and the installed files agree on what
    // it holds (records of the replaced incarnation are skipped).
    nodes.remove(&behind).unwrap().kill();
    nodes.insert(behind.clone(), cluster.node(&behind, &coordinator, "r9"));
    let before = address[&behind].clone();
    let status = cluster.wait_status(&coordinator, "the follower registered again", |s| {
        addresses(s)[&behind] != before
    });
    wait_for_rows(&addresses(&status)[&behind], &admin, expected);
}

#[test]
fn a_node_down_past_the_grace_period_has_its_replica_copied_elsewhere_and_trimmed_on_return() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start(4, &["--rereplicate-after-ms", "1500"]);
    let gone = followers[0].clone();
    let spare = ["n1", "n2", "n3", "n4"]
        .into_iter()
        .find(|n| *n != leader && !followers.contains(&n.to_string()))
        .unwrap()
        .to_owned();
    let session = clients.session(&address[&leader]);
    let mut stream = clients
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    for batch in 0..20 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
        if batch == 9 {
            clients.block_on(stream.flush()).unwrap();
        }
    }
    nodes.remove(&gone).unwrap().kill();
    for batch in 20..30 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    // Down past the grace period: its replica moves to the spare node, which the leader
    // copies the table to; three healthy replicas again.
    let status =
        cluster.wait_status_of(&coordinator, "the replica moved and in sync", &nodes, |s| {
            let table = &s["tables"][0];
            let replicas = replica_ids(table);
            table["healthy_replicas"] == 3 && replicas.contains(&spare) && !replicas.contains(&gone)
        });
    assert_eq!(status["tables"][0]["leader"], leader.as_str(), "{status:#}");
    let expected = (30_000, sum_to(30_000));
    for node in [&leader, &followers[1], &spare] {
        wait_for_rows(&address[node], &admin, expected);
    }
    // Writes wait for the new replica too.
    for batch in 30..35 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    let expected = (35_000, sum_to(35_000));
    wait_for_rows(&address[&spare], &admin, expected);

    // The node back: its copy is removed (the catalog placed the replica elsewhere), and it
    // answers through a replica.
    nodes.insert(gone.clone(), cluster.node(&gone, &coordinator, "r9"));
    let table_dir = cluster.dir.path().join(&gone).join("acme").join("events");
    let deadline = Instant::now() + Duration::from_secs(30);
    while table_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "the returned node kept its copy:\n{}",
            nodes[&gone].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = cluster.status(&coordinator);
    wait_for_rows(&addresses(&status)[&gone], &admin, expected);
    assert!(
        !replica_ids(&status["tables"][0]).contains(&gone),
        "{status:#}"
    );
}

/// Waits for every replica of `events` to hold `expected`, then flushes each one's buffered
/// rows into its own files (as a peer: on that node only).
fn flush_every_replica(
    cluster: &Cluster,
    clients: &Clients,
    address: &std::collections::BTreeMap<String, String>,
    token: &str,
    expected: (i64, i64),
) {
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], token, expected);
        clients.block_on(async {
            let client = tessera_rpc::Client::connect(&address[node]).await.unwrap();
            let peer = client
                .peer_login(&cluster.node_token, "acme", false)
                .await
                .unwrap();
            let stream = peer.replica_stream("events", "flush", 0).await.unwrap();
            stream.flush().await.unwrap();
        });
    }
}

/// Flips a byte in the middle of the first data file `node`'s manifest of `events` lists.
fn damage_a_file(cluster: &Cluster, node: &str) {
    let table = cluster.dir.path().join(node).join("acme").join("events");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(table.join("_manifest.json")).unwrap()).unwrap();
    let file = table.join(manifest["files"][0]["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&file, bytes).unwrap();
}

#[test]
fn a_damaged_replica_file_is_found_by_its_checksum_and_copied_again() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start_with(3, &[], &["--scrub-interval-s", "1"]);
    let session = clients.session(&address[&leader]);
    let mut stream = clients
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    for batch in 0..10 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    let expected = (10_000, sum_to(10_000));
    flush_every_replica(&cluster, &clients, &address, &admin, expected);

    // A follower's file damaged: its scrub finds it, it leaves the in-sync set, and the leader
    // copies the table to it again.
    damage_a_file(&cluster, &followers[0]);
    wait_for(&nodes[&followers[0]], "a replica's files are damaged");
    wait_for(&nodes[&leader], "a follower caught up");
    cluster.wait_status_of(&coordinator, "the follower repaired", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    wait_for_rows(&address[&followers[0]], &admin, expected);

    // The leader's file damaged: it steps down to an in-sync follower, which copies the table
    // back to it.
    damage_a_file(&cluster, &leader);
    wait_for(&nodes[&leader], "a replica's files are damaged");
    let status = cluster.wait_status_of(
        &coordinator,
        "the leader stepped down and repaired",
        &nodes,
        |s| s["tables"][0]["leader"] != leader.as_str() && s["tables"][0]["healthy_replicas"] == 3,
    );
    let new_leader = status["tables"][0]["leader"].as_str().unwrap().to_owned();
    wait_for(&nodes[&new_leader], "a follower caught up");
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, expected);
    }
}

/// Takes the first file out of `node`'s manifest of `events` and deletes it, as a lost file or a
/// bug in a flush would: the manifest stays consistent, so no checksum finds the loss.
fn lose_a_file(cluster: &Cluster, node: &str) {
    let table = cluster.dir.path().join(node).join("acme").join("events");
    let path = table.join("_manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let lost = manifest["files"].as_array_mut().unwrap().remove(0);
    let temp = table.join("_manifest.json.edited");
    std::fs::write(&temp, serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    std::fs::remove_file(table.join(lost["path"].as_str().unwrap())).unwrap();
}

/// Rewrites the first file `node`'s manifest of `events` lists with one value of `v` changed
/// (not its smallest or largest) and updates the entry's size, CRC-32 and content digest to
/// match, as a replica that applied a batch wrongly would hold it: its manifest is consistent
/// and its statistics are unchanged, so neither the scrub nor rows, minimum and maximum tell.
fn change_a_value(cluster: &Cluster, node: &str) {
    let table = cluster.dir.path().join(node).join("acme").join("events");
    let path = table.join("_manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = &mut manifest["files"][0];
    let file = table.join(entry["path"].as_str().unwrap());
    let batches: Vec<arrow_array::RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let batch = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let v = batch.schema().index_of("v").unwrap();
    let mut values: Vec<i64> = batch
        .column(v)
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .values()
        .to_vec();
    values[batch.num_rows() / 2] += 1;
    let mut columns = batch.columns().to_vec();
    columns[v] = std::sync::Arc::new(arrow_array::Int64Array::from(values));
    let changed = arrow_array::RecordBatch::try_new(batch.schema(), columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, changed.schema(), None).unwrap();
    writer.write(&changed).unwrap();
    writer.close().unwrap();
    std::fs::write(&file, &bytes).unwrap();
    entry["bytes"] = bytes.len().into();
    entry["crc32"] = crc32fast::hash(&bytes).into();
    entry["digest"] = tessera_storage_engine::table::digest::rows(&changed)
        .unwrap()
        .into();
    manifest["version"] = (manifest["version"].as_u64().unwrap() + 1).into();
    let temp = table.join("_manifest.json.edited");
    std::fs::write(&temp, serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::rename(&temp, &path).unwrap();
}

#[test]
fn a_replica_missing_rows_is_found_by_comparing_replicas_and_copied_again() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        nodes,
        address,
        admin,
        clients,
        leader,
        followers,
    } = Replicated::start(3, &[]);
    let session = clients.session(&address[&leader]);
    let mut stream = clients
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    for batch in 0..10 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    let expected = (10_000, sum_to(10_000));
    flush_every_replica(&cluster, &clients, &address, &admin, expected);
    // The leader reports its files to the catalog, with their statistics.
    let files = cluster.wait_files(&coordinator, "events", "the leader's files", |f| {
        f["leader"] == leader.as_str() && f["rows"] == 10_000
    });
    let first = &files["file_list"][0];
    assert!(
        first["path"].as_str().unwrap().ends_with(".parquet"),
        "{files:#}"
    );
    assert_eq!(
        first["columns"][1]["min"],
        serde_json::json!({"int": 0}),
        "{files:#}"
    );
    // And the table's schema and writer settings.
    assert_eq!(files["schema"]["columns"][0]["name"], "ts", "{files:#}");
    assert_eq!(
        files["schema"]["partition"]["time_column"], "ts",
        "{files:#}"
    );
    assert!(files["writer"]["compression"].is_string(), "{files:#}");
    let status = cluster.status(&coordinator);
    assert_eq!(status["tables"][0]["rows_in_files"], 10_000, "{status:#}");

    // A follower loses a file: the leader's comparison finds it short of rows, takes it out of
    // sync and copies the table to it again.
    lose_a_file(&cluster, &followers[0]);
    let found = wait_for(
        &nodes[&leader],
        "a follower's copy differs from the leader's",
    );
    assert!(
        found.contains(&followers[0]) && found.contains("rows against"),
        "{found}"
    );
    wait_for(&nodes[&leader], "a follower caught up");
    cluster.wait_status_of(&coordinator, "the follower repaired", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    wait_for_rows(&address[&followers[0]], &admin, expected);

    // The leader loses a file: both followers agree with each other, not with it, so it leaves
    // the in-sync set, leadership moves, and the new leader copies the table back to it.
    lose_a_file(&cluster, &leader);
    wait_for(
        &nodes[&leader],
        "this leader's copy differs from every follower's",
    );
    let status = cluster.wait_status_of(
        &coordinator,
        "the leader stepped down and repaired",
        &nodes,
        |s| s["tables"][0]["leader"] != leader.as_str() && s["tables"][0]["healthy_replicas"] == 3,
    );
    let new_leader = status["tables"][0]["leader"].as_str().unwrap().to_owned();
    wait_for(&nodes[&new_leader], "a follower caught up");
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, expected);
    }
    // The new leader's files replace the old leader's in the catalog.
    cluster.wait_files(&coordinator, "events", "the new leader's files", |f| {
        f["leader"] == new_leader.as_str() && f["rows"] == 10_000
    });
    // Writes go on through the comparisons.
    for batch in 10..12 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, (12_000, sum_to(12_000)));
    }
    assert!(!nodes[&new_leader]
        .log()
        .contains("comparing a table's replicas failed"));

    // A follower holding the right number of rows, with one value other than the leader's
    // (its manifest consistent, its statistics unchanged): the content digests differ.
    flush_every_replica(
        &cluster,
        &clients,
        &address,
        &admin,
        (12_000, sum_to(12_000)),
    );
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != new_leader)
        .unwrap();
    change_a_value(&cluster, follower);
    let found = wait_for(&nodes[&new_leader], "content digest");
    assert!(found.contains(follower), "{found}");
    cluster.wait_status_of(&coordinator, "the changed follower repaired", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    wait_for_rows(&address[follower], &admin, (12_000, sum_to(12_000)));
}

/// Network namespaces, each joined to a bridge in this namespace by a veth pair (needs root and
/// `ip`); removed on drop. Namespace `i` (from 1) has address `SUBNET.(10 + i)`, the bridge
/// `SUBNET.1`.
struct Network {
    tag: u32,
    subnet: String,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Network {
    fn create(count: u32) -> Result<Network, String> {
        let tag = std::process::id() % 10_000;
        let mut network = Network {
            tag,
            subnet: format!("10.231.{}", tag % 250),
            namespaces: Vec::new(),
        };
        let bridge = network.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", network.subnet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 1..=count {
            let namespace = format!("tsn{tag}-{i}");
            ip(&["netns", "add", &namespace])?;
            network.namespaces.push(namespace.clone());
            let (host, inside) = (network.link(i), format!("tsv{tag}n{i}"));
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &namespace])?;
            ip(&["link", "set", &host, "master", &bridge])?;
            ip(&["link", "set", &host, "up"])?;
            let address = format!("{}/24", network.address(i));
            ip(&["-n", &namespace, "addr", "add", &address, "dev", &inside])?;
            ip(&["-n", &namespace, "link", "set", &inside, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    fn bridge(&self) -> String {
        format!("tsb{}", self.tag)
    }

    /// The bridge's end of namespace `i`'s veth pair.
    fn link(&self, i: u32) -> String {
        format!("tsv{}h{i}", self.tag)
    }

    fn address(&self, i: u32) -> String {
        format!("{}.{}", self.subnet, 10 + i)
    }

    /// Cuts namespace `i` off from everything else, or joins it again.
    fn set_connected(&self, i: u32, connected: bool) {
        let state = if connected { "up" } else { "down" };
        ip(&["link", "set", &self.link(i), state]).unwrap();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Runs `work` on a thread inside network namespace `namespace` (threads it starts stay there).
fn in_namespace<T: Send + 'static>(
    namespace: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let path = format!("/run/netns/{namespace}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid descriptor of a network namespace; it changes only this
        // thread's namespace.
        let status =
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(status, 0, "setns: {}", std::io::Error::last_os_error());
        work()
    })
    .join()
    .unwrap()
}

#[test]
fn a_leader_cut_off_by_a_network_partition_acknowledges_nothing_and_rejoins_after_healing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: network namespaces need root (run as root, as CI does)");
        return;
    }
    let network = match Network::create(3) {
        Ok(network) => network,
        Err(error) => {
            eprintln!("SKIPPED: network namespaces do not work here: {error}");
            return;
        }
    };
    let cluster = Cluster::new();
    let catalog = cluster.dir.path().join("catalog");
    let (_coordinator, coordinator) = cluster.coordinator(
        "c1",
        &["--catalog-dir", path(&catalog)],
        &format!("{}.1:0", network.subnet),
    );
    let mut nodes = std::collections::BTreeMap::new();
    for i in 1..=3u32 {
        let listen = format!("{}:7070", network.address(i));
        let node = cluster.node_in(
            &network.namespaces[i as usize - 1],
            &listen,
            &format!("n{i}"),
            &coordinator,
        );
        nodes.insert(format!("n{i}"), node);
    }
    let status = cluster.wait_status_of(&coordinator, "all up", &nodes, |s| {
        states(s) == all(&["n1", "n2", "n3"], "up")
    });
    let address = addresses(&status);
    let admin = cluster.tenant_token("acme", "admin");
    let clients = Clients::new(&admin);
    clients
        .block_on(
            clients
                .session(&address["n1"])
                .create_replicated_table(events_spec(), 3, 2),
        )
        .unwrap();
    let leader = status_table(&cluster, &coordinator)["leader"]
        .as_str()
        .unwrap()
        .to_owned();
    let index: u32 = leader[1..].parse().unwrap();
    let session = clients.session(&address[&leader]);
    let mut stream = clients
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    for batch in 0..10 {
        clients
            .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
            .unwrap();
    }

    // The leader cut off from the coordinator and its peers. A client beside it (in its
    // namespace) writes: the batch reaches no follower, and the leader cannot take them out
    // of sync without the catalog, so it acknowledges nothing.
    network.set_connected(index, false);
    let (leader_address, token) = (address[&leader].clone(), admin.clone());
    let refused = in_namespace(&network.namespaces[index as usize - 1], move || {
        let clients = Clients::new(&token);
        let session = clients.session(&leader_address);
        let mut stream = clients
            .block_on(session.ingest_stream("events", "cut-off"))
            .unwrap();
        clients.block_on(stream.append(0, &events(1_000_000, 1000)))
    });
    let refused = refused.unwrap_err();
    assert_eq!(refused.code(), "unavailable", "{refused}");
    // The other side: the coordinator moves leadership to an in-sync follower, which takes
    // writes (W = 2 with the third node).
    let status = cluster.wait_status_of(&coordinator, "a new leader", &nodes, |s| {
        s["tables"][0]["leader"] != leader.as_str()
    });
    let new_leader = status["tables"][0]["leader"].as_str().unwrap().to_owned();
    let session = clients.session(&address[&new_leader]);
    let mut stream = clients
        .block_on(session.ingest_stream("events", "p"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut batch = 10;
    while batch < 20 {
        match clients.block_on(stream.append(batch as u64, &events(batch * 1000, 1000))) {
            Ok(_) => batch += 1,
            // Until the new leader's routing shows it leading (it forwards to the old one).
            Err(error) => {
                assert_eq!(error.code(), "unavailable", "{error}");
                assert!(Instant::now() < deadline, "{error}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    // Healed: the old leader is a follower out of sync, copied from the new leader; every
    // node then holds exactly the acknowledged batches (none of the cut-off one).
    network.set_connected(index, true);
    cluster.wait_status_of(&coordinator, "three healthy replicas", &nodes, |s| {
        s["tables"][0]["healthy_replicas"] == 3
    });
    let expected = (20_000, sum_to(20_000));
    for node in ["n1", "n2", "n3"] {
        wait_for_rows(&address[node], &admin, expected);
    }
}

/// `COUNT(*)` and `SUM(v)` of `table` through `session`.
fn count_and_sum_in(clients: &Clients, session: &tessera_rpc::Session, table: &str) -> (i64, i64) {
    let answer = clients
        .block_on(session.query_collect(&format!("SELECT COUNT(*), SUM(v) FROM {table}")))
        .unwrap();
    let value = |i: usize| {
        arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(
            answer.batches[0].column(i),
        )
        .value(0)
    };
    (value(0), value(1))
}

#[test]
fn a_node_added_to_the_cluster_takes_replicas_over_one_at_a_time() {
    let Replicated {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        clients,
        ..
    } = Replicated::start(3, &[]);
    let tables = ["events", "second", "third"];
    let session = clients.session(&address["n1"]);
    for table in &tables[1..] {
        let spec = tessera_rpc::client::TableSpec {
            name: table.to_string(),
            ..events_spec()
        };
        clients
            .block_on(session.create_replicated_table(spec, 3, 2))
            .unwrap();
    }
    for table in tables {
        let mut stream = clients.block_on(session.ingest_stream(table, "p")).unwrap();
        for batch in 0..5 {
            clients
                .block_on(stream.append(batch as u64, &events(batch * 1000, 1000)))
                .unwrap();
        }
    }
    // Nine replicas on three nodes; a fourth node joins: replicas move onto it one at a time
    // (added, copied, in sync, then removed from a node holding most) until the counts differ
    // by at most one: n4 ends with two.
    nodes.insert("n4".into(), cluster.node("n4", &coordinator, "r4"));
    let status = cluster.wait_status_of(&coordinator, "two replicas on n4", &nodes, |s| {
        let tables = s["tables"].as_array().unwrap();
        let on_n4 = tables
            .iter()
            .filter(|t| replica_ids(t).contains(&"n4".to_owned()))
            .count();
        on_n4 == 2
            && tables
                .iter()
                .all(|t| t["healthy_replicas"] == 3 && replica_ids(t).len() == 3)
    });
    let address = addresses(&status);
    let mut held: std::collections::BTreeMap<String, usize> = Default::default();
    for table in status["tables"].as_array().unwrap() {
        for node in replica_ids(table) {
            *held.entry(node).or_default() += 1;
        }
    }
    assert_eq!(held.len(), 4, "{held:?}");
    assert_eq!(held.values().sum::<usize>(), 9);
    assert!(held.values().all(|&n| (2..=3).contains(&n)), "{held:?}");
    // Every table answers all its rows through the new node; each node keeps copies of only
    // the tables placed on it.
    let through_n4 = clients.session(&address["n4"]);
    for table in tables {
        assert_eq!(
            count_and_sum_in(&clients, &through_n4, table),
            (5000, sum_to(5000)),
            "{table}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for placed in status["tables"].as_array().unwrap() {
        let table = placed["table"].as_str().unwrap();
        for node in ["n1", "n2", "n3", "n4"] {
            let copy = cluster.dir.path().join(node).join("acme").join(table);
            let holds = replica_ids(placed).contains(&node.to_owned());
            while copy.exists() != holds {
                assert!(
                    Instant::now() < deadline,
                    "{node} {table}: copy {}",
                    copy.exists()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `clicks (ts timestamp, user_id int64, region string, v int64)`.
fn clicks_spec() -> tessera_rpc::client::TableSpec {
    let column = |name: &str, column_type: &str, nullable: bool| tessera_rpc::client::ColumnInfo {
        name: name.into(),
        column_type: column_type.into(),
        nullable,
    };
    tessera_rpc::client::TableSpec {
        name: "clicks".into(),
        columns: vec![
            column("ts", "timestamp", false),
            column("user_id", "int64", false),
            column("region", "string", true),
            column("v", "int64", false),
        ],
        time_column: Some("ts".into()),
        ..Default::default()
    }
}

/// One click row: (user, region, v) of row `i`, and the batch of rows `first..first + rows`.
fn click(i: i64) -> (i64, Option<&'static str>, i64) {
    let regions = [Some("eu"), Some("us"), None, Some("apac")];
    let v = if i % 101 == 0 {
        i64::MAX / 4096
    } else {
        i - 500
    };
    (i % 97, regions[(i % 7 % 4) as usize], v)
}

fn clicks(first: i64, rows: i64) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    let range = first..first + rows;
    let ts: ArrayRef = std::sync::Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            range
                .clone()
                .map(|i| 1_767_225_600_000_000 + i * 60_000_000),
        )
        .with_timezone("UTC"),
    );
    let user: ArrayRef = std::sync::Arc::new(Int64Array::from_iter_values(
        range.clone().map(|i| click(i).0),
    ));
    let region: ArrayRef =
        std::sync::Arc::new(range.clone().map(|i| click(i).1).collect::<StringArray>());
    let v: ArrayRef = std::sync::Arc::new(Int64Array::from_iter_values(range.map(|i| click(i).2)));
    arrow_array::RecordBatch::try_from_iter([
        ("ts", ts),
        ("user_id", user),
        ("region", region),
        ("v", v),
    ])
    .unwrap()
}

/// Click rows `rows` (row numbers, see `click`) with a column the table lacks, `note`.
fn clicks_noted(rows: &[i64]) -> arrow_array::RecordBatch {
    use arrow_array::{Array, ArrayRef, StringArray};
    let first = clicks(rows[0], 1);
    let each: Vec<arrow_array::RecordBatch> = rows.iter().map(|&i| clicks(i, 1)).collect();
    let batch = arrow_select::concat::concat_batches(&first.schema(), &each).unwrap();
    let note: ArrayRef = std::sync::Arc::new(StringArray::from_iter_values(
        rows.iter().map(|i| format!("note {i}")),
    ));
    assert_eq!(note.len(), batch.num_rows());
    let mut fields: Vec<(String, ArrayRef)> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| (f.name().clone(), c.clone()))
        .collect();
    fields.push(("note".into(), note));
    arrow_array::RecordBatch::try_from_iter(fields).unwrap()
}

/// A query's rows as text lines (`tessera sql --format csv` through `address`), header first.
fn sql_lines(address: &str, token: &str, sql: &str) -> Vec<String> {
    let out = support::tessera(&[
        "sql", "--addr", address, "--token", token, "--format", "csv", sql,
    ]);
    assert!(
        out.status.success(),
        "{sql} through {address}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The answers a partitioned table holding rows `rows` (row numbers, see `click`) must give,
/// computed here row by row: (SQL, expected CSV lines after the header).
fn click_answers(rows: &[i64]) -> Vec<(String, Vec<String>)> {
    let all: Vec<(i64, Option<&str>, i64)> = rows.iter().map(|&i| click(i)).collect();
    let mut answers = Vec::new();
    let sum: i128 = all.iter().map(|r| r.2 as i128).sum();
    answers.push((
        "SELECT COUNT(*), SUM(v), MIN(v), MAX(v) FROM clicks".to_owned(),
        vec![format!(
            "{},{},{},{}",
            all.len(),
            sum,
            all.iter().map(|r| r.2).min().unwrap(),
            all.iter().map(|r| r.2).max().unwrap()
        )],
    ));
    // Groups spread over every partition (region is not the key), then top groups by a sum.
    let mut by_region: std::collections::BTreeMap<Option<&str>, (i64, i128)> = Default::default();
    for r in &all {
        let entry = by_region.entry(r.1).or_default();
        entry.0 += 1;
        entry.1 += r.2 as i128;
    }
    let mut lines: Vec<(i128, String)> = by_region
        .iter()
        .map(|(region, (n, s))| (*s, format!("{},{n},{s}", region.unwrap_or(""))))
        .collect();
    lines.sort_by_key(|line| std::cmp::Reverse(line.0));
    answers.push((
        "SELECT region, COUNT(*) AS n, SUM(v) AS s FROM clicks GROUP BY region ORDER BY s DESC \
         LIMIT 3"
            .to_owned(),
        lines.into_iter().take(3).map(|(_, l)| l).collect(),
    ));
    // One user: one partition is read, the others pruned.
    let user: Vec<&(i64, Option<&str>, i64)> = all.iter().filter(|r| r.0 == 42).collect();
    answers.push((
        "SELECT COUNT(*), SUM(v) FROM clicks WHERE user_id = 42".to_owned(),
        vec![format!(
            "{},{}",
            user.len(),
            user.iter().map(|r| r.2 as i128).sum::<i128>()
        )],
    ));
    // Rows sorted across partitions, cut by a LIMIT.
    let mut values: Vec<i64> = all.iter().filter(|r| r.0 < 10).map(|r| r.2).collect();
    values.sort_unstable_by(|a, b| b.cmp(a));
    answers.push((
        "SELECT v FROM clicks WHERE user_id < 10 ORDER BY v DESC LIMIT 5".to_owned(),
        values.iter().take(5).map(|v| v.to_string()).collect(),
    ));
    answers
}

/// Four nodes n1..n4 (racks r1..r4) on one coordinator over an embedded catalog, all up.
struct FourNodes {
    cluster: Cluster,
    _coordinator: Process,
    coordinator: String,
    nodes: std::collections::BTreeMap<String, Process>,
    /// RPC addresses by node id.
    address: std::collections::BTreeMap<String, String>,
    /// Tenant acme's admin token, and sessions made with it.
    admin: String,
    clients: Clients,
}

impl FourNodes {
    const IDS: [&'static str; 4] = ["n1", "n2", "n3", "n4"];

    fn start() -> FourNodes {
        let cluster = Cluster::new();
        let catalog = cluster.dir.path().join("catalog");
        let (process, coordinator) =
            cluster.coordinator("c1", &["--catalog-dir", path(&catalog)], "127.0.0.1:0");
        let ids = FourNodes::IDS;
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let rack = format!("r{}", i + 1);
                (id.to_string(), cluster.node(id, &coordinator, &rack))
            })
            .collect();
        let status = cluster.wait_status(&coordinator, "all up", |s| states(s) == all(&ids, "up"));
        let admin = cluster.tenant_token("acme", "admin");
        FourNodes {
            address: addresses(&status),
            clients: Clients::new(&admin),
            admin,
            nodes,
            coordinator,
            _coordinator: process,
            cluster,
        }
    }
}

#[test]
fn a_partitioned_table_spreads_over_the_cluster_and_answers_as_one() {
    let FourNodes {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
    } = FourNodes::start();
    let ids = FourNodes::IDS;
    let session = clients.session(&address["n1"]);
    // Four partitions of two replicas on four nodes: each node holds two and leads one.
    let info = clients
        .block_on(session.create_partitioned_table(clicks_spec(), 2, 2, 4, "user_id"))
        .unwrap();
    assert_eq!(info.name, "clicks");
    let status = cluster.status(&coordinator);
    let tables = status["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 4, "{status:#}");
    for id in ids {
        let holds = tables
            .iter()
            .filter(|t| replica_ids(t).contains(&id.to_owned()))
            .count();
        let leads = tables.iter().filter(|t| t["leader"] == id).count();
        assert_eq!((holds, leads), (2, 1), "{id}: {status:#}");
    }
    // A name with '.' is kept for partitions.
    let refused = clients
        .block_on(session.create_replicated_table(
            tessera_rpc::client::TableSpec {
                name: "clicks.p9".into(),
                ..clicks_spec()
            },
            2,
            2,
        ))
        .unwrap_err();
    assert!(refused.to_string().contains("partitions"), "{refused}");

    // Batches through two nodes, each split by user and sent to the partitions' leaders; a
    // batch sent again is a duplicate in every partition.
    let rows = 20_000;
    for (node, producer, range) in [("n2", "a", 0..10), ("n3", "b", 10..20)] {
        let mut stream = clients
            .block_on(
                clients
                    .session(&address[node])
                    .ingest_stream("clicks", producer),
            )
            .unwrap();
        for batch in range {
            let ack = clients
                .block_on(stream.append(batch as u64, &clicks(batch * 1000, 1000)))
                .unwrap();
            assert_eq!((ack.rows, ack.duplicate), (1000, false));
        }
        let again = clients
            .block_on(stream.append(19, &clicks(19_000, 1000)))
            .unwrap();
        assert_eq!(again.duplicate, producer == "b", "{again:?}");
    }
    // A bulk import through a fourth node: split by user, each part imported (and replicated)
    // by its partition's leader, every partition's prepared before any is published.
    let dir = cluster.dir.path();
    let imported = parquet_file(dir, "clicks.parquet", &clicks(rows, 10_000));
    let out = import_into("clicks", &address["n4"], &admin, &imported);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the partition key column: refused, nothing imported.
    let keyless = parquet_file(dir, "keyless.parquet", &events(0, 10));
    let out = import_into("clicks", &address["n2"], &admin, &keyless);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no column user_id"), "{stderr}");
    // Producer a's sequence 19 was new: rows 19,000..20,000 are there twice.
    let held: Vec<i64> = (0..rows + 10_000).chain(19_000..20_000).collect();
    let answers = click_answers(&held);

    // Every node answers every query as one table: the oracle's answer.
    for id in ids {
        for (sql, expected) in &answers {
            let lines = sql_lines(&address[id], &admin, sql);
            assert_eq!(&lines[1..], &expected[..], "{sql} through {id}");
        }
    }
    // A point query on the key reads one partition and prunes the other three.
    let point = clients
        .block_on(session.query_collect("SELECT COUNT(*) FROM clicks WHERE user_id = 42"))
        .unwrap();
    assert_eq!(point.stats.scan.partitions_pruned, 3, "{:?}", point.stats);
    // EXPLAIN says so, with the plan of the one partition left from the node that holds it;
    // without the key, every partition's plan.
    let plan = clients
        .block_on(session.explain("SELECT COUNT(*) FROM clicks WHERE user_id = 42"))
        .unwrap();
    assert!(
        plan.contains("4 partitions by the hash of user_id, 3 pruned"),
        "{plan}"
    );
    assert_eq!(plan.matches("partition clicks.p").count(), 1, "{plan}");
    let lines = sql_lines(
        &address["n4"],
        &admin,
        "EXPLAIN SELECT COUNT(*) FROM clicks",
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("partition clicks.p"))
            .count(),
        4,
        "{lines:?}"
    );
    let described = clients.block_on(session.describe("clicks")).unwrap();
    assert_eq!(
        (described.name.as_str(), described.columns.len()),
        ("clicks", 4)
    );
    let listed = clients.block_on(session.tables()).unwrap();
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["clicks"]
    );

    // A batch with a new column, all its rows in one partition: every partition gets the
    // column (the others with no rows), so every query naming it or `*` binds everywhere.
    let noted: Vec<i64> = (0..20).map(|k| 42 + 97 * (100_000 + k)).collect();
    let mut stream = clients
        .block_on(
            clients
                .session(&address["n3"])
                .ingest_stream("clicks", "noted"),
        )
        .unwrap();
    let ack = clients
        .block_on(stream.append(0, &clicks_noted(&noted)))
        .unwrap();
    assert_eq!((ack.rows, ack.duplicate), (20, false));
    let again = clients
        .block_on(stream.append(0, &clicks_noted(&noted)))
        .unwrap();
    assert!(again.duplicate, "{again:?}");
    let held: Vec<i64> = held.into_iter().chain(noted.iter().copied()).collect();
    let answers = click_answers(&held);
    for id in ids {
        let lines = sql_lines(&address[id], &admin, "SELECT COUNT(note) FROM clicks");
        assert_eq!(lines[1], "20", "through {id}");
        let lines = sql_lines(&address[id], &admin, "SELECT * FROM clicks LIMIT 2");
        assert_eq!(lines[0], "ts,user_id,region,v,note", "through {id}");
        assert_eq!(lines.len(), 3, "through {id}: {lines:?}");
    }
    let described = clients.block_on(session.describe("clicks")).unwrap();
    assert_eq!(described.columns.len(), 5);

    // A node frozen (SIGSTOP): fragments it was given are hedged onto the other replica
    // after half a second, and every answer stays right. Asked through a node holding no
    // replica of the partition n4 leads, whose fragment goes to n4 first.
    let led_by_n4 = tables.iter().find(|t| t["leader"] == "n4").unwrap();
    let asked = ["n1", "n2", "n3"]
        .into_iter()
        .find(|id| !replica_ids(led_by_n4).contains(&id.to_string()))
        .unwrap();
    let frozen = &nodes["n4"];
    let pid = frozen.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for (sql, expected) in &answers {
        let lines = sql_lines(&address[asked], &admin, sql);
        assert_eq!(&lines[1..], &expected[..], "{sql} with n4 frozen");
    }
    unsafe { libc::kill(pid, libc::SIGCONT) };
    nodes[asked].wait_for_line("a hedged fragment", |l| l.contains("fragment hedged"));
    // A node killed: its partitions answer from their other replica.
    nodes.remove("n4").unwrap().kill();
    for (sql, expected) in &answers {
        let lines = sql_lines(&address["n2"], &admin, sql);
        assert_eq!(&lines[1..], &expected[..], "{sql} with n4 killed");
    }

    // Dropped: every partition, everywhere. n4 restarted on a new port: until n1 has fetched
    // the routing table with its new address, the drop fails naming it, and dropping again
    // finishes it.
    nodes.insert("n4".into(), cluster.node("n4", &coordinator, "r4"));
    cluster.wait_status(&coordinator, "all up", |s| states(s) == all(&ids, "up"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match clients.block_on(session.drop_table("clicks")) {
            Ok(existed) => break assert!(existed),
            Err(e) => {
                assert!(e.to_string().contains("drop it again"), "{e}");
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let status = cluster.wait_status(&coordinator, "no tables", |s| {
        s["tables"].as_array().is_some_and(|t| t.is_empty())
    });
    drop(status);
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in ids {
        for index in 0..4 {
            let copy = cluster
                .dir
                .path()
                .join(id)
                .join("acme")
                .join(format!("clicks.p{index}"));
            while copy.exists() {
                assert!(Instant::now() < deadline, "{} is left", copy.display());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn a_node_killed_while_a_partitioned_table_takes_writes_loses_no_acknowledged_row() {
    let FourNodes {
        cluster,
        _coordinator,
        coordinator,
        mut nodes,
        address,
        admin,
        clients,
    } = FourNodes::start();
    let session = clients.session(&address["n1"]);
    clients
        .block_on(session.create_partitioned_table(clicks_spec(), 3, 2, 4, "user_id"))
        .unwrap();
    // A producer writes through n1 (retrying each batch with its key until acknowledged)
    // while n4, which leads one partition and follows in two more, is killed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = write_batches_until(
        address["n1"].clone(),
        admin.clone(),
        ("clicks", "p", clicks),
        0,
        stop.clone(),
    );
    std::thread::sleep(Duration::from_millis(700));
    nodes.remove("n4").unwrap().kill();
    cluster.wait_status_of(
        &coordinator,
        "n4 down and its leadership moved",
        &nodes,
        |s| {
            states(s)[3].1 == "down"
                && s["tables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t["leader"] != "n4")
        },
    );
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let batches = writer.join().unwrap();
    assert!(batches > 0);
    // Every acknowledged batch, exactly once, through every node left.
    let rows: Vec<i64> = (0..batches * 1000).collect();
    let answers = click_answers(&rows);
    for id in ["n1", "n2", "n3"] {
        for (sql, expected) in &answers {
            let lines = sql_lines(&address[id], &admin, sql);
            assert_eq!(
                &lines[1..],
                &expected[..],
                "{sql} through {id} after n4 died"
            );
        }
    }
    // A second node killed: every partition keeps a replica and reads answer; a batch for a
    // partition left with one replica cannot meet its write quorum of two and fails clearly.
    nodes.remove("n3").unwrap().kill();
    cluster.wait_status(&coordinator, "n3 down", |s| states(s)[2].1 == "down");
    for (sql, expected) in &answers {
        let lines = sql_lines(&address["n2"], &admin, sql);
        assert_eq!(&lines[1..], &expected[..], "{sql} with two nodes left");
    }
    let mut stream = clients
        .block_on(session.ingest_stream("clicks", "late"))
        .unwrap();
    let refused = clients
        .block_on(stream.append(0, &clicks(0, 1000)))
        .unwrap_err();
    assert_eq!(refused.code(), "unavailable", "{refused}");
    assert!(refused.to_string().contains("send it again"), "{refused}");
}
