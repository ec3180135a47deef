//! The trainer's models.
//!
//! # Layout
//! - [`hmm`] — [`GaussianHmm`]: parameters, emission densities, scaled
//!   forward-backward, Baum-Welch fitting with k-means initialisation and
//!   seeded restarts, Viterbi, canonical state order, parameter hash.
//! - [`kmeans`] — seeded k-means++ and Lloyd iterations (initialisation).
//! - [`simulate`] — sampling from a known HMM (tests, benchmark).
//!
//! Everything is deterministic: same observations, options and seed ⇒
//! identical parameters, bit for bit (sequential floating point, ChaCha8
//! randomness).

pub mod hmm;
pub mod kmeans;
pub mod simulate;

pub use hmm::{Covariance, FitOptions, FitReport, GaussianHmm, HmmError};
