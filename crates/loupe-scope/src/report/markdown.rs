//! `report.md`: the fraction-interpreted tables, Patchscopes' next-token check, concept words,
//! and every source prompt's variants with their generations.

use std::fmt::Write as _;

use super::{family, ReportContext, Summary};
use crate::judge::concept_hits;
use crate::results::ScopeRecord;

pub(super) fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("–".into(), |f| format!("{:.0}%", 100.0 * f))
}

/// A generation in a Markdown table cell.
pub(super) fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', "⏎").trim().to_string()
}

/// The header of a Markdown table with one column per layer: `| first | L1 | L2 | ...` and its
/// alignment row.
pub(super) fn layer_header(md: &mut String, first: &str, layers: &[usize]) {
    let _ = write!(md, "| {first} |");
    for layer in layers {
        let _ = write!(md, " L{layer} |");
    }
    md.push_str("\n| --- |");
    for _ in layers {
        md.push_str(" ---: |");
    }
    md.push('\n');
}

/// The fraction-interpreted tables (per family and per label against layer), as Markdown.
pub fn fraction_tables(summary: &Summary) -> String {
    let mut md = String::new();
    let header = |md: &mut String, first: &str| layer_header(md, first, &summary.layers);
    let _ = writeln!(
        md,
        "Fraction of source prompts interpreted ({}) at each source layer, by amplifier (best value), and for any amplifier:\n",
        summary.criterion()
    );
    header(&mut md, "amplifier");
    for family_name in &summary.families {
        let _ = write!(md, "| {family_name} |");
        for &layer in &summary.layers {
            let _ = write!(
                md,
                " {} |",
                percent(summary.fraction_interpreted(layer, |r| &family(r) == family_name))
            );
        }
        md.push('\n');
    }
    md.push_str("| **any** |");
    for &layer in &summary.layers {
        let _ = write!(
            md,
            " **{}** |",
            percent(summary.fraction_interpreted(layer, |_| true))
        );
    }
    md.push_str("\n\nBy amplifier and value:\n\n");
    header(&mut md, "amplifier × value");
    for label in &summary.labels {
        let _ = write!(md, "| {label} |");
        for &layer in &summary.layers {
            let _ = write!(
                md,
                " {} |",
                percent(summary.fraction_interpreted(layer, |r| &r.label == label))
            );
        }
        md.push('\n');
    }
    md
}

/// One source prompt's section: for each amplifier × value, its best layer, score and generation.
pub fn source_section(summary: &Summary, source: &str) -> String {
    let mut md = String::new();
    let (_, best) = summary.of_source(source);
    let _ = writeln!(
        md,
        "| amplifier | best layer | score | generation |\n| --- | ---: | ---: | --- |"
    );
    for r in summary.best_per_label(source) {
        let star = if best.is_some_and(|b| std::ptr::eq(b, r)) {
            " ★"
        } else {
            ""
        };
        let _ = writeln!(
            md,
            "| {}{star} | {} | {:.3} | {} |",
            r.label,
            r.layer,
            r.score,
            cell(&r.generation)
        );
    }
    md
}

/// How a generation is judged, for the reports' opening lines.
pub(super) fn judged_as(summary: &Summary) -> String {
    if summary.answers {
        "Attribute extraction: a generation is correct (counted as interpreted) when it contains one of the \
         source's expected answers, ignoring case. Score: the cosine similarity of all-MiniLM-L6-v2 \
         embeddings of source prompt and generation, kept as a second judge."
            .into()
    } else {
        format!(
            "Score: cosine similarity of all-MiniLM-L6-v2 embeddings of source prompt and generation; \
             interpreted when above {}.",
            summary.threshold
        )
    }
}

/// What the fluency judge explains, shared by both reports.
pub(super) const FLUENCY_NOTE: &str =
    "Fluency: the mean surprisal of each generated token (nats) under the unpatched \
    model reading the target prompt and then the generation; lower is more fluent, plain patching \
    (`none`) is the baseline, and amplified text that scores as interpreted while its surprisal is \
    far above the baseline's is fluent-looking nonsense the similarity judge let through. \
    Degenerate: the share of generations that repeat one token or loop (they never count as interpreted).";

/// The fluency table: one row per amplifier × value; empty when no generation was judged.
fn fluency_section(summary: &Summary) -> String {
    let rows = summary.fluency_rows();
    if rows.is_empty() {
        return String::new();
    }
    let mut md = format!("\n## Fluency\n\n{FLUENCY_NOTE}\n\n| amplifier |");
    for layer in &summary.layers {
        let _ = write!(md, " L{layer} |");
    }
    md.push_str(" all | degenerate |\n| --- |");
    for _ in 0..summary.layers.len() + 2 {
        md.push_str(" ---: |");
    }
    md.push('\n');
    for row in rows {
        let _ = write!(md, "| {} |", cell(&row.label));
        for value in &row.by_layer {
            match value {
                Some(v) => {
                    let _ = write!(md, " {v:.2} |");
                }
                None => md.push_str(" – |"),
            }
        }
        let _ = writeln!(md, " {:.2} | {} |", row.all, percent(Some(row.degenerate)));
    }
    md
}

