//! Activations straight from the model, without a store: the corpus is packed as `loupe capture`
//! packs it, run through the model a few contexts at a time, and the rows pass through a shuffle
//! buffer into batches. For training on corpora larger than the disk (`source = "model"` in a
//! training config).
//!
//! The shuffle is by blocks: the rows of the next contexts fill a block of at least `buffer_rows`
//! rows, the block is shuffled (seeded by the pass's seed and the block's index) and handed out in
//! batches; a last partial batch of a block is dropped (the pass's last batch may be partial, as
//! a store's is). A batch is then named by
//! where its block starts in the corpus and how many batches of the block came before it
//! ([`StreamPosition`]), so a stopped run resumes at that document position: the corpus is
//! tokenized up to the block (no forward pass), the block's contexts are run again, and the
//! batches already used are skipped. The batches after a resume are the ones an uninterrupted
//! run gets.
//!
//! The held-out documents are the first ones of the corpus: those of its first `eval_tokens`
//! stored tokens ([`held_out_documents`]). The stream has no document count to take a fraction
//! of, and held-out rows from its start cost one forward pass over just those documents.

use candle_core::{Device, Tensor};
use loupe_model::{Batch, HookPoint, Hooks, Model};
use loupe_util::Problems as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::capture::CaptureConfig;
use crate::corpus::{interleave, CorpusSpec, Document};
use crate::packing::{Context, Packer, NO_DOC};
use crate::{Error, Result};

/// The model and text a run streams its activations from: a capture config without the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The model, named as `--model` names it (`smollm2`, a path, a hub id).
    #[serde(default = "crate::capture::default_model")]
    pub model: String,
    /// Tokens per context, the separator that starts it included.
    #[serde(default = "crate::capture::default_context_length")]
    pub context_length: usize,
    /// Contexts per forward pass.
    #[serde(default = "crate::capture::default_batch_size")]
    pub batch_size: usize,
    /// Tokens per pass over the corpus (whole contexts: a few more); the whole corpus if unset.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Also train on the separator positions (each context's first token, those between documents).
    #[serde(default)]
    pub include_separators: bool,
    /// The separator token's text; by default `<|endoftext|>`, or else the tokenizer's EOS.
    #[serde(default)]
    pub separator: Option<String>,
    /// The corpora, read in turn one document at a time.
    pub corpus: Vec<CorpusSpec>,
}

impl StreamConfig {
    /// The capture that would store what this stream computes (for its checks and separator).
    fn as_capture(&self, hooks: &[HookPoint]) -> CaptureConfig {
        CaptureConfig {
            model: self.model.clone(),
            hooks: hooks.to_vec(),
            output: "(streamed)".into(),
            context_length: self.context_length,
            batch_size: self.batch_size,
            max_tokens: self.max_tokens,
            dtype: Default::default(),
            shard_contexts: 1,
            include_separators: self.include_separators,
            separator: self.separator.clone(),
            corpus: self.corpus.clone(),
        }
    }

    /// Checks the stream against `model` for `hooks`, as a capture is checked; returns the
    /// separator token.
    pub fn check(&self, model: &Model, hooks: &[HookPoint]) -> Result<u32> {
        let capture = self.as_capture(hooks);
        capture.validate(model)?;
        capture.separator_id(model)
    }

    fn packer<'m>(&self, model: &'m Model, separator: u32) -> Result<StreamPacker<'m>> {
        let documents: Box<dyn Iterator<Item = Result<Document>>> = Box::new(interleave(&self.corpus)?);
        Ok(Packer::new(
            documents,
            &model.tokenizer,
            self.context_length,
            separator,
            Vec::new(),
            None,
        ))
    }

    /// The positions of a context that become rows.
    fn stored_positions<'c>(&self, context: &'c Context) -> impl Iterator<Item = usize> + 'c {
        let include = self.include_separators;
        (0..context.tokens.len()).filter(move |&i| include || !context.is_separator(i))
    }
}

type StreamPacker<'m> = Packer<'m, Box<dyn Iterator<Item = Result<Document>>>>;

/// Which documents' rows a stream yields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StreamSplit {
    /// Documents from this one on (and separator rows): the training rows.
    From(u32),
    /// Documents before this one: the held-out rows.
    Before(u32),
}

impl StreamSplit {
    fn contains(self, doc: u32) -> bool {
        match self {
            StreamSplit::From(first) => doc == NO_DOC || doc >= first,
            StreamSplit::Before(end) => doc != NO_DOC && doc < end,
        }
    }
}

