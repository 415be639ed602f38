"""Reference numbers made by scipy and statsmodels, so that loupe-scope's statistics (the exact
McNemar test, the sign test, Holm's correction, percentile bootstrap intervals) can be checked
against an independent implementation.

Writes crates/loupe-scope/tests/fixtures/stats.json with four lists:

    mcnemar    only_a, only_b (the discordant counts of two paired sets of outcomes) and
               statsmodels.stats.contingency_tables.mcnemar([[0, only_a], [only_b, 0]],
               exact=True).pvalue.
    sign       wins, losses and scipy.stats.binomtest(min(wins, losses), wins + losses, 0.5)
               .pvalue (two-sided): the exact sign test on paired scores, ties left out.
    holm       p and statsmodels.stats.multitest.multipletests(p, method="holm")[1].
    bootstrap  values (one per prompt: 0/1 outcomes or scores) and
               scipy.stats.bootstrap((values,), np.mean, method="percentile",
               confidence_level=0.95, n_resamples=200000, rng=default_rng(20261202))'s
               confidence interval, with `step`: the spacing of the possible resampled means
               (1/n for 0/1 outcomes, 0 for scores). loupe draws its own 2000 resamples with
               its own generator, so the test allows the Monte Carlo error of 2000 draws and,
               for 0/1 outcomes, one step (scipy interpolates between order statistics, loupe
               takes the nearest one).

All inputs are drawn from numpy's default_rng(20261202).

Provenance. The fixture was made once by this script with scipy 1.17.1, statsmodels 0.15.0,
numpy 2.4.6 on Python 3.11.7 (2026-12-02). Run from the repository root in a throwaway
environment:

    python3 -m venv /tmp/statsenv
    /tmp/statsenv/bin/pip install numpy==2.4.6 scipy==1.17.1 statsmodels==0.15.0
    /tmp/statsenv/bin/python scripts/make-stats-fixture.py
"""

import json
import pathlib

import numpy as np
import scipy
import scipy.stats
import statsmodels
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

rng = np.random.default_rng(20261202)

mcnemar_cases = []
for only_a, only_b in [(0, 0), (1, 9), (3, 3), (0, 40), (12, 5), (7, 19), (30, 31), (2, 14)]:
    p = mcnemar([[0, only_a], [only_b, 0]], exact=True).pvalue
    mcnemar_cases.append({"only_a": only_a, "only_b": only_b, "p": float(p)})

sign_cases = []
for _ in range(8):
    n = int(rng.integers(5, 40))
    wins = int(rng.integers(0, n + 1))
    losses = n - wins
    p = scipy.stats.binomtest(min(wins, losses), wins + losses, 0.5).pvalue
    sign_cases.append({"wins": wins, "losses": losses, "p": float(p)})

holm_cases = []
for m in [1, 2, 3, 6, 10]:
    p = np.round(rng.uniform(0, 0.2, size=m) ** 2, 8)
    holm_cases.append({"p": p.tolist(), "adjusted": multipletests(p, method="holm")[1].tolist()})
holm_cases.append({"p": [0.01, 0.01, 0.04, 0.5], "adjusted": multipletests([0.01, 0.01, 0.04, 0.5], method="holm")[1].tolist()})

bootstrap_cases = []
for n, fraction in [(20, 0.5), (40, 0.3), (40, 0.85), (12, 0.25)]:
    values = (rng.uniform(size=n) < fraction).astype(float)
    bootstrap_cases.append({"values": values.tolist(), "step": 1.0 / n})
for n in [12, 24, 40]:
    values = np.round(np.clip(rng.normal(0.1, 0.08, size=n), 0, 1), 6)
    bootstrap_cases.append({"values": values.tolist(), "step": 0.0})
for case in bootstrap_cases:
    values = np.array(case["values"])
    result = scipy.stats.bootstrap(
        (values,),
        np.mean,
        method="percentile",
        confidence_level=0.95,
        n_resamples=200000,
        rng=np.random.default_rng(20261202),
    )
    case["interval"] = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    # The standard deviation of the resampled means, for the tolerance of a 2000-draw estimate.
    case["sd"] = float(values.std() / np.sqrt(len(values)))

out = pathlib.Path("crates/loupe-scope/tests/fixtures/stats.json")
out.write_text(
    json.dumps(
        {
            "made_by": f"scripts/make-stats-fixture.py with scipy {scipy.__version__}, "
            f"statsmodels {statsmodels.__version__}, numpy {np.__version__}",
            "mcnemar": mcnemar_cases,
            "sign": sign_cases,
            "holm": holm_cases,
            "bootstrap": bootstrap_cases,
        },
        indent=1,
    )
    + "\n"
)
print(f"wrote {out}")
