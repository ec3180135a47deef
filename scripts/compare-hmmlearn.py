"""Fit time and log-likelihood of hmmlearn 0.3.3 on simulated observations,
for comparison with `autotrain fit hmm` on the same file.

    pip install hmmlearn==0.3.3
    python3 scripts/compare-hmmlearn.py 1000000        # writes /tmp/hmm_obs.csv
    for c in diag full; do
      autotrain fit hmm --input /tmp/hmm_obs.csv --columns a,b --states 3 \
        --covariance $c --max-iter 10 --restarts 1 --json
    done

The observations come from the same 3-state model as
`autotrain_trainer::simulate::Truth::three_regimes` (numpy's generator, so
not the same draws as `autotrain bench hmm`).
"""
import sys, time
import numpy as np
from hmmlearn.hmm import GaussianHMM
n = int(sys.argv[1])
rng = np.random.default_rng(1)
trans = np.array([[0.95,0.03,0.02],[0.04,0.93,0.03],[0.03,0.03,0.94]])
means = np.array([[-1.0,2.0],[0.0,0.5],[1.0,1.2]]); stds = np.array([[0.4,0.3],[0.2,0.2],[0.3,0.25]])
s = 0; states = np.empty(n, dtype=int)
u = rng.random(n)
cum = trans.cumsum(axis=1)
for t in range(n):
    states[t] = s
    s = int(np.searchsorted(cum[s], u[t]))
X = means[states] + stds[states] * rng.standard_normal((n, 2))
np.savetxt("/tmp/hmm_obs.csv", X, delimiter=",", header="a,b", comments="", fmt="%.17g")
for cov in ["diag", "full"]:
    m = GaussianHMM(n_components=3, covariance_type=cov, n_iter=10, implementation="scaling", random_state=0)
    t0 = time.time(); m.fit(X); fit_s = time.time() - t0
    print(f"hmmlearn {cov}: fit {fit_s:.2f} s, iters {m.monitor_.iter}, loglik {m.score(X):.1f}")
