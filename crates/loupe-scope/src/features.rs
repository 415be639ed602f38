//! Named features: a feature book (TOML) maps a name to a direction at a hook point, from
//!
//! - `probe`: a k-sparse probe checkpoint, its weights lifted into the hook's space
//!   (`Probe::direction`); a probe on MLP neurons (`mlp.hook_post`) can also be moved to its
//!   layer's `hook_mlp_out` or `hook_resid_post` through the down projection (`site = ...`);
//! - `sae`: an SAE latent (its decoder row), by index, or the latent that best tells two prompt
//!   sets apart (largest mean activation on `positive` minus that on `negative`, at each prompt's
//!   last token; `select = "input"`, the default), or the latent whose decoder row most raises the
//!   `concepts` words' tokens through the unembedding (`select = "output"`, [`crate::output_score`]):
//!   ways to name a latent of an SAE that is trained afresh. A transcoder's latent is chosen from
//!   the hook it reads and is the decoder row where it writes (an MLP transcoder's: the MLP's
//!   output, which `site = "blocks.L.hook_resid_post"` moves to the residual stream it is added
//!   to);
//! - `mean_diff`: the difference of the mean activations (at each prompt's last token) of two
//!   prompt sets;
//! - `vector`: a safetensors file with a 1-D tensor `direction`.
//!
//! ```toml
//! [[feature]]
//! name = "spanish"
//! kind = "probe"
//! probe = "checkpoints/probe-lang/lang-es-doc/blocks.12.mlp.hook_post/exact-k1.safetensors"
//! site = "blocks.12.hook_resid_post"
//! concepts = ["Spanish", "Spain"]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor};
use loupe_model::{HookPoint, Hooks, Model};
use loupe_probe::Probe;
use loupe_sae::Sae;
use loupe_util::Problems as _;
use serde::Deserialize;

use crate::{Error, Result};

/// One `[[feature]]` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureEntry {
    /// The feature's name, as amplifiers and reports refer to it.
    pub name: String,
    /// `probe`, `sae`, `mean_diff` or `vector`.
    pub kind: String,
    /// `probe`: the probe's `.safetensors` file.
    #[serde(default)]
    pub probe: Option<PathBuf>,
    /// `probe`: the hook to move an MLP-neuron probe to (`hook_mlp_out` or `hook_resid_post` of
    /// its layer); default the probe's own hook. `sae` whose latents write an MLP's output (a
    /// transcoder of the MLP, an SAE of `hook_mlp_out`): its layer's `hook_resid_post`, to which
    /// the MLP's output is added.
    #[serde(default)]
    pub site: Option<HookPoint>,
    /// `sae`: the SAE (a SAELens directory or Gemma Scope `params.npz`).
    #[serde(default)]
    pub sae: Option<PathBuf>,
    /// `sae`: the latent's index.
    #[serde(default)]
    pub latent: Option<usize>,
    /// `sae` without `latent`: how the latent is chosen: `input` (default; the latent that best
    /// tells `positive` from `negative` prompts) or `output` (the latent whose decoder row most
    /// raises the logits of the `concepts` words' tokens: see `output_score.rs`).
    #[serde(default)]
    pub select: Option<String>,
    /// `mean_diff`, `vector`: the hook the direction lives at.
    #[serde(default)]
    pub hook: Option<HookPoint>,
    /// `mean_diff`, and `sae` without `latent`: the two prompt sets.
    #[serde(default)]
    pub positive: Vec<String>,
    /// `mean_diff`, and `sae` without `latent`: the prompts the feature is measured against.
    #[serde(default)]
    pub negative: Vec<String>,
    /// `vector`: a safetensors file with a 1-D tensor `direction`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Words whose appearance in a generation counts as the concept being named.
    #[serde(default)]
    pub concepts: Vec<String>,
    /// A sentence describing the concept: every generation of a scope run is scored by the
    /// similarity of its embedding to this one's (the concept score).
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookFile {
    #[serde(rename = "feature")]
    features: Vec<FeatureEntry>,
}

