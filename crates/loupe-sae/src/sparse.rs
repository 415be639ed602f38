//! Sparse latent codes and the kernels that make TopK training cheap.
//!
//! A TopK SAE has only k active latents per token, so decoding, and backpropagating through the
//! decoder and into the encoder, only touch k rows of each matrix per token: about k·d
//! multiply-adds instead of d_sae·d. Only the encoder's forward product stays dense (every
//! latent's pre-activation is needed to find the top k). These kernels do the sparse parts on
//! plain slices, in parallel over tokens or over latents so that no two threads write the same
//! row and results do not depend on the thread count.

use rayon::prelude::*;

/// Active latents per token in compressed-row form: token `b`'s latents are
/// `latents[offsets[b]..offsets[b + 1]]` with activations `values[..]` at the same entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseCode {
    /// Number of latents (d_sae).
    pub width: usize,
    /// `rows() + 1` entries: where each token's latents start in `latents`, then the total.
    pub offsets: Vec<usize>,
    /// The active latents' indices, token after token.
    pub latents: Vec<u32>,
    /// Their activations, aligned with `latents`.
    pub values: Vec<f32>,
}

impl SparseCode {
    /// A code of `width` latents from each token's `(latent, value)` list, in order.
    pub fn from_rows(width: usize, rows: Vec<Vec<(u32, f32)>>) -> Self {
        let mut code = SparseCode {
            width,
            offsets: Vec::with_capacity(rows.len() + 1),
            ..Default::default()
        };
        code.offsets.push(0);
        for row in rows {
            for (latent, value) in row {
                code.latents.push(latent);
                code.values.push(value);
            }
            code.offsets.push(code.latents.len());
        }
        code
    }

    /// A code from fixed-width slots: row b's entries are the first `counts[b]` of
    /// `latents[b·k..]` and `values[b·k..]`.
    fn from_slots(width: usize, k: usize, counts: &[usize], latents: &[u32], values: &[f32]) -> Self {
        let nnz = counts.iter().sum();
        let mut code = SparseCode {
            width,
            offsets: Vec::with_capacity(counts.len() + 1),
            latents: Vec::with_capacity(nnz),
            values: Vec::with_capacity(nnz),
        };
        code.offsets.push(0);
        for (row, &n) in counts.iter().enumerate() {
            code.latents.extend_from_slice(&latents[row * k..][..n]);
            code.values.extend_from_slice(&values[row * k..][..n]);
            code.offsets.push(code.latents.len());
        }
        code
    }

    /// The code cut into consecutive latent ranges: part `j` keeps each token's entries whose
    /// latent lies in `ends[j - 1]..ends[j]` (from 0 for the first), in their order. Every part
    /// keeps the full width, so its products are laid out as the whole code's are.
    pub fn split_at_latents(&self, ends: &[usize]) -> Vec<SparseCode> {
        let part_of = |latent: u32| ends.partition_point(|&end| end <= latent as usize);
        let mut parts: Vec<SparseCode> = ends
            .iter()
            .map(|_| SparseCode {
                width: self.width,
                offsets: vec![0],
                ..Default::default()
            })
            .collect();
        for row in 0..self.rows() {
            for p in self.row_range(row) {
                if let Some(part) = parts.get_mut(part_of(self.latents[p])) {
                    part.latents.push(self.latents[p]);
                    part.values.push(self.values[p]);
                }
            }
            for part in &mut parts {
                part.offsets.push(part.latents.len());
            }
        }
        parts
    }

    /// Tokens (rows) in the code.
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of stored (active) entries.
    pub fn nnz(&self) -> usize {
        self.latents.len()
    }

    fn row_range(&self, row: usize) -> std::ops::Range<usize> {
        self.offsets[row]..self.offsets[row + 1]
    }

