//! The validator processor through the embedded broker.
//!
//! 1. Accounting across a crash: real bars of two coins, identical resends,
//!    late corrections, invalid OHLC rows and undecodable records go to
//!    `market.bars.raw`; the validator is killed midway (no final commit)
//!    and restarted, rebuilding its state by replaying what it had
//!    processed. What ends on `market.bars`, `market.flags` and the DLQ —
//!    counted by distinct event id — equals a single offline run of the
//!    same core over the same input, and no content appears under two ids.
//! 2. The human-in-the-loop queue: held anomalous bars survive a restart;
//!    an approval published on `market.flags` releases one, a rejection
//!    discards the other.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, ClientSettings, OutRecord, Producer, RunnerConfig};
use autotrain_schemas::{decode, Bar, DeadLetter, FlagKind, HitlState, ValidationFlag};
use autotrain_topics::MARKET_FLAGS;
use autotrain_validator::{
    release_id, Action, ReviewQueue, StateFilter, Validator, ValidatorConfig, ValidatorProcessor,
    Verdict,
};

const INPUTS: [&str; 2] = ["market.bars.raw", "market.flags"];

fn validator_config(group: &str) -> RunnerConfig {
    let mut rc = RunnerConfig::new(group, &INPUTS);
    rc.strict_log_start = true;
    rc.dedupe_window = 5_000;
    rc
}

