//! EleutherAI sparsify's file layout: one directory per hook point, named by the model's module
//! (`layers.15`, `layers.6.mlp`), holding `cfg.json` (`d_in`, `num_latents` or
//! `expansion_factor`, `k`, `activation`, `transcode`, `skip_connection`, ...) and
//! `sae.safetensors` (`encoder.weight` `[num_latents, d_in]`, `encoder.bias`, `W_dec`
//! `[num_latents, d_in]`, `b_dec`, and `W_skip` for skip connections).
//!
//! A sparsify TopK SAE computes `acts = TopK(ReLU((x − b_dec) · encoder.weightᵀ + encoder.bias))`
//! and `x̂ = acts · W_dec + b_dec`: loupe's TopK SAE with b_dec subtracted from the input, so such
//! a directory loads as an ordinary [`Sae`] (`saelens::load` reads it too) and loupe's TopK SAEs
//! save to it. Transcoders and skip connections (sparsify's `transcode`, `skip_connection`) read
//! one hook and write another, which loupe's `Sae` does not model yet: they are refused by name.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use loupe_model::HookPoint;
use loupe_util::Problems as _;
use serde_json::{json, Value};

use crate::{Activation, Error, Result, Sae, SaeMetadata};

/// The config file of a sparsify directory.
pub const CFG_FILE: &str = "cfg.json";
/// The weights file of a sparsify directory.
pub const WEIGHTS_FILE: &str = "sae.safetensors";

/// Whether `dir` is laid out as sparsify lays out one hook point's SAE.
pub fn is_sparsify_dir(dir: &Path) -> bool {
    dir.join(CFG_FILE).is_file() && dir.join(WEIGHTS_FILE).is_file()
}

/// The hook point a sparsify directory name stands for in a Llama-style Hugging Face model:
/// `layers.N` is the residual stream after block N, `layers.N.mlp` the MLP's output.
pub fn hook_of_module(name: &str) -> Option<HookPoint> {
    let rest = name
        .strip_prefix("layers.")
        .or_else(|| name.strip_prefix("model.layers."))?;
    let (layer, site) = match rest.split_once('.') {
        Some((layer, site)) => (layer, Some(site)),
        None => (rest, None),
    };
    let layer: usize = layer.parse().ok()?;
    match site {
        None => Some(HookPoint::ResidPost(layer)),
        Some("mlp") => Some(HookPoint::MlpOut(layer)),
        Some(_) => None,
    }
}

/// Reads the SAE in sparsify directory `dir`. Its hook is taken from the directory's name
/// ([`hook_of_module`]); the model is not recorded in sparsify's files.
pub fn load(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join(CFG_FILE);
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| Error::file(&cfg_path, format!("cannot read: {e}")))?;
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::file(&cfg_path, format!("not valid JSON: {e}")))?;
    let uint = |name: &str| cfg.get(name).and_then(Value::as_u64).map(|v| v as usize);
    let d_in = uint("d_in")
        .ok_or_else(|| Error::file(&cfg_path, "field `d_in` is missing or not a whole number"))?;
    let k = uint("k").ok_or_else(|| Error::file(&cfg_path, "field `k` is missing or not a whole number"))?;
    for (flag, what) in [
        ("transcode", "a transcoder (it reads one hook and writes another)"),
        ("skip_connection", "an SAE with a skip connection (W_skip)"),
    ] {
        if cfg.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(Error::file(
                &cfg_path,
                format!("{flag} = true: {what} is not supported yet; loupe reads sparsify's TopK SAEs"),
            ));
        }
    }
    match cfg.get("activation").and_then(Value::as_str) {
        None | Some("topk") => {}
        Some(other) => {
            return Err(Error::file(
                &cfg_path,
                format!("activation {other:?} is not supported; loupe reads sparsify's \"topk\" SAEs"),
            ))
        }
    }

    let mut weights = crate::saelens::WeightsFile::read(&dir.join(WEIGHTS_FILE))?;
    let mut take = |name: &str| weights.take(name);
    let encoder = take("encoder.weight")?;
    let d_sae = encoder.dim(0)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sae = Sae {
        activation: Activation::TopK { k },
        d_in,
        d_sae,
        w_enc: encoder.t()?.contiguous()?,
        b_enc: take("encoder.bias")?,
        w_dec: take("W_dec")?,
        b_dec: take("b_dec")?,
        w_skip: None,
        apply_b_dec_to_input: true,
        metadata: SaeMetadata {
            hook_name: hook_of_module(&name).map(|h| h.to_string()).unwrap_or_default(),
            trained_architecture: Some("topk (sparsify)".into()),
            ..SaeMetadata::default()
        },
    };
    sae.check_shapes(&cfg_path.display().to_string())?;
    Ok(sae)
}

/// Writes a TopK SAE with b_dec subtracted from its input (what sparsify computes) into `dir` in
/// sparsify's layout, atomically. Other SAEs are refused: sparsify could not run them.
pub fn save(sae: &Sae, dir: &Path) -> Result<()> {
    let Activation::TopK { k } = sae.activation else {
        return Err(Error::config(
            "format",
            "sparsify's layout holds TopK SAEs only; save this SAE in SAELens's layout",
        ));
    };
    if !sae.apply_b_dec_to_input {
        return Err(Error::config(
            "format",
            "sparsify subtracts b_dec from the input before encoding, and this SAE does not: save it in SAELens's layout",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let tensors: HashMap<&str, Tensor> = HashMap::from([
        ("encoder.weight", sae.w_enc.t()?.contiguous()?),
        ("encoder.bias", sae.b_enc.clone()),
        ("W_dec", sae.w_dec.clone()),
        ("b_dec", sae.b_dec.clone()),
    ]);
    let mut sorted: Vec<(&str, Tensor)> = tensors.into_iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let weights_path = dir.join(WEIGHTS_FILE);
    let (bytes, _) = loupe_util::digest::seal(sorted, HashMap::new())
        .map_err(|e| Error::file(&weights_path, format!("cannot serialize: {e}")))?;
    loupe_util::write_atomically(&weights_path, &bytes)?;
    // sparsify's SparseCoderConfig fields, and d_in beside them as its save_to_disk writes it.
    let cfg = json!({
        "activation": "topk",
        "expansion_factor": (sae.d_sae / sae.d_in.max(1)).max(1),
        "normalize_decoder": true,
        "num_latents": sae.d_sae,
        "k": k,
        "multi_topk": false,
        "skip_connection": false,
        "transcode": false,
        "d_in": sae.d_in,
    });
    let text = serde_json::to_string_pretty(&cfg).expect("JSON serializes");
    Ok(loupe_util::write_atomically(
        &dir.join(CFG_FILE),
        text.as_bytes(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_map_to_hook_points() {
        assert_eq!(hook_of_module("layers.15"), Some(HookPoint::ResidPost(15)));
        assert_eq!(hook_of_module("layers.6.mlp"), Some(HookPoint::MlpOut(6)));
        assert_eq!(hook_of_module("model.layers.2"), Some(HookPoint::ResidPost(2)));
        assert_eq!(hook_of_module("layers.6.self_attn"), None);
        assert_eq!(hook_of_module("embed_tokens"), None);
    }
}
