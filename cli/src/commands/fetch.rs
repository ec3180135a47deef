//! `autotrain fetch`: bars from an exchange's REST API into
//! `market.bars.raw` — a backfill (`--to`), or a backfill that goes on
//! polling live (no `--to`) until Ctrl-C. Each stream resumes from its
//! watermark on `source.watermarks`; all streams of one run share one
//! request budget.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use autotrain_connector_exchange::{
    load_watermarks, poll_stream, Api, Endpoint, Fetcher, FetcherConfig, PollConfig, StreamId,
};
use autotrain_connector_file::parse_ts;
use autotrain_kafka::Producer;
use autotrain_validator::parse_timeframe;
use futures::future::try_join_all;

use crate::config::Config;
use crate::context::{shutdown_signal, Context};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiStyle {
    /// `GET /api/v3/klines` (Binance and compatible).
    Binance,
    /// `GET /api/v3/coins/{coin}/ohlc/range` (CoinGecko and compatible).
    Coingecko,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub api: ApiStyle,
    /// Base URL of the API (`https://api.binance.com`).
    #[arg(long)]
    pub base_url: String,
    /// Exchange name in instrument ids (default: the API style's name).
    #[arg(long)]
    pub exchange: Option<String>,
    /// Symbols (Binance: `BTCUSDT`; CoinGecko: coin ids like `bitcoin`).
    #[arg(long = "symbol", required = true, num_args = 1..)]
    pub symbols: Vec<String>,
    /// Quote currency for CoinGecko-style requests.
    #[arg(long, default_value = "usd")]
    pub vs: String,
    /// Bar length: 1m, 5m, 30m, 1h, 1d, …
    #[arg(long)]
    pub timeframe: String,
    /// First bar wanted (ISO-8601 or epoch); streams with a watermark
    /// resume from it instead.
    #[arg(long)]
    pub from: String,
    /// Stop before this bar (backfill only). Without it: poll live.
    #[arg(long)]
    pub to: Option<String>,
    /// Seconds between live polls.
    #[arg(long, default_value_t = 30.0)]
    pub poll_seconds: f64,
    /// Requests per second, shared by all symbols.
    #[arg(long, default_value_t = 5)]
    pub rate: u32,
    /// Bars re-read before the watermark on each live poll (late
    /// revisions by the exchange).
    #[arg(long, default_value_t = 2)]
    pub revisit: i64,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let step = parse_timeframe(&args.timeframe)
        .with_context(|| format!("unknown --timeframe {:?}", args.timeframe))?;
    let from = parse_ts(&args.from)
        .map_err(anyhow::Error::msg)
        .context("--from")?;
    let to = args
        .to
        .as_deref()
        .map(|t| parse_ts(t).map_err(anyhow::Error::msg).context("--to"))
        .transpose()?;
    let exchange = args.exchange.clone().unwrap_or_else(|| match args.api {
        ApiStyle::Binance => "binance".into(),
        ApiStyle::Coingecko => "coingecko".into(),
    });
    let fetcher = Fetcher::new(FetcherConfig {
        requests_per_second: args.rate,
        burst: args.rate,
        ..FetcherConfig::default()
    })?;
    let producer = Producer::new(&ctx.settings)?;
    let settings = ctx.settings.clone();
    let watermarks = tokio::task::spawn_blocking(move || load_watermarks(&settings)).await??;
    let now: Arc<dyn Fn() -> i64 + Send + Sync> =
        Arc::new(|| chrono::Utc::now().timestamp_millis());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let polls = args.symbols.iter().map(|symbol| {
        let api = match args.api {
            ApiStyle::Binance => Api::BinanceKlines,
            ApiStyle::Coingecko => Api::CoinGeckoOhlc {
                coin: symbol.clone(),
                vs: args.vs.clone(),
            },
        };
        let stream = StreamId {
            exchange: exchange.clone(),
            symbol: symbol.clone(),
            timeframe: args.timeframe.clone(),
            step_ms: step,
        };
        let watermark = watermarks.get(&stream.key()).cloned();
        let poll = PollConfig {
            stream,
            endpoint: Endpoint::new(api, &args.base_url),
            from_ms: from,
            to_ms: to,
            poll_interval: Duration::from_secs_f64(args.poll_seconds.max(0.01)),
            settle_ms: 2 * step,
            revisit_bars: args.revisit,
        };
        let (fetcher, producer, now) = (&fetcher, &producer, now.clone());
        let mut stop = stop_rx.clone();
        async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            poll_stream(&poll, fetcher, producer, watermark, now, shutdown).await
        }
    });
    let reports = try_join_all(polls).await?;
    for r in &reports {
        println!("{}", serde_json::to_string(r)?);
    }
    eprintln!("{}", serde_json::to_string(&fetcher.stats.snapshot())?);
    Ok(())
}
