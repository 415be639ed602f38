//! The steering task on a tiny random-weight model: every batched, steered answer equals the
//! answer generated alone with the steering written out here from its definition; a stopped run
//! resumes without redoing or losing work; bad settings are refused before any generation.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use loupe_model::{
    generate, Edit, GenerateConfig, HookPoint, Hooks, Intervention, Model, Positions, Sampling,
};
use loupe_scope::amplify::sae::{SaeFeature, SaeMode};
use loupe_scope::amplify::Amplifier;
use loupe_scope::steer::{SteerConfig, SteerPlan, SteerRecord};

mod common;
use common::{activation, embedder, tiny_model, tiny_sae, StopAfter};

const HOOK: &str = "blocks.1.hook_resid_post";
const INSTRUCTIONS: [&str; 4] = ["the dog", "a tall tree by the river", "hello", "the cat sat"];
const POSITIVE: [&str; 2] = ["the dog", "the cat"];
const NEGATIVE: [&str; 2] = ["a tree", "the river"];

/// A feature book with an SAE latent and a mean difference at [`HOOK`], and a steering config
/// that uses both, cfg, and `extra` TOML after the concept's methods.
fn config(dir: &Path, extra: &str) -> SteerConfig {
    let sae = tiny_sae(dir, HOOK);
    let book = dir.join("features.toml");
    std::fs::write(
        &book,
        format!(
            "[[feature]]\nname = \"latent5\"\nkind = \"sae\"\nsae = {sae:?}\nlatent = 5\n\n\
             [[feature]]\nname = \"animal\"\nkind = \"mean_diff\"\nhook = \"{HOOK}\"\npositive = {POSITIVE:?}\nnegative = {NEGATIVE:?}\n",
            sae = sae.display().to_string()
        ),
    )
    .unwrap();
    let text = format!(
        r#"
out = {out:?}
features = {book:?}
instructions = {INSTRUCTIONS:?}
chat = false
layer = 1
[null]
the = "the"
[generate]
max_new_tokens = 5
batch_rows = 64
[[concept]]
name = "animals"
description = "a dog or a cat"
words = ["dog", "cat"]
prompting = "the cat"
prompts = {POSITIVE:?}
[[concept.method]]
kind = "sae"
feature = "latent5"
mode = "clamp"
max_activation = 3.0
values = [1, 4]
[[concept.method]]
kind = "sae"
feature = "latent5"
mode = "scale"
values = [8]
[[concept.method]]
kind = "probe"
feature = "animal"
values = [2]
[[concept.method]]
kind = "cfg"
null = "the"
values = [1.5]
{extra}
"#,
        out = dir.join("out").display().to_string(),
        book = book.display().to_string(),
    );
    toml::from_str(&text).unwrap()
}

fn records(config: &SteerConfig) -> Vec<SteerRecord> {
    loupe_scope::results::read_records(&config.out.join("results.jsonl")).unwrap()
}

fn mean(rows: &[Vec<f32>]) -> Vec<f32> {
    (0..rows[0].len())
        .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32)
        .collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// The mean norm of the hook's activation at each instruction's last token.
fn sigma(model: &Model, hook: HookPoint) -> f32 {
    let norms: Vec<f32> = INSTRUCTIONS
        .iter()
        .map(|p| {
            activation(model, p, hook)
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
        })
        .collect();
    norms.iter().sum::<f32>() / norms.len() as f32
}

