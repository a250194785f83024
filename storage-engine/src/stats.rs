//! Min/max/null-count statistics as the engine sees them: converted from Parquet row-group
//! statistics and page indexes into `Scalar` bounds of a column type. Bounds may be inexact
//! (Parquet truncates long strings) but are always valid lower/upper bounds.

use crate::value::{ColumnType, Scalar};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};

/// Statistics of one column over a set of rows (a file, a row group or a page).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    /// Lower bound of the non-NULL values; `Null` when unknown or when every value is NULL.
    pub min: Scalar,
    /// Upper bound of the non-NULL values; `Null` when unknown or when every value is NULL.
    pub max: Scalar,
    /// Number of NULLs, when known.
    pub null_count: Option<u64>,
    /// Number of rows the statistics cover.
    pub rows: u64,
}

impl ColumnStats {
    pub fn unknown(rows: u64) -> ColumnStats {
        ColumnStats {
            min: Scalar::Null,
            max: Scalar::Null,
            null_count: None,
            rows,
        }
    }

    /// True when every row is known to be NULL.
    pub fn all_null(&self) -> bool {
        self.null_count == Some(self.rows)
    }

    /// Widens `self` to also cover `other`.
    pub fn merge(&mut self, other: &ColumnStats) {
        let bounds_known =
            |s: &ColumnStats| !matches!(s.min, Scalar::Null) && !matches!(s.max, Scalar::Null);
        match (self.all_null(), other.all_null()) {
            // All-NULL rows add no values, so no bounds.
            (_, true) => {}
            (true, false) => {
                self.min = other.min.clone();
                self.max = other.max.clone();
            }
            (false, false) if bounds_known(self) && bounds_known(other) => {
                if other.min.total_cmp(&self.min).is_lt() {
                    self.min = other.min.clone();
                }
                if other.max.total_cmp(&self.max).is_gt() {
                    self.max = other.max.clone();
                }
            }
            (false, false) => {
                self.min = Scalar::Null;
                self.max = Scalar::Null;
            }
        }
        self.null_count = match (self.null_count, other.null_count) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.rows += other.rows;
    }
}

fn decode_bytes(column_type: ColumnType, bytes: &[u8]) -> Scalar {
    match column_type {
        ColumnType::Utf8 => match std::str::from_utf8(bytes) {
            Ok(text) => Scalar::Str(text.to_owned()),
            // A bound truncated inside a character: treat it as unknown, which is always sound.
            Err(_) => Scalar::Null,
        },
        _ => Scalar::Null,
    }
}

/// Converts Parquet column-chunk statistics into engine statistics for a column of `column_type`.
pub fn from_parquet(
    column_type: ColumnType,
    statistics: Option<&Statistics>,
    rows: u64,
) -> ColumnStats {
    let Some(statistics) = statistics else {
        return ColumnStats::unknown(rows);
    };
    let null_count = statistics.null_count_opt();
    let (min, max) = match (column_type, statistics) {
        (ColumnType::Int32 | ColumnType::Date, Statistics::Int32(s)) => (
            s.min_opt().map_or(Scalar::Null, |v| Scalar::Int(*v as i64)),
            s.max_opt().map_or(Scalar::Null, |v| Scalar::Int(*v as i64)),
        ),
        (ColumnType::Int64 | ColumnType::Timestamp, Statistics::Int64(s)) => (
            s.min_opt().map_or(Scalar::Null, |v| Scalar::Int(*v)),
            s.max_opt().map_or(Scalar::Null, |v| Scalar::Int(*v)),
        ),
        (ColumnType::Float64, Statistics::Double(s)) => (
            s.min_opt().map_or(Scalar::Null, |v| float_bound(*v)),
            s.max_opt().map_or(Scalar::Null, |v| float_bound(*v)),
        ),
        (ColumnType::Boolean, Statistics::Boolean(s)) => (
            s.min_opt().map_or(Scalar::Null, |v| Scalar::Bool(*v)),
            s.max_opt().map_or(Scalar::Null, |v| Scalar::Bool(*v)),
        ),
        (ColumnType::Utf8, Statistics::ByteArray(s)) => (
            s.min_opt()
                .map_or(Scalar::Null, |v| decode_bytes(column_type, v.data())),
            s.max_opt()
                .map_or(Scalar::Null, |v| decode_bytes(column_type, v.data())),
        ),
        _ => (Scalar::Null, Scalar::Null),
    };
    // One unknown bound makes both unusable for pruning.
    let (min, max) = if matches!(min, Scalar::Null) || matches!(max, Scalar::Null) {
        (Scalar::Null, Scalar::Null)
    } else {
        (min, max)
    };
    ColumnStats {
        min,
        max,
        null_count,
        rows,
    }
}