/// Concept words and concept scores of each feature amplifier, against plain patching of the same
/// sources at the same layer; empty when no feature names concepts or a description.
fn concept_section(context: &ReportContext, summary: &Summary) -> String {
    let mut md = String::new();
    let described = summary.records.iter().any(|r| !r.concept_scores.is_empty());
    if context.concepts.is_empty() && !described {
        return md;
    }
    md.push_str(
        "\n## Concept words and scores\n\nGenerations that use one of the feature's concept words, and the mean \
         concept score (the cosine similarity of the generation's embedding to the feature's description), \
         each against plain patching (`none`) of the same sources at the same layer as the baseline:\n\n\
         | amplifier | hits | `none`, same layer | concept score | `none`, same layer |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    let mean_score = |records: &[&ScopeRecord], feature: &str| -> String {
        let scores: Vec<f64> = records
            .iter()
            .filter_map(|r| r.concept_scores.get(feature).map(|&s| f64::from(s)))
            .collect();
        if scores.is_empty() {
            "–".into()
        } else {
            format!("{:.3}", scores.iter().sum::<f64>() / scores.len() as f64)
        }
    };
    for label in &summary.labels {
        let of_label: Vec<&ScopeRecord> = summary.records.iter().filter(|r| &r.label == label).collect();
        let Some(feature) = of_label.first().and_then(|r| r.feature.as_deref()) else {
            continue;
        };
        let baseline: Vec<&ScopeRecord> = summary
            .records
            .iter()
            .filter(|r| {
                r.amplifier == "none"
                    && of_label
                        .iter()
                        .any(|f| f.layer == r.layer && f.source == r.source)
            })
            .collect();
        let (hits, baseline_hits) = match context.concepts.get(feature).filter(|c| !c.is_empty()) {
            Some(concepts) => (
                format!(
                    "{} / {}",
                    of_label.iter().filter(|r| !r.concept_hits.is_empty()).count(),
                    of_label.len()
                ),
                format!(
                    "{} / {}",
                    baseline
                        .iter()
                        .filter(|r| !concept_hits(&r.generation, concepts).is_empty())
                        .count(),
                    baseline.len()
                ),
            ),
            None => ("–".into(), "–".into()),
        };
        let _ = writeln!(
            md,
            "| {label} | {hits} | {baseline_hits} | {} | {} |",
            mean_score(&of_label, feature),
            mean_score(&baseline, feature)
        );
    }
    md
}

pub(super) fn markdown(context: &ReportContext, summary: &Summary, study: &super::study::Study) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Scope report: {}\n", context.model);
    if let Some(note) = context.partial_note(summary) {
        let _ = writeln!(md, "> **{note}**\n");
    }
    let _ = writeln!(
        md,
        "Target prompt: `{}`  \nSite: {} · {} source prompts · layers {:?} · {} patched generations  \n{}\n",
        cell(&context.target_prompt),
        context.site,
        summary.sources.len(),
        summary.layers,
        summary.records.len(),
        judged_as(summary)
    );
    md.push_str("## Held-out comparison\n\n");
    md.push_str(&super::study::markdown(summary, study));
    md.push_str("\n![held out, with 95% intervals](held_out.svg)\n");
    md.push_str(
        "\n## Fraction interpreted (upper bound)\n\nThe best value of each family chosen on the same \
         prompts it is counted on: an upper bound that favours families with more values.\n\n",
    );
    md.push_str(&fraction_tables(summary));
    md.push_str("\n![fraction interpreted](interpreted.svg)\n\n## Next token (Patchscopes)\n\n");
    md.push_str(
        "Precision@1: the fraction of patched targets whose most likely first token is the source's \
         own next-token prediction, at each source layer; then over all layers, with the mean \
         surprisal of that token (nats). Meant for the identity prompt.\n\n| amplifier |",
    );
    for layer in &summary.layers {
        let _ = write!(md, " L{layer} |");
    }
    md.push_str(" all | surprisal |\n| --- |");
    for _ in &summary.layers {
        md.push_str(" ---: |");
    }
    md.push_str(" ---: | ---: |\n");
    for label in &summary.labels {
        let Some((precision, surprisal)) = summary.next_token(|r| &r.label == label) else {
            continue;
        };
        let _ = write!(md, "| {label} |");
        for &layer in &summary.layers {
            match summary.next_token(|r| &r.label == label && r.layer == layer) {
                Some((p, _)) => {
                    let _ = write!(md, " {p:.2} |");
                }
                None => md.push_str(" – |"),
            }
        }
        let _ = writeln!(md, " {precision:.2} | {surprisal:.2} |");
    }
    md.push_str(&fluency_section(summary));
    md.push_str(&concept_section(context, summary));
    md.push_str(
        "\n## Per source prompt\n\nEach amplifier × value at its best layer; ★ the best of the prompt.\n",
    );
    for source in &summary.sources {
        let _ = writeln!(md, "\n### {}\n", cell(source));
        md.push_str(&source_section(summary, source));
    }
    md
}
