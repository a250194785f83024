//! The PostgreSQL catalog, shared by every coordinator of a cluster. Time is the server's clock
//! (`clock_timestamp()`), read inside the statement that decides; a lease is taken by one
//! `INSERT … ON CONFLICT DO UPDATE … WHERE` (the row lock serializes racers, and only an expired
//! lease or its own holder's passes the WHERE); fenced writes lock the lease row (`FOR UPDATE`)
//! in their transaction and check holder and epoch first. Migrations run under an advisory lock.
//! A broken connection is replaced on the next call; a server that cannot be reached is
//! `Unavailable` within the connect and statement timeouts.

use super::*;
use ::postgres::{types::ToSql, Client, NoTls, Row};

/// A statement parameter.
type Param<'a> = &'a (dyn ToSql + Sync);
use std::sync::Mutex;
use std::time::Duration;

/// Hands a table's leadership to node $3 ($1 tenant, $2 table) at the next epoch.
const HAND_OVER: &str = "UPDATE placement SET epoch = epoch + 1, \
     role = CASE WHEN node_id = $3 THEN 'leader' ELSE 'follower' END \
     WHERE tenant = $1 AND table_name = $2";

/// The catalog's clock in ms since the Unix epoch, as SQL.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Held by whoever migrates (a key of our own among the database's advisory locks).
const MIGRATION_LOCK: i64 = 0x7e55_e4a0_0001;

pub struct PostgresCatalog {
    url: String,
    client: Mutex<Option<Client>>,
}

fn unavailable(error: ::postgres::Error) -> CatalogError {
    CatalogError::Unavailable(format!("PostgreSQL: {error}"))
}

fn node_row(row: &Row) -> NodeRow {
    NodeRow {
        node_id: row.get(0),
        address: row.get(1),
        http_address: row.get(2),
        cores: row.get(3),
        labels: row.get(4),
        version: row.get(5),
        state: row.get(6),
        incarnation: row.get(7),
        registered_ms: row.get(8),
        last_seen_ms: row.get(9),
        disk_used_bytes: row.get(10),
        disk_capacity_bytes: row.get(11),
        queries_running: row.get(12),
        copying: row.get(13),
        table_bytes: row.get(14),
    }
}

fn lease_row(row: &Row) -> Lease {
    Lease {
        name: row.get(0),
        holder: row.get(1),
        epoch: row.get::<_, i64>(2).max(0) as u64,
        expires_ms: row.get(3),
    }
}

/// Checks, inside `tx`, that `leader` still holds its lease, and locks the lease row (no
/// takeover can commit until `tx` ends); the catalog's time now.
fn fence(tx: &mut ::postgres::Transaction<'_>, leader: &Lease) -> Result<i64> {
    let held = tx
        .query_opt(
            "SELECT name, holder, epoch, expires_ms FROM leases WHERE name = $1 FOR UPDATE",
            &[&leader.name],
        )
        .map_err(unavailable)?
        .map(|row| lease_row(&row));
    let now: i64 = tx
        .query_one(&format!("SELECT {NOW_MS}"), &[])
        .map_err(unavailable)?
        .get(0);
    super::sqlite::check_fence(held.as_ref(), leader, now)?;
    Ok(now)
}

fn placement_rows(
    client: &mut impl ::postgres::GenericClient,
    table: Option<(&str, &str)>,
) -> Result<Vec<PlacementRow>> {
    let rows = match table {
        Some((tenant, name)) => client.query(
            &format!("{PLACEMENT_QUERY} WHERE t.tenant = $1 AND t.name = $2{PLACEMENT_ORDER}"),
            &[&tenant, &name],
        ),
        None => client.query(&format!("{PLACEMENT_QUERY}{PLACEMENT_ORDER}"), &[]),
    }
    .map_err(unavailable)?;
    Ok(rows
        .iter()
        .map(|row| PlacementRow {
            tenant: row.get(0),
            table: row.get(1),
            replication_factor: row.get(2),
            write_quorum: row.get(3),
            node_id: row.get(4),
            leader: row.get::<_, String>(5) == "leader",
            epoch: row.get(6),
            node_up: row.get::<_, String>(7) == "up",
            in_sync: row.get::<_, i64>(8) != 0,
            partition_spec_json: row.get(9),
        })
        .collect())
}

