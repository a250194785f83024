//! `OperatorSession`: an operator login — node-wide calls such as tenant creation.

use super::*;
pub use tessera_storage_engine::table::quota::TenantQuota;

/// An operator login: tenants and nodes, never any tenant's rows.
pub struct OperatorSession {
    pub(super) client: Client,
    pub(super) id: u64,
}

impl std::fmt::Debug for OperatorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for OperatorSession {
    fn drop(&mut self) {
        let id = self.id;
        let job: Job = Box::new(move |connection| {
            connection.operators.borrow_mut().remove(&id);
            Box::pin(async {})
        });
        let _ = self.client.inner.jobs.unbounded_send(job);
    }
}

impl OperatorSession {
    async fn run<T, F, Fut>(&self, job: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: FnOnce(operator::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ClientError>> + 'static,
    {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let operator = connection
                    .operators
                    .borrow()
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| ClientError::Disconnected("session closed".into()))?;
                job(operator).await
            })
            .await
    }

    pub async fn create_tenant(&self, name: &str) -> Result<bool, ClientError> {
        let name = name.to_owned();
        self.run(move |operator| async move {
            let mut request = operator.create_tenant_request();
            request.get().set_name(&name);
            Ok(request.send().promise.await?.get()?.get_created())
        })
        .await
    }

    pub async fn drop_tenant(&self, name: &str) -> Result<bool, ClientError> {
        let name = name.to_owned();
        self.run(move |operator| async move {
            let mut request = operator.drop_tenant_request();
            request.get().set_name(&name);
            Ok(request.send().promise.await?.get()?.get_existed())
        })
        .await
    }

    pub async fn list_tenants(&self) -> Result<Vec<String>, ClientError> {
        self.run(move |operator| async move {
            let response = operator.list_tenants_request().send().promise.await?;
            response.get()?.get_tenants()?.iter().map(text).collect()
        })
        .await
    }

    /// Replaces the tenant's quota object (creating the tenant).
    pub async fn set_quota(&self, tenant: &str, quota: TenantQuota) -> Result<(), ClientError> {
        let tenant = tenant.to_owned();
        self.run(move |operator| async move {
            let mut request = operator.set_quota_request();
            let mut params = request.get();
            params.set_tenant(&tenant);
            let mut q = params.init_quota();
            q.set_concurrent_queries(quota.concurrent_queries);
            q.set_result_bytes(quota.result_bytes);
            q.set_storage_bytes(quota.storage_bytes);
            q.set_ingest_bytes_per_second(quota.ingest_bytes_per_second);
            q.set_cpu_shares(quota.cpu_shares);
            q.set_io_shares(quota.io_shares);
            q.set_pool_floor_bytes(quota.pool_floor_bytes);
            request.send().promise.await?;
            Ok(())
        })
        .await
    }

    /// The tenant's quota object and the bytes its table files hold now.
    pub async fn quota(&self, tenant: &str) -> Result<(TenantQuota, u64), ClientError> {
        let tenant = tenant.to_owned();
        self.run(move |operator| async move {
            let mut request = operator.get_quota_request();
            request.get().set_tenant(&tenant);
            let response = request.send().promise.await?;
            let response = response.get()?;
            let q = response.get_quota()?;
            Ok((
                TenantQuota {
                    concurrent_queries: q.get_concurrent_queries(),
                    result_bytes: q.get_result_bytes(),
                    storage_bytes: q.get_storage_bytes(),
                    ingest_bytes_per_second: q.get_ingest_bytes_per_second(),
                    cpu_shares: q.get_cpu_shares(),
                    io_shares: q.get_io_shares(),
                    pool_floor_bytes: q.get_pool_floor_bytes(),
                },
                response.get_storage_bytes_used(),
            ))
        })
        .await
    }
}
