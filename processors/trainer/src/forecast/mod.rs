//! The forecast family: gradient-boosted trees predicting a target from the
//! feature vector (issue 17), beside the regime HMMs.
//!
//! - [`target`] — what is predicted: the absolute return or the realised
//!   volatility over the next `horizon` bars, built from the `lr` column
//!   without look-ahead, and the purged train / reference split.
//! - [`model`] — [`ForecastModel`]: the trees in autotrain's own layout
//!   (documented JSON, a parameter hash), fitted with the `perpetual`
//!   GBDT crate and predicted here.
//! - [`metrics`] — MAE, RMSE, MAPE, R², RMSLE on the reference set.
//! - [`onnx`] — the model as ONNX (`ai.onnx.ml` `TreeEnsembleRegressor`,
//!   double thresholds and weights), for other runtimes.
//!
//! Deterministic: the same rows, options and seed give the same trees, bit
//! for bit, whatever the thread count (tested).

pub mod dataset;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod search;
pub mod target;

pub use metrics::Scores;
pub use model::{ForecastModel, GbdtOptions};
pub use target::{Split, Target};

pub mod guardrails;
pub use guardrails::ForecastGuardrails;
