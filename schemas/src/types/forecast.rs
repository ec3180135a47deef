use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// A forecast for one bar (`schemas/forecast.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    pub instrument: String,
    pub timeframe: String,
    pub ts: i64,
    pub model_key: String,
    pub model_version: i32,
    pub target: String,
    pub prediction: f64,
}

payload!(Forecast, "Forecast", "forecast.avsc");
