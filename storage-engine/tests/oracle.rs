//! The engine against an independent, naive row-at-a-time evaluator of the SQL subset. proptest
//! generates tables (every column type, NULLs, several files, row groups and pages) and queries
//! (filters of every kind nested up to depth 3, projections, groups, aggregates, ORDER BY, LIMIT)
//! and requires the same answers. Floats compare within a relative 1e-9; rows compare as
//! multisets unless ORDER BY fixes their order (ties may come in any order).

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use tessera_storage_engine::manifest::WriterSettings;
use tessera_storage_engine::sql::*;
use tessera_storage_engine::value::{parse_date, parse_timestamp, MICROS_PER_DAY};
use tessera_storage_engine::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

// ---------------------------------------------------------------- values and tables

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

/// NULL sorts after every value.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => panic!("comparing {a:?} with {b:?}"),
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int64,
    Timestamp,
    Date,
    Int32,
    Float,
    Text,
    Bool,
}

const COLUMNS: [(&str, Kind); 8] = [
    ("id", Kind::Int64),
    ("ts", Kind::Timestamp),
    ("day", Kind::Date),
    ("qty", Kind::Int32),
    ("amount", Kind::Float),
    ("category", Kind::Text),
    ("status", Kind::Text),
    ("flag", Kind::Bool),
];

const BASE_DAY: i64 = 19_723; // 2024-01-01
const CATEGORIES: [&str; 6] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
const STATUSES: [&str; 3] = ["ok", "error", "pending"];

fn kind(column: &str) -> Kind {
    COLUMNS
        .iter()
        .find(|(name, _)| *name == column)
        .map(|(_, k)| *k)
        .unwrap()
}

fn index(column: &str) -> usize {
    COLUMNS
        .iter()
        .position(|(name, _)| *name == column)
        .unwrap()
}

type Row = Vec<Value>;

fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (
        0i64..(4 * 86_400), // seconds into a 4-day span
        prop::option::weighted(0.9, -3i64..5),
        prop::option::weighted(0.85, -50i32..50),
        prop::option::weighted(0.85, -40i64..40),
        prop::option::weighted(0.9, prop_oneof![4 => 0usize..2, 1 => 2usize..6]),
        prop::option::weighted(0.9, 0usize..3),
        prop::option::weighted(0.8, any::<bool>()),
    );
    prop::collection::vec(row, 0..300).prop_map(|mut rows| {
        rows.sort_by_key(|r| r.0);
        rows.into_iter()
            .enumerate()
            .map(|(i, (second, day, qty, amount, category, status, flag))| {
                vec![
                    Value::Int(i as i64 + 1),
                    Value::Int((BASE_DAY * 86_400 + second) * 1_000_000),
                    day.map_or(Value::Null, |d| Value::Int(BASE_DAY + d)),
                    qty.map_or(Value::Null, |q| Value::Int(q as i64)),
                    amount.map_or(Value::Null, |a| Value::Float(a as f64 / 4.0)),
                    category.map_or(Value::Null, |c| Value::Str(CATEGORIES[c].into())),
                    status.map_or(Value::Null, |s| Value::Str(STATUSES[s].into())),
                    flag.map_or(Value::Null, Value::Bool),
                ]
            })
            .collect()
    })
}

