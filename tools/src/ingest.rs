//! `tessera ingest`: streams Parquet, CSV and JSON-lines files into a server's table through
//! durable ingestion (`IngestStream`). Reader threads turn input files into batches of about
//! `--batch-mb`; worker threads, each with its own connection and producer name, send them and
//! wait for each acknowledgement (durable on the node). A worker that loses its connection, or
//! finds the server overloaded, reconnects and sends the same batch under the same sequence
//! number, so a server restart is survived and the node applies each batch once.
//!
//! This module owns reading, batching, delivery and the report; durability and deduplication
//! are the server's (`storage-engine/src/ingest`).

use crate::RemoteArgs;
use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashSet;
use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tessera_rpc::client::{
    ClientError, ColumnInfo, Compression, IngestAck, IngestStream, Session, TableSpec,
};
use tessera_rpc::{Client, ConnectOptions};
use tessera_storage_engine::table::source;
use tokio::runtime::Runtime;

/// Largest `--batch-mb`: the server refuses a batch over 256 MiB of Arrow IPC, which is about
/// the batch's Arrow memory plus some framing.
const BATCH_MB_MAX: u64 = 200;
/// Most `--workers`.
const WORKERS_MAX: u64 = 256;
/// First wait before a batch is sent again; it doubles up to `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most `--retry-for`, in seconds (a day).
const RETRY_SECONDS_MAX: u64 = 86_400;
/// Least time a call to the server may take before it counts as a lost connection.
const CALL_TIMEOUT_MIN: Duration = Duration::from_secs(10);
/// File extensions taken from directories.
const INPUT_EXTENSIONS: [&str; 5] = ["parquet", "csv", "json", "jsonl", "ndjson"];
/// Directory levels searched below a named directory.
const DIRECTORY_DEPTH_MAX: usize = 64;
/// Bytes in the MB this command counts in (batch size, summary, progress).
const MB: f64 = (1u64 << 20) as f64;

/// `tessera ingest`: what the user asked for.
/// How a table created in a cluster (by `ingest` or `import --addr`) is placed.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterTableArgs {
    /// In a cluster, for a table created here: the nodes holding each partition (0: the
    /// cluster's default, 3).
    #[arg(long, default_value_t = 0)]
    pub replication_factor: u8,
    /// In a cluster, for a table created here: replicas that must have a batch durable before
    /// it is acknowledged (0: a majority).
    #[arg(long, default_value_t = 0)]
    pub write_quorum: u8,
    /// In a cluster, for a table created here: hash partitions, each on its own replicas (1:
    /// the table is placed whole); needs --partition-key.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
    /// The column whose hash picks a row's partition (an integer or string column).
    #[arg(long, default_value = "")]
    pub partition_key: String,
}

#[derive(clap::Args)]
#[command(mut_arg("addr", |a| a.required(true).help("Server address (HOST:PORT)")))]
pub struct IngestArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Table to ingest into.
    #[arg(long)]
    table: String,
    /// Parallel senders; each has its own connection and producer name (<run id>-w<index>).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=WORKERS_MAX))]
    workers: u64,
    /// Target size of one batch, in MB (2^20 bytes) of Arrow memory; at most 200, because the
    /// server takes at most 256 MiB of Arrow IPC per batch.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=BATCH_MB_MAX))]
    batch_mb: u64,
    /// Create a missing table from the first input's schema (time column found automatically,
    /// partitioned by date); with false a missing table is an error.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    create: bool,
    #[command(flatten)]
    placement: ClusterTableArgs,
    /// Seconds to keep sending a batch again after a lost connection or an `unavailable` or
    /// `overloaded` answer (reconnecting, backing off from 100 ms to 5 s); a call unanswered
    /// this long (at least 10 s) counts as a lost connection.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(0..=RETRY_SECONDS_MAX))]
    retry_for: u64,
    /// Parquet, CSV (with a header row) or JSON-lines files, or directories: searched
    /// recursively for .parquet, .csv, .json, .jsonl and .ndjson files, taken in sorted order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs `tessera ingest`: prints the summary on stdout (its last line `acknowledged N of M
