//! DECIMAL(p, s) end to end: imported from Arrow decimals of every width, stored as Parquet
//! DECIMAL with the column's precision and scale (recorded in the manifest), filtered exactly
//! (a literal with more fractional digits than the scale is compared exactly, never rounded),
//! pruned by statistics and the page index, aggregated exactly in 256 bits (SUM overflow past
//! 38 digits is an error naming the column), grouped and sorted, and returned as Arrow
//! Decimal128 with the result's precision and scale. Expected answers are computed here on the
//! unscaled integers.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Decimal128Array, Decimal256Array, Decimal32Array, Decimal64Array, RecordBatch,
    StringArray,
};
use arrow_buffer::i256;
use arrow_schema::DataType;
use std::path::Path;
use std::sync::Arc;
use support::{engine, timestamps, DAY_MICROS};
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

const ROWS: i64 = 5_000;
/// 10^38 - 1: the largest DECIMAL(38, s) value, unscaled.
const MAX38: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// `price` DECIMAL(15,2), rising with the row (so statistics can prune), NULL every 97th row.
fn price(i: i64) -> Option<i128> {
    (i % 97 != 0).then_some((i as i128 - 2_500) * 37 + (i % 5) as i128)
}

/// `qty` DECIMAL(4,1): seven values 0.0 to 3.0, for grouping.
fn qty(i: i64) -> i128 {
    (i % 7) as i128 * 5
}

/// `big` DECIMAL(38,4): the extremes, zero, negatives and NULL.
fn big(i: i64) -> Option<i128> {
    [
        Some(MAX38),
        Some(-MAX38),
        Some(0),
        Some(-1),
        Some(12_345),
        None,
    ][(i % 6) as usize]
}

fn decimal(values: impl IntoIterator<Item = Option<i128>>, precision: u8, scale: i8) -> ArrayRef {
    Arc::new(
        values
            .into_iter()
            .collect::<Decimal128Array>()
            .with_precision_and_scale(precision, scale)
            .unwrap(),
    )
}

fn small_files() -> ImportOptions {
    ImportOptions {
        writer: Some(WriterSettings {
            row_group_bytes: 16 << 10,
            page_rows_max: 250,
            ..WriterSettings::default()
        }),
        ..ImportOptions::default()
    }
}

fn import(dir: &Path, table: &str, columns: Vec<(&str, ArrayRef)>, options: &ImportOptions) {
    support::write_table(dir, "t", table, columns, options);
}

fn create_prices(dir: &Path) {
    import(
        dir,
        "prices",
        vec![
            (
                "ts",
                timestamps((0..ROWS).map(|i| DAY_MICROS + i * 1_000_000)),
            ),
            (
                "category",
                Arc::new(StringArray::from_iter_values(
                    (0..ROWS).map(|i| ["a", "b", "c"][(i % 3) as usize]),
                )),
            ),
            ("price", decimal((0..ROWS).map(price), 15, 2)),
            ("qty", decimal((0..ROWS).map(|i| Some(qty(i))), 4, 1)),
            ("big", decimal((0..ROWS).map(big), 38, 4)),
        ],
        &small_files(),
    );
}

