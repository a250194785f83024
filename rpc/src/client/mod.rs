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
use crate::ipc_frames::{Decoded, IpcStreamReader};
pub use crate::stats::QueryStats;
use arrow_array::RecordBatch;
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
    admin, batch_sink, gateway, import_replica, import_stream, ingest_stream, operator,
    replica_installer, table_info, tenant, Compression as WireCompression, Role as WireRole,
};

mod ingest;
mod operator_session;
mod replica;
mod session;
mod stream;

pub use ingest::{IngestAck, IngestStream};
pub use operator_session::{MemoryArea, NodeStatus, OperatorSession, TableSize, TenantQuota};
pub use replica::{ImportStager, ReplicaInstaller};
pub use session::{
    ColumnInfo, Compression, DroppedPartitions, ImportSummary, ImportWriter, QueryOutput, Session,
    TableInfo, TableSpec,
};
use stream::result_stream;
pub use stream::QueryStream;

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
    ingests: RefCell<HashMap<u64, ingest_stream::Client>>,
    installers: RefCell<HashMap<u64, replica_installer::Client>>,
    stagers: RefCell<HashMap<u64, import_replica::Client>>,
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

    fn ingest(&self, id: u64) -> Result<ingest_stream::Client, ClientError> {
        self.ingests
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| ClientError::Disconnected("ingest stream closed".into()))
    }

    fn installer(&self, id: u64) -> Result<replica_installer::Client, ClientError> {
        self.installers
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| ClientError::Disconnected("replica installer closed".into()))
    }

    fn stager(&self, id: u64) -> Result<import_replica::Client, ClientError> {
        self.stagers
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| ClientError::Disconnected("import stager closed".into()))
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
    /// The connection's thread, joined when the last clone goes: it closes the connection
    /// gracefully first, so replies it still owes the server (a result's `done`) are sent
    /// even when the process exits right after.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.close_channel();
        if let Some(thread) = self.thread.take() {
            // Never from the connection's own thread (it would wait for itself).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
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
        let thread = std::thread::Builder::new()
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
            inner: Arc::new(Inner {
                jobs,
                thread: Some(thread),
            }),
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

    /// For cluster members: presents a node token and acts for `tenant` (role admin) on a peer
    /// (`Gateway.peerLogin`): as the leader replicating to it (`forwarded` false: writes apply
    /// on that node only), or forwarding a client's writes to it as the table's leader.
    pub async fn peer_login(
        &self,
        token: &str,
        tenant: &str,
        forwarded: bool,
    ) -> Result<Session, ClientError> {
        let (token, tenant) = (token.to_owned(), tenant.to_owned());
        let id = self
            .run(move |connection| async move {
                let mut request = connection.gateway.peer_login_request();
                request.get().set_token(&token);
                request.get().set_tenant(&tenant);
                request.get().set_mode(if forwarded {
                    tessera_schema::tessera_capnp::PeerMode::Forwarded
                } else {
                    tessera_schema::tessera_capnp::PeerMode::Replica
                });
                let response = request.send().promise.await?;
                let id = connection.next_id.get();
                connection.next_id.set(id + 1);
                connection
                    .tenants
                    .borrow_mut()
                    .insert(id, response.get()?.get_tenant()?);
                Ok(id)
            })
            .await?;
        Ok(Session {
            client: self.clone(),
            id,
            role: Role::Admin,
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
            ingests: RefCell::default(),
            installers: RefCell::default(),
            stagers: RefCell::default(),
            next_id: Cell::new(1),
        });
        let disconnector = rpc.get_disconnector();
        tokio::task::spawn_local(rpc);
        let _ = ready.send(Ok(()));
        while let Some(job) = jobs.next().await {
            tokio::task::spawn_local(job(connection.clone()));
        }
        // Every handle is gone: let the RPC system send what it owes (replies to the server's
        // calls on our sinks), then close, bounded in case the server stopped reading.
        drop(connection);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), disconnector).await;
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

fn text(reader: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, ClientError> {
    reader?.to_string().map_err(data_error)
}

fn role_from_wire(role: WireRole) -> Role {
    match role {
        WireRole::Reader => Role::Reader,
        WireRole::Writer => Role::Writer,
        WireRole::Admin => Role::Admin,
        WireRole::Operator => Role::Operator,
        WireRole::Node => Role::Node,
    }
}
