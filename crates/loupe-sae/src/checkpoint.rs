//! The trainer's checkpoint: everything needed to continue a run exactly (parameters in the
//! training space, Adam's moments, step, normalisation, dead-latent counters, architecture state,
//! the config), one safetensors file with the scalars as JSON metadata, written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use loupe_util::Problems as _;
use loupe_util::SafetensorsFile;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::{Adam, Error, Params, Result, TrainConfig};

/// The checkpoint's file name in a run directory.
pub const CHECKPOINT_FILE: &str = "trainer_state.safetensors";

/// The scalars of a checkpoint (its JSON metadata).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    /// Optimizer steps taken.
    pub step: u64,
    /// Passes over the training split begun so far (0-based index of the current one).
    pub epoch: u64,
    /// Batches of the current pass already used.
    pub batches_in_epoch: u64,
    /// Where the next batch is in the corpus, for a run that streams from the model
    /// (`source = "model"`): a resumed run starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_position: Option<loupe_data::stream::StreamPosition>,
    /// Activations were multiplied by this during training (a transcoder's inputs).
    pub scale: f32,
    /// A transcoder's targets were multiplied by this during training; `None` for an SAE, whose
    /// target is its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_scale: Option<f32>,
    /// Activations with a larger norm (raw units) are left out; `None` keeps all.
    pub norm_cutoff: Option<f32>,
    /// Input width (the hook's width).
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// Adam's step count (its bias correction depends on it).
    pub adam_t: u64,
    /// What [`Architecture::state`](crate::arch::Architecture::state) returned (BatchTopK's threshold).
    pub architecture_state: Vec<(String, f64)>,
    /// sha256 of the weights of the model the store was captured from.
    pub model_sha256: String,
    /// The run's config; a resumed run must agree with it.
    pub config: TrainConfig,
}

/// Everything needed to continue a training run exactly; saved as [`CHECKPOINT_FILE`].
pub struct Checkpoint {
    /// The scalars, stored as the file's JSON metadata.
    pub info: CheckpointInfo,
    /// The parameters, in the training (normalised) space.
    pub params: Params,
    /// The optimiser with its moments.
    pub adam: Adam,
    /// Training tokens since each latent last fired.
    pub since_fired: Vec<u64>,
}

impl Checkpoint {
    /// Where the checkpoint of the run directory `dir` is.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CHECKPOINT_FILE)
    }

    /// Writes the checkpoint into `dir` atomically, replacing the previous one.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = Vec::new();
        let shape_of = |name: &str, p: &Params| -> Vec<usize> {
            match name {
                "enc" | "dec" => vec![p.d_sae, p.d_in],
                "b_dec" => vec![p.d_in],
                "skip" => vec![p.d_in, p.d_in],
                _ => vec![p.d_sae],
            }
        };
        for (prefix, params) in [
            ("params", &self.params),
            ("adam_m", &self.adam.m),
            ("adam_v", &self.adam.v),
        ] {
            for (name, values) in params.fields() {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                tensors.push((
                    format!("{prefix}.{name}"),
                    bytes,
                    shape_of(name, params),
                    Dtype::F32,
                ));
            }
        }
        let since: Vec<u8> = self.since_fired.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((
            "since_fired".into(),
            since,
            vec![self.since_fired.len()],
            Dtype::U64,
        ));
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, bytes, shape, dtype)| {
                Ok((
                    name.clone(),
                    TensorView::new(*dtype, shape.clone(), bytes).map_err(|e| Error::file(&path, e))?,
                ))
            })
            .collect::<Result<_>>()?;
        let info = serde_json::to_string(&self.info).map_err(|e| Error::file(&path, e))?;
        let metadata = HashMap::from([("loupe_trainer_state".to_string(), info)]);
        let (bytes, _) = loupe_util::digest::seal(views, metadata).map_err(|e| Error::file(&path, e))?;
        loupe_util::write_atomically(&path, &bytes)?;
        Ok(())
    }

    /// The checkpoint in `dir`, if there is one. Its checksum, and every tensor's dtype and shape,
    /// are checked before it is used; a damaged checkpoint is an error, never a silent restart.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        if !path.exists() {
            return Ok(None);
        }
        let advice = "delete it to start the run again (or restore it from a copy)";
        let file = SafetensorsFile::open(&path)?;
        let corrupt =
            |what: String| Error::file(&path, format!("{what}; the checkpoint is damaged: {advice}"));
        let info_json = file
            .metadata("loupe_trainer_state")?
            .ok_or_else(|| corrupt("no loupe_trainer_state metadata".into()))?;
        let info: CheckpointInfo = serde_json::from_str(&info_json).map_err(|e| corrupt(e.to_string()))?;
        if info.d_in == 0 || info.d_sae == 0 {
            return Err(corrupt(format!(
                "it records d_in {} and d_sae {}",
                info.d_in, info.d_sae
            )));
        }
        let (d_in, d_sae) = (info.d_in, info.d_sae);
        let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let shape: Vec<Option<usize>> = shape.iter().map(|&d| Some(d)).collect();
            let t = file
                .tensor(name, Dtype::F32, &shape)
                .map_err(|e| corrupt(e.to_string()))?;
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect())
        };
        let names = file.names()?;
        let with_threshold = names.iter().any(|n| n == "params.log_threshold");
        let with_skip = names.iter().any(|n| n == "params.skip");
        let read_params = |prefix: &str| -> Result<Params> {
            let mut p = Params::zeros(d_in, d_sae, with_threshold);
            if with_skip {
                p = p.with_zero_skip();
            }
            for (name, values) in p.fields_mut() {
                let shape = match name {
                    "enc" | "dec" => vec![d_sae, d_in],
                    "b_dec" => vec![d_in],
                    "skip" => vec![d_in, d_in],
                    _ => vec![d_sae],
                };
                *values = f32s(&format!("{prefix}.{name}"), &shape)?;
            }
            Ok(p)
        };
        let params = read_params("params")?;
        let adam = Adam {
            beta1: info.config.adam_beta1,
            beta2: info.config.adam_beta2,
            eps: info.config.adam_eps,
            t: info.adam_t,
            m: read_params("adam_m")?,
            v: read_params("adam_v")?,
        };
        let since = file
            .tensor("since_fired", Dtype::U64, &[Some(d_sae)])
            .map_err(|e| corrupt(e.to_string()))?;
        let since_fired = since
            .data()
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        if !params.all_finite() || !adam.m.all_finite() || !adam.v.all_finite() {
            return Err(corrupt("it holds NaN or infinite parameters".into()));
        }
        Ok(Some(Checkpoint {
            info,
            params,
            adam,
            since_fired,
        }))
    }
}
