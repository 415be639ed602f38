//! The feature book on a tiny random-weight model: each kind resolves to the direction it
//! should, and features that do not fit the model are refused by name.

use std::path::Path;

use candle_core::{Device, Tensor};
use loupe_model::{HookPoint, Hooks, Model, Positions};
use loupe_probe::dataset::ClassBalance;
use loupe_probe::features::Level;
use loupe_probe::{Metrics, Probe, ProbeInfo};
use loupe_scope::features::Source;
use loupe_scope::load_book;

fn tiny_model(dir: &Path) -> Model {
    loupe_model::testing::write_tiny_hf_dir(dir, 5).unwrap();
    Model::load(dir.to_str().unwrap(), &Device::Cpu).unwrap()
}

fn probe(model_sha256: &str, path: &Path) {
    let info = ProbeInfo {
        feature: "lang=a".into(),
        level: Level::Token,
        hook: "blocks.1.mlp.hook_post".parse().unwrap(),
        width: 48,
        model_name: "tiny".into(),
        model_sha256: model_sha256.into(),
        store: "store".into(),
        method: "mean_diff".into(),
        k: 2,
        c: 1.0,
        held_out: Metrics::default(),
        train: Metrics::default(),
        balance: ClassBalance {
            train_positive: 1,
            train_negative: 1,
            held_out_positive: 1,
            held_out_negative: 1,
        },
    };
    Probe {
        info,
        neurons: vec![3, 40],
        weights: vec![2.0, -1.0],
        bias: 0.5,
        mean: Some(vec![0.1, 0.2]),
        std: Some(vec![0.5, 2.0]),
    }
    .save(path)
    .unwrap();
}