    /// `[rows, width]` dense activations.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.rows() * self.width];
        for row in 0..self.rows() {
            for p in self.row_range(row) {
                dense[row * self.width + self.latents[p] as usize] = self.values[p];
            }
        }
        dense
    }

    /// How many tokens each latent is active on.
    pub fn fire_counts(&self) -> Vec<u32> {
        let mut counts = vec![0; self.width];
        for &l in &self.latents {
            counts[l as usize] += 1;
        }
        counts
    }

    /// `out[b] = Σ_p weights[p] · table[latent p]` over token b's entries: `[rows, d]`. With
    /// `weights = values` and `table` the decoder, this is the decoder's product.
    pub fn weighted_rows(&self, weights: &[f32], table: &[f32], d: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.rows() * d];
        out.par_chunks_mut(d).enumerate().for_each(|(row, out_row)| {
            for p in self.row_range(row) {
                axpy(out_row, weights[p], &table[self.latents[p] as usize * d..][..d]);
            }
        });
        out
    }

    /// For each entry p of token b: `rows[b] · table[latent p]`. With `rows` the gradient of the
    /// reconstruction and `table` the decoder, this is the gradient of each active value.
    pub fn entry_dots(&self, rows: &[f32], table: &[f32], d: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.nnz()];
        let mut chunks: Vec<&mut [f32]> = Vec::with_capacity(self.rows());
        let mut rest = out.as_mut_slice();
        for row in 0..self.rows() {
            let (head, tail) = rest.split_at_mut(self.row_range(row).len());
            chunks.push(head);
            rest = tail;
        }
        chunks.into_par_iter().enumerate().for_each(|(row, out_row)| {
            let r = &rows[row * d..][..d];
            for (o, p) in out_row.iter_mut().zip(self.row_range(row)) {
                *o = dot(r, &table[self.latents[p] as usize * d..][..d]);
            }
        });
        out
    }

    /// `out[i] = Σ_{entries p of latent i} weights[p] · rows[token of p]`: `[width, d]`. With
    /// `weights = values` and `rows` the reconstruction gradient this is the decoder's gradient;
    /// with the pre-activation gradient and the input, the encoder's.
    pub fn scatter_rows(&self, weights: &[f32], rows: &[f32], d: usize) -> Vec<f32> {
        let by_latent = self.by_latent();
        let mut out = vec![0.0; self.width * d];
        out.par_chunks_mut(d)
            .enumerate()
            .with_min_len(64)
            .for_each(|(latent, out_row)| {
                let entries = &by_latent.entries[by_latent.offsets[latent]..by_latent.offsets[latent + 1]];
                for &(row, p) in entries {
                    axpy(out_row, weights[p as usize], &rows[row as usize * d..][..d]);
                }
            });
        out
    }

    /// `out[i] = Σ_{entries p of latent i} weights[p]`: `[width]`.
    pub fn latent_sums(&self, weights: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.width];
        for (p, &l) in self.latents.iter().enumerate() {
            out[l as usize] += weights[p];
        }
        out
    }

    /// The entries grouped by latent (a counting sort), in token order within each latent.
    fn by_latent(&self) -> ByLatent {
        let mut offsets = vec![0usize; self.width + 1];
        for &l in &self.latents {
            offsets[l as usize + 1] += 1;
        }
        for i in 0..self.width {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut entries = vec![(0u32, 0u32); self.nnz()];
        for row in 0..self.rows() {
            for p in self.row_range(row) {
                let l = self.latents[p] as usize;
                entries[next[l]] = (row as u32, p as u32);
                next[l] += 1;
            }
        }
        ByLatent { offsets, entries }
    }
}

struct ByLatent {
    offsets: Vec<usize>,
    /// (token, entry index)
    entries: Vec<(u32, u32)>,
}

use loupe_util::vector::axpy;
pub(crate) use loupe_util::vector::dot;
use multiversion::multiversion;

/// The `k` largest of each row of `pre` (`[rows, width]`), keeping only positive values (a TopK
/// followed by a ReLU, as SAELens and OpenAI define it). When `allowed` is given, only those
/// latents compete (AuxK's top-k over dead latents).
pub fn top_k_per_row(pre: &[f32], width: usize, k: usize, allowed: Option<&[u32]>) -> SparseCode {
    let rows = pre.len() / width;
    let k = k.min(allowed.map_or(width, <[u32]>::len));
    if k == 0 {
        return SparseCode::from_rows(width, vec![Vec::new(); rows]);
    }
    // Each row fills a k-wide slot; the slots are compacted afterwards.
    let mut latents = vec![0u32; rows * k];
    let mut values = vec![0f32; rows * k];
    let mut counts = vec![0usize; rows];
    latents
        .par_chunks_mut(k)
        .zip(values.par_chunks_mut(k))
        .zip(counts.par_iter_mut())
        .zip(pre.par_chunks(width))
        .with_min_len(16)
        .for_each_init(
            || Selection::new(k),
            |top, (((latents, values), count), row)| {
                match allowed {
                    Some(allowed) => top.scan(allowed.iter().map(|&i| (i, row[i as usize]))),
                    None => scan_row(top, row),
                }
                *count = top.write_sorted(latents, values);
            },
        );
    SparseCode::from_slots(width, k, &counts, &latents, &values)
}

