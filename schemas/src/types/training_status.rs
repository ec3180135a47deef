use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// One lifecycle event of a training run (`schemas/training_status.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStatus {
    pub training_id: String,
    pub model_key: String,
    pub state: TrainingState,
    pub stage: Option<String>,
    pub progress: f64,
    pub message: String,
    pub metrics: Vec<Metric>,
    pub error: Option<String>,
    pub attempt: i32,
    pub model_version: Option<i32>,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainingState {
    Queued,
    WaitingData,
    Blocked,
    Running,
    Completed,
    Failed,
    Cancelled,
    Alert,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
}

payload!(TrainingStatus, "TrainingStatus", "training_status.avsc");
