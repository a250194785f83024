//! `tessera admin`: a tenant's table maintenance on a server (role admin): `drop-partitions`
//! (retention: whole date partitions older than a cutoff, at once) and `compact` (merge a
//! table's small files now); and, for operators, `tenant quota` (a tenant's quota object).

use crate::RemoteArgs;

#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Drop every date partition of a table older than --before, atomically (rows still
    /// buffered by ingestion are flushed first and go with their partitions).
    DropPartitions {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        table: String,
        /// First date kept, YYYY-MM-DD.
        #[arg(long)]
        before: String,
    },
    /// Merge a table's small files now (as background compaction does).
    Compact {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        table: String,
    },
    /// Tenants on a server (role operator).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The node itself (role operator).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// The cluster, as its coordinators see it (role operator).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Nodes with their state (up or down), addresses, labels, disk and last heartbeat; the
    /// coordinator holding the leader lease and its epoch.
    Status {
        /// Coordinator addresses, HOST:PORT[,HOST:PORT...] (the first that answers).
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        /// An operator token.
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The tables' files as the catalog holds them (each table's leader reports its files
    /// whenever its manifest changes): per table its leader, manifest version, files, rows and
    /// bytes; with --tenant and --table, each file with its size, rows, CRC-32 and (--json)
    /// per-column minimum, maximum and NULL count.
    Files {
        /// Coordinator addresses, HOST:PORT[,HOST:PORT...] (the first that answers).
        #[arg(long, value_delimiter = ',', required = true)]
        addr: Vec<String>,
        /// An operator token.
        #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, requires = "table")]
        tenant: Option<String>,
        /// A table, or one partition of a partitioned table (`events.p3`).
        #[arg(long, requires = "tenant")]
        table: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Version, uptime, cores, memory by budget, buffer-pool hit rate, queries running and
    /// queued, disk use, and the tables the node holds with their sizes.
    Status {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum TenantCommand {
    /// Show a tenant's quota object, or change the limits given (0 removes a limit; limits not
    /// given keep their value). Stored on the node with the tenant's tables.
    Quota {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        tenant: String,
        /// Queries of the tenant running at once (more wait in the admission queue).
        #[arg(long)]
        concurrent_queries: Option<u32>,
        /// Largest result of one query, in MiB of Arrow IPC (larger: `limit` error).
        #[arg(long)]
        result_mib: Option<u64>,
        /// Table file bytes the tenant may hold, in GiB (beyond: imports and appends refused).
        #[arg(long)]
        storage_gib: Option<u64>,
        /// Ingest rate in MiB/s of Arrow IPC (faster appends are held back).
        #[arg(long)]
        ingest_mib_per_s: Option<u64>,
        /// CPU shares of the tenant's scans on every core, against other tenants' (1..1000;
        /// 0: the node's default).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
        cpu_shares: Option<u32>,
        /// Shares of every core's direct reads while reads queue (1..1000; 0: default, 250).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
        io_shares: Option<u32>,
        /// MiB of decoded pages other tenants' scans cannot evict (over all cores).
        #[arg(long)]
        pool_floor_mib: Option<u64>,
    },
}

fn session(remote: &RemoteArgs) -> Result<tessera_rpc::Session, String> {
    remote
        .session()?
        .ok_or_else(|| "tessera admin needs --addr and --token".to_owned())
}

fn limit(value: u64, unit: &str) -> String {
    if value == 0 {
        "none".to_owned()
    } else {
        format!("{value} {unit}")
    }
}

fn quota(remote: &RemoteArgs, tenant: &str, changes: [Option<u64>; 7]) -> Result<(), String> {
    const MIB: u64 = 1 << 20;
    let session = remote
        .operator_session()?
        .ok_or("tessera admin tenant needs --addr and an operator --token")?;
    let (mut quota, _) =
        futures::executor::block_on(session.quota(tenant)).map_err(|e| e.to_string())?;
    let [concurrent, result_mib, storage_gib, ingest_mib, cpu, io, floor_mib] = changes;
    let scaled = |value: u64, unit: u64, flag: &str| {
        value
            .checked_mul(unit)
            .ok_or_else(|| format!("{flag} {value} is too large"))
    };
    if let Some(n) = concurrent {
        quota.concurrent_queries =
            u32::try_from(n).map_err(|_| format!("--concurrent-queries {n} is too large"))?;
    }
    if let Some(n) = result_mib {
        quota.result_bytes = scaled(n, MIB, "--result-mib")?;
    }
    if let Some(n) = storage_gib {
        quota.storage_bytes = scaled(n, MIB << 10, "--storage-gib")?;
    }
    if let Some(n) = ingest_mib {
        quota.ingest_bytes_per_second = scaled(n, MIB, "--ingest-mib-per-s")?;
    }
    // clap bounds both to 0..=1000.
    if let Some(n) = cpu {
        quota.cpu_shares = n as u32;
    }
    if let Some(n) = io {
        quota.io_shares = n as u32;
    }
    if let Some(n) = floor_mib {
        quota.pool_floor_bytes = scaled(n, MIB, "--pool-floor-mib")?;
    }
    if changes.iter().any(Option::is_some) {
        futures::executor::block_on(session.set_quota(tenant, quota)).map_err(|e| e.to_string())?;
    }
    let (quota, used) =
        futures::executor::block_on(session.quota(tenant)).map_err(|e| e.to_string())?;
    println!("tenant {tenant}");
    println!(
        "  concurrent queries   {}",
        limit(quota.concurrent_queries as u64, "")
    );
    println!(
        "  result bytes         {}",
        limit(quota.result_bytes, "bytes")
    );
    println!(
        "  storage bytes        {} (holds {used} bytes)",
        limit(quota.storage_bytes, "bytes")
    );
    println!(
        "  ingest rate          {}",
        limit(quota.ingest_bytes_per_second, "bytes/s")
    );
    let shares = |value: u32| match value {
        0 => "default".to_owned(),
        n => n.to_string(),
    };
    println!("  cpu shares           {}", shares(quota.cpu_shares));
    println!("  io shares            {}", shares(quota.io_shares));
    println!(
        "  buffer-pool floor    {}",
        limit(quota.pool_floor_bytes, "bytes")
    );
    Ok(())
}

/// Bytes in binary units, for people.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

fn node_status(remote: &RemoteArgs, json: bool) -> Result<(), String> {
    let session = remote
        .operator_session()?
        .ok_or("tessera admin node status needs --addr and an operator --token")?;
    let status = futures::executor::block_on(session.node_status()).map_err(|e| e.to_string())?;
    if json {
        let areas: Vec<_> = status
            .memory
            .iter()
            .map(|a| serde_json::json!({"area": a.name, "budget_bytes": a.budget_bytes, "used_bytes": a.used_bytes}))
            .collect();
        let tables: Vec<_> = status
            .tables
            .iter()
            .map(|t| serde_json::json!({"tenant": t.tenant, "table": t.table, "files": t.files, "partitions": t.partitions, "rows": t.rows, "bytes": t.bytes}))
            .collect();
        let value = serde_json::json!({
            "address": status.address,
            "version": status.version,
            "uptime_seconds": status.uptime_seconds,
            "cores": status.cores,
            "draining": status.draining,
            "data_dir": status.data_dir,
            "queries_running": status.queries_running,
            "queries_queued": status.queries_queued,
            "connections": status.connections,
            "memory_max_bytes": status.memory_max_bytes,
            "resident_bytes": status.resident_bytes,
            "memory": areas,
            "pool_hits": status.pool_hits,
            "pool_misses": status.pool_misses,
            "disk_used_bytes": status.disk_used_bytes,
            "disk_capacity_bytes": status.disk_capacity_bytes,
            "ingest_lag_seconds": status.ingest_lag_seconds,
            "tables": tables,
        });
        println!("{value:#}");
        return Ok(());
    }
    let uptime = status.uptime_seconds;
    println!(
        "node {} (tessera {}), up {}d {:02}h {:02}m {:02}s, {} cores{}",
        status.address,
        status.version,
        uptime / 86_400,
        uptime / 3600 % 24,
        uptime / 60 % 60,
        uptime % 60,
        status.cores,
        if status.draining { ", DRAINING" } else { "" }
    );
    println!("data       {}", status.data_dir);
    println!(
        "queries    {} running, {} queued, {} connections",
        status.queries_running, status.queries_queued, status.connections
    );
    let lookups = status.pool_hits + status.pool_misses;
    println!(
        "pool       {} hit rate ({} hits, {} misses)",
        percent(status.pool_hits, lookups),
        status.pool_hits,
        status.pool_misses
    );
    println!(
        "disk       {} of {} used ({})",
        size(status.disk_used_bytes),
        size(status.disk_capacity_bytes),
        percent(status.disk_used_bytes, status.disk_capacity_bytes)
    );
    println!(
        "memory     {} resident of {} ({}); ingestion lag {:.1} s",
        size(status.resident_bytes),
        size(status.memory_max_bytes),
        percent(status.resident_bytes, status.memory_max_bytes),
        status.ingest_lag_seconds
    );
    let mut memory = comfy_table::Table::new();
    memory.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    memory.set_header(["budget", "used", "of", "use"]);
    for area in &status.memory {
        memory.add_row([
            area.name.clone(),
            size(area.used_bytes),
            size(area.budget_bytes),
            percent(area.used_bytes, area.budget_bytes),
        ]);
    }
    println!("{memory}");
    let mut tables = comfy_table::Table::new();
    tables.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    tables.set_header(["tenant", "table", "partitions", "files", "rows", "size"]);
    for table in &status.tables {
        tables.add_row([
            table.tenant.clone(),
            table.table.clone(),
            table.partitions.to_string(),
            table.files.to_string(),
            table.rows.to_string(),
            size(table.bytes),
        ]);
    }
    println!("{} tables\n{tables}", status.tables.len());
    Ok(())
}

fn cluster_files(
    addresses: &[String],
    token: &str,
    table: Option<(&str, &str)>,
    json: bool,
) -> Result<(), String> {
    let tables = tessera_coordinator::client::table_files(addresses, token, table)?;
    if let Some((tenant, name)) = table {
        if tables.is_empty() {
            return Err(format!("the catalog has no table {tenant}/{name}"));
        }
    }
    if json {
        let value: Vec<_> = tables
            .iter()
            .map(|t| {
                let mut one = serde_json::json!({
                    "tenant": t.tenant, "table": t.table, "leader": t.node, "epoch": t.epoch,
                    "manifest_version": t.manifest_version, "files": t.file_count,
                    "rows": t.rows, "bytes": t.bytes,
                });
                if table.is_some() {
                    let parse =
                        |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
                    one["schema"] = parse(&t.schema_json);
                    one["writer"] = parse(&t.settings_json);
                    one["file_list"] = t
                        .files
                        .iter()
                        .map(|f| {
                            serde_json::from_str(&f.entry_json)
                                .unwrap_or_else(|_| serde_json::json!({"path": f.path}))
                        })
                        .collect();
                }
                one
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(value));
        return Ok(());
    }
    let mut out = comfy_table::Table::new();
    out.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    match (table, tables.first()) {
        (Some(_), Some(one)) => {
            println!(
                "{}/{}: {} files, {} rows, {} as leader {} (epoch {}) reported manifest version {}",
                one.tenant,
                one.table,
                one.file_count,
                one.rows,
                size(one.bytes),
                if one.node.is_empty() { "-" } else { &one.node },
                one.epoch,
                one.manifest_version
            );
            out.set_header(["path", "rows", "size", "crc32"]);
            for file in &one.files {
                out.add_row([
                    file.path.clone(),
                    file.rows.to_string(),
                    size(file.bytes),
                    file.crc32.map_or("-".into(), |c| format!("{c:08x}")),
                ]);
            }
        }
        _ => {
            out.set_header([
                "tenant", "table", "leader", "manifest", "files", "rows", "size",
            ]);
            for t in &tables {
                out.add_row([
                    t.tenant.clone(),
                    t.table.clone(),
                    t.node.clone(),
                    t.manifest_version.to_string(),
                    t.file_count.to_string(),
                    t.rows.to_string(),
                    size(t.bytes),
                ]);
            }
        }
    }
    println!("{out}");
    Ok(())
}

fn cluster_status(addresses: &[String], token: &str, json: bool) -> Result<(), String> {
    let status = tessera_coordinator::client::status(addresses, token)?;
    let routing = tessera_coordinator::client::routing(addresses, token)?;
    // A replica is healthy while its node is up and it holds every acknowledged batch.
    let healthy = tessera_rpc::cluster::Placement::healthy;
    // The copies the nodes report sending now (a leader catching a replica up).
    let copies: Vec<serde_json::Value> = status
        .nodes
        .iter()
        .filter(|n| !n.copying.is_empty())
        .filter_map(|n| serde_json::from_str::<Vec<serde_json::Value>>(&n.copying).ok())
        .flatten()
        .collect();
    let copies_of = |p: &tessera_rpc::cluster::Placement| -> Vec<serde_json::Value> {
        copies
            .iter()
            .filter(|c| c["tenant"] == p.tenant.as_str() && c["table"] == p.table.as_str())
            .cloned()
            .collect()
    };
    let sizes: std::collections::HashMap<(String, String), u64> = status
        .nodes
        .iter()
        .flat_map(|n| tessera_coordinator::catalog::table_bytes_from_json(&n.table_bytes))
        .map(|(tenant, table, bytes)| ((tenant, table), bytes))
        .collect();
    let size_of = |p: &tessera_rpc::cluster::Placement| {
        sizes.get(&(p.tenant.clone(), p.table.clone())).copied()
    };
    if json {
        let counts: std::collections::HashMap<(String, String), (u64, u64)> =
            tessera_coordinator::client::table_files(addresses, token, None)?
                .into_iter()
                .map(|t| ((t.tenant, t.table), (t.file_count, t.rows)))
                .collect();
        let counts_of = |p: &tessera_rpc::cluster::Placement| {
            counts.get(&(p.tenant.clone(), p.table.clone())).copied()
        };
        let tables: Vec<_> = routing
            .tables
            .iter()
            .map(|p| {
                serde_json::json!({
                    "tenant": p.tenant, "table": p.table, "leader": p.leader, "epoch": p.epoch,
                    "replication_factor": p.replication_factor, "write_quorum": p.write_quorum,
                    "replicas": p.replicas.iter().map(|r| serde_json::json!({
                        "node_id": r.node_id, "up": r.up, "in_sync": p.is_in_sync(&r.node_id),
                    })).collect::<Vec<_>>(),
                    "healthy_replicas": healthy(p),
                    "copies": copies_of(p),
                    "bytes": size_of(p),
                    "files": counts_of(p).map(|c| c.0),
                    "rows_in_files": counts_of(p).map(|c| c.1),
                    "partition": p.partition.as_ref().map(|of| serde_json::json!({
                        "of": of.table, "index": of.index, "count": of.count, "key": of.key,
                    })),
                })
            })
            .collect();
        let nodes: Vec<_> = status
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node_id": n.node_id, "address": n.address, "http_address": n.http_address,
                    "state": if n.up { "up" } else { "down" }, "cores": n.cores,
                    "labels": n.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "version": n.version, "incarnation": n.incarnation,
                    "last_seen_ms_ago": status.now_ms - n.last_seen_ms,
                    "disk_used_bytes": n.disk_used_bytes, "disk_capacity_bytes": n.disk_capacity_bytes,
                    "queries_running": n.queries_running,
                })
            })
            .collect();
        let value = serde_json::json!({
            "leader": status.leader, "leader_epoch": status.leader_epoch,
            "catalog": status.catalog, "answered_by": status.coordinator, "nodes": nodes,
            "routing_version": routing.version, "tables": tables,
        });
        println!("{value:#}");
        return Ok(());
    }
    let leader = if status.leader.is_empty() {
        "none".to_owned()
    } else {
        format!("{} (epoch {})", status.leader, status.leader_epoch)
    };
    println!(
        "catalog {}; leader {leader}; answered by {}",
        status.catalog, status.coordinator
    );
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header([
        "node", "state", "address", "labels", "cores", "disk", "queries", "seen",
    ]);
    for node in &status.nodes {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        table.add_row([
            node.node_id.clone(),
            if node.up { "up" } else { "DOWN" }.to_owned(),
            node.address.clone(),
            labels.join(","),
            node.cores.to_string(),
            format!(
                "{} of {}",
                size(node.disk_used_bytes),
                size(node.disk_capacity_bytes)
            ),
            node.queries_running.to_string(),
            format!(
                "{:.1} s ago",
                (status.now_ms - node.last_seen_ms) as f64 / 1000.0
            ),
        ]);
    }
    let down = status.nodes.iter().filter(|n| !n.up).count();
    println!("{} nodes, {down} down\n{table}", status.nodes.len());
    let under: Vec<_> = routing
        .tables
        .iter()
        .filter(|p| (healthy(p) as u32) < p.replication_factor)
        .collect();
    println!(
        "{} tables (routing version {}), {} with fewer than their replicas healthy",
        routing.tables.len(),
        routing.version,
        under.len()
    );
    if !under.is_empty() {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        table.set_header(["tenant", "table", "leader", "healthy", "replicas"]);
        for p in under {
            let replicas: Vec<String> = p
                .replicas
                .iter()
                .map(|r| {
                    let copy = copies_of(p)
                        .into_iter()
                        .find(|c| c["to"] == r.node_id.as_str());
                    let state = match (r.up, p.is_in_sync(&r.node_id), copy) {
                        (true, true, _) => String::new(),
                        (true, false, Some(copy)) => format!(
                            " (copying: {} of {})",
                            size(copy["bytes"].as_u64().unwrap_or(0)),
                            size(copy["total"].as_u64().unwrap_or(0))
                        ),
                        (true, false, None) => " (catching up)".to_owned(),
                        (false, _, _) => " (down)".to_owned(),
                    };
                    format!("{}{state}", r.node_id)
                })
                .collect();
            table.add_row([
                p.tenant.clone(),
                p.table.clone(),
                p.leader.clone(),
                format!("{} of {}", healthy(p), p.replication_factor),
                replicas.join(", "),
            ]);
        }
        println!("{table}");
    }
    Ok(())
}

