//! The features processor through the embedded broker: 24,000 real BTC/USD
//! bars on `market.bars`, the processor killed midway (no final commit) and
//! restarted (it rebuilds its engines by replaying the bars it had
//! processed). What a downstream consumer collects from `features` equals
//! the offline path (`dataflow::run`, as `autotrain features` uses) bit for
//! bit, and no bar's features were published with two different values.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_features::{dataflow, Contract, FeaturesProcessor};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, RunnerConfig};
use autotrain_schemas::{Bar, FeatureVector};
use autotrain_topics::MARKET_BARS;

/// The first 24,000 bars: one instrument is one partition, and the embedded
/// broker keeps ~5 MiB of it (about 26,000 validated bars).
const N: usize = 24_000;

fn bits(v: &FeatureVector) -> Vec<Option<u64>> {
    v.values.iter().map(|x| x.value.map(f64::to_bits)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_features_equal_offline_across_a_crash() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("features").await?;
    let input: Vec<Bar> = bars("bitfinex_BTCUSD_30m.csv", N);
    // The first half now; the second only after the crash, so the restarted
    // processor can only be right if it rebuilt its engines.
    publish_bars(&settings, MARKET_BARS, &input[..N / 2]).await?;

    // The downstream consumer runs throughout (the embedded broker keeps
    // only ~5 MiB per partition, so features are read as they come).
    let mut sink = RunnerConfig::new(unique("features-sink"), &["features"]);
    sink.strict_log_start = true;
    let cs = Arc::new(Counters::default());
    let collecting = tokio::spawn({
        let (settings, cs) = (settings.clone(), cs.clone());
        async move {
            let stop = stop_when(cs.clone(), Duration::from_secs(300), |s| {
                s.processed >= N as u64
            });
            run(
                &settings,
                &sink,
                Collect::<FeatureVector>::default(),
                cs,
                async {
                    stop.await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                },
            )
            .await
        }
    });

    let group = unique("features");
    let mut rc = RunnerConfig::new(&group, &["market.bars"]);
    rc.strict_log_start = true;
    rc.dedupe_window = 5_000;
    let contract = Contract::bundled()?;
    let c1 = Arc::new(Counters::default());
    tokio::select! {
        r = run(&settings, &rc, FeaturesProcessor::new(contract.clone()), c1.clone(), std::future::pending()) => { r?; }
        _ = stop_when(c1.clone(), Duration::from_secs(120), |s| s.acknowledged >= (N / 2) as u64) => {}
    }
    let phase1 = c1.snapshot();
    publish_bars(&settings, MARKET_BARS, &input[N / 2..]).await?;
    let c2 = Arc::new(Counters::default());
    let done = stop_when_caught_up(
        settings.clone(),
        group.clone(),
        vec!["market.bars"],
        Duration::from_secs(240),
    );
    let (_, phase2) = run(
        &settings,
        &rc,
        FeaturesProcessor::new(contract.clone()),
        c2,
        done,
    )
    .await?;
    let (collected, sink_stats) = collecting.await??;
    eprintln!("phase 1 {phase1:?}\nphase 2 {phase2:?}\nsink {sink_stats:?}");
    assert!(phase2.replayed > 0, "engines rebuilt by replay: {phase2:?}");

    // Per ts one set of values, whatever was re-sent after the crash.
    let mut streamed: BTreeMap<i64, Vec<Option<u64>>> = BTreeMap::new();
    for (_, v) in &collected.records {
        if let Some(prev) = streamed.insert(v.ts, bits(v)) {
            assert_eq!(
                prev,
                bits(v),
                "ts {} published with two different values",
                v.ts
            );
        }
    }
    let offline = dataflow::run(&contract, &input, 2, true).map_err(anyhow::Error::msg)?;
    let offline: BTreeMap<i64, Vec<Option<u64>>> =
        offline.rows.iter().map(|v| (v.ts, bits(v))).collect();
    assert_eq!(streamed.len(), N);
    let differing: Vec<i64> = offline
        .iter()
        .filter(|(ts, v)| streamed.get(ts) != Some(v))
        .map(|(ts, _)| *ts)
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "streaming differs from offline at {differing:?}"
    );

    let versions: HashMap<&str, usize> =
        collected
            .records
            .iter()
            .fold(HashMap::new(), |mut m, (_, v)| {
                *m.entry(v.contract_version.as_str()).or_default() += 1;
                m
            });
    assert_eq!(versions.keys().copied().collect::<Vec<_>>(), vec!["1"]);
    Ok(())
}

/// A point-in-time training set read back from `features`: as of now it is
/// the offline table; as of before the run it is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_sets_are_cut_as_of_a_time() -> Result<()> {
    use autotrain_features::training_set::{load, Query};
    const M: usize = 3_000;
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("training-set").await?;
    let input: Vec<Bar> = bars("bitfinex_ETHUSD_30m.csv", M);
    let before_run = now_ms() - 1;
    publish_bars(&settings, MARKET_BARS, &input).await?;
    let group = unique("features-ts");
    let mut rc = RunnerConfig::new(&group, &["market.bars"]);
    rc.strict_log_start = true;
    let contract = Contract::bundled()?;
    let done = stop_when_caught_up(
        settings.clone(),
        group,
        vec!["market.bars"],
        Duration::from_secs(120),
    );
    run(
        &settings,
        &rc,
        FeaturesProcessor::new(contract.clone()),
        Arc::new(Counters::default()),
        done,
    )
    .await?;

    let query = |as_of_ms| Query {
        instruments: ["bitfinex:ETHUSD".to_string()].into(),
        from_ms: input[100].ts,
        to_ms: input[2_000].ts,
        as_of_ms,
    };
    let (s2, q_now, q_before) = (settings.clone(), query(now_ms() + 1), query(before_run));
    let ((table, inputs), (empty, _)) = tokio::task::spawn_blocking(move || {
        Ok::<_, autotrain_kafka::KafkaError>((load(&s2, &q_now)?, load(&s2, &q_before)?))
    })
    .await??;
    let offline = dataflow::run(&contract, &input, 1, true).map_err(anyhow::Error::msg)?;
    let want: BTreeMap<i64, Vec<Option<u64>>> = offline
        .rows
        .iter()
        .filter(|v| v.ts >= input[100].ts && v.ts < input[2_000].ts)
        .map(|v| (v.ts, bits(v)))
        .collect();
    let got: BTreeMap<i64, Vec<Option<u64>>> =
        table.iter().map(|((_, ts), v)| (*ts, bits(v))).collect();
    assert_eq!(got.len(), 1_900);
    assert_eq!(got, want);
    assert!(empty.is_empty(), "nothing was computed before the run");
    // The offset ranges read, for the build manifest: all of `features`.
    assert_eq!(
        inputs
            .iter()
            .map(|r| r.next_offset - r.first_offset)
            .sum::<i64>(),
        M as i64
    );
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
