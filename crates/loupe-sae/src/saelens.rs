//! SAE files in the SAELens layout, so that SAELens loads what loupe writes and loupe loads what
//! SAELens (and Gemma Scope) publish: a directory with `cfg.json` and `sae_weights.safetensors`
//! (`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc`, `b_dec`, and `threshold` for
//! JumpReLU), or Gemma Scope's `params.npz` with the same tensor names.
//!
//! Transcoders follow SAELens's transcoder classes: architecture `transcoder` (ReLU) or
//! `jumprelu_transcoder` (also what BatchTopK and Matryoshka transcoders save as), `skip_`
//! before `transcoder` when there is a skip term (`W_skip [d_out, d_in]`), `d_out` beside `d_in`,
//! and the output hook as `metadata.hook_name_out`. SAELens 6 has no TopK transcoder: loupe
//! writes those as `topk_transcoder` / `topk_skip_transcoder`, which loupe reads back and
//! sparsify's layout (whose transcoders are TopK) holds; see `loupe sae export`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use loupe_util::Problems as _;
use serde_json::{json, Value};

use crate::{Activation, Error, Result, Sae, SaeMetadata};

/// SAELens's config file in an SAE directory.
pub const CFG_FILE: &str = "cfg.json";
/// SAELens's weights file in an SAE directory.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// Gemma Scope's weights file (a NumPy archive).
pub const GEMMA_SCOPE_FILE: &str = "params.npz";

