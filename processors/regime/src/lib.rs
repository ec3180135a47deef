//! The regime processor: `features` + `model.updates` ⇒ `regimes`.
//!
//! # Layout
//! - [`processor`] — [`RegimeProcessor`]: keeps the model registry (a fold
//!   over `model.updates`) and one online forward filter per instrument
//!   under its model key's `prod` version; publishes the regime posterior
//!   of every feature row. When `prod` moves the next row is filtered under
//!   the new version (the filter restarts from the model's initial
//!   distribution): no restart, no bar skipped, and every posterior names
//!   the model version that produced it.

pub mod processor;

pub use processor::{RegimeInput, RegimeProcessor, RegimeStats};
