//! Reports of a scope run, from its records: `report.md` and `report.html` (per source prompt,
//! every amplifier × value with its generation and score, the best marked), a plot of the
//! fraction of sources interpreted against layer (`interpreted.svg`, one line per amplifier), and
//! `results.json` / `results.csv` for pandas.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::judge::concept_hits;
use crate::results::ScopeRecord;
use crate::Result;

/// What the report says about the run besides its records.
pub struct ReportContext {
    pub model: String,
    pub target_prompt: String,
    pub site: String,
    /// Score above which a generation counts as interpreting its source.
    pub threshold: f32,
    /// The run's amplifier labels in config order (the order of rows and lines).
    pub labels: Vec<String>,
    /// The concept words of each feature the run amplified, by feature name.
    pub concepts: BTreeMap<String, Vec<String>>,
    /// Generations the whole run makes; a report from fewer says at its top that it is partial.
    pub expected_generations: usize,
}

impl ReportContext {
    /// The warning a report from an unfinished run opens with.
    fn partial_note(&self, summary: &Summary) -> Option<String> {
        let done = summary.records.len();
        (done < self.expected_generations).then(|| {
            format!(
                "PARTIAL RESULTS: {done} of {} generations are done (the run was stopped). \
                 Fractions below count only what is done; run the same command again to finish.",
                self.expected_generations
            )
        })
    }
}

pub struct ReportPaths {
    pub markdown: PathBuf,
    pub html: PathBuf,
    pub plot: PathBuf,
    pub json: PathBuf,
    pub csv: PathBuf,
}

/// The records arranged for reading: labels and families in the order the run made them.
pub struct Summary<'a> {
    pub records: &'a [ScopeRecord],
    pub threshold: f32,
    pub layers: Vec<usize>,
    /// Amplifier labels (`scale 6`), in run order.
    pub labels: Vec<String>,
    /// Amplifier families (`scale`, `cfg`, `sae dog`), in run order: one line each in the plot.
    pub families: Vec<String>,
    /// Source prompts in run order.
    pub sources: Vec<String>,
}

/// `none`, `scale`, `cfg`, or `sae NAME` / `probe NAME` for a feature.
pub fn family(record: &ScopeRecord) -> String {
    match &record.feature {
        Some(name) => format!("{} {name}", record.amplifier),
        None => record.amplifier.clone(),
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

impl<'a> Summary<'a> {
    /// `label_order`: the run's variants in config order; labels not in it follow in the order
    /// the records have them.
    pub fn new(records: &'a [ScopeRecord], threshold: f32, label_order: &[String]) -> Self {
        let mut sorted: Vec<&ScopeRecord> = records.iter().collect();
        sorted.sort_by_key(|r| r.source_index);
        let (mut labels, mut families, mut sources) = (Vec::new(), Vec::new(), Vec::new());
        let mut layers: Vec<usize> = records.iter().map(|r| r.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        for r in &sorted {
            push_unique(&mut labels, &r.label);
            push_unique(&mut sources, &r.source);
        }
        labels.sort_by_key(|l| label_order.iter().position(|o| o == l).unwrap_or(usize::MAX));
        for label in &labels {
            if let Some(r) = sorted.iter().find(|r| &r.label == label) {
                push_unique(&mut families, &family(r));
            }
        }
        Summary {
            records,
            threshold,
            layers,
            labels,
            families,
            sources,
        }
    }

    /// The fraction of sources interpreted at `layer` by the records `pick` selects: a source
    /// counts when any selected record of it scores above the threshold (Superscopes' rule, "at
    /// any amplification"). `None` where nothing was selected at that layer.
    pub fn fraction_interpreted(&self, layer: usize, pick: impl Fn(&ScopeRecord) -> bool) -> Option<f64> {
        let mut best: BTreeMap<&str, f32> = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.layer == layer && pick(r)) {
            let score = best.entry(&r.source).or_insert(f32::NEG_INFINITY);
            *score = score.max(r.score);
        }
        if best.is_empty() {
            return None;
        }
        let interpreted = best.values().filter(|&&s| s > self.threshold).count();
        Some(interpreted as f64 / best.len() as f64)
    }

    /// Patchscopes' precision@1 and mean surprisal of the records `pick` selects.
    pub fn next_token(&self, pick: impl Fn(&ScopeRecord) -> bool) -> Option<(f64, f64)> {
        let chosen: Vec<&ScopeRecord> = self.records.iter().filter(|r| pick(r)).collect();
        if chosen.is_empty() {
            return None;
        }
        let n = chosen.len() as f64;
        let precision = chosen.iter().filter(|r| r.next_token_match).count() as f64 / n;
        let surprisal = chosen.iter().map(|r| r.surprisal as f64).sum::<f64>() / n;
        Some((precision, surprisal))
    }

    /// The records of one source prompt, and the best of them (highest score).
    pub fn of_source(&self, source: &str) -> (Vec<&'a ScopeRecord>, Option<&'a ScopeRecord>) {
        let records: Vec<&ScopeRecord> = self.records.iter().filter(|r| r.source == source).collect();
        let best = records.iter().copied().max_by(|a, b| a.score.total_cmp(&b.score));
        (records, best)
    }

    /// For each label, the record of this source with the highest score over layers.
    pub fn best_per_label(&self, source: &str) -> Vec<&'a ScopeRecord> {
        let (records, _) = self.of_source(source);
        self.labels
            .iter()
            .filter_map(|label| {
                records
                    .iter()
                    .copied()
                    .filter(|r| &r.label == label)
                    .max_by(|a, b| a.score.total_cmp(&b.score))
            })
            .collect()
    }
}

/// Writes every report file into `out`.
pub fn write_report(out: &Path, context: &ReportContext, records: &[ScopeRecord]) -> Result<ReportPaths> {
    let summary = Summary::new(records, context.threshold, &context.labels);
    let paths = ReportPaths {
        markdown: out.join("report.md"),
        html: out.join("report.html"),
        plot: out.join("interpreted.svg"),
        json: out.join("results.json"),
        csv: out.join("results.csv"),
    };
    let plot = plot_svg(&summary);
    write_atomic(&paths.markdown, &markdown(context, &summary))?;
    write_atomic(&paths.html, &html(context, &summary, &plot))?;
    write_atomic(&paths.plot, &plot)?;
    write_atomic(
        &paths.json,
        &serde_json::to_string_pretty(records).expect("records serialize"),
    )?;
    write_atomic(&paths.csv, &csv(records))?;
    Ok(paths)
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    Ok(loupe_util::write_atomically(path, text.as_bytes())?)
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("–".into(), |f| format!("{:.0}%", 100.0 * f))
}

/// A generation in a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', "⏎").trim().to_string()
}

