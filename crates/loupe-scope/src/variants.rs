//! The variants of a sweep: each `[[amplifier]]` at each of its values, as an [`Amplifier`].

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use loupe_model::HookPoint;
use loupe_util::Problems as _;

use crate::amplify::{
    cfg::Cfg,
    none::Plain,
    probe::{ProbeDirection, ProbeMode},
    sae::{SaeFeature, SaeMode},
    scale::Scale,
    Amplifier,
};
use crate::config::{AmplifierConfig, ProbeAmplifierMode, SaeAmplifierMode};
use crate::features::{Feature, Source as FeatureSource};
use crate::plan::ScopePlan;
use crate::{Error, Result};

/// One way of amplifying, at one value.
pub(crate) struct Variant {
    pub(crate) kind: &'static str,
    pub(crate) value: Option<f32>,
    pub(crate) feature: Option<String>,
    pub(crate) null: Option<String>,
    /// A feature's variants run only at the hook its direction lives at.
    pub(crate) only_at: Option<HookPoint>,
    pub(crate) concepts: Vec<String>,
    pub(crate) amplifier: Box<dyn Amplifier>,
}

impl ScopePlan<'_> {
    /// The variants of every `[[amplifier]]`; `sigma` holds the typical norm of h per hook for
    /// `probe` `add` without a σ of its own.
    pub(crate) fn variants(&self, sigma: &BTreeMap<HookPoint, f32>) -> Result<Vec<Variant>> {
        let mut variants = Vec::new();
        let source_hooks: Vec<HookPoint> = self.source_hooks();
        for (i, spec) in self.config.amplifiers.iter().enumerate() {
            let at = |field: &str| format!("amplifier[{i}] ({}).{field}", spec.kind());
            let plain = |kind: &'static str,
                         value: Option<f32>,
                         null: Option<String>,
                         amplifier: Box<dyn Amplifier>| Variant {
                kind,
                value,
                feature: None,
                null,
                only_at: None,
                concepts: Vec::new(),
                amplifier,
            };
            match spec {
                AmplifierConfig::None {} => variants.push(plain("none", None, None, Box::new(Plain))),
                AmplifierConfig::Scale { .. } => {
                    for alpha in spec.values_or(&[3.0, 6.0, 9.0, 12.0, 15.0]) {
                        variants.push(plain("scale", Some(alpha), None, Box::new(Scale { alpha })));
                    }
                }
                AmplifierConfig::Cfg { nulls, .. } => {
                    let names: Vec<String> = if nulls.is_empty() {
                        self.nulls.keys().cloned().collect()
                    } else {
                        nulls.clone()
                    };
                    for name in &names {
                        if !self.nulls.contains_key(name) {
                            return Err(Error::config(
                                &at("nulls"),
                                format!(
                                    "no null prompt named '{name}'; the [null] table has {:?}",
                                    self.nulls.keys().collect::<Vec<_>>()
                                ),
                            ));
                        }
                    }
                    // Labels name the null prompt only when there is a choice to tell apart.
                    let labelled = self.nulls.len() > 1;
                    for s in spec.values_or(&[1.0, 2.0, 4.0, 8.0]) {
                        for name in &names {
                            let null_name = if labelled { name.clone() } else { String::new() };
                            variants.push(plain(
                                "cfg",
                                Some(s),
                                Some(name.clone()),
                                Box::new(Cfg { s, null_name }),
                            ));
                        }
                    }
                }
                AmplifierConfig::Sae {
                    feature: name,
                    mode,
                    max_activation,
                    ..
                } => {
                    let feature = self.feature_for(name, spec.kind(), i, &source_hooks)?;
                    let (sae, latent, path) = feature.sae_latent(&at("feature"), "amplify")?;
                    for value in spec.values_or(&[4.0, 8.0]) {
                        let sae_mode = match mode {
                            SaeAmplifierMode::Scale => SaeMode::Scale { alpha: value },
                            SaeAmplifierMode::Clamp => {
                                let recorded = match max_activation {
                                    Some(_) => None,
                                    None => feature.recorded_max_activation()?,
                                };
                                let max_activation = max_activation.or(recorded).ok_or_else(|| {
                                    Error::config(
                                        &at("max_activation"),
                                        format!(
                                            "clamping needs latent {latent}'s largest activation: run `loupe sae top --sae {} --store <its store>` \
                                             (it is then read from top/top.json), or give max_activation = <value>",
                                            path.display()
                                        ),
                                    )
                                })?;
                                SaeMode::Clamp {
                                    c: value,
                                    max_activation,
                                }
                            }
                        };
                        let amplifier = SaeFeature::new(&feature.name, Arc::clone(sae), latent, sae_mode)?;
                        variants.push(feature_variant("sae", value, feature, Box::new(amplifier)));
                    }
                }
                AmplifierConfig::Probe {
                    feature: name,
                    mode,
                    sigma: given_sigma,
                    ..
                } => {
                    let feature = self.feature_for(name, spec.kind(), i, &source_hooks)?;
                    for value in spec.values_or(&[4.0, 8.0]) {
                        let probe_mode = match mode {
                            ProbeAmplifierMode::Scale => ProbeMode::Scale { alpha: value },
                            ProbeAmplifierMode::Add => ProbeMode::Add {
                                alpha: value,
                                sigma: given_sigma
                                    .or_else(|| sigma.get(&feature.hook).copied())
                                    .unwrap_or(1.0),
                            },
                        };
                        let amplifier =
                            ProbeDirection::new(&feature.name, feature.direction.clone(), probe_mode)?;
                        variants.push(feature_variant("probe", value, feature, Box::new(amplifier)));
                    }
                }
            }
        }
        let mut labels = HashSet::new();
        for v in &variants {
            if !labels.insert(v.amplifier.label()) {
                return Err(Error::config(
                    "amplifier",
                    format!(
                        "'{}' is asked for twice; each variant must be unique",
                        v.amplifier.label()
                    ),
                ));
            }
        }
        Ok(variants)
    }

    /// The feature an `sae` or `probe` amplifier names, checked against the sweep's hooks.
    fn feature_for(
        &self,
        name: &str,
        kind: &str,
        index: usize,
        source_hooks: &[HookPoint],
    ) -> Result<&Feature> {
        let field = format!("amplifier[{index}] ({kind}).feature");
        let feature = self.features.iter().find(|f| f.name == name).ok_or_else(|| {
            Error::config(
                &field,
                format!(
                    "no feature '{name}' in the book; it has {:?} (`loupe features list`)",
                    self.features.iter().map(|f| &f.name).collect::<Vec<_>>()
                ),
            )
        })?;
        if source_hooks.contains(&feature.hook) {
            return Ok(feature);
        }
        let site_hook = source_hooks[0];
        let site_width = self.model.width(site_hook)?;
        let message = if feature.hook.layer().map(|l| self.source_hook(l)) != Some(feature.hook) {
            format!(
                "feature '{name}' lives at {} ({} wide), but this sweep patches {} ({} wide): set source.site to match, \
                 or give the feature a site in the book (a probe on mlp.hook_post can be moved to hook_mlp_out or hook_resid_post)",
                feature.hook,
                feature.direction.len(),
                site_hook,
                site_width
            )
        } else {
            let what = match feature.source {
                FeatureSource::Sae { .. } => "an SAE latent",
                FeatureSource::Probe { .. } => "a probe direction",
                _ => "a direction",
            };
            format!(
                "feature '{name}' is {what} for {}, layer {}, but the sweep's source layers are {:?}: add that layer \
                 to source.layers, or use a feature trained at one of them",
                feature.hook,
                feature.hook.layer().unwrap_or(0),
                self.config.source.layers
            )
        };
        Err(Error::mismatch(message))
    }
}

impl Variant {
    pub(crate) fn applies_at(&self, hook: HookPoint) -> bool {
        self.only_at.is_none_or(|h| h == hook)
    }
}

/// A variant that amplifies a named feature: it applies only at the feature's hook.
fn feature_variant(
    kind: &'static str,
    value: f32,
    feature: &Feature,
    amplifier: Box<dyn Amplifier>,
) -> Variant {
    Variant {
        kind,
        value: Some(value),
        feature: Some(feature.name.clone()),
        null: None,
        only_at: Some(feature.hook),
        concepts: feature.concepts.clone(),
        amplifier,
    }
}
