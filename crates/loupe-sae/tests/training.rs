//! The trainer's promises: a stopped run resumes to exactly the run that was never stopped, a
//! diverging run stops with its step and leaves the last checkpoint alone, and bad input is
//! refused before training starts.

use std::path::Path;

use loupe_model::HookPoint;
use loupe_sae::testing::{synthetic, write_store, write_store_of, StopAfter};
use loupe_sae::{train, Checkpoint, Error, NoObserver, TrainConfig};

const D: usize = 16;
const HOOK: HookPoint = HookPoint::ResidPost(2);
/// A second hook of the same tokens, for transcoders.
const TARGET: HookPoint = HookPoint::MlpOut(2);

fn store(dir: &Path) {
    let data = synthetic(D, 32, 6000, 3.0, 1);
    let target = synthetic(D, 32, 6000, 3.0, 2);
    write_store_of(
        &dir.join("store"),
        &[(HOOK, &data.rows), (TARGET, &target.rows)],
        D,
        50,
        "synthetic",
    )
    .unwrap();
}

fn config(dir: &Path, architecture: &str, extra: &str) -> TrainConfig {
    let text = format!(
        "store = {:?}\nhook = \"{HOOK}\"\noutput = {:?}\narchitecture = \"{architecture}\"\nexpansion = 2\n\
         train_tokens = 12_800\nbatch_size = 256\neval_every = 10\ncheckpoint_every = 7\nshuffle_buffer = 1000\n\
         dead_window_tokens = 2000\n{extra}",
        dir.join("store"),
        dir.join("sae"),
    );
    TrainConfig::from_toml(&text, "test", &[]).unwrap()
}

#[test]
fn a_stopped_run_resumes_to_the_same_result() {
    for (architecture, extra) in [
        ("topk", "k = 3"),
        ("batchtopk", "k = 3"),
        ("matryoshka", "k = 3\nmatryoshka_groups = [4, 8, 20]"),
        ("jumprelu", "target_l0 = 3.0"),
        ("relu", "l1_coefficient = 1.0"),
        (
            "topk",
            "k = 3\ntarget_hook = \"blocks.2.hook_mlp_out\"\nskip_connection = true",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path());
        // Two passes over the training split, so the resumed run must also skip into a pass.
        let whole = config(dir.path(), architecture, extra);
        let outcome = train(&whole, &mut NoObserver).unwrap();
        assert_eq!(outcome.steps, 50);
        let uninterrupted = Checkpoint::load(&whole.output).unwrap().unwrap();

        let mut stopped = whole.clone();
        stopped.output = dir.path().join("stopped");
        let outcome = train(&stopped, &mut StopAfter::new(31)).unwrap();
        assert!(outcome.stopped);
        assert_eq!(
            outcome.steps, 31,
            "Ctrl-C stops after the step in flight and saves"
        );
        assert_eq!(Checkpoint::load(&stopped.output).unwrap().unwrap().info.step, 31);
        let outcome = train(&stopped, &mut NoObserver).unwrap();
        assert!(!outcome.stopped);
        let resumed = Checkpoint::load(&stopped.output).unwrap().unwrap();

        assert_eq!(resumed.info.step, 50);
        assert_eq!(resumed.info.epoch, uninterrupted.info.epoch);
        assert_eq!(resumed.params, uninterrupted.params, "{architecture}: parameters");
        assert_eq!(resumed.adam, uninterrupted.adam, "{architecture}: optimiser");
        assert_eq!(resumed.since_fired, uninterrupted.since_fired);
        assert_eq!(
            resumed.info.architecture_state,
            uninterrupted.info.architecture_state
        );
        let sae_files = |d: &Path| std::fs::read(d.join("sae_weights.safetensors")).unwrap();
        assert_eq!(
            sae_files(&stopped.output),
            sae_files(&whole.output),
            "{architecture}: saved SAE"
        );
    }
}

