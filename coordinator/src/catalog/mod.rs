//! The catalog: the cluster's single source of truth (nodes, leases with fencing epochs, and
//! next tenants, tables and placement). Two back ends behind one trait and one list of
//! migrations: PostgreSQL (`postgres`, shared by several coordinators) and an embedded SQLite
//! file (`sqlite`, one machine). Every call is blocking; coordinators run them off their RPC
//! thread. Time that decides leases is the catalog's own clock (PostgreSQL's), never a
//! coordinator's.

pub mod postgres;
pub mod sqlite;
pub type Result<T> = std::result::Result<T, CatalogError>;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog cannot be reached or failed (PostgreSQL down, disk error): retryable.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// A fencing check failed: the caller no longer holds the lease it acts under.
    #[error("fenced: {0}")]
    Fenced(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("catalog schema: {0}")]
    Schema(String),
}

/// What a node says about itself when it registers.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRegistration {
    pub node_id: String,
    pub address: String,
    pub http_address: Option<String>,
    pub cores: u32,
    pub labels: std::collections::BTreeMap<String, String>,
    pub version: String,
}

/// What a node reports in each heartbeat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeReport {
    pub disk_used_bytes: u64,
    pub disk_capacity_bytes: u64,
    pub queries_running: u32,
    /// The tables the node is copying to others (JSON, `rpc::cluster::Cluster::copying`; ""
    /// when none).
    pub copying: String,
    /// The bytes of each table the node leads (JSON, `table_bytes_json`; "" when none).
    pub table_bytes: String,
}

/// A node's led tables' sizes as its heartbeat carries them: (tenant, table, bytes) as JSON.
pub fn table_bytes_json(tables: &[(String, String, u64)]) -> String {
    if tables.is_empty() {
        return String::new();
    }
    serde_json::Value::Array(
        tables
            .iter()
            .map(|(tenant, table, bytes)| {
                serde_json::json!({"tenant": tenant, "table": table, "bytes": bytes})
            })
            .collect(),
    )
    .to_string()
}

/// `table_bytes_json` read back; anything unreadable counts as nothing.
pub fn table_bytes_from_json(text: &str) -> Vec<(String, String, u64)> {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            Some((
                item.get("tenant")?.as_str()?.to_owned(),
                item.get("table")?.as_str()?.to_owned(),
                item.get("bytes")?.as_u64()?,
            ))
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Up,
    Down,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    pub registration: NodeRegistration,
    pub report: NodeReport,
    pub state: NodeState,
    pub incarnation: u64,
    pub last_seen_ms: i64,
    pub registered_ms: i64,
}

/// A named lease held by one holder until `expires_ms` (catalog time); its epoch grows at
/// every change of holder and never goes back (the fencing token).
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub epoch: u64,
    pub expires_ms: i64,
}

