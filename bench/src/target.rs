//! Where a query or ingest job sends its work: an engine in this process (`target=embedded`),
//! a Cap'n Proto server the harness starts in this process over the same data on loopback
//! (`target=server`: real TCP and the real client, and the harness can still empty the pool),
//! or a running node (`target=HOST:PORT` with `token=`).

use crate::job::{Job, JobError};
use arrow_array::RecordBatch;
use std::path::PathBuf;
use std::time::Duration;
use tessera_rpc::auth::{self, AuthConfig, KeyKind, KeySpec, Role, TokenRequest};
use tessera_rpc::client::{ColumnInfo, Session, TableSpec};
use tessera_rpc::{Client, Limits, Server, ServerConfig};
use tessera_storage_engine::gen::{events_chunk, events_schema, CHUNK_ROWS};
use tessera_storage_engine::table::manifest;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::value::engine_type;
use tessera_storage_engine::{Engine, EngineConfig};

/// A failed operation: an error code (the server's, or `engine`) and the message.
pub type OpError = (String, String);

pub enum Target {
    Embedded {
        engine: Engine,
        tenant: String,
    },
    Remote {
        address: String,
        token: String,
        /// The server this harness started (`target=server`), kept alive for the job.
        server: Option<Server>,
        /// The job's tenant (for `target=server`, the one the harness's token is scoped to).
        tenant: String,
        /// The started server's key, to mint tokens for other tenants (`target=server`).
        secret: Option<Vec<u8>>,
    },
}

/// Engine settings from a job: `data`, `cores`, `pool` (buffer pool bytes), `partial_cache`
/// (partial-result cache bytes, 0 turns it off), `split_file_rows`, `time_slice_us`.
fn engine_config(job: &Job) -> Result<EngineConfig, JobError> {
    let data = PathBuf::from(job.required("data")?);
    std::fs::create_dir_all(&data)
        .map_err(|e| job.invalid("data", format!("cannot create {}: {e}", data.display())))?;
    let mut config = EngineConfig::new(data);
    if let Some(cores) = job.size("cores")? {
        if cores == 0 || cores > config.cores as u64 {
            return Err(job.invalid(
                "cores",
                format!("cores={cores}: this machine has {}", config.cores),
            ));
        }
        config.cores = cores as usize;
    }
    config.buffer_pool_bytes = job.size_or("pool", config.buffer_pool_bytes)?;
    config.partial_cache_bytes = job.size_or("partial_cache", config.partial_cache_bytes)?;
    config.split_file_rows = job.size_or("split_file_rows", config.split_file_rows)?;
    if let Some(us) = job.size("time_slice_us")? {
        config.time_slice = Duration::from_micros(us.max(1));
    }
    Ok(config)
}

fn random_secret() -> Vec<u8> {
    use std::io::Read;
    let mut secret = vec![0u8; 32];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret)) {
        Ok(()) => secret,
        // The secret only guards a loopback server that lives for one job.
        Err(_) => format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).into_bytes(),
    }
}

impl Target {
    /// Opens the job's target; `users` sizes the started server's admission limit.
    pub fn open(job: &Job, users: usize) -> Result<Target, JobError> {
        let tenant = job.str_or("tenant", "bench").to_owned();
        match job.str_or("target", "embedded") {
            "embedded" => {
                let config = engine_config(job)?;
                let engine =
                    Engine::open(config).map_err(|e| job.invalid("data", e.to_string()))?;
                Ok(Target::Embedded { engine, tenant })
            }
            "server" => {
                // `redis_url=`: the server shares results through that Redis.
                let result_cache =
                    match job.str("redis_url") {
                        None => None,
                        Some("") => return Err(job.invalid(
                            "redis_url",
                            "is empty: give a redis:// URL (TESSERA_BENCH_REDIS in load-waves.fio)",
                        )),
                        Some(url) => Some(tessera_rpc::ResultCacheConfig::new(url)),
                    };
                let engine = Engine::open(engine_config(job)?)
                    .map_err(|e| job.invalid("data", e.to_string()))?;
                let secret = random_secret();
                let server = Server::start(
                    engine,
                    ServerConfig {
                        listen: "127.0.0.1:0".parse().expect("a valid socket address"),
                        http: None,
                        auth: AuthConfig::new(vec![KeySpec {
                            id: None,
                            kind: KeyKind::Hs256,
                            material: secret.clone(),
                        }]),
                        limits: Limits {
                            concurrent_queries: users.max(Limits::default().concurrent_queries),
                            ..Limits::default()
                        },
                        max_memory_bytes: 16 << 30,
                        tls: None,
                        result_cache,
                        cluster: None,
                    },
                )
                .map_err(|e| job.invalid("target", format!("cannot start a server: {e}")))?;
                let token = admin_token(&secret, &tenant).map_err(|e| job.invalid("target", e))?;
                Ok(Target::Remote {
                    address: server.address().to_string(),
                    token,
                    server: Some(server),
                    tenant,
                    secret: Some(secret),
                })
            }
            address => {
                if address.parse::<std::net::SocketAddr>().is_err() && !address.contains(':') {
                    return Err(job.invalid(
                        "target",
                        format!("target '{address}' is not embedded, server or HOST:PORT"),
                    ));
                }
                Ok(Target::Remote {
                    address: address.to_owned(),
                    token: job.required("token")?.to_owned(),
                    server: None,
                    tenant,
                    secret: None,
                })
            }
        }
    }

