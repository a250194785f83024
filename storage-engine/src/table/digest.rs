//! A table's *content digest*: a 64-bit checksum of its rows that does not depend on how they
//! are split into files, ordered, encoded or compressed, so replicas that flushed the same rows
//! into different files have the same digest (`rpc` anti-entropy compares them).
//!
//! A row hashes to `mix(Σ hash(column, value))` over its non-NULL values, and a set of rows to
//! the wrapping sum of its rows' hashes. A value's hash is seeded by its column's name, so a
//! column added later (NULL in older rows) changes no older row's hash. Sums add up: a table's
//! digest is the sum of its files' (`FileEntry::digest`, written with each file) and of its
//! buffered chunks'. Values hash by what they are, not how they are stored: integers of every
//! width, dates and timestamps by their integer, floats by their bits (-0.0 as 0.0, every NaN
//! as one), strings and bytes by XXH3-64, a dictionary by its values. The digest is stored, so
//! this never changes.

use crate::error::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, TimeUnit};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Set apart from a column's seed, so a row's hash is never just its values' sum.
const ROW_SALT: u64 = 0x7e55_e4a0_d16e_5701;

/// splitmix64's finaliser.
fn mix(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A column's seed: the hash of its name.
pub fn column_seed(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), ROW_SALT)
}

/// The hash of an integer value (any width, a date, a timestamp) in the column of `seed`.
pub fn hash_int(seed: u64, value: i64) -> u64 {
    mix(seed ^ value as u64)
}

/// The hash of a float value in the column of `seed`.
pub fn hash_float(seed: u64, value: f64) -> u64 {
    let canonical = if value == 0.0 {
        0.0
    } else if value.is_nan() {
        f64::NAN
    } else {
        value
    };
    mix(seed ^ canonical.to_bits() ^ 0x5bd1_e995)
}

/// The hash of a string's or a byte string's bytes in the column of `seed`.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(bytes, seed)
}

/// The hash of a boolean in the column of `seed`.
pub fn hash_bool(seed: u64, value: bool) -> u64 {
    mix(seed ^ (0xb001 + u64::from(value)))
}

/// The hash of a DECIMAL's unscaled value in the column of `seed`.
pub fn hash_decimal(seed: u64, value: i128) -> u64 {
    mix(mix(seed ^ value as u64) ^ (value >> 64) as u64)
}

/// The hash of a row from its values' hashes.
pub fn row_hash(values_sum: u64) -> u64 {
    mix(values_sum ^ ROW_SALT)
}

/// The digest of every row of `batch` (its columns named as the table's).
pub fn rows(batch: &RecordBatch) -> Result<u64> {
    let mut rows = vec![0u64; batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        add_column(&mut rows, column_seed(field.name()), column)?;
    }
    Ok(rows
        .into_iter()
        .fold(0u64, |digest, row| digest.wrapping_add(row_hash(row))))
}

/// Adds `hash(i)` to the sum of every row `i` whose value is not NULL.
fn add_each(rows: &mut [u64], nulls: Option<&NullBuffer>, hash: impl Fn(usize) -> u64) {
    match nulls {
        None => {
            for (i, row) in rows.iter_mut().enumerate() {
                *row = row.wrapping_add(hash(i));
            }
        }
        Some(nulls) => {
            for (i, row) in rows.iter_mut().enumerate() {
                if nulls.is_valid(i) {
                    *row = row.wrapping_add(hash(i));
                }
            }
        }
    }
}

