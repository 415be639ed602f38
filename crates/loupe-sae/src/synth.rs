//! A synthetic ground-truth benchmark, after SynthSAEBench (SAELens): activations made from a
//! known dictionary, so that what an SAE recovers can be scored against the truth.
//!
//! The world ([`World`]): `features` unit directions in `d_model` dimensions, drawn at random
//! (more features than dimensions: superposition). They form a forest of depth one: `parents`
//! root features, each with `children_per_parent` children that fire only with their parent and
//! at most one at a time (mutually exclusive, as SynthSAEBench's hierarchies are). Root firing
//! probabilities fall off as a Zipf law over the roots (`p_r ∝ (r + 1)^−zipf_exponent`), scaled so
//! that a token has `target_l0` active features on average; given its parent, a child is picked
//! with the same Zipf law over its siblings, with probability `child_fires`. Roots are also
//! correlated in groups of `group_size`: each group has a hidden coin per token, and its roots
//! fire with probability `p·(1 + correlation)` on heads and `p·(1 − correlation)` on tails (the
//! same `p` on average). An active feature's magnitude is folded normal, `|N(magnitude_mean,
//! magnitude_std)|`; a token's activation is the sum of its active features' magnitudes times
//! their directions, plus Gaussian noise of `noise_std` per dimension.
//!
//! Tokens are drawn in chunks, each from its own seeded generator, so a token is the same
//! whichever way it is asked for, and chunks are drawn in parallel.
//!
//! [`score`] matches an SAE's decoder rows to the true features one to one (the Hungarian
//! algorithm on their cosines) and reports the mean matched cosine (MCC), each matched latent's
//! F1 as a detector of its feature on fresh tokens, and the dead and duplicated latents.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use loupe_data::store::{write_shard, HookInfo, Manifest, ModelInfo, StoreDType};
use loupe_model::HookPoint;
use loupe_util::Problems as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::sparse::dot;
use crate::{Error, Result, Sae};

/// Tokens drawn from one generator (see the module docs).
const CHUNK: usize = 1024;
/// The generator stream of training tokens; evaluation draws from another.
const TRAIN_STREAM: u64 = 0;
const EVAL_STREAM: u64 = 1;

/// The synthetic world's settings (the `[data]` table of a synth config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Width of the activations.
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    /// Root features.
    #[serde(default = "default_parents")]
    pub parents: usize,
    /// Children of each root; features = parents × (1 + children_per_parent).
    #[serde(default = "default_children")]
    pub children_per_parent: usize,
    /// Mean active features per token.
    #[serde(default = "default_target_l0")]
    pub target_l0: f64,
    /// Exponent of the Zipf law of firing probabilities (over roots, and over siblings).
    #[serde(default = "default_zipf")]
    pub zipf_exponent: f64,
    /// Probability that one child fires when its parent does.
    #[serde(default = "default_child_fires")]
    pub child_fires: f64,
    /// Roots per correlated group.
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// How strongly a group's roots fire together, 0 (independent) to 1.
    #[serde(default = "default_correlation")]
    pub correlation: f64,
    /// Mean of the normal whose absolute value is a feature's magnitude.
    #[serde(default = "default_one")]
    pub magnitude_mean: f64,
    /// Its standard deviation.
    #[serde(default = "default_magnitude_std")]
    pub magnitude_std: f64,
    /// Standard deviation of the Gaussian noise added to each dimension.
    #[serde(default)]
    pub noise_std: f64,
    /// Training tokens written to the store.
    #[serde(default = "default_tokens")]
    pub tokens: usize,
    /// Seeds the directions and every token.
    #[serde(default)]
    pub seed: u64,
}

fn default_d_model() -> usize {
    128
}
fn default_parents() -> usize {
    64
}
fn default_children() -> usize {
    15
}
fn default_target_l0() -> f64 {
    12.0
}
fn default_zipf() -> f64 {
    0.5
}
fn default_child_fires() -> f64 {
    0.5
}
fn default_group_size() -> usize {
    4
}
fn default_correlation() -> f64 {
    0.3
}
fn default_one() -> f64 {
    1.0
}
fn default_magnitude_std() -> f64 {
    0.5
}
fn default_tokens() -> usize {
    1 << 21
}

