use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A place in the forward pass where an activation can be captured or changed, named as
/// TransformerLens names it (`blocks.15.hook_resid_post`), so that configs, SAELens `cfg.json`
/// files and papers all speak one language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (after any embedding scale).
    Embed,
    /// `blocks.L.hook_resid_pre`: the residual stream entering block L.
    ResidPre(usize),
    /// `blocks.L.hook_attn_out`: the attention output of block L (after the output projection).
    AttnOut(usize),
    /// `blocks.L.hook_resid_mid`: the residual stream after attention, before the MLP.
    ResidMid(usize),
    /// `blocks.L.mlp.hook_post`: the MLP neurons, the input of the down projection
    /// (act(gate)·up for gated MLPs). Its width is the MLP width, not the model width.
    MlpPost(usize),
    /// `blocks.L.hook_mlp_out`: the MLP output of block L.
    MlpOut(usize),
    /// `blocks.L.hook_resid_post`: the residual stream leaving block L (= `hook_resid_pre` of L+1).
    ResidPost(usize),
}

/// The hook point names, with `L` for the layer, in forward order.
const NAME_TEMPLATES: &str = "hook_embed, blocks.L.hook_resid_pre, blocks.L.hook_attn_out, \
blocks.L.hook_resid_mid, blocks.L.mlp.hook_post, blocks.L.hook_mlp_out, blocks.L.hook_resid_post";

impl HookPoint {
    /// The block this hook point belongs to; `None` for `hook_embed`.
    pub fn layer(&self) -> Option<usize> {
        match *self {
            HookPoint::Embed => None,
            HookPoint::ResidPre(l)
            | HookPoint::AttnOut(l)
            | HookPoint::ResidMid(l)
            | HookPoint::MlpPost(l)
            | HookPoint::MlpOut(l)
            | HookPoint::ResidPost(l) => Some(l),
        }
    }

    /// Whether the activation here lives in the residual stream's space (width `hidden_size`), so
    /// that it can be read through the unembedding (logit lens) or added to the residual stream.
    /// Only `mlp.hook_post` is not.
    pub fn is_model_width(&self) -> bool {
        !matches!(self, HookPoint::MlpPost(_))
    }

    /// Every hook point of a model with `n_layers` blocks, in forward order.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut points = vec![HookPoint::Embed];
        for l in 0..n_layers {
            points.extend([
                HookPoint::ResidPre(l),
                HookPoint::AttnOut(l),
                HookPoint::ResidMid(l),
                HookPoint::MlpPost(l),
                HookPoint::MlpOut(l),
                HookPoint::ResidPost(l),
            ]);
        }
        points
    }

    /// Checks that the hook point exists in a model with `n_layers` blocks.
    pub fn check_depth(&self, n_layers: usize) -> Result<()> {
        match self.layer() {
            Some(l) if l >= n_layers => Err(Error::LayerOutOfRange {
                hook: self.to_string(),
                n_layers,
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HookPoint::Embed => write!(f, "hook_embed"),
            HookPoint::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            HookPoint::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            HookPoint::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            HookPoint::MlpPost(l) => write!(f, "blocks.{l}.mlp.hook_post"),
            HookPoint::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            HookPoint::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let unknown = || Error::UnknownHook {
            name: name.to_string(),
            valid: NAME_TEMPLATES.to_string(),
        };
        if name == "hook_embed" {
            return Ok(HookPoint::Embed);
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, point) = rest.split_once('.').ok_or_else(unknown)?;
        let layer: usize = layer.parse().map_err(|_| unknown())?;
        match point {
            "hook_resid_pre" => Ok(HookPoint::ResidPre(layer)),
            "hook_attn_out" => Ok(HookPoint::AttnOut(layer)),
            "hook_resid_mid" => Ok(HookPoint::ResidMid(layer)),
            "mlp.hook_post" => Ok(HookPoint::MlpPost(layer)),
            "hook_mlp_out" => Ok(HookPoint::MlpOut(layer)),
            "hook_resid_post" => Ok(HookPoint::ResidPost(layer)),
            _ => Err(unknown()),
        }
    }
}

impl serde::Serialize for HookPoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HookPoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for point in HookPoint::all(3) {
            let name = point.to_string();
            assert_eq!(name.parse::<HookPoint>().unwrap(), point, "{name}");
        }
        assert_eq!(HookPoint::all(3).len(), 1 + 3 * 6);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        for bad in [
            "blocks.x.hook_resid_post",
            "blocks.3.hook_resid",
            "resid_post",
            "blocks.3",
        ] {
            let err = bad.parse::<HookPoint>().unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("blocks.L.mlp.hook_post"),
                "{err}"
            );
        }
    }

    #[test]
    fn depth_check_names_the_layer_count() {
        let err = HookPoint::ResidPost(30).check_depth(30).unwrap_err().to_string();
        assert!(err.contains("30 layers") && err.contains("0 to 29"), "{err}");
        HookPoint::ResidPost(29).check_depth(30).unwrap();
        HookPoint::Embed.check_depth(0).unwrap();
    }
}
