//! Filter and aggregation kernels over column slices and selection bitmaps, in three
//! implementations chosen once per process: AVX-512 (F/BW/VL), AVX2, and a portable scalar twin.
//! Following memchr's model, a `Kernels` value can only be built for a level the CPU supports, so
//! holding one proves the feature check was done and the `unsafe` calls inside are sound.
//! `TESSERA_FORCE_SCALAR=1` makes `detect` pick the scalar level (CI runs the tests that way too).
//!
//! Bitmaps are `u64` words, bit `i` = row `i`, least significant bit first (Arrow's bit order).
//! Kernels write `words_for(n)` words and leave bits at positions `>= n` zero. A `validity`
//! bitmap marks non-NULL rows; NULL rows are never selected by a comparison.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod scalar;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Number of u64 words for a bitmap of `rows` bits.
pub const fn words_for(rows: usize) -> usize {
    rows.div_ceil(64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// A kernel set for one instruction-set level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    level: Level,
}

/// Dispatches to the level's implementation. SAFETY (for the SIMD arms): a `Kernels` of level
/// Avx2/Avx512 is only constructed after `is_x86_feature_detected!` confirmed the features.
macro_rules! dispatch {
    ($self:ident, $name:ident ( $($arg:expr),* )) => {
        match $self.level {
            Level::Scalar => scalar::$name($($arg),*),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: see the macro's comment: the level proves the CPU features.
            Level::Avx2 => unsafe { avx2::$name($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: see the macro's comment: the level proves the CPU features.
            Level::Avx512 => unsafe { avx512::$name($($arg),*) },
        }
    };
}

impl Kernels {
    /// The best level this CPU supports, or scalar when `TESSERA_FORCE_SCALAR=1`.
    pub fn detect() -> Kernels {
        if std::env::var("TESSERA_FORCE_SCALAR").is_ok_and(|v| v == "1") {
            return Kernels::scalar();
        }
        Kernels::avx512()
            .or_else(Kernels::avx2)
            .unwrap_or_else(Kernels::scalar)
    }

    pub fn scalar() -> Kernels {
        Kernels {
            level: Level::Scalar,
        }
    }

    pub fn avx2() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt") {
            return Some(Kernels { level: Level::Avx2 });
        }
        None
    }

    pub fn avx512() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("popcnt")
        {
            return Some(Kernels {
                level: Level::Avx512,
            });
        }
        None
    }

    /// Every level this CPU supports, scalar first.
    pub fn all_available() -> Vec<Kernels> {
        [Some(Kernels::scalar()), Kernels::avx2(), Kernels::avx512()]
            .into_iter()
            .flatten()
            .collect()
    }

    pub fn name(&self) -> &'static str {
        match self.level {
            Level::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => "avx512",
        }
    }

    pub fn cmp_i64(
        &self,
        values: &[i64],
        op: CmpOp,
        rhs: i64,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(self, cmp_i64(values, op, rhs, validity, out))
    }

    pub fn cmp_i32(
        &self,
        values: &[i32],
        op: CmpOp,
        rhs: i32,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(self, cmp_i32(values, op, rhs, validity, out))
    }

    /// PostgreSQL's order (`value::float_cmp`): NaN equals NaN and is greater than every
    /// number; `-0.0 == 0.0`.
    pub fn cmp_f64(
        &self,
        values: &[f64],
        op: CmpOp,
        rhs: f64,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(self, cmp_f64(values, op, rhs, validity, out))
    }

    /// `low <= v <= high` (floats in PostgreSQL's order, as `cmp_f64`).
    pub fn between_i64(
        &self,
        values: &[i64],
        low: i64,
        high: i64,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(self, between_i64(values, low, high, validity, out))
    }

    pub fn between_i32(
        &self,
        values: &[i32],
        low: i32,
        high: i32,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(self, between_i32(values, low, high, validity, out))
    }

    pub fn between_f64(
        &self,
        values: &[f64],
        low: f64,
        high: f64,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(self, between_f64(values, low, high, validity, out))
    }

    pub fn in_i64(&self, values: &[i64], set: &[i64], validity: Option<&[u64]>, out: &mut [u64]) {
        dispatch!(self, in_i64(values, set, validity, out))
    }

    pub fn in_i32(&self, values: &[i32], set: &[i32], validity: Option<&[u64]>, out: &mut [u64]) {
        dispatch!(self, in_i32(values, set, validity, out))
    }

    /// A NaN in `set` matches NaN values (PostgreSQL's equality).
    pub fn in_f64(&self, values: &[f64], set: &[f64], validity: Option<&[u64]>, out: &mut [u64]) {
        dispatch!(self, in_f64(values, set, validity, out))
    }

    /// Row i selected iff `0 <= codes[i] < dictionary_len` and bit `codes[i]` of `dictionary_mask`
    /// is set (the predicate evaluated once per dictionary entry).
    pub fn select_codes(
        &self,
        codes: &[i32],
        dictionary_mask: &[u64],
        dictionary_len: usize,
        validity: Option<&[u64]>,
        out: &mut [u64],
    ) {
        dispatch!(
            self,
            select_codes(codes, dictionary_mask, dictionary_len, validity, out)
        )
    }

    pub fn is_null(&self, validity: Option<&[u64]>, n: usize, out: &mut [u64]) {
        scalar::is_null(validity, n, out)
    }

    pub fn is_not_null(&self, validity: Option<&[u64]>, n: usize, out: &mut [u64]) {
        scalar::is_not_null(validity, n, out)
    }

    pub fn and(&self, dst: &mut [u64], src: &[u64]) {
        dispatch!(self, and(dst, src))
    }

    pub fn or(&self, dst: &mut [u64], src: &[u64]) {
        dispatch!(self, or(dst, src))
    }

    pub fn and_not(&self, dst: &mut [u64], src: &[u64]) {
        dispatch!(self, and_not(dst, src))
    }

    /// Inverts the first `n` bits; bits past `n` stay zero.
    pub fn not(&self, dst: &mut [u64], n: usize) {
        dispatch!(self, not(dst, n))
    }

    pub fn count_ones(&self, words: &[u64]) -> usize {
        dispatch!(self, count_ones(words))
    }

    /// Sum and count of the rows `mask` selects (all when None).
    pub fn sum_f64(&self, values: &[f64], mask: Option<&[u64]>) -> (f64, u64) {
        dispatch!(self, sum_f64(values, mask))
    }

    /// Exact sum and count of the selected rows.
    pub fn sum_i64(&self, values: &[i64], mask: Option<&[u64]>) -> (i128, u64) {
        dispatch!(self, sum_i64(values, mask))
    }

    /// `sums[groups[i]] += values[i]; counts[groups[i]] += 1` for selected rows; group ids out of
    /// range are skipped.
    pub fn group_sum_f64(
        &self,
        groups: &[u32],
        values: &[f64],
        mask: Option<&[u64]>,
        sums: &mut [f64],
        counts: &mut [u64],
    ) {
        dispatch!(self, group_sum_f64(groups, values, mask, sums, counts))
    }

    pub fn group_sum_i64(
        &self,
        groups: &[u32],
        values: &[i64],
        mask: Option<&[u64]>,
        sums: &mut [i128],
        counts: &mut [u64],
    ) {
        dispatch!(self, group_sum_i64(groups, values, mask, sums, counts))
    }

    pub fn group_count(&self, groups: &[u32], mask: Option<&[u64]>, counts: &mut [u64]) {
        dispatch!(self, group_count(groups, mask, counts))
    }
}

#[cfg(test)]
mod tests;
