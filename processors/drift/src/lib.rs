//! Drift detection and scheduling: what decides *when* to retrain.
//!
//! # Layout
//! - [`detectors`] — Page-Hinkley, ADWIN, PSI, log-likelihood decay; pure
//!   structs behind [`Detector`], one per file.
//! - [`stream`] — synthetic series with a known change, seeded (tests and
//!   `autotrain bench drift`).
//! - [`processor`] — [`DriftProcessor`]: detectors per instrument and
//!   feature over `features`, a cooldown per model key, `TrainingTrigger`s
//!   with the evidence on `training.triggers`.
//! - [`scheduler`] — [`Schedules`]: cron schedules per model key with time
//!   zones; which runs are due, missed runs caught up once.
//! - [`event_clock`] — [`EventSchedules`]: the same schedules on the bars'
//!   event time, run inside the drift processor (replays, backtests, the
//!   demo).

pub mod detectors;
pub mod event_clock;
pub mod processor;
pub mod scheduler;
pub mod stream;

pub use detectors::{Adwin, Detection, Detector, LikelihoodDecay, PageHinkley, Psi, Reference};
pub use event_clock::EventSchedules;
pub use processor::{DetectorSpec, DriftConfig, DriftInput, DriftProcessor, ModelDetectors, Watch};
pub use scheduler::{Due, Schedule, ScheduleError, Schedules};
