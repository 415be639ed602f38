//! Judges of a patched generation (docs/design.md, "Judges"): embedding similarity with the source prompt
//! ([`embedding`]), named concept words, and Patchscopes' next-token agreement and surprisal.

pub mod embedding;

pub use embedding::{cosine, Embedder};

/// The concept words that appear in `text` as whole words, ignoring case.
pub fn concept_hits(text: &str, concepts: &[String]) -> Vec<String> {
    let text = text.to_lowercase();
    concepts
        .iter()
        .filter(|concept| {
            let concept = concept.to_lowercase();
            !concept.is_empty()
                && text.match_indices(&concept).any(|(start, _)| {
                    let before = text[..start].chars().next_back();
                    let after = text[start + concept.len()..].chars().next();
                    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
                })
        })
        .cloned()
        .collect()
}

/// Patchscopes' next-token judges for one patched row: whether its most likely first token is the
/// source's own prediction (precision@1 over rows), and the surprisal `−ln p(source's token)` of
/// that token under the patched distribution, in nats.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NextToken {
    /// The patched row's most likely first token.
    pub patched_top1: u32,
    /// Whether it is the source's own most likely next token.
    pub matches: bool,
    /// `−ln p(source's top token)` under the patched first-token distribution, nats.
    pub surprisal: f32,
}

/// Judges `logits` (the patched target's first-token logits) against the source's top token.
pub fn next_token(logits: &[f32], source_top1: u32) -> NextToken {
    let patched_top1 = argmax(logits);
    let max = logits[patched_top1 as usize];
    let log_sum = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    NextToken {
        patched_top1,
        matches: patched_top1 == source_top1,
        surprisal: log_sum - logits[source_top1 as usize],
    }
}

pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concepts_match_whole_words_ignoring_case() {
        let concepts = vec!["Spain".to_string(), "art".to_string(), "español".to_string()];
        assert_eq!(
            concept_hits("in SPAIN they speak Español; a startup", &concepts),
            vec!["Spain".to_string(), "español".to_string()]
        );
    }

    #[test]
    fn next_token_surprisal_is_the_negative_log_probability() {
        let logits = [0.0f32, (3f32).ln(), 0.0];
        let judged = next_token(&logits, 1);
        assert_eq!(judged.patched_top1, 1);
        assert!(judged.matches);
        assert!((judged.surprisal - (5f32 / 3.0).ln()).abs() < 1e-6);
        let other = next_token(&logits, 0);
        assert!(!other.matches);
        assert!((other.surprisal - 5f32.ln()).abs() < 1e-6);
    }
}
