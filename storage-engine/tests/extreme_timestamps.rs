//! Timestamps at the ends of the i64 microsecond range, imported and queried: every query answers
//! (a hang fails the test after a generous bound instead of blocking the suite) and agrees with a
//! direct computation. `GROUP BY DATE(ts)` used to loop forever on a value within a day of the
//! range's ends (the day's end bound wrapped, so the run length was 0).

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::value::MICROS_PER_DAY;
use tessera_storage_engine::{Engine, EngineConfig, QueryResult};

const EXTREMES: [i64; 8] = [
    i64::MIN,
    i64::MIN + 1,
    i64::MIN + MICROS_PER_DAY / 2,
    -1,
    0,
    i64::MAX - MICROS_PER_DAY / 2,
    i64::MAX - 1,
    i64::MAX,
];

fn setup() -> (tempfile::TempDir, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(EXTREMES.to_vec())),
            Arc::new(Int64Array::from(
                (0..EXTREMES.len() as i64).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    let mut writer =
        TableWriter::open(dir.path(), "acme", "t", &schema, &ImportOptions::default()).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.cores = 2;
    config.pin_cores = false;
    config.buffer_pool_bytes = 16 << 20;
    (dir, Arc::new(Engine::open(config).unwrap()))
}

/// Runs `sql`, failing (not hanging) when no answer comes within a minute.
fn run(engine: &Arc<Engine>, sql: &str) -> QueryResult {
    let (sender, receiver) = std::sync::mpsc::channel();
    let (engine, text) = (engine.clone(), sql.to_owned());
    std::thread::spawn(move || {
        let _ = sender.send(engine.sql("acme", &text));
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{sql}: {e}")),
        Err(_) => panic!("{sql}: no answer within 60 s (hang)"),
    }
}

#[test]
fn group_by_date_at_the_ends_of_the_range_answers_every_day() {
    let (_dir, engine) = setup();
    let result = run(
        &engine,
        "SELECT DATE(ts), COUNT(*) FROM t GROUP BY DATE(ts) ORDER BY DATE(ts)",
    );
    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for t in EXTREMES {
        *expected.entry(t.div_euclid(MICROS_PER_DAY)).or_default() += 1;
    }
    let mut got = Vec::new();
    for batch in &result.batches {
        let days = batch.column(0).as_primitive::<Date32Type>();
        let counts = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            got.push((i64::from(days.value(i)), counts.value(i)));
        }
    }
    assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
}

#[test]
fn filters_order_and_min_max_at_the_ends_of_the_range() {
    let (_dir, engine) = setup();
    let count = |sql: &str| -> i64 {
        run(&engine, sql).batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0)
    };
    assert_eq!(count("SELECT COUNT(*) FROM t WHERE ts < '1970-01-01'"), 4);
    assert_eq!(count("SELECT COUNT(*) FROM t WHERE ts >= '1970-01-01'"), 4);
    assert_eq!(
        count("SELECT COUNT(*) FROM t WHERE ts BETWEEN '1970-01-01' AND '2024-01-01'"),
        1
    );

    let result = run(&engine, "SELECT MIN(ts), MAX(ts) FROM t");
    let batch = &result.batches[0];
    assert_eq!(
        batch
            .column(0)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        i64::MIN
    );
    assert_eq!(
        batch
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        i64::MAX
    );

    for (order, expected) in [
        ("ASC", EXTREMES.to_vec()),
        ("DESC", {
            let mut v = EXTREMES.to_vec();
            v.reverse();
            v
        }),
    ] {
        let result = run(&engine, &format!("SELECT ts FROM t ORDER BY ts {order}"));
        let got: Vec<i64> = result
            .batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<TimestampMicrosecondType>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(got, expected, "ORDER BY ts {order}");
    }
}