fn files_header(row: &Row) -> TableFiles {
    let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
    TableFiles {
        tenant: row.get(0),
        table: row.get(1),
        node: row.get(2),
        epoch: count(3),
        manifest_version: count(4),
        file_count: count(5),
        rows: count(6),
        bytes: count(7),
        files: Vec::new(),
        ..Default::default()
    }
}

/// A read-only transaction that reads one snapshot (its reads agree with each other).
fn snapshot(client: &mut Client) -> Result<::postgres::Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(::postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(unavailable)
}

fn bump_routing(client: &mut impl ::postgres::GenericClient) -> Result<()> {
    client
        .execute("UPDATE routing SET version = version + 1 WHERE id = 1", &[])
        .map_err(unavailable)?;
    Ok(())
}

fn routing_version(client: &mut impl ::postgres::GenericClient) -> Result<u64> {
    let version: i64 = client
        .query_one("SELECT version FROM routing WHERE id = 1", &[])
        .map_err(unavailable)?
        .get(0);
    Ok(version.max(0) as u64)
}

impl PostgresCatalog {
    /// Connects to `url` (`postgres://USER@HOST:PORT/DB`).
    pub fn connect(url: &str) -> Result<PostgresCatalog> {
        let catalog = PostgresCatalog {
            url: url.to_owned(),
            client: Mutex::new(None),
        };
        catalog.with(|_| Ok(()))?;
        Ok(catalog)
    }

    fn open(&self) -> Result<Client> {
        let mut config: ::postgres::Config = self
            .url
            .parse()
            .map_err(|e| CatalogError::Invalid(format!("catalog URL {}: {e}", self.url)))?;
        config.connect_timeout(Duration::from_secs(3));
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name("tessera-coordinator");
        // No statement may hang a coordinator past its lease.
        config.options("-c statement_timeout=5000 -c lock_timeout=5000");
        config.connect(NoTls).map_err(unavailable)
    }

    /// Runs `work` on the connection, opening one first when there is none or it broke.
    fn with<T>(&self, work: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.open()?);
        }
        let client = slot.as_mut().expect("opened above");
        let result = work(client);
        if client.is_closed() {
            *slot = None;
        }
        result
    }
}

