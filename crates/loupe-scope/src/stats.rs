//! The statistics a comparison over prompts needs: a bootstrap interval for a fraction, the exact
//! McNemar test for two amplifiers judged on the same prompts, and Holm's correction for testing
//! many pairs at once.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Resamples of [`bootstrap_interval`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// The 95% percentile bootstrap interval of the fraction of `outcomes` that are true: the prompts
/// are resampled with replacement `resamples` times (seeded), and the 2.5th and 97.5th
/// percentiles of the resampled fractions returned. `(0, 0)` for no outcomes.
pub fn bootstrap_interval(outcomes: &[bool], resamples: usize, seed: u64) -> (f64, f64) {
    let n = outcomes.len();
    if n == 0 || resamples == 0 {
        return (0.0, 0.0);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fractions: Vec<f64> = (0..resamples)
        .map(|_| (0..n).filter(|_| outcomes[rng.random_range(0..n)]).count() as f64 / n as f64)
        .collect();
    fractions.sort_by(f64::total_cmp);
    let at = |q: f64| fractions[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
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
    let n = only_a + only_b;
    let tail: f64 = (0..=only_a.min(only_b)).map(|k| binomial_half(n, k)).sum();
    (only_a, only_b, (2.0 * tail).min(1.0))
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
}
