//! One config per steering run (`loupe steer --config configs/steer-main.toml`): the neutral
//! instructions, the layer steered, and per concept the ways of naming it that are compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::config::{SaeAmplifierMode, Site};
use crate::{Error, Result};

/// A steering run, read from TOML with [`SteerConfig::from_file`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SteerConfig {
    /// A registered model name, a GGUF file or a model directory.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where results (`results.jsonl`) and reports go.
    pub out: PathBuf,
    /// A feature book, needed when a method names a feature.
    #[serde(default)]
    pub features: Option<PathBuf>,
    /// Instructions given inline.
    #[serde(default)]
    pub instructions: Vec<String>,
    /// A file of instructions, one per line (blank lines and `#` comments skipped).
    #[serde(default)]
    pub instructions_file: Option<PathBuf>,
    /// Whether each instruction is laid out as a user turn of the model's chat template (default
    /// true; a model without a template then needs `chat = false`).
    #[serde(default = "yes")]
    pub chat: bool,
    /// The layer steered, 0-based.
    pub layer: usize,
    /// The activation steered at that layer (`resid_post`, `mlp_out` or `mlp_post`).
    #[serde(default = "default_site")]
    pub site: Site,
    /// Null prompts for `cfg`, by name: text, or "" for the BOS token alone.
    #[serde(default = "default_nulls")]
    pub null: BTreeMap<String, String>,
    /// Seeds the split of the instructions into selection halves, and the bootstrap.
    #[serde(default)]
    pub seed: u64,
    /// Generation settings (`[generate]`).
    #[serde(default)]
    pub generate: SteerGeneration,
    /// The sentence-embedding model of the judges (default: all-MiniLM-L6-v2 in the loupe cache).
    #[serde(default)]
    pub embedder: Option<PathBuf>,
    /// The concepts steered towards, one `[[concept]]` each.
    #[serde(rename = "concept")]
    pub concepts: Vec<ConceptConfig>,
}

/// How answers are generated (greedy: a run is deterministic).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SteerGeneration {
    /// New tokens per answer at most.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Answers generated together in one batch.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

impl Default for SteerGeneration {
    fn default() -> Self {
        SteerGeneration {
            max_new_tokens: default_max_new_tokens(),
            batch_rows: default_batch_rows(),
        }
    }
}

/// One concept: how it is judged, and every way of steering towards it that is compared.
/// Unsteered answers (`none`) and the prompting baseline are always generated.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConceptConfig {
    /// The concept's name, as reports show it.
    pub name: String,
    /// A sentence describing the concept: an answer's concept score is its embedding's cosine
    /// similarity to this one's.
    pub description: String,
    /// Words whose appearance (whole words, ignoring case) counts as naming the concept.
    #[serde(default)]
    pub words: Vec<String>,
    /// The prompting baseline's sentence, appended to each instruction (default
    /// `"Mention <name>."`).
    #[serde(default)]
    pub prompting: Option<String>,
    /// `cfg`: prompts about the concept; their mean activation (last token) is the concept's.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// The steering methods, one `[[concept.method]]` each.
    #[serde(default, rename = "method")]
    pub methods: Vec<MethodConfig>,
}

/// One `[[concept.method]]`: its `kind` and the strengths it sweeps (`values`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MethodConfig {
    /// An SAE latent of the feature book at every position: its activation scaled by α or
    /// clamped to c × its largest activation.
    Sae {
        /// The feature book entry (an SAE latent).
        feature: String,
        /// `scale` or `clamp` (default).
        #[serde(default = "clamp")]
        mode: SaeAmplifierMode,
        /// α or c.
        values: Vec<f32>,
        /// `clamp`: the latent's largest activation; default the one `loupe sae top` recorded.
        #[serde(default)]
        max_activation: Option<f32>,
    },
    /// A direction of the feature book (a probe, a mean difference, a vector): α·σ·ŵ added at
    /// every position, σ the typical norm of the steered activation.
    Probe {
        /// The feature book entry.
        feature: String,
        /// The α, in units of σ.
        values: Vec<f32>,
        /// σ; default the mean norm of the instructions' last-token activations.
        #[serde(default)]
        sigma: Option<f32>,
    },
    /// Classifier-free guidance against a null prompt: `s·(h_concept − h_null)` added at every
    /// position, the shift `cfg` s gives the concept's own activation when patching.
    Cfg {
        /// The null prompt's name in `[null]` (default `bos`).
        #[serde(default = "default_null_name")]
        null: String,
        /// The s.
        values: Vec<f32>,
    },
}

