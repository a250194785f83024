//! The capability objects a connection serves: `Gateway` (bootstrap), `Tenant` (bound at login to
//! the tenant and role of a verified token), `Admin`, `Operator` and `ImportStream`. Everything a
//! method may touch is reached through the identity its object holds; no method reads a tenant
//! name from its parameters.

use crate::auth::{self, Identity, Role};
use crate::cluster::Origin;
use crate::codes::{self, ErrorCode};
use crate::ipc_frames::{Decoded, IpcStreamReader};
use crate::node::Shared;
use crate::stats::QueryStats;
use arrow_array::RecordBatch;
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
    admin, batch_sink, gateway, import_stream, operator, table_info, tenant,
    Compression as WireCompression, Role as WireRole,
};
use tessera_storage_engine::engine::{BatchSink, CoreContext};
use tessera_storage_engine::io::runtime;
use tessera_storage_engine::query::sql::{self, Statement};
use tessera_storage_engine::table::manifest::{
    self, ColumnDef, Compression, PartitionSpec, TableManifest, WriterSettings,
};
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::value::ColumnType;

mod admin_server;
mod gateway_server;
mod import_server;
mod ingest_server;
mod operator_server;
mod partitioned;
mod replica_server;
mod replicated_import;
mod tenant_server;

use admin_server::AdminServer;
pub use gateway_server::gateway;
use import_server::ImportStreamServer;
use ingest_server::IngestStreamServer;
use operator_server::OperatorServer;
use replica_server::{ImportReplicaServer, ReplicaInstallerServer};
use tenant_server::TenantServer;

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

/// A peer's error passed on as it gave it (its code kept); a peer that could not be reached
/// (no code) is `unavailable`, as `unreachable` describes it.
fn passed_on(
    e: crate::client::ClientError,
    unreachable: impl FnOnce(&crate::client::ClientError) -> String,
) -> Error {
    match e.error_code() {
        // `code: message`, as the peer wrote it.
        Some(_) => Error::failed(e.to_string()),
        None => error("unavailable", unreachable(&e)),
    }
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
    /// When bytes last arrived on the connection: a call's arrival, for its queue time.
    last_read: Rc<Cell<Instant>>,
}

impl Connection {
    pub fn new(
        context: CoreContext,
        shared: Arc<Shared>,
        last_read: Rc<Cell<Instant>>,
    ) -> Connection {
        Connection {
            context,
            shared,
            in_flight: Cell::new(0),
            last_read,
        }
    }

