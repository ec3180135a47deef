use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// The manifest of a materialised feature table
/// (`schemas/feature_build.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBuild {
    pub build_id: String,
    pub kind: BuildKind,
    pub contract_version: String,
    pub contract_hash: String,
    pub source: String,
    pub inputs: Vec<InputRange>,
    pub as_of: Option<i64>,
    pub rows: i64,
    pub output_sha256: Option<String>,
    pub built_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildKind {
    File,
    TrainingSet,
}

/// Offsets `[first_offset, next_offset)` of one partition that were read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRange {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub next_offset: i64,
}

payload!(FeatureBuild, "FeatureBuild", "feature_build.avsc");
