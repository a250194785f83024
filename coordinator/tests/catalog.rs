//! One contract, both back ends: the embedded SQLite catalog and a real PostgreSQL the test
//! starts. Migrations, node registration and heartbeats, marking nodes down under a fenced
//! lease, leases under racing takers, durability and an unreachable server.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use tessera_coordinator::catalog::{
    self, Catalog, CatalogError, CatalogFile, FilesReport, Lease, NodeRegistration, NodeReport,
    NodeState, PartitionOf, TablePlacement,
};
use tessera_coordinator::testing::PostgresServer;

fn registration(id: &str, rack: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: id.into(),
        address: format!("10.0.0.{}:7070", id.len()),
        http_address: Some("10.0.0.1:9464".into()),
        cores: 8,
        labels: BTreeMap::from([("host".into(), id.into()), ("rack".into(), rack.into())]),
        version: "0.1.0".into(),
    }
}

fn contract(catalog: &dyn Catalog, other: &dyn Catalog) {
    // Migrations are idempotent, from any coordinator.
    assert_eq!(catalog.migrate().unwrap(), catalog::MIGRATIONS.len() as u32);
    assert_eq!(other.migrate().unwrap(), catalog::MIGRATIONS.len() as u32);

    // Registration, heartbeats, listing.
    let n1 = catalog.register_node(&registration("n1", "r1")).unwrap();
    assert_eq!((n1.incarnation, n1.state), (1, NodeState::Up));
    catalog.register_node(&registration("n2", "r2")).unwrap();
    let again = other.register_node(&registration("n1", "r1")).unwrap();
    assert_eq!(
        again.incarnation, 2,
        "a restarted node is a new incarnation"
    );
    let report = NodeReport {
        disk_used_bytes: 5 << 30,
        disk_capacity_bytes: u64::MAX,
        queries_running: 3,
        copying: r#"[{"tenant":"acme","table":"events","to":"n1","bytes":5,"total":9}]"#.into(),
        table_bytes: catalog::table_bytes_json(&[("acme".into(), "events".into(), 123)]),
    };
    let beat = catalog.heartbeat("n2", &report).unwrap();
    assert_eq!(beat.report.disk_used_bytes, 5 << 30);
    assert_eq!(
        beat.report.disk_capacity_bytes,
        i64::MAX as u64,
        "saturates, never wraps"
    );
    let nodes = other.nodes().unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| n.registration.node_id.as_str())
            .collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    assert_eq!(nodes[0].registration, registration("n1", "r1"));
    assert_eq!(nodes[1].report.queries_running, 3);
    assert_eq!(
        catalog::table_bytes_from_json(&nodes[1].report.table_bytes),
        [("acme".to_owned(), "events".to_owned(), 123)]
    );
    assert_eq!(nodes[1].report.copying, report.copying);
    assert_eq!(nodes[0].report.copying, "", "nothing reported yet");
    assert!(matches!(
        catalog.heartbeat("n9", &report),
        Err(CatalogError::NotFound(_))
    ));
    for bad in ["", "N1", "a b", &"x".repeat(65)] {
        assert!(
            matches!(
                catalog.register_node(&registration(bad, "r")),
                Err(CatalogError::Invalid(_))
            ),
            "{bad:?}"
        );
    }

    // Leases: taken, renewed (same epoch), refused to another while unexpired.
    let lease = catalog
        .acquire_lease("leader", "c1", 60_000)
        .unwrap()
        .unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), ("c1", 1));
    let renewed = other
        .acquire_lease("leader", "c1", 60_000)
        .unwrap()
        .unwrap();
    assert_eq!(renewed.epoch, 1);
    assert!(renewed.expires_ms >= lease.expires_ms);
    assert_eq!(other.acquire_lease("leader", "c2", 60_000).unwrap(), None);
    assert_eq!(other.lease("leader").unwrap().unwrap().holder, "c1");

    // Marking down: only the leader at its epoch, only stale nodes.
    std::thread::sleep(std::time::Duration::from_millis(60));
    catalog.heartbeat("n2", &report).unwrap();
    let down = catalog.mark_down(50, &renewed).unwrap();
    assert_eq!(down, ["n1"]);
    assert_eq!(
        catalog.mark_down(50, &renewed).unwrap(),
        Vec::<String>::new()
    );
    let states: Vec<NodeState> = other.nodes().unwrap().iter().map(|n| n.state).collect();
    assert_eq!(states, [NodeState::Down, NodeState::Up]);
    // A heartbeat brings a node back up.
    assert_eq!(
        catalog.heartbeat("n1", &report).unwrap().state,
        NodeState::Up
    );

    // Released, another takes it at the next epoch; the deposed holder is fenced and changes
    // nothing.
    assert!(catalog.release_lease(&renewed).unwrap());
    assert!(!catalog.release_lease(&renewed).unwrap(), "released once");
    let taken = other.acquire_lease("leader", "c2", 100).unwrap().unwrap();
    assert_eq!((taken.holder.as_str(), taken.epoch), ("c2", 2));
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert!(matches!(
        catalog.mark_down(1, &renewed),
        Err(CatalogError::Fenced(_))
    ));
    assert!(other
        .nodes()
        .unwrap()
        .iter()
        .all(|n| n.state == NodeState::Up));
    // Expired, it passes to the next taker at the next epoch; the expired holder is fenced.
    std::thread::sleep(std::time::Duration::from_millis(120));
    assert!(matches!(
        other.mark_down(1, &taken),
        Err(CatalogError::Fenced(_))
    ));
    let third = catalog
        .acquire_lease("leader", "c3", 60_000)
        .unwrap()
        .unwrap();
    assert_eq!(third.epoch, 3);
    assert!(catalog.now_ms().unwrap() > 1_700_000_000_000);
    placement(catalog, other, &third, &taken);
    files(catalog, other, &third);
    quotas(catalog, other);
}

