//! The steering study: every answer judged three ways and the three folded into one aggregate
//! (AxBench's way), each method's strength chosen on half of the instructions and reported on
//! the other half (2-fold, as the patching study does), and every method compared with the
//! prompting baseline on the same instructions.
//!
//! The scores of one answer, each in [0, 1]:
//!
//! - **concept**: how much closer the answer's embedding is to the concept's description than the
//!   unsteered answer's to the same instruction (the difference of their cosine similarities,
//!   clipped at 0): text on any subject has some similarity to any description, and only the
//!   steering's lift counts, so the unsteered answer scores 0 here as it would with AxBench's judge;
//! - **instruction**: the cosine similarity of its embedding to the instruction's (clipped at 0):
//!   an answer steered off its instruction scores low;
//! - **fluency**: `exp(−(s − s₀))` capped at 1, where s is the answer's mean surprisal under the
//!   unsteered model reading the plain instruction and s₀ that of the unsteered answer to the
//!   same instruction: the unsteered answer's perplexity over this one's.
//!
//! The **aggregate** is their harmonic mean, and 0 for an empty or degenerate answer (one token
//! repeated, or a loop): a method cannot buy concept score with broken text.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use super::run::SteerRecord;
use crate::stats::{bootstrap_mean_interval, holm, sign_test, BOOTSTRAP_RESAMPLES};

/// The scores of one answer (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// Similarity to the concept's description above the unsteered answer's, clipped at 0.
    pub concept: f64,
    /// Whether a concept word appears.
    pub hit: bool,
    /// Similarity to the instruction, clipped at 0.
    pub instruction: f64,
    /// Mean surprisal in nats per token (`None` for an empty answer).
    pub surprisal: Option<f64>,
    /// The unsteered answer's perplexity over this one's, capped at 1.
    pub fluency: f64,
    /// Empty or degenerate.
    pub degenerate: bool,
    /// The harmonic mean of concept, instruction and fluency; 0 when degenerate.
    pub aggregate: f64,
}

/// The mean scores of one variant over a set of instructions.
#[derive(Clone, Debug, Serialize)]
pub struct MeanScores {
    /// Instructions averaged over.
    pub n: usize,
    /// Mean concept score.
    pub concept: f64,
    /// Fraction of answers naming a concept word.
    pub hits: f64,
    /// Mean instruction score.
    pub instruction: f64,
    /// Mean surprisal (nats per token) of the non-empty answers.
    pub surprisal: f64,
    /// Mean fluency score.
    pub fluency: f64,
    /// Fraction of answers empty or degenerate.
    pub degenerate: f64,
    /// Mean aggregate.
    pub aggregate: f64,
}

/// One variant's means over all instructions: a point of its method's concept–fluency curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// The variant's family (method without strength).
    pub family: String,
    /// The variant.
    pub label: String,
    /// Its strength.
    pub value: Option<f32>,
    /// Its means over every instruction.
    pub means: MeanScores,
}

/// One method with its strength chosen on the other half of the instructions.
#[derive(Clone, Debug, Serialize)]
pub struct HeldOutMethod {
    /// The family.
    pub family: String,
    /// The label chosen on each half: on the first (reported on the second), then on the second.
    pub chosen: [String; 2],
    /// Means over the instructions, each scored by the label the other half chose.
    pub means: MeanScores,
    /// The aggregate's 95% bootstrap interval over instructions.
    pub interval: (f64, f64),
    /// Against prompting: instructions where this method's aggregate is higher, and lower.
    pub against_prompting: [usize; 2],
    /// The mean difference of aggregates (this method − prompting) and its 95% bootstrap interval.
    pub difference: (f64, (f64, f64)),
    /// The exact sign test's two-sided p against prompting.
    pub p: f64,
    /// Holm-adjusted over the concept's methods.
    pub p_holm: f64,
    /// Per instruction (in run order): the aggregate under the other half's choice.
    pub aggregates: Vec<Option<f64>>,
}

