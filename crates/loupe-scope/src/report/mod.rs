//! Reports of a scope run, from its records: `report.md` and `report.html` (the held-out
//! comparison with intervals and paired tests, then per source prompt every amplifier × value
//! with its generation and score, the best marked), a plot of the fraction of sources
//! interpreted against layer (`interpreted.svg`, one line per amplifier), the held-out fractions
//! with interval bars (`held_out.svg`), `study.json` (the held-out figures and tests), and
//! `results.json` / `results.csv` for pandas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::judge::degenerate;
use crate::results::ScopeRecord;
use crate::Result;

mod csv;
mod html;
mod markdown;
mod plot;
pub mod study;

pub use markdown::{fraction_tables, source_section};
pub use plot::{held_out_svg, plot_svg};

use csv::csv;
use html::html;
use markdown::markdown;

/// What the report says about the run besides its records.
pub struct ReportContext {
    /// The model's name.
    pub model: String,
    /// The target prompt's text.
    pub target_prompt: String,
    /// The source hook, with the layer written `L` (`blocks.L.hook_resid_post`).
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

/// Where [`write_report`] put each file.
pub struct ReportPaths {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// `interpreted.svg`: the fraction of sources interpreted against layer, one line per family.
    pub plot: PathBuf,
    /// `results.json`: every record.
    pub json: PathBuf,
    /// `results.csv`: every record, one line each.
    pub csv: PathBuf,
    /// `study.json`: the held-out figures and the paired tests (see [`study`]).
    pub study: PathBuf,
    /// `held_out.svg`: the held-out fraction against layer with 95% intervals, one line per family.
    pub held_out_plot: PathBuf,
}

/// The records arranged for reading: labels and families in the order the run made them.
pub struct Summary<'a> {
    /// Every record of the run.
    pub records: &'a [ScopeRecord],
    /// Score above which a generation counts as interpreting its source.
    pub threshold: f32,
    /// Whether the run is an attribute-extraction task: every record has expected answers, and a
    /// generation counts when it contains one (instead of scoring above the threshold).
    pub answers: bool,
    /// The source layers that have records, ascending.
    pub layers: Vec<usize>,
    /// Amplifier labels (`scale 6`), in run order.
    pub labels: Vec<String>,
    /// Amplifier families (`scale`, `cfg`, `sae dog`), in run order: one line each in the plot.
    pub families: Vec<String>,
    /// Source prompts in run order.
    pub sources: Vec<String>,
}

/// One line of the fluency table (see [`Summary::fluency_rows`]).
pub struct FluencyRow {
    /// The amplifier and value (`scale 6`).
    pub label: String,
    /// Mean surprisal per generated token at each of the summary's layers.
    pub by_layer: Vec<Option<f64>>,
    /// Over all layers.
    pub all: f64,
    /// The fraction of its generations that are degenerate (`judge::degenerate`).
    pub degenerate: f64,
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
            answers: !records.is_empty() && records.iter().all(|r| r.answer_found.is_some()),
            layers,
            labels,
            families,
            sources,
        }
    }

    /// Whether `record` counts as interpreting its source: its score above the threshold, or, in an
    /// attribute-extraction run, an expected answer in its generation.
    pub fn success(&self, record: &ScopeRecord) -> bool {
        if self.answers {
            record.answer_found == Some(true)
        } else {
            record.score > self.threshold
        }
    }

    /// What [`Summary::success`] asks, for the reports' parentheses: `score > 0.3`.
    pub fn criterion(&self) -> String {
        if self.answers {
            "the generation contains an expected answer".into()
        } else {
            format!("score > {}", self.threshold)
        }
    }

    /// The fraction of sources interpreted at `layer` by the records `pick` selects: a source
    /// counts when any selected record of it succeeds (Superscopes' rule, "at any amplification").
    /// `None` where nothing was selected at that layer.
    pub fn fraction_interpreted(&self, layer: usize, pick: impl Fn(&ScopeRecord) -> bool) -> Option<f64> {
        let mut any: BTreeMap<&str, bool> = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.layer == layer && pick(r)) {
            *any.entry(&r.source).or_insert(false) |= self.success(r);
        }
        if any.is_empty() {
            return None;
        }
        let interpreted = any.values().filter(|&&s| s).count();
        Some(interpreted as f64 / any.len() as f64)
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

    /// Per label: its mean fluency (surprisal in nats per generated token) at each layer and over
    /// all layers, and the fraction of its generations that are degenerate. Labels without a
    /// judged generation are left out.
    pub fn fluency_rows(&self) -> Vec<FluencyRow> {
        let mean = |pick: &dyn Fn(&ScopeRecord) -> bool| -> Option<f64> {
            let values: Vec<f64> = self
                .records
                .iter()
                .filter(|r| pick(r))
                .filter_map(|r| r.fluency.map(f64::from))
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        self.labels
            .iter()
            .filter_map(|label| {
                let all = mean(&|r| &r.label == label)?;
                let of_label: Vec<&ScopeRecord> = self.records.iter().filter(|r| &r.label == label).collect();
                let degenerate = of_label.iter().filter(|r| degenerate(&r.tokens)).count();
                Some(FluencyRow {
                    label: label.clone(),
                    by_layer: self
                        .layers
                        .iter()
                        .map(|&layer| mean(&|r| &r.label == label && r.layer == layer))
                        .collect(),
                    all,
                    degenerate: degenerate as f64 / of_label.len() as f64,
                })
            })
            .collect()
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
        study: out.join("study.json"),
        held_out_plot: out.join("held_out.svg"),
    };
    let plot = plot_svg(&summary);
    let study = study::study(&summary, study::STUDY_SEED);
    let held_out_plot = held_out_svg(&summary, &study);
    write_atomic(&paths.markdown, &markdown(context, &summary, &study))?;
    write_atomic(
        &paths.html,
        &html(context, &summary, &study, &held_out_plot, &plot),
    )?;
    write_atomic(&paths.held_out_plot, &held_out_plot)?;
    write_atomic(
        &paths.study,
        &serde_json::to_string_pretty(&study).expect("the study serializes"),
    )?;
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
