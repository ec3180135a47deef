//! Baum-Welch: k-means initialisation, EM until the log-likelihood gains
//! less than `tol`, several seeded restarts keeping the best, a covariance
//! floor, and a canonical state order (ascending mean of the first column,
//! e.g. the return) so regime ids mean the same across versions.

use serde::{Deserialize, Serialize};

use std::time::Instant;

use super::{check, emission, forward_backward, Covariance, GaussianHmm, HmmError};
use crate::kmeans::best_of;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    pub states: usize,
    pub covariance: Covariance,
    pub max_iter: usize,
    /// Stop when an iteration gains less log-likelihood than this.
    pub tol: f64,
    pub seed: u64,
    /// Fits from different seeds (`seed`, `seed + 1`, …); the best wins.
    pub restarts: usize,
    /// Added to every variance (diagonal of every covariance).
    pub min_covar: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            states: 3,
            covariance: Covariance::Diag,
            max_iter: 100,
            tol: 1e-2,
            seed: 0,
            restarts: 3,
            min_covar: 1e-3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Log-likelihood of the whole input under the returned model.
    pub loglik: f64,
    pub iters: usize,
    pub converged: bool,
    /// Log-likelihood before each M-step of the winning restart.
    pub history: Vec<f64>,
    /// (seed, final log-likelihood, iterations) of every restart.
    pub restarts: Vec<(u64, f64, usize)>,
}

fn initial(x: &[f64], d: usize, o: &FitOptions, seed: u64) -> GaussianHmm {
    let k = o.states;
    let n = x.len() / d;
    // k-means on an evenly strided sample of at most 50,000 rows: plenty
    // for initial means, and independent of the input's length.
    let stride = n.div_ceil(50_000).max(1);
    let sample: Vec<f64> = (0..n)
        .step_by(stride)
        .flat_map(|t| x[t * d..(t + 1) * d].iter().copied())
        .collect();
    let (means, _) = best_of(&sample, d, k, seed, 20, 10);
    let mut mean = vec![0.0; d];
    for t in 0..n {
        for j in 0..d {
            mean[j] += x[t * d + j] / n as f64;
        }
    }
    let mut cov = vec![0.0; d * d];
    for t in 0..n {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (x[t * d + i] - mean[i]) * (x[t * d + j] - mean[j]) / n as f64;
            }
        }
    }
    let covars = match o.covariance {
        Covariance::Diag => (0..k)
            .flat_map(|_| {
                (0..d)
                    .map(|j| cov[j * d + j] + o.min_covar)
                    .collect::<Vec<_>>()
            })
            .collect(),
        Covariance::Full => (0..k)
            .flat_map(|_| {
                let mut c = cov.clone();
                for j in 0..d {
                    c[j * d + j] += o.min_covar;
                }
                c
            })
            .collect(),
    };
    GaussianHmm {
        k,
        d,
        covariance: o.covariance,
        start: vec![1.0 / k as f64; k],
        trans: vec![1.0 / k as f64; k * k],
        means,
        covars,
    }
}

fn m_step(m: &mut GaussianHmm, x: &[f64], gamma: &[f64], xi: &[f64], min_covar: f64) {
    let (k, d) = (m.k, m.d);
    let n = x.len() / d;
    m.start.copy_from_slice(&gamma[..k]);
    for i in 0..k {
        let row = &xi[i * k..(i + 1) * k];
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            for j in 0..k {
                m.trans[i * k + j] = row[j] / total;
            }
        }
    }
    let mut weight = vec![0.0; k];
    let mut sums = vec![0.0; k * d];
    for t in 0..n {
        let row = &x[t * d..(t + 1) * d];
        for s in 0..k {
            let g = gamma[t * k + s];
            weight[s] += g;
            for j in 0..d {
                sums[s * d + j] += g * row[j];
            }
        }
    }
    for s in 0..k {
        if weight[s] <= f64::MIN_POSITIVE {
            continue;
        }
        for j in 0..d {
            m.means[s * d + j] = sums[s * d + j] / weight[s];
        }
    }
    let width = if m.covariance == Covariance::Full {
        d * d
    } else {
        d
    };
    let mut acc = vec![0.0; k * width];
    for t in 0..n {
        let row = &x[t * d..(t + 1) * d];
        for s in 0..k {
            let g = gamma[t * k + s];
            let mean = &m.means[s * d..(s + 1) * d];
            match m.covariance {
                Covariance::Diag => {
                    for j in 0..d {
                        let e = row[j] - mean[j];
                        acc[s * d + j] += g * e * e;
                    }
                }
                Covariance::Full => {
                    for i in 0..d {
                        let ei = row[i] - mean[i];
                        for j in 0..d {
                            acc[s * d * d + i * d + j] += g * ei * (row[j] - mean[j]);
                        }
                    }
                }
            }
        }
    }
    for s in 0..k {
        if weight[s] <= f64::MIN_POSITIVE {
            continue;
        }
        for c in 0..width {
            let mut v = acc[s * width + c] / weight[s];
            let diagonal = m.covariance == Covariance::Diag || c / d == c % d;
            if diagonal {
                v += min_covar;
            }
            m.covars[s * width + c] = v;
        }
    }
}

