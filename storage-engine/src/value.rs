//! Column types the engine executes natively and the scalar values that describe them: literals
//! bound to a column, min/max statistics, group keys. Timestamps are microseconds since the Unix
//! epoch (UTC) and dates are days since the epoch, both carried as `Scalar::Int`. Decimals are
//! their unscaled integers (`Scalar::Decimal`, the scale is the column's), binary values bytes.

use crate::error::{Error, Result};
use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Most digits of a DECIMAL (what an i128 holds: Arrow's Decimal128).
pub const DECIMAL_PRECISION_MAX: u8 = 38;

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
    /// DECIMAL(precision, scale): `1 <= precision <= 38`, `0 <= scale <= precision`; values are
    /// i128 integers scaled by 10^scale (Arrow Decimal128, Parquet DECIMAL). A manifest records
    /// it as `{"decimal": {"precision": 15, "scale": 2}}`.
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// Bytes (Arrow Binary, Parquet BYTE_ARRAY without a UTF8 annotation).
    Binary,
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnType::Int32 => f.write_str("int32"),
            ColumnType::Int64 => f.write_str("int64"),
            ColumnType::Float64 => f.write_str("float64"),
            ColumnType::Utf8 => f.write_str("string"),
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Binary => f.write_str("binary"),
        }
    }
}

impl ColumnType {
    /// DECIMAL(precision, scale), or `None` unless `1 <= precision <= 38` and `scale <= precision`.
    pub fn decimal(precision: u8, scale: u8) -> Option<ColumnType> {
        ((1..=DECIMAL_PRECISION_MAX).contains(&precision) && scale <= precision)
            .then_some(ColumnType::Decimal { precision, scale })
    }

    /// Whether the type's parameters are valid (a manifest may have been edited or damaged).
    pub fn is_valid(self) -> bool {
        match self {
            ColumnType::Decimal { precision, scale } => {
                ColumnType::decimal(precision, scale).is_some()
            }
            _ => true,
        }
    }

    /// Parses a name as `name()`/`Display` write it (`int64`, `decimal(15,2)`, ...).
    pub fn parse(text: &str) -> Option<ColumnType> {
        let text = text.trim().to_ascii_lowercase();
        if let Some(arguments) = text
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            let (precision, scale) = arguments.split_once(',')?;
            return ColumnType::decimal(precision.trim().parse().ok()?, scale.trim().parse().ok()?);
        }
        [
            ColumnType::Int32,
            ColumnType::Int64,
            ColumnType::Float64,
            ColumnType::Utf8,
            ColumnType::Boolean,
            ColumnType::Timestamp,
            ColumnType::Date,
            ColumnType::Binary,
        ]
        .into_iter()
        .find(|t| t.name() == text)
    }

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
            DataType::Decimal128(precision, scale) => {
                ColumnType::decimal(*precision, u8::try_from(*scale).ok()?)?
            }
            DataType::Binary => ColumnType::Binary,
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
            // A valid scale is at most 38, so it fits an i8.
            ColumnType::Decimal { precision, scale } => {
                DataType::Decimal128(precision, scale.min(DECIMAL_PRECISION_MAX) as i8)
            }
            ColumnType::Binary => DataType::Binary,
        }
    }

    /// The type's name as users write it (`decimal(15,2)`), see `Display` and `parse`.
    pub fn name(self) -> String {
        self.to_string()
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int32
                | ColumnType::Int64
                | ColumnType::Float64
                | ColumnType::Decimal { .. }
        )
    }
}

