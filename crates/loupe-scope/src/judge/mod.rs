//! Judges of a patched generation (docs/design.md, "Judges"): embedding similarity with the source prompt
//! ([`embedding`]), named concept words, degenerate text, and Patchscopes' next-token agreement
//! and surprisal.

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

/// Attribute extraction (Patchscopes): whether `text` contains one of `answers` as whole words,
/// ignoring case (so that "rand" is not found in "grand"); `None` when the source has no answers.
pub fn answer_found(text: &str, answers: &[String]) -> Option<bool> {
    if answers.is_empty() {
        return None;
    }
    Some(!concept_hits(text, answers).is_empty())
}

/// Whether a generation (its token ids) is degenerate: one token makes up at least half of it
/// (with four tokens or more), or one pair of consecutive tokens occurs three times or more (a
/// loop). Amplified text that is fluent nonsense of this kind can still sit close to the source in
/// embedding space; AxBench zeroes such generations, and the scope study counts them as not
/// interpreted.
pub fn degenerate(tokens: &[u32]) -> bool {
    use std::collections::HashMap;
    if tokens.len() >= 4 {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for &t in tokens {
            *counts.entry(t).or_default() += 1;
        }
        if counts.values().any(|&c| 2 * c >= tokens.len()) {
            return true;
        }
    }
    let mut pairs: HashMap<(u32, u32), usize> = HashMap::new();
    for pair in tokens.windows(2) {
        *pairs.entry((pair[0], pair[1])).or_default() += 1;
    }
    pairs.values().any(|&c| c >= 3)
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
    fn answers_are_found_as_whole_words_ignoring_case() {
        let answers = vec!["rand".to_string(), "New Delhi".to_string()];
        assert_eq!(answer_found("is the South African Rand.", &answers), Some(true));
        assert_eq!(answer_found("a grand old city", &answers), Some(false));
        assert_eq!(answer_found(" is new delhi, India", &answers), Some(true));
        assert_eq!(answer_found("anything", &[]), None);
    }

    #[test]
    fn repeated_tokens_and_loops_are_degenerate() {
        assert!(degenerate(&[5, 5, 5, 5, 1, 2, 3, 4])); // half one token
        assert!(degenerate(&[1, 2, 1, 2, 1, 2, 9])); // "1 2" three times
        assert!(!degenerate(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
        assert!(!degenerate(&[7, 7, 8])); // too short to judge by counts, no loop
        assert!(!degenerate(&[]));
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
