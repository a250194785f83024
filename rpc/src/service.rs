//! The capability objects a connection serves: `Gateway` (bootstrap), `Tenant` (bound at login to
//! the tenant and role of a verified token), `Admin`, `Operator` and `ImportStream`. Everything a
//! method may touch is reached through the identity its object holds; no method reads a tenant
//! name from its parameters.

use crate::auth::{self, Identity, Role};
use crate::codes::{self, ErrorCode};
use crate::ipc_frames::StreamFraming;
use crate::server::Shared;
use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Field, Schema, SchemaRef};
use capnp::Error;
use futures::channel::oneshot;
use futures::future::{AbortHandle, Abortable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tessera_schema::tessera_capnp::{
    admin, batch_sink, gateway, import_stream, operator, query_stats, table_info, tenant,
    Compression as WireCompression, Role as WireRole,
};
use tessera_storage_engine::engine::{BatchSink, CoreContext};
use tessera_storage_engine::manifest::{
    self, ColumnDef, Compression, PartitionSpec, TableManifest, WriterSettings,
};
use tessera_storage_engine::runtime;
use tessera_storage_engine::sql::{self, Statement};
use tessera_storage_engine::value::ColumnType;
use tessera_storage_engine::writer::{ImportOptions, TableWriter};

/// An error whose description starts with one of the schema's `ErrorCode`s.
pub fn fail(code: ErrorCode, message: impl std::fmt::Display) -> Error {
    Error::failed(format!("{}: {message}", codes::text(code)))
}

/// As `fail`, with the code's wire text; a text that is no schema code becomes `internal`
/// (and fails debug builds), so the codes on the wire stay the schema's.
pub fn error(code: &str, message: impl std::fmt::Display) -> Error {
    let parsed = codes::parse(code);
    debug_assert!(
        parsed.is_some(),
        "{code:?} is not an ErrorCode of the schema"
    );
    fail(parsed.unwrap_or(ErrorCode::Internal), message)
}

fn engine_error(e: tessera_storage_engine::Error) -> Error {
    error(e.code(), e)
}

fn text(reader: capnp::text::Reader<'_>) -> Result<String, Error> {
    reader
        .to_str()
        .map(str::to_owned)
        .map_err(|_| error("invalid", "text is not UTF-8"))
}

/// State of one connection, shared by every capability served on it. Lives on one core.
pub struct Connection {
    context: CoreContext,
    shared: Arc<Shared>,
    in_flight: Cell<usize>,
}

impl Connection {
    pub fn new(context: CoreContext, shared: Arc<Shared>) -> Connection {
        Connection {
            context,
            shared,
            in_flight: Cell::new(0),
        }
    }

    pub fn calls_in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Admits one call on this connection, or refuses it over `calls_in_flight_per_connection`.
    fn enter(self: &Rc<Self>) -> Result<CallGuard, Error> {
        let limit = self.shared.limits.calls_in_flight_per_connection;
        if self.in_flight.get() >= limit {
            return Err(error(
                "limit",
                format!("{limit} calls are already in flight on this connection"),
            ));
        }
        self.in_flight.set(self.in_flight.get() + 1);
        Ok(CallGuard(self.clone()))
    }

    fn data_dir(&self) -> &std::path::Path {
        &self.shared.data_dir
    }
}

struct CallGuard(Rc<Connection>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.in_flight.set(self.0.in_flight.get() - 1);
    }
}

/// A running-query slot under `CONCURRENT_QUERIES`, released on drop.
struct QuerySlot(Arc<Shared>);

impl Drop for QuerySlot {
    fn drop(&mut self) {
        self.0.queries_running.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queries_running.dec();
    }
}

/// Takes a query slot, waiting up to `admission_wait` for one; then `overloaded`.
async fn admit(shared: &Arc<Shared>) -> Result<QuerySlot, Error> {
    let limit = shared.limits.concurrent_queries;
    let deadline = Instant::now() + shared.limits.admission_wait;
    let mut pause = std::time::Duration::from_micros(500);
    loop {
        let running = shared.queries_running.load(Ordering::Acquire);
        if running < limit {
            if shared
                .queries_running
                .compare_exchange(running, running + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                shared.metrics.queries_running.inc();
                return Ok(QuerySlot(shared.clone()));
            }
            continue;
        }
        if Instant::now() >= deadline {
            shared.metrics.queries_rejected_overloaded.inc();
            return Err(Error::overloaded(format!(
                "overloaded: {running} queries are running (CONCURRENT_QUERIES={limit}); retry later"
            )));
        }
        // Waiters poll with backoff: a slot frees when any core finishes a query.
        runtime::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(8));
    }
}

/// A blocking thread's place under `Limits::blocking_threads_max`, released on drop.
struct BlockingSlot(Arc<Shared>);

impl BlockingSlot {
    fn try_acquire(shared: &Arc<Shared>) -> Option<BlockingSlot> {
        let limit = shared.limits.blocking_threads_max;
        let mut running = shared.blocking_threads.load(Ordering::Acquire);
        while running < limit {
            match shared.blocking_threads.compare_exchange(
                running,
                running + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(BlockingSlot(shared.clone())),
                Err(now) => running = now,
            }
        }
        None
    }

