//! Speed of the hooked SmolLM2 forward pass and of KV-cached generation on the CPU.
//!
//! `cargo bench --bench forward` (after `scripts/fetch-models`). Throughput is reported in tokens;
//! the FLOPs per token are printed once, so that tokens/s converts to a fraction of the machine's
//! f32 matmul peak.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loupe_model::{generate, Batch, GenerateConfig, Hooks, Logits, Model, Sampling};

/// Matmul FLOPs per token of a forward pass with `context` tokens of attention and the unembedding.
fn flops_per_token(model: &Model, context: usize) -> f64 {
    let c = model.spec();
    let (d, m, v) = (c.d_model as f64, c.d_mlp as f64, c.vocab_size as f64);
    let q = (c.n_heads * c.d_head) as f64;
    let kv = (c.n_kv_heads * c.d_head) as f64;
    let per_layer = 2.0 * (d * q * 2.0 + d * kv * 2.0 + 3.0 * d * m) + 4.0 * context as f64 * q;
    per_layer * c.n_layers as f64 + 2.0 * d * v
}

fn bench(c: &mut Criterion) {
    let model = Model::load("smollm2", &Device::Cpu).expect("run scripts/fetch-models first");
    let (rows, columns) = (8, 128);
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..columns)
                .map(|i| 100 + ((r * 131 + i * 17) % 40000) as u32)
                .collect()
        })
        .collect();
    let batch = Batch::left_padded(&ids, 0, &Device::Cpu).unwrap();
    eprintln!(
        "forward: {:.0} MFLOP per token at context 128 (average attention span 64)",
        flops_per_token(&model, columns / 2) / 1e6
    );

    let mut group = c.benchmark_group("smollm2");
    group.sample_size(10);
    group.throughput(Throughput::Elements((rows * columns) as u64));
    group.bench_function("forward_8x128_all_logits", |b| {
        b.iter(|| model.forward(&batch, &mut Hooks::new(), Logits::All).unwrap())
    });
    group.bench_function("forward_8x128_no_logits", |b| {
        let mut hooks = Hooks::new().capture(loupe_model::HookPoint::ResidPost(29));
        b.iter(|| {
            hooks.clear_captured();
            model.capture(&batch, &mut hooks).unwrap()
        })
    });

    let prompt = model.encode_prompt("The capital of France is").unwrap();
    let new_tokens = 32;
    let config = GenerateConfig {
        max_new_tokens: new_tokens,
        sampling: Sampling::Greedy,
        stop_tokens: vec![],
    };
    group.throughput(Throughput::Elements(new_tokens as u64));
    group.bench_function("generate_32_tokens_batch_1", |b| {
        b.iter(|| {
            generate(
                &model,
                std::slice::from_ref(&prompt),
                0,
                &mut Hooks::new(),
                &config,
            )
            .unwrap()
        })
    });
    let prompts = vec![prompt.clone(); 8];
    group.throughput(Throughput::Elements((8 * new_tokens) as u64));
    group.bench_function("generate_32_tokens_batch_8", |b| {
        b.iter(|| generate(&model, &prompts, 0, &mut Hooks::new(), &config).unwrap())
    });
    group.finish();
}

/// candle's f32 matmul on this machine: the peak the figures above are fractions of, at a large
/// square size and at the shapes of SmolLM2's projections for 1024 tokens. Throughput in FLOPs.
fn matmul_peak(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10);
    for (m, k, n) in [
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (1024, 576, 960),
        (1024, 576, 3072),
        (1024, 1536, 576),
    ] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        group.bench_function(format!("{m}x{k}x{n}"), |bench| {
            bench.iter(|| a.matmul(&b.t().unwrap()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench, matmul_peak);
criterion_main!(benches);
