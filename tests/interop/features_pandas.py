"""The feature contract checked against pandas.

Usage: features_pandas.py BARS.csv FEATURES.csv

Computes the bundled contract's features with pandas from the bar file
(definitions from processors/features/contract.toml) and compares them with
the table `autotrain features` wrote: the same cells must be present, and
present values must agree to 1e-9 relative. Exits 1 with the first
differences otherwise.
"""
import sys

import numpy as np
import pandas as pd

bars = pd.read_csv(sys.argv[1])
ours = pd.read_csv(sys.argv[2])
close, volume = bars["close"].astype(float), bars["volume"].astype(float)

lr = np.log(close / close.shift(1))
delta = close.diff()
gain, loss = delta.clip(lower=0), -delta.clip(upper=0)
avg_gain = gain.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
avg_loss = loss.ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
ret_std = lr.rolling(20).std()
vol_std = volume.rolling(20).std()

theirs = pd.DataFrame(
    {
        "lr": lr,
        "ema_12": close.ewm(span=12, adjust=False).mean(),
        "ema_26": close.ewm(span=26, adjust=False).mean(),
        "ret_mean_20": lr.rolling(20).mean(),
        "ret_std_20": ret_std,
        "rsi_14": 100 - 100 / (1 + avg_gain / avg_loss),
        "rvol_20": 100 * ret_std,
        "volume_z_20": (volume - volume.rolling(20).mean()) / vol_std.where(vol_std > 0),
    }
)
theirs = theirs.replace([np.inf, -np.inf], np.nan)

if len(ours) != len(theirs):
    sys.exit(f"{len(ours)} rows from autotrain, {len(theirs)} bars")
bad = []
for name in theirs.columns:
    a, b = ours[name].to_numpy(dtype=float), theirs[name].to_numpy(dtype=float)
    presence = np.isnan(a) != np.isnan(b)
    both = ~np.isnan(a) & ~np.isnan(b)
    close_enough = np.isclose(a[both], b[both], rtol=1e-9, atol=1e-12)
    if presence.any():
        i = int(np.argmax(presence))
        bad.append(f"{name}: presence differs first at row {i}: ours {a[i]} pandas {b[i]}")
    if not close_enough.all():
        idx = np.flatnonzero(both)[~close_enough][:3]
        bad.append(f"{name}: values differ at rows {idx.tolist()}: ours {a[idx]} pandas {b[idx]}")
if bad:
    sys.exit("\n".join(bad))
print(f"{len(ours)} rows x {len(theirs.columns)} features agree with pandas")
