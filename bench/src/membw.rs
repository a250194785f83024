//! `kind=membw`: `numjobs` threads each sum a private buffer of `size` bytes (default 1 GiB)
//! of 64-bit words over and over: the memory read bandwidth that bounds decode and filter
//! throughput per core. One operation is one pass over the buffer.

use crate::job::{Job, JobError};
use crate::report::JobReport;
use crate::run::{closed_loop, Outcome, Pacer};
use std::collections::BTreeMap;

pub fn run(job: &Job, progress: bool) -> Result<JobReport, JobError> {
    let threads = job.size_or("numjobs", 1)?.max(1) as usize;
    let size = job.size_or("size", 1 << 30)?;
    if !(1 << 20..=64 << 30).contains(&size) {
        return Err(job.invalid("size", format!("size={size}: 1m to 64g")));
    }
    let words = (size / 8) as usize;
    let buffers: Vec<Vec<u64>> = (0..threads)
        .map(|t| (0..words as u64).map(|i| i ^ t as u64).collect())
        .collect();
    let workers: Vec<_> = buffers
        .iter()
        .map(|buffer| {
            move |_| {
                std::hint::black_box(sum(std::hint::black_box(buffer)));
                Outcome {
                    class: "pass",
                    bytes: (buffer.len() * 8) as u64,
                    latency: None,
                    error: None,
                }
            }
        })
        .collect();
    let collected = closed_loop(
        &job.name,
        workers,
        Pacer::new(job.stop()?, None, threads),
        progress,
    );
    let mut settings = BTreeMap::new();
    settings.insert("threads".into(), threads.to_string());
    settings.insert("size".into(), size.to_string());
    let mut report = collected.into_report(&job.name, "membw", settings);
    report.extra.insert(
        "per_thread_bytes_per_s".into(),
        report.bw_bytes_per_s / threads as f64,
    );
    Ok(report)
}

/// Eight independent accumulators so the loop is bound by loads, not by one add chain.
fn sum(words: &[u64]) -> u64 {
    let mut lanes = [0u64; 8];
    let chunks = words.chunks_exact(8);
    let tail: u64 = chunks.remainder().iter().fold(0, |a, &w| a.wrapping_add(w));
    for chunk in chunks {
        for (lane, &word) in lanes.iter_mut().zip(chunk) {
            *lane = lane.wrapping_add(word);
        }
    }
    lanes.iter().fold(tail, |a, &l| a.wrapping_add(l))
}
