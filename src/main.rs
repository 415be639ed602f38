//! `loupe`: the command line of the loupe interpretability framework.

mod commands;
mod progress_bar;
mod tensorboard;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// loupe reads what a language model holds in its activations, and amplifies it.
///
/// Models are named by a registered short name (`smollm2`, fetched by `scripts/fetch-models`),
/// a GGUF file, a Hugging Face model directory, or a Hugging Face id already in the local hf-hub
/// cache. Activations are named by TransformerLens hook points, e.g. `blocks.15.hook_resid_post`
/// (`loupe hooks` lists them).
#[derive(Parser)]
#[command(name = "loupe", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt (greedy by default; --temperature samples), with a KV cache.
    Generate(commands::generate::Args),
    /// Show the activation at one hook point for a prompt: its shape, the norm at each position,
    /// and the logit lens (the tokens the unembedding reads from it).
    Inspect(commands::inspect::Args),
    /// List a model's hook points with their widths.
    Hooks(commands::hooks::Args),
    /// Stream a corpus through the model and write the activations at chosen hook points to an
    /// activation store (sharded safetensors + manifest.json). Resumes an interrupted capture;
    /// Ctrl-C stops after saving what is done.
    Capture(commands::capture::Args),
    /// Sparse autoencoders: train, evaluate, list top-activating contexts.
    Sae(commands::sae::Args),
    /// k-sparse probes: find the neurons that encode a feature (train), and look at one (show).
    Probe(commands::probe::Args),
    /// Named features (probe directions, SAE latents, mean differences, vectors) of a feature book.
    Features(commands::features::Args),
    /// Patch experiments: amplify source activations (none, scale, cfg, SAE latents, probe
    /// directions), patch them into a target prompt, generate, judge, and write a comparison
    /// report. Resumes an interrupted sweep.
    Scope(commands::scope::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => commands::generate::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Hooks(args) => commands::hooks::run(args),
        Command::Capture(args) => commands::capture::run(args),
        Command::Sae(args) => commands::sae::run(args),
        Command::Probe(args) => commands::probe::run(args),
        Command::Features(args) => commands::features::run(args),
        Command::Scope(args) => commands::scope::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
