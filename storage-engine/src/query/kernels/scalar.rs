//! Portable scalar kernels: the reference twins of the SIMD kernels, and the bodies that the
//! AVX2/AVX-512 modules recompile under `#[target_feature]` where auto-vectorisation suffices
//! (bitmap logic, popcount, grouped accumulation). Everything is `#[inline(always)]` so that
//! recompilation picks up the wider instructions.

use super::{words_for, CmpOp};

#[inline(always)]
pub fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] >> (i % 64) & 1 == 1
}

#[inline(always)]
pub fn holds<T: PartialOrd>(a: T, op: CmpOp, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// Sets `out` bits for rows `start..n` where `test(i)` holds (bits of whole words from `start`,
/// which must be a multiple of 64), then clears bits past `n` and applies `validity`.
#[inline(always)]
pub fn fill_from(
    start: usize,
    n: usize,
    validity: Option<&[u64]>,
    out: &mut [u64],
    test: impl Fn(usize) -> bool,
) {
    let words = words_for(n);
    for (word, slot) in out[..words].iter_mut().enumerate().skip(start / 64) {
        let base = word * 64;
        let end = (base + 64).min(n);
        let mut bits = 0u64;
        for i in base..end {
            bits |= (test(i) as u64) << (i - base);
        }
        *slot = bits;
    }
    finish(n, validity, out);
}

/// ANDs validity into the first `words_for(n)` words and clears bits past `n`.
#[inline(always)]
pub fn finish(n: usize, validity: Option<&[u64]>, out: &mut [u64]) {
    let words = words_for(n);
    if let Some(validity) = validity {
        for (o, v) in out[..words].iter_mut().zip(validity) {
            *o &= v;
        }
    }
    if !n.is_multiple_of(64) {
        out[words - 1] &= (1u64 << (n % 64)) - 1;
    }
}

#[inline(always)]
pub fn cmp<T: PartialOrd + Copy>(
    values: &[T],
    op: CmpOp,
    rhs: T,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    match op {
        // One loop per operator so each vectorises without a per-row branch.
        CmpOp::Eq => fill_from(0, values.len(), validity, out, |i| values[i] == rhs),
        CmpOp::Ne => fill_from(0, values.len(), validity, out, |i| values[i] != rhs),
        CmpOp::Lt => fill_from(0, values.len(), validity, out, |i| values[i] < rhs),
        CmpOp::Le => fill_from(0, values.len(), validity, out, |i| values[i] <= rhs),
        CmpOp::Gt => fill_from(0, values.len(), validity, out, |i| values[i] > rhs),
        CmpOp::Ge => fill_from(0, values.len(), validity, out, |i| {
            holds(values[i], CmpOp::Ge, rhs)
        }),
    }
}

#[inline(always)]
pub fn between<T: PartialOrd + Copy>(
    values: &[T],
    low: T,
    high: T,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    fill_from(0, values.len(), validity, out, |i| {
        values[i] >= low && values[i] <= high
    })
}

#[inline(always)]
pub fn in_set<T: PartialEq + Copy>(
    values: &[T],
    set: &[T],
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    fill_from(0, values.len(), validity, out, |i| set.contains(&values[i]))
}

#[inline(always)]
pub fn select_codes(
    codes: &[i32],
    dictionary_mask: &[u64],
    dictionary_len: usize,
    validity: Option<&[u64]>,
    out: &mut [u64],
) {
    let len = dictionary_len.min(dictionary_mask.len() * 64);
    fill_from(0, codes.len(), validity, out, |i| {
        let code = codes[i] as u32 as usize;
        code < len && bit(dictionary_mask, code)
    })
}

#[inline(always)]
pub fn is_null(validity: Option<&[u64]>, n: usize, out: &mut [u64]) {
    let words = words_for(n);
    match validity {
        None => out[..words].fill(0),
        Some(v) => out[..words].iter_mut().zip(v).for_each(|(o, v)| *o = !v),
    }
    finish(n, None, out);
}

#[inline(always)]
pub fn is_not_null(validity: Option<&[u64]>, n: usize, out: &mut [u64]) {
    let words = words_for(n);
    match validity {
        None => out[..words].fill(u64::MAX),
        Some(v) => out[..words].iter_mut().zip(v).for_each(|(o, v)| *o = *v),
    }
    finish(n, None, out);
}

#[inline(always)]
pub fn and(dst: &mut [u64], src: &[u64]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d &= s);
}

#[inline(always)]
pub fn or(dst: &mut [u64], src: &[u64]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d |= s);
}

#[inline(always)]
pub fn and_not(dst: &mut [u64], src: &[u64]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d &= !s);
}

#[inline(always)]
pub fn not(dst: &mut [u64], n: usize) {
    let words = words_for(n).min(dst.len());
    dst[..words].iter_mut().for_each(|d| *d = !*d);
    if !n.is_multiple_of(64) && words > 0 {
        dst[words - 1] &= (1u64 << (n % 64)) - 1;
    }
}

