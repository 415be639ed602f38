//! The steering reports: `steer.md`, `steer.html` (with one concept–fluency SVG per concept,
//! also written as `curves-<concept>.svg`) and `study.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use loupe_util::html::escape;

use super::run::SteerRecord;
use super::study::{ConceptStudy, HeldOutMethod};
use crate::stats::BOOTSTRAP_RESAMPLES;
use crate::Result;

/// What a steering report is about, besides its records.
pub struct SteerReportContext {
    /// The model's name.
    pub model: String,
    /// The hook steered.
    pub hook: String,
    /// σ, the typical norm that `probe` strengths are given in.
    pub sigma: f32,
    /// Answers the full run generates; fewer records mean a partial report.
    pub expected: usize,
}

/// Where [`write_report`] wrote.
pub struct SteerReportPaths {
    /// `steer.md`.
    pub markdown: PathBuf,
    /// `steer.html`.
    pub html: PathBuf,
    /// `study.json`.
    pub study: PathBuf,
}

/// Writes the reports of `studies` (one per concept) into `out`, atomically.
pub fn write_report(
    out: &Path,
    context: &SteerReportContext,
    studies: &[ConceptStudy],
    records: &[SteerRecord],
) -> Result<SteerReportPaths> {
    let paths = SteerReportPaths {
        markdown: out.join("steer.md"),
        html: out.join("steer.html"),
        study: out.join("study.json"),
    };
    let curves: Vec<String> = studies.iter().map(curves_svg).collect();
    for (study, svg) in studies.iter().zip(&curves) {
        write(
            &out.join(format!("curves-{}.svg", file_name(&study.concept))),
            svg,
        )?;
    }
    write(&paths.markdown, &markdown(context, studies, records))?;
    write(&paths.html, &html(context, studies, records, &curves))?;
    write(
        &paths.study,
        &serde_json::to_string_pretty(studies).expect("the study serializes"),
    )?;
    Ok(paths)
}

fn write(path: &Path, text: &str) -> Result<()> {
    Ok(loupe_util::write_atomically(path, text.as_bytes())?)
}

/// A concept's name as a file name: letters, digits, `-` and `_` kept, the rest `_`.
fn file_name(concept: &str) -> String {
    concept
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

const METHOD_NOTE: &str = "Every method but prompting edits the steered activation at every position of \
the prompt and the answer but the first (the attention sink): `sae` sets one SAE latent's activation (×α, or clamped to c × its largest \
activation) and adds the change along its decoder row; `probe`, `mean_diff` and `vector` add α·σ times \
the unit direction; `cfg` adds s·(h_concept − h_null), the shift classifier-free guidance gives the \
concept prompts' mean activation when patching. `prompt` appends the concept's sentence to the \
instruction and edits nothing; `none` is the unsteered answer.";

const SCORE_NOTE: &str = "Scores per answer, each in [0, 1]: concept = how much closer the answer is to the \
concept's description than the unsteered answer to the same instruction (MiniLM cosine similarities; \
0 for the unsteered answer itself); instruction = similarity to the instruction; fluency = the unsteered answer's \
perplexity over this answer's (both under the unsteered model reading the plain instruction), capped \
at 1. The aggregate is their harmonic mean, 0 for an empty or degenerate answer (one token repeated, \
or a loop), as AxBench zeroes such text.";

fn partial_note(context: &SteerReportContext, records: &[SteerRecord]) -> Option<String> {
    (records.len() < context.expected).then(|| {
        format!(
            "Partial: {} of {} answers; run the same command again to finish.",
            records.len(),
            context.expected
        )
    })
}

fn held_out_intro(study: &ConceptStudy) -> String {
    format!(
        "Held out: each method's strength is chosen by the best mean aggregate on half of the {} \
         instructions and scored on the other half, then the halves swap (a seeded split); in brackets \
         95% bootstrap intervals over instructions ({BOOTSTRAP_RESAMPLES} resamples). \"vs prompting\": \
         instructions where the method's aggregate is higher / lower than prompting's, the mean \
         difference with its interval, and the exact sign test, Holm-corrected over the methods.",
        study.instructions.len()
    )
}

fn markdown(context: &SteerReportContext, studies: &[ConceptStudy], records: &[SteerRecord]) -> String {
    let mut md = format!(
        "# Steering: {} at {}\n\n{METHOD_NOTE} σ = {:.2}.\n\n{SCORE_NOTE}\n",
        context.model, context.hook, context.sigma
    );
    if let Some(note) = partial_note(context, records) {
        let _ = writeln!(md, "\n**{note}**");
    }
    for study in studies {
        let _ = writeln!(md, "\n## {}\n\n{}\n", study.concept, held_out_intro(study));
        md.push_str(
            "| method | chosen strengths | aggregate | concept | word hits | instruction | surprisal (nats) | degenerate | vs prompting | difference | p (Holm) |\n\
             | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for m in &study.held_out {
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} [{:.3}–{:.3}] | {:.3} | {:.0}% | {:.3} | {:.2} | {:.0}% | {} | {} | {} |",
                m.family,
                chosen(m),
                m.means.aggregate,
                m.interval.0,
                m.interval.1,
                m.means.concept,
                100.0 * m.means.hits,
                m.means.instruction,
                m.means.surprisal,
                100.0 * m.means.degenerate,
                versus(m, "{}/{}"),
                difference(m),
                p_holm(m),
            );
        }
        let _ = writeln!(md, "\n{}\n", study.summary);
        let _ = writeln!(
            md,
            "Every strength over all instructions (the concept–fluency curves, `curves-{}.svg`):\n",
            file_name(&study.concept)
        );
        md.push_str(
            "| variant | aggregate | concept | word hits | instruction | surprisal (nats) | fluency | degenerate |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for p in &study.curve {
            let _ = writeln!(
                md,
                "| {} | {:.3} | {:.3} | {:.0}% | {:.3} | {:.2} | {:.3} | {:.0}% |",
                p.label,
                p.means.aggregate,
                p.means.concept,
                100.0 * p.means.hits,
                p.means.instruction,
                p.means.surprisal,
                p.means.fluency,
                100.0 * p.means.degenerate
            );
        }
        md.push_str(
            "\nExamples (the first two instructions, each method at the strength chosen for it):\n\n",
        );
        for (instruction, text) in examples(study, records) {
            let _ = writeln!(md, "- *{instruction}*");
            for (family, answer) in text {
                let _ = writeln!(md, "  - **{family}**: {}", answer.replace('\n', " "));
            }
        }
    }
    md
}

