//! AVX2 kernels: 256-bit compares turned into bits with `movemask`, a gather for dictionary-code
//! selection, and the scalar bodies recompiled with AVX2 for the rest.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: callers hold a `Kernels` of
//! this level, which exists only after the features were detected.

use super::scalar;
use super::CmpOp;
use std::arch::x86_64::*;

macro_rules! recompiled {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)?;)*) => {$(
        #[target_feature(enable = "avx2,popcnt")]
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
    sum_f64(values: &[f64], mask: Option<&[u64]>) -> (f64, u64);
    sum_i64(values: &[i64], mask: Option<&[u64]>) -> (i128, u64);
    group_sum_f64(groups: &[u32], values: &[f64], mask: Option<&[u64]>, sums: &mut [f64], counts: &mut [u64]);
    group_sum_i64(groups: &[u32], values: &[i64], mask: Option<&[u64]>, sums: &mut [i128], counts: &mut [u64]);
    group_count(groups: &[u32], mask: Option<&[u64]>, counts: &mut [u64]);
}

/// Writes whole 64-row words with `word(base) -> bits`, then the tail with `tail(i)`.
#[inline(always)]
fn words(
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

/// 4 bits from a 64-bit-lane compare result.
#[inline(always)]
unsafe fn bits64(m: __m256i) -> u64 {
    _mm256_movemask_pd(_mm256_castsi256_pd(m)) as u32 as u64
}

/// 8 bits from a 32-bit-lane compare result.
#[inline(always)]
unsafe fn bits32(m: __m256i) -> u64 {
    _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32 as u64
}

macro_rules! int_kernels {
    ($cmp:ident, $between:ident, $in:ident, $t:ty, $lanes:expr, $set1:ident, $eq:ident, $gt:ident, $bits:ident) => {
        #[target_feature(enable = "avx2,popcnt")]
        pub unsafe fn $cmp(
            values: &[$t],
            op: CmpOp,
            rhs: $t,
            validity: Option<&[u64]>,
            out: &mut [u64],
        ) {
            let r = $set1(rhs);
            let p = values.as_ptr();
            let all = (1u64 << $lanes) - 1;
            // (compare, invert): Lt is r > v, Le is !(v > r), Ge is !(r > v), Ne is !(v == r).
            let word = |base: usize| {
                let mut bits = 0u64;
                for k in 0..64 / $lanes {
                    // SAFETY: base + 64 <= values.len() for whole words; features checked by the caller.
                    let lane_bits = unsafe {
                        let v = _mm256_loadu_si256(p.add(base + k * $lanes) as *const __m256i);
                        match op {
                            CmpOp::Eq => $bits($eq(v, r)),
                            CmpOp::Ne => $bits($eq(v, r)) ^ all,
                            CmpOp::Gt => $bits($gt(v, r)),
                            CmpOp::Lt => $bits($gt(r, v)),
                            CmpOp::Le => $bits($gt(v, r)) ^ all,
                            CmpOp::Ge => $bits($gt(r, v)) ^ all,
                        }
                    };
                    bits |= lane_bits << (k * $lanes);
                }
                bits
            };
            words(values.len(), validity, out, word, |i| {
                scalar::holds(values[i], op, rhs)
            })
        }

        #[target_feature(enable = "avx2,popcnt")]
        pub unsafe fn $between(
            values: &[$t],
            low: $t,
            high: $t,
            validity: Option<&[u64]>,
            out: &mut [u64],
        ) {
            let (l, h) = ($set1(low), $set1(high));
            let p = values.as_ptr();
            let all = (1u64 << $lanes) - 1;
            words(
                values.len(),
                validity,
                out,
                |base| {
                    let mut bits = 0u64;
                    for k in 0..64 / $lanes {
                        // SAFETY: base + 64 <= values.len() for whole words; features checked by the caller.
                        let lane_bits = unsafe {
                            let v = _mm256_loadu_si256(p.add(base + k * $lanes) as *const __m256i);
                            // low <= v <= high  ==  !(low > v) && !(v > high)
                            $bits(_mm256_or_si256($gt(l, v), $gt(v, h))) ^ all
                        };
                        bits |= lane_bits << (k * $lanes);
                    }
                    bits
                },
                |i| values[i] >= low && values[i] <= high,
            )
        }

        #[target_feature(enable = "avx2,popcnt")]
        pub unsafe fn $in(values: &[$t], set: &[$t], validity: Option<&[u64]>, out: &mut [u64]) {
            if set.len() > SET_IN_REGISTERS_MAX {
                return scalar::in_set(values, set, validity, out);
            }
            let needles: Vec<__m256i> = set.iter().map(|&s| $set1(s)).collect();
            let p = values.as_ptr();
            words(
                values.len(),
                validity,
                out,
                |base| {
                    let mut bits = 0u64;
                    for k in 0..64 / $lanes {
                        // SAFETY: base + 64 <= values.len() for whole words; features checked by the caller.
                        let lane_bits = unsafe {
                            let v = _mm256_loadu_si256(p.add(base + k * $lanes) as *const __m256i);
                            let mut m = _mm256_setzero_si256();
                            for needle in &needles {
                                m = _mm256_or_si256(m, $eq(v, *needle));
                            }
                            $bits(m)
                        };
                        bits |= lane_bits << (k * $lanes);
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

int_kernels!(
    cmp_i64,
    between_i64,
    in_i64,
    i64,
    4,
    _mm256_set1_epi64x,
    _mm256_cmpeq_epi64,
    _mm256_cmpgt_epi64,
    bits64
);
int_kernels!(
    cmp_i32,
    between_i32,
    in_i32,
    i32,
    8,
    _mm256_set1_epi32,
    _mm256_cmpeq_epi32,
    _mm256_cmpgt_epi32,
    bits32
);

#[target_feature(enable = "avx2,popcnt")]
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
    let r = _mm256_set1_pd(rhs);
    let p = values.as_ptr();
    macro_rules! run {
        ($imm:expr) => {
            words(values.len(), validity, out, |base| {
                let mut bits = 0u64;
                for k in 0..16 {
                    // SAFETY: base + 64 <= values.len() for whole words; features checked by the caller.
                    let lane_bits = unsafe { _mm256_movemask_pd(_mm256_cmp_pd::<{ $imm }>(_mm256_loadu_pd(p.add(base + k * 4)), r)) };
                    bits |= (lane_bits as u32 as u64) << (k * 4);
                }
                bits
            }, |i| scalar::holds_f64(values[i], op, rhs))
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

#[target_feature(enable = "avx2,popcnt")]
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
    let (l, h) = (_mm256_set1_pd(low), _mm256_set1_pd(high));
    let p = values.as_ptr();
    words(
        values.len(),
        validity,
        out,
        |base| {
            let mut bits = 0u64;
            for k in 0..16 {
                // SAFETY: base + 64 <= values.len() for whole words; features checked by the caller.
                let lane_bits = unsafe {
                    let v = _mm256_loadu_pd(p.add(base + k * 4));
                    _mm256_movemask_pd(_mm256_and_pd(
                        _mm256_cmp_pd::<_CMP_GE_OQ>(v, l),
                        _mm256_cmp_pd::<_CMP_LE_OQ>(v, h),
                    ))
                };
                bits |= (lane_bits as u32 as u64) << (k * 4);
            }
            bits
        },
        |i| values[i] >= low && values[i] <= high,
    )
}

#[target_feature(enable = "avx2,popcnt")]
pub unsafe fn in_f64(values: &[f64], set: &[f64], validity: Option<&[u64]>, out: &mut [u64]) {
    // A NaN needle needs a NaN test rather than an equality: the scalar twin handles both.
    if set.len() > SET_IN_REGISTERS_MAX || set.iter().any(|s| s.is_nan()) {
        return scalar::in_f64(values, set, validity, out);
    }
    let needles: Vec<__m256d> = set.iter().map(|&s| _mm256_set1_pd(s)).collect();
    let p = values.as_ptr();
    words(
        values.len(),
        validity,
        out,
        |base| {
            let mut bits = 0u64;
            for k in 0..16 {
                // SAFETY: base + 64 <= values.len() for whole words; features checked by the caller.
                let lane_bits = unsafe {
                    let v = _mm256_loadu_pd(p.add(base + k * 4));
                    let mut m = _mm256_setzero_pd();
                    for needle in &needles {
                        m = _mm256_or_pd(m, _mm256_cmp_pd::<_CMP_EQ_OQ>(v, *needle));
                    }
                    _mm256_movemask_pd(m)
                };
                bits |= (lane_bits as u32 as u64) << (k * 4);
            }
            bits
        },
        |i| set.contains(&values[i]),
    )
}

#[target_feature(enable = "avx2,popcnt")]
pub unsafe fn select_codes(
    codes: &[i32],
    dictionary_mask: &[u64],
    dictionary_len: usize,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    let len = dictionary_len.min(dictionary_mask.len() * 64);
    let table: Vec<i32> = (0..len.max(1))
        .map(|e| (e < len && scalar::bit(dictionary_mask, e)) as i32)
        .collect();
    let limit = _mm256_set1_epi32(len.min(i32::MAX as usize) as i32);
    let minus_one = _mm256_set1_epi32(-1);
    let p = codes.as_ptr();
    words(
        codes.len(),
        validity,
        out,
        |base| {
            let mut bits = 0u64;
            for k in 0..8 {
                // SAFETY: base + 64 <= codes.len() for whole words; lanes are gathered only where
                // 0 <= code < len <= table.len(); features checked by the caller.
                let lane_bits = unsafe {
                    let c = _mm256_loadu_si256(p.add(base + k * 8) as *const __m256i);
                    let in_range = _mm256_and_si256(
                        _mm256_cmpgt_epi32(c, minus_one),
                        _mm256_cmpgt_epi32(limit, c),
                    );
                    let hit = _mm256_mask_i32gather_epi32::<4>(
                        _mm256_setzero_si256(),
                        table.as_ptr(),
                        c,
                        in_range,
                    );
                    bits32(_mm256_cmpgt_epi32(hit, _mm256_setzero_si256()))
                };
                bits |= lane_bits << (k * 8);
            }
            bits
        },
        |i| {
            let code = codes[i] as u32 as usize;
            code < len && scalar::bit(dictionary_mask, code)
        },
    )
}
