//! The hooked forward pass, interventions and generation, on a tiny random-weight llama that the
//! tests write themselves (see `loupe_model::testing`).

use std::sync::Arc;

use candle_core::{Device, Tensor, D};
use loupe_model::testing::{max_abs, write_tiny_gguf, write_tiny_hf_dir, TINY_EOS};
use loupe_model::{
    generate, Batch, Edit, GenerateConfig, HookPoint, Hooks, Intervention, Logits, Model, Positions, Sampling,
};

fn tiny_model() -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 7).unwrap();
    let model = Model::load(dir.path().to_str().unwrap(), &Device::Cpu).unwrap();
    (dir, model)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

fn logits(model: &Model, batch: &Batch, hooks: &mut Hooks) -> Tensor {
    model.forward(batch, hooks, Logits::All).unwrap()
}

const PROMPT: &str = "the cat sat on the mat";

#[test]
fn capturing_changes_nothing_and_the_residual_identities_hold() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT]).unwrap();
    let plain = logits(&model, &batch, &mut Hooks::new());
    let n_layers = model.n_layers();
    let mut hooks = Hooks::new().capture_all(model.hook_points());
    let captured = logits(&model, &batch, &mut hooks);
    assert_eq!(max_abs_diff(&plain, &captured), 0.0);

    let get = |h| hooks.captured(h).unwrap();
    for l in 0..n_layers {
        let (pre, attn, mid, mlp, post) = (
            get(HookPoint::ResidPre(l)),
            get(HookPoint::AttnOut(l)),
            get(HookPoint::ResidMid(l)),
            get(HookPoint::MlpOut(l)),
            get(HookPoint::ResidPost(l)),
        );
        assert!(
            max_abs_diff(&(&pre + &attn).unwrap(), &mid) < 1e-6,
            "resid_mid = resid_pre + attn_out at {l}"
        );
        assert!(
            max_abs_diff(&(&mid + &mlp).unwrap(), &post) < 1e-6,
            "resid_post = resid_mid + mlp_out at {l}"
        );
        if l + 1 < n_layers {
            assert_eq!(
                max_abs_diff(&post, &get(HookPoint::ResidPre(l + 1))),
                0.0,
                "resid_post({l}) == resid_pre({})",
                l + 1
            );
        }
        assert_eq!(
            get(HookPoint::MlpPost(l)).dims(),
            &[1, batch.columns(), model.spec().d_mlp]
        );
    }
    assert_eq!(
        max_abs_diff(&get(HookPoint::Embed), &get(HookPoint::ResidPre(0))),
        0.0
    );
    // The last residual stream through the unembedding gives the logits.
    let relogits = model.unembed(&get(HookPoint::ResidPost(n_layers - 1))).unwrap();
    assert!(max_abs_diff(&relogits, &plain) < 1e-5);
}

#[test]
fn neutral_interventions_change_nothing() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT]).unwrap();
    let plain = logits(&model, &batch, &mut Hooks::new());
    let d = model.spec().d_model;
    let zeros = Tensor::zeros(d, candle_core::DType::F32, &Device::Cpu).unwrap();
    for hook in model.hook_points() {
        let mut hooks = Hooks::new().scale(hook, Positions::Only(vec![1, 3]), 1.0);
        // The pattern's rows are as wide as the keys: no fixed-width vector to add there.
        if let Ok(width) = model.width(hook) {
            let zeros_w = Tensor::zeros(width, candle_core::DType::F32, &Device::Cpu).unwrap();
            hooks = hooks.add(hook, Positions::All, zeros_w);
        }
        assert_eq!(
            max_abs_diff(&plain, &logits(&model, &batch, &mut hooks)),
            0.0,
            "{hook}"
        );
    }
    // A replacement by the activation's own value is exact too.
    let mut capture = Hooks::new().capture(HookPoint::ResidPost(1));
    logits(&model, &batch, &mut capture);
    let own = capture
        .captured(HookPoint::ResidPost(1))
        .unwrap()
        .get(0)
        .unwrap()
        .get(2)
        .unwrap();
    let mut hooks = Hooks::new().replace(HookPoint::ResidPost(1), Positions::Only(vec![2]), own);
    assert_eq!(max_abs_diff(&plain, &logits(&model, &batch, &mut hooks)), 0.0);
    drop(zeros);
}

