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
}

payload!(TradeOutcome, "TradeOutcome", "trade_outcome.avsc");
