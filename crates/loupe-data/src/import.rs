//! `loupe store import`: activations made elsewhere (another framework's cache, a synthetic
//! generator) become an activation store, so that they train and evaluate like captured ones.
//!
//! The input is one `[n, d]` float tensor, from a `.npy` file or a `.safetensors` file, with
//! optional per-row token ids, document ids and integer labels (1-D, `n` long), and optionally a
//! second `[n, d']` tensor of the same rows filed under another hook (a transcoder's target). Rows are cut into
//! contexts of `context_length` rows (the SAE trainer holds out whole documents, and a row's
//! document is its context unless document ids are given) and written as shards sealed with
//! their checksums, then the manifest, as a capture writes them. The manifest records the input
//! files with their sha256, and the model as the name given, with no weights fingerprint: a
//! store of imported activations can train and evaluate an SAE, but cannot be spliced into a
//! model, since nothing shows that the model made them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use loupe_model::HookPoint;
use loupe_util::Problems as _;

use crate::packing::{LabelVocab, NO_LABEL};
use crate::store::{file_info, write_shard, HookInfo, Manifest, ModelInfo, StoreDType, MANIFEST};
use crate::{Error, Result};

/// What a store's manifest records as the weights fingerprint of a model it cannot name for
/// sure: imported activations.
pub const IMPORTED_SHA256: &str = "none: imported activations";

/// One tensor to read: a `.npy` file, or a tensor of a `.safetensors` file (`None`: the file's
/// only candidate, see [`import`]). Written `file.npy`, `file.safetensors` or
/// `file.safetensors:name` on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSource {
    /// The file.
    pub path: PathBuf,
    /// The tensor's name inside a `.safetensors` file.
    pub name: Option<String>,
}

impl std::str::FromStr for TensorSource {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // A tensor name follows the last ':' after ".safetensors" (paths may contain ':').
        if let Some(at) = s.rfind(".safetensors:") {
            let (path, name) = s.split_at(at + ".safetensors".len());
            let name = &name[1..];
            if name.is_empty() {
                return Err(format!("{s}: name the tensor after the ':'"));
            }
            return Ok(TensorSource {
                path: path.into(),
                name: Some(name.into()),
            });
        }
        Ok(TensorSource {
            path: s.into(),
            name: None,
        })
    }
}

impl std::fmt::Display for TensorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}:{name}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Everything `loupe store import` needs.
#[derive(Clone, Debug)]
pub struct ImportSpec {
    /// The `[n, d]` activations.
    pub activations: TensorSource,
    /// Per-row token ids; when absent, a `.safetensors` input's `token_ids` tensor if it has one,
    /// else none (stored as 0).
    pub token_ids: Option<TensorSource>,
    /// Per-row document ids; when absent, the input's `doc_ids` tensor, else each context is a
    /// document.
    pub doc_ids: Option<TensorSource>,
    /// Per-row integer labels by field name (negative: no label); a `.safetensors` input's
    /// `labels.<field>` tensors are added.
    pub labels: Vec<(String, TensorSource)>,
    /// The store directory to write.
    pub output: PathBuf,
    /// The hook point the activations are stored under.
    pub hook: HookPoint,
    /// A second hook's activations of the same rows, `[n, d']`, and the hook to file them under
    /// (what a transcoder reconstructs, e.g. `blocks.6.hook_mlp_out`).
    pub target: Option<(HookPoint, TensorSource)>,
    /// The model name recorded in the manifest.
    pub model: String,
    /// The dtype to store activations in.
    pub dtype: StoreDType,
    /// Rows per context.
    pub context_length: usize,
    /// Contexts per shard file.
    pub shard_contexts: usize,
}

/// Per-row integer columns that travel with the activations.
struct Columns {
    token_ids: Option<Vec<u32>>,
    doc_ids: Option<Vec<u32>>,
    labels: Vec<(String, Vec<u32>)>,
    vocab: LabelVocab,
}

