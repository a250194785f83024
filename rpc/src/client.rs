//! The Rust client library. A `Client` owns one connection, driven by a small thread of its own
//! (a single-threaded tokio runtime running the Cap'n Proto RPC system); every method hands that
//! thread a job and awaits its answer on a channel. So the futures returned here are plain
//! channel futures: they work under tokio, glommio, `futures::executor::block_on` or anything
//! else, and `Client` is `Send + Sync` and cheap to clone.
//!
//! ```no_run
//! # async fn example() -> Result<(), tessera_rpc::client::ClientError> {
//! use futures::StreamExt;
//! let client = tessera_rpc::Client::connect("127.0.0.1:7070").await?;
//! let session = client.login("eyJ...").await?;
//! let mut stream = session.query("SELECT COUNT(*) FROM events").await?;
//! while let Some(batch) = stream.next().await {
//!     println!("{} rows", batch?.num_rows());
//! }
//! println!("{:?}", stream.stats());
//! # Ok(()) }
//! ```

use crate::auth::Role;
use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::SchemaRef;
use capnp_rpc::{rpc_twoparty_capnp::Side, twoparty, RpcSystem};
use futures::channel::{mpsc, oneshot};
use futures::future::LocalBoxFuture;
use futures::{Stream, StreamExt};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tessera_schema::tessera_capnp::{
    admin, batch_sink, gateway, import_stream, operator, query_stats, table_info, tenant,
    Compression as WireCompression, Role as WireRole,
};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    /// The server refused or failed the call; `code` is the schema's error code (`sql`,
    /// `unauthenticated`, `permission`, `not_found`, `overloaded`, ...).
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    #[error("connection closed: {0}")]
    Disconnected(String),
    #[error("bad result data: {0}")]
    Data(String),
}

impl ClientError {
    /// The schema's code of a server error (`None` for connection and data errors): compare
    /// this instead of matching message text.
    pub fn error_code(&self) -> Option<crate::codes::ErrorCode> {
        match self {
            ClientError::Server { code, .. } => crate::codes::parse(code),
            _ => None,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ClientError::Server { code, .. } => code,
            ClientError::Connect { .. } => "connect",
            ClientError::Disconnected(_) => "disconnected",
            ClientError::Data(_) => "data",
        }
    }
}

impl From<capnp::Error> for ClientError {
    fn from(error: capnp::Error) -> Self {
        if error.kind == capnp::ErrorKind::Disconnected {
            return ClientError::Disconnected(error.extra);
        }
        let text = error
            .extra
            .strip_prefix("remote exception: ")
            .unwrap_or(&error.extra);
        if text.contains("which is too large") {
            // The RPC layer refused a message over its size limit and closed the connection.
            return ClientError::Server {
                code: "limit".into(),
                message: text.to_owned(),
            };
        }
        match text.split_once(": ") {
            Some((code, message)) if crate::codes::parse(code).is_some() => ClientError::Server {
                code: code.to_owned(),
                message: message.to_owned(),
            },
            _ => ClientError::Server {
                code: "internal".into(),
                message: text.to_owned(),
            },
        }
    }
}

impl From<capnp::NotInSchema> for ClientError {
    fn from(error: capnp::NotInSchema) -> Self {
        ClientError::Data(format!(
            "the server sent an enum value this client does not know ({error}); upgrade the client"
        ))
    }
}

fn data_error(e: impl std::fmt::Display) -> ClientError {
    ClientError::Data(e.to_string())
}

type Job = Box<dyn FnOnce(Rc<Connection>) -> LocalBoxFuture<'static, ()> + Send>;

/// The connection's state on its driver thread.
struct Connection {
    gateway: gateway::Client,
    tenants: RefCell<HashMap<u64, tenant::Client>>,
    operators: RefCell<HashMap<u64, operator::Client>>,
    imports: RefCell<HashMap<u64, import_stream::Client>>,
    next_id: Cell<u64>,
}