/// The `k` largest positive values seen so far, found in one pass with no allocation: a value
/// enters only if it beats `floor` (0 at first, since only positive values count), and most of a
/// row's values fail that test, 16 at a time. Entrants are appended to a buffer of `2k`; when it
/// is full it is cut back to its `k` largest and the floor rises to the smallest of them, so each
/// entrant costs O(1) on average.
struct Selection {
    k: usize,
    /// (latent, value), unordered; at most `2k`.
    held: Vec<(u32, f32)>,
    floor: f32,
}

impl Selection {
    fn new(k: usize) -> Self {
        Selection {
            k,
            held: Vec::with_capacity(2 * k),
            floor: 0.0,
        }
    }

    #[inline(always)]
    fn offer(&mut self, latent: u32, value: f32) {
        if value > self.floor {
            self.held.push((latent, value));
            if self.held.len() == 2 * self.k {
                self.cut();
            }
        }
    }

    /// Keeps the `k` largest held values and raises the floor to the smallest of them.
    fn cut(&mut self) {
        if self.held.len() > self.k {
            self.held
                .select_nth_unstable_by(self.k - 1, |a, b| b.1.total_cmp(&a.1));
            self.held.truncate(self.k);
            self.floor = self.held[self.k - 1].1;
        }
    }

    fn reset(&mut self) {
        self.held.clear();
        self.floor = 0.0;
    }

    fn scan(&mut self, entries: impl Iterator<Item = (u32, f32)>) {
        self.reset();
        for (latent, value) in entries {
            self.offer(latent, value);
        }
    }

    /// Writes the `k` largest held values in latent order and returns how many there are.
    fn write_sorted(&mut self, latents: &mut [u32], values: &mut [f32]) -> usize {
        self.cut();
        self.held.sort_unstable_by_key(|&(latent, _)| latent);
        for (i, &(latent, value)) in self.held.iter().enumerate() {
            latents[i] = latent;
            values[i] = value;
        }
        self.held.len()
    }
}

/// Offers a whole row to `selection`: 16 values at a time are compared with its floor in one
/// vector test, and looked at one by one only when one of them beats it.
#[multiversion(targets = "simd")]
fn scan_row(selection: &mut Selection, row: &[f32]) {
    selection.reset();
    for (c, chunk) in row.chunks(LANES).enumerate() {
        let floor = selection.floor;
        if chunk.iter().fold(false, |any, &v| any | (v > floor)) {
            for (j, &v) in chunk.iter().enumerate() {
                selection.offer((c * LANES + j) as u32, v);
            }
        }
    }
}

/// The entries of `row` at or above `cut` (and positive), in latent order.
#[multiversion(targets = "simd")]
fn at_or_above(row: &[f32], cut: f32) -> Vec<(u32, f32)> {
    let mut kept = Vec::new();
    for (c, chunk) in row.chunks(LANES).enumerate() {
        if chunk.iter().fold(false, |any, &v| any | (v >= cut)) {
            for (j, &v) in chunk.iter().enumerate() {
                if v >= cut && v > 0.0 {
                    kept.push(((c * LANES + j) as u32, v));
                }
            }
        }
    }
    kept
}

/// Values compared at once by the vector tests of the selection scans.
const LANES: usize = 16;

