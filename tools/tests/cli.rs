//! The `tessera` binary end to end: gen → import → sql in every output format, CSV import,
//! EXPLAIN, and errors that name the problem with a failing exit status.

mod support;

use std::path::Path;
use std::process::Output;
use support::{ok, path, serve, tessera, Server};

#[test]
fn gen_import_and_query_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.parquet");
    let data = dir.path().join("data");
    ok(&[
        "gen",
        "events",
        "--rows",
        "50000",
        "--out",
        path(&input),
        "--seed",
        "3",
    ]);
    ok(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "events",
        path(&input),
    ]);
    let sql = "SELECT category, COUNT(*) AS n FROM events GROUP BY category ORDER BY category";

    let csv = ok(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "2",
        "--format",
        "csv",
        sql,
    ]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("category,n"));
    let rows: Vec<(String, u64)> = lines
        .map(|l| {
            let (c, n) = l.split_once(',').unwrap();
            (c.to_owned(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 50_000);
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "ordered by category"
    );

    let json = ok(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "2",
        "--format",
        "json",
        sql,
    ]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 20);
    assert_eq!(parsed[0]["category"], serde_json::json!(rows[0].0));

    let table = ok(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "2",
        "SELECT * FROM events WHERE id = 777",
    ]);
    assert!(
        table.contains("777") && table.contains("rows scanned") && table.contains("files pruned"),
        "{table}"
    );

    let explain = ok(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "2",
        "EXPLAIN SELECT COUNT(*) FROM events WHERE timestamp >= '2024-01-01'",
    ]);
    assert!(explain.contains("Pruning"), "{explain}");
}

#[test]
fn csv_files_import_with_inferred_types() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("small.csv");
    std::fs::write(&csv, "ts,name,value\n2024-03-01T10:00:00,a,1.5\n2024-03-01T11:00:00,b,2.5\n2024-03-02T09:30:00,a,4\n").unwrap();
    let data = dir.path().join("data");
    ok(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "t1",
        "--table",
        "small",
        path(&csv),
    ]);
    assert!(
        data.join("t1/small/date=2024-03-01").is_dir()
            && data.join("t1/small/date=2024-03-02").is_dir()
    );
    let out = ok(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "t1",
        "--cores",
        "1",
        "--format",
        "csv",
        "SELECT name, SUM(value) FROM small WHERE ts < '2024-03-02' GROUP BY name ORDER BY name",
    ]);
    assert_eq!(out.trim(), "name,sum(value)\na,1.5\nb,2.5");
}

#[test]
fn errors_name_the_problem_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = tessera(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "1",
        "SELECT * FROM nowhere",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("nowhere"));
    let output = tessera(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "1",
        "SELECT a FROM t JOIN u ON t.a = u.a",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("JOIN"));
    let output = tessera(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "../x",
        "--table",
        "t",
        "/dev/null",
    ]);
    assert!(!output.status.success());
}

#[test]
fn verify_finds_silent_corruption_and_imports_remove_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.parquet");
    let data = dir.path().join("data");
    ok(&["gen", "events", "--rows", "20000", "--out", path(&input)]);
    ok(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "events",
        path(&input),
    ]);
    let clean = ok(&[
        "verify",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "events",
    ]);
    assert!(clean.contains("0 with problems"), "{clean}");

    // Flip one byte inside a data page: the file may still decode, the checksum catches it.
    let partition = std::fs::read_dir(data.join("acme/events"))
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let file = std::fs::read_dir(&partition)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let output = tessera(&[
        "verify",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "events",
    ]);
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains(file.file_name().unwrap().to_str().unwrap()) && report.contains("CRC-32"),
        "{report}"
    );

    // A file no manifest lists (an import that died before publishing) is removed by the next import.
    let orphan = partition.join("part-999999.parquet");
    std::fs::write(&orphan, b"half-written").unwrap();
    ok(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "events",
        path(&input),
    ]);
    assert!(!orphan.exists());
}

/// A Parquet file of `id UInt64` holding 1, 2, 3 and then 2^63 + 5 (row 4).
fn parquet_with_huge_uint64(path: &Path) {
    use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
    let ids: ArrayRef = std::sync::Arc::new(UInt64Array::from(vec![1, 2, 3, (1u64 << 63) + 5]));
    let batch = RecordBatch::try_from_iter(vec![("id", ids)]).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn assert_names_column_and_row(output: &Output, column: &str, row: u64) {
    assert!(!output.status.success(), "the import succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("column {column}")) && stderr.contains(&format!("row {row}")),
        "{stderr}"
    );
}

#[test]
fn import_of_a_value_that_does_not_fit_fails_naming_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("huge.parquet");
    let data = dir.path().join("data");
    parquet_with_huge_uint64(&input);
    let output = tessera(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "numbers",
        path(&input),
    ]);
    assert_names_column_and_row(&output, "id", 4);
    // Nothing of the import was published.
    let output = tessera(&[
        "sql",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--cores",
        "1",
        "SELECT COUNT(*) FROM numbers",
    ]);
    assert!(!output.status.success());
}

