//! Where a training run's activations come from: a store (`source = "store"`, the default), or
//! the model itself (`source = "model"`: the corpus of the config's `[stream]` run through the
//! model as training goes, through a shuffle buffer; see `loupe_data::stream`). The trainer asks
//! both the same questions: how wide a hook is, which model made the activations, a sample to
//! start from, the held-out rows, and the batches of a pass.

use candle_core::{Device, Tensor};
use loupe_data::reader::{Split, Store};
use loupe_data::stream::{held_out_documents, ActivationStream, StreamConfig, StreamPosition, StreamSplit};
use loupe_model::{HookPoint, Model};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, TrainConfig};

/// Which source a config trains from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// An activation store (`store`), read in shuffled passes.
    #[default]
    Store,
    /// The model's forward pass over the corpus of `[stream]`, with no store.
    Model,
}

/// An opened source.
pub(crate) enum ActivationSource {
    Store(Store),
    Model {
        model: Box<Model>,
        stream: StreamConfig,
        sha256: String,
        /// The documents before this one are held out (see `loupe_data::stream`).
        held_out_docs: u32,
    },
}

/// The batches of one pass; a stream also says where its next batch is.
pub(crate) trait PassBatches: Iterator<Item = Result<Tensor>> {
    /// Where the next batch of a stream is (what a checkpoint records); `None` for a store.
    fn stream_position(&self) -> Option<StreamPosition> {
        None
    }
}

struct StoreBatches<'s>(loupe_data::reader::Batches<'s>);
impl Iterator for StoreBatches<'_> {
    type Item = Result<Tensor>;
    fn next(&mut self) -> Option<Result<Tensor>> {
        self.0.next().map(|b| b.map_err(Into::into))
    }
}
impl PassBatches for StoreBatches<'_> {}

struct StreamBatches<'m>(ActivationStream<'m>);
impl Iterator for StreamBatches<'_> {
    type Item = Result<Tensor>;
    fn next(&mut self) -> Option<Result<Tensor>> {
        self.0.next().map(|b| b.map_err(Into::into))
    }
}
impl PassBatches for StreamBatches<'_> {
    fn stream_position(&self) -> Option<StreamPosition> {
        Some(self.0.next_position())
    }
}

impl ActivationSource {
    /// Opens the store, or loads the model and finds the held-out documents of the stream.
    pub(crate) fn open(config: &TrainConfig, hooks: &[HookPoint]) -> Result<Self> {
        match config.source {
            SourceKind::Store => Ok(ActivationSource::Store(Store::open(&config.store)?)),
            SourceKind::Model => {
                // `TrainConfig::validate` (run before any source is opened) refuses a model
                // source without a [stream] table.
                let stream = config.stream.clone().expect("a validated config");
                let model = Model::load(&stream.model, &Device::Cpu)?;
                let held_out_docs = if config.held_out > 0.0 {
                    held_out_documents(&model, &stream, hooks, config.eval_tokens)?
                } else {
                    0
                };
                Ok(ActivationSource::Model {
                    sha256: model.source.fingerprint()?,
                    model: Box::new(model),
                    stream,
                    held_out_docs,
                })
            }
        }
    }

    /// The store, if the activations come from one.
    pub(crate) fn store(&self) -> Option<&Store> {
        match self {
            ActivationSource::Store(store) => Some(store),
            ActivationSource::Model { .. } => None,
        }
    }

    /// The width of the activations at `hook`, or an error naming the hooks there are.
    pub(crate) fn width(&self, hook: HookPoint) -> Result<usize> {
        match self {
            ActivationSource::Store(store) => crate::eval::store_hook_width(store, hook),
            ActivationSource::Model { model, .. } => Ok(model.width(hook)?),
        }
    }

    /// sha256 of the weights of the model that made the activations.
    pub(crate) fn model_sha256(&self) -> &str {
        match self {
            ActivationSource::Store(store) => &store.manifest.model.sha256,
            ActivationSource::Model { sha256, .. } => sha256,
        }
    }

    /// The model's name.
    pub(crate) fn model_name(&self) -> &str {
        match self {
            ActivationSource::Store(store) => &store.manifest.model.name,
            ActivationSource::Model { model, .. } => &model.name,
        }
    }

