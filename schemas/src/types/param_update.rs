use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// Parameters a strategy uses for new positions (`schemas/param_update.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamUpdate {
    pub strategy: String,
    pub instrument: String,
    pub config_id: String,
    pub preset_id: String,
    pub params: Vec<ParamValue>,
    pub model_key: Option<String>,
    pub model_version: Option<i32>,
    pub reason: UpdateReason,
    pub effective_for: Effective,
    pub context: Vec<f64>,
    pub at: i64,
    /// Manual updates: who sent it.
    #[serde(default)]
    pub actor: Option<String>,
    /// Manual updates: why.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamValue {
    pub name: String,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateReason {
    Initial,
    Exploration,
    Exploitation,
    KillSwitch,
    Manual,
    /// The conservative controller's fallback to the safe preset: its
    /// budget no longer covers the risk of the preset in force.
    Conservative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effective {
    NewPositions,
}

payload!(
    ParamUpdate,
    "ParamUpdate",
    "param_update.avsc",
    "param_update.v1.avsc",
    "param_update.v2.avsc",
    "param_update.v3.avsc"
);
