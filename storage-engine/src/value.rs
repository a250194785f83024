//! Column types the engine executes natively and the scalar values that describe them: literals
//! bound to a column, min/max statistics, group keys. Timestamps are microseconds since the Unix
//! epoch (UTC) and dates are days since the epoch, both carried as `Scalar::Int`.

use crate::error::{Error, Result};
use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Int32,
    Int64,
    Float64,
    Utf8,
    Boolean,
    /// Microseconds since the Unix epoch, UTC (stored as a zone-less Arrow/Parquet timestamp).
    Timestamp,
    /// Days since the Unix epoch.
    Date,
}

impl ColumnType {
    /// The engine type for an Arrow type, or `None` when the engine cannot execute on it.
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        Some(match data_type {
            DataType::Int32 => ColumnType::Int32,
            DataType::Int64 => ColumnType::Int64,
            DataType::Float64 => ColumnType::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Utf8,
            DataType::Dictionary(_, value) if value.as_ref() == &DataType::Utf8 => ColumnType::Utf8,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Timestamp(TimeUnit::Microsecond, _) => ColumnType::Timestamp,
            DataType::Date32 => ColumnType::Date,
            _ => return None,
        })
    }

    /// The Arrow type the engine stores and returns for this column type.
    pub fn to_arrow(self) -> DataType {
        match self {
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::Date => DataType::Date32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Utf8 => "string",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Date => "date",
        }
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int32 | ColumnType::Int64 | ColumnType::Float64
        )
    }
}

/// One value. `Int` carries Int32, Int64, Timestamp (µs) and Date (days) values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    Null,
    Int(i64),
    Float(#[serde(with = "json_float")] f64),
    Str(String),
    Bool(bool),
}

/// JSON has no ±inf or NaN (serde_json writes them as `null`, which then fails to read back and
/// made a table whose statistics held an infinity unreadable): those are written as the strings
/// `"inf"`, `"-inf"` and `"NaN"`, finite values as numbers.
mod json_float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        match *value {
            v if v.is_nan() => serializer.serialize_str("NaN"),
            f64::INFINITY => serializer.serialize_str("inf"),
            f64::NEG_INFINITY => serializer.serialize_str("-inf"),
            v => v.serialize(serializer),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match Stored::deserialize(deserializer)? {
            Stored::Number(v) => Ok(v),
            Stored::Text(text) => match text.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"NaN\", found {other:?}"
                ))),
            },
        }
    }
}

impl Scalar {
    /// Total order used for sorting and statistics: NULL sorts after every value; floats in
    /// PostgreSQL's order (`float_cmp`); values of different kinds (which a bound plan never
    /// compares) order by kind.
    pub fn total_cmp(&self, other: &Scalar) -> Ordering {
        use Scalar::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Null, _) => Ordering::Greater,
            (_, Null) => Ordering::Less,
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => float_cmp(*a, *b),
            (Int(a), Float(b)) => float_cmp(*a as f64, *b),
            (Float(a), Int(b)) => float_cmp(*a, *b as f64),
            (Str(a), Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Bool(a), Bool(b)) => a.cmp(b),
            _ => self.kind_rank().cmp(&other.kind_rank()),
        }
    }

    fn kind_rank(&self) -> u8 {
        match self {
            Scalar::Int(_) | Scalar::Float(_) => 0,
            Scalar::Str(_) => 1,
            Scalar::Bool(_) => 2,
            Scalar::Null => 3,
        }
    }
}

/// PostgreSQL's order of float8, the one rule for filters, statistics, MIN/MAX and ORDER BY:
/// `-0.0` equals `0.0`, NaN equals NaN (whatever its sign or payload) and sorts above every
/// number, `+inf` included.
pub fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        // Neither is NaN, so `partial_cmp` always answers.
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        (a_nan, b_nan) => a_nan.cmp(&b_nan),
    }
}

/// Hashable, exactly-comparable form of a group key value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int(i64),
    /// f64 bits (group keys on floats group bit-identical values).
    Float(u64),
    Str(String),
    Bool(bool),
    Null,
}

impl KeyValue {
    pub fn to_scalar(&self) -> Scalar {
        match self {
            KeyValue::Int(v) => Scalar::Int(*v),
            KeyValue::Float(bits) => Scalar::Float(f64::from_bits(*bits)),
            KeyValue::Str(s) => Scalar::Str(s.clone()),
            KeyValue::Bool(b) => Scalar::Bool(*b),
            KeyValue::Null => Scalar::Null,
        }
    }
}

