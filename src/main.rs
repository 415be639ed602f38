//! `loupe`: the command line of the loupe interpretability framework.

mod commands;
mod progress_bar;
mod tensorboard;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc rather than the C library's malloc: candle allocates a fresh buffer for every
/// tensor op, and the SAE steps some arrays of megabytes; glibc returns such blocks to the
/// kernel on free and takes page faults to get them back at the next step, while mimalloc
/// reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The steering task: neutral instructions answered while a concept is pushed in at one
    /// layer (SAE latent, probe or mean-difference direction, cfg), beside a prompting baseline;
    /// strengths chosen on held-out instructions, concept–fluency curves. Resumes a stopped run.
    Steer(commands::steer::Args),
    /// Activation stores made from elsewhere: `loupe store import` turns a .npy or .safetensors
    /// tensor of activations (with token ids and labels) into a store.
    Store(commands::store::Args),
    /// Check stores and run directories for damage: every shard and run file against the
    /// checksum recorded when it was written, tensors against their promised shapes, activations
    /// finite. Exits 1 if anything is damaged.
    Verify(commands::verify::Args),
    /// A local web app over the runs in checkpoints/ and activations/: browse stores, SAE features
    /// (and the latents that fire on a sentence, live), probes and scope reports, and run patch
    /// experiments in a playground whose results stream in as they are generated.
    Serve(commands::serve::Args),
}

fn main() -> ExitCode {
    // Errors are sentences for the user. candle appends a backtrace to its errors whenever
    // RUST_BACKTRACE is set, which lands mid-sentence; developers get it back with LOUPE_DEBUG=1.
    if std::env::var_os("LOUPE_DEBUG").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
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
        Command::Steer(args) => commands::steer::run(args),
        Command::Store(args) => commands::store::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Serve(args) => commands::serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Ctrl-C before anything could be saved: the shell's code for an interrupt.
        Err(e)
            if e.chain()
                .any(|c| matches!(c.downcast_ref(), Some(loupe_sae::Error::Stopped { .. }))) =>
        {
            eprintln!("{}", describe(&e));
            ExitCode::from(130)
        }
        Err(e) if std::env::var_os("LOUPE_DEBUG").is_some() => {
            eprintln!("error: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes in one line, `a: b: c`. Library errors that keep their cause often
/// say it in their own message too; a cause already said is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
