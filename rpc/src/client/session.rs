//! `Session`: a tenant login — queries, tables, imports — and the types its calls return.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// int32, int64, float64, string, boolean, timestamp or date.
    pub column_type: String,
    pub nullable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Snappy,
    Zstd,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    pub time_column: Option<String>,
    pub partition_by: Vec<String>,
    pub compression: Compression,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub version: u64,
}

impl TableInfo {
    fn read(info: table_info::Reader<'_>) -> Result<TableInfo, ClientError> {
        let mut columns = Vec::new();
        for column in info.get_columns()? {
            columns.push(ColumnInfo {
                name: text(column.get_name())?,
                column_type: text(column.get_type())?,
                nullable: column.get_nullable(),
            });
        }
        let mut partition_by = Vec::new();
        for column in info.get_partition_by()? {
            partition_by.push(text(column)?);
        }
        let time_column = text(info.get_time_column())?;
        Ok(TableInfo {
            name: text(info.get_name())?,
            columns,
            time_column: (!time_column.is_empty()).then_some(time_column),
            partition_by,
            compression: match info.get_compression()? {
                WireCompression::Snappy => Compression::Snappy,
                WireCompression::Zstd => Compression::Zstd,
                WireCompression::None => Compression::None,
            },
            rows: info.get_rows(),
            files: info.get_files(),
            bytes: info.get_bytes(),
            version: info.get_version(),
        })
    }
}

/// A new table's description for `Session::create_table`.
#[derive(Clone, Debug, Default)]
pub struct TableSpec {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
    /// `None`: the first timestamp column.
    pub time_column: Option<String>,
    pub partition_by: Vec<String>,
    pub compression: Compression,
}

/// What an import committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub version: u64,
}

/// A whole result, collected.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub stats: QueryStats,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A login: every call acts for the token's tenant with the token's role.
pub struct Session {
    pub(super) client: Client,
    pub(super) id: u64,
    pub(super) role: Role,
    pub(super) next_tag: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let id = self.id;
        let job: Job = Box::new(move |connection| {
            connection.tenants.borrow_mut().remove(&id);
            Box::pin(async {})
        });
        let _ = self.client.inner.jobs.unbounded_send(job);
    }
}

impl Session {
    pub fn role(&self) -> Role {
        self.role
    }