impl SynthConfig {
    /// All features: roots and their children.
    pub fn features(&self) -> usize {
        self.parents * (1 + self.children_per_parent)
    }
}

/// Tokens drawn from a [`World`]: activations and, per token, its active features.
pub struct Sample {
    /// `[tokens, d_model]`.
    pub rows: Vec<f32>,
    /// Per token: (feature, magnitude) of each active feature.
    pub active: Vec<Vec<(u32, f32)>>,
}

/// A synthetic world (see the module docs).
#[derive(Clone, Debug)]
pub struct World {
    /// Its settings.
    pub config: SynthConfig,
    /// `[features, d_model]` unit rows: roots first, then the children of root 0, of root 1, ...
    pub directions: Vec<f32>,
    /// Each root's firing probability.
    pub root_probability: Vec<f64>,
    /// Cumulative probabilities of picking each child, given that one fires.
    child_cumulative: Vec<f64>,
}

impl World {
    /// The world `config` describes, or an error naming the setting that cannot work.
    pub fn new(config: &SynthConfig) -> Result<World> {
        let c = config;
        for (field, value) in [
            ("d_model", c.d_model),
            ("parents", c.parents),
            ("group_size", c.group_size),
            ("tokens", c.tokens),
        ] {
            if value == 0 {
                return Err(Error::config(&format!("data.{field}"), "must be at least 1"));
            }
        }
        let fraction = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::config(
                    &format!("data.{field}"),
                    format!("is {v}; it must lie in [0, 1]"),
                ))
            }
        };
        fraction("child_fires", c.child_fires)?;
        fraction("correlation", c.correlation)?;
        if !(c.target_l0 > 0.0 && c.magnitude_std >= 0.0 && c.noise_std >= 0.0 && c.zipf_exponent >= 0.0) {
            return Err(Error::config(
                "data",
                "target_l0 must be positive, and zipf_exponent, magnitude_std and noise_std not negative",
            ));
        }
        let zipf =
            |n: usize| -> Vec<f64> { (0..n).map(|i| ((i + 1) as f64).powf(-c.zipf_exponent)).collect() };
        let weights = zipf(c.parents);
        let children_per_root = if c.children_per_parent > 0 {
            c.child_fires
        } else {
            0.0
        };
        let scale = c.target_l0 / ((1.0 + children_per_root) * weights.iter().sum::<f64>());
        let root_probability: Vec<f64> = weights.iter().map(|w| w * scale).collect();
        let most = root_probability[0] * (1.0 + c.correlation);
        if most > 1.0 {
            return Err(Error::config(
                "data.target_l0",
                format!(
                    "{} needs the most frequent root to fire with probability {most:.2} (with the \
                     correlation boost), above 1: lower target_l0 or zipf_exponent, or add parents",
                    c.target_l0
                ),
            ));
        }
        let sibling = zipf(c.children_per_parent);
        let total: f64 = sibling.iter().sum();
        let child_cumulative = sibling
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();

        let mut rng = StdRng::seed_from_u64(c.seed);
        let normal = Normal::new(0.0f32, 1.0).expect("a unit normal");
        let mut directions: Vec<f32> = (0..c.features() * c.d_model)
            .map(|_| normal.sample(&mut rng))
            .collect();
        for row in directions.chunks_mut(c.d_model) {
            let n = dot(row, row).sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= n);
        }
        Ok(World {
            config: c.clone(),
            directions,
            root_probability,
            child_cumulative,
        })
    }

    /// Tokens `start..start + tokens` of generator stream `stream`; `start` must be a multiple of
    /// 1024 (a chunk).
    pub fn sample(&self, stream: u64, start: usize, tokens: usize) -> Sample {
        assert_eq!(start % CHUNK, 0, "samples start at a chunk");
        let d = self.config.d_model;
        let mut rows = vec![0f32; tokens * d];
        let mut active = vec![Vec::new(); tokens];
        rows.par_chunks_mut(CHUNK * d)
            .zip(active.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, (rows, active))| {
                let chunk = (start / CHUNK + i) as u64;
                let seed = self.config.seed ^ (stream << 48) ^ chunk.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rng = StdRng::seed_from_u64(seed);
                for (row, active) in rows.chunks_mut(d).zip(active) {
                    self.draw(&mut rng, row, active);
                }
            });
        Sample { rows, active }
    }

    /// One token: which features fire, their magnitudes, and their sum into `row`.
    fn draw(&self, rng: &mut StdRng, row: &mut [f32], active: &mut Vec<(u32, f32)>) {
        let c = &self.config;
        let magnitude =
            Normal::new(c.magnitude_mean, c.magnitude_std.max(f64::MIN_POSITIVE)).expect("a normal");
        let mut heads = false;
        for (root, &p) in self.root_probability.iter().enumerate() {
            if root % c.group_size == 0 {
                heads = rng.random_bool(0.5);
            }
            let p = p * if heads {
                1.0 + c.correlation
            } else {
                1.0 - c.correlation
            };
            if rng.random::<f64>() >= p {
                continue;
            }
            active.push((root as u32, magnitude.sample(rng).abs() as f32));
            if c.children_per_parent > 0 && rng.random::<f64>() < c.child_fires {
                let u: f64 = rng.random();
                let child = self
                    .child_cumulative
                    .partition_point(|&q| q < u)
                    .min(c.children_per_parent - 1);
                let feature = c.parents + root * c.children_per_parent + child;
                active.push((feature as u32, magnitude.sample(rng).abs() as f32));
            }
        }
        for &(feature, m) in active.iter() {
            let direction = &self.directions[feature as usize * c.d_model..][..c.d_model];
            row.iter_mut().zip(direction).for_each(|(x, v)| *x += m * v);
        }
        if c.noise_std > 0.0 {
            let noise = Normal::new(0.0, c.noise_std as f32).expect("a normal");
            row.iter_mut().for_each(|x| *x += noise.sample(rng));
        }
    }

    /// Writes the training tokens as an activation store at `hook` (128 rows per context, each
    /// context a document). Ctrl-C (through `progress`) stops it with an error before the
    /// manifest is written, so no partial store is taken for a whole one.
    pub fn write_store(
        &self,
        dir: &Path,
        hook: HookPoint,
        progress: &mut dyn loupe_util::Progress,
    ) -> Result<()> {
        const CONTEXT: usize = 128;
        const SHARD_CONTEXTS: usize = 64;
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        let d = self.config.d_model;
        let mut manifest = Manifest::without_shards(
            ModelInfo {
                name: "synthetic".into(),
                sha256: loupe_data::import::IMPORTED_SHA256.into(),
                d_model: d,
            },
            vec![HookInfo { name: hook, width: d }],
            StoreDType::F32,
            CONTEXT + 1,
        );
        let shard_rows = CONTEXT * SHARD_CONTEXTS;
        let n = self.config.tokens;
        progress.start("synthetic tokens", n as u64, 0);
        for (index, start) in (0..n).step_by(shard_rows).enumerate() {
            if progress.should_stop() {
                return Err(Error::file(
                    dir,
                    format!("stopped after {start} of {n} tokens, before the manifest: run the same command again"),
                ));
            }
            let rows = shard_rows.min(n - start);
            let sample = self.sample(TRAIN_STREAM, start, rows);
            let column = |f: &dyn Fn(usize) -> u32| {
                Tensor::from_vec(
                    (start..start + rows).map(f).collect::<Vec<u32>>(),
                    rows,
                    &Device::Cpu,
                )
            };
            let mut tensors = HashMap::new();
            tensors.insert(
                hook.to_string(),
                Tensor::from_vec(sample.rows, (rows, d), &Device::Cpu)?,
            );
            tensors.insert("token_ids".to_string(), column(&|_| 0)?);
            tensors.insert("doc_ids".to_string(), column(&|r| (r / CONTEXT) as u32)?);
            tensors.insert("context_ids".to_string(), column(&|r| (r / CONTEXT) as u32)?);
            tensors.insert("positions".to_string(), column(&|r| (r % CONTEXT) as u32 + 1)?);
            let shard = write_shard(
                dir,
                index,
                &tensors,
                (start / CONTEXT) as u64,
                rows.div_ceil(CONTEXT) as u64,
            )?;
            manifest.tokens += shard.tokens;
            manifest.contexts += shard.contexts;
            manifest.shards.push(shard);
            progress.advance(rows as u64);
        }
        manifest.write(dir)?;
        Ok(())
    }

    /// Saves the ground truth, sealed: tensor `directions` `[features, d_model]`, the settings as
    /// JSON under metadata key `loupe_synth_config`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = &self.config;
        let directions = Tensor::from_slice(&self.directions, (c.features(), c.d_model), &Device::Cpu)?;
        let metadata = HashMap::from([(
            CONFIG_KEY.to_string(),
            serde_json::to_string(c).expect("the settings serialize"),
        )]);
        let (bytes, _) = loupe_util::digest::seal([("directions", directions)], metadata)
            .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))?;
        Ok(loupe_util::write_atomically(path, &bytes)?)
    }

    /// The world a ground-truth file was saved from (rebuilt from its settings, and checked
    /// against its directions).
    pub fn load(path: &Path) -> Result<World> {
        let file = loupe_util::SafetensorsFile::open(path)?;
        let json = file.metadata(CONFIG_KEY)?.ok_or_else(|| {
            Error::file(
                path,
                format!("has no {CONFIG_KEY}: is it a loupe synthetic ground truth?"),
            )
        })?;
        let config: SynthConfig = serde_json::from_str(&json)
            .map_err(|e| Error::file(path, format!("{CONFIG_KEY} is not valid: {e}")))?;
        let world = World::new(&config)?;
        let view = file.tensor(
            "directions",
            safetensors::Dtype::F32,
            &[Some(config.features()), Some(config.d_model)],
        )?;
        let saved: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if saved != world.directions {
            return Err(Error::file(
                path,
                "its directions differ from those its settings make: it was written by another loupe version's generator",
            ));
        }
        Ok(world)
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            d_model: default_d_model(),
            parents: default_parents(),
            children_per_parent: default_children(),
            target_l0: default_target_l0(),
            zipf_exponent: default_zipf(),
            child_fires: default_child_fires(),
            group_size: default_group_size(),
            correlation: default_correlation(),
            magnitude_mean: default_one(),
            magnitude_std: default_magnitude_std(),
            noise_std: 0.0,
            tokens: default_tokens(),
            seed: 0,
        }
    }
}

