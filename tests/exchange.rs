//! The exchange connector against a local exchange over real HTTP and the
//! embedded broker: a backfill through 429s, a 500, a truncated body, an
//! out-of-order page and a wrong-range page publishes every recorded bar
//! once; the live poller that follows resumes from the watermark topic,
//! never re-asks the backfilled range, discards unchanged re-reads by
//! content address and re-publishes a bar the exchange revised.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_connector_exchange::{
    load_watermarks, poll_stream, Api, Endpoint, Fetcher, FetcherConfig, PollConfig, StreamId,
};
use autotrain_integration_tests::exchange::{ExchangeServer, Fault};
use autotrain_integration_tests::*;
use autotrain_kafka::{ClientSettings, Producer};
use autotrain_schemas::{decode, Bar};

const STEP: i64 = 1_800_000;

fn recorded(n: usize, exchange: &str, symbol: &str) -> Vec<Bar> {
    bars("bitfinex_BTCUSD_30m.csv", n)
        .into_iter()
        .map(|b| Bar {
            exchange: exchange.into(),
            symbol: symbol.into(),
            ..b
        })
        .collect()
}

fn fast_fetcher() -> Result<Fetcher> {
    Ok(Fetcher::new(FetcherConfig {
        requests_per_second: 200,
        burst: 20,
        timeout: Duration::from_secs(5),
        retry_min_delay: Duration::from_millis(10),
        retry_max_delay: Duration::from_millis(200),
        retry_times: 5,
    })?)
}

fn stream(exchange: &str, symbol: &str) -> StreamId {
    StreamId {
        exchange: exchange.into(),
        symbol: symbol.into(),
        timeframe: "30m".into(),
        step_ms: STEP,
    }
}

