//! `kind=ingest`: `numjobs` parallel streams each send batches of about `bs` bytes of raw event
//! data (Arrow in memory; default 100m) into `table` until `size` bytes in all, `loops` batches
//! per stream, or `runtime`. `path=wal` (the default) sends each batch through streaming
//! ingestion (`IngestStream.append`: acknowledged once in the node's write-ahead log and
//! fsynced); `path=import` imports it as one commit (`importBatches`, Parquet files published
//! under the table lock). A batch's latency runs from the first byte sent to the
//! acknowledgement. Batches are generated (and encoded as Arrow IPC) once per stream before the
//! clock starts and sent again each time under a new sequence number.

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
    let wal = match job.str_or("path", "wal") {
        "wal" => true,
        "import" => false,
        other => return Err(job.invalid("path", format!("{other}: expected wal or import"))),
    };
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
    match &users[0] {
        User::Remote { session, .. } => futures::executor::block_on(async {
            match session.describe(&table).await {
                Err(e) if e.code() == "not_found" => create_table(session, &table).await,
                Err(e) => Err(e.to_string()),
                Ok(_) => Ok(()),
            }
        })
        .map_err(|m| job.invalid("table", m))?,
        // Streaming ingestion needs the table first; an import creates it.
        User::Embedded { engine, tenant } if wal => {
            let schema = tessera_storage_engine::gen::events_schema();
            let writer = tessera_storage_engine::table::writer::TableWriter::open(
                engine.data_dir(),
                tenant,
                &table,
                &schema,
                &Default::default(),
            )
            .and_then(|w| w.finish());
            writer.map_err(|e| job.invalid("table", e.to_string()))?;
        }
        User::Embedded { .. } => {}
    }
    let batches: Vec<(Vec<RecordBatch>, u64, u64)> = (0..streams as u64)
        .map(|stream| generate(batch_bytes, seed, stream))
        .collect();
    let rows_per_batch = batches[0].2;
    let encoded: Vec<Vec<u8>> = if wal {
        batches.iter().map(|(b, _, _)| encode(b)).collect()
    } else {
        vec![Vec::new(); batches.len()]
    };
    // Producer names unique to this run: sequence numbers start at 0 again.
    let run = format!(
        "{:x}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let workers: Vec<_> = users
        .iter()
        .zip(&batches)
        .zip(&encoded)
        .enumerate()
        .map(|(index, ((user, (batches, bytes, _)), ipc))| {
            let table = &table;
            let producer = format!("bench-{run}-{index}");
            let (mut sequence, mut stream) = (0u64, None);
            move |_| {
                let started = Instant::now();
                let result = if wal {
                    sequence += 1;
                    user.ingest(table, &producer, sequence, ipc, &mut stream)
                } else {
                    user.import(table, batches)
                };
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
    settings.insert("path".into(), if wal { "wal" } else { "import" }.into());
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

/// One Arrow IPC stream holding `batches`.
fn encode(batches: &[RecordBatch]) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batches[0].schema())
        .expect("a schema of generated events encodes");
    for batch in batches {
        writer.write(batch).expect("generated events encode");
    }
    writer.finish().expect("generated events encode");
    writer.into_inner().expect("a Vec takes the bytes")
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
