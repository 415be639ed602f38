//! One config per scope run (`loupe scope --config configs/scope-entities.toml`): where the
//! source activations come from, what target prompt they are patched into, which amplifiers run,
//! and how generations are judged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// A registered model name, a GGUF file or a model directory.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where results (`results.jsonl`) and reports go.
    pub out: PathBuf,
    /// A feature book, needed when an amplifier names a feature.
    #[serde(default)]
    pub features: Option<PathBuf>,
    pub source: SourceConfig,
    #[serde(default)]
    pub target: TargetConfig,
    /// Null prompts for `cfg`, by name: text, or "" for the BOS token alone.
    #[serde(default = "default_nulls")]
    pub null: BTreeMap<String, String>,
    #[serde(rename = "amplifier")]
    pub amplifiers: Vec<AmplifierConfig>,
    #[serde(default)]
    pub generate: GenerationConfig,
    #[serde(default)]
    pub judge: JudgeConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source prompts given inline.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// A file of source prompts, one per line (blank lines and `#` comments skipped).
    #[serde(default)]
    pub prompts_file: Option<PathBuf>,
    /// Which activation: `resid_post` (the residual stream, Superscopes' hidden state), `mlp_out`
    /// (the MLP output) or `mlp_post` (the MLP neurons).
    #[serde(default = "default_site")]
    pub site: Site,
    pub layers: Vec<usize>,
    /// The token whose activation is taken: `"last"` or an index into the prompt's tokens.
    #[serde(default)]
    pub position: TokenPosition,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `identity`, `entity_description` (docs/design.md, "Target prompts") or any other text, used as it is.
    #[serde(default = "default_target_prompt")]
    pub prompt: String,
    /// The layer patched: the source layer (`"source"`, default) or a fixed one.
    #[serde(default)]
    pub layer: TargetLayer,
    #[serde(default)]
    pub position: TokenPosition,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            prompt: default_target_prompt(),
            layer: TargetLayer::default(),
            position: TokenPosition::default(),
        }
    }
}

/// The activation patched: the same kind of hook at the source and the target layer.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    ResidPost,
    MlpOut,
    MlpPost,
}

impl Site {
    pub fn hook(self, layer: usize) -> loupe_model::HookPoint {
        use loupe_model::HookPoint;
        match self {
            Site::ResidPost => HookPoint::ResidPost(layer),
            Site::MlpOut => HookPoint::MlpOut(layer),
            Site::MlpPost => HookPoint::MlpPost(layer),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TokenPosition {
    #[default]
    #[serde(with = "last")]
    Last,
    Index(usize),
}

impl TokenPosition {
    /// The index in a prompt of `len` tokens, or an error naming `field`.
    pub fn resolve(self, len: usize, field: &str, prompt: &str) -> Result<usize> {
        match self {
            TokenPosition::Last => Ok(len - 1),
            TokenPosition::Index(i) if i < len => Ok(i),
            TokenPosition::Index(i) => Err(Error::config(
                field,
                format!(
                    "position {i} is outside the prompt {prompt:?}, which has {len} tokens \
                     (positions 0 to {}); use \"last\" or a smaller index",
                    len - 1
                ),
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TargetLayer {
    #[default]
    #[serde(with = "same_as_source")]
    Source,
    Fixed(usize),
}

/// One `[[amplifier]]`: a kind and the values it sweeps.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AmplifierConfig {
    /// `none`, `scale`, `cfg`, `sae` or `probe`.
    pub kind: String,
    /// α for `scale`, `sae` and `probe`, s for `cfg`, c for `sae` with `mode = "clamp"`.
    #[serde(default)]
    pub values: Vec<f32>,
    /// `sae` and `probe`: the name of a feature in the feature book.
    #[serde(default)]
    pub feature: Option<String>,
    /// `sae`: `scale` (default) or `clamp`; `probe`: `scale` (default) or `add`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `sae` with `mode = "clamp"`: the latent's largest activation (`loupe sae top` shows it).
    #[serde(default)]
    pub max_activation: Option<f32>,
    /// `probe` with `mode = "add"`: σ, the typical norm of the activation; default the norm of
    /// the source activation itself.
    #[serde(default)]
    pub sigma: Option<f32>,
    /// `cfg`: which null prompts (names in `[null]`); default all of them.
    #[serde(default)]
    pub nulls: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// The most rows generated together in one batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: default_max_new_tokens(),
            batch_rows: default_batch_rows(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// A generation counts as interpreting its source when its embedding's cosine similarity
    /// with the source prompt's exceeds this (Superscopes: 0.3).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// The sentence-embedding model directory; default all-MiniLM-L6-v2 in the models directory
    /// (`scripts/fetch-models minilm`).
    #[serde(default)]
    pub embedder: Option<PathBuf>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            threshold: default_threshold(),
            embedder: None,
        }
    }
}

fn default_model() -> String {
    "smollm2".into()
}
fn default_site() -> Site {
    Site::ResidPost
}
fn default_target_prompt() -> String {
    "entity_description".into()
}
fn default_nulls() -> BTreeMap<String, String> {
    BTreeMap::from([("bos".to_string(), String::new())])
}
fn default_max_new_tokens() -> usize {
    10
}
fn default_batch_rows() -> usize {
    128
}
fn default_threshold() -> f32 {
    0.3
}

/// Serde for a unit variant written as one fixed string.
macro_rules! fixed_string {
    ($module:ident, $text:literal) => {
        mod $module {
            pub fn serialize<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($text)
            }
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                if text == $text {
                    Ok(())
                } else {
                    Err(serde::de::Error::custom(format!(
                        "expected \"{}\" or a number, got \"{text}\"",
                        $text
                    )))
                }
            }
        }
    };
}
fixed_string!(last, "last");
fixed_string!(same_as_source, "source");

impl ScopeConfig {
    /// Reads a config file with `overrides` (`field=value`, dotted for a section's field:
    /// `generate.max_new_tokens=20`) applied on top.
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        Ok(loupe_io::config::load(Some(path), overrides)?)
    }

    /// The source prompts: inline ones, then the file's lines.
    pub fn source_prompts(&self) -> Result<Vec<String>> {
        let mut prompts = self.source.prompts.clone();
        if let Some(path) = &self.source.prompts_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::config(
                    "source.prompts_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            prompts.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if prompts.is_empty() {
            return Err(Error::config(
                "source.prompts",
                "no source prompts: give prompts = [...] or prompts_file = \"entities.txt\"",
            ));
        }
        if let Some(i) = prompts.iter().position(|p| p.trim().is_empty()) {
            return Err(Error::config(
                &format!("source.prompts[{i}]"),
                "the prompt is empty; give it some text or remove it",
            ));
        }
        Ok(prompts)
    }
}
