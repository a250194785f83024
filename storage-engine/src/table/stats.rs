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
    /// Whether a NaN may be among the values (float columns). Parquet leaves NaN out of min/max
    /// and its NaN count is optional (other writers omit it), so only the writer's own count of
    /// a file (`writer::write_file`) proves there is none; manifests written before this field
    /// say nothing, which reads as "maybe".
    #[serde(default = "nan_unknown")]
    pub nan_possible: bool,
    /// Whether a zero bound of a float column has the sign of the values' own extreme (`-0.0`
    /// as the minimum only when a `-0.0` is among them, `0.0` as the maximum only when a `0.0`
    /// is). Parquet writes a zero minimum as `-0.0` and a zero maximum as `0.0` whatever the
    /// values, so only the writer's own pass over a file's rows sets this; merged statistics and
    /// older manifests say no.
    #[serde(default)]
    pub zero_exact: bool,
}

fn nan_unknown() -> bool {
    true
}

impl ColumnStats {
    pub fn unknown(rows: u64) -> ColumnStats {
        ColumnStats {
            min: Scalar::Null,
            max: Scalar::Null,
            null_count: None,
            rows,
            nan_possible: true,
            zero_exact: false,
        }
    }

    /// Statistics of a column every one of whose `rows` rows is NULL (a column added to the
    /// table after the file was written).
    pub fn nulls(rows: u64) -> ColumnStats {
        ColumnStats {
            min: Scalar::Null,
            max: Scalar::Null,
            null_count: Some(rows),
            rows,
            nan_possible: false,
            zero_exact: false,
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
        self.nan_possible |= other.nan_possible;
        self.zero_exact = false;
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
        // Parquet orders unannotated byte arrays as unsigned bytes, as `Vec<u8>` does; a
        // truncated bound is still a bound (the writer rounds a truncated maximum up).
        ColumnType::Binary => Scalar::Bytes(bytes.to_vec()),
        ColumnType::Decimal { .. } => decimal_bytes(bytes),
        _ => Scalar::Null,
    }
}

/// A DECIMAL bound stored as a big-endian two's-complement integer (FIXED_LEN_BYTE_ARRAY).
fn decimal_bytes(bytes: &[u8]) -> Scalar {
    if bytes.is_empty() || bytes.len() > 16 {
        return Scalar::Null;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0 };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(bytes);
    Scalar::Decimal(i128::from_be_bytes(wide))
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
        (ColumnType::Utf8 | ColumnType::Binary, Statistics::ByteArray(s)) => (
            s.min_opt()
                .map_or(Scalar::Null, |v| decode_bytes(column_type, v.data())),
            s.max_opt()
                .map_or(Scalar::Null, |v| decode_bytes(column_type, v.data())),
        ),
        (ColumnType::Decimal { .. }, Statistics::Int32(s)) => (
            s.min_opt()
                .map_or(Scalar::Null, |v| Scalar::Decimal(*v as i128)),
            s.max_opt()
                .map_or(Scalar::Null, |v| Scalar::Decimal(*v as i128)),
        ),
        (ColumnType::Decimal { .. }, Statistics::Int64(s)) => (
            s.min_opt()
                .map_or(Scalar::Null, |v| Scalar::Decimal(*v as i128)),
            s.max_opt()
                .map_or(Scalar::Null, |v| Scalar::Decimal(*v as i128)),
        ),
        (ColumnType::Decimal { .. }, Statistics::FixedLenByteArray(s)) => (
            s.min_opt()
                .map_or(Scalar::Null, |v| decimal_bytes(v.data())),
            s.max_opt()
                .map_or(Scalar::Null, |v| decimal_bytes(v.data())),
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
        nan_possible: column_type == ColumnType::Float64,
        zero_exact: false,
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
            nan_possible: false,
            zero_exact: false,
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
        (ColumnType::Utf8 | ColumnType::Binary, ColumnIndexMetaData::BYTE_ARRAY(i)) => (
            i.min_value(page).map(|v| decode_bytes(column_type, v)),
            i.max_value(page).map(|v| decode_bytes(column_type, v)),
        ),
        (ColumnType::Decimal { .. }, ColumnIndexMetaData::INT32(i)) => (
            i.min_value(page).map(|v| Scalar::Decimal(*v as i128)),
            i.max_value(page).map(|v| Scalar::Decimal(*v as i128)),
        ),
        (ColumnType::Decimal { .. }, ColumnIndexMetaData::INT64(i)) => (
            i.min_value(page).map(|v| Scalar::Decimal(*v as i128)),
            i.max_value(page).map(|v| Scalar::Decimal(*v as i128)),
        ),
        (ColumnType::Decimal { .. }, ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(i)) => (
            i.min_value(page).map(decimal_bytes),
            i.max_value(page).map(decimal_bytes),
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
                nan_possible: column_type == ColumnType::Float64,
                zero_exact: false,
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
            nan_possible: false,
            zero_exact: false,
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
            nan_possible: false,
            zero_exact: false,
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

    /// Parquet's float min/max leave NaN out, so statistics converted from a file never rule NaN
    /// out on their own (its NaN count is optional and absent from other writers' files); the
    /// writer's exact count per file (`FileTask::refine`) is what lets pruning trust the bounds.
    #[test]
    fn parquet_float_statistics_leave_nan_out_of_the_bounds_and_never_rule_it_out() {
        use arrow_array::{Float64Array, RecordBatch};
        use arrow_schema::{DataType, Field, Schema};
        use parquet::arrow::ArrowWriter;
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let values = Float64Array::from(vec![f64::NAN, 1.0, 2.0]);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        writer.write(&batch).unwrap();
        let metadata = writer.close().unwrap();
        let statistics = metadata.row_group(0).column(0).statistics();
        let converted = from_parquet(ColumnType::Float64, statistics, 3);
        assert_eq!(
            (converted.min, converted.max),
            (Scalar::Float(1.0), Scalar::Float(2.0))
        );
        assert!(converted.nan_possible);
        let integers = from_parquet(ColumnType::Int64, None, 3);
        assert!(integers.nan_possible, "unknown statistics say nothing");
    }
}
