//! The contexts in a store where one neuron fires hardest: what `loupe probe show` prints for a
//! one-neuron probe.

use loupe_data::reader::Store;
use loupe_model::{HookPoint, Tokenizer};
use loupe_util::Progress;
use serde::Serialize;

use crate::{Error, Result};

/// One token where a neuron fires hardest, with its context as text.
#[derive(Clone, Debug, Serialize)]
pub struct TopContext {
    /// The neuron's activation at the token.
    pub activation: f32,
    /// The token's document index.
    pub doc: u32,
    /// The token's labels, as `field=value`.
    pub labels: Vec<String>,
    /// Text of the tokens before it in its context, the token, and the tokens after.
    pub before: String,
    /// The token's own text (with the other byte tokens of its character, when it is part of one).
    pub token: String,
    /// Text of the tokens after it in its context.
    pub after: String,
}

/// The `n` tokens among the first `max_tokens` of the store with the largest activation of
/// `neuron` at `hook` (the smallest, when `lowest`: for a probe that weighs the neuron negatively),
/// each with up to `before` and `after` tokens of its context around it.
#[allow(clippy::too_many_arguments)]
pub fn top_contexts(
    store: &Store,
    hook: HookPoint,
    neuron: usize,
    lowest: bool,
    n: usize,
    (before, after): (usize, usize),
    max_tokens: Option<usize>,
    tokenizer: &Tokenizer,
    progress: &mut dyn Progress,
) -> Result<Vec<TopContext>> {
    let width = store
        .manifest
        .hook(hook)
        .ok_or_else(|| {
            Error::dataset(format!(
                "the store {} holds no activations for {hook}",
                store.dir.display()
            ))
        })?
        .width;
    if neuron >= width {
        return Err(Error::dataset(format!(
            "neuron {neuron} is outside {hook}, which has {width}"
        )));
    }
    let limit = max_tokens
        .unwrap_or(usize::MAX)
        .min(store.manifest.tokens as usize);
    progress.start(&format!("reading {hook}"), limit as u64, 0);
    let vocab = &store.manifest.labels;
    let mut best: Vec<TopContext> = Vec::new();
    let mut seen = 0;
    for shard in 0..store.manifest.shards.len() {
        if seen >= limit {
            break;
        }
        let s = store.read_shard(shard, hook)?;
        let values = s
            .activations
            .narrow(1, neuron, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let rows = values.len().min(limit - seen);
        for r in 0..rows {
            let v = values[r];
            let key = |a: f32| if lowest { -a } else { a };
            if best.len() == n && best.last().is_some_and(|b| key(b.activation) >= key(v)) {
                continue;
            }
            // The token's context: the rows around it with the same context id.
            let same = |i: usize| s.fields.context_ids[i] == s.fields.context_ids[r];
            let mut start = r;
            while start > 0 && r - start < before && same(start - 1) {
                start -= 1;
            }
            let mut end = r + 1;
            while end < s.fields.token_ids.len() && end - r <= after && same(end) {
                end += 1;
            }
            // Cut into whole characters, so that a byte token of "ñ" is shown with its partner.
            let pieces = tokenizer.decode_pieces(&s.fields.token_ids[start..end])?;
            let hit = pieces
                .iter()
                .position(|p| p.tokens.contains(&(r - start)))
                .expect("the pieces cover every token");
            let text = |pieces: &[loupe_model::TextPiece]| {
                pieces.iter().map(|p| p.text.as_str()).collect::<String>()
            };
            let labels = vocab
                .fields
                .iter()
                .zip(&s.fields.labels)
                .filter_map(|(field, ids)| vocab_value(vocab, field, ids[r]).map(|v| format!("{field}={v}")))
                .collect();
            best.push(TopContext {
                activation: v,
                doc: s.fields.doc_ids[r],
                labels,
                before: text(&pieces[..hit]),
                token: pieces[hit].text.clone(),
                after: text(&pieces[hit + 1..]),
            });
            best.sort_by(|a, b| key(b.activation).total_cmp(&key(a.activation)));
            best.truncate(n);
        }
        seen += rows;
        progress.advance(rows as u64);
    }
    Ok(best)
}

fn vocab_value<'a>(vocab: &'a loupe_data::packing::LabelVocab, field: &str, id: u32) -> Option<&'a str> {
    let f = vocab.fields.iter().position(|x| x == field)?;
    vocab.values[f].get(id as usize).map(String::as_str)
}