fn to_batch(rows: &[Row]) -> RecordBatch {
    let column = |i: usize| rows.iter().map(move |r| r[i].clone());
    let int = |v: Value| if let Value::Int(x) = v { Some(x) } else { None };
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(column(0).map(int).collect::<Int64Array>()),
        Arc::new(column(1).map(int).collect::<TimestampMicrosecondArray>()),
        Arc::new(
            column(2)
                .map(|v| int(v).map(|x| x as i32))
                .collect::<Date32Array>(),
        ),
        Arc::new(
            column(3)
                .map(|v| int(v).map(|x| x as i32))
                .collect::<Int32Array>(),
        ),
        Arc::new(
            column(4)
                .map(|v| {
                    if let Value::Float(x) = v {
                        Some(x)
                    } else {
                        None
                    }
                })
                .collect::<Float64Array>(),
        ),
        Arc::new(
            column(5)
                .map(|v| if let Value::Str(x) = v { Some(x) } else { None })
                .collect::<StringArray>(),
        ),
        Arc::new(
            column(6)
                .map(|v| if let Value::Str(x) = v { Some(x) } else { None })
                .collect::<StringArray>(),
        ),
        Arc::new(
            column(7)
                .map(|v| {
                    if let Value::Bool(x) = v {
                        Some(x)
                    } else {
                        None
                    }
                })
                .collect::<BooleanArray>(),
        ),
    ];
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("day", DataType::Date32, true),
        Field::new("qty", DataType::Int32, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("flag", DataType::Boolean, true),
    ]);
    RecordBatch::try_new(Arc::new(schema), arrays).unwrap()
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for batch in batches {
        for i in 0..batch.num_rows() {
            rows.push(batch.columns().iter().map(|a| value_at(a, i)).collect());
        }
    }
    rows
}