    /// When the call being handled arrived: the last read of the connection, which delivered
    /// its message (or a later one) — no later than now.
    fn arrival(&self) -> Instant {
        self.last_read.get().min(Instant::now())
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

    /// Refuses new queries and writes once the node is stopping (`Shared::draining`).
    fn check_serving(&self) -> Result<(), Error> {
        if self.shared.draining() {
            return Err(error(
                "unavailable",
                "the node is stopping and takes no new queries or writes; retry on another node or once it is back",
            ));
        }
        Ok(())
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

/// Takes a query slot of `class` for `tenant` (`admission`); `overloaded` when its queue is
/// full or no slot frees within `admission_wait`. The running and waiting gauges follow.
async fn admit(
    shared: &Arc<Shared>,
    class: runtime::TaskClass,
    tenant: &str,
) -> Result<QuerySlot, Error> {
    let metrics = &shared.metrics;
    metrics.queries_waiting.inc();
    let admitted = shared.admission.admit(class, tenant).await;
    metrics.queries_waiting.dec();
    match admitted {
        Ok(slot) => {
            metrics.queries_running.inc();
            metrics
                .tenant_queries_running
                .get_or_create(&tenant_labels(tenant))
                .inc();
            Ok(QuerySlot {
                _slot: slot,
                shared: shared.clone(),
                tenant: tenant.to_owned(),
            })
        }
        Err(refusal) => {
            metrics.queries_rejected_overloaded.inc();
            if let crate::admission::Refusal::TimedOut {
                tenant_limit: Some(_),
                ..
            } = &refusal
            {
                shared.quotas.refused(tenant, "concurrent_queries");
            }
            Err(Error::overloaded(format!("overloaded: {refusal}")))
        }
    }
}

fn tenant_labels(tenant: &str) -> crate::metrics::Labels {
    vec![("tenant".to_owned(), tenant.to_owned())]
}

/// A running query's slot, released on drop.
struct QuerySlot {
    _slot: crate::admission::Slot,
    shared: Arc<Shared>,
    tenant: String,
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.queries_running.dec();
        metrics
            .tenant_queries_running
            .get_or_create(&tenant_labels(&self.tenant))
            .dec();
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

/// Drops `value` (an import's writer: its staging directory goes) on a blocking thread when one
/// is free, else here.
fn drop_blocking<T: Send + 'static>(shared: &Arc<Shared>, value: T) {
    if let Some(slot) = BlockingSlot::try_acquire(shared) {
        let _ = std::thread::Builder::new()
            .name("tessera-blocking".into())
            .spawn(move || {
                drop(value);
                drop(slot);
            });
    }
}

fn wire_role(role: Role) -> WireRole {
    match role {
        Role::Reader => WireRole::Reader,
        Role::Writer => WireRole::Writer,
        Role::Admin => WireRole::Admin,
        Role::Operator => WireRole::Operator,
        Role::Node => WireRole::Node,
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

/// Loads a table's manifest off the core.
async fn load_table(
    data_dir: &std::path::Path,
    tenant: &str,
    table: &str,
) -> Result<TableManifest, Error> {
    let (data_dir, tenant, name) = (data_dir.to_owned(), tenant.to_owned(), table.to_owned());
    runtime::spawn_blocking(move || manifest::load(&data_dir, &tenant, &name))
        .await
        .map_err(engine_error)?
        .ok_or_else(|| error("not_found", format!("no table {table}")))
}

/// Loads every table's manifest of a tenant off the core.
async fn load_tables(
    data_dir: &std::path::Path,
    tenant: &str,
) -> Result<Vec<TableManifest>, Error> {
    let (data_dir, tenant) = (data_dir.to_owned(), tenant.to_owned());
    runtime::spawn_blocking(move || {
        let names = manifest::list_tables(&data_dir, &tenant)?;
        let mut manifests = Vec::with_capacity(names.len());
        for name in names {
            // A table dropped between listing and loading is simply not listed.
            if let Some(manifest) = manifest::load(&data_dir, &tenant, &name)? {
                manifests.push(manifest);
            }
        }
        Ok(manifests)
    })
    .await
    .map_err(engine_error)
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

/// A table's description as a peer gave it.
fn write_peer_table_info(mut out: table_info::Builder<'_>, info: &crate::client::TableInfo) {
    out.set_name(&info.name);
    let mut columns = out.reborrow().init_columns(info.columns.len() as u32);
    for (i, column) in info.columns.iter().enumerate() {
        let mut c = columns.reborrow().get(i as u32);
        c.set_name(&column.name);
        c.set_type(&column.column_type);
        c.set_nullable(column.nullable);
    }
    out.set_time_column(info.time_column.as_deref().unwrap_or(""));
    let mut partition = out
        .reborrow()
        .init_partition_by(info.partition_by.len() as u32);
    for (i, column) in info.partition_by.iter().enumerate() {
        partition.set(i as u32, column);
    }
    out.set_compression(match info.compression {
        crate::client::Compression::Snappy => WireCompression::Snappy,
        crate::client::Compression::Zstd => WireCompression::Zstd,
        crate::client::Compression::None => WireCompression::None,
    });
    out.set_rows(info.rows);
    out.set_files(info.files);
    out.set_bytes(info.bytes);
    out.set_version(info.version);
}
