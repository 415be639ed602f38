//! The scope runner on a tiny random-weight model: batched generation with the shared target
//! prefill gives, token for token, what generating each variant alone from the whole target
//! prompt gives; an interrupted sweep resumes without redoing or losing work; bad settings are
//! refused before any generation.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use loupe_model::{generate, GenerateConfig, HookPoint, Hooks, Model, Positions, Sampling};
use loupe_scope::amplify::sae::{SaeFeature, SaeMode};
use loupe_scope::amplify::Amplifier;
use loupe_scope::config::{AmplifierConfig, SaeAmplifierMode, Site, TargetLayer};
use loupe_scope::results::read_results;
use loupe_scope::{ScopeConfig, ScopePlan};

mod common;
use common::{activation, embedder, tiny_model, tiny_sae, StopAfter};

const TARGET: &str = "the cat sat on the mat and then";

fn config(dir: &Path, extra: &str) -> ScopeConfig {
    let sae = tiny_sae(dir, "blocks.1.hook_resid_post");
    let book = dir.join("features.toml");
    std::fs::write(
        &book,
        format!(
            "[[feature]]\nname = \"latent5\"\nkind = \"sae\"\nsae = {:?}\nlatent = 5\n",
            sae.display().to_string()
        ),
    )
    .unwrap();
    let text = format!(
        r#"
out = {out:?}
features = {book:?}
[source]
prompts = ["the dog", "a tall tree by the river", "hello"]
layers = [0, 1, 2]
[target]
prompt = "{TARGET}"
position = 3
[null]
bos = ""
the = "the"
[generate]
max_new_tokens = 6
batch_rows = 64
[[amplifier]]
kind = "none"
[[amplifier]]
kind = "scale"
values = [3]
[[amplifier]]
kind = "cfg"
values = [2]
[[amplifier]]
kind = "sae"
feature = "latent5"
values = [4]
{extra}
"#,
        out = dir.join("out").display().to_string(),
        book = book.display().to_string(),
    );
    toml::from_str(&text).unwrap()
}

#[test]
fn batched_generation_equals_generating_each_variant_alone() {
    check_batched_equals_alone(Site::ResidPost, TargetLayer::Source);
}

#[test]
fn batched_generation_equals_alone_with_a_fixed_target_layer() {
    // Layer 1: a patch at the last layer of a mid-prompt position would reach no later token.
    check_batched_equals_alone(Site::ResidPost, TargetLayer::Fixed(1));
}

#[test]
fn batched_generation_equals_alone_at_the_mlp_sites() {
    check_batched_equals_alone(Site::MlpOut, TargetLayer::Source);
    check_batched_equals_alone(Site::MlpPost, TargetLayer::Source);
}

