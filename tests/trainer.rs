//! The trainer service through the embedded broker, on features of the
//! real BTC/USD bars:
//! - train → auto-promoted v1; a second training stays in staging; ops
//!   promote it, then roll back to v1 (re-scored on the reference set);
//!   the regime processor, running all along, switches models with `prod`;
//!   a rerun of the first training reproduces its parameter hash;
//! - strict mode: a failed run releases its claim, the next run trains on
//!   exactly those offsets, a later run only on newer ones (no bar twice),
//!   and every run of the split version is judged on one reference set;
//! - an open gap in the window blocks a run until ops override it; a
//!   blocked run can be cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use autotrain_features::{dataflow, Contract};
use autotrain_integration_tests::services::{start_trainer, trainer_config};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{read_topic as read_decoded, run, ClientSettings, RunnerConfig};
use autotrain_regime::RegimeProcessor;
use autotrain_schemas::{
    ClaimState, CommandAction, DataClaim, FeatureVector, FlagKind, HitlState, ModelVersion, Param,
    Priority, RegimePosterior, Severity, TrainingCommand, TrainingState, TrainingStatus,
    TrainingTrigger, TriggerReason, ValidationFlag,
};
use autotrain_topics::{
    FEATURES, MARKET_FLAGS, MODEL_UPDATES, TRAINING_CLAIMS, TRAINING_COMMANDS, TRAINING_STATUS,
    TRAINING_TRIGGERS,
};
use autotrain_trainer::view::{trainings, TrainingView};
use autotrain_trainer::{Registry, PROD};
use tokio::sync::oneshot;

const INSTRUMENT: &str = "bitfinex:BTCUSD";
const KEY: &str = "hmm/bitfinex:BTCUSD";

fn vectors(n: usize) -> Result<Vec<FeatureVector>> {
    Ok(dataflow::run(
        &Contract::bundled()?,
        &bars("bitfinex_BTCUSD_30m.csv", n),
        1,
        true,
    )
    .map_err(anyhow::Error::msg)?
    .rows)
}

