//! `loupe probe train | show`: k-sparse probes on an activation store's neurons.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use loupe_data::reader::Store;
use loupe_model::{HookPoint, Model};
use loupe_probe::dataset::ClassBalance;
use loupe_probe::sweep::ProbeFit;
use loupe_probe::top::top_contexts;
use loupe_probe::train::sweep_dir;
use loupe_probe::{train, Probe, ProbeConfig, ProbeObserver};
use loupe_util::Progress;

use crate::progress_bar::Bar;
use crate::tensorboard::TensorBoard;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Rank neurons, sweep k, fit class-balanced logistic probes for every feature × hook of a
    /// config; write each probe, summary.csv / summary.md and TensorBoard curves into `output`.
    /// Sweeps finished by an earlier run with the same settings are kept (Ctrl-C stops after the
    /// sweep in progress).
    Train(TrainArgs),
    /// A probe's neurons and weights, its metrics, and for a one-neuron probe the contexts of the
    /// store where that neuron fires hardest.
    Show(ShowArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// A TOML probe config (see configs/probe-lang.toml).
    #[arg(long)]
    config: PathBuf,
    /// Any config field, as field=value in TOML syntax (repeatable): --set max_tokens=20000
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The probe's .safetensors file (or its .json).
    probe: PathBuf,
    /// The store to read top contexts from (default: the one the probe was trained on).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Contexts to show for a one-neuron probe.
    #[arg(long, default_value_t = 10)]
    examples: usize,
    /// Tokens of the store to search.
    #[arg(long)]
    tokens: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Train(a) => run_train(a),
        Command::Show(a) => run_show(a),
    }
}

/// TensorBoard event files per feature and hook (`<output>/tensorboard/<feature>/<hook>`), so that
/// the runs of one feature overlay across layers: F1 and MCC against k, and each fit's loss.
struct Observer {
    bar: Bar,
    output: PathBuf,
}

