//! EleutherAI sparsify's file layout: one directory per hook point, named by the model's module
//! (`layers.15`, `layers.6.mlp`), holding `cfg.json` (`d_in`, `num_latents` or
//! `expansion_factor`, `k`, `activation`, `transcode`, `skip_connection`, ...) and
//! `sae.safetensors` (`encoder.weight` `[num_latents, d_in]`, `encoder.bias`, `W_dec`
//! `[num_latents, d_in]`, `b_dec`, and `W_skip` for skip connections).
//!
//! A sparsify TopK SAE computes `acts = TopK(ReLU((x − b_dec) · encoder.weightᵀ + encoder.bias))`
//! and `x̂ = acts · W_dec + b_dec`: loupe's TopK SAE with b_dec subtracted from the input, so such
//! a directory loads as an ordinary [`Sae`] (`saelens::load` reads it too) and loupe's TopK SAEs
//! save to it.
//!
//! A transcoder (`transcode = true`, in a module's directory such as `layers.6.mlp`) reads the
//! module's input and reconstructs its output, without b_dec subtracted from the input; with
//! `skip_connection = true` it adds `x · W_skipᵀ` (`W_skip [d_in, d_in]`). For an MLP module in a
//! Llama-style model the input is `blocks.L.ln2.hook_normalized` and the output
//! `blocks.L.hook_mlp_out`. loupe's TopK transcoders save to this layout.

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

/// The hooks a sparsify transcoder of module `name` reads and writes: the MLP's input and output.
/// Transcoders of other modules have no hook point of loupe's on their input side.
pub fn transcoder_hooks_of_module(name: &str) -> Option<(HookPoint, HookPoint)> {
    match hook_of_module(name)? {
        HookPoint::MlpOut(layer) => Some((HookPoint::Ln2Normalized(layer), HookPoint::MlpOut(layer))),
        _ => None,
    }
}

/// Reads the SAE (or transcoder) in sparsify directory `dir`. Its hooks are taken from the
/// directory's name ([`hook_of_module`], [`transcoder_hooks_of_module`]); the model is not
/// recorded in sparsify's files.
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
    let flag = |name: &str| cfg.get(name).and_then(Value::as_bool) == Some(true);
    let (transcode, skip) = (flag("transcode"), flag("skip_connection"));
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
    let module = name.as_str();
    let (hook_name, hook_name_out) = if transcode {
        let (input, output) = transcoder_hooks_of_module(module).ok_or_else(|| {
            Error::file(
                &cfg_path,
                format!(
                    "transcode = true in directory {name:?}: loupe reads transcoders of MLP modules (layers.N.mlp), \
                     whose input is blocks.N.ln2.hook_normalized and output blocks.N.hook_mlp_out"
                ),
            )
        })?;
        (input.to_string(), Some(output.to_string()))
    } else {
        let hook = hook_of_module(module).map(|h| h.to_string()).unwrap_or_default();
        (hook, None)
    };
    let sae = Sae {
        activation: Activation::TopK { k },
        d_in,
        d_sae,
        w_enc: encoder.t()?.contiguous()?,
        b_enc: take("encoder.bias")?,
        w_dec: take("W_dec")?,
        b_dec: take("b_dec")?,
        w_skip: if skip { Some(take("W_skip")?) } else { None },
        apply_b_dec_to_input: !transcode,
        metadata: SaeMetadata {
            hook_name,
            hook_name_out,
            trained_architecture: Some(
                if transcode {
                    "topk transcoder (sparsify)"
                } else {
                    "topk (sparsify)"
                }
                .into(),
            ),
            ..SaeMetadata::default()
        },
    };
    sae.check_shapes(&cfg_path.display().to_string())?;
    Ok(sae)
}

/// Writes a TopK SAE with b_dec subtracted from its input, or a TopK transcoder of an MLP
/// (what sparsify computes), into `dir` in sparsify's layout, atomically. Other SAEs are
/// refused: sparsify could not run them.
pub fn save(sae: &Sae, dir: &Path) -> Result<()> {
    let Activation::TopK { k } = sae.activation else {
        return Err(Error::config(
            "format",
            "sparsify's layout holds TopK SAEs only; save this SAE in SAELens's layout",
        ));
    };
    let transcode = sae.is_transcoder();
    if transcode {
        let mlp = sae
            .metadata
            .hook_name
            .parse::<HookPoint>()
            .ok()
            .zip(sae.output_hook_name().parse::<HookPoint>().ok());
        if !matches!(mlp, Some((HookPoint::Ln2Normalized(a), HookPoint::MlpOut(b))) if a == b) {
            return Err(Error::config(
                "format",
                format!(
                    "sparsify's transcoders stand for one MLP (blocks.L.ln2.hook_normalized → blocks.L.hook_mlp_out); \
                     this one maps {} → {}: save it in SAELens's layout",
                    sae.metadata.hook_name,
                    sae.output_hook_name()
                ),
            ));
        }
    } else if !sae.apply_b_dec_to_input {
        return Err(Error::config(
            "format",
            "sparsify subtracts b_dec from the input before encoding, and this SAE does not: save it in SAELens's layout",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
    let mut tensors: HashMap<&str, Tensor> = HashMap::from([
        ("encoder.weight", sae.w_enc.t()?.contiguous()?),
        ("encoder.bias", sae.b_enc.clone()),
        ("W_dec", sae.w_dec.clone()),
        ("b_dec", sae.b_dec.clone()),
    ]);
    if let Some(w_skip) = &sae.w_skip {
        tensors.insert("W_skip", w_skip.clone());
    }
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
        "skip_connection": sae.w_skip.is_some(),
        "transcode": transcode,
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
