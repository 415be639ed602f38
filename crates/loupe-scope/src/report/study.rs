//! The comparison as a study: each amplifier family's value chosen on half of the source prompts
//! and reported on the other half (2-fold: a seeded split, then the halves swapped), with a
//! bootstrap interval over prompts, and exact McNemar tests between families on the same prompts,
//! Holm-corrected per layer.
//!
//! "Interpreted at any value" (the upper bound in the report's other tables) favours families with
//! more values, and chooses the value on the very prompts it is reported on; here a family's
//! figure is what its choice of value achieves on prompts the choice did not see. A generation
//! counts as interpreting its source when it scores above the threshold and is not degenerate
//! ([`crate::judge::degenerate`]: one token repeated, or a loop).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use loupe_util::html::escape;

use super::{family, Summary};
use crate::judge::degenerate;
use crate::stats::{bootstrap_interval, holm, mcnemar_exact, BOOTSTRAP_RESAMPLES};

/// Seeds the split of the sources and the bootstrap.
pub const STUDY_SEED: u64 = 0;

/// One family at one layer, chosen and reported on opposite halves.
#[derive(Clone, Debug, Serialize)]
pub struct HeldOutFigure {
    /// The amplifier family (`scale`, `cfg`, `sae dog`).
    pub family: String,
    /// The source layer.
    pub layer: usize,
    /// The fraction of sources interpreted by the value chosen on the other half.
    pub fraction: f64,
    /// Its 95% bootstrap interval over sources.
    pub interval: (f64, f64),
    /// The label chosen on each half: on the first half (reported on the second), then on the
    /// second.
    pub chosen: [String; 2],
    /// Per source (in the summary's order): interpreted by the value chosen on the other half;
    /// `None` where that value has no record of the source.
    pub outcomes: Vec<Option<bool>>,
}

/// One pair of families at one layer: the exact McNemar test on their held-out outcomes.
#[derive(Clone, Debug, Serialize)]
pub struct PairedTest {
    /// The source layer.
    pub layer: usize,
    /// The two families.
    pub families: [String; 2],
    /// Sources only the first interpreted, and only the second.
    pub discordant: [usize; 2],
    /// The exact two-sided p-value.
    pub p: f64,
    /// Holm-adjusted over the pairs of this layer.
    pub p_holm: f64,
}

/// Every figure and test of the study.
#[derive(Clone, Debug, Serialize)]
pub struct Study {
    /// The judge's threshold: a generation scoring above it (and not degenerate) is interpreted.
    pub threshold: f32,
    /// The sources of the first half (the rest form the second).
    pub first_half: Vec<String>,
    /// Per family and layer.
    pub figures: Vec<HeldOutFigure>,
    /// Per layer, every pair of families.
    pub tests: Vec<PairedTest>,
}

impl Study {
    /// The figure of `family` at `layer`, if it has one.
    pub fn figure(&self, family: &str, layer: usize) -> Option<&HeldOutFigure> {
        self.figures
            .iter()
            .find(|f| f.family == family && f.layer == layer)
    }
}

