//! `OperatorSession`: an operator login — node-wide calls such as tenant creation.

use super::*;

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
}
