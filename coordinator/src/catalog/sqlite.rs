//! The embedded catalog: one SQLite file (`DIR/catalog.db`) in WAL mode with `synchronous=FULL`,
//! so a committed change survives a crash or power loss. Writers take the database lock at the
//! start of their transaction (`BEGIN IMMEDIATE`), so two coordinators or threads racing for a
//! lease are serialized; time is this host's clock (one machine).

use super::*;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Hands a table's leadership to node ?3 (?1 tenant, ?2 table) at the next epoch.
const HAND_OVER: &str = "UPDATE placement SET epoch = epoch + 1, \
     role = CASE WHEN node_id = ?3 THEN 'leader' ELSE 'follower' END \
     WHERE tenant = ?1 AND table_name = ?2";

pub struct SqliteCatalog {
    path: PathBuf,
    connection: Mutex<Connection>,
}

fn unavailable(error: rusqlite::Error) -> CatalogError {
    CatalogError::Unavailable(format!("SQLite: {error}"))
}

fn host_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn node_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow {
        node_id: row.get(0)?,
        address: row.get(1)?,
        http_address: row.get(2)?,
        cores: row.get(3)?,
        labels: row.get(4)?,
        version: row.get(5)?,
        state: row.get(6)?,
        incarnation: row.get(7)?,
        registered_ms: row.get(8)?,
        last_seen_ms: row.get(9)?,
        disk_used_bytes: row.get(10)?,
        disk_capacity_bytes: row.get(11)?,
        queries_running: row.get(12)?,
        copying: row.get(13)?,
        table_bytes: row.get(14)?,
    })
}

fn lease_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        name: row.get(0)?,
        holder: row.get(1)?,
        epoch: row.get::<_, i64>(2)?.max(0) as u64,
        expires_ms: row.get(3)?,
    })
}

impl SqliteCatalog {
    /// Opens (creating) `dir/catalog.db`.
    pub fn open(dir: &Path) -> Result<SqliteCatalog> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CatalogError::Unavailable(format!("{}: {e}", dir.display())))?;
        let path = dir.join("catalog.db");
        let connection = Connection::open(&path).map_err(unavailable)?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(unavailable)?;
        Ok(SqliteCatalog {
            path,
            connection: Mutex::new(connection),
        })
    }

    fn with<T>(&self, work: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        work(&mut connection)
    }
}

