//! Reading a store back: one shard at a time, or as shuffled f32 batches over all shards with a
//! bounded shuffle buffer (memory independent of the store's size), split by document into a
//! training and a held-out part.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use loupe_model::HookPoint;
use loupe_util::Problems as _;
use loupe_util::SafetensorsFile;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::store::{Manifest, ShardInfo};
use crate::{Error, Result};

/// An activation store opened for reading.
#[derive(Clone, Debug)]
pub struct Store {
    /// The store directory (holding `manifest.json` and the shards).
    pub dir: PathBuf,
    /// The store's manifest, read and checked when the store was opened.
    pub manifest: Manifest,
}

/// One shard's rows for one hook point.
pub struct ShardData {
    /// `[rows, width]`, f32.
    pub activations: Tensor,
    /// Where each row comes from, and its labels.
    pub fields: ShardFields,
}

/// Per stored token (a shard's rows, or many shards' rows gathered): where it comes from and its
/// labels. What every hook of a store shares.
#[derive(Clone, Debug, Default)]
pub struct ShardFields {
    /// Per row: the token id.
    pub token_ids: Vec<u32>,
    /// Per row: the document index ([`NO_DOC`](crate::packing::NO_DOC) for separators).
    pub doc_ids: Vec<u32>,
    /// Per row: the index of its context in the whole store.
    pub context_ids: Vec<u32>,
    /// Per row: the token's position in its context (0 is the separator that starts it).
    pub positions: Vec<u32>,
    /// `labels[field]` per row, fields as in the manifest's label vocabulary.
    pub labels: Vec<Vec<u32>>,
}

impl ShardFields {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether no rows are held.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Appends the first `rows` rows of `other` (all of them when it has fewer).
    pub fn append(&mut self, other: &ShardFields, rows: usize) {
        let rows = rows.min(other.len());
        self.token_ids.extend_from_slice(&other.token_ids[..rows]);
        self.doc_ids.extend_from_slice(&other.doc_ids[..rows]);
        self.context_ids.extend_from_slice(&other.context_ids[..rows]);
        self.positions.extend_from_slice(&other.positions[..rows]);
        if self.labels.len() < other.labels.len() {
            self.labels.resize(other.labels.len(), Vec::new());
        }
        for (all, field) in self.labels.iter_mut().zip(&other.labels) {
            all.extend_from_slice(&field[..rows]);
        }
    }
}

/// Which documents a reader yields.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Split {
    /// Every document.
    All,
    /// Documents not held out.
    Train {
        /// The held-out fraction of documents, in [0, 1].
        held_out: f64,
        /// Seed of the per-document hash that chooses them.
        seed: u64,
    },
    /// A `held_out` fraction of the documents, chosen by hashing each document index with `seed`.
    HeldOut {
        /// The held-out fraction of documents, in [0, 1].
        held_out: f64,
        /// Seed of the per-document hash that chooses them; the same as the training split's.
        seed: u64,
    },
}

impl Split {
    /// Whether rows of document `doc` belong to this split. Separator rows (no document) go to
    /// training.
    pub fn contains(&self, doc: u32) -> bool {
        match *self {
            Split::All => true,
            Split::Train { held_out, seed } => !is_held_out(doc, held_out, seed),
            Split::HeldOut { held_out, seed } => is_held_out(doc, held_out, seed),
        }
    }
}