    /// Takes a place, waiting up to `admission_wait` for one; then `overloaded`.
    async fn acquire(shared: &Arc<Shared>) -> Result<BlockingSlot, Error> {
        let deadline = Instant::now() + shared.limits.admission_wait;
        let mut pause = std::time::Duration::from_micros(500);
        loop {
            if let Some(slot) = BlockingSlot::try_acquire(shared) {
                return Ok(slot);
            }
            if Instant::now() >= deadline {
                let limit = shared.limits.blocking_threads_max;
                return Err(Error::overloaded(format!(
                    "overloaded: {limit} blocking jobs (imports, table changes) are running; retry later"
                )));
            }
            runtime::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(8));
        }
    }
}

impl Drop for BlockingSlot {
    fn drop(&mut self) {
        self.0.blocking_threads.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs blocking file-system work (import writes and commits, table creation and removal) off
/// the core, on a thread of its own that ends with the job: at most `blocking_threads_max` at
/// once on the node, so many clients cannot make the node start unbounded threads.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let slot = BlockingSlot::acquire(shared).await?;
    let (sender, receiver) = oneshot::channel();
    std::thread::Builder::new()
        .name("tessera-blocking".into())
        .spawn(move || {
            let result = work();
            drop(slot);
            let _ = sender.send(result);
        })
        .map_err(|e| error("internal", format!("cannot start a worker thread: {e}")))?;
    receiver
        .await
        .map_err(|_| error("internal", "a worker thread died"))
}

pub fn gateway(connection: Rc<Connection>) -> gateway::Client {
    capnp_rpc::new_client(GatewayServer { connection })
}

struct GatewayServer {
    connection: Rc<Connection>,
}

impl GatewayServer {
    fn verify(&self, token: &str) -> Result<Identity, Error> {
        self.connection.shared.verifier.verify(token).map_err(|e| {
            self.connection.shared.metrics.logins_failed.inc();
            error("unauthenticated", e)
        })
    }
}

fn wire_role(role: Role) -> WireRole {
    match role {
        Role::Reader => WireRole::Reader,
        Role::Writer => WireRole::Writer,
        Role::Admin => WireRole::Admin,
        Role::Operator => WireRole::Operator,
    }
}

impl gateway::Server for GatewayServer {
    async fn login(
        self: Rc<Self>,
        params: gateway::LoginParams,
        mut results: gateway::LoginResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let token = text(params.get()?.get_token()?)?;
        let identity = self.verify(&token)?;
        let Some(tenant) = identity.tenant.clone() else {
            return Err(error(
                "permission",
                "an operator token has no tenant; use operatorLogin",
            ));
        };
        let mut out = results.get();
        out.set_role(wire_role(identity.role));
        out.set_tenant(capnp_rpc::new_client(TenantServer {
            connection: self.connection.clone(),
            tenant,
            identity,
            running: RefCell::new(HashMap::new()),
            next_query: Cell::new(0),
        }));
        Ok(())
    }

    async fn operator_login(
        self: Rc<Self>,
        params: gateway::OperatorLoginParams,
        mut results: gateway::OperatorLoginResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let token = text(params.get()?.get_token()?)?;
        let identity = self.verify(&token)?;
        if identity.role != Role::Operator {
            return Err(error(
                "permission",
                format!("a {} token cannot act as operator", identity.role.name()),
            ));
        }
        results
            .get()
            .set_operator(capnp_rpc::new_client(OperatorServer {
                connection: self.connection.clone(),
                identity,
            }));
        Ok(())
    }

    async fn version(
        self: Rc<Self>,
        _: gateway::VersionParams,
        mut results: gateway::VersionResults,
    ) -> Result<(), Error> {
        let mut out = results.get();
        out.set_protocol(tessera_schema::PROTOCOL_VERSION);
        out.set_server(env!("CARGO_PKG_VERSION"));
        Ok(())
    }
}

fn check_expiry(identity: &Identity) -> Result<(), Error> {
    if auth::expired(identity.expires_at) {
        return Err(error(
            "unauthenticated",
            "the token behind this capability has expired; log in again",
        ));
    }
    Ok(())
}

struct TenantServer {
    connection: Rc<Connection>,
    tenant: String,
    identity: Identity,
    /// Running queries of this capability by client tag, for `cancel`.
    running: RefCell<RunningQueries>,
    /// Identifies a query among those sharing its tag, so it can unregister itself.
    next_query: Cell<u64>,
}

/// Abort handles of running queries by client tag, each with the id of its query.
type RunningQueries = HashMap<u64, Vec<(u64, AbortHandle)>>;

/// One query's entry in its capability's registry; dropping it removes the entry.
struct Running<'a> {
    running: &'a RefCell<RunningQueries>,
    tag: u64,
    id: u64,
}