fn check_batched_equals_alone(site: Site, target_layer: TargetLayer) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let mut config = config(tmp.path(), "");
    config.target.layer = target_layer;
    config.source.site = site;
    if site != Site::ResidPost {
        // The SAE reads the residual stream.
        config.amplifiers.retain(|a| a.kind() != "sae");
    }
    let plan = ScopePlan::new(&config, &model).unwrap();
    // none, scale, cfg × 2 null prompts at each of 3 layers, and the SAE latent at layer 1 only.
    let rows = 3 * (3 * 4 + usize::from(site == Site::ResidPost));
    assert_eq!(plan.total_rows().unwrap(), rows);
    let summary = plan.run(&embedder(), &mut loupe_util::NoProgress).unwrap();
    assert_eq!(summary.generated, rows);
    let records = read_results(&config.out.join("results.jsonl")).unwrap();
    assert_eq!(records.len(), rows);
    assert!(records
        .iter()
        .filter(|r| r.amplifier == "sae")
        .all(|r| r.layer == 1));

    let sae = loupe_sae::saelens::load(&tmp.path().join("sae-blocks.1.hook_resid_post")).unwrap();
    let latent5 = SaeFeature::new("latent5", Arc::new(sae), 5, SaeMode::Scale { alpha: 4.0 }).unwrap();
    let target_ids = model.encode_prompt(TARGET).unwrap();
    let generation = GenerateConfig {
        max_new_tokens: 6,
        sampling: Sampling::Greedy,
        stop_tokens: model.stop_tokens(),
    };
    let bos = model.tokenizer.bos().unwrap();
    for record in &records {
        let hook: HookPoint = record.hook.parse().unwrap();
        let h = activation(&model, &record.source, hook);
        // The amplification, written out here from docs/design.md's formulas ("Amplification, exactly").
        let amplified: Vec<f32> = match (record.amplifier.as_str(), record.null.as_deref()) {
            ("none", _) => h.clone(),
            ("scale", _) => h.iter().map(|x| 3.0 * x).collect(),
            ("cfg", Some(null)) => {
                let null_ids = if null == "bos" {
                    vec![bos]
                } else {
                    model.encode_prompt("the").unwrap()
                };
                let batch =
                    loupe_model::Batch::left_padded(&[null_ids], model.pad_id(), &Device::Cpu).unwrap();
                let mut hooks = Hooks::new().capture(hook);
                model.capture(&batch, &mut hooks).unwrap();
                let c = hooks.captured(hook).unwrap();
                let n: Vec<f32> = c
                    .get(0)
                    .unwrap()
                    .get(c.dim(1).unwrap() - 1)
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                h.iter().zip(&n).map(|(h, n)| h + 2.0 * (h - n)).collect()
            }
            ("sae", _) => latent5.amplify(&h, None).unwrap(),
            other => panic!("unexpected {other:?}"),
        };
        // Alone: the whole target prompt, no shared prefill, one row.
        let target_hook = site.hook(record.target_layer);
        assert_eq!(hook, site.hook(record.layer));
        match target_layer {
            TargetLayer::Source => assert_eq!(record.target_layer, record.layer),
            TargetLayer::Fixed(l) => assert_eq!(record.target_layer, l),
        }
        let mut hooks = Hooks::new().replace(
            target_hook,
            Positions::Only(vec![3]),
            Tensor::from_slice(&amplified, amplified.len(), &Device::Cpu).unwrap(),
        );
        let alone = generate(
            &model,
            std::slice::from_ref(&target_ids),
            model.pad_id(),
            &mut hooks,
            &generation,
        )
        .unwrap();
        assert_eq!(
            alone[0].tokens, record.tokens,
            "{} at layer {} for {:?}",
            record.label, record.layer, record.source
        );
    }
    // The patch changed something: not every variant says the same.
    let distinct: std::collections::HashSet<&Vec<u32>> = records.iter().map(|r| &r.tokens).collect();
    assert!(distinct.len() > 1, "only {} distinct generations", distinct.len());

    // One row per batch gives the same tokens again.
    let mut one_by_one = config.clone();
    one_by_one.out = tmp.path().join("out-one");
    one_by_one.generate.batch_rows = 1;
    ScopePlan::new(&one_by_one, &model)
        .unwrap()
        .run(&embedder(), &mut loupe_util::NoProgress)
        .unwrap();
    let single = read_results(&one_by_one.out.join("results.jsonl")).unwrap();
    assert_eq!(
        single
            .iter()
            .map(|r| (&r.label, r.layer, &r.tokens))
            .collect::<Vec<_>>(),
        records
            .iter()
            .map(|r| (&r.label, r.layer, &r.tokens))
            .collect::<Vec<_>>()
    );
}

#[test]
fn an_interrupted_sweep_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let mut config = config(tmp.path(), "");
    config.generate.batch_rows = 5;
    let plan = ScopePlan::new(&config, &model).unwrap();
    let embedder = embedder();
    let first = plan
        .run(
            &embedder,
            &mut StopAfter {
                batches: 2,
                seen: Cell::new(0),
            },
        )
        .unwrap();
    assert!(first.stopped);
    assert_eq!(first.generated, 10);
    let results = config.out.join("results.jsonl");
    assert_eq!(read_results(&results).unwrap().len(), 10);
    // A line cut short by the interruption is dropped, not fatal.
    let mut text = std::fs::read_to_string(&results).unwrap();
    text.push_str("{\"source_index\": 0, \"sour");
    std::fs::write(&results, text).unwrap();

    let second = plan.run(&embedder, &mut loupe_util::NoProgress).unwrap();
    assert!(!second.stopped);
    assert_eq!((second.resumed, second.generated), (10, 29));
    let records = read_results(&results).unwrap();
    let keys: std::collections::HashSet<_> = records.iter().map(|r| r.key()).collect();
    assert_eq!((records.len(), keys.len()), (39, 39));

    // A run with another target prompt does not mix its results into these.
    let mut other = config.clone();
    other.target.prompt = "identity".into();
    let e = ScopePlan::new(&other, &model)
        .unwrap()
        .run(&embedder, &mut loupe_util::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different run"), "{e}");
}