/// The study of one concept.
#[derive(Clone, Debug, Serialize)]
pub struct ConceptStudy {
    /// The concept.
    pub concept: String,
    /// Instructions in the run (in order).
    pub instructions: Vec<String>,
    /// Indices of the first half's instructions.
    pub first_half: Vec<usize>,
    /// Every variant's means over all instructions, in run order.
    pub curve: Vec<CurvePoint>,
    /// Every family (`none` and `prompt` included), held out.
    pub held_out: Vec<HeldOutMethod>,
    /// What the intervals and tests support, in a paragraph.
    pub summary: String,
}

/// The scores of every record (see the module docs), keyed like [`SteerRecord::key`]; a record
/// whose instruction has no unsteered answer yet (a partial run) is left out.
pub fn score_records(records: &[SteerRecord]) -> HashMap<(String, String, String), Scores> {
    // The unsteered answer to each instruction: its surprisal and concept similarity.
    let reference: HashMap<(&str, &str), (Option<f32>, f32)> = records
        .iter()
        .filter(|r| r.method == "none")
        .map(|r| {
            (
                (r.concept.as_str(), r.instruction.as_str()),
                (r.fluency, r.concept_score),
            )
        })
        .collect();
    records
        .iter()
        .filter_map(|r| {
            let (s0, unsteered_concept) = reference.get(&(r.concept.as_str(), r.instruction.as_str()))?;
            let fluency = match (r.fluency, s0) {
                (Some(s), Some(s0)) => (f64::from(*s0) - f64::from(s)).exp().min(1.0),
                // An empty unsteered answer gives no reference: any answer is as fluent.
                (Some(_), None) => 1.0,
                (None, _) => 0.0,
            };
            let concept = f64::from(r.concept_score - unsteered_concept).max(0.0);
            let instruction = f64::from(r.instruction_score).max(0.0);
            let broken = r.degenerate || r.tokens.is_empty();
            let aggregate = if broken || concept == 0.0 || instruction == 0.0 || fluency == 0.0 {
                0.0
            } else {
                3.0 / (1.0 / concept + 1.0 / instruction + 1.0 / fluency)
            };
            let scores = Scores {
                concept,
                hit: !r.concept_hits.is_empty(),
                instruction,
                surprisal: r.fluency.map(f64::from),
                fluency,
                degenerate: broken,
                aggregate,
            };
            Some((r.key(), scores))
        })
        .collect()
}

fn mean_scores(scores: &[&Scores]) -> MeanScores {
    let n = scores.len();
    let mean = |f: &dyn Fn(&Scores) -> f64| scores.iter().map(|s| f(s)).sum::<f64>() / n.max(1) as f64;
    let surprisals: Vec<f64> = scores.iter().filter_map(|s| s.surprisal).collect();
    MeanScores {
        n,
        concept: mean(&|s| s.concept),
        hits: mean(&|s| f64::from(u8::from(s.hit))),
        instruction: mean(&|s| s.instruction),
        surprisal: surprisals.iter().sum::<f64>() / surprisals.len().max(1) as f64,
        fluency: mean(&|s| s.fluency),
        degenerate: mean(&|s| f64::from(u8::from(s.degenerate))),
        aggregate: mean(&|s| s.aggregate),
    }
}