impl<'a> Running<'a> {
    fn register(
        running: &'a RefCell<RunningQueries>,
        next_query: &Cell<u64>,
        tag: u64,
        handle: AbortHandle,
    ) -> Running<'a> {
        let id = next_query.get();
        next_query.set(id.wrapping_add(1));
        running
            .borrow_mut()
            .entry(tag)
            .or_default()
            .push((id, handle));
        Running { running, tag, id }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.running.borrow_mut();
        if let Some(handles) = running.get_mut(&self.tag) {
            handles.retain(|(id, _)| *id != self.id);
            if handles.is_empty() {
                running.remove(&self.tag);
            }
        }
    }
}

impl TenantServer {
    fn check(&self) -> Result<(), Error> {
        check_expiry(&self.identity)
    }

    async fn run_query(
        &self,
        statement: Statement,
        sink: batch_sink::Client,
        queued_micros: u64,
    ) -> Result<QueryStatsOut, Error> {
        let started = Instant::now();
        let limits = &self.connection.shared.limits;
        let mut out = PushSink::new(&sink, limits);
        let result = match self
            .connection
            .context
            .execute_into(&self.tenant, statement, &mut out)
            .await
        {
            Ok(result) => result,
            // A failure of our own sink explains itself better than the engine's "cancelled".
            Err(e) => return Err(out.failure.take().unwrap_or_else(|| engine_error(e))),
        };
        out.finish(&result.schema).await?;
        let stats = QueryStatsOut {
            rows_returned: out.rows,
            scan: result.stats.scan.clone(),
            elapsed_micros: started.elapsed().as_micros() as u64,
            batches: out.batches,
            ipc_bytes: out.bytes,
            queued_micros,
        };
        // `done` follows every push (calls on one capability are delivered in order); its reply
        // confirms the client took the whole result before this call returns.
        let mut done = sink.done_request();
        stats.write(done.get().init_stats());
        runtime::timeout(limits.stall_timeout, done.send().promise)
            .await
            .ok_or_else(|| stalled(limits))?
            .map_err(|e| error("cancelled", format!("the result sink failed: {e}")))?;
        Ok(stats)
    }
}

fn stalled(limits: &crate::server::Limits) -> Error {
    error(
        "cancelled",
        format!(
            "the client accepted no result data for {} s",
            limits.stall_timeout.as_secs()
        ),
    )
}

/// Streams a result into the client's `BatchSink` as Arrow IPC, about `push_bytes` per push,
/// waiting for flow control between pushes (a slow client slows the query, not the server's
/// memory).
struct PushSink<'a> {
    sink: &'a batch_sink::Client,
    limits: &'a crate::server::Limits,
    writer: Option<StreamWriter<Vec<u8>>>,
    batches: u64,
    bytes: u64,
    rows: u64,
    failure: Option<Error>,
}

impl<'a> PushSink<'a> {
    fn new(sink: &'a batch_sink::Client, limits: &'a crate::server::Limits) -> Self {
        PushSink {
            sink,
            limits,
            writer: None,
            batches: 0,
            bytes: 0,
            rows: 0,
            failure: None,
        }
    }

    fn writer(&mut self, schema: &SchemaRef) -> Result<&mut StreamWriter<Vec<u8>>, Error> {
        if self.writer.is_none() {
            let writer = StreamWriter::try_new(Vec::with_capacity(self.limits.push_bytes), schema)
                .map_err(ipc_error)?;
            self.writer = Some(writer);
        }
        Ok(self.writer.as_mut().expect("set above"))
    }

    async fn push_batch(&mut self, batch: RecordBatch) -> Result<(), Error> {
        let held = batch.get_array_memory_size() as u64;
        if held > self.limits.query_memory_bytes {
            return Err(error(
                "limit",
                format!(
                    "the result holds {held} bytes, over the per-query limit of {} bytes; add a filter or LIMIT",
                    self.limits.query_memory_bytes
                ),
            ));
        }
        let rows = batch.num_rows();
        let row_bytes = (held as usize / rows.max(1)).max(1);
        let step = (self.limits.push_bytes / row_bytes).clamp(1, rows.max(1));
        let mut offset = 0;
        while offset < rows {
            let length = step.min(rows - offset);
            let push_bytes = self.limits.push_bytes;
            let writer = self.writer(&batch.schema())?;
            writer
                .write(&batch.slice(offset, length))
                .map_err(ipc_error)?;
            // Small batches (a streamed chunk per page run) are coalesced up to `push_bytes`.
            let full = writer.get_ref().len() >= push_bytes;
            let chunk = if full {
                std::mem::take(writer.get_mut())
            } else {
                Vec::new()
            };
            offset += length;
            self.batches += 1;
            self.rows += length as u64;
            if full {
                self.push(chunk).await?;
            }
        }
        Ok(())
    }

    /// Ends the IPC stream (a result without rows still sends its schema).
    async fn finish(&mut self, schema: &SchemaRef) -> Result<(), Error> {
        let writer = self.writer(schema)?;
        writer.finish().map_err(ipc_error)?;
        let tail = std::mem::take(writer.get_mut());
        self.push(tail).await
    }

