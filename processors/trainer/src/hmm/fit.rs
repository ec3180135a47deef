//! Baum-Welch: k-means initialisation (over every row, as hmmlearn's), EM until the log-likelihood gains
//! less than `tol`, several seeded restarts keeping the best, a covariance
//! floor, and a canonical state order (ascending mean of the first column,
//! e.g. the return) so regime ids mean the same across versions.

use serde::{Deserialize, Serialize};

use std::time::Instant;

use super::{check, kernel, Covariance, GaussianHmm, HmmError, MAX_STATES};
use crate::kmeans::{best_of, blocks, nearest};
use crate::par;

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
    /// Floor on every variance (a full covariance's smallest eigenvalue);
    /// also added to the initial covariances.
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
    /// The fit started from a given model (a champion), if one was.
    #[serde(default)]
    pub warm: Option<WarmFit>,
}

/// How the fit started from a given model fared against the seeded ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmFit {
    pub loglik: f64,
    pub iters: usize,
    /// It had the best log-likelihood (ties go to the seeded fits).
    pub chosen: bool,
}

/// The starting model from a k-means partition of the rows: means are the
/// centres; each state's covariance is its cluster's (the covariance of all
/// rows for a cluster of fewer than 2·D rows), plus `min_covar` on the
/// diagonal; transitions count the partition's consecutive labels (plus
/// one per cell, so none starts at zero); start probabilities are uniform.
/// hmmlearn starts from the same centres but with every state given the
/// covariance of all rows and uniform transitions; starting from the
/// partition's own spread and persistence, EM begins nearer the optimum
/// and needs fewer iterations. `x` is centred (column means zero).
fn initial(x: &[f64], d: usize, o: &FitOptions, seed: u64, threads: usize) -> GaussianHmm {
    let k = o.states;
    let n = x.len() / d;
    let means = best_of(x, d, k, seed, 10, threads);
    let width = if o.covariance == Covariance::Full {
        d * d
    } else {
        d
    };
    // Per block of rows: counts, sums and second moments per cluster, all
    // rows' second moments, the transitions within the block, and its
    // first and last labels (to count the transition across blocks).
    let parts = blocks(x, d, threads, |rows| {
        let mut count = vec![0usize; k];
        let mut sums = vec![0.0; k * d];
        let mut moments = vec![0.0; k * d * d];
        let mut all = vec![0.0; d * d];
        let mut trans = vec![0.0; k * k];
        let (mut first, mut last) = (None, None);
        for row in rows.chunks_exact(d) {
            let label = nearest(row, &means, d);
            count[label] += 1;
            for i in 0..d {
                sums[label * d + i] += row[i];
                for j in 0..d {
                    moments[label * d * d + i * d + j] += row[i] * row[j];
                    all[i * d + j] += row[i] * row[j];
                }
            }
            if let Some(prev) = last {
                trans[prev * k + label] += 1.0;
            }
            first.get_or_insert(label);
            last = Some(label);
        }
        (count, sums, moments, all, trans, first, last)
    });
    let mut count = vec![0usize; k];
    let mut sums = vec![0.0; k * d];
    let mut moments = vec![0.0; k * d * d];
    let mut all = vec![0.0; d * d];
    let mut trans = vec![1.0; k * k];
    let add = |a: &mut [f64], b: &[f64]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    let mut before: Option<usize> = None;
    for (c, s, m, a, t, first, last) in parts {
        count.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
        add(&mut sums, &s);
        add(&mut moments, &m);
        add(&mut all, &a);
        add(&mut trans, &t);
        if let (Some(prev), Some(next)) = (before, first) {
            trans[prev * k + next] += 1.0;
        }
        before = last.or(before);
    }
    all.iter_mut().for_each(|v| *v /= n as f64);
    let mut covars = Vec::with_capacity(k * width);
    for s in 0..k {
        let own = count[s] >= 2 * d;
        let c = count[s].max(1) as f64;
        for i in 0..d {
            for j in 0..d {
                if width == d && i != j {
                    continue;
                }
                let mut v = if own {
                    moments[s * d * d + i * d + j] / c
                        - (sums[s * d + i] / c) * (sums[s * d + j] / c)
                } else {
                    all[i * d + j]
                };
                if i == j {
                    v = v.max(0.0) + o.min_covar;
                }
                covars.push(v);
            }
        }
    }
    for row in trans.chunks_exact_mut(k) {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
    GaussianHmm {
        k,
        d,
        covariance: o.covariance,
        start: vec![1.0 / k as f64; k],
        trans,
        means,
        covars,
    }
}

/// Raises the smallest eigenvalue of the symmetric `d × d` matrix `c` to
/// `floor` by adding to its diagonal (nothing if it is there already).
fn floor_eigenvalues(c: &mut [f64], d: usize, floor: f64) {
    let smallest = nalgebra::DMatrix::from_row_slice(d, d, c)
        .symmetric_eigenvalues()
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    if smallest.is_nan() || smallest < floor {
        let lift = if smallest.is_finite() {
            floor - smallest
        } else {
            floor
        };
        for i in 0..d {
            c[i * d + i] += lift;
        }
    }
}

/// The M-step from the E-step's sums: start = γ₁, transitions = ξ rows
/// normalised, means = Σγx / Σγ, covariances = Σγxxᵀ / Σγ − μμᵀ with
/// `min_covar` as a floor (on each variance; on a full covariance's
/// smallest eigenvalue). A floor, not an addition: adding it every
/// iteration biases every variance and makes EM lower the likelihood
/// near the optimum. A state with no weight keeps its parameters.
fn m_step(m: &mut GaussianHmm, s: &kernel::Stats, min_covar: f64) {
    let (k, d) = (m.k, m.d);
    m.start.copy_from_slice(&s.first);
    for i in 0..k {
        let row = &s.xi[i * k..(i + 1) * k];
        let total: f64 = row.iter().sum();
        if total > 0.0 {
            for j in 0..k {
                m.trans[i * k + j] = row[j] / total;
            }
        }
    }
    for st in 0..k {
        let w = s.weight[st];
        if w <= f64::MIN_POSITIVE {
            continue;
        }
        let mean: Vec<f64> = s.sx[st * d..(st + 1) * d].iter().map(|v| v / w).collect();
        match m.covariance {
            Covariance::Diag => {
                for j in 0..d {
                    let v = s.sxx[st * d + j] / w - mean[j] * mean[j];
                    m.covars[st * d + j] = v.max(min_covar);
                }
            }
            Covariance::Full => {
                let c = &mut m.covars[st * d * d..(st + 1) * d * d];
                for i in 0..d {
                    for j in 0..d {
                        c[i * d + j] = s.sxx[st * d * d + i * d + j] / w - mean[i] * mean[j];
                    }
                }
                floor_eigenvalues(c, d, min_covar);
            }
        }
        m.means[st * d..(st + 1) * d].copy_from_slice(&mean);
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

/// Where one EM run starts.
enum Start<'a> {
    Seed(u64),
    /// A model in the coordinates of the centred rows.
    Model(&'a GaussianHmm),
}

fn fit_once(
    x: &[f64],
    d: usize,
    o: &FitOptions,
    start: &Start<'_>,
    threads: usize,
    deadline: Option<Instant>,
) -> Result<(GaussianHmm, Vec<f64>, bool), HmmError> {
    let mut model = match start {
        Start::Seed(seed) => initial(x, d, o, *seed, threads),
        Start::Model(m) => (*m).clone(),
    };
    let mut history: Vec<f64> = Vec::new();
    let mut converged = false;
    let mut buffers = kernel::Buffers::default();
    buffers.threads = threads;
    for _ in 0..o.max_iter {
        if deadline.is_some_and(|at| Instant::now() >= at) {
            return Err(HmmError::DeadlinePassed {
                iterations: history.len(),
            });
        }
        let stats = kernel::e_step(&model, x, &mut buffers)?;
        let gained = history.last().map(|prev| stats.loglik - prev);
        history.push(stats.loglik);
        if gained.is_some_and(|g| g < o.tol) {
            converged = true;
            break;
        }
        m_step(&mut model, &stats, o.min_covar);
    }
    Ok((model, history, converged))
}

pub fn fit(x: &[f64], d: usize, o: &FitOptions) -> Result<(GaussianHmm, FitReport), HmmError> {
    fit_reporting(x, d, o, 0, None, &mut |_, _| {})
}

/// [`GaussianHmm::fit`] on up to `threads` threads (0: every core; the result is the
/// same bit for bit whatever the count), calling `done(restarts
/// finished, restarts)` as restarts end, and giving up with
/// [`HmmError::DeadlinePassed`] at the first iteration that starts after
/// `deadline` (a bound on a run's time, not part of the result: a fit that
/// ends in time is the same with or without it).
///
/// The fit runs on the rows shifted by their column means (translation
/// changes nothing in the model but the means, and it keeps the second
/// moments of the M-step well conditioned); the returned model is shifted
/// back and scored on `x` as given.
pub fn fit_reporting(
    x: &[f64],
    d: usize,
    o: &FitOptions,
    threads: usize,
    deadline: Option<Instant>,
    done: &mut dyn FnMut(usize, usize),
) -> Result<(GaussianHmm, FitReport), HmmError> {
    fit_warm(x, d, o, None, threads, deadline, done)
}

/// [`fit_reporting`], with `warm` (a model of the same shape, such as the
/// champion's, in the coordinates of `x`) as one of the starts: it takes
/// the place of the last seeded restart (of none when there is only one),
/// and wins only with a strictly better log-likelihood than every seeded
/// start, so the fit is at least as good as the seeded ones alone. A model
/// of another shape is refused.
pub fn fit_warm(
    x: &[f64],
    d: usize,
    o: &FitOptions,
    warm: Option<&GaussianHmm>,
    threads: usize,
    deadline: Option<Instant>,
    done: &mut dyn FnMut(usize, usize),
) -> Result<(GaussianHmm, FitReport), HmmError> {
    if o.states == 0
        || o.states > MAX_STATES
        || o.restarts == 0
        || o.max_iter == 0
        || o.min_covar.is_nan()
        || o.min_covar < 0.0
    {
        return Err(HmmError::Options(format!(
            "states (1–{MAX_STATES}), restarts and max_iter must be > 0 and min_covar ≥ 0: {o:?}"
        )));
    }
    check(x, d, 2 * o.states)?;
    if let Some(w) = warm {
        let width = if w.covariance == Covariance::Full {
            d * d
        } else {
            d
        };
        if w.k != o.states
            || w.d != d
            || w.covariance != o.covariance
            || w.means.len() != w.k * d
            || w.covars.len() != w.k * width
            || w.trans.len() != w.k * w.k
            || w.start.len() != w.k
        {
            return Err(HmmError::Options(format!(
                "a warm start needs {} states, {d} columns and {:?} covariances; it has {}, {} and {:?}",
                o.states, o.covariance, w.k, w.d, w.covariance
            )));
        }
    }
    let threads = if threads == 0 { par::cores() } else { threads };
    let n = x.len() / d;
    let offset: Vec<f64> = (0..d)
        .map(|j| x.iter().skip(j).step_by(d).sum::<f64>() / n as f64)
        .collect();
    let centred: Vec<f64> = x
        .chunks_exact(d)
        .flat_map(|row| row.iter().zip(&offset).map(|(v, m)| v - m))
        .collect();
    // Restarts share the threads; a restart's own k-means gets what is
    // left over.
    let seeded = match warm {
        Some(_) => (o.restarts - 1).max(1),
        None => o.restarts,
    };
    let warm_centred = warm.map(|w| {
        let mut w = w.clone();
        for (mean, shift) in w.means.iter_mut().zip(offset.iter().cycle()) {
            *mean -= shift;
        }
        w
    });
    let starts: Vec<Start<'_>> = (0..seeded)
        .map(|r| Start::Seed(o.seed.wrapping_add(r as u64)))
        .chain(warm_centred.as_ref().map(Start::Model))
        .collect();
    let inner = (threads / starts.len()).max(1);
    let runs = par::map(
        starts.len(),
        threads,
        |r| {
            let once = fit_once(&centred, d, o, &starts[r], inner, deadline);
            once.and_then(|(mut model, history, converged)| {
                for (mean, shift) in model.means.iter_mut().zip(offset.iter().cycle()) {
                    *mean += shift;
                }
                let model = canonical(&model);
                // A converged fit stopped before its last M-step: the last
                // E-step scored this very model (on the centred rows,
                // which the shift leaves the same up to rounding).
                let loglik = match history.last() {
                    Some(&last) if converged => last,
                    _ => model.score_on(x, inner)?,
                };
                Ok((model, history, converged, loglik))
            })
        },
        done,
    );
    let mut best: Option<(GaussianHmm, FitReport)> = None;
    let mut tried = Vec::new();
    let mut warm_fit = None;
    let mut first_error = None;
    for (once, start) in runs.into_iter().zip(&starts) {
        match (once, start) {
            (Ok((model, history, converged, loglik)), start) => {
                let better = best.as_ref().is_none_or(|(_, b)| loglik > b.loglik);
                match start {
                    Start::Seed(seed) => tried.push((*seed, loglik, history.len())),
                    Start::Model(_) => {
                        warm_fit = Some(WarmFit {
                            loglik,
                            iters: history.len(),
                            chosen: better,
                        })
                    }
                }
                if better {
                    best = Some((
                        model,
                        FitReport {
                            loglik,
                            iters: history.len(),
                            converged,
                            history,
                            restarts: Vec::new(),
                            warm: None,
                        },
                    ));
                }
            }
            (Err(e @ HmmError::DeadlinePassed { .. }), _) => return Err(e),
            // A restart that degenerates does not sink the fit.
            (Err(e), start) => {
                match start {
                    Start::Seed(seed) => tried.push((*seed, f64::NAN, 0)),
                    Start::Model(_) => {
                        warm_fit = Some(WarmFit {
                            loglik: f64::NAN,
                            iters: 0,
                            chosen: false,
                        })
                    }
                }
                first_error.get_or_insert(e);
            }
        }
    }
    match best {
        Some((model, mut report)) => {
            report.restarts = tried;
            report.warm = warm_fit;
            Ok((model, report))
        }
        None => {
            Err(first_error.unwrap_or_else(|| HmmError::Options("every restart failed".into())))
        }
    }
}
