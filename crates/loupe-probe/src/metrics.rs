//! Held-out metrics of a binary probe, defined as scikit-learn defines them (checked against it in
//! `tests/sklearn.rs`): a token is predicted positive when its score (the logit) is above 0.

use serde::{Deserialize, Serialize};

/// Binary classification metrics of a probe's logits against the truth, as scikit-learn computes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The headline figure: 2·TP / (2·TP + FP + FN), 0 when there is nothing to find or predict.
    pub f1: f64,
    /// Matthews correlation coefficient; 0 when a row or column of the confusion matrix is empty.
    pub mcc: f64,
    /// TP / (TP + FP); 0 when nothing is predicted positive.
    pub precision: f64,
    /// TP / (TP + FN); 0 when there are no positives.
    pub recall: f64,
    /// (TP + TN) / all examples.
    pub accuracy: f64,
    /// Area under the ROC curve of the scores (ties count one half); NaN with a single class.
    pub roc_auc: f64,
    /// Examples whose truth is positive.
    pub positives: usize,
    /// Examples whose truth is negative.
    pub negatives: usize,
}

impl Metrics {
    /// `labels[i]` is the truth of example i and `scores[i]` the probe's logit for it.
    pub fn compute(labels: &[bool], scores: &[f64]) -> Metrics {
        assert_eq!(labels.len(), scores.len());
        let (mut tp, mut fp, mut tn, mut fn_) = (0f64, 0f64, 0f64, 0f64);
        for (&y, &s) in labels.iter().zip(scores) {
            match (y, s > 0.0) {
                (true, true) => tp += 1.0,
                (false, true) => fp += 1.0,
                (false, false) => tn += 1.0,
                (true, false) => fn_ += 1.0,
            }
        }
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mcc_denominator = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
        Metrics {
            f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
            mcc: ratio(tp * tn - fp * fn_, mcc_denominator),
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            accuracy: ratio(tp + tn, tp + fp + tn + fn_),
            roc_auc: roc_auc(labels, scores),
            positives: (tp + fn_) as usize,
            negatives: (tn + fp) as usize,
        }
    }
}

/// ROC-AUC as the Mann-Whitney statistic: the chance that a random positive scores above a random
/// negative, ties counting one half (the same number as the trapezoidal area sklearn computes).
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|&&y| y).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    // Sum of the (tie-averaged, 1-based) ranks of the positives.
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end].iter().filter(|&&i| labels[i]).count();
        positive_rank_sum += average_rank * tied_positives as f64;
        start = end;
    }
    (positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_confusion_matrix() {
        // TP 2, FP 1, TN 2, FN 1.
        let labels = [true, true, true, false, false, false];
        let scores = [2.0, 1.0, -1.0, 0.5, -2.0, -3.0];
        let m = Metrics::compute(&labels, &scores);
        assert_eq!((m.precision, m.recall, m.f1), (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0));
        assert!((m.mcc - 1.0 / 3.0).abs() < 1e-12);
        // Pairs (positive above negative): 2 ranks above all 3; 1.0 above 3; -1.0 above 2.
        assert!((m.roc_auc - 8.0 / 9.0).abs() < 1e-12);
    }
}