/// rows`) and fails unless every row read was acknowledged.
pub fn run(args: &IngestArgs) -> Result<(), String> {
    let target = Target::new(args)?;
    let paths = discover(&args.files)?;
    let (inputs, first_schema) = survey(paths)?;
    let runtime = runtime()?;
    let session = target
        .call(&runtime, target.session())
        .map_err(|e| e.to_string())?;
    let startup = Startup {
        args,
        target: &target,
        runtime: &runtime,
        session: &session,
    };
    startup.ensure_table(&first_schema, args.create, &inputs[0].path)?;
    drop(session);
    let run_id = run_id();
    let workers = args.workers as usize;
    eprintln!(
        "ingesting {} file(s) into {} with {workers} worker(s), producers {run_id}-w0..w{}",
        inputs.len(),
        args.table,
        workers - 1
    );
    let plan = Plan {
        units: Units::of(&inputs),
        inputs,
        batch_bytes: (args.batch_mb << 20) as usize,
        workers,
        run_id,
    };
    let shared = Shared::new(progress_bar(plan.units.total(&plan.inputs)));
    let totals = stream(&plan, &target, &shared);
    shared.bar.finish_and_clear();
    print!("{}", summary(&totals));
    verdict(&totals)
}

/// How and as whom workers connect, and what they ingest into.
struct Target {
    address: String,
    options: ConnectOptions,
    token: String,
    table: String,
    retry_for: Duration,
}

impl Target {
    fn new(args: &IngestArgs) -> Result<Target, String> {
        let address = args.remote.addr.clone().ok_or("ingest needs --addr")?;
        let token = args
            .remote
            .token
            .clone()
            .ok_or("--addr needs --token (or TESSERA_TOKEN)")?;
        Ok(Target {
            options: args.remote.connect_options(&address)?,
            address,
            token,
            table: args.table.clone(),
            retry_for: Duration::from_secs(args.retry_for),
        })
    }

    /// Runs a call to the server on `runtime`, waiting at most `--retry-for` (at least
    /// `CALL_TIMEOUT_MIN`): a server that accepts a call and never answers must not stall the
    /// run. Running out of time counts as a lost connection.
    fn call<T>(
        &self,
        runtime: &Runtime,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        runtime
            // The timer must be made inside the runtime.
            .block_on(async { tokio::time::timeout(self.call_timeout(), call).await })
            .unwrap_or_else(|_| {
                Err(ClientError::Disconnected(format!(
                    "no answer from {} within {} s",
                    self.address,
                    self.call_timeout().as_secs()
                )))
            })
    }

    fn call_timeout(&self) -> Duration {
        self.retry_for.max(CALL_TIMEOUT_MIN)
    }

    /// A new connection, logged in.
    async fn session(&self) -> Result<Session, ClientError> {
        let client = Client::connect_with(&self.address, self.options.clone()).await?;
        client.login(&self.token).await
    }

    /// A new connection with an ingest stream for `producer`.
    async fn link(&self, producer: &str) -> Result<Link, ClientError> {
        let session = self.session().await?;
        let stream = session.ingest_stream(&self.table, producer).await?;
        Ok(Link {
            stream,
            _session: session,
        })
    }
}

/// One worker's connection: its session and ingest stream.
struct Link {
    stream: IngestStream,
    _session: Session,
}

