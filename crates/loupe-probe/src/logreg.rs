//! Class-balanced L2 logistic regression, the probe's classifier, fitted by Newton's method with a
//! backtracking line search. It minimises scikit-learn's objective for
//! `LogisticRegression(C, class_weight="balanced")`:
//!
//! ```text
//! C · Σᵢ sᵢ · log(1 + exp(−(2yᵢ − 1)(xᵢ·w + b)))  +  ½‖w‖²        (b not penalised)
//! ```
//!
//! with `sᵢ = n / (2·n_class(yᵢ))`, so the two classes weigh the same. Probes have few features
//! (k ≤ 256) and many examples, so the (k+1)² Hessian is cheap to solve and Newton converges in a
//! handful of steps to the exact optimum (checked against scikit-learn in `tests/sklearn.rs`).

use candle_core::{DType, Device, Tensor};

use crate::Result;

/// The examples a regression is fitted on: `rows` × `cols`, row-major.
pub struct Design {
    /// Examples (rows).
    pub rows: usize,
    /// Features per example (columns).
    pub cols: usize,
    /// The values, row-major: `data[i * cols + j]`.
    pub data: Vec<f64>,
}

impl Design {
    /// A design of `rows` × `cols` from row-major `data`; panics unless `data.len() == rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Design {
        assert_eq!(data.len(), rows * cols);
        Design { rows, cols, data }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The first `k` columns.
    pub fn prefix(&self, k: usize) -> Design {
        assert!(k <= self.cols);
        let data = self
            .data
            .chunks(self.cols.max(1))
            .flat_map(|row| &row[..k])
            .copied()
            .collect();
        Design::new(self.rows, k, data)
    }

    /// `X·w + b` for every row.
    pub fn margins(&self, w: &[f64], b: f64) -> Vec<f64> {
        (0..self.rows).map(|i| b + dot(self.row(i), w)).collect()
    }
}

/// A fitted regression.
#[derive(Clone, Debug)]
pub struct Fit {
    /// One weight per column of the design.
    pub weights: Vec<f64>,
    /// The intercept (not penalised).
    pub bias: f64,
    /// scikit-learn's objective (above) at the solution.
    pub objective: f64,
    /// The class-balanced mean log loss `Σ sᵢℓᵢ / Σ sᵢ` at the start and after each Newton step:
    /// the training curve.
    pub losses: Vec<f64>,
    /// Whether the Newton decrement fell below the tolerance (rather than the step limit).
    pub converged: bool,
}

/// Per-example weights that make both classes weigh half: `n / (2·n_class)`.
pub fn balanced_weights(labels: &[bool]) -> Vec<f64> {
    let n = labels.len() as f64;
    let positives = labels.iter().filter(|&&y| y).count() as f64;
    let (w_pos, w_neg) = (n / (2.0 * positives), n / (2.0 * (n - positives)));
    labels.iter().map(|&y| if y { w_pos } else { w_neg }).collect()
}

const MAX_NEWTON_STEPS: usize = 100;
/// Stop when half the Newton decrement (the predicted decrease of the objective) is below this
/// fraction of the objective.
const TOLERANCE: f64 = 1e-13;
/// From this many features on, the Hessian is one matrix product (candle's gemm) rather than a
/// loop over rows.
const GEMM_FROM_COLS: usize = 17;

