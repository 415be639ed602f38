//! Capture speed: SmolLM2 activations at `blocks.15.hook_resid_post`, context 128, batches of 8
//! contexts, from the fetched Wikipedia corpus into a fresh store (packing, the forward pass up to
//! layer 15 and shard writing included).
//!
//! `cargo bench --bench capture` after `scripts/fetch-models` and `scripts/fetch-data wikipedia`.
//! Throughput is in tokens; each token costs about 2 × 16 layers × 3.54M weights ≈ 115 MFLOP.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use loupe_data::capture::{capture, CaptureConfig};
use loupe_data::corpus::{expand_path, CorpusSpec};
use loupe_model::{HookPoint, Model};
use loupe_util::NoProgress;

fn bench(c: &mut Criterion) {
    let model = Model::load("smollm2", &Device::Cpu).expect("run scripts/fetch-models first");
    let corpus = "$LOUPE_HOME/data/wikipedia.jsonl";
    assert!(
        expand_path(corpus).exists(),
        "run scripts/fetch-data wikipedia first"
    );
    // Two shards of 8 contexts of 127 stored tokens.
    let tokens = 2 * 8 * 127;
    let config = |output: &std::path::Path| CaptureConfig {
        model: "smollm2".into(),
        hooks: vec![HookPoint::ResidPost(15)],
        output: output.to_str().unwrap().into(),
        context_length: 128,
        batch_size: 8,
        max_tokens: Some(tokens),
        dtype: Default::default(),
        shard_contexts: 8,
        include_separators: false,
        separator: None,
        corpus: vec![CorpusSpec {
            path: corpus.into(),
            text_field: "text".into(),
            labels: vec![],
            spans: None,
            only: Default::default(),
        }],
    };
    let mut group = c.benchmark_group("capture");
    group.sample_size(10);
    group.throughput(Throughput::Elements(tokens));
    group.bench_function("smollm2_l15_resid_post_ctx128", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| capture(&model, &config(&dir.path().join("store")), &mut NoProgress).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
