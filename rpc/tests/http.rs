//! The HTTP side port: `/health` and Prometheus `/metrics`, read over real HTTP.

mod common;

use common::{block_on, get, get_with_headers, sample, start, token};
use tessera_rpc::auth::Role;
use tessera_rpc::Client;

/// The value of `name` in an HTTP header block (case-insensitive name).
fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn health_and_metrics_report_the_node() {
    let server = start(50_000, common::default_limits());
    let http = server.server.http_address().unwrap();
    let (status, health) = get(http, "/health");
    assert_eq!(status, 200);
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let (_, before) = get(http, "/metrics");
    block_on(async {
        let client = Client::connect(&server.address()).await.unwrap();
        let session = client
            .login(&token(Some("acme"), Role::Reader))
            .await
            .unwrap();
        // The first loads the pages, the second scans them from the pool, the third takes its
        // parts from the partial-result cache.
        for sql in [
            "SELECT category, MAX(amount) FROM events GROUP BY category",
            "SELECT category, SUM(amount) FROM events GROUP BY category",
            "SELECT category, SUM(amount) FROM events GROUP BY category",
        ] {
            session.query_collect(sql).await.unwrap();
        }
        session
            .query_collect("SELECT nope FROM events")
            .await
            .unwrap_err();
        let (_, during) = get(http, "/metrics");
        assert_eq!(sample(&during, "tessera_connections"), 1.0);
    });
    let (status, after) = get(http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        sample(&after, "tessera_queries_total") - sample(&before, "tessera_queries_total"),
        4.0
    );
    assert_eq!(sample(&after, "tessera_query_errors_total"), 1.0);
    assert_eq!(sample(&after, "tessera_query_duration_seconds_count"), 3.0);
    assert!(sample(&after, "tessera_data_scanned_bytes_total") > 0.0);
    assert!(sample(&after, "tessera_buffer_pool_misses_total") > 0.0);
    assert!(
        sample(&after, "tessera_buffer_pool_hits_total") > 0.0,
        "warm runs hit the pool"
    );
    assert!(sample(&after, "tessera_partial_cache_hits") > 0.0);
    assert!(sample(&after, "tessera_query_queue_seconds_count") >= 3.0);
    assert!(sample(&after, "tessera_memory_usage_percent") > 0.0);
    assert_eq!(
        sample(&after, "tessera_tenant_queries_total{tenant=\"acme\"}"),
        4.0
    );
    assert_eq!(
        sample(&after, "tessera_tenant_query_errors_total{tenant=\"acme\"}"),
        1.0
    );
    assert!(sample(&after, "tessera_disk_capacity_bytes") > 0.0);
    assert!(sample(&after, "tessera_disk_used_bytes") > 0.0);
    assert!(sample(&after, "tessera_memory_used_bytes{area=\"parquet_cache\"}") > 0.0);
    assert_eq!(
        sample(
            &after,
            "tessera_memory_budget_bytes{area=\"parquet_cache\"}"
        ),
        (256u64 << 20) as f64
    );
    for area in [
        "query_processing",
        "metadata_cache",
        "partial_cache",
        "ingest_buffers",
    ] {
        sample(
            &after,
            &format!("tessera_memory_budget_bytes{{area=\"{area}\"}}"),
        );
    }
    assert_eq!(
        sample(&after, "tessera_ingest_oldest_buffered_seconds"),
        0.0
    );
    assert_eq!(sample(&after, "tessera_ingest_buffered_bytes"), 0.0);
    assert!(after.contains("tessera_build_info{version=\""), "{after}");
    for name in [
        "# TYPE tessera_query_duration_seconds histogram",
        "tessera_connections_accepted_total",
    ] {
        assert!(after.contains(name), "{name} missing");
    }
    let (status, _) = get(http, "/nothing");
    assert_eq!(status, 404);
}

#[test]
fn metrics_are_served_with_the_content_type_of_their_format() {
    let server = start(1_000, common::default_limits());
    let http = server.server.http_address().unwrap();
    let (status, headers, body) = get_with_headers(http, "/metrics");
    assert_eq!(status, 200);
    // prometheus-client writes OpenMetrics text, which ends with `# EOF`.
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert_eq!(
        header(&headers, "Content-Type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{headers}"
    );
}

#[test]
fn a_warm_query_counts_the_bytes_it_scans() {
    let server = start(10_000, common::default_limits());
    let http = server.server.http_address().unwrap();
    // MAX is not kept in the partial-result cache: the warm run scans the pool.
    let sql = "SELECT category, MAX(amount) FROM events GROUP BY category";
    let run = || {
        block_on(async {
            let client = Client::connect(&server.address()).await.unwrap();
            let session = client
                .login(&token(Some("acme"), Role::Reader))
                .await
                .unwrap();
            session.query_collect(sql).await.unwrap().stats
        })
    };
    // The server records a query's metrics as its call ends, which may be just after the client
    // has the reply: scrape until the counter shows `scanned` bytes (bounded), then compare.
    let scanned_metric = "tessera_data_scanned_bytes_total";
    let scrape_when_scanned = |scanned: u64| -> String {
        let mut body = String::new();
        for _ in 0..200 {
            body = get(http, "/metrics").1;
            if sample(&body, scanned_metric) >= scanned as f64 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        body
    };
    let cold = run();
    let before = scrape_when_scanned(cold.scan.bytes_scanned);
    let warm = run();
    let after = scrape_when_scanned(cold.scan.bytes_scanned + warm.scan.bytes_scanned);
    assert_eq!(
        warm.scan.bytes_read, 0,
        "the warm query reads nothing from disk"
    );
    assert!(warm.scan.bytes_scanned > 0, "{warm:?}");
    assert_eq!(warm.scan.bytes_scanned, cold.scan.bytes_scanned);
    assert_eq!(
        sample(&after, scanned_metric) - sample(&before, scanned_metric),
        warm.scan.bytes_scanned as f64,
        "the warm query's scanned bytes are counted"
    );
    assert_eq!(
        sample(&after, "tessera_data_read_bytes_total"),
        cold.scan.bytes_read as f64
    );
}

/// A core that runs a job which never yields (here: one that sleeps on the core's thread) is
/// named by `/health`, which answers 503 until the core answers again.
#[test]
fn health_names_a_core_that_does_not_answer() {
    let server = start(1_000, common::default_limits());
    let http = server.server.http_address().unwrap();
    let (status, body) = get(http, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"unresponsive_cores\":[]"), "{body}");
    std::thread::scope(|scope| {
        let engine = server.engine();
        scope.spawn(move || {
            block_on(engine.on_core(1, |_| async {
                std::thread::sleep(std::time::Duration::from_secs(3));
            }))
            .unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (status, body) = get(http, "/health");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"unresponsive_cores\":[1]"), "{body}");
    });
    let (status, body) = get(http, "/health");
    assert_eq!(status, 200, "{body}");
}
