//! `loupe sae train | eval | export`: sparse autoencoders on an activation store (`sweep` is in
//! `sae_sweep.rs`, `top` in `sae_top.rs`, `synth` and `synth-score` in `sae_synth.rs`, `probing`
//! in `sae_probing.rs`, `absorption` in `sae_absorption.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use loupe_data::reader::{Split, Store};
use loupe_model::HookPoint;
use loupe_sae::eval::{check_sae_matches_store, reconstruction, spliced, stored_contexts, SplicedMetrics};
use loupe_sae::metrics::ReconstructionMetrics;
use loupe_sae::{saelens, train, Checkpoint, TrainConfig, TrainObserver, TrainOutcome};
use loupe_util::Progress;
use serde::Serialize;

use super::ModelArgs;
use crate::progress_bar::Bar;
use crate::tensorboard::TensorBoard;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train an SAE on a store (resumes a run whose checkpoint is in `output`; Ctrl-C saves a
    /// checkpoint). Writes SAELens files and TensorBoard curves into the run directory.
    Train(TrainArgs),
    /// Train several SAEs (architectures, widths, k, λ, learning rates) in one pass over a store,
    /// each into its own run directory, then compare them in a Pareto report: FVU and CE loss
    /// recovered against L0 (sweep.json, sweep.html). Resumes; Ctrl-C saves every run.
    Sweep(crate::commands::sae_sweep::SweepArgs),
    /// Evaluate an SAE on held-out data: reconstruction metrics, and CE loss with the SAE spliced
    /// into the model.
    Eval(EvalArgs),
    /// Each latent's firing frequency, maximum and top-activating contexts, as JSON and a
    /// browsable HTML page.
    Top(crate::commands::sae_top::TopArgs),
    /// The synthetic ground-truth benchmark: activations made from a known dictionary (features
    /// in superposition, Zipf firing, hierarchy, correlation), the configured SAEs trained on
    /// them, and what each recovered scored (MCC, detection F1, dead and duplicated latents).
    Synth(crate::commands::sae_synth::SynthArgs),
    /// Score an SAE against a synthetic world's ground truth.
    SynthScore(crate::commands::sae_synth::ScoreArgs),
    /// Write an SAE (any file loupe reads) in SAELens's or sparsify's layout.
    Export(ExportArgs),
    /// SAEBench's sparse probing: for each labelled feature of a probe config, the best probe on
    /// k SAE latents against the best on k neurons (k = 1, 2, 5), held-out F1.
    Probing(crate::commands::sae_probing::ProbingArgs),
    /// SAEBench's feature absorption on the first-letter task: per letter, a probe on the
    /// activations, the SAE's main latents for it, and how often other latents absorb them.
    Absorption(crate::commands::sae_absorption::AbsorptionArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The SAE: a SAELens or sparsify directory, or a Gemma Scope params.npz.
    #[arg(long)]
    sae: PathBuf,
    /// `saelens` (cfg.json + sae_weights.safetensors) or `sparsify` (cfg.json + sae.safetensors;
    /// TopK SAEs and TopK transcoders of an MLP only).
    #[arg(long)]
    format: ExportFormat,
    /// The directory to write (for sparsify, name it by the module: layers.15 for an SAE of
    /// blocks.15.hook_resid_post, layers.8.mlp for a transcoder of the MLP of layer 8).
    #[arg(long)]
    output: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    Saelens,
    Sparsify,
}

fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let sae = saelens::load(&args.sae)?;
    match args.format {
        ExportFormat::Saelens => saelens::save(&sae, &args.output)?,
        ExportFormat::Sparsify => loupe_sae::sparsify::save(&sae, &args.output)?,
    }
    println!("wrote {}", args.output.display());
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A TOML training config (see configs/sae-smollm2-l15-topk.toml).
    #[arg(long)]
    config: PathBuf,
    /// The store to train on (overrides `store`).
    #[arg(long)]
    store: Option<String>,
    /// The run directory (overrides `output`).
    #[arg(long)]
    output: Option<String>,
    /// relu, topk, batchtopk, jumprelu or matryoshka (overrides `architecture`).
    #[arg(long)]
    architecture: Option<String>,
    /// Any config field, as field=value in TOML syntax (repeatable): --set k=64 --set lr=3e-4
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Train N seeds (seed, seed+1, ...) into OUTPUT/seed-S on the same document split, and report
    /// their held-out metrics as mean ± std (OUTPUT/seeds.json).
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Train(a) => run_train(a),
        Command::Sweep(a) => crate::commands::sae_sweep::run(a),
        Command::Eval(a) => run_eval(a),
        Command::Top(a) => crate::commands::sae_top::run(a),
        Command::Synth(a) => crate::commands::sae_synth::run(a),
        Command::SynthScore(a) => crate::commands::sae_synth::run_score(a),
        Command::Export(a) => run_export(a),
        Command::Probing(a) => crate::commands::sae_probing::run(a),
        Command::Absorption(a) => crate::commands::sae_absorption::run(a),
    }
}

fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let mut overrides = Vec::new();
    for (field, value) in [
        ("store", &args.store),
        ("output", &args.output),
        ("architecture", &args.architecture),
    ] {
        if let Some(v) = value {
            overrides.push(format!("{field}={}", toml::Value::String(v.clone())));
        }
    }
    overrides.extend(args.set.iter().cloned());
    let config = TrainConfig::from_toml(&text, &args.config.display().to_string(), &overrides)?;
    if let Some(n) = args.seeds {
        return super::sae_seeds::train_seeds(&config, n);
    }
    let outcome = train_with_report(&config)?;
    if outcome.metrics.is_none() && !outcome.stopped {
        // Metrics are computed by a run that trains; a finished run resumed does no step.
        if config.held_out > 0.0 {
            println!(
                "step {}: the run was already finished; `loupe sae eval --sae {}` gives its held-out metrics",
                outcome.steps,
                config.output.display()
            );
        } else {
            println!("step {}: no held-out metrics (held_out = 0)", outcome.steps);
        }
    }
    if let Some(m) = &outcome.metrics {
        println!(
            "step {}: held-out explained variance {:.3}, FVU {:.3}, MSE {:.4}, L0 {:.1}, dead {:.1}%, dense {:.1}%",
            outcome.steps,
            m.explained_variance,
            m.fvu,
            m.mse,
            m.l0,
            100.0 * m.dead_fraction,
            100.0 * m.dense_fraction
        );
    }
    println!(
        "SAE (SAELens format) and TensorBoard events in {}",
        config.output.display()
    );
    if outcome.stopped {
        eprintln!("stopped: run the same command again to resume");
        std::process::exit(130);
    }
    Ok(())
}

/// Trains (or resumes) the run `config` describes with a progress bar and TensorBoard events,
/// and says on stderr how fast it went.
pub fn train_with_report(config: &TrainConfig) -> anyhow::Result<TrainOutcome> {
    with_report(std::slice::from_ref(config), |observer| train(config, observer))
}

/// Runs `train` (training the runs `configs` describe: one, or a sweep's) with a progress bar
/// and TensorBoard events in each run directory, and says on stderr how fast it went.
pub(super) fn with_report<T>(
    configs: &[TrainConfig],
    train: impl FnOnce(&mut TrainReport) -> loupe_sae::Result<T>,
) -> anyhow::Result<T> {
    let mut observer = TrainReport {
        bar: Bar::stopping_on_ctrl_c()?,
        boards: Vec::new(),
        configs: configs.to_vec(),
        latest: vec![None; configs.len()],
    };
    let outcome = train(&mut observer);
    observer.bar.finish();
    for board in observer.boards.iter_mut().flatten() {
        board.flush();
        if let Some(failure) = board.take_failure() {
            eprintln!("warning: {failure}");
        }
    }
    let outcome = outcome?;
    let seconds = observer.bar.started.elapsed().as_secs_f64();
    let tokens = observer.bar.tokens;
    let rate = tokens as f64 / seconds;
    match configs.len() {
        1 => eprintln!("{tokens} tokens this run in {seconds:.1}s ({rate:.0} tokens/s)"),
        n => eprintln!(
            "{tokens} tokens for each of {n} runs in {seconds:.1}s ({rate:.0} tokens/s each, {:.0} in all)",
            rate * n as f64
        ),
    }
    Ok(outcome)
}

