//! `autotrain bench pipeline`: where a bar's time goes from
//! `market.bars.raw` to `features`. The bundled bars (interleaved in time,
//! as a live feed) go through the validator and the features processor,
//! each its own runner built as `autotrain run` builds it (topology, config,
//! delivery), on the embedded broker and, with `--brokers`, on a real
//! cluster. Printed per stage: what each input cost in decode, core,
//! encode and enqueue (the runner's [`Phases`]), the acknowledgement
//! latency, transaction commits, and what is left of the stage's wall time
//! (consuming: fetch and the wait for input); then raw → features bars/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use autotrain_connector_file::{infer_instrument, BarReader};
use autotrain_kafka::runner::{Counters, Phases};
use autotrain_kafka::{create_topics, Broker, OutRecord, Producer};
use autotrain_schemas::Bar;
use autotrain_topics::MARKET_BARS_RAW;

use crate::config::Config;
use crate::context::Context;
use crate::topology::{Build, Stage};

#[derive(Debug, clap::Args)]
pub struct PipelineBenchArgs {
    /// Bars to send (the bundled files, interleaved in time; 0: all).
    #[arg(long, default_value_t = 0)]
    pub bars: usize,
    /// Directory of `<exchange>_<SYMBOL>_<timeframe>.csv` files.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Bars the producer may be ahead of the validator (the embedded broker
    /// keeps ~100,000 records per partition).
    #[arg(long, default_value_t = 20_000)]
    pub ahead: u64,
}

/// One stage's figures.
#[derive(Debug, serde::Serialize)]
struct StageFigures {
    stage: &'static str,
    inputs: u64,
    outputs: u64,
    /// Microseconds per input.
    decode_us: f64,
    core_us: f64,
    encode_us: f64,
    enqueue_us: f64,
    commit_us: f64,
    /// What is left of the stage's wall time per input: fetching,
    /// waiting for input, the runner's bookkeeping.
    consume_us: f64,
    /// Mean time from enqueue to the broker's acknowledgement, ms.
    ack_ms: f64,
    transactions: u64,
}

fn per_input(ns: &std::sync::atomic::AtomicU64, inputs: u64) -> f64 {
    ns.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3 / inputs.max(1) as f64
}

fn figures(stage: &'static str, c: &Counters, wall: Duration) -> StageFigures {
    let s = c.snapshot();
    let inputs = s.received;
    let p: &Phases = &c.phases;
    let (decode_us, core_us, encode_us, enqueue_us, commit_us) = (
        per_input(&p.decode_ns, inputs),
        per_input(&p.core_ns, inputs),
        per_input(&p.encode_ns, inputs),
        per_input(&p.enqueue_ns, inputs),
        per_input(&p.commit_ns, inputs),
    );
    let busy = decode_us + core_us + encode_us + enqueue_us + commit_us;
    let acked = p.acked.load(std::sync::atomic::Ordering::Relaxed);
    StageFigures {
        stage,
        inputs,
        outputs: s.outputs,
        decode_us,
        core_us,
        encode_us,
        enqueue_us,
        commit_us,
        consume_us: (wall.as_secs_f64() * 1e6 / inputs.max(1) as f64 - busy).max(0.0),
        ack_ms: per_input(&p.ack_ns, acked) / 1e3,
        transactions: s.transactions,
    }
}

/// The bundled bars as a live feed sends them: instruments interleaved in
/// time (ties by instrument).
fn feed(dir: &std::path::Path, limit: usize) -> Result<Vec<Bar>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let mut bars = Vec::new();
    for path in &files {
        let id = infer_instrument(path)
            .with_context(|| format!("{}: not <exchange>_<SYMBOL>_<tf>.csv", path.display()))?;
        for b in BarReader::open(path, id)? {
            bars.push(b?);
        }
    }
    bars.sort_by_key(|b| (b.ts, b.instrument()));
    if limit > 0 {
        bars.truncate(limit);
    }
    Ok(bars)
}

/// `stage`'s runner, configured as `autotrain run` configures it, on its own
/// task until `stop` turns true.
fn spawn_stage<P: autotrain_kafka::Processor + 'static>(
    config: &Config,
    ctx: &Context,
    tag: &str,
    stage: Stage,
    core: P,
    counters: &Arc<Counters>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(P, autotrain_kafka::RunStats), autotrain_kafka::KafkaError>> {
    let rc = ctx.runner_config(config, &format!("{tag}-{stage}"), stage.wiring().inputs);
    let (settings, counters, mut stop) = (ctx.settings.clone(), counters.clone(), stop.clone());
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        autotrain_kafka::run(&settings, &rc, core, counters, stopped).await
    })
}