pub fn run(command: &AdminCommand) -> Result<(), String> {
    match command {
        AdminCommand::Cluster {
            command: ClusterCommand::Status { addr, token, json },
        } => cluster_status(addr, token, *json),
        AdminCommand::Cluster {
            command:
                ClusterCommand::Files {
                    addr,
                    token,
                    tenant,
                    table,
                    json,
                },
        } => cluster_files(addr, token, tenant.as_deref().zip(table.as_deref()), *json),
        AdminCommand::Node {
            command: NodeCommand::Status { remote, json },
        } => node_status(remote, *json),
        AdminCommand::Tenant {
            command:
                TenantCommand::Quota {
                    remote,
                    tenant,
                    concurrent_queries,
                    result_mib,
                    storage_gib,
                    ingest_mib_per_s,
                    cpu_shares,
                    io_shares,
                    pool_floor_mib,
                },
        } => quota(
            remote,
            tenant,
            [
                concurrent_queries.map(u64::from),
                *result_mib,
                *storage_gib,
                *ingest_mib_per_s,
                cpu_shares.map(u64::from),
                io_shares.map(u64::from),
                *pool_floor_mib,
            ],
        ),
        AdminCommand::DropPartitions {
            remote,
            table,
            before,
        } => {
            let session = session(remote)?;
            let dropped =
                futures::executor::block_on(session.drop_partitions_before(table, before))
                    .map_err(|e| e.to_string())?;
            match (dropped.dates.first(), dropped.dates.last()) {
                (Some(first), Some(last)) => println!(
                    "dropped {} partitions ({first} .. {last}): {} files, {} rows",
                    dropped.dates.len(),
                    dropped.files,
                    dropped.rows
                ),
                _ => println!("nothing before {before} in {table}"),
            }
            Ok(())
        }
        AdminCommand::Compact { remote, table } => {
            let session = session(remote)?;
            let (removed, written) =
                futures::executor::block_on(session.compact(table)).map_err(|e| e.to_string())?;
            println!("compacted {table}: {removed} files merged into {written}");
            Ok(())
        }
    }
}