/// The bar shows tokens/s and each run's loss and L0; everything else goes to TensorBoard, one
/// event file per run directory.
pub(super) struct TrainReport {
    bar: Bar,
    /// One per run, opened when training starts, once the run directories are locked for this
    /// process (`None` where that failed).
    boards: Vec<Option<TensorBoard>>,
    configs: Vec<TrainConfig>,
    /// Each run's latest training loss and L0.
    latest: Vec<Option<(f64, f64)>>,
}

impl TrainReport {
    fn board(&mut self, run: usize) -> Option<&mut TensorBoard> {
        let board = self.boards.get_mut(run)?.as_mut()?;
        if let Some(failure) = board.take_failure() {
            self.bar.note(&format!("warning: {failure}"));
        }
        Some(board)
    }

    /// `loss 0.123  L0 32.0` for one run; for several, each run's L0.
    fn message(&self) -> String {
        match self.latest.as_slice() {
            [Some((loss, l0))] => format!("loss {loss:.3}  L0 {l0:.1}"),
            latest => {
                let l0s: Vec<String> = latest
                    .iter()
                    .map(|l| l.map_or("–".into(), |(_, l0)| format!("{l0:.1}")))
                    .collect();
                format!("L0 {}", l0s.join(" | "))
            }
        }
    }
}

impl Progress for TrainReport {
    fn start(&mut self, what: &str, total: u64, done: u64) {
        for config in &self.configs {
            match TensorBoard::new(&config.output) {
                Ok(mut board) => {
                    let start_step = done / config.batch_size as u64;
                    board.text(
                        "config",
                        &format!("```toml\n{}\n```", config.to_toml()),
                        start_step,
                    );
                    self.boards.push(Some(board));
                }
                Err(e) => {
                    self.bar.note(&format!(
                        "warning: {e:#}; training goes on without TensorBoard events for {}",
                        config.output.display()
                    ));
                    self.boards.push(None);
                }
            }
        }
        self.bar.start(what, total, done)
    }
    fn advance(&mut self, n: u64) {
        self.bar.advance(n)
    }
    fn note(&mut self, message: &str) {
        self.bar.note(message)
    }
    fn should_stop(&self) -> bool {
        self.bar.should_stop()
    }
}

impl TrainObserver for TrainReport {
    fn scalars(&mut self, run: usize, step: u64, scalars: &[(String, f64)]) {
        if let Some(board) = self.board(run) {
            for (tag, value) in scalars {
                board.scalar(tag, *value, step);
            }
        }
        let get = |tag: &str| scalars.iter().find(|(t, _)| t == tag).map(|(_, v)| *v);
        if let (Some(loss), Some(l0)) = (get("losses/total"), get("train/l0")) {
            self.latest[run] = Some((loss, l0));
            self.bar.set_message(self.message());
        }
    }

