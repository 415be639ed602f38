//! A steering run checked before it starts: [`SteerPlan::new`] lays out and tokenizes every
//! prompt, resolves the features against the steered hook, measures what the steering vectors
//! need (σ, the concept's and the null prompt's activations), and builds every variant, so that
//! everything that can be wrong is found before any generation.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use loupe_model::{Batch, Edit, HookPoint, Hooks, Model};
use loupe_sae::Sae;
use loupe_util::Problems as _;

use super::config::{ConceptConfig, MethodConfig, SteerConfig};
use crate::config::SaeAmplifierMode;
use crate::features::{last_token_activations, load_book, Feature, Source as FeatureSource};
use crate::{Error, Result};

/// How one variant changes the forward pass.
#[derive(Clone)]
pub(crate) enum Steering {
    /// Nothing: the unsteered answer, or the prompting baseline (whose prompt differs instead).
    Nothing,
    /// A vector added at every steered position (`probe`, `cfg`).
    Add(Vec<f32>),
    /// One SAE latent's activation set at every steered position: `h + (f_i' − f_i)·d_i`.
    SaeLatent {
        sae: Arc<Sae>,
        latent: usize,
        mode: SaeMode,
    },
}

/// How [`Steering::SaeLatent`] sets the latent's activation f_i.
#[derive(Clone, Copy)]
pub(crate) enum SaeMode {
    /// f_i' = α·f_i.
    Scale(f32),
    /// f_i' = value (c × the latent's largest activation).
    Clamp(f32),
}

/// One way of steering towards one concept at one strength.
#[derive(Clone)]
pub(crate) struct Variant {
    /// Index into the config's concepts.
    pub(crate) concept: usize,
    /// `none`, `prompt`, `sae`, `cfg`, or for a direction added along: `probe`, `mean_diff`,
    /// `vector` or `decoder_row` (an SAE latent's, by the feature's source).
    pub(crate) method: &'static str,
    /// The method without its strength, as the study groups variants: `sae person clamp`,
    /// `mean_diff person-diff`, `cfg (null: bos)`.
    pub(crate) family: String,
    /// The family with its strength: `sae person clamp 4`, `probe german +8σ`, `cfg 0.5 (null: bos)`.
    pub(crate) label: String,
    /// The strength; none for `none` and `prompt`.
    pub(crate) value: Option<f32>,
    pub(crate) steering: Steering,
}

impl Variant {
    /// The edit this variant makes at the steered hook, if any.
    pub(crate) fn edit(&self, device: &Device) -> Result<Option<Edit>> {
        Ok(match &self.steering {
            Steering::Nothing => None,
            Steering::Add(v) => Some(Edit::Add(Tensor::from_slice(v, v.len(), device)?)),
            Steering::SaeLatent { sae, latent, mode } => {
                let (sae, latent, mode) = (Arc::clone(sae), *latent, *mode);
                let row = sae.w_dec.get(latent)?.unsqueeze(0)?;
                Some(Edit::Apply(Arc::new(move |x: &Tensor| {
                    set_latent(&sae, latent, &row, mode, x)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                })))
            }
        })
    }
}

/// `x + (f_i' − f_i)·d_i` for every row of `x` (`[n, d_in]`, in x's dtype and device).
fn set_latent(sae: &Sae, latent: usize, decoder_row: &Tensor, mode: SaeMode, x: &Tensor) -> Result<Tensor> {
    let on_cpu = x.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
    let f = sae.encode(&on_cpu)?.narrow(1, latent, 1)?;
    let change = match mode {
        SaeMode::Scale(alpha) => f.affine(alpha as f64 - 1.0, 0.0)?,
        SaeMode::Clamp(value) => f.affine(-1.0, value as f64)?,
    };
    let steered = (on_cpu + change.broadcast_mul(decoder_row)?)?;
    Ok(steered.to_dtype(x.dtype())?.to_device(x.device())?)
}

/// A checked steering run.
pub struct SteerPlan<'a> {
    pub(crate) model: &'a Model,
    /// The config the plan was checked from.
    pub config: SteerConfig,
    /// The instructions, in run order.
    pub instructions: Vec<String>,
    /// Each instruction's prompt as the model reads it (chat template applied when `chat`).
    pub(crate) prompts: Vec<Vec<u32>>,
    /// Per concept, each instruction's prompting-baseline prompt.
    pub(crate) prompting: Vec<Vec<Vec<u32>>>,
    /// The typical norm of the steered activation: the mean over instructions of its norm at the
    /// prompt's last token.
    pub sigma: f32,
    pub(crate) variants: Vec<Variant>,
}

