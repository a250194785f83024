//! The engine against an independent, naive row-at-a-time evaluator of the SQL subset. proptest
//! generates tables (every column type, NULLs, hostile values: integer extremes, sums beyond
//! int64, ±inf, NaN, -0.0, strings of a few KiB; several files, row groups and pages) and queries
//! as structured values (filters of every kind nested up to depth 3, projections, groups,
//! aggregates, ORDER BY, LIMIT). The engine gets each query rendered as SQL text; the reference
//! evaluates the structured value itself and shares no code with the engine (not its parser, not
//! its value helpers), so front-end bugs show too. Floats follow PostgreSQL's order (NaN equals
//! NaN and is above every number, -0.0 = 0.0) and compare within a relative 1e-9; an integer SUM
//! outside int64 must be an error; rows compare as multisets unless ORDER BY fixes their order
//! (ties may come in any order).

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
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::{Engine, EngineConfig};

/// Timestamps near both ends of the int64 microsecond range in generated tables (they once made
/// GROUP BY DATE loop forever: `tests/extreme_timestamps.rs`).
const EXTREME_TIMESTAMPS: bool = true;

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

// ---------------------------------------------------------------- values and tables

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Null,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

/// PostgreSQL's order of floats: NaN equals NaN and is above every number; -0.0 equals 0.0.
fn float_order(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if x < y => Ordering::Less,
        _ if x > y => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// NULL sorts after every value.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => float_order(*x, *y),
        (Value::Str(x), Value::Str(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => panic!("comparing {a:?} with {b:?}"),
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) if x.is_nan() || y.is_nan() => x.is_nan() && y.is_nan(),
        (Value::Float(x), Value::Float(y)) if x.is_infinite() || y.is_infinite() => x == y,
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

const COLUMNS: [(&str, Kind); 9] = [
    ("id", Kind::Int64),
    ("ts", Kind::Timestamp),
    ("day", Kind::Date),
    ("qty", Kind::Int32),
    ("amount", Kind::Float),
    ("category", Kind::Text),
    ("status", Kind::Text),
    ("flag", Kind::Bool),
    ("big", Kind::Int64),
];

/// Output columns of `SELECT *`.
const WIDTH: usize = COLUMNS.len();

const BASE_DAY: i64 = 19_723; // 2024-01-01
const CATEGORIES: [&str; 6] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
const STATUSES: [&str; 3] = ["ok", "error", "pending"];

/// Category `i`: the six names, then two strings of a few KiB (Parquet truncates their
/// statistics; the second is cut inside a multi-byte character).
fn category(i: usize) -> String {
    match i {
        0..=5 => CATEGORIES[i].to_string(),
        6 => format!("alpha{}", "x".repeat(4000)),
        _ => format!("zeta{}", "é".repeat(1500)),
    }
}

const CATEGORY_COUNT: usize = 8;

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

fn arb_timestamp() -> BoxedStrategy<i64> {
    let ordinary = (0i64..(4 * 86_400)).prop_map(|second| (BASE_DAY * 86_400 + second) * 1_000_000);
    if EXTREME_TIMESTAMPS {
        let extremes = vec![i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX];
        prop_oneof![20 => ordinary, 1 => prop::sample::select(extremes)].boxed()
    } else {
        ordinary.boxed()
    }
}

fn arb_amount() -> impl Strategy<Value = f64> {
    // Finite values are multiples of 1/4 below 2^50, so every sum is exact in any order.
    let hostile = vec![
        f64::NAN,
        -f64::NAN,
        0.0,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e12,
        -1e12,
    ];
    prop_oneof![
        8 => (-40i64..40).prop_map(|a| a as f64 / 4.0),
        1 => prop::sample::select(hostile)
    ]
}

fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (
        arb_timestamp(),
        prop::option::weighted(0.9, -3i64..5),
        prop::option::weighted(
            0.85,
            prop_oneof![
                8 => -50i32..50,
                1 => prop::sample::select(vec![i32::MIN, i32::MIN + 1, i32::MAX])
            ],
        ),
        prop::option::weighted(0.85, arb_amount()),
        prop::option::weighted(
            0.9,
            prop_oneof![4 => 0usize..2, 1 => 2usize..6, 1 => 6usize..CATEGORY_COUNT],
        ),
        prop::option::weighted(0.9, 0usize..3),
        prop::option::weighted(0.8, any::<bool>()),
        prop::option::weighted(
            0.9,
            prop_oneof![
                6 => -1000i64..1000,
                1 => prop::sample::select(vec![i64::MIN, i64::MIN + 1, i64::MAX - 1, i64::MAX])
            ],
        ),
    );
    prop::collection::vec(row, 0..300).prop_map(|mut rows| {
        rows.sort_by_key(|r| r.0);
        rows.into_iter()
            .enumerate()
            .map(
                |(i, (ts, day, qty, amount, category_index, status, flag, big))| {
                    vec![
                        Value::Int(i as i64 + 1),
                        Value::Int(ts),
                        day.map_or(Value::Null, |d| Value::Int(BASE_DAY + d)),
                        qty.map_or(Value::Null, |q| Value::Int(q as i64)),
                        amount.map_or(Value::Null, Value::Float),
                        category_index.map_or(Value::Null, |c| Value::Str(category(c))),
                        status.map_or(Value::Null, |s| Value::Str(STATUSES[s].into())),
                        flag.map_or(Value::Null, Value::Bool),
                        big.map_or(Value::Null, Value::Int),
                    ]
                },
            )
            .collect()
    })
}

fn to_batch(rows: &[Row]) -> RecordBatch {
    let column = |i: usize| rows.iter().map(move |r| r[i].clone());
    let int = |v: Value| if let Value::Int(x) = v { Some(x) } else { None };
    let text = |v: Value| if let Value::Str(x) = v { Some(x) } else { None };
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
        Arc::new(column(5).map(text).collect::<StringArray>()),
        Arc::new(column(6).map(text).collect::<StringArray>()),
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
        Arc::new(column(8).map(int).collect::<Int64Array>()),
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
        Field::new("big", DataType::Int64, true),
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

// ---------------------------------------------------------------- structured queries

/// A column or `DATE(column)`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expr {
    Column(&'static str),
    Date(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    /// The operator with its operands swapped (`a < b` is `b > a`).
    fn flipped(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }

    fn holds(self, order: Ordering) -> bool {
        match self {
            Op::Eq => order == Ordering::Equal,
            Op::Ne => order != Ordering::Equal,
            Op::Lt => order == Ordering::Less,
            Op::Le => order != Ordering::Greater,
            Op::Gt => order == Ordering::Greater,
            Op::Ge => order != Ordering::Less,
        }
    }
}

/// A literal and the value it denotes. Times and days are 2024-01-01 plus an offset, so the
/// reference renders them without a calendar.
#[derive(Clone, Debug, PartialEq)]
enum Lit {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    /// Day offset from 2024-01-01 (0..9), hour, minute.
    Time(i64, i64, i64),
    /// Day offset from 2024-01-01 (0..9).
    Day(i64),
    Bool(bool),
}

impl Lit {
    fn sql(&self) -> String {
        match self {
            Lit::Null => "NULL".into(),
            Lit::Int(v) => v.to_string(),
            // Display never uses an exponent; integral floats print as integers ("3").
            Lit::Float(v) => v.to_string(),
            Lit::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Lit::Time(d, 0, 0) => format!("'2024-01-{:02}'", d + 1),
            Lit::Time(d, h, m) => format!("'2024-01-{:02} {h:02}:{m:02}:00'", d + 1),
            Lit::Day(d) => format!("'2024-01-{:02}'", d + 1),
            Lit::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        }
    }

    fn value(&self) -> Value {
        match self {
            Lit::Null => Value::Null,
            Lit::Int(v) => Value::Int(*v),
            Lit::Float(v) => Value::Float(*v),
            Lit::Text(s) => Value::Str(s.clone()),
            Lit::Time(d, h, m) => {
                Value::Int((BASE_DAY + d) * MICROS_PER_DAY + (h * 3600 + m * 60) * 1_000_000)
            }
            Lit::Day(d) => Value::Int(BASE_DAY + d),
            Lit::Bool(b) => Value::Bool(*b),
        }
    }
}

#[derive(Clone, Debug)]
enum Pred {
    /// `column op lit`, or `lit op column` when `literal_first`.
    Compare {
        column: &'static str,
        op: Op,
        literal: Lit,
        literal_first: bool,
    },
    Between {
        column: &'static str,
        low: Lit,
        high: Lit,
        negated: bool,
    },
    In {
        column: &'static str,
        list: Vec<Lit>,
        negated: bool,
    },
    IsNull {
        column: &'static str,
        negated: bool,
    },
    /// `LIKE 'pattern%'` when `prefix`, else `LIKE 'pattern'`.
    Like {
        column: &'static str,
        pattern: String,
        prefix: bool,
        negated: bool,
    },
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Func {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Clone, Debug, PartialEq)]
enum Item {
    Star,
    Scalar(Expr),
    Aggregate(Func, Expr),
}

#[derive(Clone, Debug, PartialEq)]
enum OrderKey {
    Column(&'static str),
    /// 1-based select-list position.
    Position(usize),
}

#[derive(Clone, Debug)]
struct Query {
    items: Vec<Item>,
    filter: Option<Pred>,
    group_by: Vec<Expr>,
    /// Keys and whether descending.
    order_by: Vec<(OrderKey, bool)>,
    limit: Option<u64>,
}

fn expr_sql(expr: Expr) -> String {
    match expr {
        Expr::Column(c) => c.to_string(),
        Expr::Date(c) => format!("DATE({c})"),
    }
}

fn pred_sql(pred: &Pred) -> String {
    let not = |negated: bool| if negated { "NOT " } else { "" };
    match pred {
        Pred::Compare {
            column,
            op,
            literal,
            literal_first: false,
        } => format!("{column} {} {}", op.sql(), literal.sql()),
        Pred::Compare {
            column,
            op,
            literal,
            literal_first: true,
        } => format!("{} {} {column}", literal.sql(), op.sql()),
        Pred::Between {
            column,
            low,
            high,
            negated,
        } => format!(
            "{column} {}BETWEEN {} AND {}",
            not(*negated),
            low.sql(),
            high.sql()
        ),
        Pred::In {
            column,
            list,
            negated,
        } => {
            let list: Vec<String> = list.iter().map(Lit::sql).collect();
            format!("{column} {}IN ({})", not(*negated), list.join(", "))
        }
        Pred::IsNull { column, negated } => format!("{column} IS {}NULL", not(*negated)),
        Pred::Like {
            column,
            pattern,
            prefix,
            negated,
        } => format!(
            "{column} {}LIKE '{pattern}{}'",
            not(*negated),
            if *prefix { "%" } else { "" }
        ),
        Pred::And(a, b) => format!("({} AND {})", pred_sql(a), pred_sql(b)),
        Pred::Or(a, b) => format!("({} OR {})", pred_sql(a), pred_sql(b)),
        Pred::Not(a) => format!("NOT ({})", pred_sql(a)),
    }
}

/// The SQL text the engine gets for `query` over `table`.
fn render(query: &Query, table: &str) -> String {
    let items: Vec<String> = query
        .items
        .iter()
        .map(|item| match item {
            Item::Star => "*".to_string(),
            Item::Scalar(expr) => expr_sql(*expr),
            Item::Aggregate(Func::CountStar, _) => "COUNT(*)".to_string(),
            Item::Aggregate(function, expr) => {
                let name = match function {
                    Func::CountStar | Func::Count => "COUNT",
                    Func::Sum => "SUM",
                    Func::Avg => "AVG",
                    Func::Min => "MIN",
                    Func::Max => "MAX",
                };
                format!("{name}({})", expr_sql(*expr))
            }
        })
        .collect();
    let mut sql = format!("SELECT {} FROM {table}", items.join(", "));
    if let Some(filter) = &query.filter {
        sql += &format!(" WHERE {}", pred_sql(filter));
    }
    if !query.group_by.is_empty() {
        let keys: Vec<String> = query.group_by.iter().map(|k| expr_sql(*k)).collect();
        sql += &format!(" GROUP BY {}", keys.join(", "));
    }
    if !query.order_by.is_empty() {
        let keys: Vec<String> = query
            .order_by
            .iter()
            .map(|(key, descending)| {
                let key = match key {
                    OrderKey::Column(c) => c.to_string(),
                    OrderKey::Position(p) => p.to_string(),
                };
                format!("{key}{}", if *descending { " DESC" } else { "" })
            })
            .collect();
        sql += &format!(" ORDER BY {}", keys.join(", "));
    }
    if let Some(limit) = query.limit {
        sql += &format!(" LIMIT {limit}");
    }
    sql
}

// ---------------------------------------------------------------- the reference evaluator

/// An integer SUM whose result is outside int64: the engine must answer an error.
#[derive(Debug, PartialEq)]
struct SumOverflow;

/// The literal's value as the column's type (an integer literal on a float column is a float).
fn literal_value(column: &str, literal: &Lit) -> Value {
    match (kind(column), literal.value()) {
        (Kind::Float, Value::Int(v)) => Value::Float(v as f64),
        (_, value) => value,
    }
}

/// Kleene logic: None is UNKNOWN.
fn truth(predicate: &Pred, row: &Row) -> Option<bool> {
    let cmp = |column: &str, op: Op, literal: &Lit| -> Option<bool> {
        let value = &row[index(column)];
        let literal = literal_value(column, literal);
        if *value == Value::Null || literal == Value::Null {
            return None;
        }
        Some(op.holds(compare(value, &literal)))
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
        Pred::Compare {
            column,
            op,
            literal,
            literal_first,
        } => cmp(
            column,
            if *literal_first { op.flipped() } else { *op },
            literal,
        ),
        Pred::Between {
            column,
            low,
            high,
            negated,
        } => {
            let inside = and(cmp(column, Op::Ge, low), cmp(column, Op::Le, high));
            if *negated {
                inside.map(|b| !b)
            } else {
                inside
            }
        }
        Pred::In {
            column,
            list,
            negated,
        } => {
            // None is UNKNOWN here, not a failure: no short-circuit.
            let mut found = Some(false);
            for literal in list {
                found = or(found, cmp(column, Op::Eq, literal));
            }
            if *negated {
                found.map(|b| !b)
            } else {
                found
            }
        }
        Pred::IsNull { column, negated } => Some((row[index(column)] == Value::Null) != *negated),
        Pred::Like {
            column,
            pattern,
            prefix,
            negated,
        } => match &row[index(column)] {
            Value::Str(s) => Some(
                (if *prefix {
                    s.starts_with(pattern.as_str())
                } else {
                    s == pattern
                }) != *negated,
            ),
            _ => None,
        },
        Pred::And(a, b) => and(truth(a, row), truth(b, row)),
        Pred::Or(a, b) => or(truth(a, row), truth(b, row)),
        Pred::Not(a) => truth(a, row).map(|b| !b),
    }
}

fn scalar(expr: Expr, row: &Row) -> Value {
    match expr {
        Expr::Column(c) => row[index(c)].clone(),
        Expr::Date(c) => match (&row[index(c)], kind(c)) {
            (Value::Int(t), Kind::Timestamp) => Value::Int(t.div_euclid(MICROS_PER_DAY)),
            (v, _) => v.clone(),
        },
    }
}

fn aggregate(function: Func, argument: Expr, rows: &[&Row]) -> Result<Value, SumOverflow> {
    if function == Func::CountStar {
        return Ok(Value::Int(rows.len() as i64));
    }
    let values: Vec<Value> = rows
        .iter()
        .map(|r| scalar(argument, r))
        .filter(|v| *v != Value::Null)
        .collect();
    Ok(match function {
        Func::CountStar | Func::Count => Value::Int(values.len() as i64),
        _ if values.is_empty() => Value::Null,
        Func::Sum | Func::Avg if matches!(values[0], Value::Float(_)) => {
            let total: f64 = values
                .iter()
                .map(|v| if let Value::Float(x) = v { *x } else { 0.0 })
                .sum();
            if function == Func::Avg {
                Value::Float(total / values.len() as f64)
            } else {
                Value::Float(total)
            }
        }
        Func::Sum | Func::Avg => {
            let total: i128 = values
                .iter()
                .map(|v| if let Value::Int(x) = v { *x as i128 } else { 0 })
                .sum();
            if function == Func::Avg {
                Value::Float(total as f64 / values.len() as f64)
            } else {
                Value::Int(i64::try_from(total).map_err(|_| SumOverflow)?)
            }
        }
        Func::Min => values.into_iter().min_by(compare).unwrap(),
        Func::Max => values.into_iter().max_by(compare).unwrap(),
    })
}

/// Output rows of `item` for a group (or a single row).
fn item_value(item: &Item, rows: &[&Row]) -> Result<Vec<Value>, SumOverflow> {
    Ok(match item {
        Item::Star => rows[0].clone(),
        Item::Scalar(expr) => vec![scalar(*expr, rows[0])],
        Item::Aggregate(function, argument) => vec![aggregate(*function, *argument, rows)?],
    })
}

type Answer = (Vec<Row>, Vec<Row>);

/// Evaluates `query` over `table`: output rows, and for each output row its ORDER BY key values.
fn reference(query: &Query, table: &[Row]) -> Result<Answer, SumOverflow> {
    let kept: Vec<&Row> = table
        .iter()
        .filter(|r| {
            query
                .filter
                .as_ref()
                .is_none_or(|p| truth(p, r) == Some(true))
        })
        .collect();
    let grouped =
        !query.group_by.is_empty() || query.items.iter().any(|i| matches!(i, Item::Aggregate(..)));
    let key_of = |rows: &[&Row]| -> Result<Row, SumOverflow> {
        query
            .order_by
            .iter()
            .map(|(key, _)| match key {
                OrderKey::Position(p) => Ok(item_value(&query.items[p - 1], rows)?[0].clone()),
                OrderKey::Column(c) => Ok(rows[0][index(c)].clone()),
            })
            .collect()
    };
    let mut out: Vec<(Row, Row)> = Vec::new();
    if grouped {
        let mut groups: Vec<(Row, Vec<&Row>)> = Vec::new();
        for row in &kept {
            let key: Row = query.group_by.iter().map(|g| scalar(*g, row)).collect();
            let same = |k: &Row| k.iter().zip(&key).all(|(a, b)| compare(a, b).is_eq());
            match groups.iter_mut().find(|(k, _)| same(k)) {
                Some((_, members)) => members.push(row),
                None => groups.push((key, vec![row])),
            }
        }
        if query.group_by.is_empty() && groups.is_empty() {
            groups.push((Vec::new(), Vec::new()));
        }
        // Every group is finished before LIMIT, so an overflow anywhere is an error.
        for (_, members) in &groups {
            let mut output = Row::new();
            for item in &query.items {
                output.extend(item_value(item, members)?);
            }
            let key = if members.is_empty() {
                Vec::new()
            } else {
                key_of(members)?
            };
            out.push((output, key));
        }
    } else {
        for row in &kept {
            let mut output = Row::new();
            for item in &query.items {
                output.extend(item_value(item, &[row])?);
            }
            out.push((output, key_of(&[row])?));
        }
    }
    let descending: Vec<bool> = query.order_by.iter().map(|(_, d)| *d).collect();
    out.sort_by(|a, b| order(&a.1, &b.1, &descending));
    if let Some(limit) = query.limit {
        out.truncate(limit as usize);
    }
    Ok(out.into_iter().unzip())
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

fn arb_literal(column: &'static str) -> BoxedStrategy<Lit> {
    match kind(column) {
        Kind::Int64 if column == "big" => prop_oneof![
            4 => (-1000i64..1000).prop_map(Lit::Int),
            1 => prop::sample::select(vec![i64::MIN, -i64::MAX, i64::MAX - 1, i64::MAX])
                .prop_map(Lit::Int)
        ]
        .boxed(),
        Kind::Int64 => (0i64..320).prop_map(Lit::Int).boxed(),
        Kind::Int32 => prop_oneof![
            8 => (-55i64..55).prop_map(Lit::Int),
            1 => prop::sample::select(vec![
                5_000_000_000,
                i32::MIN as i64,
                i32::MAX as i64,
                i32::MAX as i64 + 1
            ])
            .prop_map(Lit::Int)
        ]
        .boxed(),
        Kind::Float => prop_oneof![
            4 => (-45i64..45).prop_map(|v| Lit::Float(v as f64 / 4.0)),
            2 => (-12i64..12).prop_map(Lit::Int),
            1 => prop::sample::select(vec![-0.0, 1e12, -1e12, 0.1]).prop_map(Lit::Float)
        ]
        .boxed(),
        Kind::Text => prop_oneof![
            (0..CATEGORY_COUNT).prop_map(|c| Lit::Text(category(c))),
            prop::sample::select(STATUSES.to_vec()).prop_map(|s| Lit::Text(s.into())),
            prop::sample::select(vec!["zzz", "", "it's"]).prop_map(|s| Lit::Text(s.into())),
        ]
        .boxed(),
        Kind::Timestamp => (0i64..5, 0i64..24, 0i64..60)
            .prop_map(|(d, h, m)| Lit::Time(d, h, m))
            .boxed(),
        Kind::Date => (0i64..9).prop_map(Lit::Day).boxed(),
        Kind::Bool => any::<bool>().prop_map(Lit::Bool).boxed(),
    }
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge])
}

fn arb_leaf() -> BoxedStrategy<Pred> {
    let column = prop::sample::select(COLUMNS.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    column
        .prop_flat_map(|column| {
            let literal = arb_literal(column);
            let mut choices: Vec<BoxedStrategy<Pred>> = vec![
                (arb_op(), literal.clone())
                    .prop_map(move |(op, literal)| Pred::Compare {
                        column,
                        op,
                        literal,
                        literal_first: false,
                    })
                    .boxed(),
                (
                    literal.clone(),
                    prop::sample::select(vec![Op::Eq, Op::Lt, Op::Ge]),
                )
                    .prop_map(move |(literal, op)| Pred::Compare {
                        column,
                        op,
                        literal,
                        literal_first: true,
                    })
                    .boxed(),
                (literal.clone(), literal.clone(), any::<bool>())
                    .prop_map(move |(low, high, negated)| Pred::Between {
                        column,
                        low,
                        high,
                        negated,
                    })
                    .boxed(),
                (
                    prop::collection::vec(literal.clone(), 1..4),
                    any::<bool>(),
                    prop::bool::weighted(0.1),
                )
                    .prop_map(move |(mut list, negated, null)| {
                        if null {
                            list.push(Lit::Null);
                        }
                        Pred::In {
                            column,
                            list,
                            negated,
                        }
                    })
                    .boxed(),
                any::<bool>()
                    .prop_map(move |negated| Pred::IsNull { column, negated })
                    .boxed(),
                Just(Pred::Compare {
                    column,
                    op: Op::Eq,
                    literal: Lit::Null,
                    literal_first: false,
                })
                .boxed(),
            ];
            if kind(column) == Kind::Text {
                choices.push(
                    (
                        prop::sample::select(vec!["al", "alpha", "alphaxxx", "e", "", "ok", "ze"]),
                        any::<bool>(),
                        any::<bool>(),
                    )
                        .prop_map(move |(pattern, prefix, negated)| Pred::Like {
                            column,
                            pattern: pattern.to_string(),
                            prefix,
                            negated,
                        })
                        .boxed(),
                );
            }
            prop::strategy::Union::new(choices)
        })
        .boxed()
}

fn arb_predicate() -> impl Strategy<Value = Pred> {
    arb_leaf().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Pred::Not(Box::new(a))),
        ]
    })
}

