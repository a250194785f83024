//! What a job measured, printed like fio (text) or as JSON for machines.

use crate::hist::{LatencySummary, PERCENTILES};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    /// User and system CPU of this process as a percentage of one core over the job's wall time
    /// (200% = both cores of a 2-core machine busy), as fio reports it.
    pub usr_pct: f64,
    pub sys_pct: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassReport {
    pub ops: u64,
    pub errors: u64,
    pub lat_us: LatencySummary,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct JobReport {
    pub jobname: String,
    pub kind: String,
    /// The job's settings as run (after defaults), for the record.
    pub settings: BTreeMap<String, String>,
    pub ops: u64,
    pub errors: u64,
    pub runtime_s: f64,
    pub ops_per_s: f64,
    /// Bytes moved: read from disk (rawio, scan, query) or ingested (ingest), or memory read (membw).
    pub bytes: u64,
    pub bw_bytes_per_s: f64,
    pub lat_us: LatencySummary,
    pub cpu: Cpu,
    pub classes: BTreeMap<String, ClassReport>,
    pub error_codes: BTreeMap<String, u64>,
    /// The first few error messages, verbatim.
    pub error_samples: Vec<String>,
    /// Kind-specific figures (named with their unit).
    pub extra: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub tessera_bench: String,
    pub jobfile: String,
    pub host: String,
    pub cores: usize,
    pub jobs: Vec<JobReport>,
}

fn bandwidth(bytes_per_s: f64) -> String {
    if bytes_per_s >= (1u64 << 30) as f64 {
        format!("{:.2} GiB/s", bytes_per_s / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB/s", bytes_per_s / (1u64 << 20) as f64)
    }
}

/// Microseconds, in the unit that reads best.
fn latency(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.1}us")
    }
}

fn percentiles(summary: &LatencySummary) -> String {
    PERCENTILES
        .iter()
        .map(|p| {
            let key = crate::hist::percentile_key(*p);
            format!(
                "p{key}={}",
                latency(summary.percentiles.get(&key).copied().unwrap_or(0.0))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl JobReport {
    /// fio-like text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "{}: (kind={}) {}",
            self.jobname,
            self.kind,
            settings.join(" ")
        );
        let _ = writeln!(
            out,
            "  ops: {} in {:.2}s, {:.1} ops/s, errors={}",
            self.ops, self.runtime_s, self.ops_per_s, self.errors
        );
        if self.bytes > 0 {
            let _ = writeln!(
                out,
                "  bw: {} ({:.0} B/s), {:.1} MiB in all",
                bandwidth(self.bw_bytes_per_s),
                self.bw_bytes_per_s,
                self.bytes as f64 / (1u64 << 20) as f64
            );
        }
        if self.lat_us.max > 0.0 {
            let l = &self.lat_us;
            let _ = writeln!(
                out,
                "  lat: min={}, max={}, avg={}, stdev={}",
                latency(l.min),
                latency(l.max),
                latency(l.mean),
                latency(l.stdev)
            );
            let _ = writeln!(out, "  lat percentiles: {}", percentiles(l));
        }
        let _ = writeln!(
            out,
            "  cpu: usr={:.1}%, sys={:.1}%",
            self.cpu.usr_pct, self.cpu.sys_pct
        );
        for (class, report) in &self.classes {
            let _ = writeln!(
                out,
                "  {class:<12} ops={:<7} errors={:<4} avg={} {}",
                report.ops,
                report.errors,
                latency(report.lat_us.mean),
                percentiles(&report.lat_us)
            );
        }
        for (name, value) in &self.extra {
            let _ = writeln!(out, "  {name} = {value:.3}");
        }
        if !self.error_codes.is_empty() {
            let codes: Vec<String> = self
                .error_codes
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            let _ = writeln!(out, "  errors by code: {}", codes.join(", "));
            for sample in &self.error_samples {
                let _ = writeln!(out, "    e.g. {sample}");
            }
        }
        out
    }
}
