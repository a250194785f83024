//! Every level against a naive per-row reference written here (not the scalar kernel), on random
//! data: lengths 0..=300 (every tail), random validity and masks, extreme values, NaN, ±0, ±inf.
//! Floats follow PostgreSQL's order: NaN equals NaN and is above every number, `-0.0 == 0.0`.

use super::*;
use proptest::prelude::*;

fn bit(words: &[u64], i: usize) -> bool {
    words[i / 64] >> (i % 64) & 1 == 1
}

fn reference(n: usize, validity: &Option<Vec<u64>>, test: impl Fn(usize) -> bool) -> Vec<u64> {
    let mut out = vec![0u64; words_for(n)];
    for i in 0..n {
        if validity.as_ref().is_none_or(|v| bit(v, i)) && test(i) {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

fn holds<T: PartialOrd>(a: T, op: CmpOp, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

/// PostgreSQL's order of floats, written out independently of `value::float_cmp`.
fn pg_order(a: f64, b: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ if a < b => Less,
        _ if a > b => Greater,
        _ => Equal,
    }
}

fn holds_pg(a: f64, op: CmpOp, b: f64) -> bool {
    holds(pg_order(a, b), op, std::cmp::Ordering::Equal)
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge)
    ]
}

fn bitmap(n: usize) -> impl Strategy<Value = Option<Vec<u64>>> {
    prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u64>(), words_for(n)).prop_map(Some)
    ]
}

fn i64_value() -> impl Strategy<Value = i64> + Clone {
    prop_oneof![-5i64..5, any::<i64>(), Just(i64::MIN), Just(i64::MAX)]
}

fn i32_value() -> impl Strategy<Value = i32> + Clone {
    prop_oneof![-5i32..5, any::<i32>(), Just(i32::MIN), Just(i32::MAX)]
}

fn f64_value() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        (-5i32..5).prop_map(|v| v as f64 / 2.0),
        any::<f64>(),
        Just(f64::NAN),
        Just(-0.0),
        Just(0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY)
    ]
}

/// Values, a validity bitmap, and a constant often drawn from the values.
fn case<T: Clone + std::fmt::Debug + 'static>(
    value: impl Strategy<Value = T> + Clone + 'static,
) -> impl Strategy<Value = (Vec<T>, Option<Vec<u64>>, T, T)> {
    proptest::collection::vec(value.clone(), 0..=300).prop_flat_map(move |values| {
        let n = values.len();
        let pick = if n == 0 {
            value.clone().boxed()
        } else {
            prop_oneof![proptest::sample::select(values.clone()), value.clone()].boxed()
        };
        (Just(values), bitmap(n), pick.clone(), pick)
    })
}

