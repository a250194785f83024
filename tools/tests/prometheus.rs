//! The shipped monitoring files against the real thing: `promtool` checks the scrape config and
//! the alert rules and runs the rules' unit tests; a real Prometheus (Debian's `prometheus`)
//! scrapes a real node with the shipped scrape config, and every expression of the Grafana
//! dashboard returns data from it; every metric the dashboard and the rules name is one the
//! node exports.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{ok, path};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

fn deploy(file: &str) -> PathBuf {
    Path::new(DEPLOY).join(file)
}

/// Runs a Prometheus tool; fails the test with its output unless it succeeds.
fn run(tool: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install it with `apt-get install prometheus`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` over HTTP/1.0: status and body.
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    address: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The `data.result` of an instant query (empty when the query has no data yet).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let (status, body) = get(
            &self.address,
            &format!("/api/v1/query?query={}", encode(expr)),
        )
        .unwrap_or_else(|| panic!("Prometheus did not answer for {expr}"));
        let value: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{expr}: not JSON ({e}): {body}"));
        assert_eq!(status, 200, "{expr} is not a valid query: {body}");
        assert_eq!(value["status"], "success", "{expr}: {body}");
        value["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `expr` returns data; its result.
    fn wait_for_data(&self, expr: &str, deadline: Instant) -> Vec<serde_json::Value> {
        loop {
            let result = self.query(expr);
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "no data from Prometheus for `{expr}`"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every `tessera_*` metric name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("tessera_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The dashboard's query expressions, with its template variables filled in (all nodes).
fn dashboard_expressions(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| {
                    let expr = t["expr"].as_str().unwrap().replace("$instance", ".*");
                    (title.clone(), expr)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn promtool_accepts_the_config_and_the_rules_and_their_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["prometheus.yml", "tessera-alerts.yml"] {
        std::fs::copy(deploy(&format!("prometheus/{file}")), dir.path().join(file)).unwrap();
    }
    let checked = run(
        "promtool",
        &["check", "config", "prometheus.yml"],
        dir.path(),
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let rules = run(
        "promtool",
        &["check", "rules", "tessera-alerts.yml"],
        dir.path(),
    );
    assert!(rules.contains("9 rules found"), "{rules}");
    let tested = run(
        "promtool",
        &["test", "rules", "tessera-alerts.test.yml"],
        &deploy("prometheus"),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Each alert has a test case.
    let cases = std::fs::read_to_string(deploy("prometheus/tessera-alerts.test.yml")).unwrap();
    let alerts = std::fs::read_to_string(deploy("prometheus/tessera-alerts.yml")).unwrap();
    for line in alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            cases.contains(&format!("alertname: {line}")),
            "alert {line} has no promtool test"
        );
    }
}

#[test]
fn a_real_prometheus_scrapes_a_node_and_every_dashboard_expression_has_data() {
    let dir = tempfile::tempdir().unwrap();
    let (data, secret) = (dir.path().join("data"), dir.path().join("secret"));
    std::fs::write(&secret, "a test secret that is long enough!!\n").unwrap();
    let node = support::serve(
        &data,
        &secret,
        "127.0.0.1:0",
        &["--cores", "2", "--http", "127.0.0.1:0"],
    );
    let http = node.http.clone().expect("the node serves HTTP");
    let token = ok(&[
        "token",
        "--secret-file",
        path(&secret),
        "--tenant",
        "acme",
        "--role",
        "admin",
    ])
    .trim()
    .to_owned();

    // A coordinator serving its own /metrics (an embedded catalog, no nodes of its own).
    let coordinator = support::Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .args(["--catalog-dir", path(&dir.path().join("catalog"))])
            .args(["--jwt-secret-file", path(&secret)]),
    );
    let line = coordinator.wait_for_line("with its HTTP address", |l| l.contains("http://"));
    let coordinator_http = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();

    // The shipped scrape config, pointed at this node and coordinator, scraping every second.
    let shipped = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    for expected in [
        "          - node1.example:9464\n",
        "          - node2.example:9464\n",
        "          - coord1.example:9465\n",
        "  scrape_interval: 15s\n",
        "  evaluation_interval: 15s\n",
    ] {
        assert!(
            shipped.contains(expected),
            "prometheus.yml changed: the test rewrites the line {expected:?}"
        );
    }
    let config = shipped
        .replace("node1.example:9464", &http)
        .replace("coord1.example:9465", &coordinator_http)
        .replace("          - node2.example:9464\n", "")
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        deploy("prometheus/tessera-alerts.yml"),
        dir.path().join("tessera-alerts.yml"),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            path(&dir.path().join("prometheus.yml"))
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            path(&dir.path().join("tsdb"))
        ))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start prometheus ({e}): install it with `apt-get install prometheus`")
        });
    let prometheus = Prometheus { child, address };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&prometheus.address, "/-/ready").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "Prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = prometheus.wait_for_data("up{job=\"tessera\"} == 1", deadline);
    assert_eq!(up[0]["metric"]["instance"], http.as_str());
    // The coordinator: scraped, its catalog answering, leading (the only one).
    let leading = prometheus.wait_for_data(
        "tessera_coordinator_leader * on (instance) tessera_coordinator_catalog_up == 1",
        deadline,
    );
    assert_eq!(leading[0]["metric"]["instance"], coordinator_http.as_str());
    let (status, body) = get(&coordinator_http, "/health").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"catalog\":\"ok\""), "{body}");

    // Some work for the node: an import, queries (cold, then warm from the pool) and an error.
    let input = dir.path().join("events.parquet");
    ok(&["gen", "events", "--rows", "20000", "--out", path(&input)]);
    ok(&[
        "import",
        "--addr",
        &node.address,
        "--token",
        &token,
        "--table",
        "events",
        path(&input),
    ]);
    let sql =
        |query: &str| support::tessera(&["sql", "--addr", &node.address, "--token", &token, query]);
    for _ in 0..3 {
        for query in [
            "SELECT category, MAX(amount) FROM events GROUP BY category",
            "SELECT COUNT(*) FROM events WHERE amount > 100",
        ] {
            assert!(sql(query).status.success(), "{query}");
        }
    }
    assert!(!sql("SELECT nope FROM events").status.success());

    // Every dashboard expression has data, from this node's scrapes.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/tessera-dashboard.json")).unwrap(),
    )
    .unwrap();
    let expressions = dashboard_expressions(&dashboard);
    let titles: Vec<&str> = expressions.iter().map(|(t, _)| t.as_str()).collect();
    for panel in [
        "Query throughput",
        "p95 query latency",
        "Data scanned",
        "Memory",
        "Buffer-pool hit rate",
        "Queries per tenant",
        "Query errors per tenant",
        "Disk use",
        "Memory by budget",
        "Ingestion lag",
    ] {
        assert!(titles.contains(&panel), "the dashboard lacks {panel:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (title, expr) in &expressions {
        let result = prometheus.wait_for_data(expr, deadline);
        assert!(!result.is_empty(), "{title}: {expr}");
    }
    // The per-tenant panels show the tenant, and its error.
    let errors = prometheus.query("sum by (tenant) (tessera_tenant_query_errors_total)");
    assert_eq!(errors[0]["metric"]["tenant"], "acme");
    let failed = sql("SELECT sql, error FROM query_stats WHERE status <> 'ok'");
    assert_eq!(
        errors[0]["value"][1],
        "1",
        "{}",
        String::from_utf8_lossy(&failed.stdout)
    );

    // Every metric the dashboard and the alert rules name is one the node exports.
    let (status, node_metrics) = get(&http, "/metrics").unwrap();
    assert_eq!(status, 200);
    let (status, coordinator_metrics) = get(&coordinator_http, "/metrics").unwrap();
    assert_eq!(status, 200);
    let exported = node_metrics + &coordinator_metrics;
    let exported: Vec<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .map(str::to_owned)
        .collect();
    let rules = std::fs::read_to_string(deploy("prometheus/tessera-alerts.yml")).unwrap();
    let mut named = metric_names(&serde_json::to_string(&dashboard).unwrap());
    named.extend(metric_names(&rules));
    assert!(named.len() >= 10, "{named:?}");
    for name in &named {
        assert!(
            exported.contains(name),
            "{name} is named by the dashboard or the rules but exported by neither the node \
             nor the coordinator"
        );
    }

    // Prometheus loaded the shipped alert rules.
    let (_, rules) = get(&prometheus.address, "/api/v1/rules").unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        loaded,
        [
            "TesseraNodeDown",
            "TesseraQueryLatencyHigh",
            "TesseraMemoryHigh",
            "TesseraQueryErrorRate",
            "TesseraDiskFull",
            "TesseraIngestionLag",
            "TesseraTablesUnderReplicated",
            "TesseraReplicaDiffered",
            "TesseraNoCoordinatorLeader"
        ]
    );
}
