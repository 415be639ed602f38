//! `report.html`: the same as `report.md`, with the plot inline and each cell shaded by score.

use std::fmt::Write as _;

use super::markdown::percent;
use super::{family, ReportContext, Summary};
use crate::results::ScopeRecord;
use loupe_util::html::escape;

/// A cell's background: white at score 0, green at 1.
fn shade(score: f32) -> String {
    let t = score.clamp(0.0, 1.0);
    let channel = |full: f32| (255.0 - t * (255.0 - full)) as u8;
    format!("rgb({},{},{})", channel(120.0), channel(200.0), channel(120.0))
}

pub(super) fn html(
    context: &ReportContext,
    summary: &Summary,
    study: &super::study::Study,
    held_out_plot: &str,
    plot: &str,
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Scope report: {model}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:90em}} table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;font-size:.9em}} th{{background:#f4f4f4}}\
         td.best{{outline:3px solid #c80;font-weight:bold}} .score{{color:#555;font-size:.8em}} code{{background:#f4f4f4}}\
         </style></head><body><h1>Scope report: {model}</h1><p>Target prompt: <code>{target}</code><br>Site: {site} · \
         {n_sources} source prompts · {n} patched generations. {judged}</p>{study}<h2>Fraction interpreted (upper bound)</h2>{plot}",
        model = escape(&context.model),
        target = escape(&context.target_prompt),
        site = escape(&context.site),
        n_sources = summary.sources.len(),
        n = summary.records.len(),
        judged = escape(&super::markdown::judged_as(summary)),
        study = super::study::html(summary, study, held_out_plot),
    );
    if let Some(note) = context.partial_note(summary) {
        let at = h.find("<h2>Held-out comparison</h2>").unwrap_or(h.len());
        h.insert_str(
            at,
            &format!(
                "<p style=\"background:#fdd;padding:.5em\"><b>{}</b></p>",
                escape(&note)
            ),
        );
    }
    h.push_str("<table><tr><th>amplifier</th>");
    for layer in &summary.layers {
        let _ = write!(h, "<th>L{layer}</th>");
    }
    h.push_str("</tr>");
    let row = |h: &mut String, name: &str, pick: &dyn Fn(&ScopeRecord) -> bool| {
        let _ = write!(h, "<tr><th>{}</th>", escape(name));
        for &layer in &summary.layers {
            let f = summary.fraction_interpreted(layer, pick);
            let _ = write!(
                h,
                "<td style=\"background:{}\">{}</td>",
                shade(f.unwrap_or(0.0) as f32),
                percent(f)
            );
        }
        h.push_str("</tr>");
    };
    for family_name in &summary.families {
        row(&mut h, family_name, &|r| &family(r) == family_name);
    }
    row(&mut h, "any", &|_| true);
    for label in &summary.labels {
        row(&mut h, label, &|r| &r.label == label);
    }
    h.push_str("</table>");
    h.push_str(&fluency_table(summary));
    h.push_str("<h2>Per source prompt</h2><p>Every amplifier × value at every layer; the best of each prompt outlined.</p>");
    for source in &summary.sources {
        let (records, best) = summary.of_source(source);
        let _ = write!(h, "<details open><summary><b>{}</b>", escape(source));
        if let Some(b) = best {
            let _ = write!(
                h,
                " — best: {} at L{} ({:.3})",
                escape(&b.label),
                b.layer,
                b.score
            );
        }
        h.push_str("</summary><table><tr><th>amplifier</th>");
        for layer in &summary.layers {
            let _ = write!(h, "<th>L{layer}</th>");
        }
        h.push_str("</tr>");
        for label in &summary.labels {
            let _ = write!(h, "<tr><th>{}</th>", escape(label));
            for &layer in &summary.layers {
                match records.iter().find(|r| &r.label == label && r.layer == layer) {
                    Some(r) => {
                        let class = if best.is_some_and(|b| std::ptr::eq(b, *r)) {
                            " class=\"best\""
                        } else {
                            ""
                        };
                        let _ = write!(
                            h,
                            "<td{class} style=\"background:{}\">{}<br><span class=\"score\">{:.3}</span></td>",
                            shade(r.score),
                            escape(r.generation.trim()),
                            r.score
                        );
                    }
                    None => h.push_str("<td></td>"),
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table></details>");
    }
    h.push_str("</body></html>\n");
    h
}

/// The fluency table (see `markdown::FLUENCY_NOTE`); empty when no generation was judged.
fn fluency_table(summary: &Summary) -> String {
    let rows = summary.fluency_rows();
    if rows.is_empty() {
        return String::new();
    }
    let mut h = format!(
        "<h2>Fluency</h2><p>{}</p><table><tr><th>amplifier</th>",
        escape(super::markdown::FLUENCY_NOTE)
    );
    for layer in &summary.layers {
        let _ = write!(h, "<th>L{layer}</th>");
    }
    h.push_str("<th>all</th><th>degenerate</th></tr>");
    for row in rows {
        let _ = write!(h, "<tr><th>{}</th>", escape(&row.label));
        for value in &row.by_layer {
            let _ = write!(
                h,
                "<td>{}</td>",
                value.map_or("–".to_string(), |v| format!("{v:.2}"))
            );
        }
        let _ = write!(
            h,
            "<td>{:.2}</td><td>{}</td></tr>",
            row.all,
            percent(Some(row.degenerate))
        );
    }
    h.push_str("</table>");
    h
}