impl Connection {
    fn import(&self, id: u64) -> Result<import_stream::Client, ClientError> {
        self.imports
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| ClientError::Disconnected("import closed".into()))
    }

    fn tenant(&self, id: u64) -> Result<tenant::Client, ClientError> {
        self.tenants
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| ClientError::Disconnected("session closed".into()))
    }
}

struct Inner {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A connection to a Tessera node. Clones share the connection; it closes when the last clone
/// (and every session made from it) is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// How to connect: plain TCP by default, or TLS.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// PEM CA certificates to trust; set, the connection uses TLS.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// The name the server's certificate must carry (default: the host part of the address).
    pub tls_server_name: Option<String>,
}

impl Client {
    /// Connects to `address` (`host:port`) over plain TCP.
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Client::connect_with(address, ConnectOptions::default()).await
    }

    /// Connects to `address` with `options` (TLS).
    pub async fn connect_with(
        address: &str,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let (jobs, receiver) = mpsc::unbounded::<Job>();
        let (ready, connected) = oneshot::channel::<Result<(), ClientError>>();
        let target = address.to_owned();
        std::thread::Builder::new()
            .name("tessera-client".into())
            .spawn(move || drive(target, options, receiver, ready))
            .map_err(|e| ClientError::Connect {
                address: address.to_owned(),
                message: e.to_string(),
            })?;
        connected.await.map_err(|_| ClientError::Connect {
            address: address.to_owned(),
            message: "the connection thread stopped".into(),
        })??;
        Ok(Client {
            inner: Arc::new(Inner { jobs }),
        })
    }

    /// Runs `job` on the connection's thread and returns its answer.
    async fn run<T, F, Fut>(&self, job: F) -> Result<T, ClientError>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Connection>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, ClientError>> + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            Box::pin(async move {
                let _ = sender.send(job(connection).await);
            })
        });
        self.inner
            .jobs
            .unbounded_send(job)
            .map_err(|_| ClientError::Disconnected("the connection has closed".into()))?;
        receiver
            .await
            .map_err(|_| ClientError::Disconnected("the connection has closed".into()))?
    }

    /// The server's protocol version and software version.
    pub async fn version(&self) -> Result<(u32, String), ClientError> {
        self.run(|connection| async move {
            let response = connection.gateway.version_request().send().promise.await?;
            let response = response.get()?;
            Ok((
                response.get_protocol(),
                response.get_server()?.to_string().map_err(data_error)?,
            ))
        })
        .await
    }

    /// Presents a token; the session is bound to the token's tenant and role.
    pub async fn login(&self, token: &str) -> Result<Session, ClientError> {
        let token = token.to_owned();
        let (id, role) = self
            .run(|connection| async move {
                let mut request = connection.gateway.login_request();
                request.get().set_token(&token);
                let response = request.send().promise.await?;
                let response = response.get()?;
                let role = role_from_wire(response.get_role()?);
                let id = connection.next_id.get();
                connection.next_id.set(id + 1);
                connection
                    .tenants
                    .borrow_mut()
                    .insert(id, response.get_tenant()?);
                Ok((id, role))
            })
            .await?;
        Ok(Session {
            client: self.clone(),
            id,
            role,
            next_tag: Arc::new(AtomicUsize::new(1)),
        })
    }

    /// Presents an operator token.
    pub async fn operator_login(&self, token: &str) -> Result<OperatorSession, ClientError> {
        let token = token.to_owned();
        let id = self
            .run(|connection| async move {
                let mut request = connection.gateway.operator_login_request();
                request.get().set_token(&token);
                let response = request.send().promise.await?;
                let id = connection.next_id.get();
                connection.next_id.set(id + 1);
                connection
                    .operators
                    .borrow_mut()
                    .insert(id, response.get()?.get_operator()?);
                Ok(id)
            })
            .await?;
        Ok(OperatorSession {
            client: self.clone(),
            id,
        })
    }
}

