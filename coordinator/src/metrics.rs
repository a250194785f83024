//! The coordinator's side port (`tessera coordinator --http ADDR`): `/metrics` in OpenMetrics
//! text, read from the catalog at each scrape (leadership, nodes by state, tables and their
//! healthy replicas, the routing version), and `/health` (200 while the catalog answers).

use crate::catalog::{Catalog, Lease, NodeState};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The exposition of one scrape; `leading`: the lease this coordinator may act on now.
pub fn render(catalog: &dyn Catalog, leading: Option<&Lease>) -> String {
    let mut registry = Registry::with_prefix("tessera_coordinator");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let gauge: Gauge = Gauge::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    };
    gauge(
        &mut registry,
        "leader",
        "1 while this coordinator holds the leader lease and may act on it",
        leading.is_some() as i64,
    );
    gauge(
        &mut registry,
        "leader_epoch",
        "The epoch of the leader lease this coordinator holds (0: none)",
        leading.map_or(0, |l| l.epoch as i64),
    );
    let read = catalog
        .nodes()
        .and_then(|nodes| Ok((nodes, catalog.routing()?)));
    gauge(
        &mut registry,
        "catalog_up",
        "1 when the catalog answered this scrape",
        read.is_ok() as i64,
    );
    if let Ok((nodes, routing)) = read {
        let by_state: Family<Vec<(String, String)>, Gauge> = Family::default();
        for state in ["up", "down"] {
            by_state
                .get_or_create(&vec![("state".to_owned(), state.to_owned())])
                .set(0);
        }
        let up = |id: &str| {
            nodes
                .iter()
                .any(|n| n.registration.node_id == id && n.state == NodeState::Up)
        };
        for node in &nodes {
            let state = if node.state == NodeState::Up {
                "up"
            } else {
                "down"
            };
            by_state
                .get_or_create(&vec![("state".to_owned(), state.to_owned())])
                .inc();
        }
        registry.register("nodes", "Registered nodes by state", by_state);
        let under = routing
            .tables
            .iter()
            .filter(|t| {
                let healthy = t
                    .replicas
                    .iter()
                    .filter(|r| up(r) && t.in_sync.contains(r))
                    .count();
                (healthy as u32) < t.replication_factor
            })
            .count();
        let out_of_sync: usize = routing
            .tables
            .iter()
            .map(|t| t.replicas.len() - t.in_sync.len())
            .sum();
        gauge(
            &mut registry,
            "tables",
            "Tables placed in the cluster",
            routing.tables.len() as i64,
        );
        gauge(
            &mut registry,
            "tables_under_replicated",
            "Tables with fewer healthy replicas (node up, in sync) than their replication factor",
            under as i64,
        );
        gauge(
            &mut registry,
            "replicas_out_of_sync",
            "Replicas missing acknowledged batches (catching up, or on a node down)",
            out_of_sync as i64,
        );
        gauge(
            &mut registry,
            "routing_version",
            "The routing table's version",
            routing.version as i64,
        );
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// Whether the coordinator serves (its catalog answers), and a line of JSON saying so.
pub fn health(catalog: &dyn Catalog, id: &str, leading: Option<&Lease>) -> (bool, String) {
    let catalog_state = match catalog.now_ms() {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("unreachable: {error}"),
    };
    let serving = catalog_state == "ok";
    let body = serde_json::json!({
        "coordinator": id,
        "catalog": catalog_state,
        "leader": leading.is_some(),
    });
    (serving, body.to_string())
}