    /// Runs a query and returns its result as a stream of batches; `QueryStream::stats` is set
    /// once the stream has ended. Dropping the stream cancels the query.
    pub async fn query(&self, sql: &str) -> Result<QueryStream, ClientError> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed) as u64;
        self.query_tagged(sql, tag).await
    }

    /// As `query`, with a tag that `cancel` can name.
    pub async fn query_tagged(&self, sql: &str, tag: u64) -> Result<QueryStream, ClientError> {
        self.start_query(sql, None, tag).await
    }

    /// Between nodes of a cluster (a peer session): the partial result of `sql` over this
    /// node's replica of one partition of a partitioned table (`Tenant.queryPartial`), to be
    /// merged with the other partitions' (`tessera_storage_engine::engine::Merger`).
    pub async fn query_partial(
        &self,
        sql: &str,
        partition: &str,
    ) -> Result<QueryStream, ClientError> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed) as u64;
        self.start_query(sql, Some(partition.to_owned()), tag).await
    }

    async fn start_query(
        &self,
        sql: &str,
        partition: Option<String>,
        tag: u64,
    ) -> Result<QueryStream, ClientError> {
        use futures::FutureExt as _;
        let sql = sql.to_owned();
        let id = self.id;
        let (sink, stream) = result_stream();
        self.client
            .run(move |connection| async move {
                let tenant = connection.tenant(id)?;
                let promise = match partition {
                    None => {
                        let mut request = tenant.query_request();
                        request.get().set_sql(&sql);
                        request.get().set_sink(sink.client());
                        request.get().set_tag(tag);
                        request.send().promise.map(|r| r.map(drop)).boxed_local()
                    }
                    Some(partition) => {
                        let mut request = tenant.query_partial_request();
                        request.get().set_sql(&sql);
                        request.get().set_partition(&partition);
                        request.get().set_sink(sink.client());
                        request.get().set_tag(tag);
                        request.send().promise.map(|r| r.map(drop)).boxed_local()
                    }
                };
                // Success ends the stream at the sink's `done`, which arrives after every push
                // (calls on one capability are delivered in order); the call's own return may be
                // processed before the last pushes are, so it only reports failures.
                tokio::task::spawn_local(async move {
                    if let Err(e) = promise.await {
                        sink.fail(e.into());
                    }
                });
                Ok(())
            })
            .await?;
        Ok(stream)
    }

    /// Runs a query and collects its whole result.
    pub async fn query_collect(&self, sql: &str) -> Result<QueryOutput, ClientError> {
        self.query(sql).await?.collect().await
    }

    /// Cancels this session's running queries with `tag`; false if none was running.
    pub async fn cancel(&self, tag: u64) -> Result<bool, ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.cancel_request();
                request.get().set_tag(tag);
                Ok(request.send().promise.await?.get()?.get_cancelled())
            })
            .await
    }

    pub async fn explain(&self, sql: &str) -> Result<String, ClientError> {
        self.explain_partition(sql, "").await
    }

    /// Between nodes of a cluster (a peer session): the plan of `sql` over this node's
    /// replica of one partition (e.g. `events.p3`) of the partitioned table it names.
    pub async fn explain_partition(
        &self,
        sql: &str,
        partition: &str,
    ) -> Result<String, ClientError> {
        let (sql, partition, id) = (sql.to_owned(), partition.to_owned(), self.id);
        self.client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.explain_request();
                request.get().set_sql(&sql);
                request.get().set_partition(&partition);
                text(request.send().promise.await?.get()?.get_plan())
            })
            .await
    }

    pub async fn tables(&self) -> Result<Vec<TableInfo>, ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let response = connection
                    .tenant(id)?
                    .tables_request()
                    .send()
                    .promise
                    .await?;
                response
                    .get()?
                    .get_tables()?
                    .iter()
                    .map(TableInfo::read)
                    .collect()
            })
            .await
    }

    pub async fn describe(&self, table: &str) -> Result<TableInfo, ClientError> {
        let (table, id) = (table.to_owned(), self.id);
        self.client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.describe_request();
                request.get().set_table(&table);
                TableInfo::read(request.send().promise.await?.get()?.get_table()?)
            })
            .await
    }

    /// (tenant, role, token expiry in Unix seconds) of this session.
    pub async fn whoami(&self) -> Result<(String, Role, i64), ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let response = connection
                    .tenant(id)?
                    .whoami_request()
                    .send()
                    .promise
                    .await?;
                let response = response.get()?;
                Ok((
                    text(response.get_tenant())?,
                    role_from_wire(response.get_role()?),
                    response.get_expires_at(),
                ))
            })
            .await
    }

    /// Appends `batches` to `table` and commits them: when this returns, the rows are durable
    /// and visible.
    pub async fn import(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
    ) -> Result<ImportSummary, ClientError> {
        let mut writer = self.import_writer(table).await?;
        for batch in &batches {
            writer.write(batch).await?;
        }
        writer.commit().await
    }

    /// Opens an import into `table` (role writer or admin) for streaming batches of any number.
    pub async fn import_writer(&self, table: &str) -> Result<ImportWriter, ClientError> {
        let (table, id) = (table.to_owned(), self.id);
        let stream_id = self
            .client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.import_batches_request();
                request.get().set_table(&table);
                let response = request.send().promise.await?;
                let stream = response.get()?.get_stream()?;
                let stream_id = connection.next_id.get();
                connection.next_id.set(stream_id + 1);
                connection.imports.borrow_mut().insert(stream_id, stream);
                Ok(stream_id)
            })
            .await?;
        Ok(ImportWriter {
            client: self.client.clone(),
            id: stream_id,
            writer: None,
        })
    }

    async fn admin<T, F, Fut>(&self, job: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: FnOnce(admin::Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ClientError>> + 'static,
    {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let response = connection
                    .tenant(id)?
                    .admin_request()
                    .send()
                    .promise
                    .await?;
                job(response.get()?.get_admin()?).await
            })
            .await
    }

    /// Creates a table (role admin).
    pub async fn create_table(&self, spec: TableSpec) -> Result<TableInfo, ClientError> {
        self.create_replicated_table(spec, 0, 0).await
    }

    /// As `create_table`, on a node of a cluster: the table lives on `replication_factor` nodes
    /// and a batch is acknowledged once `write_quorum` of them have it durable (0: the
    /// cluster's defaults, 3 and a majority).
    pub async fn create_replicated_table(
        &self,
        spec: TableSpec,
        replication_factor: u8,
        write_quorum: u8,
    ) -> Result<TableInfo, ClientError> {
        self.create_partitioned_table(spec, replication_factor, write_quorum, 0, "")
            .await
    }

    /// As `create_replicated_table`, split into `partitions` hash partitions by the value of
    /// column `partition_key`, each on its own `replication_factor` nodes: queries run on every
    /// partition the WHERE clause may need, and their results are merged.
    pub async fn create_partitioned_table(
        &self,
        spec: TableSpec,
        replication_factor: u8,
        write_quorum: u8,
        partitions: u32,
        partition_key: &str,
    ) -> Result<TableInfo, ClientError> {
        let partition_key = partition_key.to_owned();
        self.admin(move |admin| async move {
            let mut request = admin.create_table_request();
            {
                let mut out = request.get().init_spec();
                out.set_name(&spec.name);
                let mut columns = out.reborrow().init_columns(spec.columns.len() as u32);
                for (i, column) in spec.columns.iter().enumerate() {
                    let mut c = columns.reborrow().get(i as u32);
                    c.set_name(&column.name);
                    c.set_type(&column.column_type);
                    c.set_nullable(column.nullable);
                }
                out.set_time_column(spec.time_column.as_deref().unwrap_or(""));
                let mut partition = out
                    .reborrow()
                    .init_partition_by(spec.partition_by.len() as u32);
                for (i, column) in spec.partition_by.iter().enumerate() {
                    partition.set(i as u32, column);
                }
                out.set_compression(match spec.compression {
                    Compression::Snappy => WireCompression::Snappy,
                    Compression::Zstd => WireCompression::Zstd,
                    Compression::None => WireCompression::None,
                });
                out.set_replication_factor(replication_factor);
                out.set_write_quorum(write_quorum);
                out.set_cluster_partitions(partitions);
                out.set_cluster_partition_key(&partition_key);
            }
            TableInfo::read(request.send().promise.await?.get()?.get_table()?)
        })
        .await
    }

    /// Drops a table (role admin); false if it did not exist.
    pub async fn drop_table(&self, name: &str) -> Result<bool, ClientError> {
        let name = name.to_owned();
        self.admin(move |admin| async move {
            let mut request = admin.drop_table_request();
            request.get().set_name(&name);
            Ok(request.send().promise.await?.get()?.get_existed())
        })
        .await
    }

    /// Retention (role admin): drops the table's date partitions before `before`
    /// (`YYYY-MM-DD`) at once; see `Admin.dropPartitionsBefore`.
    pub async fn drop_partitions_before(
        &self,
        table: &str,
        before: &str,
    ) -> Result<DroppedPartitions, ClientError> {
        let (table, before) = (table.to_owned(), before.to_owned());
        self.admin(move |admin| async move {
            let mut request = admin.drop_partitions_before_request();
            request.get().set_table(&table);
            request.get().set_before(&before);
            let response = request.send().promise.await?;
            let results = response.get()?;
            let mut dates = Vec::new();
            for date in results.get_dates()? {
                dates.push(
                    date?
                        .to_string()
                        .map_err(|e| ClientError::Data(e.to_string()))?,
                );
            }
            Ok(DroppedPartitions {
                dates,
                files: results.get_files(),
                rows: results.get_rows(),
            })
        })
        .await
    }

    /// Merges the table's small files now (role admin); returns the files removed and
    /// written.
    pub async fn compact(&self, table: &str) -> Result<(u64, u64), ClientError> {
        let table = table.to_owned();
        self.admin(move |admin| async move {
            let mut request = admin.compact_request();
            request.get().set_table(&table);
            let response = request.send().promise.await?;
            let results = response.get()?;
            Ok((results.get_files_removed(), results.get_files_written()))
        })
        .await
    }
}

