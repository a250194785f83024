//! MIN, MAX and COUNT without GROUP BY are answered from the manifest's file statistics where
//! every row of a file matches, and by scanning the files a filter cuts through; the answers
//! equal a direct computation over the generated rows, NULLs and integer extremes included.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array};
use std::sync::Arc;
use tessera_storage_engine::table::writer::ImportOptions;

const DAY: i64 = 86_400_000_000;

#[test]
fn min_max_and_counts_come_from_statistics_and_match_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    // 20 days, one file each; `v` holds NULLs and both ends of the int64 range.
    let rows = 2_000i64;
    let times: Vec<i64> = (0..rows)
        .map(|i| support::DAY_MICROS + i * (20 * DAY / rows))
        .collect();
    let values: Vec<Option<i64>> = (0..rows)
        .map(|i| match i % 7 {
            0 => None,
            1 if i == 701 => Some(i64::MIN),
            2 if i == 1_500 => Some(i64::MAX),
            _ => Some(i * 3 - 1_000),
        })
        .collect();
    support::write_table(
        dir.path(),
        "acme",
        "t",
        vec![
            ("ts", support::timestamps(times.clone())),
            ("v", Arc::new(Int64Array::from(values.clone())) as ArrayRef),
        ],
        &ImportOptions::default(),
    );
    let engine = support::engine(dir.path());
    engine.clear_caches();
    let all = engine
        .sql(
            "acme",
            "SELECT MIN(v), MAX(v), COUNT(v), COUNT(*), MIN(ts), MAX(ts) FROM t",
        )
        .unwrap();
    let scan = &all.stats.scan;
    assert_eq!(scan.rows_from_statistics, rows as u64, "{scan:?}");
    assert_eq!(scan.bytes_read, 0, "nothing is read: {scan:?}");
    let batch = &all.batches[0];
    let int = |c: usize| batch.column(c).as_primitive::<Int64Type>().value(0);
    let present: Vec<i64> = values.iter().flatten().copied().collect();
    assert_eq!(int(0), i64::MIN);
    assert_eq!(int(1), i64::MAX);
    assert_eq!(int(2), present.len() as i64);
    assert_eq!(int(3), rows);
    let ts = |c: usize| {
        batch
            .column(c)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0)
    };
    assert_eq!(ts(4), times[0]);
    assert_eq!(ts(5), times[rows as usize - 1]);

    // A filter through the middle of a day: the files it cuts are scanned, the rest proven.
    let cut = support::DAY_MICROS + 7 * DAY + DAY / 2;
    let sql = format!("SELECT MIN(v), MAX(v), COUNT(v) FROM t WHERE ts >= {cut}");
    let filtered = engine.sql("acme", &sql).unwrap();
    let scan = &filtered.stats.scan;
    assert!(
        scan.rows_from_statistics > 0 && scan.rows_scanned > 0,
        "{scan:?}"
    );
    let kept: Vec<i64> = times
        .iter()
        .zip(&values)
        .filter(|(t, _)| **t >= cut)
        .filter_map(|(_, v)| *v)
        .collect();
    let batch = &filtered.batches[0];
    let int = |c: usize| batch.column(c).as_primitive::<Int64Type>().value(0);
    assert_eq!(int(0), *kept.iter().min().unwrap());
    assert_eq!(int(1), *kept.iter().max().unwrap());
    assert_eq!(int(2), kept.len() as i64);

    // Every row filtered out: MIN is NULL, COUNT 0.
    let none = engine
        .sql("acme", "SELECT MIN(v), COUNT(v) FROM t WHERE ts < 0")
        .unwrap();
    assert!(none.batches[0].column(0).is_null(0));
    assert_eq!(
        none.batches[0]
            .column(1)
            .as_primitive::<Int64Type>()
            .value(0),
        0
    );
}