/// The input files: those named, and those in named directories (recursively) whose extension
/// is an input format's, in sorted order. Symbolic links to directories are not followed.
fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, 0, &mut found)?;
            found.sort();
            inputs.extend(found);
        } else {
            inputs.push(path.clone());
        }
    }
    if inputs.is_empty() {
        return Err("no Parquet, CSV or JSON-lines files found in the given paths".into());
    }
    Ok(inputs)
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) -> Result<(), String> {
    if depth > DIRECTORY_DEPTH_MAX {
        return Err(format!(
            "{}: directories nested deeper than {DIRECTORY_DEPTH_MAX} levels",
            dir.display()
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            walk(&path, depth + 1, found)?;
        } else if has_input_extension(&path) && path.is_file() {
            found.push(path);
        }
    }
    Ok(())
}

fn has_input_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| INPUT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// One input file and what is known of it before it is read.
struct Input {
    path: PathBuf,
    bytes: u64,
    /// Known for Parquet.
    rows: Option<u64>,
}

/// Opens every input once (so an unreadable one fails the run before anything is sent) and
/// notes its size and row count; returns them with the first input's schema.
fn survey(paths: Vec<PathBuf>) -> Result<(Vec<Input>, SchemaRef), String> {
    let mut inputs = Vec::with_capacity(paths.len());
    let mut first_schema = None;
    for path in paths {
        let source = source::open(&path).map_err(|e| e.to_string())?;
        let bytes = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        first_schema.get_or_insert_with(|| source.schema.clone());
        inputs.push(Input {
            path,
            bytes,
            rows: source.rows,
        });
    }
    let schema = first_schema.ok_or("no input files")?;
    Ok((inputs, schema))
}

/// The start-up session, before the workers connect.
struct Startup<'a> {
    args: &'a IngestArgs,
    target: &'a Target,
    runtime: &'a Runtime,
    session: &'a Session,
}

impl Startup<'_> {
    /// Makes sure the table exists: a missing one is created from `schema` (as `import --addr`
    /// does) unless `create` is false.
    fn ensure_table(&self, schema: &Schema, create: bool, first: &Path) -> Result<(), String> {
        let (target, table) = (self.target, self.target.table.as_str());
        match target.call(self.runtime, self.session.describe(table)) {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == "not_found" => {}
            Err(e) => return Err(format!("table {table}: {e}")),
        }
        if !create {
            return Err(format!(
                "table {table} does not exist (and --create=false forbids creating it)"
            ));
        }
        let spec = TableSpec {
            name: table.to_owned(),
            columns: table_columns(schema)?,
            time_column: None,
            partition_by: Vec::new(),
            compression: Compression::Snappy,
        };
        let args = self.args;
        let create = self.session.create_partitioned_table(
            spec,
            args.placement.replication_factor,
            args.placement.write_quorum,
            args.placement.partitions,
            &args.placement.partition_key,
        );
        if let Err(e) = target.call(self.runtime, create) {
            // Another ingest may have created it meanwhile.
            if target
                .call(self.runtime, self.session.describe(table))
                .is_ok()
            {
                return Ok(());
            }
            return Err(format!(
                "table {table} does not exist and cannot be created: {e}"
            ));
        }
        eprintln!(
            "created table {table} from the schema of {}",
            first.display()
        );
        Ok(())
    }
}

/// The columns of a table made for `schema`: its fields' names in lower case, all nullable.
fn table_columns(schema: &Schema) -> Result<Vec<ColumnInfo>, String> {
    schema
        .fields()
        .iter()
        .map(|f| {
            tessera_storage_engine::value::engine_type(f.name(), f.data_type())
                .map(|t| ColumnInfo {
                    name: f.name().to_lowercase(),
                    column_type: t.name(),
                    nullable: true,
                })
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// A single-threaded runtime with a timer, for one thread's calls to the server (the client's
/// futures run under any executor; this one adds timeouts).
fn runtime() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

/// A random 64-bit run id in hex: producer names of this run are `<id>-w<index>`.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let id = match random {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            // RandomState is seeded from the OS's randomness; the time and pid only add to it.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            hasher.finish()
        }
    };
    format!("{id:016x}")
}

/// What the progress bar counts: rows when every input is Parquet (row counts known up front),
/// otherwise bytes of the input files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Units {
    Rows,
    Bytes,
}

impl Units {
    fn of(inputs: &[Input]) -> Units {
        if inputs.iter().all(|i| i.rows.is_some()) {
            Units::Rows
        } else {
            Units::Bytes
        }
    }