fn refused(config: &ScopeConfig, model: &Model) -> String {
    match ScopePlan::new(config, model) {
        Ok(_) => panic!("the config was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_settings_are_refused_before_any_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let base = config(tmp.path(), "");

    // An SAE trained at another layer than the sweep reads.
    let mut c = base.clone();
    c.source.layers = vec![0, 2];
    let e = refused(&c, &model);
    assert!(
        e.contains("'latent5'") && e.contains("layer 1") && e.contains("source.layers"),
        "{e}"
    );

    // A feature at another kind of hook than the site.
    let mut c = base.clone();
    c.source.site = loupe_scope::config::Site::MlpPost;
    let e = refused(&c, &model);
    assert!(
        e.contains("blocks.1.hook_resid_post (32 wide)")
            && e.contains("48 wide")
            && e.contains("source.site"),
        "{e}"
    );

    // An empty source prompt, and a file of them with an empty line is fine.
    let mut c = base.clone();
    c.source.prompts.push("  ".into());
    let e = refused(&c, &model);
    assert!(e.contains("source.prompts[3]") && e.contains("empty"), "{e}");

    // A target position outside the target prompt.
    let mut c = base.clone();
    c.target.position = loupe_scope::config::TokenPosition::Index(500);
    let e = refused(&c, &model);
    assert!(e.contains("target.position") && e.contains("500"), "{e}");

    // A source position outside a source prompt.
    let mut c = base.clone();
    c.source.position = loupe_scope::config::TokenPosition::Index(5);
    let e = refused(&c, &model);
    assert!(e.contains("source.position") && e.contains("\"hello\""), "{e}");

    // A feature the book does not have, and an unknown amplifier.
    let mut c = base.clone();
    if let AmplifierConfig::Sae { feature, .. } = &mut c.amplifiers[3] {
        *feature = "latent6".into();
    }
    let e = refused(&c, &model);
    assert!(e.contains("no feature 'latent6'") && e.contains("latent5"), "{e}");

    // A layer the model does not have.
    let mut c = base.clone();
    c.source.layers = vec![1, 3];
    assert!(refused(&c, &model).contains("layer 3 does not exist"));
}

#[test]
fn a_probe_from_another_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let other_dir = tmp.path().join("other");
    loupe_model::testing::write_tiny_hf_dir(&other_dir, 8).unwrap();
    let other = Model::load(other_dir.to_str().unwrap(), &Device::Cpu).unwrap();
    let probe_path = tmp.path().join("probe.safetensors");
    loupe_probe::Probe {
        info: loupe_probe::ProbeInfo {
            feature: "lang=a".into(),
            level: loupe_probe::features::Level::Token,
            hook: "blocks.1.hook_resid_post".parse().unwrap(),
            width: 32,
            model_name: "other".into(),
            model_sha256: other.source.fingerprint().unwrap(),
            store: "store".into(),
            method: "mean_diff".into(),
            k: 1,
            c: 1.0,
            held_out: Default::default(),
            train: Default::default(),
            balance: loupe_probe::dataset::ClassBalance {
                train_positive: 1,
                train_negative: 1,
                held_out_positive: 1,
                held_out_negative: 1,
            },
        },
        neurons: vec![3],
        weights: vec![1.0],
        bias: 0.0,
        mean: None,
        std: None,
    }
    .save(&probe_path)
    .unwrap();
    let mut c = config(tmp.path(), "[[amplifier]]\nkind = \"probe\"\nfeature = \"p\"\n");
    let book = tmp.path().join("probe-book.toml");
    std::fs::write(
        &book,
        format!(
            "[[feature]]\nname = \"p\"\nkind = \"probe\"\nprobe = {:?}\n",
            probe_path.display().to_string()
        ),
    )
    .unwrap();
    c.features = Some(book);
    c.amplifiers.retain(|a| a.kind() != "sae");
    let e = refused(&c, &model);
    assert!(e.contains("trained on another model"), "{e}");
}

#[test]
fn clamping_reads_the_latents_maximum_that_sae_top_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let mut c = config(tmp.path(), "");
    if let AmplifierConfig::Sae { mode, .. } = &mut c.amplifiers[3] {
        *mode = SaeAmplifierMode::Clamp;
    }
    let e = refused(&c, &model);
    assert!(
        e.contains("max_activation") && e.contains("loupe sae top --sae"),
        "{e}"
    );

    // What `loupe sae top` writes beside the SAE.
    let top = tmp.path().join("sae-blocks.1.hook_resid_post").join("top");
    std::fs::create_dir_all(&top).unwrap();
    let latent = |i: u32, max: f32| {
        serde_json::json!({"latent": i, "fired": 3, "frequency": 0.1, "max_activation": max,
                           "mean_activation": 1.0, "examples": []})
    };
    let report = serde_json::json!({"tokens": 30, "latents": [latent(4, 9.0), latent(5, 2.5)]});
    std::fs::write(top.join("top.json"), report.to_string()).unwrap();
    let plan = ScopePlan::new(&c, &model).unwrap();
    assert_eq!(plan.total_rows().unwrap(), 39);
    let book = loupe_scope::load_book(c.features.as_ref().unwrap(), &model).unwrap();
    assert_eq!(book[0].recorded_max_activation().unwrap(), Some(2.5));
}