fn trigger(id: &str, params: &[(&str, &str)], auto_promote: bool) -> TrainingTrigger {
    TrainingTrigger {
        trigger_id: id.into(),
        model_key: KEY.into(),
        tenant: None,
        reason: TriggerReason::Manual,
        instruments: vec![INSTRUMENT.into()],
        dataset_version: None,
        feature_contract_version: None,
        hyperparams: params
            .iter()
            .map(|(n, v)| Param {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        seed: 7,
        priority: Priority::Normal,
        auto_promote,
        evidence: None,
        rerun_of: None,
        created_at: now_ms(),
        revealed_at: None,
    }
}

fn command(
    action: CommandAction,
    training_id: Option<&str>,
    version: Option<i32>,
) -> TrainingCommand {
    TrainingCommand {
        command_id: unique("cmd"),
        action,
        training_id: training_id.map(str::to_string),
        model_key: Some(KEY.into()),
        version,
        tenant: None,
        actor: "ops-test".into(),
        reason: "test".into(),
        at: now_ms(),
        force: false,
    }
}

/// Ops' rollback, forced (with its reason): these tests follow prod
/// wherever ops move it, whatever v1 re-scores on prod's reference set.
fn forced_rollback(version: i32) -> TrainingCommand {
    TrainingCommand {
        force: true,
        ..command(CommandAction::Rollback, None, Some(version))
    }
}

fn views(settings: &ClientSettings) -> Result<BTreeMap<String, TrainingView>> {
    let mut s: Vec<TrainingStatus> =
        read_decoded::<TrainingStatus>(settings, TRAINING_STATUS.name(), Duration::from_secs(30))?
            .into_iter()
            .filter_map(|r| r.value.ok())
            .collect();
    s.sort_by_key(|s| s.at);
    Ok(trainings(s))
}

async fn wait_for(
    settings: &ClientSettings,
    id: &str,
    what: &str,
    done: impl Fn(&TrainingView) -> bool,
) -> Result<TrainingView> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = settings.clone();
        let all = tokio::task::spawn_blocking(move || views(&s)).await??;
        if let Some(v) = all.get(id) {
            if done(v) {
                return Ok(v.clone());
            }
            if Instant::now() > deadline {
                bail!("{id} never {what}: {v:#?}");
            }
        } else if Instant::now() > deadline {
            bail!("{id} never appeared on training.status");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn ended(settings: &ClientSettings, id: &str) -> Result<TrainingView> {
    wait_for(settings, id, "ended", TrainingView::is_terminal).await
}

async fn registry(settings: &ClientSettings) -> Result<Registry> {
    let s = settings.clone();
    let mut events: Vec<ModelVersion> = tokio::task::spawn_blocking(move || {
        read_decoded::<ModelVersion>(&s, MODEL_UPDATES.name(), Duration::from_secs(30))
    })
    .await??
    .into_iter()
    .filter_map(|r| r.value.ok())
    .collect();
    events.sort_by_key(|e| e.at);
    let mut r = Registry::new();
    for e in &events {
        r.apply(e)?;
    }
    Ok(r)
}

async fn wait_prod(settings: &ClientSettings, version: i32) -> Result<Registry> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = registry(settings).await?;
        if r.model(KEY).and_then(|m| m.alias(PROD)).map(|v| v.version) == Some(version) {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!(
                "prod never moved to v{version}: {:?}",
                r.model(KEY).map(|m| &m.aliases)
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until group `group` has committed everything on `topics`.
async fn settled(settings: &ClientSettings, group: &str, topics: &[&'static str]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, g, t) = (settings.clone(), group.to_string(), topics.to_vec());
        if tokio::task::spawn_blocking(move || caught_up(&s, &g, &t)).await?? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{group} never caught up with {topics:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes a rerun of `original`'s training and waits for it to end.
async fn rerun(
    settings: &ClientSettings,
    id: &str,
    original: &TrainingTrigger,
) -> Result<TrainingView> {
    let mut rerun = trigger(&unique(id), &[], false);
    rerun.reason = TriggerReason::Rerun;
    rerun.rerun_of = Some(format!("tr-{}", original.trigger_id));
    rerun.instruments.clear();
    publish(
        settings,
        TRAINING_TRIGGERS,
        KEY,
        std::slice::from_ref(&rerun),
    )
    .await?;
    ended(settings, &format!("tr-{}", rerun.trigger_id)).await
}

fn metric(v: &TrainingView, name: &str) -> f64 {
    v.metric(name).unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_promote_rollback_rerun_and_regimes_follow_prod() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("trainer").await?;
    let store = tempfile::tempdir()?;
    let vectors = vectors(6_000)?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[..4_000]).await?;

    // The regime processor runs throughout.
    let regime_group = unique("regime");
    let mut rrc = RunnerConfig::new(&regime_group, &["features", "model.updates"]);
    rrc.strict_log_start = true;
    let (stop_regime, regime_stopped) = oneshot::channel::<()>();
    let rs = settings.clone();
    let regime = tokio::spawn(async move {
        run(
            &rs,
            &rrc,
            RegimeProcessor::new("hmm/{instrument}"),
            Arc::new(Counters::default()),
            async move {
                let _ = regime_stopped.await;
            },
        )
        .await
    });
    let trainer = start_trainer(&settings, trainer_config(store.path()));

    // 1. First training, auto-promoted.
    let a = trigger(&unique("a"), &[], true);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&a)).await?;
    let va = ended(&settings, &format!("tr-{}", a.trigger_id)).await?;
    assert_eq!(va.state, TrainingState::Completed, "{va:#?}");
    assert_eq!(va.model_version, Some(1));
    assert_eq!(metric(&va, "promoted"), 1.0);
    assert!(va
        .events
        .iter()
        .any(|e| e.stage.as_deref() == Some("fit") && e.progress == 1.0));
    let r = wait_prod(&settings, 1).await?;
    let v1 = r
        .model(KEY)
        .and_then(|m| m.versions.get(&1))
        .cloned()
        .expect("v1");
    let manifest = v1.manifest.clone().expect("manifest");
    assert_eq!(manifest.split_version, "v1");
    assert_eq!(manifest.feature_contract_version, "1");
    assert_eq!(
        manifest.inputs.iter().map(|r| r.end - r.start).sum::<i64>(),
        4_000
    );
    assert!(std::path::Path::new(
        &store
            .path()
            .join(format!("{}.json", manifest.reference_hash))
    )
    .exists());
    settled(&settings, &regime_group, &["model.updates", "features"]).await?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[4_000..5_000]).await?;

    // 2. A second training stays in staging; compared with the champion on
    //    the same reference set.
    let b = trigger(&unique("b"), &[("states", "4")], false);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&b)).await?;
    let vb = ended(&settings, &format!("tr-{}", b.trigger_id)).await?;
    assert_eq!(
        (vb.state, vb.model_version),
        (TrainingState::Completed, Some(2)),
        "{vb:#?}"
    );
    assert_eq!(metric(&vb, "promoted"), 0.0);
    assert!(metric(&vb, "champion_loglik_per_bar").is_finite());
    let r = registry(&settings).await?;
    let v2 = r
        .model(KEY)
        .and_then(|m| m.versions.get(&2))
        .cloned()
        .expect("v2");
    assert_eq!(
        v2.manifest.as_ref().map(|m| m.reference_hash.clone()),
        Some(manifest.reference_hash.clone())
    );
    assert_eq!(
        r.model(KEY).and_then(|m| m.alias(PROD)).map(|v| v.version),
        Some(1)
    );
    settled(&settings, &regime_group, &["model.updates", "features"]).await?;

    // 3. Ops promote v2; regimes of the next bars are under v2.
    publish(
        &settings,
        TRAINING_COMMANDS,
        KEY,
        &[command(CommandAction::Promote, None, Some(2))],
    )
    .await?;
    wait_prod(&settings, 2).await?;
    settled(&settings, &regime_group, &["model.updates", "features"]).await?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[5_000..5_500]).await?;
    settled(&settings, &regime_group, &["model.updates", "features"]).await?;

    // 4. Roll back to v1 (re-scored); the rest is under v1 again.
    publish(&settings, TRAINING_COMMANDS, KEY, &[forced_rollback(1)]).await?;
    let r = wait_prod(&settings, 1).await?;
    let back = r
        .model(KEY)
        .and_then(|m| m.events.last())
        .cloned()
        .expect("rollback event");
    assert_eq!(back.previous_version, Some(2));
    assert!(back
        .metrics
        .iter()
        .any(|m| m.name == "rescored_loglik_per_bar" && m.value.is_finite()));
    settled(&settings, &regime_group, &["model.updates", "features"]).await?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[5_500..]).await?;
    settled(&settings, &regime_group, &["model.updates", "features"]).await?;

    // 5. Rerun of the first training: same parameter hash.
    let vr = rerun(&settings, "rerun", &a).await?;
    assert_eq!(vr.state, TrainingState::Completed, "{vr:#?}");
    assert_eq!(metric(&vr, "rerun_parameter_hash_matches"), 1.0);
    let r = registry(&settings).await?;
    let v3 = r
        .model(KEY)
        .and_then(|m| m.versions.get(&3))
        .cloned()
        .expect("v3");
    assert_eq!(v3.parameter_hash, v1.parameter_hash);
    assert_eq!(
        r.model(KEY).and_then(|m| m.alias(PROD)).map(|v| v.version),
        Some(1),
        "a rerun is not promoted"
    );
    let warm_from = |v: &ModelVersion| {
        v.manifest.as_ref().and_then(|m| {
            m.hyperparams
                .iter()
                .find(|p| p.name == "warm_from")
                .map(|p| p.value.clone())
        })
    };
    assert_eq!(warm_from(&v3), None, "v1 started from no version");

    // 6. A run of v1's shape also starts from the champion (v1): the
    //    manifest names it, the fit is at least as good as its seeded
    //    starts, and its rerun starts from v1 again (same parameters).
    let c = trigger(&unique("c"), &[], false);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&c)).await?;
    let vc = ended(&settings, &format!("tr-{}", c.trigger_id)).await?;
    assert_eq!(vc.state, TrainingState::Completed, "{vc:#?}");
    assert!(metric(&vc, "fit_warm_loglik").is_finite(), "{vc:#?}");
    assert!(metric(&vc, "fit_loglik") >= metric(&vc, "fit_warm_loglik"));
    let r = registry(&settings).await?;
    let v4 = r
        .model(KEY)
        .and_then(|m| m.versions.get(&4))
        .cloned()
        .expect("v4");
    assert_eq!(warm_from(&v4), Some(v1.parameter_hash.clone()));
    let vr = rerun(&settings, "rerun-warm", &c).await?;
    assert_eq!(vr.state, TrainingState::Completed, "{vr:#?}");
    assert_eq!(metric(&vr, "rerun_parameter_hash_matches"), 1.0, "{vr:#?}");
    assert_eq!(
        metric(&vr, "fit_warm_loglik"),
        metric(&vc, "fit_warm_loglik")
    );

    trainer.stop().await?;
    let _ = stop_regime.send(());
    regime.await??;

    // Retention: 40 days on, a restarted trainer's sweep deletes an
    // orphaned reference set past `references_days` (30) and keeps the
    // one every registered version names, and a recent orphan.
    let aged = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    let age = |path: &std::path::Path| -> Result<()> {
        std::fs::File::options()
            .write(true)
            .open(path)?
            .set_modified(aged)?;
        Ok(())
    };
    let needed = store
        .path()
        .join(format!("{}.json", manifest.reference_hash));
    let (old_orphan, new_orphan) = (
        store.path().join(format!("{}.json", "0".repeat(64))),
        store.path().join(format!("{}.json", "1".repeat(64))),
    );
    std::fs::copy(&needed, &old_orphan)?;
    std::fs::copy(&needed, &new_orphan)?;
    age(&needed)?;
    age(&old_orphan)?;
    let trainer = start_trainer(&settings, trainer_config(store.path()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while old_orphan.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old orphan was not swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    trainer.stop().await?;
    assert!(
        needed.exists(),
        "a registered version's reference set was deleted"
    );
    assert!(new_orphan.exists(), "a recent reference set was deleted");

    // The regime processor followed prod: every bar published after a
    // move is filtered under the version that move put in prod.
    let posteriors: Vec<RegimePosterior> =
        read_decoded::<RegimePosterior>(&settings, "regimes", Duration::from_secs(30))?
            .into_iter()
            .filter_map(|r| r.value.ok())
            .collect();
    let version_at: BTreeMap<i64, i32> =
        posteriors.iter().map(|p| (p.ts, p.model_version)).collect();
    let expect = |range: std::ops::Range<usize>, version: i32| {
        for v in &vectors[range] {
            if let Some(got) = version_at.get(&v.ts) {
                assert_eq!(*got, version, "bar {}", v.ts);
            }
        }
    };
    expect(4_000..5_000, 1);
    expect(5_000..5_500, 2);
    expect(5_500..6_000, 1);
    let filtered = |r: std::ops::Range<usize>| {
        vectors[r]
            .iter()
            .filter(|v| version_at.contains_key(&v.ts))
            .count()
    };
    assert!(
        filtered(4_000..5_000) > 900
            && filtered(5_000..5_500) == 500
            && filtered(5_500..6_000) == 500
    );
    Ok(())
}

async fn claims(settings: &ClientSettings) -> Result<Vec<DataClaim>> {
    let s = settings.clone();
    Ok(tokio::task::spawn_blocking(move || {
        read_decoded::<DataClaim>(&s, TRAINING_CLAIMS.name(), Duration::from_secs(30))
    })
    .await??
    .into_iter()
    .filter_map(|r| r.value.ok())
    .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_trains_each_bar_once_and_failed_runs_release_their_claims() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("strict").await?;
    let store = tempfile::tempdir()?;
    let vectors = vectors(6_000)?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[..3_000]).await?;
    let trainer = start_trainer(&settings, trainer_config(store.path()));
    let strict = ("mode", "strict");

    // A run that fails (it asks for a feature the data lacks) gives its
    // offsets back.
    let bad = trigger(
        &unique("bad"),
        &[strict, ("columns", "no_such_feature")],
        false,
    );
    publish(
        &settings,
        TRAINING_TRIGGERS,
        KEY,
        std::slice::from_ref(&bad),
    )
    .await?;
    let vbad = ended(&settings, &format!("tr-{}", bad.trigger_id)).await?;
    assert_eq!(vbad.state, TrainingState::Failed, "{vbad:#?}");
    assert!(
        vbad.error
            .as_deref()
            .unwrap_or("")
            .contains("no_such_feature"),
        "{vbad:#?}"
    );

    let first = trigger(&unique("first"), &[strict], false);
    publish(
        &settings,
        TRAINING_TRIGGERS,
        KEY,
        std::slice::from_ref(&first),
    )
    .await?;
    let v1 = ended(&settings, &format!("tr-{}", first.trigger_id)).await?;
    assert_eq!(v1.state, TrainingState::Completed, "{v1:#?}");

    publish(&settings, FEATURES, INSTRUMENT, &vectors[3_000..]).await?;
    let second = trigger(&unique("second"), &[strict], false);
    publish(
        &settings,
        TRAINING_TRIGGERS,
        KEY,
        std::slice::from_ref(&second),
    )
    .await?;
    let v2 = ended(&settings, &format!("tr-{}", second.trigger_id)).await?;
    assert_eq!(v2.state, TrainingState::Completed, "{v2:#?}");

    // Nothing new: a third strict run waits for data.
    let third = trigger(&unique("third"), &[strict], false);
    publish(
        &settings,
        TRAINING_TRIGGERS,
        KEY,
        std::slice::from_ref(&third),
    )
    .await?;
    let v3 = wait_for(
        &settings,
        &format!("tr-{}", third.trigger_id),
        "waited for data",
        |v| v.state == TrainingState::WaitingData,
    )
    .await?;
    assert!(
        v3.message.contains("needed") || v3.message.contains("no feature rows"),
        "{v3:#?}"
    );

    trainer.stop().await?;

    let all = claims(&settings).await?;
    let of = |id: &str, state: ClaimState| -> Vec<(i32, i64, i64)> {
        all.iter()
            .filter(|c| c.training_id == id && c.state == state)
            .flat_map(|c| c.ranges.iter().map(|r| (r.partition, r.start, r.end)))
            .collect()
    };
    let bad_claim = of(&vbad.training_id, ClaimState::Released);
    let first_claim = of(&v1.training_id, ClaimState::Consumed);
    let second_claim = of(&v2.training_id, ClaimState::Consumed);
    assert!(!bad_claim.is_empty());
    assert_eq!(
        first_claim, bad_claim,
        "the next run picked the released offsets up"
    );
    let count = |c: &[(i32, i64, i64)]| c.iter().map(|(_, a, b)| b - a).sum::<i64>();
    assert_eq!((count(&first_claim), count(&second_claim)), (3_000, 3_000));

    // No record (bar) in both runs.
    let r = registry(&settings).await?;
    let m = r.model(KEY).expect("model");
    let (m1, m2) = (
        m.versions[&1].manifest.clone().expect("m1"),
        m.versions[&2].manifest.clone().expect("m2"),
    );
    let read = |ranges: &[autotrain_schemas::OffsetRange]| -> Result<BTreeSet<(String, i64)>> {
        let reader = settings.reader_config();
        let mut out = BTreeSet::new();
        for rg in ranges {
            for rec in autotrain_kafka::reader::read_range(
                &reader,
                &settings.physical(&rg.topic),
                rg.partition,
                rg.start,
                rg.end,
                Duration::from_secs(30),
            )? {
                let v =
                    autotrain_schemas::decode::<FeatureVector>(&rec.payload.unwrap_or_default())?;
                out.insert((v.instrument, v.ts));
            }
        }
        Ok(out)
    };
    let (b1, b2) = (read(&m1.inputs)?, read(&m2.inputs)?);
    assert_eq!((b1.len(), b2.len()), (3_000, 3_000));
    assert!(b1.is_disjoint(&b2), "a bar trained twice");
    // One reference set for the split version; the second run trained on
    // none of its bars.
    assert_eq!(m1.reference_hash, m2.reference_hash);
    assert_eq!(v2.metric("excluded_rows"), Some(0.0));
    assert_eq!(v1.metric("reference_bars"), Some(600.0));
    Ok(())
}

fn gap(ts: i64, state: HitlState) -> ValidationFlag {
    ValidationFlag {
        flag_id: format!("gap:{INSTRUMENT}:{ts}"),
        instrument: INSTRUMENT.into(),
        timeframe: "30m".into(),
        kind: FlagKind::Gap,
        severity: Severity::Error,
        ts,
        gap_start: Some(ts - 3 * 1_800_000),
        gap_end: Some(ts),
        missing_bars: Some(3),
        detail: "3 bar(s) missing before this one".into(),
        state,
        actor: (state != HitlState::Open).then(|| "ops-test".to_string()),
        decided_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_gap_blocks_until_overridden_and_blocked_runs_can_be_cancelled() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("blocked").await?;
    let store = tempfile::tempdir()?;
    let vectors = vectors(2_000)?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors).await?;
    let hole = vectors[1_000].ts;
    publish(
        &settings,
        MARKET_FLAGS,
        INSTRUMENT,
        &[gap(hole, HitlState::Open)],
    )
    .await?;
    let trainer = start_trainer(&settings, trainer_config(store.path()));

    let t = trigger(&unique("gap"), &[], true);
    let c = trigger(&unique("cancel"), &[], true);
    publish(&settings, TRAINING_TRIGGERS, KEY, &[t.clone(), c.clone()]).await?;
    let (tid, cid) = (
        format!("tr-{}", t.trigger_id),
        format!("tr-{}", c.trigger_id),
    );
    let blocked = wait_for(&settings, &tid, "blocked", |v| {
        v.state == TrainingState::Blocked
    })
    .await?;
    assert!(
        blocked
            .message
            .contains(&format!("gap:{INSTRUMENT}:{hole}")),
        "{blocked:#?}"
    );
    wait_for(&settings, &cid, "blocked", |v| {
        v.state == TrainingState::Blocked
    })
    .await?;

    publish(
        &settings,
        TRAINING_COMMANDS,
        KEY,
        &[command(CommandAction::Cancel, Some(&cid), None)],
    )
    .await?;
    let cancelled = ended(&settings, &cid).await?;
    assert_eq!(cancelled.state, TrainingState::Cancelled);
    assert!(cancelled.message.contains("ops-test"));

    publish(
        &settings,
        MARKET_FLAGS,
        INSTRUMENT,
        &[gap(hole, HitlState::Overridden)],
    )
    .await?;
    let done = ended(&settings, &tid).await?;
    assert_eq!(
        (done.state, done.model_version),
        (TrainingState::Completed, Some(1)),
        "{done:#?}"
    );
    // Blocked once, not once per re-check.
    let blocked_events = done
        .events
        .iter()
        .filter(|e| e.state == TrainingState::Blocked)
        .count();
    assert_eq!(blocked_events, 1);
    trainer.stop().await?;
    Ok(())
}

/// Topic configs that make Kafka's log cleaner run at once: a segment per
/// 100 ms, cleanable at 1 % dirty.
const AGGRESSIVE: [(&str, &str); 3] = [
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("min.compaction.lag.ms", "0"),
];

fn with_aggressive<'a>(base: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().copied().chain(AGGRESSIVE).collect()
}