/// BatchTopK: the `k_total` largest positive values of the whole batch `pre` (`[rows, width]`),
/// however they fall across tokens, and the smallest value kept (or `None` when none are).
///
/// A full selection over rows × width values is slow, so each row first offers its top
/// `4 · k_total / rows` candidates; the global cut is taken among those. If some row offered only
/// candidates above the cut it may hold more, and the selection falls back to the full batch.
pub fn batch_top_k(pre: &[f32], width: usize, k_total: usize) -> (SparseCode, Option<f32>) {
    let rows = pre.len() / width;
    let per_row = (4 * k_total).div_ceil(rows.max(1)).clamp(1, width);
    let offered = top_k_per_row(pre, width, per_row, None);
    let cut_from = |mut all: Vec<f32>| -> Option<f32> {
        if all.is_empty() {
            return None;
        }
        let n = k_total.min(all.len());
        all.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
        Some(all[n - 1])
    };
    let mut cut = cut_from(offered.values.clone());
    let mut fell_back = false;
    if let Some(c) = cut {
        let saturated = (0..rows).any(|row| {
            let range = offered.row_range(row);
            range.len() == per_row && per_row < width && offered.values[range].iter().all(|&v| v >= c)
        });
        if saturated {
            cut = cut_from(pre.iter().copied().filter(|&v| v > 0.0).collect());
            fell_back = true;
        }
    }
    let Some(cut) = cut else {
        return (SparseCode::from_rows(width, vec![Vec::new(); rows]), None);
    };
    // Every value at or above the cut. Unless the fallback ran, the rows' offers hold them all: a
    // row that offered fewer than `per_row` offered every positive value, and one that offered
    // `per_row` has an offer below the cut, so what it kept back is below the cut too.
    let code_rows: Vec<Vec<(u32, f32)>> = if fell_back {
        pre.par_chunks(width).map(|row| at_or_above(row, cut)).collect()
    } else {
        (0..rows)
            .map(|row| {
                let range = offered.row_range(row);
                offered.latents[range.clone()]
                    .iter()
                    .zip(&offered.values[range])
                    .filter(|&(_, &v)| v >= cut)
                    .map(|(&l, &v)| (l, v))
                    .collect()
            })
            .collect()
    };
    (SparseCode::from_rows(width, code_rows), Some(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense_matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn a_split_code_puts_each_entry_in_its_latent_range_and_adds_back_to_the_whole() {
        let (rows, width) = (6, 10);
        let pre = pseudo_random(rows * width, 4);
        let code = top_k_per_row(&pre, width, 4, None);
        let parts = code.split_at_latents(&[3, 7, 10]);
        assert_eq!(parts.len(), 3);
        let mut sum = vec![0.0; rows * width];
        for (part, range) in parts.iter().zip([0..3, 3..7, 7..10]) {
            assert_eq!(part.rows(), rows);
            assert!(part.latents.iter().all(|&l| range.contains(&(l as usize))));
            sum.iter_mut().zip(part.to_dense()).for_each(|(s, v)| *s += v);
        }
        assert_eq!(sum, code.to_dense());
        assert_eq!(parts.iter().map(SparseCode::nnz).sum::<usize>(), code.nnz());
    }

    #[test]
    fn sparse_kernels_equal_dense_products() {
        let (rows, width, d) = (5, 7, 3);
        let pre = pseudo_random(rows * width, 1);
        let code = top_k_per_row(&pre, width, 3, None);
        let dense = code.to_dense();
        let table = pseudo_random(width * d, 2);
        let g = pseudo_random(rows * d, 3);

        let decoded = code.weighted_rows(&code.values, &table, d);
        let expected = dense_matmul(&dense, &table, rows, width, d);
        assert!(decoded.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5));

        // scatter_rows(values, g) = denseᵀ · g
        let mut dense_t = vec![0.0; width * rows];
        for r in 0..rows {
            for l in 0..width {
                dense_t[l * rows + r] = dense[r * width + l];
            }
        }
        let scattered = code.scatter_rows(&code.values, &g, d);
        let expected = dense_matmul(&dense_t, &g, width, rows, d);
        assert!(scattered.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5));

        // entry_dots(g, table) = (g · tableᵀ) at the active entries
        let mut table_t = vec![0.0; d * width];
        for l in 0..width {
            for j in 0..d {
                table_t[j * width + l] = table[l * d + j];
            }
        }
        let full = dense_matmul(&g, &table_t, rows, d, width);
        let dots = code.entry_dots(&g, &table, d);
        for r in 0..rows {
            for p in code.offsets[r]..code.offsets[r + 1] {
                assert!((dots[p] - full[r * width + code.latents[p] as usize]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn top_k_keeps_the_largest_positive_values() {
        let pre = [0.5, -1.0, 2.0, 0.1, 3.0, -0.2, -0.3, -0.4];
        let code = top_k_per_row(&pre, 4, 2, None);
        assert_eq!(code.offsets, [0, 2, 3]);
        assert_eq!(code.latents, [0, 2, 0]);
        assert_eq!(code.values, [0.5, 2.0, 3.0]);
        let dead_only = top_k_per_row(&pre, 4, 2, Some(&[1, 3]));
        assert_eq!(dead_only.latents, [3]);
    }

    #[test]
    fn batch_top_k_selects_across_the_batch() {
        // All of the top 4 sit in the first row; the fallback to a full selection must see them.
        let pre = [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.1, -1.0];
        let (code, cut) = batch_top_k(&pre, 4, 4);
        assert_eq!(cut, Some(2.0));
        assert_eq!(code.offsets, [0, 4, 4]);
        let (code, cut) = batch_top_k(&pre, 4, 6);
        assert_eq!(cut, Some(0.5));
        assert_eq!(code.nnz(), 6);

        // 8 rows, 6 to keep: each row offers 3 candidates, but the first row holds all 6.
        let mut pre = vec![0.01; 8 * 8];
        pre[..8].copy_from_slice(&[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 0.0, 0.0]);
        let (code, cut) = batch_top_k(&pre, 8, 6);
        assert_eq!(cut, Some(4.0));
        assert_eq!(code.offsets[1], 6);
        assert_eq!(code.nnz(), 6);
    }
}