/// Days since the epoch of a civil date (proleptic Gregorian), or `None` when out of range.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    // Far beyond any timestamp in microseconds, and small enough that nothing below overflows.
    if !(-200_000..=200_000).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    // Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The civil date (year, month, day) of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `YYYY-MM-DD` to days since the epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    let text = text.trim();
    let mut parts = text.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month_text = parts.next()?;
    let day_text = parts.next()?;
    if month_text.len() != 2 || day_text.len() != 2 {
        return None;
    }
    days_from_civil(year, month_text.parse().ok()?, day_text.parse().ok()?)
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.ffffff]` or the same with `T`, optionally ending in
/// `Z`, as UTC microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date_text, time_text) = match text.find([' ', 'T']) {
        Some(split) => (&text[..split], Some(&text[split + 1..])),
        None => (text, None),
    };
    let days = parse_date(date_text)?;
    let mut micros = days.checked_mul(MICROS_PER_DAY)?;
    if let Some(time_text) = time_text {
        let (hms, fraction) = match time_text.split_once('.') {
            Some((hms, fraction)) => (hms, Some(fraction)),
            None => (time_text, None),
        };
        let mut fields = hms.split(':');
        let hour: i64 = two_digits(fields.next()?)?;
        let minute: i64 = two_digits(fields.next()?)?;
        let second: i64 = two_digits(fields.next()?)?;
        if fields.next().is_some() || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        micros = micros.checked_add((hour * 3600 + minute * 60 + second) * 1_000_000)?;
        if let Some(fraction) = fraction {
            if fraction.is_empty()
                || fraction.len() > 6
                || !fraction.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let value: i64 = fraction.parse().ok()?;
            micros = micros.checked_add(value * 10i64.pow(6 - fraction.len() as u32))?;
        }
    }
    Some(micros)
}

fn two_digits(text: &str) -> Option<i64> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub fn format_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

pub fn format_timestamp(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let seconds = rest / 1_000_000;
    let fraction = rest % 1_000_000;
    let text = format!(
        "{} {:02}:{:02}:{:02}",
        format_date(days),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction == 0 {
        text
    } else {
        format!("{text}.{fraction:06}")
    }
}

/// Maps an input Arrow type to the engine's column type, or explains why it cannot.
pub fn engine_type(name: &str, data_type: &DataType) -> Result<ColumnType> {
    Ok(match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColumnType::Int32
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ColumnType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float64,
        DataType::Timestamp(_, _) | DataType::Date64 => ColumnType::Timestamp,
        other => ColumnType::from_arrow(other)
            .ok_or_else(|| Error::Import(format!("column {name} has unsupported type {other}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_scalars_round_trip_through_json_including_infinities_and_nan() {
        for value in [1.5, -0.0, 1e300, f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
            let text = serde_json::to_string(&Scalar::Float(value)).unwrap();
            let back: Scalar = serde_json::from_str(&text).unwrap();
            match back {
                Scalar::Float(v) if value.is_nan() => assert!(v.is_nan(), "{text}"),
                Scalar::Float(v) => assert_eq!(v.to_bits(), value.to_bits(), "{text}"),
                other => panic!("{text} read back as {other:?}"),
            }
        }
        // Manifests written before keep reading: plain numbers, integers too.
        let old: Scalar = serde_json::from_str(r#"{"float":3}"#).unwrap();
        assert_eq!(old, Scalar::Float(3.0));
        assert!(serde_json::from_str::<Scalar>(r#"{"float":"lots"}"#).is_err());
    }

    #[test]
    fn floats_order_as_in_postgresql() {
        use std::cmp::Ordering::*;
        assert_eq!(float_cmp(-0.0, 0.0), Equal);
        assert_eq!(float_cmp(f64::NAN, -f64::NAN), Equal);
        assert_eq!(float_cmp(f64::NAN, f64::INFINITY), Greater);
        assert_eq!(float_cmp(-f64::NAN, f64::NEG_INFINITY), Greater);
        assert_eq!(float_cmp(f64::NEG_INFINITY, -1e308), Less);
        assert_eq!(
            Scalar::Float(f64::NAN).total_cmp(&Scalar::Int(i64::MAX)),
            Greater
        );
        assert_eq!(Scalar::Float(f64::NAN).total_cmp(&Scalar::Null), Less);
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 19_723, 19_724, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
        assert_eq!(parse_date("2024-01-01"), Some(19_723));
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("9223372036854775807-01-01"), None);
        assert_eq!(parse_timestamp("-9223372036854775808-01-01 00:00:00"), None);
    }

    #[test]
    fn timestamps_parse_in_all_accepted_forms() {
        let midnight = 19_723 * MICROS_PER_DAY;
        assert_eq!(parse_timestamp("2024-01-01"), Some(midnight));
        assert_eq!(
            parse_timestamp("2024-01-01 00:00:01"),
            Some(midnight + 1_000_000)
        );
        assert_eq!(
            parse_timestamp("2024-01-01T00:00:01.5Z"),
            Some(midnight + 1_500_000)
        );
        assert_eq!(parse_timestamp("2024-01-01 24:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(
            format_timestamp(midnight + 1_500_000),
            "2024-01-01 00:00:01.500000"
        );
    }
}
