//! The trainer's models.
//!
//! # Layout
//! - [`hmm`] — [`GaussianHmm`]: parameters, emission densities, scaled
//!   forward-backward, Baum-Welch fitting with k-means initialisation and
//!   seeded restarts, Viterbi, canonical state order, parameter hash.
//! - [`artifact`] — [`TrainedModel`]: the model as `ModelVersion`
//!   parameters (columns + HMM, JSON).
//! - [`kmeans`] — seeded k-means++ and Lloyd iterations (initialisation).
//! - [`par`] — deterministic fan-out of independent fit jobs over threads.
//! - [`queue`] — [`TrainingQueue`](queue::TrainingQueue): priorities,
//!   bounded concurrency, retries with backoff, cancel; emits the
//!   `training.status` lifecycle events.
//! - [`registry`] — the model registry as a fold over `model.updates`
//!   (versions, aliases, rollback) and the promotion guardrails.
//! - [`simulate`] — sampling from a known HMM (tests, benchmark).
//!
//! Everything is deterministic: same observations, options and seed ⇒
//! identical parameters, bit for bit (sequential floating point, ChaCha8
//! randomness).

// Numeric kernels index several arrays with one loop variable; iterator
// chains would hide that, not remove it.
#![allow(clippy::needless_range_loop)]

pub mod artifact;
pub mod claims;
pub mod core;
pub mod dataset;
pub mod evaluate;
pub mod flags;
pub mod forecast;
pub mod hmm;
pub mod kmeans;
pub mod par;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod retention;
pub mod service;
pub mod simulate;
pub mod spec;
pub mod timed;
pub mod view;

pub use artifact::{Baseline, Distribution, TrainedModel};
pub use hmm::{Covariance, FitOptions, FitReport, GaussianHmm, HmmError, OnlineFilter};
pub use registry::{Model, Registry, RegistryError, PROD, STAGING};
pub use timed::TimedRegistry;