/// ts → distinct contents (close, volume) on market.bars.raw for a symbol.
fn published(
    settings: &ClientSettings,
    symbol: &str,
) -> Result<BTreeMap<i64, HashSet<(u64, u64)>>> {
    let mut by_ts: BTreeMap<i64, HashSet<(u64, u64)>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for (id, _, bytes) in read_topic(settings, "market.bars.raw", 0, Duration::from_secs(30))? {
        let bar: Bar = decode(&bytes)?;
        if bar.symbol != symbol || !ids.insert(id.expect("event id")) {
            continue;
        }
        by_ts
            .entry(bar.ts)
            .or_default()
            .insert((bar.close.to_bits(), bar.volume.to_bits()));
    }
    Ok(by_ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_through_faults_then_live_polling_from_the_watermark() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("exchange").await?;
    let data = recorded(2_500, "binance", "BTCUSDT");
    let (first, last) = (data[0].ts, data[data.len() - 1].ts);
    let server = ExchangeServer::start(data.clone()).await?;
    server.push_faults(&[
        Fault::RateLimited { retry_after_s: 1 },
        Fault::ServerError,
        Fault::Truncated,
        Fault::OutOfOrder,
    ]);
    let endpoint = Endpoint::new(Api::BinanceKlines, &server.base_url());
    let producer = Producer::new(&settings)?;

    // Backfill up to bar 1,500 through the faults above.
    let t1 = data[1_500].ts;
    let fetcher = fast_fetcher()?;
    let backfill = PollConfig {
        stream: stream("binance", "BTCUSDT"),
        endpoint: endpoint.clone(),
        from_ms: first,
        to_ms: Some(t1),
        poll_interval: Duration::from_millis(20),
        settle_ms: 2 * STEP,
        revisit_bars: 0,
    };
    let now = Arc::new(move || last + 10 * STEP);
    // The fifth request (page 2) gets page 1's body again.
    server.push_faults(&[Fault::Previous]);
    let report = poll_stream(
        &backfill,
        &fetcher,
        &producer,
        None,
        now.clone(),
        std::future::pending(),
    )
    .await?;
    let counts = fetcher.stats.snapshot();
    eprintln!("backfill {report:?}\n{counts:?}");
    assert_eq!((counts.rate_limited, counts.server_errors), (1, 1));
    assert!(counts.malformed >= 1 && counts.retries >= 3, "{counts:?}");
    assert!(
        report.pages_out_of_order >= 1 && report.pages_off_range >= 1,
        "{report:?}"
    );
    let want_backfill = data.iter().filter(|b| b.ts < t1).count() as u64;
    assert_eq!(report.bars_published, want_backfill);
    assert_eq!(report.next_ts, t1);

    // Live: a new fetcher resumes from the watermark topic, re-reading
    // three bars before it each poll. Midway the exchange revises its last
    // bar.
    let watermarks = tokio::task::spawn_blocking({
        let s = settings.clone();
        move || load_watermarks(&s)
    })
    .await??;
    let wm = watermarks.get("binance:BTCUSDT:30m").cloned();
    assert_eq!(wm.as_ref().map(|w| w.next_ts), Some(t1));
    let live = PollConfig {
        to_ms: None,
        revisit_bars: 3,
        ..backfill.clone()
    };
    let served_before = server.served().len();
    let fetcher = fast_fetcher()?;
    let end = last + STEP;
    let script = async {
        let polls_at_end = |s: &ExchangeServer| {
            s.served()
                .iter()
                .filter(|x| x.fault.is_none() && x.to_ms >= end)
                .count()
        };
        while polls_at_end(&server) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        {
            let mut s = server.lock();
            if let Some(b) = s.bars.last_mut() {
                b.close *= 1.01;
                b.high = b.high.max(b.close);
            }
        }
        let seen = polls_at_end(&server);
        while polls_at_end(&server) < seen + 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let report = poll_stream(&live, &fetcher, &producer, wm, now, script).await?;
    eprintln!("live {report:?}\n{:?}", fetcher.stats.snapshot());
    assert_eq!(report.resumed_from, t1);
    assert_eq!(report.next_ts, end);
    assert_eq!(report.bars_published, data.len() as u64 - want_backfill + 1);
    assert_eq!(report.bars_revised, 1);
    assert!(report.chunks_discarded >= 2, "{report:?}");
    // The live poller never asked for the backfilled range (beyond its
    // three-bar look-back).
    let earliest_live = server.served()[served_before..]
        .iter()
        .map(|s| s.from_ms)
        .min()
        .unwrap_or(i64::MAX);
    assert!(
        earliest_live >= t1 - 3 * STEP,
        "live asked from {earliest_live}, backfill ended at {t1}"
    );

    // On the topic: every recorded bar once; the revised one twice (the
    // validator turns the second into a correction).
    let on_topic = published(&settings, "BTCUSDT")?;
    assert_eq!(on_topic.len(), data.len());
    for (ts, contents) in &on_topic {
        let want = if *ts == last { 2 } else { 1 };
        assert_eq!(contents.len(), want, "ts {ts}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coingecko_style_ohlc_range_backfill() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("coingecko").await?;
    let data = recorded(300, "coingecko", "bitcoin");
    let server = ExchangeServer::start(data.clone()).await?;
    let endpoint = Endpoint::new(
        Api::CoinGeckoOhlc {
            coin: "bitcoin".into(),
            vs: "usd".into(),
        },
        &server.base_url(),
    );
    let config = PollConfig {
        stream: stream("coingecko", "bitcoin"),
        endpoint,
        from_ms: data[0].ts,
        to_ms: Some(data[data.len() - 1].ts + STEP),
        poll_interval: Duration::from_millis(20),
        settle_ms: 0,
        revisit_bars: 0,
    };
    let fetcher = fast_fetcher()?;
    let producer = Producer::new(&settings)?;
    let now = Arc::new(|| i64::MAX / 2);
    let report = poll_stream(
        &config,
        &fetcher,
        &producer,
        None,
        now,
        std::future::pending(),
    )
    .await?;
    assert_eq!(report.bars_published, data.len() as u64);
    let on_topic = published(&settings, "bitcoin")?;
    let want: BTreeMap<i64, HashSet<(u64, u64)>> = data
        .iter()
        .map(|b| (b.ts, HashSet::from([(b.close.to_bits(), 0f64.to_bits())])))
        .collect();
    assert_eq!(on_topic, want, "bars at their start time, volume 0");
    Ok(())
}
