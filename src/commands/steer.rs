//! `loupe steer --config configs/steer-main.toml`: the steering task. Every concept's methods at
//! every strength, the prompting baseline and the unsteered answer, for every instruction; then
//! the held-out study and its reports (steer.md, steer.html, curves-<concept>.svg, study.json).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use loupe_model::Model;
use loupe_scope::judge::embedding::{default_embedder_dir, Embedder};
use loupe_scope::steer::report::{write_report, SteerReportContext};
use loupe_scope::steer::{SteerConfig, SteerPlan};

use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's TOML config (instructions, layer, concepts and their methods).
    #[arg(long)]
    config: PathBuf,
    /// Write results and reports here instead of the config's `out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only rewrite the reports from the results already in `out`.
    #[arg(long)]
    report_only: bool,
    /// Override a config field: `--set generate.max_new_tokens=16` (TOML value; repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut overrides = args.set.clone();
    if let Some(out) = &args.out {
        overrides.push(format!("out={}", toml::Value::String(out.display().to_string())));
    }
    let config = SteerConfig::from_file(&args.config, &overrides)?;
    anyhow::ensure!(
        !config.out.as_os_str().is_empty(),
        "out: is empty; name the directory for results and reports (in {} or with --out)",
        args.config.display()
    );
    let start = Instant::now();
    let model = Model::load(&config.model, &Device::Cpu)
        .with_context(|| format!("loading model '{}'", config.model))?;
    // Every setting is checked, and every steering vector built, before any generation.
    let plan = SteerPlan::new(&config, &model)?;
    std::fs::create_dir_all(&config.out).with_context(|| format!("creating {}", config.out.display()))?;
    let _lock = loupe_util::DirLock::acquire(&config.out, "loupe steer")?;
    let mut stopped = false;
    if !args.report_only {
        let embedder = Embedder::load(&config.embedder.clone().unwrap_or_else(default_embedder_dir))?;
        eprintln!(
            "{} instructions × {} variants ({} concepts) at {}: {} answers of up to {} tokens (σ = {:.2})",
            plan.instructions.len(),
            plan.labels().values().map(Vec::len).sum::<usize>(),
            config.concepts.len(),
            plan.hook(),
            plan.total_rows(),
            config.generate.max_new_tokens,
            plan.sigma
        );
        let mut bar = Bar::stopping_on_ctrl_c()?;
        let summary = plan.run(&embedder, &mut bar)?;
        bar.finish();
        let seconds = bar.started.elapsed().as_secs_f64();
        if summary.generated == 0 {
            eprintln!("nothing to generate: all {} already done", summary.resumed);
        } else {
            eprintln!(
                "{} answered ({} already done) in {seconds:.1}s: {:.1} answers/s",
                summary.generated,
                summary.resumed,
                summary.generated as f64 / seconds
            );
        }
        stopped = summary.stopped;
    }
    let results = config.out.join("results.jsonl");
    anyhow::ensure!(
        results.exists(),
        "{} does not exist: nothing to report yet; run `loupe steer --config {}` without --report-only first",
        results.display(),
        args.config.display()
    );
    let records = plan.read_results()?;
    let studies = plan.study(&records);
    let context = SteerReportContext {
        model: model.name.clone(),
        hook: plan.hook().to_string(),
        sigma: plan.sigma,
        expected: plan.total_rows(),
    };
    let paths = write_report(&config.out, &context, &studies, &records)?;
    for study in &studies {
        eprintln!("{}", study.summary);
    }
    eprintln!("total {:.1}s", start.elapsed().as_secs_f64());
    println!(
        "report: {} (and {}, {}, curves-<concept>.svg)",
        paths.markdown.display(),
        paths.html.display(),
        paths.study.display()
    );
    if stopped {
        eprintln!(
            "stopped: the reports above are from partial results ({} of {}) and say so; run the same command again to finish",
            records.len(),
            context.expected
        );
        std::process::exit(130);
    }
    Ok(())
}
