//! loupe-scope's statistics against scipy and statsmodels, on the cases
//! `scripts/make-stats-fixture.py` wrote once into `tests/fixtures/stats.json` (its provenance is
//! in the script).

use loupe_scope::stats::{bootstrap_mean_interval, holm, mcnemar_exact, sign_test, BOOTSTRAP_RESAMPLES};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/stats.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn count(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

#[test]
fn mcnemar_matches_statsmodels_exact_test() {
    for case in fixture()["mcnemar"].as_array().unwrap() {
        let (only_a, only_b) = (count(&case["only_a"]), count(&case["only_b"]));
        // Paired outcomes with those discordant counts, and a few concordant pairs.
        let mut a = vec![true; only_a];
        let mut b = vec![false; only_a];
        a.extend(vec![false; only_b]);
        b.extend(vec![true; only_b]);
        a.extend([true, false, true]);
        b.extend([true, false, true]);
        let (x, y, p) = mcnemar_exact(&a, &b);
        assert_eq!((x, y), (only_a, only_b));
        let expected = case["p"].as_f64().unwrap();
        assert!(
            (p - expected).abs() <= 1e-12 * expected.max(1e-300),
            "{case}: {p}"
        );
    }
}

#[test]
fn the_sign_test_matches_scipy_binomtest() {
    for case in fixture()["sign"].as_array().unwrap() {
        let (wins, losses) = (count(&case["wins"]), count(&case["losses"]));
        let mut a = vec![1.0; wins];
        let mut b = vec![0.0; wins];
        a.extend(vec![0.0; losses]);
        b.extend(vec![1.0; losses]);
        a.push(0.5); // a tie, left out
        b.push(0.5);
        let (w, l, p) = sign_test(&a, &b);
        assert_eq!((w, l), (wins, losses));
        let expected = case["p"].as_f64().unwrap();
        assert!(
            (p - expected).abs() <= 1e-10 * expected.max(1e-300),
            "{case}: {p}"
        );
    }
}

#[test]
fn holm_matches_statsmodels_multipletests() {
    for case in fixture()["holm"].as_array().unwrap() {
        let adjusted = holm(&floats(&case["p"]));
        for (got, expected) in adjusted.iter().zip(floats(&case["adjusted"])) {
            assert!((got - expected).abs() < 1e-12, "{case}: {adjusted:?}");
        }
    }
}

#[test]
fn bootstrap_intervals_match_scipy_within_the_error_of_2000_resamples() {
    for case in fixture()["bootstrap"].as_array().unwrap() {
        let values = floats(&case["values"]);
        let expected = floats(&case["interval"]);
        let (step, sd) = (case["step"].as_f64().unwrap(), case["sd"].as_f64().unwrap());
        // A 2.5% quantile from 2000 draws has a standard error of about 0.06 σ of the resampled
        // means; four of those, and one step of the possible means for 0/1 outcomes (scipy
        // interpolates between order statistics, loupe takes the nearest).
        let tolerance = step + 0.25 * sd + 1e-9;
        for seed in 0..4 {
            let (lo, hi) = bootstrap_mean_interval(&values, BOOTSTRAP_RESAMPLES, seed);
            assert!(
                (lo - expected[0]).abs() <= tolerance && (hi - expected[1]).abs() <= tolerance,
                "seed {seed}: ({lo}, {hi}) against scipy's {expected:?} (tolerance {tolerance})"
            );
        }
    }
}
