//! Neuron rankings: which neurons to keep for a k-sparse probe. Each method scores every neuron on
//! the training examples; the probe keeps the k best.
//!
//! - `mean_diff`: |mean over positives − mean over negatives| (in standard deviations when the
//!   activations are standardised), the ranking Gurnee et al. use most;
//! - `f_stat`: the one-way ANOVA F statistic of the neuron between the two classes (as
//!   scikit-learn's `f_classif`);
//! - `mutual_info`: mutual information between the class and the neuron's activation cut into 16
//!   quantile bins;
//! - `l1`: the order in which neurons enter an L1-regularised logistic regression as its penalty
//!   falls from the value where every weight is zero (glmnet's path: coordinate descent on the
//!   reweighted least-squares problem, with the strong rule to skip neurons that cannot enter).

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::logreg::{balanced_weights, sigmoid};
use crate::matrix::{ClassMoments, Matrix, Standardization};

/// A way of ranking a hook's neurons by how well each alone separates the classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// Absolute difference of the class means (divided by the standard deviation when standardised).
    MeanDiff,
    /// Two-class one-way ANOVA F statistic.
    FStat,
    /// Mutual information between the binned neuron and the label.
    MutualInfo,
    /// Order of entry into an L1-regularised logistic regression path.
    L1,
}

impl Ranking {
    /// Every ranking, in the order a sweep runs them.
    pub const ALL: [Ranking; 4] = [
        Ranking::MeanDiff,
        Ranking::FStat,
        Ranking::MutualInfo,
        Ranking::L1,
    ];

    /// The ranking's name in configs, file names and summaries (`mean_diff`, `f_stat`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Ranking::MeanDiff => "mean_diff",
            Ranking::FStat => "f_stat",
            Ranking::MutualInfo => "mutual_info",
            Ranking::L1 => "l1",
        }
    }
}

/// Settings of the sampled rankings.
#[derive(Clone, Debug)]
pub struct RankOptions {
    /// Training examples the L1 path runs on (a seeded sample when there are more).
    pub l1_rows: usize,
    /// The path stops once this many neurons have entered; the others follow in the order of
    /// their gradient at the last penalty (the order in which they would enter next).
    pub l1_path_neurons: usize,
    /// Examples the mutual-information bin edges are estimated from.
    pub quantile_rows: usize,
    /// Seeds the samples of the L1 path and of the quantile estimate.
    pub seed: u64,
}

impl Default for RankOptions {
    fn default() -> Self {
        RankOptions {
            l1_rows: 20_000,
            l1_path_neurons: 64,
            quantile_rows: 4096,
            seed: 0,
        }
    }
}

/// Neurons best first, each with its score under the method (higher is better).
pub type Ranked = Vec<(usize, f64)>;

/// Ranks every column of `x` over the training `rows` (with `labels` aligned to them).
pub fn rank(
    method: Ranking,
    x: &Matrix,
    rows: &[usize],
    labels: &[bool],
    standardization: Option<&Standardization>,
    options: &RankOptions,
) -> Ranked {
    rank_with_moments(method, x, rows, labels, None, standardization, options)
}