/// The hook point a synthetic store files its activations under.
pub const SYNTH_HOOK: HookPoint = HookPoint::ResidPost(0);

/// A synthetic benchmark (`loupe sae synth --config`): a world, and the SAEs to train on it and
/// score. Everything lands in `output`: the store (`store/`), the ground truth
/// (`truth.safetensors`), one ordinary run directory per SAE (`runs/<name>/`) and the scores
/// (`report.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthBenchConfig {
    /// The benchmark's directory.
    pub output: std::path::PathBuf,
    /// Fresh tokens each SAE is scored on.
    #[serde(default = "default_eval_tokens")]
    pub eval_tokens: usize,
    /// The world.
    #[serde(default)]
    pub data: SynthConfig,
    /// Training settings every run shares (any `TrainConfig` field but store, hook and output).
    #[serde(default)]
    pub train: toml::Table,
    /// The SAEs: each a `name` and the training settings that differ from `[train]`.
    pub run: Vec<toml::Table>,
    /// Each run is trained this many times, with training seeds 0, 1, ...: the scores are
    /// reported as mean ± standard deviation (a single seed's comparison can mislead).
    #[serde(default = "default_seeds")]
    pub seeds: usize,
}

fn default_seeds() -> usize {
    1
}

fn default_eval_tokens() -> usize {
    16_384
}