const KEYS: [Expr; 9] = [
    Expr::Column("category"),
    Expr::Column("status"),
    Expr::Date("ts"),
    Expr::Column("qty"),
    Expr::Column("day"),
    Expr::Column("flag"),
    Expr::Date("day"),
    Expr::Column("amount"),
    Expr::Column("big"),
];

const AGGREGATES: [(Func, Expr); 20] = [
    (Func::CountStar, Expr::Column("id")),
    (Func::Count, Expr::Column("amount")),
    (Func::Sum, Expr::Column("qty")),
    (Func::Sum, Expr::Column("amount")),
    (Func::Avg, Expr::Column("qty")),
    (Func::Avg, Expr::Column("amount")),
    (Func::Min, Expr::Column("ts")),
    (Func::Max, Expr::Column("category")),
    (Func::Min, Expr::Column("amount")),
    (Func::Max, Expr::Column("amount")),
    (Func::Max, Expr::Column("day")),
    (Func::Min, Expr::Column("flag")),
    (Func::Count, Expr::Column("status")),
    (Func::Max, Expr::Column("qty")),
    (Func::Min, Expr::Date("ts")),
    (Func::Sum, Expr::Column("big")),
    (Func::Avg, Expr::Column("big")),
    (Func::Min, Expr::Column("big")),
    (Func::Min, Expr::Column("category")),
    (Func::Sum, Expr::Column("id")),
];