fn html(
    context: &SteerReportContext,
    studies: &[ConceptStudy],
    records: &[SteerRecord],
    curves: &[String],
) -> String {
    let mut h = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Steering: {model}</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}.score{{color:#777;font-size:90%}}.answer{{color:#333}}</style>\
         <h1>Steering: {model} at {hook}</h1><p>{}</p><p>σ = {:.2}. {}</p>",
        escape(METHOD_NOTE),
        context.sigma,
        escape(SCORE_NOTE),
        model = escape(&context.model),
        hook = escape(&context.hook),
    );
    if let Some(note) = partial_note(context, records) {
        let _ = write!(h, "<p><b>{}</b></p>", escape(&note));
    }
    for (study, svg) in studies.iter().zip(curves) {
        let _ = write!(
            h,
            "<h2>{}</h2><p>{}</p><table><tr><th>method</th><th>chosen strengths</th><th>aggregate</th>\
             <th>concept</th><th>word hits</th><th>instruction</th><th>surprisal</th><th>degenerate</th>\
             <th>vs prompting</th><th>difference</th><th>p (Holm)</th></tr>",
            escape(&study.concept),
            escape(&held_out_intro(study))
        );
        for m in &study.held_out {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.3} <span class=\"score\">[{:.3}–{:.3}]</span></td><td>{:.3}</td>\
                 <td>{:.0}%</td><td>{:.3}</td><td>{:.2}</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&m.family),
                escape(&chosen(m)),
                m.means.aggregate,
                m.interval.0,
                m.interval.1,
                m.means.concept,
                100.0 * m.means.hits,
                m.means.instruction,
                m.means.surprisal,
                100.0 * m.means.degenerate,
                versus(m, "{} / {}"),
                escape(&difference(m)),
                p_holm(m)
            );
        }
        let _ = write!(h, "</table><p><b>{}</b></p>", escape(&study.summary));
        let _ = write!(
            h,
            "<p>Concept score against surprisal, every strength over all instructions (lower surprisal \
             is more fluent; up and to the left is better):</p>{svg}"
        );
        h.push_str("<h3>Examples</h3>");
        for (instruction, text) in examples(study, records) {
            let _ = write!(h, "<p><i>{}</i></p><ul>", escape(&instruction));
            for (family, answer) in text {
                let _ = write!(
                    h,
                    "<li><b>{}</b>: <span class=\"answer\">{}</span></li>",
                    escape(&family),
                    escape(&answer)
                );
            }
            h.push_str("</ul>");
        }
    }
    h
}

fn chosen(m: &HeldOutMethod) -> String {
    if m.chosen[0] == m.chosen[1] {
        m.chosen[0].clone()
    } else {
        format!("{} / {}", m.chosen[0], m.chosen[1])
    }
}