    fn total(self, inputs: &[Input]) -> u64 {
        inputs.iter().map(|i| self.of_input(i)).sum()
    }

    fn of_input(self, input: &Input) -> u64 {
        match self {
            Units::Rows => input.rows.unwrap_or(0),
            Units::Bytes => input.bytes,
        }
    }
}

/// The run: inputs, how they are batched, and by how many workers they are sent.
struct Plan {
    inputs: Vec<Input>,
    units: Units,
    batch_bytes: usize,
    workers: usize,
    run_id: String,
}

/// State the threads share: the progress bar, counters for it, errors already printed, and
/// whether the run gave up on the server.
struct Shared {
    bar: ProgressBar,
    started: Instant,
    acknowledged_rows: AtomicU64,
    acknowledged_bytes: AtomicU64,
    reported: Mutex<HashSet<String>>,
    gave_up: AtomicBool,
}

impl Shared {
    fn new(bar: ProgressBar) -> Shared {
        Shared {
            bar,
            started: Instant::now(),
            acknowledged_rows: AtomicU64::new(0),
            acknowledged_bytes: AtomicU64::new(0),
            reported: Mutex::new(HashSet::new()),
            gave_up: AtomicBool::new(false),
        }
    }

    /// Prints `message` on stderr, the first time only.
    fn report(&self, message: String) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(message.clone());
        if first {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }

    /// A batch is done (acknowledged with `rows` and `bytes`, or failed with zeros).
    fn done(&self, units: u64, rows: u64, bytes: u64) {
        let rows = self.acknowledged_rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let bytes = self.acknowledged_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.inc(units);
        self.bar.set_message(format!(
            "{rows} rows, {:.1} MB, {:.1} MB/s",
            bytes as f64 / MB,
            bytes as f64 / MB / seconds
        ));
    }
}

