//! loupe-probe against scikit-learn: metrics, ANOVA F and the class-balanced L2 logistic
//! regression, on the fixture `scripts/make-probe-fixture.py` made once with scikit-learn 1.9.1
//! (provenance in the script and in the fixture's `provenance` field).

use loupe_probe::logreg::{balanced_weights, fit, Design};
use loupe_probe::matrix::Matrix;
use loupe_probe::metrics::Metrics;
use loupe_probe::rank::f_stat;
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sklearn-probe.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn labels(v: &Value) -> Vec<bool> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() == 1)
        .collect()
}

fn rows(v: &Value) -> (usize, usize, Vec<f64>) {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
    let cols = rows[0].len();
    (rows.len(), cols, rows.concat())
}

#[test]
fn metrics_equal_sklearn() {
    for case in fixture()["metrics"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let y = labels(&case["y_true"]);
        let scores = floats(&case["y_score"]);
        // The fixture's predictions are `score > 0`, as loupe's.
        let predicted: Vec<bool> = scores.iter().map(|&s| s > 0.0).collect();
        assert_eq!(predicted, labels(&case["y_pred"]), "{name}");
        let m = Metrics::compute(&y, &scores);
        for (what, ours) in [
            ("f1", m.f1),
            ("mcc", m.mcc),
            ("precision", m.precision),
            ("recall", m.recall),
            ("accuracy", m.accuracy),
            ("roc_auc", m.roc_auc),
        ] {
            let theirs = case[what].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-6,
                "{name} {what}: loupe {ours}, sklearn {theirs}"
            );
        }
    }
}

#[test]
fn anova_f_equals_sklearn_f_classif() {
    for case in fixture()["f_classif"].as_array().unwrap() {
        let (n, cols, data) = rows(&case["x"]);
        let x = Matrix::new(n, cols, data.iter().map(|&v| v as f32).collect());
        let y = labels(&case["y"]);
        let all: Vec<usize> = (0..n).collect();
        let ours = f_stat(&x, &all, &y);
        for (j, (&o, t)) in ours.iter().zip(floats(&case["f"])).enumerate() {
            // The fixture's x are f64 with 6 decimals; loupe holds activations as f32.
            assert!(
                (o - t).abs() <= 1e-4 * t.abs().max(1.0),
                "{} column {j}: loupe {o}, sklearn {t}",
                case["name"]
            );
        }
    }
}

#[test]
fn logistic_regression_reaches_sklearns_optimum() {
    for case in fixture()["logreg"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (n, cols, data) = rows(&case["x"]);
        let y = labels(&case["y"]);
        let c = case["c"].as_f64().unwrap();
        let weights = balanced_weights(&y);
        for (ours, theirs) in weights.iter().zip(floats(&case["sample_weight"])) {
            assert!(
                (ours - theirs).abs() < 1e-12,
                "{name}: sample weight {ours} vs {theirs}"
            );
        }
        let design = Design::new(n, cols, data);
        let result = fit(&design, &y, &weights, c, None).unwrap();
        assert!(result.converged, "{name}: did not converge");
        let objective = case["objective"].as_f64().unwrap();
        assert!(
            (result.objective - objective).abs() < 1e-4,
            "{name}: objective loupe {} vs sklearn {objective}",
            result.objective
        );
        // The optimum is unique (L2), so the solutions agree as well.
        for (j, (&w, t)) in result.weights.iter().zip(floats(&case["coef"])).enumerate() {
            assert!(
                (w - t).abs() < 1e-5 * t.abs().max(1.0),
                "{name}: coef {j} loupe {w} vs sklearn {t}"
            );
        }
        let b = case["intercept"].as_f64().unwrap();
        assert!(
            (result.bias - b).abs() < 1e-5 * b.abs().max(1.0),
            "{name}: intercept {} vs {b}",
            result.bias
        );
        // The training curve falls monotonically (a line search guards every step).
        assert!(
            result.losses.windows(2).all(|w| w[1] <= w[0]),
            "{name}: {:?}",
            result.losses
        );
    }
}