/// The connection thread: connects, runs the RPC system, and runs jobs until every `Client` and
/// session is gone.
fn drive(
    address: String,
    options: ConnectOptions,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ready: oneshot::Sender<Result<(), ClientError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(ClientError::Connect {
                address,
                message: format!("cannot start the client runtime: {e}"),
            }));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let stream = match tokio::net::TcpStream::connect(&address).await {
            Ok(stream) => stream,
            Err(e) => {
                let _ = ready.send(Err(ClientError::Connect {
                    address,
                    message: e.to_string(),
                }));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (reader, writer) = match connect_stream(&address, &options, stream).await {
            Ok(halves) => halves,
            Err(message) => {
                let _ = ready.send(Err(ClientError::Connect { address, message }));
                return;
            }
        };
        let mut reader_options = capnp::message::ReaderOptions::new();
        // Results arrive in pushes of about a megabyte; this is only a guard.
        reader_options.traversal_limit_in_words(Some(64 << 20));
        let network = twoparty::VatNetwork::new(
            futures::io::BufReader::with_capacity(64 << 10, reader),
            futures::io::BufWriter::with_capacity(64 << 10, writer),
            Side::Client,
            reader_options,
        );
        let mut rpc = RpcSystem::new(Box::new(network), None);
        let gateway: gateway::Client = rpc.bootstrap(Side::Server);
        let connection = Rc::new(Connection {
            gateway,
            tenants: RefCell::default(),
            operators: RefCell::default(),
            imports: RefCell::default(),
            next_id: Cell::new(1),
        });
        tokio::task::spawn_local(rpc);
        let _ = ready.send(Ok(()));
        while let Some(job) = jobs.next().await {
            tokio::task::spawn_local(job(connection.clone()));
        }
    });
}

type ReadHalf = Box<dyn futures::io::AsyncRead + Unpin>;
type WriteHalf = Box<dyn futures::io::AsyncWrite + Unpin>;

/// The connection's byte streams: the TCP stream itself, or TLS over it.
async fn connect_stream(
    address: &str,
    options: &ConnectOptions,
    stream: tokio::net::TcpStream,
) -> Result<(ReadHalf, WriteHalf), String> {
    use futures::io::AsyncReadExt;
    use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};
    let Some(ca_pem) = &options.tls_ca_pem else {
        let (reader, writer) = stream.into_split();
        return Ok((Box::new(reader.compat()), Box::new(writer.compat_write())));
    };
    let config = crate::tls::client_config(ca_pem)?;
    let host = match &options.tls_server_name {
        Some(name) => name.clone(),
        None => address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned(),
    };
    let name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(name, stream.compat())
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (reader, writer) = tls.split();
    Ok((Box::new(reader), Box::new(writer)))
}

fn role_from_wire(role: WireRole) -> Role {
    match role {
        WireRole::Reader => Role::Reader,
        WireRole::Writer => Role::Writer,
        WireRole::Admin => Role::Admin,
        WireRole::Operator => Role::Operator,
    }
}

/// Counters of one query, as the server measured them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    pub rows_returned: u64,
    pub rows_scanned: u64,
    /// Bytes read from disk (a warm query reads none).
    pub bytes_read: u64,
    /// Decoded bytes of the pages scanned, from the buffer pool or the disk.
    pub bytes_scanned: u64,
    pub files_total: u64,
    pub files_pruned: u64,
    pub row_groups_total: u64,
    pub row_groups_pruned: u64,
    pub pages_total: u64,
    pub pages_pruned: u64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub elapsed_micros: u64,
    pub batches: u64,
    pub ipc_bytes: u64,
    pub queued_micros: u64,
}

