//! The k sweep: for each ranking and each k, keep the top-k neurons and fit a class-balanced L2
//! logistic regression on them; and the exact search for small k, which tries every set of 1 to 3
//! neurons among the top 50 by mean difference (Gurnee et al. solved this with a MIP solver; here
//! every candidate is fitted on a sample of the training examples, and the best few refitted on
//! all of them).

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::logreg::{self, balanced_weights, Design, Fit};
use crate::matrix::{ClassMoments, Matrix, Standardization};
use crate::metrics::Metrics;
use crate::rank::{self, RankOptions, Ranking};
use crate::Result;

/// The k values of the sweep (those above the width are left out).
pub const DEFAULT_KS: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 32, 64, 128, 256];

/// How a sweep ranks neurons and fits probes.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The numbers of neurons to fit probes on, each at most the hook's width.
    pub ks: Vec<usize>,
    /// The rankings that choose the top-k neurons; each gets a probe per k.
    pub rankings: Vec<Ranking>,
    /// Standardise each neuron (training mean and standard deviation) before ranking and fitting.
    pub standardize: bool,
    /// Inverse L2 strength, as scikit-learn's `C`.
    pub c: f64,
    /// Settings of the sampled rankings (L1 path, mutual information).
    pub rank: RankOptions,
    /// Settings of the exhaustive search over small neuron sets.
    pub exact: ExactOptions,
}

/// The exhaustive search over small neuron sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactOptions {
    /// Largest set size searched (0 turns the search off).
    #[serde(default = "default_exact_max_k")]
    pub max_k: usize,
    /// Candidates: the top neurons by mean difference.
    #[serde(default = "default_exact_top")]
    pub top: usize,
    /// Training examples each candidate is fitted on (a seeded sample).
    #[serde(default = "default_exact_rows")]
    pub rows: usize,
    /// Candidates with the lowest sample loss that are refitted on all training examples.
    #[serde(default = "default_exact_refit")]
    pub refit: usize,
}

fn default_exact_max_k() -> usize {
    3
}
fn default_exact_top() -> usize {
    50
}
fn default_exact_rows() -> usize {
    4_000
}
fn default_exact_refit() -> usize {
    10
}

impl Default for ExactOptions {
    fn default() -> Self {
        ExactOptions {
            max_k: default_exact_max_k(),
            top: default_exact_top(),
            rows: default_exact_rows(),
            refit: default_exact_refit(),
        }
    }
}

/// One fitted probe of the sweep.
#[derive(Clone, Debug)]
pub struct ProbeFit {
    /// The ranking that chose the neurons (`mean_diff`, `f_stat`, `mutual_info`, `l1`) or `exact`.
    pub method: String,
    /// Neurons the probe reads.
    pub k: usize,
    /// Their indices into the hook's width.
    pub neurons: Vec<usize>,
    /// Weights on the (standardised, when `standardization` is set) neurons.
    pub weights: Vec<f64>,
    /// The intercept.
    pub bias: f64,
    /// Mean and standard deviation of each chosen neuron.
    pub standardization: Option<Standardization>,
    /// Metrics on the held-out documents.
    pub held_out: Metrics,
    /// Metrics on the training examples.
    pub train: Metrics,
    /// Training loss (class-balanced mean log loss) at the start and after each Newton step.
    pub losses: Vec<f64>,
}

/// Every probe of the sweep over `data` (rows of `x`), in order: for each ranking, each k; then
/// the exact search's k = 1..=max_k.
pub fn sweep(x: &Matrix, data: &Dataset, options: &SweepOptions) -> Result<Vec<ProbeFit>> {
    // One pass over the training rows gives the standardisation and the moment-based rankings.
    let moments = x.class_moments(&data.train, &data.train_labels);
    let standardization = options.standardize.then(|| moments.standardization());
    let s = standardization.as_ref();
    let weights = balanced_weights(&data.train_labels);
    let mut fits = Vec::new();
    for &ranking in &options.rankings {
        let ranked = rank::rank_with_moments(
            ranking,
            x,
            &data.train,
            &data.train_labels,
            Some(&moments),
            s,
            &options.rank,
        );
        let ks: Vec<usize> = options.ks.iter().copied().filter(|&k| k <= x.cols).collect();
        // The top-k neurons nest, so every k's examples are the first k columns of the largest
        // k's, gathered once; each fit starts from the previous k's solution.
        let largest = ks.iter().copied().max().unwrap_or(0);
        let top: Vec<usize> = ranked[..largest].iter().map(|&(j, _)| j).collect();
        let train_all = x.design(&data.train, &top, s);
        let held_out_all = x.design(&data.held_out, &top, s);
        let mut previous: Option<Fit> = None;
        for k in ks {
            let design = train_all.prefix(k);
            let start = previous.as_ref().filter(|p| p.weights.len() <= k).map(|p| {
                let mut w = p.weights.clone();
                w.resize(k, 0.0);
                (w, p.bias)
            });
            let fit = logreg::fit(
                &design,
                &data.train_labels,
                &weights,
                options.c,
                start.as_ref().map(|(w, b)| (w.as_slice(), *b)),
            )?;
            let held_out_scores = held_out_all.prefix(k).margins(&fit.weights, fit.bias);
            let train_scores = design.margins(&fit.weights, fit.bias);
            fits.push(to_probe_fit(
                ranking.name(),
                data,
                top[..k].to_vec(),
                fit.clone(),
                &train_scores,
                &held_out_scores,
                s,
            ));
            previous = Some(fit);
        }
    }
    if options.exact.max_k > 0 {
        fits.extend(exact_search(x, data, options, &moments, s)?);
    }
    Ok(fits)
}

