//! End-to-end tests of the `loupe` binary: what a user types and what they see.

mod common;

use std::process::Command;

use common::{assert_clear_error, assert_run_directory, loupe, stderr, stdout, tiny_capture_setup};
use loupe_model::testing::write_tiny_hf_dir;

#[test]
fn help_explains_each_command() {
    let out = loupe(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for command in [
        "generate", "inspect", "hooks", "capture", "sae", "probe", "features", "scope", "steer", "store",
        "verify", "serve",
    ] {
        assert!(help.contains(command), "{help}");
    }
    let out = loupe(&["inspect", "--help"]);
    assert!(stdout(&out).contains("--hook"));
}

#[test]
fn bad_model_names_and_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    let out = loupe(&["generate", "--model", missing.to_str().unwrap(), "--prompt", "hi"]);
    assert_clear_error(&out, &["missing.gguf", "not found", "smollm2"]);

    let corrupt = dir.path().join("broken.gguf");
    std::fs::write(&corrupt, vec![7u8; 1000]).unwrap();
    let out = loupe(&["generate", "--model", corrupt.to_str().unwrap(), "--prompt", "hi"]);
    assert_clear_error(&out, &["broken.gguf", "GGUF"]);
}

#[test]
fn hook_and_prompt_errors_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_hf_dir(dir.path(), 3).unwrap();
    let model = dir.path().to_str().unwrap();

    let out = loupe(&[
        "inspect",
        "--model",
        model,
        "--prompt",
        "hi",
        "--hook",
        "blocks.1.resid_post",
    ]);
    assert_clear_error(
        &out,
        &["blocks.1.resid_post", "blocks.L.hook_resid_post", "hook_embed"],
    );

    let out = loupe(&[
        "inspect",
        "--model",
        model,
        "--prompt",
        "hi",
        "--hook",
        "blocks.7.hook_resid_post",
    ]);
    assert_clear_error(&out, &["3 layers", "0 to 2"]);

    let long = "word ".repeat(100);
    let out = loupe(&[
        "inspect",
        "--model",
        model,
        "--prompt",
        &long,
        "--hook",
        "blocks.1.hook_resid_post",
    ]);
    assert_clear_error(&out, &["context of 64 tokens"]);

    let out = loupe(&["generate", "--model", model, "--prompt", "", "--max-tokens", "3"]);
    assert_clear_error(&out, &["empty"]);

    let out = loupe(&["hooks", "--model", model]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("blocks.2.mlp.hook_post\t[batch, pos, 48]"));
}

#[test]
fn generate_and_inspect_the_default_model() {
    let out = loupe(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}\n(the default model comes from scripts/fetch-models)",
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim_end(), "The capital of France is Paris.");
    assert!(stderr(&out).contains("tokens/s"));

    let out = loupe(&[
        "inspect",
        "--prompt",
        "The capital of France is",
        "--hook",
        "blocks.29.hook_resid_post",
        "--top",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("shape [1, 5, 576]"), "{text}");
    // The logit lens at the last layer reads the model's own next token.
    let last = text.lines().last().unwrap();
    assert!(last.contains("\" is\"") && last.contains("\" Paris\""), "{text}");
}

#[test]
fn capture_reads_a_config_and_flags_override_it() {
    let (dir, config) = tiny_capture_setup(20);
    let out = dir.path().join("other-store");
    let out = loupe(&[
        "capture",
        "--config",
        config.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-tokens",
        "40",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("other-store"), "{}", stdout(&out));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("other-store/manifest.json")).unwrap())
            .unwrap();
    assert!(manifest["tokens"].as_u64().unwrap() >= 40 && manifest["complete"].as_bool().unwrap());
    assert!(
        !dir.path().join("store").exists(),
        "the flag replaced the config's output"
    );

    // A field of the wrong type is named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("context_length = 16", "context_length = \"long\""),
    )
    .unwrap();
    let out = loupe(&["capture", "--config", bad.to_str().unwrap()]);
    assert_clear_error(&out, &["bad.toml", "context_length"]);
}