/// Adds each non-NULL value's hash to its row's sum.
fn add_column(rows: &mut [u64], seed: u64, array: &ArrayRef) -> Result<()> {
    let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
    let nulls = nulls.as_ref();
    fn raw<T: arrow_array::ArrowPrimitiveType>(array: &ArrayRef) -> &[T::Native] {
        array.as_primitive::<T>().values()
    }
    match array.data_type() {
        DataType::Null => {}
        DataType::Int64 => {
            let v = raw::<Int64Type>(array);
            add_each(rows, nulls, |i| hash_int(seed, v[i]))
        }
        DataType::Int32 => {
            let v = raw::<Int32Type>(array);
            add_each(rows, nulls, |i| hash_int(seed, v[i] as i64))
        }
        DataType::Int16 => {
            let v = raw::<Int16Type>(array);
            add_each(rows, nulls, |i| hash_int(seed, v[i] as i64))
        }
        DataType::Int8 => {
            let v = raw::<Int8Type>(array);
            add_each(rows, nulls, |i| hash_int(seed, v[i] as i64))
        }
        DataType::Date32 => {
            let v = raw::<Date32Type>(array);
            add_each(rows, nulls, |i| hash_int(seed, v[i] as i64))
        }
        DataType::Timestamp(unit, _) => {
            let v = match unit {
                TimeUnit::Second => raw::<TimestampSecondType>(array),
                TimeUnit::Millisecond => raw::<TimestampMillisecondType>(array),
                TimeUnit::Microsecond => raw::<TimestampMicrosecondType>(array),
                TimeUnit::Nanosecond => raw::<TimestampNanosecondType>(array),
            };
            add_each(rows, nulls, |i| hash_int(seed, v[i]))
        }
        DataType::Float64 => {
            let v = raw::<Float64Type>(array);
            add_each(rows, nulls, |i| hash_float(seed, v[i]))
        }
        DataType::Decimal128(_, _) => {
            let v = raw::<Decimal128Type>(array);
            add_each(rows, nulls, |i| hash_decimal(seed, v[i]))
        }
        DataType::Boolean => {
            let v = array.as_boolean();
            add_each(rows, nulls, |i| hash_bool(seed, v.value(i)))
        }
        DataType::Utf8 => {
            let v = array.as_string::<i32>();
            add_each(rows, nulls, |i| hash_bytes(seed, v.value(i).as_bytes()))
        }
        DataType::LargeUtf8 => {
            let v = array.as_string::<i64>();
            add_each(rows, nulls, |i| hash_bytes(seed, v.value(i).as_bytes()))
        }
        DataType::Utf8View => {
            let v = array.as_string_view();
            add_each(rows, nulls, |i| hash_bytes(seed, v.value(i).as_bytes()))
        }
        DataType::Binary => {
            let v = array.as_binary::<i32>();
            add_each(rows, nulls, |i| hash_bytes(seed, v.value(i)))
        }
        DataType::LargeBinary => {
            let v = array.as_binary::<i64>();
            add_each(rows, nulls, |i| hash_bytes(seed, v.value(i)))
        }
        DataType::Dictionary(_, _) => {
            // Each dictionary value hashed once, then every row by its key (a row whose key or
            // value is NULL is in the logical nulls).
            let dictionary = array
                .as_any_dictionary_opt()
                .ok_or_else(|| unsupported(array.data_type()))?;
            let values = dictionary.values();
            let mut of_values = vec![0u64; values.len()];
            add_column(&mut of_values, seed, values)?;
            let keys = dictionary.normalized_keys();
            add_each(rows, nulls, |i| {
                of_values.get(keys[i]).copied().unwrap_or(0)
            })
        }
        other => return Err(unsupported(other)),
    }
    Ok(())
}