#[inline(always)]
pub fn count_ones(words: &[u64]) -> usize {
    words.iter().map(|w| w.count_ones() as usize).sum()
}

#[inline(always)]
fn selected(mask: Option<&[u64]>, i: usize) -> bool {
    mask.is_none_or(|m| bit(m, i))
}

#[inline(always)]
pub fn sum_f64(values: &[f64], mask: Option<&[u64]>) -> (f64, u64) {
    // Four lanes of partial sums; masked rows add 0.0 so the loop has no branch.
    let mut sums = [0.0f64; 8];
    let mut count = 0u64;
    match mask {
        None => {
            let chunks = values.chunks_exact(8);
            let rest = chunks.remainder();
            for chunk in chunks {
                for lane in 0..8 {
                    sums[lane] += chunk[lane];
                }
            }
            sums[0] += rest.iter().sum::<f64>();
            count = values.len() as u64;
        }
        Some(mask) => {
            for (word_index, chunk) in values.chunks(64).enumerate() {
                let word = mask[word_index];
                count += (word
                    & if chunk.len() == 64 {
                        u64::MAX
                    } else {
                        (1u64 << chunk.len()) - 1
                    })
                .count_ones() as u64;
                for (i, v) in chunk.iter().enumerate() {
                    let take = (word >> i) & 1 == 1;
                    sums[i % 8] += if take { *v } else { 0.0 };
                }
            }
        }
    }
    (sums.iter().sum(), count)
}

/// Exact sum: each value splits into a signed high and an unsigned low 32-bit half; each half
/// sums in an i64 without overflow for up to 2^31 values, so blocks are capped at that.
#[inline(always)]
pub fn sum_i64(values: &[i64], mask: Option<&[u64]>) -> (i128, u64) {
    const BLOCK: usize = 1 << 30;
    let mut total = 0i128;
    let mut count = 0u64;
    for (block_index, block) in values.chunks(BLOCK).enumerate() {
        let base = block_index * BLOCK;
        let (mut high, mut low) = (0i64, 0i64);
        for (i, &v) in block.iter().enumerate() {
            let take = selected(mask, base + i) as i64;
            high += (v >> 32) * take;
            low += (v & 0xFFFF_FFFF) * take;
            count += take as u64;
        }
        total += ((high as i128) << 32) + low as i128;
    }
    (total, count)
}

#[inline(always)]
pub fn group_sum_f64(
    groups: &[u32],
    values: &[f64],
    mask: Option<&[u64]>,
    sums: &mut [f64],
    counts: &mut [u64],
) {
    let n = groups.len().min(values.len());
    let limit = sums.len().min(counts.len());
    if limit <= SPLIT_GROUPS_MAX && n >= SPLIT_ROWS_MIN {
        split_group_sum(&groups[..n], &values[..n], mask, sums, counts, |v| v);
        return;
    }
    for i in 0..n {
        let group = groups[i] as usize;
        if group < limit && selected(mask, i) {
            sums[group] += values[i];
            counts[group] += 1;
        }
    }
}

/// Grouped sums over few groups: skewed keys make consecutive rows hit the same accumulator, and
/// each add waits for the previous one; four interleaved private tables break that chain.
/// Unselected and out-of-range rows go to a spare slot (`limit`) instead of a branch.
#[inline(always)]
fn split_group_sum<V: Copy, S: Copy + Default + std::ops::AddAssign>(
    groups: &[u32],
    values: &[V],
    mask: Option<&[u64]>,
    sums: &mut [S],
    counts: &mut [u64],
    widen: impl Fn(V) -> S,
) {
    let limit = sums.len().min(counts.len());
    let width = limit + 1;
    let mut local_sums = vec![S::default(); 4 * width];
    let mut local_counts = vec![0u64; 4 * width];
    for (w, (group_chunk, value_chunk)) in groups.chunks(64).zip(values.chunks(64)).enumerate() {
        let word = mask.map_or(u64::MAX, |m| m[w]);
        for (j, (&group, &value)) in group_chunk.iter().zip(value_chunk).enumerate() {
            let take = (word >> j) & 1 == 1;
            let group = if take {
                (group as usize).min(limit)
            } else {
                limit
            };
            let slot = (j & 3) * width + group;
            local_sums[slot] += widen(value);
            local_counts[slot] += 1;
        }
    }
    for lane in 0..4 {
        for group in 0..limit {
            sums[group] += local_sums[lane * width + group];
            counts[group] += local_counts[lane * width + group];
        }
    }
}

/// Grouped sums use interleaved private tables up to this many groups...
const SPLIT_GROUPS_MAX: usize = 1024;
/// ...when at least this many rows amortise setting them up.
const SPLIT_ROWS_MIN: usize = 4096;

