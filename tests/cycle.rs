//! The params ⇄ engine cycle on event time (docs/determinism.md): the
//! controller decides on `regimes` and learns from `trade.outcomes` a lag
//! late, the engine trades `features` under `param.updates`. Whatever order
//! the topics arrive in, however long `regimes` stays silent (carrying only
//! progress), and across a controller stopped mid-stream and restored from
//! the topics, both publish the same records.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_integration_tests::cycle::{
    config, regimes_progress, same, scenario, schemas, Scenario, INSTRUMENT,
};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, ClientSettings, RunnerConfig};
use autotrain_params::processor::{load_state, ENGINE_INPUTS, INPUTS};
use autotrain_params::{Controller, Engine, EngineProcessor, ParamsProcessor};
use autotrain_topics::{FEATURES, REGIMES};

async fn outputs(settings: &ClientSettings) -> Result<(Vec<String>, Vec<String>)> {
    let s = settings.clone();
    tokio::task::spawn_blocking(move || autotrain_integration_tests::cycle::outputs(&s)).await?
}

fn params_rc(group: &str) -> RunnerConfig {
    let mut rc = RunnerConfig::new(group, INPUTS);
    rc.strict_log_start = true;
    rc
}

fn engine_rc(group: &str) -> RunnerConfig {
    let mut rc = RunnerConfig::new(group, ENGINE_INPUTS);
    rc.strict_log_start = true;
    rc
}

/// Resolves once both groups have read everything there is, twice in a
/// row a second apart (the cores' idle progress has gone out by then).
async fn both_caught_up(settings: ClientSettings, groups: [String; 2], limit: Duration) {
    let started = std::time::Instant::now();
    let mut streak = 0;
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, g) = (settings.clone(), groups.clone());
        let done = tokio::task::spawn_blocking(move || {
            caught_up(&s, &g[0], INPUTS).unwrap_or(false)
                && caught_up(&s, &g[1], ENGINE_INPUTS).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        streak = if done { streak + 1 } else { 0 };
        if streak >= 3 {
            return;
        }
    }
    eprintln!("both_caught_up: still behind after {limit:?}");
}

type Running<P> = tokio::task::JoinHandle<Result<P>>;

fn spawn<P: autotrain_kafka::Processor + 'static>(
    settings: &ClientSettings,
    rc: RunnerConfig,
    core: P,
    counters: Arc<Counters>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Running<P> {
    let settings = settings.clone();
    tokio::spawn(async move {
        let mut stop = stop;
        let done = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        Ok(run(&settings, &rc, core, counters, done).await?.0)
    })
}

#[derive(Clone, Copy, Debug)]
enum Order {
    RegimesFirst,
    FeaturesFirst,
    /// Posteriors in chunks with silences, features all at once.
    Trickle,
}

