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

/// How much each replica weighs when balancing: the bytes its table's leader reports, once
/// every table has reported a size; until then one per replica (counts: a table whose rows
/// are all still in the write-ahead log reports none, and would weigh nothing).
pub struct Weights {
    /// Sizes by (tenant, table); `None`: count replicas.
    bytes: Option<std::collections::HashMap<(String, String), u64>>,
}

impl Weights {
    /// From the nodes' reports (`NodeReport::table_bytes`) for `tables`.
    pub fn new(nodes: &[NodeRecord], tables: &[TablePlacement]) -> Weights {
        let bytes: std::collections::HashMap<(String, String), u64> = nodes
            .iter()
            .flat_map(|n| crate::catalog::table_bytes_from_json(&n.report.table_bytes))
            .map(|(tenant, table, bytes)| ((tenant, table), bytes))
            .collect();
        let known = tables.iter().all(|t| {
            bytes
                .get(&(t.tenant.clone(), t.table.clone()))
                .is_some_and(|&b| b > 0)
        });
        Weights {
            bytes: known.then_some(bytes),
        }
    }

    fn of(&self, table: &TablePlacement) -> u64 {
        match &self.bytes {
            None => 1,
            Some(bytes) => {
                let key = (table.tenant.clone(), table.table.clone());
                bytes.get(&key).copied().unwrap_or(1).max(1)
            }
        }
    }

    /// Each node's load: the weights of the replicas it holds (every node listed, by id).
    pub fn loads(
        &self,
        nodes: &[NodeRecord],
        tables: &[TablePlacement],
    ) -> std::collections::BTreeMap<String, u64> {
        let mut loads: std::collections::BTreeMap<String, u64> = nodes
            .iter()
            .map(|n| (n.registration.node_id.clone(), 0))
            .collect();
        for table in tables {
            for replica in &table.replicas {
                *loads.entry(replica.clone()).or_default() += self.of(table);
            }
        }
        loads
    }

    /// The next move for balance: a follower replica of a table (its index in `tables`) to add
    /// on the least loaded node (returned), taken later from the most loaded holder. Only while
    /// the move narrows the gap: the most loaded donor's load exceeds the least loaded node's
    /// by more than 1.5 times the replica's weight (with counts: by two replicas or more), the
    /// heaviest such replica first. A leader's replica stays (leadership is not moved for
    /// balance).
    pub fn next_move(
        &self,
        loads: &std::collections::BTreeMap<String, u64>,
        tables: &[TablePlacement],
    ) -> Option<(usize, String)> {
        let (lightest, low) = loads.iter().min_by_key(|(id, load)| (**load, *id))?;
        let mut donors: Vec<(&String, u64)> = loads.iter().map(|(id, &l)| (id, l)).collect();
        donors.sort_by_key(|&(id, load)| std::cmp::Reverse((load, id)));
        donors.into_iter().find_map(|(donor, load)| {
            let gap = load.saturating_sub(*low);
            tables
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    let weight = self.of(t);
                    t.leader() != donor.as_str()
                        && t.replicas.contains(donor)
                        && !t.replicas.contains(lightest)
                        && weight > 0
                        && gap.saturating_mul(2) > weight.saturating_mul(3)
                })
                .max_by_key(|(i, t)| (self.of(t), std::cmp::Reverse(*i)))
                .map(|(i, _)| (i, lightest.clone()))
        })
    }

    /// Of a table holding one replica more than its factor (a move under way), the follower to
    /// remove: on the most loaded node.
    pub fn surplus<'t>(
        &self,
        loads: &std::collections::BTreeMap<String, u64>,
        table: &'t TablePlacement,
    ) -> Option<&'t String> {
        table
            .replicas
            .iter()
            .skip(1)
            .max_by_key(|r| (loads.get(*r).copied().unwrap_or(0), r.as_str()))
    }
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

    fn table(name: &str, replicas: &[&str], bytes: u64) -> (TablePlacement, NodeRecord) {
        let mut leader = node(replicas[0], 0, &[], true);
        leader.report.table_bytes =
            crate::catalog::table_bytes_json(&[("t".into(), name.into(), bytes)]);
        let replicas: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
        let placement = TablePlacement {
            tenant: "t".into(),
            table: name.into(),
            replication_factor: 2,
            write_quorum: 2,
            epoch: 1,
            in_sync: replicas.clone(),
            replicas,
            partition: None,
        };
        (placement, leader)
    }

    #[test]
    fn balance_moves_the_heaviest_replica_that_narrows_the_gap_by_bytes() {
        // a and b hold two big tables and a small one; c joins empty.
        let (big1, mut a) = table("big1", &["a", "b"], 1000);
        let (big2, b) = table("big2", &["b", "a"], 1000);
        let (small, _) = table("small", &["a", "b"], 10);
        // a reports both tables it leads.
        a.report.table_bytes = crate::catalog::table_bytes_json(&[
            ("t".into(), "big1".into(), 1000),
            ("t".into(), "small".into(), 10),
        ]);
        let nodes = [a, b, node("c", 0, &[], true)];
        let tables = [big1, big2, small];
        let weights = Weights::new(&nodes, &tables);
        let loads = weights.loads(&nodes, &tables);
        assert_eq!(loads.values().copied().collect::<Vec<_>>(), [2010, 2010, 0]);
        // A big follower moves to c (the small one would barely help).
        assert_eq!(weights.next_move(&loads, &tables), Some((0, "c".into())));
        // Then a 2010, b 1010, c 1000: moving a 1000-byte replica would not narrow a gap of
        // 1010 enough (it must exceed 1.5 times the replica), so nothing moves.
        let moved = TablePlacement {
            replicas: vec!["a".into(), "c".into()],
            ..tables[0].clone()
        };
        let tables = [moved, tables[1].clone(), tables[2].clone()];
        let loads = weights.loads(&nodes, &tables);
        assert_eq!(
            loads.values().copied().collect::<Vec<_>>(),
            [2010, 1010, 1000]
        );
        assert_eq!(weights.next_move(&loads, &tables), None);
    }

    #[test]
    fn without_sizes_balance_counts_replicas() {
        let nodes: Vec<NodeRecord> = ["a", "b", "c"]
            .iter()
            .map(|id| node(id, 0, &[], true))
            .collect();
        let tables: Vec<TablePlacement> = (0..3)
            .map(|i| table(&format!("t{i}"), &["a", "b"], 0).0)
            .collect();
        let weights = Weights::new(&nodes, &tables);
        let loads = weights.loads(&nodes, &tables);
        // a and b hold three each, c none: a follower on b moves (leaders stay).
        let (index, to) = weights.next_move(&loads, &tables).unwrap();
        assert_eq!(to, "c");
        assert_eq!(tables[index].leader(), "a");
        let surplus = TablePlacement {
            replicas: vec!["a".into(), "b".into(), "c".into()],
            ..tables[index].clone()
        };
        assert_eq!(
            weights.surplus(&loads, &surplus).map(String::as_str),
            Some("b")
        );
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
