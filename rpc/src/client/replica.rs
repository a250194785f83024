//! `ReplicaInstaller`: a table's leader sending its copy of the table to a follower (node to
//! node, on a replica session).

use super::*;

/// One copy of a table being sent to a replica: `put` its files, then `commit` its manifest.
pub struct ReplicaInstaller {
    client: Client,
    id: u64,
}

impl Session {
    /// Starts replacing the peer's copy of `table` by this node's (role node, a session opened
    /// with `peer_login` in replica mode), as the table's leader at `epoch`.
    pub async fn install_replica(
        &self,
        table: &str,
        epoch: u64,
    ) -> Result<ReplicaInstaller, ClientError> {
        let (table, id) = (table.to_owned(), self.id);
        let installer_id = self
            .client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.install_replica_request();
                request.get().set_table(&table);
                request.get().set_leader_epoch(epoch);
                let response = request.send().promise.await?;
                let installer = response.get()?.get_installer()?;
                let installer_id = connection.next_id.get();
                connection.next_id.set(installer_id + 1);
                connection
                    .installers
                    .borrow_mut()
                    .insert(installer_id, installer);
                Ok(installer_id)
            })
            .await?;
        Ok(ReplicaInstaller {
            client: self.client.clone(),
            id: installer_id,
        })
    }
}

impl Session {
    /// What the peer's copy of `table` holds, as JSON (`Tenant.replicaSummary`), asked by the
    /// table's leader at `epoch` over a replica session (anti-entropy).
    pub async fn replica_summary(&self, table: &str, epoch: u64) -> Result<String, ClientError> {
        let (table, id) = (table.to_owned(), self.id);
        self.client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.replica_summary_request();
                request.get().set_table(&table);
                request.get().set_leader_epoch(epoch);
                let response = request.send().promise.await?;
                let summary = response.get()?.get_summary()?;
                summary
                    .to_string()
                    .map_err(|e| ClientError::Data(e.to_string()))
            })
            .await
    }
}

impl ReplicaInstaller {
    /// Sends `data`, the bytes at `offset` of the table's file at `path` (as its manifest lists
    /// it). Flow-controlled: resolves once the peer can take more.
    pub async fn put(&self, path: &str, offset: u64, data: Vec<u8>) -> Result<(), ClientError> {
        let (id, path) = (self.id, path.to_owned());
        self.client
            .run(move |connection| async move {
                let mut request = connection.installer(id)?.put_request();
                request.get().set_path(&path);
                request.get().set_offset(offset);
                request.get().set_data(&data);
                Ok(request.send().await?)
            })
            .await
    }

    /// Installs the files sent as the table, described by `manifest` (its JSON); the files and
    /// rows installed.
    pub async fn commit(&self, manifest: Vec<u8>) -> Result<(u32, u64), ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let mut request = connection.installer(id)?.commit_request();
                request.get().set_manifest(&manifest);
                let response = request.send().promise.await?;
                let answer = response.get()?;
                Ok((answer.get_files(), answer.get_rows()))
            })
            .await
    }
}

impl Drop for ReplicaInstaller {
    fn drop(&mut self) {
        let id = self.id;
        let job: Job = Box::new(move |connection| {
            connection.installers.borrow_mut().remove(&id);
            Box::pin(async {})
        });
        let _ = self.client.inner.jobs.unbounded_send(job);
    }
}

/// One import's files being sent by a table's leader to a follower (`Tenant.stageImport`):
/// `put` them, `prepare`, then `publish`. Dropped before `publish`, the follower discards them.
pub struct ImportStager {
    client: Client,
    id: u64,
}

impl Session {
    /// Starts sending an import of `table` to the peer (a replica session), as the table's
    /// leader at `epoch`.
    pub async fn stage_import(&self, table: &str, epoch: u64) -> Result<ImportStager, ClientError> {
        let (table, id) = (table.to_owned(), self.id);
        let stager_id = self
            .client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.stage_import_request();
                request.get().set_table(&table);
                request.get().set_leader_epoch(epoch);
                let response = request.send().promise.await?;
                let stager = response.get()?.get_stager()?;
                let stager_id = connection.next_id.get();
                connection.next_id.set(stager_id + 1);
                connection.stagers.borrow_mut().insert(stager_id, stager);
                Ok(stager_id)
            })
            .await?;
        Ok(ImportStager {
            client: self.client.clone(),
            id: stager_id,
        })
    }
}

impl ImportStager {
    /// Sends `data`, the bytes at `offset` of the staged file `name`. Flow-controlled.
    pub async fn put(&self, name: &str, offset: u64, data: Vec<u8>) -> Result<(), ClientError> {
        let (id, name) = (self.id, name.to_owned());
        self.client
            .run(move |connection| async move {
                let mut request = connection.stager(id)?.put_request();
                request.get().set_name(&name);
                request.get().set_offset(offset);
                request.get().set_data(&data);
                Ok(request.send().await?)
            })
            .await
    }

    /// Has the follower check the files sent (`files`: the JSON list of staged files) and make
    /// them durable; the rows they hold.
    pub async fn prepare(&self, files: Vec<u8>) -> Result<u64, ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let mut request = connection.stager(id)?.prepare_request();
                request.get().set_files(&files);
                let response = request.send().promise.await?;
                Ok(response.get()?.get_rows())
            })
            .await
    }

    /// Publishes the prepared files on the follower: (rows, files, manifest version).
    pub async fn publish(&self) -> Result<(u64, u32, u64), ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let request = connection.stager(id)?.publish_request();
                let response = request.send().promise.await?;
                let answer = response.get()?;
                Ok((answer.get_rows(), answer.get_files(), answer.get_version()))
            })
            .await
    }
}

impl Drop for ImportStager {
    fn drop(&mut self) {
        let id = self.id;
        let job: Job = Box::new(move |connection| {
            connection.stagers.borrow_mut().remove(&id);
            Box::pin(async {})
        });
        let _ = self.client.inner.jobs.unbounded_send(job);
    }
}
