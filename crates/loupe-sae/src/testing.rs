//! Helpers for tests and benchmarks: synthetic activations with known sparse structure, a
//! store written from any rows, a measure of how well learned directions match true ones, and an
//! observer that stops training as Ctrl-C does.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use loupe_data::store::{HookInfo, Manifest, ModelInfo, StoreDType};
use loupe_model::HookPoint;
use loupe_util::Problems as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::params::norm;
use crate::Result;

/// Activations built from `n_features` random unit directions in `d` dimensions: each row is a
/// sparse, non-negative combination of them (each feature on with probability
/// `mean_active / n_features`, magnitude uniform in [0.5, 1.5]) plus a little noise.
pub struct Synthetic {
    /// Dimensions of each row.
    pub d: usize,
    /// `[n_features, d]`, unit rows.
    pub directions: Vec<f32>,
    /// `[rows, d]`
    pub rows: Vec<f32>,
}

/// Makes [`Synthetic`] activations: `rows` rows of `d` dimensions from `n_features` random directions,
/// about `mean_active` of them on per row, reproducible from `seed`.
pub fn synthetic(d: usize, n_features: usize, rows: usize, mean_active: f64, seed: u64) -> Synthetic {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut directions: Vec<f32> = (0..n_features * d).map(|_| gaussian(&mut rng)).collect();
    for row in directions.chunks_mut(d) {
        let n = norm(row);
        row.iter_mut().for_each(|v| *v /= n);
    }
    let p = mean_active / n_features as f64;
    let mut data = vec![0.0f32; rows * d];
    for row in data.chunks_mut(d) {
        for f in 0..n_features {
            if rng.random::<f64>() < p {
                let a = rng.random_range(0.5..1.5f32);
                row.iter_mut()
                    .zip(&directions[f * d..][..d])
                    .for_each(|(r, &u)| *r += a * u);
            }
        }
        row.iter_mut().for_each(|r| *r += 0.01 * gaussian(&mut rng));
    }
    Synthetic {
        d,
        directions,
        rows: data,
    }
}

/// A transcoder's synthetic task: inputs and targets made from the same sparse codes through two
/// dictionaries, and, when `linear` is set, a random linear map of the input added to the target
/// (what a skip term learns; see [`synthetic_pair`]).
pub struct SyntheticPair {
    /// The inputs; `directions` are the input dictionary.
    pub input: Synthetic,
    /// `[n_features, d]`, unit rows: the dictionary the targets are made from.
    pub target_directions: Vec<f32>,
    /// `[rows, d]`
    pub target: Vec<f32>,
}

/// Makes a [`SyntheticPair`]: each row's features (as in [`synthetic`]) write their input
/// directions into the input and their target directions into the target. With `linear`, the
/// input also carries dense noise (0.2 per dimension) that no sparse code explains, and the
/// target gets `input · Mᵀ` for a fixed random `M` (entries of size 1/√d): only a linear term
/// reconstructs that part, and it identifies `M`, leaving the target dictionary to the latents.
pub fn synthetic_pair(
    d: usize,
    n_features: usize,
    rows: usize,
    mean_active: f64,
    linear: bool,
    seed: u64,
) -> SyntheticPair {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut unit_rows = |n: usize| -> Vec<f32> {
        let mut m: Vec<f32> = (0..n * d).map(|_| gaussian(&mut rng)).collect();
        for row in m.chunks_mut(d) {
            let n = norm(row);
            row.iter_mut().for_each(|v| *v /= n);
        }
        m
    };
    let (input_directions, target_directions) = (unit_rows(n_features), unit_rows(n_features));
    let map: Vec<f32> = (0..d * d)
        .map(|_| gaussian(&mut rng) / (d as f32).sqrt())
        .collect();
    let input_noise = if linear { 0.2 } else { 0.01 };
    let p = mean_active / n_features as f64;
    let (mut input, mut target) = (vec![0.0f32; rows * d], vec![0.0f32; rows * d]);
    for (x, y) in input.chunks_mut(d).zip(target.chunks_mut(d)) {
        for f in 0..n_features {
            if rng.random::<f64>() < p {
                let a = rng.random_range(0.5..1.5f32);
                x.iter_mut()
                    .zip(&input_directions[f * d..][..d])
                    .for_each(|(r, &u)| *r += a * u);
                y.iter_mut()
                    .zip(&target_directions[f * d..][..d])
                    .for_each(|(r, &u)| *r += a * u);
            }
        }
        x.iter_mut().for_each(|r| *r += input_noise * gaussian(&mut rng));
        y.iter_mut().for_each(|r| *r += 0.01 * gaussian(&mut rng));
        if linear {
            for (o, y_o) in y.iter_mut().enumerate() {
                *y_o += crate::sparse::dot(&map[o * d..][..d], x);
            }
        }
    }
    SyntheticPair {
        input: Synthetic {
            d,
            directions: input_directions,
            rows: input,
        },
        target_directions,
        target,
    }
}

fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// For each true direction, the best cosine similarity with any learned row; their mean.
pub fn mean_max_cosine(truth: &[f32], learned: &[f32], d: usize) -> f64 {
    let learned: Vec<Vec<f32>> = learned
        .chunks(d)
        .map(|r| {
            let n = norm(r).max(1e-12);
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let best: Vec<f64> = truth
        .chunks(d)
        .map(|t| {
            learned
                .iter()
                .map(|l| crate::sparse::dot(t, l) as f64)
                .fold(f64::MIN, f64::max)
        })
        .collect();
    best.iter().sum::<f64>() / best.len() as f64
}

/// Writes `rows` (`[n, d]`) as a complete store at `hook`, `rows_per_context` rows per context
/// and one document per context, made by a model named `model_name`.
pub fn write_store(
    dir: &Path,
    hook: HookPoint,
    d: usize,
    rows: &[f32],
    rows_per_context: usize,
    model_name: &str,
) -> Result<()> {
    write_store_of(dir, &[(hook, rows)], d, rows_per_context, model_name)
}

/// [`write_store`] of several hooks, each with its rows (`[n, d]`, the same tokens in the same
/// order at every hook), as a transcoder trains from.
pub fn write_store_of(
    dir: &Path,
    hooks: &[(HookPoint, &[f32])],
    d: usize,
    rows_per_context: usize,
    model_name: &str,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::file(dir, e))?;
    let rows = hooks[0].1;
    let n = rows.len() / d;
    let contexts_per_shard = 16;
    let mut manifest = Manifest::without_shards(
        ModelInfo {
            name: model_name.into(),
            sha256: format!("sha-of-{model_name}"),
            d_model: d,
        },
        hooks
            .iter()
            .map(|&(name, _)| HookInfo { name, width: d })
            .collect(),
        StoreDType::F32,
        rows_per_context + 1,
    );
    let shard_rows = contexts_per_shard * rows_per_context;
    for (index, chunk) in rows.chunks(shard_rows * d).enumerate() {
        let m = chunk.len() / d;
        let first_value = index * shard_rows * d;
        let first_row = index * shard_rows;
        let first_context = (first_row / rows_per_context) as u64;
        let context_of = |r: usize| ((first_row + r) / rows_per_context) as u32;
        let mut tensors = HashMap::new();
        for &(hook, values) in hooks {
            let chunk = &values[first_value..first_value + m * d];
            tensors.insert(hook.to_string(), Tensor::from_slice(chunk, (m, d), &Device::Cpu)?);
        }
        let ids =
            |f: &dyn Fn(usize) -> u32| Tensor::from_vec((0..m).map(f).collect::<Vec<u32>>(), m, &Device::Cpu);
        tensors.insert("token_ids".into(), ids(&|r| (r % 200) as u32 + 3)?);
        tensors.insert("doc_ids".into(), ids(&context_of)?);
        tensors.insert("context_ids".into(), ids(&context_of)?);
        tensors.insert(
            "positions".into(),
            ids(&|r| ((first_row + r) % rows_per_context) as u32 + 1)?,
        );
        let contexts = m.div_ceil(rows_per_context) as u64;
        manifest.shards.push(loupe_data::store::write_shard(
            dir,
            index,
            &tensors,
            first_context,
            contexts,
        )?);
        manifest.tokens += m as u64;
        manifest.contexts += contexts;
    }
    debug_assert_eq!(manifest.tokens as usize, n);
    manifest.write(dir)?;
    Ok(())
}

/// A small SAE with random weights, made as training makes one (from parameters and a
/// normalisation scale that is folded in on the way), for the SAELens round-trip fixture:
/// `kind` is `relu`, `topk`, `jumprelu` or `matryoshka`.
pub fn fixture_sae(kind: &str, seed: u64) -> Result<crate::Sae> {
    use crate::{Activation, Params, Sae, SaeMetadata};
    let (d_in, d_sae) = (16, 48);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = Params::zeros(d_in, d_sae, false);
    for (_, values) in params.fields_mut() {
        values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0f32));
    }
    let (activation, apply_b_dec) = match kind {
        "relu" => (Activation::Relu, false),
        "topk" => (Activation::TopK { k: 5 }, true),
        "jumprelu" => (
            Activation::JumpRelu {
                threshold: (0..d_sae).map(|_| rng.random_range(0.1..1.0f32)).collect(),
            },
            true,
        ),
        // Saved as Matryoshka BatchTopK is: a JumpReLU with one threshold for every latent.
        "matryoshka" => (
            Activation::JumpRelu {
                threshold: vec![rng.random_range(0.1..1.0f32); d_sae],
            },
            true,
        ),
        other => panic!("no fixture SAE of kind {other}"),
    };
    let metadata = SaeMetadata {
        model_name: "smollm2".into(),
        hook_name: "blocks.15.hook_resid_post".into(),
        hook_name_out: None,
        model_sha256: Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into()),
        context_size: Some(128),
        dataset_path: Some("activations/smollm2-l15".into()),
        trained_architecture: Some(kind.into()),
        norm_cutoff: None,
    };
    Sae::from_params(&params, activation, apply_b_dec, 1.7, metadata)
}

