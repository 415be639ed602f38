//! What a hostile but fair user does to loupe: two writers at once, damaged files, interrupted
//! runs, settings that make no sense. Every case ends in a clear error (exit 1, or 130 after
//! Ctrl-C) that names the file or field, never in exit 0 on damaged data or a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_clear_error, loupe, stderr, stdout, tiny_capture_setup};
use loupe_util::DirLock;

/// A captured tiny store at `<dir>/store` and an SAE config for it at `<dir>/sae.toml`.
fn captured_store(docs: usize) -> (tempfile::TempDir, PathBuf) {
    let (dir, capture) = tiny_capture_setup(docs);
    let out = loupe(&["capture", "--config", capture.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.path().join("sae.toml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "store = \"{d}/store\"\nhook = \"blocks.1.hook_resid_post\"\noutput = \"{d}/sae\"\narchitecture = \"topk\"\n\
             expansion = 2\nk = 4\ntrain_tokens = 2560\nbatch_size = 128\neval_every = 5\ncheckpoint_every = 5\nheld_out = 0.2\n"
        ),
    )
    .unwrap();
    (dir, config)
}

fn shards(store: &Path) -> Vec<PathBuf> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    shards.sort();
    shards
}

fn flip_byte(path: &Path, from_end: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - from_end;
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn two_captures_into_one_directory_one_is_refused_and_the_store_stays_whole() {
    let (dir, config) = tiny_capture_setup(3000);
    let store = dir.path().join("store");
    let mut first = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["capture", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = store.join(loupe_util::LOCK_FILE);
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("pid")) {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first capture ended early"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    // The second capture reads another corpus (another label vocabulary): mixing the two is how
    // English text came to be labelled German.
    let other_corpus = dir.path().join("other.jsonl");
    std::fs::write(&other_corpus, "{\"text\": \"de text\", \"lang\": \"de\"}\n").unwrap();
    let second = loupe(&[
        "capture",
        "--config",
        config.to_str().unwrap(),
        "--corpus",
        other_corpus.to_str().unwrap(),
    ]);
    let first_still_running = first.try_wait().unwrap().is_none();
    assert_clear_error(
        &second,
        &[
            "store",
            "being written by another loupe process",
            &format!("pid {}", first.id()),
        ],
    );
    assert!(
        first_still_running,
        "the refusal must come while the first capture runs"
    );
    assert!(first.wait().unwrap().success());

    let out = loupe(&["verify", store.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(" 0 damaged"), "{}", stdout(&out));
    // A lock left by a process that died is no lock: the OS released it.
    let again = loupe(&["capture", "--config", config.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn a_second_writer_of_an_sae_probe_or_scope_run_is_refused() {
    let (dir, sae_config) = captured_store(60);
    let d = dir.path();
    let holder = format!("pid {}", std::process::id());

    let _sae = DirLock::acquire(&d.join("sae"), "loupe test").unwrap();
    let out = loupe(&["sae", "train", "--config", sae_config.to_str().unwrap()]);
    assert_clear_error(&out, &["sae", "being written", &holder]);
    assert!(!d.join("sae/trainer_state.safetensors").exists());
    let events = std::fs::read_dir(d.join("sae")).unwrap().count();
    assert_eq!(events, 1, "nothing but the lock file was written");

    let probe_config = d.join("probe.toml");
    std::fs::write(
        &probe_config,
        format!(
            "stores = [\"{0}/store\"]\noutput = \"{0}/probes\"\nheld_out = 0.3\nks = [1]\n\n[[feature]]\nkind = \"digit\"\n",
            d.display()
        ),
    )
    .unwrap();
    let _probes = DirLock::acquire(&d.join("probes"), "loupe test").unwrap();
    let out = loupe(&["probe", "train", "--config", probe_config.to_str().unwrap()]);
    assert_clear_error(&out, &["probes", "being written", &holder]);

    let scope_config = d.join("scope.toml");
    std::fs::write(
        &scope_config,
        format!(
            "model = \"{0}/model\"\nout = \"{0}/scope\"\n[source]\nprompts = [\"the dog\"]\nlayers = [0]\n\
             [target]\nprompt = \"the cat\"\n[generate]\nmax_new_tokens = 2\n[[amplifier]]\nkind = \"none\"\n",
            d.display()
        ),
    )
    .unwrap();
    let _scope = DirLock::acquire(&d.join("scope"), "loupe test").unwrap();
    let out = loupe(&["scope", "--config", scope_config.to_str().unwrap()]);
    assert_clear_error(&out, &["scope", "being written", &holder]);
    assert!(!d.join("scope/results.jsonl").exists());
}

#[test]
fn damaged_swapped_or_truncated_shards_are_named_and_never_trained_on() {
    let (dir, sae_config) = captured_store(60);
    let store = dir.path().join("store");
    let shards = shards(&store);
    assert!(shards.len() >= 3, "{shards:?}");
    let sae = |config: &Path| loupe(&["sae", "train", "--config", config.to_str().unwrap()]);

    // One flipped bit inside the activations.
    let original = std::fs::read(&shards[1]).unwrap();
    flip_byte(&shards[1], 100);
    assert_clear_error(&sae(&sae_config), &["shard-00001.safetensors", "checksum"]);
    let out = loupe(&["verify", store.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("DAMAGED    ") && stdout(&out).contains("shard-00001.safetensors"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&shards[1], &original).unwrap();

    // A shard swapped for another (each is whole and sealed; the manifest tells them apart).
    let second = std::fs::read(&shards[2]).unwrap();
    std::fs::write(&shards[1], &second).unwrap();
    assert_clear_error(
        &sae(&sae_config),
        &["shard-00001.safetensors", "the manifest recorded"],
    );
    std::fs::write(&shards[1], &original).unwrap();

    // Cut short.
    std::fs::write(&shards[1], &original[..original.len() - 10]).unwrap();
    assert_clear_error(&sae(&sae_config), &["shard-00001.safetensors"]);
    std::fs::write(&shards[1], &original).unwrap();

    // The same for probes; and the whole store verifies again once restored.
    flip_byte(&shards[0], 50);
    let probe_config = dir.path().join("probe.toml");
    std::fs::write(
        &probe_config,
        format!(
            "stores = [\"{0}/store\"]\noutput = \"{0}/probes\"\nheld_out = 0.3\nks = [1]\n\n[[feature]]\nkind = \"digit\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = loupe(&["probe", "train", "--config", probe_config.to_str().unwrap()]);
    assert_clear_error(&out, &["shard-00000.safetensors", "checksum"]);
    flip_byte(&shards[0], 50);
    let out = loupe(&["verify", store.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn a_damaged_checkpoint_is_refused_on_resume_and_by_eval() {
    let (dir, sae_config) = captured_store(60);
    let config = sae_config.to_str().unwrap();
    let out = loupe(&["sae", "train", "--config", config, "--set", "train_tokens=1280"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoint = dir.path().join("sae/trainer_state.safetensors");
    flip_byte(&checkpoint, 1000);

    // Resuming (a longer run) from it is refused with the file named.
    let out = loupe(&["sae", "train", "--config", config]);
    assert_clear_error(&out, &["trainer_state.safetensors", "checksum"]);
    // Evaluating beside it does not guess the held-out split...
    let sae = dir.path().join("sae");
    let out = loupe(&["sae", "eval", "--sae", sae.to_str().unwrap(), "--contexts", "0"]);
    assert_clear_error(&out, &["trainer_state.safetensors", "--held-out and --seed"]);
    // ...and evaluates when told it.
    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        sae.to_str().unwrap(),
        "--contexts",
        "0",
        "--held-out",
        "0.2",
        "--seed",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = loupe(&["verify", sae.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("trainer_state.safetensors: "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn no_metric_is_reported_from_an_empty_held_out_split() {
    let (dir, sae_config) = captured_store(60);
    let config = sae_config.to_str().unwrap();
    let out = loupe(&["sae", "train", "--config", config, "--set", "held_out=0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains("no held-out metrics") && !printed.contains("explained variance"),
        "{printed}"
    );

    // A fraction so small that no document of this store falls in it.
    let other = dir.path().join("sae-tiny-split");
    let out = loupe(&[
        "sae",
        "train",
        "--config",
        config,
        "--set",
        "held_out=0.0001",
        "--output",
        other.to_str().unwrap(),
    ]);
    assert!(out.status.code() == Some(1), "{}", stdout(&out));
    assert_clear_error(&out, &["held_out = 0.0001", "selects no documents"]);
    let out = loupe(&[
        "sae",
        "eval",
        "--sae",
        dir.path().join("sae").to_str().unwrap(),
        "--contexts",
        "0",
        "--held-out",
        "0",
        "--seed",
        "0",
    ]);
    assert_clear_error(&out, &["held-out split holds no activations"]);
}

#[test]
fn settings_that_cannot_work_are_named_before_training() {
    let (_dir, sae_config) = captured_store(20);
    let config = sae_config.to_str().unwrap();
    for (set, needles) in [
        ("expansion=0", vec!["expansion", "at least one latent"]),
        ("grad_clip=-1", vec!["grad_clip", "-1"]),
        ("max_norm_factor=-2", vec!["max_norm_factor"]),
        ("sparsity_warmup_fraction=1.5", vec!["sparsity_warmup_fraction"]),
        ("adam_beta1=1", vec!["adam_beta1", "below 1"]),
        ("init_tokens=0", vec!["init_tokens", "is 0"]),
        ("output=\"\"", vec!["output", "empty"]),
    ] {
        let out = loupe(&["sae", "train", "--config", config, "--set", set]);
        assert_clear_error(&out, &needles);
    }
}

#[test]
fn config_errors_quote_the_users_own_line() {
    let (dir, sae_config) = captured_store(20);
    let text = std::fs::read_to_string(&sae_config).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("# my comment\n{}", text.replace("k = 4", "k = \"four\"")),
    )
    .unwrap();
    let out = loupe(&["sae", "train", "--config", bad.to_str().unwrap()]);
    // Line 7 of the user's file (a comment line added on top), as they wrote it.
    assert_clear_error(&out, &["bad.toml", "k = \"four\"", "7 |"]);
}

#[test]
fn errors_carry_no_backtrace_whatever_rust_backtrace_says() {
    let (dir, sae_config) = captured_store(20);
    let shard = dir.path().join("store/shard-00000.safetensors");
    std::fs::write(&shard, b"not a safetensors file at all").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["sae", "train", "--config", sae_config.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_clear_error(&out, &["shard-00000.safetensors"]);
    assert!(
        !stderr(&out).contains("backtrace") && !stderr(&out).contains(" at /"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_interrupted_scope_exits_130_and_its_report_says_it_is_partial() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    loupe_model::testing::write_tiny_hf_dir(&dir.path().join("model"), 3).unwrap();
    let prompts: Vec<String> = (0..200).map(|i| format!("\"prompt {i}\"")).collect();
    let config = dir.path().join("scope.toml");
    std::fs::write(
        &config,
        format!(
            "model = \"{d}/model\"\nout = \"{d}/scope\"\n[source]\nprompts = [{}]\nlayers = [0, 1]\n\
             [target]\nprompt = \"the cat\"\n[generate]\nmax_new_tokens = 48\n[[amplifier]]\nkind = \"none\"\n\
             [[amplifier]]\nkind = \"scale\"\nvalues = [2, 3, 4]\n",
            prompts.join(", ")
        ),
    )
    .unwrap();
    let results = dir.path().join("scope/results.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loupe"))
        .args(["scope", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::metadata(&results).is_ok_and(|m| m.len() > 0) {
        assert!(started.elapsed() < Duration::from_secs(60), "no results appeared");
        if child.try_wait().unwrap().is_some() {
            panic!(
                "scope ended early: {}",
                stderr(&child.wait_with_output().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("partial results"), "{}", stderr(&out));
    let report = std::fs::read_to_string(dir.path().join("scope/report.md")).unwrap();
    assert!(report.contains("PARTIAL RESULTS"), "{report}");
    let html = std::fs::read_to_string(dir.path().join("scope/report.html")).unwrap();
    assert!(html.contains("PARTIAL RESULTS"));
}

#[test]
fn capture_settings_that_cannot_work_are_named() {
    let (dir, config) = tiny_capture_setup(5);
    let config = config.to_str().unwrap();
    let out = loupe(&["capture", "--config", config, "--max-tokens", "0"]);
    assert_clear_error(&out, &["max_tokens", "is 0"]);
    let out = loupe(&["capture", "--config", config, "--output", ""]);
    assert_clear_error(&out, &["output", "empty"]);
    assert!(!dir.path().join("store").exists(), "nothing was written");
}
