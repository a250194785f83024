//! Lowering sqlparser's AST to the subset (`super::ast`). Each `match` lists what is accepted;
//! the fallback arm names what was found instead.

use super::ast::*;
use super::SqlError;
use sqlparser::ast as sp;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// Longest statement accepted, in bytes.
pub const SQL_BYTES_MAX: usize = 64 << 10;
/// Deepest expression nesting accepted.
const RECURSION_LIMIT: usize = 64;

type Result<T> = std::result::Result<T, SqlError>;

fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::new(format!("unsupported SQL: {what}"))
}

/// Parses one statement of the subset.
pub fn parse(sql: &str) -> Result<Statement> {
    if sql.len() > SQL_BYTES_MAX {
        return Err(SqlError::new(format!(
            "statement is {} bytes, over the {SQL_BYTES_MAX}-byte limit",
            sql.len()
        )));
    }
    if sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(SqlError::new("empty statement"));
    }
    let dialect = GenericDialect {};
    let statements = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| SqlError::new(e.to_string()))?;
    let [statement] = statements.as_slice() else {
        return Err(SqlError::new(format!(
            "expected exactly one statement, found {}",
            statements.len()
        )));
    };
    match statement {
        sp::Statement::Query(query) => Ok(Statement::Query(lower_query(query)?)),
        sp::Statement::Explain {
            statement,
            analyze: false,
            verbose: false,
            ..
        } => match statement.as_ref() {
            sp::Statement::Query(query) => Ok(Statement::Explain(lower_query(query)?)),
            other => Err(unsupported(format!("EXPLAIN of {}", statement_kind(other)))),
        },
        sp::Statement::Explain { .. } => Err(unsupported("EXPLAIN ANALYZE/VERBOSE")),
        other => Err(unsupported(format!(
            "{} (only SELECT and EXPLAIN SELECT are supported)",
            statement_kind(other)
        ))),
    }
}

fn statement_kind(statement: &sp::Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    words.join(" ").to_uppercase()
}

fn identifier(ident: &sp::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn lower_query(query: &sp::Query) -> Result<Query> {
    if query.with.is_some() {
        return Err(unsupported("WITH (common table expressions)"));
    }
    if query.fetch.is_some() {
        return Err(unsupported("FETCH"));
    }
    if !query.locks.is_empty() {
        return Err(unsupported("FOR UPDATE/SHARE"));
    }
    if query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return Err(unsupported(
            "query clauses beyond SELECT ... ORDER BY ... LIMIT",
        ));
    }
    let select = match query.body.as_ref() {
        sp::SetExpr::Select(select) => select,
        sp::SetExpr::Query(_) => return Err(unsupported("parenthesised subquery")),
        sp::SetExpr::SetOperation { op, .. } => {
            return Err(unsupported(op.to_string().to_uppercase()))
        }
        sp::SetExpr::Values(_) => return Err(unsupported("VALUES")),
        other => return Err(unsupported(other.to_string())),
    };
    if select.distinct.is_some() {
        return Err(unsupported("DISTINCT"));
    }
    if select.top.is_some() {
        return Err(unsupported("TOP"));
    }
    if select.into.is_some() {
        return Err(unsupported("SELECT INTO"));
    }
    if select.having.is_some() {
        return Err(unsupported("HAVING"));
    }
    if !select.named_window.is_empty() || select.qualify.is_some() {
        return Err(unsupported("window clauses"));
    }
    if select.prewhere.is_some()
        || !select.lateral_views.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || !select.connect_by.is_empty()
        || select.exclude.is_some()
    {
        return Err(unsupported("dialect-specific SELECT clauses"));
    }
    let table = lower_from(&select.from)?;
    let mut projection = Vec::with_capacity(select.projection.len());
    for item in &select.projection {
        projection.push(lower_select_item(item)?);
    }
    let filter = select.selection.as_ref().map(lower_predicate).transpose()?;
    let group_by = lower_group_by(&select.group_by, &projection)?;
    validate_grouping(&projection, &group_by)?;
    let order_by = match &query.order_by {
        None => Vec::new(),
        Some(order_by) => lower_order_by(
            order_by,
            &projection,
            !group_by.is_empty() || has_aggregate(&projection),
        )?,
    };
    let limit = match &query.limit_clause {
        None => None,
        Some(sp::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if offset.is_some() {
                return Err(unsupported("OFFSET"));
            }
            if !limit_by.is_empty() {
                return Err(unsupported("LIMIT BY"));
            }
            match limit {
                None => None,
                Some(expr) => Some(lower_limit(expr)?),
            }
        }
        Some(sp::LimitClause::OffsetCommaLimit { .. }) => {
            return Err(unsupported("LIMIT offset, count"))
        }
    };
    Ok(Query {
        table,
        projection,
        filter,
        group_by,
        order_by,
        limit,
    })
}