fn is_held_out(doc: u32, fraction: f64, seed: u64) -> bool {
    if doc == crate::packing::NO_DOC {
        return false;
    }
    // splitmix64 of (seed, doc): a stable pseudo-random number per document.
    // The added constant keeps (seed 0, document 0) from hashing to exactly 0, which would
    // put document 0 in every held-out split however small.
    let mut z = (seed ^ (doc as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // `<`, so that a fraction of 0 holds out nothing (a hash can be exactly 0).
    ((z >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

impl Store {
    /// Opens the store in `dir`, reading and checking its manifest (the shards are read later).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Store {
            dir: dir.to_path_buf(),
            manifest: Manifest::read(dir)?,
        })
    }

    /// Checks that this store holds `hook` of the model with weights `model_sha256` (when given),
    /// `width` wide: what a consumer (an SAE, a probe) expects.
    pub fn check(&self, model_sha256: Option<&str>, hook: HookPoint, width: usize) -> Result<()> {
        let mismatch = |message: String| Error::Mismatch {
            path: self.dir.clone(),
            message,
        };
        let m = &self.manifest;
        if let Some(sha) = model_sha256 {
            if sha != m.model.sha256 {
                return Err(mismatch(format!(
                    "it was captured from another model ({}, weights sha256 {}…)",
                    m.model.name,
                    &m.model.sha256[..12.min(m.model.sha256.len())]
                )));
            }
        }
        let info = m.hook(hook).ok_or_else(|| {
            let held: Vec<String> = m.hooks.iter().map(|h| h.name.to_string()).collect();
            mismatch(format!(
                "it holds no activations for {hook}; it has {}",
                held.join(", ")
            ))
        })?;
        if info.width != width {
            return Err(mismatch(format!(
                "{hook} is {} wide there, but {width} is expected",
                info.width
            )));
        }
        Ok(())
    }

    /// Reads shard `index` for `hook`, activations converted to f32. The shard is verified first:
    /// its length and checksum against the manifest's, every tensor's dtype and shape against what
    /// the manifest promises, and every activation finite.
    pub fn read_shard(&self, index: usize, hook: HookPoint) -> Result<ShardData> {
        let (rows, width) = (self.shard_rows(index)?, self.width(hook)?);
        let mut values = vec![0f32; rows * width];
        let fields = self.read_shard_into(index, hook, &mut values)?;
        Ok(ShardData {
            activations: Tensor::from_vec(values, (rows, width), &Device::Cpu)?,
            fields,
        })
    }

    /// Tokens in shard `index`.
    pub fn shard_rows(&self, index: usize) -> Result<usize> {
        let info = self
            .manifest
            .shards
            .get(index)
            .ok_or_else(|| Error::file(&self.dir, format!("has no shard {index}")))?;
        Ok(info.tokens as usize)
    }

    fn width(&self, hook: HookPoint) -> Result<usize> {
        Ok(self
            .manifest
            .hook(hook)
            .ok_or_else(|| Error::file(&self.dir, format!("holds no activations for {hook}")))?
            .width)
    }

    /// [`Store::read_shard`] with the activations decoded into `activations`
    /// (`[shard_rows, width]` f32, row-major: a caller gathering many shards passes each its slice
    /// of one buffer, and may read shards in parallel). Returns the per-row fields. Panics unless
    /// `activations` has exactly that length.
    pub fn read_shard_into(
        &self,
        index: usize,
        hook: HookPoint,
        activations: &mut [f32],
    ) -> Result<ShardFields> {
        let rows = self.shard_rows(index)?;
        let width = self.width(hook)?;
        let info = &self.manifest.shards[index];
        let path = self.dir.join(&info.file);
        assert_eq!(
            activations.len(),
            rows * width,
            "read_shard_into: shard {index} holds {rows} × {width} activations at {hook}"
        );
        let file = SafetensorsFile::open(&path)?;
        check_against_manifest(&file, info)?;
        let dtype = self.manifest.dtype.dtype();
        let view = file.tensor(
            &hook.to_string(),
            safetensors_dtype(dtype),
            &[Some(rows), Some(width)],
        )?;
        decode_f32(view.data(), dtype, activations);
        let u32s = |name: &str| -> Result<Vec<u32>> {
            let view = file.tensor(name, safetensors::Dtype::U32, &[Some(rows)])?;
            Ok(view
                .data()
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect())
        };
        let doc_ids = u32s("doc_ids")?;
        let token_ids = u32s("token_ids")?;
        if let Some(row) = first_non_finite(activations).map(|i| i / width) {
            return Err(Error::file(
                &path,
                format!(
                    "row {row} of {hook} (token {} of document {}) is NaN or infinite; training or probing on it \
                     would give wrong results without a warning. Capture the store again",
                    token_ids[row], doc_ids[row]
                ),
            ));
        }
        let labels = self
            .manifest
            .labels
            .fields
            .iter()
            .map(|f| u32s(&format!("labels.{f}")))
            .collect::<Result<_>>()?;
        Ok(ShardFields {
            token_ids,
            doc_ids,
            context_ids: u32s("context_ids")?,
            positions: u32s("positions")?,
            labels,
        })
    }

    /// Shuffled batches of `[batch_size, width]` f32 activations at `hook`, from the rows of
    /// `split`: shards are visited in a seeded random order and their rows pass through a
    /// shuffle buffer of `buffer_rows`, so memory stays at one shard plus the buffer.
    pub fn batches(
        &self,
        hook: HookPoint,
        batch_size: usize,
        buffer_rows: usize,
        split: Split,
        seed: u64,
    ) -> Result<Batches<'_>> {
        self.batches_of(&[hook], batch_size, buffer_rows, split, seed)
    }

    /// [`Store::batches`] of several hooks at once: each row is the token's activations at every
    /// hook of `hooks`, side by side in that order (`[batch_size, Σ widths]`), so that a
    /// transcoder sees each token's input and target together. With one hook, the same batches
    /// as [`Store::batches`].
    pub fn batches_of(
        &self,
        hooks: &[HookPoint],
        batch_size: usize,
        buffer_rows: usize,
        split: Split,
        seed: u64,
    ) -> Result<Batches<'_>> {
        let widths = hooks
            .iter()
            .map(|&hook| {
                self.manifest
                    .hook(hook)
                    .map(|h| h.width)
                    .ok_or_else(|| Error::Mismatch {
                        path: self.dir.clone(),
                        message: format!("it holds no activations for {hook}"),
                    })
            })
            .collect::<Result<Vec<usize>>>()?;
        if batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        if hooks.is_empty() {
            return Err(Error::config("hook", "batches need at least one hook to read"));
        }
        let width = widths.iter().sum();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut shard_order: Vec<usize> = (0..self.manifest.shards.len()).collect();
        shard_order.shuffle(&mut rng);
        let buffer_rows = buffer_rows.max(batch_size);
        // The buffer never holds more than its rows plus one shard. Reserved once: grown by
        // doubling, it would overshoot, and each reallocation holds the old and the new copy at
        // once (a transient of three times the buffer at the start of every pass).
        let largest_shard = self
            .manifest
            .shards
            .iter()
            .map(|s| s.tokens as usize)
            .max()
            .unwrap_or(0);
        Ok(Batches {
            store: self,
            hooks: hooks.iter().copied().zip(widths).collect(),
            width,
            batch_size,
            buffer_rows,
            split,
            rng,
            shard_order,
            buffer: Vec::with_capacity((buffer_rows + largest_shard) * width),
        })
    }
}

