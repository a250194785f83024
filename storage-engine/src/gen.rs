//! Deterministic generator of the spec's `events` table. The same `(rows, seed)` always yields
//! the same bytes of data, whatever the thread count: every chunk of rows is generated from its
//! own PRNG stream (SplitMix64 seeded from the seed and the chunk number).
//!
//! Columns: `id` int64 (unique, increasing), `timestamp` (µs UTC, one year from 2023-07-01,
//! non-decreasing), `tenant_id` string, `category` string (20 values, skewed), `amount` float64
//! (cents, ~2% NULL), `user_id` int64, `status` string (4 values), `payload` string (~50 bytes).

use crate::error::{Error, Result};
use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CHUNK_ROWS: u64 = 65_536;
/// 2023-07-01T00:00:00Z in microseconds.
pub const START_MICROS: i64 = 1_688_169_600_000_000;
pub const SPAN_MICROS: i64 = 366 * 86_400_000_000;
/// Rows per output file when writing to a directory.
const ROWS_PER_FILE: u64 = 4_194_304;

pub const CATEGORIES: [&str; 20] = [
    "electronics",
    "books",
    "clothing",
    "home",
    "garden",
    "toys",
    "sports",
    "beauty",
    "grocery",
    "automotive",
    "music",
    "movies",
    "health",
    "jewelry",
    "office",
    "pets",
    "shoes",
    "tools",
    "travel",
    "software",
];
pub const STATUSES: [&str; 4] = ["ok", "pending", "error", "refunded"];
const TENANTS: usize = 16;

pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("user_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        ((self.next() as u128 * bound as u128) >> 64) as u64
    }
}

/// Rows `first..first+count` of the table (count ≤ CHUNK_ROWS recommended).
pub fn events_chunk(first: u64, count: u64, total: u64, seed: u64) -> RecordBatch {
    let mut rng = SplitMix64(seed ^ (first / CHUNK_ROWS).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let count = count as usize;
    let step = SPAN_MICROS as f64 / total.max(1) as f64;
    let mut ids = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    let mut users = Vec::with_capacity(count);
    let mut tenants = StringBuilder::with_capacity(count, count * 10);
    let mut categories = StringBuilder::with_capacity(count, count * 10);
    let mut statuses = StringBuilder::with_capacity(count, count * 8);
    let mut payloads = StringBuilder::with_capacity(count, count * 52);
    let mut amounts = Float64Builder::with_capacity(count);
    let mut payload = String::with_capacity(64);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in 0..count as u64 {
        let row = first + i;
        ids.push(row as i64 + 1);
        // Row r lies in [r*step, (r+1)*step): increasing, with sub-step jitter.
        let jitter = rng.below(step.max(1.0) as u64) as f64;
        times.push(START_MICROS + (row as f64 * step + jitter.min(step - 1.0).max(0.0)) as i64);
        tenants.append_value(format!("tenant-{:02}", rng.below(TENANTS as u64)));
        // Skew: category k has weight ~1/(k+1) (Zipf-like).
        let draw = rng.below(1 << 20) as f64 / (1u64 << 20) as f64;
        let index = ((CATEGORIES.len() as f64 + 1.0).powf(draw) - 1.0) as usize;
        categories.append_value(CATEGORIES[index.min(CATEGORIES.len() - 1)]);
        if rng.below(50) == 0 {
            amounts.append_null();
        } else {
            amounts.append_value(rng.below(100_000) as f64 / 100.0);
        }
        users.push(rng.below(1_000_000) as i64 + 1);
        let status = match rng.below(100) {
            0..=84 => 0,
            85..=94 => 1,
            95..=97 => 2,
            _ => 3,
        };
        statuses.append_value(STATUSES[status]);
        payload.clear();
        let length = 40 + rng.below(21) as usize;
        let mut bits = rng.next();
        for j in 0..length {
            if j % 10 == 0 {
                bits = rng.next();
            }
            payload.push(ALPHABET[(bits & 63) as usize] as char);
            bits >>= 6;
        }
        payloads.append_value(&payload);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(times)),
        Arc::new(tenants.finish()),
        Arc::new(categories.finish()),
        Arc::new(amounts.finish()),
        Arc::new(Int64Array::from(users)),
        Arc::new(statuses.finish()),
        Arc::new(payloads.finish()),
    ];
    RecordBatch::try_new(events_schema(), columns).expect("generator builds a valid batch")
}

/// Writes `rows` events to `out`: one file if it ends in `.parquet`, else numbered files in a
/// directory. `threads` generate chunks in parallel; output is identical for any thread count.
/// `progress(rows_done)` is called as chunks are written. Returns the files written.
pub fn write_events(
    out: &Path,
    rows: u64,
    seed: u64,
    threads: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<PathBuf>> {
    let single = out.extension().is_some_and(|e| e == "parquet");
    if !single {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    }
    let chunks = rows.div_ceil(CHUNK_ROWS);
    let threads = threads.max(1) as u64;
    let properties = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut rows_in_file = 0u64;
    let mut done = 0u64;
    let write_error = |path: &Path, e: parquet::errors::ParquetError| {
        Error::Import(format!("writing {}: {e}", path.display()))
    };
    std::thread::scope(|scope| -> Result<()> {
        let mut receivers = Vec::new();
        for worker in 0..threads {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
            receivers.push(receiver);
            scope.spawn(move || {
                let mut chunk = worker;
                while chunk < chunks {
                    let first = chunk * CHUNK_ROWS;
                    let count = CHUNK_ROWS.min(rows - first);
                    if sender.send(events_chunk(first, count, rows, seed)).is_err() {
                        return;
                    }
                    chunk += threads;
                }
            });
        }
        for chunk in 0..chunks {
            let batch = receivers[(chunk % threads) as usize]
                .recv()
                .map_err(|_| Error::Internal("generator thread stopped".into()))?;
            if writer.is_none() || (!single && rows_in_file >= ROWS_PER_FILE) {
                if let Some(w) = writer.take() {
                    let path = files.last().cloned().unwrap_or_default();
                    w.close().map_err(|e| write_error(&path, e))?;
                }
                let path = if single {
                    out.to_owned()
                } else {
                    out.join(format!("events-{:05}.parquet", files.len()))
                };
                let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
                writer = Some(
                    ArrowWriter::try_new(file, events_schema(), Some(properties.clone()))
                        .map_err(|e| write_error(&path, e))?,
                );
                files.push(path);
                rows_in_file = 0;
            }
            if let Some(w) = writer.as_mut() {
                let path = files.last().cloned().unwrap_or_default();
                w.write(&batch).map_err(|e| write_error(&path, e))?;
            }
            rows_in_file += batch.num_rows() as u64;
            done += batch.num_rows() as u64;
            progress(done);
        }
        drop(receivers);
        Ok(())
    })?;
    if let Some(w) = writer {
        let path = files.last().cloned().unwrap_or_default();
        w.close().map_err(|e| write_error(&path, e))?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_deterministic_and_sorted() {
        let a = events_chunk(0, 1000, 10_000, 7);
        let b = events_chunk(0, 1000, 10_000, 7);
        assert_eq!(a, b);
        let times = a
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert!(times.values().windows(2).all(|w| w[0] <= w[1]));
        let next = events_chunk(1000, 1000, 10_000, 7);
        let next_times = next
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert!(times.value(999) <= next_times.value(0));
    }
}