    async fn push(&mut self, chunk: Vec<u8>) -> Result<(), Error> {
        self.bytes += chunk.len() as u64;
        let mut request = self.sink.push_request();
        request.get().set_ipc(&chunk);
        runtime::timeout(self.limits.stall_timeout, request.send())
            .await
            .ok_or_else(|| stalled(self.limits))?
            .map_err(|e| error("cancelled", format!("the result sink failed: {e}")))
    }
}

fn ipc_error(e: arrow_schema::ArrowError) -> Error {
    error("internal", format!("Arrow IPC: {e}"))
}

impl BatchSink for PushSink<'_> {
    async fn send(&mut self, batch: RecordBatch) -> tessera_storage_engine::Result<()> {
        self.push_batch(batch).await.map_err(|e| {
            let message = e.to_string();
            self.failure = Some(e);
            tessera_storage_engine::Error::Cancelled(message)
        })
    }
}

/// `QueryStats` as sent on the wire.
#[derive(Default)]
struct QueryStatsOut {
    rows_returned: u64,
    scan: tessera_storage_engine::exec::ScanStats,
    elapsed_micros: u64,
    batches: u64,
    ipc_bytes: u64,
    queued_micros: u64,
}

impl QueryStatsOut {
    fn write(&self, mut out: query_stats::Builder<'_>) {
        out.set_rows_returned(self.rows_returned);
        out.set_rows_scanned(self.scan.rows_scanned);
        out.set_bytes_read(self.scan.bytes_read);
        out.set_files_total(self.scan.files_total);
        out.set_files_pruned(self.scan.files_pruned);
        out.set_row_groups_total(self.scan.row_groups_total);
        out.set_row_groups_pruned(self.scan.row_groups_pruned);
        out.set_pages_total(self.scan.pages_total);
        out.set_pages_pruned(self.scan.pages_pruned);
        out.set_pool_hits(self.scan.pool_hits);
        out.set_pool_misses(self.scan.pool_misses);
        out.set_elapsed_micros(self.elapsed_micros);
        out.set_batches(self.batches);
        out.set_ipc_bytes(self.ipc_bytes);
        out.set_queued_micros(self.queued_micros);
        out.set_bytes_scanned(self.scan.bytes_scanned);
    }
}

impl tenant::Server for TenantServer {
    async fn query(
        self: Rc<Self>,
        params: tenant::QueryParams,
        mut results: tenant::QueryResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let params = params.get()?;
        let sql = text(params.get_sql()?)?;
        let sink = params.get_sink()?;
        let tag = params.get_tag();
        let shared = self.connection.shared.clone();
        let queued = Instant::now();
        let _slot = admit(&shared).await?;
        let queued_micros = queued.elapsed().as_micros() as u64;
        let statement = sql::parse(&sql).map_err(|e| engine_error(e.into()));
        let (handle, registration) = AbortHandle::new_pair();
        // Unregistered when this call ends, however it ends (success, error or dropped call).
        let _registered = Running::register(&self.running, &self.next_query, tag, handle);
        let outcome = match statement {
            Ok(statement) => {
                Abortable::new(self.run_query(statement, sink, queued_micros), registration)
                    .await
                    .unwrap_or_else(|_| Err(error("cancelled", "the query was cancelled")))
            }
            Err(e) => Err(e),
        };
        let metrics = &shared.metrics;
        metrics.queries_total.inc();
        match outcome {
            Ok(stats) => {
                metrics
                    .query_duration_seconds
                    .observe(stats.elapsed_micros as f64 / 1e6);
                metrics.data_scanned_bytes.inc_by(stats.scan.bytes_scanned);
                metrics.data_read_bytes.inc_by(stats.scan.bytes_read);
                metrics.rows_returned.inc_by(stats.rows_returned);
                metrics.ipc_bytes_sent.inc_by(stats.ipc_bytes);
                stats.write(results.get().init_stats());
                Ok(())
            }
            Err(e) => {
                metrics.query_errors_total.inc();
                Err(e)
            }
        }
    }

    async fn explain(
        self: Rc<Self>,
        params: tenant::ExplainParams,
        mut results: tenant::ExplainResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let sql = text(params.get()?.get_sql()?)?;
        let statement = match sql::parse(&sql).map_err(|e| engine_error(e.into()))? {
            Statement::Query(query) | Statement::Explain(query) => Statement::Explain(query),
        };
        let result = self
            .connection
            .context
            .execute(&self.tenant, statement)
            .await
            .map_err(engine_error)?;
        results
            .get()
            .set_plan(result.explain.as_deref().unwrap_or(""));
        Ok(())
    }

    async fn tables(
        self: Rc<Self>,
        _: tenant::TablesParams,
        mut results: tenant::TablesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let manifests = load_tables(self.connection.data_dir(), &self.tenant)?;
        let mut list = results.get().init_tables(manifests.len() as u32);
        for (i, manifest) in manifests.iter().enumerate() {
            write_table_info(list.reborrow().get(i as u32), manifest);
        }
        Ok(())
    }