/// Distinct records of a topic by event id; fails if one id carries two
/// different payloads.
fn distinct(settings: &ClientSettings, topic: &str) -> Result<HashMap<String, Vec<u8>>> {
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    for (id, _, bytes) in read_topic(settings, topic, 0, Duration::from_secs(30))? {
        let id = id.expect("every record has an event id").to_hex();
        if let Some(prev) = by_id.insert(id.clone(), bytes.clone()) {
            assert_eq!(prev, bytes, "event id {id} carries two payloads");
        }
    }
    Ok(by_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bar_is_accounted_for_across_a_crash_and_restart() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("validator-crash").await?;

    // Input: 6,000 + 6,000 real bars, then 300 identical resends, 200 late
    // corrections (changed volume), 20 bars with low > high, 10 garbage.
    let mut input: Vec<Bar> = bars("bitfinex_BTCUSD_30m.csv", 6_000);
    input.extend(bars("bitfinex_ETHUSD_30m.csv", 6_000));
    let resends: Vec<Bar> = input.iter().step_by(40).take(300).cloned().collect();
    let corrections: Vec<Bar> = input
        .iter()
        .skip(7)
        .step_by(60)
        .take(200)
        .map(|b| Bar {
            volume: b.volume + 1.0,
            ..b.clone()
        })
        .collect();
    let broken: Vec<Bar> = input
        .iter()
        .skip(3)
        .step_by(500)
        .take(20)
        .map(|b| Bar {
            low: b.high + 1.0,
            ts: b.ts + 60_000, // off-grid, so it is not a correction of a real bar
            ..b.clone()
        })
        .collect();
    let all: Vec<Bar> = input
        .iter()
        .chain(&resends)
        .chain(&corrections)
        .chain(&broken)
        .cloned()
        .collect();
    produce_bars(&settings, &all).await?;
    for i in 0..10u8 {
        produce_raw(
            &settings,
            "market.bars.raw",
            "bitfinex:BTCUSD",
            vec![0xC3, 0x01, i],
        )
        .await?;
    }

    // What one uninterrupted run of the core decides, per instrument in
    // publish order (each instrument is one partition).
    let mut offline = Validator::new(ValidatorConfig::new(
        1_800_000,
        autotrain_validator::Calendar::TwentyFourSeven,
    ));
    let mut want_bars = BTreeSet::new();
    let mut want_flags = BTreeSet::new();
    let mut withheld = 0usize;
    let mut duplicates = 0usize;
    for b in &all {
        match offline.validate(b) {
            Verdict::Passed { bar, flags } | Verdict::Correction { bar, flags } => {
                want_bars.insert((bar.instrument(), bar.ts, bar.revision, bar.checksum.clone()));
                want_flags.extend(flags.into_iter().map(|f| f.flag_id));
            }
            Verdict::Withheld { flags } => {
                withheld += 1;
                want_flags.extend(flags.into_iter().map(|f| f.flag_id));
            }
            Verdict::Duplicate => duplicates += 1,
        }
    }
    assert!(want_flags.iter().any(|f| f.starts_with("gap:")));
    assert!(want_flags.iter().any(|f| f.starts_with("correction:")));
    assert_eq!(want_bars.len() + withheld + duplicates, all.len());

    // Phase 1: killed once 5,000 inputs are acknowledged.
    let group = unique("validator");
    let rc = validator_config(&group);
    let c1 = Arc::new(Counters::default());
    tokio::select! {
        r = run(&settings, &rc, ValidatorProcessor::default(), c1.clone(), std::future::pending()) => { r?; }
        _ = stop_when(c1.clone(), Duration::from_secs(120), |s| s.acknowledged >= 5_000) => {}
    }
    let phase1 = c1.snapshot();

    // Phase 2: a new instance rebuilds its state and finishes the input.
    let c2 = Arc::new(Counters::default());
    let done = stop_when_caught_up(
        settings.clone(),
        group.clone(),
        INPUTS.to_vec(),
        Duration::from_secs(240),
    );
    let (core, phase2) = run(&settings, &rc, ValidatorProcessor::default(), c2, done).await?;
    eprintln!("phase 1 {phase1:?}\nphase 2 {phase2:?}");
    assert!(phase2.replayed >= 4_000, "state was rebuilt: {phase2:?}");
    assert!(core.held().is_empty() || core.held().len() <= withheld);

    // market.bars: exactly the offline content, each under one id.
    let bars_out = distinct(&settings, "market.bars")?;
    let mut got_bars = BTreeSet::new();
    for bytes in bars_out.values() {
        let b: Bar = decode(bytes)?;
        let content = (b.instrument(), b.ts, b.revision, b.checksum.clone());
        assert!(
            got_bars.insert(content.clone()),
            "{content:?} under two ids"
        );
    }
    let missing: Vec<_> = want_bars.difference(&got_bars).take(5).collect();
    let extra: Vec<_> = got_bars.difference(&want_bars).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "market.bars differs from the offline run: missing {missing:?}, extra {extra:?}"
    );

    let flags_out = distinct(&settings, "market.flags")?;
    let mut got_flags = BTreeSet::new();
    for bytes in flags_out.values() {
        let f: ValidationFlag = decode(bytes)?;
        assert!(
            got_flags.insert(f.flag_id.clone()),
            "{} under two ids",
            f.flag_id
        );
    }
    let missing: Vec<_> = want_flags.difference(&got_flags).take(5).collect();
    let extra: Vec<_> = got_flags.difference(&want_flags).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "market.flags differs from the offline run: missing {missing:?}, extra {extra:?}"
    );

    let dlq = distinct(&settings, "market.bars.dlq")?;
    assert_eq!(dlq.len(), 10, "each garbage record dead-lettered once");
    for bytes in dlq.values() {
        let letter: DeadLetter = decode(bytes)?;
        assert_eq!(letter.source_topic, "market.bars.raw");
    }
    // Every input: published, withheld with a flag, duplicate, or DLQ.
    assert_eq!(
        got_bars.len() + withheld + duplicates + dlq.len(),
        all.len() + 10
    );
    Ok(())
}

fn walk(symbol: &str, n: usize, jump_at: usize) -> Vec<Bar> {
    (0..n)
        .map(|i| {
            let wiggle = [0.0, 0.001, -0.0005, 0.0015, -0.001][i % 5];
            let level = if i >= jump_at { 200.0 } else { 100.0 };
            let close = level * (1.0 + wiggle);
            Bar {
                exchange: "test".into(),
                symbol: symbol.into(),
                timeframe: "1h".into(),
                ts: 1_600_000_000_000 + i as i64 * 3_600_000,
                open: close,
                high: close * 1.002,
                low: close * 0.998,
                close,
                volume: 5.0,
                source: "walk".into(),
                checksum: None,
                revision: 0,
            }
        })
        .collect()
}

