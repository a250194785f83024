//! The HTTP side port: `/health` and Prometheus `/metrics`, read over real HTTP.

mod common;

use common::{block_on, start, token};
use std::io::{Read, Write};
use tessera_rpc::auth::Role;
use tessera_rpc::Client;

fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
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
        for _ in 0..3 {
            session
                .query_collect("SELECT category, SUM(amount) FROM events GROUP BY category")
                .await
                .unwrap();
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
    assert!(sample(&after, "tessera_buffer_pool_misses") > 0.0);
    assert!(
        sample(&after, "tessera_buffer_pool_hits") > 0.0,
        "warm runs hit the pool"
    );
    assert!(sample(&after, "tessera_memory_usage_percent") > 0.0);
    for name in [
        "# TYPE tessera_query_duration_seconds histogram",
        "tessera_connections_accepted_total",
    ] {
        assert!(after.contains(name), "{name} missing");
    }
    let (status, _) = get(http, "/nothing");
    assert_eq!(status, 404);
}