/// One value. `Int` carries Int32, Int64, Timestamp (µs) and Date (days) values; `Decimal` the
/// unscaled integer of a DECIMAL value (its scale is the column's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scalar {
    Null,
    Int(i64),
    Float(#[serde(with = "json_float")] f64),
    Str(String),
    Bool(bool),
    /// Written as a JSON string: JSON readers other than ours may hold numbers as f64.
    Decimal(#[serde(with = "json_i128")] i128),
    Bytes(Vec<u8>),
}

mod json_i128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!("expected a decimal integer, found {text:?}"))
        })
    }
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
            (Decimal(a), Decimal(b)) => a.cmp(b),
            (Bytes(a), Bytes(b)) => a.cmp(b),
            _ => self.kind_rank().cmp(&other.kind_rank()),
        }
    }

    fn kind_rank(&self) -> u8 {
        match self {
            Scalar::Int(_) | Scalar::Float(_) => 0,
            Scalar::Str(_) => 1,
            Scalar::Bool(_) => 2,
            Scalar::Decimal(_) => 3,
            Scalar::Bytes(_) => 4,
            Scalar::Null => 5,
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
    Decimal(i128),
    Bytes(Vec<u8>),
    Null,
}

impl KeyValue {
    pub fn to_scalar(&self) -> Scalar {
        match self {
            KeyValue::Int(v) => Scalar::Int(*v),
            KeyValue::Decimal(v) => Scalar::Decimal(*v),
            KeyValue::Bytes(v) => Scalar::Bytes(v.clone()),
            KeyValue::Float(bits) => Scalar::Float(f64::from_bits(*bits)),
            KeyValue::Str(s) => Scalar::Str(s.clone()),
            KeyValue::Bool(b) => Scalar::Bool(*b),
            KeyValue::Null => Scalar::Null,
        }
    }
}

/// The partition of `value` among `partitions` hash partitions (0 counts as 1) of a table
/// partitioned by a key column: NULL goes to partition 0, anything else to its
/// `partition_hash` modulo `partitions`. Every integer-like value (Int32, Int64, Date,
/// Timestamp) is a `Scalar::Int`, so equal integers land together whatever their width.
///
/// This decides where rows live on disk (and which partitions a query may skip): it must never
/// change, or stored rows would be looked for in the wrong partition. `arrays::partition_rows`
/// computes the same for whole Arrow arrays.
pub fn partition_of(value: &Scalar, partitions: u32) -> u32 {
    match value {
        Scalar::Null => 0,
        value => partition_index(partition_hash(value), partitions),
    }
}

/// The stable 64-bit hash `partition_of` reduces (never changes, see there): an integer's own
/// bits, a string's 64-bit FNV-1a of its UTF-8 bytes, other values the FNV-1a of a fixed byte
/// encoding (a boolean's one byte 0 or 1, a decimal's unscaled i128 little-endian, a float's
/// bits little-endian with -0.0 as 0.0 and every NaN as one, bytes as they are); each then
/// through the splitmix64 finaliser. NULL hashes as 0.
pub fn partition_hash(value: &Scalar) -> u64 {
    match value {
        Scalar::Null => 0,
        Scalar::Int(v) => hash_int(*v),
        Scalar::Str(s) => hash_bytes(s.as_bytes()),
        Scalar::Bytes(b) => hash_bytes(b),
        Scalar::Bool(b) => hash_bytes(&[u8::from(*b)]),
        Scalar::Decimal(v) => hash_bytes(&v.to_le_bytes()),
        Scalar::Float(v) => hash_float(*v),
    }
}

/// `partition_hash` of an integer.
pub(crate) fn hash_int(value: i64) -> u64 {
    mix64(value as u64)
}

/// `partition_hash` of a string's bytes (or of a fixed byte encoding).
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    mix64(fnv1a(bytes))
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
    })
}

/// `partition_hash` of a float: -0.0 as 0.0 and every NaN as the canonical one, so values SQL
/// finds equal share a partition.
pub(crate) fn hash_float(value: f64) -> u64 {
    let canonical = if value == 0.0 {
        0.0
    } else if value.is_nan() {
        f64::NAN
    } else {
        value
    };
    hash_bytes(&canonical.to_bits().to_le_bytes())
}

/// A hash's partition among `partitions` (0 counts as 1).
pub(crate) fn partition_index(hash: u64, partitions: u32) -> u32 {
    (hash % partitions.max(1) as u64) as u32
}

