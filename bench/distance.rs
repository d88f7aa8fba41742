//! Distance kernels: ns per distance at the dimensions embeddings come in,
//! for every element type and metric, at the detected SIMD level against the
//! scalar reference loop (the speed-up the issue asks for is their ratio).
//!
//! Run: `cargo bench --bench distance`; `bench/kernels_report.py` turns
//! criterion's estimates into the table in bench/README.md.

use std::hint::black_box;
use std::time::Duration;

use basalt::distance::{DistanceElement, Kernels, SimdLevel};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DIMS: [usize; 6] = [96, 128, 384, 768, 1024, 1536];

fn levels() -> Vec<SimdLevel> {
    let best = SimdLevel::detected();
    let mut v = vec![SimdLevel::Scalar];
    if best >= SimdLevel::Avx2 {
        v.push(SimdLevel::Avx2);
    }
    if best == SimdLevel::Avx512 {
        v.push(SimdLevel::Avx512);
    }
    v
}

fn bench_type<T: DistanceElement>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn(&mut ChaCha8Rng) -> T,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (metric, pick) in [
        ("l2", (|k: &Kernels<T>| k.l2_squared) as fn(&Kernels<T>) -> fn(&[T], &[T]) -> f32),
        ("ip", |k: &Kernels<T>| k.inner_product),
        ("cosine", |k: &Kernels<T>| k.cosine_distance),
    ] {
        let mut g = c.benchmark_group(format!("{metric}_{name}"));
        g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(900));
        for d in DIMS {
            let a: Vec<T> = (0..d).map(|_| make(&mut rng)).collect();
            let b: Vec<T> = (0..d).map(|_| make(&mut rng)).collect();
            for level in levels() {
                let kernel = pick(T::kernels_at(level));
                g.bench_with_input(BenchmarkId::new(level.name(), d), &d, |bench, _| {
                    bench.iter(|| kernel(black_box(&a), black_box(&b)))
                });
            }
        }
        g.finish();
    }
}

fn kernels(c: &mut Criterion) {
    bench_type::<f32>(c, "f32", |r| r.random_range(-1.0f32..1.0));
    bench_type::<u8>(c, "u8", |r| r.random::<u8>());
    bench_type::<i8>(c, "i8", |r| r.random::<i8>());
}

criterion_group!(benches, kernels);
criterion_main!(benches);