/// Reads the input, checks it, and writes the store. Refuses an output that already holds a
/// store; a directory left by an interrupted import (shards, no manifest) is written over.
pub fn import(spec: &ImportSpec, progress: &mut dyn loupe_util::Progress) -> Result<Manifest> {
    if spec.context_length == 0 {
        return Err(Error::config("context_length", "must be at least 1 row"));
    }
    if spec.shard_contexts == 0 {
        return Err(Error::config("shard_contexts", "must be at least 1 context"));
    }
    if spec.output.join(MANIFEST).exists() {
        return Err(Error::file(
            &spec.output,
            "already holds an activation store: remove it or choose another --output",
        ));
    }
    let mut inputs = Inputs::default();
    let activations = read_activations(&mut inputs, &spec.activations, spec.hook)?;
    let (n, d) = activations.dims2()?;
    let target = match &spec.target {
        None => None,
        Some((hook, _)) if *hook == spec.hook => {
            return Err(Error::config(
                "target-hook",
                format!("is {hook}, the hook of the activations themselves: name another hook"),
            ))
        }
        Some((hook, source)) => {
            let tensor = read_activations(&mut inputs, source, *hook)?;
            if tensor.dim(0)? != n {
                return Err(Error::file(
                    &source.path,
                    format!(
                        "{source} has {} rows, but {} has {n}: the target must hold the same rows, in the same order",
                        tensor.dim(0)?,
                        spec.activations
                    ),
                ));
            }
            Some((*hook, source, tensor))
        }
    };
    let columns = read_columns(&mut inputs, spec, n)?;
    drop(inputs);

    std::fs::create_dir_all(&spec.output)
        .map_err(|e| Error::file(&spec.output, format!("cannot create: {e}")))?;
    let _lock = loupe_util::DirLock::acquire(&spec.output, "loupe store import")?;
    let mut manifest = Manifest::without_shards(
        ModelInfo {
            name: spec.model.clone(),
            sha256: IMPORTED_SHA256.into(),
            d_model: d,
        },
        std::iter::once(HookInfo {
            name: spec.hook,
            width: d,
        })
        .chain(target.iter().map(|(hook, _, tensor)| HookInfo {
            name: *hook,
            width: tensor.dim(1).expect("a 2-D tensor"),
        }))
        .collect(),
        spec.dtype,
        // A captured context's length counts its separator, which is never stored.
        spec.context_length + 1,
    );
    manifest.labels = columns.vocab.clone();
    let mut sources: Vec<&TensorSource> = vec![&spec.activations];
    sources.extend(spec.target.iter().map(|(_, source)| source));
    sources.extend(&spec.token_ids);
    sources.extend(&spec.doc_ids);
    sources.extend(spec.labels.iter().map(|(_, s)| s));
    let mut files: Vec<&Path> = sources.iter().map(|s| s.path.as_path()).collect();
    files.sort();
    files.dedup();
    manifest.imported_from = files.into_iter().map(file_info).collect::<Result<_>>()?;

    let shard_rows = spec.context_length * spec.shard_contexts;
    progress.start("rows imported", n as u64, 0);
    for (index, first_row) in (0..n).step_by(shard_rows).enumerate() {
        if progress.should_stop() {
            // Without its manifest the directory is no store, and the same command starts over.
            return Err(Error::file(
                &spec.output,
                format!(
                    "import stopped after {first_row} of {n} rows, before the manifest was written: \
                     run the same command again"
                ),
            ));
        }
        let rows = shard_rows.min(n - first_row);
        let mut tensors = shard_tensors(spec, &activations, &columns, first_row, rows)?;
        if let Some((hook, source, tensor)) = &target {
            let block = tensor.narrow(0, first_row, rows)?.to_dtype(DType::F32)?;
            check_values(&block, source, spec.dtype, first_row)?;
            tensors.insert(hook.to_string(), block.to_dtype(spec.dtype.dtype())?);
        }
        let first_context = (first_row / spec.context_length) as u64;
        let contexts = rows.div_ceil(spec.context_length) as u64;
        let shard = write_shard(&spec.output, index, &tensors, first_context, contexts)?;
        manifest.tokens += shard.tokens;
        manifest.contexts += shard.contexts;
        manifest.shards.push(shard);
        progress.advance(rows as u64);
    }
    manifest.write(&spec.output)?;
    Ok(manifest)
}

/// The tensors of the shard holding rows `first_row..first_row + rows`.
fn shard_tensors(
    spec: &ImportSpec,
    activations: &Tensor,
    columns: &Columns,
    first_row: usize,
    rows: usize,
) -> Result<HashMap<String, Tensor>> {
    let block = activations.narrow(0, first_row, rows)?.to_dtype(DType::F32)?;
    check_values(&block, &spec.activations, spec.dtype, first_row)?;
    let mut tensors = HashMap::new();
    tensors.insert(spec.hook.to_string(), block.to_dtype(spec.dtype.dtype())?);
    let range = first_row..first_row + rows;
    let column = |values: Vec<u32>| Tensor::from_vec(values, rows, &Device::Cpu);
    let context_of = |r: usize| (r / spec.context_length) as u32;
    tensors.insert(
        "token_ids".into(),
        column(match &columns.token_ids {
            Some(ids) => ids[range.clone()].to_vec(),
            None => vec![0; rows],
        })?,
    );
    tensors.insert(
        "doc_ids".into(),
        column(match &columns.doc_ids {
            Some(ids) => ids[range.clone()].to_vec(),
            None => range.clone().map(context_of).collect(),
        })?,
    );
    tensors.insert(
        "context_ids".into(),
        column(range.clone().map(context_of).collect())?,
    );
    tensors.insert(
        "positions".into(),
        // Position 0 of a captured context is its separator.
        column(
            range
                .clone()
                .map(|r| (r % spec.context_length) as u32 + 1)
                .collect(),
        )?,
    );
    for (field, ids) in &columns.labels {
        tensors.insert(format!("labels.{field}"), column(ids[range.clone()].to_vec())?);
    }
    Ok(tensors)
}

