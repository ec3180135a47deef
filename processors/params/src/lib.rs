//! The parameter controller: which preset each strategy uses on each
//! instrument, learned from realised trades.
//!
//! # Layout
//! - [`schema`] — strategy schemas (`strategy_schemas/*.yaml`): bounds,
//!   presets (one safe), context features.
//! - [`policy`] — bandits over presets: linear Thompson sampling, Thompson
//!   (Beta, Gaussian), epsilon-greedy; one file each.
//! - [`controller`] — [`Controller`]: decisions on regime posteriors,
//!   learning from outcomes, guardrails (hysteresis, daily limit,
//!   kill-switch); pure.
//! - [`processor`] — the Kafka processor around it and its restore.
//! - [`engine`] — a simulated trading engine (`param.updates` + bars ⇒
//!   `trade.outcomes`) for the demo, tests and benchmarks.

pub mod controller;
pub mod engine;
pub mod policy;
pub mod processor;
pub mod schema;

pub use controller::{controlled, update_key, Controller, ParamsConfig, ParamsStats, ResumeError};
pub use engine::{Engine, EngineStats};
pub use policy::{Policy, PolicySpec};
pub use processor::{EngineInput, EngineProcessor, ParamsInput, ParamsProcessor};
pub use schema::{Preset, StrategySchema};
