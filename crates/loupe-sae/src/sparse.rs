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
                let w = weights[p];
                let t = &table[self.latents[p] as usize * d..][..d];
                out_row.iter_mut().zip(t).for_each(|(o, &t)| *o += w * t);
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
                let t = &table[self.latents[p] as usize * d..][..d];
                *o = dot(r, t);
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
        out.par_chunks_mut(d).enumerate().for_each(|(latent, out_row)| {
            for &(row, p) in &by_latent.entries[by_latent.offsets[latent]..by_latent.offsets[latent + 1]] {
                let w = weights[p as usize];
                let r = &rows[row as usize * d..][..d];
                out_row.iter_mut().zip(r).for_each(|(o, &r)| *o += w * r);
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

pub(crate) use loupe_util::vector::dot;

/// The `k` largest of each row of `pre` (`[rows, width]`), keeping only positive values (a TopK
/// followed by a ReLU, as SAELens and OpenAI define it). When `allowed` is given, only those
/// latents compete (AuxK's top-k over dead latents).
pub fn top_k_per_row(pre: &[f32], width: usize, k: usize, allowed: Option<&[u32]>) -> SparseCode {
    let rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(width)
        .map(|row| {
            let mut candidates: Vec<(u32, f32)> = match allowed {
                Some(allowed) => allowed.iter().map(|&i| (i, row[i as usize])).collect(),
                None => row.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect(),
            };
            let k = k.min(candidates.len());
            if k < candidates.len() {
                candidates.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1));
                candidates.truncate(k);
            }
            candidates.retain(|&(_, v)| v > 0.0);
            candidates.sort_unstable_by_key(|&(i, _)| i);
            candidates
        })
        .collect();
    SparseCode::from_rows(width, rows)
}

/// BatchTopK: the `k_total` largest positive values of the whole batch `pre` (`[rows, width]`),
/// however they fall across tokens, and the smallest value kept (or `None` when none are).
///
/// A full selection over rows × width values is slow, so each row first offers its top
/// `4 · k_total / rows` candidates; the global cut is taken among those. If some row offered only
/// candidates above the cut it may hold more, and the selection falls back to the full batch.
pub fn batch_top_k(pre: &[f32], width: usize, k_total: usize) -> (SparseCode, Option<f32>) {
    let rows = pre.len() / width;
    let per_row = (4 * k_total).div_ceil(rows.max(1)).clamp(1, width);
    let row_candidates: Vec<Vec<f32>> = pre
        .par_chunks(width)
        .map(|row| {
            let mut values: Vec<f32> = row.iter().copied().filter(|&v| v > 0.0).collect();
            if per_row < values.len() {
                values.select_nth_unstable_by(per_row, |a, b| b.total_cmp(a));
                values.truncate(per_row);
            }
            values
        })
        .collect();
    let cut_from = |mut all: Vec<f32>| -> Option<f32> {
        if all.is_empty() {
            return None;
        }
        let n = k_total.min(all.len());
        all.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
        Some(all[n - 1])
    };
    let mut cut = cut_from(row_candidates.iter().flatten().copied().collect());
    if let Some(c) = cut {
        let saturated = row_candidates
            .iter()
            .any(|r| r.len() == per_row && per_row < width && r.iter().all(|&v| v >= c));
        if saturated {
            cut = cut_from(pre.iter().copied().filter(|&v| v > 0.0).collect());
        }
    }
    let Some(cut) = cut else {
        return (SparseCode::from_rows(width, vec![Vec::new(); rows]), None);
    };
    let code_rows: Vec<Vec<(u32, f32)>> = pre
        .par_chunks(width)
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|&(_, &v)| v >= cut && v > 0.0)
                .map(|(i, &v)| (i as u32, v))
                .collect()
        })
        .collect();
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