pub trait Catalog: Send + Sync {
    /// Which back end and where (without a password), for logs and `status`.
    fn describe(&self) -> String;
    /// Applies the migrations not yet applied, in order, in one transaction, recording each
    /// version in `schema_migrations`; a catalog whose version is above this binary's is
    /// refused (`Schema`). Safe from several coordinators at once. The schema version now.
    fn migrate(&self) -> Result<u32>;
    /// The catalog's clock, ms since the Unix epoch (PostgreSQL's `clock_timestamp()`; for
    /// SQLite, this host's).
    fn now_ms(&self) -> Result<i64>;
    /// Inserts or replaces the node's registration: up, incarnation + 1, seen now.
    fn register_node(&self, node: &NodeRegistration) -> Result<NodeRecord>;
    /// Records a heartbeat (up, seen now, the report); `NotFound` for an unknown node.
    fn heartbeat(&self, node_id: &str, report: &NodeReport) -> Result<NodeRecord>;
    /// Marks down every up node not seen for `missed_ms`, the ids sorted. Only as `leader`
    /// (holder and epoch, unexpired), checked in the same transaction: else `Fenced`.
    fn mark_down(&self, missed_ms: i64, leader: &Lease) -> Result<Vec<String>>;
    /// Every node, by id.
    fn nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Takes lease `name` for `holder` for `ttl_ms` when it is free, expired or `holder`'s own
    /// (renewed, same epoch); a new holder gets the next epoch. `None` while another holder's
    /// stands. Two racing takers never both get it.
    fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>>;
    /// Expires the lease now if `lease.holder` holds it at `lease.epoch`; false otherwise.
    fn release_lease(&self, lease: &Lease) -> Result<bool>;
    /// The lease as stored, expired or not.
    fn lease(&self, name: &str) -> Result<Option<Lease>>;
    /// Records `placement` for its table (leader epoch 1) and bumps the routing version,
    /// unless the table already has a placement: then that one, unchanged. Only as `leader`.
    fn place_table(&self, placement: &TablePlacement, leader: &Lease) -> Result<TablePlacement>;
    /// Every table whose leader is on a down node gets its first up follower as leader (epoch
    /// + 1; routing version + 1); the tables changed. Only as `leader`.
    fn move_leaders(&self, leader: &Lease) -> Result<Vec<TablePlacement>>;
    /// Takes `node` out of the table's in-sync replicas (`in_sync` false) or puts it back, for
    /// the table's leader at `table_epoch` (`Fenced` once the leadership moved on), and bumps
    /// the routing version. The leader leaving the set steps down (its copy is damaged): the
    /// first up in-sync follower leads at the next epoch; with none, `Invalid`. Only as
    /// `leader`.
    fn set_in_sync(
        &self,
        table: (&str, &str),
        node: &str,
        in_sync: bool,
        table_epoch: u64,
        leader: &Lease,
    ) -> Result<TablePlacement>;
    /// Moves replicas: removes the follower on `from` and/or adds one on `to`, out of sync
    /// until its leader has copied the table to it; bumps the routing version. Both:
    /// re-replication (`from` down past the grace period); `to` alone: a move onto a node with
    /// fewer replicas begins; `from` alone: it ends (the table keeps its replication factor).
    /// Only as `leader`.
    fn change_replica(
        &self,
        table: (&str, &str),
        from: Option<&str>,
        to: Option<&str>,
        leader: &Lease,
    ) -> Result<TablePlacement>;
    /// Removes a table's placement and catalog entry (its replicas dropped it); false if it
    /// had none. Bumps the routing version. Only as `leader`.
    fn drop_placement(&self, table: (&str, &str), leader: &Lease) -> Result<bool>;
    /// The routing table: its version and every table's placement, by tenant and table.
    fn routing(&self) -> Result<Routing>;
    /// The routing table's version alone (asked at every heartbeat).
    fn routing_version(&self) -> Result<u64>;
    /// Replaces `table`'s files by `report.files`, and its schema and writer settings by the
    /// report's, as manifest version `report.manifest_version` of `node` has them: `Fenced`
    /// unless `node` leads the table at leader epoch `report.epoch`. A report older than the
    /// one stored (an earlier epoch, or the same epoch and an earlier manifest version)
    /// changes nothing. The routing version is not bumped.
    fn report_files(&self, table: (&str, &str), node: &str, report: &FilesReport) -> Result<()>;
    /// The files of `table` as last reported, every file with its entry; or, without a table,
    /// every table's counts (no file lists).
    fn files(&self, table: Option<(&str, &str)>) -> Result<Vec<TableFiles>>;
    /// Replaces `tenant`'s quota object (JSON; the tenant is created if new) and bumps the
    /// routing version, so every node fetches and applies it. Any coordinator may write it.
    fn set_quota(&self, tenant: &str, quota_json: &str) -> Result<()>;
}

/// One file of a table as its leader's manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogFile {
    /// Relative to the table's directory on the leader.
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub crc32: Option<u32>,
    /// The manifest's entry for the file, with per-column minimum, maximum and NULL count.
    pub entry_json: String,
}

/// What a table's leader reports whenever its manifest changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesReport {
    /// The leader epoch the node leads the table at.
    pub epoch: u64,
    pub manifest_version: u64,
    /// The table's columns, time partitioning and sort column (JSON).
    pub schema_json: String,
    /// Its writer settings (JSON).
    pub settings_json: String,
    pub files: Vec<CatalogFile>,
}

/// A table's files as its leader last reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableFiles {
    pub tenant: String,
    pub table: String,
    /// The leader that reported them ("" before any report), its epoch and manifest version.
    pub node: String,
    pub epoch: u64,
    pub manifest_version: u64,
    pub file_count: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Each file, and the table's schema and writer settings (JSON; `{}` before any report),
    /// when one table's files were asked for.
    pub files: Vec<CatalogFile>,
    pub schema_json: String,
    pub settings_json: String,
}

/// Whether a files report at (`epoch`, `version`) is newer than the stored one.
pub(crate) fn newer_files(reported: (u64, u64), stored: (i64, i64)) -> bool {
    let stored = (stored.0.max(0) as u64, stored.1.max(0) as u64);
    reported > stored
}

