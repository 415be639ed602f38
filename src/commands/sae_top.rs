//! `loupe sae top`: what each latent of an SAE responds to, as JSON and a browsable HTML page.

use std::path::PathBuf;

use anyhow::Context;
use loupe_data::reader::{Split, Store};
use loupe_model::HookPoint;
use loupe_sae::eval::check_sae_matches_store;
use loupe_sae::top::{top_activations, TopConfig};
use loupe_sae::{report, saelens};

use super::ModelArgs;
use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// The SAE (a SAELens directory or a Gemma Scope params.npz).
    #[arg(long)]
    sae: PathBuf,
    /// The store to read contexts from.
    #[arg(long)]
    store: PathBuf,
    /// The hook point (default: the SAE's).
    #[arg(long)]
    hook: Option<HookPoint>,
    /// Tokens of the store to encode.
    #[arg(long, default_value_t = 500_000)]
    tokens: usize,
    /// Examples per latent.
    #[arg(long, default_value_t = 8)]
    examples: usize,
    /// Tokens shown before and after each example's token.
    #[arg(long, default_value_t = 10)]
    before: usize,
    #[arg(long, default_value_t = 4)]
    after: usize,
    /// Only the held-out documents of the training split (fraction and seed), instead of all.
    #[arg(long)]
    held_out: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: top/ in the SAE directory): top.json, index.html and pages.
    #[arg(long)]
    output: Option<PathBuf>,
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let sae = saelens::load(&args.sae)?;
    let store = Store::open(&args.store)?;
    let hook = super::sae::sae_hook(&sae, &args.sae, args.hook)?;
    let origin = args.sae.display().to_string();
    check_sae_matches_store(&sae, &origin, &store, hook)?;
    // Only the tokenizer is needed, but the model file is what names it.
    let model = ModelArgs {
        model: store.manifest.model.name.clone(),
    }
    .load()?;
    let config = TopConfig {
        split: args.held_out.map_or(Split::All, |held_out| Split::HeldOut {
            held_out,
            seed: args.seed,
        }),
        max_tokens: args.tokens,
        examples: args.examples,
        before: args.before,
        after: args.after,
    };
    let mut bar = Bar::stopping_on_ctrl_c()?;
    let report = top_activations(&sae, &store, hook, &model.tokenizer, &config, &mut bar)?;
    bar.finish();

    let out = args.output.unwrap_or_else(|| {
        let dir = if args.sae.is_dir() {
            args.sae.clone()
        } else {
            args.sae.with_extension("")
        };
        dir.join("top")
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let _lock = loupe_util::DirLock::acquire(&out, "loupe sae top")?;
    loupe_util::write_atomically(&out.join("top.json"), serde_json::to_string(&report)?.as_bytes())?;
    let title = format!(
        "{} · {} · {}",
        args.sae.display(),
        hook,
        store.manifest.model.name
    );
    for (file, html) in report::render(&report, &title) {
        loupe_util::write_atomically(&out.join(file), html.as_bytes())?;
    }
    let alive = report.latents.iter().filter(|l| l.fired > 0).count();
    println!(
        "{} latents over {} tokens ({} fired at least once); open {}",
        report.latents.len(),
        report.tokens,
        alive,
        out.join("index.html").display()
    );
    Ok(())
}