/// Fits the regression to `labels` with per-example `weights` (see [`balanced_weights`]),
/// starting from `start` (weights, bias) or from zero.
pub fn fit(
    x: &Design,
    labels: &[bool],
    weights: &[f64],
    c: f64,
    start: Option<(&[f64], f64)>,
) -> Result<Fit> {
    assert_eq!(labels.len(), x.rows);
    assert_eq!(weights.len(), x.rows);
    let k = x.cols;
    let (mut w, mut b) = match start {
        Some((w, b)) => (w.to_vec(), b),
        None => (vec![0.0; k], 0.0),
    };
    let total_weight: f64 = weights.iter().sum();
    let objective = |loss: f64, w: &[f64]| c * loss + 0.5 * dot(w, w);
    // For wide designs the Hessian is Xᵀ·diag(d)·X through gemm, in f32 (twice as fast as f64):
    // Newton needs the Hessian only approximately, while the gradient, the objective and the
    // convergence test stay f64, so the optimum is the same. The tensor is made once.
    let tensor = if k >= GEMM_FROM_COLS {
        Some(Tensor::from_slice(&x.data, (x.rows, k), &Device::Cpu)?.to_dtype(DType::F32)?)
    } else {
        None
    };

    let mut z = x.margins(&w, b);
    let (mut loss, mut p) = evaluate(&z, labels, weights);
    let mut j = objective(loss, &w);
    let mut losses = vec![loss / total_weight];
    let mut converged = false;
    for _ in 0..MAX_NEWTON_STEPS {
        // Gradient and Hessian of the objective in (w, b); b is the last coordinate.
        let mut residual = vec![0.0; x.rows]; // C·sᵢ·(pᵢ − yᵢ)
        let mut curvature = vec![0.0; x.rows]; // C·sᵢ·pᵢ·(1 − pᵢ)
        for i in 0..x.rows {
            residual[i] = c * weights[i] * (p[i] - if labels[i] { 1.0 } else { 0.0 });
            curvature[i] = c * weights[i] * p[i] * (1.0 - p[i]);
        }
        let n = k + 1;
        let mut gradient = vec![0.0; n];
        let mut hessian = vec![0.0; n * n];
        for i in 0..x.rows {
            let row = x.row(i);
            for a in 0..k {
                gradient[a] += residual[i] * row[a];
                hessian[a * n + k] += curvature[i] * row[a];
            }
            gradient[k] += residual[i];
            hessian[k * n + k] += curvature[i];
        }
        match &tensor {
            Some(t) => {
                let d = Tensor::from_slice(&curvature, (x.rows, 1), &Device::Cpu)?.to_dtype(DType::F32)?;
                let xtdx = t
                    .t()?
                    .matmul(&t.broadcast_mul(&d)?)?
                    .to_dtype(DType::F64)?
                    .to_vec2::<f64>()?;
                for a in 0..k {
                    hessian[a * n..a * n + k].copy_from_slice(&xtdx[a]);
                }
            }
            None => {
                for (i, &d) in curvature.iter().enumerate() {
                    let row = x.row(i);
                    for a in 0..k {
                        let da = d * row[a];
                        for bb in a..k {
                            hessian[a * n + bb] += da * row[bb];
                        }
                    }
                }
            }
        }
        for a in 0..k {
            gradient[a] += w[a];
            hessian[a * n + a] += 1.0;
            for bb in 0..a {
                hessian[a * n + bb] = hessian[bb * n + a];
            }
            hessian[k * n + a] = hessian[a * n + k];
        }
        let step = cholesky_solve(hessian, n, &gradient);
        let decrement = dot(&gradient, &step);
        if decrement / 2.0 <= TOLERANCE * j.abs().max(1.0) {
            converged = true;
            break;
        }
        // Backtracking (Armijo) along the Newton direction; margins move linearly. The point
        // accepted brings its loss and probabilities to the next step.
        let dz = x.margins(&step[..k], step[k]);
        let mut t = 1.0;
        let accepted = loop {
            let z_new: Vec<f64> = z.iter().zip(&dz).map(|(z, d)| z - t * d).collect();
            let w_new: Vec<f64> = w.iter().zip(&step).map(|(w, d)| w - t * d).collect();
            let (loss_new, p_new) = evaluate(&z_new, labels, weights);
            let j_new = objective(loss_new, &w_new);
            if j_new <= j - 1e-4 * t * decrement {
                break Some((z_new, p_new, w_new, loss_new, j_new));
            }
            t *= 0.5;
            if t < 1e-12 {
                break None;
            }
        };
        let Some((z_new, p_new, w_new, loss_new, j_new)) = accepted else {
            // No decrease is possible any more: the objective is flat to rounding.
            converged = true;
            break;
        };
        b -= t * step[k];
        (z, p, w, loss, j) = (z_new, p_new, w_new, loss_new, j_new);
        losses.push(loss / total_weight);
    }
    Ok(Fit {
        weights: w,
        bias: b,
        objective: j,
        losses,
        converged,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The logistic function `1 / (1 + e^−z)`, computed without overflow for large |z|.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The weighted log loss `Σ sᵢ·log(1 + exp(−(2yᵢ − 1)zᵢ))` and every `pᵢ = σ(zᵢ)`, sharing one
/// `exp(−|zᵢ|)` per example (without overflow for any z).
fn evaluate(z: &[f64], labels: &[bool], weights: &[f64]) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let p = z
        .iter()
        .zip(labels)
        .zip(weights)
        .map(|((&z, &y), &s)| {
            let e = (-z.abs()).exp();
            // log(1 + exp(−m)) for margin m = ±z: ln(1 + e) + max(−m, 0).
            let m = if y { z } else { -z };
            loss += s * (e.ln_1p() + (-m).max(0.0));
            if z >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            }
        })
        .collect();
    (loss, p)
}

/// Solves `A·s = g` for a symmetric positive definite `A` (n × n, row-major) by Cholesky.
fn cholesky_solve(mut a: Vec<f64>, n: usize, g: &[f64]) -> Vec<f64> {
    // A = L·Lᵀ, L stored in the lower triangle of `a`. The L2 term keeps A positive definite; a
    // pivot lost to rounding (perfectly collinear neurons) is clamped rather than failing.
    for col in 0..n {
        let mut pivot = a[col * n + col];
        for p in 0..col {
            pivot -= a[col * n + p] * a[col * n + p];
        }
        let pivot = pivot.max(1e-12).sqrt();
        a[col * n + col] = pivot;
        for row in col + 1..n {
            let mut v = a[row * n + col];
            for p in 0..col {
                v -= a[row * n + p] * a[col * n + p];
            }
            a[row * n + col] = v / pivot;
        }
    }
    // L·u = g, then Lᵀ·s = u.
    let mut u = g.to_vec();
    for row in 0..n {
        for p in 0..row {
            u[row] -= a[row * n + p] * u[p];
        }
        u[row] /= a[row * n + row];
    }
    for row in (0..n).rev() {
        for p in row + 1..n {
            u[row] -= a[p * n + row] * u[p];
        }
        u[row] /= a[row * n + row];
    }
    u
}
