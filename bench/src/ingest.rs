//! `kind=ingest`: `numjobs` parallel streams each import batches of about `bs` bytes of raw
//! event data (Arrow in memory; default 100m) into `table`, one commit per batch, until
//! `size` bytes in all, `loops` batches per stream, or `runtime`. A batch's latency runs from
//! the first byte sent to the commit's acknowledgement. Batches are generated once per stream
//! before the clock starts (generation is not what is measured) and sent again each time.

use crate::job::{Job, JobError, Stop};
use crate::report::JobReport;
use crate::run::{closed_loop, Outcome, Pacer};
use crate::target::{create_table, Target, User};
use arrow_array::RecordBatch;
use std::collections::BTreeMap;
use std::time::Instant;
use tessera_storage_engine::gen::{events_chunk, CHUNK_ROWS};

pub fn run(job: &Job, progress: bool) -> Result<JobReport, JobError> {
    let streams = job.size_or("numjobs", 1)?.max(1) as usize;
    let batch_bytes = job.size_or("bs", 100 << 20)?.max(1);
    let table = job.str_or("table", "ingest").to_owned();
    let seed = job.size_or("seed", 42)?;
    let stop = match (job.size("size")?, job.has("runtime") || job.has("loops")) {
        (Some(_), true) => {
            return Err(job.invalid("size", "give size= or runtime=/loops=, not both"))
        }
        (Some(size), false) => {
            Stop::Loops(size.div_ceil(batch_bytes).div_ceil(streams as u64).max(1))
        }
        (None, _) => job.stop()?,
    };
    let target = Target::open(job, streams)?;
    let users: Vec<User<'_>> = (0..streams)
        .map(|_| target.user())
        .collect::<Result<_, _>>()
        .map_err(|(_, m)| job.invalid("target", format!("cannot connect: {m}")))?;
    if let User::Remote { session, .. } = &users[0] {
        futures::executor::block_on(async {
            match session.describe(&table).await {
                Err(e) if e.code() == "not_found" => create_table(session, &table).await,
                Err(e) => Err(e.to_string()),
                Ok(_) => Ok(()),
            }
        })
        .map_err(|m| job.invalid("table", m))?;
    }
    let batches: Vec<(Vec<RecordBatch>, u64, u64)> = (0..streams as u64)
        .map(|stream| generate(batch_bytes, seed, stream))
        .collect();
    let rows_per_batch = batches[0].2;
    let workers: Vec<_> = users
        .iter()
        .zip(&batches)
        .map(|(user, (batches, bytes, _))| {
            let table = &table;
            move |_| {
                let started = Instant::now();
                let result = user.import(table, batches);
                let latency = Some(started.elapsed());
                match result {
                    Ok(()) => Outcome {
                        class: "batch",
                        bytes: *bytes,
                        latency,
                        error: None,
                    },
                    Err(error) => Outcome {
                        class: "batch",
                        bytes: 0,
                        latency,
                        error: Some(error),
                    },
                }
            }
        })
        .collect();
    let collected = closed_loop(
        &job.name,
        workers,
        Pacer::new(stop, job.size("rate_iops")?, streams),
        progress,
    );
    let elapsed = collected.elapsed.as_secs_f64().max(1e-9);
    let mut settings = BTreeMap::new();
    settings.insert("target".into(), job.str_or("target", "embedded").to_owned());
    settings.insert("streams".into(), streams.to_string());
    settings.insert("batch_bytes".into(), batches[0].1.to_string());
    settings.insert("table".into(), table.clone());
    let mut report = collected.into_report(&job.name, "ingest", settings);
    report.extra.insert(
        "rows_per_s".into(),
        report.ops as f64 * rows_per_batch as f64 / elapsed,
    );
    report
        .extra
        .insert("rows_per_batch".into(), rows_per_batch as f64);
    Ok(report)
}

/// Generated event chunks holding at least `bytes` of column data (values, offsets, validity;
/// not allocator slack): (chunks, bytes, rows). Like live events, a batch covers about one day
/// (stream `stream` gets day `stream`), so it lands in one or two date partitions.
fn generate(bytes: u64, seed: u64, stream: u64) -> (Vec<RecordBatch>, u64, u64) {
    let size = |batch: &RecordBatch| -> u64 {
        batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
            .sum()
    };
    let sample = events_chunk(0, 4096, 4096, seed);
    let rows_needed = bytes.div_ceil((size(&sample) / 4096).max(1)).max(1);
    // The generator spreads `total` rows over its year: one batch's rows make one day.
    let total = rows_needed * 366;
    let first_row = (stream % 366) * rows_needed;
    let (mut batches, mut written, mut rows) = (Vec::new(), 0u64, 0u64);
    while written < bytes {
        let count = CHUNK_ROWS.min(rows_needed.saturating_sub(rows).max(1024));
        let batch = events_chunk(first_row + rows, count, total, seed);
        written += size(&batch);
        rows += batch.num_rows() as u64;
        batches.push(batch);
    }
    (batches, written, rows)
}
