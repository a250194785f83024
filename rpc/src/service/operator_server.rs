//! `Operator`: node-wide operations (tenants), for operator tokens only.

use super::*;
use tessera_storage_engine::table::quota::TenantQuota;

pub(super) struct OperatorServer {
    pub(super) connection: Rc<Connection>,
    pub(super) identity: Identity,
}

impl OperatorServer {
    /// An operator's token, unexpired (a node token may only read query_stats, `local`).
    fn check(&self) -> Result<(), Error> {
        check_expiry(&self.identity)?;
        if self.identity.role != Role::Operator {
            return Err(error(
                "permission",
                format!(
                    "a {} token may only read a node's own query_stats here",
                    self.identity.role.name()
                ),
            ));
        }
        Ok(())
    }

    fn tenant_dir(&self, name: &str) -> Result<std::path::PathBuf, Error> {
        self.check()?;
        manifest::validate_name("tenant", name).map_err(engine_error)?;
        Ok(self.connection.data_dir().join(name))
    }
}

impl OperatorServer {
    /// Every tenant's query_stats records: this node's, and unless `local`, every other up
    /// node's in a cluster (asked over an operator connection with the node token).
    async fn all_query_stats(&self, local: bool) -> Result<RecordBatch, Error> {
        let shared = &self.connection.shared;
        let rows = shared.query_log.table(None);
        let Some(cluster) = shared.cluster.as_ref().filter(|_| !local) else {
            return Ok(rows);
        };
        super::tenant_server::gather_query_stats(cluster, rows, |address| async move {
            let sql = format!("SELECT * FROM {}", crate::query_log::TABLE);
            cluster.operator_query(&address, &sql).await
        })
        .await
    }
}

impl operator::Server for OperatorServer {
    async fn query_stats(
        self: Rc<Self>,
        params: operator::QueryStatsParams,
        mut results: operator::QueryStatsResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let params = params.get()?;
        let local = params.get_local();
        if !local {
            self.check()?;
        }
        let sql = text(params.get_sql()?)?;
        let sink = params.get_sink()?;
        let statement = sql::parse(&sql).map_err(|e| engine_error(e.into()))?;
        let (Statement::Query(query) | Statement::Explain(query)) = &statement;
        if query.table != crate::query_log::TABLE {
            return Err(error(
                "invalid",
                format!(
                    "an operator reads {} only; a tenant's tables are read with its token",
                    crate::query_log::TABLE
                ),
            ));
        }
        let arrival = self.connection.arrival();
        let rows = self.all_query_stats(local).await?;
        let stats = super::tenant_server::query_stats_into(
            &self.connection,
            statement,
            rows,
            sink,
            (None, arrival),
        )
        .await?;
        stats.write(results.get().init_stats());
        Ok(())
    }

    async fn create_tenant(
        self: Rc<Self>,
        params: operator::CreateTenantParams,
        mut results: operator::CreateTenantResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let dir = self.tenant_dir(&text(params.get()?.get_name()?)?)?;
        let created = runtime::spawn_blocking(move || {
            let created = !dir.exists();
            std::fs::create_dir_all(&dir)
                .map(|()| created)
                .map_err(|e| error("io", format!("{}: {e}", dir.display())))
        })
        .await?;
        results.get().set_created(created);
        Ok(())
    }

