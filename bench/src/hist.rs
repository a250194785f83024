//! Latency recording: an HDR histogram per worker (nanoseconds, 3 significant digits, so any
//! recorded value is reported within 0.1%), merged at the end into fio-style summaries.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The percentiles every report shows, as fio's defaults do.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 95.0, 99.0, 99.9];

#[derive(Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            // Auto-resizing from 1 ns: no value is ever refused as too large.
            histogram: Histogram::new(3).expect("3 significant digits is a valid precision"),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        // With auto-resize, recording only fails for values beyond u64 range, which is impossible here.
        let _ = self.histogram.record(nanos);
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at percentile `p` (0..=100), in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        self.histogram.value_at_percentile(p) as f64 / 1e3
    }

    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min: self.histogram.min() as f64 / 1e3,
            max: self.histogram.max() as f64 / 1e3,
            mean: self.histogram.mean() / 1e3,
            stdev: self.histogram.stdev() / 1e3,
            percentiles: PERCENTILES
                .iter()
                .map(|&p| (percentile_key(p), self.percentile_us(p)))
                .collect(),
        }
    }
}

/// `50.0` → "50", `99.9` → "99.9".
pub fn percentile_key(p: f64) -> String {
    format!("{p}")
}

/// Latency statistics in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub stdev: f64,
    pub percentiles: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform 1..=100_000 µs: the p-th percentile is p% of 100 ms, to the histogram's 0.1%.
    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut latencies = Latencies::new();
        for us in 1..=100_000u64 {
            latencies.record(Duration::from_micros(us));
        }
        let summary = latencies.summary();
        for (p, expected) in [
            ("50", 50_000.0),
            ("90", 90_000.0),
            ("95", 95_000.0),
            ("99", 99_000.0),
            ("99.9", 99_900.0),
        ] {
            let got = summary.percentiles[p];
            assert!(
                (got - expected).abs() <= expected * 0.001 + 1.0,
                "p{p}: {got} vs {expected}"
            );
        }
        assert!((summary.mean - 50_000.5).abs() < 50.0, "{}", summary.mean);
        // Standard deviation of a discrete uniform distribution on 1..=n: sqrt((n^2 - 1) / 12).
        let stdev = ((100_000f64.powi(2) - 1.0) / 12.0).sqrt();
        assert!(
            (summary.stdev - stdev).abs() < stdev * 0.002,
            "{}",
            summary.stdev
        );
        assert!((summary.min - 1.0).abs() < 0.01);
        assert!((summary.max - 100_000.0).abs() < 100.0);
    }

    /// Exponential latencies (mean 2 ms) drawn by inverse transform: p-th percentile is
    /// -mean * ln(1 - p/100). Merging per-worker histograms must give the same answer.
    #[test]
    fn percentiles_of_an_exponential_distribution_across_merged_workers() {
        let mean_us = 2_000.0;
        let mut workers = vec![Latencies::new(), Latencies::new(), Latencies::new()];
        let n = 300_000;
        for i in 0..n {
            let u = (i as f64 + 0.5) / n as f64;
            let us = -mean_us * (1.0 - u).ln();
            workers[i % 3].record(Duration::from_secs_f64(us / 1e6));
        }
        let mut all = Latencies::new();
        for worker in &workers {
            all.merge(worker);
        }
        assert_eq!(all.count(), n as u64);
        for p in PERCENTILES {
            let expected = -mean_us * (1.0 - p / 100.0).ln();
            let got = all.percentile_us(p);
            assert!(
                (got - expected).abs() <= expected * 0.002 + 0.01,
                "p{p}: {got} vs {expected}"
            );
        }
        assert!((all.summary().mean - mean_us).abs() < mean_us * 0.01);
    }

    #[test]
    fn empty_and_extreme_values() {
        let empty = Latencies::new().summary();
        assert_eq!(empty.max, 0.0);
        let mut latencies = Latencies::new();
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(3600));
        let summary = latencies.summary();
        assert!(summary.min <= 0.002);
        assert!((summary.max - 3.6e9).abs() < 3.6e6);
    }
}