impl SynthBenchConfig {
    /// Reads a benchmark config; `origin` names it in errors, `overrides` are `field=value`.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let config: SynthBenchConfig = loupe_util::config::parse(text, origin, overrides)?;
        if config.run.is_empty() {
            return Err(Error::config(
                "run",
                "no [[run]] tables: name at least one SAE to train",
            ));
        }
        config.runs(origin)?;
        Ok(config)
    }

    /// Every training run: each `[[run]]` once per seed, its full training config made of
    /// `[train]`, then the run's own settings, then the store, hook, run directory and seed.
    pub fn runs(&self, origin: &str) -> Result<Vec<SynthRun>> {
        let mut runs = Vec::new();
        for (name, settings) in crate::config::named_runs(&self.run, "its directory under runs/")? {
            let mut merged = self.train.clone();
            merged.extend(settings);
            for reserved in ["store", "hook", "output"] {
                if merged.contains_key(reserved) {
                    return Err(Error::config(
                        reserved,
                        "is set by the benchmark (its store and runs/<name>): remove it from [train] and [[run]]",
                    ));
                }
            }
            if self.seeds > 1 && merged.contains_key("seed") {
                return Err(Error::config(
                    "seed",
                    "is set by the benchmark when seeds > 1 (seed i trains with seed i): remove it",
                ));
            }
            merged.insert(
                "store".into(),
                self.output.join("store").display().to_string().into(),
            );
            merged.insert("hook".into(), SYNTH_HOOK.to_string().into());
            for seed in 0..self.seeds.max(1) {
                let directory = if self.seeds > 1 {
                    format!("{name}-seed{seed}")
                } else {
                    name.clone()
                };
                let mut merged = merged.clone();
                merged.insert(
                    "output".into(),
                    self.output
                        .join("runs")
                        .join(&directory)
                        .display()
                        .to_string()
                        .into(),
                );
                if self.seeds > 1 {
                    merged.insert("seed".into(), toml::Value::Integer(seed as i64));
                }
                let config = crate::TrainConfig::from_table(&merged, &format!("{origin} [[run]] {name}"))?;
                runs.push(SynthRun {
                    name: name.clone(),
                    seed,
                    config,
                });
            }
        }
        Ok(runs)
    }
}