/// Runs the two stages over `bars` on `ctx`'s broker and prints where the
/// time went.
async fn through(config: &Config, ctx: &Context, bars: &[Bar], ahead: u64) -> Result<()> {
    let tag = format!(
        "bench-pipeline-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let build = Build::deployment(config)?;
    let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let validator = spawn_stage(
        config,
        ctx,
        &tag,
        Stage::Validator,
        build.validator(),
        &counters[0],
        &stop_rx,
    );
    let features = spawn_stage(
        config,
        ctx,
        &tag,
        Stage::Features,
        build.features()?,
        &counters[1],
        &stop_rx,
    );

    // The producer, at most `ahead` bars before what the validator handled.
    let producer = Producer::new(&ctx.settings)?;
    let mut pending = Vec::with_capacity(bars.len());
    let producing = Instant::now();
    for (i, bar) in bars.iter().enumerate() {
        pending.push(
            producer
                .enqueue(&OutRecord::from_content(
                    MARKET_BARS_RAW,
                    &bar.instrument(),
                    bar,
                )?)
                .await?,
        );
        if i % 1_000 == 999 {
            while (i as u64 + 1).saturating_sub(counters[0].snapshot().received) > ahead {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    for p in pending {
        p.confirm().await?;
    }
    let produced = producing.elapsed();

    // Done when the validator has acknowledged every bar and the features
    // processor has been still for 2 s; the end is its last change.
    let n = bars.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = (0u64, Instant::now());
    loop {
        let (v, f) = (counters[0].snapshot(), counters[1].snapshot());
        let seen = f.received + f.acknowledged + f.transactions;
        if seen != last.0 {
            last = (seen, Instant::now());
        }
        let settled = last.1.elapsed() > Duration::from_secs(2);
        if (v.acknowledged >= n && settled) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = last.1.duration_since(started);
    let _ = stop_tx.send(true);
    let (validated, _) = validator.await??;
    let (featured, _) = features.await??;
    let rows: Vec<StageFigures> = vec![
        figures("validator", &counters[0], end),
        figures("features", &counters[1], end),
    ];
    println!(
        "{}: {} bars ({} passed), produced in {:.2} s; raw → features in {:.2} s = {:.0} bars/s end to end ({} feature rows)",
        if ctx.broker.is_embedded() {
            "embedded broker".to_string()
        } else {
            format!("Kafka at {}", ctx.settings.bootstrap)
        },
        n,
        validated.summary.passed,
        produced.as_secs_f64(),
        end.as_secs_f64(),
        n as f64 / end.as_secs_f64(),
        featured.published
    );
    println!(
        "  {:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>5}",
        "µs/input",
        "inputs",
        "outputs",
        "decode",
        "core",
        "encode",
        "enqueue",
        "commit",
        "consume*",
        "ack ms",
        "txns"
    );
    for r in &rows {
        println!(
            "  {:<10} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>8.2} {:>5}",
            r.stage,
            r.inputs,
            r.outputs,
            r.decode_us,
            r.core_us,
            r.encode_us,
            r.enqueue_us,
            r.commit_us,
            r.consume_us,
            r.ack_ms,
            r.transactions
        );
    }
    println!("  * the rest of the stage's wall time: fetching, waiting for input, the runner's bookkeeping");
    Ok(())
}

pub async fn run(config: &Config, args: &PipelineBenchArgs) -> Result<()> {
    let dir = args
        .data
        .clone()
        .unwrap_or_else(super::super::demo::bundled_data);
    let bars = feed(&dir, args.bars)?;
    anyhow::ensure!(!bars.is_empty(), "no bars in {}", dir.display());
    let embedded = Broker::embedded()?;
    let settings = embedded.settings(&config.topic_prefix);
    let ctx = Context {
        broker: embedded,
        settings,
    };
    create_topics(
        &ctx.broker,
        &ctx.settings,
        &autotrain_topics::catalogue().topics,
        1,
    )
    .await?;
    through(config, &ctx, &bars, args.ahead).await?;
    if let Some(b) = config.brokers.as_deref() {
        let broker = Broker::connect_or_embed(Some(b))?;
        let prefix = format!(
            "{}bench-{}-{}.",
            config.topic_prefix,
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let mut settings = broker.settings(&prefix);
        settings.properties.extend(config.kafka.clone());
        let ctx = Context { broker, settings };
        ctx.await_broker(Duration::from_secs(config.runner.connect_timeout_s))
            .await?;
        create_topics(
            &ctx.broker,
            &ctx.settings,
            &autotrain_topics::catalogue().topics,
            config.replication_factor,
        )
        .await?;
        through(config, &ctx, &bars, args.ahead).await?;
    }
    Ok(())
}