fn book(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("features.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn every_kind_resolves_to_its_direction() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let sha = model.source.fingerprint().unwrap();
    probe(&sha, &tmp.path().join("p"));
    let v: Vec<f32> = (0..32).map(|i| i as f32 / 10.0).collect();
    let mut tensors = std::collections::HashMap::new();
    tensors.insert(
        "direction".to_string(),
        Tensor::from_slice(&v, 32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, tmp.path().join("v.safetensors")).unwrap();

    let path = book(
        tmp.path(),
        r#"
[[feature]]
name = "neurons"
kind = "probe"
probe = "p.safetensors"

[[feature]]
name = "lifted"
kind = "probe"
probe = "p.safetensors"
site = "blocks.1.hook_mlp_out"
concepts = ["a"]

[[feature]]
name = "contrast"
kind = "mean_diff"
hook = "blocks.2.hook_resid_post"
positive = ["tt t", "t tt tt"]
negative = ["xq", "zq zz"]

[[feature]]
name = "file"
kind = "vector"
hook = "blocks.0.hook_resid_post"
file = "v.safetensors"
"#,
    );
    let features = load_book(&path, &model).unwrap();
    assert_eq!(features.len(), 4);

    // The probe's direction in neuron space: weights / std at its neurons.
    let neurons = &features[0];
    assert_eq!(
        neurons.hook,
        "blocks.1.mlp.hook_post".parse::<HookPoint>().unwrap()
    );
    assert!(matches!(neurons.source, Source::Probe { .. }));
    assert_eq!((neurons.direction[3], neurons.direction[40]), (4.0, -0.5));

    // Lifted to the MLP output: adding the neuron direction at mlp.hook_post moves hook_mlp_out by
    // exactly the lifted direction (the down projection is linear).
    let lifted = &features[1];
    assert_eq!(lifted.concepts, vec!["a"]);
    let out: HookPoint = "blocks.1.hook_mlp_out".parse().unwrap();
    let batch = model.batch(&["tt t"]).unwrap();
    let run = |hooks: Hooks| -> Vec<f32> {
        let mut hooks = hooks.capture(out);
        model.capture(&batch, &mut hooks).unwrap();
        let h = hooks.captured(out).unwrap();
        h.get(0).unwrap().get(0).unwrap().to_vec1().unwrap()
    };
    let clean = run(Hooks::new());
    let v = Tensor::from_slice(&neurons.direction, 48, &Device::Cpu).unwrap();
    let moved = run(Hooks::new().add(neurons.hook, Positions::All, v));
    for ((m, c), l) in moved.iter().zip(&clean).zip(&lifted.direction) {
        assert!((m - c - l).abs() < 1e-4, "{m} - {c} vs {l}");
    }

    // The mean difference equals last-token activations taken prompt by prompt.
    let hook: HookPoint = "blocks.2.hook_resid_post".parse().unwrap();
    let last = |prompt: &str| -> Vec<f32> {
        let batch = model.batch(&[prompt]).unwrap();
        let mut hooks = Hooks::new().capture(hook);
        model.capture(&batch, &mut hooks).unwrap();
        let h = hooks.captured(hook).unwrap().get(0).unwrap();
        h.get(h.dim(0).unwrap() - 1).unwrap().to_vec1().unwrap()
    };
    let mean = |prompts: &[&str]| -> Vec<f32> {
        let all: Vec<Vec<f32>> = prompts.iter().map(|p| last(p)).collect();
        (0..32)
            .map(|i| all.iter().map(|v| v[i]).sum::<f32>() / all.len() as f32)
            .collect()
    };
    let (p, n) = (mean(&["tt t", "t tt tt"]), mean(&["xq", "zq zz"]));
    for (i, d) in features[2].direction.iter().enumerate() {
        assert!((d - (p[i] - n[i])).abs() < 1e-4);
    }

    assert_eq!(
        features[3].direction,
        (0..32).map(|i| i as f32 / 10.0).collect::<Vec<_>>()
    );
}

#[test]
fn features_that_do_not_fit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let error = |text: &str| {
        load_book(&book(tmp.path(), text), &model)
            .err()
            .expect("an error")
            .to_string()
    };

    // A probe from another model.
    probe("0123456789abcdef", &tmp.path().join("other"));
    let e = error("[[feature]]\nname = \"x\"\nkind = \"probe\"\nprobe = \"other.safetensors\"\n");
    assert!(e.contains("another model") && e.contains("feature[0] 'x'"), "{e}");

    // A probe moved to a site it cannot reach.
    probe(&model.source.fingerprint().unwrap(), &tmp.path().join("p"));
    let e = error("[[feature]]\nname = \"x\"\nkind = \"probe\"\nprobe = \"p.safetensors\"\nsite = \"blocks.2.hook_resid_post\"\n");
    assert!(e.contains("site") && e.contains("blocks.1.hook_mlp_out"), "{e}");

    // An SAE for another width (its cfg names blocks.15, which the tiny model lacks).
    let sae = loupe_sae::testing::fixture_sae("relu", 1).unwrap();
    loupe_sae::saelens::save(&sae, &tmp.path().join("sae")).unwrap();
    let e = error("[[feature]]\nname = \"x\"\nkind = \"sae\"\nsae = \"sae\"\nlatent = 3\n");
    assert!(e.contains("feature[0] 'x'.sae") && e.contains("15"), "{e}");

    // A vector of the wrong width, an empty prompt, an unknown kind, a name used twice.
    let mut tensors = std::collections::HashMap::new();
    tensors.insert(
        "direction".to_string(),
        Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, tmp.path().join("w.safetensors")).unwrap();
    let e = error("[[feature]]\nname = \"x\"\nkind = \"vector\"\nhook = \"blocks.0.hook_resid_post\"\nfile = \"w.safetensors\"\n");
    assert!(e.contains("7 wide") && e.contains("32 wide"), "{e}");
    let e = error("[[feature]]\nname = \"x\"\nkind = \"mean_diff\"\nhook = \"blocks.0.hook_resid_post\"\npositive = [\" \"]\nnegative = [\"a\"]\n");
    assert!(e.contains("positive") && e.contains("empty"), "{e}");
    let e = error("[[feature]]\nname = \"x\"\nkind = \"magic\"\n");
    assert!(e.contains("unknown kind 'magic'"), "{e}");
    let mut tensors = std::collections::HashMap::new();
    tensors.insert(
        "direction".to_string(),
        Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, tmp.path().join("v.safetensors")).unwrap();
    let twice = "[[feature]]\nname = \"x\"\nkind = \"vector\"\nhook = \"blocks.0.hook_resid_post\"\nfile = \"v.safetensors\"\n";
    let e = error(&format!("{twice}{twice}"));
    assert!(e.contains("'x' is named twice"), "{e}");
}

#[test]
fn an_sae_latent_can_be_named_by_contrasting_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    // A ReLU SAE for the tiny model's layer 1 residual stream.
    let sae = loupe_sae::testing::random_relu_sae(32, 64, "blocks.1.hook_resid_post", 5).unwrap();
    loupe_sae::saelens::save(&sae, &tmp.path().join("sae")).unwrap();
    let (positive, negative) = (["tt t", "t t"], ["xq", "zq"]);
    let path = book(
        tmp.path(),
        &format!(
            "[[feature]]\nname = \"tee\"\nkind = \"sae\"\nsae = \"{}\"\npositive = {positive:?}\nnegative = {negative:?}\n",
            tmp.path().join("sae").display()
        ),
    );
    let features = load_book(&path, &model).unwrap();
    let Source::Sae { latent, .. } = features[0].source else {
        panic!("not an SAE feature")
    };
    // The latent with the largest difference of mean activations, computed here directly.
    let hook: HookPoint = "blocks.1.hook_resid_post".parse().unwrap();
    let mean_code = |prompts: &[&str]| -> Vec<f32> {
        let mut sum = vec![0f32; 64];
        for p in prompts {
            let batch = model.batch(&[*p]).unwrap();
            let mut hooks = Hooks::new().capture(hook);
            model.capture(&batch, &mut hooks).unwrap();
            let c = hooks.captured(hook).unwrap();
            let last = c
                .get(0)
                .unwrap()
                .get(c.dim(1).unwrap() - 1)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let code: Vec<f32> = sae.encode(&last).unwrap().get(0).unwrap().to_vec1().unwrap();
            sum.iter_mut()
                .zip(code)
                .for_each(|(s, c)| *s += c / prompts.len() as f32);
        }
        sum
    };
    let (p, n) = (mean_code(&positive), mean_code(&negative));
    let contrast: Vec<f32> = p.iter().zip(&n).map(|(p, n)| p - n).collect();
    let best = (0..64)
        .max_by(|&a, &b| contrast[a].total_cmp(&contrast[b]))
        .unwrap();
    assert_eq!(latent, best);
    assert!(contrast[best] > 0.0);
    assert_eq!(
        features[0].direction,
        sae.w_dec.get(best).unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn an_sae_latent_can_be_named_by_its_output_score() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    // More latents than one batch of decoder rows (256), so that the batching is crossed.
    let sae = loupe_sae::testing::random_relu_sae(32, 300, "blocks.1.hook_resid_post", 9).unwrap();
    loupe_sae::saelens::save(&sae, &tmp.path().join("sae")).unwrap();
    let sae_path = tmp.path().join("sae").display().to_string();
    let path = book(
        tmp.path(),
        &format!("[[feature]]\nname = \"tee\"\nkind = \"sae\"\nsae = \"{sae_path}\"\nselect = \"output\"\nconcepts = [\"t\", \"x\"]\n"),
    );
    let features = load_book(&path, &model).unwrap();
    let Source::Sae { latent, .. } = features[0].source else {
        panic!("not an SAE feature")
    };
    // Computed here one latent at a time: each decoder row's logit lens, and the z-score of the
    // concept tokens' mean logit against the vocabulary.
    let concept = loupe_scope::output_score::concept_tokens(&model, &["t".into(), "x".into()]).unwrap();
    assert!(!concept.is_empty());
    let z = |row: usize| -> f64 {
        let direction = sae.w_dec.get(row).unwrap().reshape((1, 1, 32)).unwrap();
        let logits: Vec<f32> = model
            .unembed(&direction)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = logits.len() as f64;
        let mean = logits.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (logits.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let concept_mean =
            concept.iter().map(|&t| logits[t as usize] as f64).sum::<f64>() / concept.len() as f64;
        (concept_mean - mean) / std
    };
    let scores: Vec<f64> = (0..300).map(z).collect();
    let best = (0..300).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
    assert_eq!(latent, best, "scores {} and {}", scores[latent], scores[best]);
    let batched = loupe_scope::output_score::output_scores(&model, &sae, &concept).unwrap();
    for (a, b) in batched.iter().zip(&scores) {
        assert!((*a as f64 - b).abs() < 1e-3, "{a} vs {b}");
    }

    // Refusals: no concepts, an unknown selection.
    let refused = |entry: &str| -> String {
        let path = book(
            tmp.path(),
            &format!("[[feature]]\nname = \"tee\"\nkind = \"sae\"\nsae = \"{sae_path}\"\n{entry}\n"),
        );
        match load_book(&path, &model) {
            Ok(_) => panic!("accepted: {entry}"),
            Err(e) => e.to_string(),
        }
    };
    let e = refused("select = \"output\"");
    assert!(e.contains("concepts") && e.contains("'tee'.concepts"), "{e}");
    let e = refused("select = \"vibes\"\nconcepts = [\"t\"]");
    assert!(
        e.contains("'vibes'") && e.contains("input") && e.contains("output"),
        "{e}"
    );
}

/// A transcoder's latent is a direction where its decoder writes (the MLP's output), chosen from
/// what it reads; amplifiers that encode one hook with the SAE refuse it by name.
#[test]
fn a_transcoder_latent_is_its_decoder_row_at_the_output_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let mut transcoder =
        loupe_sae::testing::random_relu_sae(32, 64, "blocks.1.ln2.hook_normalized", 3).unwrap();
    transcoder.metadata.hook_name_out = Some("blocks.1.hook_mlp_out".into());
    loupe_sae::saelens::save(&transcoder, &tmp.path().join("tc")).unwrap();
    let text = "[[feature]]\nname = \"x\"\nkind = \"sae\"\nsae = \"tc\"\nlatent = 3\n";
    let features = load_book(&book(tmp.path(), text), &model).unwrap();
    let feature = &features[0];
    assert_eq!(feature.hook, HookPoint::MlpOut(1));
    assert_eq!(
        feature.direction,
        transcoder.w_dec.get(3).unwrap().to_vec1::<f32>().unwrap()
    );
    let e = feature.sae_latent("feature", "steer").err().unwrap().to_string();
    assert!(
        e.contains("transcoder")
            && e.contains("blocks.1.ln2.hook_normalized")
            && e.contains("kind = \"probe\""),
        "{e}"
    );
    // Moved to the residual stream the MLP's output is added to: the same vector.
    let moved = format!("{text}site = \"blocks.1.hook_resid_post\"\n");
    let features = load_book(&book(tmp.path(), &moved), &model).unwrap();
    assert_eq!(features[0].hook, HookPoint::ResidPost(1));
    assert_eq!(features[0].direction, feature.direction);
    let elsewhere = format!("{text}site = \"blocks.2.hook_resid_post\"\n");
    let e = load_book(&book(tmp.path(), &elsewhere), &model)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("site") && e.contains("blocks.1.hook_mlp_out"), "{e}");
}
