//! Memory bandwidth of this machine, measured the way the resampling kernels touch memory:
//! a read-only pass over f64 (reduce), a write-only pass (fill) and a read f64 + write i64 pass
//! (the I/O of one resampling call: weights in, indices out). Sizes: 1e6 (8 MB per array, about
//! L3-sized) and 1e8 (800 MB per array, DRAM). Run: `cargo bench --bench bandwidth`; Criterion
//! reports GB/s; `benches/criterion_table.py` prints them beside the resampling figures.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

fn bench_bandwidth(c: &mut Criterion) {
    for &n in &[1_000_000usize, 100_000_000] {
        let mut group = c.benchmark_group(format!("bandwidth/N={n}"));
        group.sample_size(10);
        let src: Vec<f64> = (0..n).map(|i| (i % 1024) as f64).collect();
        let mut dst = vec![0i64; n];
        group.throughput(Throughput::Bytes((8 * n) as u64));
        group.bench_function("read", |b| {
            b.iter(|| {
                // four accumulators: bound by memory, not by the add latency
                let mut s = [0.0f64; 4];
                for ch in black_box(&src).chunks_exact(4) {
                    for k in 0..4 {
                        s[k] += ch[k];
                    }
                }
                s[0] + s[1] + s[2] + s[3]
            })
        });
        group.bench_function("write", |b| {
            b.iter(|| black_box(&mut dst).fill(black_box(7)))
        });
        group.throughput(Throughput::Bytes((16 * n) as u64));
        group.bench_function("read_f64_write_i64", |b| {
            b.iter(|| {
                for (o, &x) in black_box(&mut dst).iter_mut().zip(black_box(&src)) {
                    *o = x.to_bits() as i64; // a pure copy: no conversion cost
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_bandwidth);
criterion_main!(benches);
