//! `tessera-bench agent`: Tessera's side of the peer comparison (`bench/peers/run.py`). It keeps
//! one engine open (and, with `--rpc`, a Cap'n Proto server on loopback over the same engine and
//! a logged-in client) and answers one JSON request per stdin line, so the driver can interleave
//! Tessera's runs with the peers' in one process tree:
//!
//! request  `{"id": 7, "engine": "tessera" | "tessera-rpc", "sql": "...", "cold": false}`
//! reply    `{"id": 7, "ms": 12.3, "columns": [..], "rows": [[..], ..], "error": null}`
//!
//! `ms` is wall time from submission until the whole result is in this process (decoded from
//! Arrow IPC for RPC). `cold` empties the buffer pool and partial-result cache first (untimed;
//! file metadata is kept, as a running node keeps it; `"first_open": true` empties the metadata
//! cache too). Reads are O_DIRECT, so the OS page cache never serves Tessera. Values: numbers, strings, null,
//! DATE as `YYYY-MM-DD`, TIMESTAMP as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC). `{"cmd": "quit"}` ends.

use crate::job;
use crate::target::{Target, User};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Tessera data directory holding the table.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Also serve RPC on loopback and answer `"engine": "tessera-rpc"` through it.
    #[arg(long)]
    rpc: bool,
    /// Buffer pool size (e.g. 4g).
    #[arg(long, default_value = "4g")]
    pool: String,
    /// Executors (default: every core).
    #[arg(long)]
    cores: Option<usize>,
}

pub fn run(args: AgentArgs) -> Result<(), String> {
    let mut text = format!(
        "[agent]\nkind=query\ntarget={}\ndata={}\ntenant={}\npool={}\n",
        if args.rpc { "server" } else { "embedded" },
        args.data.display(),
        args.tenant,
        args.pool
    );
    if let Some(cores) = args.cores {
        text.push_str(&format!("cores={cores}\n"));
    }
    let jobs = job::parse_with_env(&text, "agent", &|_| None).map_err(|e| e.to_string())?;
    let target = Target::open(&jobs[0], 16).map_err(|e| e.to_string())?;
    let engine = target.engine().ok_or("the agent needs a local engine")?;
    let remote = if args.rpc {
        Some(target.user().map_err(|(_, m)| m)?)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let ready = json!({"ready": true, "cores": engine.cores(), "version": env!("CARGO_PKG_VERSION"), "rpc": args.rpc});
    writeln!(out, "{ready}")
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Value>(&line) {
            Err(e) => json!({"id": null, "error": format!("bad request: {e}")}),
            Ok(request) if request["cmd"] == "quit" => break,
            Ok(request) => {
                let id = request["id"].clone();
                match answer(&request, &target, remote.as_ref()) {
                    Ok((ms, columns, rows)) => {
                        json!({"id": id, "ms": ms, "columns": columns, "rows": rows, "error": null})
                    }
                    Err(error) => json!({"id": id, "ms": null, "error": error}),
                }
            }
        };
        writeln!(out, "{reply}")
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn answer(
    request: &Value,
    target: &Target,
    remote: Option<&User<'_>>,
) -> Result<(f64, Vec<String>, Vec<Value>), String> {
    let sql = request["sql"].as_str().ok_or("request without \"sql\"")?;
    let engine = target.engine().ok_or("no engine")?;
    if request["first_open"].as_bool().unwrap_or(false) {
        engine.clear_all_caches();
    } else if request["cold"].as_bool().unwrap_or(false) {
        engine.clear_caches();
    }
    let (batches, ms) = match request["engine"].as_str() {
        Some("tessera") => {
            let started = Instant::now();
            let result = engine.sql(tenant(target), sql).map_err(|e| e.to_string())?;
            (result.batches, started.elapsed().as_secs_f64() * 1e3)
        }
        Some("tessera-rpc") => {
            let user = remote.ok_or("the agent was started without --rpc")?;
            let started = Instant::now();
            let answer = user.query(sql).map_err(|(_, m)| m)?;
            (answer.batches, started.elapsed().as_secs_f64() * 1e3)
        }
        other => return Err(format!("unknown engine {other:?} (tessera or tessera-rpc)")),
    };
    let columns = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(batch_rows(batch)?);
    }
    Ok((ms, columns, rows))
}

fn tenant(target: &Target) -> &str {
    match target {
        Target::Embedded { tenant, .. } => tenant,
        Target::Remote { tenant, .. } => tenant,
    }
}

/// A batch as JSON rows (see the module comment for the value forms).
pub fn batch_rows(batch: &RecordBatch) -> Result<Vec<Value>, String> {
    let columns: Vec<Vec<Value>> = batch
        .columns()
        .iter()
        .map(|column| column_values(column.as_ref()))
        .collect::<Result<_, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| Value::Array(columns.iter().map(|c| c[row].clone()).collect()))
        .collect())
}

