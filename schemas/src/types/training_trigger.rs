use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// A request to train a model (`schemas/training_trigger.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingTrigger {
    pub trigger_id: String,
    pub model_key: String,
    pub tenant: Option<String>,
    pub reason: TriggerReason,
    pub instruments: Vec<String>,
    pub dataset_version: Option<String>,
    pub feature_contract_version: Option<String>,
    pub hyperparams: Vec<Param>,
    pub seed: i64,
    pub priority: Priority,
    pub auto_promote: bool,
    pub evidence: Option<DriftEvidence>,
    pub rerun_of: Option<String>,
    /// Event time the run trains as of.
    pub created_at: i64,
    /// Bar time at which the data fired the trigger; its run takes effect
    /// from here plus the activation delay (`None` for ops' triggers).
    pub revealed_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerReason {
    Drift,
    Schedule,
    Manual,
    Backfill,
    Rerun,
    Retry,
}

/// Ordered low → urgent, so `Ord` sorts by urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

/// A named hyper-parameter, value as text (`"3"`, `"diag"`, `"1e-4"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub value: String,
}

/// What a drift detector saw when it fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEvidence {
    pub detector: String,
    pub instrument: String,
    pub feature: String,
    pub statistic: f64,
    pub threshold: f64,
    pub window: i32,
}

payload!(
    TrainingTrigger,
    "TrainingTrigger",
    "training_trigger.avsc",
    "training_trigger.v1.avsc"
);
