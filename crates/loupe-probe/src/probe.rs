//! A saved probe: `<name>.safetensors` with the tensors `neurons` (u32 `[k]`), `weights`
//! (f32 `[k]`), `bias` (f32 `[1]`) and, when the probe standardises its inputs, `mean` and `std`
//! (f32 `[k]`), and everything else (feature, hook, model, metrics) as JSON under the metadata key
//! `loupe_probe`; beside it `<name>.json`, the same in one human-readable file. Written atomically.
//!
//! The probe's score of an activation vector `x` (the hook's full width) is
//! `bias + Σⱼ weights[j] · (x[neurons[j]] − mean[j]) / std[j]`; positive means "has the feature".

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use loupe_model::HookPoint;
use loupe_util::Problems as _;
use loupe_util::SafetensorsFile;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::dataset::ClassBalance;
use crate::features::Level;
use crate::matrix::Standardization;
use crate::metrics::Metrics;
use crate::{Error, Result};

const METADATA_KEY: &str = "loupe_probe";

/// What a probe is and how well it does (the JSON metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// The feature's name.
    pub feature: String,
    /// Token-level or document-level.
    pub level: Level,
    /// The hook point the probe reads.
    pub hook: HookPoint,
    /// Width of the hook (neuron indices are below it).
    pub width: usize,
    /// The name the model was loaded by when the store was captured.
    pub model_name: String,
    /// sha256 of the model's weights; a probe is used only with the same weights.
    pub model_sha256: String,
    /// The store the probe was trained on.
    pub store: PathBuf,
    /// The ranking that chose the neurons, or `exact`.
    pub method: String,
    /// Number of neurons the probe reads.
    pub k: usize,
    /// scikit-learn's C of the L2 logistic regression.
    pub c: f64,
    /// Metrics on the held-out documents.
    pub held_out: Metrics,
    /// Metrics on the training examples.
    pub train: Metrics,
    /// Positive and negative examples on each side of the split.
    pub balance: ClassBalance,
}

/// A trained sparse linear probe: a logistic regression on `k` neurons of one hook point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What it is and how well it does.
    pub info: ProbeInfo,
    /// The neurons it reads, as indices into the hook's width, `[k]`.
    pub neurons: Vec<u32>,
    /// One weight per neuron (on the standardised value when `mean`/`std` are set), `[k]`.
    pub weights: Vec<f32>,
    /// The intercept; the score is a logit, positive meaning "has the feature".
    pub bias: f32,
    /// Per-neuron training mean subtracted before weighting, `[k]`; `None` when not standardised.
    pub mean: Option<Vec<f32>>,
    /// Per-neuron training standard deviation divided by, `[k]`; `None` when not standardised.
    pub std: Option<Vec<f32>>,
}

impl Probe {
    /// The probe's logit for one activation vector of the hook's width.
    pub fn score(&self, x: &[f32]) -> f64 {
        let (w, b) = self.direction();
        b as f64 + w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum::<f64>()
    }

    /// The probe as a direction in the hook's space (full width, zero off its neurons) and a
    /// bias, standardisation folded in: `score(x) = direction · x + bias`.
    pub fn direction(&self) -> (Vec<f32>, f32) {
        let mut direction = vec![0.0f32; self.info.width];
        let mut bias = self.bias as f64;
        for (j, (&n, &w)) in self.neurons.iter().zip(&self.weights).enumerate() {
            let (mean, std) = match (&self.mean, &self.std) {
                (Some(m), Some(s)) => (m[j] as f64, s[j] as f64),
                _ => (0.0, 1.0),
            };
            direction[n as usize] += (w as f64 / std) as f32;
            bias -= w as f64 * mean / std;
        }
        (direction, bias as f32)
    }

    /// The probe's mean and standard deviation, `[k]` each and indexed like `neurons` (not by neuron
    /// index, unlike the per-column [`Standardization`] of a sweep); `None` when not standardised.
    pub fn standardization(&self) -> Option<Standardization> {
        match (&self.mean, &self.std) {
            (Some(m), Some(s)) => Some(Standardization {
                mean: m.iter().map(|&v| v as f64).collect(),
                std: s.iter().map(|&v| v as f64).collect(),
            }),
            _ => None,
        }
    }