#[test]
fn a_replacement_changes_only_its_position_and_later_ones() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT]).unwrap();
    let plain = logits(&model, &batch, &mut Hooks::new());
    let d = model.spec().d_model;
    let value = Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap();
    let pos = 3;
    let mut hooks = Hooks::new()
        .replace(HookPoint::ResidPre(1), Positions::Only(vec![pos]), value.clone())
        .capture(HookPoint::ResidPre(1));
    let patched = logits(&model, &batch, &mut hooks);
    let seen = hooks.captured(HookPoint::ResidPre(1)).unwrap();
    assert_eq!(
        max_abs_diff(&seen.get(0).unwrap().get(pos).unwrap(), &value),
        0.0,
        "captures see the replaced value"
    );
    for p in 0..batch.columns() {
        let diff = max_abs_diff(
            &plain.get(0).unwrap().get(p).unwrap(),
            &patched.get(0).unwrap().get(p).unwrap(),
        );
        if p < pos {
            assert_eq!(diff, 0.0, "position {p} is before the patch");
        } else {
            assert!(diff > 1e-4, "position {p} is at or after the patch: diff {diff}");
        }
    }
}

#[test]
fn edit_functions_and_rows_select_what_they_touch() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT, "a mat"]).unwrap();
    let hook = HookPoint::MlpOut(0);
    let double = Edit::Apply(Arc::new(|x: &Tensor| x * 2.0));
    let mut hooks = Hooks::new().capture(hook);
    logits(&model, &batch, &mut hooks);
    let before = hooks.captured(hook).unwrap();
    let mut hooks = Hooks::new()
        .intervene(Intervention {
            rows: Some(vec![1]),
            ..Intervention::new(hook, Positions::Only(vec![0]), double)
        })
        .capture(hook);
    logits(&model, &batch, &mut hooks);
    let after = hooks.captured(hook).unwrap();
    let pad = batch.pads()[1];
    let expected = (before.get(1).unwrap().get(pad).unwrap() * 2.0).unwrap();
    assert!(max_abs_diff(&after.get(1).unwrap().get(pad).unwrap(), &expected) < 1e-6);
    assert_eq!(
        max_abs_diff(&after.get(0).unwrap(), &before.get(0).unwrap()),
        0.0,
        "row 0 untouched"
    );
    // A vector of the wrong width is an error, not a broadcast.
    let wrong = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut hooks = Hooks::new().add(hook, Positions::All, wrong);
    let err = model
        .forward(&batch, &mut hooks, Logits::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains("width"), "{err}");
}

#[test]
fn a_batch_with_padding_equals_each_prompt_alone() {
    let (_dir, model) = tiny_model();
    let prompts = [PROMPT, "hi", "the mat sat"];
    let batch = model.batch(&prompts).unwrap();
    let hook = HookPoint::ResidPost(1);
    let mut hooks = Hooks::new().capture(hook);
    let batched = logits(&model, &batch, &mut hooks);
    let batched_resid = hooks.captured(hook).unwrap();
    for (row, prompt) in prompts.iter().enumerate() {
        let alone_batch = model.batch(&[prompt]).unwrap();
        let mut alone_hooks = Hooks::new().capture(hook);
        let alone = logits(&model, &alone_batch, &mut alone_hooks);
        let pad = batch.pads()[row];
        let n = alone_batch.columns();
        let b = batched.get(row).unwrap().narrow(0, pad, n).unwrap();
        assert!(max_abs_diff(&b, &alone.get(0).unwrap()) < 1e-5, "row {row}");
        let r = batched_resid.get(row).unwrap().narrow(0, pad, n).unwrap();
        let alone_r = alone_hooks.captured(hook).unwrap().get(0).unwrap();
        let scale = max_abs(&alone_r);
        assert!(
            max_abs_diff(&r, &alone_r) < 1e-5 * scale,
            "row {row}: {} vs scale {scale}",
            max_abs_diff(&r, &alone_r)
        );
    }
}

