//! `loupe scope --config configs/scope-entities.toml`: the patch experiments. Every source
//! activation, amplified every way the config asks, patched into the target prompt; the model's
//! greedy continuations judged and compared in report.md / report.html.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use loupe_model::Model;
use loupe_scope::judge::embedding::{default_embedder_dir, Embedder};
use loupe_scope::report::{family, source_section, write_report, ReportContext, Summary};
use loupe_scope::results::read_results;
use loupe_scope::target::target_prompt_text;
use loupe_scope::{ScopeConfig, ScopePlan};

use crate::progress_bar::Bar;
use crate::tensorboard::TensorBoard;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's TOML config (source prompts, layers, target prompt, amplifiers, judges).
    #[arg(long)]
    config: PathBuf,
    /// Write results and reports here instead of the config's `out`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only rewrite the reports from the results already in `out`.
    #[arg(long)]
    report_only: bool,
    /// Override a config field: `--set generate.max_new_tokens=20` (TOML value; repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut overrides = args.set.clone();
    if let Some(out) = &args.out {
        overrides.push(format!("out={}", toml::Value::String(out.display().to_string())));
    }
    let config = ScopeConfig::from_file(&args.config, &overrides)?;
    anyhow::ensure!(
        !config.out.as_os_str().is_empty(),
        "out: is empty; name the directory for results and reports (in {} or with --out)",
        args.config.display()
    );
    let start = Instant::now();
    let model = Model::load(&config.model, &Device::Cpu)
        .with_context(|| format!("loading model '{}'", config.model))?;
    // Every setting is checked, and the judge loaded, before any generation.
    let plan = ScopePlan::new(&config, &model)?;
    // One writer per run directory, for the whole command: the sweep and the reports.
    let _lock = loupe_util::DirLock::acquire(&config.out, "loupe scope")?;
    let mut stopped = false;
    if !args.report_only {
        let embedder_dir = config.judge.embedder.clone().unwrap_or_else(default_embedder_dir);
        let embedder = Embedder::load(&embedder_dir)?;
        let total = plan.total_rows()?;
        eprintln!(
            "{} source prompts × {} layers: {total} patched generations of {} tokens into {:?} (position {})",
            plan.sources.len(),
            config.source.layers.len(),
            config.generate.max_new_tokens,
            config.target.prompt,
            plan.target_position
        );
        let mut bar = Bar::stopping_on_ctrl_c()?;
        let summary = plan.run(&embedder, &mut bar)?;
        bar.finish();
        let seconds = bar.started.elapsed().as_secs_f64();
        if summary.generated == 0 {
            eprintln!("nothing to generate: all {} already done", summary.resumed);
        } else {
            eprintln!(
                "{} generated ({} already done) in {seconds:.1}s: {:.1} generations/s, {:.0} patched tokens/s",
                summary.generated,
                summary.resumed,
                summary.generated as f64 / seconds,
                summary.tokens as f64 / seconds
            );
        }
        stopped = summary.stopped;
    }

    let results = config.out.join("results.jsonl");
    if !results.exists() {
        anyhow::bail!(
            "{} does not exist: nothing to report yet; run `loupe scope --config {}` without --report-only first",
            results.display(),
            args.config.display()
        );
    }
    let records = read_results(&results)?;
    let context = ReportContext {
        model: model.name.clone(),
        target_prompt: target_prompt_text(&config.target.prompt).to_string(),
        site: plan.source_hook(0).to_string().replace("blocks.0.", "blocks.L."),
        threshold: config.judge.threshold,
        labels: plan.variant_labels()?,
        concepts: plan.feature_concepts(),
        expected_generations: plan.total_rows()?,
    };
    let paths = write_report(&config.out, &context, &records)?;
    write_tensorboard(&config.out.join("tensorboard"), &records, &context)?;
    eprintln!("total {:.1}s", start.elapsed().as_secs_f64());
    println!(
        "report: {} (and {}, {}, {}, {}; TensorBoard: tensorboard --logdir {})",
        paths.markdown.display(),
        paths.html.display(),
        paths.plot.display(),
        paths.json.display(),
        paths.csv.display(),
        config.out.join("tensorboard").display()
    );
    if stopped {
        eprintln!(
            "stopped: the reports above are from partial results ({} of {}) and say so; run the same command again to finish",
            records.len(),
            context.expected_generations
        );
        std::process::exit(130);
    }
    Ok(())
}

/// The fraction interpreted against layer per amplifier as scalars, and each source prompt's
/// comparison table as text.
fn write_tensorboard(
    dir: &std::path::Path,
    records: &[loupe_scope::ScopeRecord],
    context: &ReportContext,
) -> anyhow::Result<()> {
    let summary = Summary::new(records, context.threshold, &context.labels);
    let mut tb = TensorBoard::new(dir)?;
    for name in &summary.families {
        for &layer in &summary.layers {
            if let Some(f) = summary.fraction_interpreted(layer, |r| &family(r) == name) {
                tb.scalar(&format!("interpreted/{name}"), f, layer as u64);
            }
        }
    }
    for (i, source) in summary.sources.iter().enumerate() {
        tb.text(
            "generations",
            &format!("**{source}**\n\n{}", source_section(&summary, source)),
            i as u64,
        );
    }
    tb.flush();
    match tb.take_failure() {
        Some(failure) => anyhow::bail!("{failure}"),
        None => Ok(()),
    }
}
