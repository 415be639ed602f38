//! Sweeps in one pass: each run of a sweep ends exactly where training it alone ends, a stopped
//! sweep resumes to the sweep that was never stopped (also when its runs stand at different
//! steps), bad sweep configs are refused before anything is written, and the report measures
//! every run and marks the Pareto front.

use std::path::Path;

use loupe_model::HookPoint;
use loupe_sae::sweep::{
    evaluate, pareto_optimal, train_sweep, write_report, SweepConfig, SweepReport, SweepRun,
};
use loupe_sae::testing::{synthetic, write_store, StopAfter};
use loupe_sae::{train, Checkpoint, NoObserver};
use loupe_util::NoProgress;

const D: usize = 16;
const HOOK: HookPoint = HookPoint::ResidPost(2);

fn store(dir: &Path) {
    let data = synthetic(D, 32, 6000, 3.0, 1);
    write_store(&dir.join("store"), HOOK, D, &data.rows, 50, "synthetic").unwrap();
}

/// The shared part of the sweeps below: two passes over the training split, checkpoints every 7
/// steps.
fn shared(dir: &Path) -> String {
    format!(
        "output = {:?}\n[train]\nstore = {:?}\nhook = \"{HOOK}\"\nexpansion = 2\ntrain_tokens = 12_800\n\
         batch_size = 256\neval_every = 10\ncheckpoint_every = 7\nshuffle_buffer = 1000\ndead_window_tokens = 2000\n",
        dir.join("sweep"),
        dir.join("store"),
    )
}

/// One run of each architecture, differing also in width and learning rate.
const RUNS: &str = "
[[run]]
name = \"topk\"
architecture = \"topk\"
k = 3
[[run]]
name = \"batchtopk-wide\"
architecture = \"batchtopk\"
k = 3
expansion = 4
[[run]]
name = \"matryoshka\"
architecture = \"matryoshka\"
k = 3
matryoshka_groups = [4, 8, 20]
[[run]]
name = \"jumprelu\"
architecture = \"jumprelu\"
target_l0 = 3.0
lr = 1e-3
[[run]]
name = \"relu\"
architecture = \"relu\"
l1_coefficient = 1.0
";

fn sweep(dir: &Path, runs: &str) -> Vec<SweepRun> {
    let config = SweepConfig::from_toml(&format!("{}{runs}", shared(dir)), "sweep.toml", &[]).unwrap();
    config.runs("sweep.toml").unwrap()
}

/// Two run directories hold the same training state: parameters, optimiser, counters, step and
/// position in the batches, and the saved SAE (the configs differ only in `output`).
fn assert_same_run(a: &Path, b: &Path, what: &str) {
    let (x, y) = (
        Checkpoint::load(a).unwrap().unwrap(),
        Checkpoint::load(b).unwrap().unwrap(),
    );
    assert_eq!(x.params, y.params, "{what}: parameters");
    assert_eq!(x.adam, y.adam, "{what}: optimiser");
    assert_eq!(x.since_fired, y.since_fired, "{what}: dead-latent counters");
    let mut info = y.info.clone();
    info.config.output = x.info.config.output.clone();
    assert_eq!(
        x.info, info,
        "{what}: step, pass, normalisation, architecture state"
    );
    let weights = |d: &Path| std::fs::read(d.join("sae_weights.safetensors")).unwrap();
    assert_eq!(weights(a), weights(b), "{what}: saved SAE");
}

#[test]
fn each_run_of_a_sweep_ends_where_training_it_alone_ends() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let runs = sweep(dir.path(), RUNS);
    let outcomes = train_sweep(&runs, &mut NoObserver).unwrap();
    assert_eq!(outcomes.len(), 5);
    for (run, outcome) in runs.iter().zip(&outcomes) {
        assert_eq!((outcome.steps, outcome.stopped), (50, false), "{}", run.name);
        assert!(outcome.metrics.is_some(), "{}: held-out metrics", run.name);
        let mut alone = run.config.clone();
        alone.output = dir.path().join("alone").join(&run.name);
        train(&alone, &mut NoObserver).unwrap();
        assert_same_run(&run.config.output, &alone.output, &run.name);
    }
    // The runs do differ: their own settings took effect.
    let d_sae = |name: &str| {
        Checkpoint::load(&dir.path().join("sweep").join(name))
            .unwrap()
            .unwrap()
            .info
            .d_sae
    };
    assert_eq!((d_sae("topk"), d_sae("batchtopk-wide")), (32, 64));
}

