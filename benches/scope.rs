//! Speed of patched generation, the inner loop of `loupe scope`: 32 variants of one source
//! activation (Albert Einstein's last token at layers 1-8, scaled by 1-4) patched into the
//! entity-description prompt, 10 greedy tokens each, on SmolLM2. Batched: all 32 rows in one
//! batch from the shared prefill; unbatched: one row at a time from the same shared prefill;
//! unshared: one row at a time with the whole target prompt run again (plain `generate`).
//!
//! `cargo bench --bench scope` (after `scripts/fetch-models`). Throughput is in patched tokens:
//! each row's target tokens from the patched position on plus its generated tokens.

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use loupe_model::{generate, GenerateConfig, HookPoint, Hooks, Model, Positions, Sampling};
use loupe_scope::patch::{Patch, PatchedTarget};
use loupe_scope::target::ENTITY_DESCRIPTION;

const NEW_TOKENS: usize = 10;

fn bench(c: &mut Criterion) {
    let model = Model::load("smollm2", &Device::Cpu).expect("run scripts/fetch-models first");
    let hooks_read: Vec<HookPoint> = (1..=8).map(HookPoint::ResidPost).collect();
    let source = model.batch(&["Albert Einstein"]).unwrap();
    let mut capture = Hooks::new().capture_all(hooks_read.iter().copied());
    model.capture(&source, &mut capture).unwrap();
    let mut variants: Vec<(HookPoint, Vec<f32>)> = Vec::new();
    for &hook in &hooks_read {
        let h = capture.captured(hook).unwrap();
        let last = h.get(0).unwrap().get(h.dim(1).unwrap() - 1).unwrap();
        let h: Vec<f32> = last.to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        for alpha in 1..=4 {
            variants.push((hook, h.iter().map(|x| x * alpha as f32).collect()));
        }
    }
    let target_ids = model.encode_prompt(ENTITY_DESCRIPTION).unwrap();
    let position = target_ids.len() - 1;
    let target = PatchedTarget::new(&model, &target_ids, position).unwrap();
    // No stop tokens: every row generates exactly NEW_TOKENS.
    let config = GenerateConfig {
        max_new_tokens: NEW_TOKENS,
        sampling: Sampling::Greedy,
        stop_tokens: Vec::new(),
    };
    let patches: Vec<Patch> = variants
        .iter()
        .map(|(hook, v)| Patch {
            hook: *hook,
            value: v,
        })
        .collect();
    let rows = patches.len();
    let tokens_per_row = target.suffix_len() + NEW_TOKENS;

    let mut group = c.benchmark_group("scope_patched_generation");
    group.sample_size(10);
    group.throughput(Throughput::Elements((rows * tokens_per_row) as u64));
    group.bench_function("batched_32_rows", |b| {
        b.iter(|| target.generate(&model, &patches, &config).unwrap())
    });
    group.bench_function("unbatched_shared_prefill", |b| {
        b.iter(|| {
            for patch in &patches {
                target
                    .generate(&model, std::slice::from_ref(patch), &config)
                    .unwrap();
            }
        })
    });
    group.bench_function("unbatched_unshared", |b| {
        b.iter(|| {
            for (hook, value) in &variants {
                let mut hooks = Hooks::new().replace(
                    *hook,
                    Positions::Only(vec![position]),
                    Tensor::from_slice(value, value.len(), &Device::Cpu).unwrap(),
                );
                generate(
                    &model,
                    std::slice::from_ref(&target_ids),
                    model.pad_id(),
                    &mut hooks,
                    &config,
                )
                .unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
