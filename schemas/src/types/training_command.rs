use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// An ops command to the trainer (`schemas/training_command.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingCommand {
    pub command_id: String,
    pub action: CommandAction,
    pub training_id: Option<String>,
    pub model_key: Option<String>,
    pub version: Option<i32>,
    pub tenant: Option<String>,
    pub actor: String,
    pub reason: String,
    pub at: i64,
    /// Rollback: override a re-score worse than the tolerance (with a reason).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    Cancel,
    Retry,
    Promote,
    Rollback,
}

payload!(
    TrainingCommand,
    "TrainingCommand",
    "training_command.avsc",
    "training_command.v1.avsc"
);
