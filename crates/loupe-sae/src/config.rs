//! One config struct per training run (as SAELens has), read from TOML with every field
//! overridable from the command line. Fields that only some architectures use are optional and
//! each architecture checks that it has what it needs before training starts.

use std::path::PathBuf;

use loupe_model::HookPoint;
use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::arch::ArchitectureName;
use crate::source::SourceKind;
use crate::{Error, Result};
use loupe_data::stream::StreamConfig;

/// One SAE training run (`loupe sae train --config ...`): data, architecture, optimiser, schedules
/// and evaluation. Read from TOML with [`TrainConfig::from_toml`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the activations come from: `store` (the default; the store `store` names) or
    /// `model` (computed by the model over the corpus of `[stream]` as training goes, with no
    /// store; for corpora larger than the disk).
    #[serde(default, skip_serializing_if = "is_store")]
    pub source: SourceKind,
    /// The activation store to train on (`source = "store"`).
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub store: PathBuf,
    /// The model and corpus to stream from (`source = "model"`): a capture config's `model`,
    /// `context_length`, `batch_size` (contexts per forward pass), `max_tokens` (per pass),
    /// `include_separators`, `separator` and `[[stream.corpus]]`, without a store. With it, the
    /// held-out documents (when `held_out` > 0) are the corpus's first ones, those of its first
    /// `eval_tokens` tokens, and a stopped run resumes at its position in the corpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamConfig>,
    /// The hook point inside the store: what the SAE reads (and, unless `target_hook` is set,
    /// reconstructs).
    pub hook: HookPoint,
    /// Makes the run a transcoder (Dunefsky et al. 2024): it reads `hook` and reconstructs this
    /// other hook of the same tokens, e.g. `blocks.L.ln2.hook_normalized` →
    /// `blocks.L.hook_mlp_out` (the MLP's input and output). The store must hold both, equally
    /// wide. Any architecture can be a transcoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hook: Option<HookPoint>,
    /// Adds a linear skip term to a transcoder, x̂ = dictionary(x) + x · W_skipᵀ, with W_skip
    /// learned from zeros (a skip transcoder, as sparsify trains).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_connection: bool,
    /// The run directory: SAELens files, the trainer checkpoint and TensorBoard event files.
    pub output: PathBuf,
    /// `relu`, `topk`, `batchtopk`, `jumprelu` or `matryoshka`.
    pub architecture: ArchitectureName,
    /// Latents per input dimension (d_sae = expansion × d_in), unless `d_sae` is given.
    #[serde(default = "default_expansion")]
    pub expansion: usize,
    /// Number of latents; overrides `expansion` when given.
    #[serde(default)]
    pub d_sae: Option<usize>,

    /// Active latents per token (topk, batchtopk, matryoshka).
    #[serde(default)]
    pub k: Option<usize>,
    /// Sparsity coefficient λ of the decoder-norm-weighted L1 penalty (relu).
    #[serde(default)]
    pub l1_coefficient: Option<f64>,
    /// Fraction of training over which the sparsity penalty (relu's L1, jumprelu's L0) rises
    /// linearly from 0.
    #[serde(default = "default_sparsity_warmup")]
    pub sparsity_warmup_fraction: f64,
    /// The L0 the sparsity penalty steers towards (jumprelu).
    #[serde(default)]
    pub target_l0: Option<f64>,
    /// Weight of the L0 penalty λ·(L0/target − 1)² (jumprelu).
    #[serde(default = "default_l0_coefficient")]
    pub l0_coefficient: f64,
    /// Width ε of the rectangle kernel of the straight-through estimator (jumprelu), in units of
    /// the normalised activations.
    #[serde(default = "default_bandwidth")]
    pub threshold_bandwidth: f64,
    /// Every latent's threshold at the start (jumprelu).
    #[serde(default = "default_initial_threshold")]
    pub initial_threshold: f64,
    /// Rate of the running estimate of the inference threshold (batchtopk, matryoshka).
    #[serde(default = "default_threshold_lr")]
    pub threshold_lr: f64,
    /// Sizes of the nested latent groups (matryoshka), in order, adding up to d_sae: each
    /// prefix of groups learns to reconstruct the input on its own.
    #[serde(default)]
    pub matryoshka_groups: Option<Vec<usize>>,
    /// Dead latents the AuxK loss revives per token (topk, batchtopk, matryoshka); default d_in / 2.
    #[serde(default)]
    pub aux_k: Option<usize>,
    /// Weight of the AuxK loss (topk, batchtopk, matryoshka).
    #[serde(default = "default_aux_coefficient")]
    pub aux_coefficient: f64,
    /// Subtract b_dec from the input before encoding; default per architecture (false for the
    /// April 2024 ReLU recipe, true otherwise).
    #[serde(default)]
    pub apply_b_dec_to_input: Option<bool>,

    /// Tokens to train on (steps = train_tokens / batch_size); the store is read again as needed.
    pub train_tokens: u64,
    /// Activations (tokens) per optimizer step.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Peak learning rate (see [`TrainConfig::lr_at`] for the schedule).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Steps over which the learning rate rises linearly to `lr`.
    #[serde(default = "default_lr_warmup_steps")]
    pub lr_warmup_steps: u64,
    /// Fraction of training at the end over which the learning rate falls linearly to 0.
    #[serde(default = "default_lr_decay_fraction")]
    pub lr_decay_fraction: f64,
    /// Adam's first-moment decay rate.
    #[serde(default = "default_beta1")]
    pub adam_beta1: f64,
    /// Adam's second-moment decay rate.
    #[serde(default = "default_beta2")]
    pub adam_beta2: f64,
    /// Adam's epsilon.
    #[serde(default = "default_eps")]
    pub adam_eps: f64,
    /// Largest global gradient norm; larger gradients are scaled down to it. 0 turns it off.
    #[serde(default = "default_grad_clip")]
    pub grad_clip: f64,
    /// Norm of each decoder row at initialisation (the encoder starts as the same matrix).
    #[serde(default = "default_decoder_init_norm")]
    pub decoder_init_norm: f64,
    /// `geometric_median`, `mean` or `zeros`.
    #[serde(default)]
    pub b_dec_init: BDecInit,
    /// Scale activations to a mean squared norm of d_in during training (folded into the weights
    /// on save).
    #[serde(default = "default_true")]
    pub normalize_activations: bool,
    /// Leave out of training (and of evaluation, and of splicing) activations whose norm is more
    /// than this many times the median norm: the few "massive activation" tokens of some models
    /// (in SmolLM2's layer 15, 0.1% of tokens carry norms up to 60× the median, on one dimension,
    /// and would otherwise hold 95% of the variance). 0 keeps every activation.
    #[serde(default = "default_max_norm_factor")]
    pub max_norm_factor: f64,
    /// Tokens used to estimate the normalisation and b_dec.
    #[serde(default = "default_init_tokens")]
    pub init_tokens: usize,

    /// A latent that has not fired in this many training tokens counts as dead.
    #[serde(default = "default_dead_window")]
    pub dead_window_tokens: u64,
    /// A latent firing on more than this fraction of tokens counts as dense.
    #[serde(default = "default_dense_threshold")]
    pub dense_threshold: f64,

    /// Fraction of documents held out for evaluation.
    #[serde(default = "default_held_out")]
    pub held_out: f64,
    /// Rows kept in the shuffle buffer.
    #[serde(default = "default_shuffle_buffer")]
    pub shuffle_buffer: usize,
    /// Seeds the document split, the shuffle of each pass, the initial weights and the samples.
    #[serde(default)]
    pub seed: u64,
    /// Seeds the document split instead of `seed`, when set: what `loupe sae train --seeds` sets,
    /// so that runs of different seeds train and are evaluated on the same documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,

    /// Steps between evaluations on held-out activations (metrics and the density histogram).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Held-out tokens per evaluation.
    #[serde(default = "default_eval_tokens")]
    pub eval_tokens: usize,
    /// Steps between checkpoints.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Steps between progress and loss reports.
    #[serde(default = "default_log_every")]
    pub log_every: u64,
}