/// `Fenced` unless `node` leads the table of `rows` (its placement) at `epoch`.
pub(crate) fn check_files_reporter(
    rows: &[PlacementRow],
    table: (&str, &str),
    node: &str,
    epoch: u64,
) -> Result<()> {
    let Some(placement) = assemble(rows).pop() else {
        return Err(CatalogError::NotFound(format!(
            "table {}/{} has no placement",
            table.0, table.1
        )));
    };
    if placement.leader() != node || placement.epoch != epoch {
        return Err(CatalogError::Fenced(format!(
            "{node} at epoch {epoch} does not lead {}/{} (its leader is {} at epoch {})",
            table.0,
            table.1,
            placement.leader(),
            placement.epoch
        )));
    }
    Ok(())
}

/// The columns of a `TableFiles` header, from `tables t` left-joined with its `files f`,
/// grouped by table (the caller adds WHERE and GROUP BY / ORDER BY).
pub(crate) const FILES_SUMMARY: &str = "SELECT t.tenant, t.name, t.files_node, t.files_epoch, \
     t.files_version, COUNT(f.path), CAST(COALESCE(SUM(f.rows), 0) AS BIGINT), \
     CAST(COALESCE(SUM(f.bytes), 0) AS BIGINT) \
     FROM tables t LEFT JOIN files f ON f.tenant = t.tenant AND f.table_name = t.name";
pub(crate) const FILES_GROUP: &str = " GROUP BY t.tenant, t.name, t.files_node, t.files_epoch, \
     t.files_version ORDER BY t.tenant, t.name";

/// Where a table lives: `replicas` are node ids, the leader first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePlacement {
    pub tenant: String,
    pub table: String,
    pub replication_factor: u32,
    pub write_quorum: u32,
    pub epoch: u64,
    pub replicas: Vec<String>,
    /// The replicas holding every acknowledged batch (the leader always among them).
    pub in_sync: Vec<String>,
    /// Set when this is one hash partition of a partitioned table (stored in
    /// `tables.partition_spec_json`).
    pub partition: Option<PartitionOf>,
}

impl TablePlacement {
    pub fn leader(&self) -> &str {
        self.replicas.first().map_or("", String::as_str)
    }
}

/// One hash partition of a table: placed, replicated and led as a table of its own, named
/// `<table>.p<index>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOf {
    pub table: String,
    pub index: u32,
    pub count: u32,
    /// The column whose hash picks a row's partition, and its kind ("int" or "string").
    pub key: String,
    pub key_type: String,
}

impl PartitionOf {
    /// The name the partition is placed and stored under.
    pub fn name(&self) -> String {
        format!("{}.p{}", self.table, self.index)
    }

    /// As stored in `tables.partition_spec_json` (`{}` for a table placed whole).
    pub fn to_json(partition: Option<&PartitionOf>) -> String {
        match partition {
            None => "{}".into(),
            Some(p) => serde_json::json!({
                "of": p.table, "index": p.index, "count": p.count,
                "key": p.key, "key_type": p.key_type,
            })
            .to_string(),
        }
    }

