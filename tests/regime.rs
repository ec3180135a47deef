//! The regime processor through the embedded broker: HMMs fitted on real
//! BTC/USD features are registered and promoted on `model.updates`; the
//! processor publishes a posterior for every feature row under the prod
//! version at that time, switches to the new version when `prod` moves
//! (no restart, no bar missed), and a new instance restored from the topics
//! continues exactly where the first one stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_features::{dataflow, Contract};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{read_topic as read_decoded, run, ClientSettings, RunnerConfig};
use autotrain_regime::RegimeProcessor;
use autotrain_schemas::{FeatureVector, Manifest, ModelVersion, RegimePosterior};
use autotrain_topics::{FEATURES, MODEL_UPDATES};
use autotrain_trainer::{
    Covariance, FitOptions, GaussianHmm, OnlineFilter, Registry, TrainedModel, PROD,
};

const COLUMNS: [&str; 2] = ["lr", "rvol_20"];

fn rows(vectors: &[FeatureVector]) -> Vec<(i64, Vec<f64>)> {
    vectors
        .iter()
        .filter_map(|v| {
            let row: Option<Vec<f64>> = COLUMNS
                .iter()
                .map(|c| v.values.iter().find(|f| f.name == *c).and_then(|f| f.value))
                .collect();
            row.map(|r| (v.ts, r))
        })
        .collect()
}

fn fit(rows: &[(i64, Vec<f64>)], states: usize) -> TrainedModel {
    let x: Vec<f64> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    let options = FitOptions {
        states,
        covariance: Covariance::Diag,
        restarts: 2,
        seed: 5,
        ..FitOptions::default()
    };
    let (hmm, _) = GaussianHmm::fit(&x, 2, &options).expect("fits");
    TrainedModel {
        columns: COLUMNS.iter().map(|c| c.to_string()).collect(),
        hmm,
        scaling: Vec::new(),
        reference: Default::default(),
        loglik_baseline: None,
    }
}

fn manifest() -> Manifest {
    Manifest {
        trigger_id: "test".into(),
        code_version: env!("CARGO_PKG_VERSION").into(),
        feature_contract_version: "1".into(),
        inputs: vec![],
        split_version: "s1".into(),
        reference_hash: "-".into(),
        hyperparams: vec![],
        seed: 5,
        dataset_version: None,
        code_commit: None,
        feature_contract_hash: None,
        feature_build: None,
    }
}

/// Registers and promotes a model; returns the two events.
fn release(registry: &mut Registry, model: &TrainedModel, at: i64) -> Vec<ModelVersion> {
    let registered = registry.register(
        "hmm/bitfinex:BTCUSD",
        "tr",
        model.to_bytes(),
        model.hmm.param_hash(),
        vec![],
        manifest(),
        at,
    );
    registry.apply(&registered).expect("register");
    let promoted = registry
        .promote("hmm/bitfinex:BTCUSD", registered.version, PROD, at + 1)
        .expect("promote");
    registry.apply(&promoted).expect("promote");
    vec![registered, promoted]
}

