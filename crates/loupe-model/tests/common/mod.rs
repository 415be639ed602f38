//! Comparing a model with a golden fixture written by one of the `scripts/make-golden-*.py` or
//! `scripts/make-tiny-gpt2-neox.py` scripts (Hugging Face transformers on the same weights; each
//! script states its provenance): tokenizer ids, logits, every recorded hook point, and greedy
//! continuations.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use loupe_model::testing::max_abs;
use loupe_model::{generate, Batch, GenerateConfig, HookPoint, Hooks, Logits, Model, Sampling};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture: its JSON and its tensors.
pub struct Golden {
    pub meta: Value,
    pub tensors: HashMap<String, Tensor>,
}

impl Golden {
    pub fn load(stem: &str) -> Golden {
        let json = std::fs::read_to_string(fixtures().join(format!("{stem}.json"))).unwrap();
        let tensors =
            candle_core::safetensors::load(fixtures().join(format!("{stem}.safetensors")), &Device::Cpu)
                .unwrap();
        Golden {
            meta: serde_json::from_str(&json).unwrap(),
            tensors,
        }
    }

    fn prompts(&self) -> &Vec<Value> {
        self.meta["prompts"].as_array().unwrap()
    }
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Every tokenizer case and prompt encodes to the reference's ids.
pub fn check_tokenizer(model: &Model, golden: &Golden) {
    let cases = golden.meta["tokenizer_cases"].as_array().into_iter().flatten();
    for case in cases.chain(golden.prompts()) {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            model.tokenizer.encode(text).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
}

/// The largest difference between `ours` and `theirs` per row (a token's vector, or a query's
/// row of keys), relative to the reference row's norm: the first token's residual is far larger
/// than the rest.
fn worst_relative_row_difference(ours: &Tensor, theirs: &Tensor) -> f32 {
    let rows = theirs.dim(0).unwrap();
    let (ours, theirs) = (
        ours.reshape((rows, ())).unwrap(),
        theirs.reshape((rows, ())).unwrap(),
    );
    let norm = |t: &Tensor| t.sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
    let scale = norm(&theirs).clamp(1e-12, f32::MAX).unwrap();
    let rel = (norm(&(&ours - &theirs).unwrap()) / scale).unwrap();
    max_abs(&rel)
}

/// Runs each prompt with every recorded hook captured, and compares logits and hooks.
/// `tolerance` bounds each token's difference relative to the reference's norm (and the logits'
/// largest difference relative to their largest value).
pub fn check_forward(model: &Model, golden: &Golden, tolerance: f32) {
    let hooks_recorded: Vec<HookPoint> = golden.meta["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().parse().unwrap())
        .collect();
    for (i, prompt) in golden.prompts().iter().enumerate() {
        let batch = Batch::left_padded(&[ids(&prompt["ids"])], model.pad_id(), model.device()).unwrap();
        let mut hooks = Hooks::new().capture_all(hooks_recorded.iter().copied());
        let logits = model
            .forward(&batch, &mut hooks, Logits::All)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let (reference, ours) = match golden.tensors.get(&format!("prompt{i}.logits")) {
            Some(all) => (all.clone(), logits),
            None => {
                let last3 = golden.tensors[&format!("prompt{i}.logits_last3")].clone();
                let n = logits.dim(0).unwrap();
                (last3, logits.narrow(0, n - 3, 3).unwrap())
            }
        };
        let diff = max_abs(&(&ours - &reference).unwrap()) / max_abs(&reference);
        eprintln!("prompt {i}: logits differ by {diff:.1e} of their largest value");
        assert!(
            diff < tolerance,
            "prompt {i}: logits differ by {diff} of their largest value"
        );

        for &hook in &hooks_recorded {
            let theirs = &golden.tensors[&format!("prompt{i}.{hook}")];
            let ours = hooks.captured(hook).unwrap().squeeze(0).unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "prompt {i} {hook}: shape");
            let worst = match hook {
                HookPoint::AttnPattern(_) => max_abs(&(&ours - theirs).unwrap()),
                HookPoint::AttnScores(_) => scores_difference(&ours, theirs),
                // Per-head activations compared a token at a time, heads together.
                _ => worst_relative_row_difference(&ours, theirs),
            };
            assert!(worst < tolerance, "prompt {i} {hook}: differs by {worst}");
        }
        eprintln!(
            "prompt {i}: {} hook points within {tolerance:.0e}",
            hooks_recorded.len()
        );
    }
}

/// Scores: -inf in the same places (what a query may not see), and the rest relative to the
/// largest score (Qwen2's first layer has scores in the thousands).
fn scores_difference(ours: &Tensor, theirs: &Tensor) -> f32 {
    let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = theirs
        .iter()
        .filter(|x| x.is_finite())
        .fold(1f32, |m, x| m.max(x.abs()));
    let mut worst = 0f32;
    for (a, b) in ours.iter().zip(&theirs) {
        if b.is_finite() {
            worst = worst.max((a - b).abs() / scale);
        } else {
            assert_eq!(a, b, "a masked score must be masked in loupe too");
        }
    }
    worst
}

/// All prompts generated together as one left-padded batch give the reference's greedy tokens.
pub fn check_greedy(model: &Model, golden: &Golden) {
    let prompts: Vec<Vec<u32>> = golden.prompts().iter().map(|p| ids(&p["ids"])).collect();
    let expected: Vec<Vec<u32>> = golden.prompts().iter().map(|p| ids(&p["greedy"])).collect();
    let config = GenerateConfig {
        max_new_tokens: expected[0].len(),
        sampling: Sampling::Greedy,
        stop_tokens: vec![],
    };
    let generations = generate(model, &prompts, model.pad_id(), &mut Hooks::new(), &config).unwrap();
    for (i, (generation, expected)) in generations.iter().zip(&expected).enumerate() {
        assert_eq!(
            &generation.tokens,
            expected,
            "prompt {i}: {:?}",
            model.tokenizer.decode(&generation.tokens)
        );
    }
}