fn progress_bar(length: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let template = "ingest [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}, ETA {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A batch ready to send, with the progress units it completes.
struct Work {
    batch: RecordBatch,
    units: u64,
}

/// What the readers and workers did.
#[derive(Default)]
struct Totals {
    read: ReadTally,
    sent: SendTally,
    elapsed: Duration,
}

/// What readers did: rows read, inputs that failed part-way.
#[derive(Default)]
struct ReadTally {
    rows: u64,
    failed_inputs: u64,
}

impl ReadTally {
    fn add(&mut self, other: ReadTally) {
        self.rows += other.rows;
        self.failed_inputs += other.failed_inputs;
    }
}

/// What workers did.
#[derive(Default)]
struct SendTally {
    batches: u64,
    failed_batches: u64,
    rows: u64,
    bytes: u64,
    duplicates: u64,
    duplicate_rows: u64,
    retries: u64,
    /// Per acknowledged batch: from its first send to its acknowledgement, retries included.
    latencies: Vec<Duration>,
}

impl SendTally {
    fn add(&mut self, other: SendTally) {
        self.batches += other.batches;
        self.failed_batches += other.failed_batches;
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.duplicates += other.duplicates;
        self.duplicate_rows += other.duplicate_rows;
        self.retries += other.retries;
        self.latencies.extend(other.latencies);
    }
}

/// Reads and sends everything: reader threads (at most one per input, per worker and per CPU)
/// feed batches into a bounded channel of `workers` slots, which the workers drain; so at most
/// about two batches per worker are in memory, plus one being gathered per reader.
fn stream(plan: &Plan, target: &Target, shared: &Shared) -> Totals {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let readers = plan.inputs.len().min(plan.workers).min(cpus).max(1);
    let (sender, receiver) = sync_channel::<Work>(plan.workers);
    // Owned by the workers alone: if they all stop, readers see the channel closed.
    let queue = Arc::new(Mutex::new(receiver));
    let next_input = AtomicUsize::new(0);
    let mut totals = Totals::default();
    std::thread::scope(|scope| {
        let reader_threads: Vec<_> = (0..readers)
            .map(|_| {
                let sender = sender.clone();
                let next_input = &next_input;
                scope.spawn(move || read_inputs(plan, next_input, &sender, shared))
            })
            .collect();
        drop(sender);
        let worker_threads: Vec<_> = (0..plan.workers)
            .map(|index| {
                let queue = queue.clone();
                let producer = format!("{}-w{index}", plan.run_id);
                scope.spawn(move || match runtime() {
                    Ok(runtime) => Worker::new(target, shared, producer, runtime).run(&queue),
                    Err(message) => {
                        // Its share goes to the other workers.
                        shared.report(message);
                        SendTally::default()
                    }
                })
            })
            .collect();
        drop(queue);
        for thread in reader_threads {
            match thread.join() {
                Ok(tally) => totals.read.add(tally),
                Err(_) => {
                    // Its rows were not counted: the run must not look complete.
                    shared.report("a reader thread panicked".into());
                    totals.read.failed_inputs += 1;
                }
            }
        }
        for thread in worker_threads {
            match thread.join() {
                Ok(tally) => totals.sent.add(tally),
                Err(_) => shared.report("a worker thread panicked".into()),
            }
        }
    });
    totals.elapsed = shared.started.elapsed();
    totals
}

/// A reader thread: takes inputs in turn until none is left.
fn read_inputs(
    plan: &Plan,
    next_input: &AtomicUsize,
    sender: &SyncSender<Work>,
    shared: &Shared,
) -> ReadTally {
    let mut tally = ReadTally::default();
    loop {
        let index = next_input.fetch_add(1, Ordering::Relaxed);
        let Some(input) = plan.inputs.get(index) else {
            return tally;
        };
        let mut reader = InputReader::new(input, plan, sender);
        match reader.read() {
            Ok(()) => {}
            Err(ReadStop::Input(message)) => {
                shared.report(format!("reading stopped: {message}"));
                tally.failed_inputs += 1;
            }
            Err(ReadStop::Closed) => {
                tally.rows += reader.rows;
                shared.report("every worker stopped; reading stopped".into());
                tally.failed_inputs += 1;
                return tally;
            }
        }
        tally.rows += reader.rows;
        shared.bar.inc(reader.progress.rest());
    }
}

/// Why reading an input stopped early.
enum ReadStop {
    /// The input failed (unreadable, or a row that does not parse).
    Input(String),
    /// No worker is left to take batches.
    Closed,
}

/// Reads one input into batches of about the target size and hands them to the workers.
struct InputReader<'a> {
    input: &'a Input,
    sender: &'a SyncSender<Work>,
    gathered: Gathered,
    progress: Progress,
    rows: u64,
}

impl<'a> InputReader<'a> {
    fn new(input: &'a Input, plan: &Plan, sender: &'a SyncSender<Work>) -> InputReader<'a> {
        InputReader {
            input,
            sender,
            gathered: Gathered::new(plan.batch_bytes),
            progress: Progress::new(input, plan.units),
            rows: 0,
        }
    }

    fn read(&mut self) -> Result<(), ReadStop> {
        let source = source::open(&self.input.path).map_err(|e| ReadStop::Input(e.to_string()))?;
        self.progress.bytes_read = source.bytes_read.clone();
        for batch in source.batches {
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    // What was read before the failure is sent all the same.
                    self.send_rest()?;
                    return Err(ReadStop::Input(e.to_string()));
                }
            };
            self.rows += batch.num_rows() as u64;
            for piece in split(&batch, self.gathered.target_bytes) {
                if let Some(ready) = self.gathered.push(piece).map_err(ReadStop::Input)? {
                    self.send(ready)?;
                }
            }
        }
        self.send_rest()
    }

    fn send(&mut self, batch: RecordBatch) -> Result<(), ReadStop> {
        let units = self.progress.advance(batch.num_rows() as u64);
        self.sender
            .send(Work { batch, units })
            .map_err(|_| ReadStop::Closed)
    }

    fn send_rest(&mut self) -> Result<(), ReadStop> {
        match self.gathered.take().map_err(ReadStop::Input)? {
            Some(batch) => self.send(batch),
            None => Ok(()),
        }
    }
}

