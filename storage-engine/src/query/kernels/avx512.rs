//! AVX-512 (F/BW/VL) kernels. Comparisons write one mask bit per lane straight from the compare
//! instructions; dictionary-code selection looks codes up in a 32-entry in-register table (or a
//! gather for larger dictionaries); masked sums use mask registers. The remaining kernels are the
//! scalar bodies recompiled with these features (the compiler vectorises them).
//!
//! Every function is `unsafe` only because of `#[target_feature]`: callers hold a `Kernels` of
//! this level, which exists only after the features were detected.

use super::scalar;
use super::CmpOp;
use std::arch::x86_64::*;

macro_rules! recompiled {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)?;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
        pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
            scalar::$name($($arg),*)
        }
    )*};
}

recompiled! {
    and(dst: &mut [u64], src: &[u64]);
    or(dst: &mut [u64], src: &[u64]);
    and_not(dst: &mut [u64], src: &[u64]);
    not(dst: &mut [u64], n: usize);
    count_ones(words: &[u64]) -> usize;
    sum_i64(values: &[i64], mask: Option<&[u64]>) -> (i128, u64);
    group_sum_f64(groups: &[u32], values: &[f64], mask: Option<&[u64]>, sums: &mut [f64], counts: &mut [u64]);
    group_sum_i64(groups: &[u32], values: &[i64], mask: Option<&[u64]>, sums: &mut [i128], counts: &mut [u64]);
    group_count(groups: &[u32], mask: Option<&[u64]>, counts: &mut [u64]);
}

/// Writes whole 64-row words with `word(base) -> bits`, then the tail with `tail(i)`.
#[inline(always)]
unsafe fn words(
    n: usize,
    validity: Option<&[u64]>,
    out: &mut [u64],
    word: impl Fn(usize) -> u64,
    tail: impl Fn(usize) -> bool,
) {
    let full = n / 64;
    for (w, slot) in out[..full].iter_mut().enumerate() {
        *slot = word(w * 64);
    }
    scalar::fill_from(full * 64, n, validity, out, tail);
}