/// [`rank`] with the class moments of `rows` already computed (a sweep computes them once for
/// its standardisation and every ranking that needs them); computes them when `None`.
pub fn rank_with_moments(
    method: Ranking,
    x: &Matrix,
    rows: &[usize],
    labels: &[bool],
    moments: Option<&ClassMoments>,
    standardization: Option<&Standardization>,
    options: &RankOptions,
) -> Ranked {
    let computed;
    let moments = match moments {
        None if matches!(method, Ranking::MeanDiff | Ranking::FStat) => {
            computed = x.class_moments(rows, labels);
            Some(&computed)
        }
        given => given,
    };
    let moments = || moments.expect("the rankings that use class moments have them");
    let scores = match method {
        Ranking::MeanDiff => mean_diff_of(moments(), standardization),
        Ranking::FStat => f_stat_of(moments()),
        Ranking::MutualInfo => mutual_info(x, rows, labels, options),
        Ranking::L1 => l1_path(x, rows, labels, standardization, options),
    };
    let mut ranked: Ranked = scores
        .into_iter()
        .map(|s| if s.is_nan() { 0.0 } else { s })
        .enumerate()
        .collect();
    // Stable: equal scores keep neuron order.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

/// Per neuron: the absolute difference of its class means over `rows`, divided by its standard
/// deviation when `standardization` is given (so neurons of different scales compare).
pub fn mean_diff(
    x: &Matrix,
    rows: &[usize],
    labels: &[bool],
    standardization: Option<&Standardization>,
) -> Vec<f64> {
    mean_diff_of(&x.class_moments(rows, labels), standardization)
}

/// [`mean_diff`] from the class moments.
pub fn mean_diff_of(m: &ClassMoments, standardization: Option<&Standardization>) -> Vec<f64> {
    (0..m.sum[0].len())
        .map(|j| {
            let diff = (m.mean(1, j) - m.mean(0, j)).abs();
            standardization.map_or(diff, |s| diff / s.std[j])
        })
        .collect()
}

/// Two-class one-way ANOVA: between-class over within-class mean squares. (Invariant to the
/// neuron's scale, so standardisation does not change it.)
pub fn f_stat(x: &Matrix, rows: &[usize], labels: &[bool]) -> Vec<f64> {
    f_stat_of(&x.class_moments(rows, labels))
}

/// [`f_stat`] from the class moments.
pub fn f_stat_of(m: &ClassMoments) -> Vec<f64> {
    let n = m.count[0] + m.count[1];
    (0..m.sum[0].len())
        .map(|j| {
            let grand = (m.sum[0][j] + m.sum[1][j]) / n;
            let mut between = 0.0;
            let mut within = 0.0;
            for c in 0..2 {
                let mean = m.mean(c, j);
                between += m.count[c] * (mean - grand).powi(2);
                within += m.sum_sq[c][j] - m.count[c] * mean * mean;
            }
            between / (within.max(0.0) / (n - 2.0))
        })
        .collect()
}

const MI_BINS: usize = 16;

/// Mutual information (nats) between the label and each neuron cut into quantile bins.
pub fn mutual_info(x: &Matrix, rows: &[usize], labels: &[bool], options: &RankOptions) -> Vec<f64> {
    let cols = x.cols;
    // Bin edges per neuron from a sample of the rows.
    let mut rng = StdRng::seed_from_u64(options.seed);
    let sampled: Vec<usize> = sample(&mut rng, rows.len(), options.quantile_rows.min(rows.len()))
        .into_iter()
        .map(|i| rows[i])
        .collect();
    let edges: Vec<Vec<f32>> = (0..cols)
        .into_par_iter()
        .map(|j| {
            let mut values: Vec<f32> = sampled.iter().map(|&r| x.row(r)[j]).collect();
            values.sort_by(f32::total_cmp);
            (1..MI_BINS).map(|q| values[q * values.len() / MI_BINS]).collect()
        })
        .collect();
    // counts[j][bin][class]
    let empty = || vec![[0u32; 2]; cols * MI_BINS];
    let counts = rows
        .par_iter()
        .zip(labels)
        .fold(empty, |mut counts, (&r, &y)| {
            for (j, &v) in x.row(r).iter().enumerate() {
                let bin = edges[j].partition_point(|&e| e <= v);
                counts[j * MI_BINS + bin][y as usize] += 1;
            }
            counts
        })
        .reduce(empty, |mut a, b| {
            for (a, b) in a.iter_mut().zip(&b) {
                a[0] += b[0];
                a[1] += b[1];
            }
            a
        });
    let n = rows.len() as f64;
    let class_p = {
        let positives = labels.iter().filter(|&&y| y).count() as f64;
        [(n - positives) / n, positives / n]
    };
    (0..cols)
        .map(|j| {
            let mut mi = 0.0;
            for bin in &counts[j * MI_BINS..(j + 1) * MI_BINS] {
                let bin_p = (bin[0] + bin[1]) as f64 / n;
                for c in 0..2 {
                    let joint = bin[c] as f64 / n;
                    if joint > 0.0 {
                        mi += joint * (joint / (bin_p * class_p[c])).ln();
                    }
                }
            }
            mi
        })
        .collect()
}

/// Penalties on the path, from the largest (no neuron active) down to this fraction of it.
const L1_PATH_STEPS: usize = 40;
const L1_PATH_END: f64 = 0.01;

/// Scores for the L1 path: a neuron that enters scores the penalty at which it entered (ties at
/// one penalty broken by the size of the weight it entered with, as a small fraction); the others
/// score their gradient magnitude at the last penalty, which is below every entry penalty.
pub fn l1_path(
    x: &Matrix,
    rows: &[usize],
    labels: &[bool],
    standardization: Option<&Standardization>,
    options: &RankOptions,
) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let picked: Vec<usize> = if rows.len() > options.l1_rows {
        let mut p = sample(&mut rng, rows.len(), options.l1_rows).into_vec();
        p.sort_unstable();
        p
    } else {
        (0..rows.len()).collect()
    };
    let y: Vec<bool> = picked.iter().map(|&i| labels[i]).collect();
    let m = picked.len();
    // Columns, contiguous per neuron.
    let columns: Vec<Vec<f32>> = (0..x.cols)
        .into_par_iter()
        .map(|j| {
            picked
                .iter()
                .map(|&i| {
                    let v = x.row(rows[i])[j];
                    standardization.map_or(v, |s| s.apply(j, v) as f32)
                })
                .collect()
        })
        .collect();
    // Per-example weights summing to 1: the objective is Σ sᵢℓᵢ + λ‖w‖₁.
    let mut s = balanced_weights(&y);
    let total: f64 = s.iter().sum();
    s.iter_mut().for_each(|v| *v /= total);

    let mut path = L1Path {
        columns: &columns,
        y: &y,
        s: &s,
        w: vec![0.0; x.cols],
        b: 0.0,
        z: vec![0.0; m],
    };
    let mut gradient = path.gradient();
    let lambda_max = gradient.iter().fold(0.0f64, |a, g| a.max(g.abs()));
    let mut scores: Vec<Option<f64>> = vec![None; x.cols];
    let mut entered = 0;
    let mut previous = lambda_max;
    let mut active: Vec<usize> = Vec::new();
    for step in 1..=L1_PATH_STEPS {
        let lambda = lambda_max * L1_PATH_END.powf(step as f64 / L1_PATH_STEPS as f64);
        // Strong rule: a neuron whose gradient is below 2λ − λ_previous will almost surely stay
        // at zero; the KKT check below adds any that do not.
        let mut set: Vec<usize> = (0..x.cols)
            .filter(|&j| active.contains(&j) || gradient[j].abs() >= 2.0 * lambda - previous)
            .collect();
        loop {
            path.solve(&set, lambda);
            gradient = path.gradient();
            let violators: Vec<usize> = (0..x.cols)
                .filter(|&j| !set.contains(&j) && gradient[j].abs() > lambda * (1.0 + 1e-6))
                .collect();
            if violators.is_empty() {
                break;
            }
            set.extend(violators);
        }
        for (j, score) in scores.iter_mut().enumerate() {
            if path.w[j] != 0.0 && score.is_none() {
                // Entry penalty, plus a tie-break below the gap to the next penalty.
                let gap = lambda * (1.0 - L1_PATH_END.powf(1.0 / L1_PATH_STEPS as f64));
                *score = Some(lambda + gap * path.w[j].abs() / (1.0 + path.w[j].abs()));
                active.push(j);
                entered += 1;
            }
        }
        previous = lambda;
        if entered >= options.l1_path_neurons {
            break;
        }
    }
    (0..x.cols)
        .map(|j| scores[j].unwrap_or(gradient[j].abs()))
        .collect()
}

