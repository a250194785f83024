//! Grouping and aggregation on one core. Group keys become dense ids: each key column interns its
//! values (dictionary-encoded strings map each dictionary entry once per page, not each row; sorted
//! runs such as `DATE(timestamp)` hit a one-entry memo), and composite keys fold pairwise through
//! dense 2-D tables (hashing only when the product of cardinalities is large). Accumulators are
//! arrays indexed by group id, updated by the SIMD/scalar kernels. A core's result is a list of
//! (key values, accumulator states) that the query's caller merges across cores.

use crate::error::{Error, Result};
use crate::query::groups::Accumulator;
pub use crate::query::groups::{merge, partition, GroupMerger, GroupRows};
use crate::query::kernels::Kernels;
use crate::query::plan::{decimal_avg_scale, Aggregate, ValueExpr};
use crate::query::sql::AggregateFunction;
use crate::table::manifest::ColumnDef;
use crate::value::{ColumnType, KeyValue, Scalar, MICROS_PER_DAY};
use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Float64Type, Int32Type};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::i256;
use arrow_schema::DataType;
use hashbrown::HashMap;

/// A mergeable aggregate state of one group.
#[derive(Clone, Debug, PartialEq)]
pub enum AccState {
    Count(u64),
    SumFloat {
        sum: f64,
        count: u64,
    },
    SumInt {
        sum: i128,
        count: u64,
    },
    /// SUM or AVG of a DECIMAL: unscaled values added in 256 bits, which no count of 128-bit
    /// values a table can hold overflows; the result's range is checked once, at the end.
    SumDecimal {
        sum: i256,
        count: u64,
    },
    /// MIN or MAX so far (`Null` before any value).
    Extreme(Scalar),
}

