//! One config struct per probe run (`loupe probe train --config configs/probe-lang.toml`), read
//! from TOML with every top-level field overridable from the command line (`--set max_tokens=5000`).

use std::path::PathBuf;

use loupe_model::HookPoint;
use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::features::FeatureSpec;
use crate::rank::{RankOptions, Ranking};
use crate::sweep::{ExactOptions, SweepOptions, DEFAULT_KS};
use crate::{Error, Result};

/// A probe training run (`loupe probe train`): the stores and hooks to read, the features to probe,
/// and the settings of the k sweep. Read from TOML with [`ProbeConfig::from_toml`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Activation stores: one holding every layer, or one per layer.
    pub stores: Vec<PathBuf>,
    /// The hooks to probe; default every hook of every store.
    #[serde(default)]
    pub hooks: Option<Vec<HookPoint>>,
    /// Where probes, summaries and TensorBoard event files go.
    pub output: PathBuf,
    /// Tokens read from each store (its first ones); default all.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Fraction of documents held out for the metrics.
    #[serde(default = "default_held_out")]
    pub held_out: f64,
    /// Seeds the document split and every sample.
    #[serde(default)]
    pub seed: u64,
    /// Standardise each neuron before ranking and fitting.
    #[serde(default = "default_true")]
    pub standardize: bool,
    /// Inverse L2 strength of the logistic regression, as scikit-learn's `C`.
    #[serde(default = "default_c")]
    pub c: f64,
    /// The neuron rankings swept over k; default all four (see [`Ranking`]).
    #[serde(default = "default_rankings")]
    pub rankings: Vec<Ranking>,
    /// The k sweep; default 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 32, 64, 128, 256 capped by the
    /// width. Listed explicitly, every k must fit the width.
    #[serde(default)]
    pub ks: Option<Vec<usize>>,
    /// Training examples of the L1 path (a seeded sample).
    #[serde(default = "default_l1_rows")]
    pub l1_rows: usize,
    /// Neurons the L1 path follows before it stops.
    #[serde(default = "default_l1_path_neurons")]
    pub l1_path_neurons: usize,
    /// The exhaustive search over sets of 1 to `exact.max_k` neurons (`[exact]` section).
    #[serde(default)]
    pub exact: ExactOptions,
    /// The features to probe, one `[[feature]]` section each.
    #[serde(rename = "feature")]
    pub features: Vec<FeatureSpec>,
}

fn default_held_out() -> f64 {
    0.2
}
fn default_true() -> bool {
    true
}
fn default_c() -> f64 {
    1.0
}
fn default_rankings() -> Vec<Ranking> {
    Ranking::ALL.to_vec()
}
fn default_l1_rows() -> usize {
    RankOptions::default().l1_rows
}
fn default_l1_path_neurons() -> usize {
    RankOptions::default().l1_path_neurons
}

impl ProbeConfig {
    /// Parses a TOML config with `overrides` (`field=value`, dotted for a section's field:
    /// `exact.max_k=2`) applied on top; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let config: ProbeConfig = loupe_util::config::parse(text, origin, overrides)
            .map_err(|e| loupe_util::config::name_owner(e, crate::features::FEATURE_FIELD_KINDS))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what deserialization cannot: an output directory, at least one store and feature,
    /// `held_out` strictly between 0 and 1, a positive finite `c`, something to fit, and k values ≥ 1.
    pub fn validate(&self) -> Result<()> {
        if self.output.as_os_str().is_empty() {
            return Err(Error::config(
                "output",
                "is empty: name the run directory to write",
            ));
        }
        if self.stores.is_empty() {
            return Err(Error::config("stores", "name at least one activation store"));
        }
        if self.features.is_empty() {
            return Err(Error::config("feature", "add at least one [[feature]] section"));
        }
        if !(self.held_out > 0.0 && self.held_out < 1.0) {
            return Err(Error::config(
                "held_out",
                format!("{} is not a fraction between 0 and 1", self.held_out),
            ));
        }
        if !(self.c > 0.0 && self.c.is_finite()) {
            return Err(Error::config(
                "c",
                "the inverse regularisation strength must be positive",
            ));
        }
        if self.rankings.is_empty() && self.exact.max_k == 0 {
            return Err(Error::config(
                "rankings",
                "no ranking and no exact search: nothing to fit",
            ));
        }
        if let Some(ks) = &self.ks {
            if ks.is_empty() || ks.contains(&0) {
                return Err(Error::config("ks", "list k values of at least 1"));
            }
        }
        Ok(())
    }

    /// The k values for a hook `width` wide: the explicit list (each must fit), or the default
    /// sweep capped by the width.
    pub fn ks_for(&self, hook: HookPoint, width: usize) -> Result<Vec<usize>> {
        match &self.ks {
            Some(ks) => {
                if let Some(&k) = ks.iter().find(|&&k| k > width) {
                    return Err(Error::config(
                        "ks",
                        format!("k = {k} is larger than {hook}, which has {width} neurons; list k values up to {width}"),
                    ));
                }
                Ok(ks.clone())
            }
            None => Ok(DEFAULT_KS.iter().copied().filter(|&k| k <= width).collect()),
        }
    }

    /// The sweep settings of this config, with the k values `ks` (see [`ProbeConfig::ks_for`]).
    pub fn sweep_options(&self, ks: Vec<usize>) -> SweepOptions {
        SweepOptions {
            ks,
            rankings: self.rankings.clone(),
            standardize: self.standardize,
            c: self.c,
            rank: RankOptions {
                l1_rows: self.l1_rows,
                l1_path_neurons: self.l1_path_neurons,
                seed: self.seed,
                ..RankOptions::default()
            },
            exact: self.exact.clone(),
        }
    }
}
