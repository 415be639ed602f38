//! loupe's SmolLM2 against Hugging Face transformers on the same GGUF file: logits at every
//! position, the residual stream at three layers, greedy continuations and tokenizer ids. The
//! fixture in tests/fixtures/ was written once by scripts/make-golden-smollm2.py, which states its
//! provenance. These tests need the real model: `scripts/fetch-models` fetches it.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use loupe_model::testing::max_abs;
use loupe_model::{generate, GenerateConfig, HookPoint, Hooks, Logits, Model, Sampling};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        Model::load("smollm2", &Device::Cpu).unwrap_or_else(|e| {
            panic!("{e}\nThese tests need the real default model: run scripts/fetch-models first.")
        })
    })
}

fn golden() -> (Value, std::collections::HashMap<String, Tensor>) {
    let json = std::fs::read_to_string(fixtures().join("smollm2-golden.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(fixtures().join("smollm2-golden.safetensors"), &Device::Cpu).unwrap();
    (serde_json::from_str(&json).unwrap(), tensors)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_matches_the_reference_on_mixed_text() {
    let (meta, _) = golden();
    for case in meta["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            model().tokenizer.encode(text).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
    // The case docs/design.md names ("Facts about the SmolLM2 file"): two spaces before a digit.
    assert_eq!(model().tokenizer.encode("a  1").unwrap(), vec![81, 256, 33]);
}

#[test]
fn the_tokenizer_alone_is_the_models_tokenizer() {
    // Read from the GGUF header without the weights, as `loupe probe train` reads it.
    let alone = Model::load_tokenizer("smollm2").unwrap();
    let (meta, _) = golden();
    for case in meta["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(alone.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
    }
    assert_eq!(
        (alone.bos(), alone.eos()),
        (model().tokenizer.bos(), model().tokenizer.eos())
    );
    assert_eq!(alone.vocab_size(), model().tokenizer.vocab_size());
}

#[test]
fn logits_and_residual_stream_match_transformers() {
    let (meta, tensors) = golden();
    let model = model();
    let layers: Vec<usize> = meta["resid_post_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    for (i, prompt) in meta["prompts"].as_array().unwrap().iter().enumerate() {
        let text = prompt["text"].as_str().unwrap();
        let expected_ids = ids(&prompt["ids"]);
        assert_eq!(model.tokenizer.encode(text).unwrap(), expected_ids, "prompt {i}");
        let batch = model.batch(&[text]).unwrap();
        let mut hooks = Hooks::new().capture_all(layers.iter().map(|&l| HookPoint::ResidPost(l)));
        let logits = model
            .forward(&batch, &mut hooks, Logits::All)
            .unwrap()
            .squeeze(0)
            .unwrap();

        let reference = &tensors[&format!("prompt{i}.logits")];
        let diff = max_abs(&(&logits - reference).unwrap());
        eprintln!("prompt {i}: max abs logit difference {diff:.2e}");
        assert!(
            diff < 1e-3,
            "prompt {i}: logits differ by up to {diff} (reference scale {})",
            max_abs(reference)
        );
        for &layer in &layers {
            let ours = hooks
                .captured(HookPoint::ResidPost(layer))
                .unwrap()
                .squeeze(0)
                .unwrap();
            let theirs = &tensors[&format!("prompt{i}.blocks.{layer}.hook_resid_post")];
            // Relative to each position's norm: the first token's residual is far larger than the rest.
            let rel = ((&ours - theirs)
                .unwrap()
                .sqr()
                .unwrap()
                .sum(1)
                .unwrap()
                .sqrt()
                .unwrap()
                / theirs.sqr().unwrap().sum(1).unwrap().sqrt().unwrap())
            .unwrap();
            let worst = max_abs(&rel);
            eprintln!("prompt {i} layer {layer}: worst relative residual difference {worst:.2e}");
            assert!(
                worst < 1e-4,
                "prompt {i} layer {layer}: residual stream differs by {worst} of its norm"
            );
        }
    }
}

#[test]
fn greedy_continuations_match_transformers_in_one_batch() {
    let (meta, _) = golden();
    let model = model();
    let prompts: Vec<Vec<u32>> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids(&p["ids"]))
        .collect();
    let expected: Vec<Vec<u32>> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids(&p["greedy"]))
        .collect();
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

#[test]
fn chat_prompts_follow_the_models_template() {
    // Expected strings: transformers 5.23.0 `apply_chat_template(..., add_generation_prompt=True)` on
    // the same GGUF (its chat template adds a default system turn when there is none).
    let model = model();
    assert_eq!(
        model.chat_prompt(&[("user", "What is 2 + 2?")]).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        model
            .chat_prompt(&[("system", "Be brief."), ("user", "Hi")])
            .unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn byte_tokens_of_a_character_decode_as_one_piece() {
    let tokenizer = Model::load_tokenizer("smollm2").unwrap();
    let text = "Tokyo is 東京 in Japanese, café";
    let ids = tokenizer.encode(text).unwrap();
    // Some of these characters are several byte tokens each, which alone read as "�".
    assert!(ids
        .iter()
        .any(|&id| tokenizer.token_text(id).contains('\u{FFFD}')));
    let pieces = tokenizer.decode_pieces(&ids).unwrap();
    let joined: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(joined, text);
    assert!(pieces.iter().all(|p| !p.text.contains('\u{FFFD}')), "{pieces:?}");
    assert!(pieces.iter().any(|p| p.text.contains('東')), "{pieces:?}");
    // The pieces cover every token once, in order.
    assert_eq!(pieces.first().unwrap().tokens.start, 0);
    assert_eq!(pieces.last().unwrap().tokens.end, ids.len());
    assert!(pieces.windows(2).all(|w| w[0].tokens.end == w[1].tokens.start));
}
