//! loupe's Gemma 3 against Hugging Face transformers on the same GGUF file (Gemma 3 270M,
//! Q4_K_M): logits, every hook point at a local and a global layer and the last, greedy
//! continuations and tokenizer ids. The fixture was written once by scripts/make-golden-gemma3.py,
//! which states its provenance. Needs the real model: `scripts/fetch-models gemma3`.

mod common;

use candle_core::Device;
use common::{check_forward, check_greedy, check_tokenizer, Golden};
use loupe_model::Model;

fn model() -> Model {
    Model::load("gemma3", &Device::Cpu).unwrap_or_else(|e| {
        panic!("{e}\nThese tests need Gemma 3 270M: run scripts/fetch-models gemma3 first.")
    })
}

#[test]
fn gemma3_matches_transformers() {
    let model = model();
    assert_eq!(model.spec().family, "gemma3");
    // A norm follows the MLP's down projection: no matrix maps the neurons to hook_mlp_out.
    assert!(model.mlp_out_weight(0).is_none());
    let golden = Golden::load("gemma3-golden");
    check_tokenizer(&model, &golden);
    // The tokenizer alone (its tokenizer.json sidecar and the GGUF header's BOS/EOS) is the same.
    let alone = Model::load_tokenizer("gemma3").unwrap();
    assert_eq!(
        (alone.bos(), alone.eos()),
        (model.tokenizer.bos(), model.tokenizer.eos())
    );
    let text = "Grüße aus Köln: 3.14 × 2 = 6.28 <end_of_turn>";
    assert_eq!(alone.encode(text).unwrap(), model.tokenizer.encode(text).unwrap());
    check_forward(&model, &golden, 1e-4);
    check_greedy(&model, &golden);
}