fn lower_from(from: &[sp::TableWithJoins]) -> Result<String> {
    let [only] = from else {
        return Err(match from.len() {
            0 => unsupported("SELECT without FROM"),
            _ => unsupported("more than one table in FROM (joins)"),
        });
    };
    if !only.joins.is_empty() {
        return Err(unsupported("JOIN"));
    }
    match &only.relation {
        sp::TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            ..
        } => {
            if alias.is_some() {
                return Err(unsupported("table alias"));
            }
            if args.is_some() {
                return Err(unsupported("table function"));
            }
            if !with_hints.is_empty() || version.is_some() {
                return Err(unsupported("table hints or time travel"));
            }
            match name.0.as_slice() {
                [sp::ObjectNamePart::Identifier(ident)] => Ok(identifier(ident)),
                _ => Err(unsupported(format!("qualified table name {name}"))),
            }
        }
        sp::TableFactor::Derived { .. } => Err(unsupported("subquery in FROM")),
        other => Err(unsupported(format!("FROM {other}"))),
    }
}

fn lower_select_item(item: &sp::SelectItem) -> Result<SelectItem> {
    match item {
        sp::SelectItem::Wildcard(options) => {
            if options.opt_exclude.is_some()
                || options.opt_except.is_some()
                || options.opt_replace.is_some()
                || options.opt_rename.is_some()
                || options.opt_ilike.is_some()
            {
                return Err(unsupported("* with modifiers"));
            }
            Ok(SelectItem::Wildcard)
        }
        sp::SelectItem::QualifiedWildcard(..) => Err(unsupported("qualified wildcard (t.*)")),
        sp::SelectItem::UnnamedExpr(expr) => Ok(SelectItem::Expr {
            expr: lower_output(expr)?,
            alias: None,
        }),
        sp::SelectItem::ExprWithAlias { expr, alias } => Ok(SelectItem::Expr {
            expr: lower_output(expr)?,
            alias: Some(identifier(alias)),
        }),
        other => Err(unsupported(format!("select item {other}"))),
    }
}

fn has_aggregate(projection: &[SelectItem]) -> bool {
    projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Expr {
                expr: OutputExpr::Aggregate { .. },
                ..
            }
        )
    })
}

fn column_name(expr: &sp::Expr) -> Result<String> {
    match expr {
        sp::Expr::Identifier(ident) => Ok(identifier(ident)),
        sp::Expr::CompoundIdentifier(parts) => Err(unsupported(format!(
            "qualified column {}",
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join(".")
        ))),
        sp::Expr::Nested(inner) => column_name(inner),
        other => Err(SqlError::new(format!("expected a column, found {other}"))),
    }
}

/// The function's name (lower case) and its plain argument expressions (`None` for `*`).
fn function_parts(function: &sp::Function) -> Result<(String, Vec<Option<&sp::Expr>>)> {
    let name = match function.name.0.as_slice() {
        [sp::ObjectNamePart::Identifier(ident)] => ident.value.to_lowercase(),
        _ => return Err(unsupported(format!("function {}", function.name))),
    };
    if function.over.is_some() {
        return Err(unsupported(format!(
            "window function {}",
            name.to_uppercase()
        )));
    }
    if function.filter.is_some()
        || !function.within_group.is_empty()
        || function.null_treatment.is_some()
    {
        return Err(unsupported(format!(
            "{} with FILTER/WITHIN GROUP/NULL treatment",
            name.to_uppercase()
        )));
    }
    if !matches!(function.parameters, sp::FunctionArguments::None) {
        return Err(unsupported(format!(
            "parameters of {}",
            name.to_uppercase()
        )));
    }
    let list = match &function.args {
        sp::FunctionArguments::List(list) => list,
        sp::FunctionArguments::None => {
            return Err(SqlError::new(format!(
                "{} needs parentheses",
                name.to_uppercase()
            )))
        }
        sp::FunctionArguments::Subquery(_) => {
            return Err(unsupported("subquery as function argument"))
        }
    };
    if list.duplicate_treatment.is_some() {
        return Err(unsupported(format!(
            "{}(DISTINCT/ALL ...)",
            name.to_uppercase()
        )));
    }
    if !list.clauses.is_empty() {
        return Err(unsupported(format!(
            "clauses inside {}(...)",
            name.to_uppercase()
        )));
    }
    let mut args = Vec::with_capacity(list.args.len());
    for arg in &list.args {
        match arg {
            sp::FunctionArg::Unnamed(sp::FunctionArgExpr::Expr(expr)) => args.push(Some(expr)),
            sp::FunctionArg::Unnamed(sp::FunctionArgExpr::Wildcard) => args.push(None),
            other => return Err(unsupported(format!("function argument {other}"))),
        }
    }
    Ok((name, args))
}

