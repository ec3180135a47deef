//! The validator's pure core (no I/O): `market.bars.raw` bars in, verdicts
//! out — the bar to publish on `market.bars` (with checksum and revision),
//! flags for `market.flags`, or a duplicate to drop.
//!
//! # Layout
//! - [`calendar`] — when a market is open (24x7, FX), so closures are not gaps.
//! - [`timeframe`] — `30m` ⇒ milliseconds.
//! - [`checksum`] — content hash of a bar.
//! - [`validator`] — [`Validator`]: the per-instrument state machine.
//! - [`summary`] — [`Summary`]: counts over a run (the offline report).
//! - [`processor`] — [`ValidatorProcessor`]: the core as a runner
//!   `Processor`: `market.bars.raw` ⇒ `market.bars` + `market.flags`.

pub mod calendar;
pub mod checksum;
pub mod processor;
pub mod summary;
pub mod timeframe;
pub mod validator;

pub use calendar::Calendar;
pub use processor::ValidatorProcessor;
pub use summary::{GapReport, Summary};
pub use timeframe::parse_timeframe;
pub use validator::{Validator, ValidatorConfig, Verdict};
