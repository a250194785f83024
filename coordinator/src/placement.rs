//! Choosing the nodes of a new table: `replication_factor` nodes that are up, each in a failure
//! domain not used yet where the labels allow (`rack`, then `host`), fewest bytes used first.
//! The first chosen is the table's leader. The partitions of one table spread: a node holding
//! fewer of its partitions' replicas comes first, and the one leading fewest of them leads.

use crate::catalog::{NodeRecord, NodeState, TablePlacement};

/// The failure-domain labels, widest first.
const DOMAINS: &[&str] = &["rack", "host"];

/// Node ids for a new table (the leader first), or why there are not enough nodes. `siblings`
/// are the placements of the other partitions of its table, if it is one.
pub fn choose(
    nodes: &[NodeRecord],
    replication_factor: usize,
    siblings: &[&TablePlacement],
) -> Result<Vec<String>, String> {
    let mut up: Vec<&NodeRecord> = nodes.iter().filter(|n| n.state == NodeState::Up).collect();
    if up.len() < replication_factor {
        return Err(format!(
            "{} node(s) up, a replication factor of {replication_factor} needs {replication_factor}",
            up.len()
        ));
    }
    let held = |node: &NodeRecord| {
        let id = &node.registration.node_id;
        siblings.iter().filter(|s| s.replicas.contains(id)).count()
    };
    let leads = |id: &str| siblings.iter().filter(|s| s.leader() == id).count();
    up.sort_by(|a, b| {
        (held(a), a.report.disk_used_bytes, &a.registration.node_id).cmp(&(
            held(b),
            b.report.disk_used_bytes,
            &b.registration.node_id,
        ))
    });
    let mut chosen: Vec<&NodeRecord> = Vec::new();
    while chosen.len() < replication_factor {
        let next = pick(&up, &chosen).expect("enough nodes checked above");
        chosen.push(up.remove(next));
    }
    let mut ids: Vec<String> = chosen
        .into_iter()
        .map(|n| n.registration.node_id.clone())
        .collect();
    // The chosen node leading fewest partitions of the table leads (the first on a tie).
    if let Some(leader) = (0..ids.len()).min_by_key(|&i| (leads(&ids[i]), i)) {
        ids[..=leader].rotate_right(1);
    }
    Ok(ids)
}

/// The node to take over a replica of a table held by `holders` (the replica being replaced
/// left out): an up node holding none, in the failure domains the holders use least, then the
/// least used; `None` when every up node holds one.
pub fn replacement(nodes: &[NodeRecord], holders: &[String]) -> Option<String> {
    let mut candidates: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Up && !holders.contains(&n.registration.node_id))
        .collect();
    candidates.sort_by(|a, b| {
        (a.report.disk_used_bytes, &a.registration.node_id)
            .cmp(&(b.report.disk_used_bytes, &b.registration.node_id))
    });
    let kept: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| holders.contains(&n.registration.node_id))
        .collect();
    pick(&candidates, &kept).map(|i| candidates[i].registration.node_id.clone())
}

/// Of `candidates` (least used first), the first sharing the fewest failure domains with
/// `chosen`, widest domain first.
fn pick(candidates: &[&NodeRecord], chosen: &[&NodeRecord]) -> Option<usize> {
    let domain = |node: &NodeRecord, key: &str| node.registration.labels.get(key).cloned();
    let clashes = |node: &NodeRecord| -> Vec<usize> {
        DOMAINS
            .iter()
            .map(|key| {
                let Some(value) = domain(node, key) else {
                    return 0;
                };
                chosen
                    .iter()
                    .filter(|c| domain(c, key).as_ref() == Some(&value))
                    .count()
            })
            .collect()
    };
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(order, node)| (clashes(node), *order))
        .map(|(order, _)| order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{NodeRegistration, NodeReport};

    fn node(id: &str, used: u64, labels: &[(&str, &str)], up: bool) -> NodeRecord {
        NodeRecord {
            registration: NodeRegistration {
                node_id: id.into(),
                address: format!("{id}:1"),
                http_address: None,
                cores: 2,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                version: "t".into(),
            },
            report: NodeReport {
                disk_used_bytes: used,
                ..NodeReport::default()
            },
            state: if up { NodeState::Up } else { NodeState::Down },
            incarnation: 1,
            last_seen_ms: 0,
            registered_ms: 0,
        }
    }

    #[test]
    fn least_used_first_and_down_nodes_never() {
        let nodes = [
            node("a", 300, &[], true),
            node("b", 100, &[], true),
            node("c", 0, &[], false),
            node("d", 200, &[], true),
        ];
        assert_eq!(choose(&nodes, 3, &[]).unwrap(), ["b", "d", "a"]);
        assert_eq!(choose(&nodes, 1, &[]).unwrap(), ["b"]);
        let error = choose(&nodes, 4, &[]).unwrap_err();
        assert!(error.contains("3 node(s) up"), "{error}");
    }

    #[test]
    fn spreads_over_racks_then_hosts() {
        let nodes = [
            node("a", 0, &[("rack", "r1"), ("host", "h1")], true),
            node("b", 1, &[("rack", "r1"), ("host", "h2")], true),
            node("c", 2, &[("rack", "r1"), ("host", "h1")], true),
            node("d", 9, &[("rack", "r2"), ("host", "h3")], true),
        ];
        // d is the most used but the only other rack; then b, on another host than a.
        assert_eq!(choose(&nodes, 3, &[]).unwrap(), ["a", "d", "b"]);
        // Without the spare rack, the domain is shared only when it must be.
        assert_eq!(choose(&nodes[..3], 3, &[]).unwrap(), ["a", "b", "c"]);
    }

    #[test]
    fn partitions_of_a_table_spread_their_replicas_and_leaders() {
        let nodes: Vec<NodeRecord> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| node(id, 0, &[], true))
            .collect();
        let mut placed: Vec<TablePlacement> = Vec::new();
        for index in 0..4 {
            let siblings: Vec<&TablePlacement> = placed.iter().collect();
            let replicas = choose(&nodes, 2, &siblings).unwrap();
            placed.push(TablePlacement {
                tenant: "t".into(),
                table: format!("events.p{index}"),
                replication_factor: 2,
                write_quorum: 2,
                epoch: 1,
                in_sync: replicas.clone(),
                replicas,
                partition: None,
            });
        }
        // Four partitions of two replicas on four nodes: two replicas and one leadership each.
        for id in ["a", "b", "c", "d"] {
            let id = id.to_owned();
            assert_eq!(
                placed.iter().filter(|p| p.replicas.contains(&id)).count(),
                2
            );
            assert_eq!(placed.iter().filter(|p| p.leader() == id).count(), 1);
        }
    }

    #[test]
    fn a_replacement_is_an_up_node_without_a_replica_in_another_domain() {
        let nodes = [
            node("a", 0, &[("rack", "r1")], true),
            node("b", 0, &[("rack", "r2")], false),
            node("c", 1, &[("rack", "r1")], true),
            node("d", 5, &[("rack", "r2")], true),
            node("e", 2, &[("rack", "r3")], true),
        ];
        // b (down, r2) is replaced for a table on a and b: not a, nor c (a's rack, though
        // least used), but the least used of another rack.
        let holders = ["a".to_owned()];
        assert_eq!(replacement(&nodes, &holders).as_deref(), Some("e"));
        let holders = ["a".to_owned(), "e".to_owned()];
        assert_eq!(replacement(&nodes, &holders).as_deref(), Some("d"));
        // Every up node holds one already.
        let holders: Vec<String> = ["a", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(replacement(&nodes, &holders), None);
    }
}