fn value_at(array: &ArrayRef, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Value::Int(array.as_primitive::<Int32Type>().value(i) as i64),
        DataType::Date32 => Value::Int(array.as_primitive::<Date32Type>().value(i) as i64),
        DataType::Timestamp(_, _) => {
            Value::Int(array.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => Value::Str(array.as_string::<i32>().value(i).to_owned()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        other => panic!("unexpected output type {other}"),
    }
}

// ---------------------------------------------------------------- the reference evaluator

fn literal(column: &str, literal: &Literal) -> Option<Value> {
    match (kind(column), literal) {
        (_, Literal::Null) => None,
        (Kind::Int64 | Kind::Int32, Literal::Integer(v)) => Some(Value::Int(*v)),
        (Kind::Float, Literal::Integer(v)) => Some(Value::Float(*v as f64)),
        (Kind::Float, Literal::Float(v)) => Some(Value::Float(*v)),
        (Kind::Text, Literal::String(s)) => Some(Value::Str(s.clone())),
        (Kind::Timestamp, Literal::String(s)) => Some(Value::Int(parse_timestamp(s).unwrap())),
        (Kind::Date, Literal::String(s)) => Some(Value::Int(parse_date(s).unwrap())),
        (Kind::Bool, Literal::Boolean(b)) => Some(Value::Bool(*b)),
        (k, l) => panic!("generator produced {l:?} for {k:?}"),
    }
}

/// Kleene logic: None is UNKNOWN.
fn truth(predicate: &Predicate, row: &Row) -> Option<bool> {
    let cmp = |column: &str, op: ComparisonOperator, lit: &Literal| -> Option<bool> {
        let v = &row[index(column)];
        let l = literal(column, lit)?;
        if *v == Value::Null {
            return None;
        }
        let o = compare(v, &l);
        Some(match op {
            ComparisonOperator::Eq => o == Ordering::Equal,
            ComparisonOperator::NotEq => o != Ordering::Equal,
            ComparisonOperator::Lt => o == Ordering::Less,
            ComparisonOperator::LtEq => o != Ordering::Greater,
            ComparisonOperator::Gt => o == Ordering::Greater,
            ComparisonOperator::GtEq => o != Ordering::Less,
        })
    };
    let and = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    let or = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    };
    match predicate {
        Predicate::Compare { column, op, value } => cmp(column, *op, value),
        Predicate::Between {
            column,
            low,
            high,
            negated,
        } => {
            let inside = and(
                cmp(column, ComparisonOperator::GtEq, low),
                cmp(column, ComparisonOperator::LtEq, high),
            );
            if *negated {
                inside.map(|b| !b)
            } else {
                inside
            }
        }
        Predicate::InList {
            column,
            list,
            negated,
        } => {
            // None is UNKNOWN here, not a failure: no short-circuit.
            let mut found = Some(false);
            for l in list {
                found = or(found, cmp(column, ComparisonOperator::Eq, l));
            }
            if *negated {
                found.map(|b| !b)
            } else {
                found
            }
        }
        Predicate::IsNull { column, negated } => {
            Some((row[index(column)] == Value::Null) != *negated)
        }
        Predicate::Like {
            column,
            prefix,
            is_prefix,
            negated,
        } => match &row[index(column)] {
            Value::Str(s) => Some(
                (if *is_prefix {
                    s.starts_with(prefix.as_str())
                } else {
                    s == prefix
                }) != *negated,
            ),
            _ => None,
        },
        Predicate::And(a, b) => and(truth(a, row), truth(b, row)),
        Predicate::Or(a, b) => or(truth(a, row), truth(b, row)),
        Predicate::Not(a) => truth(a, row).map(|b| !b),
    }
}

fn scalar(expr: &ScalarExpr, row: &Row) -> Value {
    match expr {
        ScalarExpr::Column(c) => row[index(c)].clone(),
        ScalarExpr::Date(c) => match (&row[index(c)], kind(c)) {
            (Value::Int(t), Kind::Timestamp) => Value::Int(t.div_euclid(MICROS_PER_DAY)),
            (v, _) => v.clone(),
        },
    }
}

fn aggregate(function: AggregateFunction, argument: &Option<ScalarExpr>, rows: &[&Row]) -> Value {
    let values: Vec<Value> = match argument {
        None => return Value::Int(rows.len() as i64),
        Some(arg) => rows
            .iter()
            .map(|r| scalar(arg, r))
            .filter(|v| *v != Value::Null)
            .collect(),
    };
    match function {
        AggregateFunction::CountStar | AggregateFunction::Count => Value::Int(values.len() as i64),
        _ if values.is_empty() => Value::Null,
        AggregateFunction::Sum | AggregateFunction::Avg => {
            let float = values.iter().any(|v| matches!(v, Value::Float(_)));
            let total: f64 = values
                .iter()
                .map(|v| match v {
                    Value::Int(x) => *x as f64,
                    Value::Float(x) => *x,
                    _ => 0.0,
                })
                .sum();
            match (function, float) {
                (AggregateFunction::Avg, _) => Value::Float(total / values.len() as f64),
                (_, true) => Value::Float(total),
                _ => Value::Int(
                    values
                        .iter()
                        .map(|v| if let Value::Int(x) = v { *x } else { 0 })
                        .sum(),
                ),
            }
        }
        AggregateFunction::Min => values.into_iter().min_by(compare).unwrap(),
        AggregateFunction::Max => values.into_iter().max_by(compare).unwrap(),
    }
}

/// Evaluates `query` over `table`: output rows, and for each output row its ORDER BY key values.
fn reference(query: &Query, table: &[Row]) -> (Vec<Row>, Vec<Row>) {
    let kept: Vec<&Row> = table
        .iter()
        .filter(|r| {
            query
                .filter
                .as_ref()
                .is_none_or(|p| truth(p, r) == Some(true))
        })
        .collect();
    let grouped = !query.group_by.is_empty()
        || query.projection.iter().any(|i| {
            matches!(
                i,
                SelectItem::Expr {
                    expr: OutputExpr::Aggregate { .. },
                    ..
                }
            )
        });
    let mut out: Vec<(Row, Row)> = Vec::new();
    let item_value = |item: &SelectItem, rows: &[&Row]| -> Vec<Value> {
        match item {
            SelectItem::Wildcard => rows[0].clone(),
            SelectItem::Expr {
                expr: OutputExpr::Scalar(s),
                ..
            } => vec![scalar(s, rows[0])],
            SelectItem::Expr {
                expr: OutputExpr::Aggregate { function, argument },
                ..
            } => vec![aggregate(*function, argument, rows)],
        }
    };
    let key_of = |rows: &[&Row], output: &Row| -> Row {
        query
            .order_by
            .iter()
            .map(|o| match &o.key {
                OrderKey::SelectItem(i) => {
                    // Items before i may be `*` (8 columns) — compute the item directly.
                    item_value(&query.projection[*i], rows)[0].clone()
                }
                OrderKey::Column(c) => rows[0][index(c)].clone(),
            })
            .chain(std::iter::once(Value::Int(output.len() as i64)).take(0))
            .collect()
    };
    if grouped {
        let mut groups: Vec<(Row, Vec<&Row>)> = Vec::new();
        for row in &kept {
            let key: Row = query.group_by.iter().map(|g| scalar(g, row)).collect();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(row),
                None => groups.push((key, vec![row])),
            }
        }
        if query.group_by.is_empty() && groups.is_empty() {
            groups.push((Vec::new(), Vec::new()));
        }
        for (_, members) in &groups {
            let output: Row = query
                .projection
                .iter()
                .flat_map(|item| match (item, members.is_empty()) {
                    (
                        SelectItem::Expr {
                            expr: OutputExpr::Aggregate { function, argument },
                            ..
                        },
                        true,
                    ) => vec![aggregate(*function, argument, &[])],
                    _ => item_value(item, members),
                })
                .collect();
            let key = if members.is_empty() {
                Vec::new()
            } else {
                key_of(members, &output)
            };
            out.push((output, key));
        }
    } else {
        for row in &kept {
            let output: Row = query
                .projection
                .iter()
                .flat_map(|item| item_value(item, &[row]))
                .collect();
            let key = key_of(&[row], &output);
            out.push((output, key));
        }
    }
    let descending: Vec<bool> = query.order_by.iter().map(|o| o.descending).collect();
    out.sort_by(|a, b| order(&a.1, &b.1, &descending));
    if let Some(limit) = query.limit {
        out.truncate(limit as usize);
    }
    out.into_iter().unzip()
}

