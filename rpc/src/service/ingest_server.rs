//! `IngestStream`: one producer's batches into one table, each made durable (write-ahead log,
//! fsync) by the producer's owner core before it is acknowledged (`CoreContext::ingest`).

use super::*;
use arrow_buffer::Buffer;
use tessera_schema::tessera_capnp::ingest_stream;

/// The batch being received: its Arrow IPC bytes in the pieces they arrived in, each copied once
/// out of its RPC message (what the log keeps), and decoded as they arrive (framing checks and
/// message caps of `ipc_frames`) into batches that view those pieces. A failure poisons only
/// this batch: its `append` reports it, and the stream goes on with the next batch.
pub(super) struct IngestStreamServer {
    connection: Rc<Connection>,
    identity: Identity,
    tenant: String,
    table: String,
    producer: String,
    stream: RefCell<IpcStreamReader>,
    raw: RefCell<Vec<Buffer>>,
    batches: RefCell<Vec<RecordBatch>>,
    failure: RefCell<Option<Error>>,
}

impl IngestStreamServer {
    pub(super) fn new(
        connection: Rc<Connection>,
        identity: Identity,
        tenant: String,
        table: String,
        producer: String,
    ) -> IngestStreamServer {
        let reader = IpcStreamReader::new(connection.shared.limits.ingest_batch_bytes);
        IngestStreamServer {
            connection,
            identity,
            tenant,
            table,
            producer,
            stream: RefCell::new(reader),
            raw: RefCell::default(),
            batches: RefCell::default(),
            failure: RefCell::new(None),
        }
    }

    fn receive(&self, bytes: &[u8]) -> Result<(), Error> {
        let limit = self.connection.shared.limits.ingest_batch_bytes;
        let received: u64 = self.raw.borrow().iter().map(|p| p.len() as u64).sum();
        let total = received + bytes.len() as u64;
        if total > limit {
            return Err(error(
                "limit",
                format!(
                    "a batch may have at most {limit} bytes of Arrow IPC; send smaller batches"
                ),
            ));
        }
        let piece = Buffer::from(bytes);
        let decoded = self
            .stream
            .borrow_mut()
            .push_buffer(&piece)
            .map_err(|e| error("invalid", e))?;
        self.raw.borrow_mut().push(piece);
        for item in decoded {
            if let Decoded::Batch(batch) = item {
                if batch.num_rows() > 0 {
                    self.batches.borrow_mut().push(batch);
                }
            }
        }
        Ok(())
    }

    /// Takes the batch received since the last `append`, leaving the stream ready for the next.
    fn take(&self) -> Result<(Vec<RecordBatch>, Vec<Buffer>), Error> {
        let reader = std::mem::replace(
            &mut *self.stream.borrow_mut(),
            IpcStreamReader::new(self.connection.shared.limits.ingest_batch_bytes),
        );
        let raw = std::mem::take(&mut *self.raw.borrow_mut());
        let batches = std::mem::take(&mut *self.batches.borrow_mut());
        if let Some(failure) = self.failure.borrow_mut().take() {
            return Err(failure);
        }
        reader
            .finish()
            .map_err(|e| error("invalid", format!("{e}; nothing of this batch was applied")))?;
        Ok((batches, raw))
    }
}

impl ingest_stream::Server for IngestStreamServer {
    fn write(
        self: Rc<Self>,
        params: ingest_stream::WriteParams,
    ) -> impl std::future::Future<Output = Result<(), Error>> + 'static {
        let result = (|| {
            let _guard = self.connection.enter()?;
            check_expiry(&self.identity)?;
            if self.failure.borrow().is_some() {
                return Ok(());
            }
            let bytes = params.get()?.get_ipc()?;
            if let Err(e) = self.receive(bytes) {
                *self.failure.borrow_mut() = Some(e);
            }
            Ok(())
        })();
        async move { result }
    }

    async fn append(
        self: Rc<Self>,
        params: ingest_stream::AppendParams,
        mut results: ingest_stream::AppendResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.connection.check_serving()?;
        let sequence = params.get()?.get_sequence();
        let (batches, raw) = self.take()?;
        check_expiry(&self.identity)?;
        let bytes: u64 = raw.iter().map(|piece| piece.len() as u64).sum();
        let quotas = &self.connection.shared.quotas;
        let quota = quotas
            .check_storage(&self.tenant)
            .await
            .map_err(engine_error)?;
        let wait = quotas.ingest_wait(&self.tenant, &quota, bytes);
        if !wait.is_zero() {
            // Held back to the tenant's rate, not refused: the producer slows down.
            quotas.refused(&self.tenant, "ingest_bytes_per_second");
            runtime::sleep(wait).await;
        }
        let ack = self
            .connection
            .context
            .ingest(
                &self.tenant,
                &self.table,
                &self.producer,
                sequence,
                batches,
                raw,
            )
            .await
            .map_err(engine_error)?;
        if !ack.duplicate {
            quotas.ingested(&self.tenant, bytes);
            let metrics = &self.connection.shared.metrics;
            metrics.ingested_rows.inc_by(ack.rows);
            metrics.ingested_bytes.inc_by(bytes);
        }
        let mut out = results.get().init_ack();
        out.set_rows(ack.rows);
        out.set_durable(true);
        out.set_duplicate(ack.duplicate);
        out.set_sequence(sequence);
        Ok(())
    }

    async fn flush(
        self: Rc<Self>,
        _: ingest_stream::FlushParams,
        mut results: ingest_stream::FlushResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let files = self
            .connection
            .context
            .flush_ingest(&self.tenant, &self.table)
            .await
            .map_err(engine_error)?;
        results.get().set_files(files);
        Ok(())
    }
}