/// A Kafka node of the test's own whose log cleaner checks every 200 ms,
/// the catalogue's topics, and `model.updates` under `cleanup_policy` with
/// [`AGGRESSIVE`] settings; returns the registry's topic name too.
async fn cleaner_node(test: &str, cleanup_policy: &str) -> Result<(Kafka, ClientSettings, String)> {
    let kafka = Kafka::start_with(&["log.cleaner.backoff.ms=200"])?;
    let settings = kafka.fresh_topics(test).await?;
    let registry_topic = settings.physical(MODEL_UPDATES.name());
    set_topic_configs(
        &kafka.bootstrap(),
        &registry_topic,
        &with_aggressive(&[("cleanup.policy", cleanup_policy), ("retention.ms", "-1")]),
    )
    .await?;
    Ok((kafka, settings, registry_topic))
}

/// Records of `logical` now on the broker (read from the log start).
fn count(settings: &ClientSettings, logical: &str) -> Result<usize> {
    Ok(read_topic(settings, logical, 0, Duration::from_secs(20))?.len())
}

/// Publishes `n` watermarks of one stream 150 ms apart (each in its own
/// segment under [`AGGRESSIVE`]) and waits until the log cleaner has
/// compacted them: proof that it ran over the topics of `settings`.
async fn await_cleaner(settings: &ClientSettings, n: usize) -> Result<()> {
    for i in 0..n {
        let w = autotrain_schemas::SourceWatermark {
            stream: "x:Y:1m".into(),
            next_ts: i as i64,
            bars: i as i64,
            chunks: 1,
            last_chunk_sha256: None,
            source: "cleaner witness".into(),
        };
        publish(
            settings,
            autotrain_topics::SOURCE_WATERMARKS,
            "x:Y:1m",
            &[w],
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = settings.clone();
        let left = tokio::task::spawn_blocking(move || count(&s, "source.watermarks")).await??;
        if left < n / 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the log cleaner did not compact source.watermarks ({left} of {n} left)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// On Apache Kafka with the log cleaner running hard, the registry keeps
/// every event: a restarted trainer restores all versions, alias moves and
/// manifests, numbers the next version on, and rolls back to v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_registry_survives_the_log_cleaner_and_rolls_back_to_v1() -> Result<()> {
    let (kafka, settings, _) = cleaner_node("registry", "delete").await?;
    set_topic_configs(
        &kafka.bootstrap(),
        &settings.physical("source.watermarks"),
        &with_aggressive(&[("cleanup.policy", "compact"), ("retention.ms", "-1")]),
    )
    .await?;
    let store = tempfile::tempdir()?;
    let vectors = vectors(5_000)?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors).await?;

    // v1 (auto-promoted), v2 (staged, then promoted by ops), v3 (staged).
    let trainer = start_trainer(&settings, trainer_config(store.path()));
    for (name, auto) in [("a", true), ("b", false)] {
        let t = trigger(&unique(name), &[], auto);
        publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&t)).await?;
        let v = ended(&settings, &format!("tr-{}", t.trigger_id)).await?;
        assert_eq!(v.state, TrainingState::Completed, "{v:#?}");
    }
    publish(
        &settings,
        TRAINING_COMMANDS,
        KEY,
        &[command(CommandAction::Promote, None, Some(2))],
    )
    .await?;
    wait_prod(&settings, 2).await?;
    let c = trigger(&unique("c"), &[], false);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&c)).await?;
    ended(&settings, &format!("tr-{}", c.trigger_id)).await?;
    trainer.stop().await?;
    let before = registry(&settings).await?;
    let events_before = before.model(KEY).map(|m| m.events.len()).unwrap_or(0);
    assert_eq!(events_before, 5, "3 registrations, 2 prod moves");

    // The cleaner runs over the cluster's topics, then the trainer restarts.
    await_cleaner(&settings, 20).await?;
    assert_eq!(
        count(&settings, MODEL_UPDATES.name())?,
        events_before,
        "the registry's log keeps every event"
    );
    let trainer = start_trainer(&settings, trainer_config(store.path()));
    publish(&settings, TRAINING_COMMANDS, KEY, &[forced_rollback(1)]).await?;
    let r = wait_prod(&settings, 1).await?;
    let d = trigger(&unique("d"), &[], false);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&d)).await?;
    let vd = ended(&settings, &format!("tr-{}", d.trigger_id)).await?;
    assert_eq!(
        vd.model_version,
        Some(4),
        "numbering continues after the restore"
    );
    trainer.stop().await?;

    let model = r.model(KEY).expect("model");
    let was = before.model(KEY).expect("model");
    for v in 1..=3 {
        assert_eq!(
            model.versions.get(&v).and_then(|m| m.manifest.clone()),
            was.versions.get(&v).and_then(|m| m.manifest.clone()),
            "manifest of v{v}"
        );
    }
    let back = model.events.last().expect("rollback");
    assert_eq!(
        (back.event, back.version, back.previous_version),
        (autotrain_schemas::RegistryEvent::Rollback, 1, Some(2))
    );
    Ok(())
}

