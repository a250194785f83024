//! `tessera`: the command-line front end. Subcommands: `gen` (deterministic events data set),
//! `import` (Parquet/CSV into a table, in-process or over RPC), `ingest` (files streamed into a
//! server's table, durably, by parallel workers), `sql` (a query in-process or over RPC), `serve`
//! (the tenant-node server), `admin` (retention and compaction on a server), `token` (mint a
//! development token), `verify`, and `demo` (gen + import + the spec's four queries with
//! timings).

mod admin;
mod coordinator;
mod ingest;
mod logging;
mod serve;
mod systemd;

use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tessera_storage_engine::query::exec::ScanStats;
use tessera_storage_engine::table::manifest::{Compression, PartitionSpec, WriterSettings};
use tessera_storage_engine::table::source;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{gen, Engine, EngineConfig, QueryResult};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: a columnar storage and query engine for event data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// Data directory.
    #[arg(long, env = "DATA_PATH", default_value = "./data")]
    data: PathBuf,
    /// Executor cores (default: all).
    #[arg(long)]
    cores: Option<usize>,
    /// Buffer pool budget in MiB (decoded pages, all cores together).
    #[arg(long, default_value_t = 4096)]
    pool_mib: u64,
}

impl EngineArgs {
    fn open(&self) -> Result<Engine, String> {
        let mut config = EngineConfig::new(&self.data);
        if let Some(cores) = self.cores {
            config.cores = cores;
        }
        config.buffer_pool_bytes = self.pool_mib << 20;
        Engine::open(config).map_err(|e| e.to_string())
    }
}

/// Where a remote command connects.
#[derive(clap::Args, Clone)]
struct RemoteArgs {
    /// Server address (HOST:PORT); without it the command runs in-process.
    #[arg(long)]
    addr: Option<String>,
    /// Token for the server (see `tessera token`).
    #[arg(long, env = "TESSERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Name the server's certificate must carry (default: the host of --addr); with --tls-ca.
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Allow sending the token over plain TCP to an address that is not loopback.
    #[arg(long)]
    insecure: bool,
}

impl RemoteArgs {
    /// Connects and logs in, when `--addr` was given.
    fn session(&self) -> Result<Option<tessera_rpc::Session>, String> {
        let Some((client, token)) = self.connect()? else {
            return Ok(None);
        };
        futures::executor::block_on(client.login(token))
            .map_err(|e| e.to_string())
            .map(Some)
    }

    /// Connects and logs in with an operator token, when `--addr` was given.
    fn operator_session(&self) -> Result<Option<tessera_rpc::client::OperatorSession>, String> {
        let Some((client, token)) = self.connect()? else {
            return Ok(None);
        };
        futures::executor::block_on(client.operator_login(token))
            .map_err(|e| e.to_string())
            .map(Some)
    }

    /// The connection and token, when `--addr` was given.
    fn connect(&self) -> Result<Option<(tessera_rpc::Client, &str)>, String> {
        let Some(addr) = &self.addr else {
            return Ok(None);
        };
        let token = self
            .token
            .as_deref()
            .ok_or("--addr needs --token (or TESSERA_TOKEN)")?;
        let options = self.connect_options(addr)?;
        let client = futures::executor::block_on(tessera_rpc::Client::connect_with(addr, options))
            .map_err(|e| e.to_string())?;
        Ok(Some((client, token)))
    }
}