#[test]
fn batched_steered_answers_equal_each_answer_steered_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let config = config(tmp.path(), "");
    let plan = SteerPlan::new(&config, &model).unwrap();
    // none, prompt, clamp ×2, scale, probe, cfg: 7 variants × 4 instructions.
    assert_eq!(plan.total_rows(), 28);
    let summary = plan.run(&embedder(), &mut loupe_util::NoProgress).unwrap();
    assert_eq!((summary.generated, summary.stopped), (28, false));
    let records = records(&config);
    assert_eq!(records.len(), 28);

    // Each steering, written out from its definition.
    let hook: HookPoint = HOOK.parse().unwrap();
    let sae = Arc::new(loupe_sae::saelens::load(&tmp.path().join(format!("sae-{HOOK}"))).unwrap());
    let latent = |mode| SaeFeature::new("latent5", Arc::clone(&sae), 5, mode).unwrap();
    let per_row = |amplifier: SaeFeature| -> Edit {
        Edit::Apply(Arc::new(move |x: &Tensor| {
            let rows: Vec<Vec<f32>> = x.to_dtype(DType::F32)?.to_vec2()?;
            let out: Vec<f32> = rows
                .iter()
                .flat_map(|h| amplifier.amplify(h, None).unwrap())
                .collect();
            Tensor::from_vec(out, x.dims(), x.device())?.to_dtype(x.dtype())
        }))
    };
    let positives: Vec<Vec<f32>> = POSITIVE.iter().map(|p| activation(&model, p, hook)).collect();
    let negatives: Vec<Vec<f32>> = NEGATIVE.iter().map(|p| activation(&model, p, hook)).collect();
    let direction = unit(
        &mean(&positives)
            .iter()
            .zip(mean(&negatives))
            .map(|(p, n)| p - n)
            .collect::<Vec<_>>(),
    );
    let shift = |v: Vec<f32>| Edit::Add(Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap());
    let null = activation(&model, "the", hook);
    let concept = mean(&positives);
    let sigma = sigma(&model, hook);
    assert!(
        (plan.sigma - sigma).abs() < 1e-3 * sigma,
        "σ {} against {sigma}",
        plan.sigma
    );

    let generation = GenerateConfig {
        max_new_tokens: 5,
        sampling: Sampling::Greedy,
        stop_tokens: model.stop_tokens(),
    };
    for record in &records {
        let edit = match record.label.as_str() {
            "none" | "prompt" => None,
            "sae latent5 clamp 1×max" => Some(per_row(latent(SaeMode::Clamp {
                c: 1.0,
                max_activation: 3.0,
            }))),
            "sae latent5 clamp 4×max" => Some(per_row(latent(SaeMode::Clamp {
                c: 4.0,
                max_activation: 3.0,
            }))),
            "sae latent5 scale ×8" => Some(per_row(latent(SaeMode::Scale { alpha: 8.0 }))),
            "mean_diff animal +2σ" => Some(shift(direction.iter().map(|d| 2.0 * sigma * d).collect())),
            "cfg 1.5 (null: the)" => Some(shift(
                concept.iter().zip(&null).map(|(c, n)| 1.5 * (c - n)).collect(),
            )),
            other => panic!("unexpected variant {other}"),
        };
        let prompt = if record.method == "prompt" {
            format!("{} the cat", record.instruction)
        } else {
            record.instruction.clone()
        };
        let mut hooks = Hooks::new();
        if let Some(edit) = edit {
            // Every position but the first.
            hooks = hooks.intervene(Intervention::new(hook, Positions::From(1), edit));
        }
        let ids = model.encode_prompt(&prompt).unwrap();
        let alone = generate(&model, &[ids], model.pad_id(), &mut hooks, &generation).unwrap();
        assert_eq!(
            alone[0].tokens, record.tokens,
            "{} on {:?}",
            record.label, record.instruction
        );
        assert_eq!(record.concept, "animals");
    }
    // Steering changed something: not every variant answers the same.
    let distinct: std::collections::HashSet<&Vec<u32>> = records.iter().map(|r| &r.tokens).collect();
    assert!(distinct.len() > 4, "only {} distinct answers", distinct.len());

    // The fluency of every answer is judged against the plain instruction: for the unsteered
    // answer, the mean surprisal of its tokens in a plain forward pass.
    let none = records
        .iter()
        .find(|r| r.method == "none" && !r.tokens.is_empty())
        .unwrap();
    let mut ids = model.encode_prompt(&none.instruction).unwrap();
    let start = ids.len();
    ids.extend(&none.tokens);
    let batch = loupe_model::Batch::left_padded(&[ids.clone()], model.pad_id(), &Device::Cpu).unwrap();
    let logits = model
        .forward(&batch, &mut Hooks::new(), loupe_model::Logits::All)
        .unwrap();
    let log_probs = candle_nn::ops::log_softmax(&logits.get(0).unwrap(), candle_core::D::Minus1).unwrap();
    let log_probs: Vec<Vec<f32>> = log_probs.to_vec2().unwrap();
    let expected: f32 = (start..ids.len())
        .map(|j| -log_probs[j - 1][ids[j] as usize])
        .sum::<f32>()
        / none.tokens.len() as f32;
    assert!(
        (none.fluency.unwrap() - expected).abs() < 1e-4,
        "{:?} against {expected}",
        none.fluency
    );

    // The study and its reports come out of the same records.
    let studies = plan.study(&records);
    assert_eq!(studies.len(), 1);
    let families: Vec<&str> = studies[0].held_out.iter().map(|m| m.family.as_str()).collect();
    assert_eq!(
        families,
        [
            "none",
            "prompt",
            "sae latent5 clamp",
            "sae latent5 scale",
            "mean_diff animal",
            "cfg (null: the)"
        ]
    );
    let context = loupe_scope::steer::report::SteerReportContext {
        model: model.name.clone(),
        hook: HOOK.into(),
        sigma: plan.sigma,
        expected: plan.total_rows(),
    };
    let paths = loupe_scope::steer::report::write_report(&config.out, &context, &studies, &records).unwrap();
    let markdown = std::fs::read_to_string(&paths.markdown).unwrap();
    assert!(
        markdown.contains("| mean_diff animal |") && !markdown.contains("Partial"),
        "{markdown}"
    );
    let svg = std::fs::read_to_string(config.out.join("curves-animals.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("cfg (null: the)"));
}

#[test]
fn a_stopped_run_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let mut config = config(tmp.path(), "");
    config.generate.batch_rows = 5;
    let plan = SteerPlan::new(&config, &model).unwrap();
    let embedder = embedder();
    let stop = &mut StopAfter {
        batches: 2,
        seen: Cell::new(0),
    };
    let first = plan.run(&embedder, stop).unwrap();
    assert!(first.stopped);
    assert_eq!(first.generated, 10);
    assert_eq!(records(&config).len(), 10);
    let second = plan.run(&embedder, &mut loupe_util::NoProgress).unwrap();
    assert_eq!(
        (second.resumed, second.generated, second.stopped),
        (10, 18, false)
    );
    let all = records(&config);
    let keys: std::collections::HashSet<_> = all.iter().map(SteerRecord::key).collect();
    assert_eq!((all.len(), keys.len()), (28, 28));
    // A partial report says so.
    let studies = plan.study(&all[..10]);
    let context = loupe_scope::steer::report::SteerReportContext {
        model: model.name.clone(),
        hook: HOOK.into(),
        sigma: plan.sigma,
        expected: plan.total_rows(),
    };
    let paths =
        loupe_scope::steer::report::write_report(&config.out, &context, &studies, &all[..10]).unwrap();
    assert!(std::fs::read_to_string(paths.markdown)
        .unwrap()
        .contains("Partial: 10 of 28"));

    // Another concept description would judge differently: its results are not mixed in.
    let mut other = config.clone();
    other.concepts[0].description = "a tree".into();
    let e = SteerPlan::new(&other, &model)
        .unwrap()
        .run(&embedder, &mut loupe_util::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(e.contains("different run"), "{e}");
}

fn refused_by_plan(config: &SteerConfig, model: &Model) -> String {
    match SteerPlan::new(config, model) {
        Ok(_) => panic!("the config was accepted"),
        Err(e) => e.to_string(),
    }
}

fn refused_on_reading(dir: &Path, text: &str) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    match SteerConfig::from_file(&path, &[]) {
        Ok(_) => panic!("the config was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_settings_are_refused_before_any_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(&tmp.path().join("model"));
    let good = config(tmp.path(), "");

    let mut few = good.clone();
    few.instructions.truncate(3);
    let e = refused_by_plan(&few, &model);
    assert!(e.contains("instructions") && e.contains("at least 4"), "{e}");

    // The tiny model has no chat template.
    let mut chat = good.clone();
    chat.chat = true;
    let e = refused_by_plan(&chat, &model);
    assert!(
        e.contains("no chat template") && e.contains("chat = false"),
        "{e}"
    );

    let mut deep = good.clone();
    deep.layer = 9;
    let e = refused_by_plan(&deep, &model);
    assert!(e.contains("layer 9 does not exist"), "{e}");

    // The features live at layer 1: steering layer 0 with them is refused, naming the method.
    let mut elsewhere = good.clone();
    elsewhere.layer = 0;
    let e = refused_by_plan(&elsewhere, &model);
    assert!(
        e.contains("method[0] (sae).feature") && e.contains("lives at blocks.1.hook_resid_post"),
        "{e}"
    );

    let mut unknown = good.clone();
    unknown.concepts[0]
        .methods
        .push(toml::from_str("kind = \"probe\"\nfeature = \"nope\"\nvalues = [1]").unwrap());
    let e = refused_by_plan(&unknown, &model);
    assert!(e.contains("no feature 'nope'") && e.contains("latent5"), "{e}");

    let mut twice = good.clone();
    let repeated = twice.concepts[0].methods[2].clone();
    twice.concepts[0].methods.push(repeated);
    let e = refused_by_plan(&twice, &model);
    assert!(e.contains("'mean_diff animal +2σ' is asked for twice"), "{e}");

    // Clamping needs the latent's maximum: from `sae top`, or given.
    let mut no_max = good.clone();
    no_max.concepts[0].methods[0] =
        toml::from_str("kind = \"sae\"\nfeature = \"latent5\"\nvalues = [1]").unwrap();
    let e = refused_by_plan(&no_max, &model);
    assert!(e.contains("max_activation") && e.contains("loupe sae top"), "{e}");

    // Read from a file: what can be checked without the model is checked first.
    let base = toml::to_string(&good).unwrap();
    let dir = tmp.path();
    let e = refused_on_reading(dir, &base.replace("[[concept]]", "[[concept]]\ncolour = \"red\""));
    assert!(e.contains("colour"), "{e}");
    let e = refused_on_reading(dir, &base.replace("values = [2.0]", "values = []"));
    assert!(
        e.contains("method[2] (probe).values") && e.contains("at least one strength"),
        "{e}"
    );
    let e = refused_on_reading(dir, &base.replace("null = \"the\"", "null = \"bos\""));
    assert!(e.contains("no null prompt named 'bos'"), "{e}");
    let e = refused_on_reading(
        dir,
        &base.replace("prompts = [\"the dog\", \"the cat\"]", "prompts = []"),
    );
    assert!(
        e.contains("prompts") && e.contains("cfg steers by the concept's own activation"),
        "{e}"
    );
    let e = refused_on_reading(
        dir,
        &base.replace("description = \"a dog or a cat\"", "description = \"\""),
    );
    assert!(e.contains("description") && e.contains("is empty"), "{e}");
}
