use std::path::PathBuf;

use anyhow::Context;
use loupe_data::capture::{capture, CaptureConfig};
use loupe_data::store::StoreDType;
use loupe_model::HookPoint;

use super::ModelArgs;
use crate::progress_bar::Bar;

/// Every field of the config can be overridden here; flags win over the file.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A TOML capture config (see configs/capture-smollm2.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The model (overrides `model`).
    #[arg(long)]
    pub model: Option<String>,
    /// Hook points, comma-separated (overrides `hooks`).
    #[arg(long, value_delimiter = ',')]
    pub hooks: Option<Vec<HookPoint>>,
    /// The store directory (overrides `output`).
    #[arg(long)]
    pub output: Option<String>,
    /// Tokens per context (overrides `context_length`).
    #[arg(long)]
    pub context_length: Option<usize>,
    /// Contexts per forward pass (overrides `batch_size`).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Stop after this many tokens (overrides `max_tokens`).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// f32, f16 or bf16 (overrides `dtype`).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<StoreDType>,
    /// Contexts per shard file (overrides `shard_contexts`).
    #[arg(long)]
    pub shard_contexts: Option<usize>,
    /// Also store separator positions (overrides `include_separators`).
    #[arg(long)]
    pub include_separators: Option<bool>,
    /// A corpus path, replacing the config's corpora (JSONL with a `text` field, text files, or a directory).
    #[arg(long)]
    pub corpus: Option<String>,
}

fn parse_dtype(s: &str) -> Result<StoreDType, String> {
    match s {
        "f32" => Ok(StoreDType::F32),
        "f16" => Ok(StoreDType::F16),
        "bf16" => Ok(StoreDType::Bf16),
        other => Err(format!("unknown dtype '{other}': use f32, f16 or bf16")),
    }
}

impl Args {
    /// The config file with the flags applied on top.
    fn resolve(&self) -> anyhow::Result<CaptureConfig> {
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let mut set = |key: &str, value: toml::Value| {
            table.insert(key.to_string(), value);
        };
        if let Some(v) = &self.model {
            set("model", v.clone().into());
        }
        if let Some(v) = &self.hooks {
            set(
                "hooks",
                toml::Value::Array(v.iter().map(|h| h.to_string().into()).collect()),
            );
        }
        if let Some(v) = &self.output {
            set("output", v.clone().into());
        }
        for (key, value) in [
            ("context_length", self.context_length),
            ("batch_size", self.batch_size),
            ("shard_contexts", self.shard_contexts),
        ] {
            if let Some(v) = value {
                set(key, (v as i64).into());
            }
        }
        if let Some(v) = self.max_tokens {
            set("max_tokens", (v as i64).into());
        }
        if let Some(v) = self.dtype {
            set("dtype", toml::Value::try_from(v)?);
        }
        if let Some(v) = self.include_separators {
            set("include_separators", v.into());
        }
        if let Some(v) = &self.corpus {
            let mut corpus = toml::Table::new();
            corpus.insert("path".into(), v.clone().into());
            set("corpus", toml::Value::Array(vec![corpus.into()]));
        }
        let source = self
            .config
            .as_ref()
            .map_or("the command line".to_string(), |p| p.display().to_string());
        toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("invalid capture config in {source}"))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let model = ModelArgs {
        model: config.model.clone(),
    }
    .load()?;
    // Ctrl-C: finish nothing new, keep every shard written; the capture resumes later.
    let mut progress = Bar::stopping_on_ctrl_c()?;
    let manifest = capture(&model, &config, &mut progress)?;
    progress.finish();
    let seconds = progress.started.elapsed().as_secs_f64();
    if progress.stopped() {
        eprintln!(
            "stopped: {} tokens are saved; run the same command again to resume",
            manifest.tokens
        );
        std::process::exit(130);
    }
    eprintln!(
        "{} tokens this run in {:.1}s ({:.0} tokens/s)",
        progress.tokens,
        seconds,
        progress.tokens as f64 / seconds
    );
    println!(
        "store {}: {} tokens in {} contexts, {} shards, hooks {}",
        loupe_data::corpus::expand_path(&config.output).display(),
        manifest.tokens,
        manifest.contexts,
        manifest.shards.len(),
        manifest
            .hooks
            .iter()
            .map(|h| h.name.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
