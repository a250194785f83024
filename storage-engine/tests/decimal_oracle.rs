//! DECIMAL columns against a naive row-at-a-time evaluator (proptest). Tables hold a
//! DECIMAL(38, s) column `d` (s is 0, 2 or 10 per table) with hostile values (the largest and
//! smallest DECIMAL(38, s), zero, negatives, NULLs), a DECIMAL(9,2) column `e` (Parquet INT32)
//! and a small group key `k`, written as several files of tiny pages so statistics and the page
//! index prune. Queries: filters nested two deep (comparisons with literals written with more
//! or fewer fractional digits than the scale, in plain or exponent form, far beyond 38 digits,
//! BETWEEN, IN, IS NULL, NOT), aggregates (COUNT, SUM, MIN, MAX, AVG) with and without
//! GROUP BY, and sorted rows with LIMIT. The reference compares numbers as exact rationals in
//! 256-bit integers and shares no code with the engine: SUM past 38 digits must be an error,
//! AVG is DECIMAL(38, min(max(s, 6), 38 - (p - s))) rounded half away from zero.

mod support;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int64Type};
use arrow_array::{Array, ArrayRef, Decimal128Array, Int64Array, RecordBatch};
use arrow_buffer::i256;
use arrow_schema::DataType;
use proptest::prelude::*;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use tessera_storage_engine::table::manifest::WriterSettings;
use tessera_storage_engine::table::writer::{ImportOptions, TableWriter};
use tessera_storage_engine::Engine;

const MAX38: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
const E_MAX: i128 = 999_999_999;

#[derive(Clone, Debug)]
struct Row {
    k: Option<i64>,
    d: Option<i128>,
    e: Option<i128>,
}

#[derive(Clone, Debug)]
struct Table {
    /// Scale of `d`; `e` is DECIMAL(9,2).
    scale: u8,
    rows: Vec<Row>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Col {
    D,
    E,
}

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::D => "d",
            Col::E => "e",
        }
    }

    /// (precision, scale) in `table`.
    fn type_of(self, table: &Table) -> (u8, u8) {
        match self {
            Col::D => (38, table.scale),
            Col::E => (9, 2),
        }
    }

    fn value(self, row: &Row) -> Option<i128> {
        match self {
            Col::D => row.d,
            Col::E => row.e,
        }
    }
}

fn pow10(n: u32) -> i256 {
    (0..n).fold(i256::ONE, |acc, _| acc * i256::from_i128(10))
}

/// A number literal `mantissa × 10^exponent`, written plainly or with an exponent.
#[derive(Clone, Debug)]
enum Lit {
    Null,
    Number {
        mantissa: i128,
        exponent: i32,
        exponent_form: bool,
    },
}

impl Lit {
    fn sql(&self) -> String {
        let Lit::Number {
            mantissa,
            exponent,
            exponent_form,
        } = self
        else {
            return "NULL".into();
        };
        if *exponent_form {
            return format!("{mantissa}e{exponent}");
        }
        let sign = if *mantissa < 0 { "-" } else { "" };
        let digits = mantissa.unsigned_abs().to_string();
        if *exponent >= 0 {
            return format!("{sign}{digits}{}", "0".repeat(*exponent as usize));
        }
        let fraction = (-exponent) as usize;
        let padded = format!("{digits:0>width$}", width = fraction + 1);
        let (whole, rest) = padded.split_at(padded.len() - fraction);
        format!("{sign}{whole}.{rest}")
    }

    /// Compares the stored value `x` (unscaled, `scale`) with the literal, exactly.
    fn compare(&self, x: i128, scale: u8) -> Option<Ordering> {
        let Lit::Number {
            mantissa, exponent, ..
        } = self
        else {
            return None;
        };
        // x × 10^-scale against m × 10^exponent, both multiplied by 10^shift.
        let shift = (scale as i32).max(-exponent);
        let left = i256::from_i128(x) * pow10((shift - scale as i32) as u32);
        let right = i256::from_i128(*mantissa) * pow10((exponent + shift) as u32);
        Some(left.cmp(&right))
    }
}

#[derive(Clone, Copy, Debug)]
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
        ["=", "<>", "<", "<=", ">", ">="][self as usize]
    }

    fn holds(self, order: Ordering) -> bool {
        match self {
            Op::Eq => order.is_eq(),
            Op::Ne => order.is_ne(),
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::Gt => order.is_gt(),
            Op::Ge => order.is_ge(),
        }
    }

    /// `a op b` is `b flipped(op) a`.
    fn flipped(self) -> Op {
        match self {
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
            other => other,
        }
    }
}

