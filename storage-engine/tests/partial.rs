//! Distributed queries against one node: proptest generates a table (an int64 key with its
//! extremes and NULLs, floats with NaN, ±inf and -0.0, strings with non-ASCII text, decimals, a
//! timestamp), writes it whole and split by `value::partition_of` of its key into K tables
//! (K in 1..=4) of one engine, and runs query shapes of every kind (counts, sums, averages,
//! extremes, GROUP BY one and two keys including DATE(ts), filters, ORDER BY aggregates with
//! LIMIT, rows with and without ORDER BY). Each answer merged from the partitions' fragments
//! (`run_partial_into`, then `Merger`) must equal the whole table's: exactly for integers,
//! counts and strings, floats within a relative 1e-9 (or both NaN); rows without ORDER BY as
//! multisets, and with a LIMIT by their number. The merge over only the partitions
//! `Merger::partitions` keeps must give the same answer, and no excluded partition may hold a
//! row the WHERE keeps.

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::DataType;
use proptest::prelude::*;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use tessera_storage_engine::engine::{CoreContext, Merger};
use tessera_storage_engine::query::sql::{self, Statement};
use tessera_storage_engine::table::manifest::{self, ColumnDef, WriterSettings};
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::value::{partition_of, Scalar};
use tessera_storage_engine::{Engine, EngineConfig};

const TENANT: &str = "dist";
const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;
const BASE_DAY: i64 = 19_723; // 2024-01-01
const NAMES: [&str; 5] = ["", "alpha", "beta", "é☃ non-ASCII", "it's"];

// ---------------------------------------------------------------- the table

#[derive(Clone, Debug)]
struct Row {
    id: i64,
    key: Option<i64>,
    amount: Option<f64>,
    name: Option<&'static str>,
    ts: i64,
    /// Unscaled DECIMAL(12, 2).
    price: Option<i128>,
}

fn arb_key() -> impl Strategy<Value = Option<i64>> {
    let extremes = vec![i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX];
    prop::option::weighted(
        0.9,
        prop_oneof![6 => -12i64..12, 1 => prop::sample::select(extremes)],
    )
}

fn arb_amount() -> impl Strategy<Value = f64> {
    // Finite values are multiples of 1/4 far below 2^53: every sum is exact in any order.
    let hostile = vec![
        f64::NAN,
        -f64::NAN,
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e12,
    ];
    prop_oneof![
        8 => (-40i64..40).prop_map(|a| a as f64 / 4.0),
        1 => prop::sample::select(hostile)
    ]
}

fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
    let ts = prop_oneof![
        20 => (0i64..3 * 86_400).prop_map(|s| (BASE_DAY * 86_400 + s) * 1_000_000),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX]),
    ];
    let row = (
        arb_key(),
        prop::option::weighted(0.85, arb_amount()),
        prop::option::weighted(0.9, prop::sample::select(NAMES.to_vec())),
        ts,
        prop::option::weighted(
            0.85,
            prop_oneof![
                6 => -5_000i128..5_000,
                1 => prop::sample::select(vec![-999_999_999_999i128, 999_999_999_999])
            ],
        ),
    );
    prop::collection::vec(row, 0..160).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (key, amount, name, ts, price))| Row {
                id: i as i64,
                key,
                amount,
                name,
                ts,
                price,
            })
            .collect()
    })
}

fn to_batch(rows: &[Row]) -> RecordBatch {
    let price = Decimal128Array::from(rows.iter().map(|r| r.price).collect::<Vec<_>>())
        .with_precision_and_scale(12, 2)
        .unwrap();
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        ),
        (
            "k",
            Arc::new(rows.iter().map(|r| r.key).collect::<Int64Array>()),
        ),
        (
            "amount",
            Arc::new(rows.iter().map(|r| r.amount).collect::<Float64Array>()),
        ),
        (
            "name",
            Arc::new(rows.iter().map(|r| r.name).collect::<StringArray>()),
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.ts),
            )),
        ),
        ("price", Arc::new(price)),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