/// The study of `concept`'s records, `labels` its variants in run order, `seed` the split's.
pub fn study_concept(
    concept: &str,
    instructions: &[String],
    labels: &[(String, String, Option<f32>)],
    records: &[SteerRecord],
    seed: u64,
) -> ConceptStudy {
    let scores = score_records(records);
    let n = instructions.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut in_first = vec![false; n];
    for &i in &order[..n / 2] {
        in_first[i] = true;
    }
    let score = |label: &str, i: usize| {
        scores.get(&(concept.to_string(), label.to_string(), instructions[i].clone()))
    };

    let curve: Vec<CurvePoint> = labels
        .iter()
        .map(|(family, label, value)| {
            let all: Vec<&Scores> = (0..n).filter_map(|i| score(label, i)).collect();
            CurvePoint {
                family: family.clone(),
                label: label.clone(),
                value: *value,
                means: mean_scores(&all),
            }
        })
        .collect();

    let mut families: Vec<&str> = Vec::new();
    for (family, _, _) in labels {
        if !families.contains(&family.as_str()) {
            families.push(family);
        }
    }
    let mut held_out: Vec<HeldOutMethod> = Vec::new();
    for family in families {
        let family_labels: Vec<&str> = labels
            .iter()
            .filter(|(f, _, _)| f == family)
            .map(|(_, l, _)| l.as_str())
            .collect();
        // The label with the best mean aggregate on one half (the first in run order on a tie).
        let choose = |half: bool| -> String {
            let mean_on_half = |label: &str| {
                let on_half: Vec<f64> = (0..n)
                    .filter(|&i| in_first[i] == half)
                    .filter_map(|i| score(label, i).map(|s| s.aggregate))
                    .collect();
                on_half.iter().sum::<f64>() / on_half.len().max(1) as f64
            };
            let mut best = family_labels[0];
            for &label in &family_labels[1..] {
                if mean_on_half(label) > mean_on_half(best) {
                    best = label;
                }
            }
            best.to_string()
        };
        let chosen = [choose(true), choose(false)];
        let held: Vec<Option<&Scores>> = (0..n)
            .map(|i| score(if in_first[i] { &chosen[1] } else { &chosen[0] }, i))
            .collect();
        let known: Vec<&Scores> = held.iter().flatten().copied().collect();
        if known.is_empty() {
            continue;
        }
        let aggregates: Vec<f64> = known.iter().map(|s| s.aggregate).collect();
        held_out.push(HeldOutMethod {
            family: family.to_string(),
            chosen,
            means: mean_scores(&known),
            interval: bootstrap_mean_interval(&aggregates, BOOTSTRAP_RESAMPLES, seed),
            against_prompting: [0, 0],
            difference: (0.0, (0.0, 0.0)),
            p: 1.0,
            p_holm: 1.0,
            aggregates: held.iter().map(|s| s.map(|s| s.aggregate)).collect(),
        });
    }
    compare_with_prompting(&mut held_out, seed);
    let summary = summary_paragraph(concept, &held_out);
    ConceptStudy {
        concept: concept.to_string(),
        instructions: instructions.to_vec(),
        first_half: (0..n).filter(|&i| in_first[i]).collect(),
        curve,
        held_out,
        summary,
    }
}

/// Every method against the prompting baseline on the instructions both have: sign test (Holm
/// over the methods) and the bootstrap interval of the mean difference.
fn compare_with_prompting(held_out: &mut [HeldOutMethod], seed: u64) {
    let Some(prompting) = held_out
        .iter()
        .find(|m| m.family == "prompt")
        .map(|m| m.aggregates.clone())
    else {
        return;
    };
    let mut compared = Vec::new();
    for (k, method) in held_out.iter_mut().enumerate() {
        if method.family == "prompt" {
            continue;
        }
        let (mine, theirs): (Vec<f64>, Vec<f64>) = method
            .aggregates
            .iter()
            .zip(&prompting)
            .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
            .unzip();
        let (wins, losses, p) = sign_test(&mine, &theirs);
        let differences: Vec<f64> = mine.iter().zip(&theirs).map(|(a, b)| a - b).collect();
        let mean = differences.iter().sum::<f64>() / differences.len().max(1) as f64;
        method.against_prompting = [wins, losses];
        method.difference = (
            mean,
            bootstrap_mean_interval(&differences, BOOTSTRAP_RESAMPLES, seed),
        );
        method.p = p;
        compared.push(k);
    }
    let adjusted = holm(&compared.iter().map(|&k| held_out[k].p).collect::<Vec<_>>());
    for (&k, p) in compared.iter().zip(adjusted) {
        held_out[k].p_holm = p;
    }
}

