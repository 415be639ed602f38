use std::path::PathBuf;

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
    /// Override any config field: `--set context_length=256` (TOML value; repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub set: Vec<String>,
}

pub fn parse_dtype(s: &str) -> Result<StoreDType, String> {
    match s {
        "f32" => Ok(StoreDType::F32),
        "f16" => Ok(StoreDType::F16),
        "bf16" => Ok(StoreDType::Bf16),
        other => Err(format!("unknown dtype '{other}': use f32, f16 or bf16")),
    }
}

impl Args {
    /// The config file with the flags and `--set` overrides applied on top (flags are shorthand
    /// for `--set`; both win over the file).
    fn resolve(&self) -> anyhow::Result<CaptureConfig> {
        let string = |v: &str| toml::Value::String(v.to_string()).to_string();
        let mut overrides = Vec::new();
        if let Some(v) = &self.model {
            overrides.push(format!("model={}", string(v)));
        }
        if let Some(v) = &self.hooks {
            let hooks = toml::Value::Array(v.iter().map(|h| h.to_string().into()).collect());
            overrides.push(format!("hooks={hooks}"));
        }
        if let Some(v) = &self.output {
            overrides.push(format!("output={}", string(v)));
        }
        for (key, value) in [
            ("context_length", self.context_length),
            ("batch_size", self.batch_size),
            ("shard_contexts", self.shard_contexts),
        ] {
            if let Some(v) = value {
                overrides.push(format!("{key}={v}"));
            }
        }
        if let Some(v) = self.max_tokens {
            overrides.push(format!("max_tokens={v}"));
        }
        if let Some(v) = self.dtype {
            overrides.push(format!("dtype={}", toml::Value::try_from(v)?));
        }
        if let Some(v) = self.include_separators {
            overrides.push(format!("include_separators={v}"));
        }
        if let Some(v) = &self.corpus {
            overrides.push(format!("corpus=[{{ path = {} }}]", string(v)));
        }
        overrides.extend(self.set.iter().cloned());
        Ok(loupe_util::config::load(self.config.as_deref(), &overrides)?)
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