/// Where a batch of a stream is: its block's first context (counting from the start of the
/// pass), the block's index in the pass, and the batches of the block before it. Kept in a
/// training checkpoint, so that a stopped run resumes there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The context the block starts at.
    pub block_first_context: u64,
    /// The block's index in the pass (it seeds the block's shuffle).
    pub block: u64,
    /// Batches of the block already handed out.
    pub batches_in_block: u64,
}

/// The documents held out from a stream: those of its first `eval_tokens` stored tokens, found
/// by tokenizing (no forward pass). Returns how many documents that is (the training rows are
/// of the documents after them).
pub fn held_out_documents(
    model: &Model,
    config: &StreamConfig,
    hooks: &[HookPoint],
    eval_tokens: usize,
) -> Result<u32> {
    let separator = config.check(model, hooks)?;
    let mut packer = config.packer(model, separator)?;
    let mut rows = 0;
    let mut last_doc = None;
    while rows < eval_tokens {
        let Some(context) = packer.next().transpose()? else {
            break;
        };
        for i in config.stored_positions(&context) {
            if context.docs[i] != NO_DOC {
                last_doc = Some(context.docs[i]);
            }
            rows += 1;
        }
    }
    Ok(last_doc.map_or(0, |d| d + 1))
}

/// Batches of `[batch_size, Σ widths]` f32 rows (each token's activations at every hook of
/// `hooks`, side by side) computed by the model from the corpus (see the module docs).
pub struct ActivationStream<'m> {
    model: &'m Model,
    config: StreamConfig,
    hooks: Vec<HookPoint>,
    width: usize,
    split: StreamSplit,
    batch_size: usize,
    buffer_rows: usize,
    seed: u64,
    packer: StreamPacker<'m>,
    /// Contexts packed so far in this pass, and the rows they held (for `max_tokens`).
    contexts_read: u64,
    tokens_read: u64,
    /// The current block, shuffled, flat `[rows, width]`, and the values of it handed out.
    block: Vec<f32>,
    used: usize,
    /// Whether `block` holds block `position.block` (it is read when the first batch is asked for).
    loaded: bool,
    /// Where the next batch is.
    position: StreamPosition,
    /// Set once the corpus (or `max_tokens`, or the held-out documents) is used up.
    finished: bool,
}