/// Where a feature's direction came from.
#[derive(Clone)]
pub enum Source {
    /// A probe checkpoint, lifted to a direction with [`Probe::direction`].
    Probe {
        /// The probe's `.safetensors` file.
        path: PathBuf,
        /// The loaded probe.
        probe: Box<Probe>,
    },
    /// An SAE latent's decoder row.
    Sae {
        /// The SAE's directory or `params.npz`.
        path: PathBuf,
        /// The loaded SAE.
        sae: Arc<Sae>,
        /// The latent's index, below `d_sae`.
        latent: usize,
    },
    /// The difference of two prompt sets' mean activations.
    MeanDiff {
        /// Number of positive prompts.
        positives: usize,
        /// Number of negative prompts.
        negatives: usize,
    },
    /// A `direction` tensor read from a safetensors file.
    Vector {
        /// The safetensors file.
        path: PathBuf,
    },
}

/// A feature resolved against a model: a direction at a hook.
#[derive(Clone)]
pub struct Feature {
    /// The feature's name.
    pub name: String,
    /// The hook point the direction lives at.
    pub hook: HookPoint,
    /// Not normalised: a probe's weights, an SAE's decoder row, a mean difference.
    pub direction: Vec<f32>,
    /// Where the direction came from.
    pub source: Source,
    /// Words whose appearance in a generation counts as the concept being named.
    pub concepts: Vec<String>,
    /// A sentence describing the concept, for the concept score.
    pub description: Option<String>,
}

impl Feature {
    /// The SAE latent this feature is (its SAE, index and path), for amplifiers that encode the
    /// activation with the SAE and edit the latent: an error naming `field` for any other
    /// feature, and for a transcoder's latent, which is read at another hook than it writes.
    /// `verb` says what the caller does ("amplify", "steer"), for the advice.
    pub fn sae_latent(&self, field: &str, verb: &str) -> Result<(&Arc<Sae>, usize, &Path)> {
        let Source::Sae { sae, latent, path } = &self.source else {
            return Err(Error::config(
                field,
                format!(
                    "'{}' is not an SAE latent ({}); use kind = \"probe\" to {verb} along a direction",
                    self.name,
                    self.describe()
                ),
            ));
        };
        if sae.is_transcoder() {
            return Err(Error::config(
                field,
                format!(
                    "'{}' is a transcoder's latent: it reads {} and writes {}, and an sae amplifier edits one hook; \
                     use kind = \"probe\" to {verb} along its decoder row at {}",
                    self.name,
                    sae.metadata.hook_name,
                    sae.output_hook_name(),
                    self.hook
                ),
            ));
        }
        Ok((sae, *latent, path))
    }

    /// For an SAE latent, its largest activation as `loupe sae top` recorded it (in `top/top.json`
    /// beside the SAE); `None` when that has not been run or this is not an SAE latent.
    pub fn recorded_max_activation(&self) -> Result<Option<f32>> {
        let Source::Sae { path, latent, .. } = &self.source else {
            return Ok(None);
        };
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.with_extension("")
        };
        let top = dir.join("top").join("top.json");
        if !top.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&top).map_err(|e| Error::file(&top, e))?;
        let report: loupe_sae::top::TopReport =
            serde_json::from_str(&text).map_err(|e| Error::config(&top.display().to_string(), e))?;
        Ok(report
            .latents
            .iter()
            .find(|l| l.latent as usize == *latent)
            .map(|l| l.max_activation))
    }

    /// One line for logs: name, hook, width, norm and where the direction came from.
    pub fn describe(&self) -> String {
        let norm = self.direction.iter().map(|v| v * v).sum::<f32>().sqrt();
        let what = match &self.source {
            Source::Probe { path, probe } => format!(
                "probe {} (k={}, {} on {}, held-out F1 {:.3})",
                path.display(),
                probe.info.k,
                probe.info.feature,
                probe.info.hook,
                probe.info.held_out.f1
            ),
            Source::Sae { latent, sae, .. } => format!(
                "SAE latent {latent} of {} ({} latents)",
                sae.metadata.hook_name, sae.d_sae
            ),
            Source::MeanDiff { positives, negatives } => {
                format!("mean difference of {positives} positive and {negatives} negative prompts")
            }
            Source::Vector { path } => format!("vector from {}", path.display()),
        };
        format!(
            "{} at {} (width {}, norm {norm:.3}): {what}",
            self.name,
            self.hook,
            self.direction.len()
        )
    }
}