    /// Read back from `to_json` (anything else: placed whole).
    pub fn from_json(text: &str) -> Option<PartitionOf> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let text = |key: &str| value.get(key)?.as_str().map(str::to_owned);
        let number = |key: &str| value.get(key)?.as_u64().map(|n| n as u32);
        Some(PartitionOf {
            table: text("of")?,
            index: number("index")?,
            count: number("count")?,
            key: text("key")?,
            key_type: text("key_type")?,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    pub version: u64,
    pub tables: Vec<TablePlacement>,
    /// Tenants' quota objects (JSON), by tenant, for tenants that have one.
    pub quotas: std::collections::BTreeMap<String, String>,
}

/// One `placement` row joined with its table (and, for `move_leaders`, its node's state).
#[derive(Clone, Debug)]
pub(crate) struct PlacementRow {
    pub tenant: String,
    pub table: String,
    pub replication_factor: i64,
    pub write_quorum: i64,
    pub node_id: String,
    pub leader: bool,
    pub epoch: i64,
    pub node_up: bool,
    pub in_sync: bool,
    pub partition_spec_json: String,
}

/// The columns `PlacementRow` is read from, in order (`t` is `tables`, `p` is `placement`, `n`
/// is `nodes`), ordered by table, leader first, then node id.
pub(crate) const PLACEMENT_QUERY: &str = "SELECT t.tenant, t.name, t.replication_factor, \
     t.write_quorum, p.node_id, p.role, p.epoch, COALESCE(n.state, 'down'), p.in_sync, \
     t.partition_spec_json FROM tables t JOIN placement p ON p.tenant = t.tenant AND p.table_name = t.name \
     LEFT JOIN nodes n ON n.node_id = p.node_id";

pub(crate) const PLACEMENT_ORDER: &str = " ORDER BY t.tenant, t.name, \
     CASE WHEN p.role = 'leader' THEN 0 ELSE 1 END, p.node_id";

/// Rows (ordered by `PLACEMENT_ORDER`) into placements.
pub(crate) fn assemble(rows: &[PlacementRow]) -> Vec<TablePlacement> {
    let mut tables: Vec<TablePlacement> = Vec::new();
    for row in rows {
        let same = tables
            .last()
            .is_some_and(|t| t.tenant == row.tenant && t.table == row.table);
        if !same {
            tables.push(TablePlacement {
                tenant: row.tenant.clone(),
                table: row.table.clone(),
                replication_factor: row.replication_factor.clamp(0, 255) as u32,
                write_quorum: row.write_quorum.clamp(0, 255) as u32,
                epoch: row.epoch.max(0) as u64,
                replicas: Vec::new(),
                in_sync: Vec::new(),
                partition: PartitionOf::from_json(&row.partition_spec_json),
            });
        }
        let table = tables.last_mut().expect("pushed above");
        table.replicas.push(row.node_id.clone());
        if row.in_sync {
            table.in_sync.push(row.node_id.clone());
        }
    }
    tables
}

/// For each table whose leader's node is down and that has an up, in-sync follower: the new
/// leader (it holds every acknowledged batch).
pub(crate) fn leader_moves(rows: &[PlacementRow]) -> Vec<(String, String, String)> {
    let mut moves = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| r.tenant == rows[start].tenant && r.table == rows[start].table)
                .count();
        let table = &rows[start..end];
        let leader_down = table.iter().any(|r| r.leader && !r.node_up);
        if leader_down {
            if let Some(next) = table.iter().find(|r| !r.leader && r.node_up && r.in_sync) {
                moves.push((
                    next.tenant.clone(),
                    next.table.clone(),
                    next.node_id.clone(),
                ));
            }
        }
        start = end;
    }
    moves
}

