//! `loupe capture`: stream a corpus through the model and write the activations at chosen hook
//! points into a store, shard by shard, resuming an interrupted capture where it stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use loupe_model::{Batch, HookPoint, Hooks, Model};
use loupe_util::Problems as _;
use loupe_util::Progress;
use serde::{Deserialize, Serialize};

use crate::corpus::{expand_path, interleave, CorpusSpec};
use crate::packing::{Context, Packer};
use crate::reader::first_non_finite_row;
use crate::store::{file_info, write_shard, CorpusInfo, HookInfo, Manifest, ModelInfo, StoreDType};
use crate::{Error, Result};

/// One capture run: every field can be set in a TOML config and overridden on the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// The model, named as `--model` names it (`smollm2`, a path, a hub id).
    #[serde(default = "default_model")]
    pub model: String,
    /// Hook points to capture, e.g. `["blocks.15.hook_resid_post"]`.
    pub hooks: Vec<HookPoint>,
    /// The store directory to write (created; resumed when it holds an unfinished capture).
    pub output: String,
    /// Tokens per context, the separator that starts it included.
    #[serde(default = "default_context_length")]
    pub context_length: usize,
    /// Contexts per forward pass.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Stop once this many tokens are stored (whole contexts: it may store a few more).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// `f32`, `f16` or `bf16` on disk.
    #[serde(default)]
    pub dtype: StoreDType,
    /// Contexts per shard file.
    #[serde(default = "default_shard_contexts")]
    pub shard_contexts: usize,
    /// Also store the separator positions (each context's first token, and those between documents).
    #[serde(default)]
    pub include_separators: bool,
    /// The separator token's text; by default `<|endoftext|>`, or else the tokenizer's EOS.
    #[serde(default)]
    pub separator: Option<String>,
    /// The corpora, read in turn one document at a time.
    pub corpus: Vec<CorpusSpec>,
}

pub(crate) fn default_model() -> String {
    "smollm2".into()
}
pub(crate) fn default_context_length() -> usize {
    128
}
pub(crate) fn default_batch_size() -> usize {
    8
}
fn default_shard_contexts() -> usize {
    256
}