fn arb_query() -> impl Strategy<Value = Query> {
    let columns: Vec<&'static str> = COLUMNS.iter().map(|(n, _)| *n).collect();
    let rows = (
        prop_oneof![
            Just(vec![Item::Star]),
            prop::sample::subsequence(columns.clone(), 1..5).prop_map(|c| c
                .into_iter()
                .map(|c| Item::Scalar(Expr::Column(c)))
                .collect())
        ],
        prop::option::of(arb_predicate()),
        prop::option::of((prop::sample::select(columns), any::<bool>())),
        prop::option::weighted(0.3, 0u64..20),
    )
        .prop_map(|(items, filter, order, limit)| Query {
            items,
            filter,
            group_by: Vec::new(),
            order_by: order
                .map(|(c, descending)| (OrderKey::Column(c), descending))
                .into_iter()
                .collect(),
            limit,
        });
    let groups = (
        prop::sample::subsequence(KEYS.to_vec(), 0..3),
        prop::collection::vec(prop::sample::select(AGGREGATES.to_vec()), 1..4),
        prop::option::of(arb_predicate()),
        any::<bool>(),
        prop::option::weighted(0.3, 0u64..10),
    )
        .prop_map(|(keys, aggregates, filter, descending, limit)| {
            let items: Vec<Item> = keys
                .iter()
                .map(|k| Item::Scalar(*k))
                .chain(aggregates.iter().map(|(f, e)| Item::Aggregate(*f, *e)))
                .collect();
            // Order by every key so the order is total; by position, descending sometimes.
            let order_by = (1..=keys.len())
                .map(|i| (OrderKey::Position(i), descending))
                .collect();
            Query {
                items,
                filter,
                limit: if keys.is_empty() { None } else { limit },
                group_by: keys,
                order_by,
            }
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
        // Files of a few hundred rows split across both cores, a share of row groups each.
        config.split_file_rows = 64;
        let engine = Engine::open(config).unwrap();
        (dir, engine)
    })
}

