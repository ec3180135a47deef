//! `autotrain bench …`: throughput and latency figures (printed, never
//! asserted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{
    create_topics, Broker, ClientSettings, Incoming, OutRecord, Outputs, ProcessError, Processor,
    Producer, RunnerConfig,
};
use autotrain_schemas::{decode, encode, Bar};
use autotrain_topics::{Topic, TopicSpec};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Avro encode/decode in-process, and produce→consume through brokers.
    Wire(WireArgs),
    /// Bars per second of the validator's pure core.
    Validate(ValidateArgs),
    /// Bars per second of the feature dataflow in-process (1 and 2 timely
    /// workers) and through the embedded broker, memory per instrument.
    Features(FeaturesBenchArgs),
    /// Updates per second of each drift detector, and its detection delay
    /// on a 1σ mean shift.
    Drift(DriftBenchArgs),
    /// Gaussian HMM fit time on 100,000 and 1,000,000 two-column
    /// observations (simulated from a known 3-state model), 3 and 4 states,
    /// diagonal and full covariance.
    Hmm(HmmBenchArgs),
    /// Decisions + updates per second of the bandit policies (LinTS with
    /// d = 8 and 5 presets, Thompson, epsilon-greedy), and of the whole
    /// controller (decision on a regime posterior + learning from an
    /// outcome); then the control-plane API's request latency (p50/p99) under
    /// concurrent local load.
    Params(ParamsBenchArgs),
    /// Where a bar's time goes from `market.bars.raw` to `features`: per
    /// stage, decode, core, encode, enqueue, commit, consume and the
    /// acknowledgement latency, and raw → features bars/s, on the embedded
    /// broker and (with `--brokers`) on a real cluster.
    Pipeline(pipeline::PipelineBenchArgs),
}

mod pipeline;

#[derive(Debug, clap::Args)]
pub struct ParamsBenchArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub steps: usize,
    /// API requests per endpoint for the latency figures (0: skip).
    #[arg(long, default_value_t = 5_000)]
    pub api_requests: usize,
    /// Clients sending them at once.
    #[arg(long, default_value_t = 8)]
    pub api_concurrency: usize,
}

/// Latency of the API's hot endpoints under `concurrency` clients on the
/// embedded broker: advice (`GET /param` with features), a view read
/// (`GET /api/trainings/stats`), and an outcome (`POST /learn/outcome`,
/// which waits for the broker's acknowledgement).
async fn bench_api(config: &Config, requests: usize, concurrency: usize) -> Result<()> {
    let ctx = crate::context::Context::connect(&Config {
        brokers: None,
        ..config.clone()
    })
    .await?;
    let api = autotrain_api::ApiConfig {
        bind: "127.0.0.1:0".into(),
        dev_mode: true,
        ..autotrain_api::ApiConfig::default()
    };
    let addr = api.check()?;
    let state = super::serve::state(&ctx, config, api, Vec::new(), Vec::new())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (local, server) = super::serve::start(state, addr, false, async move {
        let _ = rx.await;
    })
    .await?;
    let base = format!("http://{local}");
    let http = reqwest::Client::new();
    while http
        .get(format!("{base}/health"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let instrument = "bench:X";
    let advice: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("{base}/param/momentum_breakout/{instrument}"))
            .send()
            .await?
            .text()
            .await?,
    )?;
    let config_id = advice["config_id"].as_str().unwrap_or_default().to_string();
    let preset = advice["preset_id"].as_str().unwrap_or_default().to_string();
    for (name, make) in [
        ("GET /param (advice)", 0u8),
        ("GET /api/trainings/stats", 1),
        ("POST /learn/outcome", 2),
    ] {
        let per = requests.div_ceil(concurrency.max(1));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..concurrency.max(1) {
            let (http, base, config_id, preset) = (
                http.clone(),
                base.clone(),
                config_id.clone(),
                preset.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
                let mut failed = 0u64;
                for i in 0..per {
                    let t = Instant::now();
                    let req = match make {
                        0 => http.get(format!(
                            "{base}/param/momentum_breakout/{instrument}?features[rsi_14]={}",
                            (c * per + i) % 100
                        )),
                        1 => http.get(format!("{base}/api/trainings/stats")),
                        _ => http
                            .post(format!(
                                "{base}/learn/outcome/momentum_breakout/{instrument}/{preset}"
                            ))
                            .header("content-type", "application/json")
                            .body(format!(
                                "{{\"reward\": {}, \"config_id\": \"{config_id}\"}}",
                                (i % 7) as f64 * 0.1 - 0.3
                            )),
                    };
                    let ok = req.send().await.map(|r| r.status().is_success());
                    if !matches!(ok, Ok(true)) {
                        failed += 1;
                    }
                    h.record(t.elapsed().as_micros() as u64)?;
                }
                anyhow::Ok((h, failed))
            }));
        }
        let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut failed = 0;
        for t in tasks {
            let (h, f) = t.await??;
            all.add(h)?;
            failed += f;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "api {name:<26} {} requests, {concurrency} clients: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {failed} failed",
            all.len(),
            all.len() as f64 / secs,
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            all.max() as f64 / 1000.0,
        );
    }
    let _ = tx.send(());
    server.await??;
    Ok(())
}