/// Checks a replica change (`Catalog::change_replica`) against the table's rows: `from` a
/// follower (the leader is never removed: leadership moves first), `to` a node holding no
/// replica of the table yet, and a removal alone keeps at least the replication factor.
pub(crate) fn check_replica_change(
    rows: &[PlacementRow],
    table: (&str, &str),
    from: Option<&str>,
    to: Option<&str>,
) -> Result<()> {
    if rows.is_empty() {
        return Err(CatalogError::NotFound(format!(
            "table {}/{} has no placement",
            table.0, table.1
        )));
    }
    if let Some(to) = to {
        validate_node_id(to)?;
        if rows.iter().any(|r| r.node_id == to) {
            return Err(CatalogError::Invalid(format!(
                "node {to} already holds a replica of {}/{}",
                table.0, table.1
            )));
        }
    }
    match from.map(|from| (from, rows.iter().find(|r| r.node_id == from))) {
        None if to.is_none() => Err(CatalogError::Invalid("nothing to change".into())),
        None => Ok(()),
        Some((from, None)) => Err(CatalogError::NotFound(format!(
            "node {from} holds no replica of {}/{}",
            table.0, table.1
        ))),
        Some((from, Some(row))) if row.leader => Err(CatalogError::Invalid(format!(
            "node {from} leads {}/{}: its leadership moves before it is replaced",
            table.0, table.1
        ))),
        Some((from, Some(row)))
            if to.is_none() && (rows.len() as i64) <= row.replication_factor =>
        {
            Err(CatalogError::Invalid(format!(
                "removing node {from} would leave {}/{} with fewer than its {} replicas",
                table.0, table.1, row.replication_factor
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Checks a change of `node`'s in-sync flag against the table's rows (`PLACEMENT_ORDER`). The
/// leader leaving the set steps down: the first up in-sync follower takes over, returned here
/// (`None` for any other change).
pub(crate) fn check_in_sync_change(
    rows: &[PlacementRow],
    table: (&str, &str),
    node: &str,
    in_sync: bool,
    table_epoch: u64,
) -> Result<Option<String>> {
    let Some(first) = rows.first() else {
        return Err(CatalogError::NotFound(format!(
            "table {}/{} has no placement",
            table.0, table.1
        )));
    };
    if first.epoch.max(0) as u64 != table_epoch {
        return Err(CatalogError::Fenced(format!(
            "table {}/{} is led at epoch {} now, not {table_epoch}",
            table.0, table.1, first.epoch
        )));
    }
    match rows.iter().find(|r| r.node_id == node) {
        None => Err(CatalogError::NotFound(format!(
            "node {node} holds no replica of {}/{}",
            table.0, table.1
        ))),
        Some(row) if row.leader && !in_sync => rows
            .iter()
            .find(|r| !r.leader && r.node_up && r.in_sync)
            .map(|next| Some(next.node_id.clone()))
            .ok_or_else(|| {
                CatalogError::Invalid(format!(
                    "node {node} leads {}/{} and no in-sync follower is up to take over: the \
                     leader stays in sync",
                    table.0, table.1
                ))
            }),
        Some(_) => Ok(None),
    }
}

/// Checks a placement before it is stored.
pub(crate) fn validate_placement(placement: &TablePlacement) -> Result<()> {
    let replicas = placement.replicas.len() as u32;
    let mut distinct = placement.replicas.clone();
    distinct.sort();
    distinct.dedup();
    if replicas == 0
        || distinct.len() as u32 != replicas
        || placement.write_quorum == 0
        || placement.write_quorum > replicas
    {
        return Err(CatalogError::Invalid(format!(
            "placement of {}/{}: {} distinct replicas and a write quorum of {} (1 to the replicas)",
            placement.tenant,
            placement.table,
            distinct.len(),
            placement.write_quorum
        )));
    }
    Ok(())
}

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`. Only ever appended to.
pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_nodes_leases.sql"),
    include_str!("migrations/0002_routing.sql"),
    include_str!("migrations/0003_in_sync.sql"),
    include_str!("migrations/0004_copying.sql"),
    include_str!("migrations/0005_table_bytes.sql"),
    include_str!("migrations/0006_files.sql"),
    include_str!("migrations/0007_quotas.sql"),
];

/// Opens the catalog `spec` names: `postgres://…` / `postgresql://…`, or `sqlite:DIR` or a plain
/// directory path for the embedded catalog.
pub fn open(spec: &str) -> Result<Box<dyn Catalog>> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return Ok(Box::new(postgres::PostgresCatalog::connect(spec)?));
    }
    let dir = spec.strip_prefix("sqlite:").unwrap_or(spec);
    Ok(Box::new(sqlite::SqliteCatalog::open(
        std::path::Path::new(dir),
    )?))
}

/// Node ids become labels, log fields and keys: a safe alphabet.
pub fn validate_node_id(id: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!(
            "node id {id:?}: use 1-64 characters of a-z, 0-9, '_' and '-'"
        )))
    }
}

/// Labels as stored (a JSON object).
fn labels_json(labels: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn labels_from_json(text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    serde_json::from_str(text).map_err(|e| CatalogError::Schema(format!("node labels: {e}")))
}

/// A `nodes` row's columns, read by either back end in this order.
pub(crate) const NODE_COLUMNS: &str = "node_id, address, http_address, cores, labels, version, \
     state, incarnation, registered_ms, last_seen_ms, disk_used_bytes, disk_capacity_bytes, \
     queries_running, copying, table_bytes";

/// A `nodes` row, whichever back end read it.
pub(crate) struct NodeRow {
    pub node_id: String,
    pub address: String,
    pub http_address: Option<String>,
    pub cores: i64,
    pub labels: String,
    pub version: String,
    pub state: String,
    pub incarnation: i64,
    pub registered_ms: i64,
    pub last_seen_ms: i64,
    pub disk_used_bytes: i64,
    pub disk_capacity_bytes: i64,
    pub queries_running: i64,
    pub copying: String,
    pub table_bytes: String,
}

impl NodeRow {
    pub(crate) fn into_record(self) -> Result<NodeRecord> {
        Ok(NodeRecord {
            registration: NodeRegistration {
                node_id: self.node_id,
                address: self.address,
                http_address: self.http_address,
                cores: self.cores.clamp(0, u32::MAX as i64) as u32,
                labels: labels_from_json(&self.labels)?,
                version: self.version,
            },
            report: NodeReport {
                disk_used_bytes: self.disk_used_bytes.max(0) as u64,
                disk_capacity_bytes: self.disk_capacity_bytes.max(0) as u64,
                queries_running: self.queries_running.clamp(0, u32::MAX as i64) as u32,
                copying: self.copying,
                table_bytes: self.table_bytes,
            },
            state: if self.state == "up" {
                NodeState::Up
            } else {
                NodeState::Down
            },
            incarnation: self.incarnation.max(0) as u64,
            last_seen_ms: self.last_seen_ms,
            registered_ms: self.registered_ms,
        })
    }
}

/// Bytes as the catalog's BIGINT (saturating).
pub(crate) fn big(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}
