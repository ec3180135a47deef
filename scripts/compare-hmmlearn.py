"""The one side-by-side comparison of `autotrain fit hmm` with hmmlearn.

    pip install hmmlearn==0.3.3
    cargo build --release -p autotrain
    python3 scripts/compare-hmmlearn.py                 # 100,000 and 1,000,000 rows
    python3 scripts/compare-hmmlearn.py 100000          # one size

For each size and for 3 and 4 states it simulates observations from a
2-column model with that many states (the 3-state one is
`autotrain_trainer::simulate::Truth::three_regimes`; numpy's generator, so
not the same draws as `autotrain bench hmm`), writes them to a CSV, and
for diagonal and full covariance fits both on the same rows
with the same settings: tol 1e-4, at most 50 iterations, one
initialisation (hmmlearn: one KMeans with its default 10 k-means inits;
autotrain: `--restarts 1`, whose k-means also keeps the best of 10),
min_covar 1e-3. hmmlearn's time is `fit()` alone (the interpreter, numpy
and the data are already loaded); autotrain's is the whole process
(start, CSV parse, fit, output). Both log-likelihoods are of the same rows
under each fitted model, computed by hmmlearn's `score` for both (the
autotrain parameters are read back from `--json --params`), so a
difference in likelihood is a difference in the fit, not in the scoring.

Each side is timed REPEATS times (default 3, env COMPARE_REPEATS) and its
best time is reported, after a 0.5 s pause so that numpy's BLAS threads,
which spin for a while after a call, are idle when the other side starts
(measured: the first `autotrain fit hmm` right after hmmlearn's `score` ran
2.5× slower than the same command a moment later).
"""
import json, os, subprocess, sys, time
import numpy as np
from hmmlearn.hmm import GaussianHMM

TOL, MAX_ITER, MIN_COVAR = 1e-4, 50, 1e-3
REPEATS = max(1, int(os.environ.get("COMPARE_REPEATS", "3")))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("AUTOTRAIN_BIN", os.path.join(ROOT, "target", "release", "autotrain"))


TRUTH = {
    3: (np.array([[0.95, 0.03, 0.02], [0.04, 0.93, 0.03], [0.03, 0.03, 0.94]]),
        np.array([[-1.0, 2.0], [0.0, 0.5], [1.0, 1.2]]),
        np.array([[0.4, 0.3], [0.2, 0.2], [0.3, 0.25]])),
    4: (np.array([[0.94, 0.03, 0.02, 0.01], [0.03, 0.93, 0.02, 0.02],
                  [0.02, 0.03, 0.93, 0.02], [0.01, 0.02, 0.03, 0.94]]),
        np.array([[-1.0, 2.0], [0.0, 0.5], [1.0, 1.2], [2.0, -0.5]]),
        np.array([[0.4, 0.3], [0.2, 0.2], [0.3, 0.25], [0.5, 0.35]])),
}


def simulate(n, k, path):
    rng = np.random.default_rng(1)
    trans, means, stds = TRUTH[k]
    cum = trans.cumsum(axis=1)
    u = rng.random(n)
    states = np.empty(n, dtype=int)
    s = 0
    for t in range(n):
        states[t] = s
        s = int(np.searchsorted(cum[s], u[t]))
    x = means[states] + stds[states] * rng.standard_normal((n, 2))
    np.savetxt(path, x, delimiter=",", header="a,b", comments="", fmt="%.17g")
    return x


def hmmlearn_model(k, cov, params):
    m = GaussianHMM(n_components=k, covariance_type=cov, init_params="", params="stmc")
    m.startprob_ = np.array(params["start"])
    m.transmat_ = np.array(params["trans"]).reshape(k, k)
    m.means_ = np.array(params["means"]).reshape(k, -1)
    d = m.means_.shape[1]
    c = np.array(params["covars"])
    m.covars_ = c.reshape(k, d) if cov == "diag" else c.reshape(k, d, d)
    return m


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    print(f"tol {TOL}, max_iter {MAX_ITER}, 1 initialisation, min_covar {MIN_COVAR}; "
          f"threads: autotrain default, numpy default; {os.cpu_count()} cores")
    print(f"{'rows':>9} {'k':>2} {'cov':>4} | {'hmmlearn s':>10} {'it':>3} {'loglik':>14} | "
          f"{'autotrain s':>11} {'it':>3} {'loglik':>14} {'ms/it':>6} | {'speed-up':>8} {'Δ loglik rel':>12}")
    for n in sizes:
        for k in (3, 4):
            path = f"/tmp/hmm_obs_{n}_{k}.csv"
            x = simulate(n, k, path)
            for cov in ("diag", "full"):
                theirs_s = ours_s = float("inf")
                for _ in range(REPEATS):
                    m = GaussianHMM(n_components=k, covariance_type=cov, n_iter=MAX_ITER, tol=TOL,
                                    min_covar=MIN_COVAR, implementation="scaling", random_state=0)
                    time.sleep(0.5)
                    t0 = time.perf_counter()
                    m.fit(x)
                    theirs_s = min(theirs_s, time.perf_counter() - t0)
                theirs_ll = m.score(x)
                for _ in range(REPEATS):
                    time.sleep(0.5)
                    t0 = time.perf_counter()
                    out = subprocess.run(
                        [BIN, "fit", "hmm", "--input", path, "--columns", "a,b", "--states", str(k),
                         "--covariance", cov, "--max-iter", str(MAX_ITER), "--tol", str(TOL),
                         "--min-covar", str(MIN_COVAR), "--restarts", "1", "--json", "--params"],
                        check=True, capture_output=True, text=True).stdout
                    ours_s = min(ours_s, time.perf_counter() - t0)
                ours = json.loads(out)
                ours_ll = hmmlearn_model(k, cov, ours["params"]).score(x)
                rel = (ours_ll - theirs_ll) / abs(theirs_ll)
                print(f"{n:>9} {k:>2} {cov:>4} | {theirs_s:>10.3f} {m.monitor_.iter:>3} {theirs_ll:>14.1f} | "
                      f"{ours_s:>11.3f} {ours['iters']:>3} {ours_ll:>14.1f} "
                      f"{1000 * ours['fit_seconds'] / max(ours['iters'], 1):>6.2f} | "
                      f"{theirs_s / ours_s:>7.1f}× {rel:>+12.2e}", flush=True)


if __name__ == "__main__":
    main()
