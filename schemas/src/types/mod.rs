//! One Rust type per `.avsc` file. Field names, order and types follow the
//! schema exactly; `tests/schema_match.rs` proves it.

mod bar;
mod data_claim;
mod dead_letter;
mod feature_build;
mod feature_vector;
mod forecast;
mod model_version;
mod param_update;
mod preset_registration;
mod regime_posterior;
mod source_watermark;
mod trade_outcome;
mod training_command;
mod training_status;
mod training_trigger;
mod validation_flag;

pub use bar::Bar;
pub use data_claim::{ClaimMode, ClaimState, DataClaim};
pub use dead_letter::{DeadLetter, ErrorKind};
pub use feature_build::{BuildKind, FeatureBuild, InputRange};
pub use feature_vector::{FeatureValue, FeatureVector};
pub use forecast::Forecast;
pub use model_version::{Manifest, ModelVersion, OffsetRange, RegistryEvent};
pub use param_update::{Effective, ParamUpdate, ParamValue, UpdateReason};
pub use preset_registration::{PresetRegistration, PresetValue};
pub use regime_posterior::RegimePosterior;
pub use source_watermark::SourceWatermark;
pub use trade_outcome::TradeOutcome;
pub use training_command::{CommandAction, TrainingCommand};
pub use training_status::{Metric, TrainingState, TrainingStatus};
pub use training_trigger::{DriftEvidence, Param, Priority, TrainingTrigger, TriggerReason};
pub use validation_flag::{FlagKind, HitlState, Severity, ValidationFlag};
