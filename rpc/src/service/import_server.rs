//! `ImportStream`: one import's Arrow IPC stream, decoded as it arrives, written off the core and
//! published whole at `commit` (or not at all). In a cluster, this node leads the table and
//! replicates the import (`replicated_import`).

use super::replicated_import::{Prepared, Shipper};
use super::*;
use crate::cluster::Cluster;

/// Rows of one `importBatches` call. Each write is checked (`ipc_frames`: whole stream-format
/// messages, the table's schema) and decoded when the call is dispatched, so batches queue in the
/// order the client sent them; a blocking job then hands them to the `TableWriter`, one job at a
/// time, so a fast client waits instead of filling memory. No thread is held between calls. The
/// writer stages its files outside the table; only `commit` takes the table lock, to publish.
/// Any failure poisons the import: nothing of it is committed and every later call fails.
pub(super) struct ImportStreamServer {
    pub(super) connection: Rc<Connection>,
    pub(super) identity: Identity,
    /// The table when the import began: a stream with another schema is refused.
    pub(super) table: TableManifest,
    pub(super) stream: RefCell<IpcStreamReader>,
    /// Decoded batches not yet handed to the writer, in arrival order.
    pub(super) queue: RefCell<std::collections::VecDeque<RecordBatch>>,
    pub(super) draining: futures::lock::Mutex<()>,
    /// `None` before the first batch, and while a blocking job holds it.
    pub(super) writer: RefCell<Option<TableWriter>>,
    pub(super) failure: RefCell<Option<Error>>,
    pub(super) committed: Cell<bool>,
    /// A replicated table this node leads: the import reaches its followers too.
    replicated: Option<Arc<Cluster>>,
    /// Set by `prepare`: the files are written and staged (on the followers too); no more
    /// writes.
    prepared: RefCell<Option<Prepared>>,
    /// A replicated import's files on their way to the followers, from the first one written.
    shipper: RefCell<Option<Shipper>>,
}

impl ImportStreamServer {
    pub(super) fn new(
        connection: Rc<Connection>,
        identity: Identity,
        table: TableManifest,
        replicated: Option<Arc<Cluster>>,
    ) -> ImportStreamServer {
        let message_bytes_max = connection.shared.limits.import_buffer_bytes;
        ImportStreamServer {
            connection,
            identity,
            table,
            stream: RefCell::new(IpcStreamReader::new(message_bytes_max)),
            queue: RefCell::default(),
            draining: futures::lock::Mutex::new(()),
            writer: RefCell::new(None),
            failure: RefCell::new(None),
            committed: Cell::new(false),
            replicated,
            prepared: RefCell::new(None),
            shipper: RefCell::new(None),
        }
    }

    /// Refuses calls on an expired token, a failed import or a committed one.
    fn check_open(&self) -> Result<(), Error> {
        check_expiry(&self.identity)?;
        if let Some(failure) = self.failure.borrow().as_ref() {
            return Err(failure.clone());
        }
        if self.committed.get() {
            return Err(error("invalid", "this import stream is already committed"));
        }
        Ok(())
    }

    /// Records the import's first failure and returns it.
    fn fail(&self, failure: Error) -> Error {
        self.failure.borrow_mut().get_or_insert(failure).clone()
    }

    /// Checks and decodes a write's bytes into the ordered queue.
    fn decode(&self, params: &import_stream::WriteParams) -> Result<(), Error> {
        self.check_open()?;
        if self.prepared.borrow().is_some() {
            return Err(error("invalid", "this import is prepared: no more writes"));
        }
        let bytes = params.get()?.get_ipc()?;
        self.decode_bytes(bytes).map_err(|e| self.fail(e))
    }