/// Refuses non-finite activations of `source`, and values the store's dtype cannot hold, naming
/// the row.
fn check_values(block: &Tensor, source: &TensorSource, dtype: StoreDType, first_row: usize) -> Result<()> {
    let d = block.dim(1)?;
    let values = block.flatten_all()?.to_vec1::<f32>()?;
    let largest = match dtype {
        StoreDType::F16 => 65504.0,
        StoreDType::F32 | StoreDType::Bf16 => f32::MAX,
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite() || v.abs() > largest) {
        let (row, column) = (first_row + i / d, i % d);
        let value = values[i];
        let fix = if value.is_finite() {
            "f16 holds at most 65504 in size: import with --dtype f32 or bf16"
        } else {
            "activations must be finite numbers: fix or drop that row"
        };
        return Err(Error::file(
            &source.path,
            format!("{source}: row {row}, column {column} is {value}; {fix}"),
        ));
    }
    Ok(())
}

/// The activation tensor: `[n, d]`, a float dtype, n and d at least 1.
fn read_activations(inputs: &mut Inputs, source: &TensorSource, hook: HookPoint) -> Result<Tensor> {
    let path = &source.path;
    let tensor = if is_safetensors(path) {
        let tensors = inputs.safetensors(path)?;
        let name = match &source.name {
            Some(name) => name.clone(),
            None => pick_activations(path, tensors, hook)?,
        };
        tensors.get(&name).cloned().ok_or_else(|| {
            Error::file(
                path,
                format!("has no tensor '{name}'; it has {}", names(tensors).join(", ")),
            )
        })?
    } else {
        read_npy(path)?
    };
    let what = source.to_string();
    if !matches!(tensor.dtype(), DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
        return Err(Error::file(
            path,
            format!(
                "{what} holds {:?} values; activations must be floats (f16, bf16, f32 or f64)",
                tensor.dtype()
            ),
        ));
    }
    match *tensor.dims() {
        [n, d] if n > 0 && d > 0 => Ok(tensor),
        _ => Err(Error::file(
            path,
            format!(
                "{what} has shape {:?}; activations must be [rows, width] with at least one of each \
                 (reshape a [batch, position, width] cache to [batch·position, width] first)",
                tensor.dims()
            ),
        )),
    }
}

/// The activations of a `.safetensors` file named by no tensor: the tensor named by the hook,
/// else the only 2-D float tensor.
fn pick_activations(path: &Path, tensors: &HashMap<String, Tensor>, hook: HookPoint) -> Result<String> {
    if tensors.contains_key(&hook.to_string()) {
        return Ok(hook.to_string());
    }
    let candidates: Vec<&String> = tensors
        .iter()
        .filter(|(_, t)| t.rank() == 2 && t.dtype().is_float())
        .map(|(name, _)| name)
        .collect();
    match candidates[..] {
        [only] => Ok(only.clone()),
        [] => Err(Error::file(
            path,
            format!(
                "holds no 2-D float tensor to import (it has {})",
                names(tensors).join(", ")
            ),
        )),
        _ => {
            let mut candidates: Vec<&str> = candidates.iter().map(|s| s.as_str()).collect();
            candidates.sort();
            Err(Error::file(
                path,
                format!(
                    "holds several 2-D float tensors ({}): name one as {}:NAME",
                    candidates.join(", "),
                    path.display()
                ),
            ))
        }
    }
}