fn count(engine: &Engine, sql: &str) -> i64 {
    let result = engine
        .sql("t", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    result.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

/// Column `column` of a one-batch result as unscaled decimals, with the result's type.
fn decimals(engine: &Engine, sql: &str, column: usize) -> (DataType, Vec<Option<i128>>) {
    let result = engine
        .sql("t", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let array = result.batches[0].column(column);
    let values = array.as_primitive::<Decimal128Type>().iter().collect();
    (array.data_type().clone(), values)
}

#[test]
fn decimals_are_stored_as_parquet_decimals_and_the_manifest_records_precision_and_scale() {
    let dir = tempfile::tempdir().unwrap();
    create_prices(dir.path());
    let table_dir = dir.path().join("t").join("prices");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(table_dir.join("_manifest.json")).unwrap()).unwrap();
    let types: Vec<String> = manifest["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].to_string())
        .collect();
    assert_eq!(
        types,
        [
            r#""timestamp""#,
            r#""utf8""#,
            r#"{"decimal":{"precision":15,"scale":2}}"#,
            r#"{"decimal":{"precision":4,"scale":1}}"#,
            r#"{"decimal":{"precision":38,"scale":4}}"#,
        ]
    );
    // Every part file declares the Parquet DECIMAL logical type with the column's p and s.
    let mut files = 0;
    for entry in support::parquet_files(&table_dir) {
        let file = std::fs::File::open(&entry).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        use parquet::file::reader::FileReader;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        for (index, precision, scale) in [(2, 15, 2), (3, 4, 1), (4, 38, 4)] {
            let column = schema.column(index);
            assert_eq!(
                column.logical_type_ref(),
                Some(&parquet::basic::LogicalType::decimal(scale, precision)),
                "{}",
                column.name()
            );
        }
        files += 1;
    }
    assert!(files > 0);
    // And the answers come back as the same Arrow type.
    let engine = engine(dir.path());
    let result = engine
        .sql("t", "SELECT price, big FROM prices LIMIT 3")
        .unwrap();
    assert_eq!(
        result.schema.field(0).data_type(),
        &DataType::Decimal128(15, 2)
    );
    assert_eq!(
        result.schema.field(1).data_type(),
        &DataType::Decimal128(38, 4)
    );
}

/// Which unscaled values a filter keeps, computed independently of the engine.
type Keep = Box<dyn Fn(i128) -> bool>;

#[test]
fn decimal_filters_are_exact_and_extra_literal_digits_are_not_rounded() {
    let dir = tempfile::tempdir().unwrap();
    create_prices(dir.path());
    let engine = engine(dir.path());
    let prices: Vec<Option<i128>> = (0..ROWS).map(price).collect();
    let naive = |keep: &dyn Fn(i128) -> bool| -> i64 {
        prices.iter().flatten().filter(|&&p| keep(p)).count() as i64
    };
    // 1.23 is stored as 123 (scale 2). Literals in cents, and with extra digits.
    let cases: Vec<(&str, Keep)> = vec![
        ("price > 100.5", Box::new(|p| p > 10_050)),
        ("price > 100.50", Box::new(|p| p > 10_050)),
        ("price > 100.505", Box::new(|p| p * 10 > 100_505)),
        ("price >= 100.505", Box::new(|p| p * 10 >= 100_505)),
        ("price < -100.505", Box::new(|p| p * 10 < -100_505)),
        ("price <= -100.505", Box::new(|p| p * 10 <= -100_505)),
        ("price = 12.34", Box::new(|p| p == 1_234)),
        ("price = 1234", Box::new(|p| p == 123_400)),
        ("price = 12.345", Box::new(|_| false)),
        ("price <> 12.345", Box::new(|_| true)),
        ("NOT price = 12.345", Box::new(|_| true)),
        ("price <> 12.34", Box::new(|p| p != 1_234)),
        ("price = 1.234e1", Box::new(|p| p == 1_234)),
        ("-3 > price", Box::new(|p| p < -300)),
        (
            "price BETWEEN -10.001 AND 10.009",
            Box::new(|p| (-1_000..=1_000).contains(&p)),
        ),
        (
            "price NOT BETWEEN -10.001 AND 10.009",
            Box::new(|p| !(-1_000..=1_000).contains(&p)),
        ),
        (
            "price IN (12.34, 0.37, 1.005, -925.00)",
            Box::new(|p| [1_234, 37, -92_500].contains(&p)),
        ),
        ("price NOT IN (12.34, 1.005)", Box::new(|p| p != 1_234)),
        ("price > 1e40", Box::new(|_| false)),
        ("price > -1e40", Box::new(|_| true)),
        ("price < 99999999999999999999999", Box::new(|_| true)),
    ];
    for (filter, keep) in &cases {
        let sql = format!("SELECT COUNT(*) FROM prices WHERE {filter}");
        assert_eq!(count(&engine, &sql), naive(keep.as_ref()), "{sql}");
    }
    assert_eq!(
        count(&engine, "SELECT COUNT(*) FROM prices WHERE price IS NULL"),
        prices.iter().filter(|p| p.is_none()).count() as i64
    );
    assert_eq!(
        count(
            &engine,
            "SELECT COUNT(*) FROM prices WHERE price NOT IN (1, NULL)"
        ),
        0
    );
    // The extremes of DECIMAL(38,4) compare exactly too.
    let extreme = "9999999999999999999999999999999999.9999";
    let cases: Vec<(String, Keep)> = vec![
        (format!("big = {extreme}"), Box::new(|b| b == MAX38)),
        (format!("big = -{extreme}"), Box::new(|b| b == -MAX38)),
        (format!("big >= {extreme}"), Box::new(|b| b == MAX38)),
        (format!("big > {extreme}"), Box::new(|_| false)),
        (format!("big < -{extreme}"), Box::new(|_| false)),
        (format!("big <= -{extreme}5"), Box::new(|_| false)),
        ("big = -0.0001".into(), Box::new(|b| b == -1)),
        ("big = 1.2345".into(), Box::new(|b| b == 12_345)),
        ("big < 0".into(), Box::new(|b| b < 0)),
        (
            "big IN (0, 1.23450)".into(),
            Box::new(|b| b == 0 || b == 12_345),
        ),
    ];
    for (filter, keep) in &cases {
        let expected = (0..ROWS).filter_map(big).filter(|&b| keep(b)).count() as i64;
        let sql = format!("SELECT COUNT(*) FROM prices WHERE {filter}");
        assert_eq!(count(&engine, &sql), expected, "{sql}");
    }
    // Statistics prune: price rises with the row, so a narrow range reads a few pages.
    let result = engine
        .sql(
            "t",
            "SELECT COUNT(*) FROM prices WHERE price BETWEEN 10.00 AND 20.00",
        )
        .unwrap();
    let scan = &result.stats.scan;
    assert!(
        scan.pages_pruned > 0 && scan.rows_scanned < ROWS as u64 / 4,
        "{scan:?}"
    );
    let result = engine
        .sql("t", "SELECT COUNT(*) FROM prices WHERE big > 10000000")
        .unwrap();
    assert!(result.stats.scan.rows_total > 0);
}

#[test]
fn decimal_aggregates_are_exact_grouped_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    create_prices(dir.path());
    let engine = engine(dir.path());
    let prices: Vec<i128> = (0..ROWS).filter_map(price).collect();
    let sum: i128 = prices.iter().sum();
    let (data_type, values) = decimals(&engine, "SELECT SUM(price) FROM prices", 0);
    assert_eq!(data_type, DataType::Decimal128(38, 2));
    assert_eq!(values, vec![Some(sum)]);
    let (data_type, values) = decimals(&engine, "SELECT MIN(price), MAX(price) FROM prices", 0);
    assert_eq!(data_type, DataType::Decimal128(15, 2));
    assert_eq!(values, vec![prices.iter().min().copied()]);
    let (_, values) = decimals(&engine, "SELECT MIN(price), MAX(price) FROM prices", 1);
    assert_eq!(values, vec![prices.iter().max().copied()]);
    // AVG: DECIMAL(38,6), rounded half away from zero.
    let (data_type, values) = decimals(&engine, "SELECT AVG(price) FROM prices", 0);
    assert_eq!(data_type, DataType::Decimal128(38, 6));
    assert_eq!(
        values,
        vec![Some(average(sum * 10_000, prices.len() as i128))]
    );
    assert_eq!(
        count(&engine, "SELECT COUNT(price) FROM prices"),
        prices.len() as i64
    );
    // MIN/MAX/SUM of the DECIMAL(38,4) extremes: the sum passes 10^38 on the way and comes back.
    let bigs: Vec<i128> = (0..ROWS).filter_map(big).collect();
    let (_, values) = decimals(
        &engine,
        "SELECT SUM(big), MIN(big), MAX(big) FROM prices",
        0,
    );
    assert_eq!(values, vec![Some(bigs.iter().sum())]);
    let (_, values) = decimals(
        &engine,
        "SELECT SUM(big), MIN(big), MAX(big) FROM prices",
        1,
    );
    assert_eq!(values, vec![Some(-MAX38)]);
    let (_, values) = decimals(
        &engine,
        "SELECT SUM(big), MIN(big), MAX(big) FROM prices",
        2,
    );
    assert_eq!(values, vec![Some(MAX38)]);
    // GROUP BY a decimal, ORDER BY it, and ORDER BY a decimal aggregate.
    let result = engine
        .sql(
            "t",
            "SELECT qty, SUM(price), AVG(price), COUNT(*) FROM prices WHERE price > -5.005 GROUP BY qty ORDER BY qty DESC",
        )
        .unwrap();
    let batch = &result.batches[0];
    assert_eq!(batch.column(0).data_type(), &DataType::Decimal128(4, 1));
    let mut expected: Vec<(i128, i128, i128, i64)> = (0..7)
        .map(|k| {
            let rows: Vec<i128> = (0..ROWS)
                .filter(|i| qty(*i) == k * 5)
                .filter_map(price)
                .filter(|p| *p * 10 > -50_05)
                .collect();
            let sum: i128 = rows.iter().sum();
            let n = rows.len() as i128;
            (k * 5, sum, average(sum * 10_000, n), n as i64)
        })
        .collect();
    expected.reverse();
    let got: Vec<(i128, i128, i128, i64)> = (0..batch.num_rows())
        .map(|r| {
            (
                batch.column(0).as_primitive::<Decimal128Type>().value(r),
                batch.column(1).as_primitive::<Decimal128Type>().value(r),
                batch.column(2).as_primitive::<Decimal128Type>().value(r),
                batch.column(3).as_primitive::<Int64Type>().value(r),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let (_, sums) = decimals(
        &engine,
        "SELECT category, SUM(price) AS total FROM prices GROUP BY category ORDER BY 2 DESC",
        1,
    );
    let mut by_category: Vec<i128> = (0..3)
        .map(|c| (0..ROWS).filter(|i| i % 3 == c).filter_map(price).sum())
        .collect();
    by_category.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(sums, by_category.into_iter().map(Some).collect::<Vec<_>>());
    // ORDER BY a decimal column in row mode, NULLs first when descending.
    let (_, top) = decimals(
        &engine,
        "SELECT price FROM prices ORDER BY price DESC LIMIT 3",
        0,
    );
    let mut sorted = prices.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(top, vec![None, None, None]);
    let (_, top) = decimals(
        &engine,
        "SELECT price FROM prices WHERE price IS NOT NULL ORDER BY price DESC LIMIT 3",
        0,
    );
    assert_eq!(
        top,
        sorted[..3].iter().map(|v| Some(*v)).collect::<Vec<_>>()
    );
}

/// `numerator / count`, rounded half away from zero.
fn average(numerator: i128, count: i128) -> i128 {
    let (quotient, remainder) = (numerator / count, numerator % count);
    if remainder.abs() * 2 >= count {
        quotient + numerator.signum()
    } else {
        quotient
    }
}

#[test]
fn a_decimal_sum_past_38_digits_is_an_error_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    create_prices(dir.path());
    let engine = engine(dir.path());
    for sql in [
        "SELECT SUM(big) FROM prices WHERE big > 0",
        "SELECT category, SUM(big) FROM prices WHERE big < 0 GROUP BY category",
    ] {
        let error = engine.sql("t", sql).unwrap_err().to_string();
        assert!(
            error.contains("overflow") && error.contains("big"),
            "{sql}: {error}"
        );
    }
    // AVG of the same rows fits (an average never exceeds the largest value).
    let (data_type, values) = decimals(&engine, "SELECT AVG(big) FROM prices WHERE big > 0", 0);
    assert_eq!(data_type, DataType::Decimal128(38, 4));
    let positives: Vec<i128> = (0..ROWS).filter_map(big).filter(|b| *b > 0).collect();
    let exact = positives.iter().fold(i256::ZERO, |sum, &b| {
        sum + i256::from_i128(b) * i256::from_i128(1)
    });
    let n = i256::from_i128(positives.len() as i128);
    let (quotient, remainder) = (exact / n, exact % n);
    let rounded = if remainder * i256::from_i128(2) >= n {
        quotient + i256::ONE
    } else {
        quotient
    };
    assert_eq!(values, vec![rounded.to_i128()]);
}

#[test]
fn every_arrow_decimal_width_imports_exactly_and_bad_values_name_column_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let d32: ArrayRef = Arc::new(
        Decimal32Array::from(vec![Some(12_345), None, Some(-99_999)])
            .with_precision_and_scale(5, 2)
            .unwrap(),
    );
    let d64: ArrayRef = Arc::new(
        Decimal64Array::from(vec![Some(1), Some(-1), Some(999_999_999_999)])
            .with_precision_and_scale(12, 3)
            .unwrap(),
    );
    let d256: ArrayRef = Arc::new(
        Decimal256Array::from(vec![
            Some(i256::from_i128(MAX38)),
            Some(i256::from_i128(-MAX38)),
            None,
        ])
        .with_precision_and_scale(38, 10)
        .unwrap(),
    );
    // DECIMAL(3, -2): hundreds; stored as DECIMAL(5, 0).
    let negative_scale = decimal([Some(123), Some(-5), None], 3, -2);
    import(
        dir.path(),
        "widths",
        vec![
            ("d32", d32),
            ("d64", d64),
            ("d256", d256),
            ("hundreds", negative_scale),
        ],
        &ImportOptions::default(),
    );
    let engine = engine(dir.path());
    let result = engine
        .sql("t", "SELECT d32, d64, d256, hundreds FROM widths")
        .unwrap();
    let types: Vec<DataType> = result
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Decimal128(5, 2),
            DataType::Decimal128(12, 3),
            DataType::Decimal128(38, 10),
            DataType::Decimal128(5, 0),
        ]
    );
    let column = |i: usize| -> Vec<Option<i128>> {
        result.batches[0]
            .column(i)
            .as_primitive::<Decimal128Type>()
            .iter()
            .collect()
    };
    assert_eq!(column(0), vec![Some(12_345), None, Some(-99_999)]);
    assert_eq!(column(1), vec![Some(1), Some(-1), Some(999_999_999_999)]);
    assert_eq!(column(2), vec![Some(MAX38), Some(-MAX38), None]);
    assert_eq!(column(3), vec![Some(12_300), Some(-500), None]);

    let refuse = |name: &str, array: ArrayRef, expected: &[&str]| {
        let batch = RecordBatch::try_from_iter(vec![("amount", array)]).unwrap();
        let error = TableWriter::open(
            dir.path(),
            "t",
            name,
            &batch.schema(),
            &ImportOptions::default(),
        )
        .and_then(|mut writer| {
            writer.write(&batch)?;
            writer.finish()
        })
        .unwrap_err()
        .to_string();
        for part in expected {
            assert!(error.contains(part), "{name}: {error}");
        }
    };
    // Arrow does not enforce a decimal's precision: a value beyond it is refused, not stored.
    refuse(
        "beyond_precision",
        decimal([Some(1), Some(1_234_567)], 5, 2),
        &["amount", "row 2", "12345.67"],
    );
    // Decimal256 wider than 38 digits: refused by type, whatever the values.
    refuse(
        "wide_type",
        Arc::new(
            Decimal256Array::from(vec![Some(i256::from_i128(1))])
                .with_precision_and_scale(50, 2)
                .unwrap(),
        ),
        &["amount", "more than 38 digits"],
    );
    // Decimal256(38, 0) holding a value no i128 holds: refused naming the row.
    refuse(
        "wide_value",
        Arc::new(
            Decimal256Array::from(vec![
                Some(i256::ONE),
                Some(i256::from_i128(i128::MAX) * i256::from_i128(10)),
            ])
            .with_precision_and_scale(38, 0)
            .unwrap(),
        ),
        &["amount", "row 2"],
    );
}

#[test]
fn a_manifest_with_an_impossible_decimal_is_corrupt_naming_the_column() {
    let dir = tempfile::tempdir().unwrap();
    create_prices(dir.path());
    let path = dir.path().join("t").join("prices").join("_manifest.json");
    let text = std::fs::read(&path).unwrap();
    for (precision, scale) in [(40, 2), (15, 16), (0, 0)] {
        let mut manifest: serde_json::Value = serde_json::from_slice(&text).unwrap();
        manifest["columns"][2]["type"] =
            serde_json::json!({"decimal": {"precision": precision, "scale": scale}});
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        let engine = engine(dir.path());
        let error = engine.sql("t", "SELECT COUNT(*) FROM prices").unwrap_err();
        assert_eq!(error.code(), "corrupt", "{error}");
        assert!(error.to_string().contains("price"), "{error}");
    }
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

#[test]
fn streaming_ingestion_converts_decimals_exactly_or_names_the_column() {
    let dir = tempfile::tempdir().unwrap();
    import(
        dir.path(),
        "orders",
        vec![
            ("ts", timestamps([DAY_MICROS, DAY_MICROS])),
            ("price", decimal([Some(100), None], 15, 2)),
        ],
        &ImportOptions::default(),
    );
    let engine = engine(dir.path());
    let batch = |values: Vec<Option<i128>>, precision: u8, scale: i8| {
        let n = values.len() as i64;
        RecordBatch::try_from_iter(vec![
            ("ts", timestamps((0..n).map(|i| DAY_MICROS + i))),
            ("price", decimal(values, precision, scale)),
        ])
        .unwrap()
    };
    // Same type; a narrower scale (scaled up); a wider scale whose extra digits are zeros.
    let accepted = [
        batch(vec![Some(1_234), None], 15, 2),
        batch(vec![Some(15)], 10, 1),
        batch(vec![Some(-2_010)], 10, 3),
    ];
    for (sequence, batch) in accepted.iter().enumerate() {
        engine
            .ingest("t", "orders", "p", sequence as u64 + 1, ipc(batch))
            .unwrap();
    }
    let expected = 100 + 1_234 + 150 - 201;
    let (data_type, values) = decimals(&engine, "SELECT SUM(price) FROM orders", 0);
    assert_eq!(
        (data_type, values),
        (DataType::Decimal128(38, 2), vec![Some(expected)])
    );
    for (batch, words) in [
        (
            batch(vec![Some(1_000), Some(1_005)], 10, 3),
            vec!["price", "row 2", "1.005"],
        ),
        (
            batch(vec![Some(10i128.pow(14))], 16, 1),
            vec!["price", "row 1"],
        ),
    ] {
        let error = engine
            .ingest("t", "orders", "p", 99, ipc(&batch))
            .unwrap_err()
            .to_string();
        for word in words {
            assert!(error.contains(word), "{error}");
        }
    }
    // Flushed to Parquet, the answer is the same.
    engine.flush_ingest("t", "orders").unwrap();
    let (_, values) = decimals(&engine, "SELECT SUM(price) FROM orders", 0);
    assert_eq!(values, vec![Some(expected)]);
    assert_eq!(
        count(&engine, "SELECT COUNT(*) FROM orders WHERE price = 12.34"),
        1
    );
}