    fn decode_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let decoded = self
            .stream
            .borrow_mut()
            .push(bytes)
            .map_err(|e| error("invalid", e))?;
        for item in decoded {
            match item {
                Decoded::Schema(schema) => self.check_schema(&schema)?,
                Decoded::Batch(batch) if batch.num_rows() > 0 => {
                    self.queue.borrow_mut().push_back(batch)
                }
                Decoded::Batch(_) => {}
            }
        }
        Ok(())
    }

    /// The stream's columns must match the table's by position and type.
    fn check_schema(&self, schema: &Schema) -> Result<(), Error> {
        let columns = &self.table.columns;
        let mismatch = |message: String| {
            error(
                "invalid",
                format!("schema mismatch with table {}: {message}", self.table.table),
            )
        };
        if schema.fields().len() != columns.len() {
            return Err(mismatch(format!(
                "the stream has {} columns, the table {}",
                schema.fields().len(),
                columns.len()
            )));
        }
        for (field, column) in schema.fields().iter().zip(columns) {
            let found = tessera_storage_engine::value::engine_type(field.name(), field.data_type())
                .map_err(|e| mismatch(e.to_string()))?;
            if found != column.column_type {
                return Err(mismatch(format!(
                    "stream column {} is {} ({}), table column {} is {}",
                    field.name(),
                    field.data_type(),
                    found.name(),
                    column.name,
                    column.column_type.name()
                )));
            }
        }
        Ok(())
    }

    /// Hands queued batches to the writer on a blocking thread, in order; one drainer at a time.
    async fn drain(&self) -> Result<(), Error> {
        let _draining = self.draining.lock().await;
        loop {
            let batches: Vec<RecordBatch> = self.queue.borrow_mut().drain(..).collect();
            if batches.is_empty() {
                return Ok(());
            }
            if let Some(failure) = self.failure.borrow().as_ref() {
                return Err(failure.clone());
            }
            let writer = self.writer.borrow_mut().take();
            let data_dir = self.connection.data_dir().to_owned();
            let (tenant, table) = (self.table.tenant.clone(), self.table.table.clone());
            let options = ImportOptions {
                buffer_bytes_max: Some(self.connection.shared.limits.import_buffer_bytes),
                ..Default::default()
            };
            let job = move || -> tessera_storage_engine::Result<TableWriter> {
                let mut writer = match writer {
                    Some(writer) => writer,
                    None => TableWriter::open(
                        &data_dir,
                        &tenant,
                        &table,
                        &batches[0].schema(),
                        &options,
                    )?,
                };
                for batch in &batches {
                    writer.write(batch)?;
                }
                Ok(writer)
            };
            match blocking(&self.connection.shared, job).await {
                Ok(Ok(writer)) => {
                    self.ship(&writer).map_err(|e| self.fail(e))?;
                    *self.writer.borrow_mut() = Some(writer);
                }
                Ok(Err(e)) => return Err(self.fail(engine_error(e))),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

impl ImportStreamServer {
    /// Writes and stages every row written (on a replicated table, on its followers too), once;
    /// a failure fails the import.
    async fn prepare_once(&self) -> Result<(), Error> {
        if self.prepared.borrow().is_some() {
            return Ok(());
        }
        let whole = self.stream.borrow().finish();
        whole.map_err(|e| self.fail(error("invalid", format!("{e}; nothing was imported"))))?;
        self.drain().await?;
        let prepared = self.stage().await.map_err(|e| self.fail(e))?;
        *self.prepared.borrow_mut() = Some(prepared);
        Ok(())
    }

    async fn stage(&self) -> Result<Prepared, Error> {
        let Some(mut writer) = self.writer.borrow_mut().take() else {
            return Ok(Prepared::default());
        };
        // Measured again: other imports may have committed since this one began.
        self.connection
            .shared
            .quotas
            .check_storage(&self.table.tenant)
            .await
            .map_err(engine_error)?;
        let writer = blocking(&self.connection.shared, move || {
            writer.stage().map(|_| writer)
        })
        .await?
        .map_err(engine_error)?;
        self.ship(&writer)?;
        *self.writer.borrow_mut() = Some(writer);
        let shipper = self.shipper.borrow_mut().take();
        match shipper {
            Some(shipper) => shipper.finish().await,
            None => Ok(Prepared::default()),
        }
    }

    /// On a replicated table: hands the files the writer has staged since the last call to the
    /// followers' shipping (started with the first file).
    fn ship(&self, writer: &TableWriter) -> Result<(), Error> {
        let Some(cluster) = &self.replicated else {
            return Ok(());
        };
        let mut shipper = self.shipper.borrow_mut();
        if shipper.is_none() {
            let table = (self.table.tenant.as_str(), self.table.table.as_str());
            *shipper = Some(Shipper::start(
                cluster,
                table,
                writer.staging_dir().to_owned(),
            )?);
        }
        let shipper = shipper.as_mut().expect("started above");
        shipper.send(writer.staged_since(shipper.shipped()));
        Ok(())
    }
}

impl Drop for ImportStreamServer {
    fn drop(&mut self) {
        // Dropped without a commit: the writer's staged files are removed, off the core when a
        // blocking thread is free.
        if let Some(writer) = self.writer.get_mut().take() {
            drop_blocking(&self.connection.shared, writer);
        }
    }
}

impl import_stream::Server for ImportStreamServer {
    fn write(
        self: Rc<Self>,
        params: import_stream::WriteParams,
    ) -> impl std::future::Future<Output = Result<(), Error>> + 'static {
        let guard = self.connection.enter();
        let decoded = guard.and_then(|guard| self.decode(&params).map(|()| guard));
        async move {
            let _guard = decoded?;
            self.drain().await
        }
    }

    async fn prepare(
        self: Rc<Self>,
        _: import_stream::PrepareParams,
        _: import_stream::PrepareResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check_open()?;
        self.prepare_once().await
    }

    async fn commit(
        self: Rc<Self>,
        _: import_stream::CommitParams,
        mut results: import_stream::CommitResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check_open()?;
        self.committed.set(true);
        self.prepare_once().await?;
        let prepared = self.prepared.borrow_mut().take().unwrap_or_default();
        let writer = self.writer.borrow_mut().take();
        let Some(writer) = writer else {
            // No rows: nothing to write; report the table as it is.
            let manifest = load_table(
                self.connection.data_dir(),
                &self.table.tenant,
                &self.table.table,
            )
            .await?;
            results.get().set_version(manifest.version);
            return Ok(());
        };
        let shared = self.connection.shared.clone();
        let publish_here = async move {
            blocking(&shared, move || writer.finish())
                .await?
                .map_err(engine_error)
        };
        let summary = match &self.replicated {
            Some(cluster) => {
                let table = (self.table.tenant.as_str(), self.table.table.as_str());
                replicated_import::publish_everywhere(cluster, table, prepared, publish_here).await
            }
            None => publish_here.await,
        }
        .map_err(|e| self.fail(e))?;
        self.connection
            .shared
            .metrics
            .imported_rows
            .inc_by(summary.rows);
        let mut out = results.get();
        out.set_rows(summary.rows);
        out.set_files(summary.files);
        out.set_bytes(summary.bytes);
        out.set_version(summary.manifest_version);
        Ok(())
    }
}