impl MethodConfig {
    /// The method's `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            MethodConfig::Sae { .. } => "sae",
            MethodConfig::Probe { .. } => "probe",
            MethodConfig::Cfg { .. } => "cfg",
        }
    }

    /// The strengths swept.
    pub fn values(&self) -> &[f32] {
        match self {
            MethodConfig::Sae { values, .. }
            | MethodConfig::Probe { values, .. }
            | MethodConfig::Cfg { values, .. } => values,
        }
    }

    /// The feature book entry the method names, if any.
    pub fn feature(&self) -> Option<&str> {
        match self {
            MethodConfig::Sae { feature, .. } | MethodConfig::Probe { feature, .. } => Some(feature),
            MethodConfig::Cfg { .. } => None,
        }
    }
}

impl ConceptConfig {
    /// The sentence the prompting baseline appends to each instruction.
    pub fn prompting_sentence(&self) -> String {
        self.prompting
            .clone()
            .unwrap_or_else(|| format!("Mention {}.", self.name))
    }
}

impl SteerConfig {
    /// Reads a config file with `overrides` (`field=value`, dotted for a section's field:
    /// `generate.max_new_tokens=20`) applied on top, and checks what can be checked without the
    /// model.
    pub fn from_file(path: &Path, overrides: &[String]) -> Result<Self> {
        let config: SteerConfig = loupe_util::config::load(Some(path), overrides)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.concepts.is_empty() {
            return Err(Error::config(
                "concept",
                "no concepts: add a [[concept]] with a name, a description and its [[concept.method]]s",
            ));
        }
        if self.generate.max_new_tokens == 0 || self.generate.batch_rows == 0 {
            return Err(Error::config(
                "generate",
                "max_new_tokens and batch_rows must be at least 1",
            ));
        }
        for (c, concept) in self.concepts.iter().enumerate() {
            let at = |field: &str| format!("concept[{c}] '{}'.{field}", concept.name);
            if concept.name.trim().is_empty() {
                return Err(Error::config(
                    &format!("concept[{c}].name"),
                    "give the concept a name",
                ));
            }
            if self.concepts[..c].iter().any(|other| other.name == concept.name) {
                return Err(Error::config(
                    &at("name"),
                    "is used by two concepts; names must differ",
                ));
            }
            if concept.description.trim().is_empty() {
                return Err(Error::config(
                    &at("description"),
                    "is empty; describe the concept in a sentence (the concept score compares answers with it)",
                ));
            }
            for (m, method) in concept.methods.iter().enumerate() {
                let field = at(&format!("method[{m}] ({}).values", method.kind()));
                if method.values().is_empty() {
                    return Err(Error::config(
                        &field,
                        "give at least one strength, e.g. values = [2, 4, 8]",
                    ));
                }
                if let Some(bad) = method.values().iter().find(|v| !v.is_finite()) {
                    return Err(Error::config(&field, format!("{bad} is not a finite number")));
                }
                if let MethodConfig::Cfg { null, .. } = method {
                    if !self.null.contains_key(null) {
                        return Err(Error::config(
                            &at(&format!("method[{m}] (cfg).null")),
                            format!(
                                "no null prompt named '{null}'; the [null] table has {:?}",
                                self.null.keys().collect::<Vec<_>>()
                            ),
                        ));
                    }
                    if concept.prompts.is_empty() {
                        return Err(Error::config(
                            &at("prompts"),
                            "cfg steers by the concept's own activation: give prompts about the concept, \
                             e.g. prompts = [\"Marie Curie\", \"Albert Einstein\"]",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The instructions: inline ones, then the file's lines.
    pub fn instruction_list(&self) -> Result<Vec<String>> {
        let mut instructions = self.instructions.clone();
        if let Some(path) = &self.instructions_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::config(
                    "instructions_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            instructions.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if let Some(i) = instructions.iter().position(|p| p.trim().is_empty()) {
            return Err(Error::config(
                &format!("instructions[{i}]"),
                "the instruction is empty; give it some text or remove it",
            ));
        }
        if instructions.len() < 4 {
            return Err(Error::config(
                "instructions",
                format!(
                    "{} instructions: the study chooses each strength on half of them and reports it on the \
                     other half, so give at least 4 (instructions = [...] or instructions_file)",
                    instructions.len()
                ),
            ));
        }
        Ok(instructions)
    }
}

fn yes() -> bool {
    true
}
fn clamp() -> SaeAmplifierMode {
    SaeAmplifierMode::Clamp
}
fn default_model() -> String {
    "smollm2".into()
}
fn default_site() -> Site {
    Site::ResidPost
}
fn default_nulls() -> BTreeMap<String, String> {
    BTreeMap::from([("bos".to_string(), String::new())])
}
fn default_null_name() -> String {
    "bos".into()
}
fn default_max_new_tokens() -> usize {
    32
}
fn default_batch_rows() -> usize {
    48
}
