//! `IngestStream`: one producer's durable streaming ingestion into one table.

use super::*;

/// The node's answer to one batch: it is durable (in the node's log, fsynced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestAck {
    pub rows: u64,
    pub durable: bool,
    /// The key was already durable: the node did not apply the batch again.
    pub duplicate: bool,
    pub sequence: u64,
}

/// Batches of one producer into one table, each acknowledged once durable. A batch sent again
/// under the same sequence number (after a lost connection or a server restart, on a new
/// stream with the same producer name) is applied once.
pub struct IngestStream {
    client: Client,
    id: u64,
}

/// Target bytes of Arrow IPC per `IngestStream.write`.
const WRITE_BYTES: usize = 1 << 20;

impl Session {
    /// Opens ingestion into `table` (role writer or admin) as `producer` (1 to 128 bytes).
    pub async fn ingest_stream(
        &self,
        table: &str,
        producer: &str,
    ) -> Result<IngestStream, ClientError> {
        self.open_ingest(table, producer, 0).await
    }

    /// As `ingest_stream`, for a table's leader replicating to a follower (a session opened
    /// with `peer_login` in replica mode) at its leader epoch `epoch`: the follower refuses
    /// the batches once it knows a later epoch.
    pub async fn replica_stream(
        &self,
        table: &str,
        producer: &str,
        epoch: u64,
    ) -> Result<IngestStream, ClientError> {
        self.open_ingest(table, producer, epoch).await
    }

    async fn open_ingest(
        &self,
        table: &str,
        producer: &str,
        leader_epoch: u64,
    ) -> Result<IngestStream, ClientError> {
        let (table, producer, id) = (table.to_owned(), producer.to_owned(), self.id);
        let stream_id = self
            .client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.ingest_request();
                request.get().set_table(&table);
                request.get().set_producer(&producer);
                request.get().set_leader_epoch(leader_epoch);
                let response = request.send().promise.await?;
                let stream = response.get()?.get_stream()?;
                let stream_id = connection.next_id.get();
                connection.next_id.set(stream_id + 1);
                connection.ingests.borrow_mut().insert(stream_id, stream);
                Ok(stream_id)
            })
            .await?;
        Ok(IngestStream {
            client: self.client.clone(),
            id: stream_id,
        })
    }
}

impl IngestStream {
    /// Sends `batch` and waits until the node has made it durable under `sequence`.
    pub async fn append(
        &mut self,
        sequence: u64,
        batch: &RecordBatch,
    ) -> Result<IngestAck, ClientError> {
        let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(data_error)?;
        let rows = batch.num_rows();
        let row_bytes = (batch.get_array_memory_size() / rows.max(1)).max(1);
        let step = (WRITE_BYTES / row_bytes).clamp(1, rows.max(1));
        let mut offset = 0;
        while offset < rows {
            let length = step.min(rows - offset);
            writer
                .write(&batch.slice(offset, length))
                .map_err(data_error)?;
            offset += length;
            if writer.get_ref().len() >= WRITE_BYTES {
                let piece = std::mem::take(writer.get_mut());
                self.write(piece).await?;
            }
        }
        writer.finish().map_err(data_error)?;
        let tail = std::mem::take(writer.get_mut());
        self.write(tail).await?;
        self.commit(sequence).await
    }

    /// As `append`, for a batch already encoded as one Arrow IPC stream.
    pub async fn append_ipc(
        &mut self,
        sequence: u64,
        ipc: Vec<u8>,
    ) -> Result<IngestAck, ClientError> {
        self.write_ipc(&ipc).await?;
        self.end_batch(sequence).await
    }

    /// Sends the next bytes of the batch being written (its Arrow IPC stream, cut anywhere),
    /// without ending it: a client may stream a batch as it produces it, then `end_batch`.
    /// Nothing is applied before `end_batch`; a connection lost before it applies nothing.
    pub async fn write_ipc(&mut self, ipc: &[u8]) -> Result<(), ClientError> {
        for piece in ipc.chunks(WRITE_BYTES) {
            self.write(piece.to_vec()).await?;
        }
        Ok(())
    }

    /// Ends the batch sent with `write_ipc` and waits until the node has made it durable
    /// under `sequence` (as `append`).
    pub async fn end_batch(&mut self, sequence: u64) -> Result<IngestAck, ClientError> {
        self.commit(sequence).await
    }

    async fn write(&self, piece: Vec<u8>) -> Result<(), ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let stream = connection.ingest(id)?;
                let mut request = stream.write_request();
                request.get().set_ipc(&piece);
                Ok(request.send().await?)
            })
            .await
    }

    async fn commit(&self, sequence: u64) -> Result<IngestAck, ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let stream = connection.ingest(id)?;
                let mut request = stream.append_request();
                request.get().set_sequence(sequence);
                let response = request.send().promise.await?;
                let ack = response.get()?.get_ack()?;
                Ok(IngestAck {
                    rows: ack.get_rows(),
                    durable: ack.get_durable(),
                    duplicate: ack.get_duplicate(),
                    sequence: ack.get_sequence(),
                })
            })
            .await
    }

    /// Asks the node to write its buffered rows of the table to Parquet now; returns the files
    /// written.
    pub async fn flush(&self) -> Result<u64, ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let stream = connection.ingest(id)?;
                let response = stream.flush_request().send().promise.await?;
                Ok(response.get()?.get_files())
            })
            .await
    }
}

impl Drop for IngestStream {
    fn drop(&mut self) {
        let id = self.id;
        let job: Job = Box::new(move |connection| {
            connection.ingests.borrow_mut().remove(&id);
            Box::pin(async {})
        });
        let _ = self.client.inner.jobs.unbounded_send(job);
    }
}