/// Were the registry's topic compacted, a restore could not fold what the
/// cleaner left: the trainer refuses to start, naming the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_compacted_registry_fails_the_restore_loudly() -> Result<()> {
    let (_kafka, settings, registry_topic) = cleaner_node("compacted", "compact").await?;
    // v1, prod → v1, v2, prod → v2, each in its own segment.
    let mut r = Registry::new();
    let manifest = autotrain_schemas::Manifest {
        trigger_id: "t".into(),
        code_version: "test".into(),
        feature_contract_version: "1".into(),
        inputs: Vec::new(),
        split_version: "v1".into(),
        reference_hash: "r".into(),
        hyperparams: Vec::new(),
        seed: 1,
        dataset_version: None,
        code_commit: None,
        feature_contract_hash: None,
        feature_build: None,
    };
    let mut events = Vec::new();
    for v in 1..=2 {
        let e = r.register(
            KEY,
            &format!("tr-{v}"),
            vec![],
            format!("h{v}"),
            vec![],
            manifest.clone(),
            v.into(),
        );
        r.apply(&e)?;
        events.push(e);
        let p = r.promote(KEY, v, PROD, i64::from(v) + 10)?;
        r.apply(&p)?;
        events.push(p);
    }
    for e in &events {
        publish(&settings, MODEL_UPDATES, KEY, std::slice::from_ref(e)).await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&settings, MODEL_UPDATES.name())? == events.len() {
        assert!(
            Instant::now() < deadline,
            "the cleaner never compacted the registry"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let store = tempfile::tempdir()?;
    let err = autotrain_trainer::service::run(
        &settings,
        trainer_config(store.path()),
        autotrain_trainer::service::intake_config(&unique("trainer")),
        now_ms,
        Arc::new(autotrain_trainer::service::ServiceCounters::default()),
        std::future::ready(()),
    )
    .await
    .expect_err("a compacted registry cannot be restored");
    let text = err.to_string();
    assert!(
        matches!(err, autotrain_kafka::KafkaError::Restore { .. }),
        "{text}"
    );
    assert!(
        text.contains(&format!("cannot restore from {registry_topic}[")),
        "{text}"
    );
    Ok(())
}

/// The gbdt family through the same trainer, registry and commands: a
/// forecast trains and is auto-promoted, a challenger is judged on the
/// same reference set by RMSLE, ops promote it and roll back to v1 (its
/// re-score gating the rollback), and a rerun reproduces the trees bit
/// for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gbdt_forecasts_train_promote_roll_back_and_rerun_identically() -> Result<()> {
    use autotrain_trainer::forecast::ForecastModel;
    const GBDT: &[(&str, &str)] = &[
        ("family", "gbdt"),
        ("columns", "lr,ret_std_20,rvol_20,rsi_14"),
        ("target", "abs_return:1"),
        ("iterations", "60"),
    ];
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("trainer-gbdt").await?;
    let store = tempfile::tempdir()?;
    let vectors = vectors(5_000)?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[..4_000]).await?;

    // The forecast processor runs throughout.
    let forecast_group = unique("forecast");
    let mut frc = RunnerConfig::new(&forecast_group, autotrain_forecast::processor::INPUTS);
    frc.strict_log_start = true;
    let (stop_forecast, forecast_stopped) = oneshot::channel::<()>();
    let fs = settings.clone();
    let forecasting = tokio::spawn(async move {
        run(
            &fs,
            &frc,
            autotrain_forecast::ForecastProcessor::new("hmm/{instrument}"),
            Arc::new(Counters::default()),
            async move {
                let _ = forecast_stopped.await;
            },
        )
        .await
    });
    let trainer = start_trainer(&settings, trainer_config(store.path()));
    let forecasts_settled = || settled(&settings, &forecast_group, &["model.updates", "features"]);

    let a = trigger(&unique("ga"), GBDT, true);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&a)).await?;
    let va = ended(&settings, &format!("tr-{}", a.trigger_id)).await?;
    assert_eq!(va.state, TrainingState::Completed, "{va:#?}");
    assert_eq!(metric(&va, "promoted"), 1.0);
    for m in ["mae", "rmse", "mape", "r2", "rmsle"] {
        assert!(metric(&va, m).is_finite(), "{m}");
    }
    let r = wait_prod(&settings, 1).await?;
    let v1 = r
        .model(KEY)
        .and_then(|m| m.versions.get(&1))
        .cloned()
        .expect("v1");
    let model = ForecastModel::from_json(v1.parameters.as_deref().unwrap_or_default())?;
    assert_eq!(model.columns, ["lr", "ret_std_20", "rvol_20", "rsi_14"]);
    assert_eq!(model.trees.len(), 60);
    let manifest = v1.manifest.clone().expect("manifest");
    assert!(manifest
        .hyperparams
        .iter()
        .any(|p| p.name == "family" && p.value == "gbdt"));

    // Bars after v1 took prod are forecast by v1.
    forecasts_settled().await?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[4_000..4_500]).await?;
    forecasts_settled().await?;

    // A deeper challenger, judged against v1 on v1's reference set.
    let mut deeper = GBDT.to_vec();
    deeper.push(("max_depth", "8"));
    let b = trigger(&unique("gb"), &deeper, true);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&b)).await?;
    let vb = ended(&settings, &format!("tr-{}", b.trigger_id)).await?;
    assert_eq!(
        (vb.state, vb.model_version),
        (TrainingState::Completed, Some(2))
    );
    let (challenger, champion) = (metric(&vb, "rmsle"), metric(&vb, "champion_rmsle"));
    assert!(champion.is_finite(), "the champion is re-scored");
    assert_eq!(
        metric(&vb, "promoted"),
        f64::from(u8::from(challenger <= champion)),
        "promoted exactly when its RMSLE is no worse ({challenger} vs {champion})"
    );
    let r = registry(&settings).await?;
    let v2 = r
        .model(KEY)
        .and_then(|m| m.versions.get(&2))
        .cloned()
        .expect("v2");
    assert_eq!(
        v2.manifest.as_ref().map(|m| m.reference_hash.clone()),
        Some(manifest.reference_hash.clone())
    );

    // Ops promote v2 (if the guardrails did not), then roll back to v1:
    // the rollback carries v1's re-scored metrics.
    if r.model(KEY).and_then(|m| m.aliases.get(PROD)) != Some(&2) {
        publish(
            &settings,
            TRAINING_COMMANDS,
            KEY,
            &[command(CommandAction::Promote, None, Some(2))],
        )
        .await?;
        wait_prod(&settings, 2).await?;
    }
    forecasts_settled().await?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[4_500..4_750]).await?;
    forecasts_settled().await?;
    publish(&settings, TRAINING_COMMANDS, KEY, &[forced_rollback(1)]).await?;
    let r = wait_prod(&settings, 1).await?;
    forecasts_settled().await?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors[4_750..]).await?;
    forecasts_settled().await?;
    let back = r
        .model(KEY)
        .and_then(|m| m.events.last())
        .cloned()
        .expect("rollback");
    assert!(back
        .metrics
        .iter()
        .any(|m| m.name == "rescored_rmsle" && m.value.is_finite()));

    // A rerun of v1's training: the same trees.
    let vr = rerun(&settings, "grerun", &a).await?;
    assert_eq!(vr.state, TrainingState::Completed, "{vr:#?}");
    assert_eq!(metric(&vr, "rerun_parameter_hash_matches"), 1.0);
    trainer.stop().await?;
    let _ = stop_forecast.send(());
    forecasting.await??;

    // Every bar published after a move of prod is forecast by the version
    // that move put in prod, with that version's own prediction.
    let forecasts: Vec<autotrain_schemas::Forecast> = read_decoded::<autotrain_schemas::Forecast>(
        &settings,
        "forecasts",
        Duration::from_secs(30),
    )?
    .into_iter()
    .filter_map(|r| r.value.ok())
    .collect();
    let r = registry(&settings).await?;
    let models: BTreeMap<i32, ForecastModel> = r
        .model(KEY)
        .map(|m| {
            m.versions
                .iter()
                .filter_map(|(n, v)| {
                    Some((*n, ForecastModel::from_json(v.parameters.as_deref()?).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let by_ts: BTreeMap<i64, &autotrain_schemas::Forecast> =
        forecasts.iter().map(|f| (f.ts, f)).collect();
    for (range, version) in [(4_000..4_500, 1), (4_500..4_750, 2), (4_750..5_000, 1)] {
        for v in &vectors[range] {
            let f = by_ts.get(&v.ts).expect("every bar forecast");
            assert_eq!(f.model_version, version, "bar {}", v.ts);
            let m = &models[&version];
            let row: Vec<f64> = m
                .columns
                .iter()
                .map(|c| {
                    v.values
                        .iter()
                        .find(|x| &x.name == c)
                        .and_then(|x| x.value)
                        .unwrap_or(f64::NAN)
                })
                .collect();
            assert_eq!(f.prediction, m.predict_row(&row));
        }
    }
    Ok(())
}

/// Hyper-parameter search: a seeded search registers its best trial (by
/// the reference RMSLE), records every trial, writes the winner's
/// parameters to the manifest so a rerun refits it to the identical hash,
/// and a cancelled search stops before its remaining trials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gbdt_search_registers_its_best_trial_reruns_it_and_stops_on_cancel() -> Result<()> {
    const SEARCH: &[(&str, &str)] = &[
        ("family", "gbdt"),
        ("columns", "lr,ret_std_20,rvol_20,rsi_14"),
        ("iterations", "40"),
        ("search_trials", "6"),
    ];
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("trainer-search").await?;
    let store = tempfile::tempdir()?;
    publish(&settings, FEATURES, INSTRUMENT, &vectors(4_000)?).await?;
    let trainer = start_trainer(&settings, trainer_config(store.path()));

    let a = trigger(&unique("sa"), SEARCH, true);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&a)).await?;
    let va = ended(&settings, &format!("tr-{}", a.trigger_id)).await?;
    assert_eq!(va.state, TrainingState::Completed, "{va:#?}");
    assert_eq!(metric(&va, "search_trials"), 6.0);
    let scores: Vec<f64> = (0..6)
        .map(|i| metric(&va, &format!("trial_{i:03}_rmsle")))
        .collect();
    let best = metric(&va, "search_best_trial") as usize;
    assert!(scores.iter().all(|s| *s >= scores[best]), "{scores:?}");
    assert_eq!(
        metric(&va, "rmsle"),
        scores[best],
        "the winner is registered"
    );
    let r = wait_prod(&settings, 1).await?;
    let manifest = r
        .model(KEY)
        .and_then(|m| m.versions.get(&1))
        .and_then(|v| v.manifest.clone())
        .expect("manifest");
    let param = |n: &str| {
        manifest
            .hyperparams
            .iter()
            .find(|p| p.name == n)
            .map(|p| p.value.parse::<f64>().unwrap_or(f64::NAN))
    };
    assert_eq!(
        param("learning_rate"),
        Some(metric(&va, &format!("trial_{best:03}_learning_rate")))
    );
    assert_eq!(
        param("max_depth"),
        Some(metric(&va, &format!("trial_{best:03}_max_depth")))
    );
    assert_eq!(
        param("search_trials"),
        None,
        "the manifest holds the winner, not the search"
    );

    let vr = rerun(&settings, "srerun", &a).await?;
    assert_eq!(metric(&vr, "rerun_parameter_hash_matches"), 1.0, "{vr:#?}");

    // A long search, cancelled once it is searching: it ends cancelled
    // well before its last trial, and registers nothing.
    let mut long = SEARCH.to_vec();
    long.retain(|(n, _)| *n != "search_trials");
    long.push(("search_trials", "200"));
    let c = trigger(&unique("slong"), &long, true);
    let id = format!("tr-{}", c.trigger_id);
    publish(&settings, TRAINING_TRIGGERS, KEY, std::slice::from_ref(&c)).await?;
    wait_for(&settings, &id, "searched", |v| {
        v.events
            .iter()
            .any(|e| e.stage.as_deref() == Some("search") && e.progress > 0.0)
    })
    .await?;
    publish(
        &settings,
        TRAINING_COMMANDS,
        KEY,
        &[command(CommandAction::Cancel, Some(&id), None)],
    )
    .await?;
    let vc = ended(&settings, &id).await?;
    assert_eq!(vc.state, TrainingState::Cancelled, "{vc:#?}");
    let searched = vc
        .events
        .iter()
        .filter(|e| e.stage.as_deref() == Some("search"))
        .map(|e| e.progress)
        .fold(0.0, f64::max);
    assert!(
        searched < 0.5,
        "searched {searched} of the trials before stopping"
    );
    trainer.stop().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = registry(&settings).await?;
    assert_eq!(
        r.model(KEY).map(|m| m.versions.len()),
        Some(2),
        "nothing registered after the cancel"
    );
    Ok(())
}