    /// The engine this process holds, if any (to empty its caches for cold runs).
    pub fn engine(&self) -> Option<&Engine> {
        match self {
            Target::Embedded { engine, .. } => Some(engine),
            Target::Remote { server, .. } => server.as_ref().map(Server::engine),
        }
    }

    pub fn tenant(&self) -> &str {
        match self {
            Target::Embedded { tenant, .. } | Target::Remote { tenant, .. } => tenant,
        }
    }

    pub fn cores(&self) -> Option<usize> {
        self.engine().map(Engine::cores)
    }

    /// A connection for one worker.
    pub fn user(&self) -> Result<User<'_>, OpError> {
        self.user_as(self.tenant())
    }

    /// A connection for one worker of `tenant` (another tenant than the job's needs an engine
    /// in this process, or a server the harness started, to mint its token).
    pub fn user_as<'a>(&'a self, tenant: &'a str) -> Result<User<'a>, OpError> {
        match self {
            Target::Embedded { engine, .. } => Ok(User::Embedded { engine, tenant }),
            Target::Remote {
                address,
                token,
                secret,
                ..
            } => {
                let token = match secret {
                    _ if tenant == self.tenant() => token.clone(),
                    Some(secret) => admin_token(secret, tenant).map_err(|e| ("auth".into(), e))?,
                    None => {
                        return Err((
                            "invalid".into(),
                            format!(
                                "no token for tenant {tenant} on a node the harness did not start"
                            ),
                        ))
                    }
                };
                futures::executor::block_on(async {
                    let client = Client::connect(address).await.map_err(op_error)?;
                    let session = client.login(&token).await.map_err(op_error)?;
                    Ok(User::Remote {
                        session,
                        _client: client,
                    })
                })
            }
        }
    }

    /// Creates `table` with `rows` generated events unless it exists.
    pub fn ensure_events(&self, table: &str, rows: u64, seed: u64) -> Result<bool, String> {
        self.ensure_events_as(self.tenant(), table, rows, seed)
    }

    /// Creates `tenant`'s `table` with `rows` generated events unless it exists.
    pub fn ensure_events_as(
        &self,
        tenant: &str,
        table: &str,
        rows: u64,
        seed: u64,
    ) -> Result<bool, String> {
        let chunks = (0..rows)
            .step_by(CHUNK_ROWS as usize)
            .map(|first| events_chunk(first, CHUNK_ROWS.min(rows - first), rows, seed));
        match self {
            Target::Embedded { engine, .. } => {
                let data = engine.data_dir();
                if manifest::load(data, tenant, table)
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(false);
                }
                let mut writer = TableWriter::open(
                    data,
                    tenant,
                    table,
                    &events_schema(),
                    &ImportOptions::default(),
                )
                .map_err(|e| e.to_string())?;
                for chunk in chunks {
                    writer.write(&chunk).map_err(|e| e.to_string())?;
                }
                writer.finish().map_err(|e| e.to_string())?;
                Ok(true)
            }
            Target::Remote { .. } => {
                let user = self.user_as(tenant).map_err(|(_, m)| m)?;
                let User::Remote { session, .. } = &user else {
                    unreachable!("a remote target gives remote users")
                };
                futures::executor::block_on(async {
                    match session.describe(table).await {
                        Ok(_) => return Ok(false),
                        Err(e) if e.code() == "not_found" => {}
                        Err(e) => return Err(e.to_string()),
                    }
                    create_table(session, table).await?;
                    let mut writer = session
                        .import_writer(table)
                        .await
                        .map_err(|e| e.to_string())?;
                    for chunk in chunks {
                        writer.write(&chunk).await.map_err(|e| e.to_string())?;
                    }
                    writer.commit().await.map_err(|e| e.to_string())?;
                    Ok(true)
                })
            }
        }
    }
}