/// Writes `sae` into `dir` (created if needed): the weights first, then `cfg.json`, each through
/// a temp file and a rename.
pub fn save(sae: &Sae, dir: &Path) -> Result<()> {
    if sae.w_skip.is_some() && !sae.is_transcoder() {
        // sparsify trains such SAEs (skip_connection without transcode); SAELens has no class.
        return Err(Error::config(
            "format",
            "SAELens has no SAE with a skip term that reads and writes one hook: save it in sparsify's layout",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let mut tensors: Vec<(&str, Tensor)> = vec![
        ("W_enc", sae.w_enc.clone()),
        ("W_dec", sae.w_dec.clone()),
        ("b_enc", sae.b_enc.clone()),
        ("b_dec", sae.b_dec.clone()),
    ];
    if let Activation::JumpRelu { threshold } = &sae.activation {
        tensors.push((
            "threshold",
            Tensor::from_slice(threshold, sae.d_sae, &Device::Cpu)?,
        ));
    }
    if let Some(w_skip) = &sae.w_skip {
        tensors.push(("W_skip", w_skip.clone()));
    }
    let weights = dir.join(WEIGHTS_FILE);
    // Sealed with a checksum in the header metadata, which SAELens ignores.
    let (bytes, _) =
        loupe_util::digest::seal(tensors, HashMap::new()).map_err(|e| Error::file(&weights, e))?;
    loupe_util::write_atomically(&weights, &bytes)?;

    let cfg = serde_json::to_string_pretty(&cfg_json(sae)).map_err(|e| Error::file(dir, e))?;
    loupe_util::write_atomically(&dir.join(CFG_FILE), cfg.as_bytes())?;
    Ok(())
}

/// SAELens's architecture name: the activation's (`standard`, `topk`, `jumprelu`) for an SAE; for
/// a transcoder, `transcoder` after the activation's prefix (none for ReLU), with `skip_` before
/// it when there is a skip term.
fn architecture_name(sae: &Sae) -> String {
    if !sae.is_transcoder() {
        return sae.activation.saelens_name().to_string();
    }
    let prefix = match sae.activation {
        Activation::Relu => "",
        Activation::TopK { .. } => "topk_",
        Activation::JumpRelu { .. } => "jumprelu_",
    };
    let skip = if sae.w_skip.is_some() { "skip_" } else { "" };
    format!("{prefix}{skip}transcoder")
}

/// The `cfg.json` SAELens 6 writes for this SAE.
fn cfg_json(sae: &Sae) -> Value {
    let m = &sae.metadata;
    let mut cfg = json!({
        "architecture": architecture_name(sae),
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            // SAELens reads the nested metadata (hook names included) only from files that say
            // they are in its version 6 layout, as this one is.
            "sae_lens_version": SAELENS_LAYOUT_VERSION,
            "model_name": m.model_name,
            "hook_name": m.hook_name,
            "hook_head_index": null,
            "prepend_bos": false,
            "context_size": m.context_size,
            "dataset_path": m.dataset_path,
            "sae_lens_training_version": null,
            "loupe_version": env!("CARGO_PKG_VERSION"),
            "loupe_model_sha256": m.model_sha256,
            "loupe_architecture": m.trained_architecture,
            "loupe_norm_cutoff": m.norm_cutoff,
        },
    });
    if let Activation::TopK { k } = sae.activation {
        cfg["k"] = json!(k);
        cfg["rescale_acts_by_decoder_norm"] = json!(false);
    }
    if sae.is_transcoder() {
        cfg["d_out"] = json!(sae.d_in);
        cfg["metadata"]["hook_name_out"] = json!(m.hook_name_out);
    }
    cfg
}

/// The SAELens version whose layout `cfg.json` follows (what its loader checks for).
const SAELENS_LAYOUT_VERSION: &str = "6.54.12";

/// Loads an SAE from a SAELens directory (`cfg.json` + `sae_weights.safetensors`) or a Gemma Scope
/// `params.npz` (a file, or a directory holding one), or a sparsify directory (`cfg.json` +
/// `sae.safetensors`, see [`crate::sparsify`]).
pub fn load(path: &Path) -> Result<Sae> {
    if path.is_file() && path.extension().is_some_and(|e| e == "npz") {
        return load_gemma_scope(path);
    }
    if path.is_dir() && !path.join(CFG_FILE).exists() && path.join(GEMMA_SCOPE_FILE).exists() {
        return load_gemma_scope(&path.join(GEMMA_SCOPE_FILE));
    }
    if !path.join(WEIGHTS_FILE).exists() && crate::sparsify::is_sparsify_dir(path) {
        return crate::sparsify::load(path);
    }
    let cfg_path = path.join(CFG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        Error::file(
            &cfg_path,
            format!("cannot read ({e}); an SAE directory holds cfg.json and {WEIGHTS_FILE}"),
        )
    })?;
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, format!("not valid JSON: {e}")))?;
    let origin = cfg_path.display().to_string();
    let field = |name: &str| -> Option<&Value> {
        cfg.get(name)
            .or_else(|| cfg.get("metadata").and_then(|m| m.get(name)))
    };
    let usize_field = |name: &str| -> Result<usize> {
        field(name)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| {
                Error::file(
                    &cfg_path,
                    format!("field `{name}` is missing or not a whole number"),
                )
            })
    };
    let string_field = |name: &str| field(name).and_then(Value::as_str).map(str::to_string);
    let d_in = usize_field("d_in")?;
    let d_sae = usize_field("d_sae")?;
    match string_field("normalize_activations").as_deref() {
        None | Some("none") => {}
        Some(other) => {
            return Err(Error::file(
                &cfg_path,
                format!("normalize_activations = {other:?} is not supported: loupe reads SAEs whose normalisation is folded into the weights (\"none\")"),
            ))
        }
    }

    let mut weights = WeightsFile::read(&path.join(WEIGHTS_FILE))?;
    let mut take = |name: &str| weights.take(name);
    let architecture = string_field("architecture").unwrap_or_else(|| "standard".into());
    // A transcoder's name is its activation's, less SAELens's `standard` for ReLU, then
    // `[skip_]transcoder`.
    let (architecture, transcoder, skip) = match architecture.strip_suffix("transcoder") {
        Some(prefix) => {
            let (prefix, skip) = match prefix.strip_suffix("skip_") {
                Some(p) => (p, true),
                None => (prefix, false),
            };
            let activation = match prefix.strip_suffix('_') {
                Some(name) => name.to_string(),
                None if prefix.is_empty() => "standard".to_string(),
                None => prefix.to_string(),
            };
            (activation, true, skip)
        }
        None => (architecture, false, false),
    };
    if transcoder {
        let d_out = usize_field("d_out")?;
        if d_out != d_in {
            return Err(Error::file(
                &cfg_path,
                format!(
                    "d_out = {d_out} differs from d_in = {d_in}: loupe's transcoders map between hooks of one width"
                ),
            ));
        }
    }
    // SAELens 5 wrote the activation as `activation_fn_str` (+ `activation_fn_kwargs.k`).
    let activation_fn = string_field("activation_fn_str");
    let activation = match (architecture.as_str(), activation_fn.as_deref()) {
        ("topk", _) | ("standard", Some("topk")) => {
            let k = field("k")
                .or_else(|| cfg.get("activation_fn_kwargs").and_then(|k| k.get("k")))
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::file(&cfg_path, "a topk SAE needs `k`"))?;
            Activation::TopK { k: k as usize }
        }
        ("standard", _) => Activation::Relu,
        ("jumprelu", _) => Activation::JumpRelu {
            threshold: take("threshold")?.to_vec1::<f32>()?,
        },
        (other, _) => {
            return Err(Error::file(
                &cfg_path,
                format!(
                    "architecture {other:?} is not supported; loupe reads standard, topk and jumprelu SAEs, \
                     and their transcoders (transcoder, jumprelu_transcoder, topk_transcoder, each also with skip_ \
                     before transcoder)"
                ),
            ))
        }
    };
    let (mut w_enc, mut b_enc, mut w_dec) = (take("W_enc")?, take("b_enc")?, take("W_dec")?);
    if field("rescale_acts_by_decoder_norm").and_then(Value::as_bool) == Some(true) {
        // SAELens then scales each pre-activation by its decoder row's norm n and divides the
        // activation by n before decoding; folding n into the weights computes the same.
        let n = w_dec.sqr()?.sum(1)?.sqrt()?;
        w_enc = w_enc.broadcast_mul(&n.unsqueeze(0)?)?;
        b_enc = (b_enc * &n)?;
        w_dec = w_dec.broadcast_div(&n.unsqueeze(1)?)?;
    }
    let sae = Sae {
        activation,
        d_in,
        d_sae,
        w_enc,
        b_enc,
        w_dec,
        b_dec: take("b_dec")?,
        w_skip: if skip { Some(take("W_skip")?) } else { None },
        // SAELens's transcoders never subtract b_dec (it lives at the output hook).
        apply_b_dec_to_input: !transcoder
            && field("apply_b_dec_to_input")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        metadata: SaeMetadata {
            model_name: string_field("model_name").unwrap_or_default(),
            hook_name: string_field("hook_name").unwrap_or_default(),
            hook_name_out: if transcoder {
                Some(string_field("hook_name_out").ok_or_else(|| {
                    Error::file(
                        &cfg_path,
                        "a transcoder needs `metadata.hook_name_out`, the hook it writes (e.g. blocks.3.hook_mlp_out)",
                    )
                })?)
            } else {
                None
            },
            model_sha256: string_field("loupe_model_sha256"),
            context_size: field("context_size").and_then(Value::as_u64).map(|v| v as usize),
            dataset_path: string_field("dataset_path"),
            trained_architecture: string_field("loupe_architecture"),
            norm_cutoff: field("loupe_norm_cutoff")
                .and_then(Value::as_f64)
                .map(|v| v as f32),
        },
    };
    sae.check_shapes(&origin)?;
    Ok(sae)
}

