use serde::{Deserialize, Serialize};

use crate::payload::payload;
use crate::types::FeatureValue;

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
    /// The bar's feature values (absent before v2 of the schema: empty).
    pub features: Vec<FeatureValue>,
}

payload!(
    RegimePosterior,
    "RegimePosterior",
    "regime_posterior.avsc",
    "regime_posterior.v1.avsc"
);
