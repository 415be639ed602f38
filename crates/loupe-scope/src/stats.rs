//! The statistics a comparison over prompts needs: a bootstrap interval for a fraction or a mean,
//! the exact McNemar test for two amplifiers judged on the same prompts (and the sign test, its
//! twin for paired scores), and Holm's correction for testing many pairs at once.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Resamples of [`bootstrap_interval`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The 95% percentile bootstrap interval of the fraction of `outcomes` that are true: the prompts
/// are resampled with replacement `resamples` times (seeded), and the 2.5th and 97.5th
/// percentiles of the resampled fractions returned. `(0, 0)` for no outcomes.
pub fn bootstrap_interval(outcomes: &[bool], resamples: usize, seed: u64) -> (f64, f64) {
    let values: Vec<f64> = outcomes.iter().map(|&o| if o { 1.0 } else { 0.0 }).collect();
    bootstrap_mean_interval(&values, resamples, seed)
}

/// The 95% percentile bootstrap interval of the mean of `values` (one per prompt), resampled as
/// [`bootstrap_interval`] resamples outcomes (the same draws for the same seed). `(0, 0)` for no
/// values.
pub fn bootstrap_mean_interval(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = values.len();
    if n == 0 || resamples == 0 {
        return (0.0, 0.0);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

/// The exact (binomial) McNemar test of two paired sets of outcomes (`a[i]` and `b[i]` on the same
/// prompt): `(only_a, only_b, p)`, where only_a counts prompts that `a` got and `b` did not, and p
/// is the two-sided probability, under "neither is better", of a split at least as lopsided:
/// `min(1, 2·P(X ≤ min(only_a, only_b)))` for X ~ Binomial(only_a + only_b, 1/2). p is 1 when the
/// two never disagree.
pub fn mcnemar_exact(a: &[bool], b: &[bool]) -> (usize, usize, f64) {
    assert_eq!(a.len(), b.len(), "paired outcomes");
    let only_a = a.iter().zip(b).filter(|(&x, &y)| x && !y).count();
    let only_b = a.iter().zip(b).filter(|(&x, &y)| !x && y).count();
    (only_a, only_b, two_sided_binomial(only_a, only_b))
}

/// The exact sign test of paired scores (`a[i]` and `b[i]` on the same prompt): `(wins, losses,
/// p)`, where wins counts prompts on which `a` scores higher, losses those on which `b` does (ties
/// are left out), and p is the two-sided binomial probability of [`mcnemar_exact`].
pub fn sign_test(a: &[f64], b: &[f64]) -> (usize, usize, f64) {
    assert_eq!(a.len(), b.len(), "paired scores");
    let wins = a.iter().zip(b).filter(|(x, y)| x > y).count();
    let losses = a.iter().zip(b).filter(|(x, y)| x < y).count();
    (wins, losses, two_sided_binomial(wins, losses))
}

/// `min(1, 2·P(X ≤ min(a, b)))` for X ~ Binomial(a + b, 1/2); 1 when a + b = 0.
fn two_sided_binomial(a: usize, b: usize) -> f64 {
    let n = a + b;
    let tail: f64 = (0..=a.min(b)).map(|k| binomial_half(n, k)).sum();
    (2.0 * tail).min(1.0)
}

/// P(X = k) for X ~ Binomial(n, 1/2), through logarithms so that large n do not overflow.
fn binomial_half(n: usize, k: usize) -> f64 {
    let ln_choose: f64 = (1..=k).map(|i| ((n - k + i) as f64).ln() - (i as f64).ln()).sum();
    (ln_choose - n as f64 * std::f64::consts::LN_2).exp()
}

/// Holm's step-down adjustment of `p` (in the input's order): the i-th smallest p is multiplied by
/// (m − i), and the adjusted values are made non-decreasing in that order and capped at 1. A
/// hypothesis is rejected at level α when its adjusted p is at most α; the chance of any false
/// rejection among all m stays at most α.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_is_the_two_sided_binomial_tail() {
        // 1 against 9 discordant prompts: 2·(C(10,0) + C(10,1)) / 2^10 = 22/1024.
        let a: Vec<bool> = (0..20).map(|i| !(1..10).contains(&i)).collect();
        let b: Vec<bool> = (0..20).map(|i| (1..10).contains(&i) || i >= 10).collect();
        let (only_a, only_b, p) = mcnemar_exact(&a, &b);
        assert_eq!((only_a, only_b), (1, 9));
        assert!((p - 22.0 / 1024.0).abs() < 1e-12, "{p}");
        // A balanced split, and no disagreement at all: p = 1.
        assert_eq!(mcnemar_exact(&[true, false], &[false, true]).2, 1.0);
        assert_eq!(mcnemar_exact(&[true, true], &[true, true]).2, 1.0);
        // 0 against 40: 2 / 2^40, without overflow.
        let (_, _, p) = mcnemar_exact(&[true; 40], &[false; 40]);
        assert!((p - 2.0 / 2f64.powi(40)).abs() < 1e-20, "{p}");
    }

    #[test]
    fn holm_multiplies_by_the_remaining_count_and_keeps_the_order() {
        // Sorted p: 0.01 (×4), 0.02 (×3), 0.03 (×2), 0.5 (×1).
        let adjusted = holm(&[0.03, 0.01, 0.5, 0.02]);
        let expected = [0.06, 0.04, 0.5, 0.06];
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{adjusted:?}");
        }
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
    }

    #[test]
    fn the_bootstrap_interval_brackets_the_fraction_and_narrows_with_more_prompts() {
        let few: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        let many: Vec<bool> = (0..2000).map(|i| i % 2 == 0).collect();
        let (lo, hi) = bootstrap_interval(&few, BOOTSTRAP_RESAMPLES, 1);
        assert!(lo < 0.5 && hi > 0.5 && lo >= 0.2 && hi <= 0.8, "({lo}, {hi})");
        let (lo_many, hi_many) = bootstrap_interval(&many, BOOTSTRAP_RESAMPLES, 1);
        assert!(hi_many - lo_many < (hi - lo) / 5.0, "({lo_many}, {hi_many})");
        assert_eq!(bootstrap_interval(&[true; 5], 100, 0), (1.0, 1.0));
    }

    #[test]
    fn the_mean_interval_of_zeros_and_ones_is_the_fraction_interval() {
        let outcomes: Vec<bool> = (0..30).map(|i| i % 3 == 0).collect();
        let values: Vec<f64> = outcomes.iter().map(|&o| f64::from(u8::from(o))).collect();
        assert_eq!(
            bootstrap_mean_interval(&values, BOOTSTRAP_RESAMPLES, 7),
            bootstrap_interval(&outcomes, BOOTSTRAP_RESAMPLES, 7)
        );
        assert_eq!(bootstrap_mean_interval(&[0.25; 4], 100, 0), (0.25, 0.25));
    }

    #[test]
    fn the_sign_test_leaves_ties_out_and_is_mcnemar_on_the_rest() {
        let a = [0.9, 0.1, 0.5, 0.7, 0.7];
        let b = [0.2, 0.3, 0.5, 0.1, 0.2];
        // wins at 0, 3, 4; a loss at 1; a tie at 2.
        let (wins, losses, p) = sign_test(&a, &b);
        assert_eq!((wins, losses), (3, 1));
        // 2·(C(4,0) + C(4,1)) / 2^4 = 10/16.
        assert!((p - 10.0 / 16.0).abs() < 1e-12, "{p}");
    }
}
