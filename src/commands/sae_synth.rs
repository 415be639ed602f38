//! `loupe sae synth` and `loupe sae synth-score`: the synthetic ground-truth benchmark (see
//! `loupe_sae::synth`): make a world's store, train each configured SAE on it, and score what
//! each recovered.

use std::path::PathBuf;

use anyhow::Context;
use loupe_sae::saelens;
use loupe_sae::synth::{score, SynthBenchConfig, SynthScores, World, SYNTH_HOOK};
use serde::Serialize;

use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// A TOML benchmark config (see configs/synth.toml).
    #[arg(long)]
    config: PathBuf,
    /// Any config field, as field=value in TOML syntax (repeatable): --set data.tokens=500_000
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// A synthetic world's ground truth (`truth.safetensors` in a benchmark's directory).
    #[arg(long)]
    truth: PathBuf,
    /// The SAE to score (a SAELens directory), trained on that world's activations, e.g. from a
    /// store made with `loupe store import`.
    #[arg(long)]
    sae: PathBuf,
    /// Fresh tokens to score on.
    #[arg(long, default_value_t = 16_384)]
    tokens: usize,
}

#[derive(Serialize)]
struct RunScores {
    name: String,
    architecture: String,
    scores: SynthScores,
}

#[derive(Serialize)]
struct Report {
    world: loupe_sae::synth::SynthConfig,
    features: usize,
    runs: Vec<RunScores>,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let origin = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {origin}"))?;
    let config = SynthBenchConfig::from_toml(&text, &origin, &args.set)?;
    let runs = config.runs(&origin)?;
    let world = World::new(&config.data)?;
    let truth = config.output.join("truth.safetensors");
    let store = config.output.join("store");
    if truth.exists() {
        // The ground truth is written after the store: its presence means the store is whole.
        let saved = World::load(&truth)?;
        anyhow::ensure!(
            saved.config == config.data,
            "{} holds another world (its [data] differs from {origin}'s): choose another output, or remove it",
            config.output.display()
        );
        eprintln!("reusing the world in {}", config.output.display());
    } else {
        anyhow::ensure!(
            !store.join("manifest.json").exists(),
            "{} holds a store without its ground truth: remove it and run again",
            store.display()
        );
        let mut bar = Bar::stopping_on_ctrl_c()?;
        world.write_store(&store, SYNTH_HOOK, &mut bar)?;
        bar.finish();
        world.save(&truth)?;
        eprintln!(
            "wrote {} tokens of {} features in {} dimensions to {}",
            config.data.tokens,
            config.data.features(),
            config.data.d_model,
            store.display()
        );
    }

    let mut report = Report {
        world: config.data.clone(),
        features: config.data.features(),
        runs: Vec::new(),
    };
    for (name, train_config) in &runs {
        eprintln!("run {name} ({})", train_config.architecture);
        let outcome = super::sae::train_with_report(train_config)?;
        if outcome.stopped {
            eprintln!("stopped: run the same command again to resume");
            std::process::exit(130);
        }
        let sae = saelens::load(&train_config.output)?;
        let scores = score(&sae, &world, config.eval_tokens)?;
        report.runs.push(RunScores {
            name: name.clone(),
            architecture: train_config.architecture.to_string(),
            scores,
        });
    }
    let path = config.output.join("report.json");
    let json = serde_json::to_string_pretty(&report)?;
    loupe_util::write_atomically(&path, json.as_bytes())?;

    println!(
        "{} features in {} dimensions, L0 {}; scored on {} fresh tokens",
        report.features, config.data.d_model, config.data.target_l0, config.eval_tokens
    );
    println!(
        "{:<16} {:<11} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "run", "arch", "L0", "EV", "MCC", "F1", "dead", "dup"
    );
    for run in &report.runs {
        let s = &run.scores;
        println!(
            "{:<16} {:<11} {:>6.1} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>6.3}",
            run.name,
            run.architecture,
            s.l0,
            s.explained_variance,
            s.mcc,
            s.detection_f1,
            s.dead_fraction,
            s.duplicated_fraction
        );
    }
    println!("report: {}", path.display());
    Ok(())
}

pub fn run_score(args: ScoreArgs) -> anyhow::Result<()> {
    let world = World::load(&args.truth)?;
    let sae = saelens::load(&args.sae)?;
    let scores = score(&sae, &world, args.tokens)?;
    println!("{}", serde_json::to_string_pretty(&scores)?);
    Ok(())
}
