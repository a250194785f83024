//! Binding a parsed query to a table: resolves names, converts literals to the column types,
//! rewrites the WHERE clause into negation-free form (NOT pushed to the leaves, which keeps SQL's
//! three-valued logic exact when only rows whose predicate is TRUE are kept), and describes the
//! output: either rows (projection) or groups (keys plus aggregates). The plan is plain data,
//! `Send`, and goes to every core.

use crate::error::{Error, Result};
use crate::query::kernels::CmpOp;
use crate::query::sql::{
    AggregateFunction, ComparisonOperator, Literal, OrderKey, OutputExpr, Predicate, Query,
    ScalarExpr, SelectItem,
};
use crate::table::manifest::ColumnDef;
use crate::value::{parse_date, parse_timestamp, ColumnType, ExactNumber, Scalar};

/// A WHERE clause without NOT: `Unknown` is SQL's UNKNOWN (never true, and still never true when
/// negated), e.g. `x = NULL`.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Leaf { column: usize, test: Test },
    Unknown,
}

/// A test of one column. Every test is false on a NULL value except `IsNull`.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Compare {
        op: CmpOp,
        value: Scalar,
    },
    /// `low <= x <= high`.
    Between {
        low: Scalar,
        high: Scalar,
    },
    /// `x IN values` (`negated`: `x NOT IN values`, never true when the list held a NULL).
    In {
        values: Vec<Scalar>,
        negated: bool,
        list_has_null: bool,
    },
    IsNull {
        negated: bool,
    },
    /// `starts_with(prefix)` when `is_prefix`, else equality; `negated` inverts on non-NULL values.
    Like {
        pattern: String,
        is_prefix: bool,
        negated: bool,
    },
}

impl Filter {
    pub fn columns(&self, out: &mut Vec<usize>) {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| p.columns(out)),
            Filter::Leaf { column, .. } => {
                if !out.contains(column) {
                    out.push(*column)
                }
            }
            Filter::Unknown => {}
        }
    }
}

/// A per-row value: a column, or the date of a timestamp/date column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueExpr {
    Column(usize),
    Date(usize),
}

