//! `loupe sae train --seeds N` and `loupe sae eval --seeds`: the same SAE trained from N seeds,
//! and its metrics as mean ± standard deviation over them, because one seed's figure can differ
//! from the next seed's by more than two architectures differ (Chanin 2026). Every seed trains and
//! is evaluated on the same documents (the base seed's split: `split_seed`); the seeds vary the
//! initial weights and the order of the batches. Runs go to `OUTPUT/seed-S`, each an ordinary run
//! directory (resumable, TensorBoard); the summary to `OUTPUT/seeds.json` (`eval-seeds.json` for
//! `sae eval`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use loupe_data::reader::{Split, Store};
use loupe_sae::eval::reconstruction;
use loupe_sae::metrics::{mean_std, ReconstructionMetrics};
use loupe_sae::{saelens, TrainConfig};
use serde_json::json;

use super::sae::{eval_one, train_with_report, EvalArgs, EvalReport};

/// Trains the run `config` describes from seeds `config.seed` to `config.seed + n − 1`, then
/// measures each on the shared held-out split and reports mean ± std.
pub fn train_seeds(config: &TrainConfig, n: u64) -> anyhow::Result<()> {
    anyhow::ensure!(
        n >= 2,
        "--seeds {n}: give at least 2 seeds to compare (one seed is a plain `sae train`)"
    );
    anyhow::ensure!(
        config.held_out > 0.0,
        "--seeds compares held-out metrics, but held_out is 0: set held_out (0.05 is usual)"
    );
    let split_seed = config.split_seed();
    let split = Split::HeldOut {
        held_out: config.held_out,
        seed: split_seed,
    };
    let store = Store::open(&config.store)?;
    let mut rows: Vec<(String, ReconstructionMetrics)> = Vec::new();
    for seed in config.seed..config.seed + n {
        let mut run = config.clone();
        run.seed = seed;
        run.split_seed = Some(split_seed);
        run.output = config.output.join(format!("seed-{seed}"));
        println!("== seed {seed}: {}", run.output.display());
        let outcome = train_with_report(&run)?;
        if outcome.stopped {
            eprintln!(
                "stopped during seed {seed}: run the same command again to resume it and train the rest"
            );
            std::process::exit(130);
        }
        // Measured the same way whether it finished now or in an earlier run.
        let sae = saelens::load(&run.output)?;
        let metrics = reconstruction(
            &sae,
            &store,
            run.hook,
            split,
            run.eval_tokens,
            run.dense_threshold,
        )?;
        rows.push((format!("seed-{seed}"), metrics));
    }
    let metrics: Vec<(&str, Vec<f64>)> = reconstruction_columns(rows.iter().map(|(_, m)| m));
    print_summary(
        &format!(
            "{} seeds, held-out split {} seed {split_seed}",
            n, config.held_out
        ),
        &rows,
        &metrics,
    );
    write_summary(&config.output.join("seeds.json"), &rows, &metrics)
}

/// Evaluates every `seed-*` run in `args.sae` (as `sae train --seeds` writes them), each as
/// `sae eval` would (its `eval.json` beside it), and reports mean ± std.
pub fn eval_seeds(args: &EvalArgs, parent: &Path) -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .with_context(|| format!("cannot read {}", parent.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
                && p.join(saelens::CFG_FILE).is_file()
        })
        .collect();
    dirs.sort_by_key(|d| {
        d.file_name()
            .and_then(|n| n.to_string_lossy()["seed-".len()..].parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    anyhow::ensure!(
        dirs.len() >= 2,
        "--seeds: {} holds {} seed-* SAE runs; train them with `loupe sae train --config ... --seeds N`",
        parent.display(),
        dirs.len()
    );
    let mut reports: Vec<(String, EvalReport)> = Vec::new();
    for dir in &dirs {
        let mut one = args.clone();
        one.sae = dir.clone();
        one.output = None;
        let name = dir
            .file_name()
            .expect("a seed directory")
            .to_string_lossy()
            .into_owned();
        println!("== {name}");
        reports.push((name, eval_one(&one)?));
    }
    let rows: Vec<(String, ReconstructionMetrics)> = reports
        .iter()
        .map(|(n, r)| (n.clone(), r.reconstruction.clone()))
        .collect();
    let mut metrics = reconstruction_columns(rows.iter().map(|(_, m)| m));
    let spliced: Vec<_> = reports.iter().filter_map(|(_, r)| r.spliced.as_ref()).collect();
    if spliced.len() == reports.len() {
        metrics.push((
            "ce_loss_recovered",
            spliced
                .iter()
                .map(|s| s.ce_loss_recovered.unwrap_or(f64::NAN))
                .collect(),
        ));
        metrics.push(("kl_sae", spliced.iter().map(|s| s.kl_sae).collect()));
    }
    print_summary(
        &format!("{} seeds in {}", dirs.len(), parent.display()),
        &rows,
        &metrics,
    );
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| parent.join("eval-seeds.json"));
    write_summary(&out, &rows, &metrics)
}

/// The reconstruction metrics compared across seeds, one column of values each.
fn reconstruction_columns<'a>(
    metrics: impl Iterator<Item = &'a ReconstructionMetrics> + Clone,
) -> Vec<(&'static str, Vec<f64>)> {
    let column = |get: fn(&ReconstructionMetrics) -> f64| metrics.clone().map(get).collect::<Vec<f64>>();
    vec![
        ("explained_variance", column(|m| m.explained_variance)),
        ("fvu", column(|m| m.fvu)),
        ("mse", column(|m| m.mse)),
        ("l0", column(|m| m.l0)),
        ("dead_fraction", column(|m| m.dead_fraction)),
        ("cosine_similarity", column(|m| m.cosine_similarity)),
    ]
}

fn print_summary(title: &str, rows: &[(String, ReconstructionMetrics)], metrics: &[(&str, Vec<f64>)]) {
    println!("{title}");
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    println!("  {:<20} {:>20}   {}", "metric", "mean ± std", names.join("  "));
    for (name, values) in metrics {
        let (mean, std) = mean_std(values);
        let each: Vec<String> = values.iter().map(|v| format!("{v:.4}")).collect();
        println!(
            "  {name:<20} {:>20}   {}",
            format!("{mean:.4} ± {std:.4}"),
            each.join("  ")
        );
    }
}

fn write_summary(
    path: &Path,
    rows: &[(String, ReconstructionMetrics)],
    metrics: &[(&str, Vec<f64>)],
) -> anyhow::Result<()> {
    let summary: serde_json::Map<String, serde_json::Value> = metrics
        .iter()
        .map(|(name, values)| {
            let (mean, std) = mean_std(values);
            (
                name.to_string(),
                json!({ "mean": mean, "std": std, "values": values }),
            )
        })
        .collect();
    let json = json!({
        "runs": rows.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "held_out_tokens": rows.iter().map(|(_, m)| m.tokens).collect::<Vec<_>>(),
        "metrics": summary,
    });
    loupe_util::write_atomically(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}