/// The study of a run's records (see the module docs).
pub fn study(summary: &Summary, seed: u64) -> Study {
    let n = summary.sources.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut in_first = vec![false; n];
    for &i in &order[..n / 2] {
        in_first[i] = true;
    }
    // Whether each (label, layer, source) record interprets its source, its generation not
    // degenerate: judged once, looked up by every choice below.
    let judged: HashMap<(&str, usize, &str), bool> = summary
        .records
        .iter()
        .map(|r| {
            let ok = summary.success(r) && !degenerate(&r.tokens);
            ((r.label.as_str(), r.layer, r.source.as_str()), ok)
        })
        .collect();
    // `None` where `label` has no record of source `i` at `layer`.
    let interpreted = |label: &str, i: usize, layer: usize| -> Option<bool> {
        judged.get(&(label, layer, summary.sources[i].as_str())).copied()
    };
    let mut figures = Vec::new();
    for family_name in &summary.families {
        let labels: Vec<&String> = summary
            .labels
            .iter()
            .filter(|l| {
                summary
                    .records
                    .iter()
                    .any(|r| &r.label == *l && &family(r) == family_name)
            })
            .collect();
        for &layer in &summary.layers {
            // The label that interprets the most sources of one half (the first in run order on
            // a tie).
            let choose = |half: bool| -> String {
                let hits = |label: &str| {
                    (0..n)
                        .filter(|&i| in_first[i] == half && interpreted(label, i, layer) == Some(true))
                        .count()
                };
                // `max_by_key` keeps the last of equals: reversed, that is the first in run order.
                labels
                    .iter()
                    .rev()
                    .max_by_key(|label| hits(label))
                    .expect("a family has a label")
                    .to_string()
            };
            let chosen = [choose(true), choose(false)];
            let outcomes: Vec<Option<bool>> = (0..n)
                .map(|i| {
                    let label = if in_first[i] { &chosen[1] } else { &chosen[0] };
                    interpreted(label, i, layer)
                })
                .collect();
            let known: Vec<bool> = outcomes.iter().flatten().copied().collect();
            if known.is_empty() {
                continue;
            }
            figures.push(HeldOutFigure {
                family: family_name.clone(),
                layer,
                fraction: known.iter().filter(|&&o| o).count() as f64 / known.len() as f64,
                interval: bootstrap_interval(&known, BOOTSTRAP_RESAMPLES, seed),
                chosen,
                outcomes,
            });
        }
    }
    let mut tests = Vec::new();
    for &layer in &summary.layers {
        let at_layer: Vec<&HeldOutFigure> = figures.iter().filter(|f| f.layer == layer).collect();
        let mut pairs = Vec::new();
        for (i, a) in at_layer.iter().enumerate() {
            for b in &at_layer[i + 1..] {
                // Only the sources both have outcomes for are paired.
                let (x, y): (Vec<bool>, Vec<bool>) = a
                    .outcomes
                    .iter()
                    .zip(&b.outcomes)
                    .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
                    .unzip();
                let (only_a, only_b, p) = mcnemar_exact(&x, &y);
                pairs.push(PairedTest {
                    layer,
                    families: [a.family.clone(), b.family.clone()],
                    discordant: [only_a, only_b],
                    p,
                    p_holm: p,
                });
            }
        }
        let adjusted = holm(&pairs.iter().map(|t| t.p).collect::<Vec<_>>());
        for (test, p) in pairs.iter_mut().zip(adjusted) {
            test.p_holm = p;
        }
        tests.extend(pairs);
    }
    Study {
        threshold: summary.threshold,
        first_half: (0..n)
            .filter(|&i| in_first[i])
            .map(|i| summary.sources[i].clone())
            .collect(),
        figures,
        tests,
    }
}

/// A paragraph that states only what the tests support: which family interprets more sources
/// than which, at which layers (Holm-corrected exact McNemar at 5%), whether any beats plain
/// patching (`none`), and how wide the intervals are.
pub fn summary_paragraph(summary: &Summary, study: &Study) -> String {
    let half_width = {
        let widths: Vec<f64> = study
            .figures
            .iter()
            .map(|f| (f.interval.1 - f.interval.0) / 2.0)
            .collect();
        100.0 * widths.iter().sum::<f64>() / widths.len().max(1) as f64
    };
    let mut text = format!(
        "At {} source prompts, a held-out fraction's 95% interval spans about ±{:.0} points. ",
        summary.sources.len(),
        half_width
    );
    // (better, worse) -> the layers where the test separates them.
    let mut wins: Vec<((String, String), Vec<usize>)> = Vec::new();
    for t in study.tests.iter().filter(|t| t.p_holm < 0.05) {
        let pair = if t.discordant[0] >= t.discordant[1] {
            (t.families[0].clone(), t.families[1].clone())
        } else {
            (t.families[1].clone(), t.families[0].clone())
        };
        match wins.iter_mut().find(|(p, _)| *p == pair) {
            Some((_, layers)) => layers.push(t.layer),
            None => wins.push((pair, vec![t.layer])),
        }
    }
    if wins.is_empty() {
        text.push_str(
            "No two amplifier families differ at any layer (exact McNemar, Holm-corrected per layer, 5%): \
             these prompts cannot rank them.",
        );
        return text;
    }
    let sentences: Vec<String> = wins
        .iter()
        .map(|((better, worse), layers)| {
            let layers: Vec<String> = layers.iter().map(usize::to_string).collect();
            let noun = if layers.len() == 1 { "layer" } else { "layers" };
            format!(
                "{better} interprets more sources than {worse} at {noun} {}",
                layers.join(", ")
            )
        })
        .collect();
    text.push_str(&sentences.join("; "));
    text.push_str(
        " (exact McNemar, Holm-corrected per layer, 5%); the other pairs and layers are not separated.",
    );
    if summary.families.iter().any(|f| f == "none") && !wins.iter().any(|((_, worse), _)| worse == "none") {
        text.push_str(" No amplifier is shown to beat plain patching (`none`) at any layer.");
    }
    text
}