fn write(dir: &std::path::Path, table: &str, rows: &[Row]) {
    let batch = to_batch(rows);
    let options = ImportOptions {
        // Tiny pages and row groups so a hundred rows span several of each.
        writer: Some(WriterSettings {
            page_rows_max: 7,
            row_group_bytes: 2048,
            ..WriterSettings::default()
        }),
        ..ImportOptions::default()
    };
    let mut writer = TableWriter::open(dir, TENANT, table, &batch.schema(), &options).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
}

// ---------------------------------------------------------------- the queries

/// A query shape: SQL with `{t}` for the table, its WHERE clause alone (for the partition
/// check), and its LIMIT (rendered after it).
#[derive(Clone, Debug)]
struct Shape {
    sql: String,
    filter: Option<String>,
    limit: Option<u64>,
}

impl Shape {
    fn render(&self, table: &str, limit: Option<u64>) -> String {
        let sql = self.sql.replace("{t}", table);
        match limit {
            Some(limit) => format!("{sql} LIMIT {limit}"),
            None => sql,
        }
    }

    fn ordered(&self) -> bool {
        self.sql.contains("ORDER BY")
    }
}

fn shapes(probe: (Option<i64>, Option<i64>), name: &str) -> Vec<Shape> {
    let literal = |v: Option<i64>| v.map_or("NULL".to_owned(), |v| v.to_string());
    let (p1, p2) = (literal(probe.0), literal(probe.1));
    let name = format!("'{}'", name.replace('\'', "''"));
    let shape = |sql: &str, filter: Option<String>, limit: Option<u64>| Shape {
        sql: match &filter {
            Some(filter) => sql.replace("{w}", &format!("WHERE {filter}")),
            None => sql.replace("{w}", ""),
        },
        filter,
        limit,
    };
    let w = |filter: &str| Some(filter.to_owned());
    vec![
        shape("SELECT COUNT(*) FROM {t} {w}", None, None),
        shape(
            "SELECT COUNT(amount), SUM(amount), AVG(amount), MIN(amount), MAX(amount) FROM {t} {w}",
            None,
            None,
        ),
        // SUM of the key's extremes overflows int64: then both must fail.
        shape(
            "SELECT COUNT(k), SUM(k), AVG(k), MIN(k), MAX(k) FROM {t} {w}",
            None,
            None,
        ),
        shape(
            "SELECT AVG(k), MIN(k), MAX(k) FROM {t} {w}",
            w("k > 0"),
            None,
        ),
        shape(
            "SELECT COUNT(price), SUM(price), AVG(price), MIN(price), MAX(price) FROM {t} {w}",
            None,
            None,
        ),
        shape(
            "SELECT name, COUNT(*), SUM(amount), MIN(ts), MAX(price) FROM {t} {w} GROUP BY name",
            None,
            None,
        ),
        shape(
            "SELECT DATE(ts), name, COUNT(*), AVG(price), MAX(amount), MIN(name) FROM {t} {w} \
             GROUP BY DATE(ts), name",
            None,
            None,
        ),
        shape(
            "SELECT k, COUNT(*), SUM(amount) FROM {t} {w} GROUP BY k",
            w("amount > 0"),
            None,
        ),
        shape("SELECT k FROM {t} {w} GROUP BY k", None, None),
        shape(
            "SELECT k, COUNT(*) AS c, SUM(amount) FROM {t} {w} GROUP BY k ORDER BY 2 DESC, 1",
            None,
            Some(5),
        ),
        shape(
            "SELECT name, SUM(amount), AVG(price) FROM {t} {w} GROUP BY name ORDER BY 2 DESC, 1",
            None,
            Some(3),
        ),
        shape(
            "SELECT DATE(ts), name, COUNT(*), SUM(price) FROM {t} {w} GROUP BY DATE(ts), name \
             ORDER BY 3 DESC, 1, 2",
            None,
            Some(4),
        ),
        shape(
            "SELECT id, k, name, amount FROM {t} {w} ORDER BY amount, id",
            w(&format!("k >= {p1}")),
            Some(7),
        ),
        // `amount` is a hidden sort column.
        shape(
            "SELECT id FROM {t} {w} ORDER BY amount DESC, id",
            None,
            Some(6),
        ),
        shape(
            "SELECT id, ts, price FROM {t} {w} ORDER BY ts DESC, id",
            None,
            None,
        ),
        shape(
            "SELECT id, k, name FROM {t} {w}",
            w(&format!("name = {name}")),
            None,
        ),
        shape("SELECT * FROM {t} {w}", None, Some(5)),
        shape(
            "SELECT id, DATE(ts), amount FROM {t} {w}",
            w(&format!("k IN ({p1}, {p2}, NULL)")),
            None,
        ),
        shape(
            "SELECT COUNT(*), SUM(amount), MIN(name) FROM {t} {w}",
            w(&format!("k = {p1}")),
            None,
        ),
        shape(
            "SELECT name, COUNT(*) FROM {t} {w} GROUP BY name",
            w(&format!("k IN ({p1}, {p2}) AND amount IS NOT NULL")),
            None,
        ),
        shape(
            "SELECT COUNT(*), SUM(amount), MIN(name) FROM {t} {w}",
            w("k = NULL"),
            None,
        ),
        // No group anywhere: one row of empty states, or no rows with GROUP BY.
        shape(
            "SELECT COUNT(*), MAX(name), SUM(price) FROM {t} {w}",
            w("amount > 1e13"),
            None,
        ),
        shape(
            "SELECT DATE(ts), COUNT(*) FROM {t} {w} GROUP BY DATE(ts)",
            w("amount > 1e13"),
            None,
        ),
    ]
}