    async fn describe(
        self: Rc<Self>,
        params: tenant::DescribeParams,
        mut results: tenant::DescribeResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        let table = text(params.get()?.get_table()?)?;
        let manifest = load_table(self.connection.data_dir(), &self.tenant, &table)?;
        write_table_info(results.get().init_table(), &manifest);
        Ok(())
    }

    async fn import_batches(
        self: Rc<Self>,
        params: tenant::ImportBatchesParams,
        mut results: tenant::ImportBatchesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check()?;
        if !self.identity.role.can_write() {
            return Err(error(
                "permission",
                format!("role {} cannot import", self.identity.role.name()),
            ));
        }
        let table = text(params.get()?.get_table()?)?;
        let manifest = load_table(self.connection.data_dir(), &self.tenant, &table)?;
        results
            .get()
            .set_stream(capnp_rpc::new_client(ImportStreamServer::new(
                self.connection.clone(),
                self.identity.clone(),
                manifest,
            )));
        Ok(())
    }

    async fn cancel(
        self: Rc<Self>,
        params: tenant::CancelParams,
        mut results: tenant::CancelResults,
    ) -> Result<(), Error> {
        let tag = params.get()?.get_tag();
        let handles = self.running.borrow_mut().remove(&tag).unwrap_or_default();
        for (_, handle) in &handles {
            handle.abort();
        }
        results.get().set_cancelled(!handles.is_empty());
        Ok(())
    }

    async fn admin(
        self: Rc<Self>,
        _: tenant::AdminParams,
        mut results: tenant::AdminResults,
    ) -> Result<(), Error> {
        self.check()?;
        if self.identity.role != Role::Admin {
            return Err(error(
                "permission",
                format!("role {} has no admin capability", self.identity.role.name()),
            ));
        }
        results.get().set_admin(capnp_rpc::new_client(AdminServer {
            connection: self.connection.clone(),
            tenant: self.tenant.clone(),
            identity: self.identity.clone(),
        }));
        Ok(())
    }

    async fn whoami(
        self: Rc<Self>,
        _: tenant::WhoamiParams,
        mut results: tenant::WhoamiResults,
    ) -> Result<(), Error> {
        let mut out = results.get();
        out.set_tenant(&self.tenant);
        out.set_role(wire_role(self.identity.role));
        out.set_expires_at(self.identity.expires_at);
        Ok(())
    }
}

fn load_table(
    data_dir: &std::path::Path,
    tenant: &str,
    table: &str,
) -> Result<TableManifest, Error> {
    manifest::load(data_dir, tenant, table)
        .map_err(engine_error)?
        .ok_or_else(|| error("not_found", format!("no table {table}")))
}

fn load_tables(data_dir: &std::path::Path, tenant: &str) -> Result<Vec<TableManifest>, Error> {
    let names = manifest::list_tables(data_dir, tenant).map_err(engine_error)?;
    let mut manifests = Vec::with_capacity(names.len());
    for name in names {
        // A table dropped between listing and loading is simply not listed.
        if let Some(manifest) = manifest::load(data_dir, tenant, &name).map_err(engine_error)? {
            manifests.push(manifest);
        }
    }
    Ok(manifests)
}

fn write_table_info(mut out: table_info::Builder<'_>, manifest: &TableManifest) {
    out.set_name(&manifest.table);
    let mut columns = out.reborrow().init_columns(manifest.columns.len() as u32);
    for (i, column) in manifest.columns.iter().enumerate() {
        let mut c = columns.reborrow().get(i as u32);
        c.set_name(&column.name);
        c.set_type(column.column_type.name());
        c.set_nullable(column.nullable);
    }
    out.set_time_column(manifest.partition.time_column.as_deref().unwrap_or(""));
    let mut partition = out
        .reborrow()
        .init_partition_by(manifest.partition.columns.len() as u32);
    for (i, column) in manifest.partition.columns.iter().enumerate() {
        partition.set(i as u32, column);
    }
    out.set_compression(match manifest.writer.compression {
        Compression::Snappy => WireCompression::Snappy,
        Compression::Zstd => WireCompression::Zstd,
        Compression::None => WireCompression::None,
    });
    out.set_rows(manifest.total_rows());
    out.set_files(manifest.files.len() as u64);
    out.set_bytes(manifest.total_bytes());
    out.set_version(manifest.version);
}

/// Rows of one `importBatches` call. Each write is checked (`ipc_frames`: whole stream-format
/// messages, the table's schema) and decoded when the call is dispatched, so batches queue in the
/// order the client sent them; a blocking job then hands them to the `TableWriter`, one job at a
/// time, so a fast client waits instead of filling memory. No thread is held between calls. The
/// writer stages its files outside the table; only `commit` takes the table lock, to publish.
/// Any failure poisons the import: nothing of it is committed and every later call fails.
struct ImportStreamServer {
    connection: Rc<Connection>,
    identity: Identity,
    /// The table when the import began: a stream with another schema is refused.
    table: TableManifest,
    framing: RefCell<StreamFraming>,
    decoder: RefCell<StreamDecoder>,
    /// Decoded batches not yet handed to the writer, in arrival order.
    queue: RefCell<std::collections::VecDeque<RecordBatch>>,
    draining: futures::lock::Mutex<()>,
    /// `None` before the first batch, and while a blocking job holds it.
    writer: RefCell<Option<TableWriter>>,
    failure: RefCell<Option<Error>>,
    committed: Cell<bool>,
}