fn check(n: usize, got: &[u64], expected: &[u64], what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&got[..words_for(n)], expected, "{}", what);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kernels_cmp_i64((values, validity, rhs, _) in case(i64_value()), op in op()) {
        let expected = reference(values.len(), &validity, |i| holds(values[i], op, rhs));
        for kernels in Kernels::all_available() {
            let mut out = vec![u64::MAX; words_for(values.len())];
            kernels.cmp_i64(&values, op, rhs, validity.as_deref(), &mut out);
            check(values.len(), &out, &expected, kernels.name())?;
        }
    }

    #[test]
    fn kernels_cmp_i32((values, validity, rhs, _) in case(i32_value()), op in op()) {
        let expected = reference(values.len(), &validity, |i| holds(values[i], op, rhs));
        for kernels in Kernels::all_available() {
            let mut out = vec![u64::MAX; words_for(values.len())];
            kernels.cmp_i32(&values, op, rhs, validity.as_deref(), &mut out);
            check(values.len(), &out, &expected, kernels.name())?;
        }
    }

    #[test]
    fn kernels_cmp_f64((values, validity, rhs, _) in case(f64_value()), op in op()) {
        let expected = reference(values.len(), &validity, |i| holds_pg(values[i], op, rhs));
        for kernels in Kernels::all_available() {
            let mut out = vec![u64::MAX; words_for(values.len())];
            kernels.cmp_f64(&values, op, rhs, validity.as_deref(), &mut out);
            check(values.len(), &out, &expected, kernels.name())?;
        }
    }

    #[test]
    fn kernels_between((values, validity, a, b) in case(i64_value()), (fvalues, fvalidity, fa, fb) in case(f64_value())) {
        let expected = reference(values.len(), &validity, |i| values[i] >= a && values[i] <= b);
        let narrow: Vec<i32> = values.iter().map(|&v| v as i32).collect();
        let expected_narrow = reference(values.len(), &validity, |i| narrow[i] >= a as i32 && narrow[i] <= b as i32);
        let expected_float = reference(fvalues.len(), &fvalidity, |i| holds_pg(fvalues[i], CmpOp::Ge, fa) && holds_pg(fvalues[i], CmpOp::Le, fb));
        for kernels in Kernels::all_available() {
            let mut out = vec![u64::MAX; words_for(values.len())];
            kernels.between_i64(&values, a, b, validity.as_deref(), &mut out);
            check(values.len(), &out, &expected, kernels.name())?;
            kernels.between_i32(&narrow, a as i32, b as i32, validity.as_deref(), &mut out);
            check(values.len(), &out, &expected_narrow, kernels.name())?;
            let mut out = vec![u64::MAX; words_for(fvalues.len())];
            kernels.between_f64(&fvalues, fa, fb, fvalidity.as_deref(), &mut out);
            check(fvalues.len(), &out, &expected_float, kernels.name())?;
        }
    }

    #[test]
    fn kernels_in((values, validity, a, b) in case(-20i64..20), extra in proptest::collection::vec(-20i64..20, 0..24)) {
        let mut set = vec![a, b];
        set.extend(extra);
        let narrow: Vec<i32> = values.iter().map(|&v| v as i32).collect();
        let narrow_set: Vec<i32> = set.iter().map(|&v| v as i32).collect();
        // Some codes stand for NaN, -0.0 and ±inf, in the values and in the set alike.
        let special = |v: i64| match v {
            13 => f64::NAN,
            14 => -f64::NAN,
            15 => -0.0,
            16 => f64::INFINITY,
            17 => f64::NEG_INFINITY,
            v => v as f64,
        };
        let floats: Vec<f64> = values.iter().map(|&v| special(v)).collect();
        let float_set: Vec<f64> = set.iter().map(|&v| special(v)).collect();
        let expected = reference(values.len(), &validity, |i| set.contains(&values[i]));
        for kernels in Kernels::all_available() {
            for length in [0, 1, 2, set.len().min(16), set.len()] {
                let expected_here = reference(values.len(), &validity, |i| set[..length].contains(&values[i]));
                let mut out = vec![u64::MAX; words_for(values.len())];
                kernels.in_i64(&values, &set[..length], validity.as_deref(), &mut out);
                check(values.len(), &out, &expected_here, kernels.name())?;
                kernels.in_i32(&narrow, &narrow_set[..length], validity.as_deref(), &mut out);
                check(values.len(), &out, &expected_here, kernels.name())?;
                let expected_float = reference(values.len(), &validity, |i| float_set[..length].iter().any(|&s| pg_order(floats[i], s).is_eq()));
                kernels.in_f64(&floats, &float_set[..length], validity.as_deref(), &mut out);
                check(values.len(), &out, &expected_float, kernels.name())?;
            }
            let mut out = vec![0u64; words_for(values.len())];
            kernels.in_i64(&values, &set, validity.as_deref(), &mut out);
            check(values.len(), &out, &expected, kernels.name())?;
        }
    }

    #[test]
    fn kernels_select_codes(
        codes in proptest::collection::vec(-3i32..80, 0..=300),
        dictionary_len in 0usize..80,
        dictionary_mask in proptest::collection::vec(any::<u64>(), 2),
        validity_seed in any::<u64>(),
    ) {
        let validity = (validity_seed % 2 == 1).then(|| (0..words_for(codes.len())).map(|w| validity_seed.rotate_left(w as u32 * 7)).collect::<Vec<u64>>());
        let expected = reference(codes.len(), &validity, |i| codes[i] >= 0 && (codes[i] as usize) < dictionary_len && bit(&dictionary_mask, codes[i] as usize));
        for kernels in Kernels::all_available() {
            let mut out = vec![u64::MAX; words_for(codes.len())];
            kernels.select_codes(&codes, &dictionary_mask, dictionary_len, validity.as_deref(), &mut out);
            check(codes.len(), &out, &expected, kernels.name())?;
        }
    }

    #[test]
    fn kernels_bitmap_logic(n in 0usize..300, a_seed in any::<u64>(), b_seed in any::<u64>()) {
        let a: Vec<u64> = (0..words_for(n)).map(|w| a_seed.rotate_left(w as u32 * 13) ^ w as u64).collect();
        let b: Vec<u64> = (0..words_for(n)).map(|w| b_seed.rotate_left(w as u32 * 5)).collect();
        let valid = reference(n, &None, |_| true);
        for kernels in Kernels::all_available() {
            let mut and = a.clone();
            kernels.and(&mut and, &b);
            let mut or = a.clone();
            kernels.or(&mut or, &b);
            let mut and_not = a.clone();
            kernels.and_not(&mut and_not, &b);
            let mut not = a.clone();
            kernels.not(&mut not, n);
            for w in 0..words_for(n) {
                prop_assert_eq!(and[w], a[w] & b[w]);
                prop_assert_eq!(or[w], a[w] | b[w]);
                prop_assert_eq!(and_not[w], a[w] & !b[w]);
                prop_assert_eq!(not[w], !a[w] & valid[w]);
            }
            prop_assert_eq!(kernels.count_ones(&a), a.iter().map(|w| w.count_ones() as usize).sum::<usize>());
            let validity = Some(a.clone());
            let mut nulls = vec![0u64; words_for(n)];
            kernels.is_null(validity.as_deref(), n, &mut nulls);
            prop_assert_eq!(&nulls, &reference(n, &None, |i| !bit(&a, i)));
            kernels.is_not_null(validity.as_deref(), n, &mut nulls);
            prop_assert_eq!(&nulls, &reference(n, &None, |i| bit(&a, i)));
        }
    }

    #[test]
    fn kernels_sums((values, mask, _, _) in case(-1000i64..1000), wide in proptest::collection::vec(i64_value(), 0..=300)) {
        let floats: Vec<f64> = values.iter().map(|&v| v as f64 * 0.25).collect();
        let selected = |i: usize| mask.as_ref().is_none_or(|m| bit(m, i));
        let count = (0..values.len()).filter(|&i| selected(i)).count() as u64;
        let float_sum: f64 = (0..values.len()).filter(|&i| selected(i)).map(|i| floats[i]).sum();
        let wide_sum: i128 = wide.iter().map(|&v| v as i128).sum();
        for kernels in Kernels::all_available() {
            let (sum, n) = kernels.sum_f64(&floats, mask.as_deref());
            prop_assert_eq!(n, count);
            let scale: f64 = floats.iter().map(|v| v.abs()).sum::<f64>().max(1.0);
            prop_assert!((sum - float_sum).abs() <= 1e-9 * scale, "{} {} {}", kernels.name(), sum, float_sum);
            prop_assert_eq!(kernels.sum_i64(&wide, None), (wide_sum, wide.len() as u64));
            let exact: i128 = (0..values.len()).filter(|&i| selected(i)).map(|i| values[i] as i128).sum();
            prop_assert_eq!(kernels.sum_i64(&values, mask.as_deref()), (exact, count));
        }
    }

    #[test]
    fn kernels_grouped((values, mask, _, _) in case(-1000i64..1000), groups_seed in any::<u64>(), group_count in 1usize..40, length_factor in 1usize..40) {
        // Also long inputs, so the interleaved-table path runs.
        let values: Vec<i64> = values.iter().cycle().take(values.len() * length_factor).copied().collect();
        let mask = mask.map(|m| m.iter().cycle().take(words_for(values.len())).copied().collect::<Vec<u64>>());
        let groups: Vec<u32> = (0..values.len()).map(|i| ((groups_seed.rotate_left(i as u32 % 64) ^ i as u64) % (group_count as u64 + 2)) as u32).collect();
        let floats: Vec<f64> = values.iter().map(|&v| v as f64 * 0.5).collect();
        let mut expected_sums = vec![0.0f64; group_count];
        let mut expected_int = vec![0i128; group_count];
        let mut expected_counts = vec![0u64; group_count];
        for i in 0..values.len() {
            let g = groups[i] as usize;
            if g < group_count && mask.as_ref().is_none_or(|m| bit(m, i)) {
                expected_sums[g] += floats[i];
                expected_int[g] += values[i] as i128;
                expected_counts[g] += 1;
            }
        }
        for kernels in Kernels::all_available() {
            let mut sums = vec![0.0; group_count];
            let mut counts = vec![0u64; group_count];
            kernels.group_sum_f64(&groups, &floats, mask.as_deref(), &mut sums, &mut counts);
            prop_assert_eq!(&counts, &expected_counts);
            for g in 0..group_count {
                prop_assert!((sums[g] - expected_sums[g]).abs() <= 1e-6 * expected_sums[g].abs().max(1.0));
            }
            let mut int_sums = vec![0i128; group_count];
            let mut counts = vec![0u64; group_count];
            kernels.group_sum_i64(&groups, &values, mask.as_deref(), &mut int_sums, &mut counts);
            prop_assert_eq!(&int_sums, &expected_int);
            prop_assert_eq!(&counts, &expected_counts);
            let mut counts = vec![0u64; group_count];
            kernels.group_count(&groups, mask.as_deref(), &mut counts);
            prop_assert_eq!(&counts, &expected_counts);
        }
    }
}

#[test]
fn kernels_force_scalar_is_honoured() {
    let forced = std::env::var("TESSERA_FORCE_SCALAR").is_ok_and(|v| v == "1");
    if forced {
        assert_eq!(Kernels::detect().name(), "scalar");
    } else {
        assert_eq!(Kernels::detect(), *Kernels::all_available().last().unwrap());
    }
}
