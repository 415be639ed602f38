//! Generation with a KV cache: one prefill of the (left-padded) prompts, then one column per new
//! token. The hooks apply throughout: interventions on prompt positions act in the prefill and
//! reach later tokens through the cached keys and values; those on later positions act when the
//! token at that position is fed back in.

use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};

use candle_core::{DType, Tensor};

use crate::{Batch, Error, Hooks, KvCache, Logits, Model, Result};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// Sampled at `temperature`, from the smallest set of tokens whose probability reaches
    /// `top_p` when given. Each row samples with its own generator seeded with `seed`, so a
    /// prompt gives the same text in a batch and alone.
    Sample {
        /// Divides the logits before the softmax: below 1 sharper, above 1 flatter.
        temperature: f64,
        /// Nucleus sampling's probability mass in (0, 1]; `None` samples from the whole vocabulary.
        top_p: Option<f64>,
        /// Seed of each row's random generator.
        seed: u64,
    },
}

/// What [`generate`] does: how many tokens at most, how each is chosen, and what ends a row.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    /// New tokens per prompt at most, the stop token included.
    pub max_new_tokens: usize,
    /// How each next token is chosen.
    pub sampling: Sampling,
    /// Tokens that end a row's generation (kept as its last token).
    pub stop_tokens: Vec<u32>,
}

/// Why a row stopped generating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It generated one of the config's stop tokens.
    StopToken,
    /// It generated `max_new_tokens` tokens without a stop token.
    MaxTokens,
}

/// What one prompt generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// New tokens only, the stop token included when there was one.
    pub tokens: Vec<u32>,
    /// Why generation of this prompt ended.
    pub stop: StopReason,
}

/// Generates a continuation of each prompt, all prompts together as one batch.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    pad_id: u32,
    hooks: &mut Hooks,
    config: &GenerateConfig,
) -> Result<Vec<Generation>> {
    let batch = Batch::left_padded(prompts, pad_id, model.device())?;
    let mut cache = KvCache::new(model.n_layers());
    Ok(generate_from(model, &mut cache, batch, hooks, config)?.0)
}

/// [`generate`] continuing from a KV cache: `batch` holds the prompts' columns after those in
/// `cache` (for many rows sharing one prefix, [`KvCache::repeat_rows`] and
/// [`Batch::continuing`]). Also returns the logits of the first new token, `[rows, vocab]` f32,
/// for judges that score the whole next-token distribution.
pub fn generate_from(
    model: &Model,
    cache: &mut KvCache,
    mut batch: Batch,
    hooks: &mut Hooks,
    config: &GenerateConfig,
) -> Result<(Vec<Generation>, Tensor)> {
    // The last new token is returned, never fed back: the model sees one position fewer.
    let context = model.spec().context;
    let positions = batch.max_len() + config.max_new_tokens.saturating_sub(1);
    if positions > context {
        return Err(Error::TooLong {
            what: format!(
                "a prompt of {} tokens plus {} new ones (the last never fed back)",
                batch.max_len(),
                config.max_new_tokens
            ),
            len: positions,
            context,
        });
    }
    let rows = batch.rows();
    let mut processors: Vec<LogitsProcessor> =
        (0..rows).map(|_| logits_processor(&config.sampling)).collect();
    let mut generations: Vec<Generation> = (0..rows)
        .map(|_| Generation {
            tokens: Vec::new(),
            stop: StopReason::MaxTokens,
        })
        .collect();
    let mut done = vec![false; rows];

    let mut logits = model
        .forward_cached(&batch, hooks, cache, Logits::Last)?
        .squeeze(1)?
        .to_dtype(DType::F32)?;
    let first_logits = logits.clone();
    if config.max_new_tokens == 0 {
        return Ok((generations, first_logits));
    }
    loop {
        let mut next = Vec::with_capacity(rows);
        for (row, processor) in processors.iter_mut().enumerate() {
            let generation = &mut generations[row];
            if done[row] {
                // A finished row keeps feeding its last token; its outputs are ignored.
                next.push(*generation.tokens.last().expect("a finished row has a token"));
                continue;
            }
            let token = processor.sample(&logits.get(row)?)?;
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
            return Ok((generations, first_logits));
        }
        batch = batch.next_step(&next)?;
        logits = model
            .forward_cached(&batch, hooks, cache, Logits::Last)?
            .squeeze(1)?
            .to_dtype(DType::F32)?;
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
