"""A loader of autotrain's HMM JSON layout (docs/hmm.md, "The model as
JSON") written from the documentation alone, with numpy: it runs the
online forward filter over a feature table and checks it reproduces the
posteriors `autotrain models posteriors` wrote (1e-9).

    python3 tests/interop/hmm_loader.py MODEL.json FEATURES.csv POSTERIORS.csv

Prints one JSON line: rows, max absolute difference (probabilities and
log-likelihoods), ok."""

import json
import math
import sys

import numpy as np
import pandas as pd


def load(path):
    m = json.load(open(path))
    h = m["hmm"]
    k, d = h["k"], h["d"]
    model = {
        "columns": m["columns"],
        "k": k,
        "d": d,
        "full": h["covariance"] == "full",
        "start": np.array(h["start"]),
        "trans": np.array(h["trans"]).reshape(k, k),
        "means": np.array(h["means"]).reshape(k, d),
        "covars": np.array(h["covars"]).reshape((k, d, d) if h["covariance"] == "full" else (k, d)),
        "scaling": [(s["mean"], s["std"]) for s in m.get("scaling", [])],
    }
    return model


def log_density(m, x, s):
    d = m["d"]
    diff = x - m["means"][s]
    if m["full"]:
        cov = m["covars"][s]
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, diff)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        return -0.5 * (d * math.log(2 * math.pi) + log_det) - 0.5 * float(z @ z)
    var = m["covars"][s]
    return -0.5 * (d * math.log(2 * math.pi) + np.log(var).sum()) - 0.5 * float((diff * diff / var).sum())


def filter_rows(m, rows):
    alpha = None
    for x in rows:
        if m["scaling"]:
            x = np.array([(v - mu) / sd for v, (mu, sd) in zip(x, m["scaling"])])
        log_b = np.array([log_density(m, x, s) for s in range(m["k"])])
        shift = log_b.max()
        b = np.exp(log_b - shift)
        prior = m["start"] if alpha is None else alpha @ m["trans"]
        joint = prior * b
        total = joint.sum()
        if total == 0.0:
            joint = b / m["k"]
            total = joint.sum()
        alpha = joint / total
        yield alpha, math.log(total) + shift


def main(model_path, features_path, posteriors_path):
    m = load(model_path)
    table = pd.read_csv(features_path, float_precision="round_trip")
    rows = table[m["columns"]].dropna().to_numpy(dtype=np.float64)
    want = pd.read_csv(posteriors_path, float_precision="round_trip")
    got = list(filter_rows(m, rows))
    probs = np.array([p for p, _ in got])
    logliks = np.array([l for _, l in got])
    cols = [f"p{s}" for s in range(m["k"])]
    ok = len(got) == len(want) and len(got) > 0
    worst = float("inf")
    if ok:
        worst = max(float(np.abs(probs - want[cols].to_numpy()).max()),
                    float(np.abs(logliks - want["loglik"].to_numpy()).max()))
        ok = worst <= 1e-9
    print(json.dumps({"rows": len(got), "expected": len(want), "max_abs_diff": worst, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