fn versus(m: &HeldOutMethod, pattern: &str) -> String {
    if m.family == "prompt" {
        return "–".into();
    }
    pattern
        .replacen("{}", &m.against_prompting[0].to_string(), 1)
        .replacen("{}", &m.against_prompting[1].to_string(), 1)
}

fn difference(m: &HeldOutMethod) -> String {
    if m.family == "prompt" {
        return "–".into();
    }
    let (mean, (lo, hi)) = m.difference;
    format!("{mean:+.3} [{lo:+.3}–{hi:+.3}]")
}

fn p_holm(m: &HeldOutMethod) -> String {
    if m.family == "prompt" {
        "–".into()
    } else {
        format!("{:.2e}", m.p_holm)
    }
}

/// The first two instructions' answers, each method at the strength it chose for that
/// instruction's half.
fn examples(study: &ConceptStudy, records: &[SteerRecord]) -> Vec<(String, Vec<(String, String)>)> {
    (0..study.instructions.len().min(2))
        .map(|i| {
            let in_first = study.first_half.contains(&i);
            let answers = study
                .held_out
                .iter()
                .filter_map(|m| {
                    let label = if in_first { &m.chosen[1] } else { &m.chosen[0] };
                    let record = records.iter().find(|r| {
                        r.concept == study.concept
                            && &r.label == label
                            && r.instruction == study.instructions[i]
                    })?;
                    Some((label.clone(), record.generation.trim().to_string()))
                })
                .collect();
            (study.instructions[i].clone(), answers)
        })
        .collect()
}

/// Concept score (y) against surprisal (x, nats per token) of every variant over all
/// instructions: one line per method through its strengths in order, `none` and `prompt` as
/// single marked points.
pub fn curves_svg(study: &ConceptStudy) -> String {
    const COLORS: [&str; 8] = [
        "#555", "#ff7f0e", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#17becf", "#e377c2",
    ];
    let (width, height, left, right, top, bottom) = (680.0, 380.0, 55.0, 210.0, 20.0, 40.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let points: Vec<(f64, f64)> = study
        .curve
        .iter()
        .filter(|p| p.means.n > 0)
        .map(|p| (p.means.surprisal, p.means.concept))
        .collect();
    let range = |values: Vec<f64>| -> (f64, f64) {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            return (0.0, 1.0);
        }
        let pad = ((hi - lo) * 0.08).max(0.01);
        (lo - pad, hi + pad)
    };
    let (x_lo, x_hi) = range(points.iter().map(|p| p.0).collect());
    let (y_lo, y_hi) = range(points.iter().map(|p| p.1).collect());
    let x = |v: f64| left + plot_w * (v - x_lo) / (x_hi - x_lo);
    let y = |v: f64| top + plot_h * (1.0 - (v - y_lo) / (y_hi - y_lo));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        let (vx, vy) = (x_lo + f * (x_hi - x_lo), y_lo + f * (y_hi - y_lo));
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{vy:.2}</text>\
             <text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{vx:.2}</text>",
            left + plot_w,
            left - 5.0,
            y(vy) + 4.0,
            top + plot_h + 15.0,
            py = y(vy),
            px = x(vx),
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">surprisal under the unsteered model (nats per token; lower is more fluent)</text>\
         <text x=\"12\" y=\"{cy}\" transform=\"rotate(-90 12 {cy})\" text-anchor=\"middle\">concept score (lift over the unsteered answer)</text>",
        left + plot_w / 2.0,
        height - 5.0,
        cy = top + plot_h / 2.0,
    );
    let mut families: Vec<&str> = Vec::new();
    for p in &study.curve {
        if !families.contains(&p.family.as_str()) {
            families.push(&p.family);
        }
    }
    for (i, family) in families.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let members: Vec<_> = study
            .curve
            .iter()
            .filter(|p| p.family == *family && p.means.n > 0)
            .collect();
        let path: Vec<String> = members
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.means.surprisal), y(p.means.concept)))
            .collect();
        if members.len() > 1 {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        for p in &members {
            let (px, py) = (x(p.means.surprisal), y(p.means.concept));
            let radius = if p.value.is_none() { 5.0 } else { 3.0 };
            let _ = write!(
                svg,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"{radius}\" fill=\"{color}\"><title>{}</title></circle>",
                escape(&p.label)
            );
            if let Some(value) = p.value {
                let _ = write!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\" font-size=\"9\">{value}</text>",
                    px + 4.0,
                    py - 4.0
                );
            }
        }
        let (lx, ly) = (left + plot_w + 15.0, top + 10.0 + 16.0 * i as f64);
        let _ = write!(
            svg,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            lx + 25.0,
            ly + 4.0,
            escape(family)
        );
    }
    svg.push_str("</svg>\n");
    svg
}
