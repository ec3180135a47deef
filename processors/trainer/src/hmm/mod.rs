//! [`GaussianHmm`]: a hidden Markov model with Gaussian emissions.
//!
//! - `emission` — per-row log densities (diagonal, or full covariance
//!   through a Cholesky factor from `nalgebra`).
//! - [`kernel`] — the fused E-step the fit runs: densities, scaled
//!   forward, backward folded into the M-step's sums.
//! - `forward_backward` — the straightforward scaled forward-backward pass: likelihood,
//!   state posteriors, expected transitions.
//! - `fit` — Baum-Welch with k-means initialisation, seeded restarts,
//!   covariance floor, convergence tolerance, canonical state order.
//! - `viterbi` — the most likely state path.
//! - `filter` — the online forward filter (one bar at a time).

mod emission;
mod filter;
mod fit;
mod forward_backward;
pub mod kernel;
mod viterbi;

use serde::{Deserialize, Serialize};

/// The most states the fit supports (the kernel's widest unrolling).
pub const MAX_STATES: usize = 16;
use sha2::{Digest, Sha256};

pub use filter::OnlineFilter;
pub use fit::{fit_reporting, fit_warm, FitOptions, FitReport, WarmFit};
pub use forward_backward::Posteriors;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Covariance {
    Diag,
    Full,
}

impl Covariance {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "diag" => Some(Covariance::Diag),
            "full" => Some(Covariance::Full),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HmmError {
    #[error("need at least {needed} observations of {d} column(s), got {got}")]
    TooFewObservations { needed: usize, got: usize, d: usize },
    #[error("observation {row} column {col} is not finite")]
    NotFinite { row: usize, col: usize },
    #[error("covariance of state {state} is not positive definite")]
    NotPositiveDefinite { state: usize },
    #[error("observation {row} has zero probability under the model")]
    ZeroProbability { row: usize },
    #[error("bad options: {0}")]
    Options(String),
    #[error("the fit ran past its deadline after {iterations} iteration(s)")]
    DeadlinePassed { iterations: usize },
}

/// Parameters of a K-state Gaussian HMM over D columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianHmm {
    pub k: usize,
    pub d: usize,
    pub covariance: Covariance,
    /// Initial state distribution (K).
    pub start: Vec<f64>,
    /// Row-stochastic transitions, row-major (K × K).
    pub trans: Vec<f64>,
    /// Means, row-major (K × D).
    pub means: Vec<f64>,
    /// Diagonal: variances (K × D); full: covariance matrices (K × D × D).
    pub covars: Vec<f64>,
}

impl GaussianHmm {
    /// SHA-256 of the parameters' bit patterns (and shape): the identity a
    /// rerun must reproduce.
    pub fn param_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update((self.k as u64).to_le_bytes());
        h.update((self.d as u64).to_le_bytes());
        h.update([u8::from(self.covariance == Covariance::Full)]);
        for part in [&self.start, &self.trans, &self.means, &self.covars] {
            for v in part.iter() {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// Log-likelihood of `x` (row-major, `d` columns).
    pub fn score(&self, x: &[f64]) -> Result<f64, HmmError> {
        self.score_on(x, 1)
    }

    /// [`GaussianHmm::score`] with the emission densities on up to
    /// `threads` threads (the same bits whatever the count).
    pub fn score_on(&self, x: &[f64], threads: usize) -> Result<f64, HmmError> {
        check(x, self.d, 1)?;
        if (1..=MAX_STATES).contains(&self.k) {
            let mut buffers = kernel::Buffers::default();
            buffers.threads = threads;
            return kernel::loglik(self, x, &mut buffers);
        }
        let log_b = emission::log_densities(self, x)?;
        Ok(forward_backward::forward(self, &log_b, x.len() / self.d)?.0)
    }

    /// State posteriors and expected transitions of `x`.
    pub fn posteriors(&self, x: &[f64]) -> Result<Posteriors, HmmError> {
        check(x, self.d, 1)?;
        let log_b = emission::log_densities(self, x)?;
        forward_backward::posteriors(self, &log_b, x.len() / self.d)
    }

    /// Most likely state path and its log-probability.
    pub fn viterbi(&self, x: &[f64]) -> Result<(f64, Vec<usize>), HmmError> {
        check(x, self.d, 1)?;
        let log_b = emission::log_densities(self, x)?;
        Ok(viterbi::viterbi(self, &log_b, x.len() / self.d))
    }

    /// Fits a model to `x` (row-major, `d` columns).
    pub fn fit(
        x: &[f64],
        d: usize,
        options: &FitOptions,
    ) -> Result<(GaussianHmm, FitReport), HmmError> {
        fit::fit(x, d, options)
    }
}

fn check(x: &[f64], d: usize, needed: usize) -> Result<(), HmmError> {
    if d == 0 || !x.len().is_multiple_of(d) || x.len() / d < needed {
        return Err(HmmError::TooFewObservations {
            needed,
            got: x.len() / d.max(1),
            d,
        });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(HmmError::NotFinite {
            row: i / d,
            col: i % d,
        });
    }
    Ok(())
}
