use serde::{Deserialize, Serialize};

use crate::payload::payload;
use crate::types::OffsetRange;

/// A training run's claim on input offsets (`schemas/data_claim.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataClaim {
    pub claim_id: String,
    pub training_id: String,
    pub model_key: String,
    pub attempt: i32,
    pub mode: ClaimMode,
    pub state: ClaimState,
    pub ranges: Vec<OffsetRange>,
    pub reason: String,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimMode {
    Strict,
    Sliding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    Claimed,
    Released,
    Consumed,
}

payload!(DataClaim, "DataClaim", "data_claim.avsc");