fn check(table: &[Row], query: &Query, engine: &Engine, name: &str) -> Result<(), TestCaseError> {
    let sql = render(query, name);
    let answer = engine.sql("oracle", &sql);
    let ((expected, expected_keys), actual) = match (reference(query, table), answer) {
        (Err(SumOverflow), Err(error)) => {
            prop_assert!(
                error.to_string().contains("overflow"),
                "{}: the error is not the SUM overflow: {}",
                sql,
                error
            );
            return Ok(());
        }
        (Err(SumOverflow), Ok(result)) => {
            return Err(TestCaseError::fail(format!(
                "{sql}: an integer SUM overflows int64, but the engine answered {:?}",
                rows_of(&result.batches)
            )))
        }
        (Ok(_), Err(error)) => return Err(TestCaseError::fail(format!("{sql}: {error}"))),
        (Ok(expected), Ok(result)) => (expected, rows_of(&result.batches)),
    };
    if query.order_by.is_empty() || query.limit.is_none() {
        if query.limit.is_some() {
            let all = reference(
                &Query {
                    limit: None,
                    ..query.clone()
                },
                table,
            )
            .map_err(|_| TestCaseError::fail(format!("{sql}: overflow only without LIMIT")))?
            .0;
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
        let descending: Vec<bool> = query.order_by.iter().map(|(_, d)| *d).collect();
        let actual_keys: Vec<Row> = actual
            .iter()
            .map(|row| {
                query
                    .order_by
                    .iter()
                    .map(|(key, _)| match key {
                        OrderKey::Position(p) => {
                            let offset: usize = query.items[..p - 1]
                                .iter()
                                .map(|item| if *item == Item::Star { WIDTH } else { 1 })
                                .sum();
                            row[offset].clone()
                        }
                        OrderKey::Column(c) => table
                            .iter()
                            .find(|t| t[0] == row[query_id_position(query)])
                            .map(|t| t[index(c)].clone())
                            .unwrap_or(Value::Null),
                    })
                    .collect()
            })
            .collect();
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
    for item in &query.items {
        match item {
            Item::Star => return position,
            Item::Scalar(Expr::Column("id")) => return position,
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
        for query in &queries {
            // ORDER BY a column that is not selected needs `id` to find the row again.
            let by_column = query.order_by.iter().any(|(k, _)| matches!(k, OrderKey::Column(_)));
            if by_column && query_id_position(query) == usize::MAX {
                continue;
            }
            // Twice: the second run takes float sums and counts from the partial-result cache.
            check(&table, query, engine, &name)?;
            check(&table, query, engine, &name)?;
        }
    }
}

#[test]
fn reference_self_check_on_a_known_table() {
    let row = |id: i64, day: Value, qty: Value, amount: Value, category: Value, big: Value| {
        vec![
            Value::Int(id),
            Value::Int(BASE_DAY * MICROS_PER_DAY + id),
            day,
            qty,
            amount,
            category,
            Value::Null,
            Value::Null,
            big,
        ]
    };
    let rows = vec![
        row(
            1,
            Value::Null,
            Value::Int(3),
            Value::Float(1.5),
            Value::Str("alpha".into()),
            Value::Int(i64::MAX),
        ),
        row(
            2,
            Value::Int(BASE_DAY),
            Value::Null,
            Value::Null,
            Value::Str("beta".into()),
            Value::Int(1),
        ),
        row(
            3,
            Value::Null,
            Value::Null,
            Value::Float(f64::NAN),
            Value::Null,
            Value::Null,
        ),
        row(
            4,
            Value::Null,
            Value::Null,
            Value::Float(-0.0),
            Value::Null,
            Value::Null,
        ),
    ];
    let aggregates = |items: &[(Func, Expr)], filter: Option<Pred>| Query {
        items: items.iter().map(|(f, e)| Item::Aggregate(*f, *e)).collect(),
        filter,
        group_by: Vec::new(),
        order_by: Vec::new(),
        limit: None,
    };
    let compare = |column, op, literal| Pred::Compare {
        column,
        op,
        literal,
        literal_first: false,
    };
    let query = aggregates(
        &[
            (Func::CountStar, Expr::Column("id")),
            (Func::Sum, Expr::Column("qty")),
            (Func::Max, Expr::Column("category")),
            (Func::Min, Expr::Column("amount")),
        ],
        None,
    );
    assert_eq!(
        render(&query, "t"),
        "SELECT COUNT(*), SUM(qty), MAX(category), MIN(amount) FROM t"
    );
    assert_eq!(
        reference(&query, &rows).unwrap().0,
        vec![vec![
            Value::Int(4),
            Value::Int(3),
            Value::Str("beta".into()),
            Value::Float(-0.0),
        ]]
    );
    let max = reference(
        &aggregates(&[(Func::Max, Expr::Column("amount"))], None),
        &rows,
    )
    .unwrap();
    assert!(matches!(max.0[0][0], Value::Float(v) if v.is_nan()));
    // NaN is above every number; -0.0 equals 0.0.
    let count = |filter: Pred| match reference(
        &aggregates(&[(Func::CountStar, Expr::Column("id"))], Some(filter)),
        &rows,
    ) {
        Ok((rows, _)) => rows[0][0].clone(),
        Err(SumOverflow) => Value::Null,
    };
    assert_eq!(
        count(compare("amount", Op::Gt, Lit::Int(100))),
        Value::Int(1)
    );
    assert_eq!(
        count(compare("amount", Op::Eq, Lit::Float(0.0))),
        Value::Int(1)
    );
    assert_eq!(
        count(Pred::Not(Box::new(compare("amount", Op::Lt, Lit::Int(5))))),
        Value::Int(1)
    );
    assert_eq!(
        count(Pred::Not(Box::new(compare("qty", Op::Gt, Lit::Int(1))))),
        Value::Int(0)
    );
    let not_in = Pred::In {
        column: "qty",
        list: vec![Lit::Int(1), Lit::Null],
        negated: true,
    };
    assert_eq!(pred_sql(&not_in), "qty NOT IN (1, NULL)");
    assert_eq!(count(not_in), Value::Int(0));
    // SUM of integers past int64 is an error, not a wrapped number.
    assert_eq!(
        reference(
            &aggregates(&[(Func::Sum, Expr::Column("big"))], None),
            &rows
        ),
        Err(SumOverflow)
    );
    let below_max = compare("big", Op::Lt, Lit::Int(i64::MAX));
    assert_eq!(
        reference(
            &aggregates(&[(Func::Sum, Expr::Column("big"))], Some(below_max)),
            &rows
        )
        .unwrap()
        .0,
        vec![vec![Value::Int(1)]]
    );
    let date = Lit::Time(0, 5, 7);
    assert_eq!(date.sql(), "'2024-01-01 05:07:00'");
    assert_eq!(
        date.value(),
        Value::Int(BASE_DAY * MICROS_PER_DAY + (5 * 3600 + 7 * 60) * 1_000_000)
    );
}
