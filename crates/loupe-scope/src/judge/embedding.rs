//! The Superscopes judge: cosine similarity between sentence embeddings of the source prompt and
//! the generation, with all-MiniLM-L6-v2 (a 6-layer BERT; the sentence embedding is the mean of
//! its last hidden states over the real tokens, as the model's `1_Pooling/config.json` says).
//! Checked against sentence-transformers in `tests/embedding.rs`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use loupe_util::Problems as _;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::{Error, Result};

/// The sentence-embedding model the judge uses by default, under the models directory.
pub const DEFAULT_EMBEDDER: &str = "all-MiniLM-L6-v2";

/// A sentence-embedding model (BERT with mean pooling, e.g. all-MiniLM-L6-v2) for the similarity judge.
pub struct Embedder {
    bert: BertModel,
    tokenizer: Tokenizer,
    normalize: bool,
    /// Sentences embedded per forward call.
    batch_size: usize,
}

/// The default embedder's directory: `$LOUPE_HOME/models/all-MiniLM-L6-v2`.
pub fn default_embedder_dir() -> PathBuf {
    loupe_model::models_dir().join(DEFAULT_EMBEDDER)
}

impl Embedder {
    /// Loads a sentence-transformers BERT directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`; `sentence_bert_config.json` for the length limit and `modules.json` for
    /// whether embeddings are normalized, both optional).
    pub fn load(dir: &Path) -> Result<Self> {
        let file = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::config(
                    "judge.embedder",
                    format!(
                        "{} is missing: the sentence-embedding model is not there. Fetch it with \
                         `scripts/fetch-models minilm`, or point judge.embedder at a \
                         sentence-transformers directory",
                        path.display()
                    ),
                ))
            }
        };
        let read_json = |path: &Path| -> Result<serde_json::Value> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::config("judge.embedder", format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| Error::config("judge.embedder", format!("{}: {e}", path.display())))
        };
        let config_path = file("config.json")?;
        let config: BertConfig = serde_json::from_value(read_json(&config_path)?)
            .map_err(|e| Error::config("judge.embedder", format!("{}: {e}", config_path.display())))?;
        let weights = file("model.safetensors")?;
        // SAFETY: memory-mapped read-only; loupe never writes model files.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }?;
        let bert = BertModel::load(vb, &config)
            .map_err(|e| Error::config("judge.embedder", format!("{}: {e}", weights.display())))?;

        let max_length = match dir.join("sentence_bert_config.json") {
            p if p.is_file() => read_json(&p)?["max_seq_length"].as_u64().unwrap_or(256) as usize,
            _ => 256,
        };
        let normalize = match dir.join("modules.json") {
            p if p.is_file() => read_json(&p)?.as_array().is_some_and(|modules| {
                modules
                    .iter()
                    .any(|m| m["type"].as_str().is_some_and(|t| t.ends_with("Normalize")))
            }),
            _ => false,
        };
        let tokenizer_path = file("tokenizer.json")?;
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::config("judge.embedder", format!("{}: {e}", tokenizer_path.display())))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::config("judge.embedder", e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        Ok(Embedder {
            bert,
            tokenizer,
            normalize,
            batch_size: 32,
        })
    }

    /// Token ids of `text` as the model reads it (special tokens added, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::config("judge.embedder", e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The sentence embedding of each text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::config("judge.embedder", e.to_string()))?;
        let rows = encodings.len();
        let columns = encodings[0].get_ids().len();
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let device = &Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, columns), device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, columns), device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, columns), device)?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?;
        // Mean over the real tokens: padding has mask 0.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mut mean = summed.broadcast_div(&counts)?;
        if self.normalize {
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean = mean.broadcast_div(&norm)?;
        }
        Ok(mean.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