    /// Tokens per context of the activations.
    pub(crate) fn context_length(&self) -> usize {
        match self {
            ActivationSource::Store(store) => store.manifest.context_length,
            ActivationSource::Model { stream, .. } => stream.context_length,
        }
    }

    /// The source, for messages: `store DIR`, or `the stream from MODEL`.
    pub(crate) fn describe(&self) -> String {
        match self {
            ActivationSource::Store(store) => format!("store {}", store.dir.display()),
            ActivationSource::Model { stream, .. } => format!("the stream from model {}", stream.model),
        }
    }

    /// The batches of training pass `epoch`, from where the run furthest behind stands: a
    /// store's pass is read from its start and the `used` batches skipped; a stream starts at
    /// `position`.
    pub(crate) fn training_batches<'a>(
        &'a self,
        config: &TrainConfig,
        hooks: &[HookPoint],
        epoch: u64,
        used: u64,
        position: StreamPosition,
    ) -> Result<Box<dyn PassBatches + 'a>> {
        let seed = config.seed.wrapping_add(epoch);
        match self {
            ActivationSource::Store(store) => {
                let split = Split::Train {
                    held_out: config.held_out,
                    seed: config.split_seed(),
                };
                let mut batches =
                    store.batches_of(hooks, config.batch_size, config.shuffle_buffer, split, seed)?;
                // Batches of this pass that every run has used already (before it was stopped).
                for _ in 0..used {
                    batches.next().transpose()?;
                }
                Ok(Box::new(StoreBatches(batches)))
            }
            ActivationSource::Model {
                model,
                stream,
                held_out_docs,
                ..
            } => Ok(Box::new(StreamBatches(ActivationStream::open(
                model,
                stream,
                hooks,
                StreamSplit::From(*held_out_docs),
                config.batch_size,
                config.shuffle_buffer,
                seed,
                position,
            )?))),
        }
    }

    /// `init_tokens` rows of the training split (fewer if it holds fewer), from which the
    /// normalisation and b_dec are estimated.
    pub(crate) fn sample(&self, config: &TrainConfig, hooks: &[HookPoint]) -> Result<Tensor> {
        let seed = config.seed ^ 0x5eed;
        let first = match self {
            ActivationSource::Store(store) => {
                let split = Split::Train {
                    held_out: config.held_out,
                    seed: config.split_seed(),
                };
                store
                    .batches_of(hooks, config.init_tokens, config.shuffle_buffer, split, seed)?
                    .next()
                    .transpose()?
            }
            ActivationSource::Model {
                model,
                stream,
                held_out_docs,
                ..
            } => ActivationStream::open(
                model,
                stream,
                hooks,
                StreamSplit::From(*held_out_docs),
                config.init_tokens,
                config.init_tokens,
                seed,
                StreamPosition::default(),
            )?
            .next()
            .transpose()?,
        };
        first.ok_or_else(|| Error::Mismatch {
            message: format!("{}: its training split is empty", self.describe()),
        })
    }

    /// The held-out rows, in batches of up to 4096; the caller takes as many as it needs.
    pub(crate) fn held_out_batches(
        &self,
        config: &TrainConfig,
        hooks: &[HookPoint],
    ) -> Result<Box<dyn Iterator<Item = Result<Tensor>> + '_>> {
        Ok(match self {
            ActivationSource::Store(store) => {
                let split = Split::HeldOut {
                    held_out: config.held_out,
                    seed: config.split_seed(),
                };
                let seed = config.split_seed();
                Box::new(
                    store
                        .batches_of(hooks, 4096, 4096, split, seed)?
                        .map(|b| b.map_err(Into::into)),
                )
            }
            ActivationSource::Model {
                model,
                stream,
                held_out_docs,
                ..
            } => Box::new(
                ActivationStream::open(
                    model,
                    stream,
                    hooks,
                    StreamSplit::Before(*held_out_docs),
                    4096,
                    4096,
                    config.split_seed(),
                    StreamPosition::default(),
                )?
                .map(|b| b.map_err(Into::into)),
            ),
        })
    }
}
