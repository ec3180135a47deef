//! [`StreamId`]: which bars a poller fetches.

/// One source stream: an exchange's bars of one symbol and bar length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    /// Exchange name as it appears in instrument ids (`binance`).
    pub exchange: String,
    /// Symbol as the exchange spells it (`BTCUSDT`).
    pub symbol: String,
    /// Bar length as text (`30m`).
    pub timeframe: String,
    /// Bar length in milliseconds.
    pub step_ms: i64,
}

impl StreamId {
    /// The watermark key: `exchange:SYMBOL:timeframe`.
    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.exchange, self.symbol, self.timeframe)
    }

    /// The record key of its bars: `exchange:SYMBOL`.
    pub fn instrument(&self) -> String {
        format!("{}:{}", self.exchange, self.symbol)
    }
}