fn is_store(source: &SourceKind) -> bool {
    *source == SourceKind::Store
}
fn is_empty_path(path: &std::path::Path) -> bool {
    path.as_os_str().is_empty()
}

fn default_expansion() -> usize {
    8
}
fn default_sparsity_warmup() -> f64 {
    0.05
}
fn default_l0_coefficient() -> f64 {
    10.0
}
fn default_bandwidth() -> f64 {
    0.05
}
fn default_initial_threshold() -> f64 {
    0.5
}
fn default_threshold_lr() -> f64 {
    0.01
}
fn default_aux_coefficient() -> f64 {
    1.0 / 32.0
}
fn default_batch_size() -> usize {
    4096
}
fn default_lr() -> f64 {
    4e-4
}
fn default_lr_warmup_steps() -> u64 {
    20
}
fn default_lr_decay_fraction() -> f64 {
    0.2
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_grad_clip() -> f64 {
    1.0
}
fn default_decoder_init_norm() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_max_norm_factor() -> f64 {
    10.0
}
fn default_init_tokens() -> usize {
    16384
}
fn default_dead_window() -> u64 {
    1_000_000
}
fn default_dense_threshold() -> f64 {
    0.1
}
fn default_held_out() -> f64 {
    0.05
}
fn default_shuffle_buffer() -> usize {
    131_072
}
fn default_eval_every() -> u64 {
    50
}
fn default_eval_tokens() -> usize {
    16384
}
fn default_checkpoint_every() -> u64 {
    100
}
fn default_log_every() -> u64 {
    1
}

/// How b_dec starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// The geometric median of the `init_tokens` sample (after normalisation and the norm cutoff).
    #[default]
    GeometricMedian,
    /// The mean of that sample.
    Mean,
    /// All zeros.
    Zeros,
}

