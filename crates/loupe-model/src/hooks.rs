use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use crate::{Batch, Error, HookLayout, HookPoint, Result};

/// Which positions of each sequence an intervention touches. A position is a token's index in its
/// own sequence (padding does not count), so the same intervention means the same thing in a
/// batch, alone, and at every step of generation: during KV-cached generation, positions inside
/// the prompt are changed once, in the prefill, and later tokens see the changed keys and values;
/// positions past the prompt are changed when they are generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Positions {
    /// Every position, the prompt's and generated ones alike.
    All,
    /// Only these positions (0-based indices into the sequence, padding not counted).
    Only(Vec<usize>),
    /// Every position from this one on (steering that leaves the first token, the attention
    /// sink of most models, as it was: `From(1)`).
    From(usize),
}

impl Positions {
    fn contains(&self, position: usize) -> bool {
        match self {
            Positions::All => true,
            Positions::Only(p) => p.contains(&position),
            Positions::From(start) => position >= *start,
        }
    }
}

/// A function of the selected activations, `[n, width] -> [n, width]`.
pub type EditFn = Arc<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// What an intervention does to each selected activation vector.
#[derive(Clone)]
pub enum Edit {
    /// Replace it with this vector, `[width]`.
    Replace(Tensor),
    /// Add this vector, `[width]`.
    Add(Tensor),
    /// Multiply it by this factor.
    Scale(f64),
    /// Any function of the selected vectors, given together as `[n, width]` and returning the
    /// same shape (n = rows × positions selected in this forward call).
    Apply(EditFn),
}

impl fmt::Debug for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edit::Replace(v) => write!(f, "Replace({:?})", v.shape()),
            Edit::Add(v) => write!(f, "Add({:?})", v.shape()),
            Edit::Scale(s) => write!(f, "Scale({s})"),
            Edit::Apply(_) => write!(f, "Apply(..)"),
        }
    }
}

impl Edit {
    fn apply(&self, selected: &Tensor) -> Result<Tensor> {
        let (n, width) = selected.dims2()?;
        let check = |v: &Tensor, what: &str| -> Result<()> {
            if v.dims() != [width] {
                return Err(Error::Invalid(format!(
                    "{what} vector has shape {:?}, but the activation it edits has width {width}",
                    v.dims()
                )));
            }
            Ok(())
        };
        let edited = match self {
            Edit::Replace(v) => {
                check(v, "replacement")?;
                v.to_dtype(selected.dtype())?
                    .unsqueeze(0)?
                    .broadcast_as((n, width))?
                    .contiguous()?
            }
            Edit::Add(v) => {
                check(v, "added")?;
                selected.broadcast_add(&v.to_dtype(selected.dtype())?)?
            }
            Edit::Scale(s) => selected.affine(*s, 0.0)?,
            Edit::Apply(f) => {
                let out = f(selected)?;
                if out.dims() != selected.dims() {
                    return Err(Error::Invalid(format!(
                        "an intervention function returned shape {:?} for input {:?}",
                        out.dims(),
                        selected.dims()
                    )));
                }
                out
            }
        };
        Ok(edited)
    }
}

/// One change to the forward pass: at `hook`, for the chosen rows of the batch (all when `None`)
/// and positions, apply `edit`.
///
/// At a per-head hook point (`attn.hook_q`, `hook_z`, `hook_pattern`, ...; see
/// [`HookPoint::layout`]) `heads` picks heads: the edit then sees one vector per selected head
/// (`d_head` wide, or one row of keys for the pattern and scores). With `heads: None` it sees each
/// token's heads together, flattened (`head × d_head` wide).
#[derive(Clone, Debug)]
pub struct Intervention {
    /// Where in the model the edit applies.
    pub hook: HookPoint,
    /// Which token positions of each sequence it applies to (query positions for the pattern).
    pub positions: Positions,
    /// Which rows (sequences) of the batch it applies to, by index; `None` for all.
    pub rows: Option<Vec<usize>>,
    /// Which heads it applies to at a per-head hook point; `None` for all, together.
    pub heads: Option<Vec<usize>>,
    /// The change made to the selected activations.
    pub edit: Edit,
}

impl Intervention {
    /// `edit` at `hook` and `positions`, on every row and every head.
    pub fn new(hook: HookPoint, positions: Positions, edit: Edit) -> Self {
        Intervention {
            hook,
            positions,
            rows: None,
            heads: None,
            edit,
        }
    }
}