#[test]
fn a_capture_only_pass_stops_early_with_the_same_activations() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT]).unwrap();
    let hook = HookPoint::MlpPost(1);
    let mut full = Hooks::new().capture(hook);
    logits(&model, &batch, &mut full);
    let mut early = Hooks::new().capture(hook).capture(HookPoint::Embed);
    model.capture(&batch, &mut early).unwrap();
    assert_eq!(early.deepest_layer(), Some(Some(1)));
    assert_eq!(
        max_abs_diff(&full.captured(hook).unwrap(), &early.captured(hook).unwrap()),
        0.0
    );

    // Layer 2 poisoned with NaN: a full pass shows it, a pass that stops after layer 1 never
    // reaches it.
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 7).unwrap();
    let weights = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let name = "model.layers.2.mlp.down_proj.weight";
    let poisoned = (tensors[name].ones_like().unwrap() * f64::NAN).unwrap();
    tensors.insert(name.into(), poisoned);
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let poisoned = Model::load(dir.path().to_str().unwrap(), &Device::Cpu).unwrap();
    assert!(max_abs(&logits(&poisoned, &batch, &mut Hooks::new())).is_nan());
    let mut early = Hooks::new().capture(hook);
    poisoned.capture(&batch, &mut early).unwrap();
    assert_eq!(
        max_abs_diff(&full.captured(hook).unwrap(), &early.captured(hook).unwrap()),
        0.0
    );
}

/// Greedy generation by recomputing the whole sequence for every token: what the cache must equal.
fn greedy_by_recompute(model: &Model, prompt: &[u32], hooks: &Hooks, n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let batch = Batch::left_padded(&[seq.clone()], 0, &Device::Cpu).unwrap();
        let logits = model.forward(&batch, &mut hooks.clone(), Logits::All).unwrap();
        let last = logits.get(0).unwrap().get(seq.len() - 1).unwrap();
        seq.push(last.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap());
    }
    seq[prompt.len()..].to_vec()
}

fn greedy(n: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        sampling: Sampling::Greedy,
        stop_tokens: vec![],
    }
}