fn column_values(array: &dyn Array) -> Result<Vec<Value>, String> {
    if let DataType::Dictionary(_, _) = array.data_type() {
        let plain = arrow_cast::cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
        return column_values(plain.as_ref());
    }
    let value = |row: usize| -> Value {
        match array.data_type() {
            DataType::Int8 => json!(array.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => json!(array.as_primitive::<Int16Type>().value(row)),
            DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(row)),
            DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(row)),
            DataType::UInt32 => json!(array.as_primitive::<UInt32Type>().value(row)),
            DataType::UInt64 => json!(array.as_primitive::<UInt64Type>().value(row)),
            DataType::Float32 => json!(array.as_primitive::<Float32Type>().value(row)),
            DataType::Float64 => json!(array.as_primitive::<Float64Type>().value(row)),
            DataType::Boolean => json!(array.as_boolean().value(row)),
            DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => json!(array.as_string::<i64>().value(row)),
            DataType::Date32 => json!(date(array.as_primitive::<Date32Type>().value(row) as i64)),
            DataType::Timestamp(unit, _) => {
                let raw = match unit {
                    TimeUnit::Second => {
                        array.as_primitive::<TimestampSecondType>().value(row) * 1_000_000
                    }
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().value(row) * 1_000
                    }
                    TimeUnit::Microsecond => {
                        array.as_primitive::<TimestampMicrosecondType>().value(row)
                    }
                    TimeUnit::Nanosecond => {
                        array.as_primitive::<TimestampNanosecondType>().value(row) / 1_000
                    }
                };
                json!(timestamp(raw))
            }
            // Exact, as text: a JSON number would reach the harness as a float.
            DataType::Decimal128(precision, scale) => json!({
                "decimal": Decimal128Type::format_decimal(
                    array.as_primitive::<Decimal128Type>().value(row),
                    *precision,
                    *scale
                )
            }),
            _ => Value::Null,
        }
    };
    let supported = matches!(
        array.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Boolean
            | DataType::Decimal128(_, _)
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Date32
            | DataType::Timestamp(_, _)
    );
    if !supported {
        return Err(format!(
            "result type {} has no JSON form here",
            array.data_type()
        ));
    }
    Ok((0..array.len())
        .map(|row| {
            if array.is_null(row) {
                Value::Null
            } else {
                value(row)
            }
        })
        .collect())
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian; Howard Hinnant's algorithm).
pub fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC).
pub fn timestamp(micros: i64) -> String {
    let days = micros.div_euclid(86_400_000_000);
    let rest = micros.rem_euclid(86_400_000_000);
    let (seconds, fraction) = (rest / 1_000_000, rest % 1_000_000);
    format!(
        "{} {:02}:{:02}:{:02}.{fraction:06}",
        date(days),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        Date32Array, DictionaryArray, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use std::sync::Arc;

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(19_782), "2024-02-29");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(
            timestamp(1_688_169_600_000_000),
            "2023-07-01 00:00:00.000000"
        );
        assert_eq!(
            timestamp(1_704_153_599_123_456),
            "2024-01-01 23:59:59.123456"
        );
        assert_eq!(timestamp(-1), "1969-12-31 23:59:59.999999");
    }

    #[test]
    fn rows_carry_every_result_type_and_nulls() {
        let dictionary: DictionaryArray<Int32Type> = vec![Some("a"), None].into_iter().collect();
        let batch = RecordBatch::try_from_iter(vec![
            ("i", Arc::new(Int64Array::from(vec![Some(1), None])) as _),
            ("f", Arc::new(Float64Array::from(vec![1.5, 2.0])) as _),
            ("s", Arc::new(StringArray::from(vec!["x", "y"])) as _),
            ("d", Arc::new(dictionary) as _),
            ("day", Arc::new(Date32Array::from(vec![19_723, 0])) as _),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![0, 1_000_001])) as _,
            ),
        ])
        .unwrap();
        let rows = batch_rows(&batch).unwrap();
        assert_eq!(
            rows[0],
            json!([1, 1.5, "x", "a", "2024-01-01", "1970-01-01 00:00:00.000000"])
        );
        assert_eq!(
            rows[1],
            json!([
                null,
                2.0,
                "y",
                null,
                "1970-01-01",
                "1970-01-01 00:00:01.000001"
            ])
        );
    }
}