async fn drain(
    settings: &ClientSettings,
    rc: &RunnerConfig,
    processor: RegimeProcessor,
) -> Result<RegimeProcessor> {
    let done = stop_when_caught_up(
        settings.clone(),
        rc.group_id.clone(),
        vec!["features", "model.updates"],
        Duration::from_secs(120),
    );
    Ok(
        run(settings, rc, processor, Arc::new(Counters::default()), done)
            .await?
            .0,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regimes_follow_prod_and_survive_a_restart() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("regime").await?;
    let contract = Contract::bundled()?;
    let vectors = dataflow::run(&contract, &bars("bitfinex_BTCUSD_30m.csv", 6_000), 1, true)
        .map_err(anyhow::Error::msg)?
        .rows;
    let all = rows(&vectors);
    let v1 = fit(&all[..2_000], 3);
    let v2 = fit(&all[..4_000], 3);
    let mut registry = Registry::new();

    let group = unique("regime");
    let mut rc = RunnerConfig::new(&group, &["features", "model.updates"]);
    rc.strict_log_start = true;
    let key = "bitfinex:BTCUSD";

    // v1 in prod, then the first 3,000 feature rows.
    publish(
        &settings,
        MODEL_UPDATES,
        "hmm/bitfinex:BTCUSD",
        &release(&mut registry, &v1, 1),
    )
    .await?;
    // The processor reads the model before any feature row (the two topics
    // are not ordered against each other).
    let p = drain(&settings, &rc, RegimeProcessor::new("hmm/{instrument}")).await?;
    publish(&settings, FEATURES, key, &vectors[..3_000]).await?;
    let p = drain(&settings, &rc, p).await?;
    assert_eq!((p.stats.no_model, p.stats.reloads), (0, 1), "{:?}", p.stats);
    // Prod moves to v2; more rows.
    publish(
        &settings,
        MODEL_UPDATES,
        "hmm/bitfinex:BTCUSD",
        &release(&mut registry, &v2, 2),
    )
    .await?;
    publish(&settings, FEATURES, key, &vectors[3_000..4_500]).await?;
    // The processor stopped before them; a new instance restored from the
    // topics (registry, last posterior) takes over.
    drop(p);
    let s2 = settings.clone();
    let (models, regimes) = tokio::task::spawn_blocking(move || {
        Ok::<_, autotrain_kafka::KafkaError>((
            read_decoded::<ModelVersion>(&s2, "model.updates", Duration::from_secs(30))?,
            read_decoded::<RegimePosterior>(&s2, "regimes", Duration::from_secs(30))?,
        ))
    })
    .await??;
    let mut latest: BTreeMap<(String, String), RegimePosterior> = BTreeMap::new();
    for r in regimes {
        let p = r.value?;
        latest.insert((p.instrument.clone(), p.timeframe.clone()), p);
    }
    let mut restored = RegimeProcessor::new("hmm/{instrument}");
    restored.restore(
        models.into_iter().filter_map(|r| r.value.ok()),
        latest.into_values(),
    )?;
    let restored = drain(&settings, &rc, restored).await?;
    publish(&settings, FEATURES, key, &vectors[4_500..]).await?;
    let last = drain(&settings, &rc, restored).await?;
    assert_eq!(last.stats.no_model, 0);

    // Every feature row with both inputs has exactly one posterior, under
    // the version that was prod when it was processed.
    let published: Vec<RegimePosterior> =
        read_topic(&settings, "regimes", 1, Duration::from_secs(30))?
            .iter()
            .map(|(_, _, b)| autotrain_schemas::decode(b))
            .collect::<Result<_, _>>()?;
    let by_ts: BTreeMap<i64, &RegimePosterior> = published.iter().map(|p| (p.ts, p)).collect();
    let mut per_version: BTreeMap<i32, (usize, i64, i64)> = BTreeMap::new();
    for p in &published {
        let e = per_version
            .entry(p.model_version)
            .or_insert((0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 = e.1.min(p.ts);
        e.2 = e.2.max(p.ts);
    }
    let missing: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (ts, _))| !by_ts.contains_key(ts))
        .map(|(i, _)| i)
        .take(10)
        .collect();
    eprintln!(
        "{per_version:?} stats {:?} missing rows {missing:?}",
        last.stats
    );
    assert_eq!(by_ts.len(), published.len(), "one posterior per bar");
    assert_eq!(by_ts.len(), all.len(), "no bar missed");
    let switch = vectors[3_000].ts;
    assert!(by_ts
        .values()
        .all(|p| p.model_version == if p.ts < switch { 1 } else { 2 }));

    // The same posteriors, bit for bit, from a filter run in one go: v1 from
    // the start, v2 from the switch (the restart at 4,500 is invisible).
    let mut filter = OnlineFilter::new();
    for (ts, row) in &all {
        if *ts
            == all
                .iter()
                .find(|(t, _)| *t >= switch)
                .map(|(t, _)| *t)
                .unwrap_or(0)
        {
            filter = OnlineFilter::new();
        }
        let model = if *ts < switch { &v1 } else { &v2 };
        let (post, ll) = filter.step(&model.hmm, row)?;
        let got = by_ts[ts];
        assert_eq!(got.probabilities, post, "ts {ts}");
        assert_eq!(got.loglik.to_bits(), ll.to_bits());
    }
    Ok(())
}
