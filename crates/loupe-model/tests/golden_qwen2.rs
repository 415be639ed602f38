//! loupe's Qwen2 against Hugging Face transformers on the same GGUF file (Qwen2.5-Coder-1.5B
//! Instruct): logits, every hook point at the first and last layer, greedy continuations and
//! tokenizer ids, kept to a few tokens (1.5B parameters, 6 GB of f32 weights). The fixture was
//! written once by scripts/make-golden-qwen2.py, which states its provenance. Needs the real
//! model: `scripts/fetch-models qwen2`.

mod common;

use candle_core::Device;
use common::{check_forward, check_greedy, check_tokenizer, Golden};
use loupe_model::Model;

#[test]
fn qwen2_matches_transformers() {
    let model = Model::load("qwen2", &Device::Cpu).unwrap_or_else(|e| {
        panic!("{e}\nThis test needs Qwen2.5-Coder-1.5B: run scripts/fetch-models qwen2 first.")
    });
    assert_eq!(model.spec().family, "qwen2");
    let golden = Golden::load("qwen2-golden");
    check_tokenizer(&model, &golden);
    check_forward(&model, &golden, 1e-4);
    check_greedy(&model, &golden);
}
