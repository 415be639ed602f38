use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A place in the forward pass where an activation can be captured or changed, named as
/// TransformerLens names it (`blocks.15.hook_resid_post`), so that configs, SAELens `cfg.json`
/// files and papers all speak one language. [`HookPoint::layout`] gives each one's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (after any embedding scale, such as Gemma's √d_model).
    Embed,
    /// `hook_pos_embed`: learned position embeddings (GPT-2 only; rotary models have none).
    PosEmbed,
    /// `blocks.L.hook_resid_pre`: the residual stream entering block L.
    ResidPre(usize),
    /// `blocks.L.ln1.hook_normalized`: the attention's input, the output of block L's first norm
    /// (its weight, and bias for LayerNorm, applied: what the q, k and v projections read).
    Ln1Normalized(usize),
    /// `blocks.L.attn.hook_q`: queries, `[batch, pos, head, d_head]`, after any q norm and before
    /// the rotary embedding.
    AttnQ(usize),
    /// `blocks.L.attn.hook_k`: keys, `[batch, pos, kv_head, d_head]`, before the rotary embedding.
    /// During KV-cached generation an edit here changes what is cached.
    AttnK(usize),
    /// `blocks.L.attn.hook_v`: values, `[batch, pos, kv_head, d_head]` (cached as edited).
    AttnV(usize),
    /// `blocks.L.attn.hook_attn_scores`: scaled scores before the softmax, `[batch, head, q_pos,
    /// k_pos]`, -inf where a query may not look.
    AttnScores(usize),
    /// `blocks.L.attn.hook_pattern`: attention probabilities, `[batch, head, q_pos, k_pos]`.
    AttnPattern(usize),
    /// `blocks.L.attn.hook_z`: each head's output before the output projection,
    /// `[batch, pos, head, d_head]`.
    AttnZ(usize),
    /// `blocks.L.hook_attn_out`: what attention adds to the residual stream (after the output
    /// projection, and Gemma's post-attention norm).
    AttnOut(usize),
    /// `blocks.L.hook_resid_mid`: the residual stream after attention, before the MLP (models
    /// whose attention and MLP run in parallel, such as Pythia, have none).
    ResidMid(usize),
    /// `blocks.L.ln2.hook_normalized`: the MLP's input, the output of the norm in front of it.
    Ln2Normalized(usize),
    /// `blocks.L.mlp.hook_post`: the MLP neurons, the input of the down projection
    /// (act(gate)·up for gated MLPs). Its width is the MLP width, not the model width.
    MlpPost(usize),
    /// `blocks.L.hook_mlp_out`: what the MLP adds to the residual stream.
    MlpOut(usize),
    /// `blocks.L.hook_resid_post`: the residual stream leaving block L (= `hook_resid_pre` of L+1).
    ResidPost(usize),
}

/// How an activation is laid out, which says how it is captured and edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookLayout {
    /// `[batch, pos, width]`: one vector per token.
    Vector,
    /// `[batch, pos, head, d_head]`: one vector per token and head (an edit may pick heads).
    Heads,
    /// `[batch, head, q_pos, k_pos]`: one row of keys per query token and head (an edit may pick
    /// heads; its positions are query positions). Its width grows with the keys.
    Pattern,
}

/// The hook point names, with `L` for the layer, in forward order.
const NAME_TEMPLATES: &str = "hook_embed, hook_pos_embed, blocks.L.hook_resid_pre, \
blocks.L.ln1.hook_normalized, blocks.L.attn.hook_q, blocks.L.attn.hook_k, blocks.L.attn.hook_v, \
blocks.L.attn.hook_attn_scores, blocks.L.attn.hook_pattern, blocks.L.attn.hook_z, \
blocks.L.hook_attn_out, blocks.L.hook_resid_mid, blocks.L.ln2.hook_normalized, \
blocks.L.mlp.hook_post, blocks.L.hook_mlp_out, blocks.L.hook_resid_post";