fn order(a: &Row, b: &Row, descending: &[bool]) -> Ordering {
    for ((x, y), desc) in a.iter().zip(b).zip(descending) {
        let o = compare(x, y);
        let o = if *desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn sort_rows(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| compare(x, y))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
}

fn same_multiset(mut a: Vec<Row>, mut b: Vec<Row>) -> bool {
    sort_rows(&mut a);
    sort_rows(&mut b);
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(u, v)| close(u, v)))
}

// ---------------------------------------------------------------- query generation

fn arb_literal(column: &'static str) -> BoxedStrategy<String> {
    match kind(column) {
        Kind::Int64 => (0i64..320).prop_map(|v| v.to_string()).boxed(),
        Kind::Int32 => prop_oneof![
            (-55i64..55).prop_map(|v| v.to_string()),
            Just("5000000000".to_string())
        ]
        .boxed(),
        Kind::Float => prop_oneof![
            (-45i64..45).prop_map(|v| format!("{}", v as f64 / 4.0)),
            (-12i64..12).prop_map(|v| v.to_string())
        ]
        .boxed(),
        Kind::Text => prop_oneof![
            prop::sample::select(CATEGORIES.to_vec()).prop_map(|s| format!("'{s}'")),
            prop::sample::select(STATUSES.to_vec()).prop_map(|s| format!("'{s}'")),
            Just("'zzz'".to_string()),
            Just("''".to_string()),
        ]
        .boxed(),
        Kind::Timestamp => (0i64..5, 0i64..24, 0i64..60)
            .prop_map(|(d, h, m)| {
                if h == 0 && m == 0 {
                    format!("'2024-01-0{}'", d + 1)
                } else {
                    format!("'2024-01-0{} {h:02}:{m:02}:00'", d + 1)
                }
            })
            .boxed(),
        Kind::Date => (-4i64..6)
            .prop_map(|d| format!("'2024-01-{:02}'", 1 + d.rem_euclid(9)))
            .prop_map(|s| s.replace("-00'", "-01'"))
            .boxed(),
        Kind::Bool => prop_oneof![Just("TRUE".to_string()), Just("FALSE".to_string())].boxed(),
    }
}