#[derive(Clone, Debug)]
enum Pred {
    Compare {
        col: Col,
        op: Op,
        lit: Lit,
        literal_first: bool,
    },
    Between {
        col: Col,
        low: Lit,
        high: Lit,
        negated: bool,
    },
    In {
        col: Col,
        list: Vec<Lit>,
        negated: bool,
    },
    IsNull {
        col: Col,
        negated: bool,
    },
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

fn pred_sql(pred: &Pred) -> String {
    let not = |n: bool| if n { "NOT " } else { "" };
    match pred {
        Pred::Compare {
            col,
            op,
            lit,
            literal_first: false,
        } => format!("{} {} {}", col.name(), op.sql(), lit.sql()),
        Pred::Compare { col, op, lit, .. } => {
            format!("{} {} {}", lit.sql(), op.flipped().sql(), col.name())
        }
        Pred::Between {
            col,
            low,
            high,
            negated,
        } => format!(
            "{} {}BETWEEN {} AND {}",
            col.name(),
            not(*negated),
            low.sql(),
            high.sql()
        ),
        Pred::In { col, list, negated } => format!(
            "{} {}IN ({})",
            col.name(),
            not(*negated),
            list.iter().map(Lit::sql).collect::<Vec<_>>().join(", ")
        ),
        Pred::IsNull { col, negated } => format!("{} IS {}NULL", col.name(), not(*negated)),
        Pred::And(a, b) => format!("({} AND {})", pred_sql(a), pred_sql(b)),
        Pred::Or(a, b) => format!("({} OR {})", pred_sql(a), pred_sql(b)),
        Pred::Not(a) => format!("NOT ({})", pred_sql(a)),
    }
}

/// SQL's three-valued logic: `None` is UNKNOWN.
fn eval(pred: &Pred, row: &Row, table: &Table) -> Option<bool> {
    let compare = |col: Col, lit: &Lit| -> Option<Ordering> {
        lit.compare(col.value(row)?, col.type_of(table).1)
    };
    match pred {
        Pred::Compare { col, op, lit, .. } => compare(*col, lit).map(|o| op.holds(o)),
        Pred::Between {
            col,
            low,
            high,
            negated,
        } => {
            let above = compare(*col, low).map(|o| o.is_ge());
            let below = compare(*col, high).map(|o| o.is_le());
            let inside = and(above, below);
            if *negated {
                inside.map(|v| !v)
            } else {
                inside
            }
        }
        Pred::In { col, list, negated } => {
            let mut found = Some(false);
            for lit in list {
                found = or(found, compare(*col, lit).map(|o| o.is_eq()));
            }
            if *negated {
                found.map(|v| !v)
            } else {
                found
            }
        }
        Pred::IsNull { col, negated } => Some(col.value(row).is_none() != *negated),
        Pred::And(a, b) => and(eval(a, row, table), eval(b, row, table)),
        Pred::Or(a, b) => or(eval(a, row, table), eval(b, row, table)),
        Pred::Not(a) => eval(a, row, table).map(|v| !v),
    }
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
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

#[derive(Clone, Debug)]
enum Shape {
    /// Aggregates, grouped by `k` (and ordered by it) when `grouped`.
    Aggregates {
        items: Vec<(Func, Col)>,
        grouped: bool,
    },
    /// `SELECT d, e ... ORDER BY d, e` (both descending when `descending`) `LIMIT limit`.
    Rows { descending: bool, limit: u64 },
}

#[derive(Clone, Debug)]
struct Query {
    shape: Shape,
    filter: Option<Pred>,
}

fn render(query: &Query, table: &str) -> String {
    let filter = query
        .filter
        .as_ref()
        .map_or(String::new(), |p| format!(" WHERE {}", pred_sql(p)));
    match &query.shape {
        Shape::Aggregates { items, grouped } => {
            let mut list: Vec<String> = Vec::new();
            if *grouped {
                list.push("k".into());
            }
            for (func, col) in items {
                let name = col.name();
                list.push(match func {
                    Func::CountStar => "COUNT(*)".into(),
                    Func::Count => format!("COUNT({name})"),
                    Func::Sum => format!("SUM({name})"),
                    Func::Avg => format!("AVG({name})"),
                    Func::Min => format!("MIN({name})"),
                    Func::Max => format!("MAX({name})"),
                });
            }
            let group = if *grouped {
                " GROUP BY k ORDER BY k"
            } else {
                ""
            };
            format!("SELECT {} FROM {table}{filter}{group}", list.join(", "))
        }
        Shape::Rows { descending, limit } => {
            let direction = if *descending { " DESC" } else { "" };
            format!("SELECT d, e FROM {table}{filter} ORDER BY d{direction}, e{direction} LIMIT {limit}")
        }
    }
}

/// A result value: NULL, an integer (counts, `k`) or a decimal (unscaled, with its type).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Null,
    Int(i64),
    Dec(i128, u8, u8),
}

/// NULL after every value (ascending), as the engine orders.
fn order(a: &Option<i128>, b: &Option<i128>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, _) => Ordering::Greater,
        (_, None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// The expected rows, or `Err(())` when a SUM must overflow.
fn reference(query: &Query, table: &Table) -> Result<Vec<Vec<Val>>, ()> {
    let kept: Vec<&Row> = table
        .rows
        .iter()
        .filter(|row| {
            query
                .filter
                .as_ref()
                .is_none_or(|p| eval(p, row, table) == Some(true))
        })
        .collect();
    match &query.shape {
        Shape::Rows { descending, limit } => {
            let mut rows: Vec<(Option<i128>, Option<i128>)> =
                kept.iter().map(|r| (r.d, r.e)).collect();
            rows.sort_by(|a, b| order(&a.0, &b.0).then(order(&a.1, &b.1)));
            if *descending {
                rows.reverse();
            }
            rows.truncate(*limit as usize);
            let (d, e) = (Col::D.type_of(table), Col::E.type_of(table));
            Ok(rows
                .into_iter()
                .map(|(x, y)| {
                    vec![
                        x.map_or(Val::Null, |v| Val::Dec(v, d.0, d.1)),
                        y.map_or(Val::Null, |v| Val::Dec(v, e.0, e.1)),
                    ]
                })
                .collect())
        }
        Shape::Aggregates { items, grouped } => {
            let mut keys: Vec<Option<i64>> = if *grouped {
                kept.iter().map(|r| r.k).collect()
            } else {
                vec![None]
            };
            keys.sort_by(|a, b| match (a, b) {
                (None, None) => Ordering::Equal,
                (None, _) => Ordering::Greater,
                (_, None) => Ordering::Less,
                (Some(x), Some(y)) => x.cmp(y),
            });
            keys.dedup();
            let mut out = Vec::new();
            for key in keys {
                let rows: Vec<&&Row> = kept.iter().filter(|r| !*grouped || r.k == key).collect();
                let mut row = Vec::new();
                if *grouped {
                    row.push(key.map_or(Val::Null, Val::Int));
                }
                for (func, col) in items {
                    let (precision, scale) = col.type_of(table);
                    let values: Vec<i128> = rows.iter().filter_map(|r| col.value(r)).collect();
                    let sum = values
                        .iter()
                        .fold(i256::ZERO, |s, v| s + i256::from_i128(*v));
                    let limit = pow10(38);
                    row.push(match func {
                        Func::CountStar => Val::Int(rows.len() as i64),
                        Func::Count => Val::Int(values.len() as i64),
                        _ if values.is_empty() => Val::Null,
                        Func::Sum if sum >= limit || sum <= -limit => return Err(()),
                        Func::Sum => Val::Dec(sum.to_i128().unwrap(), 38, scale),
                        Func::Min => Val::Dec(*values.iter().min().unwrap(), precision, scale),
                        Func::Max => Val::Dec(*values.iter().max().unwrap(), precision, scale),
                        Func::Avg => {
                            let result_scale = scale.max(6).min(38 - (precision - scale));
                            let numerator = sum * pow10((result_scale - scale) as u32);
                            let n = i256::from_i128(values.len() as i128);
                            let (q, r) = (numerator / n, numerator % n);
                            let two = i256::from_i128(2);
                            let rounded = if r.wrapping_abs() * two >= n {
                                if numerator < i256::ZERO {
                                    q - i256::ONE
                                } else {
                                    q + i256::ONE
                                }
                            } else {
                                q
                            };
                            Val::Dec(rounded.to_i128().unwrap(), 38, result_scale)
                        }
                    });
                }
                out.push(row);
            }
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------- generators

fn arb_table() -> impl Strategy<Value = Table> {
    let scale = prop::sample::select(vec![0u8, 2, 10]);
    let d = prop::option::weighted(
        0.85,
        prop_oneof![
            6 => -3_000i128..3_000,
            1 => prop::sample::select(vec![MAX38, -MAX38, MAX38 - 1, -MAX38 + 1, 0]),
            1 => any::<i64>().prop_map(|v| v as i128 * 1_000_000_000),
        ],
    );
    let e = prop::option::weighted(
        0.85,
        prop_oneof![
            6 => -3_000i128..3_000,
            1 => prop::sample::select(vec![E_MAX, -E_MAX, 0]),
        ],
    );
    let k = prop::option::weighted(0.9, 0i64..4);
    (
        scale,
        prop::collection::vec((k, d, e).prop_map(|(k, d, e)| Row { k, d, e }), 0..120),
    )
        .prop_map(|(scale, rows)| Table { scale, rows })
}

fn arb_lit() -> impl Strategy<Value = Lit> {
    let number = prop_oneof![
        // Near the small stored values, with 0 to 12 fractional digits.
        6 => (-3_000i128..3_000, -12i32..2),
        // Exactly on the scales values are stored with.
        3 => (-3_000i128..3_000, prop::sample::select(vec![0, -2, -10])),
        // The extremes.
        1 => (
            prop::sample::select(vec![MAX38, -MAX38, E_MAX, -E_MAX]),
            prop::sample::select(vec![0, -2, -10]),
        ),
        // Far beyond 38 digits.
        1 => (prop::sample::select(vec![1i128, -1]), Just(40)),
    ];
    prop_oneof![
        12 => (number, any::<bool>()).prop_map(|((mantissa, exponent), exponent_form)| Lit::Number {
            mantissa,
            exponent,
            exponent_form,
        }),
        1 => Just(Lit::Null),
    ]
}

fn arb_col() -> impl Strategy<Value = Col> {
    prop_oneof![3 => Just(Col::D), 1 => Just(Col::E)]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge])
}

fn arb_pred() -> impl Strategy<Value = Pred> {
    let leaf = prop_oneof![
        6 => (arb_col(), arb_op(), arb_lit(), any::<bool>()).prop_map(|(col, op, lit, literal_first)| {
            Pred::Compare { col, op, lit, literal_first }
        }),
        2 => (arb_col(), arb_lit(), arb_lit(), any::<bool>()).prop_map(|(col, low, high, negated)| {
            Pred::Between { col, low, high, negated }
        }),
        2 => (arb_col(), prop::collection::vec(arb_lit(), 1..4), any::<bool>())
            .prop_map(|(col, list, negated)| Pred::In { col, list, negated }),
        1 => (arb_col(), any::<bool>()).prop_map(|(col, negated)| Pred::IsNull { col, negated }),
    ];
    leaf.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Pred::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Pred::Not(Box::new(a))),
        ]
    })
}

