//! Sink connector: validated bars and flags into QuestDB.
//!
//! # Layout
//! - [`rows`] — how a `Bar` / `ValidationFlag` becomes an ILP row (table,
//!   symbols, columns, designated timestamp = the bar's ts). Pure; tested
//!   against the line-protocol text `questdb-rs` produces.
//! - [`sink`] — [`QuestDbSink`]: a [`Sink`](autotrain_kafka::Sink) for
//!   `run_sink`: rows batch up and are flushed over ILP/HTTP; the offsets
//!   of flushed rows are stored only after QuestDB accepted them.
//!
//! `tables.sql` beside this crate creates the tables with `DEDUP UPSERT
//! KEYS`, so a re-sent batch (after a crash) or a corrected bar overwrites
//! rather than duplicates.

pub mod rows;
pub mod sink;

pub use rows::{write_bar, write_flag, BARS_TABLE, FLAGS_TABLE};
pub use sink::{QuestDbSink, SinkInput};