impl Catalog for SqliteCatalog {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn migrate(&self) -> Result<u32> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .map_err(unavailable)?;
            let current: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            if current > MIGRATIONS.len() as i64 {
                return Err(CatalogError::Schema(format!(
                    "the catalog is at schema version {current}; this binary knows up to {}",
                    MIGRATIONS.len()
                )));
            }
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.execute_batch(sql)
                    .map_err(|e| CatalogError::Schema(format!("migration {}: {e}", index + 1)))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                    params![index as i64 + 1, host_now_ms()],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(MIGRATIONS.len() as u32)
        })
    }

    fn now_ms(&self) -> Result<i64> {
        Ok(host_now_ms())
    }

    fn register_node(&self, node: &NodeRegistration) -> Result<NodeRecord> {
        validate_node_id(&node.node_id)?;
        let now = host_now_ms();
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let record = tx
                .query_row(
                    &format!(
                        "INSERT INTO nodes ({NODE_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'up', 1, ?7, ?7, 0, 0, 0, '', '') \
                         ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, \
                         http_address = excluded.http_address, cores = excluded.cores, \
                         labels = excluded.labels, version = excluded.version, state = 'up', \
                         incarnation = nodes.incarnation + 1, registered_ms = excluded.registered_ms, \
                         last_seen_ms = excluded.last_seen_ms \
                         RETURNING {NODE_COLUMNS}"
                    ),
                    params![
                        node.node_id,
                        node.address,
                        node.http_address,
                        node.cores as i64,
                        labels_json(&node.labels),
                        node.version,
                        now
                    ],
                    node_row,
                )
                .map_err(unavailable)?
                .into_record()?;
            // Its address may have changed: nodes holding the routing table fetch it again.
            bump_routing(&tx)?;
            tx.commit().map_err(unavailable)?;
            Ok(record)
        })
    }

    fn heartbeat(&self, node_id: &str, report: &NodeReport) -> Result<NodeRecord> {
        let now = host_now_ms();
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            // A node coming back up changes what the routing table says of it.
            tx.execute(
                "UPDATE routing SET version = version + 1 WHERE id = 1 AND EXISTS \
                 (SELECT 1 FROM nodes WHERE node_id = ?1 AND state <> 'up')",
                params![node_id],
            )
            .map_err(unavailable)?;
            let record = tx
                .query_row(
                    &format!(
                        "UPDATE nodes SET state = 'up', last_seen_ms = ?2, disk_used_bytes = ?3, \
                         disk_capacity_bytes = ?4, queries_running = ?5, copying = ?6, table_bytes = ?7 \
                         WHERE node_id = ?1 \
                         RETURNING {NODE_COLUMNS}"
                    ),
                    params![
                        node_id,
                        now,
                        big(report.disk_used_bytes),
                        big(report.disk_capacity_bytes),
                        report.queries_running as i64,
                        report.copying,
                        report.table_bytes
                    ],
                    node_row,
                )
                .optional()
                .map_err(unavailable)?
                .ok_or_else(|| CatalogError::NotFound(format!("node {node_id} is not registered")))?
                .into_record()?;
            tx.commit().map_err(unavailable)?;
            Ok(record)
        })
    }

    fn mark_down(&self, missed_ms: i64, leader: &Lease) -> Result<Vec<String>> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let now = fence(&tx, leader)?;
            let mut statement = tx
                .prepare(
                    "UPDATE nodes SET state = 'down' WHERE state = 'up' AND last_seen_ms < ?1 \
                     RETURNING node_id",
                )
                .map_err(unavailable)?;
            let mut down: Vec<String> = statement
                .query_map(params![now - missed_ms], |r| r.get(0))
                .map_err(unavailable)?
                .collect::<rusqlite::Result<_>>()
                .map_err(unavailable)?;
            drop(statement);
            if !down.is_empty() {
                bump_routing(&tx)?;
            }
            tx.commit().map_err(unavailable)?;
            down.sort();
            Ok(down)
        })
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.with(|connection| {
            let mut statement = connection
                .prepare(&format!(
                    "SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"
                ))
                .map_err(unavailable)?;
            let rows: Vec<NodeRow> = statement
                .query_map([], node_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<_>>()
                .map_err(unavailable)?;
            rows.into_iter().map(NodeRow::into_record).collect()
        })
    }

    fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let now = host_now_ms();
            let lease = tx
                .query_row(
                    "INSERT INTO leases (name, holder, epoch, expires_ms) VALUES (?1, ?2, 1, ?3) \
                     ON CONFLICT (name) DO UPDATE SET \
                     epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch \
                                  ELSE leases.epoch + 1 END, \
                     holder = excluded.holder, expires_ms = excluded.expires_ms \
                     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4 \
                     RETURNING name, holder, epoch, expires_ms",
                    params![name, holder, now + ttl_ms, now],
                    lease_row,
                )
                .optional()
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(lease)
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let now = host_now_ms();
        self.with(|connection| {
            let changed = connection
                .execute(
                    "UPDATE leases SET expires_ms = ?4 \
                     WHERE name = ?1 AND holder = ?2 AND epoch = ?3 AND expires_ms > ?4",
                    params![lease.name, lease.holder, lease.epoch as i64, now],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
    }

    fn place_table(&self, placement: &TablePlacement, leader: &Lease) -> Result<TablePlacement> {
        validate_placement(placement)?;
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let now = fence(&tx, leader)?;
            let key = (placement.tenant.as_str(), placement.table.as_str());
            let existing = assemble(&placement_rows(&tx, Some(key))?);
            if let Some(existing) = existing.into_iter().next() {
                return Ok(existing);
            }
            tx.execute(
                "INSERT INTO tenants (name, created_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![placement.tenant, now],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO tables (tenant, name, schema_json, partition_spec_json, \
                 settings_json, replication_factor, write_quorum, created_ms) \
                 VALUES (?1, ?2, '{}', ?6, '{}', ?3, ?4, ?5)",
                params![
                    placement.tenant,
                    placement.table,
                    placement.replication_factor as i64,
                    placement.write_quorum as i64,
                    now,
                    PartitionOf::to_json(placement.partition.as_ref())
                ],
            )
            .map_err(unavailable)?;
            for (i, node) in placement.replicas.iter().enumerate() {
                tx.execute(
                    "INSERT INTO placement (tenant, table_name, partition_key, node_id, role, \
                     epoch) VALUES (?1, ?2, '', ?3, ?4, 1)",
                    params![
                        placement.tenant,
                        placement.table,
                        node,
                        if i == 0 { "leader" } else { "follower" }
                    ],
                )
                .map_err(unavailable)?;
            }
            bump_routing(&tx)?;
            let stored = assemble(&placement_rows(&tx, Some(key))?);
            tx.commit().map_err(unavailable)?;
            stored.into_iter().next().ok_or_else(|| {
                CatalogError::Unavailable("the placement just stored is gone".into())
            })
        })
    }

    fn move_leaders(&self, leader: &Lease) -> Result<Vec<TablePlacement>> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            fence(&tx, leader)?;
            let moves = leader_moves(&placement_rows(&tx, None)?);
            let mut moved = Vec::new();
            for (tenant, table, node) in &moves {
                tx.execute(HAND_OVER, params![tenant, table, node])
                    .map_err(unavailable)?;
                moved.extend(assemble(&placement_rows(&tx, Some((tenant, table)))?));
            }
            if !moves.is_empty() {
                bump_routing(&tx)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(moved)
        })
    }

    fn set_in_sync(
        &self,
        table: (&str, &str),
        node: &str,
        in_sync: bool,
        table_epoch: u64,
        leader: &Lease,
    ) -> Result<TablePlacement> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            fence(&tx, leader)?;
            let rows = placement_rows(&tx, Some(table))?;
            if let Some(next) = check_in_sync_change(&rows, table, node, in_sync, table_epoch)? {
                tx.execute(HAND_OVER, params![table.0, table.1, next])
                    .map_err(unavailable)?;
            }
            tx.execute(
                "UPDATE placement SET in_sync = ?4 \
                 WHERE tenant = ?1 AND table_name = ?2 AND node_id = ?3",
                params![table.0, table.1, node, in_sync as i64],
            )
            .map_err(unavailable)?;
            bump_routing(&tx)?;
            let stored = assemble(&placement_rows(&tx, Some(table))?).pop();
            tx.commit().map_err(unavailable)?;
            stored.ok_or_else(|| CatalogError::Unavailable("the placement is gone".into()))
        })
    }

    fn change_replica(
        &self,
        table: (&str, &str),
        from: Option<&str>,
        to: Option<&str>,
        leader: &Lease,
    ) -> Result<TablePlacement> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            fence(&tx, leader)?;
            let rows = placement_rows(&tx, Some(table))?;
            check_replica_change(&rows, table, from, to)?;
            if let Some(from) = from {
                tx.execute(
                    "DELETE FROM placement WHERE tenant = ?1 AND table_name = ?2 AND node_id = ?3",
                    params![table.0, table.1, from],
                )
                .map_err(unavailable)?;
            }
            if let Some(to) = to {
                tx.execute(
                    "INSERT INTO placement (tenant, table_name, partition_key, node_id, role, \
                     epoch, in_sync) VALUES (?1, ?2, '', ?3, 'follower', ?4, 0)",
                    params![table.0, table.1, to, rows[0].epoch],
                )
                .map_err(unavailable)?;
            }
            bump_routing(&tx)?;
            let stored = assemble(&placement_rows(&tx, Some(table))?).pop();
            tx.commit().map_err(unavailable)?;
            stored.ok_or_else(|| CatalogError::Unavailable("the placement is gone".into()))
        })
    }

    fn drop_placement(&self, table: (&str, &str), leader: &Lease) -> Result<bool> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            fence(&tx, leader)?;
            let removed = tx
                .execute(
                    "DELETE FROM placement WHERE tenant = ?1 AND table_name = ?2",
                    params![table.0, table.1],
                )
                .map_err(unavailable)?;
            for statement in [
                "DELETE FROM files WHERE tenant = ?1 AND table_name = ?2",
                "DELETE FROM tables WHERE tenant = ?1 AND name = ?2",
            ] {
                tx.execute(statement, params![table.0, table.1])
                    .map_err(unavailable)?;
            }
            if removed > 0 {
                bump_routing(&tx)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(removed > 0)
        })
    }

    fn report_files(&self, table: (&str, &str), node: &str, report: &FilesReport) -> Result<()> {
        let (epoch, manifest_version, files) =
            (report.epoch, report.manifest_version, &report.files);
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            check_files_reporter(&placement_rows(&tx, Some(table))?, table, node, epoch)?;
            let stored: (String, i64, i64) = tx
                .query_row(
                    "SELECT files_node, files_epoch, files_version FROM tables \
                     WHERE tenant = ?1 AND name = ?2",
                    params![table.0, table.1],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(unavailable)?;
            if !newer_files((epoch, manifest_version), (stored.1, stored.2)) {
                return Ok(());
            }
            // The same leader's files never change under a path: keep those still listed. A
            // new leader's paths name its own files: replace them all.
            let keep: std::collections::HashSet<String> =
                if stored.0 == node && stored.1 == big(epoch) {
                    let mut listed = tx
                        .prepare("SELECT path FROM files WHERE tenant = ?1 AND table_name = ?2")
                        .map_err(unavailable)?;
                    let paths = listed
                        .query_map(params![table.0, table.1], |r| r.get::<_, String>(0))
                        .map_err(unavailable)?
                        .collect::<rusqlite::Result<_>>()
                        .map_err(unavailable)?;
                    paths
                } else {
                    Default::default()
                };
            let reported: std::collections::HashSet<&str> =
                files.iter().map(|f| f.path.as_str()).collect();
            for path in keep.iter().filter(|p| !reported.contains(p.as_str())) {
                tx.execute(
                    "DELETE FROM files WHERE tenant = ?1 AND table_name = ?2 AND path = ?3",
                    params![table.0, table.1, path],
                )
                .map_err(unavailable)?;
            }
            if keep.is_empty() {
                tx.execute(
                    "DELETE FROM files WHERE tenant = ?1 AND table_name = ?2",
                    params![table.0, table.1],
                )
                .map_err(unavailable)?;
            }
            for file in files.iter().filter(|f| !keep.contains(&f.path)) {
                tx.execute(
                    "INSERT INTO files (tenant, table_name, path, bytes, rows, crc32, entry_json) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        table.0,
                        table.1,
                        file.path,
                        big(file.bytes),
                        big(file.rows),
                        file.crc32.map_or(-1, i64::from),
                        file.entry_json
                    ],
                )
                .map_err(unavailable)?;
            }
            tx.execute(
                "UPDATE tables SET files_node = ?3, files_epoch = ?4, files_version = ?5, \
                 schema_json = ?6, settings_json = ?7 WHERE tenant = ?1 AND name = ?2",
                params![
                    table.0,
                    table.1,
                    node,
                    big(epoch),
                    big(manifest_version),
                    report.schema_json,
                    report.settings_json
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
    }

    fn files(&self, table: Option<(&str, &str)>) -> Result<Vec<TableFiles>> {
        self.with(|connection| {
            let tx = connection.transaction().map_err(unavailable)?;
            let mut tables: Vec<TableFiles> = match table {
                Some((tenant, name)) => tx
                    .prepare(&format!(
                        "{FILES_SUMMARY} WHERE t.tenant = ?1 AND t.name = ?2{FILES_GROUP}"
                    ))
                    .map_err(unavailable)?
                    .query_map(params![tenant, name], files_header)
                    .map_err(unavailable)?
                    .collect::<rusqlite::Result<_>>(),
                None => tx
                    .prepare(&format!("{FILES_SUMMARY}{FILES_GROUP}"))
                    .map_err(unavailable)?
                    .query_map([], files_header)
                    .map_err(unavailable)?
                    .collect::<rusqlite::Result<_>>(),
            }
            .map_err(unavailable)?;
            if let (Some((tenant, name)), Some(one)) = (table, tables.first_mut()) {
                (one.schema_json, one.settings_json) = tx
                    .query_row(
                        "SELECT schema_json, settings_json FROM tables \
                         WHERE tenant = ?1 AND name = ?2",
                        params![tenant, name],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(unavailable)?;
                one.files = tx
                    .prepare(
                        "SELECT path, bytes, rows, crc32, entry_json FROM files \
                         WHERE tenant = ?1 AND table_name = ?2 ORDER BY path",
                    )
                    .map_err(unavailable)?
                    .query_map(params![tenant, name], |r| {
                        Ok(CatalogFile {
                            path: r.get(0)?,
                            bytes: r.get::<_, i64>(1)?.max(0) as u64,
                            rows: r.get::<_, i64>(2)?.max(0) as u64,
                            crc32: u32::try_from(r.get::<_, i64>(3)?).ok(),
                            entry_json: r.get(4)?,
                        })
                    })
                    .map_err(unavailable)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(unavailable)?;
            }
            Ok(tables)
        })
    }

    fn routing(&self) -> Result<Routing> {
        self.with(|connection| {
            // One read transaction: the version and the rows agree.
            let tx = connection.transaction().map_err(unavailable)?;
            let version: i64 = tx
                .query_row("SELECT version FROM routing WHERE id = 1", [], |r| r.get(0))
                .map_err(unavailable)?;
            let tables = assemble(&placement_rows(&tx, None)?);
            let quotas = tx
                .prepare("SELECT name, quota_json FROM tenants WHERE quota_json <> ''")
                .map_err(unavailable)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(unavailable)?
                .collect::<rusqlite::Result<_>>()
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Routing {
                version: version.max(0) as u64,
                tables,
                quotas,
            })
        })
    }

    fn set_quota(&self, tenant: &str, quota_json: &str) -> Result<()> {
        self.with(|connection| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let now = host_now_ms();
            tx.execute(
                "INSERT INTO tenants (name, created_ms, quota_json) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET quota_json = excluded.quota_json",
                params![tenant, now, quota_json],
            )
            .map_err(unavailable)?;
            bump_routing(&tx)?;
            tx.commit().map_err(unavailable)
        })
    }

    fn routing_version(&self) -> Result<u64> {
        self.with(|connection| {
            let version: i64 = connection
                .query_row("SELECT version FROM routing WHERE id = 1", [], |r| r.get(0))
                .map_err(unavailable)?;
            Ok(version.max(0) as u64)
        })
    }

    fn lease(&self, name: &str) -> Result<Option<Lease>> {
        self.with(|connection| {
            connection
                .query_row(
                    "SELECT name, holder, epoch, expires_ms FROM leases WHERE name = ?1",
                    params![name],
                    lease_row,
                )
                .optional()
                .map_err(unavailable)
        })
    }
}