/// Turns reading progress in one input into progress-bar units.
struct Progress {
    units: Units,
    total: u64,
    rows_total: Option<u64>,
    bytes_read: Option<Arc<AtomicU64>>,
    rows: u64,
    given: u64,
}

impl Progress {
    fn new(input: &Input, units: Units) -> Progress {
        Progress {
            units,
            total: units.of_input(input),
            rows_total: input.rows,
            bytes_read: None,
            rows: 0,
            given: 0,
        }
    }

    /// The units `rows` more rows complete.
    fn advance(&mut self, rows: u64) -> u64 {
        self.rows += rows;
        let done = match (self.units, &self.bytes_read, self.rows_total) {
            (Units::Rows, _, _) => self.rows,
            (Units::Bytes, Some(read), _) => read.load(Ordering::Relaxed),
            (Units::Bytes, None, Some(rows_total)) if rows_total > 0 => {
                (self.total as u128 * self.rows as u128 / rows_total as u128) as u64
            }
            (Units::Bytes, None, _) => 0,
        };
        let delta = done.min(self.total).saturating_sub(self.given);
        self.given += delta;
        delta
    }

    /// The units not yet given (the input is finished).
    fn rest(&mut self) -> u64 {
        let rest = self.total.saturating_sub(self.given);
        self.given = self.total;
        rest
    }
}

/// Bytes of Arrow memory `batch` covers (only its slice of shared buffers).
fn arrow_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// `batch` in slices of at most about `target_bytes` each.
fn split(batch: &RecordBatch, target_bytes: usize) -> Vec<RecordBatch> {
    let (bytes, rows) = (arrow_bytes(batch), batch.num_rows());
    if bytes <= target_bytes || rows <= 1 {
        return vec![batch.clone()];
    }
    let step = rows.div_ceil(bytes.div_ceil(target_bytes.max(1)));
    (0..rows)
        .step_by(step)
        .map(|offset| batch.slice(offset, step.min(rows - offset)))
        .collect()
}

/// Source batches of one input gathered until the next would pass the target size.
struct Gathered {
    target_bytes: usize,
    parts: Vec<RecordBatch>,
    bytes: usize,
}

impl Gathered {
    fn new(target_bytes: usize) -> Gathered {
        Gathered {
            target_bytes,
            parts: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds `piece`; returns the batch gathered so far when `piece` would take it past the
    /// target, or when it reaches the target with `piece`.
    fn push(&mut self, piece: RecordBatch) -> Result<Option<RecordBatch>, String> {
        if piece.num_rows() == 0 {
            return Ok(None);
        }
        let bytes = arrow_bytes(&piece);
        let before = if self.bytes + bytes > self.target_bytes {
            self.take()?
        } else {
            None
        };
        self.bytes += bytes;
        self.parts.push(piece);
        match before {
            Some(batch) => Ok(Some(batch)),
            None if self.bytes >= self.target_bytes => self.take(),
            None => Ok(None),
        }
    }

    /// The batch gathered so far, as one contiguous batch.
    fn take(&mut self) -> Result<Option<RecordBatch>, String> {
        let Some(first) = self.parts.first() else {
            return Ok(None);
        };
        let batch = arrow_select::concat::concat_batches(&first.schema(), &self.parts)
            .map_err(|e| format!("gathering a batch: {e}"))?;
        self.parts.clear();
        self.bytes = 0;
        Ok(Some(batch))
    }
}

/// A worker: one producer sending batches in turn over its own connection.
struct Worker<'a> {
    target: &'a Target,
    shared: &'a Shared,
    producer: String,
    runtime: Runtime,
    link: Option<Link>,
    next_sequence: u64,
    tally: SendTally,
}

impl<'a> Worker<'a> {
    fn new(
        target: &'a Target,
        shared: &'a Shared,
        producer: String,
        runtime: Runtime,
    ) -> Worker<'a> {
        Worker {
            target,
            shared,
            producer,
            runtime,
            link: None,
            next_sequence: 0,
            tally: SendTally::default(),
        }
    }