fn arb_leaf() -> BoxedStrategy<String> {
    let column = prop::sample::select(COLUMNS.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    column
        .prop_flat_map(|c| {
            let lit = arb_literal(c);
            let ops = prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]);
            let mut choices: Vec<BoxedStrategy<String>> = vec![
                (ops, lit.clone())
                    .prop_map(move |(op, l)| format!("{c} {op} {l}"))
                    .boxed(),
                (lit.clone(), prop::sample::select(vec!["=", "<", ">="]))
                    .prop_map(move |(l, op)| format!("{l} {op} {c}"))
                    .boxed(),
                (lit.clone(), lit.clone(), any::<bool>())
                    .prop_map(move |(a, b, n)| {
                        format!("{c} {}BETWEEN {a} AND {b}", if n { "NOT " } else { "" })
                    })
                    .boxed(),
                (
                    prop::collection::vec(lit.clone(), 1..4),
                    any::<bool>(),
                    prop::bool::weighted(0.1),
                )
                    .prop_map(move |(ls, n, null)| {
                        format!(
                            "{c} {}IN ({}{})",
                            if n { "NOT " } else { "" },
                            ls.join(", "),
                            if null { ", NULL" } else { "" }
                        )
                    })
                    .boxed(),
                any::<bool>()
                    .prop_map(move |n| format!("{c} IS {}NULL", if n { "NOT " } else { "" }))
                    .boxed(),
                Just(format!("{c} = NULL")).boxed(),
            ];
            if kind(c) == Kind::Text {
                choices.push(
                    (
                        prop::sample::select(vec!["al", "alpha", "e", "", "ok", "ze"]),
                        any::<bool>(),
                        any::<bool>(),
                    )
                        .prop_map(move |(p, pct, n)| {
                            format!(
                                "{c} {}LIKE '{p}{}'",
                                if n { "NOT " } else { "" },
                                if pct { "%" } else { "" }
                            )
                        })
                        .boxed(),
                );
            }
            prop::strategy::Union::new(choices)
        })
        .boxed()
}

fn arb_predicate() -> impl Strategy<Value = String> {
    arb_leaf().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

const KEYS: [&str; 7] = [
    "category",
    "status",
    "DATE(ts)",
    "qty",
    "day",
    "flag",
    "DATE(day)",
];

fn arb_query() -> impl Strategy<Value = String> {
    let columns: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    let rows = (
        prop_oneof![
            Just(vec!["*".to_string()]),
            prop::sample::subsequence(columns.clone(), 1..5)
                .prop_map(|c| c.iter().map(|s| s.to_string()).collect())
        ],
        prop::option::of(arb_predicate()),
        prop::option::of((prop::sample::select(columns.clone()), any::<bool>())),
        prop::option::weighted(0.3, 0u64..20),
    )
        .prop_map(|(items, filter, order, limit)| {
            let mut sql = format!("SELECT {} FROM t", items.join(", "));
            if let Some(f) = filter {
                sql += &format!(" WHERE {f}");
            }
            if let Some((c, desc)) = order {
                sql += &format!(" ORDER BY {c}{}", if desc { " DESC" } else { "" });
            }
            if let Some(l) = limit {
                sql += &format!(" LIMIT {l}");
            }
            sql
        });
    let aggregates = prop::sample::select(vec![
        "COUNT(*)",
        "COUNT(amount)",
        "SUM(qty)",
        "SUM(amount)",
        "AVG(qty)",
        "AVG(amount)",
        "MIN(ts)",
        "MAX(category)",
        "MIN(amount)",
        "MAX(day)",
        "MIN(flag)",
        "COUNT(status)",
        "MAX(qty)",
        "MIN(DATE(ts))",
    ]);
    let groups = (
        prop::sample::subsequence(KEYS.to_vec(), 0..3),
        prop::collection::vec(aggregates, 1..4),
        prop::option::of(arb_predicate()),
        any::<bool>(),
        prop::option::weighted(0.3, 0u64..10),
    )
        .prop_map(|(keys, aggs, filter, desc, limit)| {
            let items: Vec<String> = keys
                .iter()
                .map(|k| k.to_string())
                .chain(aggs.iter().map(|a| a.to_string()))
                .collect();
            let mut sql = format!("SELECT {} FROM t", items.join(", "));
            if let Some(f) = filter {
                sql += &format!(" WHERE {f}");
            }
            if !keys.is_empty() {
                sql += &format!(" GROUP BY {}", keys.join(", "));
                // Order by every key so the order is total; by position, descending sometimes.
                let order: Vec<String> = (1..=keys.len())
                    .map(|i| format!("{i}{}", if desc { " DESC" } else { "" }))
                    .collect();
                sql += &format!(" ORDER BY {}", order.join(", "));
                if let Some(l) = limit {
                    sql += &format!(" LIMIT {l}");
                }
            }
            sql
        });
    prop_oneof![rows, groups]
}

// ---------------------------------------------------------------- the property

fn engine() -> &'static (tempfile::TempDir, Engine) {
    static ENGINE: OnceLock<(tempfile::TempDir, Engine)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig::new(dir.path());
        config.cores = 2;
        config.pin_cores = false;
        // A small pool, so eviction happens during the test.
        config.buffer_pool_bytes = 256 << 10;
        let engine = Engine::open(config).unwrap();
        (dir, engine)
    })
}

