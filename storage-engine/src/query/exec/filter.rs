//! Evaluating a WHERE tree into selection bitmaps with the SIMD kernels; strings by one test per
//! dictionary entry, then a code lookup.

use crate::arrays::{i32_values, i64_values, validity_words};
use crate::error::{Error, Result};
use crate::query::kernels::scalar::holds;
use crate::query::kernels::{words_for, CmpOp, Kernels};
use crate::query::plan::{Filter, Test};
use crate::query::prune::{self, Truth};
use crate::table::stats::ColumnStats;
use crate::value::Scalar;
use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int32Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

/// Evaluates a filter on `len` rows; `column(c)` gives column c's slice.
pub fn evaluate(
    filter: &Filter,
    column: &dyn Fn(usize) -> Result<ArrayRef>,
    len: usize,
    kernels: &Kernels,
) -> Result<Vec<u64>> {
    Ok(match filter {
        Filter::And(parts) | Filter::Or(parts) => {
            let is_and = matches!(filter, Filter::And(_));
            let mut out: Option<Vec<u64>> = None;
            for part in parts {
                let mask = evaluate(part, column, len, kernels)?;
                match &mut out {
                    None => out = Some(mask),
                    Some(acc) if is_and => kernels.and(acc, &mask),
                    Some(acc) => kernels.or(acc, &mask),
                }
            }
            out.unwrap_or_else(|| {
                let mut all = vec![0u64; words_for(len)];
                if is_and {
                    kernels.not(&mut all, len);
                }
                all
            })
        }
        Filter::Unknown => vec![0u64; words_for(len)],
        Filter::Leaf { column: c, test } => evaluate_test(&column(*c)?, test, len, kernels)?,
    })
}