/// The study as Markdown: the headline table (held-out fraction and interval per family and
/// layer), then per layer the pairs whose Holm-adjusted p is below 0.05.
pub fn markdown(summary: &Summary, study: &Study) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Held out: each family's value (α, s, c, ...) is chosen on half of the {} source prompts and \
         the fraction interpreted ({}, and the generation not degenerate: one token \
         repeated, or a loop) is counted on the other half, then the halves swap (a seeded split); \
         in brackets the 95% bootstrap interval over prompts ({BOOTSTRAP_RESAMPLES} resamples).\n",
        summary.sources.len(),
        summary.criterion()
    );
    super::markdown::layer_header(&mut md, "amplifier", &summary.layers);
    for family_name in &summary.families {
        let _ = write!(md, "| {family_name} |");
        for &layer in &summary.layers {
            match study.figure(family_name, layer) {
                Some(f) => {
                    let _ = write!(
                        md,
                        " {:.0}% [{:.0}–{:.0}] |",
                        100.0 * f.fraction,
                        100.0 * f.interval.0,
                        100.0 * f.interval.1
                    );
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    let _ = writeln!(md, "\n{}", summary_paragraph(summary, study));
    md.push_str("\nDegenerate generations (all layers and values of the family):");
    for family_name in &summary.families {
        let of_family: Vec<_> = summary
            .records
            .iter()
            .filter(|r| &family(r) == family_name)
            .collect();
        let bad = of_family.iter().filter(|r| degenerate(&r.tokens)).count();
        let _ = write!(md, " {family_name} {bad} of {};", of_family.len());
    }
    md.pop();
    md.push_str(".\n");
    let significant: Vec<&PairedTest> = study.tests.iter().filter(|t| t.p_holm < 0.05).collect();
    // Layers where features also run have more families, and so more pairs to correct for.
    let pairs: Vec<usize> = summary
        .layers
        .iter()
        .map(|&layer| study.tests.iter().filter(|t| t.layer == layer).count())
        .collect();
    let (fewest, most) = (
        pairs.iter().copied().min().unwrap_or(0),
        pairs.iter().copied().max().unwrap_or(0),
    );
    let pair_count = if fewest == most {
        format!("the {most} pairs of each layer")
    } else {
        format!("the {fewest} to {most} pairs of each layer")
    };
    let _ = writeln!(
        md,
        "\nPaired exact McNemar tests on the same held-out prompts, Holm-corrected over {pair_count} \
         (all of them in `study.json`); the pairs that differ at the 5% level:\n"
    );
    if significant.is_empty() {
        md.push_str("none: at this number of prompts, no two amplifiers differ at any layer.\n");
    } else {
        md.push_str("| layer | better | worse | prompts only the better / only the worse interpreted | p (Holm) |\n| ---: | --- | --- | ---: | ---: |\n");
        for t in significant {
            let (better, worse, counts) = if t.discordant[0] >= t.discordant[1] {
                (&t.families[0], &t.families[1], (t.discordant[0], t.discordant[1]))
            } else {
                (&t.families[1], &t.families[0], (t.discordant[1], t.discordant[0]))
            };
            let _ = writeln!(
                md,
                "| {} | {better} | {worse} | {} / {} | {:.2e} |",
                t.layer, counts.0, counts.1, t.p_holm
            );
        }
    }
    md
}

/// The headline table, its plot (`held_out_svg`) and the significant pairs as HTML.
pub fn html(summary: &Summary, study: &Study, plot: &str) -> String {
    use std::fmt::Write as _;
    let mut h = String::from(
        "<h2>Held-out comparison</h2><p>Each family's value chosen on half of the source prompts, the \
         fraction interpreted counted on the other half, then the halves swapped; 95% bootstrap \
         interval over prompts in brackets. The tables after this one are the upper bound: the best \
         value chosen on the same prompts it is counted on.</p><table><tr><th>amplifier</th>",
    );
    for layer in &summary.layers {
        let _ = write!(h, "<th>L{layer}</th>");
    }
    h.push_str("</tr>");
    for family_name in &summary.families {
        let _ = write!(h, "<tr><th>{}</th>", escape(family_name));
        for &layer in &summary.layers {
            match study.figure(family_name, layer) {
                Some(f) => {
                    let _ = write!(
                        h,
                        "<td title=\"chosen: {} / {}\">{:.0}% <span class=\"score\">[{:.0}–{:.0}]</span></td>",
                        escape(&f.chosen[0]),
                        escape(&f.chosen[1]),
                        100.0 * f.fraction,
                        100.0 * f.interval.0,
                        100.0 * f.interval.1
                    );
                }
                None => h.push_str("<td>–</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    let _ = write!(h, "<p><b>{}</b></p>", escape(&summary_paragraph(summary, study)));
    h.push_str(plot);
    let significant: Vec<&PairedTest> = study.tests.iter().filter(|t| t.p_holm < 0.05).collect();
    let _ = write!(
        h,
        "<p>Paired exact McNemar tests, Holm-corrected per layer: {} of {} pairs differ at the 5% level{}</p>",
        significant.len(),
        study.tests.len(),
        if significant.is_empty() { "." } else { ":" }
    );
    if !significant.is_empty() {
        h.push_str(
            "<table><tr><th>layer</th><th>pair</th><th>only first / only second</th><th>p (Holm)</th></tr>",
        );
        for t in significant {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{} vs {}</td><td>{} / {}</td><td>{:.2e}</td></tr>",
                t.layer,
                escape(&t.families[0]),
                escape(&t.families[1]),
                t.discordant[0],
                t.discordant[1],
                t.p_holm
            );
        }
        h.push_str("</table>");
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::ScopeRecord;

    fn record(source: usize, label: &str, amplifier: &str, score: f32) -> ScopeRecord {
        ScopeRecord {
            source_index: source,
            source: format!("source {source}"),
            layer: 3,
            target_layer: 3,
            hook: "blocks.3.hook_resid_post".into(),
            amplifier: amplifier.into(),
            label: label.into(),
            value: None,
            feature: None,
            null: None,
            generation: String::new(),
            tokens: Vec::new(),
            score,
            concept_hits: Vec::new(),
            concept_scores: Default::default(),
            answers: Vec::new(),
            answer_found: None,
            source_next_token: String::new(),
            patched_next_token: String::new(),
            next_token_match: false,
            surprisal: 0.0,
            fluency: None,
            norm: 1.0,
            amplified_norm: 1.0,
        }
    }

    /// `scale 2` interprets the even sources and `scale 6` the odd ones, so the value chosen on
    /// one half is the wrong one for the other half as often as the halves' parities differ;
    /// `none` interprets nothing, and the held-out `scale` figure is what the choice achieves on
    /// the half it did not see.
    #[test]
    fn each_half_is_scored_by_the_value_the_other_half_chose() {
        let n = 40;
        let mut records = Vec::new();
        for i in 0..n {
            records.push(record(i, "none", "none", 0.0));
            records.push(record(i, "scale 2", "scale", if i % 2 == 0 { 0.9 } else { 0.1 }));
            records.push(record(i, "scale 6", "scale", if i % 2 == 1 { 0.9 } else { 0.1 }));
        }
        let summary = Summary::new(&records, 0.5, &[]);
        let study = study(&summary, 7);
        assert_eq!(study.first_half.len(), n / 2);
        let scale = study.figures.iter().find(|f| f.family == "scale").unwrap();
        let none = study.figures.iter().find(|f| f.family == "none").unwrap();
        assert_eq!(none.fraction, 0.0);
        // By hand: each half is scored by the label the other half chose.
        let first: Vec<bool> = (0..n)
            .map(|i| study.first_half.contains(&format!("source {i}")))
            .collect();
        let choice = |half: bool| {
            let even = (0..n).filter(|&i| first[i] == half && i % 2 == 0).count();
            let odd = (0..n).filter(|&i| first[i] == half && i % 2 == 1).count();
            if odd > even {
                1
            } else {
                0
            } // the parity the chosen label interprets; ties go to scale 2
        };
        let expected = (0..n).filter(|&i| i % 2 == choice(!first[i])).count() as f64 / n as f64;
        assert_eq!(scale.fraction, expected);
        assert!(scale.interval.0 <= scale.fraction && scale.fraction <= scale.interval.1);
        // One pair at one layer; scale beats none on every source it interprets.
        assert_eq!(study.tests.len(), 1);
        let test = &study.tests[0];
        assert_eq!(test.families, ["none".to_string(), "scale".to_string()]);
        assert_eq!(test.discordant, [0, (expected * n as f64).round() as usize]);
        assert_eq!(test.p, test.p_holm);
        let text = markdown(&summary, &study);
        assert!(text.contains("| scale |") && text.contains("McNemar"), "{text}");
        // The paragraph says what the one test says, and no more.
        let paragraph = summary_paragraph(&summary, &study);
        assert!(paragraph.starts_with("At 40 source prompts"), "{paragraph}");
        if test.p_holm < 0.05 {
            assert!(
                paragraph.contains("scale interprets more sources than none at layer 3"),
                "{paragraph}"
            );
            assert!(!paragraph.contains("No amplifier is shown"), "{paragraph}");
        } else {
            assert!(paragraph.contains("cannot rank them"), "{paragraph}");
        }
    }

    /// In an attribute-extraction run a generation counts when it contains an expected answer,
    /// whatever its similarity score.
    #[test]
    fn attribute_runs_count_answers_not_scores() {
        let mut records = Vec::new();
        for i in 0..20 {
            let mut none = record(i, "none", "none", 0.9);
            none.answers = vec!["Paris".into()];
            none.answer_found = Some(false);
            let mut scale = record(i, "scale 3", "scale", 0.0);
            scale.answers = vec!["Paris".into()];
            scale.answer_found = Some(i % 4 != 0);
            records.extend([none, scale]);
        }
        let summary = Summary::new(&records, 0.3, &[]);
        assert!(summary.answers);
        assert_eq!(
            summary.fraction_interpreted(3, |r| r.amplifier == "none"),
            Some(0.0)
        );
        assert_eq!(
            summary.fraction_interpreted(3, |r| r.amplifier == "scale"),
            Some(0.75)
        );
        let study = study(&summary, 1);
        let scale = study.figures.iter().find(|f| f.family == "scale").unwrap();
        assert_eq!(scale.fraction, 0.75);
        assert!(markdown(&summary, &study).contains("contains an expected answer"));
        // One record without answers: the run is judged by similarity again.
        records[0].answer_found = None;
        let summary = Summary::new(&records, 0.3, &[]);
        assert!(!summary.answers);
        assert_eq!(
            summary.fraction_interpreted(3, |r| r.amplifier == "none"),
            Some(1.0)
        );
    }

    /// Two families that interpret the same sources: the paragraph claims no ranking.
    #[test]
    fn the_paragraph_claims_nothing_the_tests_do_not_support() {
        let mut records = Vec::new();
        for i in 0..30 {
            let score = if i % 3 == 0 { 0.9 } else { 0.1 };
            records.push(record(i, "none", "none", score));
            records.push(record(i, "scale 2", "scale", score));
        }
        let summary = Summary::new(&records, 0.5, &[]);
        let paragraph = summary_paragraph(&summary, &study(&summary, 0));
        assert!(paragraph.contains("cannot rank them"), "{paragraph}");
        assert!(!paragraph.contains("interprets more"), "{paragraph}");
    }
}
