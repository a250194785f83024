//! A query's partial result as Arrow, for tables hash-partitioned over nodes: each partition
//! answers the query as a *fragment* with record batches in `schema(plan)` (group keys and
//! aggregate *states*, or row values), and the node that was asked decodes them and finishes
//! the query as if it had scanned every partition itself (`engine::Merger`). This module owns
//! the encoding only; running fragments and merging them is the engine's.
//!
//! States are encoded bit for bit (float sums and extremes by their bits, 128- and 256-bit sums
//! as little-endian fixed-size binaries), so a decoded state is the state encoded. Batches come
//! from other nodes: decoding checks every column against `schema(plan)` first, reads them with
//! checked downcasts and never panics; a mismatch is an error saying what differs.

use crate::error::{Error, Result};
use crate::query::aggregate::AccState;
use crate::query::groups::{Accumulator, GroupRows};
use crate::query::plan::{Mode, Plan, ValueExpr};
use crate::query::sql::AggregateFunction;
use crate::value::{ColumnType, KeyValue, Scalar};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
    Int32Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use arrow_buffer::i256;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// Bytes of an encoded 128-bit integer sum (`AccState::SumInt`).
const SUM_INT_BYTES: i32 = 16;
/// Bytes of an encoded 256-bit decimal sum (`AccState::SumDecimal`).
const SUM_DECIMAL_BYTES: i32 = 32;