#[inline(always)]
pub fn group_sum_i64(
    groups: &[u32],
    values: &[i64],
    mask: Option<&[u64]>,
    sums: &mut [i128],
    counts: &mut [u64],
) {
    let n = groups.len().min(values.len());
    let limit = sums.len().min(counts.len());
    if limit <= SPLIT_GROUPS_MAX && n >= SPLIT_ROWS_MIN {
        // Integer sums are exact in any order.
        split_group_sum(&groups[..n], &values[..n], mask, sums, counts, |v| {
            v as i128
        });
        return;
    }
    for i in 0..n {
        let group = groups[i] as usize;
        if group < limit && selected(mask, i) {
            sums[group] += values[i] as i128;
            counts[group] += 1;
        }
    }
}

#[inline(always)]
pub fn group_count(groups: &[u32], mask: Option<&[u64]>, counts: &mut [u64]) {
    for (i, &group) in groups.iter().enumerate() {
        let group = group as usize;
        if group < counts.len() && selected(mask, i) {
            counts[group] += 1;
        }
    }
}

// Named entry points (the dispatch macro calls every level by the same names).

#[inline(always)]
pub fn cmp_i64(values: &[i64], op: CmpOp, rhs: i64, validity: Option<&[u64]>, out: &mut [u64]) {
    cmp(values, op, rhs, validity, out)
}

#[inline(always)]
pub fn cmp_i32(values: &[i32], op: CmpOp, rhs: i32, validity: Option<&[u64]>, out: &mut [u64]) {
    cmp(values, op, rhs, validity, out)
}

/// PostgreSQL's comparison of floats (`value::float_cmp`): NaN equals NaN and is above every
/// number; `-0.0 == 0.0`.
#[inline(always)]
pub fn holds_f64(a: f64, op: CmpOp, b: f64) -> bool {
    if b.is_nan() {
        return match op {
            CmpOp::Eq | CmpOp::Ge => a.is_nan(),
            CmpOp::Ne | CmpOp::Lt => !a.is_nan(),
            CmpOp::Le => true,
            CmpOp::Gt => false,
        };
    }
    // A number on the right: IEEE's answer, except that a NaN on the left is greater.
    match op {
        CmpOp::Gt => a > b || a.is_nan(),
        CmpOp::Ge => a >= b || a.is_nan(),
        _ => holds(a, op, b),
    }
}

#[inline(always)]
pub fn cmp_f64(values: &[f64], op: CmpOp, rhs: f64, validity: Option<&[u64]>, out: &mut [u64]) {
    let n = values.len();
    if rhs.is_nan() {
        return fill_from(0, n, validity, out, |i| holds_f64(values[i], op, rhs));
    }
    match op {
        // One loop per operator so each vectorises without a per-row branch.
        CmpOp::Gt => fill_from(0, n, validity, out, |i| {
            values[i] > rhs || values[i].is_nan()
        }),
        CmpOp::Ge => fill_from(0, n, validity, out, |i| {
            values[i] >= rhs || values[i].is_nan()
        }),
        _ => cmp(values, op, rhs, validity, out),
    }
}

#[inline(always)]
pub fn between_i64(values: &[i64], low: i64, high: i64, validity: Option<&[u64]>, out: &mut [u64]) {
    between(values, low, high, validity, out)
}

#[inline(always)]
pub fn between_i32(values: &[i32], low: i32, high: i32, validity: Option<&[u64]>, out: &mut [u64]) {
    between(values, low, high, validity, out)
}

/// `low <= v <= high` in PostgreSQL's order (`holds_f64`).
#[inline(always)]
pub fn between_f64(values: &[f64], low: f64, high: f64, validity: Option<&[u64]>, out: &mut [u64]) {
    if low.is_nan() || high.is_nan() {
        return fill_from(0, values.len(), validity, out, |i| {
            holds_f64(values[i], CmpOp::Ge, low) && holds_f64(values[i], CmpOp::Le, high)
        });
    }
    // Number bounds: `v <= high` is false on NaN, as PostgreSQL's order says.
    between(values, low, high, validity, out)
}

#[inline(always)]
pub fn in_i64(values: &[i64], set: &[i64], validity: Option<&[u64]>, out: &mut [u64]) {
    in_set(values, set, validity, out)
}

#[inline(always)]
pub fn in_i32(values: &[i32], set: &[i32], validity: Option<&[u64]>, out: &mut [u64]) {
    in_set(values, set, validity, out)
}

/// Membership with PostgreSQL's equality (a NaN in the set matches NaN values).
#[inline(always)]
pub fn in_f64(values: &[f64], set: &[f64], validity: Option<&[u64]>, out: &mut [u64]) {
    if set.iter().any(|s| s.is_nan()) {
        return fill_from(0, values.len(), validity, out, |i| {
            values[i].is_nan() || set.contains(&values[i])
        });
    }
    in_set(values, set, validity, out)
}
