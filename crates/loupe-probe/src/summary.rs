//! The run's summary: `summary.csv` (one row per probe, every metric, for pandas) and
//! `summary.md` (class balance, the best single neuron per feature, and F1 against k per feature,
//! hook and method).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use loupe_model::HookPoint;
use serde::{Deserialize, Serialize};

use crate::dataset::ClassBalance;
use crate::features::Level;
use crate::metrics::Metrics;
use crate::probe::Probe;
use crate::Result;

/// One line of the run summary: one probe, with its held-out metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The feature's name.
    pub feature: String,
    /// Token-level or document-level.
    pub level: Level,
    /// The hook point probed.
    pub hook: HookPoint,
    /// The ranking that chose the neurons, or `exact`.
    pub method: String,
    /// Neurons the probe reads.
    pub k: usize,
    /// Their indices into the hook's width.
    pub neurons: Vec<u32>,
    /// Metrics on the held-out documents.
    pub held_out: Metrics,
    /// F1 on the training examples (a large gap to held-out F1 means overfitting).
    pub train_f1: f64,
    /// Positive and negative examples on each side of the split.
    pub balance: ClassBalance,
}

impl SummaryRow {
    /// The summary line of a saved probe.
    pub fn new(probe: &Probe) -> SummaryRow {
        let i = &probe.info;
        SummaryRow {
            feature: i.feature.clone(),
            level: i.level,
            hook: i.hook,
            method: i.method.clone(),
            k: i.k,
            neurons: probe.neurons.clone(),
            held_out: i.held_out,
            train_f1: i.train.f1,
            balance: i.balance,
        }
    }
}

/// Writes `summary.csv` and `summary.md` into `dir`, atomically.
pub fn write_summary(dir: &Path, rows: &[SummaryRow]) -> Result<()> {
    loupe_util::write_atomically(&dir.join("summary.csv"), csv(rows).as_bytes())?;
    loupe_util::write_atomically(&dir.join("summary.md"), markdown(rows).as_bytes())?;
    Ok(())
}

/// The CSV summary: a header line, then one line per row with every held-out metric.
pub fn csv(rows: &[SummaryRow]) -> String {
    let mut out = String::from(
        "feature,level,hook,layer,method,k,f1,mcc,precision,recall,accuracy,roc_auc,train_f1,held_out_positive,held_out_negative,neurons\n",
    );
    for r in rows {
        let m = &r.held_out;
        let neurons: Vec<String> = r.neurons.iter().map(|n| n.to_string()).collect();
        let _ = writeln!(
            out,
            "{},{:?},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{},{}",
            r.feature,
            r.level,
            r.hook,
            r.hook.layer().map_or(String::new(), |l| l.to_string()),
            r.method,
            r.k,
            m.f1,
            m.mcc,
            m.precision,
            m.recall,
            m.accuracy,
            m.roc_auc,
            r.train_f1,
            r.balance.held_out_positive,
            r.balance.held_out_negative,
            neurons.join(" ")
        );
    }
    out
}

/// The Markdown summary: class balance, the best single neuron per feature, and tables of F1
/// against k per feature, hook and method.
pub fn markdown(rows: &[SummaryRow]) -> String {
    let mut out = String::from("# Probe summary\n\nHeld-out metrics; F1 is the headline.\n\n");
    let mut features: Vec<&str> = Vec::new();
    for r in rows {
        if !features.contains(&r.feature.as_str()) {
            features.push(&r.feature);
        }
    }

    out.push_str("## Class balance\n\n| feature | hook | train + | train − | held-out + | held-out − |\n| --- | --- | --- | --- | --- | --- |\n");
    let mut seen = Vec::new();
    for r in rows {
        if !seen.contains(&(&r.feature, r.hook)) {
            seen.push((&r.feature, r.hook));
            let b = &r.balance;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.feature,
                r.hook,
                b.train_positive,
                b.train_negative,
                b.held_out_positive,
                b.held_out_negative
            );
        }
    }

    out.push_str("\n## Best single neuron per feature\n\n| feature | hook | neuron | method | F1 | MCC | precision | recall | ROC-AUC |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for f in &features {
        let best = rows
            .iter()
            .filter(|r| r.feature == *f && r.k == 1)
            .max_by(|a, b| a.held_out.f1.total_cmp(&b.held_out.f1));
        if let Some(r) = best {
            let m = &r.held_out;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                f, r.hook, r.neurons[0], r.method, m.f1, m.mcc, m.precision, m.recall, m.roc_auc
            );
        }
    }

    for f in &features {
        let _ = writeln!(out, "\n## {f}: F1 against k\n");
        let of_feature: Vec<&SummaryRow> = rows.iter().filter(|r| r.feature == *f).collect();
        let mut ks: Vec<usize> = of_feature.iter().map(|r| r.k).collect();
        ks.sort_unstable();
        ks.dedup();
        // (hook, method) → k → F1, hooks in the order they were probed.
        type Line<'a> = ((HookPoint, &'a str), BTreeMap<usize, f64>);
        let mut table: Vec<Line> = Vec::new();
        for r in &of_feature {
            let key = (r.hook, r.method.as_str());
            let slot = match table.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    table.push((key, BTreeMap::new()));
                    table.len() - 1
                }
            };
            table[slot].1.insert(r.k, r.held_out.f1);
        }
        let header: Vec<String> = ks.iter().map(|k| format!("k={k}")).collect();
        let _ = writeln!(out, "| hook | method | {} |", header.join(" | "));
        let _ = writeln!(out, "| --- | --- |{}", " --- |".repeat(ks.len()));
        for ((hook, method), f1s) in &table {
            let cells: Vec<String> = ks
                .iter()
                .map(|k| f1s.get(k).map_or(String::new(), |f| format!("{f:.3}")))
                .collect();
            let _ = writeln!(out, "| {hook} | {method} | {} |", cells.join(" | "));
        }
    }
    out
}