/// Checks, inside a write transaction (`BEGIN IMMEDIATE`: the database lock is held, so no lease
/// change can come between), that `leader` still holds its lease; the time now.
fn fence(tx: &rusqlite::Transaction<'_>, leader: &Lease) -> Result<i64> {
    let now = host_now_ms();
    let held = tx
        .query_row(
            "SELECT name, holder, epoch, expires_ms FROM leases WHERE name = ?1",
            params![leader.name],
            lease_row,
        )
        .optional()
        .map_err(unavailable)?;
    check_fence(held.as_ref(), leader, now)?;
    Ok(now)
}

fn placement_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PlacementRow> {
    Ok(PlacementRow {
        tenant: row.get(0)?,
        table: row.get(1)?,
        replication_factor: row.get(2)?,
        write_quorum: row.get(3)?,
        node_id: row.get(4)?,
        leader: row.get::<_, String>(5)? == "leader",
        epoch: row.get(6)?,
        node_up: row.get::<_, String>(7)? == "up",
        in_sync: row.get::<_, i64>(8)? != 0,
        partition_spec_json: row.get(9)?,
    })
}

/// Placement rows, optionally of one table.
fn files_header(row: &rusqlite::Row<'_>) -> rusqlite::Result<TableFiles> {
    let count = |i: usize| row.get::<_, i64>(i).map(|v| v.max(0) as u64);
    Ok(TableFiles {
        tenant: row.get(0)?,
        table: row.get(1)?,
        node: row.get(2)?,
        epoch: count(3)?,
        manifest_version: count(4)?,
        file_count: count(5)?,
        rows: count(6)?,
        bytes: count(7)?,
        files: Vec::new(),
        ..Default::default()
    })
}