/// One training run of a synthetic benchmark: a `[[run]]` at one seed.
#[derive(Clone, Debug)]
pub struct SynthRun {
    /// The `[[run]]`'s name.
    pub name: String,
    /// Which of the benchmark's seeds (0 when it has one).
    pub seed: usize,
    /// Its training config (its directory is `runs/<name>`, or `runs/<name>-seed<i>` with seeds).
    pub config: crate::TrainConfig,
}

/// The metadata key of a ground-truth file's settings.
const CONFIG_KEY: &str = "loupe_synth_config";

/// How well an SAE recovered a [`World`]'s features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthScores {
    /// Mean cosine of the one-to-one (Hungarian) matched decoder rows and true features.
    pub mcc: f64,
    /// Mean over true features of the F1 of its matched latent (latent > 0) as a detector of the
    /// feature, on fresh tokens; features that never fire there and whose latent never does
    /// either are left out.
    pub detection_f1: f64,
    /// Fraction of latents that never fire on the evaluation tokens.
    pub dead_fraction: f64,
    /// Fraction of latents whose decoder row has cosine above 0.9 with another live latent's.
    pub duplicated_fraction: f64,
    /// 1 − Σ‖x − x̂‖² / Σ‖x − mean‖² on the evaluation tokens.
    pub explained_variance: f64,
    /// Mean active latents per evaluation token.
    pub l0: f64,
    /// Matched pairs: min(features, d_sae).
    pub matched: usize,
    /// Evaluation tokens.
    pub tokens: usize,
}

/// Cosine above which two latents count as duplicates.
const DUPLICATE_COSINE: f32 = 0.9;