    fn histogram(&mut self, run: usize, step: u64, tag: &str, values: &[f64]) {
        // log10 densities: −10 (never fired) up to 0 (fires on every token).
        let limits: Vec<f64> = (0..=40).map(|i| -10.0 + 0.25 * i as f64).collect();
        if let Some(board) = self.board(run) {
            board.histogram(tag, values, &limits, step);
            board.flush();
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct EvalArgs {
    /// The SAE: a SAELens directory (cfg.json + sae_weights.safetensors) or a Gemma Scope params.npz.
    #[arg(long)]
    pub(super) sae: PathBuf,
    /// The store with the held-out activations (default: the one the SAE was trained on).
    #[arg(long)]
    store: Option<PathBuf>,
    /// The hook point (default: the SAE's).
    #[arg(long)]
    hook: Option<HookPoint>,
    /// The model to splice into (default: the store's).
    #[arg(long)]
    model: Option<String>,
    /// Fraction of documents held out, and the seed of the split (default: the training run's,
    /// when its checkpoint is beside the SAE; otherwise 0.05 and 0).
    #[arg(long)]
    held_out: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Held-out activations for the reconstruction metrics.
    #[arg(long, default_value_t = 65_536)]
    tokens: usize,
    /// Held-out contexts for the spliced CE loss (0 skips it).
    #[arg(long, default_value_t = 32)]
    contexts: usize,
    /// Contexts per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// A latent firing on more than this fraction of tokens counts as dense.
    #[arg(long, default_value_t = 0.1)]
    dense_threshold: f64,
    /// Where to write the JSON report (default: eval.json in the SAE directory).
    #[arg(long)]
    pub(super) output: Option<PathBuf>,
    /// --sae is a folder of seed-* runs (`sae train --seeds`): evaluate each, and report mean ± std
    /// (eval-seeds.json in it, or --output).
    #[arg(long)]
    seeds: bool,
}

#[derive(Serialize)]
pub(super) struct EvalReport {
    sae: String,
    store: String,
    hook: String,
    /// A transcoder's output hook: what it reconstructs, and is spliced in place of.
    #[serde(skip_serializing_if = "Option::is_none")]
    hook_out: Option<String>,
    model: String,
    held_out: f64,
    seed: u64,
    pub(super) reconstruction: ReconstructionMetrics,
    pub(super) spliced: Option<SplicedMetrics>,
}

fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    if args.seeds {
        return super::sae_seeds::eval_seeds(&args, &args.sae);
    }
    eval_one(&args).map(|_| ())
}

/// Evaluates one SAE as `sae eval` does: the table on stdout, the report to eval.json.
pub(super) fn eval_one(args: &EvalArgs) -> anyhow::Result<EvalReport> {
    let sae = saelens::load(&args.sae)?;
    let sae_dir = if args.sae.is_dir() {
        args.sae.clone()
    } else {
        args.sae.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    // The training run's split, so that evaluation never reads its training documents. A damaged
    // checkpoint is not guessed around: the user names the split instead.
    let trained = match Checkpoint::load(&sae_dir) {
        Ok(checkpoint) => checkpoint.map(|c| c.info.config),
        Err(e) if args.held_out.is_some() && args.seed.is_some() => {
            eprintln!("warning: {e}; evaluating on the split --held-out and --seed name");
            None
        }
        Err(e) => return Err(anyhow::Error::new(e).context(
            "the training run's held-out split is recorded in this checkpoint; pass --held-out and --seed \
                 (the values of the training config) to evaluate without it",
        )),
    };
    let store_dir = args
        .store
        .clone()
        .or_else(|| sae.metadata.dataset_path.as_ref().map(PathBuf::from))
        .context("the SAE names no store it was trained on (a run streamed from the model names none): pass --store")?;
    if trained
        .as_ref()
        .is_some_and(|c| c.source == loupe_sae::SourceKind::Model)
    {
        eprintln!(
            "note: {} was trained on activations streamed from the model, whose held-out documents were the \
             corpus's first ones; it is evaluated on the held-out split of store {} (pass a store of other text)",
            args.sae.display(),
            store_dir.display()
        );
    }
    let store = Store::open(&store_dir)?;
    let hook = sae_hook(&sae, &args.sae, args.hook)?;
    let origin = args.sae.display().to_string();
    check_sae_matches_store(&sae, &origin, &store, hook)?;
    let held_out = args
        .held_out
        .or(trained.as_ref().map(|c| c.held_out))
        .unwrap_or(0.05);
    let seed = args
        .seed
        .or(trained.as_ref().map(|c| c.split_seed()))
        .unwrap_or(0);
    let split = Split::HeldOut { held_out, seed };

    let recon = reconstruction(&sae, &store, hook, split, args.tokens, args.dense_threshold)?;
    let model_name = args
        .model
        .clone()
        .unwrap_or_else(|| store.manifest.model.name.clone());
    // Imported activations name no model that provably made them (see `loupe store import`).
    let imported = store.manifest.model.sha256 == loupe_data::import::IMPORTED_SHA256;
    if imported && args.contexts > 0 {
        eprintln!(
            "note: store {} holds imported activations, with no model to splice the SAE into: \
             reconstruction metrics only",
            store_dir.display()
        );
    }
    let spliced_metrics = if args.contexts > 0 && !imported {
        let model = ModelArgs {
            model: model_name.clone(),
        }
        .load()?;
        let sha = model.source.fingerprint()?;
        anyhow::ensure!(
            sha == store.manifest.model.sha256,
            "model {model_name} (sha256 {sha}) is not the model store {} was captured from (sha256 {})",
            store_dir.display(),
            store.manifest.model.sha256
        );
        let contexts = stored_contexts(&store, hook, split, args.contexts)?;
        let mut bar = Bar::stopping_on_ctrl_c()?;
        let m = spliced(&model, &sae, hook, &contexts, args.batch_size, &mut bar)?;
        bar.finish();
        Some(m)
    } else {
        None
    };
    let report = EvalReport {
        sae: origin,
        store: store_dir.display().to_string(),
        hook: hook.to_string(),
        hook_out: sae.metadata.hook_name_out.clone(),
        model: model_name,
        held_out,
        seed,
        reconstruction: recon,
        spliced: spliced_metrics,
    };
    print_table(&report);
    let out = args.output.clone().unwrap_or_else(|| sae_dir.join("eval.json"));
    loupe_util::write_atomically(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(report)
}

fn print_table(r: &EvalReport) {
    let m = &r.reconstruction;
    let hooks = match &r.hook_out {
        Some(out) => format!("transcoder {} → {out}", r.hook),
        None => r.hook.clone(),
    };
    println!(
        "{} on {} ({hooks}), held-out split {} seed {}",
        r.sae, r.store, r.held_out, r.seed
    );
    println!("  {:<28} {:>12}", "metric", "value");
    let rows: Vec<(&str, String)> = vec![
        ("tokens", m.tokens.to_string()),
        ("explained variance", format!("{:.4}", m.explained_variance)),
        ("FVU", format!("{:.4}", m.fvu)),
        ("MSE (per element)", format!("{:.5}", m.mse)),
        ("L0", format!("{:.2}", m.l0)),
        ("dead latents", format!("{:.2}%", 100.0 * m.dead_fraction)),
        ("dense latents", format!("{:.2}%", 100.0 * m.dense_fraction)),
        ("cosine(x, x̂)", format!("{:.4}", m.cosine_similarity)),
        ("‖x̂‖ / ‖x‖", format!("{:.4}", m.l2_ratio)),
        (
            "relative reconstruction bias",
            format!("{:.4}", m.relative_reconstruction_bias),
        ),
    ];
    for (name, value) in rows {
        println!("  {name:<28} {value:>12}");
    }
    // The density histogram as a row of counts, rare latents on the left.
    let counts: Vec<String> = m
        .density_histogram
        .iter()
        .map(|b| b.latents.to_string())
        .collect();
    println!(
        "  latents by log10 density, bins of 0.5 from −10 (never) to 0: {}",
        counts.join(" ")
    );
    if let Some(s) = &r.spliced {
        for (name, value) in [
            ("spliced: contexts", s.contexts.to_string()),
            ("spliced: predictions", s.tokens.to_string()),
            ("CE clean", format!("{:.4}", s.ce_clean)),
            ("CE with SAE", format!("{:.4}", s.ce_sae)),
            ("CE zero-ablated", format!("{:.4}", s.ce_zero_ablation)),
            (
                "CE loss recovered",
                s.ce_loss_recovered
                    .map_or("n/a (zero ablation changes nothing)".into(), |r| {
                        format!("{r:.4}")
                    }),
            ),
            ("KL(clean ‖ SAE)", format!("{:.4}", s.kl_sae)),
            ("KL(clean ‖ zero-ablated)", format!("{:.4}", s.kl_zero_ablation)),
        ] {
            println!("  {name:<28} {value:>12}");
        }
    }
}

/// The hook point an SAE is used at: `--hook` if given, else the one its metadata names.
pub fn sae_hook(sae: &loupe_sae::Sae, path: &Path, flag: Option<HookPoint>) -> anyhow::Result<HookPoint> {
    match flag {
        Some(h) => Ok(h),
        None => sae.metadata.hook_name.parse().with_context(|| {
            format!(
                "{}: its hook_name is not a hook point; pass --hook",
                path.display()
            )
        }),
    }
}
