//! Bars → features → drift → `training.triggers` through the embedded
//! broker, on 6,000 real BTC/USD bars: the triggers a plain consumer reads
//! carry their evidence, respect the cooldown, a weekly schedule on the
//! bars' time fires once per Sunday the bars pass, and a second drift
//! processor (another group, replaying the same features) publishes the
//! same triggers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_drift::{DriftConfig, DriftProcessor};
use autotrain_features::{Contract, FeaturesProcessor};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, RunnerConfig};
use autotrain_schemas::{decode, TrainingTrigger, TriggerReason};
use autotrain_topics::MARKET_BARS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_on_real_bars_emits_triggers_with_evidence() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("drift").await?;
    let input = bars("bitfinex_BTCUSD_30m.csv", 6_000);
    publish_bars(&settings, MARKET_BARS, &input).await?;
    let features_group = unique("features");
    let mut rc = RunnerConfig::new(&features_group, &["market.bars"]);
    rc.strict_log_start = true;
    let done = stop_when_caught_up(
        settings.clone(),
        features_group,
        vec!["market.bars"],
        Duration::from_secs(120),
    );
    run(
        &settings,
        &rc,
        FeaturesProcessor::new(Contract::bundled()?),
        Arc::new(Counters::default()),
        done,
    )
    .await?;

    let config = DriftConfig::default();
    let weekly = autotrain_drift::Schedule {
        model_key: "hmm/bitfinex:BTCUSD".into(),
        tenant: Some("desk-a".into()),
        cron: "0 2 * * 0".into(),
        timezone: "UTC".into(),
        instruments: vec!["bitfinex:BTCUSD".into()],
        hyperparams: Vec::new(),
        auto_promote: false,
    };
    let mut emitted = Vec::new();
    for _ in 0..2 {
        let group = unique("drift");
        let mut rc = RunnerConfig::new(&group, &["features"]);
        rc.strict_log_start = true;
        let done = stop_when_caught_up(
            settings.clone(),
            group,
            vec!["features"],
            Duration::from_secs(120),
        );
        let (core, _) = run(
            &settings,
            &rc,
            DriftProcessor::new(config.clone()).with_event_schedules(vec![weekly.clone()])?,
            Arc::new(Counters::default()),
            done,
        )
        .await?;
        emitted.push((core.triggers, core.suppressed, core.scheduled()));
    }
    assert_eq!(
        emitted[0], emitted[1],
        "the same features, the same decisions"
    );
    let (triggers, suppressed, scheduled) = emitted[0];
    assert!(triggers > 0, "real volatility changes are detected");
    // Sundays 02:00 UTC strictly between the first and the last bar.
    let (first, last) = (input[0].ts, input[input.len() - 1].ts);
    const WEEK: i64 = 7 * 86_400_000;
    let sunday_2am = 3 * 86_400_000 + 2 * 3_600_000; // 1970-01-04 was a Sunday
    let sundays: Vec<i64> = (0..)
        .map(|k| sunday_2am + k * WEEK)
        .skip_while(|t| *t <= first)
        .take_while(|t| *t < last)
        .collect();
    assert!(sundays.len() > 15, "{} Sundays", sundays.len());
    assert_eq!(scheduled, sundays.len() as u64);

    let wire = read_topic(&settings, "training.triggers", 1, Duration::from_secs(30))?;
    let decoded: Vec<TrainingTrigger> = wire
        .iter()
        .map(|(_, _, b)| decode(b))
        .collect::<Result<_, _>>()?;
    let ids: BTreeSet<&str> = decoded.iter().map(|t| t.trigger_id.as_str()).collect();
    assert_eq!(
        ids.len() as u64,
        triggers + scheduled,
        "both processors published the same {triggers} + {scheduled} triggers"
    );
    let (on_schedule, decoded): (Vec<TrainingTrigger>, Vec<TrainingTrigger>) = decoded
        .into_iter()
        .partition(|t| t.reason == TriggerReason::Schedule);
    let fired: BTreeSet<i64> = on_schedule.iter().map(|t| t.created_at).collect();
    assert_eq!(fired, sundays.iter().copied().collect::<BTreeSet<_>>());
    assert!(on_schedule
        .iter()
        .all(|t| t.tenant.as_deref() == Some("desk-a")
            && t.trigger_id.starts_with("schedule:hmm/bitfinex:BTCUSD:")));
    let mut times: Vec<i64> = decoded
        .iter()
        .map(|t| t.created_at)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    times.sort_unstable();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= config.cooldown_ms,
            "cooldown between {} and {}",
            w[0],
            w[1]
        );
    }
    for t in &decoded {
        assert_eq!(t.reason, TriggerReason::Drift);
        assert_eq!(t.model_key, "hmm/bitfinex:BTCUSD");
        let ev = t.evidence.as_ref().expect("evidence");
        assert!(["lr", "rvol_20"].contains(&ev.feature.as_str()));
        assert!(["page_hinkley", "adwin", "psi"].contains(&ev.detector.as_str()));
    }
    eprintln!("{triggers} triggers, {suppressed} detections suppressed by the cooldown");
    Ok(())
}
