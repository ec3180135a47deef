//! The parameter controller through the embedded broker: regime posteriors
//! in ⇒ `param.updates` seen by a plain consumer; trade outcomes change the
//! policy; a new instance restored from the topics holds exactly the state
//! of one that never stopped; a bad outcome is dead-lettered with the
//! reason and the stream goes on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{read_topic as read_decoded, run, ClientSettings, RunnerConfig};
use autotrain_params::processor::load_state;
use autotrain_params::{update_key, Controller, ParamsConfig, ParamsProcessor, StrategySchema};
use autotrain_schemas::{DeadLetter, ParamUpdate, RegimePosterior, TradeOutcome};
use autotrain_topics::{PARAM_UPDATES, REGIMES, TRADE_OUTCOMES};

fn schemas() -> Result<Vec<StrategySchema>> {
    Ok(StrategySchema::load_dir(
        &repo_root().join("strategy_schemas"),
    )?)
}

fn posterior(ts: i64, calm: f64) -> RegimePosterior {
    RegimePosterior {
        instrument: "bitfinex:BTCUSD".into(),
        timeframe: "30m".into(),
        ts,
        model_key: "hmm/bitfinex:BTCUSD".into(),
        model_version: 1,
        probabilities: vec![calm, 1.0 - calm, 0.0],
        regime: 0,
        loglik: 0.0,
        features: Vec::new(),
    }
}

const TOPICS: [&str; 4] = ["regimes", "features", "trade.outcomes", "param.updates"];

async fn drain(
    settings: &ClientSettings,
    rc: &RunnerConfig,
    p: ParamsProcessor,
) -> Result<ParamsProcessor> {
    let done = stop_when_caught_up(
        settings.clone(),
        rc.group_id.clone(),
        TOPICS.to_vec(),
        Duration::from_secs(120),
    );
    Ok(run(settings, rc, p, Arc::new(Counters::default()), done)
        .await?
        .0)
}

/// Publishes each strategy's outcomes under its `param.updates` key.
async fn publish_outcomes(
    settings: &ClientSettings,
    updates: &[ParamUpdate],
    outcomes: &[TradeOutcome],
) -> Result<()> {
    for u in updates {
        let mine: Vec<TradeOutcome> = outcomes
            .iter()
            .filter(|o| o.strategy == u.strategy)
            .cloned()
            .collect();
        publish(
            settings,
            TRADE_OUTCOMES,
            &update_key(&u.strategy, &u.instrument),
            &mine,
        )
        .await?;
    }
    Ok(())
}

