"""Checks `autotrain features --window-days N` against pandas.

usage: window_pandas.py FEATURES.csv WINDOW.csv DAYS

For every (date, feature) line of the window file, the count, mean and
sample std (ddof=1) of the feature over the rows whose day is in
(date - DAYS, date] must agree to 1e-9 (relative); the dates must be the
days on which those statistics change.
"""

import sys

import numpy as np
import pandas as pd

DAY_MS = 86_400_000


def main() -> int:
    features_csv, window_csv, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
    feat = pd.read_csv(features_csv)
    win = pd.read_csv(window_csv)
    day = (feat["ts"] // DAY_MS).to_numpy()
    problems = []
    checked = 0
    for date, lines in win.groupby("date"):
        d = pd.Timestamp(date, tz="UTC").value // 10**6 // DAY_MS
        mask = (day > d - days) & (day <= d)
        for _, line in lines.iterrows():
            values = feat.loc[mask, line["feature"]].dropna()
            n = len(values)
            mean = values.mean() if n else np.nan
            std = values.std(ddof=1) if n > 1 else np.nan
            checked += 1
            if n != line["n"]:
                problems.append(f"{date} {line['feature']}: n {line['n']} vs pandas {n}")
                continue
            for name, ours, theirs in (("mean", line["mean"], mean), ("std", line["std"], std)):
                both_nan = np.isnan(ours) and np.isnan(theirs)
                if not both_nan and not abs(ours - theirs) <= 1e-9 * max(1.0, abs(theirs)):
                    problems.append(f"{date} {line['feature']}: {name} {ours!r} vs pandas {theirs!r}")
    if checked < 100:
        problems.append(f"only {checked} window lines")
    for p in problems[:20]:
        print(p)
    print(f"{checked} window statistics checked, {len(problems)} disagreements")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
