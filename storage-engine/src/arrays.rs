//! Typed views of Arrow arrays the scan and the aggregation share: raw value slices, one row as a
//! scalar, validity as bitmap words, and the partition of every row of a partitioned table's key.

use crate::error::{Error, Result};
use crate::query::kernels::{words_for, Kernels};
use crate::query::plan::ValueExpr;
use crate::value::{hash_bytes, hash_float, hash_int, partition_index, Scalar, MICROS_PER_DAY};
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

/// The partition (`value::partition_of`) of every row of `array` among `partitions`: the same
/// number `partition_of` gives the scalar the planner binds for that row's value (an integer
/// of any width, a date or a timestamp as its raw integer, whatever the unit; a string as its
/// bytes), NULL in partition 0. Integers and strings take no allocation per row; a dictionary
/// hashes each of its values once. An unsupported type is an error naming it.
pub fn partition_rows(array: &ArrayRef, partitions: u32) -> Result<Vec<u32>> {
    use arrow_array::types::*;
    use arrow_schema::TimeUnit;
    let len = array.len();
    let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
    let each = |hash: &dyn Fn(usize) -> u64| -> Vec<u32> {
        (0..len)
            .map(|i| match &nulls {
                Some(n) if n.is_null(i) => 0,
                _ => partition_index(hash(i), partitions),
            })
            .collect()
    };
    fn raw<T>(array: &ArrayRef) -> &[T::Native]
    where
        T: arrow_array::ArrowPrimitiveType,
    {
        array.as_primitive::<T>().values()
    }
    Ok(match array.data_type() {
        DataType::Null => vec![0; len],
        DataType::Int64 => {
            let v = raw::<Int64Type>(array);
            each(&|i| hash_int(v[i]))
        }
        DataType::Int32 => {
            let v = raw::<Int32Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::Int16 => {
            let v = raw::<Int16Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::Int8 => {
            let v = raw::<Int8Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::UInt32 => {
            let v = raw::<UInt32Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::UInt16 => {
            let v = raw::<UInt16Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::UInt8 => {
            let v = raw::<UInt8Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::Date32 => {
            let v = raw::<Date32Type>(array);
            each(&|i| hash_int(v[i] as i64))
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => raw::<TimestampSecondType>(array),
                TimeUnit::Millisecond => raw::<TimestampMillisecondType>(array),
                TimeUnit::Microsecond => raw::<TimestampMicrosecondType>(array),
                TimeUnit::Nanosecond => raw::<TimestampNanosecondType>(array),
            };
            each(&|i| hash_int(v[i]))
        }
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            each(&|i| hash_bytes(strings.value(i).as_bytes()))
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            each(&|i| hash_bytes(strings.value(i).as_bytes()))
        }
        DataType::Utf8View => {
            let strings = array.as_string_view();
            each(&|i| hash_bytes(strings.value(i).as_bytes()))
        }
        DataType::Binary => {
            let bytes = array.as_binary::<i32>();
            each(&|i| hash_bytes(bytes.value(i)))
        }
        DataType::LargeBinary => {
            let bytes = array.as_binary::<i64>();
            each(&|i| hash_bytes(bytes.value(i)))
        }
        DataType::Boolean => {
            let booleans = array.as_boolean();
            each(&|i| hash_bytes(&[u8::from(booleans.value(i))]))
        }
        DataType::Float64 => {
            let v = raw::<Float64Type>(array);
            each(&|i| hash_float(v[i]))
        }
        DataType::Decimal128(_, _) => {
            let v = raw::<Decimal128Type>(array);
            each(&|i| hash_bytes(&v[i].to_le_bytes()))
        }
        DataType::Dictionary(_, _) => {
            // Every dictionary value's partition once, then each row's by its key. A row whose
            // key or value is NULL is in `nulls` (logical nulls), so partition 0.
            let Some(dictionary) = array.as_any_dictionary_opt() else {
                return Err(unsupported(array.data_type()));
            };
            let values = dictionary.values();
            if values.is_empty() {
                // No row can name a value: every row is NULL.
                return Ok(vec![0; len]);
            }
            let of_values = partition_rows(values, partitions)?;
            let keys = dictionary.normalized_keys();
            (0..len)
                .map(|i| match &nulls {
                    Some(n) if n.is_null(i) => 0,
                    _ => of_values[keys[i]],
                })
                .collect()
        }
        other => return Err(unsupported(other)),
    })
}

fn unsupported(data_type: &DataType) -> Error {
    Error::Import(format!(
        "cannot partition rows by a column of type {data_type}: a partition key is an integer, \
         date, timestamp or string column"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::partition_of;
    use arrow_array::types::Int32Type;
    use arrow_array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float64Array,
        Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray, NullArray, StringArray,
        StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
        TimestampNanosecondArray, TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array,
        UInt8Array,
    };
    use std::sync::Arc;

    /// Each row's partition must be `partition_of` of the scalar the planner binds for it.
    fn assert_agrees(array: ArrayRef, scalars: &[Scalar]) {
        for partitions in [1, 2, 3, 7, 16, 1000] {
            let rows = partition_rows(&array, partitions).unwrap();
            let expected: Vec<u32> = scalars
                .iter()
                .map(|s| partition_of(s, partitions))
                .collect();
            assert_eq!(rows, expected, "{} over {partitions}", array.data_type());
        }
    }

    #[test]
    fn row_partitions_agree_with_partition_of_for_every_key_type() {
        let wide = [
            Some(i64::MIN),
            Some(-1),
            None,
            Some(0),
            Some(7),
            Some(i64::MAX),
        ];
        let scalars = |values: &[Option<i64>]| -> Vec<Scalar> {
            values
                .iter()
                .map(|v| v.map_or(Scalar::Null, Scalar::Int))
                .collect()
        };
        assert_agrees(Arc::new(Int64Array::from(wide.to_vec())), &scalars(&wide));
        for unit in ["s", "ms", "us", "ns"] {
            let array: ArrayRef = match unit {
                "s" => Arc::new(TimestampSecondArray::from(wide.to_vec())),
                "ms" => Arc::new(TimestampMillisecondArray::from(wide.to_vec())),
                "us" => {
                    Arc::new(TimestampMicrosecondArray::from(wide.to_vec()).with_timezone("UTC"))
                }
                _ => Arc::new(TimestampNanosecondArray::from(wide.to_vec())),
            };
            assert_agrees(array, &scalars(&wide));
        }
        let narrow = [
            Some(i32::MIN as i64),
            None,
            Some(-5),
            Some(0),
            Some(i32::MAX as i64),
        ];
        let as_i32 = || narrow.iter().map(|v| v.map(|v| v as i32));
        assert_agrees(
            Arc::new(as_i32().collect::<Int32Array>()),
            &scalars(&narrow),
        );
        assert_agrees(
            Arc::new(as_i32().collect::<Date32Array>()),
            &scalars(&narrow),
        );
        let small = [Some(-128), None, Some(0), Some(127)];
        assert_agrees(
            Arc::new(
                small
                    .iter()
                    .map(|v| v.map(|v| v as i8))
                    .collect::<Int8Array>(),
            ),
            &scalars(&small),
        );
        assert_agrees(
            Arc::new(
                small
                    .iter()
                    .map(|v| v.map(|v| v as i16 * 200))
                    .collect::<Int16Array>(),
            ),
            &scalars(&small.map(|v| v.map(|v| v * 200))),
        );
        let unsigned = [Some(0), None, Some(255)];
        assert_agrees(
            Arc::new(
                unsigned
                    .iter()
                    .map(|v| v.map(|v| v as u8))
                    .collect::<UInt8Array>(),
            ),
            &scalars(&unsigned),
        );
        assert_agrees(
            Arc::new(
                unsigned
                    .iter()
                    .map(|v| v.map(|v| v as u16 * 257))
                    .collect::<UInt16Array>(),
            ),
            &scalars(&unsigned.map(|v| v.map(|v| v * 257))),
        );
        let large = [Some(0), None, Some(u32::MAX as i64)];
        assert_agrees(
            Arc::new(
                large
                    .iter()
                    .map(|v| v.map(|v| v as u32))
                    .collect::<UInt32Array>(),
            ),
            &scalars(&large),
        );
        // Equal integers hash equally whatever their width.
        let as_64 = partition_rows(&(Arc::new(Int64Array::from(vec![-5, 9])) as ArrayRef), 13);
        let as_32 = partition_rows(&(Arc::new(Int32Array::from(vec![-5, 9])) as ArrayRef), 13);
        assert_eq!(as_64.unwrap(), as_32.unwrap());
    }

    #[test]
    fn string_partitions_agree_in_every_encoding() {
        let texts = [Some(""), Some("a"), None, Some("é☃𝄞 non-ASCII"), Some("a")];
        let scalars: Vec<Scalar> = texts
            .iter()
            .map(|t| t.map_or(Scalar::Null, |t| Scalar::Str(t.to_owned())))
            .collect();
        assert_agrees(Arc::new(StringArray::from(texts.to_vec())), &scalars);
        assert_agrees(Arc::new(LargeStringArray::from(texts.to_vec())), &scalars);
        assert_agrees(Arc::new(StringViewArray::from(texts.to_vec())), &scalars);
        let dictionary: DictionaryArray<Int32Type> = texts.iter().copied().collect();
        assert_agrees(Arc::new(dictionary), &scalars);
        // A NULL among the dictionary's values, and a dictionary of no values.
        let keys = Int32Array::from(vec![Some(0), Some(1), None]);
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        let dictionary = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        assert_agrees(
            Arc::new(dictionary),
            &[Scalar::Str("x".into()), Scalar::Null, Scalar::Null],
        );
        let keys = Int32Array::from(vec![None, None]);
        let values: ArrayRef = Arc::new(StringArray::from(Vec::<&str>::new()));
        let empty = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        assert_eq!(
            partition_rows(&(Arc::new(empty) as ArrayRef), 4).unwrap(),
            vec![0, 0]
        );
        let nulls: ArrayRef = Arc::new(NullArray::new(3));
        assert_eq!(partition_rows(&nulls, 4).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn other_scalar_kinds_agree_and_unsupported_types_are_named() {
        let floats = [
            Some(-0.0),
            Some(0.0),
            Some(f64::NAN),
            Some(-f64::NAN),
            None,
            Some(1.5),
        ];
        let scalars: Vec<Scalar> = floats
            .iter()
            .map(|v| v.map_or(Scalar::Null, Scalar::Float))
            .collect();
        assert_agrees(Arc::new(Float64Array::from(floats.to_vec())), &scalars);
        assert_agrees(
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            &[Scalar::Bool(true), Scalar::Null, Scalar::Bool(false)],
        );
        assert_agrees(
            Arc::new(
                Decimal128Array::from(vec![Some(i128::MIN), None, Some(12_345)])
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            ),
            &[
                Scalar::Decimal(i128::MIN),
                Scalar::Null,
                Scalar::Decimal(12_345),
            ],
        );
        assert_agrees(
            Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), None])),
            &[Scalar::Bytes(vec![0, 255]), Scalar::Null],
        );
        let unsupported: ArrayRef = Arc::new(UInt64Array::from(vec![1u64]));
        let error = partition_rows(&unsupported, 4).unwrap_err().to_string();
        assert!(error.contains("UInt64"), "{error}");
    }
}