/// Tenants' quota objects: written by any coordinator, in every routing table after, each
/// change bumping its version; a tenant's is replaced whole; tenants without one are absent.
fn quotas(catalog: &dyn Catalog, other: &dyn Catalog) {
    let before = catalog.routing().unwrap();
    assert!(!before.quotas.contains_key("newcomer"));
    catalog
        .set_quota("newcomer", r#"{"storage_bytes":1000}"#)
        .unwrap();
    other
        .set_quota("acme", r#"{"concurrent_queries":4}"#)
        .unwrap();
    let after = other.routing().unwrap();
    assert_eq!(after.version, before.version + 2);
    assert_eq!(after.quotas["newcomer"], r#"{"storage_bytes":1000}"#);
    assert_eq!(after.quotas["acme"], r#"{"concurrent_queries":4}"#);
    catalog.set_quota("acme", r#"{"result_bytes":9}"#).unwrap();
    let replaced = catalog.routing().unwrap();
    assert_eq!(replaced.quotas["acme"], r#"{"result_bytes":9}"#);
    assert_eq!(replaced.version, after.version + 1);
    // The placements are as they were.
    assert_eq!(replaced.tables, before.tables);
}

fn file(path: &str, rows: u64) -> CatalogFile {
    CatalogFile {
        path: path.into(),
        bytes: rows * 10,
        rows,
        crc32: Some(7),
        entry_json: format!("{{\"path\": \"{path}\"}}"),
    }
}

fn report(epoch: u64, manifest_version: u64, files: &[CatalogFile]) -> FilesReport {
    FilesReport {
        epoch,
        manifest_version,
        schema_json: format!("{{\"version\": {manifest_version}}}"),
        settings_json: "{\"compression\": \"zstd\"}".into(),
        files: files.to_vec(),
    }
}

/// Files: only a table's leader at its epoch reports them; a later report replaces an earlier
/// one (a file listed no more is gone), an older one changes nothing; a new leader's list
/// replaces the old leader's whole; a drop removes them.
fn files(catalog: &dyn Catalog, other: &dyn Catalog, leader: &Lease) {
    let logs = TablePlacement {
        tenant: "acme".into(),
        table: "logs".into(),
        replication_factor: 2,
        write_quorum: 1,
        epoch: 1,
        replicas: vec!["n2".into(), "n3".into()],
        in_sync: vec!["n2".into(), "n3".into()],
        partition: None,
    };
    catalog.place_table(&logs, leader).unwrap();
    let key = ("acme", "logs");
    let version = catalog.routing_version().unwrap();
    let listed = catalog.files(Some(key)).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].node.as_str(), listed[0].file_count), ("", 0));
    assert_eq!(listed[0].schema_json, "{}");

    let first = [
        file("date=2026-01-01/part-1.parquet", 5),
        file("date=2026-01-02/part-2.parquet", 7),
    ];
    catalog
        .report_files(key, "n2", &report(1, 10, &first))
        .unwrap();
    let listed = other.files(Some(key)).unwrap().pop().unwrap();
    assert_eq!(
        (listed.node.as_str(), listed.epoch, listed.manifest_version),
        ("n2", 1, 10)
    );
    assert_eq!((listed.file_count, listed.rows, listed.bytes), (2, 12, 120));
    assert_eq!(listed.files, first);
    assert_eq!(listed.schema_json, "{\"version\": 10}");
    assert_eq!(listed.settings_json, "{\"compression\": \"zstd\"}");
    assert_eq!(
        catalog.routing_version().unwrap(),
        version,
        "routing unchanged"
    );

    // A follower, or the leader at another epoch, is fenced.
    for (node, epoch) in [("n3", 1), ("n2", 2)] {
        assert!(matches!(
            catalog.report_files(key, node, &report(epoch, 11, &first)),
            Err(CatalogError::Fenced(_))
        ));
    }
    assert!(matches!(
        catalog.report_files(("acme", "nothing"), "n2", &report(1, 1, &first)),
        Err(CatalogError::NotFound(_))
    ));
    // Compacted: two files become one.
    let compacted = [file("date=2026-01-01/part-3.parquet", 12)];
    other
        .report_files(key, "n2", &report(1, 12, &compacted))
        .unwrap();
    // A late report of an earlier version changes nothing.
    catalog
        .report_files(key, "n2", &report(1, 11, &first))
        .unwrap();
    let listed = catalog.files(Some(key)).unwrap().pop().unwrap();
    assert_eq!(listed.files, compacted);
    assert_eq!((listed.manifest_version, listed.rows), (12, 12));

    // A new leader's files replace the old leader's, whatever their manifest versions.
    let moved = catalog.set_in_sync(key, "n2", false, 1, leader).unwrap();
    assert_eq!((moved.leader(), moved.epoch), ("n3", 2));
    let theirs = [file("date=2026-01-01/part-1.parquet", 12)];
    catalog
        .report_files(key, "n3", &report(2, 3, &theirs))
        .unwrap();
    let listed = other.files(Some(key)).unwrap().pop().unwrap();
    assert_eq!((listed.node.as_str(), listed.epoch), ("n3", 2));
    assert_eq!(listed.files, theirs);

    // Every table's counts, no lists.
    let all = catalog.files(None).unwrap();
    let logs_counts = all.iter().find(|t| t.table == "logs").unwrap();
    assert_eq!((logs_counts.file_count, logs_counts.rows), (1, 12));
    assert!(logs_counts.files.is_empty());

    assert!(catalog.drop_placement(key, leader).unwrap());
    assert!(other.files(Some(key)).unwrap().is_empty());
    assert!(!other.files(None).unwrap().iter().any(|t| t.table == "logs"));
}

/// Placement: stored once (the first placement of a table wins), every change bumps the
/// routing version, leadership moves off a down node to an up follower, and a deposed
/// coordinator changes nothing.
fn placement(catalog: &dyn Catalog, other: &dyn Catalog, leader: &Lease, deposed: &Lease) {
    let empty = catalog.routing().unwrap();
    assert_eq!(empty.tables, []);
    let events = TablePlacement {
        tenant: "acme".into(),
        table: "events".into(),
        replication_factor: 2,
        write_quorum: 2,
        epoch: 1,
        replicas: vec!["n2".into(), "n1".into()],
        in_sync: vec!["n2".into(), "n1".into()],
        partition: None,
    };
    let stored = catalog.place_table(&events, leader).unwrap();
    assert_eq!(stored, events);
    assert_eq!(stored.leader(), "n2");
    let other_choice = TablePlacement {
        replicas: vec!["n1".into()],
        write_quorum: 1,
        ..events.clone()
    };
    assert_eq!(
        other.place_table(&other_choice, leader).unwrap(),
        events,
        "placed once"
    );
    assert!(matches!(
        other.place_table(
            &TablePlacement {
                table: "t2".into(),
                ..events.clone()
            },
            deposed
        ),
        Err(CatalogError::Fenced(_))
    ));
    for bad in [vec![], vec!["n1".to_string(), "n1".to_string()]] {
        let invalid = TablePlacement {
            table: "bad".into(),
            replicas: bad,
            ..events.clone()
        };
        assert!(matches!(
            catalog.place_table(&invalid, leader),
            Err(CatalogError::Invalid(_))
        ));
    }
    let routing = other.routing().unwrap();
    assert_eq!(routing.version, empty.version + 1);
    assert_eq!(routing.tables, std::slice::from_ref(&events));
    assert_eq!(other.routing_version().unwrap(), routing.version);

    // In-sync replicas: only the table's leader at its epoch changes them, never to drop
    // itself; each change is a new routing version.
    let key = ("acme", "events");
    let behind = other.set_in_sync(key, "n1", false, 1, leader).unwrap();
    assert_eq!(behind.in_sync, ["n2"]);
    assert!(matches!(
        catalog.set_in_sync(key, "n2", false, 1, leader),
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        catalog.set_in_sync(key, "n1", true, 7, leader),
        Err(CatalogError::Fenced(_))
    ));
    assert!(matches!(
        catalog.set_in_sync(key, "n9", true, 1, leader),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        catalog.set_in_sync(key, "n1", true, 1, deposed),
        Err(CatalogError::Fenced(_))
    ));
    assert_eq!(other.routing_version().unwrap(), routing.version + 1);
    // n2, the leader, goes down while n1 is behind: leadership cannot move (n1 may lack
    // acknowledged batches).
    std::thread::sleep(std::time::Duration::from_millis(60));
    catalog.heartbeat("n1", &NodeReport::default()).unwrap();
    assert_eq!(catalog.mark_down(50, leader).unwrap(), ["n2"]);
    assert_eq!(catalog.move_leaders(leader).unwrap(), []);
    // Back in sync (say the catalog was told before n2 went), it takes over.
    let synced = catalog.set_in_sync(key, "n1", true, 1, leader).unwrap();
    assert_eq!(synced.in_sync, ["n2", "n1"]);
    let routing = catalog.routing().unwrap();

    // n1 leads at the next epoch, in a new routing version.
    assert!(matches!(
        other.move_leaders(deposed),
        Err(CatalogError::Fenced(_))
    ));
    let moved = other.move_leaders(leader).unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].leader(), "n1");
    assert_eq!(moved[0].epoch, 2);
    let after = catalog.routing().unwrap();
    assert_eq!(after.version, routing.version + 1);
    assert_eq!(after.tables, moved);
    // Nothing left to move (the old leader is a follower now, down).
    assert_eq!(catalog.move_leaders(leader).unwrap(), []);
    assert_eq!(catalog.routing_version().unwrap(), after.version);

    // Re-replication: the down follower n2 is replaced by n3, out of sync until copied; the
    // leader is never replaced, nor a replica by a node holding one.
    for (from, to) in [
        (Some("n1"), Some("n3")),
        (Some("n2"), Some("n1")),
        (Some("n2"), None),
        (None, None),
    ] {
        assert!(matches!(
            catalog.change_replica(key, from, to, leader),
            Err(CatalogError::Invalid(_))
        ));
    }
    assert!(matches!(
        catalog.change_replica(key, Some("n9"), Some("n3"), leader),
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        other.change_replica(key, Some("n2"), Some("n3"), deposed),
        Err(CatalogError::Fenced(_))
    ));
    let replaced = other
        .change_replica(key, Some("n2"), Some("n3"), leader)
        .unwrap();
    assert_eq!(replaced.replicas, ["n1", "n3"]);
    assert_eq!(replaced.in_sync, ["n1"]);
    assert_eq!(replaced.epoch, 2);
    let routing = catalog.routing().unwrap();
    assert_eq!(routing.version, after.version + 1);
    assert_eq!(routing.tables, [replaced]);
    // A move onto another node: added out of sync (one replica over the factor), then the
    // replica it takes over from removed; never below the factor.
    let grown = catalog
        .change_replica(key, None, Some("n4"), leader)
        .unwrap();
    assert_eq!(grown.replicas, ["n1", "n3", "n4"]);
    assert_eq!(grown.in_sync, ["n1"]);
    assert_eq!(grown.epoch, 2);
    let moved = other.change_replica(key, Some("n4"), None, leader).unwrap();
    assert_eq!(moved.replicas, ["n1", "n3"]);
    assert!(matches!(
        catalog.change_replica(key, Some("n3"), None, leader),
        Err(CatalogError::Invalid(_))
    ));
    assert_eq!(catalog.routing().unwrap().version, after.version + 3);

    // A leader whose copy is damaged steps down by leaving the in-sync set: only to an up,
    // in-sync follower, which leads at the next epoch.
    assert!(matches!(
        catalog.set_in_sync(key, "n1", false, 2, leader),
        Err(CatalogError::Invalid(_))
    ));
    catalog.register_node(&registration("n3", "r3")).unwrap();
    catalog.set_in_sync(key, "n3", true, 2, leader).unwrap();
    let stepped = other.set_in_sync(key, "n1", false, 2, leader).unwrap();
    assert_eq!(stepped.leader(), "n3");
    assert_eq!(stepped.epoch, 3);
    assert_eq!(stepped.in_sync, ["n3"]);
    assert_eq!(catalog.routing().unwrap().tables, [stepped]);

    // Dropped: gone from the routing table in a new version; a second drop finds nothing.
    assert!(matches!(
        other.drop_placement(key, deposed),
        Err(CatalogError::Fenced(_))
    ));
    let before = catalog.routing_version().unwrap();
    assert!(other.drop_placement(key, leader).unwrap());
    let routing = catalog.routing().unwrap();
    assert_eq!(routing.tables, []);
    assert_eq!(routing.version, before + 1);
    assert!(!catalog.drop_placement(key, leader).unwrap());
    assert_eq!(catalog.routing_version().unwrap(), before + 1);

    // A partition of a partitioned table keeps what it is a partition of, and is dropped as
    // any table.
    let partition = TablePlacement {
        table: "clicks.p1".into(),
        partition: Some(PartitionOf {
            table: "clicks".into(),
            index: 1,
            count: 4,
            key: "user_id".into(),
            key_type: "int".into(),
        }),
        ..events.clone()
    };
    assert_eq!(catalog.place_table(&partition, leader).unwrap(), partition);
    assert_eq!(other.routing().unwrap().tables, [partition]);
    assert!(other.drop_placement(("acme", "clicks.p1"), leader).unwrap());
}

/// Threads, each with its own connection, race for a lease many times: one winner a round,
/// epochs only grow.
fn race(open: impl Fn() -> Box<dyn Catalog> + Sync) {
    const THREADS: usize = 4;
    const ROUNDS: usize = 15;
    let catalogs: Vec<Box<dyn Catalog>> = (0..THREADS).map(|_| open()).collect();
    let mut last: Option<(String, u64)> = None;
    for round in 0..ROUNDS {
        let name = format!("race-{}", round % 3);
        // Expire whatever the last round left, so every round is a real contest.
        if let Some(lease) = catalogs[0].lease(&name).unwrap() {
            catalogs[0].release_lease(&lease).unwrap();
        }
        let barrier = Arc::new(Barrier::new(THREADS));
        let winners: Vec<Option<u64>> = std::thread::scope(|scope| {
            let handles: Vec<_> = catalogs
                .iter()
                .enumerate()
                .map(|(i, catalog)| {
                    let (barrier, name) = (barrier.clone(), name.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        catalog
                            .acquire_lease(&name, &format!("t{i}"), 60_000)
                            .unwrap()
                            .map(|l| l.epoch)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<u64> = winners.into_iter().flatten().collect();
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let epoch = won[0];
        let stored = catalogs[1].lease(&name).unwrap().unwrap();
        assert_eq!(stored.epoch, epoch);
        if name == "race-0" {
            // A new holder gets the next epoch; the same one taking it back keeps its own.
            let changed = last
                .as_ref()
                .is_some_and(|(holder, _)| *holder != stored.holder);
            if let Some((_, before)) = &last {
                assert!(
                    if changed {
                        epoch == before + 1
                    } else {
                        epoch == *before
                    },
                    "epoch {epoch} after {before} (holder changed: {changed})"
                );
            }
            last = Some((stored.holder.clone(), epoch));
        }
    }
}

#[test]
fn sqlite_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog::open(&format!("sqlite:{}", dir.path().display())).unwrap();
    let other = catalog::open(dir.path().to_str().unwrap()).unwrap();
    contract(catalog.as_ref(), other.as_ref());
    race(|| catalog::open(dir.path().to_str().unwrap()).unwrap());

    // Durable: a new process (connection) sees every change.
    drop((catalog, other));
    let reopened = catalog::open(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(
        reopened.migrate().unwrap(),
        catalog::MIGRATIONS.len() as u32
    );
    assert_eq!(reopened.nodes().unwrap().len(), 3);
    assert_eq!(reopened.lease("leader").unwrap().unwrap().holder, "c3");

    // A catalog written by a newer binary is refused, not rewritten.
    let connection = rusqlite_insert_version(dir.path(), 99);
    drop(connection);
    let error = reopened.migrate().unwrap_err();
    assert!(matches!(error, CatalogError::Schema(_)), "{error}");
    assert!(error.to_string().contains("99"), "{error}");
}

/// Records a future schema version, as a newer coordinator would.
fn rusqlite_insert_version(dir: &std::path::Path, version: i64) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(dir.join("catalog.db")).unwrap();
    connection
        .execute(
            "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, 0)",
            [version],
        )
        .unwrap();
    connection
}

#[test]
fn postgres_catalog() {
    let mut server = PostgresServer::start();
    let catalog = catalog::open(&server.url).unwrap();
    let other = catalog::open(&server.url).unwrap();
    assert!(catalog
        .describe()
        .starts_with("postgres://tessera@127.0.0.1:"));
    contract(catalog.as_ref(), other.as_ref());
    race(|| catalog::open(&server.url).unwrap());
    // Migrating from several coordinators at once is safe (advisory lock).
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let url = server.url.clone();
            scope.spawn(move || catalog::open(&url).unwrap().migrate().unwrap());
        }
    });

    // The server gone: calls fail with `Unavailable` (no panic, no hang), and a new connection
    // is refused the same way.
    server.stop();
    let started = std::time::Instant::now();
    assert!(matches!(catalog.nodes(), Err(CatalogError::Unavailable(_))));
    assert!(matches!(
        catalog.acquire_lease("leader", "c1", 1000),
        Err(CatalogError::Unavailable(_))
    ));
    assert!(matches!(
        catalog::open(&server.url),
        Err(CatalogError::Unavailable(_))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}