/// Matryoshka groups must add up to the dictionary: the run stops before it writes anything.
#[test]
fn matryoshka_groups_that_miss_d_sae_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    for (extra, expected) in [
        (
            "k = 3\nmatryoshka_groups = [4, 8]",
            "adds up to 12 latents, but d_sae is 32",
        ),
        (
            "k = 3\nmatryoshka_groups = [0, 32]",
            "every group needs at least one latent",
        ),
        ("k = 3", "needs the sizes of its latent groups"),
    ] {
        let c = config(dir.path(), "matryoshka", extra);
        let e = train(&c, &mut NoObserver).unwrap_err().to_string();
        assert!(e.contains("matryoshka_groups") && e.contains(expected), "{e}");
        assert!(!c.output.exists(), "nothing is written");
    }
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let mut c = config(dir.path(), "topk", "k = 3");
    c.train_tokens = 256 * 7;
    train(&c, &mut NoObserver).unwrap();
    // Poison the saved parameters so that the next step overflows, then ask for more steps.
    let mut checkpoint = Checkpoint::load(&c.output).unwrap().unwrap();
    checkpoint.params.b_dec.iter_mut().for_each(|v| *v = 3e38);
    checkpoint.save(&c.output).unwrap();
    let before = std::fs::read(Checkpoint::path(&c.output)).unwrap();
    c.train_tokens = 256 * 20;
    let err = train(&c, &mut NoObserver).unwrap_err();
    let Error::Diverged { step, message } = &err else {
        panic!("{err}")
    };
    assert_eq!(*step, 7);
    assert!(message.contains("step 7") && message.contains("lr"), "{message}");
    assert_eq!(
        std::fs::read(Checkpoint::path(&c.output)).unwrap(),
        before,
        "the checkpoint is untouched"
    );
}