impl<'m> ActivationStream<'m> {
    /// A stream of `split`'s rows at `hooks`, starting at `start` (the default: the start of the
    /// pass). `seed` seeds the pass's block shuffles.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        model: &'m Model,
        config: &StreamConfig,
        hooks: &[HookPoint],
        split: StreamSplit,
        batch_size: usize,
        buffer_rows: usize,
        seed: u64,
        start: StreamPosition,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        let separator = config.check(model, hooks)?;
        let width = hooks
            .iter()
            .map(|&h| model.width(h))
            .sum::<loupe_model::Result<usize>>()?;
        let mut stream = ActivationStream {
            model,
            config: config.clone(),
            hooks: hooks.to_vec(),
            width,
            split,
            batch_size,
            buffer_rows: buffer_rows.max(batch_size),
            seed,
            packer: config.packer(model, separator)?,
            contexts_read: 0,
            tokens_read: 0,
            block: Vec::new(),
            used: 0,
            loaded: false,
            position: start,
            finished: false,
        };
        // Packing is deterministic: tokenize up to the block (its contexts are run again when
        // the first batch is asked for, and the batches of it already used skipped).
        for _ in 0..start.block_first_context {
            match stream.packer.next().transpose()? {
                Some(context) => stream.count_context(&context),
                None => break,
            }
        }
        Ok(stream)
    }

    /// Where the next batch is (what a checkpoint taken now must record).
    pub fn next_position(&self) -> StreamPosition {
        if self.loaded && !self.finished && self.remaining() < self.batch_size * self.width {
            // The block is used up: the next batch is the next block's first. (At the end of
            // the pass, the block's last rows are still to come, as a partial batch.)
            StreamPosition {
                block_first_context: self.contexts_read,
                block: self.position.block + 1,
                batches_in_block: 0,
            }
        } else {
            self.position
        }
    }

    fn remaining(&self) -> usize {
        self.block.len() - self.used
    }

    fn count_context(&mut self, context: &Context) {
        self.contexts_read += 1;
        self.tokens_read += self.config.stored_positions(context).count() as u64;
    }

    /// Reads, runs and shuffles block `position.block`, which starts at the packer's position:
    /// contexts until it holds `buffer_rows` rows of the split (or the pass ends). Then skips the
    /// batches of it already used.
    fn fill_block(&mut self) -> Result<()> {
        self.block.clear();
        self.used = 0;
        let mut rows = Vec::new();
        while !self.finished && self.block.len() < self.buffer_rows * self.width {
            let mut contexts = Vec::with_capacity(self.config.batch_size);
            while contexts.len() < self.config.batch_size {
                if self.config.max_tokens.is_some_and(|max| self.tokens_read >= max) {
                    self.finished = true;
                    break;
                }
                let Some(context) = self.packer.next().transpose()? else {
                    self.finished = true;
                    break;
                };
                self.count_context(&context);
                if let StreamSplit::Before(end) = self.split {
                    // Documents come in order: once a context starts past the held-out ones, so
                    // does every later one.
                    let first = context.docs.iter().copied().find(|&d| d != NO_DOC);
                    if first.is_some_and(|d| d >= end) {
                        self.finished = true;
                        break;
                    }
                }
                contexts.push(context);
            }
            if contexts.is_empty() {
                break;
            }
            self.run(&contexts, &mut rows)?;
        }
        let n = self.block.len() / self.width;
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ self.position.block.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        let w = self.width;
        let shuffled: Vec<f32> = order
            .iter()
            .flat_map(|&r| self.block[r * w..(r + 1) * w].iter().copied())
            .collect();
        self.block = shuffled;
        self.used = (self.position.batches_in_block as usize * self.batch_size * w).min(self.block.len());
        self.loaded = true;
        Ok(())
    }

    /// Runs `contexts` through the model and appends their rows of the split to the block.
    fn run(&mut self, contexts: &[Context], rows: &mut Vec<u32>) -> Result<()> {
        let sequences: Vec<Vec<u32>> = contexts.iter().map(|c| c.tokens.clone()).collect();
        let batch = Batch::left_padded(&sequences, self.model.pad_id(), self.model.device())?;
        let mut hooks = Hooks::new().capture_all(self.hooks.iter().copied());
        self.model.capture(&batch, &mut hooks)?;
        rows.clear();
        for (r, context) in contexts.iter().enumerate() {
            let pad = batch.pads()[r];
            for i in self.config.stored_positions(context) {
                if self.split.contains(context.docs[i]) {
                    rows.push((r * batch.columns() + pad + i) as u32);
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let index = Tensor::from_slice(rows, rows.len(), self.model.device())?;
        let mut per_hook = Vec::with_capacity(self.hooks.len());
        for &hook in &self.hooks {
            let captured = hooks.captured(hook).expect("captured");
            let (b, t) = (captured.dim(0)?, captured.dim(1)?);
            let width = captured.elem_count() / (b * t);
            let kept = captured
                .reshape((b * t, width))?
                .index_select(&index, 0)?
                .to_dtype(candle_core::DType::F32)?
                .to_device(&Device::Cpu)?;
            if crate::reader::first_non_finite_row(&kept)?.is_some() {
                return Err(Error::config(
                    "stream.corpus",
                    format!(
                        "the model computed a NaN or infinite activation at {hook}: leave the document out"
                    ),
                ));
            }
            per_hook.push(kept);
        }
        let side_by_side = Tensor::cat(&per_hook, 1)?;
        self.block.extend(side_by_side.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}

impl Iterator for ActivationStream<'_> {
    type Item = Result<Tensor>;

    fn next(&mut self) -> Option<Result<Tensor>> {
        let want = self.batch_size * self.width;
        loop {
            if !self.loaded {
                if let Err(e) = self.fill_block() {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
            if self.remaining() >= want {
                break;
            }
            if self.finished {
                // The pass's last batch may be partial, as a store's is.
                if self.remaining() == 0 {
                    return None;
                }
                let batch = self.block[self.used..].to_vec();
                self.used = self.block.len();
                let rows = batch.len() / self.width;
                return Some(Tensor::from_vec(batch, (rows, self.width), &Device::Cpu).map_err(Into::into));
            }
            // This block is used up (its last partial batch dropped): on to the next.
            self.position = self.next_position();
            self.loaded = false;
        }
        let batch = self.block[self.used..self.used + want].to_vec();
        self.used += want;
        self.position.batches_in_block += 1;
        Some(Tensor::from_vec(batch, (self.batch_size, self.width), &Device::Cpu).map_err(Into::into))
    }
}