/// A fitted probe with its metrics from its scores on the training and held-out examples.
fn to_probe_fit(
    method: &str,
    data: &Dataset,
    neurons: Vec<usize>,
    fit: Fit,
    train_scores: &[f64],
    held_out_scores: &[f64],
    standardization: Option<&Standardization>,
) -> ProbeFit {
    let standardization = standardization.map(|s| Standardization {
        mean: neurons.iter().map(|&j| s.mean[j]).collect(),
        std: neurons.iter().map(|&j| s.std[j]).collect(),
    });
    ProbeFit {
        method: method.to_string(),
        k: neurons.len(),
        neurons,
        weights: fit.weights,
        bias: fit.bias,
        standardization,
        held_out: Metrics::compute(&data.held_out_labels, held_out_scores),
        train: Metrics::compute(&data.train_labels, train_scores),
        losses: fit.losses,
    }
}

fn exact_search(
    x: &Matrix,
    data: &Dataset,
    options: &SweepOptions,
    moments: &ClassMoments,
    s: Option<&Standardization>,
) -> Result<Vec<ProbeFit>> {
    let e = &options.exact;
    let by_mean_diff = rank::rank_with_moments(
        Ranking::MeanDiff,
        x,
        &data.train,
        &data.train_labels,
        Some(moments),
        s,
        &options.rank,
    );
    let top: Vec<usize> = by_mean_diff
        .iter()
        .take(e.top.min(x.cols))
        .map(|&(j, _)| j)
        .collect();
    // The sample every candidate is fitted on.
    let mut rng = StdRng::seed_from_u64(options.rank.seed);
    let mut picked: Vec<usize> = sample(&mut rng, data.train.len(), e.rows.min(data.train.len())).into_vec();
    if picked.iter().all(|&i| data.train_labels[i]) || !picked.iter().any(|&i| data.train_labels[i]) {
        // A rare class missed by the sample: search on every training example instead.
        picked = (0..data.train.len()).collect();
    }
    let sample_rows: Vec<usize> = picked.iter().map(|&i| data.train[i]).collect();
    let sample_labels: Vec<bool> = picked.iter().map(|&i| data.train_labels[i]).collect();
    let sample_weights = balanced_weights(&sample_labels);
    let full_weights = balanced_weights(&data.train_labels);
    // The candidates' columns over the sample, gathered once (row-major [sample, top]).
    let sample_columns = x.design(&sample_rows, &top, s);

    let mut fits = Vec::new();
    for size in 1..=e.max_k.min(top.len()) {
        let candidates = combinations(top.len(), size);
        let mut scored: Vec<(f64, Vec<usize>)> = candidates
            .par_iter()
            .map(|slots| -> Result<(f64, Vec<usize>)> {
                let neurons: Vec<usize> = slots.iter().map(|&i| top[i]).collect();
                let (columns, width) = (&sample_columns.data, top.len());
                let data = (0..sample_rows.len())
                    .flat_map(|r| slots.iter().map(move |&i| columns[r * width + i]))
                    .collect();
                let design = Design::new(sample_rows.len(), slots.len(), data);
                let fit = logreg::fit(&design, &sample_labels, &sample_weights, options.c, None)?;
                Ok((fit.objective, neurons))
            })
            .collect::<Result<_>>()?;
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut best: Option<(f64, Vec<usize>, Fit)> = None;
        for (_, neurons) in scored.into_iter().take(e.refit.max(1)) {
            let design = x.design(&data.train, &neurons, s);
            let fit = logreg::fit(&design, &data.train_labels, &full_weights, options.c, None)?;
            if best.as_ref().is_none_or(|b| fit.objective < b.0) {
                best = Some((fit.objective, neurons, fit));
            }
        }
        let (_, neurons, fit) = best.expect("at least one candidate");
        let scores = |rows: &[usize]| x.design(rows, &neurons, s).margins(&fit.weights, fit.bias);
        let (train_scores, held_out_scores) = (scores(&data.train), scores(&data.held_out));
        fits.push(to_probe_fit(
            "exact",
            data,
            neurons.clone(),
            fit,
            &train_scores,
            &held_out_scores,
            s,
        ));
    }
    Ok(fits)
}

/// All `size`-subsets of `0..n`, each increasing.
fn combinations(n: usize, size: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut current = Vec::with_capacity(size);
    fn extend(start: usize, n: usize, size: usize, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if current.len() == size {
            out.push(current.clone());
            return;
        }
        for i in start..n {
            current.push(i);
            extend(i + 1, n, size, current, out);
            current.pop();
        }
    }
    extend(0, n, size, &mut current, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn combinations_count() {
        assert_eq!(super::combinations(50, 3).len(), 19_600);
        assert_eq!(
            super::combinations(4, 2),
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
    }
}