/// splitmix64's finaliser: every input bit moves every output bit, so consecutive keys spread.
fn mix64(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
///
/// Integers widen (Int8/Int16/UInt8/UInt16 to int32, UInt32/UInt64 to int64: values above the
/// int64 range fail the import), floats to float64, timestamps of any unit and zone and Date64
/// to UTC microseconds, Decimal32/64/128 to DECIMAL with the same precision and scale (a negative
/// scale becomes scale 0 with the precision grown to match), Decimal256 only when its precision is
/// at most 38 (then every valid value fits an i128), Binary/LargeBinary/BinaryView/FixedSizeBinary
/// to binary.
pub fn engine_type(name: &str, data_type: &DataType) -> Result<ColumnType> {
    Ok(match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            ColumnType::Int32
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ColumnType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float64,
        DataType::Timestamp(_, _) | DataType::Date64 => ColumnType::Timestamp,
        DataType::Decimal32(precision, scale)
        | DataType::Decimal64(precision, scale)
        | DataType::Decimal128(precision, scale)
        | DataType::Decimal256(precision, scale) => {
            decimal_type(name, data_type, *precision, *scale)?
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => ColumnType::Binary,
        other => ColumnType::from_arrow(other)
            .ok_or_else(|| Error::Import(format!("column {name} has unsupported type {other}")))?,
    })
}

fn decimal_type(name: &str, data_type: &DataType, precision: u8, scale: i8) -> Result<ColumnType> {
    // DECIMAL(p, -k) holds multiples of 10^k below 10^(p+k): DECIMAL(p+k, 0) holds the same.
    let (precision, scale) = if scale < 0 {
        (precision as i32 - scale as i32, 0)
    } else {
        (precision as i32, scale as i32)
    };
    if precision > DECIMAL_PRECISION_MAX as i32 && scale <= precision {
        return Err(Error::Import(format!(
            "column {name} has type {data_type}: decimals of more than {DECIMAL_PRECISION_MAX} digits are not supported"
        )));
    }
    u8::try_from(precision)
        .ok()
        .zip(u8::try_from(scale).ok())
        .and_then(|(p, s)| ColumnType::decimal(p, s))
        .ok_or_else(|| {
            Error::Import(format!(
                "column {name} has an invalid decimal type {data_type} (the precision must be 1 to {DECIMAL_PRECISION_MAX} and the scale at most the precision)"
            ))
        })
}

/// 10^exponent, or `None` beyond i128.
pub fn pow10(exponent: u32) -> Option<i128> {
    10i128.checked_pow(exponent)
}

/// The largest magnitude of DECIMAL(precision, _) plus one: 10^precision.
pub fn decimal_limit(precision: u8) -> i128 {
    // precision <= 38 for a valid type, and 10^38 fits an i128.
    pow10(precision.min(DECIMAL_PRECISION_MAX) as u32).unwrap_or(i128::MAX)
}

/// `value` (unscaled) as text with `scale` fractional digits: `-12.50`.
pub fn format_decimal(value: i128, scale: u8) -> String {
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// A number literal exactly as written: `±digits × 10^exponent` (digits without leading or
/// trailing zeros; none for zero). Comparisons of DECIMAL columns with literals use it, so
/// `price > 100.505` is decided exactly, never by rounding the literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExactNumber {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Exponents beyond this are refused: no DECIMAL or float needs them.
const LITERAL_EXPONENT_MAX: i64 = 10_000;

impl ExactNumber {
    /// Parses `[+-]digits[.digits][e[+-]digits]` (at least one digit before the exponent).
    pub fn parse(text: &str) -> Option<ExactNumber> {
        let text = text.trim();
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent_text) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole
                .bytes()
                .chain(fraction.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let mut exponent: i64 = match exponent_text {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 6
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                e.parse().ok()?
            }
        };
        if exponent.abs() > LITERAL_EXPONENT_MAX {
            return None;
        }
        exponent -= fraction.len() as i64;
        let mut digits: Vec<u8> = whole
            .bytes()
            .chain(fraction.bytes())
            .map(|b| b - b'0')
            .skip_while(|&d| d == 0)
            .collect();
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        Some(ExactNumber {
            negative: negative && !digits.is_empty(),
            digits,
            exponent,
        })
    }

    pub fn from_i64(value: i64) -> ExactNumber {
        // An integer's text always parses.
        ExactNumber::parse(&value.to_string()).unwrap_or(ExactNumber {
            negative: false,
            digits: Vec::new(),
            exponent: 0,
        })
    }

    /// `floor(value × 10^scale)` and whether that is the value exactly. Magnitudes beyond 10^38
    /// (beyond every DECIMAL value) come out as `10^38` or `-10^38 - 1`, inexact, which compares
    /// with every stored value as the literal does.
    pub fn scaled_floor(&self, scale: u8) -> (i128, bool) {
        const BOUND: i128 = 100_000_000_000_000_000_000_000_000_000_000_000_000; // 10^38
        if self.digits.is_empty() {
            return (0, true);
        }
        let shift = self.exponent + scale as i64;
        let length = self.digits.len() as i64;
        let integer = |digits: &[u8]| -> Option<i128> {
            digits
                .iter()
                .try_fold(0i128, |acc, &d| acc.checked_mul(10)?.checked_add(d as i128))
        };
        // The digits end in a non-zero digit, so any digit right of the point is a fraction.
        let (magnitude, fraction) = if shift >= 0 {
            let magnitude = if length + shift > 40 {
                None
            } else {
                integer(&self.digits).and_then(|d| d.checked_mul(pow10(shift as u32)?))
            };
            (magnitude, false)
        } else if length + shift <= 0 {
            (Some(0), true)
        } else if length + shift > 40 {
            (None, true)
        } else {
            (integer(&self.digits[..(length + shift) as usize]), true)
        };
        match (magnitude.filter(|&m| m <= BOUND), self.negative) {
            (None, false) => (BOUND, false),
            (None, true) => (-BOUND - 1, false),
            (Some(m), false) => (m, !fraction),
            (Some(m), true) if fraction => (-m - 1, false),
            (Some(m), true) => (-m, true),
        }
    }
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
    fn the_partition_hash_never_changes() {
        // Rows live where these say: a change here would lose them. The FNV-1a vectors are the
        // published ones; the rest were computed by an independent implementation.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        let pinned: [(Scalar, u64); 13] = [
            (Scalar::Null, 0),
            (Scalar::Int(0), 0),
            (Scalar::Int(1), 0x5692_161d_100b_05e5),
            (Scalar::Int(-1), 0xb4d0_55fc_f2cb_bd7b),
            (Scalar::Int(42), 0xa759_ea27_d472_7622),
            (Scalar::Int(i64::MIN), 0x25c2_6ea5_79ce_a98a),
            (Scalar::Int(i64::MAX), 0x5a68_2afe_7965_debd),
            (Scalar::Str(String::new()), 0xf52a_15e9_a9b5_e89b),
            (Scalar::Str("a".into()), 0x02c0_bdbf_4814_20f8),
            (Scalar::Str("tenant-42".into()), 0x5d8d_50c5_85b0_dfd7),
            (Scalar::Bool(true), 0xaa10_93e3_c79a_b7f9),
            (Scalar::Decimal(12_345), 0xd205_783c_3caf_dab2),
            (Scalar::Float(1.5), 0xbfe3_f4ac_3b0e_aaaa),
        ];
        for (value, hash) in pinned {
            assert_eq!(partition_hash(&value), hash, "{value:?}");
        }
        assert_eq!(partition_of(&Scalar::Str("é".into()), 7), 0);
        assert_eq!(partition_of(&Scalar::Int(42), 7), 3);
        assert_eq!(partition_of(&Scalar::Int(i64::MAX), 7), 3);
        assert_eq!(partition_of(&Scalar::Str("tenant-42".into()), 7), 1);
    }

    #[test]
    fn values_sql_finds_equal_share_a_partition() {
        for partitions in [0, 1, 2, 5, 64] {
            let of = |value: Scalar| partition_of(&value, partitions);
            assert!(of(Scalar::Int(i64::MIN)) < partitions.max(1));
            assert_eq!(of(Scalar::Null), 0);
            assert_eq!(of(Scalar::Float(-0.0)), of(Scalar::Float(0.0)));
            assert_eq!(of(Scalar::Float(-f64::NAN)), of(Scalar::Float(f64::NAN)));
            assert_eq!(
                of(Scalar::Float(f64::from_bits(f64::NAN.to_bits() | 1))),
                of(Scalar::Float(f64::NAN))
            );
        }
        // No partitions counts as one: everything in partition 0.
        assert_eq!(partition_of(&Scalar::Str("x".into()), 0), 0);
        // Consecutive keys spread over the partitions.
        let mut seen = [0u32; 8];
        for key in 0..8_000 {
            seen[partition_of(&Scalar::Int(key), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
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
    fn decimal_literals_scale_exactly_with_floor_for_extra_digits() {
        let floor = |text: &str, scale: u8| ExactNumber::parse(text).unwrap().scaled_floor(scale);
        assert_eq!(floor("100.5", 2), (10_050, true));
        assert_eq!(floor("100.505", 2), (10_050, false));
        assert_eq!(floor("-100.505", 2), (-10_051, false));
        assert_eq!(floor("-100.50", 2), (-10_050, true));
        assert_eq!(floor("1e2", 0), (100, true));
        assert_eq!(floor("1.5E-1", 1), (1, false));
        assert_eq!(floor("0.000", 3), (0, true));
        assert_eq!(floor("-0", 0), (0, true));
        assert_eq!(floor("007.10", 1), (71, true));
        assert_eq!(floor(".5", 0), (0, false));
        assert_eq!(floor("-.5", 0), (-1, false));
        let bound = 10i128.pow(38);
        assert_eq!(floor("1e38", 0), (bound, true));
        assert_eq!(floor("1e39", 0), (bound, false));
        assert_eq!(floor("-1e60", 5), (-bound - 1, false));
        assert_eq!(
            floor("123456789012345678901234567890123456789012", 0),
            (bound, false)
        );
        assert_eq!(
            floor("99999999999999999999999999999999999999", 0).0,
            bound - 1
        );
        for bad in [
            "",
            ".",
            "1e",
            "1e+",
            "--1",
            "1.2.3",
            "abc",
            "1e99999999",
            "0x10",
        ] {
            assert_eq!(ExactNumber::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn decimal_types_are_validated_and_named() {
        assert_eq!(
            ColumnType::parse("decimal(15,2)"),
            Some(ColumnType::Decimal {
                precision: 15,
                scale: 2
            })
        );
        assert_eq!(ColumnType::decimal(39, 0), None);
        assert_eq!(ColumnType::decimal(5, 6), None);
        assert_eq!(ColumnType::decimal(0, 0), None);
        assert_eq!(ColumnType::parse("binary"), Some(ColumnType::Binary));
        assert_eq!(format_decimal(-1250, 2), "-12.50");
        assert_eq!(format_decimal(5, 3), "0.005");
        assert_eq!(format_decimal(7, 0), "7");
        let decimal = |p, s| engine_type("price", &DataType::Decimal128(p, s));
        assert_eq!(
            decimal(10, -2).unwrap(),
            ColumnType::Decimal {
                precision: 12,
                scale: 0
            }
        );
        for (p, s) in [(39, 2), (5, 6), (0, 0), (38, -1)] {
            let error = decimal(p, s).unwrap_err().to_string();
            assert!(error.contains("price"), "{error}");
        }
        let wide = engine_type("x", &DataType::Decimal256(50, 2))
            .unwrap_err()
            .to_string();
        assert!(
            wide.contains("more than 38 digits") && wide.contains('x'),
            "{wide}"
        );
        assert_eq!(
            engine_type("x", &DataType::Decimal256(20, 2)).unwrap(),
            ColumnType::Decimal {
                precision: 20,
                scale: 2
            }
        );
        // Old manifests (unit variants) and new ones read back.
        let text = serde_json::to_string(&ColumnType::Decimal {
            precision: 15,
            scale: 2,
        })
        .unwrap();
        assert_eq!(text, r#"{"decimal":{"precision":15,"scale":2}}"#);
        assert_eq!(
            serde_json::from_str::<ColumnType>(r#""int64""#).unwrap(),
            ColumnType::Int64
        );
        let scalar = serde_json::to_string(&Scalar::Decimal(-(10i128.pow(38) - 1))).unwrap();
        assert_eq!(
            scalar,
            r#"{"decimal":"-99999999999999999999999999999999999999"}"#
        );
        assert_eq!(
            serde_json::from_str::<Scalar>(&scalar).unwrap(),
            Scalar::Decimal(-(10i128.pow(38) - 1))
        );
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
