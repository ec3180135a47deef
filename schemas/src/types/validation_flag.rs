use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// A data-quality finding or an ops decision on one (`schemas/validation_flag.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationFlag {
    pub flag_id: String,
    pub instrument: String,
    pub timeframe: String,
    pub kind: FlagKind,
    pub severity: Severity,
    pub ts: i64,
    pub gap_start: Option<i64>,
    pub gap_end: Option<i64>,
    pub missing_bars: Option<i32>,
    pub detail: String,
    pub state: HitlState,
    pub actor: Option<String>,
    pub decided_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    Gap,
    Anomaly,
    Ohlc,
    Stale,
    Duplicate,
    Correction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HitlState {
    Open,
    Pending,
    Approved,
    Rejected,
    Overridden,
    Resolved,
}

payload!(ValidationFlag, "ValidationFlag", "validation_flag.avsc");