fn lower_scalar(expr: &sp::Expr) -> Result<ScalarExpr> {
    match expr {
        sp::Expr::Function(function) => {
            let (name, args) = function_parts(function)?;
            match (name.as_str(), args.as_slice()) {
                ("date", [Some(arg)]) => Ok(ScalarExpr::Date(column_name(arg)?)),
                ("date", _) => Err(SqlError::new("DATE() takes exactly one column")),
                (other, _) => Err(unsupported(format!("function {}", other.to_uppercase()))),
            }
        }
        sp::Expr::Nested(inner) => lower_scalar(inner),
        sp::Expr::Identifier(_) | sp::Expr::CompoundIdentifier(_) => {
            Ok(ScalarExpr::Column(column_name(expr)?))
        }
        sp::Expr::Cast { .. } => Err(unsupported("CAST")),
        sp::Expr::BinaryOp { op, .. } => {
            Err(unsupported(format!("operator {op} in a select item")))
        }
        other => Err(unsupported(format!("expression {other}"))),
    }
}

fn lower_output(expr: &sp::Expr) -> Result<OutputExpr> {
    if let sp::Expr::Function(function) = expr {
        let (name, args) = function_parts(function)?;
        let function_kind = match name.as_str() {
            "count" => Some(AggregateFunction::Count),
            "sum" => Some(AggregateFunction::Sum),
            "avg" => Some(AggregateFunction::Avg),
            "min" => Some(AggregateFunction::Min),
            "max" => Some(AggregateFunction::Max),
            _ => None,
        };
        if let Some(kind) = function_kind {
            return match (kind, args.as_slice()) {
                (AggregateFunction::Count, [None]) => Ok(OutputExpr::Aggregate {
                    function: AggregateFunction::CountStar,
                    argument: None,
                }),
                (_, [Some(arg)]) => {
                    if matches!(arg, sp::Expr::Function(f) if function_parts(f).is_ok_and(|(n, _)| matches!(n.as_str(), "count" | "sum" | "avg" | "min" | "max")))
                    {
                        return Err(unsupported("nested aggregate"));
                    }
                    Ok(OutputExpr::Aggregate {
                        function: kind,
                        argument: Some(lower_scalar(arg)?),
                    })
                }
                _ => Err(SqlError::new(format!(
                    "{} takes one argument",
                    name.to_uppercase()
                ))),
            };
        }
    }
    Ok(OutputExpr::Scalar(lower_scalar(expr)?))
}

fn lower_group_by(
    group_by: &sp::GroupByExpr,
    projection: &[SelectItem],
) -> Result<Vec<ScalarExpr>> {
    let expressions = match group_by {
        sp::GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL")),
        sp::GroupByExpr::Expressions(expressions, modifiers) => {
            if !modifiers.is_empty() {
                return Err(unsupported("GROUP BY modifiers (ROLLUP/CUBE/TOTALS)"));
            }
            expressions
        }
    };
    let mut keys = Vec::with_capacity(expressions.len());
    for expr in expressions {
        let key = if let Some(ordinal) = ordinal(expr)? {
            match projection.get(ordinal) {
                Some(SelectItem::Expr {
                    expr: OutputExpr::Scalar(scalar),
                    ..
                }) => scalar.clone(),
                Some(_) => {
                    return Err(SqlError::new(format!(
                        "GROUP BY {} refers to an aggregate or *",
                        ordinal + 1
                    )))
                }
                None => {
                    return Err(SqlError::new(format!(
                        "GROUP BY {} is out of range (the select list has {} items)",
                        ordinal + 1,
                        projection.len()
                    )))
                }
            }
        } else if let Some(item) = alias_target(expr, projection) {
            match item {
                SelectItem::Expr {
                    expr: OutputExpr::Scalar(scalar),
                    ..
                } => scalar.clone(),
                _ => {
                    return Err(SqlError::new(format!(
                        "GROUP BY {expr} refers to an aggregate"
                    )))
                }
            }
        } else {
            match expr {
                sp::Expr::Function(_)
                | sp::Expr::Identifier(_)
                | sp::Expr::CompoundIdentifier(_)
                | sp::Expr::Nested(_) => lower_scalar(expr)?,
                sp::Expr::Rollup(_) | sp::Expr::Cube(_) | sp::Expr::GroupingSets(_) => {
                    return Err(unsupported("ROLLUP/CUBE/GROUPING SETS"))
                }
                other => return Err(unsupported(format!("GROUP BY {other}"))),
            }
        };
        keys.push(key);
    }
    Ok(keys)
}

