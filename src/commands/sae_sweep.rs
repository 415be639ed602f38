//! `loupe sae sweep --config`: several SAEs trained in one pass over a store (see
//! `loupe_sae::sweep`), each into its own run directory `OUTPUT/<name>`, then measured on the
//! held-out split and compared in a Pareto report (`OUTPUT/sweep.json`, `sweep.html`).

use std::path::PathBuf;

use anyhow::Context;
use loupe_data::reader::Store;
use loupe_sae::sweep::{evaluate, train_sweep, write_report, SweepConfig, SweepReport};
use loupe_sae::TrainConfig;

use super::ModelArgs;
use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// A TOML sweep config: `output`, a [train] table every run shares, and one [[run]] per SAE
    /// (see configs/main-sae-sweep.toml).
    #[arg(long)]
    config: PathBuf,
    /// The sweep's directory (overrides `output`).
    #[arg(long)]
    output: Option<String>,
    /// Any config field, as field=value in TOML syntax (repeatable): --set train.train_tokens=100_000
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// The model to splice each SAE into for CE loss recovered (default: the store's).
    #[arg(long)]
    model: Option<String>,
    /// Held-out contexts for CE loss recovered and KL with each SAE spliced in (0 skips them:
    /// reconstruction metrics only).
    #[arg(long, default_value_t = 32)]
    contexts: usize,
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    let origin = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {origin}"))?;
    let mut overrides: Vec<String> = args
        .output
        .iter()
        .map(|o| format!("output={}", toml::Value::String(o.clone())))
        .collect();
    overrides.extend(args.set.iter().cloned());
    let sweep = SweepConfig::from_toml(&text, &origin, &overrides)?;
    let runs = sweep.runs(&origin)?;
    // One sweep writes its report at a time; each run directory is locked while it trains.
    let _lock = loupe_util::DirLock::acquire(&sweep.output, "loupe sae sweep")?;

    let configs: Vec<TrainConfig> = runs.iter().map(|r| r.config.clone()).collect();
    eprintln!(
        "{} runs in one pass over {}: {}",
        runs.len(),
        configs[0].store.display(),
        runs.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let outcomes = super::sae::with_report(&configs, |observer| train_sweep(&runs, observer))?;
    if outcomes.iter().any(|o| o.stopped) {
        eprintln!("stopped: run the same command again to resume every run");
        std::process::exit(130);
    }

    let store = Store::open(&configs[0].store)?;
    // Imported activations name no model that provably made them (see `loupe store import`).
    let imported = store.manifest.model.sha256 == loupe_data::import::IMPORTED_SHA256;
    if imported && args.contexts > 0 {
        eprintln!(
            "note: store {} holds imported activations, with no model to splice the SAEs into: \
             reconstruction metrics only",
            store.dir.display()
        );
    }
    let model = if args.contexts > 0 && !imported {
        let name = args
            .model
            .clone()
            .unwrap_or_else(|| store.manifest.model.name.clone());
        Some(ModelArgs { model: name }.load()?)
    } else {
        None
    };
    let mut bar = Bar::stopping_on_ctrl_c()?;
    let report = evaluate(&runs, model.as_ref(), args.contexts, &mut bar);
    bar.finish();
    let report = report?;
    print_table(&report);
    for path in write_report(&report, &sweep.output)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(report: &SweepReport) {
    println!(
        "{} runs on {} ({}), held-out split {} seed {}; ● = Pareto-optimal",
        report.runs.len(),
        report.store,
        report.hook,
        report.held_out,
        report.split_seed
    );
    println!(
        "  {:<20} {:<11} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "run", "arch", "d_sae", "L0", "FVU", "dead", "CE rec.", "KL"
    );
    for run in &report.runs {
        let m = &run.reconstruction;
        let mark = |on: Option<bool>| match on {
            Some(true) => "●",
            Some(false) => " ",
            None => "",
        };
        println!(
            "  {:<20} {:<11} {:>7} {:>7.1} {:>7.4}{} {:>7.1}% {:>7}{} {:>8}",
            run.name,
            run.architecture.as_str(),
            run.d_sae,
            m.l0,
            m.fvu,
            mark(Some(run.pareto_fvu)),
            100.0 * m.dead_fraction,
            run.ce_loss_recovered().map_or("–".into(), |r| format!("{r:.4}")),
            mark(run.pareto_ce),
            run.spliced
                .as_ref()
                .map_or("–".into(), |s| format!("{:.4}", s.kl_sae)),
        );
    }
}