    fn run(mut self, queue: &Mutex<Receiver<Work>>) -> SendTally {
        loop {
            let work = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
            match work {
                Ok(work) => self.send(work),
                Err(_) => return self.tally,
            }
        }
    }

    /// Sends one batch under the worker's next sequence number and records the outcome.
    fn send(&mut self, work: Work) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let rows = work.batch.num_rows() as u64;
        let started = Instant::now();
        match self.deliver(sequence, &work.batch) {
            Ok(ack) => {
                let bytes = arrow_bytes(&work.batch) as u64;
                let tally = &mut self.tally;
                tally.batches += 1;
                tally.rows += rows;
                tally.bytes += bytes;
                tally.latencies.push(started.elapsed());
                if ack.duplicate {
                    tally.duplicates += 1;
                    tally.duplicate_rows += rows;
                }
                self.shared.done(work.units, rows, bytes);
            }
            Err(message) => {
                self.tally.failed_batches += 1;
                self.shared
                    .report(format!("batch not acknowledged: {message}"));
                self.shared.done(work.units, 0, 0);
            }
        }
    }

    /// Sends `batch` until it is acknowledged, a refusal that retrying cannot change, or the
    /// end of `--retry-for`; reconnects after each failure worth retrying.
    fn deliver(&mut self, sequence: u64, batch: &RecordBatch) -> Result<IngestAck, String> {
        let mut backoff = BACKOFF_FIRST;
        let mut first_failure: Option<Instant> = None;
        loop {
            if self.shared.gave_up.load(Ordering::Relaxed) {
                return Err(format!(
                    "not sent: a batch could not be delivered within --retry-for {} s",
                    self.target.retry_for.as_secs()
                ));
            }
            let error = match self.attempt(sequence, batch) {
                Ok(ack) => return check_ack(ack, sequence),
                Err(error) if !retryable(&error) => return Err(error.to_string()),
                Err(error) => error,
            };
            self.link = None;
            let failing_for = first_failure.get_or_insert_with(Instant::now).elapsed();
            if failing_for >= self.target.retry_for {
                self.shared.gave_up.store(true, Ordering::Relaxed);
                return Err(format!(
                    "{error} (still failing after {} s of retries)",
                    failing_for.as_secs()
                ));
            }
            self.tally.retries += 1;
            self.shared
                .report(format!("retrying with a new connection: {error}"));
            std::thread::sleep(backoff.min(self.target.retry_for - failing_for));
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One try: connects first if the worker has no connection. A call unanswered for
    /// `--retry-for` counts as a lost connection.
    fn attempt(&mut self, sequence: u64, batch: &RecordBatch) -> Result<IngestAck, ClientError> {
        let (target, runtime) = (self.target, &self.runtime);
        let mut link = match self.link.take() {
            Some(link) => link,
            None => target.call(runtime, target.link(&self.producer))?,
        };
        let result = target.call(runtime, link.stream.append(sequence, batch));
        self.link = Some(link);
        result
    }
}

/// Whether sending again may succeed: a lost or refused connection, or a node that asks to
/// retry (`unavailable`: the key is in flight on another call; `overloaded`).
fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Disconnected(_) => true,
        _ => matches!(error.code(), "unavailable" | "overloaded"),
    }
}

/// An acknowledgement counts only if it says durable, for the sequence sent.
fn check_ack(ack: IngestAck, sequence: u64) -> Result<IngestAck, String> {
    if !ack.durable || ack.sequence != sequence {
        return Err(format!(
            "unexpected acknowledgement for sequence {sequence}: {ack:?}"
        ));
    }
    Ok(ack)
}

