use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// A realised trade result from the engine (`schemas/trade_outcome.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TradeOutcome {
    pub trade_id: String,
    pub strategy: String,
    pub instrument: String,
    pub config_id: String,
    pub preset_id: String,
    pub reward: f64,
    pub context: Vec<f64>,
    pub ts: i64,
    /// What the strategy's safe preset would have earned on the same bar.
    #[serde(default)]
    pub baseline_reward: Option<f64>,
    /// The position under `config_id` was flat: published for
    /// `baseline_reward` only.
    #[serde(default)]
    pub flat: bool,
}

payload!(
    TradeOutcome,
    "TradeOutcome",
    "trade_outcome.avsc",
    "trade_outcome.v1.avsc"
);