#[test]
fn cached_generation_equals_full_recompute_with_and_without_interventions() {
    let (_dir, model) = tiny_model();
    let prompt = model.encode_prompt(PROMPT).unwrap();
    let d = model.spec().d_model;
    let steer = Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap();
    let cases = [
        ("no intervention", Hooks::new()),
        (
            "patch a prompt position",
            Hooks::new().replace(HookPoint::ResidPost(0), Positions::Only(vec![2]), steer.clone()),
        ),
        (
            "add at every position",
            Hooks::new().add(HookPoint::ResidMid(1), Positions::All, (&steer * 0.5).unwrap()),
        ),
        (
            "edit one head's cached values at a prompt position",
            Hooks::new().intervene(Intervention {
                heads: Some(vec![1]),
                ..Intervention::new(HookPoint::AttnV(1), Positions::Only(vec![1]), Edit::Scale(-3.0))
            }),
        ),
        (
            "edit keys at every position",
            Hooks::new().scale(HookPoint::AttnK(0), Positions::All, 2.0),
        ),
        (
            "zero a head's output at generated positions",
            Hooks::new().intervene(Intervention {
                heads: Some(vec![3]),
                ..Intervention::new(
                    HookPoint::AttnZ(2),
                    Positions::Only((prompt.len()..prompt.len() + 12).collect()),
                    Edit::Scale(0.0),
                )
            }),
        ),
        (
            "scale a generated position",
            Hooks::new().scale(
                HookPoint::MlpPost(2),
                Positions::Only(vec![prompt.len() + 2]),
                5.0,
            ),
        ),
    ];
    for (what, hooks) in cases {
        let expected = greedy_by_recompute(&model, &prompt, &hooks, 12);
        let got = generate(
            &model,
            std::slice::from_ref(&prompt),
            0,
            &mut hooks.clone(),
            &greedy(12),
        )
        .unwrap();
        assert_eq!(got[0].tokens, expected, "{what}");
    }
    // The patch really does change the continuation (else the test above proves little).
    let patched = generate(
        &model,
        std::slice::from_ref(&prompt),
        0,
        &mut Hooks::new().replace(
            HookPoint::ResidPost(0),
            Positions::Only(vec![2]),
            (&steer * 10.0).unwrap(),
        ),
        &greedy(12),
    )
    .unwrap();
    let plain = generate(
        &model,
        std::slice::from_ref(&prompt),
        0,
        &mut Hooks::new(),
        &greedy(12),
    )
    .unwrap();
    assert_ne!(patched[0].tokens, plain[0].tokens);
}

#[test]
fn batched_generation_equals_one_by_one() {
    let (_dir, model) = tiny_model();
    let prompts: Vec<Vec<u32>> = [PROMPT, "hi", "on the mat the"]
        .iter()
        .map(|p| model.encode_prompt(p).unwrap())
        .collect();
    let sampled = GenerateConfig {
        max_new_tokens: 10,
        sampling: Sampling::Sample {
            temperature: 0.8,
            top_p: Some(0.9),
            seed: 42,
        },
        stop_tokens: vec![],
    };
    for config in [greedy(10), sampled] {
        let batched = generate(&model, &prompts, 0, &mut Hooks::new(), &config).unwrap();
        for (prompt, together) in prompts.iter().zip(&batched) {
            let alone = generate(
                &model,
                std::slice::from_ref(prompt),
                0,
                &mut Hooks::new(),
                &config,
            )
            .unwrap();
            assert_eq!(together, &alone[0], "{config:?}");
        }
    }
}

#[test]
fn generation_stops_at_stop_tokens_and_captures_every_token() {
    let (_dir, model) = tiny_model();
    let prompt = model.encode_prompt(PROMPT).unwrap();
    let free = generate(
        &model,
        std::slice::from_ref(&prompt),
        0,
        &mut Hooks::new(),
        &greedy(8),
    )
    .unwrap()
    .remove(0);
    let stop = free.tokens[3];
    let config = GenerateConfig {
        stop_tokens: vec![stop, TINY_EOS],
        ..greedy(8)
    };
    let hook = HookPoint::ResidPost(2);
    let mut hooks = Hooks::new().capture(hook);
    let stopped = generate(&model, std::slice::from_ref(&prompt), 0, &mut hooks, &config)
        .unwrap()
        .remove(0);
    let first_stop = free.tokens.iter().position(|&t| t == stop).unwrap();
    assert_eq!(stopped.tokens, free.tokens[..=first_stop].to_vec());
    assert_eq!(stopped.stop, loupe_model::StopReason::StopToken);
    // The prompt, then every generated token but the last (which was never fed back in).
    let captured = hooks.captured(hook).unwrap();
    assert_eq!(
        captured.dims(),
        &[1, prompt.len() + stopped.tokens.len() - 1, model.spec().d_model]
    );
}