pub(super) fn evaluate_test(
    array: &ArrayRef,
    test: &Test,
    len: usize,
    kernels: &Kernels,
) -> Result<Vec<u64>> {
    let mut out = vec![0u64; words_for(len)];
    let validity = validity_words(array.as_ref());
    let validity = validity.as_deref();
    if let Test::IsNull { negated } = test {
        if *negated {
            kernels.is_not_null(validity, len, &mut out);
        } else {
            kernels.is_null(validity, len, &mut out);
        }
        return Ok(out);
    }
    if let Test::In {
        negated: true,
        list_has_null: true,
        ..
    } = test
    {
        return Ok(out);
    }
    match array.data_type() {
        DataType::Int64 | DataType::Timestamp(_, _) => {
            let values = i64_values(array).unwrap_or(&[]);
            match test {
                Test::Compare {
                    op,
                    value: Scalar::Int(v),
                } => kernels.cmp_i64(values, *op, *v, validity, &mut out),
                Test::Between {
                    low: Scalar::Int(l),
                    high: Scalar::Int(h),
                } => kernels.between_i64(values, *l, *h, validity, &mut out),
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let set: Vec<i64> = list
                        .iter()
                        .filter_map(|s| {
                            if let Scalar::Int(v) = s {
                                Some(*v)
                            } else {
                                None
                            }
                        })
                        .collect();
                    in_list(kernels, &mut out, validity, len, *negated, |o| {
                        kernels.in_i64(values, &set, validity, o)
                    });
                }
                _ => return Err(Error::Internal(format!("test {test:?} on an int64 column"))),
            }
        }
        DataType::Int32 | DataType::Date32 => {
            let values = i32_values(array).unwrap_or(&[]);
            match test {
                Test::Compare {
                    op,
                    value: Scalar::Int(v),
                } => match i32::try_from(*v) {
                    Ok(v) => kernels.cmp_i32(values, *op, v, validity, &mut out),
                    Err(_) => {
                        // Every int32 lies on the same side of an out-of-range constant, so the
                        // outcome is the same for all non-NULL rows: that of 0 against it.
                        if holds(0, *op, *v) {
                            kernels.is_not_null(validity, len, &mut out);
                        }
                    }
                },
                Test::Between {
                    low: Scalar::Int(l),
                    high: Scalar::Int(h),
                } => {
                    let low = (*l).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                    let high = (*h).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                    if l <= h && *l <= i32::MAX as i64 && *h >= i32::MIN as i64 {
                        kernels.between_i32(values, low, high, validity, &mut out);
                    }
                }
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let set: Vec<i32> = list
                        .iter()
                        .filter_map(|s| {
                            if let Scalar::Int(v) = s {
                                i32::try_from(*v).ok()
                            } else {
                                None
                            }
                        })
                        .collect();
                    in_list(kernels, &mut out, validity, len, *negated, |o| {
                        kernels.in_i32(values, &set, validity, o)
                    });
                }
                _ => return Err(Error::Internal(format!("test {test:?} on an int32 column"))),
            }
        }
        DataType::Float64 => {
            let values = array.as_primitive::<Float64Type>().values();
            let float = |s: &Scalar| match s {
                Scalar::Float(v) => Some(*v),
                Scalar::Int(v) => Some(*v as f64),
                _ => None,
            };
            match test {
                Test::Compare { op, value } => {
                    let v =
                        float(value).ok_or_else(|| Error::Internal("non-float constant".into()))?;
                    kernels.cmp_f64(values, *op, v, validity, &mut out)
                }
                Test::Between { low, high } => {
                    // A NaN bound is a value (PostgreSQL's order), not "no bound": a missing one
                    // is a planner bug.
                    let missing = || Error::Internal("non-float BETWEEN bound".into());
                    let (l, h) = (
                        float(low).ok_or_else(missing)?,
                        float(high).ok_or_else(missing)?,
                    );
                    kernels.between_f64(values, l, h, validity, &mut out)
                }
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let set: Vec<f64> = list.iter().filter_map(float).collect();
                    in_list(kernels, &mut out, validity, len, *negated, |o| {
                        kernels.in_f64(values, &set, validity, o)
                    });
                }
                _ => {
                    return Err(Error::Internal(format!(
                        "test {test:?} on a float64 column"
                    )))
                }
            }
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_dictionary::<Int32Type>();
            let entries = dictionary.values().as_string::<i32>();
            let mut dictionary_mask = vec![0u64; words_for(entries.len())];
            for entry in 0..entries.len() {
                if entries.is_valid(entry) && test_str(entries.value(entry), test) {
                    dictionary_mask[entry / 64] |= 1 << (entry % 64);
                }
            }
            let key_validity = dictionary
                .keys()
                .nulls()
                .map(|_| validity_words(dictionary.keys()))
                .unwrap_or(None);
            kernels.select_codes(
                dictionary.keys().values(),
                &dictionary_mask,
                entries.len(),
                key_validity.as_deref(),
                &mut out,
            );
        }
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            for row in 0..len {
                if strings.is_valid(row) && test_str(strings.value(row), test) {
                    out[row / 64] |= 1 << (row % 64);
                }
            }
        }
        DataType::Decimal128(_, _) => {
            let values = array.as_primitive::<Decimal128Type>().values();
            let decimal = |s: &Scalar| match s {
                Scalar::Decimal(v) => Ok(*v),
                _ => Err(Error::Internal(format!(
                    "test {test:?} on a decimal column"
                ))),
            };
            let valid = |row: usize| validity.is_none_or(|v| v[row / 64] >> (row % 64) & 1 == 1);
            let mut select = |keep: &dyn Fn(i128) -> bool| {
                for (row, &value) in values.iter().enumerate().take(len) {
                    if valid(row) && keep(value) {
                        out[row / 64] |= 1 << (row % 64);
                    }
                }
            };
            match test {
                Test::Compare { op, value } => {
                    let constant = decimal(value)?;
                    select(&|v| holds(v, *op, constant));
                }
                Test::Between { low, high } => {
                    let (low, high) = (decimal(low)?, decimal(high)?);
                    select(&|v| low <= v && v <= high);
                }
                Test::In {
                    values: list,
                    negated,
                    ..
                } => {
                    let mut set = list.iter().map(decimal).collect::<Result<Vec<i128>>>()?;
                    set.sort_unstable();
                    let negated = *negated;
                    select(&|v| set.binary_search(&v).is_ok() != negated);
                }
                _ => {
                    return Err(Error::Internal(format!(
                        "test {test:?} on a decimal column"
                    )))
                }
            }
        }
        DataType::Binary => {
            let bytes = array.as_binary::<i32>();
            for row in 0..len {
                if bytes.is_valid(row)
                    && test_scalar(&Scalar::Bytes(bytes.value(row).to_vec()), test)
                {
                    out[row / 64] |= 1 << (row % 64);
                }
            }
        }
        DataType::Boolean => {
            let booleans = array.as_boolean();
            for row in 0..len {
                if booleans.is_valid(row) && test_scalar(&Scalar::Bool(booleans.value(row)), test) {
                    out[row / 64] |= 1 << (row % 64);
                }
            }
        }
        other => {
            return Err(Error::Internal(format!(
                "filter on unsupported type {other}"
            )))
        }
    }
    Ok(out)
}

