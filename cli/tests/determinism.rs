//! Same bars, same decisions: `autotrain demo` over one instrument's real
//! bars three times: on the embedded broker with the trainer running one
//! fit at a time, then two, then on a real Kafka exactly-once with two (so
//! fits, progress records, transactions and bars interleave differently). Everything the event-time aligned processors decided is
//! identical: the summary's counts, the versions and `prod` of every key,
//! and the content digests of `market.bars`, `market.flags`, `features`,
//! `training.triggers`, `model.updates` and `regimes` (8,000 bars stay
//! whole within the embedded broker's bound, so the digests cover every
//! record). Every bar from the first promotion on has its posterior.
//!
//! `within_run` checks a run's topics on a broker that outlives it (a real
//! Kafka, where the demo runs exactly-once).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use autotrain_integration_tests::{data_sample, shared_kafka, unique};
use autotrain_kafka::{read_topic, ClientSettings};
use autotrain_schemas::{
    FeatureVector, ModelVersion, RegimePosterior, RegistryEvent, TrainingTrigger,
};

const ROWS: usize = 8_000;

fn sample(dir: &Path) -> Result<()> {
    data_sample(dir, "bitfinex_BTCUSD_30m.csv", ROWS)
}

/// One demo run on its own topics; returns the summary and its settings.
fn demo(
    bootstrap: Option<&str>,
    data: &Path,
    capacity: usize,
) -> Result<(serde_json::Value, Option<ClientSettings>)> {
    demo_at(bootstrap, data, capacity, None)
}

/// [`demo`], its replay paced at `rate` bars per second.
fn demo_at(
    bootstrap: Option<&str>,
    data: &Path,
    capacity: usize,
    rate: Option<f64>,
) -> Result<(serde_json::Value, Option<ClientSettings>)> {
    let prefix = format!("{}.", unique(&format!("det-c{capacity}")));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autotrain"));
    if let Some(b) = bootstrap {
        cmd.args(["--brokers", b]);
    }
    if let Some(r) = rate {
        cmd.args(["demo", "--rate", &format!("{r:.1}")]);
    } else {
        cmd.arg("demo");
    }
    let out = cmd
        .args(["--json", "--api-bind", "127.0.0.1:0"])
        .args(["--data", data.to_str().unwrap_or_default()])
        .env_remove("AUTOTRAIN_BROKERS")
        .env("AUTOTRAIN__TOPIC_PREFIX", &prefix)
        .env("AUTOTRAIN__REPLICATION_FACTOR", "1")
        .env("AUTOTRAIN__TRAINER__CAPACITY", capacity.to_string())
        .env(
            "AUTOTRAIN__LOG__LEVEL",
            "warn,librdkafka=error,rdkafka=error",
        )
        .output()?;
    ensure!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        summary,
        bootstrap.map(|b| ClientSettings::new(b).with_prefix(prefix)),
    ))
}

/// The summary without what depends on the wall clock.
fn decisions(summary: &serde_json::Value) -> serde_json::Value {
    let mut s = summary.clone();
    if let Some(o) = s.as_object_mut() {
        for k in [
            "bootstrap",
            "api",
            "seconds",
            "bars_per_second",
            "training_load_seconds",
            "training_fit_seconds",
        ] {
            o.remove(k);
        }
    }
    s
}

fn values<T>(records: Vec<autotrain_kafka::Record<T>>) -> Vec<T> {
    records.into_iter().filter_map(|r| r.value.ok()).collect()
}

