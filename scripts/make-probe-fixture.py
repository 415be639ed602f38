"""Reference numbers made by scikit-learn, so that loupe-probe can prove its metrics, ANOVA F and
logistic regression agree with sklearn's.

Writes crates/loupe-probe/tests/fixtures/sklearn-probe.json (about 165 KB) with three lists:

    metrics    y_true, y_score, y_pred = (y_score > 0), and sklearn.metrics' f1_score,
               matthews_corrcoef, precision_score, recall_score (zero_division=0),
               accuracy_score and roc_auc_score (on y_score). Cases: typical, tied scores
               (rounded to 0.1), imbalanced (5% positive), nothing predicted positive,
               perfect separation.
    f_classif  x (rows), y, and sklearn.feature_selection.f_classif's per-column F.
    logreg     x, y, c, and LogisticRegression(C=c, class_weight="balanced",
               fit_intercept=True, solver="lbfgs" or "newton-cg", tol=1e-12) coef and
               intercept, the balanced per-row sample_weight n / (2 * n_class_of_row), and
               objective = c * sum_i s_i * log(1 + exp(-(2 y_i - 1)(x_i . w + b))) + |w|^2 / 2
               at sklearn's solution (intercept not penalised). For each case the solver
               whose solution has the smaller gradient norm of that objective is kept, and
               the script asserts that norm is < 1e-8.

All inputs are drawn from numpy's default_rng(20240611) and x is rounded to 6 decimals before
fitting, so the stored inputs are exactly what sklearn saw.

Provenance. The fixture was made once by this script with scikit-learn 1.9.1, numpy 2.4.6
(scipy 1.17.1) on Python 3.11.7. Run from the repository root in a throwaway environment:

    python3 -m venv /tmp/probeenv
    /tmp/probeenv/bin/pip install numpy==2.4.6 scikit-learn==1.9.1 scipy==1.17.1
    /tmp/probeenv/bin/python scripts/make-probe-fixture.py
"""

import json
import platform
from pathlib import Path

import numpy as np
import sklearn
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/loupe-probe/tests/fixtures/sklearn-probe.json"
rng = np.random.default_rng(20240611)


def labels(n, frac_pos):
    y = np.zeros(n, dtype=np.int64)
    y[rng.choice(n, size=round(n * frac_pos), replace=False)] = 1
    return y


def metric_case(name, y, score):
    pred = (score > 0).astype(np.int64)
    return {
        "name": name,
        "y_true": y.tolist(),
        "y_score": score.tolist(),
        "y_pred": pred.tolist(),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "mcc": float(matthews_corrcoef(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
        "roc_auc": float(roc_auc_score(y, score)),
    }


def metrics_cases():
    y = labels(300, 0.3)
    typical = rng.normal(size=300) + 1.2 * y - 0.6
    y2 = labels(200, 0.4)
    tied = np.round(rng.normal(size=200) * 0.4 + 0.3 * y2 - 0.1, 1)
    y3 = labels(400, 0.05)
    imbalanced = rng.normal(size=400) + 2.0 * y3 - 1.5
    y4 = labels(100, 0.3)
    none_pos = -np.abs(rng.normal(size=100)) - 0.5 + 0.4 * y4
    y5 = labels(60, 0.5)
    perfect = np.where(y5 == 1, 0.1 + rng.random(60), -0.1 - rng.random(60))
    return [
        metric_case("typical", y, typical),
        metric_case("tied-scores", y2, tied),
        metric_case("imbalanced", y3, imbalanced),
        metric_case("none-predicted-positive", y4, none_pos),
        metric_case("perfect", y5, perfect),
    ]


def f_classif_cases():
    out = []
    for name, n in [("six-columns", 200), ("small", 30)]:
        y = labels(n, 0.35)
        x = rng.normal(size=(n, 6))
        x[:, 0] += 1.0 * y  # strongly shifted
        x[:, 1] += 0.2 * y  # weakly shifted
        x[:, 2] = 3.0 * x[:, 2] - 0.5 * y  # scaled, shifted down
        x[:, 4] = 5.0 + 1e-3 * x[:, 4]  # nearly constant, not constant
        x[:, 5] = 0.5 * x[:, 0] + x[:, 5]  # correlated with column 0
        x = np.round(x, 6)
        f, _ = f_classif(x, y)
        out.append({"name": name, "x": x.tolist(), "y": y.tolist(), "f": f.tolist()})
    return out


def balanced_weights(y):
    n = len(y)
    counts = np.bincount(y, minlength=2)
    return n / (2.0 * counts[y])


def objective_and_grad(x, y, s, c, w, b):
    t = 2.0 * y - 1.0
    z = x @ w + b
    obj = c * np.sum(s * np.logaddexp(0.0, -t * z)) + 0.5 * w @ w
    # d/dz log(1 + exp(-t z)) = -t * sigmoid(-t z)
    dz = c * s * (-t) * np.exp(-np.logaddexp(0.0, t * z))
    grad = np.concatenate([x.T @ dz + w, [dz.sum()]])
    return float(obj), float(np.linalg.norm(grad))


def fit(name, x, y, c):
    x = np.round(x, 6)
    s = balanced_weights(y)
    best = None
    for solver in ["lbfgs", "newton-cg"]:
        m = LogisticRegression(C=c, class_weight="balanced", fit_intercept=True,
                               solver=solver, tol=1e-12, max_iter=100000)
        m.fit(x, y)
        w, b = m.coef_[0], float(m.intercept_[0])
        obj, gnorm = objective_and_grad(x, y, s, c, w, b)
        if best is None or gnorm < best[0]:
            best = (gnorm, solver, w, b, obj)
    gnorm, solver, w, b, obj = best
    assert gnorm < 1e-8, f"{name}: gradient norm {gnorm:.3e} at sklearn's solution"
    print(f"logreg {name}: solver {solver}, |grad| {gnorm:.2e}")
    return {"name": name, "x": x.tolist(), "y": y.tolist(), "c": c, "coef": w.tolist(),
            "intercept": b, "sample_weight": s.tolist(), "objective": obj}


def logreg_cases():
    out = []
    y = labels(400, 0.25)
    x = rng.normal(size=(400, 3)) + np.outer(y, [1.0, -0.5, 0.0])
    out.append(fit("three-columns", x, y, 1.0))

    y = labels(300, 0.4)
    x = rng.normal(size=(300, 8)) * np.linspace(0.5, 3.0, 8) + np.outer(y, np.linspace(1, -1, 8))
    out.append(fit("strong-l2", x, y, 0.01))

    y = labels(500, 0.1)
    x = rng.normal(size=(500, 1)) + 1.5 * y[:, None] + 2.0
    out.append(fit("one-column-imbalanced", x, y, 1.0))

    y = labels(200, 0.3)
    base = rng.normal(size=(200, 5))
    x = np.repeat(base, 4, axis=1) + 0.1 * rng.normal(size=(200, 20))
    x += np.outer(y, rng.normal(size=20) * 0.5)
    out.append(fit("correlated-columns", x, y, 0.1))

    y = labels(200, 0.5)
    x = rng.normal(size=(200, 2)) * 0.5
    x[:, 0] += np.where(y == 1, 1.5, -1.5)
    out.append(fit("separable", x, y, 1.0))
    return out


def main():
    fixture = {
        "provenance": {"script": "scripts/make-probe-fixture.py", "sklearn": sklearn.__version__,
                       "numpy": np.__version__, "python": platform.python_version()},
        "metrics": metrics_cases(),
        "f_classif": f_classif_cases(),
        "logreg": logreg_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f)
        f.write("\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
