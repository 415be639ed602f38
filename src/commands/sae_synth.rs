//! `loupe sae synth` and `loupe sae synth-score`: the synthetic ground-truth benchmark (see
//! `loupe_sae::synth`): make a world's store, train each configured SAE on it, and score what
//! each recovered.

use std::path::PathBuf;

use anyhow::Context;
use loupe_sae::metrics::mean_std;
use loupe_sae::saelens;
use loupe_sae::synth::{score, SynthBenchConfig, SynthScores, World, SYNTH_HOOK};
use serde::Serialize;

use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// A TOML benchmark config (see configs/synth.toml).
    #[arg(long)]
    config: PathBuf,
    /// Train each run this many times, with training seeds 0, 1, ..., and report mean ± std
    /// (overrides `seeds`).
    #[arg(long)]
    seeds: Option<usize>,
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
    seed: usize,
    architecture: String,
    scores: SynthScores,
}

/// One `[[run]]` over its seeds: each score's mean and standard deviation.
#[derive(Serialize)]
struct RunSummary {
    name: String,
    architecture: String,
    seeds: usize,
    /// (mean, std) of each score, by the score's name.
    scores: std::collections::BTreeMap<&'static str, (f64, f64)>,
}

#[derive(Serialize)]
struct Report {
    world: loupe_sae::synth::SynthConfig,
    features: usize,
    runs: Vec<RunScores>,
    summary: Vec<RunSummary>,
}

/// Reads one score.
type Score = fn(&SynthScores) -> f64;

/// The scores the summary and the table show, by name.
const SCORES: [(&str, Score); 6] = [
    ("l0", |s| s.l0),
    ("explained_variance", |s| s.explained_variance),
    ("mcc", |s| s.mcc),
    ("detection_f1", |s| s.detection_f1),
    ("dead_fraction", |s| s.dead_fraction),
    ("duplicated_fraction", |s| s.duplicated_fraction),
];

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let origin = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {origin}"))?;
    let mut overrides = args.set.clone();
    overrides.extend(args.seeds.map(|n| format!("seeds={n}")));
    let config = SynthBenchConfig::from_toml(&text, &origin, &overrides)?;
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
        summary: Vec::new(),
    };
    for run in &runs {
        let c = &run.config;
        eprintln!("run {} ({}, seed {})", run.name, c.architecture, c.seed);
        let outcome = super::sae::train_with_report(c)?;
        if outcome.stopped {
            eprintln!("stopped: run the same command again to resume");
            std::process::exit(130);
        }
        let sae = saelens::load(&c.output)?;
        report.runs.push(RunScores {
            name: run.name.clone(),
            seed: run.seed,
            architecture: c.architecture.to_string(),
            scores: score(&sae, &world, config.eval_tokens)?,
        });
    }
    for run in report.runs.iter().filter(|r| r.seed == 0) {
        let seeds: Vec<&SynthScores> = report
            .runs
            .iter()
            .filter(|r| r.name == run.name)
            .map(|r| &r.scores)
            .collect();
        let scores = SCORES
            .iter()
            .map(|(name, get)| (*name, mean_std(&seeds.iter().map(|s| get(s)).collect::<Vec<_>>())))
            .collect();
        report.summary.push(RunSummary {
            name: run.name.clone(),
            architecture: run.architecture.clone(),
            seeds: seeds.len(),
            scores,
        });
    }
    let path = config.output.join("report.json");
    let json = serde_json::to_string_pretty(&report)?;
    loupe_util::write_atomically(&path, json.as_bytes())?;

    println!(
        "{} features in {} dimensions, L0 {}; scored on {} fresh tokens{}",
        report.features,
        config.data.d_model,
        config.data.target_l0,
        config.eval_tokens,
        if config.seeds > 1 {
            format!("; mean ± std over {} training seeds", config.seeds)
        } else {
            String::new()
        }
    );
    let width = if config.seeds > 1 { 15 } else { 6 };
    print!("{:<16} {:<11}", "run", "arch");
    for header in ["L0", "EV", "MCC", "F1", "dead", "dup"] {
        print!(" {header:>width$}");
    }
    println!();
    for summary in &report.summary {
        print!("{:<16} {:<11}", summary.name, summary.architecture);
        for (name, _) in SCORES {
            let (mean, std) = summary.scores[name];
            let digits = if name == "l0" { 1 } else { 3 };
            let cell = if config.seeds > 1 {
                format!("{mean:.digits$} ± {std:.digits$}")
            } else {
                format!("{mean:.digits$}")
            };
            print!(" {cell:>width$}");
        }
        println!();
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