/// A small transcoder with random weights, made as training makes one: parameters trained on
/// inputs × 1.7 and targets × 0.6, both folded in on the way. It reads
/// `blocks.3.ln2.hook_normalized` and writes `blocks.3.hook_mlp_out`; `kind` is `relu`, `topk`
/// or `jumprelu`, and `skip` adds a random skip term.
pub fn fixture_transcoder(kind: &str, skip: bool, seed: u64) -> Result<crate::Sae> {
    use crate::{Activation, Params, Sae, SaeMetadata};
    let (d_in, d_sae) = (16, 48);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = Params::zeros(d_in, d_sae, false);
    if skip {
        params = params.with_zero_skip();
    }
    for (_, values) in params.fields_mut() {
        values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0f32));
    }
    let activation = match kind {
        "relu" => Activation::Relu,
        "topk" => Activation::TopK { k: 5 },
        "jumprelu" => Activation::JumpRelu {
            threshold: (0..d_sae).map(|_| rng.random_range(0.1..1.0f32)).collect(),
        },
        other => panic!("no fixture transcoder of kind {other}"),
    };
    let metadata = SaeMetadata {
        model_name: "smollm2".into(),
        hook_name: "blocks.3.ln2.hook_normalized".into(),
        hook_name_out: Some("blocks.3.hook_mlp_out".into()),
        trained_architecture: Some(kind.into()),
        ..SaeMetadata::default()
    };
    Sae::from_scaled_params(&params, activation, false, 1.7, 0.6, metadata)
}

/// Inputs for the fixture SAEs: `[8, 16]`, at a scale where a fair number of latents fire.
pub fn fixture_input(seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let x: Vec<f32> = (0..8 * 16).map(|_| 2.0 * gaussian(&mut rng)).collect();
    Ok(Tensor::from_vec(x, (8, 16), &Device::Cpu)?)
}

/// A ReLU SAE with weights uniform in [-0.5, 0.5), for a model's `hook` of width `d_in`: a stand-in
/// for a trained SAE in tests that use one (features, amplification).
pub fn random_relu_sae(d_in: usize, d_sae: usize, hook: &str, seed: u64) -> Result<crate::Sae> {
    use crate::{Activation, Params, Sae, SaeMetadata};
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = Params::zeros(d_in, d_sae, false);
    for (_, values) in params.fields_mut() {
        values
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-0.5..0.5f32));
    }
    let metadata = SaeMetadata {
        model_name: "test".into(),
        hook_name: hook.into(),
        hook_name_out: None,
        model_sha256: None,
        context_size: None,
        dataset_path: None,
        trained_architecture: Some("relu".into()),
        norm_cutoff: None,
    };
    Sae::from_params(&params, Activation::Relu, false, 1.0, metadata)
}

/// A training observer that asks to stop once `after` batches are done, as Ctrl-C does.
pub struct StopAfter {
    after: u64,
    batches: Cell<u64>,
}

impl StopAfter {
    /// Stops training after `after` batches.
    pub fn new(after: u64) -> Self {
        StopAfter {
            after,
            batches: Cell::new(0),
        }
    }
}

impl loupe_util::Progress for StopAfter {
    fn advance(&mut self, _n: u64) {
        self.batches.set(self.batches.get() + 1);
    }
    fn should_stop(&self) -> bool {
        self.batches.get() >= self.after
    }
}

impl crate::TrainObserver for StopAfter {}