fn arb_query() -> impl Strategy<Value = Query> {
    let func = prop::sample::select(vec![
        Func::CountStar,
        Func::Count,
        Func::Sum,
        Func::Avg,
        Func::Min,
        Func::Max,
    ]);
    let shape = prop_oneof![
        3 => (prop::collection::vec((func, arb_col()), 1..5), any::<bool>())
            .prop_map(|(items, grouped)| Shape::Aggregates { items, grouped }),
        1 => (any::<bool>(), 1u64..40).prop_map(|(descending, limit)| Shape::Rows { descending, limit }),
    ];
    (shape, prop::option::weighted(0.8, arb_pred()))
        .prop_map(|(shape, filter)| Query { shape, filter })
}

// ---------------------------------------------------------------- engine side

fn engine() -> &'static (tempfile::TempDir, Engine) {
    static ENGINE: OnceLock<(tempfile::TempDir, Engine)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let engine = support::engine(dir.path());
        (dir, engine)
    })
}

fn to_batch(table: &Table) -> RecordBatch {
    let decimal = |values: Vec<Option<i128>>, precision: u8, scale: u8| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(values)
                .with_precision_and_scale(precision, scale as i8)
                .unwrap(),
        )
    };
    RecordBatch::try_from_iter(vec![
        (
            "k",
            Arc::new(table.rows.iter().map(|r| r.k).collect::<Int64Array>()) as ArrayRef,
        ),
        (
            "d",
            decimal(table.rows.iter().map(|r| r.d).collect(), 38, table.scale),
        ),
        ("e", decimal(table.rows.iter().map(|r| r.e).collect(), 9, 2)),
    ])
    .unwrap()
}