fn float_bound(value: f64) -> Scalar {
    if value.is_nan() {
        Scalar::Null
    } else {
        Scalar::Float(value)
    }
}

/// Statistics of page `page` of a column from its column index, or unknown.
pub fn from_column_index(
    column_type: ColumnType,
    index: &ColumnIndexMetaData,
    page: usize,
    rows: u64,
) -> ColumnStats {
    if page as u64 >= index.num_pages() {
        return ColumnStats::unknown(rows);
    }
    let null_count = index.null_count(page).and_then(|n| u64::try_from(n).ok());
    if index.is_null_page(page) {
        return ColumnStats {
            min: Scalar::Null,
            max: Scalar::Null,
            null_count: Some(rows),
            rows,
        };
    }
    let (min, max) = match (column_type, index) {
        (ColumnType::Int32 | ColumnType::Date, ColumnIndexMetaData::INT32(i)) => (
            i.min_value(page).map(|v| Scalar::Int(*v as i64)),
            i.max_value(page).map(|v| Scalar::Int(*v as i64)),
        ),
        (ColumnType::Int64 | ColumnType::Timestamp, ColumnIndexMetaData::INT64(i)) => (
            i.min_value(page).map(|v| Scalar::Int(*v)),
            i.max_value(page).map(|v| Scalar::Int(*v)),
        ),
        (ColumnType::Float64, ColumnIndexMetaData::DOUBLE(i)) => (
            i.min_value(page).map(|v| float_bound(*v)),
            i.max_value(page).map(|v| float_bound(*v)),
        ),
        (ColumnType::Boolean, ColumnIndexMetaData::BOOLEAN(i)) => (
            i.min_value(page).map(|v| Scalar::Bool(*v)),
            i.max_value(page).map(|v| Scalar::Bool(*v)),
        ),
        (ColumnType::Utf8, ColumnIndexMetaData::BYTE_ARRAY(i)) => (
            i.min_value(page).map(|v| decode_bytes(column_type, v)),
            i.max_value(page).map(|v| decode_bytes(column_type, v)),
        ),
        _ => (None, None),
    };
    match (min, max) {
        (Some(min), Some(max)) if !matches!(min, Scalar::Null) && !matches!(max, Scalar::Null) => {
            ColumnStats {
                min,
                max,
                null_count,
                rows,
            }
        }
        _ => ColumnStats {
            null_count,
            ..ColumnStats::unknown(rows)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(min: i64, max: i64, nulls: u64, rows: u64) -> ColumnStats {
        ColumnStats {
            min: Scalar::Int(min),
            max: Scalar::Int(max),
            null_count: Some(nulls),
            rows,
        }
    }

    #[test]
    fn merge_widens_bounds_and_skips_all_null_parts() {
        let mut merged = stats(5, 9, 0, 10);
        merged.merge(&stats(1, 7, 2, 10));
        assert_eq!(merged, stats(1, 9, 2, 20));
        let all_null = ColumnStats {
            min: Scalar::Null,
            max: Scalar::Null,
            null_count: Some(4),
            rows: 4,
        };
        merged.merge(&all_null);
        assert_eq!(merged, stats(1, 9, 6, 24));
        let mut from_null = all_null.clone();
        from_null.merge(&stats(3, 4, 0, 2));
        assert_eq!(from_null, stats(3, 4, 4, 6));
        merged.merge(&ColumnStats::unknown(5));
        assert_eq!(
            (merged.min, merged.null_count, merged.rows),
            (Scalar::Null, None, 29)
        );
    }
}