impl ImportStreamServer {
    fn new(
        connection: Rc<Connection>,
        identity: Identity,
        table: TableManifest,
    ) -> ImportStreamServer {
        let message_bytes_max = connection.shared.limits.import_buffer_bytes;
        ImportStreamServer {
            connection,
            identity,
            table,
            framing: RefCell::new(StreamFraming::new(message_bytes_max)),
            decoder: RefCell::new(StreamDecoder::new()),
            queue: RefCell::default(),
            draining: futures::lock::Mutex::new(()),
            writer: RefCell::new(None),
            failure: RefCell::new(None),
            committed: Cell::new(false),
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
        let bytes = params.get()?.get_ipc()?;
        self.decode_bytes(bytes).map_err(|e| self.fail(e))
    }

    fn decode_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let frames = self
            .framing
            .borrow_mut()
            .push(bytes)
            .map_err(|e| error("invalid", e))?;
        let mut decoder = self.decoder.borrow_mut();
        for frame in frames {
            if let Some(schema) = &frame.schema {
                self.check_schema(schema)?;
            }
            let mut buffer = arrow_buffer::Buffer::from_vec(frame.bytes);
            while !buffer.is_empty() {
                match decoder.decode(&mut buffer) {
                    Ok(Some(batch)) if batch.num_rows() > 0 => {
                        self.queue.borrow_mut().push_back(batch)
                    }
                    Ok(_) => {}
                    Err(e) => return Err(error("invalid", format!("bad Arrow IPC data: {e}"))),
                }
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
                Ok(Ok(writer)) => *self.writer.borrow_mut() = Some(writer),
                Ok(Err(e)) => return Err(self.fail(engine_error(e))),
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

impl Drop for ImportStreamServer {
    fn drop(&mut self) {
        // Dropped without a commit: the writer's staged files are removed, off the core when a
        // blocking thread is free.
        let Some(writer) = self.writer.get_mut().take() else {
            return;
        };
        if let Some(slot) = BlockingSlot::try_acquire(&self.connection.shared) {
            let _ = std::thread::Builder::new()
                .name("tessera-blocking".into())
                .spawn(move || {
                    drop(writer);
                    drop(slot);
                });
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

    async fn commit(
        self: Rc<Self>,
        _: import_stream::CommitParams,
        mut results: import_stream::CommitResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        self.check_open()?;
        self.committed.set(true);
        let whole = self.framing.borrow().finish();
        whole.map_err(|e| self.fail(error("invalid", e)))?;
        self.drain().await?;
        let writer = self.writer.borrow_mut().take();
        let Some(writer) = writer else {
            // No rows: nothing to write; report the table as it is.
            let manifest = load_table(
                self.connection.data_dir(),
                &self.table.tenant,
                &self.table.table,
            )?;
            results.get().set_version(manifest.version);
            return Ok(());
        };
        let summary = blocking(&self.connection.shared, move || writer.finish())
            .await
            .map_err(|e| self.fail(e))?
            .map_err(|e| self.fail(engine_error(e)))?;
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

struct AdminServer {
    connection: Rc<Connection>,
    tenant: String,
    identity: Identity,
}

fn column_type(name: &str) -> Option<ColumnType> {
    [
        ColumnType::Int32,
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Utf8,
        ColumnType::Boolean,
        ColumnType::Timestamp,
        ColumnType::Date,
    ]
    .into_iter()
    .find(|t| t.name() == name)
}

/// Most columns a table may have.
const TABLE_COLUMNS_MAX: usize = 1024;
/// Most partition columns besides the day of the time column.
const PARTITION_COLUMNS_MAX: usize = 8;
/// Longest column name, bytes.
const COLUMN_NAME_BYTES_MAX: usize = 128;

/// Whether `name` is a column name a query can write unquoted: `[a-z_][a-z0-9_]*`.
fn valid_column_name(name: &str) -> bool {
    name.len() <= COLUMN_NAME_BYTES_MAX
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a whole `TableSpec` before anything touches the disk: the table name, the columns
/// (names valid and unique after lowercasing, types known, a sane count), the time column (a
/// timestamp column of the table) and the partition columns (columns of the table, distinct,
/// not the time column). Returns the columns, time column and partition columns, lowercased.
type ValidSpec = (Vec<ColumnDef>, Option<String>, Vec<String>);

fn validate_table_spec(
    name: &str,
    columns: Vec<(String, String, bool)>,
    time_column: &str,
    partition_by: Vec<String>,
) -> Result<ValidSpec, Error> {
    if manifest::validate_name("table", name).is_err() {
        return Err(error(
            "invalid",
            format!("table name {name:?}: use 1-128 characters of a-z, 0-9, '_' and '-', not starting with '.', '_' or '-'"),
        ));
    }
    if columns.is_empty() {
        return Err(error("invalid", "a table needs at least one column"));
    }
    if columns.len() > TABLE_COLUMNS_MAX {
        return Err(error(
            "invalid",
            format!(
                "{} columns; a table has at most {TABLE_COLUMNS_MAX}",
                columns.len()
            ),
        ));
    }
    let mut defs: Vec<ColumnDef> = Vec::with_capacity(columns.len());
    for (position, (column_name, type_name, nullable)) in columns.into_iter().enumerate() {
        let column_name = column_name.to_lowercase();
        if column_name.is_empty() {
            return Err(error(
                "invalid",
                format!("column {}: empty name", position + 1),
            ));
        }
        if !valid_column_name(&column_name) {
            return Err(error(
                "invalid",
                format!("column {column_name:?}: use 1-{COLUMN_NAME_BYTES_MAX} characters of a-z, 0-9 and '_', not starting with a digit"),
            ));
        }
        if defs.iter().any(|d| d.name == column_name) {
            return Err(error(
                "invalid",
                format!("column {column_name} appears twice"),
            ));
        }
        let column_type = column_type(&type_name).ok_or_else(|| {
            error(
                "invalid",
                format!("column {column_name}: unknown type {type_name:?} (int32, int64, float64, string, boolean, timestamp, date)"),
            )
        })?;
        defs.push(ColumnDef {
            name: column_name,
            column_type,
            nullable,
        });
    }
    let find = |what: &str, column: &str| -> Result<ColumnType, Error> {
        defs.iter()
            .find(|d| d.name == column)
            .map(|d| d.column_type)
            .ok_or_else(|| error("invalid", format!("{what} {column} is not a column")))
    };
    let time_column = time_column.to_lowercase();
    let time_column = if time_column.is_empty() {
        None
    } else {
        let column_type = find("time column", &time_column)?;
        if column_type != ColumnType::Timestamp {
            return Err(error(
                "invalid",
                format!(
                    "time column {time_column} is {}, not timestamp",
                    column_type.name()
                ),
            ));
        }
        Some(time_column)
    };
    if partition_by.len() > PARTITION_COLUMNS_MAX {
        return Err(error(
            "invalid",
            format!(
                "{} partition columns; at most {PARTITION_COLUMNS_MAX}",
                partition_by.len()
            ),
        ));
    }
    let mut partitions: Vec<String> = Vec::with_capacity(partition_by.len());
    for column in partition_by {
        let column = column.to_lowercase();
        find("partition column", &column)?;
        if partitions.contains(&column) || time_column.as_deref() == Some(column.as_str()) {
            return Err(error(
                "invalid",
                format!("partition column {column} is named twice"),
            ));
        }
        partitions.push(column);
    }
    Ok((defs, time_column, partitions))
}

impl admin::Server for AdminServer {
    async fn create_table(
        self: Rc<Self>,
        params: admin::CreateTableParams,
        mut results: admin::CreateTableResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let spec = params.get()?.get_spec()?;
        let name = text(spec.get_name()?)?;
        let mut columns = Vec::new();
        for column in spec.get_columns()? {
            columns.push((
                text(column.get_name()?)?,
                text(column.get_type()?)?,
                column.get_nullable(),
            ));
        }
        let time_column = text(spec.get_time_column()?)?;
        let mut partition_by = Vec::new();
        for column in spec.get_partition_by()? {
            partition_by.push(text(column?)?);
        }
        let (columns, time_column, partition_by) =
            validate_table_spec(&name, columns, &time_column, partition_by)?;
        let compression = match spec.get_compression()? {
            WireCompression::Snappy => Compression::Snappy,
            WireCompression::Zstd => Compression::Zstd,
            WireCompression::None => Compression::None,
        };
        let options = ImportOptions {
            partition: Some(PartitionSpec {
                time_column,
                columns: partition_by,
            }),
            writer: Some(WriterSettings {
                compression,
                ..WriterSettings::default()
            }),
            buffer_bytes_max: None,
        };
        let data_dir = self.connection.data_dir().to_owned();
        let tenant = self.tenant.clone();
        let manifest = blocking(
            &self.connection.shared,
            move || -> tessera_storage_engine::Result<TableManifest> {
                if manifest::load(&data_dir, &tenant, &name)?.is_some() {
                    return Err(tessera_storage_engine::Error::Import(format!(
                        "table {name} already exists"
                    )));
                }
                let dir = manifest::table_dir(&data_dir, &tenant, &name);
                let existed = dir.exists();
                let schema = Schema::new(
                    columns
                        .iter()
                        .map(|c| Field::new(&c.name, c.column_type.to_arrow(), c.nullable))
                        .collect::<Vec<_>>(),
                );
                let created = TableWriter::open(&data_dir, &tenant, &name, &schema, &options)
                    .and_then(|writer| writer.finish())
                    .and_then(|_| manifest::load(&data_dir, &tenant, &name))
                    .and_then(|loaded| {
                        loaded.ok_or_else(|| {
                            tessera_storage_engine::Error::Internal("table vanished".into())
                        })
                    });
                // A failed create leaves nothing behind (no lock, no empty directory), unless the
                // directory was there before or a manifest got published after all.
                if created.is_err()
                    && !existed
                    && !dir.join(manifest::MANIFEST_FILE).exists()
                    && std::fs::remove_dir_all(&dir).is_ok()
                {
                    let _ = manifest::sync_dir(&data_dir.join(&tenant));
                }
                created
            },
        )
        .await?
        .map_err(engine_error)?;
        write_table_info(results.get().init_table(), &manifest);
        Ok(())
    }

    async fn drop_table(
        self: Rc<Self>,
        params: admin::DropTableParams,
        mut results: admin::DropTableResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let name = text(params.get()?.get_name()?)?;
        manifest::validate_name("table", &name).map_err(engine_error)?;
        let data_dir = self.connection.data_dir().to_owned();
        let tenant = self.tenant.clone();
        let dropped = blocking(&self.connection.shared, move || {
            manifest::drop_table(&data_dir, &tenant, &name)
        })
        .await?
        .map_err(engine_error)?;
        let existed = dropped.is_some();
        if let Some(manifest) = dropped {
            self.connection.context.forget_tables(&[manifest]).await;
        }
        results.get().set_existed(existed);
        Ok(())
    }

    async fn list_tables(
        self: Rc<Self>,
        _: admin::ListTablesParams,
        mut results: admin::ListTablesResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let manifests = load_tables(self.connection.data_dir(), &self.tenant)?;
        let mut list = results.get().init_tables(manifests.len() as u32);
        for (i, manifest) in manifests.iter().enumerate() {
            write_table_info(list.reborrow().get(i as u32), manifest);
        }
        Ok(())
    }
}

struct OperatorServer {
    connection: Rc<Connection>,
    identity: Identity,
}

impl OperatorServer {
    fn tenant_dir(&self, name: &str) -> Result<std::path::PathBuf, Error> {
        check_expiry(&self.identity)?;
        manifest::validate_name("tenant", name).map_err(engine_error)?;
        Ok(self.connection.data_dir().join(name))
    }
}

impl operator::Server for OperatorServer {
    async fn create_tenant(
        self: Rc<Self>,
        params: operator::CreateTenantParams,
        mut results: operator::CreateTenantResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let dir = self.tenant_dir(&text(params.get()?.get_name()?)?)?;
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)
            .map_err(|e| error("io", format!("{}: {e}", dir.display())))?;
        results.get().set_created(created);
        Ok(())
    }

    async fn drop_tenant(
        self: Rc<Self>,
        params: operator::DropTenantParams,
        mut results: operator::DropTenantResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        let name = text(params.get()?.get_name()?)?;
        self.tenant_dir(&name)?;
        let data_dir = self.connection.data_dir().to_owned();
        let dropped = blocking(&self.connection.shared, move || {
            manifest::drop_tenant(&data_dir, &name)
        })
        .await?
        .map_err(engine_error)?;
        let existed = dropped.is_some();
        if let Some(manifests) = dropped {
            self.connection.context.forget_tables(&manifests).await;
        }
        results.get().set_existed(existed);
        Ok(())
    }

    async fn list_tenants(
        self: Rc<Self>,
        _: operator::ListTenantsParams,
        mut results: operator::ListTenantsResults,
    ) -> Result<(), Error> {
        let _guard = self.connection.enter()?;
        check_expiry(&self.identity)?;
        let data_dir = self.connection.data_dir();
        let mut tenants: Vec<String> = std::fs::read_dir(data_dir)
            .map_err(|e| error("io", format!("{}: {e}", data_dir.display())))?
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .filter(|name| manifest::validate_name("tenant", name).is_ok())
            .collect();
        tenants.sort();
        let mut list = results.get().init_tenants(tenants.len() as u32);
        for (i, tenant) in tenants.iter().enumerate() {
            list.set(i as u32, tenant);
        }
        Ok(())
    }

    async fn nodes(
        self: Rc<Self>,
        _: operator::NodesParams,
        mut results: operator::NodesResults,
    ) -> Result<(), Error> {
        check_expiry(&self.identity)?;
        let shared = &self.connection.shared;
        let mut node = results.get().init_nodes(1).get(0);
        node.set_address(shared.address.to_string());
        node.set_cores(shared.cores as u32);
        node.set_version(env!("CARGO_PKG_VERSION"));
        node.set_uptime_seconds(shared.started.elapsed().as_secs());
        node.set_queries_running(shared.queries_running.load(Ordering::Relaxed) as u32);
        node.set_connections(shared.connections.load(Ordering::Relaxed) as u32);
        Ok(())
    }
}
