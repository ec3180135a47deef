//! The QuestDB sink through the embedded broker into a local ILP/HTTP
//! endpoint: bars and flags become one line each, failed writes (HTTP 500)
//! are retried, an undecodable record is dead-lettered, and a crash before
//! a flush re-sends only rows whose upsert keys make the repeat harmless.
//! No QuestDB server runs here: the endpoint is a stand-in that records the
//! line-protocol text.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_connector_questdb::QuestDbSink;
use autotrain_integration_tests::questdb::IlpServer;
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run_sink, OutRecord, Producer, SinkConfig};
use autotrain_schemas::{Bar, FlagKind, HitlState, Severity, ValidationFlag};
use autotrain_topics::{MARKET_BARS, MARKET_FLAGS};

const TOPICS: [&str; 2] = ["market.bars", "market.flags"];

/// Upsert key of a `market_bars` line: (symbol tags, timestamp).
fn bar_key(line: &str) -> Option<(String, String)> {
    let (head, rest) = line.split_once(' ')?;
    if !head.starts_with("market_bars,") {
        return None;
    }
    let ts = rest.rsplit_once(' ')?.1.to_string();
    Some((head.to_string(), ts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_and_flags_reach_questdb_through_failures_and_a_crash() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("questdb").await?;
    let input: Vec<Bar> = bars("bitfinex_LTCUSD_30m.csv", 3_000)
        .into_iter()
        .map(|b| Bar {
            checksum: Some(format!("{:016x}", b.ts)),
            ..b
        })
        .collect();
    publish_bars(&settings, MARKET_BARS, &input).await?;
    let flag = ValidationFlag {
        flag_id: "gap:bitfinex:ltcusd:1".into(),
        instrument: "bitfinex:LTCUSD".into(),
        timeframe: "30m".into(),
        kind: FlagKind::Gap,
        severity: Severity::Error,
        ts: input[10].ts,
        gap_start: Some(input[9].ts),
        gap_end: Some(input[10].ts),
        missing_bars: Some(1),
        detail: "1 bar(s) missing".into(),
        state: HitlState::Open,
        actor: None,
        decided_at: None,
    };
    Producer::new(&settings)?
        .enqueue(&OutRecord::from_content(
            MARKET_FLAGS,
            &flag.instrument,
            &flag,
        )?)
        .await?
        .confirm()
        .await?;
    produce_raw(
        &settings,
        "market.bars",
        "bitfinex:LTCUSD",
        b"not avro".to_vec(),
    )
    .await?;

    let server = IlpServer::start().await?;
    server.lock().fail_next = 2;
    server.lock().delay = Duration::from_millis(100);
    let group = unique("questdb-sink");
    let mut config = SinkConfig::new(&group, &TOPICS);
    config.max_rows = 500;
    config.max_age = Duration::from_millis(200);
    config.retry_min_delay = Duration::from_millis(20);
    config.retry_max_delay = Duration::from_millis(200);

    // Phase 1: crash (no final flush) once 1,000 rows went out.
    let c1 = Arc::new(Counters::default());
    tokio::select! {
        r = run_sink(&settings, &config, QuestDbSink::new(&server.conf())?, c1.clone(), std::future::pending()) => { r?; }
        _ = stop_when(c1.clone(), Duration::from_secs(60), |s| s.outputs >= 1_000) => {}
    }
    let phase1 = c1.snapshot();
    assert!(
        phase1.retries >= 2,
        "failed writes were retried: {phase1:?}"
    );

    // Phase 2: a new sink finishes from the committed offsets.
    let c2 = Arc::new(Counters::default());
    let done = stop_when_caught_up(
        settings.clone(),
        group.clone(),
        TOPICS.to_vec(),
        Duration::from_secs(120),
    );
    let (sink, phase2) = run_sink(
        &settings,
        &config,
        QuestDbSink::new(&server.conf())?,
        c2,
        done,
    )
    .await?;
    eprintln!("phase 1 {phase1:?}\nphase 2 {phase2:?}\n{sink:?}");

    let state = server.lock();
    assert_eq!(state.failed, 2);
    // Every bar arrived; repeats (re-sent after the crash) are identical
    // lines, so QuestDB's upsert keys absorb them.
    let mut by_key: BTreeMap<(String, String), HashSet<&str>> = BTreeMap::new();
    for line in &state.lines {
        if let Some(k) = bar_key(line) {
            by_key.entry(k).or_default().insert(line.as_str());
        }
    }
    assert_eq!(by_key.len(), input.len(), "one row key per bar");
    assert!(
        by_key.values().all(|lines| lines.len() == 1),
        "repeats are identical"
    );
    let first = &input[0];
    assert!(state.lines.iter().any(|l| l
        .starts_with("market_bars,exchange=bitfinex,symbol=LTCUSD,timeframe=30m ")
        && l.ends_with(&format!(" {}000000", first.ts))));
    assert_eq!(
        state
            .lines
            .iter()
            .filter(|l| l.starts_with("market_flags,"))
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    drop(state);

    let dlq = read_topic(&settings, "market.bars.dlq", 1, Duration::from_secs(10))?;
    let letters: HashSet<_> = dlq.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        letters.len(),
        1,
        "the undecodable record is dead-lettered (under one id)"
    );
    assert!(phase2.received > 0 && phase2.outputs > 0, "{phase2:?}");
    Ok(())
}