impl CaptureConfig {
    /// Checks everything that can be checked before the model runs.
    pub fn validate(&self, model: &Model) -> Result<()> {
        if self.output.trim().is_empty() {
            return Err(Error::config(
                "output",
                "is empty: name the store directory to write",
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::config(
                "max_tokens",
                "is 0: set at least 1, or leave it out to capture the whole corpus",
            ));
        }
        if self.hooks.is_empty() {
            return Err(Error::config(
                "hooks",
                "name at least one hook point, e.g. [\"blocks.15.hook_resid_post\"]",
            ));
        }
        for hook in &self.hooks {
            // Also refuses hooks the model lacks, and the pattern's key-wide rows.
            model.width(*hook)?;
        }
        let context = model.spec().context;
        if self.context_length < 2 || self.context_length > context {
            return Err(Error::config(
                "context_length",
                format!("is {}; it must be between 2 (the separator and one token) and the model's context, {context}", self.context_length),
            ));
        }
        if self.batch_size == 0 || self.shard_contexts == 0 {
            return Err(Error::config("batch_size / shard_contexts", "must be at least 1"));
        }
        if self.corpus.is_empty() {
            return Err(Error::config(
                "corpus",
                "name at least one corpus ([[corpus]] path = \"...\")",
            ));
        }
        let span_fields: Vec<&String> = self.corpus.iter().filter_map(|c| c.spans.as_ref()).collect();
        if span_fields.windows(2).any(|w| w[0] != w[1]) {
            return Err(Error::config(
                "corpus.spans",
                "all corpora with spans must use the same span field name",
            ));
        }
        Ok(())
    }

    pub(crate) fn separator_id(&self, model: &Model) -> Result<u32> {
        let tokenizer = &model.tokenizer;
        match &self.separator {
            Some(text) => tokenizer.token_to_id(text).ok_or_else(|| {
                Error::config("separator", format!("'{text}' is not a token of {}", model.name))
            }),
            None => tokenizer
                .token_to_id("<|endoftext|>")
                .or(tokenizer.eos())
                .ok_or_else(|| {
                    Error::config(
                        "separator",
                        "the tokenizer has no <|endoftext|> or EOS token: name one",
                    )
                }),
        }
    }

    /// Document label fields (in order of first mention) and the span field.
    fn label_fields(&self) -> (Vec<String>, Option<String>) {
        let mut fields: Vec<String> = Vec::new();
        for field in self.corpus.iter().flat_map(|c| &c.labels) {
            if !fields.contains(field) {
                fields.push(field.clone());
            }
        }
        (fields, self.corpus.iter().find_map(|c| c.spans.clone()))
    }
}

/// Runs a capture, or resumes one; returns the finished store's manifest.
pub fn capture(model: &Model, config: &CaptureConfig, progress: &mut dyn Progress) -> Result<Manifest> {
    config.validate(model)?;
    let dir = expand_path(&config.output);
    // One writer per store: a second capture into the same directory stops here.
    let _lock = loupe_util::DirLock::acquire(&dir, "loupe capture")?;
    prepare_output_dir(&dir)?;

    let corpus = config
        .corpus
        .iter()
        .map(|spec| {
            Ok(CorpusInfo {
                spec: spec.clone(),
                files: spec
                    .files()?
                    .iter()
                    .map(|f| file_info(f))
                    .collect::<Result<_>>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (doc_fields, span_field) = config.label_fields();
    let fresh = Manifest {
        loupe_version: env!("CARGO_PKG_VERSION").into(),
        model: ModelInfo {
            name: model.name.clone(),
            sha256: model.source.fingerprint()?,
            d_model: model.spec().d_model,
        },
        hooks: config
            .hooks
            .iter()
            .map(|&h| {
                Ok(HookInfo {
                    name: h,
                    width: model.width(h)?,
                })
            })
            .collect::<Result<_>>()?,
        dtype: config.dtype,
        context_length: config.context_length,
        separator_token: config.separator_id(model)?,
        include_separators: config.include_separators,
        corpus,
        labels: Default::default(),
        shards: Vec::new(),
        tokens: 0,
        contexts: 0,
        complete: false,
        imported_from: Vec::new(),
    };
    let mut manifest = match Manifest::read(&dir) {
        Ok(existing) => {
            if let Some(what) = existing.differs_from(&fresh) {
                return Err(Error::Mismatch {
                    path: dir.clone(),
                    message: format!("it holds a capture that differs in its {what}; write to a new directory (or delete this one)"),
                });
            }
            if existing.complete {
                progress.note(&format!(
                    "{} is already complete ({} tokens)",
                    dir.display(),
                    existing.tokens
                ));
                return Ok(existing);
            }
            progress.note(&format!(
                "resuming {} after {} contexts ({} tokens)",
                dir.display(),
                existing.contexts,
                existing.tokens
            ));
            existing
        }
        Err(_) if !dir.join(crate::store::MANIFEST).exists() => fresh,
        Err(e) => return Err(e),
    };

    let documents = interleave(&config.corpus)?;
    let mut packer = Packer::new(
        documents,
        &model.tokenizer,
        config.context_length,
        manifest.separator_token,
        doc_fields,
        span_field,
    );
    // Packing is deterministic: skip what the store already holds (label ids come out the same).
    for _ in 0..manifest.contexts {
        if packer.next().transpose()?.is_none() {
            break;
        }
    }
    progress.start("capture", config.max_tokens.unwrap_or(0), manifest.tokens);

    loop {
        if config.max_tokens.is_some_and(|max| manifest.tokens >= max) {
            break;
        }
        let mut contexts = Vec::with_capacity(config.shard_contexts);
        let mut tokens = manifest.tokens;
        while contexts.len() < config.shard_contexts && config.max_tokens.is_none_or(|max| tokens < max) {
            match packer.next().transpose()? {
                Some(context) => {
                    tokens += stored_positions(&context, config.include_separators).len() as u64;
                    contexts.push(context);
                }
                None => break,
            }
        }
        if contexts.is_empty() {
            break;
        }
        let first_context = manifest.contexts;
        let shard = run_shard(
            model,
            config,
            &contexts,
            first_context,
            &packer.vocab.fields,
            progress,
        )?;
        let Some(shard) = shard else {
            return Ok(manifest); // stopped on request; the store holds every finished shard
        };
        let index = manifest.shards.len();
        let info = write_shard(&dir, index, &shard.tensors, first_context, contexts.len() as u64)?;
        manifest.shards.push(info);
        manifest.tokens += shard.rows as u64;
        manifest.contexts += contexts.len() as u64;
        manifest.labels = packer.vocab.clone();
        manifest.write(&dir)?;
    }
    if manifest.tokens == 0 {
        return Err(Error::config(
            "corpus",
            "the corpus has no text: no tokens were captured",
        ));
    }
    manifest.complete = true;
    manifest.write(&dir)?;
    Ok(manifest)
}

/// Creates the output directory, checks that it can be written, and removes temp files an
/// interrupted capture left. A non-empty directory that is not a store is refused.
fn prepare_output_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create the output directory: {e}")))?;
    let has_manifest = dir.join(crate::store::MANIFEST).exists();
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list the output directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    for entry in &entries {
        if entry.file_name().is_some_and(|n| n == loupe_util::LOCK_FILE) {
            continue;
        }
        if entry.extension().is_some_and(|x| x == "tmp") {
            std::fs::remove_file(entry)
                .map_err(|e| Error::file(entry, format!("cannot remove a stale temp file: {e}")))?;
        } else if !has_manifest {
            return Err(Error::file(
                dir,
                "the output directory is not empty and holds no store: choose an empty or new directory",
            ));
        }
    }
    let probe = dir.join(".write-test.tmp");
    std::fs::write(&probe, b"")
        .map_err(|e| Error::file(dir, format!("the output directory is not writable: {e}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Positions of a context whose activations are stored.
fn stored_positions(context: &Context, include_separators: bool) -> Vec<usize> {
    (0..context.tokens.len())
        .filter(|&i| include_separators || !context.is_separator(i))
        .collect()
}

struct Shard {
    tensors: HashMap<String, Tensor>,
    rows: usize,
}

/// Runs the model over one shard's contexts; `None` if asked to stop.
fn run_shard(
    model: &Model,
    config: &CaptureConfig,
    contexts: &[Context],
    first_context: u64,
    label_fields: &[String],
    progress: &mut dyn Progress,
) -> Result<Option<Shard>> {
    let device = model.device();
    let mut activations: Vec<Vec<Tensor>> = vec![Vec::new(); config.hooks.len()];
    let (mut token_ids, mut doc_ids, mut context_ids, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut labels: Vec<Vec<u32>> = vec![Vec::new(); label_fields.len()];
    for (chunk_index, chunk) in contexts.chunks(config.batch_size).enumerate() {
        if progress.should_stop() {
            return Ok(None);
        }
        let sequences: Vec<Vec<u32>> = chunk.iter().map(|c| c.tokens.clone()).collect();
        let batch = Batch::left_padded(&sequences, model.pad_id(), device)?;
        let mut hooks = Hooks::new().capture_all(config.hooks.iter().copied());
        model.capture(&batch, &mut hooks)?;

        let mut rows = Vec::new();
        for (r, context) in chunk.iter().enumerate() {
            let pad = batch.pads()[r];
            let context_id = first_context + (chunk_index * config.batch_size + r) as u64;
            for i in stored_positions(context, config.include_separators) {
                rows.push((r * batch.columns() + pad + i) as u32);
                token_ids.push(context.tokens[i]);
                doc_ids.push(context.docs[i]);
                context_ids.push(context_id as u32);
                positions.push(i as u32);
                for (field, values) in labels.iter_mut().enumerate() {
                    values.push(context.labels[field][i]);
                }
            }
        }
        let n_rows = rows.len();
        let rows = Tensor::from_vec(rows, n_rows, device)?;
        for (h, hook) in config.hooks.iter().enumerate() {
            let captured = hooks.captured(*hook).expect("captured");
            // Per-head activations ([b, t, head, d_head]) are stored flattened, as SAEs read them.
            let (b, t) = (captured.dim(0)?, captured.dim(1)?);
            let width = captured.elem_count() / (b * t);
            let kept = captured.reshape((b * t, width))?.index_select(&rows, 0)?;
            let stored = kept.to_dtype(config.dtype.dtype())?;
            check_finite(&kept, &stored, *hook, &doc_ids[doc_ids.len() - n_rows..])?;
            activations[h].push(stored);
        }
        progress.advance(n_rows as u64);
    }

    let n = token_ids.len();
    let mut tensors = HashMap::new();
    for (hook, chunks) in config.hooks.iter().zip(activations) {
        tensors.insert(hook.to_string(), Tensor::cat(&chunks, 0)?);
    }
    for (name, values) in [
        ("token_ids", token_ids),
        ("doc_ids", doc_ids),
        ("context_ids", context_ids),
        ("positions", positions),
    ] {
        tensors.insert(name.to_string(), Tensor::from_vec(values, n, device)?);
    }
    for (field, values) in label_fields.iter().zip(labels) {
        tensors.insert(format!("labels.{field}"), Tensor::from_vec(values, n, device)?);
    }
    Ok(Some(Shard { tensors, rows: n }))
}

/// Refuses activations that are NaN or infinite, as the model computed them (`kept`, f32) or as
/// they would be stored (f16 overflows past 65504), naming the first document that produced one,
/// so that no store holds them.
fn check_finite(kept: &Tensor, stored: &Tensor, hook: HookPoint, doc_ids: &[u32]) -> Result<()> {
    let Some(row) = first_non_finite_row(&stored.to_dtype(candle_core::DType::F32)?)? else {
        return Ok(());
    };
    let why = if first_non_finite_row(kept)?.is_none() {
        "exceeds the range of f16 (65504): capture with dtype = \"bf16\" or \"f32\""
    } else {
        "is NaN or infinite as the model computed it: leave this document out (or, if every document \
         does this, suspect the model file)"
    };
    let doc = doc_ids.get(row).copied().unwrap_or(crate::packing::NO_DOC);
    Err(Error::config(
        "corpus",
        format!(
            "document {doc} (counting from 0 in the order the capture reads the corpora) gives an activation at {hook} that {why}; its shard was not written"
        ),
    ))
}
