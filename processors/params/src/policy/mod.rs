//! Bandit policies over a strategy's presets (the arms): [`LinTs`] (linear
//! Thompson sampling on a context vector), Thompson sampling with Beta or
//! Gaussian arms, and epsilon-greedy. Each is a plain struct; [`Policy`]
//! picks one from the configuration. Randomness comes from the caller's
//! seeded generator, so a decision is a function of its inputs.

mod epsilon;
mod lints;
mod thompson;

pub use epsilon::EpsilonGreedy;
pub use lints::{LinTs, Scratch};
pub use thompson::{ThompsonBeta, ThompsonGaussian};

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// `[params] policy` in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// Posterior N(A⁻¹b, v²A⁻¹) per arm, A = λI + Σxxᵀ, b = Σrx.
    LinTs {
        v: f64,
        lambda: f64,
    },
    /// Beta(1 + wins, 1 + losses) per arm; a reward > 0 is a win.
    ThompsonBeta,
    /// N(mean, σ²/(n + 1)) per arm.
    ThompsonGaussian {
        sigma: f64,
    },
    EpsilonGreedy {
        epsilon: f64,
    },
}

impl Default for PolicySpec {
    fn default() -> Self {
        PolicySpec::LinTs {
            v: 0.5,
            lambda: 1.0,
        }
    }
}

/// One (strategy, instrument)'s policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    LinTs(LinTs),
    Beta(ThompsonBeta),
    Gaussian(ThompsonGaussian),
    Epsilon(EpsilonGreedy),
}

impl Policy {
    pub fn new(spec: &PolicySpec, arms: usize, d: usize) -> Self {
        match *spec {
            PolicySpec::LinTs { v, lambda } => Policy::LinTs(LinTs::new(arms, d, v, lambda)),
            PolicySpec::ThompsonBeta => Policy::Beta(ThompsonBeta::new(arms)),
            PolicySpec::ThompsonGaussian { sigma } => {
                Policy::Gaussian(ThompsonGaussian::new(arms, sigma))
            }
            PolicySpec::EpsilonGreedy { epsilon } => {
                Policy::Epsilon(EpsilonGreedy::new(arms, epsilon))
            }
        }
    }

    /// A sampled score per arm for context `x` (the best is the choice).
    pub fn scores(&self, x: &[f64], rng: &mut ChaCha8Rng, scratch: &mut Scratch) -> Vec<f64> {
        match self {
            Policy::LinTs(p) => p.scores(x, rng, scratch),
            Policy::Beta(p) => p.scores(rng),
            Policy::Gaussian(p) => p.scores(rng),
            Policy::Epsilon(p) => p.scores(rng),
        }
    }

    pub fn update(&mut self, arm: usize, x: &[f64], reward: f64) {
        match self {
            Policy::LinTs(p) => p.update(arm, x, reward),
            Policy::Beta(p) => p.update(arm, reward),
            Policy::Gaussian(p) => p.update(arm, reward),
            Policy::Epsilon(p) => p.update(arm, reward),
        }
    }

    /// A preset registered at run time becomes a new arm (no evidence yet).
    pub fn add_arm(&mut self) {
        match self {
            Policy::LinTs(p) => p.add_arm(),
            Policy::Beta(p) => p.add_arm(),
            Policy::Gaussian(p) => p.add_arm(),
            Policy::Epsilon(p) => p.add_arm(),
        }
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        match self {
            Policy::LinTs(p) => p.updates,
            Policy::Beta(p) => p.updates,
            Policy::Gaussian(p) => p.updates,
            Policy::Epsilon(p) => p.updates,
        }
    }
}

/// Index of the largest score (the first on ties).
pub fn argmax(scores: &[f64]) -> usize {
    scores
        .iter()
        .enumerate()
        .fold(0, |best, (i, s)| if *s > scores[best] { i } else { best })
}
