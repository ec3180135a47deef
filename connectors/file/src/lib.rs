//! Source connector for bar files: CSV with a `ts,open,high,low,close,volume`
//! header, `ts` as ISO-8601 (UTC) or epoch seconds/milliseconds.
//!
//! Rows are yielded one at a time as `Ok(Bar)` or `Err(RowError)` with the
//! line number and raw text, so callers account for every row (publish it,
//! or dead-letter it) instead of stopping at the first bad one.
//!
//! Where this sits: used by `autotrain produce`, the demo and the tests;
//! knows nothing of Kafka.

mod csv_bars;
mod instrument;

pub use csv_bars::{parse_ts, BarReader, FileError, RowError};
pub use instrument::{infer_instrument, InstrumentId};