/// The state of an L1-regularised logistic regression along its path.
struct L1Path<'a> {
    columns: &'a [Vec<f32>],
    y: &'a [bool],
    /// Example weights (sum 1).
    s: &'a [f64],
    w: Vec<f64>,
    b: f64,
    /// Margins `b + x·w`.
    z: Vec<f64>,
}

impl L1Path<'_> {
    /// ∂/∂w_j of Σ sᵢℓᵢ for every neuron.
    fn gradient(&self) -> Vec<f64> {
        let r: Vec<f64> = (0..self.z.len())
            .map(|i| self.s[i] * (sigmoid(self.z[i]) - if self.y[i] { 1.0 } else { 0.0 }))
            .collect();
        self.columns
            .par_iter()
            .map(|col| col.iter().zip(&r).map(|(&x, r)| x as f64 * r).sum())
            .collect()
    }

    /// Minimises Σ sᵢℓᵢ + λ‖w‖₁ over the neurons in `set` (others stay fixed): iteratively
    /// reweighted least squares, each quadratic solved by cyclic coordinate descent.
    fn solve(&mut self, set: &[usize], lambda: f64) {
        let m = self.z.len();
        for _irls in 0..25 {
            // Quadratic model around the current margins: weights dᵢ, working residuals.
            let mut d = vec![0.0; m];
            let mut residual = vec![0.0; m];
            for i in 0..m {
                let p = sigmoid(self.z[i]);
                let v = (p * (1.0 - p)).max(1e-5);
                d[i] = self.s[i] * v;
                residual[i] = ((if self.y[i] { 1.0 } else { 0.0 }) - p) / v;
            }
            let d_total: f64 = d.iter().sum();
            let curvature: Vec<f64> = set
                .iter()
                .map(|&j| {
                    self.columns[j]
                        .iter()
                        .zip(&d)
                        .map(|(&x, d)| d * (x as f64).powi(2))
                        .sum()
                })
                .collect();
            let mut largest_change = 0.0f64;
            for cycle in 0..200 {
                let mut cycle_change = 0.0f64;
                for (slot, &j) in set.iter().enumerate() {
                    // After the first cycle, only the nonzero weights (the active set) move.
                    if cycle > 0 && self.w[j] == 0.0 {
                        continue;
                    }
                    let h = curvature[slot];
                    if h <= 0.0 {
                        continue;
                    }
                    let col = &self.columns[j];
                    let rho: f64 = col
                        .iter()
                        .zip(&d)
                        .zip(&residual)
                        .map(|((&x, d), r)| d * x as f64 * r)
                        .sum::<f64>()
                        + h * self.w[j];
                    let new = soft_threshold(rho, lambda) / h;
                    let delta = new - self.w[j];
                    if delta != 0.0 {
                        for (r, &x) in residual.iter_mut().zip(col) {
                            *r -= x as f64 * delta;
                        }
                        self.w[j] = new;
                        cycle_change = cycle_change.max(h * delta * delta);
                    }
                }
                let db = residual.iter().zip(&d).map(|(r, d)| r * d).sum::<f64>() / d_total;
                residual.iter_mut().for_each(|r| *r -= db);
                self.b += db;
                cycle_change = cycle_change.max(d_total * db * db);
                if cycle == 0 {
                    largest_change = cycle_change;
                }
                if cycle_change < 1e-9 {
                    break;
                }
            }
            // New margins: b + x·w over all neurons.
            let mut z = vec![self.b; m];
            for (j, &wj) in self.w.iter().enumerate() {
                if wj != 0.0 {
                    for (z, &x) in z.iter_mut().zip(&self.columns[j]) {
                        *z += wj * x as f64;
                    }
                }
            }
            self.z = z;
            if largest_change < 1e-9 {
                break;
            }
        }
    }
}

fn soft_threshold(v: f64, lambda: f64) -> f64 {
    if v > lambda {
        v - lambda
    } else if v < -lambda {
        v + lambda
    } else {
        0.0
    }
}
