//! tessera-bench: a fio-style benchmark harness. A job file (`bench/jobs/*.fio`) describes jobs
//! of five kinds — `rawio` (the engine's O_DIRECT read path on a file, comparable with fio),
//! `scan` (one query cold or warm), `query` (users running a query mix, embedded or over RPC),
//! `ingest` (parallel import streams) and `membw` (memory read bandwidth) — run one after
//! another; each reports ops/s, bandwidth, latency percentiles from an HDR histogram, CPU and
//! errors, as text or JSON. `agent` is Tessera's side of the peer comparison (`bench/peers/`).

pub mod agent;
pub mod hist;
pub mod ingest;
pub mod job;
pub mod membw;
pub mod query;
pub mod rawio;
pub mod report;
pub mod run;
pub mod target;
pub mod workload;

use clap::{Parser, Subcommand, ValueEnum};
use job::Kind;
use report::{JobReport, RunReport};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    version,
    about = "fio-style benchmark jobs for Tessera (see bench/jobs/)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Job files to run, in order.
    #[arg(required = true)]
    jobfiles: Vec<PathBuf>,
    /// normal (fio-like text) or json.
    #[arg(long, value_enum, default_value_t = Format::Normal)]
    output_format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Run only the jobs (sections) named here; repeatable.
    #[arg(long)]
    section: Vec<String>,
    /// Never draw the progress line (it is drawn only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Answer JSON query requests on stdin (the peer comparison's Tessera side).
    Agent(agent::AgentArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Normal,
    Json,
}

/// Runs one parsed job.
pub fn run_job(job: &job::Job, progress: bool) -> Result<JobReport, String> {
    let result = match job.kind {
        Kind::RawIo => rawio::run(job, progress),
        Kind::Scan | Kind::Query => query::run(job, progress),
        Kind::Ingest => ingest::run(job, progress),
        Kind::MemBw => membw::run(job, progress),
    };
    result.map_err(|e| e.to_string())
}

/// Parses every job file first (so a typo in the last one fails before anything runs), then
/// runs the selected jobs one after another.
pub fn run_files(
    files: &[PathBuf],
    sections: &[String],
    progress: bool,
) -> Result<RunReport, String> {
    let mut jobs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        jobs.extend(job::parse(&text, &file.display().to_string()).map_err(|e| e.to_string())?);
    }
    for section in sections {
        if !jobs.iter().any(|j| &j.name == section) {
            return Err(format!("--section {section}: no such job"));
        }
    }
    jobs.retain(|j| sections.is_empty() || sections.contains(&j.name));
    let mut reports = Vec::new();
    for job in &jobs {
        reports.push(run_job(job, progress)?);
    }
    Ok(RunReport {
        tessera_bench: env!("CARGO_PKG_VERSION").to_owned(),
        jobfile: files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        host: hostname(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        jobs: reports,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The command line: `tessera-bench [--output-format json] JOBFILE...` or `tessera-bench agent`.
/// Returns the process exit code: 0, 1 when any job had errors, 2 on a bad job file or setup.
pub fn main_with<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Some(Command::Agent(args)) = cli.command {
        return match agent::run(args) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tessera-bench agent: {e}");
                2
            }
        };
    }
    let progress = !cli.no_progress && run::progress_wanted();
    let report = match run_files(&cli.jobfiles, &cli.section, progress) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tessera-bench: {e}");
            return 2;
        }
    };
    let text = match cli.output_format {
        Format::Json => serde_json::to_string_pretty(&report).expect("reports serialize") + "\n",
        Format::Normal => report
            .jobs
            .iter()
            .map(JobReport::text)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let written = match &cli.output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    };
    if let Err(e) = written {
        eprintln!("tessera-bench: {e}");
        return 2;
    }
    let errors: u64 = report.jobs.iter().map(|j| j.errors).sum();
    if errors > 0 {
        eprintln!("tessera-bench: {errors} operations failed");
        1
    } else {
        0
    }
}
