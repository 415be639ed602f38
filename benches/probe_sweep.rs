//! The probe sweep at the size of a real run: 100,000 tokens × 1536 neurons (SmolLM2's MLP width),
//! 80% of them training, one feature. `cargo bench --bench probe_sweep`.
//!
//! - `k_sweep/<ranking>`: rank the neurons and fit the 15 probes k = 1 … 256 (class-balanced L2
//!   logistic regression by Newton's method), scored on the held-out 20%.
//! - `exact_search`: every set of 1, 2 and 3 of the top 50 neurons (20,875 fits on a 4,000-token
//!   sample) and the best 10 of each size refitted on all training tokens.
//!
//! The activations are noise with a planted feature neuron and a few weaker ones, like the
//! language features of configs/probe-lang.toml; what is measured does not depend on the values.

use criterion::{criterion_group, criterion_main, Criterion};
use loupe_probe::dataset::Dataset;
use loupe_probe::features::Level;
use loupe_probe::matrix::Matrix;
use loupe_probe::rank::{RankOptions, Ranking};
use loupe_probe::sweep::{sweep, ExactOptions, SweepOptions, DEFAULT_KS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOKENS: usize = 100_000;
const NEURONS: usize = 1536;

fn data() -> (Matrix, Dataset) {
    let mut rng = StdRng::seed_from_u64(0);
    let labels: Vec<bool> = (0..TOKENS).map(|_| rng.random::<f64>() < 0.25).collect();
    let mut x = Vec::with_capacity(TOKENS * NEURONS);
    for &y in &labels {
        for j in 0..NEURONS {
            let shift = if y && j % 97 == 0 {
                1.0 + j as f32 / 1536.0
            } else {
                0.0
            };
            x.push(rng.random_range(-1.7..1.7f32) + shift);
        }
    }
    // Held out: every fifth token (by "document" of 50 tokens, as the real split is by document).
    let (mut train, mut held_out) = (Vec::new(), Vec::new());
    for row in 0..TOKENS {
        if (row / 50) % 5 == 0 {
            held_out.push(row)
        } else {
            train.push(row)
        }
    }
    let data = Dataset {
        feature: "planted".into(),
        level: Level::Token,
        train_labels: train.iter().map(|&r| labels[r]).collect(),
        held_out_labels: held_out.iter().map(|&r| labels[r]).collect(),
        train,
        held_out,
    };
    (Matrix::new(TOKENS, NEURONS, x), data)
}

fn bench(c: &mut Criterion) {
    let (x, data) = data();
    let options = |rankings: Vec<Ranking>, max_k: usize| SweepOptions {
        ks: DEFAULT_KS.to_vec(),
        rankings,
        standardize: true,
        c: 1.0,
        rank: RankOptions::default(),
        exact: ExactOptions {
            max_k,
            ..ExactOptions::default()
        },
    };
    let mut group = c.benchmark_group("probe");
    group.sample_size(10);
    for ranking in Ranking::ALL {
        group.bench_function(format!("k_sweep/{}", ranking.name()), |b| {
            b.iter(|| sweep(&x, &data, &options(vec![ranking], 0)).unwrap())
        });
    }
    group.bench_function("exact_search", |b| {
        b.iter(|| sweep(&x, &data, &options(vec![], 3)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
