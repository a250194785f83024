//! `Operator`: node-wide operations (tenants), for operator tokens only.

use super::*;
use tessera_storage_engine::table::quota::TenantQuota;

pub(super) struct OperatorServer {
    pub(super) connection: Rc<Connection>,
    pub(super) identity: Identity,
}

impl OperatorServer {
    fn tenant_dir(&self, name: &str) -> Result<std::path::PathBuf, Error> {
        check_expiry(&self.identity)?;
        manifest::validate_name("tenant", name).map_err(engine_error)?;
        Ok(self.connection.data_dir().join(name))
    }
}

impl operator::Server for OperatorServer {
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
        check_expiry(&self.identity)?;
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
        check_expiry(&self.identity)?;
        let shared = &self.connection.shared;
        let mut node = results.get().init_nodes(1).get(0);
        node.set_address(shared.address.to_string());
        node.set_cores(shared.cores as u32);
        node.set_version(env!("CARGO_PKG_VERSION"));
        node.set_uptime_seconds(shared.started.elapsed().as_secs());
        node.set_queries_running(shared.admission.load().0 as u32);
        node.set_connections(shared.connections.load(Ordering::Relaxed) as u32);
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