#[test]
fn a_killed_capture_resumes_to_the_same_store() {
    let (dir, config) = tiny_capture_setup(400);
    let whole = dir.path().join("whole");
    let out = loupe(&[
        "capture",
        "--config",
        config.to_str().unwrap(),
        "--output",
        whole.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let store = dir.path().join("store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["capture", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no chance to clean up) once a few shards are written.
    while !store.join("shard-00003.safetensors").exists() && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("manifest.json")).unwrap()).unwrap();
    assert!(
        !killed["complete"].as_bool().unwrap(),
        "the capture was killed before it finished"
    );
    let out = loupe(&["capture", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut names: Vec<_> = std::fs::read_dir(&whole)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut resumed: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    resumed.sort();
    assert_eq!(names, resumed);
    for name in names.iter().filter(|n| n.to_str().unwrap().starts_with("shard")) {
        assert!(
            std::fs::read(whole.join(name)).unwrap() == std::fs::read(store.join(name)).unwrap(),
            "{name:?}"
        );
    }
}

/// A skip transcoder of the tiny model's MLP, from capture to export: trained from a store of the
/// MLP's input and output, evaluated spliced in place of the MLP, exported to sparsify's layout
/// and evaluated again from there with the same figures.
#[test]
fn a_skip_transcoder_from_the_command_line() {
    let (dir, capture_config) = tiny_capture_setup(200);
    let d = dir.path().display();
    let text = std::fs::read_to_string(&capture_config).unwrap().replace(
        "hooks = [\"blocks.1.hook_resid_post\"]",
        "hooks = [\"blocks.1.ln2.hook_normalized\", \"blocks.1.hook_mlp_out\"]",
    );
    std::fs::write(&capture_config, text).unwrap();
    let out = loupe(&["capture", "--config", capture_config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("transcoder.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{d}/store\"\nhook = \"blocks.1.ln2.hook_normalized\"\ntarget_hook = \"blocks.1.hook_mlp_out\"\n\
             skip_connection = true\noutput = \"{d}/tc\"\narchitecture = \"topk\"\nexpansion = 2\nk = 4\n\
             train_tokens = 2560\nbatch_size = 128\neval_every = 5\ncheckpoint_every = 5\nheld_out = 0.2\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // A target the store lacks is refused, naming the field and the capture to run.
    let out = loupe(&[
        "sae",
        "train",
        "--config",
        config,
        "--set",
        "target_hook=blocks.1.hook_attn_out",
    ]);
    assert_clear_error(&out, &["target_hook", "capture"]);

    let out = loupe(&["sae", "train", "--config", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = dir.path().join("tc");
    assert_run_directory(&run);
    let model = format!("{d}/model");
    let eval = |sae: &str, extra: &[&str]| {
        let mut args = vec!["sae", "eval", "--sae", sae, "--model", &model, "--contexts", "4"];
        args.extend_from_slice(extra);
        let out = loupe(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("transcoder blocks.1.ln2.hook_normalized → blocks.1.hook_mlp_out"),
            "{}",
            stdout(&out)
        );
    };
    eval(run.to_str().unwrap(), &[]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(report["hook_out"], "blocks.1.hook_mlp_out");
    assert!(report["spliced"]["ce_loss_recovered"].is_number(), "{report}");

    let exported = dir.path().join("exported/layers.1.mlp");
    let out = loupe(&[
        "sae",
        "export",
        "--sae",
        run.to_str().unwrap(),
        "--format",
        "sparsify",
        "--output",
        exported.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = dir.path().join("again.json");
    let store = format!("{d}/store");
    eval(
        exported.to_str().unwrap(),
        &[
            "--store",
            &store,
            "--held-out",
            "0.2",
            "--seed",
            "0",
            "--output",
            again.to_str().unwrap(),
        ],
    );
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&again).unwrap()).unwrap();
    for (part, key) in [("reconstruction", "fvu"), ("spliced", "ce_sae")] {
        let (a, b) = (
            report[part][key].as_f64().unwrap(),
            again[part][key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() < 1e-5 * a.abs().max(1.0),
            "{part}.{key}: {a} vs {b}"
        );
    }
}

#[test]
fn sae_train_eval_and_top_on_a_tiny_model() {
    let (dir, capture_config) = tiny_capture_setup(300);
    let d = dir.path().display();
    let out = loupe(&["capture", "--config", capture_config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("sae.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{d}/store\"\nhook = \"blocks.1.hook_resid_post\"\noutput = \"{d}/sae\"\narchitecture = \"topk\"\n\
             expansion = 2\nk = 4\ntrain_tokens = 2560\nbatch_size = 128\neval_every = 5\ncheckpoint_every = 5\nheld_out = 0.2\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let out = loupe(&["sae", "train", "--config", config, "--set", "lr=1e-3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("explained variance"), "{}", stdout(&out));
    let run = dir.path().join("sae");
    assert_run_directory(&run);

    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        run.to_str().unwrap(),
        "--model",
        &format!("{d}/model"),
        "--contexts",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("CE loss recovered"), "{}", stdout(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(
        report["held_out"].as_f64(),
        Some(0.2),
        "the training run's split is reused"
    );
    for key in [
        "ce_clean",
        "ce_sae",
        "ce_zero_ablation",
        "ce_loss_recovered",
        "kl_sae",
    ] {
        assert!(report["spliced"][key].is_number(), "{key}: {report}");
    }
    for key in [
        "mse",
        "fvu",
        "explained_variance",
        "l0",
        "dead_fraction",
        "dense_fraction",
    ] {
        assert!(report["reconstruction"][key].is_number(), "{key}: {report}");
    }

    let out = loupe(&[
        "sae",
        "top",
        "--sae",
        run.to_str().unwrap(),
        "--store",
        &format!("{d}/store"),
        "--examples",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("top/top.json")).unwrap()).unwrap();
    let latents = top["latents"].as_array().unwrap();
    assert_eq!(latents.len(), 64);
    let busy = latents
        .iter()
        .find(|l| l["fired"].as_u64().unwrap() >= 3)
        .expect("a latent that fires");
    let example = &busy["examples"][0];
    let highlight = example["highlight"].as_u64().unwrap() as usize;
    assert_eq!(example["activations"][highlight], example["activation"]);
    let index = std::fs::read_to_string(run.join("top/index.html")).unwrap();
    assert!(index.contains("latents-00000.html#l0"));
    assert!(run.join("top/latents-00000.html").exists());

    // Bad input, each refused before any training.
    let out = loupe(&["sae", "train", "--config", config, "--architecture", "gated"]);
    assert_clear_error(
        &out,
        &[
            "unknown variant `gated`",
            "`relu`, `topk`, `batchtopk`, `jumprelu`",
        ],
    );
    let out = loupe(&["sae", "train", "--config", config, "--set", "batch_size=\"big\""]);
    assert_clear_error(&out, &["sae.toml", "batch_size"]);
    let out = loupe(&[
        "sae",
        "train",
        "--config",
        config,
        "--set",
        "hook=\"blocks.2.hook_resid_post\"",
        "--output",
        &format!("{d}/sae2"),
    ]);
    assert_clear_error(
        &out,
        &[
            "no activations for blocks.2.hook_resid_post",
            "blocks.1.hook_resid_post",
        ],
    );
    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        run.to_str().unwrap(),
        "--hook",
        "blocks.0.hook_resid_post",
    ]);
    assert_clear_error(&out, &["no activations for blocks.0.hook_resid_post"]);

    // Feature absorption: the tiny model's 53 alphabetic tokens (its letters and " t"), one
    // in-context example each (its context is 64 tokens).
    let sae = run.to_str().unwrap();
    let out = loupe(&[
        "sae",
        "absorption",
        "--sae",
        sae,
        "--words",
        "100",
        "--icl-examples",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("feature absorption of"), "{}", stdout(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("absorption.json")).unwrap()).unwrap();
    assert_eq!(report["letters"].as_array().unwrap().len(), 26);
    assert_eq!(report["words"], serde_json::json!([42, 11]));
    let out = loupe(&[
        "sae",
        "absorption",
        "--sae",
        sae,
        "--hook",
        "blocks.1.mlp.hook_post",
    ]);
    assert_clear_error(&out, &["the SAE reads 32 values", "blocks.1.mlp.hook_post"]);
}

/// `sae sweep`: two SAEs trained in one pass, each an ordinary run directory (TensorBoard events,
/// SAELens files, a checkpoint `sae eval` reads), compared in sweep.json and sweep.html with CE
/// measured on the model; a rerun resumes (nothing left to train) and reports the same.
#[test]
fn sae_sweep_trains_in_one_pass_and_writes_a_pareto_report_on_a_tiny_model() {
    let (dir, capture_config) = tiny_capture_setup(300);
    let d = dir.path().display();
    let out = loupe(&["capture", "--config", capture_config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("sweep.toml");
    let shared = format!(
        "output = \"{d}/sweep\"\n[train]\nstore = \"{d}/store\"\nhook = \"blocks.1.hook_resid_post\"\nexpansion = 2\n\
         train_tokens = 2560\nbatch_size = 128\neval_every = 5\ncheckpoint_every = 5\nheld_out = 0.2\n"
    );
    let runs = "[[run]]\nname = \"topk\"\narchitecture = \"topk\"\nk = 4\n\
                [[run]]\nname = \"relu\"\narchitecture = \"relu\"\nl1_coefficient = 1.0\nlr = 1e-3\n";
    std::fs::write(&config, format!("{shared}{runs}")).unwrap();
    let config = config.to_str().unwrap();
    let sweep = |extra: &[&str]| {
        let mut args = vec!["sae", "sweep", "--config", config, "--model"];
        let model = format!("{d}/model");
        args.push(&model);
        args.extend(extra);
        loupe(&args)
    };

    let out = sweep(&["--contexts", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 runs in one pass") && stdout(&out).contains("Pareto-optimal"),
        "{}{}",
        stderr(&out),
        stdout(&out)
    );
    let root = dir.path().join("sweep");
    for run in ["topk", "relu"] {
        assert_run_directory(&root.join(run));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("sweep.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{report}");
    for run in runs {
        assert_eq!(run["steps"], 20, "{run}");
        assert!(run["reconstruction"]["fvu"].is_number(), "{run}");
        assert!(run["spliced"]["ce_loss_recovered"].is_number(), "{run}");
        assert!(run["pareto_fvu"].is_boolean(), "{run}");
    }
    assert_eq!(runs[0]["settings"]["k"], 4);
    assert_eq!(report["contexts"], 4);
    let html = std::fs::read_to_string(root.join("sweep.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "FVU and CE against L0");
    assert!(html.contains("topk") && html.contains("relu"));
    for chart in ["fvu_l0.svg", "ce_l0.svg"] {
        assert!(root.join(chart).exists(), "{chart}");
    }

    // Each run is an ordinary run directory.
    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        &format!("{d}/sweep/relu"),
        "--contexts",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Run again: every run is finished, so nothing trains, and the report is the same.
    let out = sweep(&["--contexts", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(again, report);

    // Without CE: reconstruction only, and the CE chart is gone.
    let out = sweep(&["--contexts", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!root.join("ce_l0.svg").exists());

    // A run may not change what every run shares.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{shared}[[run]]\nname = \"big\"\narchitecture = \"topk\"\nk = 4\nbatch_size = 256\n"),
    )
    .unwrap();
    let out = loupe(&["sae", "sweep", "--config", bad.to_str().unwrap()]);
    assert_clear_error(&out, &["run[0].batch_size", "run 'big' sets it", "[train]"]);
}

/// Activations from elsewhere: imported from .npy with a label, verified, trained on and
/// evaluated (reconstruction only: no model made them).
#[test]
fn store_import_then_sae_train_and_eval() {
    use candle_core::{Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let acts = Tensor::randn(0f32, 1.0, (1024, 8), &Device::Cpu).unwrap();
    acts.write_npy(dir.path().join("acts.npy")).unwrap();
    let topic = Tensor::arange(0i64, 1024, &Device::Cpu)
        .unwrap()
        .affine(1.0, 0.0)
        .unwrap();
    (topic / 512.0)
        .unwrap()
        .floor()
        .unwrap()
        .to_dtype(candle_core::DType::I64)
        .unwrap()
        .write_npy(dir.path().join("topic.npy"))
        .unwrap();
    let out = loupe(&[
        "store",
        "import",
        &format!("{d}/acts.npy"),
        "--output",
        &format!("{d}/store"),
        "--hook",
        "blocks.0.hook_resid_post",
        "--label",
        &format!("topic={d}/topic.npy"),
        "--context-length",
        "32",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("imported 1024 rows of width 8") && stdout(&out).contains("labels: topic"),
        "{}",
        stdout(&out)
    );
    let out = loupe(&["verify", &format!("{d}/store")]);
    assert!(out.status.success(), "{}", stdout(&out));

    let config = dir.path().join("sae.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{d}/store\"\nhook = \"blocks.0.hook_resid_post\"\noutput = \"{d}/sae\"\narchitecture = \"topk\"\n\
             expansion = 2\nk = 2\ntrain_tokens = 2048\nbatch_size = 128\nheld_out = 0.2\n"
        ),
    )
    .unwrap();
    let out = loupe(&["sae", "train", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = loupe(&["sae", "eval", "--sae", &format!("{d}/sae")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("imported activations"), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("explained variance") && table.contains("relative reconstruction bias"),
        "{table}"
    );

    // The TopK SAE in sparsify's layout, evaluated from there to the same numbers.
    let out = loupe(&[
        "sae",
        "export",
        "--sae",
        &format!("{d}/sae"),
        "--format",
        "sparsify",
        "--output",
        &format!("{d}/sparsify/layers.0"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        &format!("{d}/sparsify/layers.0"),
        "--store",
        &format!("{d}/store"),
        "--held-out",
        "0.2",
        "--seed",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = |t: &str| {
        t.lines()
            .find(|l| l.contains("explained variance"))
            .unwrap()
            .to_string()
    };
    assert_eq!(line(&stdout(&out)), line(&table));

    // A [batch, position, width] cache is refused with the file and the fix.
    Tensor::zeros((2, 4, 8), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .write_npy(dir.path().join("cube.npy"))
        .unwrap();
    let out = loupe(&[
        "store",
        "import",
        &format!("{d}/cube.npy"),
        "--output",
        &format!("{d}/cube"),
        "--hook",
        "blocks.0.hook_resid_post",
    ]);
    assert_clear_error(&out, &["cube.npy", "[2, 4, 8]", "[batch·position, width]"]);
}

/// The synthetic benchmark end to end on a tiny world: store and ground truth written, two runs
/// trained and scored, a second invocation reusing the world and the finished runs, and a run
/// scored on its own with synth-score.
#[test]
fn sae_synth_trains_and_scores_on_a_tiny_world() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("synth.toml");
    std::fs::write(
        &config,
        format!(
            "output = \"{d}/bench\"\neval_tokens = 2048\n\
             [data]\nd_model = 16\nparents = 8\nchildren_per_parent = 3\ntarget_l0 = 3.0\ntokens = 16384\n\
             [train]\nd_sae = 32\ntrain_tokens = 40_000\nbatch_size = 256\nlr = 3e-3\nheld_out = 0.05\n\
             [[run]]\nname = \"topk\"\narchitecture = \"topk\"\nk = 3\n\
             [[run]]\nname = \"nested\"\narchitecture = \"matryoshka\"\nk = 3\nmatryoshka_groups = [8, 24]\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = loupe(&["sae", "synth", "--config", config]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("MCC") && table.contains("nested") && table.contains("matryoshka"),
        "{table}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench/report.json")).unwrap())
            .unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let mcc = run["scores"]["mcc"].as_f64().unwrap();
        assert!(mcc > 0.5 && mcc <= 1.0, "{run}");
    }

    // Again with two training seeds: the same world, each run twice, mean ± std.
    let out = loupe(&["sae", "synth", "--config", config, "--seeds", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("reusing the world"), "{}", stderr(&out));
    assert!(stdout(&out).contains(" ± "), "{}", stdout(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 4);
    assert_eq!(report["summary"][1]["seeds"], 2);
    assert!(dir.path().join("bench/runs/nested-seed1/cfg.json").exists());
    // Another world in the same directory is refused, not mixed in.
    let out = loupe(&["sae", "synth", "--config", config, "--set", "data.seed=5"]);
    assert_clear_error(&out, &["holds another world"]);

    let out = loupe(&[
        "sae",
        "synth-score",
        "--truth",
        &format!("{d}/bench/truth.safetensors"),
        "--sae",
        &format!("{d}/bench/runs/topk"),
        "--tokens",
        "1024",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let scores: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(scores["detection_f1"].as_f64().unwrap() > 0.0, "{scores}");

    // Settings the benchmark owns, and runs without names, are refused with the field named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("output = \"{d}/x\"\n[train]\nstore = \"s\"\n[[run]]\nname = \"a\"\narchitecture = \"topk\"\nk = 2\n")).unwrap();
    let out = loupe(&["sae", "synth", "--config", bad.to_str().unwrap()]);
    assert_clear_error(&out, &["store", "set by the benchmark"]);
    std::fs::write(
        &bad,
        format!("output = \"{d}/x\"\n[[run]]\narchitecture = \"topk\"\nk = 2\n"),
    )
    .unwrap();
    let out = loupe(&["sae", "synth", "--config", bad.to_str().unwrap()]);
    assert_clear_error(&out, &["run[0].name"]);
}

#[test]
fn shipped_sae_configs_parse() {
    for name in ["sae-smollm2-l15-topk.toml", "sae-smollm2-l15-relu.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let config = loupe_sae::TrainConfig::from_toml(&text, name, &[]).unwrap();
        loupe_sae::arch::build(&config, 576).unwrap();
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/main-sae-sweep.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let sweep = loupe_sae::sweep::SweepConfig::from_toml(&text, "main-sae-sweep.toml", &[]).unwrap();
    for run in sweep.runs("main-sae-sweep.toml").unwrap() {
        loupe_sae::arch::build(&run.config, 576).unwrap();
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/synth.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let bench = loupe_sae::synth::SynthBenchConfig::from_toml(&text, "synth.toml", &[]).unwrap();
    loupe_sae::synth::World::new(&bench.data).unwrap();
    for run in bench.runs("synth.toml").unwrap() {
        loupe_sae::arch::build(&run.config, bench.data.d_model).unwrap();
    }
}

#[test]
fn probe_train_and_show_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write_tiny_hf_dir(&dir.path().join("model"), 3).unwrap();
    // Two "languages" the tiny model sees differently: different characters.
    let corpus: String = (0..40)
        .map(|i| match i % 2 {
            0 => format!("{{\"text\": \"tt t {i} ttt \\\"t\\\" t tt\", \"lang\": \"a\"}}\n"),
            _ => format!("{{\"text\": \"xq zq {i} qqz \\\"zz\\\" xz\", \"lang\": \"b\"}}\n"),
        })
        .collect();
    std::fs::write(dir.path().join("corpus.jsonl"), corpus).unwrap();
    let capture = dir.path().join("capture.toml");
    std::fs::write(
        &capture,
        format!(
            "model = \"{d}/model\"\nhooks = [\"blocks.0.mlp.hook_post\", \"blocks.1.mlp.hook_post\"]\noutput = \"{d}/store\"\n\
             context_length = 16\nbatch_size = 4\nshard_contexts = 8\n\n[[corpus]]\npath = \"{d}/corpus.jsonl\"\nlabels = [\"lang\"]\n"
        ),
    )
    .unwrap();
    let out = loupe(&["capture", "--config", capture.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let config = dir.path().join("probe.toml");
    std::fs::write(
        &config,
        format!(
            "stores = [\"{d}/store\"]\noutput = \"{d}/probes\"\nheld_out = 0.3\nks = [1, 2, 4]\n\
             [exact]\nmax_k = 2\ntop = 5\n\n[[feature]]\nkind = \"label\"\nfield = \"lang\"\nvalue = \"a\"\n\n\
             [[feature]]\nkind = \"quoted\"\n"
        ),
    )
    .unwrap();
    let out = loupe(&["probe", "train", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // 2 features × 2 hooks × (4 rankings × 3 k + exact k = 1, 2).
    assert!(stdout(&out).contains("56 probes"), "{}", stdout(&out));
    let probes = dir.path().join("probes");
    for file in [
        "summary.csv",
        "summary.md",
        "lang-a/blocks.1.mlp.hook_post/l1-k4.safetensors",
        "quoted/blocks.0.mlp.hook_post/exact-k2.json",
    ] {
        assert!(probes.join(file).exists(), "{file} missing");
    }
    let events = std::fs::read_dir(probes.join("tensorboard/lang-a/blocks.0.mlp.hook_post"))
        .unwrap()
        .count();
    assert!(events > 0);

    let probe = probes.join("lang-a/blocks.1.mlp.hook_post/mean_diff-k1.safetensors");
    let out = loupe(&["probe", "show", probe.to_str().unwrap(), "--examples", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("'lang=a'") && shown.contains("F1") && shown.contains("contexts of neuron"),
        "{shown}"
    );
    assert_eq!(shown.lines().filter(|l| l.contains("[[")).count(), 3, "{shown}");

    // Sparse probing of an SAE on the same hook, with the same probe config's features.
    let sae_config = dir.path().join("sae.toml");
    std::fs::write(
        &sae_config,
        format!(
            "store = \"{d}/store\"\nhook = \"blocks.1.mlp.hook_post\"\noutput = \"{d}/sae\"\narchitecture = \"topk\"\n\
             expansion = 2\nk = 4\ntrain_tokens = 2048\nbatch_size = 64\nheld_out = 0.3\n"
        ),
    )
    .unwrap();
    let out = loupe(&["sae", "train", "--config", sae_config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = loupe(&[
        "sae",
        "probing",
        "--sae",
        &format!("{d}/sae"),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("lang=a") && table.contains("quoted") && table.contains("neurons"),
        "{table}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("sae/probing.json")).unwrap()).unwrap();
    // Two features × k = 1, 2, 5.
    assert_eq!(rows.as_array().unwrap().len(), 6, "{rows}");

    // Bad input: a k wider than the hook, a label the store lacks.
    let out = loupe(&[
        "probe",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "ks=[1, 5000]",
    ]);
    assert_clear_error(&out, &["k = 5000", "neurons"]);
    let out = loupe(&[
        "probe",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "output=\"x\"",
        "--set",
        "feature=[{kind = \"label\", field = \"topic\"}]",
    ]);
    assert_clear_error(&out, &["carries no label 'topic'", "lang"]);
}

#[test]
fn shipped_probe_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/probe-lang.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = loupe_probe::ProbeConfig::from_toml(&text, "probe-lang.toml", &[]).unwrap();
    assert_eq!(config.features.len(), 4);
}

#[test]
fn features_list_and_show_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_tiny_hf_dir(&model, 3).unwrap();
    let book = dir.path().join("book.toml");
    std::fs::write(
        &book,
        "[[feature]]\nname = \"tees\"\nkind = \"mean_diff\"\nhook = \"blocks.1.hook_resid_post\"\n\
         positive = [\"tt t\", \"t t\"]\nnegative = [\"xq\", \"zq\"]\nconcepts = [\"t\"]\n",
    )
    .unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend([
            "--book".into(),
            book.display().to_string(),
            "--model".into(),
            model.display().to_string(),
        ]);
        a
    };
    let run = |a: Vec<String>| loupe(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args(&["features", "list"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tees at blocks.1.hook_resid_post (width 32"),
        "{}",
        stdout(&out)
    );
    let out = run(args(&["features", "show", "tees", "--top", "3"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("concept words: t") && shown.contains("logit lens"),
        "{shown}"
    );
    let out = run(args(&["features", "show", "nope"]));
    assert_clear_error(&out, &["no feature 'nope'", "tees"]);
}

#[test]
fn scope_runs_judges_reports_and_resumes_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_tiny_hf_dir(&model, 3).unwrap();
    let out_dir = dir.path().join("scope");
    let config_text = |target_position: &str| {
        format!(
            "model = {model:?}\nout = {out:?}\n\
             [source]\nprompts = [\"the dog\", \"hello\"]\nlayers = [0, 1]\n\
             [target]\nprompt = \"the cat sat on the mat\"\nposition = {target_position}\n\
             [generate]\nmax_new_tokens = 4\n\
             [[amplifier]]\nkind = \"none\"\n[[amplifier]]\nkind = \"scale\"\nvalues = [3]\n\
             [[amplifier]]\nkind = \"cfg\"\nvalues = [1]\n",
            model = model.display().to_string(),
            out = out_dir.display().to_string(),
        )
    };
    let config = dir.path().join("scope.toml");

    // A target position outside the prompt: refused before anything is generated or written.
    std::fs::write(&config, config_text("500")).unwrap();
    let out = loupe(&["scope", "--config", config.to_str().unwrap()]);
    assert_clear_error(&out, &["target.position", "500", "\"last\""]);
    assert!(!out_dir.join("results.jsonl").exists());

    std::fs::write(&config, config_text("\"last\"")).unwrap();
    let out = loupe(&["scope", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("report.md"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("12 generated (0 already done)"),
        "{}",
        stderr(&out)
    );
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for needle in [
        "## Held-out comparison",
        "McNemar",
        "## Fraction interpreted (upper bound)",
        "## Fluency",
        "| scale 3 |",
        "### the dog",
        "★",
        "Precision@1",
    ] {
        assert!(report.contains(needle), "{needle:?} not in report.md:\n{report}");
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("class=\"best\"") && html.contains("Held-out comparison"));
    let study: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("study.json")).unwrap()).unwrap();
    assert!(!study["figures"].as_array().unwrap().is_empty(), "{study}");
    let held_out = std::fs::read_to_string(out_dir.join("held_out.svg")).unwrap();
    assert!(held_out.starts_with("<svg") && held_out.contains("held out"));
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2 * 3);
    // Every generation is judged for fluency: a finite surprisal in nats per token.
    for record in loupe_scope::results::read_results(&out_dir.join("results.jsonl")).unwrap() {
        let fluency = record.fluency.expect("judged");
        assert!(fluency.is_finite() && fluency > 0.0, "{fluency}");
    }
    let events = std::fs::read_dir(out_dir.join("tensorboard")).unwrap().count();
    assert!(events > 0);

    // Run again: everything is already done.
    let out = loupe(&["scope", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to generate: all 12 already done"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shipped_scope_config_parses() {
    let config =
        loupe_scope::ScopeConfig::from_file(std::path::Path::new("configs/scope-entities.toml"), &[])
            .unwrap();
    assert_eq!(config.source_prompts().unwrap().len(), 40);
    assert_eq!(config.source.layers, (1..=12).collect::<Vec<_>>());
    assert_eq!(config.generate.max_new_tokens, 10);
    // The attribute-extraction tasks: 30 subjects each, every one with an answer, none of them
    // among the examples of its target prompt.
    for task in ["capital", "currency", "founder", "profession"] {
        let path = format!("configs/attributes/{task}.toml");
        let config = loupe_scope::ScopeConfig::from_file(std::path::Path::new(&path), &[]).unwrap();
        let sources = config.source_prompts_with_answers().unwrap();
        assert_eq!(sources.len(), 30, "{task}");
        for (subject, answers) in &sources {
            assert!(!answers.is_empty(), "{task}: {subject}");
            assert!(
                !config.target.prompt.contains(subject.as_str()),
                "{task}: {subject} is an example"
            );
        }
    }
}

#[test]
fn steer_runs_judges_reports_and_resumes_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_tiny_hf_dir(&model, 3).unwrap();
    let out_dir = dir.path().join("steer");
    let config = dir.path().join("steer.toml");
    let write_config = |prompts: &str| {
        std::fs::write(
            &config,
            format!(
                "model = {:?}\nout = {:?}\ninstructions = [\"the dog\", \"hello\", \"a tree\", \"the cat sat\"]\n\
                 chat = false\nlayer = 1\n[null]\nthe = \"the\"\n[generate]\nmax_new_tokens = 4\n\
                 [[concept]]\nname = \"animals\"\ndescription = \"a dog or a cat\"\nprompts = {prompts}\n\
                 [[concept.method]]\nkind = \"cfg\"\nnull = \"the\"\nvalues = [0.5, 2]\n",
                model.display().to_string(),
                out_dir.display().to_string(),
            ),
        )
        .unwrap();
    };
    // cfg without the concept's prompts: refused before anything is generated or written.
    write_config("[]");
    let out = loupe(&["steer", "--config", config.to_str().unwrap()]);
    assert_clear_error(&out, &["concept[0] 'animals'.prompts", "cfg steers"]);
    assert!(!out_dir.join("results.jsonl").exists());

    write_config("[\"the dog\", \"the cat\"]");
    let out = loupe(&["steer", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // none, prompt (default sentence "Mention animals."), cfg 0.5 and 2, for 4 instructions.
    assert!(
        stderr(&out).contains("16 answered (0 already done)"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("steer.md"), "{}", stdout(&out));
    let report = std::fs::read_to_string(out_dir.join("steer.md")).unwrap();
    for needle in [
        "## animals",
        "| cfg (null: the) |",
        "vs prompting",
        "| cfg 2 (null: the) |",
    ] {
        assert!(report.contains(needle), "{needle} missing from:\n{report}");
    }
    assert!(out_dir.join("curves-animals.svg").exists() && out_dir.join("steer.html").exists());
    let study: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("study.json")).unwrap()).unwrap();
    assert_eq!(study[0]["held_out"].as_array().unwrap().len(), 3);

    let out = loupe(&["steer", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to generate: all 16 already done"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shipped_steer_config_parses() {
    let config =
        loupe_scope::steer::SteerConfig::from_file(std::path::Path::new("configs/steer-main.toml"), &[])
            .unwrap();
    assert_eq!(config.instruction_list().unwrap().len(), 24);
    let concepts: Vec<&str> = config.concepts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(concepts, ["person", "German"]);
    let gemma =
        loupe_scope::steer::SteerConfig::from_file(std::path::Path::new("configs/gemma3-steer.toml"), &[])
            .unwrap();
    assert_eq!((gemma.layer, gemma.chat), (6, false));
}

#[test]
fn every_command_with_a_config_takes_set_overrides() {
    let (dir, config) = tiny_capture_setup(20);
    let config = config.to_str().unwrap();
    let out = loupe(&[
        "capture",
        "--config",
        config,
        "--set",
        "max_tokens=30",
        "--set",
        "shard_contexts=1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("store/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["contexts"], manifest["shards"].as_array().unwrap().len());
    let out = loupe(&["capture", "--config", config, "--set", "context_length=long"]);
    assert_clear_error(&out, &["--set context_length=long", "wrong type"]);

    let scope = dir.path().join("scope.toml");
    std::fs::write(
        &scope,
        format!(
            "model = \"{0}/model\"\nout = \"{0}/scope\"\n[source]\nprompts = [\"a\"]\nlayers = [0]\n[[amplifier]]\nkind = \"none\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = loupe(&[
        "scope",
        "--config",
        scope.to_str().unwrap(),
        "--set",
        "generate.max_new_tokens=many",
    ]);
    assert_clear_error(&out, &["--set generate.max_new_tokens=many"]);
    let out = loupe(&[
        "scope",
        "--config",
        scope.to_str().unwrap(),
        "--set",
        "generate.max_tokens=3",
    ]);
    assert_clear_error(&out, &["max_tokens", "not known"]);
}

#[test]
fn sae_train_and_eval_over_seeds_on_a_tiny_model() {
    let (dir, capture_config) = tiny_capture_setup(200);
    let d = dir.path().display();
    let out = loupe(&["capture", "--config", capture_config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("sae.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{d}/store\"\nhook = \"blocks.1.hook_resid_post\"\noutput = \"{d}/saes\"\narchitecture = \"topk\"\n\
             expansion = 2\nk = 4\ntrain_tokens = 1024\nbatch_size = 128\nheld_out = 0.2\nseed = 7\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = loupe(&["sae", "train", "--config", config, "--seeds", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("3 seeds") && shown.contains("mean ± std"),
        "{shown}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saes/seeds.json")).unwrap()).unwrap();
    assert_eq!(summary["runs"], serde_json::json!(["seed-7", "seed-8", "seed-9"]));
    // One document split for every seed: the same held-out tokens.
    let tokens = summary["held_out_tokens"].as_array().unwrap();
    assert!(
        tokens.iter().all(|t| t == &tokens[0]) && tokens[0].as_u64().unwrap() > 0,
        "{summary}"
    );
    let ev = &summary["metrics"]["explained_variance"];
    let values: Vec<f64> = ev["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).any(|w| w[0] != w[1]),
        "different seeds train different SAEs: {values:?}"
    );
    let mean = values.iter().sum::<f64>() / 3.0;
    assert!((ev["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert!(ev["std"].as_f64().unwrap() > 0.0);
    // Each seed's checkpoint records the shared split, which `sae eval` then reads.
    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        &format!("{d}/saes"),
        "--seeds",
        "--contexts",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let evaluated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saes/eval-seeds.json")).unwrap()).unwrap();
    assert_eq!(
        evaluated["held_out_tokens"], summary["held_out_tokens"],
        "{evaluated}"
    );
    assert!(
        evaluated["metrics"]["ce_loss_recovered"]["std"].is_number(),
        "{evaluated}"
    );
    assert!(dir.path().join("saes/seed-8/eval.json").exists());
    let each: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saes/seed-8/eval.json")).unwrap()).unwrap();
    assert_eq!(each["seed"], 7, "the split's seed, shared by every run");

    // Running it again resumes nothing and reports the same figures.
    let out = loupe(&["sae", "train", "--config", config, "--seeds", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saes/seeds.json")).unwrap()).unwrap();
    assert_eq!(again, summary);

    let out = loupe(&["sae", "train", "--config", config, "--seeds", "1"]);
    assert_clear_error(&out, &["--seeds 1", "at least 2"]);
    let out = loupe(&["sae", "eval", "--sae", &format!("{d}/saes/seed-7"), "--seeds"]);
    assert_clear_error(&out, &["seed-7 holds 0 seed-* SAE runs", "--seeds N"]);
}

#[test]
fn scope_attribute_extraction_counts_expected_answers() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    write_tiny_hf_dir(&model, 3).unwrap();
    // The tiny model writes the tokens of "t" readily: an answer some generations contain.
    std::fs::write(
        dir.path().join("subjects.tsv"),
        "# subject<TAB>answers\nthe dog\tt|tt\nhello\tzzzz\n",
    )
    .unwrap();
    let out_dir = dir.path().join("scope");
    let config = dir.path().join("scope.toml");
    let write_config = |prompts_file: &str| {
        std::fs::write(
            &config,
            format!(
                "model = {:?}\nout = {:?}\n[source]\nprompts_file = {:?}\nlayers = [0, 1]\n\
                 [target]\nprompt = \"the cat sat on the mat\"\n[generate]\nmax_new_tokens = 6\n\
                 [[amplifier]]\nkind = \"none\"\n[[amplifier]]\nkind = \"scale\"\nvalues = [3]\n",
                model.display().to_string(),
                out_dir.display().to_string(),
                dir.path().join(prompts_file).display().to_string(),
            ),
        )
        .unwrap();
    };
    write_config("subjects.tsv");
    let out = loupe(&["scope", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records = loupe_scope::results::read_results(&out_dir.join("results.jsonl")).unwrap();
    assert_eq!(records.len(), 8);
    for r in &records {
        let expected = if r.source == "the dog" {
            vec!["t", "tt"]
        } else {
            vec!["zzzz"]
        };
        assert_eq!(r.answers, expected);
        let found = loupe_scope::judge::answer_found(&r.generation, &r.answers);
        assert_eq!(r.answer_found, found, "{}", r.generation);
    }
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        report.contains("Attribute extraction") && report.contains("contains an expected answer"),
        "{report}"
    );

    // A line with a tab but no answer is refused, naming the file and line.
    std::fs::write(dir.path().join("bad.tsv"), "the dog\tt\nhello\t|\n").unwrap();
    write_config("bad.tsv");
    let out = loupe(&[
        "scope",
        "--config",
        config.to_str().unwrap(),
        "--out",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert_clear_error(&out, &["bad.tsv line 2", "nothing after the tab"]);
}