impl Progress for Observer {
    fn start(&mut self, what: &str, total: u64, done: u64) {
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

impl ProbeObserver for Observer {
    fn swept(&mut self, hook: HookPoint, feature: &str, _: &ClassBalance, fits: &[ProbeFit]) {
        let mut tb = match TensorBoard::new(&sweep_dir(&self.output.join("tensorboard"), feature, hook)) {
            Ok(tb) => tb,
            Err(e) => {
                self.bar
                    .note(&format!("warning: {e:#}; this sweep's curves are not recorded"));
                return;
            }
        };
        for fit in fits {
            tb.scalar(&format!("f1/{}", fit.method), fit.held_out.f1, fit.k as u64);
            tb.scalar(&format!("mcc/{}", fit.method), fit.held_out.mcc, fit.k as u64);
            tb.scalar(
                &format!("roc_auc/{}", fit.method),
                fit.held_out.roc_auc,
                fit.k as u64,
            );
            for (step, loss) in fit.losses.iter().enumerate() {
                tb.scalar(
                    &format!("train_loss/{}/k{:03}", fit.method, fit.k),
                    *loss,
                    step as u64,
                );
            }
        }
        tb.flush();
        if let Some(failure) = tb.take_failure() {
            self.bar.note(&format!("warning: {failure}"));
        }
        let best = fits.iter().max_by(|a, b| a.held_out.f1.total_cmp(&b.held_out.f1));
        if let Some(b) = best {
            self.bar.note(&format!(
                "{feature} at {hook}: best F1 {:.3} ({} k={}); k=1 F1 {}",
                b.held_out.f1,
                b.method,
                b.k,
                fits.iter()
                    .filter(|f| f.k == 1)
                    .map(|f| format!("{} {:.3} (neuron {})", f.method, f.held_out.f1, f.neurons[0]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}

fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = ProbeConfig::from_toml(&text, &args.config.display().to_string(), &args.set)?;
    // Token features need the tokenizer of the model the first store was captured from (its
    // weights are not needed: probes read stored activations).
    let first = Store::open(&config.stores[0])?;
    let tokenizer = Model::load_tokenizer(&first.manifest.model.name)
        .with_context(|| format!("loading the tokenizer of model '{}'", first.manifest.model.name))?;
    let mut observer = Observer {
        bar: Bar::stopping_on_ctrl_c()?,
        output: config.output.clone(),
    };
    let started = std::time::Instant::now();
    let outcome = train(&config, &tokenizer, &mut observer)?;
    observer.bar.finish();
    let summary = config.output.join("summary.md");
    println!(
        "{} probes in {:.1}s; summary: {} (and summary.csv); TensorBoard: tensorboard --logdir {}",
        outcome.rows.len(),
        started.elapsed().as_secs_f64(),
        summary.display(),
        config.output.join("tensorboard").display()
    );
    if outcome.stopped {
        println!("stopped: the sweeps done are saved; run the same command to go on");
        std::process::exit(130);
    }
    Ok(())
}

fn run_show(args: ShowArgs) -> anyhow::Result<()> {
    let probe = Probe::load(&args.probe)?;
    let i = &probe.info;
    println!(
        "{} probe: '{}' ({:?} level) at {} of {} ({} neurons wide), {} k={}",
        args.probe.display(),
        i.feature,
        i.level,
        i.hook,
        i.model_name,
        i.width,
        i.method,
        i.k
    );
    let m = &i.held_out;
    println!(
        "held out ({} positive, {} negative): F1 {:.3}  MCC {:.3}  precision {:.3}  recall {:.3}  accuracy {:.3}  ROC-AUC {:.3}",
        m.positives, m.negatives, m.f1, m.mcc, m.precision, m.recall, m.accuracy, m.roc_auc
    );
    println!("bias {:+.4}", probe.bias);
    let mut order: Vec<usize> = (0..probe.neurons.len()).collect();
    order.sort_by(|&a, &b| probe.weights[b].abs().total_cmp(&probe.weights[a].abs()));
    println!("{:>8}  {:>10}  {:>10}  {:>10}", "neuron", "weight", "mean", "std");
    for j in order {
        let stat = |v: &Option<Vec<f32>>| v.as_ref().map_or("-".to_string(), |v| format!("{:.4}", v[j]));
        println!(
            "{:>8}  {:>+10.4}  {:>10}  {:>10}",
            probe.neurons[j],
            probe.weights[j],
            stat(&probe.mean),
            stat(&probe.std)
        );
    }
    if probe.neurons.len() != 1 {
        return Ok(());
    }
    let store_dir = args.store.unwrap_or_else(|| i.store.clone());
    let store = Store::open(&store_dir)?;
    store.check(Some(&i.model_sha256), i.hook, i.width)?;
    let tokenizer = Model::load_tokenizer(&store.manifest.model.name)
        .with_context(|| format!("loading the tokenizer of model '{}'", store.manifest.model.name))?;
    let mut bar = Bar::stopping_on_ctrl_c()?;
    let neuron = probe.neurons[0] as usize;
    // A negative weight means the feature is where the neuron is low: show those contexts.
    let lowest = probe.weights[0] < 0.0;
    let top = top_contexts(
        &store,
        i.hook,
        neuron,
        lowest,
        args.examples,
        (12, 4),
        args.tokens,
        &tokenizer,
        &mut bar,
    )?;
    bar.finish();
    let which = if lowest {
        "lowest (its weight is negative)"
    } else {
        "top"
    };
    println!(
        "\n{which} contexts of neuron {neuron} in {}:",
        store_dir.display()
    );
    for t in top {
        let flat = |s: &str| s.replace('\n', "⏎");
        println!(
            "{:>9.3}  [{}] {}[[{}]]{}",
            t.activation,
            t.labels.join(" "),
            flat(&t.before),
            flat(&t.token),
            flat(&t.after)
        );
    }
    Ok(())
}