fn unsupported(data_type: &DataType) -> Error {
    Error::Internal(format!(
        "no content digest for a column of type {data_type}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{DictionaryArray, Float64Array, Int32Array, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    type Row = (Option<i64>, Option<f64>, Option<String>);

    fn batch(values: &[Row]) -> RecordBatch {
        let a: ArrayRef = Arc::new(Int64Array::from_iter(values.iter().map(|v| v.0)));
        let b: ArrayRef = Arc::new(Float64Array::from_iter(values.iter().map(|v| v.1)));
        let c: ArrayRef = Arc::new(StringArray::from_iter(values.iter().map(|v| v.2.clone())));
        RecordBatch::try_from_iter([("a", a), ("b", b), ("c", c)]).unwrap()
    }

    /// Row by row, value by value, as the module comment says.
    fn naive(values: &[Row]) -> u64 {
        let (a, b, c) = (column_seed("a"), column_seed("b"), column_seed("c"));
        values.iter().fold(0u64, |digest, row| {
            let mut sum = 0u64;
            if let Some(v) = row.0 {
                sum = sum.wrapping_add(hash_int(a, v));
            }
            if let Some(v) = row.1 {
                sum = sum.wrapping_add(hash_float(b, v));
            }
            if let Some(v) = &row.2 {
                sum = sum.wrapping_add(hash_bytes(c, v.as_bytes()));
            }
            digest.wrapping_add(row_hash(sum))
        })
    }

    fn rows_strategy() -> impl Strategy<Value = Vec<Row>> {
        let int = prop_oneof![
            Just(None),
            Just(Some(i64::MIN)),
            Just(Some(i64::MAX)),
            any::<i64>().prop_map(Some)
        ];
        let float = prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(-0.0)),
            Just(Some(0.0)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            any::<f64>().prop_map(Some),
        ];
        prop::collection::vec((int, float, prop::option::of("[a-c]{0,3}")), 0..40)
    }

    proptest! {
        /// Any split into batches, in any order, sums to the naive digest of the rows.
        #[test]
        fn the_digest_is_the_naive_one_whatever_the_split_and_order(
            values in rows_strategy(), cut in 0usize..40, rotate in 0usize..40,
        ) {
            let expected = naive(&values);
            let mut shuffled = values.clone();
            if !shuffled.is_empty() {
                let by = rotate % shuffled.len();
                shuffled.rotate_left(by);
            }
            let (left, right) = shuffled.split_at(cut.min(shuffled.len()));
            let split = rows(&batch(left)).unwrap().wrapping_add(rows(&batch(right)).unwrap());
            prop_assert_eq!(split, expected);
        }
    }

    #[test]
    fn a_changed_value_a_moved_value_or_a_lost_row_changes_the_digest() {
        let row = |a: i64, b: Option<f64>, c: &str| (Some(a), b, Some(c.to_owned()));
        let base = [row(1, Some(1.5), "x"), row(2, None, "y")];
        let digest = rows(&batch(&base)).unwrap();
        let changed = [row(1, Some(1.5), "x"), row(3, None, "y")];
        let swapped = [row(2, Some(1.5), "x"), row(1, None, "y")];
        for other in [&changed[..], &swapped[..], &base[..1]] {
            assert_ne!(rows(&batch(other)).unwrap(), digest);
        }
        // A column of NULLs (a column added later) changes nothing.
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let none: ArrayRef = Arc::new(Int64Array::from(vec![None, None]));
        let narrow = RecordBatch::try_from_iter([("a", a.clone())]).unwrap();
        let wide = RecordBatch::try_from_iter([("a", a), ("later", none)]).unwrap();
        assert_eq!(rows(&narrow).unwrap(), rows(&wide).unwrap());
    }

    #[test]
    fn a_dictionary_hashes_as_its_values_and_an_int32_as_its_integer() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("y")]));
        let keys = Int32Array::from(vec![Some(1), None, Some(0)]);
        let values: ArrayRef = Arc::new(StringArray::from(vec!["y", "x"]));
        let dictionary: ArrayRef = Arc::new(DictionaryArray::try_new(keys, values).unwrap());
        let of = |array: ArrayRef| rows(&RecordBatch::try_from_iter([("s", array)]).unwrap());
        assert_eq!(of(plain).unwrap(), of(dictionary).unwrap());
        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![7, -1]));
        let wide: ArrayRef = Arc::new(Int64Array::from(vec![7, -1]));
        assert_eq!(of(narrow).unwrap(), of(wide).unwrap());
    }
}