/// `Some(i)` (0-based) when `expr` is a positive integer literal (an ordinal).
fn ordinal(expr: &sp::Expr) -> Result<Option<usize>> {
    match expr {
        sp::Expr::Value(value) => match &value.value {
            sp::Value::Number(text, _) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Some(n - 1)),
                _ => Err(SqlError::new(format!(
                    "{text} is not a valid position (positions start at 1)"
                ))),
            },
            _ => Err(SqlError::new(format!(
                "cannot group or order by the constant {expr}"
            ))),
        },
        _ => Ok(None),
    }
}

/// The select item whose alias is the plain identifier `expr`, if any.
fn alias_target<'a>(expr: &sp::Expr, projection: &'a [SelectItem]) -> Option<&'a SelectItem> {
    let sp::Expr::Identifier(ident) = expr else {
        return None;
    };
    let name = identifier(ident);
    projection
        .iter()
        .find(|item| matches!(item, SelectItem::Expr { alias: Some(alias), .. } if *alias == name))
}

fn validate_grouping(projection: &[SelectItem], group_by: &[ScalarExpr]) -> Result<()> {
    if group_by.is_empty() && !has_aggregate(projection) {
        return Ok(());
    }
    for item in projection {
        match item {
            SelectItem::Wildcard => {
                return Err(SqlError::new(
                    "SELECT * cannot be combined with aggregates or GROUP BY",
                ))
            }
            SelectItem::Expr {
                expr: OutputExpr::Scalar(scalar),
                ..
            } if !group_by.contains(scalar) => {
                let name = match scalar {
                    ScalarExpr::Column(c) => c.clone(),
                    ScalarExpr::Date(c) => format!("DATE({c})"),
                };
                return Err(SqlError::new(format!(
                    "{name} must appear in GROUP BY or be inside an aggregate"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn lower_order_by(
    order_by: &sp::OrderBy,
    projection: &[SelectItem],
    grouped: bool,
) -> Result<Vec<OrderBy>> {
    if order_by.interpolate.is_some() {
        return Err(unsupported("INTERPOLATE"));
    }
    let expressions = match &order_by.kind {
        sp::OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL")),
        sp::OrderByKind::Expressions(expressions) => expressions,
    };
    let mut keys = Vec::with_capacity(expressions.len());
    for item in expressions {
        if item.with_fill.is_some() {
            return Err(unsupported("WITH FILL"));
        }
        if item.options.nulls_first.is_some() {
            return Err(unsupported(
                "NULLS FIRST/LAST (NULLs always sort after values)",
            ));
        }
        let descending = match &item.options.sort {
            None => false,
            Some(sp::OrderBySort::Asc) => false,
            Some(sp::OrderBySort::Desc) => true,
            Some(sp::OrderBySort::Using(_)) => return Err(unsupported("ORDER BY ... USING")),
        };
        let key = if let Some(position) = ordinal(&item.expr)? {
            if position >= projection.len() {
                return Err(SqlError::new(format!(
                    "ORDER BY {} is out of range (the select list has {} items)",
                    position + 1,
                    projection.len()
                )));
            }
            OrderKey::SelectItem(position)
        } else if let Some(index) = alias_target(&item.expr, projection)
            .and_then(|target| projection.iter().position(|p| std::ptr::eq(p, target)))
        {
            OrderKey::SelectItem(index)
        } else {
            let wanted = lower_output(&item.expr)?;
            match projection
                .iter()
                .position(|p| matches!(p, SelectItem::Expr { expr, .. } if *expr == wanted))
            {
                Some(index) => OrderKey::SelectItem(index),
                None => match wanted {
                    OutputExpr::Scalar(ScalarExpr::Column(name)) if !grouped => {
                        OrderKey::Column(name)
                    }
                    _ => {
                        return Err(SqlError::new(format!(
                            "ORDER BY {} must be an item of the select list",
                            item.expr
                        )))
                    }
                },
            }
        };
        keys.push(OrderBy { key, descending });
    }
    Ok(keys)
}

fn lower_limit(expr: &sp::Expr) -> Result<u64> {
    match expr {
        sp::Expr::Value(value) => match &value.value {
            sp::Value::Number(text, _) => text
                .parse::<u64>()
                .map_err(|_| SqlError::new(format!("LIMIT {text} is not a non-negative integer"))),
            _ => Err(SqlError::new(format!(
                "LIMIT {expr} is not a non-negative integer"
            ))),
        },
        _ => Err(unsupported(format!("LIMIT {expr}"))),
    }
}

fn lower_literal(expr: &sp::Expr) -> Result<Literal> {
    match expr {
        sp::Expr::Value(value) => match &value.value {
            sp::Value::Number(text, _) => number(text, false),
            sp::Value::SingleQuotedString(text) => Ok(Literal::String(text.clone())),
            sp::Value::Boolean(b) => Ok(Literal::Boolean(*b)),
            sp::Value::Null => Ok(Literal::Null),
            sp::Value::HexStringLiteral(hex) => hex_bytes(hex),
            other => Err(unsupported(format!("literal {other}"))),
        },
        sp::Expr::UnaryOp {
            op: sp::UnaryOperator::Minus,
            expr: inner,
        } => match inner.as_ref() {
            sp::Expr::Value(value) => match &value.value {
                sp::Value::Number(text, _) => number(text, true),
                _ => Err(SqlError::new(format!("cannot negate {inner}"))),
            },
            _ => Err(unsupported(format!("expression -{inner}"))),
        },
        sp::Expr::UnaryOp {
            op: sp::UnaryOperator::Plus,
            expr: inner,
        } => lower_literal(inner),
        sp::Expr::TypedString(typed) => match &typed.value.value {
            sp::Value::SingleQuotedString(text) => {
                let kind = typed.data_type.to_string().to_uppercase();
                if kind.starts_with("TIMESTAMP") || kind == "DATE" {
                    Ok(Literal::String(text.clone()))
                } else {
                    Err(unsupported(format!("typed literal {kind} '{text}'")))
                }
            }
            other => Err(unsupported(format!("typed literal {other}"))),
        },
        sp::Expr::Nested(inner) => lower_literal(inner),
        other => Err(SqlError::new(format!("expected a literal, found {other}"))),
    }
}

fn number(text: &str, negative: bool) -> Result<Literal> {
    let signed = if negative {
        format!("-{text}")
    } else {
        text.to_owned()
    };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(value) = signed.parse::<i64>() {
            return Ok(Literal::Integer(value));
        }
    }
    match crate::value::ExactNumber::parse(&signed) {
        Some(_) => Ok(Literal::Number(signed)),
        None => Err(SqlError::new(format!("invalid number {signed}"))),
    }
}

/// The bytes of `X'hex'` (an even number of hex digits).
fn hex_bytes(hex: &str) -> Result<Literal> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(SqlError::new(format!(
            "invalid hex literal X'{hex}' (expected an even number of hex digits)"
        )));
    }
    let value = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
    Ok(Literal::Bytes(
        digits
            .chunks(2)
            .map(|pair| value(pair[0]) << 4 | value(pair[1]))
            .collect(),
    ))
}

fn is_column(expr: &sp::Expr) -> bool {
    match expr {
        sp::Expr::Identifier(_) | sp::Expr::CompoundIdentifier(_) => true,
        sp::Expr::Nested(inner) => is_column(inner),
        _ => false,
    }
}

fn flip(op: ComparisonOperator) -> ComparisonOperator {
    match op {
        ComparisonOperator::Lt => ComparisonOperator::Gt,
        ComparisonOperator::LtEq => ComparisonOperator::GtEq,
        ComparisonOperator::Gt => ComparisonOperator::Lt,
        ComparisonOperator::GtEq => ComparisonOperator::LtEq,
        other => other,
    }
}

fn lower_predicate(expr: &sp::Expr) -> Result<Predicate> {
    match expr {
        sp::Expr::Nested(inner) => lower_predicate(inner),
        sp::Expr::UnaryOp {
            op: sp::UnaryOperator::Not,
            expr: inner,
        } => Ok(Predicate::Not(Box::new(lower_predicate(inner)?))),
        sp::Expr::BinaryOp { left, op, right } => {
            let comparison = match op {
                sp::BinaryOperator::And => {
                    return Ok(Predicate::And(
                        Box::new(lower_predicate(left)?),
                        Box::new(lower_predicate(right)?),
                    ))
                }
                sp::BinaryOperator::Or => {
                    return Ok(Predicate::Or(
                        Box::new(lower_predicate(left)?),
                        Box::new(lower_predicate(right)?),
                    ))
                }
                sp::BinaryOperator::Eq => ComparisonOperator::Eq,
                sp::BinaryOperator::NotEq => ComparisonOperator::NotEq,
                sp::BinaryOperator::Lt => ComparisonOperator::Lt,
                sp::BinaryOperator::LtEq => ComparisonOperator::LtEq,
                sp::BinaryOperator::Gt => ComparisonOperator::Gt,
                sp::BinaryOperator::GtEq => ComparisonOperator::GtEq,
                other => return Err(unsupported(format!("operator {other}"))),
            };
            match (is_column(left), is_column(right)) {
                (true, true) => Err(unsupported(format!("comparing two columns ({expr})"))),
                (true, false) => Ok(Predicate::Compare {
                    column: column_name(left)?,
                    op: comparison,
                    value: lower_literal(right)?,
                }),
                (false, true) => Ok(Predicate::Compare {
                    column: column_name(right)?,
                    op: flip(comparison),
                    value: lower_literal(left)?,
                }),
                (false, false) => Err(unsupported(format!("comparison without a column ({expr})"))),
            }
        }
        sp::Expr::Between {
            expr: inner,
            negated,
            low,
            high,
        } => Ok(Predicate::Between {
            column: column_name(inner)?,
            low: lower_literal(low)?,
            high: lower_literal(high)?,
            negated: *negated,
        }),
        sp::Expr::In {
            expr: inner,
            target,
            negated,
            global: false,
        } => match target {
            sp::InTarget::List(list) => {
                if list.is_empty() {
                    return Err(SqlError::new("IN () needs at least one value"));
                }
                Ok(Predicate::InList {
                    column: column_name(inner)?,
                    list: list.iter().map(lower_literal).collect::<Result<_>>()?,
                    negated: *negated,
                })
            }
            sp::InTarget::Subquery(_) => Err(unsupported("IN (subquery)")),
            _ => Err(unsupported(format!("IN {target}"))),
        },
        sp::Expr::IsNull(inner) => Ok(Predicate::IsNull {
            column: column_name(inner)?,
            negated: false,
        }),
        sp::Expr::IsNotNull(inner) => Ok(Predicate::IsNull {
            column: column_name(inner)?,
            negated: true,
        }),
        sp::Expr::Like {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char: None,
        } => {
            let Literal::String(pattern) = lower_literal(pattern)? else {
                return Err(SqlError::new("LIKE needs a string pattern"));
            };
            let (prefix, is_prefix) = match pattern.strip_suffix('%') {
                Some(prefix) => (prefix.to_owned(), true),
                None => (pattern.clone(), false),
            };
            if prefix.contains(['%', '_']) {
                return Err(unsupported(format!(
                    "LIKE pattern '{pattern}' (only 'prefix%' or an exact string, without '_')"
                )));
            }
            Ok(Predicate::Like {
                column: column_name(inner)?,
                prefix,
                is_prefix,
                negated: *negated,
            })
        }
        sp::Expr::Like { .. } => Err(unsupported("LIKE with ESCAPE or ANY")),
        sp::Expr::ILike { .. } => Err(unsupported("ILIKE")),
        sp::Expr::Exists { .. } | sp::Expr::Subquery(_) => Err(unsupported("subquery")),
        sp::Expr::Function(function) => {
            Err(unsupported(format!("function {} in WHERE", function.name)))
        }
        sp::Expr::Identifier(_) => Err(SqlError::new(format!(
            "WHERE {expr} is not a condition (compare it with a value)"
        ))),
        other => Err(unsupported(format!("condition {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Query {
        match parse(sql) {
            Ok(Statement::Query(q)) => q,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn error(sql: &str) -> String {
        match parse(sql) {
            Err(e) => e.message,
            Ok(s) => panic!("{sql} parsed: {s:?}"),
        }
    }

    fn col(name: &str) -> ScalarExpr {
        ScalarExpr::Column(name.into())
    }

    #[test]
    fn spec_queries_parse_to_the_expected_tree() {
        let q = query("SELECT * FROM events WHERE id = 42");
        assert_eq!(q.table, "events");
        assert_eq!(q.projection, vec![SelectItem::Wildcard]);
        assert_eq!(
            q.filter,
            Some(Predicate::Compare {
                column: "id".into(),
                op: ComparisonOperator::Eq,
                value: Literal::Integer(42)
            })
        );

        let q = query(
            "SELECT COUNT(*) FROM events WHERE timestamp BETWEEN '2024-01-01' AND '2024-02-01'",
        );
        assert_eq!(
            q.projection,
            vec![SelectItem::Expr {
                expr: OutputExpr::Aggregate {
                    function: AggregateFunction::CountStar,
                    argument: None
                },
                alias: None
            }]
        );
        assert_eq!(
            q.filter,
            Some(Predicate::Between {
                column: "timestamp".into(),
                low: Literal::String("2024-01-01".into()),
                high: Literal::String("2024-02-01".into()),
                negated: false
            })
        );

        let q = query("SELECT category, SUM(amount) FROM events GROUP BY category");
        assert_eq!(q.group_by, vec![col("category")]);

        let q = query(
            "SELECT DATE(timestamp), category, AVG(amount) FROM events WHERE timestamp >= '2024-01-01' \
             GROUP BY DATE(timestamp), category ORDER BY DATE(timestamp)",
        );
        assert_eq!(
            q.group_by,
            vec![ScalarExpr::Date("timestamp".into()), col("category")]
        );
        assert_eq!(
            q.order_by,
            vec![OrderBy {
                key: OrderKey::SelectItem(0),
                descending: false
            }]
        );
    }

    #[test]
    fn ordinals_aliases_and_flipped_comparisons() {
        let q = query(
            "select date(ts) as d, count(*) as n from t group by 1 order by n desc, d limit 5;",
        );
        assert_eq!(q.group_by, vec![ScalarExpr::Date("ts".into())]);
        assert_eq!(
            q.order_by,
            vec![
                OrderBy {
                    key: OrderKey::SelectItem(1),
                    descending: true
                },
                OrderBy {
                    key: OrderKey::SelectItem(0),
                    descending: false
                }
            ]
        );
        assert_eq!(q.limit, Some(5));
        let q = query(
            "SELECT id FROM t WHERE 5 < id AND NOT (x IS NULL OR y IN (1, -2, 3.5)) ORDER BY ts",
        );
        let Some(Predicate::And(left, right)) = q.filter else {
            panic!()
        };
        assert_eq!(
            *left,
            Predicate::Compare {
                column: "id".into(),
                op: ComparisonOperator::Gt,
                value: Literal::Integer(5)
            }
        );
        let Predicate::Not(inner) = *right else {
            panic!()
        };
        let Predicate::Or(_, in_list) = *inner else {
            panic!()
        };
        assert_eq!(
            *in_list,
            Predicate::InList {
                column: "y".into(),
                list: vec![
                    Literal::Integer(1),
                    Literal::Integer(-2),
                    Literal::Number("3.5".into())
                ],
                negated: false
            }
        );
        assert_eq!(
            q.order_by,
            vec![OrderBy {
                key: OrderKey::Column("ts".into()),
                descending: false
            }]
        );
        let q = query("SELECT \"Name\" FROM t WHERE s LIKE 'ab%' AND u NOT LIKE 'x' AND ts < TIMESTAMP '2024-01-01 00:00:00' AND b = TRUE AND c <> NULL");
        assert_eq!(
            q.projection,
            vec![SelectItem::Expr {
                expr: OutputExpr::Scalar(col("Name")),
                alias: None
            }]
        );
        let text = format!("{:?}", q.filter);
        assert!(text.contains("prefix: \"ab\", is_prefix: true, negated: false"));
        assert!(text.contains("prefix: \"x\", is_prefix: false, negated: true"));
        assert!(text.contains("String(\"2024-01-01 00:00:00\")"));
        assert!(matches!(
            parse("EXPLAIN SELECT * FROM t"),
            Ok(Statement::Explain(_))
        ));
    }

    #[test]
    fn numbers_keep_their_text_and_hex_literals_are_bytes() {
        let q = query(
            "SELECT * FROM t WHERE p > -100.505 AND q = 99999999999999999999 AND b = X'0aFf'",
        );
        let text = format!("{:?}", q.filter);
        assert!(text.contains("Number(\"-100.505\")"), "{text}");
        assert!(text.contains("Number(\"99999999999999999999\")"), "{text}");
        assert!(text.contains("Bytes([10, 255])"), "{text}");
    }

    #[test]
    fn constructs_outside_the_subset_are_named() {
        let cases = [
            ("SELECT * FROM a JOIN b ON a.x = b.x", "JOIN"),
            ("SELECT * FROM (SELECT 1)", "subquery"),
            ("SELECT x FROM a UNION SELECT x FROM b", "UNION"),
            ("SELECT DISTINCT x FROM t", "DISTINCT"),
            (
                "SELECT x, COUNT(*) FROM t GROUP BY x HAVING COUNT(*) > 1",
                "HAVING",
            ),
            ("SELECT SUM(x) OVER () FROM t", "window"),
            ("SELECT * FROM t LIMIT 5 OFFSET 2", "OFFSET"),
            ("SELECT UPPER(x) FROM t", "UPPER"),
            ("SELECT * FROM t WHERE s LIKE 'a_b%'", "LIKE pattern"),
            ("SELECT * FROM t WHERE a = b", "two columns"),
            ("SELECT x + 1 FROM t", "+"),
            (
                "SELECT x, y, COUNT(*) FROM t GROUP BY x",
                "y must appear in GROUP BY",
            ),
            ("SELECT *, COUNT(*) FROM t", "SELECT *"),
            ("SELECT x FROM t GROUP BY 3", "out of range"),
            ("SELECT COUNT(*) FROM t GROUP BY 1", "aggregate"),
            ("SELECT COUNT(DISTINCT x) FROM t", "DISTINCT"),
            ("SELECT * FROM t ORDER BY x NULLS FIRST", "NULLS"),
            ("SELECT * FROM t WHERE id IN (SELECT 1)", "subquery"),
            ("SELECT * FROM s.t", "qualified table"),
            ("SELECT 1", "FROM"),
            ("DELETE FROM t", "DELETE"),
            // Integers beyond int64 are numbers (exact for DECIMAL columns; an int column refuses
            // them when the query is bound).
            ("SELECT * FROM t WHERE x = 1e99999999", "invalid number"),
            ("SELECT * FROM t WHERE x = X'123'", "hex literal"),
            ("SELECT * FROM t; SELECT * FROM t", "exactly one statement"),
            ("", "empty"),
            ("SELECT * FROM t LIMIT -1", "LIMIT"),
        ];
        for (sql, expected) in cases {
            let message = error(sql);
            assert!(
                message.contains(expected),
                "{sql}: {message:?} does not mention {expected:?}"
            );
        }
    }

    #[test]
    fn oversized_and_deeply_nested_inputs_are_refused() {
        let long = format!(
            "SELECT * FROM t WHERE x IN ({})",
            vec!["1"; 40_000].join(",")
        );
        assert!(error(&long).contains("limit"));
        let deep = format!(
            "SELECT * FROM t WHERE {}x = 1{}",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(!error(&deep).is_empty());
        let deep_not = format!("SELECT * FROM t WHERE {}x = 1", "NOT ".repeat(10_000));
        assert!(!error(&deep_not).is_empty());
    }

    mod property {
        use super::super::parse;
        use proptest::prelude::*;

        const TOKENS: &[&str] = &[
            "SELECT",
            "FROM",
            "WHERE",
            "GROUP",
            "BY",
            "ORDER",
            "LIMIT",
            "AND",
            "OR",
            "NOT",
            "IN",
            "BETWEEN",
            "LIKE",
            "IS",
            "NULL",
            "COUNT",
            "SUM",
            "AVG",
            "MIN",
            "MAX",
            "DATE",
            "(",
            ")",
            "*",
            ",",
            "=",
            "<>",
            "<",
            ">=",
            "-",
            "1",
            "2.5",
            "'2024-01-01'",
            "'a%'",
            "t",
            "x",
            "events",
            "id",
            "DESC",
            "ASC",
            "EXPLAIN",
            "AS",
            ";",
            "JOIN",
            "UNION",
            "TIMESTAMP",
            "TRUE",
        ];

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(text in ".{0,200}") {
                let _ = parse(&text);
            }

            #[test]
            fn token_soup_never_panics(tokens in proptest::collection::vec(proptest::sample::select(TOKENS), 0..40)) {
                let _ = parse(&tokens.join(" "));
            }
        }
    }
}