async fn decide(
    settings: &ClientSettings,
    queue: &ReviewQueue,
    id: &str,
    action: Action,
) -> Result<()> {
    let event = queue.decide(
        id,
        action,
        "ana",
        Some("checked the tape"),
        1_700_000_000_000,
    )?;
    let producer = Producer::new(settings)?;
    producer
        .enqueue(&OutRecord::from_content(
            MARKET_FLAGS,
            &event.instrument,
            &event,
        )?)
        .await?
        .confirm()
        .await?;
    Ok(())
}

fn review_queue(settings: &ClientSettings) -> Result<ReviewQueue> {
    let mut queue = ReviewQueue::new();
    for r in autotrain_kafka::read_topic::<ValidationFlag>(
        settings,
        "market.flags",
        Duration::from_secs(30),
    )? {
        queue.apply(&r.value?);
    }
    Ok(queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bars_survive_a_restart_and_follow_the_decision() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("validator-hitl").await?;
    let keep = walk("KEEP", 80, 60);
    let drop_ = walk("DROP", 80, 50);
    produce_bars(&settings, &keep).await?;
    produce_bars(&settings, &drop_).await?;

    let group = unique("validator-hitl");
    let rc = validator_config(&group);
    let stop = stop_when_caught_up(
        settings.clone(),
        group.clone(),
        INPUTS.to_vec(),
        Duration::from_secs(120),
    );
    let (core, _) = run(
        &settings,
        &rc,
        ValidatorProcessor::default(),
        Arc::new(Counters::default()),
        stop,
    )
    .await?;
    assert_eq!(core.held().len(), 2, "one jump per instrument is held");
    drop(core);

    // Ops see both in the queue and decide while the validator is down.
    let queue = review_queue(&settings)?;
    let pending = queue.list(StateFilter::Pending);
    assert_eq!(pending.len(), 2);
    let keep_id = pending
        .iter()
        .find(|i| i.current.instrument == "test:KEEP")
        .expect("KEEP held")
        .current
        .flag_id
        .clone();
    let drop_id = pending
        .iter()
        .find(|i| i.current.instrument == "test:DROP")
        .expect("DROP held")
        .current
        .flag_id
        .clone();
    decide(&settings, &queue, &keep_id, Action::Approve).await?;
    decide(&settings, &queue, &drop_id, Action::Reject).await?;

    // A new instance rebuilds the held bars from the topics and applies
    // the decisions.
    let stop = stop_when_caught_up(
        settings.clone(),
        group.clone(),
        INPUTS.to_vec(),
        Duration::from_secs(120),
    );
    let c = Arc::new(Counters::default());
    let (core, stats) = run(&settings, &rc, ValidatorProcessor::default(), c, stop).await?;
    assert!(stats.replayed > 0, "{stats:?}");
    assert!(core.held().is_empty());
    assert_eq!(core.summary.released, 1, "{:?}", core.summary);
    assert_eq!(core.summary.rejected, 1, "{:?}", core.summary);

    let bars_out = distinct(&settings, "market.bars")?;
    let released = bars_out
        .get(&release_id(&keep_id).to_hex())
        .expect("approved bar published under its release id");
    let bar: Bar = decode(released)?;
    assert_eq!((bar.symbol.as_str(), bar.ts), ("KEEP", keep[60].ts));
    let published: HashSet<(String, i64)> = bars_out
        .values()
        .map(|b| decode::<Bar>(b).map(|b| (b.symbol, b.ts)))
        .collect::<Result<_, _>>()?;
    assert!(
        !published.contains(&("DROP".to_string(), drop_[50].ts)),
        "rejected bar stays out"
    );
    assert_eq!(published.len(), 80 + 79);

    let queue = review_queue(&settings)?;
    assert!(queue.list(StateFilter::Pending).is_empty());
    let decided = queue.get(&keep_id).expect("known").current.clone();
    assert_eq!(
        (decided.state, decided.actor.as_deref()),
        (HitlState::Approved, Some("ana"))
    );
    assert_eq!(
        queue.get(&drop_id).expect("known").current.kind,
        FlagKind::Anomaly
    );
    Ok(())
}