async fn case(
    broker: &TestBroker,
    s: &Scenario,
    order: Order,
) -> Result<(Vec<String>, Vec<String>)> {
    let name = format!("cycle-{order:?}").to_lowercase();
    let settings = broker.fresh_topics(&name).await?;
    let groups = [
        unique(&format!("{name}-params")),
        unique(&format!("{name}-engine")),
    ];
    let (tx, rx) = tokio::sync::watch::channel(false);
    let engine_counters = Arc::new(Counters::default());
    let params = spawn(
        &settings,
        params_rc(&groups[0]),
        ParamsProcessor::new(Controller::new(config(), schemas()?)).aligned(true),
        Arc::new(Counters::default()),
        rx.clone(),
    );
    let engine = spawn(
        &settings,
        engine_rc(&groups[1]),
        EngineProcessor::new(Engine::new(schemas()?, 2.0)).aligned(true),
        engine_counters.clone(),
        rx,
    );
    let last_without = s.last_without_model();
    match order {
        Order::RegimesFirst => s.publish_all(&settings).await?,
        Order::FeaturesFirst => {
            publish(&settings, FEATURES, INSTRUMENT, &s.vectors).await?;
            stop_when(engine_counters.clone(), Duration::from_secs(60), |st| {
                st.held >= 1
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            let st = engine_counters.snapshot();
            assert!(st.held >= 1, "{st:?}");
            assert_eq!(st.outputs, 0, "no trade before the controller vouches");
            regimes_progress(&settings, last_without).await?;
            publish(&settings, REGIMES, INSTRUMENT, &s.posteriors).await?;
        }
        Order::Trickle => {
            publish(&settings, FEATURES, INSTRUMENT, &s.vectors).await?;
            regimes_progress(&settings, last_without).await?;
            for chunk in s.posteriors.chunks(400) {
                tokio::time::sleep(Duration::from_millis(700)).await;
                publish(&settings, REGIMES, INSTRUMENT, chunk).await?;
            }
        }
    }
    both_caught_up(settings.clone(), groups, Duration::from_secs(120)).await;
    let _ = tx.send(true);
    let (params, engine) = (params.await??, engine.await??);
    assert_eq!(
        params.controller.stats.decisions,
        3 * s.posteriors.len() as u64,
        "every posterior decided, once per strategy"
    );
    assert_eq!(
        engine.engine.stats().trades as usize,
        outputs(&settings).await?.1.len(),
        "every trade has its outcome"
    );
    outputs(&settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arrival_order_and_silence_do_not_change_updates_or_trades() -> Result<()> {
    let s = scenario()?;
    let broker = TestBroker::embedded();
    let first = case(&broker, &s, Order::RegimesFirst).await?;
    assert!(
        first.0.len() > 10 && first.1.len() > 1_000,
        "{} updates, {} outcomes",
        first.0.len(),
        first.1.len()
    );
    for order in [Order::FeaturesFirst, Order::Trickle] {
        let other = case(&broker, &s, order).await?;
        same(&first.0, &other.0, &format!("param.updates, {order:?}"));
        same(&first.1, &other.1, &format!("trade.outcomes, {order:?}"));
    }
    Ok(())
}

/// The controller stopped after some of its updates and restored from the
/// topics (as `autotrain run params` restores it), the engine running
/// throughout: the same records as an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_controller_restored_mid_stream_ends_where_an_uninterrupted_one_does() -> Result<()> {
    let s = scenario()?;
    let broker = TestBroker::embedded();
    let whole = case(&broker, &s, Order::RegimesFirst).await?;

    let settings = broker.fresh_topics("cycle-restart").await?;
    let groups = [
        unique("cycle-restart-params"),
        unique("cycle-restart-engine"),
    ];
    let (stop_engine, rx) = tokio::sync::watch::channel(false);
    let engine = spawn(
        &settings,
        engine_rc(&groups[1]),
        EngineProcessor::new(Engine::new(schemas()?, 2.0)).aligned(true),
        Arc::new(Counters::default()),
        rx,
    );
    s.publish_all(&settings).await?;
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(60), |st| {
        st.processed >= 2_500
    });
    let first = run(
        &settings,
        &params_rc(&groups[0]),
        ParamsProcessor::new(Controller::new(config(), schemas()?)).aligned(true),
        counters,
        stop,
    )
    .await?
    .0;
    assert!(
        first.controller.stats.decisions < 3 * s.posteriors.len() as u64,
        "stopped mid-stream"
    );
    drop(first);
    let (st, g) = (settings.clone(), groups[0].clone());
    let state =
        tokio::task::spawn_blocking(move || load_state(&st, &g, Duration::from_secs(30))).await??;
    assert!(!state.decided.is_empty() && !state.outcomes.is_empty());
    let mut restored = ParamsProcessor::new(Controller::new(config(), schemas()?)).aligned(true);
    restored.restore(state);
    let (stop_params, rx) = tokio::sync::watch::channel(false);
    let params = spawn(
        &settings,
        params_rc(&groups[0]),
        restored,
        Arc::new(Counters::default()),
        rx,
    );
    both_caught_up(settings.clone(), groups, Duration::from_secs(120)).await;
    let _ = (stop_params.send(true), stop_engine.send(true));
    params.await??;
    engine.await??;
    let got = outputs(&settings).await?;
    same(&whole.0, &got.0, "param.updates");
    same(&whole.1, &got.1, "trade.outcomes");
    Ok(())
}

/// Strategies that declare a forecast as context (`forecast:<target>`):
/// a posterior waits for the forecast processor's progress through its bar,
/// so the decisions are the same whether the forecasts come first or long
/// after the posteriors; and the forecasts are in the decisions' context.
/// On the shared Apache Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forecasts_as_context_are_waited_for_and_read_at_their_bar() -> Result<()> {
    use autotrain_integration_tests::cycle::{forecast_schemas, BEFORE_FORECASTS};
    let s = scenario()?;
    let broker = TestBroker::kafka();
    let mut runs = Vec::new();
    let mut contexts: Vec<(i64, f64)> = Vec::new();
    for forecasts_first in [true, false] {
        let name = format!("cycle-forecasts-{forecasts_first}");
        let settings = broker.fresh_topics(&name).await?;
        let groups = [
            unique(&format!("{name}-params")),
            unique(&format!("{name}-engine")),
        ];
        let (tx, rx) = tokio::sync::watch::channel(false);
        let params_counters = Arc::new(Counters::default());
        let params = spawn(
            &settings,
            params_rc(&groups[0]),
            ParamsProcessor::new(Controller::new(config(), forecast_schemas()?)).aligned(true),
            params_counters.clone(),
            rx.clone(),
        );
        let engine = spawn(
            &settings,
            engine_rc(&groups[1]),
            EngineProcessor::new(Engine::new(forecast_schemas()?, 2.0)).aligned(true),
            Arc::new(Counters::default()),
            rx,
        );
        if forecasts_first {
            s.publish_forecasts(&settings).await?;
            s.publish_all(&settings).await?;
        } else {
            s.publish_all(&settings).await?;
            stop_when(params_counters.clone(), Duration::from_secs(60), |st| {
                st.held >= 1
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            assert!(params_counters.snapshot().held >= 1, "posteriors held");
            let (updates, _) = outputs(&settings).await?;
            assert!(
                updates.is_empty(),
                "no decision before its forecast: {updates:?}"
            );
            s.publish_forecasts(&settings).await?;
        }
        both_caught_up(settings.clone(), groups, Duration::from_secs(120)).await;
        let _ = tx.send(true);
        let (params, _) = (params.await??, engine.await??);
        let stats = &params.controller.stats;
        assert_eq!(stats.decisions, 3 * s.posteriors.len() as u64);
        assert_eq!(
            stats.forecasts_used as usize,
            s.forecasts().len(),
            "every forecast read once, at its bar"
        );
        assert_eq!(stats.late_forecasts, 0);
        runs.push(outputs(&settings).await?);
        if forecasts_first {
            let st = settings.clone();
            contexts = tokio::task::spawn_blocking(move || {
                autotrain_kafka::read_topic::<autotrain_schemas::ParamUpdate>(
                    &st,
                    "param.updates",
                    Duration::from_secs(30),
                )
            })
            .await??
            .into_iter()
            .filter_map(|r| r.value.ok())
            .filter_map(|u| u.context.last().map(|x| (u.at, *x)))
            .collect();
        }
    }
    same(&runs[0].0, &runs[1].0, "param.updates, forecasts late");
    same(&runs[0].1, &runs[1].1, "trade.outcomes, forecasts late");
    // The forecast is the context's last entry: at its centre (0 scaled)
    // before the first forecast, the bar's forecast after.
    let first_forecast = s.vectors[BEFORE_FORECASTS].ts;
    assert!(contexts
        .iter()
        .filter(|(at, _)| *at < first_forecast)
        .all(|(_, x)| *x == 0.0));
    let after: Vec<f64> = contexts
        .iter()
        .filter(|(at, _)| *at >= first_forecast)
        .map(|(_, x)| *x)
        .collect();
    assert!(
        after.len() > 5 && after.iter().any(|x| *x != 0.0),
        "{after:?}"
    );
    // Without forecast context the controller decides otherwise.
    let plain = case(&broker, &s, Order::RegimesFirst).await?;
    assert_ne!(plain.0, runs[0].0, "forecasts change the decisions");
    Ok(())
}
