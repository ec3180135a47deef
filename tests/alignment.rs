//! Event-time alignment through the runner (`Processor::wait`, progress
//! records): the regime processor reads `features` and `model.updates`;
//! whatever order the two topics arrive in, and however long
//! `model.updates` stays silent, each bar is taken under the model in
//! `prod` at its own event time, and the posteriors are identical. A
//! processor stopped in the middle of a time step and restored from the
//! topics ends where an uninterrupted one does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use anyhow::Result;
use autotrain_features::{dataflow, Contract};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{
    read_topic as read_decoded, run, ClientSettings, OutRecord, Producer, RunnerConfig,
};
use autotrain_regime::RegimeProcessor;
use autotrain_schemas::{FeatureVector, Manifest, ModelVersion, RegimePosterior};
use autotrain_topics::{FEATURES, MODEL_UPDATES};
use autotrain_trainer::{Covariance, FitOptions, GaussianHmm, Registry, TrainedModel, PROD};

const KEY: &str = "hmm/bitfinex:BTCUSD";
const INSTRUMENT: &str = "bitfinex:BTCUSD";

fn model(vectors: &[FeatureVector], seed: u64) -> TrainedModel {
    let columns = ["lr", "rvol_20"];
    let x: Vec<f64> = vectors
        .iter()
        .filter_map(|v| {
            columns
                .iter()
                .map(|c| v.values.iter().find(|f| f.name == *c).and_then(|f| f.value))
                .collect::<Option<Vec<f64>>>()
        })
        .flatten()
        .collect();
    let options = FitOptions {
        states: 3,
        covariance: Covariance::Diag,
        restarts: 1,
        seed,
        ..FitOptions::default()
    };
    let (hmm, _) = GaussianHmm::fit(&x, 2, &options).expect("fits");
    TrainedModel {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        hmm,
        scaling: Vec::new(),
        reference: Default::default(),
        loglik_baseline: None,
    }
}

/// v1 in prod from `first`, v2 from `second` (event times).
fn releases(v1: &TrainedModel, v2: &TrainedModel, first: i64, second: i64) -> Vec<ModelVersion> {
    let mut registry = Registry::new();
    let manifest = Manifest {
        trigger_id: "test".into(),
        code_version: "0".into(),
        feature_contract_version: "1".into(),
        inputs: vec![],
        split_version: "s".into(),
        reference_hash: "-".into(),
        hyperparams: vec![],
        seed: 1,
        dataset_version: None,
        code_commit: None,
        feature_contract_hash: None,
        feature_build: None,
    };
    let mut out = Vec::new();
    for (m, from) in [(v1, first), (v2, second)] {
        let mut reg = registry.register(
            KEY,
            "tr",
            m.to_bytes(),
            m.hmm.param_hash(),
            vec![],
            manifest.clone(),
            0,
        );
        reg.effective_from = Some(from);
        registry.apply(&reg).expect("register");
        let mut promoted = registry
            .promote(KEY, reg.version, PROD, 0)
            .expect("promote");
        promoted.effective_from = Some(from);
        registry.apply(&promoted).expect("promote");
        out.extend([reg, promoted]);
    }
    out
}

async fn progress(settings: &ClientSettings, through: i64) -> Result<()> {
    Producer::new(settings)?
        .send(&OutRecord::progress(MODEL_UPDATES.name(), KEY, through))
        .await?;
    Ok(())
}

/// Runs `core` until `published` fires and its group has then consumed
/// both topics. Without the gate, a group that has committed
/// `model.updates` while `features` is still empty counts as caught up and
/// stops before the first bar.
fn start(
    settings: &ClientSettings,
    rc: &RunnerConfig,
    core: RegimeProcessor,
    counters: Arc<Counters>,
    published: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Result<RegimeProcessor>> {
    let (settings, rc) = (settings.clone(), rc.clone());
    tokio::spawn(async move {
        let group = rc.group_id.clone();
        let s = settings.clone();
        let done = async move {
            published
                .await
                .expect("the test signals when it has published");
            stop_when_caught_up(
                s,
                group,
                vec!["features", "model.updates"],
                Duration::from_secs(120),
            )
            .await
        };
        Ok(run(&settings, &rc, core, counters, done).await?.0)
    })
}

/// A gate already open: everything was published before the run starts.
fn all_published() -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    tx.send(()).expect("receiver alive");
    rx
}

async fn posteriors(settings: &ClientSettings) -> Result<BTreeMap<i64, RegimePosterior>> {
    let s = settings.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_decoded::<RegimePosterior>(&s, "regimes", Duration::from_secs(30))
    })
    .await??;
    let mut out = BTreeMap::new();
    for r in records {
        let p = r.value?;
        assert!(out.insert(p.ts, p).is_none(), "one posterior per bar");
    }
    Ok(out)
}

struct Scenario {
    vectors: Vec<FeatureVector>,
    events: Vec<ModelVersion>,
    first: i64,
    second: i64,
}

fn scenario() -> Result<Scenario> {
    let contract = Contract::bundled()?;
    let vectors = dataflow::run(&contract, &bars("bitfinex_BTCUSD_30m.csv", 3_000), 1, true)
        .map_err(anyhow::Error::msg)?
        .rows;
    let v1 = model(&vectors[..1_000], 3);
    let v2 = model(&vectors[..2_000], 4);
    let (first, second) = (vectors[1_000].ts, vectors[2_000].ts);
    Ok(Scenario {
        events: releases(&v1, &v2, first, second),
        vectors,
        first,
        second,
    })
}