/// The columns of `plan`'s partial result. Groups: one column `k{i}` per GROUP BY key in the
/// key's type, then per aggregate `a{i}` its state: `a{i}_count` (UInt64) for COUNT;
/// `a{i}_sum` and `a{i}_count` for SUM and AVG, the sum a Float64 for floats, a 16-byte
/// (integers, i128) or 32-byte (decimals, i256) little-endian fixed-size binary otherwise;
/// `a{i}_value` in the argument's type for MIN and MAX. Rows: one column `v{i}` per value
/// (outputs, then hidden ORDER BY columns). Every column is nullable.
pub fn schema(plan: &Plan) -> SchemaRef {
    let field = |name: String, data_type: DataType| Field::new(name, data_type, true);
    let mut fields = Vec::new();
    match &plan.mode {
        Mode::Groups { keys, aggregates } => {
            for (i, key) in keys.iter().enumerate() {
                fields.push(field(format!("k{i}"), value_type(plan, *key).to_arrow()));
            }
            for (i, aggregate) in aggregates.iter().enumerate() {
                let count = || field(format!("a{i}_count"), DataType::UInt64);
                let sum = |data_type| field(format!("a{i}_sum"), data_type);
                match AccState::empty(aggregate) {
                    AccState::Count(_) => fields.push(count()),
                    AccState::SumFloat { .. } => {
                        fields.extend([sum(DataType::Float64), count()]);
                    }
                    AccState::SumInt { .. } => {
                        fields.extend([sum(DataType::FixedSizeBinary(SUM_INT_BYTES)), count()]);
                    }
                    AccState::SumDecimal { .. } => {
                        fields.extend([sum(DataType::FixedSizeBinary(SUM_DECIMAL_BYTES)), count()])
                    }
                    AccState::Extreme(_) => {
                        let data_type =
                            aggregate.input_type.unwrap_or(ColumnType::Int64).to_arrow();
                        fields.push(field(format!("a{i}_value"), data_type));
                    }
                }
            }
        }
        Mode::Rows { values } => {
            for (i, value) in values.iter().enumerate() {
                fields.push(field(format!("v{i}"), value_type(plan, *value).to_arrow()));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// The type of a key or row value: its column's, or DATE for `DATE(column)`.
fn value_type(plan: &Plan, value: ValueExpr) -> ColumnType {
    match value {
        ValueExpr::Column(c) => plan.columns[c].column_type,
        ValueExpr::Date(_) => ColumnType::Date,
    }
}

/// Merged (not finished) groups of a grouped `plan` as one batch in `schema(plan)`.
pub fn encode_groups(plan: &Plan, groups: &GroupRows) -> Result<RecordBatch> {
    let Mode::Groups { keys, aggregates } = &plan.mode else {
        return Err(Error::Internal("groups encoded for a row query".into()));
    };
    if groups.is_empty() {
        // A merge of nothing has no columns at all.
        return Ok(RecordBatch::new_empty(schema(plan)));
    }
    if groups.keys.len() != keys.len() || groups.states.len() != aggregates.len() {
        return Err(Error::Internal(format!(
            "groups of {} keys and {} aggregates encoded for a query of {} and {}",
            groups.keys.len(),
            groups.states.len(),
            keys.len(),
            aggregates.len()
        )));
    }
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (i, (key, values)) in keys.iter().zip(&groups.keys).enumerate() {
        let column_type = value_type(plan, *key);
        columns.push(build(
            column_type,
            values.iter().map(Cell::from),
            &format!("k{i}"),
        )?);
    }
    for (i, (aggregate, states)) in aggregates.iter().zip(&groups.states).enumerate() {
        let counts = |c: &[u64]| -> ArrayRef { Arc::new(UInt64Array::from(c.to_vec())) };
        match states {
            Accumulator::Count(c) => columns.push(counts(c)),
            Accumulator::SumFloat(s, c) => {
                columns.push(Arc::new(Float64Array::from(s.clone())));
                columns.push(counts(c));
            }
            Accumulator::SumInt(s, c) => {
                columns.push(fixed_binary(s.iter().map(|v| v.to_le_bytes()))?);
                columns.push(counts(c));
            }
            Accumulator::SumDecimal(s, c) => {
                columns.push(fixed_binary(s.iter().map(|v| v.to_le_bytes()))?);
                columns.push(counts(c));
            }
            Accumulator::Extreme { values, .. } => {
                let column_type = aggregate.input_type.unwrap_or(ColumnType::Int64);
                columns.push(build(
                    column_type,
                    values.iter().map(Cell::from),
                    &format!("a{i}_value"),
                )?);
            }
        }
    }
    batch(schema(plan), columns, groups.len)
}

/// The groups a batch in `schema(plan)` holds, exactly as encoded, except that float keys take
/// their canonical form (-0.0 as 0.0, every NaN as one: what grouping on a scan makes), so a
/// group from another node meets its equal here. Without GROUP BY a batch holds at most one
/// group. An error, never a panic, when the batch does not fit the plan.
pub fn decode_groups(plan: &Plan, batch: &RecordBatch) -> Result<GroupRows> {
    let Mode::Groups { keys, aggregates } = &plan.mode else {
        return Err(Error::Internal("groups decoded for a row query".into()));
    };
    check(plan, &batch.schema())?;
    let len = batch.num_rows();
    if keys.is_empty() && len > 1 {
        return Err(mismatch(format!(
            "a query without GROUP BY has one group per partial result; this batch has {len}"
        )));
    }
    let columns = batch.columns();
    let mut at = 0;
    let mut key_columns = Vec::with_capacity(keys.len());
    for _ in keys {
        let scalars = scalars(&columns[at], &format!("k{at}"))?;
        key_columns.push(scalars.into_iter().map(key_of).collect());
        at += 1;
    }
    let mut states = Vec::with_capacity(aggregates.len());
    for (i, aggregate) in aggregates.iter().enumerate() {
        let column = |at: usize| &columns[at];
        let state = match AccState::empty(aggregate) {
            AccState::Count(_) => {
                at += 1;
                Accumulator::Count(counts(column(at - 1), i)?)
            }
            AccState::SumFloat { .. } => {
                at += 2;
                let sums = column(at - 2)
                    .as_primitive_opt::<Float64Type>()
                    .filter(|s| s.null_count() == 0)
                    .ok_or_else(|| mismatch(format!("a{i}_sum must be non-NULL floats")))?;
                Accumulator::SumFloat(sums.values().to_vec(), counts(column(at - 1), i)?)
            }
            AccState::SumInt { .. } => {
                at += 2;
                let sums = fixed_values::<16>(column(at - 2), i)?
                    .into_iter()
                    .map(i128::from_le_bytes)
                    .collect();
                Accumulator::SumInt(sums, counts(column(at - 1), i)?)
            }
            AccState::SumDecimal { .. } => {
                at += 2;
                let sums = fixed_values::<32>(column(at - 2), i)?
                    .into_iter()
                    .map(i256::from_le_bytes)
                    .collect();
                Accumulator::SumDecimal(sums, counts(column(at - 1), i)?)
            }
            AccState::Extreme(_) => {
                at += 1;
                Accumulator::Extreme {
                    is_min: aggregate.function == AggregateFunction::Min,
                    values: scalars(column(at - 1), &format!("a{i}_value"))?,
                }
            }
        };
        states.push(state);
    }
    Ok(GroupRows::from_parts(key_columns, states, len))
}

/// A row query's value columns (`Mode::Rows::values`, one chunk of a scan) as a batch in
/// `schema(plan)`: each cast to its value's type (a dictionary-encoded string to a string).
pub fn encode_rows(plan: &Plan, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let schema = schema(plan);
    if columns.len() != schema.fields().len() {
        return Err(Error::Internal(format!(
            "{} row columns encoded for a query of {} values",
            columns.len(),
            schema.fields().len()
        )));
    }
    let len = columns.first().map_or(0, |c| c.len());
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(array, field)| {
            if array.data_type() == field.data_type() {
                Ok(array)
            } else {
                arrow_cast::cast(&array, field.data_type())
                    .map_err(|e| Error::Internal(e.to_string()))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    batch(schema, columns, len)
}

/// The value columns of a batch in `schema(plan)` of a row query (checked against the plan).
pub fn decode_rows(plan: &Plan, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    if !matches!(plan.mode, Mode::Rows { .. }) {
        return Err(Error::Internal("rows decoded for a grouped query".into()));
    }
    check(plan, &batch.schema())?;
    Ok(batch.columns().to_vec())
}

/// Whether `schema` has the columns of `schema(plan)`, by number and type (names may differ);
/// the error says which column differs and how.
pub fn check(plan: &Plan, schema: &Schema) -> Result<()> {
    let expected = self::schema(plan);
    let (got, want) = (schema.fields(), expected.fields());
    if got.len() != want.len() {
        let names = |fields: &arrow_schema::Fields| {
            fields
                .iter()
                .map(|f| format!("{} {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(mismatch(format!(
            "{} columns ({}), the query's partial result has {} ({})",
            got.len(),
            names(got),
            want.len(),
            names(want)
        )));
    }
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        if got.data_type() != want.data_type() {
            return Err(mismatch(format!(
                "column {i} ({}) is {}, expected {} for {}",
                got.name(),
                got.data_type(),
                want.data_type(),
                want.name()
            )));
        }
    }
    Ok(())
}

fn mismatch(detail: String) -> Error {
    Error::Internal(format!("partial result does not fit the query: {detail}"))
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>, len: usize) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(len));
    RecordBatch::try_new_with_options(schema, columns, &options)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// One value of a key or extreme, borrowed, as the encoder reads it.
enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
    Decimal(i128),
    Bytes(&'a [u8]),
}

impl<'a> From<&'a KeyValue> for Cell<'a> {
    fn from(value: &'a KeyValue) -> Cell<'a> {
        match value {
            KeyValue::Null => Cell::Null,
            KeyValue::Int(v) => Cell::Int(*v),
            KeyValue::Float(bits) => Cell::Float(f64::from_bits(*bits)),
            KeyValue::Str(s) => Cell::Str(s),
            KeyValue::Bool(b) => Cell::Bool(*b),
            KeyValue::Decimal(v) => Cell::Decimal(*v),
            KeyValue::Bytes(b) => Cell::Bytes(b),
        }
    }
}

impl<'a> From<&'a Scalar> for Cell<'a> {
    fn from(value: &'a Scalar) -> Cell<'a> {
        match value {
            Scalar::Null => Cell::Null,
            Scalar::Int(v) => Cell::Int(*v),
            Scalar::Float(v) => Cell::Float(*v),
            Scalar::Str(s) => Cell::Str(s),
            Scalar::Bool(b) => Cell::Bool(*b),
            Scalar::Decimal(v) => Cell::Decimal(*v),
            Scalar::Bytes(b) => Cell::Bytes(b),
        }
    }
}

/// An array of `column_type` holding `cells` (floats by their bits); a value of another kind
/// is an internal error naming `column`.
fn build<'a>(
    column_type: ColumnType,
    cells: impl Iterator<Item = Cell<'a>>,
    column: &str,
) -> Result<ArrayRef> {
    let wrong = || Error::Internal(format!("{column}: a value that is not {column_type}"));
    let int = |cell: Cell| match cell {
        Cell::Null => Ok(None),
        Cell::Int(v) => Ok(Some(v)),
        _ => Err(wrong()),
    };
    let narrow = |cell: Cell| {
        int(cell)?
            .map(|v| i32::try_from(v).map_err(|_| wrong()))
            .transpose()
    };
    Ok(match column_type {
        ColumnType::Int64 => Arc::new(cells.map(int).collect::<Result<Int64Array>>()?),
        ColumnType::Timestamp => Arc::new(
            cells
                .map(int)
                .collect::<Result<TimestampMicrosecondArray>>()?,
        ),
        ColumnType::Int32 => Arc::new(cells.map(narrow).collect::<Result<Int32Array>>()?),
        ColumnType::Date => Arc::new(cells.map(narrow).collect::<Result<Date32Array>>()?),
        ColumnType::Float64 => Arc::new(
            cells
                .map(|cell| match cell {
                    Cell::Null => Ok(None),
                    Cell::Float(v) => Ok(Some(v)),
                    // What the single-node result makes of an integer bound (`scalars_to_array`).
                    Cell::Int(v) => Ok(Some(v as f64)),
                    _ => Err(wrong()),
                })
                .collect::<Result<Float64Array>>()?,
        ),
        ColumnType::Utf8 => Arc::new(
            cells
                .map(|cell| match cell {
                    Cell::Null => Ok(None),
                    Cell::Str(s) => Ok(Some(s)),
                    _ => Err(wrong()),
                })
                .collect::<Result<StringArray>>()?,
        ),
        ColumnType::Boolean => Arc::new(
            cells
                .map(|cell| match cell {
                    Cell::Null => Ok(None),
                    Cell::Bool(b) => Ok(Some(b)),
                    _ => Err(wrong()),
                })
                .collect::<Result<BooleanArray>>()?,
        ),
        ColumnType::Binary => Arc::new(
            cells
                .map(|cell| match cell {
                    Cell::Null => Ok(None),
                    Cell::Bytes(b) => Ok(Some(b)),
                    _ => Err(wrong()),
                })
                .collect::<Result<BinaryArray>>()?,
        ),
        ColumnType::Decimal { .. } => {
            let values = cells
                .map(|cell| match cell {
                    Cell::Null => Ok(None),
                    Cell::Decimal(v) => Ok(Some(v)),
                    _ => Err(wrong()),
                })
                .collect::<Result<Decimal128Array>>()?;
            let DataType::Decimal128(precision, scale) = column_type.to_arrow() else {
                return Err(wrong());
            };
            Arc::new(
                values
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| Error::Internal(format!("{column}: {e}")))?,
            )
        }
    })
}

/// Little-endian integers as a fixed-size binary column, none NULL.
fn fixed_binary<const N: usize>(values: impl Iterator<Item = [u8; N]>) -> Result<ArrayRef> {
    let bytes: Vec<u8> = values.flatten().collect();
    let array = arrow_array::FixedSizeBinaryArray::try_new(
        N as i32,
        arrow_buffer::Buffer::from_vec(bytes),
        None,
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Arc::new(array))
}

/// The `N`-byte values of a fixed-size binary state column of aggregate `a`, none NULL.
fn fixed_values<const N: usize>(array: &ArrayRef, a: usize) -> Result<Vec<[u8; N]>> {
    let wrong = || mismatch(format!("a{a}_sum must be non-NULL {N}-byte integers"));
    let binary = array
        .as_fixed_size_binary_opt()
        .filter(|b| b.null_count() == 0 && b.value_length() as usize == N)
        .ok_or_else(wrong)?;
    (0..binary.len())
        .map(|i| binary.value(i).try_into().map_err(|_| wrong()))
        .collect()
}

/// The counts of aggregate `a`'s state column, none NULL.
fn counts(array: &ArrayRef, a: usize) -> Result<Vec<u64>> {
    array
        .as_primitive_opt::<UInt64Type>()
        .filter(|c| c.null_count() == 0)
        .map(|c| c.values().to_vec())
        .ok_or_else(|| mismatch(format!("a{a}_count must be non-NULL unsigned integers")))
}

/// The values of a key or extreme column (any type `schema` gives one) as scalars, floats by
/// their bits.
fn scalars(array: &ArrayRef, column: &str) -> Result<Vec<Scalar>> {
    fn each<T>(
        array: &ArrayRef,
        value: impl Fn(usize) -> T,
        scalar: impl Fn(T) -> Scalar,
    ) -> Vec<Scalar> {
        (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    Scalar::Null
                } else {
                    scalar(value(i))
                }
            })
            .collect()
    }
    let wrong = || mismatch(format!("{column} has type {}", array.data_type()));
    Ok(match array.data_type() {
        DataType::Int64 => {
            let v = array.as_primitive_opt::<Int64Type>().ok_or_else(wrong)?;
            each(array, |i| v.value(i), Scalar::Int)
        }
        DataType::Timestamp(_, _) => {
            let v = array
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(wrong)?;
            each(array, |i| v.value(i), Scalar::Int)
        }
        DataType::Int32 => {
            let v = array.as_primitive_opt::<Int32Type>().ok_or_else(wrong)?;
            each(array, |i| v.value(i) as i64, Scalar::Int)
        }
        DataType::Date32 => {
            let v = array.as_primitive_opt::<Date32Type>().ok_or_else(wrong)?;
            each(array, |i| v.value(i) as i64, Scalar::Int)
        }
        DataType::Float64 => {
            let v = array.as_primitive_opt::<Float64Type>().ok_or_else(wrong)?;
            each(array, |i| v.value(i), Scalar::Float)
        }
        DataType::Utf8 => {
            let v = array.as_string_opt::<i32>().ok_or_else(wrong)?;
            each(array, |i| v.value(i).to_owned(), Scalar::Str)
        }
        DataType::Boolean => {
            let v = array.as_boolean_opt().ok_or_else(wrong)?;
            each(array, |i| v.value(i), Scalar::Bool)
        }
        DataType::Decimal128(_, _) => {
            let v = array
                .as_primitive_opt::<Decimal128Type>()
                .ok_or_else(wrong)?;
            each(array, |i| v.value(i), Scalar::Decimal)
        }
        DataType::Binary => {
            let v = array.as_binary_opt::<i32>().ok_or_else(wrong)?;
            each(array, |i| v.value(i).to_vec(), Scalar::Bytes)
        }
        _ => return Err(wrong()),
    })
}

