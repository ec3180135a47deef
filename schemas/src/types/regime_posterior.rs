use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// Regime probabilities for one bar (`schemas/regime_posterior.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegimePosterior {
    pub instrument: String,
    pub timeframe: String,
    pub ts: i64,
    pub model_key: String,
    pub model_version: i32,
    pub probabilities: Vec<f64>,
    pub regime: i32,
    pub loglik: f64,
}

payload!(RegimePosterior, "RegimePosterior", "regime_posterior.avsc");