impl QueryStats {
    fn read(stats: query_stats::Reader<'_>) -> QueryStats {
        QueryStats {
            rows_returned: stats.get_rows_returned(),
            rows_scanned: stats.get_rows_scanned(),
            bytes_read: stats.get_bytes_read(),
            bytes_scanned: stats.get_bytes_scanned(),
            files_total: stats.get_files_total(),
            files_pruned: stats.get_files_pruned(),
            row_groups_total: stats.get_row_groups_total(),
            row_groups_pruned: stats.get_row_groups_pruned(),
            pages_total: stats.get_pages_total(),
            pages_pruned: stats.get_pages_pruned(),
            pool_hits: stats.get_pool_hits(),
            pool_misses: stats.get_pool_misses(),
            elapsed_micros: stats.get_elapsed_micros(),
            batches: stats.get_batches(),
            ipc_bytes: stats.get_ipc_bytes(),
            queued_micros: stats.get_queued_micros(),
        }
    }
}

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

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, ClientError> {
    reader?.to_string().map_err(data_error)
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
    client: Client,
    id: u64,
    role: Role,
    next_tag: Arc<AtomicUsize>,
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

/// Bytes of decoded result a query stream buffers ahead of its reader before the server waits.
const STREAM_BUFFER_BYTES: usize = 16 << 20;

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
        let sql = sql.to_owned();
        let id = self.id;
        let flow = Arc::new(Flow::default());
        let (items, receiver) = mpsc::unbounded();
        let sink_flow = flow.clone();
        self.client
            .run(move |connection| async move {
                let tenant = connection.tenant(id)?;
                let sink: batch_sink::Client = capnp_rpc::new_client(SinkServer {
                    decoder: RefCell::new(StreamDecoder::new()),
                    pending: RefCell::new(arrow_buffer::Buffer::from_vec(Vec::<u8>::new())),
                    items: items.clone(),
                    flow: sink_flow,
                    schema_sent: Cell::new(false),
                });
                let mut request = tenant.query_request();
                request.get().set_sql(&sql);
                request.get().set_sink(sink);
                request.get().set_tag(tag);
                let promise = request.send().promise;
                // Success ends the stream at the sink's `done`, which arrives after every push
                // (calls on one capability are delivered in order); the call's own return may be
                // processed before the last pushes are, so it only reports failures.
                tokio::task::spawn_local(async move {
                    if let Err(e) = promise.await {
                        let _ = items.unbounded_send(Item::Failed(e.into()));
                    }
                });
                Ok(())
            })
            .await?;
        Ok(QueryStream {
            items: receiver,
            flow,
            schema: None,
            stats: None,
            finished: false,
        })
    }

    /// Runs a query and collects its whole result.
    pub async fn query_collect(&self, sql: &str) -> Result<QueryOutput, ClientError> {
        let mut stream = self.query(sql).await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        let schema = stream
            .schema()
            .ok_or_else(|| data_error("the result carried no schema"))?;
        let stats = stream.stats().cloned().unwrap_or_default();
        Ok(QueryOutput {
            schema,
            batches,
            stats,
        })
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
        let (sql, id) = (sql.to_owned(), self.id);
        self.client
            .run(move |connection| async move {
                let mut request = connection.tenant(id)?.explain_request();
                request.get().set_sql(&sql);
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

    /// Publishes everything written; returns what was committed.
    pub async fn commit(mut self) -> Result<ImportSummary, ClientError> {
        if let Some(mut writer) = self.writer.take() {
            writer.finish().map_err(data_error)?;
            let tail = std::mem::take(writer.get_mut());
            self.send(tail).await?;
        }
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

/// An operator login: tenants and nodes, never any tenant's rows.
pub struct OperatorSession {
    client: Client,
    id: u64,
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

enum Item {
    Schema(SchemaRef),
    Batch(RecordBatch, usize),
    Done(QueryStats),
    Failed(ClientError),
}

/// Bytes decoded but not yet taken by the reader, and a way to wake the sink when it drops.
#[derive(Default)]
struct Flow {
    buffered: AtomicUsize,
    room: tokio::sync::Notify,
}

/// The client side of `BatchSink`: decodes pushes in arrival order and waits while the reader
/// is more than `STREAM_BUFFER_BYTES` behind, which holds back the server through flow control.
struct SinkServer {
    decoder: RefCell<StreamDecoder>,
    pending: RefCell<arrow_buffer::Buffer>,
    items: mpsc::UnboundedSender<Item>,
    flow: Arc<Flow>,
    schema_sent: Cell<bool>,
}

impl SinkServer {
    fn decode(&self, params: &batch_sink::PushParams) -> Result<(), capnp::Error> {
        let bytes = params.get()?.get_ipc()?;
        let mut pending = self.pending.borrow_mut();
        let mut buffer = arrow_buffer::Buffer::from([pending.as_slice(), bytes].concat());
        let mut decoder = self.decoder.borrow_mut();
        let gone = || capnp::Error::failed("cancelled: the reader dropped the result".into());
        while !buffer.is_empty() {
            let before = buffer.len();
            let decoded = decoder
                .decode(&mut buffer)
                .map_err(|e| capnp::Error::failed(format!("invalid: bad Arrow IPC data: {e}")))?;
            if !self.schema_sent.get() {
                if let Some(schema) = decoder.schema() {
                    self.schema_sent.set(true);
                    self.items
                        .unbounded_send(Item::Schema(schema))
                        .map_err(|_| gone())?;
                }
            }
            match decoded {
                Some(batch) => {
                    let size = batch.get_array_memory_size();
                    self.flow.buffered.fetch_add(size, Ordering::AcqRel);
                    self.items
                        .unbounded_send(Item::Batch(batch, size))
                        .map_err(|_| gone())?;
                }
                None if buffer.len() == before => break,
                None => {}
            }
        }
        *pending = buffer;
        Ok(())
    }
}

impl batch_sink::Server for SinkServer {
    fn push(
        self: Rc<Self>,
        params: batch_sink::PushParams,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        // Decoding happens at dispatch, so batches keep the order the server sent them in.
        let decoded = self.decode(&params);
        async move {
            decoded?;
            loop {
                let notified = self.flow.room.notified();
                let mut notified = std::pin::pin!(notified);
                // Registered before the check, so a wake-up between the two is not lost.
                notified.as_mut().enable();
                if self.items.is_closed() {
                    return Err(capnp::Error::failed(
                        "cancelled: the reader dropped the result".into(),
                    ));
                }
                if self.flow.buffered.load(Ordering::Acquire) <= STREAM_BUFFER_BYTES {
                    return Ok(());
                }
                notified.await;
            }
        }
    }

    fn done(
        self: Rc<Self>,
        params: batch_sink::DoneParams,
        _: batch_sink::DoneResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        // Handled at dispatch, like `push`, so it follows every batch into the channel.
        let stats = params
            .get()
            .and_then(|p| p.get_stats())
            .map(QueryStats::read);
        let item = match stats {
            Ok(stats) => Item::Done(stats),
            Err(e) => Item::Failed(e.into()),
        };
        let _ = self.items.unbounded_send(item);
        std::future::ready(Ok(()))
    }
}

/// The batches of one result, in order. Ends after the last batch; then `stats` is set.
pub struct QueryStream {
    items: mpsc::UnboundedReceiver<Item>,
    flow: Arc<Flow>,
    schema: Option<SchemaRef>,
    stats: Option<QueryStats>,
    finished: bool,
}

impl QueryStream {
    /// The result's schema, once the first message has arrived.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    /// The server's counters, once the stream has ended successfully.
    pub fn stats(&self) -> Option<&QueryStats> {
        self.stats.as_ref()
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match self.items.poll_next_unpin(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(ClientError::Disconnected(
                        "the connection closed during the query".into(),
                    ))));
                }
                Poll::Ready(Some(Item::Schema(schema))) => self.schema = Some(schema),
                Poll::Ready(Some(Item::Batch(batch, size))) => {
                    self.flow.buffered.fetch_sub(size, Ordering::AcqRel);
                    self.flow.room.notify_waiters();
                    return Poll::Ready(Some(Ok(batch)));
                }
                Poll::Ready(Some(Item::Done(stats))) => {
                    self.stats = Some(stats);
                    self.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Item::Failed(error))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // Wake a sink waiting for room so it sees the reader is gone and fails the push.
        self.items.close();
        self.flow.buffered.store(0, Ordering::Release);
        self.flow.room.notify_waiters();
    }
}