fn outcomes_for(updates: &[ParamUpdate], from: i64, n: i64) -> Vec<TradeOutcome> {
    (0..n)
        .flat_map(|i| {
            updates.iter().map(move |u| TradeOutcome {
                trade_id: format!("{}-{}", u.config_id, from + i),
                strategy: u.strategy.clone(),
                instrument: u.instrument.clone(),
                config_id: u.config_id.clone(),
                preset_id: u.preset_id.clone(),
                reward: ((from + i) % 7) as f64 * 0.1 - 0.3,
                context: u.context.clone(),
                ts: (from + i) * 1_800_000,
                baseline_reward: None,
                flat: false,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_are_published_learnt_and_restored_exactly() -> Result<()> {
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("params").await?;
    let group = unique("params");
    let mut rc = RunnerConfig::new(&group, &TOPICS);
    rc.strict_log_start = true;
    let config = ParamsConfig::default();

    // 1. Regime posteriors ⇒ the initial preset of every strategy.
    let bars: Vec<RegimePosterior> = (0..20).map(|t| posterior(t * 1_800_000, 0.8)).collect();
    publish(&settings, REGIMES, "bitfinex:BTCUSD", &bars).await?;
    let p = drain(
        &settings,
        &rc,
        ParamsProcessor::new(Controller::new(config.clone(), schemas()?)),
    )
    .await?;
    let updates: Vec<ParamUpdate> =
        read_decoded::<ParamUpdate>(&settings, PARAM_UPDATES.name(), Duration::from_secs(30))?
            .into_iter()
            .filter_map(|r| r.value.ok())
            .collect();
    let initial: Vec<ParamUpdate> = updates
        .iter()
        .filter(|u| u.reason == autotrain_schemas::UpdateReason::Initial)
        .cloned()
        .collect();
    assert_eq!(initial.len(), 3, "{updates:#?}");
    assert!(initial
        .iter()
        .all(|u| !u.params.is_empty() && u.context.len() > 1));

    // 2. Outcomes change the policy.
    let first = outcomes_for(&initial, 0, 30);
    publish_outcomes(&settings, &initial, &first).await?;
    // And one that cannot be learnt from: dead-lettered, the rest goes on.
    let mut bad = first[0].clone();
    bad.preset_id = "no-such-preset".into();
    bad.trade_id = "bad".into();
    publish(&settings, TRADE_OUTCOMES, "x", &[bad]).await?;
    let p = drain(&settings, &rc, p).await?;
    assert_eq!(p.controller.stats.outcomes, 90);
    let dead: Vec<DeadLetter> =
        read_decoded::<DeadLetter>(&settings, "market.bars.dlq", Duration::from_secs(30))?
            .into_iter()
            .filter_map(|r| r.value.ok())
            .collect();
    assert!(
        dead.iter().any(|d| d.error.contains("unknown preset")),
        "{dead:#?}"
    );

    // 3. More outcomes while the controller is down; a new instance
    //    restored from the topics then catches up.
    let second = outcomes_for(&initial, 30, 20);
    publish_outcomes(&settings, &initial, &second).await?;
    drop(p);
    let (s, g) = (settings.clone(), group.clone());
    let state =
        tokio::task::spawn_blocking(move || load_state(&s, &g, Duration::from_secs(30))).await??;
    assert_eq!(
        state.outcomes.len(),
        91,
        "outcomes below the committed offsets (one refused)"
    );
    let mut restored = ParamsProcessor::new(Controller::new(config.clone(), schemas()?));
    restored.restore(state);
    let restored = drain(&settings, &rc, restored).await?;

    // The reference: one controller that saw every outcome in order.
    let mut reference = Controller::new(config, schemas()?);
    for b in &bars {
        reference.on_regime(b);
    }
    for o in first.iter().chain(&second) {
        reference.on_outcome(o).map_err(anyhow::Error::msg)?;
    }
    for u in &initial {
        let a = restored
            .controller
            .slot(&u.strategy, &u.instrument)
            .map(|s| &s.policy);
        let b = reference
            .slot(&u.strategy, &u.instrument)
            .map(|s| &s.policy);
        assert_eq!(a, b, "{} policy after restore", u.strategy);
        assert_eq!(a.map(|p| p.updates()), Some(50));
        assert_eq!(
            restored
                .controller
                .slot(&u.strategy, &u.instrument)
                .and_then(|s| s.current.clone()),
            Some(
                reference
                    .slot(&u.strategy, &u.instrument)
                    .and_then(|s| s.current.clone())
                    .expect("current")
            ),
        );
    }
    Ok(())
}

/// The closed loop offline on real bars: features of the bundled BTC/USD
/// file, a regime posterior per bar from a fixed two-state split on the
/// 20-bar volatility, the controller deciding and the simulated engine
/// trading, over the five bundled coins. The controller must end ahead of
/// never changing the safe presets, and its market-making choices must
/// earn more in the second half than in the first (it learnt).
#[test]
fn closed_loop_on_real_bars() -> Result<()> {
    use autotrain_features::{dataflow, Contract};
    use autotrain_params::Engine;
    let mut vectors = Vec::new();
    for f in [
        "bitfinex_BTCUSD_30m.csv",
        "bitfinex_ETHUSD_30m.csv",
        "bitfinex_XRPUSD_30m.csv",
        "bitfinex_EOSUSD_30m.csv",
        "bitfinex_LTCUSD_30m.csv",
    ] {
        vectors.extend(
            dataflow::run(&Contract::bundled()?, &bars(f, 35_000), 1, true)
                .map_err(anyhow::Error::msg)?
                .rows,
        );
    }
    vectors.sort_by_key(|v| v.ts);
    let mut c = Controller::new(ParamsConfig::default(), schemas()?);
    let mut e = Engine::new(schemas()?, 2.0);
    let mut by_half = [
        std::collections::BTreeMap::<String, f64>::new(),
        Default::default(),
    ];
    let mut outcomes = 0u64;
    for (i, v) in vectors.iter().enumerate() {
        c.on_features(v);
        let vol = v
            .values
            .iter()
            .find(|f| f.name == "rvol_20")
            .and_then(|f| f.value)
            .unwrap_or(0.6);
        let calm = if vol < 0.6 { 0.9 } else { 0.1 };
        let mut p = posterior(v.ts, calm);
        p.instrument = v.instrument.clone();
        for u in c.on_regime(&p) {
            e.on_update(&u);
        }
        for o in e.on_bar(v) {
            outcomes += 1;
            *by_half[usize::from(i >= vectors.len() / 2)]
                .entry(o.strategy.clone())
                .or_default() += o.reward;
            for u in c.on_outcome(&o).map_err(anyhow::Error::msg)? {
                e.on_update(&u);
            }
        }
    }
    eprintln!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        e.stats(),
        c.stats,
        by_half[0],
        by_half[1]
    );
    assert!(
        e.stats().reward_policy > e.stats().reward_safe_preset,
        "{:?}",
        e.stats()
    );
    // Conservative: on every strategy, at least (1 − α) × the safe
    // preset's reward (safe − α·|safe| when it loses).
    let alpha = ParamsConfig::default().conservative_alpha;
    for (strategy, (policy, safe)) in &e.stats().by_strategy {
        assert!(
            *policy >= safe - alpha * safe.abs(),
            "{strategy}: {policy} under the controller vs {safe} safe"
        );
    }
    assert!(
        by_half[1]["market_making"] > by_half[0]["market_making"],
        "{by_half:?}"
    );
    assert_eq!(c.stats.outcomes, outcomes);
    Ok(())
}
