//! One module per `loupe` subcommand: its arguments and what it does.

pub mod capture;
pub mod features;
pub mod generate;
pub mod hooks;
pub mod inspect;
pub mod probe;
pub mod sae;
pub mod sae_absorption;
pub mod sae_probing;
pub mod sae_seeds;
pub mod sae_sweep;
pub mod sae_synth;
pub mod sae_top;
pub mod scope;
pub mod serve;
pub mod steer;
pub mod store;
pub mod verify;

use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use loupe_model::Model;

/// `--model`, shared by every command that runs a model.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// A registered name (smollm2), a GGUF file, a model directory, or a Hugging Face id in the
    /// local hf-hub cache.
    #[arg(long, default_value = "smollm2")]
    pub model: String,
}

impl ModelArgs {
    /// Loads the model on the CPU, telling the user (on stderr) what was loaded and how long it took.
    pub fn load(&self) -> anyhow::Result<Model> {
        let start = Instant::now();
        let model = Model::load(&self.model, &Device::Cpu)
            .with_context(|| format!("loading model '{}'", self.model))?;
        let c = model.spec();
        eprintln!(
            "loaded {} ({}) from {} ({} layers, d_model {}, d_mlp {}, vocab {}) in {:.1}s",
            model.name,
            c.family,
            model.source.path().display(),
            c.n_layers,
            c.d_model,
            c.d_mlp,
            c.vocab_size,
            start.elapsed().as_secs_f64()
        );
        Ok(model)
    }
}