impl Catalog for PostgresCatalog {
    fn describe(&self) -> String {
        // Without the password, if the URL has one.
        match self.url.split_once('@') {
            Some((scheme_user, rest)) => match scheme_user.rsplit_once(':') {
                Some((user, _)) if user.contains("//") => format!("{user}:***@{rest}"),
                _ => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }

    fn migrate(&self) -> Result<u32> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .map_err(unavailable)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
            )
            .map_err(unavailable)?;
            let current: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .map_err(unavailable)?
                .get(0);
            if current > MIGRATIONS.len() as i64 {
                return Err(CatalogError::Schema(format!(
                    "the catalog is at schema version {current}; this binary knows up to {}",
                    MIGRATIONS.len()
                )));
            }
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch_execute(sql)
                    .map_err(|e| CatalogError::Schema(format!("migration {}: {e}", index + 1)))?;
                tx.execute(
                    &format!(
                        "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, {NOW_MS})"
                    ),
                    &[&(index as i64 + 1)],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(MIGRATIONS.len() as u32)
        })
    }

    fn now_ms(&self) -> Result<i64> {
        self.with(|client| {
            Ok(client
                .query_one(&format!("SELECT {NOW_MS}"), &[])
                .map_err(unavailable)?
                .get(0))
        })
    }

    fn register_node(&self, node: &NodeRegistration) -> Result<NodeRecord> {
        validate_node_id(&node.node_id)?;
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            let row = tx
                .query_one(
                    &format!(
                        "INSERT INTO nodes ({NODE_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'up', 1, {NOW_MS}, {NOW_MS}, 0, 0, 0, '', '') \
                         ON CONFLICT (node_id) DO UPDATE SET address = EXCLUDED.address, \
                         http_address = EXCLUDED.http_address, cores = EXCLUDED.cores, \
                         labels = EXCLUDED.labels, version = EXCLUDED.version, state = 'up', \
                         incarnation = nodes.incarnation + 1, registered_ms = EXCLUDED.registered_ms, \
                         last_seen_ms = EXCLUDED.last_seen_ms \
                         RETURNING {NODE_COLUMNS}"
                    ),
                    &[
                        &node.node_id as Param,
                        &node.address,
                        &node.http_address,
                        &(node.cores as i64),
                        &labels_json(&node.labels),
                        &node.version,
                    ],
                )
                .map_err(unavailable)?;
            // Its address may have changed: nodes holding the routing table fetch it again.
            bump_routing(&mut tx)?;
            tx.commit().map_err(unavailable)?;
            node_row(&row).into_record()
        })
    }

    fn heartbeat(&self, node_id: &str, report: &NodeReport) -> Result<NodeRecord> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            // A node coming back up changes what the routing table says of it.
            tx.execute(
                "UPDATE routing SET version = version + 1 WHERE id = 1 AND EXISTS \
                 (SELECT 1 FROM nodes WHERE node_id = $1 AND state <> 'up')",
                &[&node_id as Param],
            )
            .map_err(unavailable)?;
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE nodes SET state = 'up', last_seen_ms = {NOW_MS}, \
                         disk_used_bytes = $2, disk_capacity_bytes = $3, queries_running = $4, \
                         copying = $5, table_bytes = $6 \
                         WHERE node_id = $1 RETURNING {NODE_COLUMNS}"
                    ),
                    &[
                        &node_id as Param,
                        &big(report.disk_used_bytes),
                        &big(report.disk_capacity_bytes),
                        &(report.queries_running as i64),
                        &report.copying,
                        &report.table_bytes,
                    ],
                )
                .map_err(unavailable)?
                .ok_or_else(|| {
                    CatalogError::NotFound(format!("node {node_id} is not registered"))
                })?;
            tx.commit().map_err(unavailable)?;
            node_row(&row).into_record()
        })
    }

    fn mark_down(&self, missed_ms: i64, leader: &Lease) -> Result<Vec<String>> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            let now = fence(&mut tx, leader)?;
            let mut down: Vec<String> = tx
                .query(
                    "UPDATE nodes SET state = 'down' WHERE state = 'up' AND last_seen_ms < $1 \
                     RETURNING node_id",
                    &[&(now - missed_ms)],
                )
                .map_err(unavailable)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if !down.is_empty() {
                bump_routing(&mut tx)?;
            }
            tx.commit().map_err(unavailable)?;
            down.sort();
            Ok(down)
        })
    }

    fn place_table(&self, placement: &TablePlacement, leader: &Lease) -> Result<TablePlacement> {
        validate_placement(placement)?;
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            let now = fence(&mut tx, leader)?;
            let key = (placement.tenant.as_str(), placement.table.as_str());
            if let Some(existing) = assemble(&placement_rows(&mut tx, Some(key))?).pop() {
                return Ok(existing);
            }
            tx.execute(
                "INSERT INTO tenants (name, created_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&placement.tenant, &now],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO tables (tenant, name, schema_json, partition_spec_json, \
                 settings_json, replication_factor, write_quorum, created_ms) \
                 VALUES ($1, $2, '{}', $6, '{}', $3, $4, $5)",
                &[
                    &placement.tenant,
                    &placement.table,
                    &(placement.replication_factor as i64),
                    &(placement.write_quorum as i64),
                    &now,
                    &PartitionOf::to_json(placement.partition.as_ref()),
                ],
            )
            .map_err(unavailable)?;
            for (i, node) in placement.replicas.iter().enumerate() {
                let role = if i == 0 { "leader" } else { "follower" };
                tx.execute(
                    "INSERT INTO placement (tenant, table_name, partition_key, node_id, role, \
                     epoch) VALUES ($1, $2, '', $3, $4, 1)",
                    &[&placement.tenant, &placement.table, node, &role],
                )
                .map_err(unavailable)?;
            }
            bump_routing(&mut tx)?;
            let stored = assemble(&placement_rows(&mut tx, Some(key))?).pop();
            tx.commit().map_err(unavailable)?;
            stored.ok_or_else(|| {
                CatalogError::Unavailable("the placement just stored is gone".into())
            })
        })
    }

    fn move_leaders(&self, leader: &Lease) -> Result<Vec<TablePlacement>> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            fence(&mut tx, leader)?;
            let moves = leader_moves(&placement_rows(&mut tx, None)?);
            let mut moved = Vec::new();
            for (tenant, table, node) in &moves {
                tx.execute(HAND_OVER, &[tenant, table, node])
                    .map_err(unavailable)?;
                moved.extend(assemble(&placement_rows(&mut tx, Some((tenant, table)))?));
            }
            if !moves.is_empty() {
                bump_routing(&mut tx)?;
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
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            fence(&mut tx, leader)?;
            let rows = placement_rows(&mut tx, Some(table))?;
            if let Some(next) = check_in_sync_change(&rows, table, node, in_sync, table_epoch)? {
                tx.execute(HAND_OVER, &[&table.0, &table.1, &next])
                    .map_err(unavailable)?;
            }
            tx.execute(
                "UPDATE placement SET in_sync = $4 \
                 WHERE tenant = $1 AND table_name = $2 AND node_id = $3",
                &[&table.0, &table.1, &node, &(in_sync as i64)],
            )
            .map_err(unavailable)?;
            bump_routing(&mut tx)?;
            let stored = assemble(&placement_rows(&mut tx, Some(table))?).pop();
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
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            fence(&mut tx, leader)?;
            let rows = placement_rows(&mut tx, Some(table))?;
            check_replica_change(&rows, table, from, to)?;
            if let Some(from) = from {
                tx.execute(
                    "DELETE FROM placement WHERE tenant = $1 AND table_name = $2 AND node_id = $3",
                    &[&table.0, &table.1, &from],
                )
                .map_err(unavailable)?;
            }
            if let Some(to) = to {
                tx.execute(
                    "INSERT INTO placement (tenant, table_name, partition_key, node_id, role, \
                     epoch, in_sync) VALUES ($1, $2, '', $3, 'follower', $4, 0)",
                    &[&table.0, &table.1, &to, &rows[0].epoch],
                )
                .map_err(unavailable)?;
            }
            bump_routing(&mut tx)?;
            let stored = assemble(&placement_rows(&mut tx, Some(table))?).pop();
            tx.commit().map_err(unavailable)?;
            stored.ok_or_else(|| CatalogError::Unavailable("the placement is gone".into()))
        })
    }

    fn drop_placement(&self, table: (&str, &str), leader: &Lease) -> Result<bool> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            fence(&mut tx, leader)?;
            let removed = tx
                .execute(
                    "DELETE FROM placement WHERE tenant = $1 AND table_name = $2",
                    &[&table.0, &table.1],
                )
                .map_err(unavailable)?;
            for statement in [
                "DELETE FROM files WHERE tenant = $1 AND table_name = $2",
                "DELETE FROM tables WHERE tenant = $1 AND name = $2",
            ] {
                tx.execute(statement, &[&table.0, &table.1])
                    .map_err(unavailable)?;
            }
            if removed > 0 {
                bump_routing(&mut tx)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(removed > 0)
        })
    }

    fn report_files(&self, table: (&str, &str), node: &str, report: &FilesReport) -> Result<()> {
        let (epoch, manifest_version, files) =
            (report.epoch, report.manifest_version, &report.files);
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            // The table's row locked first: reports of one table are serialized.
            let stored = tx
                .query_opt(
                    "SELECT files_node, files_epoch, files_version FROM tables \
                     WHERE tenant = $1 AND name = $2 FOR UPDATE",
                    &[&table.0, &table.1],
                )
                .map_err(unavailable)?;
            check_files_reporter(&placement_rows(&mut tx, Some(table))?, table, node, epoch)?;
            let Some(stored) = stored else {
                return Err(CatalogError::NotFound(format!(
                    "table {}/{}",
                    table.0, table.1
                )));
            };
            let (stored_node, stored_epoch, stored_version): (String, i64, i64) =
                (stored.get(0), stored.get(1), stored.get(2));
            if !newer_files((epoch, manifest_version), (stored_epoch, stored_version)) {
                return Ok(());
            }
            // The same leader's files never change under a path: keep those still listed. A
            // new leader's paths name its own files: replace them all.
            let keep: std::collections::HashSet<String> =
                if stored_node == node && stored_epoch == big(epoch) {
                    tx.query(
                        "SELECT path FROM files WHERE tenant = $1 AND table_name = $2",
                        &[&table.0, &table.1],
                    )
                    .map_err(unavailable)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
                } else {
                    Default::default()
                };
            let reported: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            if keep.is_empty() {
                tx.execute(
                    "DELETE FROM files WHERE tenant = $1 AND table_name = $2",
                    &[&table.0, &table.1],
                )
                .map_err(unavailable)?;
            } else {
                tx.execute(
                    "DELETE FROM files WHERE tenant = $1 AND table_name = $2 \
                     AND NOT (path = ANY($3))",
                    &[&table.0, &table.1, &reported],
                )
                .map_err(unavailable)?;
            }
            let insert = tx
                .prepare(
                    "INSERT INTO files (tenant, table_name, path, bytes, rows, crc32, entry_json) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .map_err(unavailable)?;
            for file in files.iter().filter(|f| !keep.contains(&f.path)) {
                tx.execute(
                    &insert,
                    &[
                        &table.0,
                        &table.1,
                        &file.path,
                        &big(file.bytes),
                        &big(file.rows),
                        &file.crc32.map_or(-1, i64::from),
                        &file.entry_json,
                    ],
                )
                .map_err(unavailable)?;
            }
            tx.execute(
                "UPDATE tables SET files_node = $3, files_epoch = $4, files_version = $5, \
                 schema_json = $6, settings_json = $7 WHERE tenant = $1 AND name = $2",
                &[
                    &table.0,
                    &table.1,
                    &node,
                    &big(epoch),
                    &big(manifest_version),
                    &report.schema_json,
                    &report.settings_json,
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
    }

    fn files(&self, table: Option<(&str, &str)>) -> Result<Vec<TableFiles>> {
        self.with(|client| {
            // One snapshot: the counts and the list agree.
            let mut tx = snapshot(client)?;
            let headers = match table {
                Some((tenant, name)) => tx.query(
                    &format!("{FILES_SUMMARY} WHERE t.tenant = $1 AND t.name = $2{FILES_GROUP}"),
                    &[&tenant, &name],
                ),
                None => tx.query(&format!("{FILES_SUMMARY}{FILES_GROUP}"), &[]),
            }
            .map_err(unavailable)?;
            let mut tables: Vec<TableFiles> = headers.iter().map(files_header).collect();
            if let (Some((tenant, name)), Some(one)) = (table, tables.first_mut()) {
                let meta = tx
                    .query_one(
                        "SELECT schema_json, settings_json FROM tables \
                         WHERE tenant = $1 AND name = $2",
                        &[&tenant, &name],
                    )
                    .map_err(unavailable)?;
                (one.schema_json, one.settings_json) = (meta.get(0), meta.get(1));
                one.files = tx
                    .query(
                        "SELECT path, bytes, rows, crc32, entry_json FROM files \
                         WHERE tenant = $1 AND table_name = $2 ORDER BY path",
                        &[&tenant, &name],
                    )
                    .map_err(unavailable)?
                    .iter()
                    .map(|r| CatalogFile {
                        path: r.get(0),
                        bytes: r.get::<_, i64>(1).max(0) as u64,
                        rows: r.get::<_, i64>(2).max(0) as u64,
                        crc32: u32::try_from(r.get::<_, i64>(3)).ok(),
                        entry_json: r.get(4),
                    })
                    .collect();
            }
            tx.commit().map_err(unavailable)?;
            Ok(tables)
        })
    }

    fn routing(&self) -> Result<Routing> {
        self.with(|client| {
            // One snapshot: the version and the rows agree.
            let mut tx = snapshot(client)?;
            let version = routing_version(&mut tx)?;
            let tables = assemble(&placement_rows(&mut tx, None)?);
            let quotas = tx
                .query(
                    "SELECT name, quota_json FROM tenants WHERE quota_json <> ''",
                    &[],
                )
                .map_err(unavailable)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            tx.commit().map_err(unavailable)?;
            Ok(Routing {
                version,
                tables,
                quotas,
            })
        })
    }

    fn set_quota(&self, tenant: &str, quota_json: &str) -> Result<()> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(unavailable)?;
            tx.execute(
                &format!(
                    "INSERT INTO tenants (name, created_ms, quota_json) VALUES ($1, {NOW_MS}, $2) \
                     ON CONFLICT (name) DO UPDATE SET quota_json = excluded.quota_json"
                ),
                &[&tenant, &quota_json],
            )
            .map_err(unavailable)?;
            bump_routing(&mut tx)?;
            tx.commit().map_err(unavailable)
        })
    }

    fn routing_version(&self) -> Result<u64> {
        self.with(routing_version)
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.with(|client| {
            client
                .query(
                    &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY node_id"),
                    &[],
                )
                .map_err(unavailable)?
                .iter()
                .map(|row| node_row(row).into_record())
                .collect()
        })
    }

    fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>> {
        self.with(|client| {
            let row = client
                .query_opt(
                    &format!(
                        "INSERT INTO leases (name, holder, epoch, expires_ms) \
                         VALUES ($1, $2, 1, {NOW_MS} + $3) \
                         ON CONFLICT (name) DO UPDATE SET \
                         epoch = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.epoch \
                                      ELSE leases.epoch + 1 END, \
                         holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms \
                         WHERE leases.holder = EXCLUDED.holder OR leases.expires_ms <= {NOW_MS} \
                         RETURNING name, holder, epoch, expires_ms"
                    ),
                    &[&name as Param, &holder, &ttl_ms],
                )
                .map_err(unavailable)?;
            Ok(row.map(|row| lease_row(&row)))
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<bool> {
        self.with(|client| {
            let changed = client
                .execute(
                    &format!(
                        "UPDATE leases SET expires_ms = {NOW_MS} WHERE name = $1 AND holder = $2 \
                         AND epoch = $3 AND expires_ms > {NOW_MS}"
                    ),
                    &[&lease.name as Param, &lease.holder, &(lease.epoch as i64)],
                )
                .map_err(unavailable)?;
            Ok(changed == 1)
        })
    }

    fn lease(&self, name: &str) -> Result<Option<Lease>> {
        self.with(|client| {
            Ok(client
                .query_opt(
                    "SELECT name, holder, epoch, expires_ms FROM leases WHERE name = $1",
                    &[&name],
                )
                .map_err(unavailable)?
                .map(|row| lease_row(&row)))
        })
    }
}