impl AccState {
    pub fn merge(&mut self, other: &AccState, is_min: bool) {
        match (self, other) {
            (AccState::Count(a), AccState::Count(b)) => *a += b,
            (AccState::SumFloat { sum, count }, AccState::SumFloat { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (AccState::SumInt { sum, count }, AccState::SumInt { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (AccState::SumDecimal { sum, count }, AccState::SumDecimal { sum: s, count: c }) => {
                *sum = sum.wrapping_add(*s);
                *count += c;
            }
            (AccState::Extreme(a), AccState::Extreme(b)) if better(b, a, is_min) => *a = b.clone(),
            _ => {}
        }
    }

    pub fn empty(aggregate: &Aggregate) -> AccState {
        match (aggregate.function, aggregate.input_type) {
            (AggregateFunction::CountStar | AggregateFunction::Count, _) => AccState::Count(0),
            (AggregateFunction::Sum | AggregateFunction::Avg, Some(ColumnType::Float64)) => {
                AccState::SumFloat { sum: 0.0, count: 0 }
            }
            (AggregateFunction::Sum | AggregateFunction::Avg, Some(ColumnType::Decimal { .. })) => {
                AccState::SumDecimal {
                    sum: i256::ZERO,
                    count: 0,
                }
            }
            (AggregateFunction::Sum | AggregateFunction::Avg, _) => {
                AccState::SumInt { sum: 0, count: 0 }
            }
            _ => AccState::Extreme(Scalar::Null),
        }
    }

    /// The SQL result of this state for `aggregate` over a table of `columns` (errors name the
    /// aggregate's column).
    pub fn finish(&self, aggregate: &Aggregate, columns: &[ColumnDef]) -> Result<Scalar> {
        let column = || {
            aggregate
                .argument
                .and_then(|a| columns.get(a.column()))
                .map_or("?", |c| c.name.as_str())
        };
        Ok(match (self, aggregate.function) {
            (AccState::Count(n), _) => Scalar::Int(*n as i64),
            (
                AccState::SumFloat { count: 0, .. }
                | AccState::SumInt { count: 0, .. }
                | AccState::SumDecimal { count: 0, .. },
                _,
            ) => Scalar::Null,
            (AccState::SumDecimal { sum, count }, function) => {
                let Some(ColumnType::Decimal { precision, scale }) = aggregate.input_type else {
                    return Err(Error::Internal(
                        "decimal sum of a non-decimal column".into(),
                    ));
                };
                let result_scale = decimal_avg_scale(precision, scale);
                let (value, name, result_scale) = if function == AggregateFunction::Avg {
                    let factor = i256::from_i128(crate::value::decimal_limit(result_scale - scale));
                    let average = divide_half_away(sum.wrapping_mul(factor), *count);
                    (average, "AVG", result_scale)
                } else {
                    (*sum, "SUM", scale)
                };
                let limit = i256::from_i128(crate::value::decimal_limit(38));
                match value.to_i128() {
                    Some(v) if value < limit && value > limit.wrapping_neg() => Scalar::Decimal(v),
                    _ => {
                        return Err(Error::plan(format!(
                            "decimal overflow in {name}({}): the result exceeds DECIMAL(38,{result_scale})",
                            column()
                        )))
                    }
                }
            }
            (AccState::SumFloat { sum, count }, AggregateFunction::Avg) => {
                Scalar::Float(sum / *count as f64)
            }
            (AccState::SumFloat { sum, .. }, _) => Scalar::Float(*sum),
            (AccState::SumInt { sum, count }, AggregateFunction::Avg) => {
                Scalar::Float(*sum as f64 / *count as f64)
            }
            (AccState::SumInt { sum, .. }, _) => {
                Scalar::Int(i64::try_from(*sum).map_err(|_| {
                    Error::plan(format!(
                        "integer overflow in SUM({}) (result exceeds int64)",
                        column()
                    ))
                })?)
            }
            (AccState::Extreme(value), _) => value.clone(),
        })
    }
}

/// `numerator / count` rounded half away from zero (`count > 0`).
fn divide_half_away(numerator: i256, count: u64) -> i256 {
    let divisor = i256::from_i128(count as i128);
    let quotient = numerator.wrapping_div(divisor);
    let remainder = numerator.wrapping_rem(divisor);
    // |remainder| < count < 2^64, so doubling it cannot overflow.
    if remainder.wrapping_abs().wrapping_mul(i256::from_i128(2)) >= divisor {
        if numerator < i256::ZERO {
            quotient.wrapping_sub(i256::ONE)
        } else {
            quotient.wrapping_add(i256::ONE)
        }
    } else {
        quotient
    }
}

/// True when `candidate` should replace `current` as the MIN (`is_min`) or MAX.
pub(crate) fn better(candidate: &Scalar, current: &Scalar, is_min: bool) -> bool {
    let order = match (candidate, current) {
        (Scalar::Null, _) => return false,
        (_, Scalar::Null) => return true,
        (Scalar::Float(a), Scalar::Float(b)) => extreme_order(*a, *b),
        _ => candidate.total_cmp(current),
    };
    if is_min {
        order.is_lt()
    } else {
        order.is_gt()
    }
}

/// The order MIN/MAX fold floats in: PostgreSQL's (NaN above every number, so MAX of a column
/// holding a NaN is NaN and MIN skips NaN unless all are), with values that order equal told
/// apart by their bits (`-0.0` before `0.0`) so the answer never depends on page or core order.
fn extreme_order(a: f64, b: f64) -> std::cmp::Ordering {
    crate::value::float_cmp(a, b).then_with(|| a.total_cmp(&b))
}

/// The row holding the MIN (`is_min`) or MAX of a primitive column's selected, non-NULL
/// values, in one typed pass (floats in `extreme_order`, as `better` folds them); `None` for
/// types without a typed pass, `Some(None)` when no row qualifies.
fn extreme_row(
    array: &ArrayRef,
    mask: Option<&[u64]>,
    len: usize,
    is_min: bool,
) -> Option<Option<usize>> {
    let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
    let selected = |row: usize| {
        mask.is_none_or(|m| m[row / 64] >> (row % 64) & 1 == 1)
            && nulls.as_ref().is_none_or(|n| n.is_valid(row))
    };
    fn pick<T: Copy>(
        values: &[T],
        selected: impl Fn(usize) -> bool,
        wins: impl Fn(T, T) -> bool,
    ) -> Option<usize> {
        let mut best: Option<(usize, T)> = None;
        for (row, &value) in values.iter().enumerate() {
            if selected(row) && best.is_none_or(|(_, b)| wins(value, b)) {
                best = Some((row, value));
            }
        }
        best.map(|(row, _)| row)
    }
    let len = len.min(array.len());
    if array.data_type() == &DataType::Float64 {
        let values = &array.as_primitive::<Float64Type>().values()[..len];
        return Some(pick(values, selected, |a: f64, b: f64| {
            if is_min {
                extreme_order(a, b).is_lt()
            } else {
                extreme_order(a, b).is_gt()
            }
        }));
    }
    let wins = |a, b| if is_min { a < b } else { a > b };
    if let Some(values) = crate::arrays::i64_values(array) {
        return Some(pick(&values[..len], selected, wins));
    }
    crate::arrays::i32_values(array).map(|values| {
        pick(&values[..len], selected, |a: i32, b: i32| {
            wins(a as i64, b as i64)
        })
    })
}

/// Grouped MIN/MAX of a column of integers, dates, timestamps or decimals, compared as the
/// integers they are (a `Scalar` is made only for a new extreme); false, doing nothing, for
/// other types.
fn extreme_by_group(
    array: &ArrayRef,
    mask: Option<&[u64]>,
    groups: &[u32],
    values: &mut [Scalar],
    is_min: bool,
) -> bool {
    fn fold<T: Copy + Into<i128>>(
        raw: &[T],
        decimal: bool,
        skip: impl Fn(usize) -> bool,
        groups: &[u32],
        values: &mut [Scalar],
        is_min: bool,
    ) {
        for (row, (&value, &group)) in raw.iter().zip(groups).enumerate() {
            if skip(row) {
                continue;
            }
            let value: i128 = value.into();
            let Some(slot) = values.get_mut(group as usize) else {
                continue;
            };
            let current = match slot {
                Scalar::Int(c) => Some(*c as i128),
                Scalar::Decimal(c) => Some(*c),
                _ => None,
            };
            let better = current.is_none_or(|c| if is_min { value < c } else { value > c });
            if better {
                *slot = if decimal {
                    Scalar::Decimal(value)
                } else {
                    Scalar::Int(value as i64)
                };
            }
        }
    }
    let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
    let skip = |row: usize| {
        mask.is_some_and(|m| m[row / 64] >> (row % 64) & 1 == 0)
            || nulls.as_ref().is_some_and(|n| n.is_null(row))
    };
    match array.data_type() {
        DataType::Int64 | DataType::Timestamp(_, _) => match crate::arrays::i64_values(array) {
            Some(raw) => fold(raw, false, skip, groups, values, is_min),
            None => return false,
        },
        DataType::Int32 | DataType::Date32 => match crate::arrays::i32_values(array) {
            Some(raw) => fold(raw, false, skip, groups, values, is_min),
            None => return false,
        },
        DataType::Decimal128(_, _) => {
            let raw = array.as_primitive::<Decimal128Type>().values();
            fold(raw, true, skip, groups, values, is_min)
        }
        _ => return false,
    }
    true
}

/// Interns one key column's values to dense local ids.
#[derive(Default)]
struct Interner {
    values: Vec<KeyValue>,
    map: HashMap<KeyValue, u32>,
    /// Integer keys (the common high-cardinality case) skip the enum's hashing.
    ints: HashMap<i64, u32>,
    strings: HashMap<String, u32>,
    /// Bytes of the interned strings (held twice: in `values` and as `strings`' keys).
    string_bytes: usize,
    /// The dictionary last mapped (kept alive so its address cannot be reused) and its ids.
    dictionary: Option<(ArrayRef, Vec<u32>)>,
    /// Integer keys within a range the statistics bound: the id of `base + i` at `ids[i]`
    /// (`EMPTY` until seen), an array index instead of a hash probe.
    direct: Option<DirectIds>,
}

struct DirectIds {
    base: i64,
    ids: Vec<u32>,
}

/// Largest key range given a direct id table (4 bytes per possible key).
pub const DIRECT_IDS_MAX: u64 = 1 << 23;

impl Interner {
    fn id(&mut self, value: KeyValue) -> u32 {
        if let KeyValue::Int(v) = value {
            return self.int_id(v);
        }
        if let KeyValue::Str(text) = &value {
            if let Some(&id) = self.strings.get(text.as_str()) {
                return id;
            }
            let id = self.values.len() as u32;
            self.string_bytes += 2 * text.len();
            self.strings.insert(text.clone(), id);
            self.values.push(value);
            return id;
        }
        if let Some(&id) = self.map.get(&value) {
            return id;
        }
        let id = self.values.len() as u32;
        self.map.insert(value.clone(), id);
        self.values.push(value);
        id
    }

    fn int_id(&mut self, v: i64) -> u32 {
        let next = self.values.len() as u32;
        if let Some(direct) = &mut self.direct {
            let offset = v.wrapping_sub(direct.base) as u64;
            if let Some(slot) = direct.ids.get_mut(offset as usize) {
                if *slot == EMPTY {
                    *slot = next;
                    self.values.push(KeyValue::Int(v));
                }
                return *slot;
            }
        }
        let id = *self.ints.entry(v).or_insert(next);
        if id == next {
            self.values.push(KeyValue::Int(v));
        }
        id
    }

    fn str_id(&mut self, text: &str) -> u32 {
        match self.strings.get(text) {
            Some(&id) => id,
            None => self.id(KeyValue::Str(text.to_owned())),
        }
    }

    /// Local ids of `array` (a slice of one page) as the value `expr` takes. Rows `mask` leaves
    /// out get `SKIPPED` instead of an id (interning them would make groups of rows no filter
    /// kept), except where ids cost a lookup per dictionary entry or per run anyway.
    fn ids(
        &mut self,
        expr: ValueExpr,
        array: &ArrayRef,
        mask: Option<&[u64]>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        let len = array.len();
        let skipped = |i: usize| mask.is_some_and(|m| m[i / 64] >> (i % 64) & 1 == 0);
        let null_id = |s: &mut Self| s.id(KeyValue::Null);
        match array.data_type() {
            DataType::Dictionary(_, _) => {
                let dictionary = array.as_dictionary::<Int32Type>();
                let values = dictionary.values();
                let same = self
                    .dictionary
                    .as_ref()
                    .is_some_and(|(d, _)| std::sync::Arc::ptr_eq(d, values));
                if !same {
                    let strings = values.as_string::<i32>();
                    let mut map = Vec::with_capacity(strings.len());
                    for i in 0..strings.len() {
                        map.push(if strings.is_null(i) {
                            null_id(self)
                        } else {
                            self.str_id(strings.value(i))
                        });
                    }
                    self.dictionary = Some((values.clone(), map));
                }
                let keys = dictionary.keys();
                let codes = keys.values();
                // Out-of-range codes and NULL keys are rare: intern NULL only when one occurs.
                let entries = self.dictionary.as_ref().map_or(0, |(_, m)| m.len());
                let has_null =
                    keys.null_count() > 0 || codes.iter().any(|&c| c < 0 || c as usize >= entries);
                let null = if has_null { null_id(self) } else { u32::MAX };
                let map = self
                    .dictionary
                    .as_ref()
                    .map(|(_, m)| m.as_slice())
                    .unwrap_or(&[]);
                match keys.nulls() {
                    None => {
                        out.extend(codes.iter().map(|&c| *map.get(c as usize).unwrap_or(&null)))
                    }
                    Some(nulls) => out.extend(codes.iter().enumerate().map(|(i, &c)| {
                        if nulls.is_valid(i) {
                            *map.get(c as usize).unwrap_or(&null)
                        } else {
                            null
                        }
                    })),
                }
            }
            DataType::Utf8 => {
                let strings = array.as_string::<i32>();
                for i in 0..len {
                    let id = if skipped(i) {
                        SKIPPED
                    } else if strings.is_null(i) {
                        null_id(self)
                    } else {
                        self.str_id(strings.value(i))
                    };
                    out.push(id);
                }
            }
            DataType::Int64 | DataType::Timestamp(_, _) | DataType::Int32 | DataType::Date32 => {
                // Integer-like keys: one memo of the last value makes sorted runs (DATE(timestamp)
                // over time-sorted files) cost a compare per row.
                let to_day = matches!(
                    (expr, array.data_type()),
                    (ValueExpr::Date(_), DataType::Timestamp(_, _))
                );
                let wide = crate::arrays::i64_values(array);
                let narrow = crate::arrays::i32_values(array);
                let value = |i: usize| -> i64 {
                    let raw = match (wide, narrow) {
                        (Some(v), _) => v[i],
                        (None, Some(v)) => v[i] as i64,
                        _ => 0,
                    };
                    if to_day {
                        raw.div_euclid(MICROS_PER_DAY)
                    } else {
                        raw
                    }
                };
                let nulls = array.logical_nulls().filter(|n| n.null_count() > 0);
                if let (true, Some(times), None) = (to_day, wide, &nulls) {
                    // DATE(timestamp): walk runs of one day with two compares per row, no division.
                    let mut i = 0;
                    while i < times.len() {
                        let day = times[i].div_euclid(MICROS_PER_DAY);
                        // The day's first and last microsecond, clamped to the i64 range: the
                        // days at its ends are partial (unchecked, the bound wrapped and the run
                        // length became 0, looping forever). `times[i]` lies within, so run >= 1.
                        let first = day.checked_mul(MICROS_PER_DAY).unwrap_or(i64::MIN);
                        let last = (day + 1)
                            .checked_mul(MICROS_PER_DAY)
                            .map_or(i64::MAX, |next| next - 1);
                        let run = times[i..]
                            .iter()
                            .take_while(|&&t| t >= first && t <= last)
                            .count();
                        let id = self.int_id(day);
                        out.extend(std::iter::repeat_n(id, run));
                        i += run;
                    }
                    return Ok(());
                }
                let mut last: Option<(i64, u32)> = None;
                for i in 0..len {
                    if skipped(i) {
                        out.push(SKIPPED);
                        continue;
                    }
                    if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                        out.push(null_id(self));
                        continue;
                    }
                    let v = value(i);
                    let id = match last {
                        Some((previous, id)) if previous == v => id,
                        _ => {
                            let id = self.int_id(v);
                            last = Some((v, id));
                            id
                        }
                    };
                    out.push(id);
                }
            }
            _ => {
                for i in 0..len {
                    if skipped(i) {
                        out.push(SKIPPED);
                        continue;
                    }
                    let value = key_at(expr, array, i);
                    out.push(self.id(value));
                }
            }
        }
        Ok(())
    }
}

/// The key value of row `i` (non-string columns).
fn key_at(expr: ValueExpr, array: &ArrayRef, i: usize) -> KeyValue {
    if array.is_null(i) {
        return KeyValue::Null;
    }
    match (expr, array.data_type()) {
        (ValueExpr::Date(_), DataType::Timestamp(_, _)) => KeyValue::Int(
            crate::arrays::i64_values(array)
                .map_or(0, |v| v[i])
                .div_euclid(MICROS_PER_DAY),
        ),
        (_, DataType::Int64 | DataType::Timestamp(_, _)) => {
            KeyValue::Int(crate::arrays::i64_values(array).map_or(0, |v| v[i]))
        }
        (_, DataType::Int32 | DataType::Date32) => {
            KeyValue::Int(crate::arrays::i32_values(array).map_or(0, |v| v[i]) as i64)
        }
        (_, DataType::Float64) => {
            let v = array.as_primitive::<Float64Type>().value(i);
            // One group for -0.0 and 0.0, one for every NaN (PostgreSQL's equality).
            KeyValue::Float(if v == 0.0 {
                0.0f64.to_bits()
            } else if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            })
        }
        (_, DataType::Boolean) => KeyValue::Bool(array.as_boolean().value(i)),
        (_, DataType::Decimal128(_, _)) => {
            KeyValue::Decimal(array.as_primitive::<Decimal128Type>().value(i))
        }
        (_, DataType::Binary) => KeyValue::Bytes(array.as_binary::<i32>().value(i).to_vec()),
        _ => KeyValue::Null,
    }
}

/// Maps pairs of dense ids to dense ids: a 2-D array while small, a hash map beyond.
struct PairTable {
    stride_bits: u32,
    /// One more than the largest first id seen.
    rows: usize,
    dense: Vec<u32>,
    pairs: Vec<(u32, u32)>,
    hashed: Option<HashMap<(u32, u32), u32>>,
}

const EMPTY: u32 = u32::MAX;
/// The id of a row the filter left out: beyond every accumulator, so the kernels (which bound
/// ids by the accumulators' length) and the pair tables pass it by.
const SKIPPED: u32 = u32::MAX;
const DENSE_ENTRIES_MAX: usize = 1 << 22;

impl PairTable {
    fn new() -> PairTable {
        PairTable {
            stride_bits: 5,
            rows: 0,
            dense: Vec::new(),
            pairs: Vec::new(),
            hashed: None,
        }
    }

    #[inline]
    fn get(&mut self, a: u32, b: u32) -> u32 {
        if self.hashed.is_none() && (b >> self.stride_bits) == 0 {
            let index = ((a as usize) << self.stride_bits) | b as usize;
            if let Some(&id) = self.dense.get(index) {
                if id != EMPTY {
                    return id;
                }
            }
        }
        self.slow(a, b)
    }

    fn slow(&mut self, a: u32, b: u32) -> u32 {
        if let Some(hashed) = &mut self.hashed {
            let next = self.pairs.len() as u32;
            let id = *hashed.entry((a, b)).or_insert(next);
            if id == next {
                self.pairs.push((a, b));
            }
            return id;
        }
        let mut stride_changed = false;
        while (b >> self.stride_bits) != 0 {
            self.stride_bits += 1;
            stride_changed = true;
        }
        self.rows = self.rows.max(a as usize + 1);
        let needed = self.rows << self.stride_bits;
        if needed > DENSE_ENTRIES_MAX {
            let mut hashed = HashMap::with_capacity(self.pairs.len() * 2);
            for (id, pair) in self.pairs.iter().enumerate() {
                hashed.insert(*pair, id as u32);
            }
            self.hashed = Some(hashed);
            self.dense = Vec::new();
            return self.slow(a, b);
        }
        if stride_changed || needed > self.dense.len() {
            // Grow geometrically in rows so a rising `a` rebuilds O(log n) times.
            self.rebuild((needed * 2).min(DENSE_ENTRIES_MAX).max(needed));
        }
        let index = ((a as usize) << self.stride_bits) | b as usize;
        if self.dense[index] != EMPTY {
            return self.dense[index];
        }
        let id = self.pairs.len() as u32;
        self.pairs.push((a, b));
        self.dense[index] = id;
        id
    }

    fn rebuild(&mut self, len: usize) {
        self.dense = vec![EMPTY; len];
        for (id, &(a, b)) in self.pairs.iter().enumerate() {
            let index = ((a as usize) << self.stride_bits) | b as usize;
            if index < len {
                self.dense[index] = id as u32;
            }
        }
    }
}

/// Grouped aggregation state of one core for one query.
pub struct GroupState {
    keys: Vec<ValueExpr>,
    aggregates: Vec<Aggregate>,
    interners: Vec<Interner>,
    pairs: Vec<PairTable>,
    accumulators: Vec<Accumulator>,
    groups: usize,
    /// Keys are interned for every row of a piece, selected or not, and a dictionary's values
    /// are interned whole, so a group may exist without rows; such groups are not part of the
    /// result. One rule: a group has rows once a selected row referenced it (`populated`). The
    /// marking pass runs only while some group is not yet known to have rows (`unpopulated > 0`),
    /// so a low-cardinality GROUP BY pays for it on its first pages only.
    populated: Vec<bool>,
    unpopulated: usize,
    local_ids: Vec<u32>,
    group_ids: Vec<u32>,
    widened: Vec<i64>,
    /// One piece's decimal sums and counts per group (`DECIMAL_PIECE_GROUPS_MAX` at most).
    piece_sums: Vec<i128>,
    piece_counts: Vec<u64>,
}

/// Groups up to which a decimal SUM of at most 18 digits adds each piece in 128 bits with the
/// integer kernels, then folds the piece's sums into the 256-bit states (clearing per-piece
/// arrays costs a pass over the groups).
const DECIMAL_PIECE_GROUPS_MAX: usize = 4096;

impl GroupState {
    pub fn new(keys: &[ValueExpr], aggregates: &[Aggregate]) -> GroupState {
        let mut state = GroupState {
            keys: keys.to_vec(),
            aggregates: aggregates.to_vec(),
            interners: keys.iter().map(|_| Interner::default()).collect(),
            pairs: keys.iter().skip(1).map(|_| PairTable::new()).collect(),
            accumulators: aggregates.iter().map(Accumulator::new).collect(),
            groups: 0,
            populated: Vec::new(),
            unpopulated: 0,
            local_ids: Vec::new(),
            group_ids: Vec::new(),
            widened: Vec::new(),
            piece_sums: Vec::new(),
            piece_counts: Vec::new(),
        };
        if keys.is_empty() {
            state.groups = 1;
            state.accumulators.iter_mut().for_each(|a| a.resize(1));
        }
        state
    }

    /// Gives key `k` (an integer-valued key, `Interner::ids` says which) a direct id table for
    /// the values `min..=max` the statistics bound, when that range is at most
    /// `DIRECT_IDS_MAX`; values outside it are hashed as before.
    pub fn with_key_range(mut self, k: usize, min: i64, max: i64) -> GroupState {
        let len = (max as i128 - min as i128 + 1).max(0) as u64;
        if let Some(interner) = self.interners.get_mut(k) {
            if len > 0 && len <= DIRECT_IDS_MAX && interner.values.is_empty() {
                interner.direct = Some(DirectIds {
                    base: min,
                    ids: vec![EMPTY; len as usize],
                });
            }
        }
        self
    }

    /// Estimated bytes held: interned keys (entry plus hash-table slot), direct id tables, pair
    /// tables and one accumulator slot per group and aggregate.
    pub fn memory_bytes(&self) -> u64 {
        const KEY_ENTRY_BYTES: usize = std::mem::size_of::<KeyValue>() + 48;
        let keys: usize = self
            .interners
            .iter()
            .map(|i| {
                i.values.len() * KEY_ENTRY_BYTES
                    + i.string_bytes
                    + i.direct.as_ref().map_or(0, |d| d.ids.len() * 4)
            })
            .sum();
        let pairs: usize = self
            .pairs
            .iter()
            .map(|p| {
                p.dense.capacity() * 4
                    + p.pairs.capacity() * 8
                    + p.hashed.as_ref().map_or(0, |h| h.capacity() * 16)
            })
            .sum();
        let per_group: usize = self
            .accumulators
            .iter()
            .map(|a| a.group_bytes())
            .sum::<usize>()
            + 1;
        (keys + pairs + self.groups * per_group) as u64
    }

    /// Adds `len` rows whose columns are `column(index)` (slices of one page each), with `mask`
    /// selecting rows (None: all).
    pub fn update(
        &mut self,
        kernels: &Kernels,
        column: &dyn Fn(usize) -> ArrayRef,
        mask: Option<&[u64]>,
        len: usize,
    ) -> Result<()> {
        let grouped = !self.keys.is_empty();
        if grouped {
            let mut group_ids = std::mem::take(&mut self.group_ids);
            let mut local_ids = std::mem::take(&mut self.local_ids);
            for (k, key) in self.keys.iter().enumerate() {
                let array = column(key.column());
                if k == 0 {
                    self.interners[0].ids(*key, &array, mask, &mut group_ids)?;
                } else {
                    self.interners[k].ids(*key, &array, mask, &mut local_ids)?;
                    let table = &mut self.pairs[k - 1];
                    for (g, &b) in group_ids.iter_mut().zip(local_ids.iter()) {
                        *g = if *g == SKIPPED || b == SKIPPED {
                            SKIPPED
                        } else {
                            table.get(*g, b)
                        };
                    }
                }
            }
            let groups = match self.pairs.last() {
                Some(table) => table.pairs.len(),
                None => self.interners[0].values.len(),
            };
            if groups > self.groups {
                self.unpopulated += groups - self.groups;
                self.groups = groups;
                self.accumulators.iter_mut().for_each(|a| a.resize(groups));
                self.populated.resize(groups, false);
            }
            if self.unpopulated > 0 {
                let mut mark = |group: u32| {
                    let populated = &mut self.populated[group as usize];
                    if !*populated {
                        *populated = true;
                        self.unpopulated -= 1;
                    }
                };
                match mask {
                    None => group_ids[..len].iter().for_each(|&g| mark(g)),
                    Some(words) => {
                        for (w, &word) in words.iter().enumerate() {
                            let mut bits = word;
                            while bits != 0 {
                                let row = w * 64 + bits.trailing_zeros() as usize;
                                bits &= bits - 1;
                                if row < len {
                                    mark(group_ids[row]);
                                }
                            }
                        }
                    }
                }
            }
            self.group_ids = group_ids;
            self.local_ids = local_ids;
        }
        for index in 0..self.aggregates.len() {
            let aggregate = self.aggregates[index].clone();
            let argument = aggregate.argument.map(|a| column(a.column()));
            let combined;
            let mask = match &argument {
                Some(array) => {
                    combined =
                        crate::arrays::combine_with_validity(kernels, mask, array.as_ref(), len);
                    combined.as_deref().or(mask)
                }
                None => mask,
            };
            let groups = &self.group_ids[..if grouped { len } else { 0 }];
            match &mut self.accumulators[index] {
                Accumulator::Count(counts) => {
                    if grouped {
                        kernels.group_count(groups, mask, counts);
                    } else {
                        counts[0] += mask.map_or(len as u64, |m| kernels.count_ones(m) as u64);
                    }
                }
                Accumulator::SumFloat(sums, counts) => {
                    let array = argument
                        .as_ref()
                        .ok_or_else(|| Error::Internal("SUM without argument".into()))?;
                    let values = array.as_primitive::<Float64Type>().values();
                    if grouped {
                        kernels.group_sum_f64(groups, values, mask, sums, counts);
                    } else {
                        let (sum, count) = kernels.sum_f64(values, mask);
                        sums[0] += sum;
                        counts[0] += count;
                    }
                }
                Accumulator::SumInt(sums, counts) => {
                    let array = argument
                        .as_ref()
                        .ok_or_else(|| Error::Internal("SUM without argument".into()))?;
                    let values: &[i64] = match crate::arrays::i64_values(array) {
                        Some(values) => values,
                        None => {
                            let narrow = crate::arrays::i32_values(array).unwrap_or(&[]);
                            self.widened.clear();
                            self.widened.extend(narrow.iter().map(|&v| v as i64));
                            &self.widened
                        }
                    };
                    if grouped {
                        kernels.group_sum_i64(groups, values, mask, sums, counts);
                    } else {
                        let (sum, count) = kernels.sum_i64(values, mask);
                        sums[0] += sum;
                        counts[0] += count;
                    }
                }
                Accumulator::SumDecimal(sums, counts) => {
                    let array = argument
                        .as_ref()
                        .ok_or_else(|| Error::Internal("SUM without argument".into()))?;
                    let values = array
                        .as_primitive_opt::<Decimal128Type>()
                        .ok_or_else(|| {
                            Error::Internal(format!("decimal SUM over {}", array.data_type()))
                        })?
                        .values();
                    // At most 18 digits, a value fits an i64 and any number of them sum
                    // within an i128 (|v| < 2^60): the integer kernels add a piece, exactly.
                    let narrow = matches!(aggregate.input_type,
                        Some(ColumnType::Decimal { precision, .. }) if precision <= 18);
                    if narrow && (!grouped || sums.len() <= DECIMAL_PIECE_GROUPS_MAX) {
                        let values = &values[..len.min(values.len())];
                        self.widened.clear();
                        self.widened.extend(values.iter().map(|&v| v as i64));
                        if grouped {
                            self.piece_sums.clear();
                            self.piece_sums.resize(sums.len(), 0);
                            self.piece_counts.clear();
                            self.piece_counts.resize(sums.len(), 0);
                            kernels.group_sum_i64(
                                groups,
                                &self.widened,
                                mask,
                                &mut self.piece_sums,
                                &mut self.piece_counts,
                            );
                            for (g, (&sum, &count)) in
                                self.piece_sums.iter().zip(&self.piece_counts).enumerate()
                            {
                                if count > 0 {
                                    sums[g] = sums[g].wrapping_add(i256::from_i128(sum));
                                    counts[g] += count;
                                }
                            }
                        } else {
                            let (sum, count) = kernels.sum_i64(&self.widened, mask);
                            sums[0] = sums[0].wrapping_add(i256::from_i128(sum));
                            counts[0] += count;
                        }
                    } else {
                        let selected =
                            |row: usize| mask.is_none_or(|m| m[row / 64] >> (row % 64) & 1 == 1);
                        for (row, &value) in values.iter().enumerate().take(len) {
                            if selected(row) {
                                let group = if grouped { groups[row] as usize } else { 0 };
                                sums[group] = sums[group].wrapping_add(i256::from_i128(value));
                                counts[group] += 1;
                            }
                        }
                    }
                }
                Accumulator::Extreme { is_min, values } => {
                    let array = argument
                        .as_ref()
                        .ok_or_else(|| Error::Internal("MIN/MAX without argument".into()))?;
                    let expr = aggregate.argument.unwrap_or(ValueExpr::Column(0));
                    if !grouped {
                        if let Some(found) = extreme_row(array, mask, len, *is_min) {
                            if let Some(row) = found {
                                let value = crate::arrays::scalar_at(expr, array, row);
                                if better(&value, &values[0], *is_min) {
                                    values[0] = value;
                                }
                            }
                            continue;
                        }
                    }
                    if grouped
                        && matches!(expr, ValueExpr::Column(_))
                        && extreme_by_group(array, mask, groups, values, *is_min)
                    {
                        continue;
                    }
                    for row in 0..len {
                        if mask.is_some_and(|m| m[row / 64] >> (row % 64) & 1 == 0)
                            || array.is_null(row)
                        {
                            continue;
                        }
                        let group = if grouped { groups[row] as usize } else { 0 };
                        let value = crate::arrays::scalar_at(expr, array, row);
                        if better(&value, &values[group], *is_min) {
                            values[group] = value;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The groups with their key values and states, in group id order. With one key and
    /// every group populated (the common case) the interned values and the accumulators are
    /// moved, not copied.
    pub fn finish(mut self) -> GroupRows {
        if self.keys.is_empty() {
            return GroupRows {
                keys: Vec::new(),
                states: self.accumulators,
                len: 1,
            };
        }
        let kept: Option<Vec<u32>> = (self.unpopulated > 0).then(|| {
            (0..self.groups as u32)
                .filter(|&g| self.populated[g as usize])
                .collect()
        });
        let keys: Vec<Vec<KeyValue>> = if self.keys.len() == 1 {
            let values = std::mem::take(&mut self.interners[0].values);
            vec![match &kept {
                None => values,
                Some(kept) => kept.iter().map(|&g| values[g as usize].clone()).collect(),
            }]
        } else {
            let groups: Vec<u32> = kept
                .clone()
                .unwrap_or_else(|| (0..self.groups as u32).collect());
            let mut columns: Vec<Vec<KeyValue>> =
                vec![Vec::with_capacity(groups.len()); self.keys.len()];
            let mut ids = vec![0u32; self.keys.len()];
            for &group in &groups {
                let mut id = group;
                for k in (1..self.keys.len()).rev() {
                    let (a, b) = self.pairs[k - 1].pairs[id as usize];
                    ids[k] = b;
                    id = a;
                }
                ids[0] = id;
                for (k, &id) in ids.iter().enumerate() {
                    columns[k].push(self.interners[k].values[id as usize].clone());
                }
            }
            columns
        };
        let len = keys[0].len();
        let states = match &kept {
            None => self.accumulators,
            Some(kept) => self.accumulators.iter().map(|a| a.gather(kept)).collect(),
        };
        GroupRows { keys, states, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use std::sync::Arc;

    fn count_by_key(state: GroupState, pages: &[Vec<Option<i64>>]) -> Vec<(KeyValue, u64)> {
        let mut state = state;
        for page in pages {
            let array: ArrayRef = Arc::new(Int64Array::from(page.clone()));
            state
                .update(&Kernels::scalar(), &|_| array.clone(), None, page.len())
                .unwrap();
        }
        let rows = state.finish();
        let mut out: Vec<(KeyValue, u64)> = rows
            .keys(0)
            .iter()
            .cloned()
            .zip(rows.counts(0).unwrap().iter().copied())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_direct_key_range_groups_as_hashing_does_with_values_outside_it() {
        let keys = [ValueExpr::Column(0)];
        let aggregates = [Aggregate {
            function: AggregateFunction::CountStar,
            argument: None,
            input_type: None,
        }];
        let pages = vec![
            vec![Some(5), Some(7), None, Some(5), Some(10)],
            // Outside the range the statistics gave (rows buffered after them), and the ends.
            vec![
                Some(-3),
                Some(11),
                Some(i64::MIN),
                Some(i64::MAX),
                Some(7),
                None,
            ],
            vec![Some(10), Some(5), Some(11)],
        ];
        let hashed = count_by_key(GroupState::new(&keys, &aggregates), &pages);
        let direct = count_by_key(
            GroupState::new(&keys, &aggregates).with_key_range(0, 5, 10),
            &pages,
        );
        assert_eq!(direct, hashed);
        assert_eq!(hashed.len(), 8);
        // A range too large for a table, or reversed, is ignored rather than allocated.
        let wide = GroupState::new(&keys, &aggregates).with_key_range(0, i64::MIN, i64::MAX);
        assert!(wide.memory_bytes() < 1024);
        assert_eq!(count_by_key(wide, &pages), hashed);
        let reversed = GroupState::new(&keys, &aggregates).with_key_range(0, 10, 5);
        assert_eq!(count_by_key(reversed, &pages), hashed);
    }
}