/// What a forward pass should capture and change: the one way every part of loupe (capture,
/// SAE splicing, patching, amplification) reads and writes activations.
///
/// Interventions at a hook point run in the order they were added; a capture at the same point
/// sees the result, which is what the rest of the model sees. Captures accumulate over forward
/// calls along the column axis, so after KV-cached generation a capture holds prompt and
/// generated tokens alike, laid out as the batch is (left-padded).
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    to_capture: BTreeSet<HookPoint>,
    interventions: Vec<Intervention>,
    captured: BTreeMap<HookPoint, Tensor>,
}

impl Hooks {
    /// No captures and no interventions: a plain forward pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also capture the activation at `hook`.
    pub fn capture(mut self, hook: HookPoint) -> Self {
        self.to_capture.insert(hook);
        self
    }

    /// Also capture the activations at all of `hooks`.
    pub fn capture_all(mut self, hooks: impl IntoIterator<Item = HookPoint>) -> Self {
        self.to_capture.extend(hooks);
        self
    }

    /// Adds an intervention (applied after those already added at the same hook point).
    pub fn intervene(mut self, intervention: Intervention) -> Self {
        self.interventions.push(intervention);
        self
    }

    /// Shorthand: replace the activation at `hook` at `positions` of every row by `value`.
    pub fn replace(self, hook: HookPoint, positions: Positions, value: Tensor) -> Self {
        self.intervene(Intervention::new(hook, positions, Edit::Replace(value)))
    }

    /// Shorthand: add `value` to the activation at `hook` at `positions` of every row.
    pub fn add(self, hook: HookPoint, positions: Positions, value: Tensor) -> Self {
        self.intervene(Intervention::new(hook, positions, Edit::Add(value)))
    }

    /// Shorthand: scale the activation at `hook` at `positions` of every row by `factor`.
    pub fn scale(self, hook: HookPoint, positions: Positions, factor: f64) -> Self {
        self.intervene(Intervention::new(hook, positions, Edit::Scale(factor)))
    }

    /// Every hook point that is captured or intervened on.
    pub fn hook_points(&self) -> impl Iterator<Item = HookPoint> + '_ {
        self.to_capture
            .iter()
            .copied()
            .chain(self.interventions.iter().map(|i| i.hook))
    }

    /// The deepest block any capture or intervention needs (`Some(None)` when only `hook_embed`
    /// is hooked; `None` when nothing is): a forward pass that needs no logits stops after it.
    pub fn deepest_layer(&self) -> Option<Option<usize>> {
        self.hook_points().map(|h| h.layer()).max()
    }

    /// Checks every hook point against the model's depth.
    pub fn check_depth(&self, n_layers: usize) -> Result<()> {
        self.hook_points().try_for_each(|h| h.check_depth(n_layers))
    }

    /// Whether anything captures or changes the activation at `hook` (a model computes some
    /// activations, such as the attention pattern of a fused kernel, only when asked).
    pub fn touches(&self, hook: HookPoint) -> bool {
        self.to_capture.contains(&hook) || self.interventions.iter().any(|i| i.hook == hook)
    }

    /// The activation captured at `hook`, laid out as [`HookPoint::layout`] says (`[rows,
    /// columns, width]` for most), over every forward call so far. `None` when `hook` was not
    /// captured (not asked for, or no pass reached it).
    pub fn captured(&self, hook: HookPoint) -> Option<Tensor> {
        self.captured.get(&hook).cloned()
    }

    /// Forgets what was captured (keeping what to capture and the interventions).
    pub fn clear_captured(&mut self) {
        self.captured.clear();
    }

    /// Runs the interventions at `hook` on `x` (laid out as [`HookPoint::layout`] says), then
    /// captures it.
    pub(crate) fn apply(&mut self, hook: HookPoint, mut x: Tensor, batch: &Batch) -> Result<Tensor> {
        for intervention in self.interventions.iter().filter(|i| i.hook == hook) {
            x = apply_one(intervention, x, batch)?;
        }
        if self.to_capture.contains(&hook) {
            // Later passes (generation steps) add columns; joined here, so that a shape that
            // does not fit is an error of the pass, not a capture that silently goes missing.
            let joined = match self.captured.remove(&hook) {
                Some(earlier) => join_columns(hook, earlier, x.clone())?,
                None => x.clone(),
            };
            self.captured.insert(hook, joined);
        }
        Ok(x)
    }
}