#[test]
fn bad_input_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let base = format!(
        "store = {:?}\nhook = \"{HOOK}\"\noutput = {:?}\ntrain_tokens = 10000\n",
        dir.path().join("store"),
        dir.path().join("sae")
    );
    let parse = |extra: &str, overrides: &[&str]| {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::from_toml(&format!("{base}{extra}"), "configs/x.toml", &overrides)
    };

    let e = parse("architecture = \"gated\"", &[]).unwrap_err().to_string();
    assert!(
        e.contains("architecture = \"gated\"") && e.contains("`relu`, `topk`, `batchtopk`, `jumprelu`"),
        "{e}"
    );
    // A field of another architecture is named as such, not ignored.
    let e = parse("architecture = \"relu\"\nl1_coefficient = 1.0\nk = 32", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("k: belongs to architecture topk, batchtopk and matryoshka") && e.contains("relu"),
        "{e}"
    );
    // Also a field that has a default, set in the file or with --set.
    let e = parse("architecture = \"topk\"\nk = 3", &["l0_coefficient=2"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("l0_coefficient: belongs to architecture jumprelu"),
        "{e}"
    );
    let e = parse("architecture = \"topk\"\nk = 3\nmatryoshka_groups = [8, 8]", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("matryoshka_groups: belongs to architecture matryoshka"),
        "{e}"
    );
    let e = parse("architecture = \"topk\"\nk = 3\nb_dec_init = \"median\"", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("b_dec_init") && e.contains("`geometric_median`"),
        "{e}"
    );

    let e = parse("architecture = \"topk\"\nk = \"many\"", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("configs/x.toml") && e.contains("k = \"many\"") && e.contains("wrong type"),
        "{e}"
    );
    let e = parse("architecture = \"topk\"", &["lr=fast"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--set lr=fast") && e.contains("expected f64"), "{e}");
    let e = parse("architecture = \"topk\"\nlearning_rate = 1.0", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("learning_rate") && e.contains("not known"), "{e}");

    let needs_k = parse("architecture = \"topk\"", &[]).unwrap();
    let e = train(&needs_k, &mut NoObserver).unwrap_err().to_string();
    assert!(e.starts_with("k:") && e.contains("topk"), "{e}");

    let other_hook = parse(
        "architecture = \"topk\"\nk = 3",
        &["hook=\"blocks.3.hook_resid_post\""],
    )
    .unwrap();
    let e = train(&other_hook, &mut NoObserver).unwrap_err().to_string();
    assert!(
        e.contains("blocks.3.hook_resid_post") && e.contains("blocks.2.hook_resid_post"),
        "{e}"
    );
    assert!(!dir.path().join("sae").join("trainer_state.safetensors").exists());

    // Transcoders: a target hook the store lacks, the input hook as its own target, and a skip
    // term without a transcoder.
    let missing_target = parse(
        "architecture = \"topk\"\nk = 3\ntarget_hook = \"blocks.2.hook_attn_out\"",
        &[],
    )
    .unwrap();
    let e = train(&missing_target, &mut NoObserver).unwrap_err().to_string();
    assert!(
        e.starts_with("target_hook:") && e.contains("blocks.2.hook_attn_out") && e.contains("capture"),
        "{e}"
    );
    assert!(!dir.path().join("sae").join("trainer_state.safetensors").exists());
    let e = parse(
        &format!("architecture = \"topk\"\nk = 3\ntarget_hook = \"{HOOK}\""),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("target_hook") && e.contains("itself"), "{e}");
    let e = parse("architecture = \"topk\"\nk = 3\nskip_connection = true", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("skip_connection") && e.contains("target_hook"), "{e}");

    // A checkpoint of another run in the output directory is not resumed.
    let c = config(dir.path(), "topk", "k = 3");
    let mut short = c.clone();
    short.train_tokens = 256 * 2;
    train(&short, &mut NoObserver).unwrap();
    let mut other = c.clone();
    other.k = Some(4);
    let e = train(&other, &mut NoObserver).unwrap_err().to_string();
    assert!(e.contains("k = 4") && e.contains("another `output`"), "{e}");
    // Longer training of the same run is a resume.
    train(&c, &mut NoObserver).unwrap();
}

#[test]
fn non_finite_rows_and_short_shards_are_named_not_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = synthetic(D, 32, 6000, 3.0, 1);
    // Row 77 (shard 0, which holds 16 contexts of 50 rows) gets a NaN.
    data.rows[77 * D + 3] = f32::NAN;
    write_store(&dir.path().join("store"), HOOK, D, &data.rows, 50, "synthetic").unwrap();
    let c = config(dir.path(), "topk", "k = 3");
    let e = train(&c, &mut NoObserver).unwrap_err().to_string();
    assert!(
        e.contains("shard-00000.safetensors") && e.contains("row 77") && e.contains("NaN"),
        "{e}"
    );

    // A manifest that promises more rows than the shard's tensors hold (and adds up).
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let manifest_path = dir.path().join("store/manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let tokens = manifest["shards"][1]["tokens"].as_u64().unwrap();
    manifest["shards"][1]["tokens"] = (tokens + 5).into();
    manifest["tokens"] = (manifest["tokens"].as_u64().unwrap() + 5).into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let c = config(dir.path(), "topk", "k = 3");
    let e = train(&c, &mut NoObserver).unwrap_err().to_string();
    assert!(
        e.contains("shard-00001.safetensors") && e.contains(&format!("[{}, {D}]", tokens + 5)),
        "{e}"
    );
}

#[test]
fn a_checkpoint_whose_tensors_do_not_fit_its_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let mut c = config(dir.path(), "topk", "k = 3");
    c.train_tokens = 256 * 2;
    train(&c, &mut NoObserver).unwrap();
    let mut checkpoint = Checkpoint::load(&c.output).unwrap().unwrap();
    checkpoint.info.d_sae += 1;
    checkpoint.save(&c.output).unwrap();
    let e = match Checkpoint::load(&c.output) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a checkpoint of the wrong size loaded"),
    };
    assert!(
        e.contains("trainer_state.safetensors") && e.contains("params.") && e.contains("is expected"),
        "{e}"
    );
    c.train_tokens = 256 * 4;
    assert!(train(&c, &mut NoObserver).is_err());
}
