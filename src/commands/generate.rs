use std::time::Instant;

use loupe_model::{generate, GenerateConfig, Hooks, Sampling, StopReason};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user turn with the model's own chat template (as transformers'
    /// apply_chat_template does).
    #[arg(long)]
    pub chat: bool,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling: sample from the smallest set of tokens whose probability reaches this.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let prompt = if args.chat {
        model.chat_prompt(&[("user", &args.prompt)])?
    } else {
        args.prompt.clone()
    };
    let ids = model.encode_prompt(&prompt)?;
    let sampling = if args.temperature > 0.0 {
        Sampling::Sample {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        }
    } else {
        Sampling::Greedy
    };
    let config = GenerateConfig {
        max_new_tokens: args.max_tokens,
        sampling,
        stop_tokens: model.stop_tokens(),
    };
    let start = Instant::now();
    let generation = generate(
        &model,
        std::slice::from_ref(&ids),
        model.pad_id(),
        &mut Hooks::new(),
        &config,
    )?
    .remove(0);
    let seconds = start.elapsed().as_secs_f64();

    let mut text_tokens = generation.tokens.as_slice();
    if generation.stop == StopReason::StopToken {
        text_tokens = &text_tokens[..text_tokens.len() - 1];
    }
    println!("{}{}", prompt, model.tokenizer.decode(text_tokens)?);
    eprintln!(
        "{} prompt tokens, {} generated in {:.2}s ({:.1} tokens/s, prefill included){}",
        ids.len(),
        generation.tokens.len(),
        seconds,
        generation.tokens.len() as f64 / seconds,
        if generation.stop == StopReason::StopToken {
            "; stopped at a stop token"
        } else {
            ""
        }
    );
    Ok(())
}