fn placement_rows(
    connection: &Connection,
    table: Option<(&str, &str)>,
) -> Result<Vec<PlacementRow>> {
    let filter = if table.is_some() {
        " WHERE t.tenant = ?1 AND t.name = ?2"
    } else {
        ""
    };
    let mut statement = connection
        .prepare(&format!("{PLACEMENT_QUERY}{filter}{PLACEMENT_ORDER}"))
        .map_err(unavailable)?;
    let rows = match table {
        Some((tenant, name)) => statement.query_map(params![tenant, name], placement_row),
        None => statement.query_map([], placement_row),
    }
    .map_err(unavailable)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(unavailable)?;
    Ok(rows)
}

fn bump_routing(connection: &Connection) -> Result<()> {
    connection
        .execute("UPDATE routing SET version = version + 1 WHERE id = 1", [])
        .map_err(unavailable)?;
    Ok(())
}

/// `Fenced` unless `held` is `leader`'s lease, same holder and epoch, unexpired at `now`.
pub(crate) fn check_fence(held: Option<&Lease>, leader: &Lease, now: i64) -> Result<()> {
    match held {
        Some(held)
            if held.holder == leader.holder
                && held.epoch == leader.epoch
                && held.expires_ms > now =>
        {
            Ok(())
        }
        Some(held) => Err(CatalogError::Fenced(format!(
            "lease {} is held by {} at epoch {} (until {}), not {} at epoch {}",
            held.name, held.holder, held.epoch, held.expires_ms, leader.holder, leader.epoch
        ))),
        None => Err(CatalogError::Fenced(format!(
            "lease {} was never taken",
            leader.name
        ))),
    }
}
