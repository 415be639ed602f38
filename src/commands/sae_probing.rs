//! `loupe sae probing`: SAEBench's sparse probing of an SAE (see `loupe_probe::sae_probing`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use loupe_data::reader::Store;
use loupe_model::HookPoint;
use loupe_sae::saelens;

use super::sae::sae_hook;
use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct ProbingArgs {
    /// The SAE.
    #[arg(long)]
    sae: PathBuf,
    /// A probe config (see configs/probe-lang.toml): its first store (which must hold the SAE's
    /// hook), features, token budget and split are used.
    #[arg(long)]
    config: PathBuf,
    /// Any probe config field, as field=value (repeatable): --set max_tokens=20000
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// The hook point (default: the SAE's).
    #[arg(long)]
    hook: Option<HookPoint>,
    /// Where to write the JSON rows (default: probing.json in the SAE directory).
    #[arg(long)]
    output: Option<PathBuf>,
}

pub fn run(args: ProbingArgs) -> anyhow::Result<()> {
    let sae = saelens::load(&args.sae)?;
    let hook = sae_hook(&sae, &args.sae, args.hook)?;
    let origin = args.config.display().to_string();
    let text = std::fs::read_to_string(&args.config).with_context(|| format!("cannot read {origin}"))?;
    let config = loupe_probe::ProbeConfig::from_toml(&text, &origin, &args.set)?;
    let store = config.stores.first().context("the probe config names no store")?;
    let model = Store::open(store)?.manifest.model.name;
    // Token features need the tokenizer of the model the store was captured from.
    let tokenizer = loupe_model::Model::load_tokenizer(&model)
        .with_context(|| format!("loading the tokenizer of model '{model}'"))?;
    let mut bar = Bar::stopping_on_ctrl_c()?;
    let rows = loupe_probe::sae_probing::sparse_probing(&config, &sae, hook, &tokenizer, &mut bar)?;
    bar.finish();
    println!("sparse probing of {} at {hook}: held-out F1", args.sae.display());
    println!(
        "  {:<24} {:>3} {:>8} {:>8}  latents",
        "feature", "k", "neurons", "latents"
    );
    for r in &rows {
        let latents: Vec<String> = r.latents.iter().map(usize::to_string).collect();
        println!(
            "  {:<24} {:>3} {:>8.3} {:>8.3}  {}",
            r.feature,
            r.k,
            r.neurons_f1,
            r.latents_f1,
            latents.join(" ")
        );
    }
    let sae_dir = if args.sae.is_dir() {
        args.sae.clone()
    } else {
        args.sae.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let out = args.output.unwrap_or_else(|| sae_dir.join("probing.json"));
    loupe_util::write_atomically(&out, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}