fn bench_params(args: &ParamsBenchArgs) -> Result<()> {
    use autotrain_params::policy::{argmax, Policy, PolicySpec, Scratch};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    let (d, arms, n) = (8usize, 5usize, args.steps.max(1_000));
    let mut env = ChaCha8Rng::seed_from_u64(1);
    let contexts: Vec<Vec<f64>> = (0..4_096)
        .map(|_| {
            let mut x: Vec<f64> = (0..d).map(|_| env.random::<f64>() - 0.5).collect();
            x[0] = 1.0;
            x
        })
        .collect();
    for spec in [
        PolicySpec::LinTs {
            v: 0.5,
            lambda: 1.0,
        },
        PolicySpec::ThompsonGaussian { sigma: 1.0 },
        PolicySpec::ThompsonBeta,
        PolicySpec::EpsilonGreedy { epsilon: 0.1 },
    ] {
        let mut policy = Policy::new(&spec, arms, d);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut scratch = Scratch::default();
        let started = Instant::now();
        let mut total = 0.0;
        for t in 0..n {
            let x = &contexts[t % contexts.len()];
            let arm = argmax(&policy.scores(x, &mut rng, &mut scratch));
            let reward = x[1] * (arm as f64 - 2.0) + 0.1;
            total += reward;
            policy.update(arm, x, reward);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "params {:<20} d={d} presets={arms}: {:>12.0} decisions+updates/s ({n} in {secs:.3} s; mean reward {:.3})",
            format!("{spec:?}").split([' ', '{']).next().unwrap_or_default(),
            n as f64 / secs,
            total / n as f64
        );
    }
    // The whole controller: the bundled schemas, one instrument.
    let dir = crate::config::schemas_dir(&Config::default());
    let schemas = autotrain_params::StrategySchema::load_dir(&dir)?;
    let mut c =
        autotrain_params::Controller::new(autotrain_params::ParamsConfig::default(), schemas);
    let steps = (n / 10).max(1_000);
    let started = Instant::now();
    let mut updates = 0usize;
    let mut current: Vec<autotrain_schemas::ParamUpdate> = Vec::new();
    for t in 0..steps {
        let calm = (t % 100) as f64 / 100.0;
        let p = autotrain_schemas::RegimePosterior {
            instrument: "bench:X".into(),
            timeframe: "30m".into(),
            ts: t as i64 * 1_800_000,
            model_key: "hmm/bench:X".into(),
            model_version: 1,
            probabilities: vec![calm, 1.0 - calm, 0.0],
            regime: 0,
            loglik: 0.0,
            features: Vec::new(),
        };
        for u in c.on_regime(&p) {
            updates += 1;
            current.retain(|x| x.strategy != u.strategy);
            current.push(u);
        }
        for u in &current {
            let o = autotrain_schemas::TradeOutcome {
                trade_id: String::new(),
                strategy: u.strategy.clone(),
                instrument: u.instrument.clone(),
                config_id: u.config_id.clone(),
                preset_id: u.preset_id.clone(),
                reward: calm - 0.5,
                context: u.context.clone(),
                ts: p.ts,
                baseline_reward: None,
                flat: false,
            };
            updates += c.on_outcome(&o).map(|v| v.len()).unwrap_or(0);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "params controller (3 strategies, LinTS): {:>10.0} bars/s, i.e. {:.0} decisions+outcomes/s ({updates} updates published)",
        steps as f64 / secs,
        (steps * 3 * 2) as f64 / secs
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct HmmBenchArgs {
    /// EM iterations per fit (hmmlearn's default n_iter is 10).
    #[arg(long, default_value_t = 10)]
    pub max_iter: usize,
    /// Largest size (the 100,000 run always happens).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
}

/// Floating-point operations per row of one E-step (both sweeps), counted
/// from the kernel: densities, the 13-term exponential and its reduction,
/// forward recursion and scaling, backward recursion, expected transitions
/// and the M-step sums.
fn e_step_flops(k: usize, d: usize, full: bool) -> usize {
    let density = if full { d * d + 2 * d + 2 } else { 3 * d + 2 };
    let exp = 32;
    let forward = 2 * k * k + 3 * k;
    let backward = 4 * k * k + 3 * k;
    let sums = if full {
        1 + 2 * d + d * (d + 1)
    } else {
        1 + 4 * d
    };
    k * (density + exp + 1) + forward + backward + k * sums
}

fn bench_hmm(args: &HmmBenchArgs) -> Result<()> {
    use autotrain_trainer::hmm::kernel;
    use autotrain_trainer::simulate::{sample, Truth};
    use autotrain_trainer::{Covariance, FitOptions, GaussianHmm};
    // The flop limit: every core's two vector ports doing 4-wide f64 adds
    // or multiplies (AVX2, no FMA: Rust never fuses), at the clock the
    // kernel reports.
    let ghz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(3.0, |mhz| mhz / 1_000.0);
    let peak = 8.0 * ghz * 1e9;
    println!("flop limit: 8 flops/cycle (2 ports × 4-wide f64) × {ghz:.2} GHz = {:.1} GFlop/s on one core", peak / 1e9);
    let (all, _) = sample(&Truth::three_regimes(), args.rows.max(100_000), 1);
    for rows in [100_000, args.rows] {
        let x = &all[..rows * 2];
        for states in [3, 4] {
            for covariance in [Covariance::Diag, Covariance::Full] {
                let o = FitOptions {
                    states,
                    covariance,
                    max_iter: args.max_iter,
                    tol: 1e-2,
                    seed: 0,
                    restarts: 1,
                    min_covar: 1e-3,
                };
                let t = Instant::now();
                let (model, report) = GaussianHmm::fit(x, 2, &o)?;
                let secs = t.elapsed().as_secs_f64();
                let mut buffers = kernel::Buffers::default();
                let reps = 10;
                let t = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(kernel::e_step(&model, x, &mut buffers)?);
                }
                let step = t.elapsed().as_secs_f64() / reps as f64;
                let flops =
                    e_step_flops(states, 2, covariance == Covariance::Full) as f64 * rows as f64;
                println!(
                    "hmm {rows:>9} x 2, {states} states, {:<4}: fit {secs:.3} s, {} iterations{}, loglik {:.1}; E-step {:.2} ms ({:.1} ns/row), {:.0} flops/row, limit {:.2} ms, {:.1}× the limit",
                    format!("{covariance:?}").to_lowercase(),
                    report.iters,
                    if report.converged { " (converged)" } else { "" },
                    report.loglik,
                    step * 1e3,
                    step * 1e9 / rows as f64,
                    flops / rows as f64,
                    flops / peak * 1e3,
                    step / (flops / peak),
                );
            }
        }
        if rows == args.rows {
            break;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DriftBenchArgs {
    /// Values per detector (standard normal, seeded).
    #[arg(long, default_value_t = 1_000_000)]
    pub values: usize,
}

fn bench_drift(args: &DriftBenchArgs) -> Result<()> {
    use autotrain_drift::stream::{run, shifted};
    use autotrain_drift::{Adwin, Detector, LikelihoodDecay, PageHinkley, Psi};
    let loglik = |x: f64| -0.5 * std::f64::consts::TAU.ln() - 0.5 * x * x;
    let base_mean = -0.5 * std::f64::consts::TAU.ln() - 0.5;
    type Make = Box<dyn Fn() -> Box<dyn Detector>>;
    let detectors: Vec<(&str, Make, bool)> = vec![
        (
            "page_hinkley",
            Box::new(|| Box::new(PageHinkley::new(0.1, 50.0, 30))),
            false,
        ),
        ("adwin", Box::new(|| Box::new(Adwin::new(0.002))), false),
        (
            "psi",
            Box::new(|| Box::new(Psi::new(500, 0.25, None))),
            false,
        ),
        (
            "loglik_decay",
            Box::new(move || Box::new(LikelihoodDecay::new(base_mean, 0.5f64.sqrt(), 100, 5.0))),
            true,
        ),
    ];
    let stable = shifted(1, args.values, 0, 0.0);
    for (name, make, on_loglik) in &detectors {
        let values: Vec<f64> = if *on_loglik {
            stable.iter().map(|x| loglik(*x)).collect()
        } else {
            stable.clone()
        };
        let mut d = make();
        let t = Instant::now();
        let mut fired = 0usize;
        for x in &values {
            fired += usize::from(d.update(*x).is_some());
        }
        let secs = t.elapsed().as_secs_f64();
        let mut delays = Vec::new();
        let mut false_alarms = 0;
        for seed in 0..20 {
            let mut v = shifted(100 + seed, 5_000, 2_000, 1.0);
            if *on_loglik {
                v.iter_mut().for_each(|x| *x = loglik(*x));
            }
            let o = run(make().as_mut(), &v, 5_000);
            false_alarms += o.false_alarms;
            delays.extend(o.delay);
        }
        let mean_delay = delays.iter().sum::<usize>() as f64 / delays.len().max(1) as f64;
        println!(
            "{name:<13} {:>12.0} updates/s ({} values, {fired} detections on a stable stream); 1σ shift: mean delay {mean_delay:.0} values, detected {}/20, false alarms {false_alarms} in 100,000",
            values.len() as f64 / secs,
            values.len(),
            delays.len()
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct FeaturesBenchArgs {
    /// Bars in-process (synthetic, seeded), spread over `instruments`.
    #[arg(long, default_value_t = 1_000_000)]
    pub bars: usize,
    #[arg(long, default_value_t = 10)]
    pub instruments: usize,
    /// Bars through the embedded broker; 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    pub broker_bars: usize,
    /// Feature rows through the training-window dataflow (differential):
    /// the first N bars' rows, plus a late correction of every 100th.
    #[arg(long, default_value_t = 300_000)]
    pub window_rows: usize,
}

/// Training-window statistics (differential dataflow, 24-hour window in
/// hourly buckets) over the feature rows of the first `rows` bars, with a
/// late correction of every 100th row.
fn bench_window(contract: &autotrain_features::Contract, bars: &[Bar], rows: usize) -> Result<()> {
    use autotrain_features::window::{self, RowUpdate, WindowSpec};
    use autotrain_features::{dataflow::Prepared, Engine};
    let contract = Arc::new(contract.clone());
    let prepared = Prepared::from_bars(&bars[..rows.min(bars.len())]);
    let mut engines: std::collections::HashMap<u32, Engine> = Default::default();
    let mut updates: Vec<RowUpdate> = Vec::with_capacity(prepared.points.len() * 101 / 100);
    let mut corrections = 0usize;
    for (i, (id, point)) in prepared.points.iter().enumerate() {
        let engine = engines
            .entry(*id)
            .or_insert_with(|| Engine::new(contract.clone()));
        engine.upsert_with(*point, |ts, _, values| {
            updates.push(RowUpdate {
                instrument: *id,
                ts,
                values: Some(values.to_vec()),
            })
        });
        if i % 100 == 99 && updates.len() > 50 {
            let mut late = updates[updates.len() - 50].clone();
            if let Some(v) = late.values.as_mut() {
                v.iter_mut().for_each(|x| *x = x.map(|x| x * 1.01));
            }
            updates.push(late);
            corrections += 1;
        }
    }
    let spec = WindowSpec {
        bucket_ms: 3_600_000,
        buckets: 24,
    };
    for workers in [1, 2] {
        let t = Instant::now();
        let changes = window::run(&updates, spec, workers).map_err(anyhow::Error::msg)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "training-window statistics (differential), {workers} worker(s): {} row updates ({corrections} late corrections) over {} instruments, 24 h window in hourly buckets, in {secs:.3} s = {:.0} rows/s ({} statistic changes)",
            updates.len(),
            engines.len(),
            updates.len() as f64 / secs,
            changes.len()
        );
    }
    Ok(())
}

fn bench_features(args: &FeaturesBenchArgs) -> Result<()> {
    use autotrain_connector_synthetic::{Generator, SyntheticConfig};
    use autotrain_features::{dataflow, Contract};
    let contract = Contract::bundled()?;
    let bars: Vec<Bar> = Generator::new(SyntheticConfig::new(11, args.instruments, "1m", 60_000))
        .take(args.bars)
        .map(|g| g.bar)
        .collect();
    let t = Instant::now();
    let prepared = dataflow::Prepared::from_bars(&bars);
    println!(
        "features input: {} bars → points in {:.3} s",
        bars.len(),
        t.elapsed().as_secs_f64()
    );
    for workers in [1, 2] {
        let input = prepared.clone();
        let t = Instant::now();
        let m =
            dataflow::run_prepared(&contract, input, workers, false).map_err(anyhow::Error::msg)?;
        let secs = t.elapsed().as_secs_f64();
        let per_instrument =
            m.engine_bytes.iter().map(|(_, b)| *b).sum::<usize>() / m.engine_bytes.len().max(1);
        println!(
            "features dataflow, {workers} worker(s): {} bars over {} instruments in {:.3} s = {:.0} bars/s ({} rows; engine memory {:.1} MiB per instrument, {:.0} B per bar)",
            bars.len(),
            args.instruments,
            secs,
            bars.len() as f64 / secs,
            m.published,
            per_instrument as f64 / (1 << 20) as f64,
            per_instrument as f64 / (bars.len() / args.instruments.max(1)).max(1) as f64,
        );
    }
    if args.window_rows > 0 {
        bench_window(&contract, &bars, args.window_rows)?;
    }
    Ok(())
}

/// Synthetic bars on `market.bars` through the features processor on the
/// embedded broker (producer at most 20,000 bars ahead).
async fn bench_features_broker(n: usize, instruments: usize) -> Result<()> {
    use autotrain_connector_synthetic::{Generator, SyntheticConfig};
    use autotrain_features::{Contract, FeaturesProcessor};
    use autotrain_topics::MARKET_BARS;
    let broker = Broker::embedded()?;
    let settings = broker.settings("bench.");
    create_topics(&broker, &settings, &autotrain_topics::catalogue().topics, 1).await?;
    let counters = Arc::new(Counters::default());
    let mut rc = RunnerConfig::new("bench-features", &[MARKET_BARS.name()]);
    rc.strict_log_start = true;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = autotrain_kafka::run(
        &settings,
        &rc,
        FeaturesProcessor::new(Contract::bundled()?),
        counters.clone(),
        async {
            let _ = done_rx.await;
        },
    );
    let bars = Generator::new(SyntheticConfig::new(11, instruments, "1m", 60_000))
        .take(n)
        .map(|g| g.bar);
    let producing = produce_ahead(&settings, MARKET_BARS, bars, &counters, done_tx);
    let (ran, produced) = tokio::join!(running, producing);
    produced?;
    let (core, _) = ran?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "features through the embedded broker: {n} bars in {secs:.2} s = {:.0} bars/s end to end ({} rows published)",
        n as f64 / secs,
        core.published
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Bars to validate (the bundled BTC/USD file, repeated forward in time).
    #[arg(long, default_value_t = 1_000_000)]
    pub bars: usize,
    /// Bars for the runs through a broker (synthetic, seeded, over 64
    /// instruments): the embedded one, and with `--brokers` an external
    /// cluster, at-least-once and exactly-once; 0 skips them.
    #[arg(long, default_value_t = 200_000)]
    pub broker_bars: usize,
    /// Partitions of `market.bars.raw` and `market.bars` on the external
    /// cluster.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Inputs per transaction of the exactly-once runs (one run each).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub transaction_inputs: Vec<usize>,
}

fn bench_validate(args: &ValidateArgs) -> Result<()> {
    use autotrain_connector_file::{infer_instrument, BarReader};
    use autotrain_validator::{Calendar, Validator, ValidatorConfig};
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/bitfinex_BTCUSD_30m.csv");
    let id = infer_instrument(&path).ok_or_else(|| anyhow::anyhow!("instrument"))?;
    let base: Vec<Bar> = BarReader::open(&path, id)?.collect::<Result<_, _>>()?;
    let span = base.last().map_or(0, |b| b.ts) - base.first().map_or(0, |b| b.ts) + 1_800_000;
    let bars: Vec<Bar> = (0..args.bars)
        .map(|i| {
            let mut b = base[i % base.len()].clone();
            b.ts += (i / base.len()) as i64 * span;
            b
        })
        .collect();
    let mut v = Validator::new(ValidatorConfig::new(1_800_000, Calendar::TwentyFourSeven));
    let t = Instant::now();
    let mut passed = 0u64;
    for b in &bars {
        if matches!(v.validate(b), autotrain_validator::Verdict::Passed { .. }) {
            passed += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "validator core: {} bars in {:.3} s = {:.0} bars/s on one core ({} passed)",
        bars.len(),
        secs,
        bars.len() as f64 / secs,
        passed
    );
    Ok(())
}

/// Publishes `bars` to `topic`, staying at most 20,000 bars ahead of what
/// the runner behind `counters` acknowledged (the embedded broker is
/// bounded); signals `done` once the runner acknowledged them all.
async fn produce_ahead(
    settings: &ClientSettings,
    topic: Topic<Bar>,
    bars: impl Iterator<Item = Bar>,
    counters: &Counters,
    done: tokio::sync::oneshot::Sender<()>,
) -> Result<()> {
    const LAG: u64 = 20_000;
    let producer = Producer::new(settings)?;
    let mut pending = Vec::new();
    let mut sent = 0u64;
    for bar in bars {
        pending.push(
            producer
                .enqueue(&OutRecord::from_content(topic, &bar.instrument(), &bar)?)
                .await?,
        );
        sent += 1;
        if sent.is_multiple_of(1_000) {
            while sent.saturating_sub(counters.snapshot().acknowledged) > LAG {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    for p in pending {
        p.confirm().await?;
    }
    while counters.snapshot().acknowledged < sent {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = done.send(());
    Ok(())
}

/// Synthetic bars through the validator processor on the embedded broker
/// (`market.bars.raw` ⇒ `market.bars`, `market.flags`); the producer stays
/// at most 20,000 bars ahead (the embedded broker is bounded).
async fn bench_validate_broker(n: usize) -> Result<()> {
    use autotrain_connector_synthetic::{Generator, SyntheticConfig};
    use autotrain_topics::MARKET_BARS_RAW;
    use autotrain_validator::ValidatorProcessor;
    let broker = Broker::embedded()?;
    let settings = broker.settings("bench.");
    create_topics(&broker, &settings, &autotrain_topics::catalogue().topics, 1).await?;
    let counters = Arc::new(Counters::default());
    let mut rc = RunnerConfig::new("bench-validator", &[MARKET_BARS_RAW.name()]);
    rc.strict_log_start = true;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let validating = autotrain_kafka::run(
        &settings,
        &rc,
        ValidatorProcessor::default(),
        counters.clone(),
        async {
            let _ = done_rx.await;
        },
    );
    let bars = Generator::new(SyntheticConfig::new(7, 8, "1m", 60_000))
        .take(n)
        .map(|g| g.bar);
    let producing = produce_ahead(&settings, MARKET_BARS_RAW, bars, &counters, done_tx);
    let (validated, produced) = tokio::join!(validating, producing);
    produced?;
    let (core, stats) = validated?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "validator through the embedded broker: {} bars in {:.2} s = {:.0} bars/s end to end ({} published, {} flags; {} outputs acknowledged)",
        n,
        secs,
        n as f64 / secs,
        core.summary.passed,
        core.summary.flags.values().sum::<u64>(),
        stats.outputs
    );
    Ok(())
}

/// The validator through an external cluster: `n` synthetic bars published
/// to `market.bars.raw` beforehand, then validated from the backlog until
/// all of them are committed (bars/s); then 20,000 more at 5,000 bars/s,
/// each timed from its send to its arrival at a `read_committed` reader of
/// `market.bars` (latency).
async fn bench_validate_external(
    bootstrap: &str,
    n: usize,
    transaction_inputs: Option<usize>,
    partitions: i32,
) -> Result<()> {
    use autotrain_connector_synthetic::{Generator, SyntheticConfig};
    use autotrain_topics::{MARKET_BARS, MARKET_BARS_RAW};
    use autotrain_validator::ValidatorProcessor;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let mode = match transaction_inputs {
        Some(n) => format!("exactly-once-{n}"),
        None => "at-least-once".into(),
    };
    let broker = Broker::connect_or_embed(Some(bootstrap))?;
    let tag = format!(
        "bench-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let settings = broker.settings(&format!("{tag}.{mode}."));
    let specs: Vec<TopicSpec> = autotrain_topics::catalogue()
        .topics
        .iter()
        .cloned()
        .map(|mut t| {
            if t.name == MARKET_BARS_RAW.name() || t.name == MARKET_BARS.name() {
                t.partitions = partitions;
            }
            t
        })
        .collect();
    create_topics(&broker, &settings, &specs, 1).await?;
    let paced = 20_000usize;
    let mut bars = Generator::new(SyntheticConfig::new(7, 64, "1m", 60_000)).map(|g| g.bar);
    let producer = Producer::new(&settings)?;
    let mut pending = Vec::with_capacity(n);
    for bar in bars.by_ref().take(n) {
        pending.push(
            producer
                .enqueue(&OutRecord::from_content(
                    MARKET_BARS_RAW,
                    &bar.instrument(),
                    &bar,
                )?)
                .await?,
        );
    }
    for p in pending {
        p.confirm().await?;
    }

    let counters = Arc::new(Counters::default());
    let mut rc = RunnerConfig::new(format!("{tag}-{mode}-validator"), &[MARKET_BARS_RAW.name()]);
    if let Some(inputs) = transaction_inputs {
        let mut eo = autotrain_kafka::ExactlyOnce::new(format!("{tag}-{mode}"));
        eo.max_inputs = inputs.max(1);
        rc.exactly_once = Some(eo);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let validating = tokio::spawn({
        let (settings, counters) = (settings.clone(), counters.clone());
        async move {
            autotrain_kafka::run(
                &settings,
                &rc,
                ValidatorProcessor::default(),
                counters,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        }
    });
    let started = Instant::now();
    while counters.snapshot().acknowledged < n as u64 {
        if validating.is_finished() {
            anyhow::bail!("validator stopped early: {:?}", validating.await?);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let backlog = counters.snapshot();

    // Latency: paced sends, timed at a read_committed reader of market.bars.
    let reader: StreamConsumer = settings
        .consumer_config(&format!("{tag}-{mode}-reader"))
        .set("auto.offset.reset", "latest")
        .set("isolation.level", "read_committed")
        .create()?;
    reader.subscribe(&[settings.physical(MARKET_BARS.name()).as_str()])?;
    while reader.assignment()?.count() == 0 {
        let _ = tokio::time::timeout(Duration::from_millis(100), reader.recv()).await;
    }
    let sent_at: Arc<std::sync::Mutex<std::collections::HashMap<(String, i64), Instant>>> =
        Arc::default();
    let sending = {
        let (settings, sent_at) = (settings.clone(), sent_at.clone());
        let paced_bars: Vec<Bar> = bars.take(paced).collect();
        tokio::spawn(async move {
            let producer = Producer::new(&settings)?;
            let every = Duration::from_micros(200);
            let t0 = Instant::now();
            for (i, bar) in paced_bars.iter().enumerate() {
                let due = t0 + every * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let record = OutRecord::from_content(MARKET_BARS_RAW, &bar.instrument(), bar)?;
                sent_at
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert((bar.instrument(), bar.ts), Instant::now());
                drop(producer.enqueue(&record).await?);
            }
            producer.flush(Duration::from_secs(30))?;
            Ok::<(), anyhow::Error>(())
        })
    };
    let mut latency = Histogram::<u64>::new(3)?;
    // Bars held as anomalies never reach market.bars: stop once the sender
    // is done and nothing arrived for 3 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = Instant::now();
    while latency.len() < paced as u64 && Instant::now() < deadline {
        if sending.is_finished() && last.elapsed() > Duration::from_secs(3) {
            break;
        }
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), reader.recv()).await
        else {
            continue;
        };
        last = Instant::now();
        let bar: Bar = decode(m.payload().unwrap_or_default())?;
        let sent = sent_at
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(&(bar.instrument(), bar.ts))
            .copied();
        if let Some(sent) = sent {
            latency.record(sent.elapsed().as_micros() as u64)?;
        }
    }
    sending.await??;
    let _ = stop_tx.send(());
    let (_, stats) = validating.await??;
    let per_txn = if backlog.transactions > 0 {
        format!(
            "{:.0} inputs per transaction ({} transactions, at most {} inputs / 100 ms each)",
            backlog.acknowledged as f64 / backlog.transactions as f64,
            backlog.transactions,
            transaction_inputs.unwrap_or_default()
        )
    } else {
        "no transactions".into()
    };
    println!(
        "validator through Kafka at {bootstrap}, {mode}, {partitions} partitions: {n} bars in {secs:.2} s = {:.0} bars/s from the backlog ({per_txn}); paced 5,000 bars/s: {} bars seen by a read_committed reader, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; runner {stats:?}",
        n as f64 / secs,
        latency.len(),
        latency.value_at_quantile(0.5) as f64 / 1_000.0,
        latency.value_at_quantile(0.99) as f64 / 1_000.0,
        latency.max() as f64 / 1_000.0,
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct WireArgs {
    /// Bars for the in-process codec and the embedded-broker run.
    #[arg(long, default_value_t = 1_000_000)]
    pub bars: u64,
    /// Instruments the bars are spread over (record keys).
    #[arg(long, default_value_t = 100)]
    pub instruments: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 32)]
    pub partitions: i32,
    /// Also run through this external broker (e.g. `scripts/kafka start`'s
    /// 127.0.0.1:9092).
    #[arg(long)]
    pub external: Option<String>,
    /// Bars for the external-broker run.
    #[arg(long, default_value_t = 100_000)]
    pub external_bars: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct WireReport {
    codec: CodecFigures,
    embedded: BrokerFigures,
    external: Option<BrokerFigures>,
}

#[derive(Debug, Serialize)]
struct CodecFigures {
    records: u64,
    bytes_per_record: f64,
    encode_per_s: f64,
    decode_per_s: f64,
    round_trip_per_s: f64,
}

#[derive(Debug, Serialize)]
struct BrokerFigures {
    broker: String,
    records: u64,
    partitions: i32,
    produce_per_s: f64,
    end_to_end_per_s: f64,
    latency_ms_p50: u64,
    latency_ms_p99: u64,
    latency_ms_max: u64,
}

fn bench_bar(i: u64, instruments: u64) -> Bar {
    let n = i / instruments;
    Bar {
        exchange: "bench".into(),
        symbol: format!("S{:03}", i % instruments),
        timeframe: "1m".into(),
        ts: 1_500_000_000_000 + n as i64 * 60_000,
        open: 100.0 + (n % 97) as f64,
        high: 101.0 + (n % 97) as f64,
        low: 99.0 + (n % 97) as f64,
        close: 100.5 + (n % 97) as f64,
        volume: 1000.0 + n as f64,
        source: "bench".into(),
        checksum: None,
        revision: 0,
    }
}

fn codec(records: u64) -> Result<CodecFigures> {
    let bars: Vec<Bar> = (0..records.min(100_000))
        .map(|i| bench_bar(i, 100))
        .collect();
    let mut encoded = Vec::with_capacity(bars.len());
    let t = Instant::now();
    for i in 0..records {
        let b = &bars[(i % bars.len() as u64) as usize];
        let bytes = encode(b)?;
        if encoded.len() < bars.len() {
            encoded.push(bytes);
        }
    }
    let enc = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut checksum = 0.0;
    for i in 0..records {
        let bar: Bar = decode(&encoded[(i % encoded.len() as u64) as usize])?;
        checksum += bar.close;
    }
    let dec = t.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    let size = encoded.iter().map(Vec::len).sum::<usize>() as f64 / encoded.len() as f64;
    Ok(CodecFigures {
        records,
        bytes_per_record: size,
        encode_per_s: records as f64 / enc,
        decode_per_s: records as f64 / dec,
        round_trip_per_s: records as f64 / (enc + dec),
    })
}

/// Counts records and their end-to-end latency (broker timestamp → processed).
#[derive(Debug)]
struct Meter {
    latency: Histogram<u64>,
}

impl Processor for Meter {
    type Input = Bar;

    fn name(&self) -> &str {
        "bench-meter"
    }

    fn process(&mut self, input: &Incoming<Bar>, _out: &mut Outputs) -> Result<(), ProcessError> {
        if let Some(ts) = input.timestamp {
            let now = chrono::Utc::now().timestamp_millis();
            let _ = self.latency.record((now - ts).max(0) as u64);
        }
        Ok(())
    }
}

async fn through_broker(
    broker: &Broker,
    records: u64,
    instruments: u64,
    partitions: i32,
) -> Result<BrokerFigures> {
    const TOPIC: Topic<Bar> = Topic::new("bench.bars");
    let settings: ClientSettings = broker.settings(&format!(
        "bench-{}-{}.",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    let spec = TopicSpec {
        name: TOPIC.name().into(),
        key: "instrument".into(),
        value: "Bar".into(),
        partitions,
        cleanup_policy: autotrain_topics::CleanupPolicy::Delete,
        retention_ms: 86_400_000,
        event_log: false,
        dead_letter: None,
        description: "benchmark".into(),
    };
    create_topics(broker, &settings, &[spec], 1).await?;
    let counters = Arc::new(Counters::default());
    let mut rc = RunnerConfig::new(format!("bench-{}", std::process::id()), &[TOPIC.name()]);
    rc.strict_log_start = broker.is_embedded();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let meter = Meter {
        latency: Histogram::new(3)?,
    };
    let consumer = autotrain_kafka::run(&settings, &rc, meter, counters.clone(), async {
        let _ = stop_rx.await;
    });
    let producer_side = async {
        // Let the consumer join its group first so latency measures the pipe.
        while counters.snapshot().received == 0 {
            let probe = OutRecord::from_content(TOPIC, "warmup", &bench_bar(0, 1))?;
            Producer::new(&settings)?.send(&probe).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let warm = counters.snapshot().received;
        let producer = Producer::new(&settings)?;
        let started = Instant::now();
        let mut pending = Vec::new();
        for i in 0..records {
            let bar = bench_bar(i, instruments);
            pending.push(
                producer
                    .enqueue(&OutRecord::from_content(TOPIC, &bar.instrument(), &bar)?)
                    .await?,
            );
            // Keep within the embedded broker's per-partition bound.
            if i % 10_000 == 0 {
                while i.saturating_sub(counters.snapshot().received.saturating_sub(warm)) > 200_000
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        for p in pending {
            p.confirm().await?;
        }
        let produced = started.elapsed().as_secs_f64();
        while counters.snapshot().received < warm + records {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = started.elapsed().as_secs_f64();
        let _ = stop_tx.send(());
        anyhow::Ok((produced, total))
    };
    let (consumed, produced) = tokio::join!(consumer, producer_side);
    let (produced, total) = produced?;
    let (meter, _) = consumed?;
    Ok(BrokerFigures {
        broker: if broker.is_embedded() {
            "embedded".into()
        } else {
            broker.bootstrap().into()
        },
        records,
        partitions,
        produce_per_s: records as f64 / produced,
        end_to_end_per_s: records as f64 / total,
        latency_ms_p50: meter.latency.value_at_quantile(0.5),
        latency_ms_p99: meter.latency.value_at_quantile(0.99),
        latency_ms_max: meter.latency.max(),
    })
}

pub async fn run(config: &Config, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Validate(args) => {
            bench_validate(&args)?;
            if args.broker_bars > 0 {
                bench_validate_broker(args.broker_bars).await?;
                if let Some(b) = config.brokers.as_deref() {
                    bench_validate_external(b, args.broker_bars, None, args.partitions).await?;
                    for &inputs in &args.transaction_inputs {
                        bench_validate_external(b, args.broker_bars, Some(inputs), args.partitions)
                            .await?;
                    }
                }
            }
        }
        BenchCommand::Drift(args) => bench_drift(&args)?,
        BenchCommand::Pipeline(args) => pipeline::run(config, &args).await?,
        BenchCommand::Hmm(args) => bench_hmm(&args)?,
        BenchCommand::Params(args) => {
            bench_params(&args)?;
            if args.api_requests > 0 {
                bench_api(config, args.api_requests, args.api_concurrency).await?;
            }
        }
        BenchCommand::Features(args) => {
            bench_features(&args)?;
            if args.broker_bars > 0 {
                bench_features_broker(args.broker_bars, args.instruments).await?;
            }
        }
        BenchCommand::Wire(args) => {
            let codec = codec(args.bars)?;
            if !args.json {
                println!(
                    "codec: {} bars, {:.0} B each; encode {:.0}/s, decode {:.0}/s, encode+decode {:.0}/s",
                    codec.records, codec.bytes_per_record, codec.encode_per_s, codec.decode_per_s, codec.round_trip_per_s
                );
            }
            let embedded_broker = Broker::embedded()?;
            let embedded = through_broker(
                &embedded_broker,
                args.bars,
                args.instruments,
                args.partitions,
            )
            .await?;
            if !args.json {
                print_broker(&embedded);
            }
            let external = match &args.external {
                Some(b) => {
                    let f = through_broker(
                        &Broker::connect_or_embed(Some(b))?,
                        args.external_bars,
                        args.instruments,
                        args.partitions,
                    )
                    .await?;
                    if !args.json {
                        print_broker(&f);
                    }
                    Some(f)
                }
                None => None,
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&WireReport {
                        codec,
                        embedded,
                        external
                    })?
                );
            }
        }
    }
    Ok(())
}

fn print_broker(f: &BrokerFigures) {
    println!(
        "{}: {} bars on {} partitions; produce {:.0}/s, produce→consume {:.0}/s; latency p50 {} ms, p99 {} ms, max {} ms",
        f.broker, f.records, f.partitions, f.produce_per_s, f.end_to_end_per_s, f.latency_ms_p50, f.latency_ms_p99, f.latency_ms_max
    );
}