    async fn drop_tenant(
        self: Rc<Self>,
        params: operator::DropTenantParams,
        mut results: operator::DropTenantResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let name = text(params.get()?.get_name()?)?;
        self.tenant_dir(&name)?;
        // In a cluster, a tenant's placed tables live on other nodes too: dropping its data
        // here alone would leave their replicas short of a copy.
        if let Some(cluster) = self.connection.shared.cluster.as_ref() {
            let mut placed: Vec<String> = cluster
                .placements()
                .iter()
                .filter(|p| p.tenant == name)
                .map(|p| {
                    p.partition
                        .as_ref()
                        .map_or(&p.table, |of| &of.table)
                        .clone()
                })
                .collect();
            placed.sort();
            placed.dedup();
            if !placed.is_empty() {
                return Err(error(
                    "invalid",
                    format!(
                        "tenant {name} has tables placed in the cluster ({}): drop them first \
                         (Admin.dropTable drops every replica)",
                        placed.join(", ")
                    ),
                ));
            }
        }
        let data_dir = self.connection.data_dir().to_owned();
        let dropping = name.clone();
        let dropped = blocking(&self.connection.shared, move || {
            manifest::drop_tenant(&data_dir, &dropping)
        })
        .await?
        .map_err(engine_error)?;
        let existed = dropped.is_some();
        self.connection.shared.quotas.forget(&name);
        let context = &self.connection.context;
        context.apply_quota(&name, &TenantQuota::default()).await;
        if let Some(manifests) = dropped {
            self.connection.context.forget_tables(&manifests).await;
        }
        results.get().set_existed(existed);
        Ok(())
    }

    async fn list_tenants(
        self: Rc<Self>,
        _: operator::ListTenantsParams,
        mut results: operator::ListTenantsResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let data_dir = self.connection.data_dir().to_owned();
        let tenants = runtime::spawn_blocking(move || manifest::list_tenants(&data_dir))
            .await
            .map_err(|e| error("io", e.to_string()))?;
        let mut list = results.get().init_tenants(tenants.len() as u32);
        for (i, tenant) in tenants.iter().enumerate() {
            list.set(i as u32, tenant);
        }
        Ok(())
    }

    async fn nodes(
        self: Rc<Self>,
        _: operator::NodesParams,
        mut results: operator::NodesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let shared = self.connection.shared.clone();
        let (memory, pool_hits, pool_misses) = self
            .connection
            .context
            .memory_report()
            .await
            .map_err(engine_error)?;
        let data_dir = shared.data_dir.clone();
        let (tables, disk) = runtime::spawn_blocking(move || {
            let tables = table_sizes(&data_dir);
            (tables, crate::metrics::disk_usage(&data_dir))
        })
        .await;
        let tables = tables.map_err(engine_error)?;
        let mut node = results.get().init_nodes(1).get(0);
        node.set_address(shared.address.to_string());
        node.set_cores(shared.cores as u32);
        node.set_version(env!("CARGO_PKG_VERSION"));
        node.set_uptime_seconds(shared.started.elapsed().as_secs());
        let (running, queued) = shared.admission.load();
        node.set_queries_running(running as u32);
        node.set_queries_queued(queued as u32);
        node.set_connections(shared.connections.load(Ordering::Relaxed) as u32);
        node.set_memory_max_bytes(shared.max_memory_bytes);
        node.set_resident_bytes(crate::metrics::resident_bytes());
        {
            let mut areas = node.reborrow().init_memory(memory.areas.len() as u32);
            for (i, area) in memory.areas.iter().enumerate() {
                let mut out = areas.reborrow().get(i as u32);
                out.set_name(area.name);
                out.set_budget_bytes(area.budget_bytes);
                out.set_used_bytes(area.used_bytes);
            }
        }
        node.set_pool_hits(pool_hits);
        node.set_pool_misses(pool_misses);
        let (disk_used, disk_capacity) = disk.unwrap_or((0, 0));
        node.set_disk_used_bytes(disk_used);
        node.set_disk_capacity_bytes(disk_capacity);
        node.set_draining(shared.draining());
        node.set_data_dir(shared.data_dir.display().to_string());
        node.set_ingest_lag_seconds(memory.ingest_oldest.map_or(0.0, |age| age.as_secs_f64()));
        let mut list = node.init_tables(tables.len() as u32);
        for (i, table) in tables.iter().enumerate() {
            let mut out = list.reborrow().get(i as u32);
            out.set_tenant(&table.tenant);
            out.set_table(&table.table);
            out.set_files(table.files);
            out.set_partitions(table.partitions);
            out.set_rows(table.rows);
            out.set_bytes(table.bytes);
        }
        Ok(())
    }