#[test]
fn float_extremes_from_statistics_keep_nan_and_the_sign_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    // 20 days of 100 rows. Day 0: +0.0 and positives; a -0.0, a NaN and both infinities
    // elsewhere.
    let rows = 2_000i64;
    let times: Vec<i64> = (0..rows)
        .map(|i| support::DAY_MICROS + (i / 100) * DAY + i)
        .collect();
    let floats: Vec<f64> = (0..rows)
        .map(|i| match i {
            350 => -0.0,
            550 => f64::NAN,
            950 => f64::INFINITY,
            1150 => f64::NEG_INFINITY,
            i if i < 100 && i % 2 == 0 => 0.0,
            i if i < 100 => i as f64,
            i => i as f64 - 1000.0,
        })
        .collect();
    support::write_table(
        dir.path(),
        "acme",
        "t",
        vec![
            ("ts", support::timestamps(times)),
            ("f", Arc::new(Float64Array::from(floats)) as ArrayRef),
        ],
        &ImportOptions::default(),
    );
    let engine = support::engine(dir.path());
    let extremes = |filter: &str| {
        let result = engine
            .sql("acme", &format!("SELECT MIN(f), MAX(f) FROM t {filter}"))
            .unwrap();
        let batch = &result.batches[0];
        let value = |c: usize| batch.column(c).as_primitive::<Float64Type>().value(0);
        (value(0), value(1), result.stats.scan)
    };
    // NaN orders above every number: MAX is NaN, MIN the negative infinity.
    let (min, max, _) = extremes("");
    assert_eq!(min, f64::NEG_INFINITY);
    assert!(max.is_nan());
    // Day 0 holds +0.0, which Parquet records as a minimum of -0.0; the writer's own pass over
    // the rows gives the bound its sign back, so the statistics answer, with the right bits.
    let day = |d: i64| support::DAY_MICROS + d * DAY;
    let (min, max, scan) = extremes(&format!("WHERE ts < {}", day(1)));
    assert_eq!(min.to_bits(), 0.0f64.to_bits());
    assert_eq!(max, 99.0);
    assert_eq!(scan.rows_scanned, 0, "{scan:?}");
    // Day 3 holds -700..-601 and one -0.0, which Parquet records as a maximum of +0.0.
    let (min, max, scan) = extremes(&format!("WHERE ts >= {} AND ts < {}", day(3), day(4)));
    assert_eq!(min, -700.0);
    assert_eq!(max.to_bits(), (-0.0f64).to_bits());
    assert_eq!(scan.rows_scanned, 0, "{scan:?}");
    // Whole days without NaN or zero bounds: proven by the statistics alone.
    let (min, max, scan) = extremes(&format!("WHERE ts >= {} AND ts < {}", day(6), day(9)));
    assert_eq!((min, max), (-400.0, -101.0));
    assert_eq!(scan.rows_from_statistics, 300, "{scan:?}");
    assert_eq!(scan.rows_scanned, 0, "{scan:?}");
}

/// Decimal bounds are exact values too (the writer's, never truncated): MIN and MAX of a
/// DECIMAL(38,4) come from statistics, the ends of its range included.
#[test]
fn decimal_min_and_max_come_from_statistics() {
    use arrow_array::types::Decimal128Type;
    use arrow_array::Decimal128Array;
    let dir = tempfile::tempdir().unwrap();
    let rows = 1_000i64;
    let limit = 10i128.pow(38) - 1;
    let times: Vec<i64> = (0..rows)
        .map(|i| support::DAY_MICROS + i * (5 * DAY / rows))
        .collect();
    let values: Vec<Option<i128>> = (0..rows as i128)
        .map(|i| match i {
            3 => Some(-limit),
            977 => Some(limit),
            _ if i % 5 == 0 => None,
            _ => Some(i * 12_345 - 6_000_000),
        })
        .collect();
    let decimals = Decimal128Array::from(values.clone())
        .with_precision_and_scale(38, 4)
        .unwrap();
    support::write_table(
        dir.path(),
        "acme",
        "d",
        vec![
            ("ts", support::timestamps(times)),
            ("price", Arc::new(decimals) as ArrayRef),
        ],
        &ImportOptions::default(),
    );
    let engine = support::engine(dir.path());
    engine.clear_caches();
    let result = engine
        .sql("acme", "SELECT MIN(price), MAX(price) FROM d")
        .unwrap();
    let scan = &result.stats.scan;
    assert_eq!(scan.rows_from_statistics, rows as u64, "{scan:?}");
    assert_eq!(scan.bytes_read, 0, "nothing is read: {scan:?}");
    let value = |c: usize| {
        result.batches[0]
            .column(c)
            .as_primitive::<Decimal128Type>()
            .value(0)
    };
    assert_eq!((value(0), value(1)), (-limit, limit));
}