#[test]
fn bad_requests_are_clear_errors() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT]).unwrap();
    let mut deep = Hooks::new().capture(HookPoint::ResidPost(3));
    let err = model
        .forward(&batch, &mut deep, Logits::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 layers"), "{err}");
    let long = "a".repeat(200);
    let err = model.batch(&[long.as_str()]).unwrap_err().to_string();
    assert!(
        err.contains("200 tokens") && err.contains("context of 64"),
        "{err}"
    );
    let err = model.encode_prompt("").unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let prompt = model.encode_prompt(PROMPT).unwrap();
    let err = generate(&model, &[prompt], 0, &mut Hooks::new(), &greedy(60))
        .unwrap_err()
        .to_string();
    assert!(err.contains("context of 64"), "{err}");
}

#[test]
fn a_gguf_with_permuted_q_and_k_gives_the_same_model() {
    let (_dir, hf) = tiny_model();
    let gguf_dir = tempfile::tempdir().unwrap();
    let path = gguf_dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, 7).unwrap();
    let gguf = Model::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(gguf.spec(), hf.spec());
    for text in [PROMPT, "tt t  t\n\nthe <|im_end|> end", "ça 123"] {
        assert_eq!(
            gguf.tokenizer.encode(text).unwrap(),
            hf.tokenizer.encode(text).unwrap(),
            "{text:?}"
        );
    }
    let batch = hf.batch(&[PROMPT]).unwrap();
    let a = logits(&hf, &batch, &mut Hooks::new());
    let b = logits(&gguf, &batch, &mut Hooks::new());
    assert!(
        max_abs_diff(&a, &b) < 1e-5,
        "GGUF and safetensors logits differ by {}",
        max_abs_diff(&a, &b)
    );
    assert_eq!(gguf.stop_tokens(), vec![TINY_EOS, TINY_EOS - 1]);
}

#[test]
fn models_are_found_by_path_directory_and_hub_id() {
    let root = tempfile::tempdir().unwrap();
    // A hub cache laid out as hf-hub lays it out: refs/main names the snapshot.
    let repo = root.path().join("hub/models--tiny-org--tiny-llama");
    write_tiny_hf_dir(&repo.join("snapshots/abc123"), 7).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123").unwrap();
    // SAFETY: nextest runs each test in its own process; no other thread reads the environment.
    unsafe { std::env::set_var("HF_HOME", root.path()) };
    let model = Model::load("tiny-org/tiny-llama", &Device::Cpu).unwrap();
    assert_eq!(model.n_layers(), 3);

    let gguf_dir = root.path().join("gguf");
    std::fs::create_dir_all(&gguf_dir).unwrap();
    write_tiny_gguf(&gguf_dir.join("model.gguf"), 7).unwrap();
    Model::load(gguf_dir.to_str().unwrap(), &Device::Cpu).unwrap();

    let err = Model::load("no-such-org/no-such-model", &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("smollm2") && err.contains("hf-hub cache"), "{err}");
    let corrupt = root.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF but not really").unwrap();
    let err = Model::load(corrupt.to_str().unwrap(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("corrupt.gguf") && err.contains("corrupt"), "{err}");
}

#[test]
fn a_tokenizer_json_beside_a_gguf_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, 7).unwrap();
    let from_gguf = Model::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
    assert!(from_gguf.tokenizer.encode("<|custom|>").unwrap().len() > 1);

    // The same tokenizer as JSON, with one more special token: only it knows `<|custom|>`.
    let hf_dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(hf_dir.path(), 7).unwrap();
    let json = std::fs::read_to_string(hf_dir.path().join("tokenizer.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let custom = serde_json::json!({"id": 259, "content": "<|custom|>", "single_word": false,
        "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    json["added_tokens"].as_array_mut().unwrap().push(custom);
    let sidecar = dir.path().join("tiny.tokenizer.json");
    std::fs::write(&sidecar, json.to_string()).unwrap();

    let with_json = Model::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
    assert_eq!(
        with_json.source,
        loupe_model::ModelSource::Gguf {
            path: path.clone(),
            tokenizer_json: Some(sidecar)
        }
    );
    assert_eq!(with_json.tokenizer.encode("<|custom|>").unwrap(), vec![259]);
    assert_eq!(
        with_json.tokenizer.eos(),
        Some(TINY_EOS),
        "special ids still come from the GGUF"
    );
}

#[test]
fn single_row_projections_split_across_threads_give_the_same_logits() {
    // One token alone takes the split matrix-vector path; the same token in a batch of two does not.
    let (_dir, model) = tiny_model();
    let alone = Batch::left_padded(&[vec![5]], 0, &Device::Cpu).unwrap();
    let pair = Batch::left_padded(&[vec![5], vec![9]], 0, &Device::Cpu).unwrap();
    // The split path needs several threads; a pool of 4 takes it on any machine.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let a = pool.install(|| logits(&model, &alone, &mut Hooks::new()));
    let b = logits(&model, &pair, &mut Hooks::new())
        .get(0)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5, "{}", max_abs_diff(&a, &b));
}