fn check(s: &Scenario, got: &BTreeMap<i64, RegimePosterior>) {
    let want: Vec<i64> = s
        .vectors
        .iter()
        .map(|v| v.ts)
        .filter(|t| *t >= s.first)
        .collect();
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        want,
        "a posterior for every bar from v1's event time on, none before"
    );
    for p in got.values() {
        assert_eq!(
            p.model_version,
            if p.ts < s.second { 1 } else { 2 },
            "ts {}",
            p.ts
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_order_and_a_silent_input_do_not_change_the_posteriors() -> Result<()> {
    let s = scenario()?;
    let broker = TestBroker::embedded();
    let mut results = Vec::new();
    for (case, models_first) in [("models-first", true), ("bars-first", false)] {
        let settings = broker.fresh_topics(&format!("align-{case}")).await?;
        let mut rc = RunnerConfig::new(
            unique(&format!("align-{case}")),
            &["features", "model.updates"],
        );
        rc.strict_log_start = true;
        let counters = Arc::new(Counters::default());
        let (published, gate) = oneshot::channel();
        let running = start(
            &settings,
            &rc,
            RegimeProcessor::new("hmm/{instrument}").aligned(true),
            counters.clone(),
            gate,
        );
        if models_first {
            publish(&settings, MODEL_UPDATES, KEY, &s.events).await?;
            progress(&settings, i64::MAX).await?;
            publish(&settings, FEATURES, INSTRUMENT, &s.vectors).await?;
        } else {
            // Every bar first, and `model.updates` silent for a while: the
            // processor must wait, not decide.
            publish(&settings, FEATURES, INSTRUMENT, &s.vectors).await?;
            stop_when(counters.clone(), Duration::from_secs(60), |st| st.held >= 1).await;
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            let st = counters.snapshot();
            assert!(st.held >= 1, "{st:?}");
            assert_eq!(
                st.outputs, 0,
                "nothing decided before model.updates is complete"
            );
            // Progress only, up to just before v1: the bars before it pass,
            // with no model (no posterior).
            progress(&settings, s.first - 1).await?;
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            assert_eq!(counters.snapshot().outputs, 0);
            publish(&settings, MODEL_UPDATES, KEY, &s.events[..2]).await?;
            progress(&settings, s.second - 1).await?;
            publish(&settings, MODEL_UPDATES, KEY, &s.events[2..]).await?;
            progress(&settings, i64::MAX).await?;
        }
        published.send(()).expect("runner alive");
        running.await??;
        let got = posteriors(&settings).await?;
        check(&s, &got);
        results.push(got);
    }
    assert_eq!(results[0], results[1], "identical posteriors, bit for bit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_time_step_ends_where_an_uninterrupted_run_does() -> Result<()>
{
    let s = scenario()?;
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("align-restart").await?;
    let mut rc = RunnerConfig::new(unique("align-restart"), &["features", "model.updates"]);
    rc.strict_log_start = true;
    publish(&settings, FEATURES, INSTRUMENT, &s.vectors).await?;
    publish(&settings, MODEL_UPDATES, KEY, &s.events).await?;
    // Complete only halfway between v1 and v2: the first run stops there,
    // holding the next bar.
    let middle = s.vectors[1_500].ts;
    progress(&settings, middle).await?;
    let counters = Arc::new(Counters::default());
    let done = {
        let c = counters.clone();
        stop_when(c, Duration::from_secs(60), move |st| st.outputs >= 501)
    };
    let first = run(
        &settings,
        &rc,
        RegimeProcessor::new("hmm/{instrument}").aligned(true),
        counters.clone(),
        done,
    )
    .await?
    .0;
    let half = posteriors(&settings).await?;
    assert_eq!(
        half.keys().next_back().copied(),
        Some(middle),
        "stopped at the progress"
    );
    drop(first);
    // A new instance, restored as `autotrain run regime` restores it; the
    // runner restores the progress it had read.
    let s2 = settings.clone();
    let (models, regimes) = tokio::task::spawn_blocking(move || {
        Ok::<_, autotrain_kafka::KafkaError>((
            read_decoded::<ModelVersion>(&s2, "model.updates", Duration::from_secs(30))?,
            read_decoded::<RegimePosterior>(&s2, "regimes", Duration::from_secs(30))?,
        ))
    })
    .await??;
    let latest = regimes.into_iter().filter_map(|r| r.value.ok()).next_back();
    let mut restored = RegimeProcessor::new("hmm/{instrument}").aligned(true);
    restored.restore(models.into_iter().filter_map(|r| r.value.ok()), latest)?;
    let counters = Arc::new(Counters::default());
    let (published, gate) = oneshot::channel();
    let running = start(&settings, &rc, restored, counters.clone(), gate);
    stop_when(counters.clone(), Duration::from_secs(60), |st| st.held >= 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counters.snapshot().outputs,
        0,
        "the restored runner waits at the same bar"
    );
    progress(&settings, i64::MAX).await?;
    published.send(()).expect("runner alive");
    running.await??;
    let got = posteriors(&settings).await?;
    check(&s, &got);

    // The same posteriors from one uninterrupted run.
    let fresh = broker.fresh_topics("align-whole").await?;
    publish(&fresh, FEATURES, INSTRUMENT, &s.vectors).await?;
    publish(&fresh, MODEL_UPDATES, KEY, &s.events).await?;
    progress(&fresh, i64::MAX).await?;
    let mut rc = RunnerConfig::new(unique("align-whole"), &["features", "model.updates"]);
    rc.strict_log_start = true;
    start(
        &fresh,
        &rc,
        RegimeProcessor::new("hmm/{instrument}").aligned(true),
        Arc::new(Counters::default()),
        all_published(),
    )
    .await??;
    assert_eq!(got, posteriors(&fresh).await?);
    Ok(())
}
