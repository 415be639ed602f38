//! `loupe sae absorption`: SAEBench's feature absorption on the first-letter task (see
//! `loupe_probe::absorption`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Device;
use loupe_model::{HookPoint, Model};
use loupe_probe::absorption::{first_letter_absorption, AbsorptionOptions};
use loupe_sae::saelens;

use super::sae::sae_hook;
use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct AbsorptionArgs {
    /// The SAE.
    #[arg(long)]
    sae: PathBuf,
    /// The model (default: the one the SAE names in its metadata).
    #[arg(long)]
    model: Option<String>,
    /// The hook point (default: the SAE's).
    #[arg(long)]
    hook: Option<HookPoint>,
    /// Vocabulary words used at most (a seeded sample of the alphabetic tokens).
    #[arg(long, default_value_t = AbsorptionOptions::default().words)]
    words: usize,
    /// In-context examples before each word.
    #[arg(long, default_value_t = AbsorptionOptions::default().icl_examples)]
    icl_examples: usize,
    /// Seeds the word sample, the split and the examples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the JSON report (default: absorption.json in the SAE directory).
    #[arg(long)]
    output: Option<PathBuf>,
}

pub fn run(args: AbsorptionArgs) -> anyhow::Result<()> {
    let sae = saelens::load(&args.sae)?;
    let hook = sae_hook(&sae, &args.sae, args.hook)?;
    let model_name = args
        .model
        .clone()
        .unwrap_or_else(|| sae.metadata.model_name.clone());
    let model = Model::load(&model_name, &Device::Cpu)
        .with_context(|| format!("loading model '{model_name}' (the SAE's; pass --model to use another)"))?;
    let options = AbsorptionOptions {
        words: args.words,
        icl_examples: args.icl_examples,
        seed: args.seed,
        ..AbsorptionOptions::default()
    };
    let mut bar = Bar::stopping_on_ctrl_c()?;
    let report = first_letter_absorption(&model, &sae, hook, &options, &mut bar)?;
    bar.finish();
    println!(
        "feature absorption of {} at {hook} ({} training and {} test words, {} in-context examples)",
        args.sae.display(),
        report.words[0],
        report.words[1],
        options.icl_examples
    );
    println!(
        "  {:<6} {:>8} {:>9} {:>7} {:>9} {:>10} {:>9}  main latents",
        "letter", "probe F1", "main F1", "probe+", "fraction", "full rate", "evaluated"
    );
    for l in &report.letters {
        let latents: Vec<String> = l.main_latents.iter().map(usize::to_string).collect();
        println!(
            "  {:<6} {:>8.3} {:>9.3} {:>7} {:>9.3} {:>10.3} {:>9}  {}",
            l.letter,
            l.probe_f1,
            l.main_f1,
            l.probe_true_positives,
            l.mean_absorption_fraction,
            l.full_absorption_rate,
            if l.evaluated { "yes" } else { "no" },
            latents.join(" ")
        );
    }
    println!(
        "mean over {} letters: absorption fraction {:.4}, full absorption {:.4}, {:.2} main latents",
        report.letters_evaluated,
        report.mean_absorption_fraction,
        report.mean_full_absorption,
        report.mean_main_latents
    );
    println!(
        "(SAEBench recommends models of 2B parameters or more for this task: on a small model the \
         probes are weaker, fewer letters pass, and the figures are noisier)"
    );
    let sae_dir = if args.sae.is_dir() {
        args.sae.clone()
    } else {
        args.sae.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let out = args.output.unwrap_or_else(|| sae_dir.join("absorption.json"));
    loupe_util::write_atomically(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}
