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

    /// A SELECT over every tenant's recent queries (`query_stats`), cluster-wide unless
    /// `local` (this node's only), collected.
    pub async fn query_stats(&self, sql: &str, local: bool) -> Result<QueryOutput, ClientError> {
        let sql = sql.to_owned();
        let (sink, stream) = result_stream();
        self.run(move |operator| async move {
            let mut request = operator.query_stats_request();
            request.get().set_sql(&sql);
            request.get().set_sink(sink.client());
            request.get().set_local(local);
            let promise = request.send().promise;
            // As `Session::query`: success ends the stream at the sink's `done`.
            tokio::task::spawn_local(async move {
                if let Err(e) = promise.await {
                    sink.fail(e.into());
                }
            });
            Ok(())
        })
        .await?;
        stream.collect().await
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

    /// The node's status: version, uptime, memory by budget, pool, queries, disk, tables.
    pub async fn node_status(&self) -> Result<NodeStatus, ClientError> {
        self.run(move |operator| async move {
            let response = operator.nodes_request().send().promise.await?;
            let nodes = response.get()?.get_nodes()?;
            if nodes.is_empty() {
                return Err(ClientError::Data("the node described no node".into()));
            }
            let node = nodes.get(0);
            let memory = node
                .get_memory()?
                .iter()
                .map(|area| {
                    Ok(MemoryArea {
                        name: text(area.get_name())?,
                        budget_bytes: area.get_budget_bytes(),
                        used_bytes: area.get_used_bytes(),
                    })
                })
                .collect::<Result<_, ClientError>>()?;
            let tables = node
                .get_tables()?
                .iter()
                .map(|table| {
                    Ok(TableSize {
                        tenant: text(table.get_tenant())?,
                        table: text(table.get_table())?,
                        files: table.get_files(),
                        partitions: table.get_partitions(),
                        rows: table.get_rows(),
                        bytes: table.get_bytes(),
                    })
                })
                .collect::<Result<_, ClientError>>()?;
            Ok(NodeStatus {
                address: text(node.get_address())?,
                version: text(node.get_version())?,
                uptime_seconds: node.get_uptime_seconds(),
                cores: node.get_cores(),
                queries_running: node.get_queries_running(),
                queries_queued: node.get_queries_queued(),
                connections: node.get_connections(),
                memory_max_bytes: node.get_memory_max_bytes(),
                resident_bytes: node.get_resident_bytes(),
                memory,
                pool_hits: node.get_pool_hits(),
                pool_misses: node.get_pool_misses(),
                disk_used_bytes: node.get_disk_used_bytes(),
                disk_capacity_bytes: node.get_disk_capacity_bytes(),
                tables,
                draining: node.get_draining(),
                data_dir: text(node.get_data_dir())?,
                ingest_lag_seconds: node.get_ingest_lag_seconds(),
            })
        })
        .await
    }
}

/// What `OperatorSession::node_status` reports.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    pub address: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub cores: u32,
    pub queries_running: u32,
    pub queries_queued: u32,
    pub connections: u32,
    pub memory_max_bytes: u64,
    pub resident_bytes: u64,
    pub memory: Vec<MemoryArea>,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub disk_used_bytes: u64,
    pub disk_capacity_bytes: u64,
    pub tables: Vec<TableSize>,
    pub draining: bool,
    pub data_dir: String,
    pub ingest_lag_seconds: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryArea {
    pub name: String,
    pub budget_bytes: u64,
    pub used_bytes: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableSize {
    pub tenant: String,
    pub table: String,
    pub files: u64,
    pub partitions: u64,
    pub rows: u64,
    pub bytes: u64,
}