/// `tessera serve` on a loopback port over `data` with a secret of its own, for admin imports.
struct ServeProcess {
    served: Server,
    secret: std::path::PathBuf,
}

impl ServeProcess {
    fn start(dir: &Path, data: &Path) -> ServeProcess {
        let secret = dir.join("secret");
        std::fs::write(&secret, "a test secret that is long enough!!").unwrap();
        ServeProcess {
            served: serve(data, &secret, "127.0.0.1:0", &["--cores", "1"]),
            secret,
        }
    }

    fn admin_token(&self) -> String {
        ok(&[
            "token",
            "--secret-file",
            path(&self.secret),
            "--tenant",
            "acme",
            "--role",
            "admin",
        ])
        .trim()
        .to_owned()
    }
}

#[test]
fn remote_import_creates_the_table_with_its_flags_or_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.parquet");
    let data = dir.path().join("data");
    ok(&["gen", "events", "--rows", "5000", "--out", path(&input)]);
    let server = ServeProcess::start(dir.path(), &data);
    let token = server.admin_token();
    let remote = [
        "--addr",
        server.served.address.as_str(),
        "--token",
        token.as_str(),
    ];

    // Flags the table spec cannot carry are refused by name, and nothing is created.
    for (flag, value) in [
        ("--file-mib", "64"),
        ("--row-group-mib", "8"),
        ("--page-kib", "64"),
        ("--page-rows", "1000"),
    ] {
        let mut args = vec!["import", "--table", "sized", flag, value];
        args.extend(remote);
        args.push(path(&input));
        let output = tessera(&args);
        assert!(!output.status.success(), "{flag} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
    assert!(!data.join("acme/sized/_manifest.json").exists());

    let mut args = vec![
        "import",
        "--table",
        "events",
        "--time-column",
        "timestamp",
        "--partition-by",
        "category",
        "--compression",
        "zstd",
    ];
    args.extend(remote);
    args.push(path(&input));
    ok(&args);
    let manifest = tessera_storage_engine::table::manifest::load(&data, "acme", "events")
        .unwrap()
        .unwrap();
    assert_eq!(manifest.partition.time_column.as_deref(), Some("timestamp"));
    assert_eq!(manifest.partition.columns, vec!["category".to_owned()]);
    assert_eq!(
        manifest.writer.compression,
        tessera_storage_engine::table::manifest::Compression::Zstd
    );
    assert_eq!(manifest.total_rows(), 5000);

    // The same refusal of a value that does not fit, over RPC.
    let huge = dir.path().join("huge.parquet");
    parquet_with_huge_uint64(&huge);
    let mut args = vec!["import", "--table", "numbers"];
    args.extend(remote);
    args.push(path(&huge));
    assert_names_column_and_row(&tessera(&args), "id", 4);
}

/// A data directory holding acme/events (1000 rows), a secret and a reader token for it.
fn served_data(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let input = dir.join("events.parquet");
    let data = dir.join("data");
    ok(&["gen", "events", "--rows", "1000", "--out", path(&input)]);
    ok(&[
        "import",
        "--data",
        path(&data),
        "--tenant",
        "acme",
        "--table",
        "events",
        path(&input),
    ]);
    let secret = dir.join("secret");
    std::fs::write(&secret, "a test secret that is long enough!!\n").unwrap();
    let token = ok(&[
        "token",
        "--secret-file",
        path(&secret),
        "--tenant",
        "acme",
        "--role",
        "reader",
    ]);
    (data, secret, token.trim().to_owned())
}

const COUNT: &str = "SELECT COUNT(*) AS n FROM events";

#[test]
fn sql_over_tls_trusts_the_given_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let (data, secret, token) = served_data(dir.path());
    let certificates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rpc/tests/data");
    let server = serve(
        &data,
        &secret,
        "127.0.0.1:0",
        &[
            "--cores",
            "1",
            "--tls-cert",
            path(&certificates.join("test-tls.crt")),
            "--tls-key",
            path(&certificates.join("test-tls.key")),
        ],
    );
    let ca = certificates.join("test-ca.crt");
    let out = ok(&[
        "sql",
        "--addr",
        &server.address,
        "--token",
        &token,
        "--tls-ca",
        path(&ca),
        "--tls-server-name",
        "localhost",
        "--format",
        "csv",
        COUNT,
    ]);
    assert_eq!(out.trim(), "n\n1000");
    // A name the certificate does not carry fails the handshake, before any token is sent.
    let output = tessera(&[
        "sql",
        "--addr",
        &server.address,
        "--token",
        &token,
        "--tls-ca",
        path(&ca),
        "--tls-server-name",
        "elsewhere.example",
        COUNT,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // --tls-server-name alone would be silently plain TCP: refused.
    let output = tessera(&[
        "sql",
        "--addr",
        &server.address,
        "--token",
        &token,
        "--tls-server-name",
        "localhost",
        COUNT,
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--tls-ca"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// This machine's address on its default route, when it has one (never a loopback address).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // Connecting a UDP socket sends nothing; it only picks the route and source address.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn a_token_goes_over_plain_tcp_only_to_loopback_or_with_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let (data, secret, token) = served_data(dir.path());
    let server = serve(&data, &secret, "0.0.0.0:0", &["--cores", "1"]);
    let port = server.address.rsplit_once(':').unwrap().1.to_owned();
    // Loopback stays convenient.
    let out = ok(&[
        "sql",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--token",
        &token,
        "--format",
        "csv",
        COUNT,
    ]);
    assert_eq!(out.trim(), "n\n1000");
    let remote = non_loopback_address().map_or_else(
        || format!("192.0.2.1:{port}"),
        |ip| std::net::SocketAddr::new(ip, port.parse().unwrap()).to_string(),
    );
    for command in [
        vec!["sql", "--addr", &remote, "--token", &token, COUNT],
        vec![
            "import",
            "--addr",
            &remote,
            "--token",
            &token,
            "--table",
            "events",
            "/dev/null",
        ],
    ] {
        let output = tessera(&command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command:?} sent the token");
        assert!(
            stderr.contains("--insecure") && stderr.contains("--tls-ca"),
            "{command:?}: {stderr}"
        );
    }
    if non_loopback_address().is_some() {
        let out = ok(&[
            "sql",
            "--addr",
            &remote,
            "--token",
            &token,
            "--insecure",
            "--format",
            "csv",
            COUNT,
        ]);
        assert_eq!(out.trim(), "n\n1000");
    }
}

#[test]
fn admin_tenant_quota_shows_and_changes_a_tenants_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (data, secret, reader) = served_data(dir.path());
    let server = serve(&data, &secret, "127.0.0.1:0", &["--cores", "1"]);
    let operator = ok(&[
        "token",
        "--secret-file",
        path(&secret),
        "--role",
        "operator",
    ]);
    let quota = |extra: &[&str]| {
        let mut args = vec![
            "admin",
            "tenant",
            "quota",
            "--addr",
            &server.address,
            "--token",
            operator.trim(),
            "--tenant",
            "acme",
        ];
        args.extend(extra);
        tessera(&args)
    };
    let shown = quota(&[]);
    assert!(shown.status.success(), "{shown:?}");
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(text.contains("concurrent queries   none"), "{text}");
    let set = quota(&["--result-mib", "1", "--concurrent-queries", "3"]);
    let text = String::from_utf8_lossy(&set.stdout).into_owned();
    assert!(set.status.success(), "{set:?}");
    assert!(
        text.contains("result bytes         1048576 bytes"),
        "{text}"
    );
    assert!(text.contains("concurrent queries   3"), "{text}");
    // Limits not given keep their value; 0 removes one.
    let cleared = quota(&["--concurrent-queries", "0"]);
    let text = String::from_utf8_lossy(&cleared.stdout).into_owned();
    assert!(text.contains("concurrent queries   none"), "{text}");
    assert!(
        text.contains("result bytes         1048576 bytes"),
        "{text}"
    );
    let shares = quota(&[
        "--cpu-shares",
        "600",
        "--io-shares",
        "50",
        "--pool-floor-mib",
        "8",
    ]);
    let text = String::from_utf8_lossy(&shares.stdout).into_owned();
    assert!(shares.status.success(), "{shares:?}");
    assert!(text.contains("cpu shares           600"), "{text}");
    assert!(text.contains("io shares            50"), "{text}");
    assert!(
        text.contains("buffer-pool floor    8388608 bytes"),
        "{text}"
    );
    let out_of_range = quota(&["--cpu-shares", "5000"]);
    assert!(!out_of_range.status.success());
    // A tenant's token is not an operator's.
    let refused = tessera(&[
        "admin",
        "tenant",
        "quota",
        "--addr",
        &server.address,
        "--token",
        &reader,
        "--tenant",
        "acme",
        "--result-mib",
        "0",
    ]);
    assert!(!refused.status.success());
}
