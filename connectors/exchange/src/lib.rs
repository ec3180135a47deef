//! Source connector for exchange REST endpoints: historical backfill and
//! live polling of OHLCV bars into `market.bars.raw`.
//!
//! # Layout
//! - [`stream`] — [`StreamId`]: one `exchange:SYMBOL:timeframe` stream.
//! - [`endpoint`] — [`Endpoint`]: the two API styles (Binance-style klines,
//!   CoinGecko-style OHLC range): request URLs and response parsing. Pure.
//! - [`chunk`] — [`Chunk`]: a fetched page normalised (sorted, repeats and
//!   out-of-range rows removed, still-open bars dropped) and content-hashed
//!   (SHA-256). Pure.
//! - [`fetcher`] — [`Fetcher`]: HTTP with a shared token-bucket rate limit
//!   (`governor`) and exponential backoff with jitter (`backon`) on 429,
//!   5xx, timeouts and unreadable bodies.
//! - [`watermark`] — where each stream stands, kept on the compacted
//!   `source.watermarks` topic.
//! - [`poller`] — [`poll_stream`]: the loop that fetches from the
//!   watermark, publishes each new chunk, then advances the watermark; in
//!   live mode it keeps polling for newly closed bars.
//! - [`error`] — [`FetchError`], retriable or not.

pub mod chunk;
pub mod endpoint;
pub mod error;
pub mod fetcher;
pub mod poller;
pub mod stream;
pub mod watermark;

pub use chunk::{normalize, Chunk};
pub use endpoint::{Api, Endpoint};
pub use error::FetchError;
pub use fetcher::{FetchStats, Fetcher, FetcherConfig};
pub use poller::{poll_stream, PollConfig, StreamReport};
pub use stream::StreamId;
pub use watermark::{load_watermarks, publish_watermark};