/// Reorders states by ascending mean of the first column.
fn canonical(m: &GaussianHmm) -> GaussianHmm {
    let (k, d) = (m.k, m.d);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|a, b| m.means[a * d].total_cmp(&m.means[b * d]).then(a.cmp(b)));
    let width = if m.covariance == Covariance::Full {
        d * d
    } else {
        d
    };
    let mut out = m.clone();
    for (new, &old) in order.iter().enumerate() {
        out.start[new] = m.start[old];
        for (new_j, &old_j) in order.iter().enumerate() {
            out.trans[new * k + new_j] = m.trans[old * k + old_j];
        }
        out.means[new * d..(new + 1) * d].copy_from_slice(&m.means[old * d..(old + 1) * d]);
        out.covars[new * width..(new + 1) * width]
            .copy_from_slice(&m.covars[old * width..(old + 1) * width]);
    }
    out
}

fn fit_once(
    x: &[f64],
    d: usize,
    o: &FitOptions,
    seed: u64,
    deadline: Option<Instant>,
) -> Result<(GaussianHmm, Vec<f64>, bool), HmmError> {
    let n = x.len() / d;
    let mut model = initial(x, d, o, seed);
    let mut history: Vec<f64> = Vec::new();
    let mut converged = false;
    let mut ws = forward_backward::Workspace::default();
    for _ in 0..o.max_iter {
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Err(HmmError::DeadlinePassed {
                iterations: history.len(),
            });
        }
        emission::log_densities_into(&model, x, &mut ws.b)?;
        let (loglik, xi) = forward_backward::e_step(&model, n, &mut ws)?;
        let gained = history.last().map(|prev| loglik - prev);
        history.push(loglik);
        if gained.is_some_and(|g| g < o.tol) {
            converged = true;
            break;
        }
        m_step(&mut model, x, &ws.gamma, &xi, o.min_covar);
    }
    Ok((model, history, converged))
}

pub fn fit(x: &[f64], d: usize, o: &FitOptions) -> Result<(GaussianHmm, FitReport), HmmError> {
    fit_reporting(x, d, o, None, &mut |_, _| {})
}

/// [`fit`], calling `done(restarts finished, restarts)` after each restart,
/// and giving up with [`HmmError::DeadlinePassed`] at the first iteration
/// that starts after `deadline` (a bound on a run's time, not part of the
/// result: a fit that ends in time is the same with or without it).
pub fn fit_reporting(
    x: &[f64],
    d: usize,
    o: &FitOptions,
    deadline: Option<Instant>,
    done: &mut dyn FnMut(usize, usize),
) -> Result<(GaussianHmm, FitReport), HmmError> {
    if o.states == 0
        || o.restarts == 0
        || o.max_iter == 0
        || o.min_covar.is_nan()
        || o.min_covar < 0.0
    {
        return Err(HmmError::Options(format!(
            "states, restarts and max_iter must be > 0 and min_covar ≥ 0: {o:?}"
        )));
    }
    check(x, d, 2 * o.states)?;
    let mut best: Option<(GaussianHmm, FitReport)> = None;
    let mut tried = Vec::new();
    for r in 0..o.restarts {
        let seed = o.seed.wrapping_add(r as u64);
        let once = fit_once(x, d, o, seed, deadline);
        done(r + 1, o.restarts);
        let (model, history, converged) = match once {
            Ok(v) => v,
            Err(e @ HmmError::DeadlinePassed { .. }) => return Err(e),
            // A restart that degenerates does not sink the fit.
            Err(e) if r + 1 < o.restarts || best.is_some() => {
                tried.push((seed, f64::NAN, 0));
                let _ = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        let model = canonical(&model);
        let loglik = model.score(x)?;
        tried.push((seed, loglik, history.len()));
        if best.as_ref().is_none_or(|(_, b)| loglik > b.loglik) {
            best = Some((
                model,
                FitReport {
                    loglik,
                    iters: history.len(),
                    converged,
                    history,
                    restarts: Vec::new(),
                },
            ));
        }
    }
    let (model, mut report) =
        best.ok_or_else(|| HmmError::Options("every restart failed".into()))?;
    report.restarts = tried;
    Ok((model, report))
}