/// Scores `sae` against `world` on `tokens` fresh tokens (see [`SynthScores`]).
pub fn score(sae: &Sae, world: &World, tokens: usize) -> Result<SynthScores> {
    let d = world.config.d_model;
    if sae.d_in != d {
        return Err(Error::config(
            "sae",
            format!(
                "has input width {}, but the synthetic activations are {d} wide",
                sae.d_in
            ),
        ));
    }
    let features = world.config.features();
    let n_sae = sae.d_sae;
    let sample = world.sample(EVAL_STREAM, 0, tokens);
    let x = Tensor::from_slice(&sample.rows, (tokens, d), &Device::Cpu)?;
    let acts: Vec<f32> = sae.encode(&x)?.flatten_all()?.to_vec1()?;
    let recon: Vec<f32> = sae
        .decode(&Tensor::from_slice(&acts, (tokens, n_sae), &Device::Cpu)?)?
        .flatten_all()?
        .to_vec1()?;

    // Unit decoder rows, and their cosines with the true directions: [features, d_sae].
    let mut decoder: Vec<f32> = sae.w_dec.flatten_all()?.to_vec1()?;
    for row in decoder.chunks_mut(d) {
        let n = dot(row, row).sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    let unit = Tensor::from_slice(&decoder, (n_sae, d), &Device::Cpu)?;
    let truth = Tensor::from_slice(&world.directions, (features, d), &Device::Cpu)?;
    let cosines: Vec<f32> = truth.matmul(&unit.t()?)?.flatten_all()?.to_vec1()?;
    let pairs = match_one_to_one(&cosines, features, n_sae);
    let mcc = pairs
        .iter()
        .map(|&(f, l)| cosines[f * n_sae + l] as f64)
        .sum::<f64>()
        / pairs.len().max(1) as f64;

    // Detection F1 of each matched latent for its feature.
    let fires = |t: usize, latent: usize| acts[t * n_sae + latent] > 0.0;
    let mut truth_by_feature: Vec<Vec<u32>> = vec![Vec::new(); features];
    for (t, active) in sample.active.iter().enumerate() {
        for &(f, _) in active {
            truth_by_feature[f as usize].push(t as u32);
        }
    }
    let f1s: Vec<f64> = pairs
        .par_iter()
        .filter_map(|&(feature, latent)| {
            let truth = &truth_by_feature[feature];
            let predicted = (0..tokens).filter(|&t| fires(t, latent)).count();
            let hits = truth.iter().filter(|&&t| fires(t as usize, latent)).count();
            let (positives, predicted) = (truth.len(), predicted);
            (positives + predicted > 0).then(|| 2.0 * hits as f64 / (positives + predicted) as f64)
        })
        .collect();
    let detection_f1 = f1s.iter().sum::<f64>() / f1s.len().max(1) as f64;

    let live: Vec<bool> = (0..n_sae).map(|l| (0..tokens).any(|t| fires(t, l))).collect();
    let dead_fraction = live.iter().filter(|&&l| !l).count() as f64 / n_sae as f64;
    let similarity: Vec<f32> = unit.matmul(&unit.t()?)?.flatten_all()?.to_vec1()?;
    let duplicated = (0..n_sae)
        .filter(|&a| {
            live[a] && (0..n_sae).any(|b| b != a && live[b] && similarity[a * n_sae + b] > DUPLICATE_COSINE)
        })
        .count();

    let mean: Vec<f64> = (0..d)
        .map(|j| {
            sample
                .rows
                .iter()
                .skip(j)
                .step_by(d)
                .map(|&v| v as f64)
                .sum::<f64>()
                / tokens as f64
        })
        .collect();
    let total: f64 = sample
        .rows
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 - mean[i % d]).powi(2))
        .sum();
    let error: f64 = sample
        .rows
        .iter()
        .zip(&recon)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let active_latents = acts.iter().filter(|&&a| a > 0.0).count();
    Ok(SynthScores {
        mcc,
        detection_f1,
        dead_fraction,
        duplicated_fraction: duplicated as f64 / n_sae as f64,
        explained_variance: 1.0 - error / total.max(f64::MIN_POSITIVE),
        l0: active_latents as f64 / tokens as f64,
        matched: pairs.len(),
        tokens,
    })
}