/// A paragraph that states only what the intervals and tests support.
fn summary_paragraph(concept: &str, held_out: &[HeldOutMethod]) -> String {
    let interval = |m: &HeldOutMethod| {
        format!(
            "{:.3} [{:.3}–{:.3}]",
            m.means.aggregate, m.interval.0, m.interval.1
        )
    };
    let Some(prompting) = held_out.iter().find(|m| m.family == "prompt") else {
        return format!("Concept '{concept}': no prompting baseline answers yet.");
    };
    let steering: Vec<&HeldOutMethod> = held_out
        .iter()
        .filter(|m| m.family != "prompt" && m.family != "none")
        .collect();
    let mut text = format!(
        "Concept '{concept}', held out over {} instructions: prompting scores {} on the aggregate",
        prompting.means.n,
        interval(prompting)
    );
    if let Some(none) = held_out.iter().find(|m| m.family == "none") {
        text.push_str(&format!(", unsteered answers {}", interval(none)));
    }
    let Some(best) = steering
        .iter()
        .max_by(|a, b| a.means.aggregate.total_cmp(&b.means.aggregate))
    else {
        text.push_str(". No steering method was run.");
        return text;
    };
    text.push_str(&format!(
        "; the best steering method, {}, scores {}. ",
        best.family,
        interval(best)
    ));
    let significant = |better: bool| -> Vec<String> {
        steering
            .iter()
            .filter(|m| m.p_holm < 0.05 && (m.against_prompting[0] > m.against_prompting[1]) == better)
            .map(|m| m.family.clone())
            .collect()
    };
    let (beat_prompting, lose_to_prompting) = (significant(true), significant(false));
    if !lose_to_prompting.is_empty() {
        text.push_str(&format!(
            "Prompting beats {} (exact sign test on the same instructions, Holm-corrected, 5%). ",
            lose_to_prompting.join(", ")
        ));
    }
    if !beat_prompting.is_empty() {
        text.push_str(&format!(
            "{} beat prompting (same test). ",
            beat_prompting.join(", ")
        ));
    }
    let separated = beat_prompting.len() + lose_to_prompting.len();
    if separated < steering.len() {
        text.push_str(if separated == 0 {
            "No steering method is separated from prompting by the sign test (Holm, 5%)."
        } else {
            "The other methods are not separated from prompting."
        });
    }
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(instruction: usize, family: &str, label: &str, concept: f32, surprisal: f32) -> SteerRecord {
        SteerRecord {
            concept: "c".into(),
            instruction_index: instruction,
            instruction: format!("instruction {instruction}"),
            method: family.split(' ').next().unwrap().into(),
            family: family.into(),
            label: label.into(),
            value: None,
            generation: "text".into(),
            tokens: vec![1, 2, 3, 4],
            concept_score: concept,
            concept_hits: Vec::new(),
            instruction_score: 0.5,
            fluency: Some(surprisal),
            degenerate: false,
        }
    }

    #[test]
    fn the_aggregate_is_the_harmonic_mean_and_zero_for_broken_text() {
        let mut records = vec![
            record(0, "none", "none", 0.1, 2.0),
            // Twice as perplexing as the unsteered answer: fluency e^(2 − (2 + ln 2)) = 1/2, and
            // 0.25 closer to the description than it.
            record(0, "sae x", "sae x 1", 0.35, 2.0 + 2f32.ln()),
            record(0, "sae x", "sae x 2", 0.9, 1.0),
            // Further from the description than the unsteered answer: no concept, aggregate 0.
            record(0, "sae x", "sae x 3", 0.05, 2.0),
        ];
        records[2].degenerate = true;
        let scores = score_records(&records);
        let key = |label: &str| ("c".to_string(), label.to_string(), "instruction 0".to_string());
        let none = scores[&key("none")];
        assert!((none.fluency - 1.0).abs() < 1e-12);
        assert_eq!((none.concept, none.aggregate), (0.0, 0.0));
        let steered = scores[&key("sae x 1")];
        assert!((steered.fluency - 0.5).abs() < 1e-6, "{steered:?}");
        assert!((steered.concept - 0.25).abs() < 1e-6, "{steered:?}");
        let harmonic = 3.0 / (1.0 / 0.25 + 1.0 / 0.5 + 1.0 / 0.5);
        assert!((steered.aggregate - harmonic).abs() < 1e-6, "{steered:?}");
        assert_eq!(scores[&key("sae x 2")].aggregate, 0.0);
        assert_eq!(scores[&key("sae x 3")].aggregate, 0.0);
    }

    #[test]
    fn each_half_is_scored_by_the_strength_the_other_half_chose() {
        // Strength 1 is better on even instructions, strength 2 on odd ones.
        let n = 8;
        let instructions: Vec<String> = (0..n).map(|i| format!("instruction {i}")).collect();
        let mut records = Vec::new();
        for i in 0..n {
            records.push(record(i, "none", "none", 0.1, 2.0));
            records.push(record(i, "prompt", "prompt", 0.3, 2.0));
            let (a, b) = if i % 2 == 0 { (0.6, 0.2) } else { (0.2, 0.6) };
            records.push(record(i, "sae x", "sae x 1", a, 2.0));
            records.push(record(i, "sae x", "sae x 2", b, 2.0));
        }
        let labels: Vec<(String, String, Option<f32>)> = [
            ("none", "none"),
            ("prompt", "prompt"),
            ("sae x", "sae x 1"),
            ("sae x", "sae x 2"),
        ]
        .iter()
        .map(|(f, l)| (f.to_string(), l.to_string(), None))
        .collect();
        let study = study_concept("c", &instructions, &labels, &records, 3);
        let sae = study.held_out.iter().find(|m| m.family == "sae x").unwrap();
        let first: Vec<bool> = (0..n).map(|i| study.first_half.contains(&i)).collect();
        let scores = score_records(&records);
        for i in 0..n {
            let chosen = if first[i] { &sae.chosen[1] } else { &sae.chosen[0] };
            let expected = scores[&("c".to_string(), chosen.clone(), instructions[i].clone())].aggregate;
            assert_eq!(sae.aggregates[i], Some(expected), "instruction {i}");
        }
        // The curve has every variant over all instructions.
        assert_eq!(study.curve.len(), 4);
        assert_eq!(study.curve[2].means.n, n);
        let (lo, hi) = sae.interval;
        assert!(lo <= sae.means.aggregate && sae.means.aggregate <= hi);
    }

    #[test]
    fn the_paragraph_names_only_what_the_sign_test_separates() {
        let n = 12;
        let instructions: Vec<String> = (0..n).map(|i| format!("instruction {i}")).collect();
        let mut records = Vec::new();
        for i in 0..n {
            records.push(record(i, "none", "none", 0.1, 2.0));
            records.push(record(i, "prompt", "prompt", 0.5, 2.0));
            // Worse than prompting on every instruction.
            records.push(record(i, "sae x", "sae x 1", 0.2, 2.0));
            // Better on half of them, worse on the other half.
            let mixed = if i % 2 == 0 { 0.6 } else { 0.4 };
            records.push(record(i, "cfg", "cfg 1", mixed, 2.0));
        }
        let labels: Vec<(String, String, Option<f32>)> = [
            ("none", "none"),
            ("prompt", "prompt"),
            ("sae x", "sae x 1"),
            ("cfg", "cfg 1"),
        ]
        .iter()
        .map(|(f, l)| (f.to_string(), l.to_string(), None))
        .collect();
        let study = study_concept("c", &instructions, &labels, &records, 0);
        let sae = study.held_out.iter().find(|m| m.family == "sae x").unwrap();
        assert_eq!(sae.against_prompting, [0, 12]);
        assert!(sae.p_holm < 0.05, "{}", sae.p_holm);
        assert!(sae.difference.0 < 0.0 && sae.difference.1 .1 < 0.0);
        assert!(
            study.summary.contains("Prompting beats sae x"),
            "{}",
            study.summary
        );
        assert!(
            study.summary.contains("other methods are not separated"),
            "{}",
            study.summary
        );
        assert!(!study.summary.contains("cfg beat"), "{}", study.summary);
    }
}