/// An earlier capture and a later pass's, joined along the token axis. A pattern's later rows
/// see more keys: the earlier rows are widened with what a key they could not see holds (0 in
/// the pattern, -inf in the scores).
fn join_columns(hook: HookPoint, earlier: Tensor, later: Tensor) -> Result<Tensor> {
    if hook.layout() != HookLayout::Pattern {
        return Ok(Tensor::cat(&[earlier, later], 1)?);
    }
    let (keys_before, keys_now) = (earlier.dim(3)?, later.dim(3)?);
    let earlier = if keys_now > keys_before {
        let (b, h, q, _) = earlier.dims4()?;
        let fill = match hook {
            HookPoint::AttnScores(_) => f32::NEG_INFINITY,
            _ => 0.0,
        };
        let unseen = Tensor::full(fill, (b, h, q, keys_now - keys_before), earlier.device())?
            .to_dtype(earlier.dtype())?;
        Tensor::cat(&[earlier, unseen], 3)?
    } else {
        earlier
    };
    Ok(Tensor::cat(&[earlier, later], 2)?)
}

fn apply_one(intervention: &Intervention, x: Tensor, batch: &Batch) -> Result<Tensor> {
    let hook = intervention.hook;
    if let Some(rows) = &intervention.rows {
        if let Some(bad) = rows.iter().find(|&&r| r >= batch.rows()) {
            return Err(Error::Invalid(format!(
                "intervention at {hook} names row {bad}, but the batch has {} rows",
                batch.rows()
            )));
        }
    }
    // Every layout as [rows, columns, units, width]: units are heads, or 1.
    let layout = hook.layout();
    let original = x.clone();
    let x = match layout {
        HookLayout::Vector => x.unsqueeze(2)?,
        HookLayout::Heads => x,
        HookLayout::Pattern => x.transpose(1, 2)?.contiguous()?,
    };
    let (rows, columns, units, width) = x.dims4()?;
    let heads: Vec<usize> = match &intervention.heads {
        None => Vec::new(),
        Some(_) if layout == HookLayout::Vector => {
            return Err(Error::Invalid(format!(
                "intervention at {hook} picks heads, but {hook} has one vector per token, not one                  per head; pick heads at attn.hook_q, hook_k, hook_v, hook_z, hook_pattern or                  hook_attn_scores"
            )))
        }
        Some(heads) => {
            if let Some(bad) = heads.iter().find(|&&h| h >= units) {
                return Err(Error::Invalid(format!(
                    "intervention at {hook} names head {bad}, but it has {units} heads (0 to {})",
                    units - 1
                )));
            }
            heads.clone()
        }
    };
    // With heads picked, the edit sees one row per (token, head); otherwise one per token.
    let (group, edit_width) = if heads.is_empty() {
        (1, units * width)
    } else {
        (units, width)
    };
    let row_selected = |r: usize| intervention.rows.as_ref().is_none_or(|rs| rs.contains(&r));
    let mut flat_indices = Vec::new();
    for row in (0..rows).filter(|&r| row_selected(r)) {
        for column in 0..columns {
            if batch
                .position(row, column)
                .is_some_and(|p| intervention.positions.contains(p))
            {
                let token = (row * columns + column) * group;
                if heads.is_empty() {
                    flat_indices.push(token as u32);
                } else {
                    flat_indices.extend(heads.iter().map(|&h| (token + h) as u32));
                }
            }
        }
    }
    let restore = |out: Tensor| -> Result<Tensor> {
        let out = out.reshape((rows, columns, units, width))?;
        Ok(match layout {
            HookLayout::Vector => out.squeeze(2)?,
            HookLayout::Heads => out,
            HookLayout::Pattern => out.transpose(1, 2)?.contiguous()?,
        })
    };
    if flat_indices.is_empty() {
        return Ok(original);
    }
    let total = rows * columns * group;
    let flat = x.reshape((total, edit_width))?;
    if flat_indices.len() == total {
        return restore(intervention.edit.apply(&flat)?);
    }
    let n = flat_indices.len();
    let indices = Tensor::from_vec(flat_indices, n, x.device())?;
    let selected = flat.index_select(&indices, 0)?;
    let edited = intervention.edit.apply(&selected)?;
    // scatter writes the edited rows in place of the old ones exactly (no x + (new - old)).
    let scatter_indices = indices
        .unsqueeze(1)?
        .broadcast_as((n, edit_width))?
        .contiguous()?;
    let out = flat.scatter(&scatter_indices, &edited.contiguous()?, 0)?;
    restore(out)
}
