//! Criterion benchmarks of the resampling schemes (pure Rust, no Python):
//! N = 16, 4096, 65536, 1e6 with uniform, skewed and extreme log-weights.
//! Run: `cargo bench --bench resample` (figures, not timed tests).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glass_core::interrupt::Never;
use glass_core::resample::{
    resample_log_weights, resample_weights_on, row_rng, uniform, Scheme, Seeds,
};
use glass_core::{ResampleMode, SmcState};
use std::hint::black_box;

fn log_weights(kind: &str, n: usize) -> Vec<f64> {
    let mut rng = row_rng(12345, 7);
    match kind {
        "uniform" => vec![0.0; n],
        // moderate spread: lw ~ 2 * N(0,1)-ish (sum of uniforms)
        "skewed" => (0..n)
            .map(|_| 2.0 * (uniform(&mut rng) + uniform(&mut rng) + uniform(&mut rng) - 1.5))
            .collect(),
        // almost all mass on a handful of particles
        _ => (0..n).map(|_| 300.0 * uniform(&mut rng)).collect(),
    }
}

fn bench_schemes(c: &mut Criterion) {
    for &n in &[16usize, 4096, 65536, 1_000_000] {
        let mut group = c.benchmark_group(format!("resample/N={n}"));
        group.throughput(Throughput::Elements(n as u64));
        if n >= 65536 {
            group.sample_size(20);
        }
        for kind in ["uniform", "skewed", "extreme"] {
            let lw = log_weights(kind, n);
            for scheme in Scheme::ALL {
                group.bench_with_input(BenchmarkId::new(scheme.as_str(), kind), &lw, |b, lw| {
                    b.iter(|| {
                        resample_log_weights(
                            black_box(lw),
                            1,
                            n,
                            n,
                            scheme,
                            &Seeds::Single(1),
                            &Never,
                        )
                        .unwrap()
                    })
                });
            }
        }
        group.finish();
    }
}

fn bench_smc_step(c: &mut Criterion) {
    let n = 4096;
    let g = log_weights("skewed", n);
    let mut state =
        SmcState::new(1, n, Scheme::Systematic, None, &Seeds::Single(0), false).unwrap();
    c.bench_function("smc_step/N=4096", |b| {
        b.iter(|| {
            state
                .step(black_box(&g), ResampleMode::Always, &Never)
                .unwrap()
        })
    });
}

/// The merge alone (weights already exponentiated) on 1 and 2 threads across sizes: where the
/// split starts to pay sets `resample::PARALLEL_MIN`.
fn bench_threads(c: &mut Criterion) {
    for &n in &[1usize << 14, 1 << 16, 1 << 17, 1 << 18, 1 << 20] {
        let mut group = c.benchmark_group(format!("merge_threads/N={n}"));
        group.throughput(Throughput::Elements(n as u64));
        let w: Vec<f64> = log_weights("skewed", n).iter().map(|x| x.exp()).collect();
        let total: f64 = w.iter().sum();
        let mut out = vec![0i64; n];
        for scheme in [Scheme::Systematic, Scheme::Stratified] {
            for threads in [1usize, 2] {
                let id = BenchmarkId::new(scheme.as_str(), format!("threads={threads}"));
                group.bench_function(id, |b| {
                    let mut rng = row_rng(1, 0);
                    let mut scratch = Vec::new();
                    b.iter(|| {
                        resample_weights_on(
                            black_box(&w),
                            total,
                            scheme,
                            &mut rng,
                            &mut out,
                            &mut scratch,
                            threads,
                            &Never,
                        )
                        .unwrap()
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_schemes, bench_smc_step, bench_threads);
criterion_main!(benches);
