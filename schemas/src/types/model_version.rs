use serde::{Deserialize, Serialize};

use crate::payload::payload;
use crate::types::{Metric, Param};

/// An event of the model registry (`schemas/model_version.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub model_key: String,
    pub version: i32,
    pub event: RegistryEvent,
    pub training_id: Option<String>,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub parameters: Option<Vec<u8>>,
    pub artifact_hash: Option<String>,
    pub parameter_hash: String,
    pub metrics: Vec<Metric>,
    pub tags: Vec<String>,
    pub manifest: Option<Manifest>,
    pub alias: Option<String>,
    pub previous_version: Option<i32>,
    /// Wall-clock time the event was written.
    pub at: i64,
    /// Event time from which the event takes effect (see the schema).
    #[serde(default)]
    pub effective_from: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryEvent {
    Registered,
    AliasMoved,
    Rollback,
}

/// Everything needed to rebuild a model bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub trigger_id: String,
    pub code_version: String,
    pub feature_contract_version: String,
    pub inputs: Vec<OffsetRange>,
    pub split_version: String,
    pub reference_hash: String,
    pub hyperparams: Vec<Param>,
    pub seed: i64,
    /// The dataset version the trigger named, as asked.
    #[serde(default)]
    pub dataset_version: Option<String>,
    /// Git commit of the trainer's build (`-dirty` when the tree had changes).
    #[serde(default)]
    pub code_commit: Option<String>,
    /// SHA-256 of the feature contract's definitions.
    #[serde(default)]
    pub feature_contract_hash: Option<String>,
    /// `build_id` of the training set's `FeatureBuild` (`features.builds`).
    #[serde(default)]
    pub feature_build: Option<String>,
}

/// `[start, end)` offsets of one topic partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

payload!(
    ModelVersion,
    "ModelVersion",
    "model_version.avsc",
    "model_version.v1.avsc",
    "model_version.v2.avsc",
    "model_version.v3.avsc"
);
