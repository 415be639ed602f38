use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// A batch of token sequences laid out for one forward call: `[rows, columns]` of token ids,
/// shorter sequences padded on the left so that every row's last token is in the last column.
///
/// Left padding is what generation wants (every row's next token goes in the same new column),
/// and it keeps positions simple: the *position* of a token is its index in its own sequence,
/// whatever the padding, and that is what rotary embeddings and interventions ([`crate::Positions`])
/// use. During KV-cached generation a batch holds only the new columns; `start_column` says how
/// many columns the cache holds already.
#[derive(Clone, Debug)]
pub struct Batch {
    ids: Tensor,
    pads: Vec<usize>,
    start_column: usize,
    columns: usize,
}

impl Batch {
    /// Left-pads `sequences` with `pad_id` into one batch. Padding is masked out of attention, so
    /// the pad id does not change any result.
    pub fn left_padded(sequences: &[Vec<u32>], pad_id: u32, device: &Device) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::Invalid("a batch needs at least one sequence".into()));
        }
        if let Some(i) = sequences.iter().position(|s| s.is_empty()) {
            return Err(Error::Invalid(format!("sequence {i} of the batch has no tokens")));
        }
        let columns = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(sequences.len() * columns);
        let mut pads = Vec::with_capacity(sequences.len());
        for seq in sequences {
            let pad = columns - seq.len();
            flat.extend(std::iter::repeat_n(pad_id, pad));
            flat.extend_from_slice(seq);
            pads.push(pad);
        }
        let ids = Tensor::from_vec(flat, (sequences.len(), columns), device)?;
        Ok(Batch {
            ids,
            pads,
            start_column: 0,
            columns,
        })
    }

    /// Unpadded sequences of equal length that continue `start_column` tokens already in a KV
    /// cache (one shared prefix repeated per row, see [`crate::KvCache::repeat_rows`]).
    pub fn continuing(sequences: &[Vec<u32>], start_column: usize, device: &Device) -> Result<Self> {
        let columns = sequences.first().map_or(0, Vec::len);
        if columns == 0 || sequences.iter().any(|s| s.len() != columns) {
            return Err(Error::Invalid(
                "a continuing batch needs sequences of one length, at least one token each".into(),
            ));
        }
        let flat: Vec<u32> = sequences.concat();
        Ok(Batch {
            ids: Tensor::from_vec(flat, (sequences.len(), columns), device)?,
            pads: vec![0; sequences.len()],
            start_column,
            columns,
        })
    }

    /// The batch for the next generation step: one new token per row, appended after this batch's
    /// columns (which are then in the KV cache).
    pub fn next_step(&self, tokens: &[u32]) -> Result<Self> {
        if tokens.len() != self.rows() {
            return Err(Error::Invalid(format!(
                "next_step got {} tokens for a batch of {} rows",
                tokens.len(),
                self.rows()
            )));
        }
        let ids = Tensor::from_slice(tokens, (tokens.len(), 1), self.ids.device())?;
        Ok(Batch {
            ids,
            pads: self.pads.clone(),
            start_column: self.end_column(),
            columns: 1,
        })
    }

    /// Token ids, `[rows, columns]`, u32.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Sequences in the batch.
    pub fn rows(&self) -> usize {
        self.pads.len()
    }

    /// Columns in this batch (not counting those already in a KV cache).
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Columns that come before this batch's (those held by a KV cache).
    pub fn start_column(&self) -> usize {
        self.start_column
    }

    /// One past the last column of this batch, counting the cached ones.
    pub fn end_column(&self) -> usize {
        self.start_column + self.columns
    }

    /// Left padding of each row.
    pub fn pads(&self) -> &[usize] {
        &self.pads
    }

    /// Whether any row is left-padded (rows of unequal length).
    pub fn has_padding(&self) -> bool {
        self.pads.iter().any(|&p| p > 0)
    }

    /// The position in its own sequence of the token at (`row`, `column` of this batch), or
    /// `None` for padding.
    pub fn position(&self, row: usize, column: usize) -> Option<usize> {
        (self.start_column + column).checked_sub(self.pads[row])
    }

    /// The longest sequence in the batch, counting cached columns: the context it needs.
    pub fn max_len(&self) -> usize {
        self.end_column() - self.pads.iter().min().copied().unwrap_or(0)
    }

    /// Positions of every token for rotary embeddings, `[rows * columns]` u32 (0 for padding).
    pub(crate) fn rope_positions(&self) -> Result<Tensor> {
        let mut flat = Vec::with_capacity(self.rows() * self.columns);
        for row in 0..self.rows() {
            flat.extend((0..self.columns).map(|c| self.position(row, c).unwrap_or(0) as u32));
        }
        Ok(Tensor::from_vec(
            flat,
            self.rows() * self.columns,
            self.ids.device(),
        )?)
    }

    /// The additive attention mask, `[rows, 1, columns, end_column]`: 0 where a query may look at a
    /// key, -inf where not. A token sees itself and the real tokens before it (with a sliding
    /// `window`, only the `window` latest of them, itself included); padding is seen by no real
    /// token. `None` when nothing needs masking (one new column, no padding, nothing out of the
    /// window).
    pub(crate) fn attention_mask(&self, window: Option<usize>) -> Result<Option<Tensor>> {
        let keys = self.end_column();
        let window = window.filter(|&w| self.max_len() > w);
        if self.columns == 1 && !self.has_padding() && window.is_none() {
            return Ok(None);
        }
        let window = window.unwrap_or(usize::MAX);
        let mut mask = Vec::with_capacity(self.rows() * self.columns * keys);
        for &pad in &self.pads {
            for q in 0..self.columns {
                let q_col = self.start_column + q;
                mask.extend((0..keys).map(|k| {
                    let visible = k == q_col || (k < q_col && k >= pad && q_col - k < window);
                    if visible {
                        0f32
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
        let shape = (self.rows(), 1, self.columns, keys);
        Ok(Some(Tensor::from_vec(mask, shape, self.ids.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_and_positions() {
        let b = Batch::left_padded(&[vec![5, 6, 7], vec![8]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.ids().to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![0, 0, 8]]
        );
        assert_eq!(b.position(1, 0), None);
        assert_eq!(b.position(1, 2), Some(0));
        assert_eq!(b.position(0, 2), Some(2));
        let next = b.next_step(&[1, 2]).unwrap();
        assert_eq!(next.position(1, 0), Some(1));
        assert_eq!(next.position(0, 0), Some(3));
        assert_eq!(next.max_len(), 4);
    }

    #[test]
    fn mask_hides_padding_and_the_future() {
        let b = Batch::left_padded(&[vec![5, 6], vec![8]], 0, &Device::Cpu).unwrap();
        let m = b
            .attention_mask(None)
            .unwrap()
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m[0], vec![vec![0.0, inf], vec![0.0, 0.0]]);
        // Row 1: column 0 is padding; the pad query sees only itself, the real token only itself.
        assert_eq!(m[1], vec![vec![0.0, inf], vec![inf, 0.0]]);
    }

    #[test]
    fn sliding_window_hides_keys_too_far_back() {
        let b = Batch::left_padded(&[vec![5, 6, 7]], 0, &Device::Cpu).unwrap();
        assert!(
            b.attention_mask(Some(3)).unwrap().is_some(),
            "causal mask still needed"
        );
        let m = b.attention_mask(Some(2)).unwrap().unwrap();
        let m = m.squeeze(1).unwrap().to_vec3::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            m[0][2],
            vec![inf, 0.0, 0.0],
            "window 2: the token and the one before"
        );
        // One new column past the window: masked even without padding.
        let step = b.next_step(&[8]).unwrap();
        let m = step.attention_mask(Some(2)).unwrap().unwrap();
        assert_eq!(
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![inf, inf, 0.0, 0.0]
        );
        assert!(step.attention_mask(None).unwrap().is_none());
    }
}