/// The iterator [`Store::batches`] returns.
pub struct Batches<'s> {
    store: &'s Store,
    /// The hooks read, each with its width.
    hooks: Vec<(HookPoint, usize)>,
    /// The width of a row: the hooks' widths added up.
    width: usize,
    batch_size: usize,
    buffer_rows: usize,
    split: Split,
    rng: StdRng,
    shard_order: Vec<usize>,
    /// Rows waiting to be drawn, flat `[rows * width]`.
    buffer: Vec<f32>,
}

impl Batches<'_> {
    fn rows(&self) -> usize {
        self.buffer.len() / self.width
    }

    fn fill(&mut self) -> Result<()> {
        while self.rows() < self.buffer_rows {
            let Some(shard) = self.shard_order.pop() else {
                return Ok(());
            };
            let rows = self.store.shard_rows(shard)?;
            let mut per_hook = Vec::with_capacity(self.hooks.len());
            let mut fields = None;
            for &(hook, width) in &self.hooks {
                let mut flat = vec![0f32; rows * width];
                fields = Some(self.store.read_shard_into(shard, hook, &mut flat)?);
                per_hook.push((flat, width));
            }
            let fields = fields.expect("at least one hook");
            for (row, &doc) in fields.doc_ids.iter().enumerate() {
                if self.split.contains(doc) {
                    for (flat, width) in &per_hook {
                        self.buffer
                            .extend_from_slice(&flat[row * width..(row + 1) * width]);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Tensor>;

    fn next(&mut self) -> Option<Result<Tensor>> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        let n = self.batch_size.min(self.rows());
        if n == 0 {
            return None;
        }
        let w = self.width;
        let mut batch = Vec::with_capacity(n * w);
        for _ in 0..n {
            // Draw a random row and move the last row into its place.
            let i = self.rng.random_range(0..self.rows());
            batch.extend_from_slice(&self.buffer[i * w..(i + 1) * w]);
            let last = self.rows() - 1;
            self.buffer.copy_within(last * w..(last + 1) * w, i * w);
            self.buffer.truncate(last * w);
        }
        Some(Tensor::from_vec(batch, (n, w), &Device::Cpu).map_err(Into::into))
    }
}

/// The first row of `[rows, width]` f32 `x` holding a NaN or an infinity. The common case (none)
/// costs one summing pass: a sum is finite when every term is, unless finite terms overflow it,
/// which the row scan then tells apart.
pub(crate) fn first_non_finite_row(x: &Tensor) -> Result<Option<usize>> {
    if x.sum_all()?.to_scalar::<f32>()?.is_finite() {
        return Ok(None);
    }
    let width = x.dim(1)?;
    Ok(first_non_finite(&x.flatten_all()?.to_vec1::<f32>()?).map(|i| i / width))
}

/// Checks a shard file against what the manifest recorded when it was written.
fn check_against_manifest(file: &SafetensorsFile, info: &ShardInfo) -> Result<()> {
    let damaged = |message: String| Error::Disk(loupe_util::Error::damaged(file.path(), message));
    if let Some(bytes) = info.bytes {
        if file.len() != bytes {
            return Err(damaged(format!(
                "it is {} bytes long, but the manifest recorded {bytes}; it was cut short or replaced: capture the store again",
                file.len()
            )));
        }
    }
    if let Some(recorded) = &info.xxh3 {
        match file.digest() {
            Some(digest) if digest.to_string() == *recorded => {}
            Some(digest) => {
                return Err(damaged(format!(
                    "its checksum is {digest}, but the manifest recorded {recorded}: it is another shard's file, \
                     or another capture's. Capture the store again"
                )))
            }
            None => {
                return Err(damaged(format!(
                    "it carries no checksum, but the manifest recorded {recorded}: it was replaced. Capture the store again"
                )))
            }
        }
    }
    Ok(())
}

/// Little-endian f16, bf16 or f32 values as f32 into `out` (exactly as many values as `bytes`
/// encodes), in one pass: the half-precision conversions use the CPU's vector instructions, F16C
/// on x86-64, where it has them.
fn decode_f32(bytes: &[u8], dtype: DType, out: &mut [f32]) {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    debug_assert_eq!(out.len() * dtype.size_in_bytes(), bytes.len());
    match dtype {
        DType::F16 | DType::BF16 => {
            // The mapped file gives no 2-byte alignment guarantee, so the halves are gathered in
            // blocks that fit in the cache and converted from there.
            const BLOCK: usize = 4096;
            let mut halves = vec![0u16; BLOCK];
            for (out, bytes) in out.chunks_mut(BLOCK).zip(bytes.chunks(BLOCK * 2)) {
                let halves = &mut halves[..out.len()];
                for (h, b) in halves.iter_mut().zip(bytes.chunks_exact(2)) {
                    *h = u16::from_le_bytes([b[0], b[1]]);
                }
                if dtype == DType::F16 {
                    halves.reinterpret_cast::<half::f16>().convert_to_f32_slice(out);
                } else {
                    halves.reinterpret_cast::<half::bf16>().convert_to_f32_slice(out);
                }
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            }
        }
    }
}

/// Where the first NaN or infinity in `values` is, if any.
#[multiversion::multiversion(targets = "simd")]
fn first_non_finite(values: &[f32]) -> Option<usize> {
    // A vectorised test of each block first; the position is looked for only in a bad block.
    const BLOCK: usize = 1024;
    for (b, block) in values.chunks(BLOCK).enumerate() {
        if !block.iter().fold(true, |ok, v| ok & v.is_finite()) {
            return block.iter().position(|v| !v.is_finite()).map(|i| b * BLOCK + i);
        }
    }
    None
}

fn safetensors_dtype(dtype: DType) -> safetensors::Dtype {
    match dtype {
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        _ => safetensors::Dtype::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_out_fraction_of_0_holds_out_nothing_and_document_0_is_not_special() {
        assert!((0..10_000).all(|doc| Split::Train {
            held_out: 0.0,
            seed: 0
        }
        .contains(doc)));
        let small = Split::HeldOut {
            held_out: 0.001,
            seed: 0,
        };
        assert!(!small.contains(0));
        let held = (0..100_000).filter(|&doc| small.contains(doc)).count();
        assert!((50..150).contains(&held), "{held}");
    }
}