impl<'a> SteerPlan<'a> {
    /// Checks `config` against `model` and builds every variant (a few forward passes: the
    /// instructions, the feature book's prompts, the concept and null prompts).
    pub fn new(config: &SteerConfig, model: &'a Model) -> Result<Self> {
        if config.layer >= model.n_layers() {
            return Err(Error::config(
                "layer",
                format!(
                    "layer {} does not exist: {} has layers 0 to {}",
                    config.layer,
                    model.name,
                    model.n_layers() - 1
                ),
            ));
        }
        if config.chat && model.chat_template.is_none() {
            return Err(Error::config(
                "chat",
                format!(
                    "{} has no chat template (a base model): set chat = false to give instructions as plain text",
                    model.name
                ),
            ));
        }
        let hook = config.site.hook(config.layer);
        let instructions = config.instruction_list()?;
        let layout = |text: &str, field: &str| -> Result<Vec<u32>> {
            let text = if config.chat {
                model
                    .chat_prompt(&[("user", text)])
                    .map_err(|e| Error::config("chat", e))?
            } else {
                text.to_string()
            };
            model.encode_prompt(&text).map_err(|e| Error::config(field, e))
        };
        let prompts = instructions
            .iter()
            .enumerate()
            .map(|(i, text)| layout(text, &format!("instructions[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let prompting = config
            .concepts
            .iter()
            .enumerate()
            .map(|(c, concept)| {
                let sentence = concept.prompting_sentence();
                instructions
                    .iter()
                    .map(|text| layout(&format!("{text} {sentence}"), &format!("concept[{c}].prompting")))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;

        let needs_book = config
            .concepts
            .iter()
            .any(|c| c.methods.iter().any(|m| m.feature().is_some()));
        let features = match (&config.features, needs_book) {
            (Some(path), true) => load_book(path, model)?,
            (None, true) => return Err(Error::config(
                "features",
                "a method names a feature: give the feature book, features = \"configs/features-main.toml\"",
            )),
            _ => Vec::new(),
        };
        let sigma = mean_last_token_norm(model, hook, &prompts)?;
        let mut plan = SteerPlan {
            model,
            config: config.clone(),
            instructions,
            prompts,
            prompting,
            sigma,
            variants: Vec::new(),
        };
        let mut variants = Vec::new();
        for (c, concept) in config.concepts.iter().enumerate() {
            variants.extend(plan.concept_variants(c, concept, hook, &features)?);
        }
        plan.variants = variants;
        Ok(plan)
    }

    /// The hook steered.
    pub fn hook(&self) -> HookPoint {
        self.config.site.hook(self.config.layer)
    }

    /// Every variant's label per concept, in config order (`none` and `prompt` first).
    pub fn labels(&self) -> BTreeMap<String, Vec<String>> {
        let mut labels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in &self.variants {
            let concept = &self.config.concepts[v.concept].name;
            labels.entry(concept.clone()).or_default().push(v.label.clone());
        }
        labels
    }

    /// Answers the full run generates (variants × instructions).
    pub fn total_rows(&self) -> usize {
        self.variants.len() * self.instructions.len()
    }

    /// `none`, `prompt`, then each method at each of its values.
    fn concept_variants(
        &self,
        c: usize,
        concept: &ConceptConfig,
        hook: HookPoint,
        features: &[Feature],
    ) -> Result<Vec<Variant>> {
        let variant =
            |method: &'static str, family: String, label: String, value: Option<f32>, steering| Variant {
                concept: c,
                method,
                family,
                label,
                value,
                steering,
            };
        let mut variants = vec![
            variant("none", "none".into(), "none".into(), None, Steering::Nothing),
            variant(
                "prompt",
                "prompt".into(),
                "prompt".into(),
                None,
                Steering::Nothing,
            ),
        ];
        for (m, method) in concept.methods.iter().enumerate() {
            let at = |field: &str| {
                format!(
                    "concept[{c}] '{}'.method[{m}] ({}).{field}",
                    concept.name,
                    method.kind()
                )
            };
            match method {
                MethodConfig::Sae {
                    feature,
                    mode,
                    values,
                    max_activation,
                } => {
                    let feature = find_feature(features, feature, hook, &at("feature"))?;
                    let (sae, latent, path) = feature.sae_latent(&at("feature"), "steer")?;
                    let max = match (mode, max_activation) {
                        (SaeAmplifierMode::Scale, _) => None,
                        (SaeAmplifierMode::Clamp, Some(given)) => Some(*given),
                        (SaeAmplifierMode::Clamp, None) => Some(feature.recorded_max_activation()?.ok_or_else(|| {
                            Error::config(
                                &at("max_activation"),
                                format!(
                                    "clamping needs latent {latent}'s largest activation: run `loupe sae top --sae {} --store <its store>` \
                                     (it is then read from top/top.json), or give max_activation = <value>",
                                    path.display()
                                ),
                            )
                        })?),
                    };
                    let mode_name = match mode {
                        SaeAmplifierMode::Scale => "scale",
                        SaeAmplifierMode::Clamp => "clamp",
                    };
                    let family = format!("sae {} {mode_name}", feature.name);
                    for &value in values {
                        let (label, sae_mode) = match max {
                            None => (format!("{family} ×{value}"), SaeMode::Scale(value)),
                            Some(max) => (format!("{family} {value}×max"), SaeMode::Clamp(value * max)),
                        };
                        let steering = Steering::SaeLatent {
                            sae: Arc::clone(sae),
                            latent,
                            mode: sae_mode,
                        };
                        variants.push(variant("sae", family.clone(), label, Some(value), steering));
                    }
                }
                MethodConfig::Probe {
                    feature,
                    values,
                    sigma,
                } => {
                    let feature = find_feature(features, feature, hook, &at("feature"))?;
                    let method = match feature.source {
                        FeatureSource::Probe { .. } => "probe",
                        FeatureSource::MeanDiff { .. } => "mean_diff",
                        FeatureSource::Vector { .. } => "vector",
                        FeatureSource::Sae { .. } => "decoder_row",
                    };
                    let norm = loupe_util::vector::norm(&feature.direction);
                    if !(norm > 0.0 && norm.is_finite()) {
                        return Err(Error::mismatch(format!(
                            "the direction of feature '{}' has norm {norm}",
                            feature.name
                        )));
                    }
                    let sigma = sigma.unwrap_or(self.sigma);
                    let family = format!("{method} {}", feature.name);
                    for &alpha in values {
                        let shift: Vec<f32> = feature
                            .direction
                            .iter()
                            .map(|d| alpha * sigma * d / norm)
                            .collect();
                        variants.push(variant(
                            method,
                            family.clone(),
                            format!("{family} +{alpha}σ"),
                            Some(alpha),
                            Steering::Add(shift),
                        ));
                    }
                }
                MethodConfig::Cfg { null, values } => {
                    let concept_mean = mean_rows(&last_token_activations(
                        self.model,
                        hook,
                        &concept.prompts,
                        &format!("concept[{c}] '{}'.prompts", concept.name),
                    )?)?;
                    let null_activation = null_activation(self.model, hook, &self.config.null[null], null)?;
                    let difference: Vec<f32> = concept_mean
                        .iter()
                        .zip(&null_activation)
                        .map(|(h, n)| h - n)
                        .collect();
                    let family = format!("cfg (null: {null})");
                    for &s in values {
                        let shift: Vec<f32> = difference.iter().map(|d| s * d).collect();
                        variants.push(variant(
                            "cfg",
                            family.clone(),
                            format!("cfg {s} (null: {null})"),
                            Some(s),
                            Steering::Add(shift),
                        ));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = variants.iter().find(|v| !seen.insert(v.label.clone())) {
            return Err(Error::config(
                &format!("concept[{c}] '{}'.method", concept.name),
                format!(
                    "'{}' is asked for twice; each method and strength must be unique",
                    twice.label
                ),
            ));
        }
        Ok(variants)
    }
}

/// The feature `name` of the book, which must live at the steered hook.
fn find_feature<'f>(
    features: &'f [Feature],
    name: &str,
    hook: HookPoint,
    field: &str,
) -> Result<&'f Feature> {
    let feature = features.iter().find(|f| f.name == name).ok_or_else(|| {
        Error::config(
            field,
            format!(
                "no feature '{name}' in the book; it has {:?} (`loupe features list`)",
                features.iter().map(|f| &f.name).collect::<Vec<_>>()
            ),
        )
    })?;
    if feature.hook != hook {
        return Err(Error::config(
            field,
            format!(
                "feature '{name}' lives at {}, but this run steers {hook}: set layer and site to match, or use a feature of that hook",
                feature.hook
            ),
        ));
    }
    Ok(feature)
}

/// The mean over rows of `[n, width]`.
fn mean_rows(rows: &Tensor) -> Result<Vec<f32>> {
    Ok(rows.mean(0)?.to_vec1::<f32>()?)
}

/// The null prompt's activation at `hook`, last token: `text`, or the BOS token alone for "".
fn null_activation(model: &Model, hook: HookPoint, text: &str, name: &str) -> Result<Vec<f32>> {
    let ids = crate::plan::null_prompt_ids(model, name, text)?;
    let batch = Batch::left_padded(&[ids], model.pad_id(), model.device())?;
    let mut hooks = Hooks::new().capture(hook);
    model.capture(&batch, &mut hooks)?;
    let captured = hooks.captured(hook).expect("the hook was captured");
    let last = captured.dim(1)? - 1;
    Ok(captured
        .get(0)?
        .get(last)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?)
}

/// The mean norm of the activation at `hook` at each prompt's last token.
fn mean_last_token_norm(model: &Model, hook: HookPoint, prompts: &[Vec<u32>]) -> Result<f32> {
    let mut total = 0.0;
    for chunk in prompts.chunks(16) {
        let batch = Batch::left_padded(chunk, model.pad_id(), model.device())?;
        let mut hooks = Hooks::new().capture(hook);
        model.capture(&batch, &mut hooks)?;
        let captured = hooks.captured(hook).expect("the hook was captured");
        // Left-padded: every prompt's last token is the last column.
        let last = captured.narrow(1, captured.dim(1)? - 1, 1)?.squeeze(1)?;
        let norms = last
            .to_dtype(DType::F32)?
            .sqr()?
            .sum(1)?
            .sqrt()?
            .to_vec1::<f32>()?;
        total += norms.iter().sum::<f32>();
    }
    Ok(total / prompts.len() as f32)
}