/// An SAE's weights file, read whole: verified against its checksum (when loupe wrote it)
/// before any tensor is built, then handed out tensor by tensor as f32.
pub(crate) struct WeightsFile {
    path: std::path::PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl WeightsFile {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        loupe_util::SafetensorsFile::open(path)?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("cannot read SAE weights: {e}")))?;
        Ok(WeightsFile {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Tensor `name` as f32, or an error naming the file and the tensor.
    pub(crate) fn take(&mut self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::file(&self.path, format!("tensor `{name}` is missing")))?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// Gemma Scope's `params.npz`: JumpReLU, b_dec not subtracted from the input. It names no model
/// or hook; the caller says which.
fn load_gemma_scope(path: &Path) -> Result<Sae> {
    let tensors: HashMap<String, Tensor> = Tensor::read_npz(path)
        .map_err(|e| Error::file(path, format!("cannot read as npz: {e}")))?
        .into_iter()
        .collect();
    let get = |name: &str| -> Result<Tensor> {
        Ok(tensors
            .get(name)
            .ok_or_else(|| Error::file(path, format!("array `{name}` is missing (Gemma Scope files hold W_enc, W_dec, b_enc, b_dec, threshold)")))?
            .to_dtype(DType::F32)?)
    };
    let w_enc = get("W_enc")?;
    let (d_in, d_sae) = w_enc.dims2()?;
    let sae = Sae {
        activation: Activation::JumpRelu {
            threshold: get("threshold")?.to_vec1::<f32>()?,
        },
        d_in,
        d_sae,
        w_enc,
        b_enc: get("b_enc")?,
        w_dec: get("W_dec")?,
        b_dec: get("b_dec")?,
        w_skip: None,
        apply_b_dec_to_input: false,
        metadata: SaeMetadata::default(),
    };
    sae.check_shapes(&path.display().to_string())?;
    Ok(sae)
}
