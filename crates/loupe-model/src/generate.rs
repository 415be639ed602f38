//! Generation with a KV cache: one prefill of the (left-padded) prompts, then one column per new
//! token. The hooks apply throughout: interventions on prompt positions act in the prefill and
//! reach later tokens through the cached keys and values; those on later positions act when the
//! token at that position is fed back in.

use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};

use crate::{Batch, Error, Hooks, KvCache, Llama, Logits, Result};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// Sampled at `temperature`, from the smallest set of tokens whose probability reaches
    /// `top_p` when given. Each row samples with its own generator seeded with `seed`, so a
    /// prompt gives the same text in a batch and alone.
    Sample {
        temperature: f64,
        top_p: Option<f64>,
        seed: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end a row's generation (kept as its last token).
    pub stop_tokens: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    StopToken,
    MaxTokens,
}

/// What one prompt generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// New tokens only, the stop token included when there was one.
    pub tokens: Vec<u32>,
    pub stop: StopReason,
}

/// Generates a continuation of each prompt, all prompts together as one batch.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    pad_id: u32,
    hooks: &mut Hooks,
    config: &GenerateConfig,
) -> Result<Vec<Generation>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let context = model.config().max_position_embeddings;
    if longest + config.max_new_tokens > context {
        return Err(Error::TooLong {
            what: format!(
                "a prompt of {longest} tokens plus {} new ones",
                config.max_new_tokens
            ),
            len: longest + config.max_new_tokens,
            context,
        });
    }
    let mut batch = Batch::left_padded(prompts, pad_id, model.device())?;
    let mut processors: Vec<LogitsProcessor> = prompts
        .iter()
        .map(|_| logits_processor(&config.sampling))
        .collect();
    let mut generations: Vec<Generation> = prompts
        .iter()
        .map(|_| Generation {
            tokens: Vec::new(),
            stop: StopReason::MaxTokens,
        })
        .collect();
    let mut done = vec![false; prompts.len()];
    if config.max_new_tokens == 0 {
        return Ok(generations);
    }

    let mut cache = KvCache::new(model.config());
    let mut logits = model
        .forward_cached(&batch, hooks, &mut cache, Logits::Last)?
        .expect("logits were asked for");
    loop {
        let logits_f32 = logits.squeeze(1)?.to_dtype(candle_core::DType::F32)?;
        let mut next = Vec::with_capacity(prompts.len());
        for (row, processor) in processors.iter_mut().enumerate() {
            let generation = &mut generations[row];
            if done[row] {
                // A finished row keeps feeding its last token; its outputs are ignored.
                next.push(*generation.tokens.last().expect("a finished row has a token"));
                continue;
            }
            let token = processor.sample(&logits_f32.get(row)?)?;
            generation.tokens.push(token);
            if config.stop_tokens.contains(&token) {
                generation.stop = StopReason::StopToken;
                done[row] = true;
            } else if generation.tokens.len() == config.max_new_tokens {
                done[row] = true;
            }
            next.push(token);
        }
        if done.iter().all(|&d| d) {
            return Ok(generations);
        }
        batch = batch.next_step(&next)?;
        logits = model
            .forward_cached(&batch, hooks, &mut cache, Logits::Last)?
            .expect("logits were asked for");
    }
}

fn logits_processor(sampling: &Sampling) -> LogitsProcessor {
    match *sampling {
        Sampling::Greedy => LogitsProcessor::from_sampling(0, CandleSampling::ArgMax),
        Sampling::Sample {
            temperature,
            top_p: None,
            seed,
        } => LogitsProcessor::from_sampling(seed, CandleSampling::All { temperature }),
        Sampling::Sample {
            temperature,
            top_p: Some(p),
            seed,
        } => LogitsProcessor::from_sampling(seed, CandleSampling::TopP { p, temperature }),
    }
}