/// The one-to-one matching of features to latents that maximises the sum of their cosines
/// (`cosines` is `[features, latents]`), as (feature, latent) pairs: the Hungarian algorithm
/// (`pathfinding`'s Kuhn-Munkres, on cosines in millionths) over the shorter side.
fn match_one_to_one(cosines: &[f32], features: usize, latents: usize) -> Vec<(usize, usize)> {
    let weight = |f: usize, l: usize| (cosines[f * latents + l] as f64 * 1e6).round() as i64;
    if features <= latents {
        let matrix = pathfinding::matrix::Matrix::from_fn(features, latents, |(f, l)| weight(f, l));
        let (_, assignment) = pathfinding::kuhn_munkres::kuhn_munkres(&matrix);
        assignment.into_iter().enumerate().collect()
    } else {
        let matrix = pathfinding::matrix::Matrix::from_fn(latents, features, |(l, f)| weight(f, l));
        let (_, assignment) = pathfinding::kuhn_munkres::kuhn_munkres(&matrix);
        assignment.into_iter().enumerate().map(|(l, f)| (f, l)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            d_model: 16,
            parents: 8,
            children_per_parent: 3,
            target_l0: 3.0,
            zipf_exponent: 0.5,
            child_fires: 0.5,
            group_size: 4,
            correlation: 0.3,
            magnitude_mean: 1.0,
            magnitude_std: 0.5,
            noise_std: 0.0,
            tokens: 4096,
            seed: 3,
        }
    }

    #[test]
    fn tokens_follow_the_configured_law() {
        let world = World::new(&small()).unwrap();
        let sample = world.sample(TRAIN_STREAM, 0, 40_960);
        let l0 = sample.active.iter().map(Vec::len).sum::<usize>() as f64 / 40_960.0;
        assert!((l0 - 3.0).abs() < 0.1, "mean active features {l0}");
        for active in &sample.active {
            // A child fires only with its parent, and siblings exclude one another.
            let roots: Vec<u32> = active.iter().map(|&(f, _)| f).filter(|&f| f < 8).collect();
            let children: Vec<u32> = active.iter().map(|&(f, _)| f).filter(|&f| f >= 8).collect();
            for child in &children {
                assert!(roots.contains(&((child - 8) / 3)));
            }
            let mut parents: Vec<u32> = children.iter().map(|c| (c - 8) / 3).collect();
            parents.dedup();
            assert_eq!(parents.len(), children.len());
            assert!(active.iter().all(|&(_, m)| m >= 0.0));
        }
        // The same token whichever way it is asked for.
        let again = world.sample(TRAIN_STREAM, 2048, 1024);
        assert_eq!(again.rows, sample.rows[2048 * 16..3072 * 16]);
    }

    #[test]
    fn the_true_dictionary_scores_perfectly_and_a_random_one_does_not() {
        use crate::{Activation, Params, SaeMetadata};
        let world = World::new(&small()).unwrap();
        let (d, n) = (16, world.config.features());
        let metadata = SaeMetadata {
            model_name: "synthetic".into(),
            hook_name: "blocks.0.hook_resid_post".into(),
            hook_name_out: None,
            model_sha256: None,
            context_size: None,
            dataset_path: None,
            trained_architecture: None,
            norm_cutoff: None,
        };
        // Decoder = the true directions (shuffled); encoder = a matched filter with a threshold,
        // which detects features imperfectly in superposition: the MCC is exact, the F1 is not.
        let mut params = Params::zeros(d, n, false);
        let order: Vec<usize> = (0..n).rev().collect();
        for (latent, &feature) in order.iter().enumerate() {
            let row = &world.directions[feature * d..][..d];
            params.dec[latent * d..][..d].copy_from_slice(row);
            params.enc[latent * d..][..d].copy_from_slice(row);
        }
        let threshold = vec![0.5f32; n];
        let sae = Sae::from_params(
            &params,
            Activation::JumpRelu { threshold },
            false,
            1.0,
            metadata.clone(),
        )
        .unwrap();
        let exact = score(&sae, &world, 4096).unwrap();
        assert!((exact.mcc - 1.0).abs() < 1e-6, "{exact:?}");

        let mut random = Params::zeros(d, n, false);
        let mut rng = StdRng::seed_from_u64(9);
        for v in random.dec.iter_mut().chain(random.enc.iter_mut()) {
            *v = rng.random_range(-1.0..1.0);
        }
        let sae = Sae::from_params(&random, Activation::Relu, false, 1.0, metadata).unwrap();
        let chance = score(&sae, &world, 4096).unwrap();
        assert!(chance.mcc < 0.7 && chance.mcc < exact.mcc - 0.2, "{chance:?}");
        assert!(
            exact.detection_f1 > chance.detection_f1 + 0.2,
            "{exact:?} vs {chance:?}"
        );
    }

    #[test]
    fn impossible_settings_are_named() {
        let mut c = small();
        c.target_l0 = 40.0;
        let e = World::new(&c).unwrap_err().to_string();
        assert!(e.contains("data.target_l0") && e.contains("above 1"), "{e}");
        c = small();
        c.correlation = 1.5;
        assert!(World::new(&c)
            .unwrap_err()
            .to_string()
            .contains("data.correlation"));
    }
}
