//! One config per scope run (`loupe scope --config configs/scope-entities.toml`): where the
//! source activations come from, what target prompt they are patched into, which amplifiers run,
//! and how generations are judged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A scope run (`loupe scope --config ...`), read from TOML with [`ScopeConfig::from_file`].
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
    /// The source prompts, layers, site and position the activations are taken from.
    pub source: SourceConfig,
    /// The prompt the activations are patched into (`[target]`).
    #[serde(default)]
    pub target: TargetConfig,
    /// Null prompts for `cfg`, by name: text, or "" for the BOS token alone.
    #[serde(default = "default_nulls")]
    pub null: BTreeMap<String, String>,
    /// The amplifiers to sweep, one `[[amplifier]]` section each.
    #[serde(rename = "amplifier")]
    pub amplifiers: Vec<AmplifierConfig>,
    /// Generation settings (`[generate]`).
    #[serde(default)]
    pub generate: GenerationConfig,
    /// Judge settings (`[judge]`).
    #[serde(default)]
    pub judge: JudgeConfig,
}

/// Where source activations are taken: which prompts, at which layers, site and token.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source prompts given inline.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// A file of source prompts, one per line (blank lines and `#` comments skipped). A line
    /// `subject<TAB>answer` also gives the answer an attribute-extraction task expects (several
    /// accepted answers separated by `|`): a generation is then correct when it contains one.
    #[serde(default)]
    pub prompts_file: Option<PathBuf>,
    /// Which activation: `resid_post` (the residual stream, Superscopes' hidden state), `mlp_out`
    /// (the MLP output) or `mlp_post` (the MLP neurons).
    #[serde(default = "default_site")]
    pub site: Site,
    /// The source layers swept, 0-based; each must be below the model's layer count.
    pub layers: Vec<usize>,
    /// The token whose activation is taken: `"last"` or an index into the prompt's tokens.
    #[serde(default)]
    pub position: TokenPosition,
}

/// The target prompt the source activations are patched into, and where.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `identity`, `entity_description` (docs/design.md, "Target prompts") or any other text, used as it is.
    #[serde(default = "default_target_prompt")]
    pub prompt: String,
    /// The layer patched: the source layer (`"source"`, default) or a fixed one.
    #[serde(default)]
    pub layer: TargetLayer,
    /// The target token patched: `"last"` (default) or an index into the target prompt's tokens.
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
    /// The residual stream after the block (`blocks.L.hook_resid_post`).
    ResidPost,
    /// The MLP's output (`blocks.L.hook_mlp_out`).
    MlpOut,
    /// The MLP's hidden neurons, after the activation function (`blocks.L.mlp.hook_post`).
    MlpPost,
}

impl Site {
    /// The hook point of this site at `layer`.
    pub fn hook(self, layer: usize) -> loupe_model::HookPoint {
        use loupe_model::HookPoint;
        match self {
            Site::ResidPost => HookPoint::ResidPost(layer),
            Site::MlpOut => HookPoint::MlpOut(layer),
            Site::MlpPost => HookPoint::MlpPost(layer),
        }
    }
}

/// A token of a prompt: its last, or one by index. Written `"last"` or a number.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TokenPosition {
    /// The prompt's last token.
    #[default]
    #[serde(with = "last")]
    Last,
    /// The token at this 0-based index.
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

/// The target layer patched: the source layer itself, or one fixed layer for every source layer.
/// Written `"source"` or a number.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TargetLayer {
    /// The same layer as the source activation's.
    #[default]
    #[serde(with = "same_as_source")]
    Source,
    /// This layer (0-based), whatever the source layer.
    Fixed(usize),
}

/// One `[[amplifier]]`: its `kind` and the fields of that kind (a field of another kind is an
/// error, not silently ignored). `values` lists what the amplifier sweeps; empty, its defaults.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AmplifierConfig {
    /// Plain patching (Patchscopes).
    None {},
    /// h·α (Superscopes' scaling); `values` are the αs (default 3, 6, 9, 12, 15).
    Scale {
        /// The values swept (α); empty for the default ones.
        #[serde(default)]
        values: Vec<f32>,
    },
    /// Classifier-free guidance against null prompts; `values` are the s (default 1, 2, 4, 8).
    Cfg {
        /// The values swept (s); empty for the default ones.
        #[serde(default)]
        values: Vec<f32>,
        /// Which null prompts (names in `[null]`); default all of them.
        #[serde(default)]
        nulls: Vec<String>,
    },
    /// An SAE latent of the feature book, scaled by α or clamped to c × its largest activation
    /// (`values`, default 4, 8).
    Sae {
        /// The feature book entry (an SAE latent) to amplify.
        feature: String,
        /// The values swept (α, or c with `mode = "clamp"`); empty for the default ones.
        #[serde(default)]
        values: Vec<f32>,
        /// `scale` (default) or `clamp`.
        #[serde(default)]
        mode: SaeAmplifierMode,
        /// `mode = "clamp"`: the latent's largest activation; default the one `loupe sae top`
        /// recorded in top/top.json beside the SAE.
        #[serde(default)]
        max_activation: Option<f32>,
    },
    /// A direction of the feature book (a probe, a mean difference, a vector): its component
    /// scaled by α, or α·σ added along it (`values`, default 4, 8).
    Probe {
        /// The feature book entry to amplify along.
        feature: String,
        /// The values swept (α); empty for the default ones.
        #[serde(default)]
        values: Vec<f32>,
        /// `scale` (default) or `add`.
        #[serde(default)]
        mode: ProbeAmplifierMode,
        /// `mode = "add"`: σ, the typical norm of the activation; default the mean norm of the
        /// source activations at the feature's hook.
        #[serde(default)]
        sigma: Option<f32>,
    },
}