    /// Writes `<stem>.safetensors` and `<stem>.json`.
    pub fn save(&self, stem: &Path) -> Result<()> {
        let path = stem.with_extension("safetensors");
        let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors: Vec<(&str, Vec<u8>, Dtype, usize)> = vec![
            (
                "neurons",
                self.neurons.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::U32,
                self.neurons.len(),
            ),
            (
                "weights",
                f32_bytes(&self.weights),
                Dtype::F32,
                self.weights.len(),
            ),
            ("bias", f32_bytes(&[self.bias]), Dtype::F32, 1),
        ];
        if let (Some(mean), Some(std)) = (&self.mean, &self.std) {
            tensors.push(("mean", f32_bytes(mean), Dtype::F32, mean.len()));
            tensors.push(("std", f32_bytes(std), Dtype::F32, std.len()));
        }
        let views = tensors
            .iter()
            .map(|(name, bytes, dtype, len)| {
                Ok((
                    name.to_string(),
                    TensorView::new(*dtype, vec![*len], bytes).map_err(|e| Error::file(&path, e))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let info = serde_json::to_string(&self.info).expect("probe info serializes");
        let metadata = HashMap::from([(METADATA_KEY.to_string(), info)]);
        let (bytes, _) = loupe_util::digest::seal(views, metadata).map_err(|e| Error::file(&path, e))?;
        loupe_util::write_atomically(&path, &bytes)?;
        let json = serde_json::to_string_pretty(self).expect("a probe serializes");
        loupe_util::write_atomically(&stem.with_extension("json"), json.as_bytes())?;
        Ok(())
    }

    /// Reads a probe from its `.safetensors` file (or the stem, or the `.json` beside it), its
    /// checksum and every tensor's shape checked first.
    pub fn load(path: &Path) -> Result<Probe> {
        let path = path.with_extension("safetensors");
        if !path.is_file() {
            return Err(Error::file(&path, "no such file; is this a probe file?"));
        }
        let file = SafetensorsFile::open(&path)?;
        let bad = |what: String| Error::file(&path, format!("not a loupe probe: {what}"));
        let info_json = file
            .metadata(METADATA_KEY)?
            .ok_or_else(|| bad(format!("no '{METADATA_KEY}' metadata")))?;
        let info: ProbeInfo = serde_json::from_str(&info_json).map_err(|e| bad(e.to_string()))?;
        let names = file.names()?;
        let words = |name: &str, dtype: Dtype, len: usize| -> Result<Option<Vec<[u8; 4]>>> {
            if !names.iter().any(|n| n == name) {
                return Ok(None);
            }
            let t = file.tensor(name, dtype, &[Some(len)])?;
            Ok(Some(
                t.data()
                    .chunks_exact(4)
                    .map(|b| b.try_into().expect("4 bytes"))
                    .collect(),
            ))
        };
        let required = |name: &str, dtype: Dtype, len: usize| {
            words(name, dtype, len)?.ok_or_else(|| bad(format!("no '{name}' tensor")))
        };
        let f32s = |w: Vec<[u8; 4]>| w.into_iter().map(f32::from_le_bytes).collect::<Vec<_>>();
        let k = info.k;
        let neurons: Vec<u32> = required("neurons", Dtype::U32, k)?
            .into_iter()
            .map(u32::from_le_bytes)
            .collect();
        if let Some(&n) = neurons.iter().find(|&&n| n as usize >= info.width) {
            return Err(bad(format!(
                "neuron {n} is outside the hook's width {}",
                info.width
            )));
        }
        Ok(Probe {
            neurons,
            weights: f32s(required("weights", Dtype::F32, k)?),
            bias: f32s(required("bias", Dtype::F32, 1)?)[0],
            mean: words("mean", Dtype::F32, k)?.map(f32s),
            std: words("std", Dtype::F32, k)?.map(f32s),
            info,
        })
    }
}
