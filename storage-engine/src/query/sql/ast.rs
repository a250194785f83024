//! The SQL subset Tessera executes, as a typed tree. The parser (`sql::parse`) produces it from
//! sqlparser's AST; the planner binds it to a table schema. Nothing here knows about files.

/// A parsed statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    Query(Query),
    /// `EXPLAIN <query>`: show the plan and the pruning it will do, without running it.
    Explain(Query),
}

/// `SELECT <projection> FROM <table> [WHERE <filter>] [GROUP BY ..] [ORDER BY ..] [LIMIT n]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The single table in `FROM` (unquoted names are lower-cased; quoted names kept as written).
    pub table: String,
    /// Select list in output order. `*` appears as `SelectItem::Wildcard`.
    pub projection: Vec<SelectItem>,
    pub filter: Option<Predicate>,
    /// `GROUP BY` keys; ordinals (`GROUP BY 1`) are resolved by the parser to the select item's expression.
    pub group_by: Vec<ScalarExpr>,
    pub order_by: Vec<OrderBy>,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*`: every column of the table, in schema order.
    Wildcard,
    Expr {
        expr: OutputExpr,
        alias: Option<String>,
    },
}

/// A per-row value: a column, or `DATE(column)` (the UTC calendar date of a timestamp or date column).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ScalarExpr {
    Column(String),
    Date(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateFunction {
    /// `COUNT(*)`
    CountStar,
    /// `COUNT(expr)`: non-NULL values.
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutputExpr {
    Scalar(ScalarExpr),
    /// `argument` is `None` exactly for `COUNT(*)`.
    Aggregate {
        function: AggregateFunction,
        argument: Option<ScalarExpr>,
    },
}

/// A literal as written; the planner converts it to the column's type
/// (e.g. `'2024-01-01'` to microseconds when compared with a timestamp column).
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Integer(i64),
    /// Any other number (a fraction, an exponent, or an integer beyond int64), as written with
    /// its sign (`-100.505`, `1e3`): exact for DECIMAL columns, the nearest f64 for float columns.
    Number(String),
    String(String),
    /// `X'0102'`: bytes, for binary columns.
    Bytes(Vec<u8>),
    Boolean(bool),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComparisonOperator {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

/// A `WHERE` condition. Comparisons are normalised to `column <op> literal`
/// (`5 < id` becomes `id > 5`).
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    Compare {
        column: String,
        op: ComparisonOperator,
        value: Literal,
    },
    /// `column [NOT] BETWEEN low AND high` (inclusive).
    Between {
        column: String,
        low: Literal,
        high: Literal,
        negated: bool,
    },
    /// `column [NOT] IN (v, ...)`.
    InList {
        column: String,
        list: Vec<Literal>,
        negated: bool,
    },
    /// `column IS [NOT] NULL`.
    IsNull {
        column: String,
        negated: bool,
    },
    /// `column [NOT] LIKE 'prefix%'`: only a literal prefix followed by one trailing `%`
    /// (no `_`, no other `%`; a pattern without `%` is an equality match on the whole string).
    Like {
        column: String,
        prefix: String,
        /// false when the pattern had no trailing `%` (exact match).
        is_prefix: bool,
        negated: bool,
    },
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    /// Index into the query's output columns (after `*` is expanded the planner re-maps it;
    /// the parser resolves names, aliases, ordinals and expressions that appear in the select list).
    pub key: OrderKey,
    pub descending: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OrderKey {
    /// 0-based position in the select list (as written, `*` counting as one item).
    SelectItem(usize),
    /// A column of the table that is not in the select list (allowed without GROUP BY,
    /// e.g. `SELECT id FROM t ORDER BY timestamp`).
    Column(String),
}