pub(super) fn in_list(
    kernels: &Kernels,
    out: &mut [u64],
    validity: Option<&[u64]>,
    len: usize,
    negated: bool,
    fill: impl FnOnce(&mut [u64]),
) {
    fill(out);
    if negated {
        kernels.not(out, len);
        if let Some(validity) = validity {
            kernels.and(out, validity);
        }
    }
}

/// Whether an ordering satisfies `op` (compared against `Equal`).
pub(super) fn ordering_holds(order: std::cmp::Ordering, op: CmpOp) -> bool {
    holds(order, op, std::cmp::Ordering::Equal)
}

/// A test on one non-NULL scalar (the per-row path for booleans).
pub(super) fn test_scalar(value: &Scalar, test: &Test) -> bool {
    match test {
        Test::Compare {
            op,
            value: constant,
        } => ordering_holds(value.total_cmp(constant), *op),
        Test::Between { low, high } => {
            value.total_cmp(low).is_ge() && value.total_cmp(high).is_le()
        }
        Test::In {
            values,
            negated,
            list_has_null,
        } => {
            let found = values.iter().any(|v| v.total_cmp(value).is_eq());
            if *negated {
                !found && !list_has_null
            } else {
                found
            }
        }
        Test::IsNull { negated } => *negated,
        Test::Like { .. } => false,
    }
}

/// A test on one non-NULL string.
pub(super) fn test_str(text: &str, test: &Test) -> bool {
    match test {
        Test::Like {
            pattern,
            is_prefix,
            negated,
        } => {
            let matches = if *is_prefix {
                text.starts_with(pattern.as_str())
            } else {
                text == pattern
            };
            matches != *negated
        }
        Test::Compare {
            op,
            value: Scalar::Str(constant),
        } => ordering_holds(text.as_bytes().cmp(constant.as_bytes()), *op),
        Test::Between {
            low: Scalar::Str(low),
            high: Scalar::Str(high),
        } => text.as_bytes() >= low.as_bytes() && text.as_bytes() <= high.as_bytes(),
        Test::In {
            values,
            negated,
            list_has_null,
        } => {
            let found = values
                .iter()
                .any(|v| matches!(v, Scalar::Str(s) if s == text));
            if *negated {
                !found && !list_has_null
            } else {
                found
            }
        }
        _ => false,
    }
}

/// Statistics helper for tests and EXPLAIN: the file-level truth of a filter.
pub fn file_truth(filter: Option<&Filter>, file_stats: &[ColumnStats]) -> Truth {
    match filter {
        None => Truth::Always,
        Some(filter) => prune::classify(filter, &|c| file_stats.get(c).cloned()),
    }
}