#[test]
fn a_stopped_sweep_resumes_to_the_sweep_that_was_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let whole = sweep(dir.path(), RUNS);
    train_sweep(&whole, &mut NoObserver).unwrap();
    let last = Checkpoint::load(&whole[0].config.output).unwrap().unwrap().info;
    // Two passes and a few batches of a third: the length of one pass.
    let pass = (last.step - last.batches_in_epoch) / last.epoch;

    // Stopped mid-pass (not at a checkpoint), and stopped right at the end of the first pass.
    for after in [31, pass] {
        let stopped_dir = dir.path().join(format!("stopped-{after}"));
        std::fs::create_dir_all(&stopped_dir).unwrap();
        let mut stopped = sweep(dir.path(), RUNS);
        for run in &mut stopped {
            run.config.output = stopped_dir.join(&run.name);
        }
        let outcomes = train_sweep(&stopped, &mut StopAfter::new(after)).unwrap();
        assert!(
            outcomes.iter().all(|o| o.stopped && o.steps == after),
            "Ctrl-C stops every run after the batch in flight and saves it: {outcomes:?}"
        );
        let outcomes = train_sweep(&stopped, &mut NoObserver).unwrap();
        assert!(outcomes.iter().all(|o| !o.stopped && o.steps == 50));
        for (a, b) in whole.iter().zip(&stopped) {
            assert_same_run(
                &a.config.output,
                &b.config.output,
                &format!("{} stopped at {after}", a.name),
            );
        }
    }
}

/// Runs at different steps (a sweep killed between two runs' checkpoints, or a run added to a
/// finished sweep) each resume from their own checkpoint; the pass starts at the one furthest
/// behind.
#[test]
fn runs_at_different_steps_each_resume_from_their_own() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let two = "[[run]]\nname = \"topk\"\narchitecture = \"topk\"\nk = 3\n\
               [[run]]\nname = \"relu\"\narchitecture = \"relu\"\nl1_coefficient = 1.0\n";
    let whole = sweep(dir.path(), two);
    train_sweep(&whole, &mut NoObserver).unwrap();

    // The same sweep elsewhere, stopped at step 31; then relu's checkpoint set back to step 14,
    // as if the process died after saving topk and before saving relu.
    let mut behind = sweep(dir.path(), two);
    for run in &mut behind {
        run.config.output = dir.path().join("behind").join(&run.name);
    }
    let mut relu_at_14 = behind[1].config.clone();
    relu_at_14.output = dir.path().join("relu-at-14");
    train(&relu_at_14, &mut StopAfter::new(14)).unwrap();
    train_sweep(&behind, &mut StopAfter::new(31)).unwrap();
    std::fs::copy(
        Checkpoint::path(&relu_at_14.output),
        Checkpoint::path(&behind[1].config.output),
    )
    .unwrap();
    let mut checkpoint = Checkpoint::load(&behind[1].config.output).unwrap().unwrap();
    checkpoint.info.config.output = behind[1].config.output.clone();
    checkpoint.save(&behind[1].config.output).unwrap();
    assert_eq!(checkpoint.info.step, 14);

    let outcomes = train_sweep(&behind, &mut NoObserver).unwrap();
    assert!(outcomes.iter().all(|o| o.steps == 50));
    for (a, b) in whole.iter().zip(&behind) {
        assert_same_run(&a.config.output, &b.config.output, &a.name);
    }

    // A run added to the finished sweep trains from the start; the others are left as they were.
    let before = Checkpoint::load(&whole[0].config.output).unwrap().unwrap();
    let three = sweep(
        dir.path(),
        &format!("{two}[[run]]\nname = \"topk-k5\"\narchitecture = \"topk\"\nk = 5\n"),
    );
    let outcomes = train_sweep(&three, &mut NoObserver).unwrap();
    assert_eq!(outcomes[2].steps, 50);
    let mut alone = three[2].config.clone();
    alone.output = dir.path().join("topk-k5-alone");
    train(&alone, &mut NoObserver).unwrap();
    assert_same_run(&three[2].config.output, &alone.output, "the added run");
    let after = Checkpoint::load(&whole[0].config.output).unwrap().unwrap();
    assert_eq!(
        (after.info.step, after.params, after.adam),
        (before.info.step, before.params, before.adam),
        "a finished run takes no step"
    );
}

