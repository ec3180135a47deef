//! The features processor: `market.bars` ⇒ `features`, under a versioned
//! feature contract.
//!
//! # Layout
//! - [`contract`] — [`Contract`]: `contract.toml` (names, kinds, windows,
//!   version) and the lock check that a changed definition gets a new
//!   version.
//! - [`compute`] — [`Computer`]: the features of one instrument, one bar at
//!   a time. Pure.
//! - [`engine`] — [`Engine`]: one instrument maintained incrementally, with
//!   checkpoints so late and corrected bars recompute only from where they
//!   land and re-publish only what changed. Pure.
//! - [`batch`] — the from-scratch reference the engine is tested against.
//! - [`dataflow`] — the engines on timely workers, bars exchanged by
//!   instrument: the offline path (`autotrain features`) and the benchmark.
//! - [`window`] — training-window statistics (count, mean, std per
//!   instrument and feature over the last N buckets) on differential
//!   dataflow: valid rows as an upsert arrangement (corrections and
//!   retractions), aggregates by reduce.
//! - [`training_set`] — point-in-time training sets read from `features`
//!   (a value is visible from the time it was computed).
//! - [`manifest`] — `FeatureBuild` manifests of materialised tables.
//! - [`processor`] — [`FeaturesProcessor`]: the engines as a runner
//!   `Processor` (the online path; Kafka partitions spread instruments over
//!   instances).

pub mod batch;
pub mod compute;
pub mod contract;
pub mod dataflow;
pub mod engine;
pub mod manifest;
pub mod processor;
pub mod training_set;
pub mod window;

pub use compute::Computer;
pub use contract::{Contract, ContractError, Feature, Kind};
pub use engine::{Engine, Point, Row, CHECKPOINT_EVERY};
pub use processor::FeaturesProcessor;
pub use window::{Moments, RowUpdate, WindowChange, WindowSpec};
