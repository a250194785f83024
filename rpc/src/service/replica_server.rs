//! A table's leader sending files to this node's replica: `ReplicaInstaller` replaces the copy
//! of the table by the leader's (a follower catching up): files staged as they arrive, then
//! installed with one manifest swap (`ReplicaCopy`, `CoreContext::install_replica`).
//! `ImportReplica` receives one import's files, staged, then published beside the table's
//! (`TableWriter::adopt`).

use super::*;
use tessera_schema::tessera_capnp::{import_replica, replica_installer};
use tessera_storage_engine::table::replica::{self, ReplicaCopy};
use tessera_storage_engine::table::writer::StagedFile;

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

/// The largest list of staged files a leader may send.
const STAGED_LIST_BYTES_MAX: usize = 64 << 20;

pub(super) struct ImportReplicaServer {
    connection: Rc<Connection>,
    tenant: String,
    table: String,
    /// The leader epoch of the table's leader sending the import.
    epoch: u64,
    staging_dir: Arc<std::path::PathBuf>,
    /// Taken while a blocking job works on it, and by `publish`.
    writer: RefCell<Option<TableWriter>>,
    prepared: Cell<bool>,
    /// Puts still writing: `prepare` waits for them.
    puts: Rc<Cell<usize>>,
    /// The first failed put: the import is then refused at `prepare`.
    failure: Rc<RefCell<Option<String>>>,
}

impl ImportReplicaServer {
    pub(super) async fn start(
        connection: Rc<Connection>,
        tenant: String,
        table: String,
        epoch: u64,
    ) -> Result<ImportReplicaServer, Error> {
        check_epoch(&connection, &tenant, &table, epoch)?;
        let (data_dir, owner, name) = (
            connection.data_dir().to_owned(),
            tenant.clone(),
            table.clone(),
        );
        let writer = blocking(&connection.shared, move || {
            TableWriter::open_for_copies(&data_dir, &owner, &name)
        })
        .await?
        .map_err(engine_error)?;
        Ok(ImportReplicaServer {
            connection,
            tenant,
            table,
            epoch,
            staging_dir: Arc::new(writer.staging_dir().to_owned()),
            writer: RefCell::new(Some(writer)),
            prepared: Cell::new(false),
            puts: Rc::default(),
            failure: Rc::default(),
        })
    }

    fn take_writer(&self) -> Result<TableWriter, Error> {
        self.writer
            .borrow_mut()
            .take()
            .ok_or_else(|| error("invalid", "this import was published or failed"))
    }
}

impl Drop for ImportReplicaServer {
    fn drop(&mut self) {
        // Not published: its staged files go, off the core.
        if let Some(writer) = self.writer.get_mut().take() {
            drop_blocking(&self.connection.shared, writer);
        }
    }
}

/// Counts a put in flight until dropped.
struct PutInFlight(Rc<Cell<usize>>);

impl Drop for PutInFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl import_replica::Server for ImportReplicaServer {
    async fn put(self: Rc<Self>, params: import_replica::PutParams) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        if self.prepared.get() || self.writer.borrow().is_none() {
            return Err(error("invalid", "this import is prepared; no more files"));
        }
        let params = params.get()?;
        let (name, offset) = (text(params.get_name()?)?, params.get_offset());
        let data = params.get_data()?.to_vec();
        self.puts.set(self.puts.get() + 1);
        let _in_flight = PutInFlight(self.puts.clone());
        let dir = self.staging_dir.clone();
        let written =
            runtime::spawn_blocking(move || replica::put_piece(&dir, &name, offset, &data)).await;
        if let Err(e) = written {
            self.failure.borrow_mut().get_or_insert(e.to_string());
            return Err(engine_error(e));
        }
        Ok(())
    }

    async fn prepare(
        self: Rc<Self>,
        params: import_replica::PrepareParams,
        mut results: import_replica::PrepareResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let bytes = params.get()?.get_files()?;
        if bytes.len() > STAGED_LIST_BYTES_MAX {
            return Err(error(
                "limit",
                format!("a list of staged files may have at most {STAGED_LIST_BYTES_MAX} bytes"),
            ));
        }
        let files: Vec<StagedFile> = serde_json::from_slice(bytes)
            .map_err(|e| error("invalid", format!("the list of staged files: {e}")))?;
        if self.prepared.replace(true) {
            return Err(error("invalid", "this import is prepared already"));
        }
        while self.puts.get() > 0 {
            runtime::sleep(std::time::Duration::from_millis(1)).await;
        }
        if let Some(failure) = self.failure.borrow().clone() {
            return Err(error(
                "invalid",
                format!("a file of the import could not be written ({failure})"),
            ));
        }
        check_epoch(&self.connection, &self.tenant, &self.table, self.epoch)?;
        let mut writer = self.take_writer()?;
        let rows: u64 = files.iter().map(|f| f.entry.rows).sum();
        let adopted = blocking(&self.connection.shared, move || {
            writer.adopt(files).map(|()| writer)
        })
        .await?
        .map_err(engine_error)?;
        *self.writer.borrow_mut() = Some(adopted);
        results.get().set_rows(rows);
        Ok(())
    }

    async fn publish(
        self: Rc<Self>,
        _: import_replica::PublishParams,
        mut results: import_replica::PublishResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        if !self.prepared.get() {
            return Err(error(
                "invalid",
                "an import is prepared before it is published",
            ));
        }
        check_epoch(&self.connection, &self.tenant, &self.table, self.epoch)?;
        let writer = self.take_writer()?;
        let summary = blocking(&self.connection.shared, move || writer.finish())
            .await?
            .map_err(engine_error)?;
        tracing::debug!(
            tenant = %self.tenant,
            table = %self.table,
            rows = summary.rows,
            files = summary.files,
            "published an import the table's leader sent"
        );
        self.connection
            .shared
            .metrics
            .imported_rows
            .inc_by(summary.rows);
        let mut out = results.get();
        out.set_rows(summary.rows);
        out.set_files(summary.files as u32);
        out.set_version(summary.manifest_version);
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
