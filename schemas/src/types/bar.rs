use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// One OHLCV bar (`schemas/bar.avsc`). `ts` is the bar start, epoch millis UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    pub exchange: String,
    pub symbol: String,
    pub timeframe: String,
    pub ts: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub source: String,
    pub checksum: Option<String>,
    pub revision: i32,
}

payload!(Bar, "Bar", "bar.avsc", "bar.v1.avsc");

impl Bar {
    /// The partition key: `exchange:symbol`.
    pub fn instrument(&self) -> String {
        format!("{}:{}", self.exchange, self.symbol)
    }
}