impl TrainConfig {
    /// The seed of the held-out document split: `split_seed`, else `seed`.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }

    /// Parses a TOML config, with `overrides` (`field=value`, the value in TOML syntax; a bare
    /// word is taken as a string) applied on top. `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let config: TrainConfig = loupe_util::config::parse(text, origin, overrides)?;
        // Fields with defaults cannot tell "set" from "left out" once parsed: ask the text.
        let written: toml::Table = loupe_util::config::parse(text, origin, overrides)?;
        config.checked(&written)
    }

    /// A run's config from the TOML table a config of several runs builds for it (its shared
    /// settings with the run's own on top); `origin` names the run in errors.
    pub(crate) fn from_table(table: &toml::Table, origin: &str) -> Result<Self> {
        let config: TrainConfig = loupe_util::config::from_table(table.clone(), origin)?;
        config.checked(table)
    }

    /// The config, once valid, and with no field set in `written` that its architecture does
    /// not use.
    fn checked(self, written: &toml::Table) -> Result<Self> {
        self.validate()?;
        self.check_architecture_fields(&|field| written.contains_key(field))?;
        Ok(self)
    }

    /// Checks what can be checked without the store.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(Error::config(
                    field,
                    format!("must be a positive number, not {v}"),
                ))
            }
        };
        let in_range =
            |field: &str, v: f64, range: std::ops::RangeInclusive<f64>, open_end: bool, what: &str| {
                let inside = range.contains(&v) && !(open_end && v == *range.end());
                if inside {
                    Ok(())
                } else {
                    Err(Error::config(field, format!("is {v}; it must be {what}")))
                }
            };
        if self.output.as_os_str().is_empty() {
            return Err(Error::config(
                "output",
                "is empty: name the run directory to write",
            ));
        }
        self.check_source_fields()?;
        positive("lr", self.lr)?;
        positive("adam_eps", self.adam_eps)?;
        // β = 1 makes Adam's bias correction divide by zero on the first step.
        in_range(
            "adam_beta1",
            self.adam_beta1,
            0.0..=1.0,
            true,
            "at least 0 and below 1 (0.9 is usual)",
        )?;
        in_range(
            "adam_beta2",
            self.adam_beta2,
            0.0..=1.0,
            true,
            "at least 0 and below 1 (0.999 is usual)",
        )?;
        in_range(
            "grad_clip",
            self.grad_clip,
            0.0..=f64::MAX,
            false,
            "0 (off) or a positive norm",
        )?;
        in_range(
            "max_norm_factor",
            self.max_norm_factor,
            0.0..=f64::MAX,
            false,
            "0 (keep every activation) or a positive factor",
        )?;
        in_range(
            "sparsity_warmup_fraction",
            self.sparsity_warmup_fraction,
            0.0..=1.0,
            false,
            "a fraction of training between 0 and 1",
        )?;
        in_range(
            "dense_threshold",
            self.dense_threshold,
            0.0..=1.0,
            false,
            "a fraction of tokens between 0 and 1",
        )?;
        if self.d_sae == Some(0) || (self.d_sae.is_none() && self.expansion == 0) {
            return Err(Error::config(
                if self.d_sae.is_some() {
                    "d_sae"
                } else {
                    "expansion"
                },
                "is 0: an SAE needs at least one latent (expansion 8 is usual)",
            ));
        }
        if self.init_tokens == 0 {
            return Err(Error::config(
                "init_tokens",
                "is 0: the normalisation and b_dec are estimated from a sample of at least 1 token (4096 or more is usual)",
            ));
        }
        if self.eval_tokens == 0 {
            return Err(Error::config(
                "eval_tokens",
                "is 0: evaluate on at least 1 held-out token",
            ));
        }
        positive("decoder_init_norm", self.decoder_init_norm)?;
        positive("threshold_bandwidth", self.threshold_bandwidth)?;
        positive("initial_threshold", self.initial_threshold)?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        if self.train_tokens < self.batch_size as u64 {
            return Err(Error::config(
                "train_tokens",
                format!(
                    "{} is less than one batch ({})",
                    self.train_tokens, self.batch_size
                ),
            ));
        }
        in_range(
            "held_out",
            self.held_out,
            0.0..=1.0,
            true,
            "a fraction of documents, at least 0 (no held-out metrics) and below 1 (0.05 is usual)",
        )?;
        if !(0.0..=1.0).contains(&self.lr_decay_fraction) {
            return Err(Error::config("lr_decay_fraction", "must be in [0, 1]"));
        }
        for (field, every) in [
            ("eval_every", self.eval_every),
            ("checkpoint_every", self.checkpoint_every),
            ("log_every", self.log_every),
        ] {
            if every == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        self.check_transcoder_fields()?;
        self.check_architecture_fields(&|field| match field {
            "k" => self.k.is_some(),
            "aux_k" => self.aux_k.is_some(),
            "l1_coefficient" => self.l1_coefficient.is_some(),
            "target_l0" => self.target_l0.is_some(),
            "matryoshka_groups" => self.matryoshka_groups.is_some(),
            _ => false, // a field with a default: only the config's text says whether it was set
        })?;
        Ok(())
    }

    /// Refuses a source without what it reads, or with what the other source reads.
    fn check_source_fields(&self) -> Result<()> {
        let has_store = !self.store.as_os_str().is_empty();
        match (self.source, has_store, self.stream.is_some()) {
            (SourceKind::Store, false, _) => Err(Error::config(
                "store",
                "is missing: name the activation store to train on, or set source = \"model\" with a [stream] table",
            )),
            (SourceKind::Store, true, true) => Err(Error::config(
                "stream",
                "is read only with source = \"model\": set that (and remove `store`), or remove [stream]",
            )),
            (SourceKind::Model, true, _) => Err(Error::config(
                "store",
                "is read only with source = \"store\"; a run with source = \"model\" streams from [stream]: remove `store`",
            )),
            (SourceKind::Model, false, false) => Err(Error::config(
                "stream",
                "source = \"model\" streams activations from a model over a corpus: add a [stream] table \
                 (model, context_length, batch_size, max_tokens, [[stream.corpus]] path = ...)",
            )),
            _ => Ok(()),
        }
    }

    /// Refuses transcoder settings that cannot work together.
    fn check_transcoder_fields(&self) -> Result<()> {
        match self.target_hook {
            None if self.skip_connection => Err(Error::config(
                "skip_connection",
                "is for transcoders: set target_hook (e.g. blocks.L.hook_mlp_out) as well, or remove it",
            )),
            Some(target) if target == self.hook => Err(Error::config(
                "target_hook",
                format!(
                    "is the input hook {target} itself: remove it for an SAE, or name another hook for a transcoder"
                ),
            )),
            Some(target) if self.apply_b_dec_to_input == Some(true) => Err(Error::config(
                "apply_b_dec_to_input",
                format!(
                    "cannot be true for a transcoder: b_dec lives at the target hook {target}, not at the input {}. Remove it",
                    self.hook
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether the run is a transcoder (reconstructs another hook than it reads).
    pub fn is_transcoder(&self) -> bool {
        self.target_hook.is_some()
    }

    /// Refuses a field that only other architectures use (it would be silently ignored).
    fn check_architecture_fields(&self, is_set: &dyn Fn(&str) -> bool) -> Result<()> {
        use ArchitectureName::*;
        let fields: [(&str, &[ArchitectureName]); 10] = [
            ("k", &[Topk, Batchtopk, Matryoshka]),
            ("aux_k", &[Topk, Batchtopk, Matryoshka]),
            ("aux_coefficient", &[Topk, Batchtopk, Matryoshka]),
            ("threshold_lr", &[Batchtopk, Matryoshka]),
            ("matryoshka_groups", &[Matryoshka]),
            ("l1_coefficient", &[Relu]),
            ("target_l0", &[Jumprelu]),
            ("l0_coefficient", &[Jumprelu]),
            ("threshold_bandwidth", &[Jumprelu]),
            ("initial_threshold", &[Jumprelu]),
        ];
        for (field, users) in fields {
            if is_set(field) && !users.contains(&self.architecture) {
                let users: Vec<&str> = users.iter().map(|a| a.as_str()).collect();
                let users = match users.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                    _ => users.join(""),
                };
                return Err(Error::config(
                    field,
                    format!(
                        "belongs to architecture {}; architecture {} does not use it: remove it",
                        users, self.architecture
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of latents for inputs `d_in` wide: `d_sae` if set, else `expansion × d_in`.
    pub fn d_sae(&self, d_in: usize) -> usize {
        self.d_sae.unwrap_or(self.expansion * d_in)
    }

    /// Optimizer steps of the run: `train_tokens / batch_size`, rounded down.
    pub fn total_steps(&self) -> u64 {
        self.train_tokens / self.batch_size as u64
    }

    /// The learning rate at `step` (0-based): linear warmup, constant, linear decay to 0.
    pub fn lr_at(&self, step: u64) -> f64 {
        let total = self.total_steps().max(1) as f64;
        let step = step as f64;
        let warmup = if self.lr_warmup_steps > 0 {
            ((step + 1.0) / self.lr_warmup_steps as f64).min(1.0)
        } else {
            1.0
        };
        let decay_steps = self.lr_decay_fraction * total;
        let decay = if decay_steps > 0.0 {
            ((total - step) / decay_steps).clamp(0.0, 1.0)
        } else {
            1.0
        };
        self.lr * warmup * decay
    }

    /// The config as TOML (empty if it cannot be serialized), e.g. to save beside the run.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The `[[run]]` tables of a config that trains several SAEs (a sweep, the synthetic benchmark):
/// each run's name, checked to be a plain directory name used by one run only, and its own
/// settings (the table less `name`). `directory` says where the name becomes a directory, for the
/// message.
pub(crate) fn named_runs(runs: &[toml::Table], directory: &str) -> Result<Vec<(String, toml::Table)>> {
    let mut named: Vec<(String, toml::Table)> = Vec::new();
    for (i, table) in runs.iter().enumerate() {
        let field = format!("run[{i}].name");
        let name = match table.get("name") {
            Some(toml::Value::String(name)) if is_plain_name(name) => name.clone(),
            _ => {
                return Err(Error::config(
                    &field,
                    format!("every run needs a name of letters, digits, '-' and '_' ({directory})"),
                ))
            }
        };
        if named.iter().any(|(other, _)| *other == name) {
            return Err(Error::config(&field, format!("'{name}' names two runs")));
        }
        let mut settings = table.clone();
        settings.remove("name");
        named.push((name, settings));
    }
    Ok(named)
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