/// The fraction-interpreted tables (per family and per label against layer), as Markdown.
pub fn fraction_tables(summary: &Summary) -> String {
    let mut md = String::new();
    let header = |md: &mut String, first: &str| {
        let _ = write!(md, "| {first} |");
        for layer in &summary.layers {
            let _ = write!(md, " L{layer} |");
        }
        md.push_str("\n| --- |");
        for _ in &summary.layers {
            md.push_str(" ---: |");
        }
        md.push('\n');
    };
    let _ = writeln!(
        md,
        "Fraction of source prompts interpreted (score > {}) at each source layer, by amplifier (best value), and for any amplifier:\n",
        summary.threshold
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

fn markdown(context: &ReportContext, summary: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Scope report: {}\n", context.model);
    if let Some(note) = context.partial_note(summary) {
        let _ = writeln!(md, "> **{note}**\n");
    }
    let _ = writeln!(
        md,
        "Target prompt: `{}`  \nSite: {} · {} source prompts · layers {:?} · {} patched generations  \n\
         Score: cosine similarity of all-MiniLM-L6-v2 embeddings of source prompt and generation; interpreted when above {}.\n",
        cell(&context.target_prompt),
        context.site,
        summary.sources.len(),
        summary.layers,
        summary.records.len(),
        context.threshold
    );
    md.push_str("## Fraction interpreted\n\n");
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
    if !context.concepts.is_empty() {
        md.push_str(
            "\n## Concept words\n\nGenerations that use one of the feature's concept words, against \
             plain patching (`none`) of the same sources at the same layer as the baseline:\n\n\
             | amplifier | hits | `none`, same layer |\n| --- | ---: | ---: |\n",
        );
        for label in &summary.labels {
            let of_label: Vec<&ScopeRecord> = summary.records.iter().filter(|r| &r.label == label).collect();
            let Some(concepts) = of_label
                .first()
                .and_then(|r| r.feature.as_ref())
                .and_then(|f| context.concepts.get(f))
            else {
                continue;
            };
            let hits = of_label.iter().filter(|r| !r.concept_hits.is_empty()).count();
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
            let baseline_hits = baseline
                .iter()
                .filter(|r| !concept_hits(&r.generation, concepts).is_empty())
                .count();
            let _ = writeln!(
                md,
                "| {label} | {hits} / {} | {baseline_hits} / {} |",
                of_label.len(),
                baseline.len()
            );
        }
    }
    md.push_str(
        "\n## Per source prompt\n\nEach amplifier × value at its best layer; ★ the best of the prompt.\n",
    );
    for source in &summary.sources {
        let _ = writeln!(md, "\n### {}\n", cell(source));
        md.push_str(&source_section(summary, source));
    }
    md
}

use loupe_util::html::escape;

/// A cell's background: white at score 0, green at 1.
fn shade(score: f32) -> String {
    let t = score.clamp(0.0, 1.0);
    let channel = |full: f32| (255.0 - t * (255.0 - full)) as u8;
    format!("rgb({},{},{})", channel(120.0), channel(200.0), channel(120.0))
}

fn html(context: &ReportContext, summary: &Summary, plot: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Scope report: {model}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:90em}} table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;font-size:.9em}} th{{background:#f4f4f4}}\
         td.best{{outline:3px solid #c80;font-weight:bold}} .score{{color:#555;font-size:.8em}} code{{background:#f4f4f4}}\
         </style></head><body><h1>Scope report: {model}</h1><p>Target prompt: <code>{target}</code><br>Site: {site} · \
         {n_sources} source prompts · {n} patched generations. Score: cosine similarity of all-MiniLM-L6-v2 embeddings of \
         source prompt and generation; interpreted when above {threshold}.</p><h2>Fraction interpreted</h2>{plot}",
        model = escape(&context.model),
        target = escape(&context.target_prompt),
        site = escape(&context.site),
        n_sources = summary.sources.len(),
        n = summary.records.len(),
        threshold = context.threshold,
    );
    if let Some(note) = context.partial_note(summary) {
        let at = h.find("<h2>Fraction interpreted</h2>").unwrap_or(h.len());
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
    h.push_str("</table><h2>Per source prompt</h2><p>Every amplifier × value at every layer; the best of each prompt outlined.</p>");
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

/// Fraction interpreted against layer, one line per amplifier family, as a standalone SVG.
pub fn plot_svg(summary: &Summary) -> String {
    const COLORS: [&str; 8] = [
        "#555", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2",
    ];
    let (width, height, left, right, top, bottom) = (640.0, 360.0, 50.0, 170.0, 20.0, 40.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let (first, last) = match (summary.layers.first(), summary.layers.last()) {
        (Some(&a), Some(&b)) => (a as f64, b as f64),
        _ => (0.0, 1.0),
    };
    let x = |layer: usize| {
        left + plot_w
            * if last > first {
                (layer as f64 - first) / (last - first)
            } else {
                0.5
            }
    };
    let y = |fraction: f64| top + plot_h * (1.0 - fraction);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0}\" y2=\"{y0}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>",
            left + plot_w,
            left - 5.0,
            y(f) + 4.0,
            100.0 * f,
            y0 = y(f)
        );
    }
    for &layer in &summary.layers {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{layer}</text>",
            x(layer),
            top + plot_h + 15.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">source layer</text>\
         <text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">interpreted (score &gt; {})</text>",
        left + plot_w / 2.0,
        height - 5.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        summary.threshold
    );
    for (i, family_name) in summary.families.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = summary
            .layers
            .iter()
            .filter_map(|&l| {
                summary
                    .fraction_interpreted(l, |r| &family(r) == family_name)
                    .map(|f| (x(l), y(f)))
            })
            .collect();
        let path: Vec<String> = points.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (px, py) in &points {
            let _ = write!(
                svg,
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{color}\"/>"
            );
        }
        let ly = top + 10.0 + 16.0 * i as f64;
        let lx = left + plot_w + 15.0;
        let _ = write!(
            svg,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            lx + 25.0,
            ly + 4.0,
            escape(family_name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn csv(records: &[ScopeRecord]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from(
        "source_index,source,layer,target_layer,hook,amplifier,label,value,feature,null,generation,score,\
         concept_hits,source_next_token,patched_next_token,next_token_match,surprisal,norm,amplified_norm\n",
    );
    for r in records {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.source_index,
            quote(&r.source),
            r.layer,
            r.target_layer,
            r.hook,
            r.amplifier,
            quote(&r.label),
            r.value.map_or(String::new(), |v| v.to_string()),
            quote(r.feature.as_deref().unwrap_or("")),
            quote(r.null.as_deref().unwrap_or("")),
            quote(&r.generation),
            r.score,
            quote(&r.concept_hits.join(";")),
            quote(&r.source_next_token),
            quote(&r.patched_next_token),
            r.next_token_match,
            r.surprisal,
            r.norm,
            r.amplified_norm
        );
    }
    out
}