/// A decoded key in the form grouping gives it: floats canonical (-0.0 as 0.0, one NaN).
fn key_of(value: Scalar) -> KeyValue {
    match value {
        Scalar::Null => KeyValue::Null,
        Scalar::Int(v) => KeyValue::Int(v),
        Scalar::Float(v) => KeyValue::Float(if v == 0.0 {
            0.0f64.to_bits()
        } else if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        }),
        Scalar::Str(s) => KeyValue::Str(s),
        Scalar::Bool(b) => KeyValue::Bool(b),
        Scalar::Decimal(v) => KeyValue::Decimal(v),
        Scalar::Bytes(b) => KeyValue::Bytes(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::sql::Statement;
    use crate::table::manifest::ColumnDef;
    use arrow_array::types::Int32Type;

    fn columns() -> Vec<ColumnDef> {
        let column = |name: &str, column_type| ColumnDef {
            name: name.into(),
            column_type,
            nullable: true,
        };
        vec![
            column("i", ColumnType::Int64),
            column("n", ColumnType::Int32),
            column("f", ColumnType::Float64),
            column("s", ColumnType::Utf8),
            column("b", ColumnType::Boolean),
            column("ts", ColumnType::Timestamp),
            column("d", ColumnType::Date),
            column(
                "dec",
                ColumnType::Decimal {
                    precision: 38,
                    scale: 2,
                },
            ),
            column("bin", ColumnType::Binary),
        ]
    }

    fn plan_of(sql: &str) -> Plan {
        let Statement::Query(query) = crate::query::sql::parse(sql).unwrap() else {
            panic!("not a query: {sql}")
        };
        crate::query::plan::bind(&query, &columns()).unwrap()
    }

    const EVERY_STATE: &str = "SELECT i, f, s, DATE(ts), n, b, dec, bin, COUNT(*), SUM(f), \
        SUM(i), AVG(dec), MIN(f), MAX(s), MIN(ts), MAX(DATE(ts)), MIN(dec), MAX(b), MIN(bin), \
        MAX(d) FROM t GROUP BY i, f, s, DATE(ts), n, b, dec, bin";

    /// Bit-exact equality (`GroupRows`' own compares floats by value, so NaN differs).
    fn assert_same(a: &GroupRows, b: &GroupRows) {
        assert_eq!(a.len, b.len);
        assert_eq!(a.keys, b.keys);
        assert_eq!(a.states.len(), b.states.len());
        let bits = |s: &Scalar| match s {
            Scalar::Float(v) => format!("float {:x}", v.to_bits()),
            other => format!("{other:?}"),
        };
        for (x, y) in a.states.iter().zip(&b.states) {
            match (x, y) {
                (Accumulator::SumFloat(s, c), Accumulator::SumFloat(t, d)) => {
                    let s: Vec<u64> = s.iter().map(|v| v.to_bits()).collect();
                    let t: Vec<u64> = t.iter().map(|v| v.to_bits()).collect();
                    assert_eq!((s, c), (t, d));
                }
                (
                    Accumulator::Extreme { is_min, values },
                    Accumulator::Extreme {
                        is_min: other,
                        values: others,
                    },
                ) => {
                    assert_eq!(is_min, other);
                    let x: Vec<String> = values.iter().map(bits).collect();
                    let y: Vec<String> = others.iter().map(bits).collect();
                    assert_eq!(x, y);
                }
                (x, y) => assert_eq!(x, y),
            }
        }
    }

    /// Groups exercising every state kind and the hostile values of each type.
    fn every_state(plan: &Plan) -> GroupRows {
        let Mode::Groups { aggregates, .. } = &plan.mode else {
            panic!("not grouped")
        };
        let len = 6;
        let floats = [0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.5, 1e300];
        let keys = vec![
            vec![
                KeyValue::Int(i64::MIN),
                KeyValue::Int(i64::MAX),
                KeyValue::Null,
                KeyValue::Int(0),
                KeyValue::Int(-1),
                KeyValue::Int(1),
            ],
            floats
                .iter()
                .map(|v| KeyValue::Float(v.to_bits()))
                .chain([KeyValue::Null])
                .skip(1)
                .collect(),
            ["", "é☃", "a", "", "zz", "x"]
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if i == 3 {
                        KeyValue::Null
                    } else {
                        KeyValue::Str(s.to_string())
                    }
                })
                .collect(),
            vec![
                KeyValue::Int(i32::MIN as i64),
                KeyValue::Int(i32::MAX as i64),
                KeyValue::Null,
                KeyValue::Int(19_723),
                KeyValue::Int(-106_751_992),
                KeyValue::Int(0),
            ],
            vec![
                KeyValue::Int(i32::MIN as i64),
                KeyValue::Null,
                KeyValue::Int(i32::MAX as i64),
                KeyValue::Int(0),
                KeyValue::Int(1),
                KeyValue::Int(2),
            ],
            vec![
                KeyValue::Bool(true),
                KeyValue::Bool(false),
                KeyValue::Null,
                KeyValue::Bool(true),
                KeyValue::Bool(false),
                KeyValue::Null,
            ],
            vec![
                KeyValue::Decimal(10i128.pow(38) - 1),
                KeyValue::Decimal(-(10i128.pow(38) - 1)),
                KeyValue::Null,
                KeyValue::Decimal(0),
                KeyValue::Decimal(1),
                KeyValue::Decimal(-1),
            ],
            vec![
                KeyValue::Bytes(Vec::new()),
                KeyValue::Bytes(vec![0, 255]),
                KeyValue::Null,
                KeyValue::Bytes(vec![1]),
                KeyValue::Bytes(vec![2]),
                KeyValue::Bytes(vec![3]),
            ],
        ];
        let counts = vec![0, 1, u64::MAX, 7, 8, 9];
        let extremes = |values: Vec<Scalar>, a: usize| Accumulator::Extreme {
            is_min: aggregates[a].function == AggregateFunction::Min,
            values,
        };
        let float_extremes = vec![
            Scalar::Float(-0.0),
            Scalar::Float(f64::from_bits(f64::NAN.to_bits() | 7)),
            Scalar::Null,
            Scalar::Float(f64::INFINITY),
            Scalar::Float(f64::NEG_INFINITY),
            Scalar::Float(0.0),
        ];
        let ints = |values: [Option<i64>; 6]| -> Vec<Scalar> {
            values
                .iter()
                .map(|v| v.map_or(Scalar::Null, Scalar::Int))
                .collect()
        };
        let states = vec![
            Accumulator::Count(counts.clone()),
            Accumulator::SumFloat(
                vec![
                    -0.0,
                    f64::NAN,
                    -f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    0.1,
                ],
                counts.clone(),
            ),
            Accumulator::SumInt(
                vec![i128::MIN, i128::MAX, 0, -1, 1, i64::MAX as i128 * 3],
                counts.clone(),
            ),
            Accumulator::SumDecimal(
                vec![
                    i256::MIN,
                    i256::MAX,
                    i256::ZERO,
                    i256::MINUS_ONE,
                    i256::ONE,
                    i256::from_i128(i128::MAX),
                ],
                counts.clone(),
            ),
            extremes(float_extremes, 4),
            extremes(
                vec![
                    Scalar::Str(String::new()),
                    Scalar::Null,
                    Scalar::Str("é".into()),
                    Scalar::Str("a".into()),
                    Scalar::Str("b".into()),
                    Scalar::Str("c".into()),
                ],
                5,
            ),
            extremes(
                ints([
                    Some(i64::MIN),
                    Some(i64::MAX),
                    None,
                    Some(0),
                    Some(-1),
                    Some(1),
                ]),
                6,
            ),
            extremes(
                ints([
                    Some(i32::MIN as i64),
                    Some(i32::MAX as i64),
                    None,
                    Some(0),
                    Some(1),
                    Some(2),
                ]),
                7,
            ),
            extremes(
                vec![
                    Scalar::Decimal(10i128.pow(38) - 1),
                    Scalar::Decimal(-(10i128.pow(38) - 1)),
                    Scalar::Null,
                    Scalar::Decimal(0),
                    Scalar::Decimal(5),
                    Scalar::Decimal(-5),
                ],
                8,
            ),
            extremes(
                vec![
                    Scalar::Bool(false),
                    Scalar::Bool(true),
                    Scalar::Null,
                    Scalar::Bool(true),
                    Scalar::Bool(false),
                    Scalar::Null,
                ],
                9,
            ),
            extremes(
                vec![
                    Scalar::Bytes(vec![]),
                    Scalar::Bytes(vec![9; 40]),
                    Scalar::Null,
                    Scalar::Bytes(vec![0]),
                    Scalar::Bytes(vec![1]),
                    Scalar::Null,
                ],
                10,
            ),
            extremes(
                ints([
                    Some(i32::MIN as i64),
                    None,
                    Some(0),
                    Some(1),
                    Some(2),
                    Some(3),
                ]),
                11,
            ),
        ];
        assert_eq!(states.len(), aggregates.len());
        GroupRows::from_parts(keys, states, len)
    }

    #[test]
    fn groups_of_every_state_kind_round_trip_bit_for_bit() {
        let plan = plan_of(EVERY_STATE);
        let groups = every_state(&plan);
        let batch = encode_groups(&plan, &groups).unwrap();
        assert_eq!(batch.schema(), schema(&plan));
        let schema_ref = batch.schema();
        let names: Vec<&str> = schema_ref
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            &names[..12],
            &[
                "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "a0_count", "a1_sum", "a1_count",
                "a2_sum"
            ]
        );
        assert_eq!(
            batch
                .schema()
                .field_with_name("a3_sum")
                .unwrap()
                .data_type(),
            &DataType::FixedSizeBinary(32)
        );
        assert_same(&decode_groups(&plan, &batch).unwrap(), &groups);
        // No groups at all, and one group without GROUP BY.
        let empty = GroupRows::from_parts(
            groups.keys.iter().map(|_| Vec::new()).collect(),
            groups.states.iter().map(|s| s.gather(&[])).collect(),
            0,
        );
        let batch = encode_groups(&plan, &empty).unwrap();
        assert_eq!(batch.num_rows(), 0);
        assert_same(&decode_groups(&plan, &batch).unwrap(), &empty);
        let single = plan_of("SELECT COUNT(*), SUM(dec), MAX(f) FROM t");
        let Mode::Groups { aggregates, .. } = &single.mode else {
            panic!()
        };
        let states = [
            AccState::Count(3),
            AccState::SumDecimal {
                sum: i256::MAX,
                count: 2,
            },
            AccState::Extreme(Scalar::Float(-0.0)),
        ];
        let one = GroupRows::single(&states, aggregates);
        let batch = encode_groups(&single, &one).unwrap();
        assert_eq!((batch.num_columns(), batch.num_rows()), (4, 1));
        assert_same(&decode_groups(&single, &batch).unwrap(), &one);
    }

    #[test]
    fn float_keys_from_elsewhere_take_their_canonical_form() {
        let plan = plan_of("SELECT f, COUNT(*) FROM t GROUP BY f");
        let schema = schema(&plan);
        let keys = Float64Array::from(vec![Some(-0.0), Some(-f64::NAN), None, Some(2.5)]);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(keys),
                Arc::new(UInt64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let groups = decode_groups(&plan, &batch).unwrap();
        assert_eq!(
            groups.keys[0],
            vec![
                KeyValue::Float(0.0f64.to_bits()),
                KeyValue::Float(f64::NAN.to_bits()),
                KeyValue::Null,
                KeyValue::Float(2.5f64.to_bits()),
            ]
        );
    }

    #[test]
    fn rows_round_trip_with_hidden_sort_columns_and_dates() {
        let plan = plan_of("SELECT s, DATE(ts) FROM t ORDER BY f DESC");
        let strings: arrow_array::DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("é")].into_iter().collect();
        let days: ArrayRef = Arc::new(Date32Array::from(vec![Some(1), Some(-1), None]));
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![Some(-0.0), Some(f64::NAN), None]));
        let batch =
            encode_rows(&plan, vec![Arc::new(strings), days.clone(), floats.clone()]).unwrap();
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["v0", "v1", "v2"]);
        let columns = decode_rows(&plan, &batch).unwrap();
        assert_eq!(columns[0].data_type(), &DataType::Utf8);
        assert_eq!(columns[0].as_string::<i32>().value(2), "é");
        assert!(columns[0].is_null(1));
        assert_eq!(&columns[1], &days);
        assert_eq!(&columns[2], &floats);
    }

    /// `batch` with column `index` replaced by `column` (of whatever type).
    fn replaced(batch: &RecordBatch, index: usize, column: ArrayRef) -> RecordBatch {
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new(fields[index].name(), column.data_type().clone(), true);
        let mut columns = batch.columns().to_vec();
        columns[index] = column;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn hostile_batches_are_errors_that_say_what_differs() {
        let plan = plan_of("SELECT i, COUNT(*), SUM(i), AVG(f), MAX(s) FROM t GROUP BY i");
        let groups = GroupRows::from_parts(
            vec![vec![KeyValue::Int(1), KeyValue::Null]],
            vec![
                Accumulator::Count(vec![1, 2]),
                Accumulator::SumInt(vec![5, 6], vec![1, 2]),
                Accumulator::SumFloat(vec![0.5, 1.5], vec![1, 2]),
                Accumulator::Extreme {
                    is_min: false,
                    values: vec![Scalar::Str("x".into()), Scalar::Null],
                },
            ],
            2,
        );
        let good = encode_groups(&plan, &groups).unwrap();
        assert_same(&decode_groups(&plan, &good).unwrap(), &groups);
        let error = |batch: &RecordBatch| decode_groups(&plan, batch).unwrap_err().to_string();

        let fewer = good.project(&[0, 1, 2, 3, 4, 5]).unwrap();
        let message = error(&fewer);
        assert!(
            message.contains("6 columns") && message.contains("has 7"),
            "{message}"
        );

        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![1, 2]));
        let message = error(&replaced(&good, 0, narrow));
        assert!(
            message.contains("k0") && message.contains("Int32") && message.contains("Int64"),
            "{message}"
        );

        let short =
            arrow_array::FixedSizeBinaryArray::try_from_iter([[0u8; 8], [1; 8]].iter()).unwrap();
        let message = error(&replaced(&good, 2, Arc::new(short)));
        assert!(
            message.contains("a1_sum") && message.contains("FixedSizeBinary(8)"),
            "{message}"
        );

        let null_count: ArrayRef = Arc::new(UInt64Array::from(vec![Some(1), None]));
        let message = error(&replaced(&good, 1, null_count));
        assert!(
            message.contains("a0_count") && message.contains("NULL"),
            "{message}"
        );

        let null_sum: ArrayRef = Arc::new(Float64Array::from(vec![None, Some(1.0)]));
        let message = error(&replaced(&good, 4, null_sum));
        assert!(message.contains("a2_sum"), "{message}");

        // Without GROUP BY a fragment holds one group.
        let single = plan_of("SELECT COUNT(*) FROM t");
        let two = RecordBatch::try_new(
            schema(&single),
            vec![Arc::new(UInt64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let message = decode_groups(&single, &two).unwrap_err().to_string();
        assert!(message.contains("one group"), "{message}");

        // Rows of the wrong type, and groups given to a row query.
        let rows = plan_of("SELECT i, s FROM t");
        let batch = encode_rows(
            &rows,
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["a"])),
            ],
        )
        .unwrap();
        assert_eq!(decode_rows(&rows, &batch).unwrap().len(), 2);
        let binary: ArrayRef = Arc::new(BinaryArray::from(vec![&b"a"[..]]));
        let message = decode_rows(&rows, &replaced(&batch, 1, binary))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("v1") && message.contains("Binary"),
            "{message}"
        );
        assert!(decode_rows(&plan, &good).is_err());
        assert!(decode_groups(&rows, &batch).is_err());
    }
}