/// Makes a block's hook point from its layer.
type ForLayer = fn(usize) -> HookPoint;

/// Each in-block hook point's name after `blocks.L.`, with its constructor, in forward order.
const BLOCK_POINTS: [(&str, ForLayer); 14] = [
    ("hook_resid_pre", HookPoint::ResidPre),
    ("ln1.hook_normalized", HookPoint::Ln1Normalized),
    ("attn.hook_q", HookPoint::AttnQ),
    ("attn.hook_k", HookPoint::AttnK),
    ("attn.hook_v", HookPoint::AttnV),
    ("attn.hook_attn_scores", HookPoint::AttnScores),
    ("attn.hook_pattern", HookPoint::AttnPattern),
    ("attn.hook_z", HookPoint::AttnZ),
    ("hook_attn_out", HookPoint::AttnOut),
    ("hook_resid_mid", HookPoint::ResidMid),
    ("ln2.hook_normalized", HookPoint::Ln2Normalized),
    ("mlp.hook_post", HookPoint::MlpPost),
    ("hook_mlp_out", HookPoint::MlpOut),
    ("hook_resid_post", HookPoint::ResidPost),
];

impl HookPoint {
    /// The block this hook point belongs to; `None` for `hook_embed` and `hook_pos_embed`.
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed | PosEmbed => None,
            ResidPre(l) | Ln1Normalized(l) | AttnQ(l) | AttnK(l) | AttnV(l) | AttnScores(l)
            | AttnPattern(l) | AttnZ(l) | AttnOut(l) | ResidMid(l) | Ln2Normalized(l) | MlpPost(l)
            | MlpOut(l) | ResidPost(l) => Some(l),
        }
    }

    /// How the activation here is laid out.
    pub fn layout(&self) -> HookLayout {
        match self {
            HookPoint::AttnQ(_) | HookPoint::AttnK(_) | HookPoint::AttnV(_) | HookPoint::AttnZ(_) => {
                HookLayout::Heads
            }
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => HookLayout::Pattern,
            _ => HookLayout::Vector,
        }
    }

    /// Whether the activation here lives in the residual stream's space (one `d_model` vector per
    /// token), so that it can be read through the unembedding (logit lens) or added to the
    /// residual stream.
    pub fn is_model_width(&self) -> bool {
        self.layout() == HookLayout::Vector && !matches!(self, HookPoint::MlpPost(_))
    }

    /// Every hook point name a model with `n_layers` blocks can have, in forward order (a model
    /// lists its own with [`crate::Model::hook_points`]).
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let mut points = vec![HookPoint::Embed, HookPoint::PosEmbed];
        for l in 0..n_layers {
            points.extend(BLOCK_POINTS.iter().map(|(_, point)| point(l)));
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
        match self.layer() {
            None if *self == HookPoint::Embed => write!(f, "hook_embed"),
            None => write!(f, "hook_pos_embed"),
            Some(l) => {
                let (name, _) = BLOCK_POINTS
                    .iter()
                    .find(|(_, point)| point(l) == *self)
                    .expect("every block hook point is in BLOCK_POINTS");
                write!(f, "blocks.{l}.{name}")
            }
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
        match name {
            "hook_embed" => return Ok(HookPoint::Embed),
            "hook_pos_embed" => return Ok(HookPoint::PosEmbed),
            _ => {}
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(unknown)?;
        let (layer, point) = rest.split_once('.').ok_or_else(unknown)?;
        let layer: usize = layer.parse().map_err(|_| unknown())?;
        BLOCK_POINTS
            .iter()
            .find(|(n, _)| *n == point)
            .map(|(_, make)| make(layer))
            .ok_or_else(unknown)
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
        assert_eq!(HookPoint::all(3).len(), 2 + 3 * 14);
        assert_eq!(HookPoint::AttnZ(2).to_string(), "blocks.2.attn.hook_z");
        assert_eq!(HookPoint::AttnZ(2).layout(), HookLayout::Heads);
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