fn within_run(settings: &ClientSettings) -> Result<()> {
    let t = Duration::from_secs(60);
    let models: Vec<ModelVersion> =
        values(read_topic::<ModelVersion>(settings, "model.updates", t)?);
    let triggers: Vec<TrainingTrigger> = values(read_topic::<TrainingTrigger>(
        settings,
        "training.triggers",
        t,
    )?);
    let features: Vec<FeatureVector> =
        values(read_topic::<FeatureVector>(settings, "features", t)?);
    let regimes: Vec<RegimePosterior> =
        values(read_topic::<RegimePosterior>(settings, "regimes", t)?);
    ensure!(
        !models.is_empty() && !regimes.is_empty(),
        "{} events, {} posteriors",
        models.len(),
        regimes.len()
    );

    // Versions in the event-time order of their triggers.
    let as_of: BTreeMap<&str, i64> = triggers
        .iter()
        .map(|t| (t.trigger_id.as_str(), t.created_at))
        .collect();
    let mut last = i64::MIN;
    for m in models
        .iter()
        .filter(|m| m.event == RegistryEvent::Registered)
    {
        let trigger = m
            .manifest
            .as_ref()
            .map(|x| x.trigger_id.as_str())
            .unwrap_or_default();
        let t = as_of[trigger];
        ensure!(
            t >= last,
            "v{} trained as of {t}, after a version as of {last}",
            m.version
        );
        ensure!(
            m.effective_from.is_some_and(|e| e > t),
            "v{}: effect {:?} not after as_of {t}",
            m.version,
            m.effective_from
        );
        last = t;
    }

    // A posterior for every bar from the first prod's event time on.
    let first_prod = models
        .iter()
        .filter(|m| m.event == RegistryEvent::AliasMoved && m.alias.as_deref() == Some("prod"))
        .filter_map(|m| m.effective_from)
        .min()
        .ok_or_else(|| anyhow::anyhow!("no promotion"))?;
    let want: Vec<i64> = features
        .iter()
        .map(|f| f.ts)
        .filter(|t| *t >= first_prod)
        .collect();
    let mut got: Vec<i64> = regimes.iter().map(|r| r.ts).collect();
    got.sort_unstable();
    ensure!(
        got == want,
        "{} posteriors for {} bars from {first_prod}",
        got.len(),
        want.len()
    );
    Ok(())
}

/// Embedded broker with one fit at a time, embedded with two, embedded
/// with two and the replay paced at a third of the speed, real Kafka
/// (exactly-once: every topic ends with commit markers) with two: the same
/// decisions (every output topic's digest, the engine's trades and rewards
/// included), and the Kafka run's topics pass [`within_run`].
#[test]
fn same_bars_same_decisions_on_either_broker_at_any_capacity() -> Result<()> {
    let dir = tempfile::tempdir()?;
    sample(dir.path())?;
    let (one, _) = demo(None, dir.path(), 1)?;
    let (two, _) = demo(None, dir.path(), 2)?;
    eprintln!("run 1: {}", decisions(&one));
    assert_eq!(decisions(&one), decisions(&two), "capacity 1 and 2");
    assert!(one["promotions"].as_u64().unwrap_or(0) >= 1, "{one}");
    assert_eq!(
        one["digests"]["features"]["records"].as_u64(),
        one["features_published"].as_u64(),
        "the digests cover every record: {one}"
    );
    for (topic, digest) in one["digests"].as_object().into_iter().flatten() {
        assert_eq!(digest["complete"], true, "{topic}: {one}");
    }
    assert!(
        one["regimes_published"].as_u64().unwrap_or(0) > 4_000,
        "{one}"
    );
    assert!(
        one["trades"].as_u64().unwrap_or(0) > 1_000
            && one["param_changes"].as_u64().unwrap_or(0) > 0,
        "the engine trades on the posteriors: {one}"
    );
    // Paced at a third of the speed the first run replayed at.
    let fast = one["bars_per_second"].as_f64().unwrap_or(300.0);
    let (paced, _) = demo_at(None, dir.path(), 2, Some((fast / 3.0).max(50.0)))?;
    assert_eq!(decisions(&one), decisions(&paced), "fast and paced");
    let (kafka, settings) = demo(Some(&shared_kafka()), dir.path(), 2)?;
    assert_eq!(
        decisions(&one),
        decisions(&kafka),
        "the embedded broker and Kafka"
    );
    within_run(&settings.ok_or_else(|| anyhow::anyhow!("no settings"))?)
}