fn value_at(array: &ArrayRef, row: usize) -> Val {
    if array.is_null(row) {
        return Val::Null;
    }
    match array.data_type() {
        DataType::Int64 => Val::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Decimal128(precision, scale) => Val::Dec(
            array.as_primitive::<Decimal128Type>().value(row),
            *precision,
            *scale as u8,
        ),
        other => panic!("unexpected result type {other}"),
    }
}

static TABLES: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn decimal_queries_match_the_exact_reference(table in arb_table(), queries in prop::collection::vec(arb_query(), 10)) {
        let (dir, engine) = engine();
        let name = format!("d{}", TABLES.fetch_add(1, AtomicOrdering::SeqCst));
        let batch = to_batch(&table);
        let options = ImportOptions {
            writer: Some(WriterSettings { page_rows_max: 7, row_group_bytes: 2048, ..WriterSettings::default() }),
            ..ImportOptions::default()
        };
        // Two imports: two files.
        for part in [0..batch.num_rows() / 2, batch.num_rows() / 2..batch.num_rows()] {
            let mut writer = TableWriter::open(dir.path(), "oracle", &name, &batch.schema(), &options).unwrap();
            writer.write(&batch.slice(part.start, part.end - part.start)).unwrap();
            writer.finish().unwrap();
        }
        for query in &queries {
            let sql = render(query, &name);
            let expected = reference(query, &table);
            let got = engine.sql("oracle", &sql);
            match (expected, got) {
                (Err(()), Err(error)) => {
                    prop_assert!(error.to_string().contains("overflow"), "{sql}: {error}");
                }
                (Err(()), Ok(_)) => prop_assert!(false, "{sql}: answered, the SUM overflows"),
                (Ok(_), Err(error)) => prop_assert!(false, "{sql}: {error}"),
                (Ok(rows), Ok(result)) => {
                    let mut got = Vec::new();
                    for batch in &result.batches {
                        for row in 0..batch.num_rows() {
                            got.push(batch.columns().iter().map(|a| value_at(a, row)).collect::<Vec<_>>());
                        }
                    }
                    prop_assert_eq!(got, rows, "{}", sql);
                }
            }
        }
    }
}

