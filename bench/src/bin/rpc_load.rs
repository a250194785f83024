//! `rpc_load`: N concurrent clients, each with its own connection, run the spec's query mix
//! against a server for a fixed time (10% point lookups, 30% one-month COUNTs, 40% SUM GROUP BY
//! category, 20% per-day per-category AVG; parameters drawn from a seed) and report throughput,
//! latency percentiles and errors by code. It exits non-zero if any query failed.
//!
//! `cargo run --release -p tessera-bench --bin rpc_load -- --addr 127.0.0.1:7070 --token T --clients 100 --seconds 30`

use clap::Parser;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: String,
    #[arg(long, env = "TESSERA_TOKEN")]
    token: String,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Rows in the events table (point lookups draw ids below it).
    #[arg(long, default_value_t = 20_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// xorshift64*: deterministic per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Days of the generated data set (2023-07-01 plus 0..366).
fn date(day: u64) -> String {
    let days_before_month = [31u64, 31, 30, 31, 30, 31, 31, 29, 31, 30, 31, 30];
    let (mut year, mut month, mut day) = (2023, 7, day);
    for length in days_before_month {
        if day < length {
            break;
        }
        day -= length;
        month += 1;
        if month == 13 {
            month = 1;
            year += 1;
        }
    }
    format!("{year}-{month:02}-{:02}", day + 1)
}

fn query(kind: &str, rng: &mut Rng, rows: u64) -> String {
    match kind {
        "point" => format!("SELECT * FROM events WHERE id = {}", rng.next() % rows + 1),
        "range_count" => {
            let start = rng.next() % 330;
            format!(
                "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '{}' AND '{} 23:59:59'",
                date(start),
                date(start + 30)
            )
        }
        "group_by" => "SELECT category, SUM(amount) FROM events GROUP BY category".into(),
        _ => format!(
            "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '{}' GROUP BY DATE(timestamp), category",
            date(rng.next() % 300)
        ),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|client_index| {
            let (addr, token, rows) = (args.addr.clone(), args.token.clone(), args.rows);
            let seed = args.seed ^ (client_index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            std::thread::spawn(move || {
                futures::executor::block_on(async move {
                    let mut latencies: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
                    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                    let client = tessera_rpc::Client::connect(&addr)
                        .await
                        .map_err(|e| e.to_string())?;
                    let session = client.login(&token).await.map_err(|e| e.to_string())?;
                    let mut rng = Rng(seed | 1);
                    while Instant::now() < deadline {
                        let kind = match rng.next() % 10 {
                            0 => "point",
                            1..=3 => "range_count",
                            4..=7 => "group_by",
                            _ => "daily_avg",
                        };
                        let sql = query(kind, &mut rng, rows);
                        let begun = Instant::now();
                        match session.query_collect(&sql).await {
                            Ok(_) => latencies
                                .entry(kind)
                                .or_default()
                                .push(begun.elapsed().as_secs_f64() * 1e3),
                            Err(e) => *errors.entry(e.code().to_owned()).or_default() += 1,
                        }
                    }
                    Ok::<_, String>((latencies, errors))
                })
            })
        })
        .collect();
    let mut latencies: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let (l, e) = worker.join().map_err(|_| "a client thread panicked")??;
        for (kind, values) in l {
            latencies.entry(kind).or_default().extend(values);
        }
        for (code, count) in e {
            *errors.entry(code).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let all: Vec<f64> = latencies.values().flatten().copied().collect();
    println!(
        "{} clients, {:.1} s: {} queries ({:.0}/s), {} errors {:?}",
        args.clients,
        elapsed,
        all.len(),
        all.len() as f64 / elapsed,
        errors.values().sum::<u64>(),
        errors
    );
    println!(
        "{:<12} {:>8} {:>9} {:>9} {:>9}",
        "query", "count", "p50 ms", "p95 ms", "p99 ms"
    );
    latencies.insert("all", all);
    for (kind, values) in latencies.iter_mut() {
        values.sort_by(f64::total_cmp);
        println!(
            "{kind:<12} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            values.len(),
            percentile(values, 0.50),
            percentile(values, 0.95),
            percentile(values, 0.99)
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{} queries failed", errors.values().sum::<u64>()))
    }
}