impl RemoteArgs {
    /// TLS when `--tls-ca` is given; plain TCP only to loopback or with `--insecure`, because
    /// the login message carries the token.
    fn connect_options(&self, addr: &str) -> Result<tessera_rpc::ConnectOptions, String> {
        let Some(ca) = &self.tls_ca else {
            if self.tls_server_name.is_some() {
                return Err("--tls-server-name needs --tls-ca (without it the connection would be plain TCP)".into());
            }
            if !self.insecure && !is_loopback(addr) {
                return Err(format!(
                    "refusing to send the token in cleartext to {addr}: connect with TLS (--tls-ca) or pass --insecure"
                ));
            }
            return Ok(tessera_rpc::ConnectOptions::default());
        };
        let pem = std::fs::read(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        Ok(tessera_rpc::ConnectOptions {
            tls_ca_pem: Some(pem),
            tls_server_name: self.tls_server_name.clone(),
        })
    }
}

/// Whether every address `addr` (HOST:PORT) resolves to is a loopback address.
fn is_loopback(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    match addr.to_socket_addrs() {
        Ok(addresses) => {
            let addresses: Vec<_> = addresses.collect();
            !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a data set.
    Gen {
        #[command(subcommand)]
        what: GenWhat,
    },
    /// Import Parquet or CSV files into a table (created on first import): into a data
    /// directory (`--data --tenant`), or over RPC into a server (`--addr --token`).
    Import {
        #[arg(long, env = "DATA_PATH", default_value = "./data")]
        data: PathBuf,
        /// Tenant (embedded mode; over RPC the token decides).
        #[arg(long, required_unless_present = "addr")]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        table: String,
        /// Partition by the date of this column (default: the first timestamp column).
        #[arg(long)]
        time_column: Option<String>,
        /// Further partition columns, comma-separated (e.g. category).
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
        /// snappy, zstd or none (new tables only).
        #[arg(long, default_value = "snappy")]
        compression: String,
        /// Target file size in MiB (new tables only; default 500; not with --addr).
        #[arg(long)]
        file_mib: Option<u64>,
        #[command(flatten)]
        placement: ingest::ClusterTableArgs,
        /// Row group size in MiB (new tables only; default 128; not with --addr).
        #[arg(long)]
        row_group_mib: Option<u64>,
        /// Data page size in KiB (new tables only; default 1024; not with --addr).
        #[arg(long)]
        page_kib: Option<u64>,
        /// Most rows per data page (new tables only, smaller pages prune finer; default 20000;
        /// not with --addr).
        #[arg(long)]
        page_rows: Option<u64>,
        files: Vec<PathBuf>,
    },
    /// Stream Parquet, CSV and JSON-lines files into a server's table with parallel workers:
    /// each batch is acknowledged once durable on the node; lost connections and server restarts
    /// are retried without duplicates. Prints a summary ending `acknowledged N of M rows` and
    /// exits non-zero unless N = M.
    Ingest(ingest::IngestArgs),
    /// Run one SQL statement, in-process on a data directory (`--data --tenant`) or on a server
    /// (`--addr --token`).
    Sql {
        #[command(flatten)]
        engine: EngineArgs,
        /// Tenant (embedded mode; over RPC the token decides).
        #[arg(long, required_unless_present = "addr")]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// With --addr and an operator token: the query reads `query_stats` with every
        /// tenant's recent queries (every node's, in a cluster).
        #[arg(long, requires = "addr")]
        operator: bool,
        sql: String,
    },
    /// Check every file of a table: present, same size and CRC-32 as its manifest entry, and
    /// decodable page by page. Exits non-zero if any file has a problem.
    Verify {
        #[arg(long, env = "DATA_PATH", default_value = "./data")]
        data: PathBuf,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        table: String,
    },
    /// Serve a data directory over Cap'n Proto RPC (thread-per-core, one port).
    Serve(serve::ServeArgs),
    /// Run a cluster coordinator: catalog (PostgreSQL or embedded), node membership, the
    /// leader lease. Never in the data path.
    Coordinator(coordinator::CoordinatorArgs),
    /// Table maintenance on a server (role admin): retention and compaction; tenants' quotas
    /// (role operator).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Mint a token for development and tests.
    Token {
        /// HS256 shared secret file (as the server's --jwt-secret-file).
        #[arg(long, required_unless_present = "private_key_file")]
        secret_file: Option<PathBuf>,
        /// Ed25519 or RSA private key (PEM), with --algorithm.
        #[arg(long, conflicts_with = "secret_file")]
        private_key_file: Option<PathBuf>,
        /// eddsa or rs256, for --private-key-file.
        #[arg(long, default_value = "eddsa")]
        algorithm: String,
        /// Tenant (not for roles operator and node).
        #[arg(long)]
        tenant: Option<String>,
        /// reader, writer, admin, operator or node (a cluster member's: see `serve --coordinator`).
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. 90s, 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Key id (kid) for servers with several keys.
        #[arg(long)]
        kid: Option<String>,
        #[arg(long, default_value = "tessera-cli")]
        subject: String,
        #[arg(long, default_value = tessera_rpc::auth::DEFAULT_ISSUER)]
        issuer: String,
        #[arg(long, default_value = tessera_rpc::auth::DEFAULT_AUDIENCE)]
        audience: String,
    },
    /// Run benchmark job files (fio-style; see bench/jobs/): same as `tessera-bench`.
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for tessera-bench (`--help` for its own help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Generate, import and query the events data set, printing results and timings.
    Demo {
        #[arg(long, default_value = "./tessera-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum GenWhat {
    /// The spec's events table.
    Events {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// A .parquet file, or a directory for numbered files.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs the logger its configuration asks for; other commands print warnings
    // and errors (the engine's, e.g. a failed background job) as text.
    if !matches!(cli.command, Command::Serve(_) | Command::Coordinator(_)) {
        let _ = logging::init("warn", logging::Format::Text);
    }
    let result = match cli.command {
        Command::Bench { args } => {
            let args = std::iter::once(std::ffi::OsString::from("tessera bench")).chain(args);
            return ExitCode::from(tessera_bench::main_with(args) as u8);
        }
        Command::Gen {
            what: GenWhat::Events { rows, out, seed },
        } => run_gen(&out, rows, seed).map(|_| ()),
        Command::Import {
            data,
            tenant,
            remote,
            table,
            time_column,
            partition_by,
            compression,
            file_mib,
            row_group_mib,
            page_kib,
            page_rows,
            placement,
            files,
        } => compression
            .parse::<Compression>()
            .map_err(|e| e.to_string())
            .and_then(|compression| {
                let sizes = [
                    ("--file-mib", file_mib),
                    ("--row-group-mib", row_group_mib),
                    ("--page-kib", page_kib),
                    ("--page-rows", page_rows),
                ];
                let settings = WriterSettings {
                    compression,
                    target_file_bytes: file_mib.unwrap_or(500).max(1) << 20,
                    row_group_bytes: row_group_mib.unwrap_or(128).max(1) << 20,
                    page_bytes: page_kib.unwrap_or(1024).max(1) << 10,
                    page_rows_max: page_rows.unwrap_or(20_000).max(1),
                    dictionary: true,
                };
                let placed = placement.replication_factor != 0
                    || placement.write_quorum != 0
                    || placement.partitions != 1
                    || !placement.partition_key.is_empty();
                if remote.addr.is_none() && placed {
                    return Err("--replication-factor, --write-quorum, --partitions and \
                                --partition-key place a table in a cluster: they need --addr"
                        .into());
                }
                if remote.addr.is_some() {
                    // createTable's spec has no size settings: refuse rather than ignore them.
                    if let Some((flag, _)) = sizes.iter().find(|(_, value)| value.is_some()) {
                        return Err(format!(
                            "{flag} cannot be used with --addr: a table created over RPC gets the server's default sizes"
                        ));
                    }
                }
                match (remote.session()?, tenant) {
                    (Some(session), _) => {
                        let spec = RemoteTableSpec {
                            time_column: time_column.map(|c| c.to_lowercase()),
                            partition_by,
                            compression,
                            placement,
                        };
                        run_remote_import(&session, &table, &spec, &files)
                    }
                    (None, Some(tenant)) => run_import(
                        &data,
                        &tenant,
                        &table,
                        time_column,
                        partition_by,
                        settings,
                        &files,
                    )
                    .map(|_| ()),
                    (None, None) => Err("--tenant is required without --addr".into()),
                }
            }),
        Command::Sql {
            remote,
            format,
            operator: true,
            sql,
            ..
        } => remote.operator_session().and_then(|session| {
            let session = session.ok_or("--operator needs --addr")?;
            let output = futures::executor::block_on(session.query_stats(&sql, false))
                .map_err(|e| e.to_string())?;
            print_output(&output, format)
        }),
        Command::Sql {
            engine,
            tenant,
            remote,
            format,
            operator: false,
            sql,
        } => match (remote.session(), tenant) {
            (Err(e), _) => Err(e),
            (Ok(Some(session)), _) => run_remote_sql(&session, format, &sql),
            (Ok(None), Some(tenant)) => run_sql(&engine, &tenant, format, &sql),
            (Ok(None), None) => Err("--tenant is required without --addr".into()),
        },
        Command::Ingest(args) => ingest::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Coordinator(args) => coordinator::run(&args),
        Command::Admin { command } => admin::run(&command),
        Command::Token {
            secret_file,
            private_key_file,
            algorithm,
            tenant,
            role,
            ttl,
            kid,
            subject,
            issuer,
            audience,
        } => run_token(
            secret_file.as_deref(),
            private_key_file.as_deref(),
            &algorithm,
            tessera_rpc::auth::TokenRequest {
                subject,
                tenant,
                role: match role.parse() {
                    Ok(role) => role,
                    Err(e) => return fail(format!("{e}")),
                },
                ttl_seconds: match tessera_rpc::auth::parse_ttl(&ttl) {
                    Ok(ttl) => ttl,
                    Err(e) => return fail(format!("{e}")),
                },
                key_id: kid,
                issuer,
                audience,
            },
        ),
        Command::Demo { dir, rows, seed } => run_demo(&dir, rows, seed),
        Command::Verify {
            data,
            tenant,
            table,
        } => run_verify(&data, &tenant, &table),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn run_token(
    secret_file: Option<&Path>,
    private_key_file: Option<&Path>,
    algorithm: &str,
    request: tessera_rpc::auth::TokenRequest,
) -> Result<(), String> {
    use tessera_rpc::auth::KeyKind;
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let (kind, mut key) = match (secret_file, private_key_file) {
        (Some(path), _) => (KeyKind::Hs256, read(path)?),
        (None, Some(path)) => match algorithm {
            "eddsa" => (KeyKind::EdDsa, read(path)?),
            "rs256" => (KeyKind::Rs256, read(path)?),
            other => return Err(format!("--algorithm {other:?}: use eddsa or rs256")),
        },
        (None, None) => return Err("pass --secret-file or --private-key-file".into()),
    };
    if kind == KeyKind::Hs256 {
        // As the server does: a trailing newline is not part of the secret.
        while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
            key.pop();
        }
    }
    let token = tessera_rpc::auth::mint(&request, kind, &key).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

fn run_remote_sql(session: &tessera_rpc::Session, format: Format, sql: &str) -> Result<(), String> {
    let output =
        futures::executor::block_on(session.query_collect(sql)).map_err(|e| e.to_string())?;
    print_output(&output, format)
}

/// Prints a result received from a server, with its counters below it.
fn print_output(output: &tessera_rpc::client::QueryOutput, format: Format) -> Result<(), String> {
    let s = &output.stats;
    let footer = footer(
        s.rows_returned,
        s.elapsed_micros as f64 / 1e3,
        &s.scan,
        Some(s.ipc_bytes),
    );
    let explain = explain_text(&output.batches);
    print_batches(
        &output.schema,
        &output.batches,
        explain.as_deref(),
        &footer,
        format,
    )
}

/// The plan text of an EXPLAIN result (one `plan` column), if that is what `batches` hold.
fn explain_text(batches: &[arrow_array::RecordBatch]) -> Option<String> {
    let first = batches.first()?;
    if first.num_columns() != 1 || first.schema().field(0).name() != "plan" {
        return None;
    }
    let mut text = String::new();
    for batch in batches {
        let lines = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()?;
        for line in lines.iter().flatten() {
            text.push_str(line);
            text.push('\n');
        }
    }
    Some(text)
}

/// What `import --addr` passes to `createTable` when the table does not exist yet.
struct RemoteTableSpec {
    time_column: Option<String>,
    partition_by: Vec<String>,
    compression: Compression,
    placement: ingest::ClusterTableArgs,
}

fn run_remote_import(
    session: &tessera_rpc::Session,
    table: &str,
    spec: &RemoteTableSpec,
    files: &[PathBuf],
) -> Result<(), String> {
    let started = Instant::now();
    let sources = open_sources(files)?;
    let first_schema = sources[0].schema.clone();
    futures::executor::block_on(async {
        let missing =
            matches!(session.describe(table).await, Err(ref e) if e.code() == "not_found");
        if missing {
            let columns = first_schema
                .fields()
                .iter()
                .map(|f| {
                    tessera_storage_engine::value::engine_type(f.name(), f.data_type()).map(|t| {
                        tessera_rpc::client::ColumnInfo {
                            name: f.name().to_lowercase(),
                            column_type: t.name(),
                            nullable: true,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let placement = &spec.placement;
            let table_spec = tessera_rpc::client::TableSpec {
                name: table.to_owned(),
                columns,
                time_column: spec.time_column.clone(),
                partition_by: spec.partition_by.clone(),
                compression: match spec.compression {
                    Compression::Snappy => tessera_rpc::client::Compression::Snappy,
                    Compression::Zstd => tessera_rpc::client::Compression::Zstd,
                    Compression::None => tessera_rpc::client::Compression::None,
                },
            };
            session
                .create_partitioned_table(
                    table_spec,
                    placement.replication_factor,
                    placement.write_quorum,
                    placement.partitions,
                    &placement.partition_key,
                )
                .await
                .map_err(|e| format!("table {table} does not exist and cannot be created: {e}"))?;
            eprintln!(
                "created table {table} from the schema of {}",
                files[0].display()
            );
        }
        let total: Option<u64> = sources.iter().map(|s| s.rows).sum();
        let bar = progress_bar(total, "import");
        let mut writer = session
            .import_writer(table)
            .await
            .map_err(|e| e.to_string())?;
        let mut rows = 0u64;
        for source in sources {
            for batch in source.batches {
                let batch = batch.map_err(|e| e.to_string())?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).await.map_err(|e| e.to_string())?;
                bar.set_position(rows);
            }
        }
        let summary = writer.commit().await.map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        eprintln!(
            "imported {} rows into {table}: {} file(s), {:.1} MiB, table version {}, in {:.2?}",
            summary.rows,
            summary.files,
            summary.bytes as f64 / (1 << 20) as f64,
            summary.version,
            started.elapsed()
        );
        Ok(())
    })
}

fn progress_bar(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = format!(
        "{what} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} rows ({{per_sec}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run_gen(out: &Path, rows: u64, seed: u64) -> Result<Vec<PathBuf>, String> {
    let started = Instant::now();
    let bar = progress_bar(Some(rows), "gen");
    let files = gen::write_events(out, rows, seed, threads(), &mut |done| {
        bar.set_position(done)
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "generated {rows} events rows into {} file(s) in {:.2?}",
        files.len(),
        started.elapsed()
    );
    Ok(files)
}

fn run_import(
    data: &Path,
    tenant: &str,
    table: &str,
    time_column: Option<String>,
    partition_by: Vec<String>,
    writer_settings: WriterSettings,
    files: &[PathBuf],
) -> Result<u64, String> {
    let started = Instant::now();
    let sources = open_sources(files)?;
    let first = &sources[0];
    let options = ImportOptions {
        partition: Some(PartitionSpec {
            time_column: time_column.map(|c| c.to_lowercase()),
            columns: partition_by,
        }),
        writer: Some(writer_settings),
        ..ImportOptions::default()
    };
    let mut writer = TableWriter::open(data, tenant, table, &first.schema, &options)
        .map_err(|e| e.to_string())?;
    let total: Option<u64> = sources.iter().map(|s| s.rows).sum();
    let bar = progress_bar(total, "import");
    let mut rows = 0u64;
    for source in sources {
        for batch in source.batches {
            let batch = batch.map_err(|e| e.to_string())?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(|e| e.to_string())?;
            bar.set_position(rows);
        }
    }
    let summary = writer.finish().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    eprintln!(
        "imported {} rows into {tenant}/{table}: {} file(s), {:.1} MiB, manifest version {}, in {:.2?}",
        summary.rows,
        summary.files,
        summary.bytes as f64 / (1 << 20) as f64,
        summary.manifest_version,
        started.elapsed()
    );
    Ok(summary.rows)
}

/// Opens every Parquet/CSV file named or found (sorted) in the named directories.
fn open_sources(files: &[PathBuf]) -> Result<Vec<source::Source>, String> {
    if files.is_empty() {
        return Err("no input files given".into());
    }
    let mut inputs = Vec::new();
    for path in files {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "parquet" || x == "csv"))
                .collect();
            entries.sort();
            inputs.extend(entries);
        } else {
            inputs.push(path.clone());
        }
    }
    let sources: Vec<source::Source> = inputs
        .iter()
        .map(|p| source::open(p))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if sources.is_empty() {
        return Err("no Parquet or CSV files found in the given paths".into());
    }
    Ok(sources)
}

fn run_verify(data: &Path, tenant: &str, table: &str) -> Result<(), String> {
    let (files, problems) =
        tessera_storage_engine::table::verify::verify_table(data, tenant, table)
            .map_err(|e| e.to_string())?;
    for problem in &problems {
        println!("{}: {}", problem.path.display(), problem.message);
    }
    println!("{files} file(s) checked, {} with problems", problems.len());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {files} file(s) of {tenant}/{table} failed verification",
            problems.len()
        ))
    }
}

fn run_sql(engine: &EngineArgs, tenant: &str, format: Format, sql: &str) -> Result<(), String> {
    let engine = engine.open()?;
    let result = engine.sql(tenant, sql).map_err(|e| e.to_string())?;
    print_result(&result, format)
}

/// The line under a result: the same counters whether the query ran here or on a server (which
/// adds the Arrow IPC bytes it sent).
fn footer(rows: u64, elapsed_ms: f64, scan: &ScanStats, ipc_bytes: Option<u64>) -> String {
    let mut footer = format!(
        "{rows} row(s) in {elapsed_ms:.3} ms{} | rows scanned {} of {} ({} from statistics) | bytes read {} | files pruned {}/{} | row groups pruned {}/{} | pages pruned {}/{} | pool hits {} misses {}",
        if ipc_bytes.is_some() { " on the server" } else { "" },
        scan.rows_scanned,
        scan.rows_total,
        scan.rows_from_statistics,
        scan.bytes_read,
        scan.files_pruned,
        scan.files_total,
        scan.row_groups_pruned,
        scan.row_groups_total,
        scan.pages_pruned,
        scan.pages_total,
        scan.pool_hits,
        scan.pool_misses
    );
    if let Some(bytes) = ipc_bytes {
        footer.push_str(&format!(" | {bytes} IPC bytes"));
    }
    footer
}

fn print_result(result: &QueryResult, format: Format) -> Result<(), String> {
    let footer = footer(
        result.num_rows() as u64,
        result.stats.elapsed.as_secs_f64() * 1e3,
        &result.stats.scan,
        None,
    );
    print_batches(
        &result.schema,
        &result.batches,
        result.explain.as_deref(),
        &footer,
        format,
    )
}

/// Prints a result as a table (with `footer` below it), CSV or JSON; EXPLAIN prints its text.
fn print_batches(
    schema: &arrow_schema::SchemaRef,
    batches: &[arrow_array::RecordBatch],
    explain: Option<&str>,
    footer: &str,
    format: Format,
) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Csv => {
            let mut writer = arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut stdout);
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
        }
        Format::Json => {
            let mut writer = arrow_json::ArrayWriter::new(&mut stdout);
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
            writer.finish().map_err(|e| e.to_string())?;
            drop(writer);
            println!();
        }
        Format::Table => {
            if let Some(text) = explain {
                print!("{text}");
                return Ok(());
            }
            println!("{}", render_table(schema, batches, 50));
            println!("{footer}");
        }
    }
    Ok(())
}

fn render_table(
    schema: &arrow_schema::SchemaRef,
    batches: &[arrow_array::RecordBatch],
    max_rows: usize,
) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(schema.fields().iter().map(|f| f.name().clone()));
    let options = arrow_cast::display::FormatOptions::default().with_null("NULL");
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut shown = 0;
    'outer: for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .filter_map(|c| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            if shown == max_rows {
                break 'outer;
            }
            table.add_row(formatters.iter().map(|f| f.value(row).to_string()));
            shown += 1;
        }
    }
    if total > max_rows {
        table.add_row(vec![format!("... {} more row(s)", total - max_rows)]);
    }
    table
}

/// The spec's four queries.
pub const SPEC_QUERIES: [(&str, &str); 4] = [
    ("point lookup", "SELECT * FROM events WHERE id = 1234567"),
    ("time-range count", "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '2024-01-01' AND '2024-01-31 23:59:59'"),
    ("sum by category", "SELECT category, SUM(amount) FROM events GROUP BY category ORDER BY category"),
    (
        "daily avg by category",
        "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '2024-01-01' GROUP BY DATE(timestamp), category ORDER BY DATE(timestamp), category",
    ),
];

fn run_demo(dir: &Path, rows: u64, seed: u64) -> Result<(), String> {
    let input = dir.join("events.parquet");
    let data = dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!("== generating {rows} events rows");
    run_gen(&input, rows, seed)?;
    println!("== importing into tenant demo, table events");
    run_import(
        &data,
        "demo",
        "events",
        None,
        Vec::new(),
        WriterSettings::default(),
        &[input],
    )?;
    let engine = EngineArgs {
        data,
        cores: None,
        pool_mib: 4096,
    }
    .open()?;
    let point = format!("SELECT * FROM events WHERE id = {}", rows / 2 + 1);
    let queries: Vec<(&str, String)> = SPEC_QUERIES
        .iter()
        .map(|(name, sql)| {
            (
                *name,
                if *name == "point lookup" {
                    point.clone()
                } else {
                    sql.to_string()
                },
            )
        })
        .collect();
    let mut timings = Vec::new();
    for (name, sql) in &queries {
        println!("\n== {name}: {sql}");
        let cold = engine.sql("demo", sql).map_err(|e| e.to_string())?;
        print_result(&cold, Format::Table)?;
        let mut warm = Vec::new();
        for _ in 0..5 {
            warm.push(
                engine
                    .sql("demo", sql)
                    .map_err(|e| e.to_string())?
                    .stats
                    .elapsed
                    .as_secs_f64()
                    * 1e3,
            );
        }
        warm.sort_by(f64::total_cmp);
        timings.push((
            name,
            cold.stats.elapsed.as_secs_f64() * 1e3,
            warm[warm.len() / 2],
        ));
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec!["query", "first run (ms)", "warm median of 5 (ms)"]);
    for (name, cold, warm) in timings {
        table.add_row(vec![
            name.to_string(),
            format!("{cold:.2}"),
            format!("{warm:.2}"),
        ]);
    }
    println!("\n{table}");
    Ok(())
}
