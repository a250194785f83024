//! Typed views of Arrow arrays the scan and the aggregation share: raw value slices, one row as a
//! scalar, validity as bitmap words.

use crate::query::kernels::{words_for, Kernels};
use crate::query::plan::ValueExpr;
use crate::value::{Scalar, MICROS_PER_DAY};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

pub fn i64_values(array: &ArrayRef) -> Option<&[i64]> {
    match array.data_type() {
        DataType::Int64 => Some(array.as_primitive::<Int64Type>().values()),
        DataType::Timestamp(_, _) => {
            Some(array.as_primitive::<TimestampMicrosecondType>().values())
        }
        _ => None,
    }
}

pub fn i32_values(array: &ArrayRef) -> Option<&[i32]> {
    match array.data_type() {
        DataType::Int32 => Some(array.as_primitive::<Int32Type>().values()),
        DataType::Date32 => Some(array.as_primitive::<Date32Type>().values()),
        _ => None,
    }
}

/// The value of row `row` as a scalar (for MIN/MAX and per-row paths).
pub fn scalar_at(value: ValueExpr, array: &ArrayRef, row: usize) -> Scalar {
    if array.is_null(row) {
        return Scalar::Null;
    }
    match (value, array.data_type()) {
        (ValueExpr::Date(_), DataType::Timestamp(_, _)) => Scalar::Int(
            i64_values(array)
                .map_or(0, |v| v[row])
                .div_euclid(MICROS_PER_DAY),
        ),
        (_, DataType::Int64 | DataType::Timestamp(_, _)) => {
            Scalar::Int(i64_values(array).map_or(0, |v| v[row]))
        }
        (_, DataType::Int32 | DataType::Date32) => {
            Scalar::Int(i32_values(array).map_or(0, |v| v[row]) as i64)
        }
        (_, DataType::Float64) => Scalar::Float(array.as_primitive::<Float64Type>().value(row)),
        (_, DataType::Boolean) => Scalar::Bool(array.as_boolean().value(row)),
        (_, DataType::Decimal128(_, _)) => {
            Scalar::Decimal(array.as_primitive::<Decimal128Type>().value(row))
        }
        (_, DataType::Binary) => Scalar::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        (_, DataType::Utf8) => Scalar::Str(array.as_string::<i32>().value(row).to_owned()),
        (_, DataType::Dictionary(_, _)) => {
            let dictionary = array.as_dictionary::<Int32Type>();
            let key = dictionary.keys().value(row) as usize;
            let values = dictionary.values().as_string::<i32>();
            if key < values.len() && values.is_valid(key) {
                Scalar::Str(values.value(key).to_owned())
            } else {
                Scalar::Null
            }
        }
        _ => Scalar::Null,
    }
}

/// Validity of `array` as bitmap words aligned to its first row, or None when it has no NULLs.
pub fn validity_words(array: &dyn Array) -> Option<Vec<u64>> {
    let nulls = array.logical_nulls()?;
    if nulls.null_count() == 0 {
        return None;
    }
    let chunks = nulls.inner().bit_chunks();
    let mut words: Vec<u64> = chunks.iter().collect();
    if chunks.remainder_len() > 0 {
        words.push(chunks.remainder_bits());
    }
    Some(words)
}

/// `mask AND validity(array)`, or None when that equals `mask` (no NULLs).
pub fn combine_with_validity(
    kernels: &Kernels,
    mask: Option<&[u64]>,
    array: &dyn Array,
    len: usize,
) -> Option<Vec<u64>> {
    let mut validity = validity_words(array)?;
    validity.resize(words_for(len), 0);
    if let Some(mask) = mask {
        kernels.and(&mut validity, mask);
    }
    Some(validity)
}
