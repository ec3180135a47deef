//! The validator's pure core (no I/O): `market.bars.raw` bars in, verdicts
//! out — the bar to publish on `market.bars` (with checksum and revision),
//! flags for `market.flags`, or a duplicate to drop.
//!
//! # Layout
//! - [`calendar`] — when a market is open (24x7, FX, US equities), so
//!   closures are not gaps.
//! - [`timeframe`] — `30m` ⇒ milliseconds.
//! - [`checksum`] — content hash of a bar.
//! - [`validator`] — [`Validator`]: the per-instrument state machine.
//! - [`summary`] — [`Summary`]: counts over a run (the offline report).
//! - [`review`] — [`ReviewQueue`]: the human-in-the-loop view of
//!   `market.flags` and the decisions ops may take.
//! - [`processor`] — [`ValidatorProcessor`]: the core as a runner
//!   `Processor`: `market.bars.raw` + ops decisions ⇒ `market.bars` +
//!   `market.flags`; holds anomalous bars until approved or rejected.

pub mod calendar;
pub mod checksum;
pub mod processor;
pub mod review;
pub mod summary;
pub mod timeframe;
pub mod validator;

pub use calendar::Calendar;
pub use processor::{ops_decision, release_id, unusable, ValidatorInput, ValidatorProcessor};
pub use review::{Action, ReviewError, ReviewItem, ReviewQueue, StateFilter};
pub use summary::{GapReport, Summary};
pub use timeframe::parse_timeframe;
pub use validator::{Decided, Validator, ValidatorConfig, Verdict};