    async fn set_quota(
        self: Rc<Self>,
        params: operator::SetQuotaParams,
        _: operator::SetQuotaResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let params = params.get()?;
        let tenant = text(params.get_tenant()?)?;
        self.tenant_dir(&tenant)?;
        let quota = params.get_quota()?;
        let quota = TenantQuota {
            concurrent_queries: quota.get_concurrent_queries(),
            result_bytes: quota.get_result_bytes(),
            storage_bytes: quota.get_storage_bytes(),
            ingest_bytes_per_second: quota.get_ingest_bytes_per_second(),
            cpu_shares: quota.get_cpu_shares(),
            io_shares: quota.get_io_shares(),
            pool_floor_bytes: quota.get_pool_floor_bytes(),
        };
        if [quota.cpu_shares, quota.io_shares]
            .iter()
            .any(|&s| s > 1000)
        {
            return Err(super::fail(
                ErrorCode::Invalid,
                format!(
                    "CPU and IO shares are 1..1000 (0 for the default), not {} and {}",
                    quota.cpu_shares, quota.io_shares
                ),
            ));
        }
        // In a cluster, the catalog's copy first: every node applies it.
        if let Some(cluster) = self.connection.shared.cluster.as_ref() {
            let json = serde_json::to_string(&quota).map_err(|e| error("internal", e))?;
            cluster
                .set_quota(&tenant, &json)
                .await
                .map_err(|e| error("unavailable", format!("the catalog: {e}")))?;
        }
        self.connection
            .shared
            .quotas
            .set(&tenant, quota)
            .await
            .map_err(engine_error)?;
        self.connection.context.apply_quota(&tenant, &quota).await;
        Ok(())
    }

    async fn get_quota(
        self: Rc<Self>,
        params: operator::GetQuotaParams,
        mut results: operator::GetQuotaResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let tenant = text(params.get()?.get_tenant()?)?;
        self.tenant_dir(&tenant)?;
        let quotas = &self.connection.shared.quotas;
        let quota = quotas.get(&tenant).await.map_err(engine_error)?;
        let used = quotas.storage_used(&tenant).await.map_err(engine_error)?;
        let mut out = results.get();
        out.set_storage_bytes_used(used);
        let mut q = out.init_quota();
        q.set_concurrent_queries(quota.concurrent_queries);
        q.set_result_bytes(quota.result_bytes);
        q.set_storage_bytes(quota.storage_bytes);
        q.set_ingest_bytes_per_second(quota.ingest_bytes_per_second);
        q.set_cpu_shares(quota.cpu_shares);
        q.set_io_shares(quota.io_shares);
        q.set_pool_floor_bytes(quota.pool_floor_bytes);
        Ok(())
    }
}

/// One table's size, for `nodes`.
struct TableSize {
    tenant: String,
    table: String,
    files: u64,
    partitions: u64,
    rows: u64,
    bytes: u64,
}

/// Every table under `data_dir` with its manifest's totals. Blocking file-system work.
fn table_sizes(data_dir: &std::path::Path) -> tessera_storage_engine::Result<Vec<TableSize>> {
    let mut sizes = Vec::new();
    for tenant in manifest::list_tenants(data_dir)? {
        for table in manifest::list_tables(data_dir, &tenant)? {
            // Dropped since it was listed: skipped.
            let Some(manifest) = manifest::load(data_dir, &tenant, &table)? else {
                continue;
            };
            let partitions: std::collections::HashSet<&str> = manifest
                .files
                .iter()
                .map(|f| f.path.rsplit_once('/').map_or("", |(dir, _)| dir))
                .collect();
            sizes.push(TableSize {
                files: manifest.files.len() as u64,
                partitions: partitions.len() as u64,
                rows: manifest.files.iter().map(|f| f.rows).sum(),
                bytes: manifest.total_bytes(),
                tenant: tenant.clone(),
                table,
            });
        }
    }
    Ok(sizes)
}
