//! Activations held in memory for probing: one row per example (a token, or a document's mean
//! token), one column per neuron, and the per-neuron statistics the rankings and the optional
//! standardisation need.

use rayon::prelude::*;

use crate::logreg::Design;

/// `rows` × `cols` f32, row-major.
pub struct Matrix {
    /// Examples (rows).
    pub rows: usize,
    /// Neurons (columns): the hook's width.
    pub cols: usize,
    /// The values, row-major: `data[i * cols + j]`.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix of `rows` × `cols` from row-major `data`; panics unless `data.len() == rows * cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Matrix {
        assert_eq!(data.len(), rows * cols);
        Matrix { rows, cols, data }
    }

    /// Row `i`, `cols` values.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Per-class sums and sums of squares of every column over `rows` (labels aligned with them),
    /// accumulated in f64.
    pub fn class_moments(&self, rows: &[usize], labels: &[bool]) -> ClassMoments {
        let cols = self.cols;
        let empty = || ClassMoments {
            count: [0.0; 2],
            sum: [vec![0.0; cols], vec![0.0; cols]],
            sum_sq: [vec![0.0; cols], vec![0.0; cols]],
        };
        // Fixed blocks of rows, summed in block order: the result does not depend on the threads.
        let partials: Vec<ClassMoments> = rows
            .par_chunks(ROWS_PER_TASK)
            .zip(labels.par_chunks(ROWS_PER_TASK))
            .map(|(rows, labels)| {
                let mut m = empty();
                for (&r, &y) in rows.iter().zip(labels) {
                    let c = y as usize;
                    m.count[c] += 1.0;
                    let [sum, sum_sq] = [&mut m.sum[c], &mut m.sum_sq[c]];
                    accumulate_moments(self.row(r), sum, sum_sq);
                }
                m
            })
            .collect();
        let mut total = empty();
        for m in partials {
            for c in 0..2 {
                total.count[c] += m.count[c];
                total.sum[c].iter_mut().zip(&m.sum[c]).for_each(|(a, b)| *a += b);
                total.sum_sq[c]
                    .iter_mut()
                    .zip(&m.sum_sq[c])
                    .for_each(|(a, b)| *a += b);
            }
        }
        total
    }

    /// The columns `neurons` of `rows`, standardised when `standardization` is given, as a
    /// regression design.
    pub fn design(
        &self,
        rows: &[usize],
        neurons: &[usize],
        standardization: Option<&Standardization>,
    ) -> Design {
        let mut data = Vec::with_capacity(rows.len() * neurons.len());
        for &r in rows {
            let row = self.row(r);
            for &j in neurons {
                data.push(match standardization {
                    Some(s) => s.apply(j, row[j]),
                    None => row[j] as f64,
                });
            }
        }
        Design::new(rows.len(), neurons.len(), data)
    }
}

/// Rows per parallel task of [`Matrix::class_moments`].
const ROWS_PER_TASK: usize = 1024;

/// `sum += row`, `sum_sq += row²`, in f64, compiled for the CPU's widest vectors.
#[multiversion::multiversion(targets = "simd")]
fn accumulate_moments(row: &[f32], sum: &mut [f64], sum_sq: &mut [f64]) {
    for ((&v, s), q) in row.iter().zip(sum.iter_mut()).zip(sum_sq.iter_mut()) {
        let v = v as f64;
        *s += v;
        *q += v * v;
    }
}

/// Sums per class (index 0: negatives, 1: positives) for every column.
pub struct ClassMoments {
    /// Examples per class.
    pub count: [f64; 2],
    /// `sum[class][column]`: the sum of the column's values over the class's examples.
    pub sum: [Vec<f64>; 2],
    /// `sum_sq[class][column]`: the sum of their squares.
    pub sum_sq: [Vec<f64>; 2],
}

impl ClassMoments {
    /// The mean of column `j` over class `class` (0 or 1); NaN when the class is empty.
    pub fn mean(&self, class: usize, j: usize) -> f64 {
        self.sum[class][j] / self.count[class]
    }

    /// Mean and standard deviation of every column over both classes.
    pub fn standardization(&self) -> Standardization {
        let n = self.count[0] + self.count[1];
        let cols = self.sum[0].len();
        let mut mean = vec![0.0; cols];
        let mut std = vec![0.0; cols];
        for j in 0..cols {
            let m = (self.sum[0][j] + self.sum[1][j]) / n;
            let var = ((self.sum_sq[0][j] + self.sum_sq[1][j]) / n - m * m).max(0.0);
            mean[j] = m;
            // A constant neuron keeps its scale rather than dividing by zero.
            std[j] = if var > 0.0 { var.sqrt() } else { 1.0 };
        }
        Standardization { mean, std }
    }
}

/// Per-neuron mean and standard deviation over the training examples: `(x − mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardization {
    /// Mean of each neuron (column), indexed by column.
    pub mean: Vec<f64>,
    /// Standard deviation of each neuron; 1 for a constant neuron, so it is never 0.
    pub std: Vec<f64>,
}

impl Standardization {
    /// The standardised value `(v − mean[j]) / std[j]` of value `v` of column `j`.
    pub fn apply(&self, j: usize, v: f32) -> f64 {
        (v as f64 - self.mean[j]) / self.std[j]
    }
}
