//! `loupe store import`: an activation store from activations computed elsewhere.

use std::path::PathBuf;

use loupe_data::import::{import, ImportSpec, TensorSource};
use loupe_model::HookPoint;

use super::capture::parse_dtype;
use crate::progress_bar::Bar;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a store from a `[rows, width]` float tensor in a .npy or .safetensors file, with
    /// optional per-row token ids, document ids and integer labels, so that activations from
    /// elsewhere (another framework's cache, a synthetic generator) train and evaluate like
    /// captured ones. A .safetensors input's `token_ids`, `doc_ids` and `labels.<field>` tensors
    /// come along by themselves.
    Import(ImportArgs),
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The activations: `file.npy`, `file.safetensors` (the tensor named by --hook, or its only
    /// 2-D float tensor) or `file.safetensors:NAME`.
    input: TensorSource,
    /// The store directory to write (it must not hold a store yet).
    #[arg(long)]
    output: PathBuf,
    /// The hook point to file the activations under, e.g. blocks.6.hook_resid_post; SAE and probe
    /// configs name it.
    #[arg(long)]
    hook: HookPoint,
    /// A second tensor of the same rows (`file.npy` or `file.safetensors:NAME`), filed under
    /// --target-hook: what a transcoder trained on the store reconstructs.
    #[arg(long, requires = "target_hook")]
    target: Option<TensorSource>,
    /// The hook point to file --target under, e.g. blocks.6.hook_mlp_out.
    #[arg(long, requires = "target")]
    target_hook: Option<HookPoint>,
    /// Per-row token ids (`ids.npy` or `file.safetensors:NAME`).
    #[arg(long)]
    token_ids: Option<TensorSource>,
    /// Per-row document ids; SAE training holds out whole documents (default: each context is
    /// one document).
    #[arg(long)]
    doc_ids: Option<TensorSource>,
    /// A per-row integer label, `FIELD=labels.npy` or `FIELD=file.safetensors:NAME`; negative
    /// values mean no label. Repeatable.
    #[arg(long = "label", value_name = "FIELD=SOURCE", value_parser = parse_label)]
    labels: Vec<(String, TensorSource)>,
    /// The model name to record; imported activations are never spliced into a model.
    #[arg(long, default_value = "imported")]
    model: String,
    /// f32, f16 or bf16: the dtype to store activations in.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: loupe_data::store::StoreDType,
    /// Rows per context.
    #[arg(long, default_value_t = 128)]
    context_length: usize,
    /// Contexts per shard file.
    #[arg(long, default_value_t = 256)]
    shard_contexts: usize,
}

fn parse_label(s: &str) -> Result<(String, TensorSource), String> {
    let (field, source) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': write a label as FIELD=SOURCE, e.g. lang=lang.npy"))?;
    Ok((field.to_string(), source.parse()?))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Command::Import(args) = args.command;
    let spec = ImportSpec {
        activations: args.input,
        token_ids: args.token_ids,
        doc_ids: args.doc_ids,
        labels: args.labels,
        output: args.output,
        hook: args.hook,
        target: args.target_hook.zip(args.target),
        model: args.model,
        dtype: args.dtype,
        context_length: args.context_length,
        shard_contexts: args.shard_contexts,
    };
    let mut progress = Bar::stopping_on_ctrl_c()?;
    let manifest = import(&spec, &mut progress)?;
    progress.finish();
    let fields = &manifest.labels.fields;
    println!(
        "imported {} rows of width {} into {} ({} shards, {} contexts{})",
        manifest.tokens,
        manifest.hooks[0].width,
        spec.output.display(),
        manifest.shards.len(),
        manifest.contexts,
        if fields.is_empty() {
            String::new()
        } else {
            format!(", labels: {}", fields.join(", "))
        }
    );
    Ok(())
}