fn check(table: &[Row], sql: &str, engine: &Engine, name: &str) -> Result<(), TestCaseError> {
    let sql_for_table = sql.replacen("FROM t", &format!("FROM {name}"), 1);
    let Ok(Statement::Query(query)) = parse(sql) else {
        panic!("generated SQL does not parse: {sql}")
    };
    let (expected, expected_keys) = reference(&query, table);
    let result = engine
        .sql("oracle", &sql_for_table)
        .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
    let actual = rows_of(&result.batches);
    if query.order_by.is_empty() || query.limit.is_none() {
        if query.limit.is_some() {
            let (all, _) = reference(
                &Query {
                    limit: None,
                    ..query.clone()
                },
                table,
            );
            prop_assert_eq!(actual.len(), expected.len(), "{}", sql);
            for row in &actual {
                prop_assert!(
                    all.iter()
                        .any(|r| r.iter().zip(row).all(|(a, b)| close(a, b))),
                    "{}: row {:?} not in the answer",
                    sql,
                    row
                );
            }
        } else {
            prop_assert!(
                same_multiset(expected.clone(), actual.clone()),
                "{}\nexpected {:?}\nactual   {:?}",
                sql,
                expected,
                actual
            );
        }
    }
    if !query.order_by.is_empty() {
        // The order keys must come out in the same sequence (ties may permute whole rows).
        let descending: Vec<bool> = query.order_by.iter().map(|o| o.descending).collect();
        let (_, actual_keys): (Vec<Row>, Vec<Row>) = {
            let mut table_of_actual = Vec::new();
            for row in &actual {
                let key: Row = query
                    .order_by
                    .iter()
                    .map(|o| match &o.key {
                        OrderKey::SelectItem(i) => {
                            let offset: usize = query.projection[..*i]
                                .iter()
                                .map(|p| {
                                    if matches!(p, SelectItem::Wildcard) {
                                        8
                                    } else {
                                        1
                                    }
                                })
                                .sum();
                            row[offset].clone()
                        }
                        OrderKey::Column(c) => table
                            .iter()
                            .find(|t| t[0] == row[query_id_position(&query)])
                            .map(|t| t[index(c)].clone())
                            .unwrap_or(Value::Null),
                    })
                    .collect();
                table_of_actual.push((row.clone(), key));
            }
            table_of_actual.into_iter().unzip()
        };
        prop_assert_eq!(actual_keys.len(), expected_keys.len(), "{}", sql);
        for (a, e) in actual_keys.iter().zip(&expected_keys) {
            prop_assert!(
                a.iter().zip(e).all(|(x, y)| close(x, y)),
                "{}: order keys {:?} vs {:?}",
                sql,
                actual_keys,
                expected_keys
            );
        }
        prop_assert!(
            actual_keys
                .windows(2)
                .all(|w| order(&w[0], &w[1], &descending) != Ordering::Greater),
            "{} not sorted",
            sql
        );
    }
    Ok(())
}

