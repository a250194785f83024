//! A table's *content digest*: a 64-bit checksum of its rows that does not depend on how they
//! are split into files, ordered, encoded or compressed, so replicas that flushed the same rows
//! into different files have the same digest (`rpc` anti-entropy compares them).
//!
//! Each row hashes to `mix(Σ column seed ⊕ value hash)` over its non-NULL values (a column's
//! seed is the hash of its name, so a column added later, NULL in older rows, changes no older
//! row's hash); the digest of a set of rows is the wrapping sum of their hashes. Sums add up: a
//! table's digest is the sum of its files' (`FileEntry::digest`, written with each file) and
//! its buffered chunks'. Value hashes are `value::partition_hash` (`arrays::value_hashes`):
//! floats' -0.0 and 0.0 are one value, as are all NaNs.

use crate::arrays::value_hashes;
use crate::error::Result;
use arrow_array::{Array, RecordBatch};

/// Set apart from a column's seed, so a row's hash is never just its values' sum.
const ROW_SALT: u64 = 0x7e55_e4a0_d16e_5701;

/// The digest of every row of `batch` (its columns named as the table's).
pub fn rows(batch: &RecordBatch) -> Result<u64> {
    let mut rows = vec![0u64; batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let seed = crate::value::hash_bytes(field.name().as_bytes());
        let hashes = value_hashes(column)?;
        match column.logical_nulls().filter(|n| n.null_count() > 0) {
            None => {
                for (row, hash) in rows.iter_mut().zip(hashes) {
                    *row = row.wrapping_add(crate::value::hash_int((hash ^ seed) as i64));
                }
            }
            Some(nulls) => {
                for (i, (row, hash)) in rows.iter_mut().zip(hashes).enumerate() {
                    if nulls.is_valid(i) {
                        *row = row.wrapping_add(crate::value::hash_int((hash ^ seed) as i64));
                    }
                }
            }
        }
    }
    Ok(rows.into_iter().fold(0u64, |digest, row| {
        digest.wrapping_add(crate::value::hash_int((row ^ ROW_SALT) as i64))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn batch(values: &[(Option<i64>, Option<f64>, Option<&str>)]) -> RecordBatch {
        let a: ArrayRef = Arc::new(Int64Array::from_iter(values.iter().map(|v| v.0)));
        let b: ArrayRef = Arc::new(Float64Array::from_iter(values.iter().map(|v| v.1)));
        let c: ArrayRef = Arc::new(StringArray::from_iter(values.iter().map(|v| v.2)));
        RecordBatch::try_from_iter([("a", a), ("b", b), ("c", c)]).unwrap()
    }

    /// The digest a naive evaluator gives: every row's non-NULL values by column name.
    fn naive(values: &[(Option<i64>, Option<f64>, Option<&str>)]) -> u64 {
        use crate::value::{partition_hash, Scalar};
        let seed = |name: &str| crate::value::hash_bytes(name.as_bytes());
        let value = |name: &str, scalar: Scalar| {
            crate::value::hash_int((partition_hash(&scalar) ^ seed(name)) as i64)
        };
        values.iter().fold(0u64, |digest, (a, b, c)| {
            let mut row = 0u64;
            if let Some(a) = a {
                row = row.wrapping_add(value("a", Scalar::Int(*a)));
            }
            if let Some(b) = b {
                row = row.wrapping_add(value("b", Scalar::Float(*b)));
            }
            if let Some(c) = c {
                row = row.wrapping_add(value("c", Scalar::Str((*c).to_owned())));
            }
            digest.wrapping_add(crate::value::hash_int((row ^ ROW_SALT) as i64))
        })
    }

    fn hostile_float() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(f64::NAN)),
            Just(Some(-0.0)),
            Just(Some(0.0)),
            Just(Some(f64::INFINITY)),
            Just(Some(f64::NEG_INFINITY)),
            any::<f64>().prop_map(Some),
        ]
    }

    fn rows_strategy() -> impl Strategy<Value = Vec<(Option<i64>, Option<f64>, Option<String>)>> {
        prop::collection::vec(
            (
                prop_oneof![
                    Just(None),
                    Just(Some(i64::MIN)),
                    Just(Some(i64::MAX)),
                    any::<i64>().prop_map(Some)
                ],
                hostile_float(),
                prop::option::of("[a-c]{0,3}"),
            ),
            0..40,
        )
    }

    proptest! {
        /// Any split into batches, in any order, sums to the naive digest of the rows.
        #[test]
        fn the_digest_is_the_naive_one_whatever_the_split_and_order(
            values in rows_strategy(), cut in 0usize..40, rotate in 0usize..40,
        ) {
            let owned: Vec<(Option<i64>, Option<f64>, Option<&str>)> =
                values.iter().map(|(a, b, c)| (*a, *b, c.as_deref())).collect();
            let expected = naive(&owned);
            let mut shuffled = owned.clone();
            if !shuffled.is_empty() {
                let by = rotate % shuffled.len();
                shuffled.rotate_left(by);
            }
            let cut = cut.min(shuffled.len());
            let (left, right) = shuffled.split_at(cut);
            let split = rows(&batch(left)).unwrap().wrapping_add(rows(&batch(right)).unwrap());
            prop_assert_eq!(split, expected);
        }
    }

    #[test]
    fn a_changed_value_a_moved_value_or_a_lost_row_changes_the_digest() {
        let base = [(Some(1), Some(1.5), Some("x")), (Some(2), None, Some("y"))];
        let digest = rows(&batch(&base)).unwrap();
        let changed = [(Some(1), Some(1.5), Some("x")), (Some(3), None, Some("y"))];
        let swapped = [(Some(2), Some(1.5), Some("x")), (Some(1), None, Some("y"))];
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
}