#[test]
fn generation_may_fill_the_whole_context() {
    let (_dir, model) = tiny_model();
    let context = model.spec().context;
    let prompt: Vec<u32> = (0..10).map(|i| 5 + i).collect();
    // The last new token is never fed back, so prompt + new tokens may exceed the context by one.
    let fits = greedy(context - prompt.len() + 1);
    let out = generate(&model, std::slice::from_ref(&prompt), 0, &mut Hooks::new(), &fits).unwrap();
    assert_eq!(out[0].tokens.len(), context - prompt.len() + 1);
    let too_long = greedy(context - prompt.len() + 2);
    let e = generate(&model, &[prompt], 0, &mut Hooks::new(), &too_long).unwrap_err();
    assert!(e.to_string().contains(&format!("{context}")), "{e}");
}

#[test]
fn attention_hooks_have_transformerlens_shapes_and_agree_with_each_other() {
    let (_dir, model) = tiny_model();
    let batch = model.batch(&[PROMPT, "hi"]).unwrap();
    let (rows, t) = (batch.rows(), batch.columns());
    let spec = model.spec().clone();
    let (nh, nkv, hd) = (spec.n_heads, spec.n_kv_heads, spec.d_head);
    let l = 1;
    let mut hooks = Hooks::new().capture_all([
        HookPoint::AttnV(l),
        HookPoint::AttnScores(l),
        HookPoint::AttnPattern(l),
        HookPoint::AttnZ(l),
    ]);
    let plain = logits(&model, &batch, &mut hooks);
    let get = |h| hooks.captured(h).unwrap();
    let (v, scores, pattern, z) = (
        get(HookPoint::AttnV(l)),
        get(HookPoint::AttnScores(l)),
        get(HookPoint::AttnPattern(l)),
        get(HookPoint::AttnZ(l)),
    );
    assert_eq!(v.dims(), &[rows, t, nkv, hd]);
    assert_eq!(scores.dims(), &[rows, nh, t, t]);
    assert_eq!(pattern.dims(), &[rows, nh, t, t]);
    assert_eq!(z.dims(), &[rows, t, nh, hd]);
    let softmax = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    assert!(
        max_abs_diff(&softmax, &pattern) < 1e-6,
        "pattern = softmax(scores)"
    );
    // Row 0 has no padding: each head's output is its pattern times its kv head's values.
    let v0 = v.get(0).unwrap().transpose(0, 1).unwrap().contiguous().unwrap(); // [nkv, t, hd]
    let v0 = Tensor::stack(
        &(0..nh)
            .map(|h| v0.get(h / (nh / nkv)).unwrap())
            .collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    let z0 = pattern
        .get(0)
        .unwrap()
        .matmul(&v0)
        .unwrap()
        .transpose(0, 1)
        .unwrap();
    assert!(max_abs_diff(&z0, &z.get(0).unwrap()) < 1e-5, "z = pattern · v");

    // An edit on one head changes that head only.
    let mut hooks = Hooks::new()
        .intervene(Intervention {
            heads: Some(vec![1]),
            ..Intervention::new(HookPoint::AttnZ(l), Positions::All, Edit::Scale(0.0))
        })
        .capture(HookPoint::AttnZ(l));
    let edited = logits(&model, &batch, &mut hooks);
    assert!(
        max_abs_diff(&plain, &edited) > 1e-4,
        "zeroing a head changes the output"
    );
    // (Row 0: row 1's padding is no position, and is left as it was.)
    let z_edited = hooks.captured(HookPoint::AttnZ(l)).unwrap().get(0).unwrap();
    for head in 0..nh {
        let ours = z_edited.narrow(1, head, 1).unwrap();
        let before = z.get(0).unwrap().narrow(1, head, 1).unwrap();
        match head {
            1 => assert_eq!(max_abs(&ours), 0.0),
            _ => assert_eq!(max_abs_diff(&ours, &before), 0.0, "head {head}"),
        }
    }
    // Heads exist only where the activation has them.
    let mut hooks = Hooks::new().intervene(Intervention {
        heads: Some(vec![0]),
        ..Intervention::new(HookPoint::ResidPost(0), Positions::All, Edit::Scale(0.0))
    });
    let err = model
        .forward(&batch, &mut hooks, Logits::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains("picks heads") && err.contains("hook_z"), "{err}");
    let mut hooks = Hooks::new().intervene(Intervention {
        heads: Some(vec![nh]),
        ..Intervention::new(HookPoint::AttnQ(0), Positions::All, Edit::Scale(0.0))
    });
    let err = model
        .forward(&batch, &mut hooks, Logits::All)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("head {nh}")), "{err}");
}