macro_rules! int_compare {
    ($name:ident, $between:ident, $in:ident, $t:ty, $lanes:expr, $set1:ident, $cmp:ident, $mask_t:ty) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
        pub unsafe fn $name(
            values: &[$t],
            op: CmpOp,
            rhs: $t,
            validity: Option<&[u64]>,
            out: &mut [u64],
        ) {
            let r = $set1(rhs);
            let p = values.as_ptr();
            macro_rules! run {
                ($imm:expr) => {
                    words(
                        values.len(),
                        validity,
                        out,
                        |base| {
                            let mut bits = 0u64;
                            for k in 0..64 / $lanes {
                                // SAFETY: base + 64 <= values.len() for whole words.
                                let v = unsafe {
                                    _mm512_loadu_si512(p.add(base + k * $lanes) as *const _)
                                };
                                bits |= ($cmp::<{ $imm }>(v, r) as $mask_t as u64) << (k * $lanes);
                            }
                            bits
                        },
                        |i| scalar::holds(values[i], op, rhs),
                    )
                };
            }
            match op {
                CmpOp::Eq => run!(_MM_CMPINT_EQ),
                CmpOp::Ne => run!(_MM_CMPINT_NE),
                CmpOp::Lt => run!(_MM_CMPINT_LT),
                CmpOp::Le => run!(_MM_CMPINT_LE),
                CmpOp::Gt => run!(_MM_CMPINT_NLE),
                CmpOp::Ge => run!(_MM_CMPINT_NLT),
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
        pub unsafe fn $between(
            values: &[$t],
            low: $t,
            high: $t,
            validity: Option<&[u64]>,
            out: &mut [u64],
        ) {
            let (l, h) = ($set1(low), $set1(high));
            let p = values.as_ptr();
            words(
                values.len(),
                validity,
                out,
                |base| {
                    let mut bits = 0u64;
                    for k in 0..64 / $lanes {
                        // SAFETY: base + 64 <= values.len() for whole words.
                        let v = unsafe { _mm512_loadu_si512(p.add(base + k * $lanes) as *const _) };
                        let m = $cmp::<_MM_CMPINT_NLT>(v, l) & $cmp::<_MM_CMPINT_LE>(v, h);
                        bits |= (m as $mask_t as u64) << (k * $lanes);
                    }
                    bits
                },
                |i| values[i] >= low && values[i] <= high,
            )
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
        pub unsafe fn $in(values: &[$t], set: &[$t], validity: Option<&[u64]>, out: &mut [u64]) {
            if set.len() > SET_IN_REGISTERS_MAX {
                return scalar::in_set(values, set, validity, out);
            }
            let needles: Vec<_> = set.iter().map(|&s| $set1(s)).collect();
            let p = values.as_ptr();
            words(
                values.len(),
                validity,
                out,
                |base| {
                    let mut bits = 0u64;
                    for k in 0..64 / $lanes {
                        // SAFETY: base + 64 <= values.len() for whole words.
                        let v = unsafe { _mm512_loadu_si512(p.add(base + k * $lanes) as *const _) };
                        let mut m = 0;
                        for needle in &needles {
                            m |= $cmp::<_MM_CMPINT_EQ>(v, *needle);
                        }
                        bits |= (m as $mask_t as u64) << (k * $lanes);
                    }
                    bits
                },
                |i| set.contains(&values[i]),
            )
        }
    };
}

/// Sets longer than this are tested by the scalar path.
const SET_IN_REGISTERS_MAX: usize = 16;

int_compare!(
    cmp_i64,
    between_i64,
    in_i64,
    i64,
    8,
    _mm512_set1_epi64,
    _mm512_cmp_epi64_mask,
    u8
);
int_compare!(
    cmp_i32,
    between_i32,
    in_i32,
    i32,
    16,
    _mm512_set1_epi32,
    _mm512_cmp_epi32_mask,
    u16
);

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
pub unsafe fn cmp_f64(
    values: &[f64],
    op: CmpOp,
    rhs: f64,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    if rhs.is_nan() {
        // Rare: a NaN constant turns each operator into a NaN test; the scalar twin does it.
        return scalar::cmp_f64(values, op, rhs, validity, out);
    }
    let r = _mm512_set1_pd(rhs);
    let p = values.as_ptr();
    macro_rules! run {
        ($imm:expr) => {
            words(
                values.len(),
                validity,
                out,
                |base| {
                    let mut bits = 0u64;
                    for k in 0..8 {
                        // SAFETY: base + 64 <= values.len() for whole words.
                        let v = unsafe { _mm512_loadu_pd(p.add(base + k * 8)) };
                        bits |= (_mm512_cmp_pd_mask::<{ $imm }>(v, r) as u64) << (k * 8);
                    }
                    bits
                },
                |i| scalar::holds_f64(values[i], op, rhs),
            )
        };
    }
    // PostgreSQL's order with a number on the right: NaN values are only greater (and unequal),
    // so Eq/Lt/Le are the ordered predicates and Ne/Gt/Ge the unordered ones (true on NaN).
    match op {
        CmpOp::Eq => run!(_CMP_EQ_OQ),
        CmpOp::Ne => run!(_CMP_NEQ_UQ),
        CmpOp::Lt => run!(_CMP_LT_OQ),
        CmpOp::Le => run!(_CMP_LE_OQ),
        CmpOp::Gt => run!(_CMP_NLE_UQ),
        CmpOp::Ge => run!(_CMP_NLT_UQ),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
pub unsafe fn between_f64(
    values: &[f64],
    low: f64,
    high: f64,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    if low.is_nan() || high.is_nan() {
        return scalar::between_f64(values, low, high, validity, out);
    }
    // Number bounds: `v <= high` (ordered) is false on NaN, as PostgreSQL's order says.
    let (l, h) = (_mm512_set1_pd(low), _mm512_set1_pd(high));
    let p = values.as_ptr();
    words(
        values.len(),
        validity,
        out,
        |base| {
            let mut bits = 0u64;
            for k in 0..8 {
                // SAFETY: base + 64 <= values.len() for whole words.
                let v = unsafe { _mm512_loadu_pd(p.add(base + k * 8)) };
                let m =
                    _mm512_cmp_pd_mask::<_CMP_GE_OQ>(v, l) & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(v, h);
                bits |= (m as u64) << (k * 8);
            }
            bits
        },
        |i| values[i] >= low && values[i] <= high,
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
pub unsafe fn in_f64(values: &[f64], set: &[f64], validity: Option<&[u64]>, out: &mut [u64]) {
    // A NaN needle needs a NaN test rather than an equality: the scalar twin handles both.
    if set.len() > SET_IN_REGISTERS_MAX || set.iter().any(|s| s.is_nan()) {
        return scalar::in_f64(values, set, validity, out);
    }
    let needles: Vec<__m512d> = set.iter().map(|&s| _mm512_set1_pd(s)).collect();
    let p = values.as_ptr();
    words(
        values.len(),
        validity,
        out,
        |base| {
            let mut bits = 0u64;
            for k in 0..8 {
                // SAFETY: base + 64 <= values.len() for whole words.
                let v = unsafe { _mm512_loadu_pd(p.add(base + k * 8)) };
                let mut m = 0u8;
                for needle in &needles {
                    m |= _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(v, *needle);
                }
                bits |= (m as u64) << (k * 8);
            }
            bits
        },
        |i| set.contains(&values[i]),
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
pub unsafe fn select_codes(
    codes: &[i32],
    dictionary_mask: &[u64],
    dictionary_len: usize,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    let len = dictionary_len.min(dictionary_mask.len() * 64);
    // One i32 per dictionary entry: 1 when the predicate held for it.
    let table: Vec<i32> = (0..len.max(32))
        .map(|e| (e < len && scalar::bit(dictionary_mask, e)) as i32)
        .collect();
    let limit = _mm512_set1_epi32(len.min(i32::MAX as usize) as i32);
    let p = codes.as_ptr();
    let (low, high) = (
        _mm512_loadu_si512(table.as_ptr() as *const _),
        _mm512_loadu_si512(table.as_ptr().add(16) as *const _),
    );
    let small = len <= 32;
    words(
        codes.len(),
        validity,
        out,
        |base| {
            let mut bits = 0u64;
            for k in 0..4 {
                // SAFETY: base + 64 <= codes.len() for whole words.
                let c = unsafe { _mm512_loadu_si512(p.add(base + k * 16) as *const _) };
                // Unsigned compare: negative codes are huge, so out of range.
                let in_range = _mm512_cmplt_epu32_mask(c, limit);
                let hit = if small {
                    _mm512_permutex2var_epi32(low, c, high)
                } else {
                    // SAFETY: lanes are gathered only where 0 <= code < len <= table.len().
                    unsafe {
                        _mm512_mask_i32gather_epi32::<4>(
                            _mm512_setzero_si512(),
                            in_range,
                            c,
                            table.as_ptr() as *const _,
                        )
                    }
                };
                let m = in_range & _mm512_test_epi32_mask(hit, hit);
                bits |= (m as u64) << (k * 16);
            }
            bits
        },
        |i| {
            let code = codes[i] as u32 as usize;
            code < len && scalar::bit(dictionary_mask, code)
        },
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,popcnt")]
pub unsafe fn sum_f64(values: &[f64], mask: Option<&[u64]>) -> (f64, u64) {
    let n = values.len();
    let full = n / 64;
    let p = values.as_ptr();
    let mut accumulators = [_mm512_setzero_pd(); 4];
    let mut count = 0u64;
    for w in 0..full {
        let word = mask.map_or(u64::MAX, |m| m[w]);
        count += word.count_ones() as u64;
        for k in 0..8 {
            let v = _mm512_loadu_pd(p.add(w * 64 + k * 8));
            let lanes = (word >> (k * 8)) as u8;
            accumulators[k % 4] =
                _mm512_mask_add_pd(accumulators[k % 4], lanes, accumulators[k % 4], v);
        }
    }
    let mut sum = 0.0;
    for acc in accumulators {
        sum += _mm512_reduce_add_pd(acc);
    }
    let tail_mask = mask.map(|m| &m[full..]);
    let (tail_sum, tail_count) = scalar::sum_f64(&values[full * 64..], tail_mask);
    (sum + tail_sum, count + tail_count)
}
