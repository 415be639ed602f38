//! A scope run checked before it starts: [`ScopePlan::new`] tokenizes the prompts, resolves the
//! features and matches them to the sweep's hooks, and builds every variant once, so that
//! everything that can be wrong with a config is found before any forward pass.

use std::collections::BTreeMap;

use loupe_model::{HookPoint, Model};
use loupe_util::Problems as _;

use crate::config::{ScopeConfig, TargetLayer};
use crate::features::{load_book, Feature};
use crate::target::target_prompt_text;
use crate::{Error, Result};

/// A checked scope run: prompts tokenized, features resolved and matched to the sweep's hooks.
pub struct ScopePlan<'a> {
    pub(crate) model: &'a Model,
    /// The config the plan was checked from.
    pub config: ScopeConfig,
    /// The source prompts, inline and from `prompts_file`, in run order.
    pub sources: Vec<String>,
    /// Per source, the answers an attribute-extraction task accepts (empty: none given).
    pub(crate) answers: Vec<Vec<String>>,
    pub(crate) source_ids: Vec<Vec<u32>>,
    pub(crate) target_ids: Vec<u32>,
    /// The patched position in the target prompt.
    pub target_position: usize,
    pub(crate) nulls: BTreeMap<String, Vec<u32>>,
    pub(crate) features: Vec<Feature>,
}

impl<'a> ScopePlan<'a> {
    /// Checks `config` against `model`: every error a run could meet in its settings, before any
    /// generation.
    pub fn new(config: &ScopeConfig, model: &'a Model) -> Result<Self> {
        let n_layers = model.n_layers();
        if config.source.layers.is_empty() {
            return Err(Error::config(
                "source.layers",
                "give at least one layer, e.g. [1, 2, 3]",
            ));
        }
        let check_layer = |layer: usize, field: &str| -> Result<()> {
            if layer < n_layers {
                return Ok(());
            }
            Err(Error::config(
                field,
                format!(
                    "layer {layer} does not exist: {} has layers 0 to {}",
                    model.name,
                    n_layers - 1
                ),
            ))
        };
        for &layer in &config.source.layers {
            check_layer(layer, "source.layers")?;
        }
        if let TargetLayer::Fixed(layer) = config.target.layer {
            check_layer(layer, "target.layer")?;
        }
        if config.generate.max_new_tokens == 0 || config.generate.batch_rows == 0 {
            return Err(Error::config(
                "generate",
                "max_new_tokens and batch_rows must be at least 1",
            ));
        }

        let (sources, answers): (Vec<String>, Vec<Vec<String>>) =
            config.source_prompts_with_answers()?.into_iter().unzip();
        let mut source_ids = Vec::with_capacity(sources.len());
        for (i, prompt) in sources.iter().enumerate() {
            let ids = model
                .encode_prompt(prompt)
                .map_err(|e| Error::config(&format!("source prompt {i} ({prompt:?})"), e))?;
            config
                .source
                .position
                .resolve(ids.len(), "source.position", prompt)?;
            source_ids.push(ids);
        }

        let target_text = target_prompt_text(&config.target.prompt);
        if target_text.trim().is_empty() {
            return Err(Error::config(
                "target.prompt",
                "the target prompt is empty; name a built-in one (identity, entity_description) or give text",
            ));
        }
        let target_ids = model
            .encode_prompt(target_text)
            .map_err(|e| Error::config("target.prompt", e))?;
        let target_position =
            config
                .target
                .position
                .resolve(target_ids.len(), "target.position", target_text)?;

        let mut nulls = BTreeMap::new();
        for (name, text) in &config.null {
            let ids = null_prompt_ids(model, name, text)?;
            nulls.insert(name.clone(), ids);
        }

        let needs_book = config.amplifiers.iter().any(|a| a.feature().is_some());
        let features = match (&config.features, needs_book) {
            (Some(path), true) => load_book(path, model)?,
            (None, true) => {
                return Err(Error::config(
                    "features",
                    "an amplifier names a feature: give the feature book, features = \"configs/features-smollm2.toml\"",
                ))
            }
            _ => Vec::new(),
        };
        let plan = ScopePlan {
            model,
            config: config.clone(),
            sources,
            answers,
            source_ids,
            target_ids,
            target_position,
            nulls,
            features,
        };
        // Build every variant once with a stand-in σ, so that amplifier errors surface now.
        plan.variants(&BTreeMap::new())?;
        Ok(plan)
    }

    /// The label of every variant, in config order.
    pub fn variant_labels(&self) -> Result<Vec<String>> {
        Ok(self
            .variants(&BTreeMap::new())?
            .iter()
            .map(|v| v.amplifier.label())
            .collect())
    }

    /// The concept words of each feature an amplifier names.
    pub fn feature_concepts(&self) -> BTreeMap<String, Vec<String>> {
        self.config
            .amplifiers
            .iter()
            .filter_map(|a| a.feature())
            .filter_map(|name| self.features.iter().find(|f| f.name == name))
            .map(|f| (f.name.clone(), f.concepts.clone()))
            .collect()
    }

    /// The description of each feature an amplifier names that has one: every generation is
    /// scored against each (`ScopeRecord::concept_scores`).
    pub fn feature_descriptions(&self) -> BTreeMap<String, String> {
        self.config
            .amplifiers
            .iter()
            .filter_map(|a| a.feature())
            .filter_map(|name| self.features.iter().find(|f| f.name == name))
            .filter_map(|f| Some((f.name.clone(), f.description.clone()?)))
            .collect()
    }

    /// The hook the sweep reads at `layer`.
    pub fn source_hook(&self, layer: usize) -> HookPoint {
        self.config.source.site.hook(layer)
    }

    /// The hooks the sweep reads, one per source layer, in the config's order.
    pub fn source_hooks(&self) -> Vec<HookPoint> {
        self.config
            .source
            .layers
            .iter()
            .map(|&l| self.source_hook(l))
            .collect()
    }

    /// The hook patched for source layer `layer`.
    pub fn target_hook(&self, layer: usize) -> HookPoint {
        match self.config.target.layer {
            TargetLayer::Source => self.config.source.site.hook(layer),
            TargetLayer::Fixed(target) => self.config.source.site.hook(target),
        }
    }

    /// Rows the full sweep generates (variants × layers × sources, features at their layer only).
    pub fn total_rows(&self) -> Result<usize> {
        let variants = self.variants(&BTreeMap::new())?;
        let per_source: usize = self
            .config
            .source
            .layers
            .iter()
            .map(|&l| {
                variants
                    .iter()
                    .filter(|v| v.applies_at(self.source_hook(l)))
                    .count()
            })
            .sum();
        Ok(per_source * self.sources.len())
    }
}

/// The token ids of null prompt `name`: `text`, or the BOS token alone for "" (Superscopes'
/// default null prompt).
pub(crate) fn null_prompt_ids(model: &Model, name: &str, text: &str) -> Result<Vec<u32>> {
    if text.is_empty() {
        let bos = model.tokenizer.bos().ok_or_else(|| {
            Error::config(
                &format!("null.{name}"),
                format!("{} has no BOS token; give the null prompt some text", model.name),
            )
        })?;
        return Ok(vec![bos]);
    }
    model
        .encode_prompt(text)
        .map_err(|e| Error::config(&format!("null.{name}"), e))
}