/// Reads a feature book and resolves every feature against `model`: checks that probes and SAEs
/// belong to this model and fit their hook, and runs the mean-difference prompts.
pub fn load_book(path: &Path, model: &Model) -> Result<Vec<Feature>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            &path.display().to_string(),
            format!("cannot read the feature book: {e}"),
        )
    })?;
    let book: BookFile = toml::from_str(&text).map_err(|e| Error::config(&path.display().to_string(), e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    // Hashing the weights takes a moment: only probes need it.
    let sha = if book.features.iter().any(|f| f.kind == "probe") {
        model.source.fingerprint()?
    } else {
        String::new()
    };
    let mut features: Vec<Feature> = Vec::new();
    for (i, entry) in book.features.iter().enumerate() {
        if features.iter().any(|f| f.name == entry.name) {
            return Err(Error::config(
                &format!("feature[{i}].name"),
                format!("'{}' is named twice", entry.name),
            ));
        }
        features.push(resolve(entry, i, base, model, &sha)?);
    }
    Ok(features)
}

/// The activation at `hook` of each prompt's last token, `[prompts, width]` f32.
pub(crate) fn last_token_activations(
    model: &Model,
    hook: HookPoint,
    prompts: &[String],
    field: &str,
) -> Result<Tensor> {
    if prompts.is_empty() {
        return Err(Error::config(field, "give at least one prompt"));
    }
    if let Some(empty) = prompts.iter().position(|p| p.trim().is_empty()) {
        return Err(Error::config(field, format!("prompt {empty} is empty")));
    }
    let batch = model.batch(prompts)?;
    let mut hooks = Hooks::new().capture(hook);
    model.capture(&batch, &mut hooks)?;
    let captured = hooks.captured(hook).expect("the hook was captured");
    // Left-padded: every prompt's last token is the last column.
    let last = captured.narrow(1, captured.dim(1)? - 1, 1)?.squeeze(1)?;
    Ok(last.to_dtype(DType::F32)?)
}

/// Paths in a book are relative to the working directory, or to the book's folder `base` when not
/// found there.
pub fn locate(path: &Path, base: &Path) -> PathBuf {
    if path.exists() || path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn resolve(
    entry: &FeatureEntry,
    index: usize,
    base: &Path,
    model: &Model,
    model_sha256: &str,
) -> Result<Feature> {
    let at = |field: &str| format!("feature[{index}] '{}'.{field}", entry.name);
    let need = |value: Option<&PathBuf>, field: &str, example: &str| -> Result<PathBuf> {
        value.map(|p| locate(p, base)).ok_or_else(|| {
            Error::config(
                &at(field),
                format!("a {} feature needs {field} = {example}", entry.kind),
            )
        })
    };
    let check_hook = |hook: HookPoint, field: &str| -> Result<()> {
        model.spec().check(hook).map_err(|e| Error::field(&at(field), e))
    };
    let width = |hook: HookPoint, field: &str| -> Result<usize> {
        model.width(hook).map_err(|e| Error::field(&at(field), e))
    };
    let (hook, direction, source) = match entry.kind.as_str() {
        "probe" => {
            let path = need(
                entry.probe.as_ref(),
                "probe",
                "\"checkpoints/…/mean_diff-k1.safetensors\"",
            )?;
            let probe = Probe::load(&path).map_err(|e| Error::field(&at("probe"), e))?;
            if probe.info.model_sha256 != model_sha256 {
                return Err(Error::mismatch(format!(
                    "{}: the probe {} was trained on another model ({}, weights sha256 {}…), not {}",
                    at("probe"),
                    path.display(),
                    probe.info.model_name,
                    &probe.info.model_sha256[..12.min(probe.info.model_sha256.len())],
                    model.name
                )));
            }
            let (direction, _) = probe.direction();
            let (hook, direction) = match entry.site {
                None => (probe.info.hook, direction),
                Some(site) if site == probe.info.hook => (site, direction),
                Some(site) => (
                    site,
                    lift(model, probe.info.hook, site, &direction)
                        .map_err(|m| Error::config(&at("site"), m))?,
                ),
            };
            (
                hook,
                direction,
                Source::Probe {
                    path,
                    probe: Box::new(probe),
                },
            )
        }
        "sae" => {
            let path = need(entry.sae.as_ref(), "sae", "\"checkpoints/smollm2-l15-topk\"")?;
            let sae = loupe_sae::saelens::load(&path).map_err(|e| Error::field(&at("sae"), e))?;
            let hook: HookPoint = sae.metadata.hook_name.parse().map_err(|e| {
                Error::config(
                    &at("sae"),
                    format!("its cfg.json names hook '{}': {e}", sae.metadata.hook_name),
                )
            })?;
            check_hook(hook, "sae")?;
            let hook_width = width(hook, "sae")?;
            if sae.d_in != hook_width {
                return Err(Error::mismatch(format!(
                    "{}: the SAE reads {} dimensions but {hook} of {} has {hook_width}",
                    at("sae"),
                    sae.d_in,
                    model.name,
                )));
            }
            let latent = match (entry.latent, entry.select.as_deref(), entry.positive.is_empty()) {
                (Some(latent), None, true) => latent,
                (None, None | Some("input"), false) => {
                    let positive = last_token_activations(model, hook, &entry.positive, &at("positive"))?;
                    let negative = last_token_activations(model, hook, &entry.negative, &at("negative"))?;
                    let contrast = (sae.encode(&positive)?.mean(0)? - sae.encode(&negative)?.mean(0)?)?;
                    contrast.argmax(0)?.to_scalar::<u32>()? as usize
                }
                (None, Some("output"), true) => {
                    let tokens = crate::output_score::concept_tokens(model, &entry.concepts)?;
                    if tokens.is_empty() {
                        return Err(Error::config(
                            &at("concepts"),
                            "select = \"output\" chooses the latent that most raises the concept words' tokens: give concepts = [\"word\", ...]",
                        ));
                    }
                    let hook_width = width(hook, "sae")?;
                    if hook_width != model.spec().d_model {
                        return Err(Error::config(
                            &at("select"),
                            format!("select = \"output\" reads decoder rows through the unembedding, which needs a residual-stream-wide hook; {hook} is {hook_width} wide"),
                        ));
                    }
                    let scores = crate::output_score::output_scores(model, &sae, &tokens)?;
                    (0..scores.len())
                        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                        .expect("an SAE has latents")
                }
                (_, Some(other), _) if other != "input" && other != "output" => {
                    return Err(Error::config(
                        &at("select"),
                        format!("'{other}': choose input (by positive and negative prompts) or output (by the concepts' tokens)"),
                    ))
                }
                _ => {
                    return Err(Error::config(
                        &at("latent"),
                        "an sae feature needs one of: latent = <index>; positive and negative prompts (select = \"input\"); \
                         or select = \"output\" with concepts",
                    ))
                }
            };
            if latent >= sae.d_sae {
                return Err(Error::config(
                    &at("latent"),
                    format!("the SAE has {} latents (0 to {})", sae.d_sae, sae.d_sae - 1),
                ));
            }
            let direction = sae.w_dec.get(latent)?.to_vec1::<f32>()?;
            // A transcoder's latent is chosen from what it reads, and its direction lives where
            // its decoder writes.
            let written: HookPoint = sae.output_hook_name().parse().map_err(|e| {
                Error::config(
                    &at("sae"),
                    format!("its cfg.json names output hook '{}': {e}", sae.output_hook_name()),
                )
            })?;
            check_hook(written, "sae")?;
            let (written, direction) = match entry.site {
                None => (written, direction),
                Some(site) if site == written => (site, direction),
                Some(site) => (
                    site,
                    into_residual_stream(model, written, site, direction)
                        .map_err(|m| Error::config(&at("site"), m))?,
                ),
            };
            (
                written,
                direction,
                Source::Sae {
                    path,
                    sae: Arc::new(sae),
                    latent,
                },
            )
        }
        "mean_diff" => {
            let hook = entry.hook.ok_or_else(|| {
                Error::config(
                    &at("hook"),
                    "a mean_diff feature needs hook = \"blocks.L.hook_resid_post\"",
                )
            })?;
            check_hook(hook, "hook")?;
            if entry.positive.is_empty() || entry.negative.is_empty() {
                return Err(Error::config(
                    &at("positive"),
                    "a mean_diff feature needs prompts in both positive and negative",
                ));
            }
            let mean = |prompts: &[String], field: &str| -> Result<Vec<f32>> {
                let rows = last_token_activations(model, hook, prompts, &at(field))?;
                Ok(rows.mean(0)?.to_vec1::<f32>()?)
            };
            let (p, n) = (
                mean(&entry.positive, "positive")?,
                mean(&entry.negative, "negative")?,
            );
            let direction = p.iter().zip(&n).map(|(p, n)| p - n).collect();
            (
                hook,
                direction,
                Source::MeanDiff {
                    positives: entry.positive.len(),
                    negatives: entry.negative.len(),
                },
            )
        }
        "vector" => {
            let hook = entry.hook.ok_or_else(|| {
                Error::config(
                    &at("hook"),
                    "a vector feature needs hook = \"blocks.L.hook_resid_post\"",
                )
            })?;
            check_hook(hook, "hook")?;
            let path = need(entry.file.as_ref(), "file", "\"direction.safetensors\"")?;
            let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)
                .map_err(|e| Error::config(&at("file"), format!("{}: {e}", path.display())))?;
            let t = tensors.get("direction").ok_or_else(|| {
                Error::config(
                    &at("file"),
                    format!("{} has no tensor named 'direction'", path.display()),
                )
            })?;
            let direction = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            (hook, direction, Source::Vector { path })
        }
        other => {
            return Err(Error::config(
                &at("kind"),
                format!("unknown kind '{other}'; the kinds are probe, sae, mean_diff, vector"),
            ))
        }
    };
    let hook_width = width(hook, "hook")?;
    if direction.len() != hook_width {
        return Err(Error::mismatch(format!(
            "{}: the direction is {} wide but {hook} of {} is {hook_width} wide",
            at("hook"),
            direction.len(),
            model.name,
        )));
    }
    Ok(Feature {
        name: entry.name.clone(),
        hook,
        direction,
        source,
        concepts: entry.concepts.clone(),
        description: entry.description.clone().filter(|d| !d.trim().is_empty()),
    })
}

/// Moves a direction over MLP neurons to the MLP's output (or the residual stream it is added
/// to) of the same layer: `W_down · v`.
/// A direction written at an MLP's output (`from`), moved to the residual stream after the block
/// (`to`): the same vector, where the model adds the MLP's output to the stream as it is.
fn into_residual_stream(
    model: &Model,
    from: HookPoint,
    to: HookPoint,
    v: Vec<f32>,
) -> std::result::Result<Vec<f32>, String> {
    match (from, to) {
        (HookPoint::MlpOut(a), HookPoint::ResidPost(b)) if a == b && model.mlp_out_weight(a).is_some() => Ok(v),
        (HookPoint::MlpOut(a), HookPoint::ResidPost(b)) if a == b => Err(format!(
            "a {} model normalises the MLP's output before adding it to the residual stream: steer at {from} itself",
            model.spec().family
        )),
        _ => Err(format!(
            "a latent written at {from} moves only from an MLP's output to its layer's hook_resid_post, not to {to}"
        )),
    }
}

fn lift(model: &Model, from: HookPoint, to: HookPoint, v: &[f32]) -> std::result::Result<Vec<f32>, String> {
    let HookPoint::MlpPost(layer) = from else {
        return Err(format!(
            "only a probe on mlp.hook_post can move to another hook; this one reads {from}"
        ));
    };
    if to != HookPoint::MlpOut(layer) && to != HookPoint::ResidPost(layer) {
        return Err(format!(
            "a probe on {from} moves to blocks.{layer}.hook_mlp_out or blocks.{layer}.hook_resid_post, not {to}"
        ));
    }
    let w = model.mlp_out_weight(layer).ok_or_else(|| {
        format!(
            "a {} model has no linear map from blocks.{layer}.mlp.hook_post to {to} (it has no \
             layer {layer}, or normalises the MLP's output); steer at {from} itself",
            model.spec().family
        )
    })?;
    let lifted = (|| -> candle_core::Result<Vec<f32>> {
        let v = Tensor::from_slice(v, (v.len(), 1), w.device())?;
        w.to_dtype(DType::F32)?
            .matmul(&v)?
            .flatten_all()?
            .to_vec1::<f32>()
    })();
    lifted.map_err(|e| e.to_string())
}