/// Token ids, document ids and labels, each checked against the `n` activation rows. Columns the
/// spec does not name are taken from a `.safetensors` input when it has them by their store names.
fn read_columns(inputs: &mut Inputs, spec: &ImportSpec, n: usize) -> Result<Columns> {
    let input = &spec.activations.path;
    let in_input: Vec<String> = if is_safetensors(input) {
        names(inputs.safetensors(input)?)
    } else {
        Vec::new()
    };
    let from_input = |name: &str| -> Option<TensorSource> {
        in_input.iter().any(|n| n == name).then(|| TensorSource {
            path: input.clone(),
            name: Some(name.into()),
        })
    };
    let token_ids = spec.token_ids.clone().or_else(|| from_input("token_ids"));
    let doc_ids = spec.doc_ids.clone().or_else(|| from_input("doc_ids"));
    let mut label_sources = spec.labels.clone();
    for name in &in_input {
        if let Some(field) = name.strip_prefix("labels.") {
            if !spec.labels.iter().any(|(f, _)| f == field) {
                label_sources.push((field.to_string(), from_input(name).expect("listed")));
            }
        }
    }

    let mut ids = |source: &TensorSource, what: &str| -> Result<Vec<u32>> {
        let values = read_column(inputs, source, n, what)?;
        if let Some(bad) = values.iter().find(|&&v| !(0..u32::MAX as i64).contains(&v)) {
            return Err(Error::file(
                &source.path,
                format!("{source}: {what} must lie in 0..{}, not {bad}", u32::MAX),
            ));
        }
        Ok(values.into_iter().map(|v| v as u32).collect())
    };
    let token_ids = token_ids.map(|s| ids(&s, "token ids")).transpose()?;
    let doc_ids = doc_ids.map(|s| ids(&s, "document ids")).transpose()?;

    let mut vocab = LabelVocab::new(label_sources.iter().map(|(f, _)| f.clone()).collect());
    let mut labels = Vec::new();
    for (index, (field, source)) in label_sources.iter().enumerate() {
        if field.is_empty() || field.contains(['.', '/']) {
            return Err(Error::config(
                "--label",
                format!("field name '{field}' must be non-empty, without '.' or '/'"),
            ));
        }
        let values = read_column(inputs, source, n, &format!("labels '{field}'"))?;
        // The label values, as text in increasing order; their ids index them.
        let mut distinct: Vec<i64> = values.iter().copied().filter(|&v| v >= 0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let id_of: HashMap<i64, u32> = distinct.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
        vocab.values[index] = distinct.iter().map(i64::to_string).collect();
        let ids = values
            .iter()
            .map(|v| id_of.get(v).copied().unwrap_or(NO_LABEL))
            .collect();
        labels.push((field.clone(), ids));
    }
    Ok(Columns {
        token_ids,
        doc_ids,
        labels,
        vocab,
    })
}

/// A 1-D integer tensor of `n` values (`[n, 1]` is taken as `[n]`).
fn read_column(inputs: &mut Inputs, source: &TensorSource, n: usize, what: &str) -> Result<Vec<i64>> {
    let path = &source.path;
    let tensor = if is_safetensors(path) {
        let name = source.name.clone().ok_or_else(|| {
            Error::file(
                path,
                format!("name the tensor of the {what}: {}:NAME", path.display()),
            )
        })?;
        inputs
            .safetensors(path)?
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::file(path, format!("has no tensor '{name}' for the {what}")))?
    } else {
        read_npy(path)?
    };
    let tensor = match *tensor.dims() {
        [rows] | [rows, 1] if rows == n => tensor.flatten_all()?,
        _ => {
            return Err(Error::file(
                path,
                format!(
                    "{source}: the {what} have shape {:?}; they must be one value per activation row, [{n}]",
                    tensor.dims()
                ),
            ))
        }
    };
    if tensor.dtype().is_float() {
        return Err(Error::file(
            path,
            format!(
                "{source}: the {what} are {:?}; they must be integers",
                tensor.dtype()
            ),
        ));
    }
    Ok(tensor.to_dtype(DType::I64)?.to_vec1::<i64>()?)
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// The `.safetensors` files read so far, each read once.
#[derive(Default)]
struct Inputs {
    safetensors: HashMap<PathBuf, HashMap<String, Tensor>>,
}

impl Inputs {
    fn safetensors(&mut self, path: &Path) -> Result<&HashMap<String, Tensor>> {
        if !self.safetensors.contains_key(path) {
            let tensors = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| Error::file(path, format!("cannot read as safetensors: {e}")))?;
            self.safetensors.insert(path.to_path_buf(), tensors);
        }
        Ok(&self.safetensors[path])
    }
}

fn read_npy(path: &Path) -> Result<Tensor> {
    if path.extension().is_none_or(|e| e != "npy") {
        return Err(Error::file(
            path,
            "is neither .npy nor .safetensors: save the activations as one of those",
        ));
    }
    Tensor::read_npy(path).map_err(|e| Error::file(path, format!("cannot read as .npy: {e}")))
}

fn names(tensors: &HashMap<String, Tensor>) -> Vec<String> {
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    names
}
