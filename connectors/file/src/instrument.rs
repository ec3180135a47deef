//! Which instrument a bar file holds, from its name
//! (`<exchange>_<SYMBOL>_<timeframe>[_anything].csv`).

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentId {
    pub exchange: String,
    pub symbol: String,
    pub timeframe: String,
}

impl InstrumentId {
    /// `exchange:SYMBOL`, the key bars are partitioned by.
    pub fn key(&self) -> String {
        format!("{}:{}", self.exchange, self.symbol)
    }

    /// Parses `exchange:SYMBOL` plus a timeframe.
    pub fn parse(instrument: &str, timeframe: &str) -> Option<Self> {
        let (exchange, symbol) = instrument.split_once(':')?;
        (!exchange.is_empty() && !symbol.is_empty() && is_timeframe(timeframe)).then(|| {
            InstrumentId {
                exchange: exchange.to_string(),
                symbol: symbol.to_string(),
                timeframe: timeframe.to_string(),
            }
        })
    }
}

/// `bitfinex_BTCUSD_30m.csv` ⇒ bitfinex, BTCUSD, 30m.
pub fn infer_instrument(path: &Path) -> Option<InstrumentId> {
    let stem = path.file_stem()?.to_str()?;
    let mut parts = stem.split('_');
    let exchange = parts.next()?;
    let symbol = parts.next()?;
    let timeframe = parts.next()?;
    InstrumentId::parse(&format!("{exchange}:{symbol}"), timeframe)
}

fn is_timeframe(tf: &str) -> bool {
    let Some((last, _)) = tf.char_indices().next_back() else {
        return false;
    };
    let (n, unit) = tf.split_at(last);
    !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "s" | "m" | "h" | "d" | "w")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_instruments() {
        let id = infer_instrument(Path::new("data/bitfinex_BTCUSD_30m.csv")).expect("parses");
        assert_eq!(id.key(), "bitfinex:BTCUSD");
        assert_eq!(id.timeframe, "30m");
        let fx = infer_instrument(Path::new("dukascopy_EURUSD_1h_ask.csv")).expect("parses");
        assert_eq!(
            (fx.symbol.as_str(), fx.timeframe.as_str()),
            ("EURUSD", "1h")
        );
        assert_eq!(infer_instrument(Path::new("bars.csv")), None);
        assert_eq!(infer_instrument(Path::new("a_B_thirty.csv")), None);
        assert_eq!(
            infer_instrument(Path::new("a_B_3¡.csv")),
            None,
            "multi-byte unit"
        );
    }
}