// ---------------------------------------------------------------- answers

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Decimal(i128),
}

fn value_at(array: &ArrayRef, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(i)),
        DataType::Date32 => Value::Int(array.as_primitive::<Date32Type>().value(i) as i64),
        DataType::Timestamp(_, _) => {
            Value::Int(array.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::Str(array.as_string::<i32>().value(i).to_owned()),
        DataType::Decimal128(_, _) => {
            Value::Decimal(array.as_primitive::<Decimal128Type>().value(i))
        }
        other => panic!("unexpected output type {other}"),
    }
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            rows.push(batch.columns().iter().map(|a| value_at(a, i)).collect());
        }
    }
    rows
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        (Value::Float(x), Value::Float(y)) if x.is_infinite() || y.is_infinite() => x == y,
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => a == b,
    }
}

fn same_row(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(x, y))
}

/// A total order for sorting rows before a multiset comparison.
fn order(a: &[Value], b: &[Value]) -> Ordering {
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Int(_) => 1,
        Value::Float(_) => 2,
        Value::Str(_) => 3,
        Value::Decimal(_) => 4,
    };
    for (x, y) in a.iter().zip(b) {
        let ordering = match (x, y) {
            (Value::Int(x), Value::Int(y)) => x.cmp(y),
            (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
            (Value::Str(x), Value::Str(y)) => x.cmp(y),
            (Value::Decimal(x), Value::Decimal(y)) => x.cmp(y),
            _ => rank(x).cmp(&rank(y)),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

fn same_multiset(mut a: Vec<Vec<Value>>, mut b: Vec<Vec<Value>>) -> bool {
    a.sort_by(|x, y| order(x, y));
    b.sort_by(|x, y| order(x, y));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| same_row(x, y))
}

type Answer = Result<Vec<Vec<Value>>, String>;

/// An answer, or the error's code and text.
fn answer(result: tessera_storage_engine::Result<Vec<RecordBatch>>) -> Answer {
    result
        .map(|batches| rows_of(&batches))
        .map_err(|e| format!("{}: {e}", e.code()))
}

/// What one query gave: on the whole table, merged from every partition, merged from the
/// partitions `Merger::partitions` kept, and the rows the WHERE keeps in each partition it left
/// out.
struct Outcome {
    whole: Answer,
    unlimited: Answer,
    merged: Answer,
    pruned: Answer,
    chosen: Option<Vec<u32>>,
    excluded_matches: Vec<(u32, i64)>,
}

async fn run(context: &CoreContext, sql: &str) -> tessera_storage_engine::Result<Vec<RecordBatch>> {
    Ok(context.sql(TENANT, sql).await?.batches)
}

/// Every partition's partial batches, checked against the merger's partial schema.
async fn fragments(
    context: &CoreContext,
    shape: &Shape,
    parts: &[String],
    merger: &Merger,
) -> tessera_storage_engine::Result<Vec<Vec<RecordBatch>>> {
    let mut all = Vec::new();
    for part in parts {
        let statement = sql::parse(&shape.render(part, shape.limit))?;
        let prepared = context.prepare(TENANT, statement).await?;
        let mut batches = Vec::new();
        let result = context.run_partial_into(prepared, &mut batches).await?;
        assert_eq!(result.schema, merger.partial_schema());
        for batch in &batches {
            assert_eq!(batch.schema(), merger.partial_schema());
        }
        all.push(batches);
    }
    Ok(all)
}

/// The answer from the fragments' batches, as the asking node builds it.
fn merge(
    merger: &Merger,
    fragments: Vec<Vec<RecordBatch>>,
) -> tessera_storage_engine::Result<Vec<RecordBatch>> {
    if !merger.streams() {
        return Ok(vec![
            merger.merge(fragments.into_iter().flatten().collect())?
        ]);
    }
    let mut remaining = merger.limit().unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for batch in fragments.into_iter().flatten() {
        let mut batch = merger.project(batch)?;
        assert_eq!(batch.schema(), merger.schema());
        if batch.num_rows() as u64 > remaining {
            batch = batch.slice(0, remaining as usize);
        }
        remaining -= batch.num_rows() as u64;
        out.push(batch);
    }
    Ok(out)
}

async fn outcome(
    context: CoreContext,
    shape: Shape,
    whole: String,
    parts: Vec<String>,
    columns: Vec<ColumnDef>,
) -> Outcome {
    let whole_sql = shape.render(&whole, shape.limit);
    let Statement::Query(query) = sql::parse(&whole_sql).unwrap() else {
        panic!("not a query: {whole_sql}")
    };
    let merger = context.merger(&query, &columns).unwrap();
    let chosen = merger.partitions("k", parts.len() as u32);
    let all = fragments(&context, &shape, &parts, &merger).await;
    let (merged, pruned) = match all {
        Err(e) => (Err(e.to_string()), Err(e.to_string())),
        Ok(all) => {
            let kept: Vec<Vec<RecordBatch>> = all
                .iter()
                .enumerate()
                .filter(|(p, _)| chosen.as_ref().is_none_or(|c| c.contains(&(*p as u32))))
                .map(|(_, batches)| batches.clone())
                .collect();
            (answer(merge(&merger, all)), answer(merge(&merger, kept)))
        }
    };
    let mut excluded_matches = Vec::new();
    if let (Some(chosen), Some(filter)) = (&chosen, &shape.filter) {
        for (p, part) in parts.iter().enumerate() {
            if !chosen.contains(&(p as u32)) {
                let count = run(
                    &context,
                    &format!("SELECT COUNT(*) FROM {part} WHERE {filter}"),
                )
                .await
                .unwrap();
                let n = count[0].column(0).as_primitive::<Int64Type>().value(0);
                excluded_matches.push((p as u32, n));
            }
        }
    }
    Outcome {
        whole: answer(run(&context, &whole_sql).await),
        unlimited: answer(run(&context, &shape.render(&whole, None)).await),
        merged,
        pruned,
        chosen,
        excluded_matches,
    }
}

fn check(shape: &Shape, outcome: &Outcome, partitions: u32) -> Result<(), TestCaseError> {
    let sql = &shape.sql;
    prop_assert!(
        outcome.excluded_matches.iter().all(|(_, n)| *n == 0),
        "{}: partitions {:?} of {} left out rows the WHERE keeps: {:?}",
        sql,
        outcome.chosen,
        partitions,
        outcome.excluded_matches
    );
    if let Some(chosen) = &outcome.chosen {
        prop_assert!(chosen.windows(2).all(|w| w[0] < w[1]), "{:?}", chosen);
        prop_assert!(chosen.iter().all(|&p| p < partitions), "{:?}", chosen);
    }
    for (what, merged) in [("merged", &outcome.merged), ("pruned", &outcome.pruned)] {
        let (expected, actual) = match (&outcome.whole, merged) {
            (Err(expected), Err(actual)) => {
                let code = |e: &str| e.split(':').next().unwrap_or("").to_owned();
                prop_assert_eq!(code(expected), code(actual), "{}: {} error", sql, what);
                continue;
            }
            (Ok(expected), Ok(actual)) => (expected, actual),
            (expected, actual) => {
                return Err(TestCaseError::fail(format!(
                    "{sql}: the whole table answered {expected:?}, {what} {actual:?}"
                )))
            }
        };
        if shape.ordered() {
            prop_assert!(
                expected.len() == actual.len()
                    && expected.iter().zip(actual).all(|(e, a)| same_row(e, a)),
                "{} ({}): \nexpected {:?}\nactual   {:?}",
                sql,
                what,
                expected,
                actual
            );
        } else if shape.limit.is_some() {
            prop_assert_eq!(expected.len(), actual.len(), "{} ({})", sql, what);
            let all = outcome
                .unlimited
                .as_ref()
                .map_err(|e| TestCaseError::fail(e.clone()))?;
            for row in actual {
                prop_assert!(
                    all.iter().any(|r| same_row(r, row)),
                    "{} ({}): row {:?} is not in the answer",
                    sql,
                    what,
                    row
                );
            }
        } else {
            prop_assert!(
                same_multiset(expected.clone(), actual.clone()),
                "{} ({}):\nexpected {:?}\nactual   {:?}",
                sql,
                what,
                expected,
                actual
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the property

fn engine() -> &'static (tempfile::TempDir, Engine) {
    static ENGINE: OnceLock<(tempfile::TempDir, Engine)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.cores = 2;
        config.pin_cores = false;
        config.buffer_pool_bytes = 16 << 20;
        // Files of a hundred rows split across both cores.
        config.split_file_rows = 64;
        let engine = Engine::open(config).unwrap();
        (dir, engine)
    })
}

static TABLES: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn merged_fragments_answer_as_the_whole_table(
        rows in arb_rows(),
        partitions in 1u32..=4,
        probe in (arb_key(), arb_key()),
        name in prop::sample::select(NAMES.to_vec()),
    ) {
        let (dir, engine) = engine();
        let n = TABLES.fetch_add(1, AtomicOrdering::SeqCst);
        let whole = format!("t{n}");
        write(dir.path(), &whole, &rows);
        let parts: Vec<String> = (0..partitions).map(|p| format!("t{n}p{p}")).collect();
        for (p, part) in parts.iter().enumerate() {
            let mine: Vec<Row> = rows
                .iter()
                .filter(|r| {
                    let key = r.key.map_or(Scalar::Null, Scalar::Int);
                    partition_of(&key, partitions) == p as u32
                })
                .cloned()
                .collect();
            write(dir.path(), part, &mine);
        }
        // The columns a partitioned table is described with (the whole table has the same).
        let columns = manifest::load(dir.path(), TENANT, &whole).unwrap().unwrap().columns;
        for (i, shape) in shapes(probe, name).into_iter().enumerate() {
            let job = (shape.clone(), whole.clone(), parts.clone(), columns.clone());
            let outcome = futures::executor::block_on(engine.on_core(i % engine.cores(), move |context| {
                outcome(context, job.0, job.1, job.2, job.3)
            }))
            .unwrap();
            check(&shape, &outcome, partitions)?;
        }
    }
}

#[test]
fn a_fragment_of_explain_is_refused() {
    let (dir, engine) = engine();
    let table = format!("t{}", TABLES.fetch_add(1, AtomicOrdering::SeqCst));
    let row = Row {
        id: 0,
        key: Some(1),
        amount: None,
        name: None,
        ts: BASE_DAY * MICROS_PER_DAY,
        price: None,
    };
    write(dir.path(), &table, &[row]);
    let error = futures::executor::block_on(engine.on_core(0, move |context| async move {
        let statement = sql::parse(&format!("EXPLAIN SELECT COUNT(*) FROM {table}")).unwrap();
        let prepared = context.prepare(TENANT, statement).await.unwrap();
        context
            .run_partial_into(prepared, &mut Vec::new())
            .await
            .unwrap_err()
    }))
    .unwrap();
    assert_eq!(error.code(), "sql", "{error}");
    assert!(error.to_string().contains("EXPLAIN"), "{error}");
}
