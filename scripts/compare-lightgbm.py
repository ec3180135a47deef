#!/usr/bin/env python3
"""autotrain's gradient-boosted forecast beside LightGBM, like for like, in
one run: the same feature table, the same target (the absolute return of
the next bar), the same purged split (checked: the reference rows are the
same timestamps), the same reference set, and matched settings (200
rounds, learning rate 0.05, depth 5, L2 1, minimum hessian 20 per leaf,
256 bins, no sampling, 2 threads).

What still differs: LightGBM grows leaf-wise within the depth limit
(num_leaves 31), forust level-wise; their binning differs; LightGBM's
time is `train()` alone in this process, autotrain's is the whole
`autotrain fit gbdt` process (start, CSV parse, fit, scoring, output).

    pip install lightgbm==4.7.0 pandas
    cargo build --release -p autotrain
    python3 scripts/compare-lightgbm.py [--data data/bitfinex_BTCUSD_30m.csv]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ["lr", "ret_mean_20", "ret_std_20", "rsi_14", "rvol_20", "volume_z_20"]
SETTINGS = dict(iterations=200, learning_rate=0.05, max_depth=5, l2=1.0,
                min_leaf_weight=20.0, nbins=256, threads=2, seed=0)


def scores(pred, y):
    err = pred - y
    nz = y != 0
    sst = ((y - y.mean()) ** 2).sum()
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err ** 2).mean())),
        "mape": float(np.abs(err[nz] / y[nz]).mean()),
        "r2": float(1 - (err ** 2).sum() / sst),
        "rmsle": float(np.sqrt(((np.log1p(np.maximum(pred, 0)) - np.log1p(y)) ** 2).mean())),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "data/bitfinex_BTCUSD_30m.csv"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/autotrain"))
    ap.add_argument("--reference-fraction", type=float, default=0.2)
    args = ap.parse_args()
    import lightgbm as lgb

    tmp = tempfile.mkdtemp()
    table_path = os.path.join(tmp, "features.csv")
    pred_path = os.path.join(tmp, "predictions.csv")
    subprocess.run([args.binary, "features", "-i", args.data, "-o", table_path],
                   check=True, capture_output=True)

    started = time.perf_counter()
    out = subprocess.run(
        [args.binary, "fit", "gbdt", "-i", table_path, "--columns", ",".join(COLUMNS),
         "--target", "abs_return:1", "--reference-fraction", str(args.reference_fraction),
         "--iterations", str(SETTINGS["iterations"]),
         "--learning-rate", str(SETTINGS["learning_rate"]),
         "--max-depth", str(SETTINGS["max_depth"]), "--l2", str(SETTINGS["l2"]),
         "--min-leaf-weight", str(SETTINGS["min_leaf_weight"]),
         "--nbins", str(SETTINGS["nbins"]), "--threads", str(SETTINGS["threads"]),
         "--seed", str(SETTINGS["seed"]), "--predictions", pred_path, "--json"],
        check=True, capture_output=True, text=True)
    autotrain_seconds = time.perf_counter() - started
    report = json.loads(out.stdout)

    # The same rows: a target where the next bar's return exists, the last
    # fraction for reference, the one row before it purged.
    table = pd.read_csv(table_path, float_precision="round_trip")
    lr = table["lr"].to_numpy()
    target = np.abs(np.append(lr[1:], np.nan))
    usable = np.flatnonzero(~np.isnan(target))
    n_ref = int(round(len(usable) * args.reference_fraction))
    cut = len(usable) - n_ref
    train, ref = usable[:cut - 1], usable[cut:]
    ours = pd.read_csv(pred_path, float_precision="round_trip")
    assert (table["ts"].to_numpy()[ref] == ours["ts"].to_numpy()).all(), "different reference rows"
    assert len(train) == report["train_rows"], (len(train), report["train_rows"])
    x = table[COLUMNS].to_numpy(dtype=np.float64)

    params = dict(objective="regression", learning_rate=SETTINGS["learning_rate"],
                  max_depth=SETTINGS["max_depth"], num_leaves=31, lambda_l2=SETTINGS["l2"],
                  min_sum_hessian_in_leaf=SETTINGS["min_leaf_weight"], min_data_in_leaf=1,
                  max_bin=SETTINGS["nbins"] - 1, bagging_fraction=1.0, feature_fraction=1.0,
                  num_threads=SETTINGS["threads"], seed=SETTINGS["seed"], deterministic=True,
                  force_row_wise=True, verbose=-1)
    started = time.perf_counter()
    booster = lgb.train(params, lgb.Dataset(x[train], target[train]),
                        num_boost_round=SETTINGS["iterations"])
    lgb_seconds = time.perf_counter() - started
    lgb_scores = scores(booster.predict(x[ref]), target[ref])
    at_scores = {k: report["reference"][k] for k in ("mae", "rmse", "mape", "r2", "rmsle")}

    print(f"data {os.path.basename(args.data)}: {len(train)} train / {len(ref)} reference rows, "
          f"target |next-bar log return|, features {','.join(COLUMNS)}")
    print(f"settings {SETTINGS}")
    print(f"{'':12} {'seconds':>8} {'MAE':>10} {'RMSE':>10} {'MAPE':>8} {'R²':>8} {'RMSLE':>10}")
    for name, sec, s in [("LightGBM", lgb_seconds, lgb_scores),
                         ("autotrain", autotrain_seconds, at_scores)]:
        print(f"{name:12} {sec:8.3f} {s['mae']:10.6f} {s['rmse']:10.6f} {s['mape']:8.3f} "
              f"{s['r2']:8.4f} {s['rmsle']:10.6f}")
    ratio = at_scores["rmse"] / lgb_scores["rmse"]
    print(f"RMSE autotrain / LightGBM = {ratio:.4f} ({(ratio - 1) * 100:+.2f} %); "
          f"time autotrain (whole process) / LightGBM (train()) = "
          f"{autotrain_seconds / lgb_seconds:.2f}; autotrain fit alone {report['fit_seconds']:.3f} s")
    return 0 if ratio <= 1.02 else 1


if __name__ == "__main__":
    sys.exit(main())
