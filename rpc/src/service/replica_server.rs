//! `ReplicaInstaller`: a table's leader replacing this node's copy of the table by its own (a
//! follower catching up): files staged as they arrive, then installed with one manifest swap
//! (`ReplicaCopy`, `CoreContext::install_replica`).

use super::*;
use tessera_schema::tessera_capnp::replica_installer;
use tessera_storage_engine::table::replica::ReplicaCopy;

/// The largest manifest a leader may send.
const MANIFEST_BYTES_MAX: usize = 64 << 20;

pub(super) struct ReplicaInstallerServer {
    connection: Rc<Connection>,
    tenant: String,
    table: String,
    /// The leader epoch of the table's leader sending the copy.
    epoch: u64,
    /// Shared with the writes in flight; taken by `commit`.
    copy: RefCell<Option<Arc<ReplicaCopy>>>,
    /// The first failed write: the copy is then refused at `commit`.
    failure: Rc<RefCell<Option<String>>>,
}

impl ReplicaInstallerServer {
    pub(super) async fn start(
        connection: Rc<Connection>,
        tenant: String,
        table: String,
        epoch: u64,
    ) -> Result<ReplicaInstallerServer, Error> {
        check_epoch(&connection, &tenant, &table, epoch)?;
        let (data_dir, owner, name) = (
            connection.data_dir().to_owned(),
            tenant.clone(),
            table.clone(),
        );
        let copy = runtime::spawn_blocking(move || ReplicaCopy::start(&data_dir, &owner, &name))
            .await
            .map_err(engine_error)?;
        Ok(ReplicaInstallerServer {
            connection,
            tenant,
            table,
            epoch,
            copy: RefCell::new(Some(Arc::new(copy))),
            failure: Rc::default(),
        })
    }

    fn copy(&self) -> Result<Arc<ReplicaCopy>, Error> {
        self.copy
            .borrow()
            .clone()
            .ok_or_else(|| error("invalid", "this copy was committed already"))
    }
}

impl replica_installer::Server for ReplicaInstallerServer {
    async fn put(self: Rc<Self>, params: replica_installer::PutParams) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let params = params.get()?;
        let (path, offset) = (text(params.get_path()?)?, params.get_offset());
        let data = params.get_data()?.to_vec();
        let copy = self.copy()?;
        let written = runtime::spawn_blocking(move || copy.put(&path, offset, &data)).await;
        if let Err(e) = written {
            self.failure.borrow_mut().get_or_insert(e.to_string());
            return Err(engine_error(e));
        }
        Ok(())
    }

    async fn commit(
        self: Rc<Self>,
        params: replica_installer::CommitParams,
        mut results: replica_installer::CommitResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let bytes = params.get()?.get_manifest()?;
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(error(
                "limit",
                format!("a manifest may have at most {MANIFEST_BYTES_MAX} bytes"),
            ));
        }
        let source = manifest::parse(bytes, format!("{}'s copy", self.table).into())
            .map_err(engine_error)?;
        let mut copy = self
            .copy
            .borrow_mut()
            .take()
            .ok_or_else(|| error("invalid", "this copy was committed already"))?;
        // Writes still in flight hold the copy: they finish first.
        let copy = loop {
            match Arc::try_unwrap(copy) {
                Ok(copy) => break copy,
                Err(shared) => {
                    copy = shared;
                    runtime::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        };
        if let Some(failure) = self.failure.borrow().clone() {
            return Err(error(
                "invalid",
                format!("a file of the copy could not be written ({failure}); nothing changed"),
            ));
        }
        check_epoch(&self.connection, &self.tenant, &self.table, self.epoch)?;
        let installed = self
            .connection
            .context
            .install_replica(copy, source)
            .await
            .map_err(engine_error)?;
        tracing::info!(
            tenant = %self.tenant,
            table = %self.table,
            files = installed.files.len(),
            rows = installed.total_rows(),
            "installed a copy of the table from its leader"
        );
        let mut out = results.get();
        out.set_files(installed.files.len() as u32);
        out.set_rows(installed.total_rows());
        Ok(())
    }
}

/// Refuses a copy from a leader this node knows was deposed.
fn check_epoch(
    connection: &Connection,
    tenant: &str,
    table: &str,
    epoch: u64,
) -> Result<(), Error> {
    match connection.shared.cluster.as_ref() {
        Some(cluster) => cluster
            .check_leader_epoch(tenant, table, epoch)
            .map_err(|e| error("unavailable", e)),
        None => Ok(()),
    }
}