/// What `drop_partitions_before` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DroppedPartitions {
    /// `YYYY-MM-DD`, oldest first.
    pub dates: Vec<String>,
    pub files: u64,
    pub rows: u64,
}

/// Rows on their way into a table. Nothing is visible until `commit` returns; dropping the
/// writer without committing discards what was written.
pub struct ImportWriter {
    client: Client,
    id: u64,
    writer: Option<StreamWriter<Vec<u8>>>,
}

/// Target bytes of Arrow IPC per `ImportStream.write`.
const IMPORT_CHUNK_BYTES: usize = 1 << 20;

impl ImportWriter {
    /// Sends one batch (split into messages of about a megabyte); waits while the server is
    /// behind.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), ClientError> {
        if self.writer.is_none() {
            self.writer =
                Some(StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(data_error)?);
        }
        let rows = batch.num_rows();
        let row_bytes = (batch.get_array_memory_size() / rows.max(1)).max(1);
        let step = (IMPORT_CHUNK_BYTES / row_bytes).clamp(1, rows.max(1));
        let mut offset = 0;
        while offset < rows {
            let length = step.min(rows - offset);
            let writer = self.writer.as_mut().expect("set above");
            writer
                .write(&batch.slice(offset, length))
                .map_err(data_error)?;
            offset += length;
            let chunk = std::mem::take(writer.get_mut());
            self.send(chunk).await?;
        }
        Ok(())
    }

    /// Sends bytes as they are, as one `ImportStream.write`: for callers that encode the Arrow
    /// IPC stream themselves (the concatenation of all writes must be one IPC stream). Do not mix
    /// with `write` on one writer.
    pub async fn write_ipc(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.send(bytes).await
    }

    async fn send(&self, chunk: Vec<u8>) -> Result<(), ClientError> {
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let stream = connection.import(id)?;
                let mut request = stream.write_request();
                request.get().set_ipc(&chunk);
                Ok(request.send().await?)
            })
            .await
    }

    /// Ends the IPC stream (once).
    async fn end_stream(&mut self) -> Result<(), ClientError> {
        if let Some(mut writer) = self.writer.take() {
            writer.finish().map_err(data_error)?;
            let tail = std::mem::take(writer.get_mut());
            self.send(tail).await?;
        }
        Ok(())
    }

    /// Writes and stages everything sent so far (on a replicated table, on enough of its
    /// replicas), so that `commit` only publishes; an error means nothing was imported.
    /// Optional: `commit` prepares what is not prepared yet.
    pub async fn prepare(&mut self) -> Result<(), ClientError> {
        self.end_stream().await?;
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let stream = connection.import(id)?;
                stream.prepare_request().send().promise.await?;
                Ok(())
            })
            .await
    }

    /// Publishes everything written; returns what was committed.
    pub async fn commit(mut self) -> Result<ImportSummary, ClientError> {
        self.end_stream().await?;
        let id = self.id;
        self.client
            .run(move |connection| async move {
                let stream = connection.import(id)?;
                let response = stream.commit_request().send().promise.await?;
                let response = response.get()?;
                Ok(ImportSummary {
                    rows: response.get_rows(),
                    files: response.get_files(),
                    bytes: response.get_bytes(),
                    version: response.get_version(),
                })
            })
            .await
    }
}

impl Drop for ImportWriter {
    fn drop(&mut self) {
        let id = self.id;
        let job: Job = Box::new(move |connection| {
            connection.imports.borrow_mut().remove(&id);
            Box::pin(async {})
        });
        let _ = self.client.inner.jobs.unbounded_send(job);
    }
}
