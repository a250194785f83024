//! Filter and aggregation kernels, scalar vs AVX2 vs AVX-512 (whichever this CPU has), on 1 M
//! rows; throughput is input bytes, so criterion prints GB/s per core.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tessera_storage_engine::query::kernels::{words_for, CmpOp, Kernels};

const ROWS: usize = 1 << 20;

/// Integers, floats, dictionary codes, group ids and a selection mask.
type Data = (Vec<i64>, Vec<f64>, Vec<i32>, Vec<u32>, Vec<u64>);

fn data() -> Data {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ints: Vec<i64> = (0..ROWS).map(|_| (next() % 1_000_000) as i64).collect();
    let floats: Vec<f64> = ints.iter().map(|&v| v as f64 / 100.0).collect();
    let codes: Vec<i32> = (0..ROWS).map(|_| (next() % 20) as i32).collect();
    let groups: Vec<u32> = codes.iter().map(|&c| c as u32).collect();
    let mask: Vec<u64> = (0..words_for(ROWS)).map(|_| next() | next()).collect();
    (ints, floats, codes, groups, mask)
}

fn kernels(c: &mut Criterion) {
    let (ints, floats, codes, groups, mask) = data();
    let mut out = vec![0u64; words_for(ROWS)];
    let dictionary_mask = vec![0b1010_0110_0101u64];
    let mut group = c.benchmark_group("kernels");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for kernels in Kernels::all_available() {
        let level = kernels.name();
        group.throughput(Throughput::Bytes((ROWS * 8) as u64));
        group.bench_function(BenchmarkId::new("cmp_i64_lt", level), |b| {
            b.iter(|| kernels.cmp_i64(&ints, CmpOp::Lt, 500_000, None, &mut out))
        });
        group.bench_function(BenchmarkId::new("cmp_f64_ge", level), |b| {
            b.iter(|| kernels.cmp_f64(&floats, CmpOp::Ge, 5_000.0, Some(&mask), &mut out))
        });
        group.bench_function(BenchmarkId::new("between_i64", level), |b| {
            b.iter(|| kernels.between_i64(&ints, 100_000, 200_000, None, &mut out))
        });
        group.bench_function(BenchmarkId::new("in_i64_4", level), |b| {
            b.iter(|| kernels.in_i64(&ints, &[1, 10, 100, 1000], None, &mut out))
        });
        group.bench_function(BenchmarkId::new("sum_f64_masked", level), |b| {
            b.iter(|| kernels.sum_f64(&floats, Some(&mask)))
        });
        group.bench_function(BenchmarkId::new("group_sum_f64_20", level), |b| {
            b.iter(|| {
                let (mut sums, mut counts) = (vec![0.0; 20], vec![0u64; 20]);
                kernels.group_sum_f64(&groups, &floats, Some(&mask), &mut sums, &mut counts);
                sums[0]
            })
        });
        group.throughput(Throughput::Bytes((ROWS * 4) as u64));
        group.bench_function(BenchmarkId::new("select_codes_20", level), |b| {
            b.iter(|| kernels.select_codes(&codes, &dictionary_mask, 20, None, &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