#[test]
fn the_pattern_captured_during_generation_covers_every_token() {
    let (_dir, model) = tiny_model();
    let prompt = model.encode_prompt(PROMPT).unwrap();
    let hook = HookPoint::AttnPattern(0);
    let mut hooks = Hooks::new().capture(hook);
    generate(&model, std::slice::from_ref(&prompt), 0, &mut hooks, &greedy(5)).unwrap();
    let pattern = hooks.captured(hook).unwrap();
    // The last generated token is never fed back.
    let n = prompt.len() + 4;
    assert_eq!(pattern.dims(), &[1, model.spec().n_heads, n, n]);
    // Each query's probabilities sum to 1, and the future (added as the keys grew) is 0.
    let sums = pattern
        .sum(3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
    let future = pattern
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .narrow(0, 1, n - 1)
        .unwrap();
    assert_eq!(max_abs(&future), 0.0);
}

#[test]
fn positions_from_a_start_edit_that_position_and_every_later_one_of_each_row() {
    let (_dir, model) = tiny_model();
    // Two prompts of different lengths: positions count from each row's own first token.
    let batch = model.batch(&[PROMPT, "the cat"]).unwrap();
    let d = model.spec().d_model;
    let shift = Tensor::ones(d, candle_core::DType::F32, &Device::Cpu).unwrap();
    let hook = HookPoint::ResidPost(0);
    let mut plain = Hooks::new().capture(hook);
    logits(&model, &batch, &mut plain);
    let mut steered = Hooks::new().add(hook, Positions::From(1), shift).capture(hook);
    logits(&model, &batch, &mut steered);
    let (before, after) = (plain.captured(hook).unwrap(), steered.captured(hook).unwrap());
    for row in 0..batch.rows() {
        for column in 0..batch.columns() {
            let change = max_abs_diff(
                &before.get(row).unwrap().get(column).unwrap(),
                &after.get(row).unwrap().get(column).unwrap(),
            );
            let expected = match batch.position(row, column) {
                Some(position) if position >= 1 => 1.0,
                _ => 0.0, // the first token, and padding
            };
            assert!(
                (change - expected).abs() < 1e-5,
                "row {row} column {column}: {change}"
            );
        }
    }
}