#[test]
fn an_amplifier_field_of_another_kind_or_mode_is_refused_with_its_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let parse = |amplifier: &str| {
        let path = tmp.path().join("scope.toml");
        std::fs::write(
            &path,
            format!("out = \"o\"\n[source]\nprompts = [\"a\"]\nlayers = [0]\n[[amplifier]]\n{amplifier}\n"),
        )
        .unwrap();
        ScopeConfig::from_file(&path, &[])
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    parse("kind = \"sae\"\nfeature = \"f\"\nmode = \"clamp\"\nmax_activation = 3.0").unwrap();
    let e = parse("kind = \"steer\"").unwrap_err();
    assert!(
        e.contains("unknown variant `steer`") && e.contains("scale"),
        "{e}"
    );
    let e = parse("kind = \"probe\"\nfeature = \"f\"\nmax_activation = 3.0").unwrap_err();
    assert!(
        e.contains("max_activation") && e.contains("belongs to kind sae"),
        "{e}"
    );
    let e = parse("kind = \"scale\"\nvalues = [3]\nnulls = [\"bos\"]").unwrap_err();
    assert!(
        e.contains("`nulls` belongs to kind cfg") && e.contains("5 | [[amplifier]]"),
        "{e}"
    );
    let e = parse("kind = \"sae\"\nfeature = \"f\"\nmax_activation = 3.0").unwrap_err();
    assert!(
        e.contains("max_activation") && e.contains("mode = \"clamp\""),
        "{e}"
    );
    let e = parse("kind = \"sae\"\nmode = \"steer\"\nfeature = \"f\"").unwrap_err();
    assert!(
        e.contains("unknown variant `steer`") && e.contains("clamp"),
        "{e}"
    );
}

/// The fluency judge from the shared prefix equals the surprisal that one plain forward pass over
/// the whole target prompt and generation gives, for generations of different lengths in one batch.
#[test]
fn fluency_equals_the_surprisal_of_a_plain_forward_pass() {
    use loupe_scope::patch::PatchedTarget;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let target = model.encode_prompt(TARGET).unwrap();
    let generated: Vec<Vec<u32>> = vec![vec![5, 9, 13, 2], vec![7], vec![], vec![11, 3, 3]];
    for position in [0, 3, target.len() - 1] {
        let patched = PatchedTarget::new(&model, &target, position).unwrap();
        let rows: Vec<&[u32]> = generated.iter().map(Vec::as_slice).collect();
        let fluency = patched.fluency(&model, &rows).unwrap();
        for (tokens, got) in generated.iter().zip(&fluency) {
            if tokens.is_empty() {
                assert_eq!(*got, None);
                continue;
            }
            let mut ids = target.clone();
            ids.extend(tokens);
            let batch = loupe_model::Batch::left_padded(&[ids], model.pad_id(), &Device::Cpu).unwrap();
            let logits = model
                .forward(&batch, &mut Hooks::new(), loupe_model::Logits::All)
                .unwrap()
                .get(0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let expected: f32 = tokens
                .iter()
                .enumerate()
                .map(|(j, &t)| {
                    let row = &logits[target.len() - 1 + j];
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max;
                    log_sum - row[t as usize]
                })
                .sum::<f32>()
                / tokens.len() as f32;
            let got = got.expect("a judged generation");
            assert!(
                (got - expected).abs() < 1e-3 * expected.abs().max(1.0),
                "position {position}: {got} vs {expected}"
            );
        }
    }
}

/// A described feature gives every record, plain patching's too, a concept score: the cosine of
/// the generation's embedding and the description's.
#[test]
fn every_generation_is_scored_against_each_features_description() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let c = config(tmp.path(), "");
    let book = c.features.clone().unwrap();
    let mut text = std::fs::read_to_string(&book).unwrap();
    text.push_str("description = \"a dog running by a river\"\n");
    std::fs::write(&book, text).unwrap();
    let plan = ScopePlan::new(&c, &model).unwrap();
    let embedder = embedder();
    plan.run(&embedder, &mut loupe_util::NoProgress).unwrap();
    let records = read_results(&c.out.join("results.jsonl")).unwrap();
    let description = embedder.embed(&["a dog running by a river"]).unwrap().remove(0);
    for r in &records {
        let generation = embedder.embed(&[r.generation.as_str()]).unwrap().remove(0);
        let expected = loupe_scope::judge::cosine(&description, &generation);
        let got = r.concept_scores["latent5"];
        assert!((got - expected).abs() < 1e-4, "{}: {got} vs {expected}", r.label);
    }
    assert!(records.iter().any(|r| r.amplifier == "none"));
}
