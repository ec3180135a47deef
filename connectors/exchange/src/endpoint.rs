//! The two REST styles autotrain reads, as pure functions: the URL for a
//! range of bars and the bars in a response body.
//!
//! - **Binance-style klines**: `GET {base}/api/v3/klines?symbol=&interval=
//!   &startTime=&endTime=&limit=` ⇒ `[[open_time, "o", "h", "l", "c", "v",
//!   close_time, …], …]`, at most 1,000 rows a page; `open_time` is the bar
//!   start.
//! - **CoinGecko-style OHLC range**: `GET {base}/api/v3/coins/{coin}/ohlc/
//!   range?vs_currency=&from=&to=&interval=` (seconds) ⇒ `[[time, o, h, l,
//!   c], …]` where `time` is the candle's *close*; there is no volume, so
//!   bars carry volume 0.

use autotrain_schemas::Bar;
use serde_json::Value;

use crate::error::FetchError;
use crate::stream::StreamId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    BinanceKlines,
    /// `coin` is the API's coin id (`bitcoin`), `vs` the quote currency.
    CoinGeckoOhlc {
        coin: String,
        vs: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub api: Api,
    /// `https://api.binance.com`, or a local server in tests.
    pub base_url: String,
}

impl Endpoint {
    pub fn new(api: Api, base_url: &str) -> Self {
        Endpoint {
            api,
            base_url: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// Bars one request may return.
    pub fn page_bars(&self, stream: &StreamId) -> i64 {
        match self.api {
            Api::BinanceKlines => 1_000,
            // The range endpoint's granularity follows the span asked for:
            // one day gives 30-minute candles, up to 90 days hourly.
            Api::CoinGeckoOhlc { .. } => (86_400_000 / stream.step_ms).clamp(1, 2_000),
        }
    }

    /// Checks the endpoint can serve this bar length.
    pub fn supports(&self, stream: &StreamId) -> Result<(), FetchError> {
        let ok = match self.api {
            Api::BinanceKlines => [
                "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
            ]
            .contains(&stream.timeframe.as_str()),
            Api::CoinGeckoOhlc { .. } => {
                ["30m", "1h", "4h", "1d"].contains(&stream.timeframe.as_str())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(FetchError::Config(format!(
                "{} does not serve {} bars",
                self.describe(),
                stream.timeframe
            )))
        }
    }

    pub fn describe(&self) -> String {
        match &self.api {
            Api::BinanceKlines => format!("binance-klines {}", self.base_url),
            Api::CoinGeckoOhlc { coin, .. } => format!("coingecko-ohlc {} ({coin})", self.base_url),
        }
    }

    /// URL for the bars starting in `[from_ms, to_ms)`.
    pub fn url(&self, stream: &StreamId, from_ms: i64, to_ms: i64) -> String {
        match &self.api {
            Api::BinanceKlines => format!(
                "{}/api/v3/klines?symbol={}&interval={}&startTime={from_ms}&endTime={}&limit={}",
                self.base_url,
                stream.symbol,
                stream.timeframe,
                to_ms - 1,
                self.page_bars(stream)
            ),
            Api::CoinGeckoOhlc { coin, vs } => {
                let interval = match stream.timeframe.as_str() {
                    "1h" | "4h" => "&interval=hourly",
                    "1d" => "&interval=daily",
                    _ => "",
                };
                // Candles are stamped with their close: ask for closes in
                // (from, to].
                format!(
                    "{}/api/v3/coins/{coin}/ohlc/range?vs_currency={vs}&from={}&to={}{interval}",
                    self.base_url,
                    (from_ms + stream.step_ms) / 1_000,
                    (to_ms + stream.step_ms - 1) / 1_000,
                )
            }
        }
    }

    /// Bars in a response body (any order; the chunk step sorts them).
    pub fn parse(
        &self,
        stream: &StreamId,
        body: &[u8],
        source: &str,
    ) -> Result<Vec<Bar>, FetchError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| FetchError::Malformed(format!("not JSON ({} bytes): {e}", body.len())))?;
        let rows = value.as_array().ok_or_else(|| {
            FetchError::Malformed(format!("expected an array of rows, got {}", kind(&value)))
        })?;
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                self.bar(stream, row, source)
                    .map_err(|e| FetchError::Malformed(format!("row {i}: {e}")))
            })
            .collect()
    }

    fn bar(&self, stream: &StreamId, row: &Value, source: &str) -> Result<Bar, String> {
        let cells = row
            .as_array()
            .ok_or_else(|| format!("expected an array, got {}", kind(row)))?;
        let num = |i: usize| -> Result<f64, String> {
            let cell = cells.get(i).ok_or_else(|| format!("missing column {i}"))?;
            match cell {
                Value::Number(n) => n.as_f64().ok_or_else(|| format!("column {i}: {n}")),
                Value::String(s) => s
                    .parse()
                    .map_err(|_| format!("column {i}: {s:?} is not a number")),
                other => Err(format!("column {i}: {}", kind(other))),
            }
        };
        let time = cells
            .first()
            .and_then(Value::as_i64)
            .ok_or("column 0: expected an integer time")?;
        let (ts, volume) = match self.api {
            Api::BinanceKlines => (time, num(5)?),
            Api::CoinGeckoOhlc { .. } => (time - stream.step_ms, 0.0),
        };
        Ok(Bar {
            exchange: stream.exchange.clone(),
            symbol: stream.symbol.clone(),
            timeframe: stream.timeframe.clone(),
            ts,
            open: num(1)?,
            high: num(2)?,
            low: num(3)?,
            close: num(4)?,
            volume,
            source: source.to_string(),
            checksum: None,
            revision: 0,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(tf: &str, step: i64) -> StreamId {
        StreamId {
            exchange: "binance".into(),
            symbol: "BTCUSDT".into(),
            timeframe: tf.into(),
            step_ms: step,
        }
    }

    /// Two rows as Binance documents its klines response.
    const KLINES: &str = r#"[
      [1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"],
      [1499040060000,"0.01577100","0.01600000","0.01570000","0.01590000","1000.5",1499040119999,"15.9",12,"500.1","7.9","0"]
    ]"#;

    #[test]
    fn binance_klines_urls_and_rows() {
        let e = Endpoint::new(Api::BinanceKlines, "http://127.0.0.1:9/");
        let s = stream("1m", 60_000);
        assert_eq!(
            e.url(&s, 1_499_040_000_000, 1_499_040_120_000),
            "http://127.0.0.1:9/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=1499040000000&endTime=1499040119999&limit=1000"
        );
        let bars = e.parse(&s, KLINES.as_bytes(), "t").expect("parses");
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].ts, 1_499_040_000_000);
        assert_eq!(bars[0].high, 0.8);
        assert_eq!(bars[1].volume, 1000.5);
        assert_eq!(bars[1].symbol, "BTCUSDT");
    }

    #[test]
    fn coingecko_rows_are_stamped_with_their_close() {
        let e = Endpoint::new(
            Api::CoinGeckoOhlc {
                coin: "bitcoin".into(),
                vs: "usd".into(),
            },
            "http://h",
        );
        let s = stream("30m", 1_800_000);
        assert_eq!(
            e.url(&s, 1_800_000_000, 1_800_000_000 + 3_600_000),
            "http://h/api/v3/coins/bitcoin/ohlc/range?vs_currency=usd&from=1801800&to=1805399"
        );
        let bars = e
            .parse(&s, b"[[1801800000, 10.0, 12.5, 9.5, 11.0]]", "t")
            .expect("parses");
        assert_eq!(bars[0].ts, 1_800_000_000);
        assert_eq!((bars[0].close, bars[0].volume), (11.0, 0.0));
    }

    #[test]
    fn unreadable_bodies_are_malformed_errors() {
        let e = Endpoint::new(Api::BinanceKlines, "http://h");
        let s = stream("1m", 60_000);
        let truncated = &KLINES.as_bytes()[..KLINES.len() / 2];
        for body in [
            truncated,
            b"{\"code\":-1121}".as_slice(),
            b"[[1, \"x\"]]",
            b"[[\"t\"]]",
        ] {
            match e.parse(&s, body, "t") {
                Err(FetchError::Malformed(_)) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        assert!(e.supports(&stream("7m", 420_000)).is_err());
    }
}
