//! `tessera-bench spec`: runs the spec's four queries on a generated events table, cold (caches
//! emptied before each run; O_DIRECT bypasses the page cache) and warm (served from the buffer
//! pool), and prints medians. With `--duckdb`, runs the same queries in DuckDB (Python package)
//! on the same Parquet data in the same run and prints the ratios.

use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tessera_storage_engine::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{gen, source, Engine, EngineConfig};

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    about = "Spec-query benchmark: Tessera warm/cold medians, DuckDB side run"
)]
struct Args {
    /// Working directory (the generated data is reused across runs).
    #[arg(long, default_value = "./bench-data")]
    dir: PathBuf,
    #[arg(long, default_value_t = 20_000_000)]
    rows: u64,
    /// Runs per query and mode.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Buffer pool budget in MiB.
    #[arg(long, default_value_t = 4096)]
    pool_mib: u64,
    /// Also run DuckDB (pip package `duckdb`) on the same data with the same thread count.
    #[arg(long)]
    duckdb: bool,
}

pub const QUERIES: [(&str, &str); 4] = [
    ("point lookup by id", "SELECT * FROM events WHERE id = 12345678"),
    ("time-range COUNT", "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '2024-01-01' AND '2024-01-31 23:59:59'"),
    ("SUM(amount) GROUP BY category", "SELECT category, SUM(amount) FROM events GROUP BY category"),
    (
        "per-day per-category AVG",
        "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '2024-01-01' GROUP BY DATE(timestamp), category ORDER BY DATE(timestamp)",
    ),
];

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn prepare(dir: &Path, rows: u64) -> Result<(PathBuf, PathBuf), String> {
    let parquet = dir.join(format!("events-{rows}"));
    let data = dir.join(format!("data-{rows}"));
    if !data
        .join("bench")
        .join("events")
        .join("_manifest.json")
        .exists()
    {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&parquet);
        let _ = std::fs::remove_dir_all(&data);
        let started = Instant::now();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let files = gen::write_events(&parquet, rows, 42, threads, &mut |_| {})
            .map_err(|e| e.to_string())?;
        eprintln!("generated {rows} rows in {:.1?}", started.elapsed());
        let started = Instant::now();
        let first = source::open(&files[0]).map_err(|e| e.to_string())?;
        let mut writer = TableWriter::open(
            &data,
            "bench",
            "events",
            &first.schema,
            &ImportOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        for file in &files {
            for batch in source::open(file).map_err(|e| e.to_string())?.batches {
                writer
                    .write(&batch.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        let summary = writer.finish().map_err(|e| e.to_string())?;
        eprintln!(
            "imported into {} files ({:.0} MiB) in {:.1?}",
            summary.files,
            summary.bytes as f64 / 1048576.0,
            started.elapsed()
        );
    }
    Ok((parquet, data))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let (parquet, data) = prepare(&args.dir, args.rows)?;
    let mut config = EngineConfig::new(&data);
    config.buffer_pool_bytes = args.pool_mib << 20;
    let cores = config.cores;
    let engine = Engine::open(config).map_err(|e| e.to_string())?;
    let point = format!("SELECT * FROM events WHERE id = {}", args.rows / 2 + 7);
    let mut results = Vec::new();
    for (name, sql) in QUERIES {
        let sql = if name.starts_with("point") {
            point.clone()
        } else {
            sql.to_owned()
        };
        let mut cold = Vec::new();
        for _ in 0..args.runs {
            engine.clear_caches();
            let result = engine.sql("bench", &sql).map_err(|e| e.to_string())?;
            cold.push(result.stats.elapsed.as_secs_f64() * 1e3);
        }
        let mut warm = Vec::new();
        let mut last = None;
        for _ in 0..args.runs {
            let result = engine.sql("bench", &sql).map_err(|e| e.to_string())?;
            warm.push(result.stats.elapsed.as_secs_f64() * 1e3);
            last = Some(result);
        }
        let last = last.ok_or("no runs")?;
        eprintln!(
            "{name}: {} rows, warm read {} bytes, pool hits {} misses {}",
            last.num_rows(),
            last.stats.scan.bytes_read,
            last.stats.scan.pool_hits,
            last.stats.scan.pool_misses
        );
        results.push((name, sql, median(cold), median(warm)));
    }
    let rss = peak_rss_mib();
    let duckdb = if args.duckdb {
        run_duckdb(&parquet, &results, cores, args.runs)?
    } else {
        Vec::new()
    };
    println!(
        "\nTessera spec queries: {} rows, {cores} cores, pool {} MiB, medians of {} runs",
        args.rows, args.pool_mib, args.runs
    );
    println!(
        "{:<32} {:>12} {:>12} {:>14} {:>14}",
        "query", "cold ms", "warm ms", "duckdb ms", "duckdb/warm"
    );
    for (i, (name, _, cold, warm)) in results.iter().enumerate() {
        match duckdb.get(i) {
            Some(d) => println!(
                "{name:<32} {cold:>12.2} {warm:>12.2} {d:>14.2} {:>13.2}x",
                d / warm
            ),
            None => println!(
                "{name:<32} {cold:>12.2} {warm:>12.2} {:>14} {:>14}",
                "-", "-"
            ),
        }
    }
    println!(
        "peak RSS {rss:.0} MiB (buffer pool budget {} MiB)",
        args.pool_mib
    );
    Ok(())
}

/// Runs the queries in DuckDB over the generated Parquet files (warm medians, same thread count).
fn run_duckdb(
    parquet: &Path,
    results: &[(&str, String, f64, f64)],
    threads: usize,
    runs: usize,
) -> Result<Vec<f64>, String> {
    let queries: Vec<String> = results
        .iter()
        .map(|(_, sql, _, _)| sql.replace("DATE(timestamp)", "CAST(timestamp AS DATE)"))
        .collect();
    let script = format!(
        r#"
import duckdb, json, statistics, sys, time
con = duckdb.connect()
con.execute("SET threads={threads}")
con.execute("CREATE VIEW events AS SELECT * FROM read_parquet('{glob}')")
out = []
for q in json.loads(sys.argv[1]):
    con.execute(q).fetchall()
    times = []
    for _ in range({runs}):
        t = time.perf_counter(); con.execute(q).fetchall(); times.append((time.perf_counter() - t) * 1e3)
    out.append(statistics.median(times))
print(json.dumps(out))
"#,
        glob = parquet.join("*.parquet").display()
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(serde_json::to_string(&queries).map_err(|e| e.to_string())?)
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "duckdb run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("duckdb output: {e}"))
}