#[test]
fn reference_self_check() {
    let table = Table {
        scale: 2,
        rows: vec![
            Row {
                k: Some(1),
                d: Some(10_050),
                e: None,
            },
            Row {
                k: Some(1),
                d: Some(-10_050),
                e: Some(E_MAX),
            },
            Row {
                k: None,
                d: None,
                e: Some(1),
            },
        ],
    };
    let lit = |mantissa, exponent| Lit::Number {
        mantissa,
        exponent,
        exponent_form: false,
    };
    assert_eq!(lit(100_505, -3).sql(), "100.505");
    assert_eq!(lit(-5, -3).sql(), "-0.005");
    assert_eq!(lit(1, 40).sql(), format!("1{}", "0".repeat(40)));
    // 100.50 < 100.505; -100.50 > -100.505.
    assert_eq!(lit(100_505, -3).compare(10_050, 2), Some(Ordering::Less));
    assert_eq!(
        lit(-100_505, -3).compare(-10_050, 2),
        Some(Ordering::Greater)
    );
    assert_eq!(lit(1_005, -1).compare(10_050, 2), Some(Ordering::Equal));
    let count_where = |pred: Pred| {
        let query = Query {
            shape: Shape::Aggregates {
                items: vec![(Func::CountStar, Col::D)],
                grouped: false,
            },
            filter: Some(pred),
        };
        reference(&query, &table).unwrap()[0][0].clone()
    };
    let compare = |op, lit| Pred::Compare {
        col: Col::D,
        op,
        lit,
        literal_first: false,
    };
    assert_eq!(count_where(compare(Op::Gt, lit(100_505, -3))), Val::Int(0));
    assert_eq!(count_where(compare(Op::Ne, lit(100_505, -3))), Val::Int(2));
    assert_eq!(
        count_where(Pred::Not(Box::new(compare(Op::Eq, Lit::Null)))),
        Val::Int(0)
    );
    let avg = Query {
        shape: Shape::Aggregates {
            items: vec![(Func::Avg, Col::E), (Func::Sum, Col::D)],
            grouped: false,
        },
        filter: None,
    };
    // (999999999 + 1) / 2 cents = 5000000.00 at scale 6; the sums cancel to 0.
    assert_eq!(
        reference(&avg, &table).unwrap(),
        vec![vec![Val::Dec(5_000_000_000_000, 38, 6), Val::Dec(0, 38, 2)]]
    );
}