impl ValueExpr {
    pub fn column(self) -> usize {
        match self {
            ValueExpr::Column(c) | ValueExpr::Date(c) => c,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub function: AggregateFunction,
    pub argument: Option<ValueExpr>,
    /// Type of the argument (None for COUNT(*)).
    pub input_type: Option<ColumnType>,
}

/// Digits of every DECIMAL SUM and AVG result.
pub const DECIMAL_RESULT_PRECISION: u8 = crate::value::DECIMAL_PRECISION_MAX;
/// Fractional digits AVG of a DECIMAL keeps at least (the input's scale if larger).
pub const DECIMAL_AVG_SCALE_MIN: u8 = 6;

/// The scale of AVG over DECIMAL(precision, scale): `max(scale, 6)`, fewer when the integer
/// digits need the room (an average never exceeds the largest value, so the result always fits
/// DECIMAL(38, that scale)).
pub fn decimal_avg_scale(precision: u8, scale: u8) -> u8 {
    let integer_digits = precision.saturating_sub(scale);
    scale
        .max(DECIMAL_AVG_SCALE_MIN)
        .min(DECIMAL_RESULT_PRECISION - integer_digits)
}

impl Aggregate {
    /// The result type. Exact numerics stay exact: SUM of DECIMAL(p, s) is DECIMAL(38, s), AVG
    /// of DECIMAL(p, s) is DECIMAL(38, `decimal_avg_scale(p, s)`) rounded half away from zero.
    pub fn output_type(&self) -> ColumnType {
        match (self.function, self.input_type) {
            (AggregateFunction::CountStar | AggregateFunction::Count, _) => ColumnType::Int64,
            (AggregateFunction::Sum, Some(ColumnType::Decimal { scale, .. })) => {
                ColumnType::Decimal {
                    precision: DECIMAL_RESULT_PRECISION,
                    scale,
                }
            }
            (AggregateFunction::Avg, Some(ColumnType::Decimal { precision, scale })) => {
                ColumnType::Decimal {
                    precision: DECIMAL_RESULT_PRECISION,
                    scale: decimal_avg_scale(precision, scale),
                }
            }
            (AggregateFunction::Avg, _) => ColumnType::Float64,
            (AggregateFunction::Sum, Some(ColumnType::Float64)) => ColumnType::Float64,
            (AggregateFunction::Sum, _) => ColumnType::Int64,
            (_, Some(t)) => t,
            (_, None) => ColumnType::Int64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRef {
    /// Group key i (aggregate mode).
    Key(usize),
    /// Aggregate i (aggregate mode).
    Aggregate(usize),
    /// Row value i (row mode).
    Value(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    pub name: String,
    pub source: OutputRef,
    pub column_type: ColumnType,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// One output row per kept input row; `values` are computed per row (outputs first, then
    /// hidden ORDER BY columns).
    Rows { values: Vec<ValueExpr> },
    /// One output row per group.
    Groups {
        keys: Vec<ValueExpr>,
        aggregates: Vec<Aggregate>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    /// Index into the pre-output row (row mode: into `values`; group mode: into outputs).
    pub index: usize,
    pub descending: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub columns: Vec<ColumnDef>,
    pub filter: Option<Filter>,
    pub mode: Mode,
    pub outputs: Vec<OutputColumn>,
    pub order_by: Vec<SortKey>,
    pub limit: Option<u64>,
}

impl Plan {
    /// Columns read to evaluate the filter.
    pub fn filter_columns(&self) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some(filter) = &self.filter {
            filter.columns(&mut out);
        }
        out
    }

    /// Columns read to produce values (outputs, keys, aggregate arguments).
    pub fn value_columns(&self) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let mut add = |c: usize| {
            if !out.contains(&c) {
                out.push(c)
            }
        };
        match &self.mode {
            Mode::Rows { values } => values.iter().for_each(|v| add(v.column())),
            Mode::Groups { keys, aggregates } => {
                keys.iter().for_each(|k| add(k.column()));
                aggregates
                    .iter()
                    .filter_map(|a| a.argument)
                    .for_each(|v| add(v.column()));
            }
        }
        out
    }
}

pub fn bind(query: &Query, columns: &[ColumnDef]) -> Result<Plan> {
    let binder = Binder { columns };
    let filter = query
        .filter
        .as_ref()
        .map(|p| binder.predicate(p, false))
        .transpose()?;
    let grouped = !query.group_by.is_empty()
        || query.projection.iter().any(|item| {
            matches!(
                item,
                SelectItem::Expr {
                    expr: OutputExpr::Aggregate { .. },
                    ..
                }
            )
        });
    let mut outputs = Vec::new();
    // Select-list item i becomes output positions item_outputs[i].
    let mut item_outputs: Vec<Vec<usize>> = Vec::new();
    let mode = if grouped {
        let mut keys = Vec::new();
        for key in &query.group_by {
            let bound = binder.value(key)?;
            if !keys.contains(&bound) {
                keys.push(bound);
            }
        }
        let mut aggregates: Vec<Aggregate> = Vec::new();
        for item in &query.projection {
            let SelectItem::Expr { expr, alias } = item else {
                return Err(Error::plan(
                    "SELECT * cannot be combined with aggregates or GROUP BY",
                ));
            };
            let (source, column_type, default_name) = match expr {
                OutputExpr::Scalar(scalar) => {
                    let bound = binder.value(scalar)?;
                    let index = keys.iter().position(|k| *k == bound).ok_or_else(|| {
                        Error::plan(format!(
                            "{} must appear in GROUP BY or be inside an aggregate",
                            binder.name(scalar)
                        ))
                    })?;
                    (
                        OutputRef::Key(index),
                        binder.value_type(bound),
                        binder.name(scalar),
                    )
                }
                OutputExpr::Aggregate { function, argument } => {
                    let aggregate = binder.aggregate(*function, argument.as_ref())?;
                    let name = aggregate_name(*function, argument.as_ref().map(|a| binder.name(a)));
                    let column_type = aggregate.output_type();
                    let index = aggregates
                        .iter()
                        .position(|a| *a == aggregate)
                        .unwrap_or_else(|| {
                            aggregates.push(aggregate);
                            aggregates.len() - 1
                        });
                    (OutputRef::Aggregate(index), column_type, name)
                }
            };
            item_outputs.push(vec![outputs.len()]);
            outputs.push(OutputColumn {
                name: alias.clone().unwrap_or(default_name),
                source,
                column_type,
            });
        }
        Mode::Groups { keys, aggregates }
    } else {
        let mut values = Vec::new();
        for item in &query.projection {
            let mut positions = Vec::new();
            match item {
                SelectItem::Wildcard => {
                    for (index, column) in columns.iter().enumerate() {
                        positions.push(outputs.len());
                        outputs.push(OutputColumn {
                            name: column.name.clone(),
                            source: OutputRef::Value(values.len()),
                            column_type: column.column_type,
                        });
                        values.push(ValueExpr::Column(index));
                    }
                }
                SelectItem::Expr {
                    expr: OutputExpr::Scalar(scalar),
                    alias,
                } => {
                    let bound = binder.value(scalar)?;
                    positions.push(outputs.len());
                    outputs.push(OutputColumn {
                        name: alias.clone().unwrap_or_else(|| binder.name(scalar)),
                        source: OutputRef::Value(values.len()),
                        column_type: binder.value_type(bound),
                    });
                    values.push(bound);
                }
                SelectItem::Expr {
                    expr: OutputExpr::Aggregate { .. },
                    ..
                } => {
                    return Err(Error::Internal("aggregate in row mode".into()));
                }
            }
            item_outputs.push(positions);
        }
        Mode::Rows { values }
    };
    let mut order_by = Vec::new();
    let mut hidden = Vec::new();
    for key in &query.order_by {
        let index = match &key.key {
            OrderKey::SelectItem(item) => {
                let positions = item_outputs.get(*item).ok_or_else(|| {
                    Error::plan(format!(
                        "ORDER BY refers to select item {} of {}",
                        item + 1,
                        item_outputs.len()
                    ))
                })?;
                match positions.as_slice() {
                    [single] => match outputs[*single].source {
                        OutputRef::Value(v) if !grouped => v,
                        _ => *single,
                    },
                    _ => return Err(Error::plan("ORDER BY cannot refer to *")),
                }
            }
            OrderKey::Column(name) => {
                let Mode::Rows { values } = &mode else {
                    return Err(Error::plan(format!(
                        "ORDER BY {name}: not an output of this grouped query"
                    )));
                };
                let column = binder.column(name)?;
                let value = ValueExpr::Column(column);
                match values.iter().position(|v| *v == value) {
                    Some(index) => index,
                    None => {
                        hidden.push(value);
                        values.len() + hidden.len() - 1
                    }
                }
            }
        };
        order_by.push(SortKey {
            index,
            descending: key.descending,
        });
    }
    let mode = match mode {
        Mode::Rows { mut values } => {
            values.extend(hidden);
            Mode::Rows { values }
        }
        groups => groups,
    };
    Ok(Plan {
        columns: columns.to_vec(),
        filter,
        mode,
        outputs,
        order_by,
        limit: query.limit,
    })
}

fn aggregate_name(function: AggregateFunction, argument: Option<String>) -> String {
    let name = match function {
        AggregateFunction::CountStar => return "count(*)".into(),
        AggregateFunction::Count => "count",
        AggregateFunction::Sum => "sum",
        AggregateFunction::Avg => "avg",
        AggregateFunction::Min => "min",
        AggregateFunction::Max => "max",
    };
    format!("{name}({})", argument.unwrap_or_default())
}

struct Binder<'a> {
    columns: &'a [ColumnDef],
}

impl Binder<'_> {
    fn column(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Error::plan(format!("unknown column {name}")))
    }

    fn name(&self, scalar: &ScalarExpr) -> String {
        match scalar {
            ScalarExpr::Column(name) => name.clone(),
            ScalarExpr::Date(name) => format!("date({name})"),
        }
    }

    fn value(&self, scalar: &ScalarExpr) -> Result<ValueExpr> {
        match scalar {
            ScalarExpr::Column(name) => Ok(ValueExpr::Column(self.column(name)?)),
            ScalarExpr::Date(name) => {
                let column = self.column(name)?;
                match self.columns[column].column_type {
                    ColumnType::Timestamp | ColumnType::Date => Ok(ValueExpr::Date(column)),
                    other => Err(Error::plan(format!(
                        "DATE() needs a timestamp or date column, {name} is {}",
                        other.name()
                    ))),
                }
            }
        }
    }

    fn value_type(&self, value: ValueExpr) -> ColumnType {
        match value {
            ValueExpr::Column(c) => self.columns[c].column_type,
            ValueExpr::Date(_) => ColumnType::Date,
        }
    }

    fn aggregate(
        &self,
        function: AggregateFunction,
        argument: Option<&ScalarExpr>,
    ) -> Result<Aggregate> {
        let argument = argument.map(|a| self.value(a)).transpose()?;
        let input_type = argument.map(|a| self.value_type(a));
        if matches!(function, AggregateFunction::Sum | AggregateFunction::Avg)
            && !input_type.is_some_and(ColumnType::is_numeric)
        {
            let shown = input_type.map_or("nothing".into(), ColumnType::name);
            return Err(Error::plan(
                format!("{function:?} needs a numeric argument, got {shown}").to_uppercase(),
            ));
        }
        if function != AggregateFunction::CountStar && argument.is_none() {
            return Err(Error::plan(format!("{function:?} needs an argument")));
        }
        Ok(Aggregate {
            function,
            argument,
            input_type,
        })
    }

    fn literal(&self, column: usize, literal: &Literal) -> Result<Option<Scalar>> {
        let def = &self.columns[column];
        let mismatch = |what: &str| {
            Error::plan(format!(
                "cannot compare {} column {} with {what}",
                def.column_type.name(),
                def.name
            ))
        };
        Ok(Some(match (def.column_type, literal) {
            (_, Literal::Null) => return Ok(None),
            (ColumnType::Int32 | ColumnType::Int64, Literal::Integer(v)) => Scalar::Int(*v),
            (ColumnType::Int32 | ColumnType::Int64, Literal::Number(text)) => {
                return Err(if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    Error::plan(format!("integer {text} is out of the int64 range"))
                } else {
                    mismatch("float literal")
                })
            }
            (ColumnType::Float64, Literal::Integer(v)) => Scalar::Float(*v as f64),
            (ColumnType::Float64, Literal::Number(text)) => match text.parse::<f64>() {
                Ok(value) if value.is_finite() => Scalar::Float(value),
                _ => {
                    return Err(Error::plan(format!(
                        "number {text} is out of the float64 range"
                    )))
                }
            },
            (ColumnType::Decimal { .. }, _) => {
                return Err(Error::Internal(format!(
                    "decimal column {} bound as a plain literal",
                    def.name
                )))
            }
            (ColumnType::Binary, Literal::Bytes(bytes)) => Scalar::Bytes(bytes.clone()),
            (ColumnType::Utf8, Literal::String(s)) => Scalar::Str(s.clone()),
            (ColumnType::Timestamp, Literal::Integer(v)) => Scalar::Int(*v),
            (ColumnType::Timestamp, Literal::String(s)) => {
                Scalar::Int(parse_timestamp(s).ok_or_else(|| {
                    Error::plan(format!(
                        "invalid timestamp literal '{s}' for column {}",
                        def.name
                    ))
                })?)
            }
            (ColumnType::Date, Literal::String(s)) => {
                Scalar::Int(parse_date(s).ok_or_else(|| {
                    Error::plan(format!(
                        "invalid date literal '{s}' for column {} (expected YYYY-MM-DD)",
                        def.name
                    ))
                })?)
            }
            (ColumnType::Boolean, Literal::Boolean(b)) => Scalar::Bool(*b),
            (_, Literal::Integer(_)) => return Err(mismatch("integer literal")),
            (_, Literal::Number(_)) => return Err(mismatch("float literal")),
            (_, Literal::Bytes(_)) => return Err(mismatch("hex literal")),
            (_, Literal::String(_)) => return Err(mismatch("string literal")),
            (_, Literal::Boolean(_)) => return Err(mismatch("boolean literal")),
        }))
    }

    /// A number literal for DECIMAL column `column`: `floor(literal × 10^scale)` and whether that
    /// is the literal exactly (`None` for NULL).
    fn decimal_literal(&self, column: usize, literal: &Literal) -> Result<Option<(i128, bool)>> {
        let def = &self.columns[column];
        let ColumnType::Decimal { scale, .. } = def.column_type else {
            return Err(Error::Internal(format!(
                "{} is not a decimal column",
                def.name
            )));
        };
        let number = match literal {
            Literal::Null => return Ok(None),
            Literal::Integer(v) => ExactNumber::from_i64(*v),
            Literal::Number(text) => ExactNumber::parse(text)
                .ok_or_else(|| Error::plan(format!("invalid number {text}")))?,
            other => {
                let kind = match other {
                    Literal::String(_) => "string literal",
                    Literal::Boolean(_) => "boolean literal",
                    _ => "hex literal",
                };
                return Err(Error::plan(format!(
                    "cannot compare {} column {} with {kind}",
                    def.column_type, def.name
                )));
            }
        };
        Ok(Some(number.scaled_floor(scale)))
    }

    /// `column op literal` on a DECIMAL column, exactly: a literal with more fractional digits
    /// than the scale lies strictly between two stored values `floor` and `floor + 1`, so `<`
    /// and `<=` become `<= floor`, `>` and `>=` become `>= floor + 1`, `=` is never true and
    /// `<>` is true for every non-NULL value.
    fn decimal_compare(&self, column: usize, op: CmpOp, literal: &Literal) -> Result<Filter> {
        let Some((floor, exact)) = self.decimal_literal(column, literal)? else {
            return Ok(Filter::Unknown);
        };
        let leaf = |op, value| Filter::Leaf {
            column,
            test: Test::Compare {
                op,
                value: Scalar::Decimal(value),
            },
        };
        Ok(match (op, exact) {
            (op, true) => leaf(op, floor),
            (CmpOp::Lt | CmpOp::Le, false) => leaf(CmpOp::Le, floor),
            (CmpOp::Gt | CmpOp::Ge, false) => leaf(CmpOp::Ge, floor + 1),
            (CmpOp::Eq, false) => Filter::Unknown,
            (CmpOp::Ne, false) => Filter::Leaf {
                column,
                test: Test::IsNull { negated: true },
            },
        })
    }

    /// Binds `predicate`, negated when `negate` (NOT pushed down by De Morgan).
    fn predicate(&self, predicate: &Predicate, negate: bool) -> Result<Filter> {
        Ok(match predicate {
            Predicate::Not(inner) => self.predicate(inner, !negate)?,
            Predicate::And(a, b) | Predicate::Or(a, b) => {
                let parts = vec![self.predicate(a, negate)?, self.predicate(b, negate)?];
                if matches!(predicate, Predicate::And(..)) != negate {
                    Filter::And(parts)
                } else {
                    Filter::Or(parts)
                }
            }
            Predicate::Compare { column, op, value } => {
                let column = self.column(column)?;
                if let ColumnType::Decimal { .. } = self.columns[column].column_type {
                    let op = comparison(*op);
                    return self.decimal_compare(
                        column,
                        if negate { negated(op) } else { op },
                        value,
                    );
                }
                match self.literal(column, value)? {
                    None => Filter::Unknown,
                    Some(value) => {
                        let op = comparison(*op);
                        Filter::Leaf {
                            column,
                            test: Test::Compare {
                                op: if negate { negated(op) } else { op },
                                value,
                            },
                        }
                    }
                }
            }
            Predicate::Between {
                column,
                low,
                high,
                negated: between_negated,
            } => {
                let index = self.column(column)?;
                let negate = negate != *between_negated;
                let (low_bound, high_bound) = match self.columns[index].column_type {
                    ColumnType::Decimal { .. } => {
                        // low <= x <= high on stored values: x >= ceil(low), x <= floor(high).
                        let low = self.decimal_literal(index, low)?;
                        let high = self.decimal_literal(index, high)?;
                        (
                            low.map(|(floor, exact)| {
                                Scalar::Decimal(if exact { floor } else { floor + 1 })
                            }),
                            high.map(|(floor, _)| Scalar::Decimal(floor)),
                        )
                    }
                    _ => (self.literal(index, low)?, self.literal(index, high)?),
                };
                match (low_bound, high_bound) {
                    (Some(low), Some(high)) if !negate => Filter::Leaf {
                        column: index,
                        test: Test::Between { low, high },
                    },
                    _ => {
                        // Desugar so NULL bounds follow three-valued logic.
                        let lower = Predicate::Compare {
                            column: column.clone(),
                            op: ComparisonOperator::GtEq,
                            value: low.clone(),
                        };
                        let upper = Predicate::Compare {
                            column: column.clone(),
                            op: ComparisonOperator::LtEq,
                            value: high.clone(),
                        };
                        self.predicate(&Predicate::And(Box::new(lower), Box::new(upper)), negate)?
                    }
                }
            }
            Predicate::InList {
                column,
                list,
                negated: in_negated,
            } => {
                let column = self.column(column)?;
                let mut values = Vec::with_capacity(list.len());
                let mut list_has_null = false;
                let decimal =
                    matches!(self.columns[column].column_type, ColumnType::Decimal { .. });
                for literal in list {
                    if decimal {
                        // A literal no stored value equals is left out (x = it is never true).
                        match self.decimal_literal(column, literal)? {
                            Some((value, true)) => values.push(Scalar::Decimal(value)),
                            Some((_, false)) => {}
                            None => list_has_null = true,
                        }
                        continue;
                    }
                    match self.literal(column, literal)? {
                        Some(value) => values.push(value),
                        None => list_has_null = true,
                    }
                }
                Filter::Leaf {
                    column,
                    test: Test::In {
                        values,
                        negated: negate != *in_negated,
                        list_has_null,
                    },
                }
            }
            Predicate::IsNull {
                column,
                negated: null_negated,
            } => Filter::Leaf {
                column: self.column(column)?,
                test: Test::IsNull {
                    negated: negate != *null_negated,
                },
            },
            Predicate::Like {
                column,
                prefix,
                is_prefix,
                negated: like_negated,
            } => {
                let index = self.column(column)?;
                if self.columns[index].column_type != ColumnType::Utf8 {
                    return Err(Error::plan(format!(
                        "LIKE needs a string column, {column} is {}",
                        self.columns[index].column_type.name()
                    )));
                }
                Filter::Leaf {
                    column: index,
                    test: Test::Like {
                        pattern: prefix.clone(),
                        is_prefix: *is_prefix,
                        negated: negate != *like_negated,
                    },
                }
            }
        })
    }
}

fn comparison(op: ComparisonOperator) -> CmpOp {
    match op {
        ComparisonOperator::Eq => CmpOp::Eq,
        ComparisonOperator::NotEq => CmpOp::Ne,
        ComparisonOperator::Lt => CmpOp::Lt,
        ComparisonOperator::LtEq => CmpOp::Le,
        ComparisonOperator::Gt => CmpOp::Gt,
        ComparisonOperator::GtEq => CmpOp::Ge,
    }
}

pub fn negated(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Eq => CmpOp::Ne,
        CmpOp::Ne => CmpOp::Eq,
        CmpOp::Lt => CmpOp::Ge,
        CmpOp::Le => CmpOp::Gt,
        CmpOp::Gt => CmpOp::Le,
        CmpOp::Ge => CmpOp::Lt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind_sql(sql: &str) -> Result<Plan> {
        let columns = vec![
            ColumnDef {
                name: "price".into(),
                column_type: ColumnType::Decimal {
                    precision: 15,
                    scale: 2,
                },
                nullable: true,
            },
            ColumnDef {
                name: "n".into(),
                column_type: ColumnType::Int64,
                nullable: true,
            },
            ColumnDef {
                name: "blob".into(),
                column_type: ColumnType::Binary,
                nullable: true,
            },
        ];
        let crate::query::sql::Statement::Query(query) = crate::query::sql::parse(sql)? else {
            panic!("not a query: {sql}")
        };
        bind(&query, &columns)
    }

    fn filter(sql: &str) -> Filter {
        bind_sql(&format!("SELECT * FROM t WHERE {sql}"))
            .unwrap()
            .filter
            .unwrap()
    }

    fn leaf(column: usize, test: Test) -> Filter {
        Filter::Leaf { column, test }
    }

    fn compare(op: CmpOp, value: i128) -> Filter {
        leaf(
            0,
            Test::Compare {
                op,
                value: Scalar::Decimal(value),
            },
        )
    }

    #[test]
    fn decimal_literals_bind_exactly_extra_digits_move_the_bound_not_round_it() {
        assert_eq!(filter("price > 100.5"), compare(CmpOp::Gt, 10_050));
        assert_eq!(filter("price > 100.505"), compare(CmpOp::Ge, 10_051));
        assert_eq!(filter("price >= 100.505"), compare(CmpOp::Ge, 10_051));
        assert_eq!(filter("price < 100.505"), compare(CmpOp::Le, 10_050));
        assert_eq!(filter("price <= -100.505"), compare(CmpOp::Le, -10_051));
        assert_eq!(filter("price = 100"), compare(CmpOp::Eq, 10_000));
        assert_eq!(filter("price = 100.505"), Filter::Unknown);
        assert_eq!(
            filter("NOT price = 100.505"),
            leaf(0, Test::IsNull { negated: true })
        );
        assert_eq!(filter("NOT price > 100.505"), compare(CmpOp::Le, 10_050));
        assert_eq!(
            filter("price BETWEEN 1.005 AND 2.001"),
            leaf(
                0,
                Test::Between {
                    low: Scalar::Decimal(101),
                    high: Scalar::Decimal(200)
                }
            )
        );
        assert_eq!(
            filter("price IN (1.5, 1.505, NULL)"),
            leaf(
                0,
                Test::In {
                    values: vec![Scalar::Decimal(150)],
                    negated: false,
                    list_has_null: true
                }
            )
        );
        // Far beyond DECIMAL(38): on the right side of every value.
        assert_eq!(filter("price < 1e50"), compare(CmpOp::Le, 10i128.pow(38)));
        assert_eq!(
            filter("blob = X'00ff'"),
            leaf(
                2,
                Test::Compare {
                    op: CmpOp::Eq,
                    value: Scalar::Bytes(vec![0, 255])
                }
            )
        );
    }

    #[test]
    fn decimal_and_binary_misuse_is_a_plan_error_naming_the_column() {
        for (sql, expected) in [
            ("SELECT * FROM t WHERE price = 'abc'", "price"),
            (
                "SELECT * FROM t WHERE n = 99999999999999999999",
                "int64 range",
            ),
            ("SELECT * FROM t WHERE n > 1.5", "float literal"),
            ("SELECT * FROM t WHERE blob = 'abc'", "blob"),
            ("SELECT * FROM t WHERE blob LIKE 'a%'", "blob"),
            ("SELECT SUM(blob) FROM t", "BINARY"),
        ] {
            let error = bind_sql(sql).unwrap_err().to_string();
            assert!(error.contains(expected), "{sql}: {error}");
        }
    }

    #[test]
    fn decimal_sum_and_avg_results_are_exact_decimals() {
        let plan =
            bind_sql("SELECT SUM(price), AVG(price), MIN(price), COUNT(price) FROM t").unwrap();
        let types: Vec<ColumnType> = plan.outputs.iter().map(|o| o.column_type).collect();
        let decimal = |precision, scale| ColumnType::Decimal { precision, scale };
        assert_eq!(
            types,
            vec![
                decimal(38, 2),
                decimal(38, 6),
                decimal(15, 2),
                ColumnType::Int64
            ]
        );
        assert_eq!(decimal_avg_scale(38, 0), 0);
        assert_eq!(decimal_avg_scale(38, 10), 10);
        assert_eq!(decimal_avg_scale(34, 0), 4);
        assert_eq!(decimal_avg_scale(10, 8), 8);
    }
}