/// Where `id` is in the output (ORDER BY a column outside the select list needs the row's id).
fn query_id_position(query: &Query) -> usize {
    let mut position = 0;
    for item in &query.projection {
        match item {
            SelectItem::Wildcard => return position,
            SelectItem::Expr {
                expr: OutputExpr::Scalar(ScalarExpr::Column(c)),
                ..
            } if c == "id" => return position,
            _ => position += 1,
        }
    }
    usize::MAX
}

static TABLES: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_reference_evaluator(table in arb_rows(), queries in prop::collection::vec(arb_query(), 12)) {
        let (dir, engine) = engine();
        let name = format!("t{}", TABLES.fetch_add(1, AtomicOrdering::SeqCst));
        let batch = to_batch(&table);
        let options = ImportOptions {
            // Tiny pages and row groups so a few hundred rows span several of each.
            writer: Some(WriterSettings { page_rows_max: 7, row_group_bytes: 2048, ..WriterSettings::default() }),
            ..ImportOptions::default()
        };
        let mut writer = TableWriter::open(dir.path(), "oracle", &name, &batch.schema(), &options).unwrap();
        // Several imports: several files per partition.
        for part in [0..batch.num_rows() / 2, batch.num_rows() / 2..batch.num_rows()] {
            writer.write(&batch.slice(part.start, part.end - part.start)).unwrap();
        }
        writer.finish().unwrap();
        for sql in &queries {
            // ORDER BY a column that is not selected needs `id` to find the row again.
            if sql.contains("ORDER BY") && !sql.contains("GROUP BY") && !sql.starts_with("SELECT *") {
                let Ok(Statement::Query(q)) = parse(sql) else { continue };
                if q.order_by.iter().any(|o| matches!(o.key, OrderKey::Column(_))) && query_id_position(&q) == usize::MAX {
                    continue;
                }
            }
            check(&table, sql, engine, &name)?;
        }
    }
}

#[test]
fn reference_self_check_on_a_known_table() {
    let rows = vec![
        vec![
            Value::Int(1),
            Value::Int(BASE_DAY * MICROS_PER_DAY),
            Value::Null,
            Value::Int(3),
            Value::Float(1.5),
            Value::Str("alpha".into()),
            Value::Null,
            Value::Bool(true),
        ],
        vec![
            Value::Int(2),
            Value::Int(BASE_DAY * MICROS_PER_DAY + 1),
            Value::Int(BASE_DAY),
            Value::Null,
            Value::Null,
            Value::Str("beta".into()),
            Value::Str("ok".into()),
            Value::Null,
        ],
    ];
    let q = |sql: &str| match parse(sql).unwrap() {
        Statement::Query(q) => q,
        _ => unreachable!(),
    };
    assert_eq!(
        reference(
            &q("SELECT COUNT(*), SUM(qty), AVG(amount), MAX(category) FROM t"),
            &rows
        )
        .0,
        vec![vec![
            Value::Int(2),
            Value::Int(3),
            Value::Float(1.5),
            Value::Str("beta".into())
        ]]
    );
    assert_eq!(
        reference(&q("SELECT id FROM t WHERE NOT (qty > 1)"), &rows)
            .0
            .len(),
        0
    );
    assert_eq!(
        reference(&q("SELECT id FROM t WHERE qty NOT IN (1, NULL)"), &rows)
            .0
            .len(),
        0
    );
    assert_eq!(
        reference(
            &q("SELECT id FROM t WHERE status IS NULL OR amount < 2"),
            &rows
        )
        .0,
        vec![vec![Value::Int(1)]]
    );
    assert_eq!(
        reference(&q("SELECT SUM(qty) FROM t WHERE id > 5"), &rows).0,
        vec![vec![Value::Null]]
    );
}
