//! One SAE training step (forward, backward, Adam update) at SmolLM2's width: d_in 576, 4608
//! latents, a batch of 4096 activations, k 32, for each architecture.
//!
//! `cargo bench --bench sae_step`. Throughput is in tokens. The matmul work per step:
//! dense (relu, jumprelu): 5 products of 2·4096·576·4608 FLOP = 108.7 GFLOP (encoder forward,
//! decoder forward, and three for the gradients); topk and batchtopk: the encoder forward
//! (21.7 GFLOP) plus 4 sparse passes of 2·4096·32·576 FLOP (0.6 GFLOP); matryoshka: batchtopk's
//! work, its sparse passes split over the levels, plus an MSE and a gradient sum per level.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loupe_sae::arch::{self, StepContext};
use loupe_sae::{Adam, Params, TrainConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const D_IN: usize = 576;
const D_SAE: usize = 4608;
const BATCH: usize = 4096;

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..BATCH * D_IN)
        .map(|_| rng.random_range(-1.7..1.7f32))
        .collect();
    let mut group = c.benchmark_group("sae_step");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(BATCH as u64));
    for (architecture, extra) in [
        ("topk", "k = 32"),
        ("batchtopk", "k = 32"),
        // Four nested levels, as Bussmann et al. use: 1/16, 1/8, 1/4 and the rest of d_sae.
        ("matryoshka", "k = 32\nmatryoshka_groups = [288, 288, 576, 3456]"),
        ("relu", "l1_coefficient = 5.0"),
        ("jumprelu", "target_l0 = 32.0"),
    ] {
        let text = format!(
            "store = \"-\"\nhook = \"blocks.15.hook_resid_post\"\noutput = \"-\"\narchitecture = \"{architecture}\"\n\
             train_tokens = 1_000_000\n{extra}"
        );
        let config = TrainConfig::from_toml(&text, "bench", &[]).unwrap();
        let mut arch = arch::build(&config, D_IN).unwrap();
        let mut params = Params::zeros(D_IN, D_SAE, arch.has_thresholds());
        for row in params.dec.chunks_mut(D_IN) {
            row.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0f32));
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= n);
        }
        params.enc = params.dec.clone();
        arch.init(&mut params);
        let mut adam = Adam::new(&params, 0.9, 0.999, 1e-8);
        group.bench_function(architecture, |b| {
            b.iter_batched(
                || params.clone(),
                |mut p| {
                    let ctx = StepContext {
                        sparsity_scale: 1.0,
                        dead: &[],
                    };
                    let out = arch::step(arch.as_mut(), &p, &x, &x, &ctx).unwrap();
                    adam.step(&mut p, &out.grads, 1e-4);
                    p
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
