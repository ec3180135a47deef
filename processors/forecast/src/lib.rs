//! The forecast processor: `features` + `model.updates` ⇒ `forecasts`.
//!
//! # Layout
//! - [`processor`] — [`ForecastProcessor`]: keeps the model registry (a
//!   fold over `model.updates`, in event time) and, per instrument, the
//!   `prod` version of its forecast model key loaded; publishes one
//!   [`Forecast`](autotrain_schemas::Forecast) per feature row. When `prod`
//!   moves the next row is predicted by the new version (no restart, no
//!   bar skipped), and every forecast names the version that made it.
//!   A forecast depends on its bar and the model alone, so the state is
//!   only the registry: restored from `model.updates`.

pub mod processor;

pub use processor::{ForecastInput, ForecastProcessor, ForecastStats};
