//! Row results: the output value of a row, and sorting collected rows (ORDER BY, LIMIT).

use crate::arrays::i64_values;
use crate::error::{Error, Result};
use crate::query::plan::{SortKey, ValueExpr};
use crate::value::MICROS_PER_DAY;
use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, Date32Array};
use arrow_schema::DataType;
use std::sync::Arc;

/// Rows buffered before an ORDER BY ... LIMIT k scan compacts to its best k.
pub(super) const TOP_K_COMPACT_ROWS: usize = 65_536;

/// Concatenates row chunks (all of one shape) and sorts them by `keys`, keeping the first `limit`.
pub fn sort_rows(
    chunks: Vec<Vec<ArrayRef>>,
    keys: &[SortKey],
    limit: Option<usize>,
) -> Result<Vec<ArrayRef>> {
    let internal = |e: arrow_schema::ArrowError| Error::Internal(e.to_string());
    let columns = if chunks.len() == 1 {
        chunks.into_iter().next().unwrap_or_default()
    } else {
        let width = chunks.first().map_or(0, |c| c.len());
        let mut columns = Vec::with_capacity(width);
        for i in 0..width {
            let parts: Vec<&dyn Array> = chunks.iter().map(|c| c[i].as_ref()).collect();
            columns.push(arrow_select::concat::concat(&parts).map_err(internal)?);
        }
        columns
    };
    let rows = columns.first().map_or(0, |c| c.len());
    if keys.is_empty() || rows == 0 {
        return Ok(columns);
    }
    let sort_columns: Vec<arrow_ord::sort::SortColumn> = keys
        .iter()
        .map(|key| arrow_ord::sort::SortColumn {
            values: sort_key(&columns[key.index]),
            options: Some(arrow_schema::SortOptions {
                descending: key.descending,
                nulls_first: key.descending,
            }),
        })
        .collect();
    let indices = arrow_ord::sort::lexsort_to_indices(&sort_columns, limit).map_err(internal)?;
    columns
        .iter()
        .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(internal)
}

/// The array `sort_rows` orders by: floats in PostgreSQL's order (`value::float_cmp`). Arrow
/// sorts floats by IEEE total order, which puts negative NaNs before every number and `-0.0`
/// before `0.0`; with every NaN made the positive one and `-0.0` made `0.0`, its order is ours.
pub(super) fn sort_key(column: &ArrayRef) -> ArrayRef {
    match column.as_primitive_opt::<Float64Type>() {
        Some(floats) => Arc::new(floats.unary::<_, Float64Type>(|v| {
            if v.is_nan() {
                f64::NAN
            } else if v == 0.0 {
                0.0
            } else {
                v
            }
        })),
        None => column.clone(),
    }
}

/// The output array of `value` for a page slice.
pub(super) fn row_value(value: ValueExpr, array: &ArrayRef) -> Result<ArrayRef> {
    match (value, array.data_type()) {
        (ValueExpr::Date(_), DataType::Timestamp(_, _)) => {
            let times = i64_values(array).unwrap_or(&[]);
            let days: Date32Array = times
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    array
                        .is_valid(i)
                        .then(|| t.div_euclid(MICROS_PER_DAY) as i32)
                })
                .collect();
            Ok(Arc::new(days))
        }
        _ => Ok(array.clone()),
    }
}