/// The report printed at the end; its last line is `acknowledged N of M rows`.
fn summary(totals: &Totals) -> String {
    let (read, sent) = (&totals.read, &totals.sent);
    let seconds = totals.elapsed.as_secs_f64().max(1e-3);
    let megabytes = sent.bytes as f64 / MB;
    let mut latencies = sent.latencies.clone();
    latencies.sort();
    let mut lines = vec![
        format!("rows read          {}", read.rows),
        format!("rows acknowledged  {}", sent.rows),
        format!("MB acknowledged    {megabytes:.1}"),
        format!("seconds            {seconds:.2}"),
        format!("MB/s               {:.1}", megabytes / seconds),
        format!("rows/s             {:.0}", sent.rows as f64 / seconds),
        format!(
            "batches            {} acknowledged, {} failed",
            sent.batches, sent.failed_batches
        ),
        format!(
            "duplicates         {} batches ({} rows)",
            sent.duplicates, sent.duplicate_rows
        ),
        format!("retries            {}", sent.retries),
        format!(
            "ack latency        p50 {:.1} ms, p99 {:.1} ms",
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99)
        ),
    ];
    if read.failed_inputs > 0 {
        lines.push(format!(
            "input errors       {} file(s) not read to the end",
            read.failed_inputs
        ));
    }
    lines.push(format!("acknowledged {} of {} rows", sent.rows, read.rows));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The `q` quantile of sorted `latencies`, in milliseconds (0 when there are none).
fn percentile_ms(latencies: &[Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    let index = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[index.min(latencies.len() - 1)].as_secs_f64() * 1e3
}

/// Success only when every row read was acknowledged and every input was read to its end.
fn verdict(totals: &Totals) -> Result<(), String> {
    let (read, sent) = (&totals.read, &totals.sent);
    if read.failed_inputs > 0 {
        return Err(format!(
            "{} input file(s) could not be read to the end",
            read.failed_inputs
        ));
    }
    if sent.rows != read.rows {
        return Err(format!(
            "{} of {} rows were not acknowledged",
            read.rows.saturating_sub(sent.rows),
            read.rows
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};

    fn batch(rows: usize) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("name-{i}")),
        ));
        RecordBatch::try_from_iter([("id", ids), ("name", names)]).unwrap()
    }

    #[test]
    fn big_batches_split_and_small_ones_gather_below_the_target() {
        let big = batch(100_000);
        let target = arrow_bytes(&big) / 7;
        let pieces = split(&big, target);
        assert!(pieces.len() >= 7, "{}", pieces.len());
        assert_eq!(pieces.iter().map(|p| p.num_rows()).sum::<usize>(), 100_000);
        let mut gathered = Gathered::new(target);
        let mut out = Vec::new();
        for piece in (0..50).map(|_| batch(3_000)) {
            out.extend(gathered.push(piece).unwrap());
        }
        out.extend(gathered.take().unwrap());
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 150_000);
        assert!(out.len() > 1);
        assert!(
            out.iter().all(|b| arrow_bytes(b) <= target),
            "a batch passed the target"
        );
    }

    #[test]
    fn only_connection_losses_and_busy_nodes_are_retried() {
        let server = |code: &str| ClientError::Server {
            code: code.into(),
            message: "m".into(),
        };
        assert!(retryable(&ClientError::Disconnected("gone".into())));
        assert!(retryable(&ClientError::Connect {
            address: "a".into(),
            message: "refused".into()
        }));
        assert!(retryable(&server("unavailable")) && retryable(&server("overloaded")));
        for code in ["invalid", "permission", "not_found", "limit", "internal"] {
            assert!(!retryable(&server(code)), "{code}");
        }
    }

    #[test]
    fn progress_in_bytes_reaches_the_file_size_exactly() {
        let input = Input {
            path: PathBuf::from("x.parquet"),
            bytes: 1000,
            rows: Some(300),
        };
        let mut progress = Progress::new(&input, Units::Bytes);
        assert_eq!(progress.advance(100), 333);
        assert_eq!(progress.advance(100), 333);
        assert_eq!(progress.advance(100) + progress.rest(), 334);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