#[test]
fn bad_sweep_configs_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let refused = |text: &str| -> String {
        let e = match SweepConfig::from_toml(text, "configs/sweep.toml", &[]) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        };
        assert!(!dir.path().join("sweep").exists(), "nothing is written: {e}");
        e
    };
    let base = shared(dir.path());
    let run = |extra: &str| format!("{base}[[run]]\nname = \"a\"\narchitecture = \"topk\"\nk = 3\n{extra}");

    let e = refused(&base);
    assert!(e.contains("run") && e.contains("at least one SAE"), "{e}");
    let e = refused(&run("store = \"elsewhere\"\n"));
    assert!(
        e.contains("run[0].store")
            && e.contains("run 'a' sets it")
            && e.contains("one read of the store")
            && e.contains("[train]"),
        "{e}"
    );
    let e = refused(&run("batch_size = 512\n"));
    assert!(
        e.contains("run[0].batch_size") && e.contains("same batches"),
        "{e}"
    );
    let e = refused(&run("seed = 3\n"));
    assert!(
        e.contains("run[0].seed") && e.contains("order of the batches"),
        "{e}"
    );
    let e = refused(&run("output = \"x\"\n"));
    assert!(e.contains("run[0].output") && e.contains("output/a"), "{e}");
    let e = refused(&format!(
        "{}[[run]]\nname = \"a\"\narchitecture = \"relu\"\nl1_coefficient = 1.0\n",
        run("")
    ));
    assert!(
        e.contains("run[1].name") && e.contains("'a' names two runs"),
        "{e}"
    );
    let e = refused(&format!("{base}[[run]]\narchitecture = \"topk\"\nk = 3\n"));
    assert!(e.contains("run[0].name") && e.contains("letters, digits"), "{e}");
    let e = refused(&format!(
        "{base}[[run]]\nname = \"../up\"\narchitecture = \"topk\"\nk = 3\n"
    ));
    assert!(e.contains("run[0].name"), "{e}");
    // Unknown fields, in a run, in [train] and at the top.
    let e = refused(&run("learning_rate = 1e-3\n"));
    assert!(
        e.contains("[[run]] a") && e.contains("learning_rate") && e.contains("not known"),
        "{e}"
    );
    let e = refused(&run("").replace("[train]\n", "[train]\nlearn_rate = 1.0\n"));
    assert!(e.contains("learn_rate") && e.contains("not known"), "{e}");
    let e = refused(&format!("runs = 3\n{}", run("")));
    assert!(e.contains("configs/sweep.toml") && e.contains("runs"), "{e}");
    let e = refused(&run("").replace("[train]\n", "[train]\noutput = \"x\"\n"));
    assert!(e.contains("train.output") && e.contains("output/<name>"), "{e}");
    // A run's settings are checked as a training config's are, and named where they are set.
    let e = refused(&format!(
        "{base}[[run]]\nname = \"r\"\narchitecture = \"relu\"\nl1_coefficient = 1.0\nk = 3\n"
    ));
    assert!(
        e.contains("run[0].k: belongs to architecture topk") && e.contains("(run 'r')"),
        "{e}"
    );
    let e = refused(&run("lr = -1.0\n"));
    assert!(e.contains("run[0].lr: must be a positive number"), "{e}");
    let e = refused(&run("").replace("[train]\n", "[train]\nlog_every = 0\n"));
    assert!(e.contains("train.log_every: must be at least 1 (run 'a')"), "{e}");
}

#[test]
fn the_report_measures_every_run_and_marks_the_pareto_front() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path());
    let runs = sweep(
        dir.path(),
        "[[run]]\nname = \"k1\"\narchitecture = \"topk\"\nk = 1\n\
         [[run]]\nname = \"k4\"\narchitecture = \"topk\"\nk = 4\n\
         [[run]]\nname = \"k4-slow\"\narchitecture = \"topk\"\nk = 4\nlr = 1e-6\n",
    );
    train_sweep(&runs, &mut NoObserver).unwrap();
    let report = evaluate(&runs, None, 0, &mut NoProgress).unwrap();
    assert_eq!(report.model, None);
    let names: Vec<&str> = report.runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["k1", "k4", "k4-slow"]);
    let [k1, k4, slow] = &report.runs[..] else {
        panic!("three runs")
    };
    assert!((k1.reconstruction.l0 - 1.0).abs() < 1e-9 && (k4.reconstruction.l0 - 4.0).abs() < 1e-9);
    assert!(k4.reconstruction.fvu < k1.reconstruction.fvu, "{report:?}");
    // A learning rate of 1e-6 barely moves the initial weights: same L0, worse FVU.
    assert!(slow.reconstruction.fvu > k4.reconstruction.fvu, "{report:?}");
    assert_eq!(
        report.runs.iter().map(|r| r.pareto_fvu).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(report
        .runs
        .iter()
        .all(|r| r.pareto_ce.is_none() && r.spliced.is_none()));
    assert_eq!(k4.settings.get("k").and_then(|v| v.as_integer()), Some(4));
    assert_eq!(k4.steps, 50);

    let written = write_report(&report, &dir.path().join("sweep")).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["sweep.json", "sweep.html", "fvu_l0.svg"]);
    let json: SweepReport =
        serde_json::from_slice(&std::fs::read(dir.path().join("sweep/sweep.json")).unwrap()).unwrap();
    assert_eq!(json, report);
    let html = std::fs::read_to_string(dir.path().join("sweep/sweep.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        1,
        "the FVU chart; CE was not measured"
    );
    assert!(
        html.contains("k4-slow") && html.contains("Not measured"),
        "{html}"
    );
}

#[test]
fn pareto_optimal_points_are_those_nothing_beats_in_both() {
    let points = [
        (1.0, 0.5),
        (2.0, 0.3),
        (2.0, 0.4), // beaten by (2, 0.3): same L0, higher FVU
        (3.0, 0.3), // beaten by (2, 0.3)
        (4.0, 0.1),
        (f64::NAN, 0.0), // not measured: neither optimal nor beating anything
        (1.0, 0.5),      // a tie with the first: both optimal
    ];
    assert_eq!(
        pareto_optimal(&points),
        [true, true, false, false, true, false, true]
    );
    assert!(pareto_optimal(&[]).is_empty());
}