/// How an `sae` amplifier changes its latent.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SaeAmplifierMode {
    /// Set f_i' = α·f_i.
    #[default]
    Scale,
    /// Set f_i' = c·max_i, max_i the latent's largest activation.
    Clamp,
}

/// How a `probe` amplifier moves along its direction.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProbeAmplifierMode {
    /// Scale the component of h along the direction by α.
    #[default]
    Scale,
    /// Add α·σ along the direction.
    Add,
}

impl AmplifierConfig {
    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            AmplifierConfig::None {} => "none",
            AmplifierConfig::Scale { .. } => "scale",
            AmplifierConfig::Cfg { .. } => "cfg",
            AmplifierConfig::Sae { .. } => "sae",
            AmplifierConfig::Probe { .. } => "probe",
        }
    }

    /// The swept values, or `default` when the config gives none.
    pub fn values_or(&self, default: &[f32]) -> Vec<f32> {
        let values = match self {
            AmplifierConfig::None {} => return Vec::new(),
            AmplifierConfig::Scale { values }
            | AmplifierConfig::Cfg { values, .. }
            | AmplifierConfig::Sae { values, .. }
            | AmplifierConfig::Probe { values, .. } => values,
        };
        if values.is_empty() {
            default.to_vec()
        } else {
            values.clone()
        }
    }

    /// The feature of the book this amplifier names (`sae` and `probe`).
    pub fn feature(&self) -> Option<&str> {
        match self {
            AmplifierConfig::Sae { feature, .. } | AmplifierConfig::Probe { feature, .. } => Some(feature),
            _ => None,
        }
    }

    /// A field set for a mode that does not use it: (field, the mode it belongs to).
    pub fn misplaced_field(&self) -> Option<(&'static str, &'static str)> {
        match self {
            AmplifierConfig::Sae {
                mode: SaeAmplifierMode::Scale,
                max_activation: Some(_),
                ..
            } => Some(("max_activation", "mode = \"clamp\"")),
            AmplifierConfig::Probe {
                mode: ProbeAmplifierMode::Scale,
                sigma: Some(_),
                ..
            } => Some(("sigma", "mode = \"add\"")),
            _ => None,
        }
    }
}

/// Which amplifier kinds each kind-specific field belongs to, for errors about a misplaced one.
pub const AMPLIFIER_FIELD_KINDS: &[(&str, &str)] = &[
    ("values", "scale, cfg, sae and probe"),
    ("nulls", "cfg"),
    ("feature", "sae and probe"),
    ("mode", "sae and probe"),
    ("max_activation", "sae (with mode = \"clamp\")"),
    ("sigma", "probe (with mode = \"add\")"),
];

/// How the patched target prompt generates (`[generate]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    /// Tokens generated per patched row (greedy), at most.
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

/// How generations are judged (`[judge]`).
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
    /// Judge fluency too: the unpatched model's surprisal of each generation. It costs one more
    /// batched pass over every row's generated tokens, about as long as generating them (the main
    /// job's sweep took 617 s with it, 319 s without).
    #[serde(default = "default_fluency")]
    pub fluency: bool,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            threshold: default_threshold(),
            embedder: None,
            fluency: default_fluency(),
        }
    }
}

fn default_fluency() -> bool {
    true
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
        let config: ScopeConfig = loupe_util::config::load(Some(path), overrides)
            .map_err(|e| loupe_util::config::name_owner(e, AMPLIFIER_FIELD_KINDS))?;
        for (i, amplifier) in config.amplifiers.iter().enumerate() {
            if let Some((field, owner)) = amplifier.misplaced_field() {
                return Err(Error::config(
                    &format!("amplifier[{i}] ({}).{field}", amplifier.kind()),
                    format!("is used only with {owner}; set that mode or remove the field"),
                ));
            }
        }
        Ok(config)
    }

    /// The source prompts: inline ones, then the file's lines.
    pub fn source_prompts(&self) -> Result<Vec<String>> {
        Ok(self
            .source_prompts_with_answers()?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// The source prompts, each with the answers its `prompts_file` line gives (none for inline
    /// prompts and lines without a tab).
    pub fn source_prompts_with_answers(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut prompts: Vec<(String, Vec<String>)> = self
            .source
            .prompts
            .iter()
            .map(|p| (p.clone(), Vec::new()))
            .collect();
        if let Some(path) = &self.source.prompts_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::config(
                    "source.prompts_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (prompt, answers) = match line.split_once('\t') {
                    None => (line, Vec::new()),
                    Some((prompt, answers)) => {
                        let answers: Vec<String> = answers
                            .split('|')
                            .map(str::trim)
                            .filter(|a| !a.is_empty())
                            .map(str::to_string)
                            .collect();
                        if answers.is_empty() {
                            return Err(Error::config(
                                &format!("{} line {}", path.display(), number + 1),
                                "nothing after the tab: give the expected answer, or remove the tab",
                            ));
                        }
                        (prompt.trim(), answers)
                    }
                };
                prompts.push((prompt.to_string(), answers));
            }
        }
        if prompts.is_empty() {
            return Err(Error::config(
                "source.prompts",
                "no source prompts: give prompts = [...] or prompts_file = \"entities.txt\"",
            ));
        }
        if let Some(i) = prompts.iter().position(|(p, _)| p.trim().is_empty()) {
            return Err(Error::config(
                &format!("source.prompts[{i}]"),
                "the prompt is empty; give it some text or remove it",
            ));
        }
        Ok(prompts)
    }
}
