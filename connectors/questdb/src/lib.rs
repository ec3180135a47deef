//! Sink connector: validated bars, flags, features and regime posteriors
//! into QuestDB (what a Grafana panel over QuestDB queries).
//!
//! # Layout
//! - [`rows`] — how a `Bar`, `ValidationFlag`, `FeatureVector` or
//!   `RegimePosterior` becomes an ILP row (table,
//!   symbols, columns, designated timestamp = the bar's ts). Pure; tested
//!   against the line-protocol text `questdb-rs` produces.
//! - [`sink`] — [`QuestDbSink`]: a [`Sink`](autotrain_kafka::Sink) for
//!   `run_sink`: rows batch up and are flushed over ILP/HTTP; the offsets
//!   of flushed rows are stored only after QuestDB accepted them.
//!
//! - [`tables`] — `tables.sql` beside this crate, run through QuestDB's
//!   SQL endpoint when the sink starts: the tables with `DEDUP UPSERT
//!   KEYS`, so a re-sent batch (after a crash) or a corrected bar
//!   overwrites rather than duplicates.

pub mod rows;
pub mod sink;
pub mod tables;

pub use rows::{
    write_bar, write_features, write_flag, write_regime, BARS_TABLE, FEATURES_TABLE, FLAGS_TABLE,
    REGIMES_TABLE,
};
pub use sink::{QuestDbSink, SinkInput, INPUTS};
pub use tables::{create_tables, SqlEndpoint, TablesError, TABLES_SQL};