/// A week-long admin token for `tenant` signed with a started server's key.
fn admin_token(secret: &[u8], tenant: &str) -> Result<String, String> {
    auth::mint(
        &TokenRequest {
            subject: "tessera-bench".into(),
            tenant: Some(tenant.to_owned()),
            role: Role::Admin,
            ttl_seconds: 7 * 86_400,
            key_id: None,
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
        },
        KeyKind::Hs256,
        secret,
    )
    .map_err(|e| e.to_string())
}

/// Creates an events table over RPC.
pub async fn create_table(session: &Session, table: &str) -> Result<(), String> {
    let columns = events_schema()
        .fields()
        .iter()
        .map(|f| {
            engine_type(f.name(), f.data_type()).map(|t| ColumnInfo {
                name: f.name().clone(),
                column_type: t.name(),
                nullable: f.is_nullable(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    session
        .create_table(TableSpec {
            name: table.to_owned(),
            columns,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot create table {table}: {e}"))
}

fn op_error(error: tessera_rpc::ClientError) -> OpError {
    (error.code().to_owned(), error.to_string())
}

/// What a query returned, as far as the harness cares.
pub struct Answer {
    pub batches: Vec<RecordBatch>,
    pub rows_scanned: u64,
    pub bytes_read: u64,
    /// Time the engine (embedded) or the server (from admission to the last batch) measured.
    pub engine_time: Option<Duration>,
    /// Time the server measured from the call's arrival to its admission (remote only).
    pub queued: Option<Duration>,
}

/// One worker's handle on the target.
pub enum User<'a> {
    Embedded { engine: &'a Engine, tenant: &'a str },
    Remote { session: Session, _client: Client },
}

impl User<'_> {
    pub fn query(&self, sql: &str) -> Result<Answer, OpError> {
        match self {
            User::Embedded { engine, tenant } => {
                let result = engine
                    .sql(tenant, sql)
                    .map_err(|e| (e.code().to_owned(), e.to_string()))?;
                Ok(Answer {
                    rows_scanned: result.stats.scan.rows_scanned,
                    bytes_read: result.stats.scan.bytes_read,
                    engine_time: Some(result.stats.elapsed),
                    queued: None,
                    batches: result.batches,
                })
            }
            User::Remote { session, .. } => {
                let output =
                    futures::executor::block_on(session.query_collect(sql)).map_err(op_error)?;
                Ok(Answer {
                    rows_scanned: output.stats.scan.rows_scanned,
                    bytes_read: output.stats.scan.bytes_read,
                    engine_time: Some(Duration::from_micros(output.stats.elapsed_micros)),
                    queued: Some(Duration::from_micros(output.stats.queued_micros)),
                    batches: output.batches,
                })
            }
        }
    }

    /// Makes one batch (`ipc`: a whole Arrow IPC stream) durable through streaming ingestion
    /// as (`producer`, `sequence`); `stream` keeps the remote user's ingest stream between calls.
    pub fn ingest(
        &self,
        table: &str,
        producer: &str,
        sequence: u64,
        ipc: &[u8],
        stream: &mut Option<tessera_rpc::client::IngestStream>,
    ) -> Result<(), OpError> {
        match self {
            User::Embedded { engine, tenant } => engine
                .ingest(tenant, table, producer, sequence, ipc.to_vec())
                .map(|_| ())
                .map_err(|e| (e.code().to_owned(), e.to_string())),
            User::Remote { session, .. } => futures::executor::block_on(async {
                if stream.is_none() {
                    *stream = Some(
                        session
                            .ingest_stream(table, producer)
                            .await
                            .map_err(op_error)?,
                    );
                }
                let open = stream.as_mut().expect("opened above");
                open.append_ipc(sequence, ipc.to_vec())
                    .await
                    .map(|_| ())
                    .map_err(op_error)
            }),
        }
    }

    /// Imports `batches` into `table` as one commit.
    pub fn import(&self, table: &str, batches: &[RecordBatch]) -> Result<(), OpError> {
        match self {
            User::Embedded { engine, tenant } => {
                let engine_error =
                    |e: tessera_storage_engine::Error| ("engine".to_owned(), e.to_string());
                let mut writer = TableWriter::open(
                    engine.data_dir(),
                    tenant,
                    table,
                    &batches[0].schema(),
                    &ImportOptions::default(),
                )
                .map_err(engine_error)?;
                for batch in batches {
                    writer.write(batch).map_err(engine_error)?;
                }
                writer.finish().map(|_| ()).map_err(engine_error)
            }
            User::Remote { session, .. } => futures::executor::block_on(async {
                let mut writer = session.import_writer(table).await.map_err(op_error)?;
                for batch in batches {
                    writer.write(batch).await.map_err(op_error)?;
                }
                writer.commit().await.map(|_| ()).map_err(op_error)
            }),
        }
    }
}
