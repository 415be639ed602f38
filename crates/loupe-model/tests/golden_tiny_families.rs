//! GPT-2 and GPT-NeoX (Pythia's architecture) against Hugging Face transformers, on tiny
//! random-weight models: logits, every hook point at every layer, greedy continuations and
//! tokenizer ids. No such checkpoint is in the package registries, so
//! scripts/make-tiny-gpt2-neox.py made the models (seeded) and their golden outputs once; the
//! model directories are committed in tests/fixtures/tiny-gpt2/ and tiny-neox/.

mod common;

use candle_core::Device;
use common::{check_forward, check_greedy, check_tokenizer, fixtures, Golden};
use loupe_model::{HookPoint, Model};

fn load(dir: &str) -> Model {
    Model::load(fixtures().join(dir).to_str().unwrap(), &Device::Cpu).unwrap()
}

#[test]
fn gpt2_matches_transformers() {
    let model = load("tiny-gpt2");
    assert_eq!(model.spec().family, "gpt2");
    let golden = Golden::load("tiny-gpt2-golden");
    check_tokenizer(&model, &golden);
    check_forward(&model, &golden, 1e-4);
    check_greedy(&model, &golden);
    assert!(model.hook_points().contains(&HookPoint::PosEmbed));
}

#[test]
fn neox_matches_transformers() {
    let model = load("tiny-neox");
    assert_eq!(model.spec().family, "gpt_neox");
    let golden = Golden::load("tiny-neox-golden");
    check_tokenizer(&model, &golden);
    check_forward(&model, &golden, 1e-4);
    check_greedy(&model, &golden);
    // Parallel attention and MLP: no residual stream between them.
    assert!(!model.hook_points().contains(&HookPoint::ResidMid(0)));
    let err = model.width(HookPoint::ResidMid(0)).unwrap_err().to_string();
    assert!(err.contains("gpt_neox") && err.contains("parallel"), "{err}");
}
