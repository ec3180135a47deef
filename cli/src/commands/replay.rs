//! `autotrain replay`: proves what the system decided. Each processor is run
//! again, on its own, over a copy of the input logs it consumed (progress
//! records, keys, partitions, timestamps and event ids kept) in a sandbox
//! (the same cluster, topics under another prefix), built as the
//! deployment built it ([`Build`]); then everything it publishes is compared
//! with what was published, record by record.
//!
//! Run alone, a processor's outputs are a function of its input logs
//! (`docs/determinism.md`), so any difference is a record the log cannot
//! explain: a processor changed since, a setting that differs, or a record
//! altered after the fact. Processors are replayed in isolation rather than
//! chained, so a difference names the processor that made it and does not
//! spread downstream.
//!
//! State is a function of the whole log before a bar, so every processor
//! reads its inputs from their start; `--from`/`--to` bound what is compared
//! (by each record's event time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use autotrain_kafka::copy::{copy_topic, Verdict};
use autotrain_kafka::reader::group_caught_up;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{ClientSettings, KafkaError, Processor, PROGRESS_HEADER};
use autotrain_schemas::{decode, ParamUpdate, UpdateReason, ValidationFlag};
use autotrain_topics::{catalogue, FEATURES, MARKET_BARS_RAW, MARKET_FLAGS, PARAM_UPDATES};
use autotrain_trainer::service::ServiceCounters;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde::Serialize;

use super::digest::{canonical_records, Canonical};
use crate::config::Config;
use crate::context::{now_ms, Context};
use crate::topology::{Build, Stage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compare records about this time and later (RFC 3339 or epoch
    /// milliseconds; default: from the log's start).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<i64>,
    /// Compare records about this time and earlier (default: to the end).
    #[arg(long, value_parser = parse_time)]
    pub to: Option<i64>,
    /// Processors to replay (comma-separated; default: all seven).
    #[arg(long, value_delimiter = ',')]
    pub processors: Vec<Stage>,
    /// Build the processors as `autotrain demo` builds them (flags do not
    /// block trainings, a quarterly schedule per instrument on the bars'
    /// time, no calendars): for logs the demo wrote.
    #[arg(long)]
    pub demo: bool,
    /// The whole report as one JSON object (every difference in full).
    #[arg(long)]
    pub json: bool,
    /// Differences shown per topic in the text report.
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    /// Keep the sandbox topics (default: deleted after the comparison).
    #[arg(long)]
    pub keep_sandbox: bool,
    /// Stop waiting for a processor whose inputs are all consumed but which
    /// has held records without progress for this long (a live log ends
    /// before the progress that would release them).
    #[arg(long, default_value_t = 20)]
    pub settle_s: u64,
    /// Give up on a replay that has not finished in this long.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
}

fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| {
                d.and_hms_opt(0, 0, 0)
                    .unwrap_or_default()
                    .and_utc()
                    .timestamp_millis()
            })
        })
        .map_err(|_| format!("{s:?}: not RFC 3339, a date (YYYY-MM-DD) or epoch milliseconds"))
}

/// How a published record compares with the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Published, but the replay does not publish it.
    Missing,
    /// The replay publishes it, but it was not published.
    Extra,
    /// The same record (same identity) with other content.
    Different,
}

#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub processor: Stage,
    pub topic: String,
    pub kind: Kind,
    pub key: String,
    /// What names the record (e.g. `model_key/version/event`).
    pub identity: String,
    pub event_time: Option<i64>,
    pub published: Option<serde_json::Value>,
    pub replayed: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TopicReport {
    pub topic: String,
    /// Records in the compared range, as published and as replayed.
    pub published: u64,
    pub replayed: u64,
    pub identical: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub processor: Stage,
    /// Input records copied into its sandbox.
    pub inputs: u64,
    /// Inputs it processed in the replay, and those still held at the end
    /// (waiting for progress the log does not hold yet).
    pub processed: u64,
    pub held_at_end: u64,
    pub seconds: f64,
    pub topics: Vec<TopicReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub sandbox: String,
    /// Raw bars in the log, and over the replay's wall time.
    pub bars: u64,
    pub bars_per_second: f64,
    pub seconds: f64,
    pub processors: Vec<StageReport>,
    pub identical: u64,
    pub differences: Vec<Difference>,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    ensure!(
        !ctx.broker.is_embedded(),
        "replay reads the log a deployment wrote: give its brokers (--brokers or AUTOTRAIN_BROKERS); the embedded broker starts empty"
    );
    let report = replay(&ctx, config, &args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report, args.show);
    }
    let n = report.differences.len();
    ensure!(
        n == 0,
        "{n} record(s) differ between the log and its replay"
    );
    Ok(())
}

fn print_report(report: &Report, show: usize) {
    println!(
        "replayed {} processor(s) over {} bars in {:.1} s ({:.0} bars/s), sandbox {}*",
        report.processors.len(),
        report.bars,
        report.seconds,
        report.bars_per_second,
        report.sandbox
    );
    for s in &report.processors {
        println!(
            "{:<10} {:>8} inputs  {:>8} processed  {:>4} held  {:>6.1} s",
            s.processor.name(),
            s.inputs,
            s.processed,
            s.held_at_end,
            s.seconds
        );
        for t in &s.topics {
            println!(
                "  {:<18} published {:>8}  replayed {:>8}  identical {:>8}  missing {}  extra {}  different {}",
                t.topic, t.published, t.replayed, t.identical, t.missing, t.extra, t.different
            );
            for d in report
                .differences
                .iter()
                .filter(|d| d.processor == s.processor && d.topic == t.topic)
                .take(show)
            {
                println!(
                    "    {:?} {} (key {}, event time {})",
                    d.kind,
                    d.identity,
                    d.key,
                    d.event_time
                        .map_or_else(|| "-".to_string(), |t| t.to_string())
                );
                if let Some(p) = &d.published {
                    println!("      published {p}");
                }
                if let Some(r) = &d.replayed {
                    println!("      replayed  {r}");
                }
            }
        }
    }
    println!(
        "{} identical, {} different",
        report.identical,
        report.differences.len()
    );
}

/// Replays the processors `args` names over the log `ctx` reads.
pub async fn replay(ctx: &Context, config: &Config, args: &Args) -> Result<Report> {
    let started = Instant::now();
    let stages: BTreeSet<Stage> = if args.processors.is_empty() {
        Stage::ALL.into_iter().collect()
    } else {
        args.processors.iter().copied().collect()
    };
    let build = if args.demo {
        let s = ctx.settings.clone();
        let instruments =
            tokio::task::spawn_blocking(move || keys_of(&s, FEATURES.name())).await??;
        Build::demo(config, &instruments)?
    } else {
        Build::deployment(config)?
    };
    let sandbox = format!(
        "{}replay-{}-{}.",
        config.topic_prefix,
        std::process::id(),
        now_ms()
    );
    let bars = {
        let s = ctx.settings.clone();
        tokio::task::spawn_blocking(move || count_records(&s, MARKET_BARS_RAW.name())).await??
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let runs = stages
        .iter()
        .map(|stage| replay_stage(ctx, config, &build, *stage, &sandbox, args, deadline));
    let results = futures::future::join_all(runs).await;
    let mut processors = Vec::new();
    let mut differences = Vec::new();
    let mut failures = Vec::new();
    for (stage, result) in stages.iter().zip(results) {
        match result {
            Ok((report, diffs)) => {
                processors.push(report);
                differences.extend(diffs);
            }
            Err(e) => failures.push(format!("{stage}: {e:#}")),
        }
    }
    if !args.keep_sandbox {
        let names: Vec<String> = stages
            .iter()
            .flat_map(|s| {
                let settings = sandbox_settings(&ctx.settings, &sandbox, *s);
                catalogue()
                    .topics
                    .iter()
                    .map(move |t| settings.physical(&t.name))
            })
            .collect();
        if let Err(e) = autotrain_kafka::delete_topics(&ctx.broker, &ctx.settings, &names).await {
            tracing::warn!(error = %e, "could not delete the sandbox topics");
        }
    }
    ensure!(
        failures.is_empty(),
        "replay failed: {}",
        failures.join("; ")
    );
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        from: args.from,
        to: args.to,
        sandbox,
        bars,
        bars_per_second: bars as f64 / seconds.max(1e-9),
        seconds,
        identical: processors
            .iter()
            .flat_map(|p| &p.topics)
            .map(|t| t.identical)
            .sum(),
        processors,
        differences,
    })
}

fn sandbox_settings(settings: &ClientSettings, sandbox: &str, stage: Stage) -> ClientSettings {
    settings.clone().with_prefix(format!("{sandbox}{stage}."))
}

/// Is this record on `topic`, which `stage` reads and writes, one it
/// wrote? Those are its outputs, compared, not copied: the validator's own
/// findings on `market.flags` (ops' decisions are inputs), the controller's
/// own updates on `param.updates` (ops' manual ones are inputs), and its
/// progress records.
fn written_by(stage: Stage, topic: &str, m: &BorrowedMessage<'_>) -> bool {
    let progress = m
        .headers()
        .is_some_and(|h| h.iter().any(|h| h.key == PROGRESS_HEADER));
    if progress {
        return true;
    }
    let Some(payload) = m.payload() else {
        return false;
    };
    match (stage, topic) {
        (Stage::Validator, t) if t == MARKET_FLAGS.name() => decode::<ValidationFlag>(payload)
            .is_ok_and(|f| autotrain_validator::ops_decision(&f).is_none()),
        (Stage::Params, t) if t == PARAM_UPDATES.name() => {
            decode::<ParamUpdate>(payload).is_ok_and(|u| u.reason != UpdateReason::Manual)
        }
        _ => true,
    }
}

/// One processor: its sandbox, its inputs copied in, its run until it has
/// consumed them, and the comparison of its outputs.
async fn replay_stage(
    ctx: &Context,
    config: &Config,
    build: &Build,
    stage: Stage,
    sandbox: &str,
    args: &Args,
    deadline: Instant,
) -> Result<(StageReport, Vec<Difference>)> {
    let started = Instant::now();
    let wiring = stage.wiring();
    let target = sandbox_settings(&ctx.settings, sandbox, stage);
    autotrain_kafka::create_topics(
        &ctx.broker,
        &target,
        &catalogue().topics,
        config.replication_factor,
    )
    .await
    .with_context(|| format!("creating the {stage} sandbox"))?;

    // Inputs copied; where the processor also writes the topic, only what
    // others wrote, and its outputs there start after the copy.
    let mut inputs = 0;
    let mut output_starts: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for topic in wiring.inputs.iter().chain(wiring.reads) {
        let (source, target, topic) = (ctx.settings.clone(), target.clone(), *topic);
        let shared = wiring.outputs.contains(&topic);
        let copied = tokio::task::spawn_blocking(move || {
            let decide = |m: &BorrowedMessage<'_>| {
                if shared && written_by(stage, topic, m) {
                    Verdict::Skip
                } else {
                    Verdict::Copy
                }
            };
            copy_topic(
                &source,
                &source.physical(topic),
                &target,
                &target.physical(topic),
                &decide,
                Duration::from_secs(600),
            )
        })
        .await??;
        inputs += copied.copied;
        if shared {
            output_starts.insert(topic, copied.ends);
        }
    }

    // The processor, built as the deployment builds it, in its own group.
    let group = format!("{sandbox}{stage}");
    let mut rc = ctx.runner_config(config, &group, wiring.inputs);
    let counters = Arc::new(Counters::default());
    let trainer_counters = Arc::new(ServiceCounters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let store_dir = std::env::temp_dir().join(format!("autotrain-{group}"));
    let task = match stage {
        Stage::Validator => spawn(&target, rc, build.validator(), &counters, stop),
        Stage::Features => spawn(&target, rc, build.features()?, &counters, stop),
        Stage::Drift => spawn(&target, rc, build.drift()?, &counters, stop),
        Stage::Regime => spawn(&target, rc, build.regime(), &counters, stop),
        Stage::Forecast => spawn(&target, rc, build.forecast(), &counters, stop),
        Stage::Params => spawn(&target, rc, build.params(), &counters, stop),
        Stage::Engine => spawn(&target, rc, build.engine(), &counters, stop),
        Stage::Trainer => {
            rc.exactly_once = None;
            let mut trainer = build.trainer.clone();
            trainer.store_dir = store_dir.display().to_string();
            let (settings, tc) = (target.clone(), trainer_counters.clone());
            tokio::spawn(async move {
                autotrain_trainer::service::run(&settings, trainer, rc, now_ms, tc, stop)
                    .await
                    .map(|_| ())
            })
        }
    };
    let intake = if stage == Stage::Trainer {
        trainer_counters.intake.clone()
    } else {
        counters.clone()
    };
    let settled = settle(
        &target,
        &group,
        wiring.inputs,
        &intake,
        (stage == Stage::Trainer).then_some(&*trainer_counters),
        Duration::from_secs(args.settle_s),
        deadline,
        &task,
    )
    .await;
    let _ = stop_tx.send(true);
    let ran = task
        .await
        .map_err(|e| anyhow::anyhow!("{stage} task: {e}"))?;
    let _ = std::fs::remove_dir_all(&store_dir);
    settled?;
    ran.with_context(|| format!("{stage} stopped"))?;

    // The comparison.
    let mut topics = Vec::new();
    let mut differences = Vec::new();
    for topic in wiring.decisions {
        let (source, target) = (ctx.settings.clone(), target.clone());
        let starts = output_starts.get(topic).cloned().unwrap_or_default();
        let (published, replayed) = tokio::task::spawn_blocking(move || {
            let mut published = canonical_records(&source, topic, &BTreeMap::new())?;
            if !starts.is_empty() {
                // The topic is also an input: only this processor's records.
                published.retain(|c| !is_input_record(stage, topic, c));
            }
            Ok::<_, anyhow::Error>((published, canonical_records(&target, topic, &starts)?))
        })
        .await??;
        let (report, diffs) = diff(stage, topic, published, replayed, (args.from, args.to));
        topics.push(report);
        differences.extend(diffs);
    }
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let settled_inputs =
        load(&intake.processed) + load(&intake.duplicates) + load(&intake.dead_lettered);
    Ok((
        StageReport {
            processor: stage,
            inputs,
            processed: load(&intake.processed),
            held_at_end: load(&intake.received).saturating_sub(settled_inputs),
            seconds: started.elapsed().as_secs_f64(),
            topics,
        },
        differences,
    ))
}

/// [`written_by`]'s complement on a decoded record: ops' records on a topic
/// the processor also writes.
fn is_input_record(stage: Stage, topic: &str, c: &Canonical) -> bool {
    let field = |name: &str| c.value.get(name).and_then(|v| v.as_str());
    match (stage, topic) {
        (Stage::Validator, t) if t == MARKET_FLAGS.name() => {
            field("kind") == Some("anomaly")
                && matches!(field("state"), Some("approved" | "overridden" | "rejected"))
        }
        (Stage::Params, t) if t == PARAM_UPDATES.name() => field("reason") == Some("manual"),
        _ => false,
    }
}

fn spawn<P: Processor + Send + 'static>(
    settings: &ClientSettings,
    rc: autotrain_kafka::RunnerConfig,
    core: P,
    counters: &Arc<Counters>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), KafkaError>> {
    let (settings, counters) = (settings.clone(), counters.clone());
    tokio::spawn(async move {
        autotrain_kafka::run(&settings, &rc, core, counters, stop)
            .await
            .map(|_| ())
    })
}

/// Waits until the processor has consumed its inputs to their end (twice
/// in a row, the trainer with nothing queued or running), or has stood
/// still for `settle` with records held; fails past `deadline` or when the
/// processor stops.
#[allow(clippy::too_many_arguments)]
async fn settle(
    settings: &ClientSettings,
    group: &str,
    inputs: &'static [&'static str],
    counters: &Counters,
    trainer: Option<&ServiceCounters>,
    settle: Duration,
    deadline: Instant,
    task: &tokio::task::JoinHandle<Result<(), KafkaError>>,
) -> Result<()> {
    let mut quiet = 0;
    let mut last = (u64::MAX, u64::MAX);
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ensure!(
            !task.is_finished(),
            "the processor stopped before its inputs' end"
        );
        let (s, g) = (settings.clone(), group.to_string());
        let caught_up = tokio::task::spawn_blocking(move || {
            group_caught_up(&s, &g, inputs, Duration::from_secs(10))
        })
        .await?
        .unwrap_or(false);
        let idle = trainer.is_none_or(|t| t.pending.load(Ordering::Relaxed) == 0);
        quiet = if caught_up && idle { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return Ok(());
        }
        let now = (
            counters.processed.load(Ordering::Relaxed) + counters.received.load(Ordering::Relaxed),
            trainer.map_or(0, |t| {
                t.started.load(Ordering::Relaxed) + t.published.load(Ordering::Relaxed)
            }),
        );
        // A fit in progress is not standing still, however long it takes.
        let fitting = trainer.is_some_and(|t| {
            let ended = t.completed.load(Ordering::Relaxed) + t.failed.load(Ordering::Relaxed);
            t.started.load(Ordering::Relaxed) > ended
        });
        if now != last || fitting {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= settle && counters.received.load(Ordering::Relaxed) > 0 {
            tracing::warn!(
                group,
                "inputs consumed, records still held: settled as it stands"
            );
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "not caught up with its inputs before the replay's time limit"
        );
    }
}

/// What names a record across the log and its replay, and its event time.
fn identity(c: &Canonical) -> (String, Option<i64>) {
    let v = &c.value;
    let s = |f: &str| {
        v.get(f).map_or_else(String::new, |x| match x {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let t = |f: &str| v.get(f).and_then(serde_json::Value::as_i64);
    match c.schema {
        Some("Bar" | "FeatureVector" | "RegimePosterior") => {
            (format!("{}@{}", c.key, s("ts")), t("ts"))
        }
        Some("ValidationFlag") => (format!("{}/{}", s("flag_id"), s("state")), t("ts")),
        Some("TrainingTrigger") => (s("trigger_id"), t("created_at")),
        Some("ModelVersion") => (
            format!(
                "{}/v{}/{}/{}",
                s("model_key"),
                s("version"),
                s("event"),
                s("alias")
            ),
            t("effective_from"),
        ),
        Some("ParamUpdate") => (format!("{}@{}/{}", c.key, s("at"), s("reason")), t("at")),
        Some("TradeOutcome") => (s("trade_id"), t("ts")),
        _ => (format!("{}/{}", c.key, c.value), None),
    }
}

/// Compares what was published on `topic` with what the replay published,
/// within `range` of event time (records without one always count).
pub fn diff(
    stage: Stage,
    topic: &str,
    published: Vec<Canonical>,
    replayed: Vec<Canonical>,
    range: (Option<i64>, Option<i64>),
) -> (TopicReport, Vec<Difference>) {
    let in_range = |t: Option<i64>| {
        t.is_none_or(|t| range.0.is_none_or(|from| t >= from) && range.1.is_none_or(|to| t <= to))
    };
    type Side = Vec<(String, Canonical)>;
    let mut by_identity: BTreeMap<String, (Side, Side, Option<i64>)> = BTreeMap::new();
    let mut report = TopicReport {
        topic: topic.to_string(),
        ..TopicReport::default()
    };
    for (side, records) in [(0, published), (1, replayed)] {
        for c in records {
            let (id, time) = identity(&c);
            if !in_range(time) {
                continue;
            }
            let entry = by_identity
                .entry(id)
                .or_insert_with(|| (vec![], vec![], time));
            let line = c.line();
            if side == 0 {
                report.published += 1;
                entry.0.push((line, c));
            } else {
                report.replayed += 1;
                entry.1.push((line, c));
            }
        }
    }
    let mut differences = Vec::new();
    for (id, (mut p, mut r, time)) in by_identity {
        p.sort_by(|a, b| a.0.cmp(&b.0));
        r.sort_by(|a, b| a.0.cmp(&b.0));
        // Identical records pair off; what is left differs.
        let (mut left_p, mut left_r) = (Vec::new(), Vec::new());
        let (mut pi, mut ri) = (p.drain(..).peekable(), r.drain(..).peekable());
        loop {
            match (pi.peek(), ri.peek()) {
                (Some(a), Some(b)) if a.0 == b.0 => {
                    report.identical += 1;
                    pi.next();
                    ri.next();
                }
                (Some(a), Some(b)) if a.0 < b.0 => left_p.extend(pi.next()),
                (Some(_), Some(_)) => left_r.extend(ri.next()),
                (Some(_), None) => left_p.extend(pi.next()),
                (None, Some(_)) => left_r.extend(ri.next()),
                (None, None) => break,
            }
        }
        let n = left_p.len().max(left_r.len());
        let (mut lp, mut lr) = (left_p.into_iter(), left_r.into_iter());
        for _ in 0..n {
            let (a, b) = (lp.next(), lr.next());
            let kind = match (&a, &b) {
                (Some(_), Some(_)) => {
                    report.different += 1;
                    Kind::Different
                }
                (Some(_), None) => {
                    report.missing += 1;
                    Kind::Missing
                }
                _ => {
                    report.extra += 1;
                    Kind::Extra
                }
            };
            let key = a
                .as_ref()
                .or(b.as_ref())
                .map(|(_, c)| c.key.clone())
                .unwrap_or_default();
            differences.push(Difference {
                processor: stage,
                topic: topic.to_string(),
                kind,
                key,
                identity: id.clone(),
                event_time: time,
                published: a.map(|(_, c)| c.value),
                replayed: b.map(|(_, c)| c.value),
            });
        }
    }
    (report, differences)
}

/// Distinct keys of a topic (the instruments of `features`). Blocking.
fn keys_of(settings: &ClientSettings, logical: &str) -> Result<BTreeSet<String>> {
    Ok(canonical_records(settings, logical, &BTreeMap::new())?
        .into_iter()
        .map(|c| c.key)
        .collect())
}

/// Records in a topic (progress records left out). Blocking.
fn count_records(settings: &ClientSettings, logical: &str) -> Result<u64> {
    Ok(canonical_records(settings, logical, &BTreeMap::new())?.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, schema: &'static str, value: serde_json::Value) -> Canonical {
        Canonical {
            key: key.into(),
            schema: Some(schema),
            value,
        }
    }

    fn bar(ts: i64, close: f64) -> Canonical {
        rec(
            "x:BTC",
            "FeatureVector",
            serde_json::json!({"ts": ts, "close": close}),
        )
    }

    #[test]
    fn identical_missing_extra_and_different_by_identity() {
        let published = vec![bar(1, 1.0), bar(2, 2.0), bar(3, 3.0), bar(5, 5.0)];
        let replayed = vec![bar(3, 3.0), bar(1, 1.0), bar(2, 2.5), bar(4, 4.0)];
        let (report, diffs) = diff(
            Stage::Features,
            "features",
            published,
            replayed,
            (None, None),
        );
        assert_eq!(
            (
                report.identical,
                report.different,
                report.missing,
                report.extra
            ),
            (2, 1, 1, 1)
        );
        let kinds: Vec<(Kind, Option<i64>)> =
            diffs.iter().map(|d| (d.kind, d.event_time)).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Different, Some(2)),
                (Kind::Extra, Some(4)),
                (Kind::Missing, Some(5))
            ]
        );
        let d = &diffs[0];
        assert_eq!(
            d.published.as_ref().and_then(|v| v["close"].as_f64()),
            Some(2.0)
        );
        assert_eq!(
            d.replayed.as_ref().and_then(|v| v["close"].as_f64()),
            Some(2.5)
        );
    }

    #[test]
    fn the_range_bounds_what_is_compared_and_order_does_not_count() {
        let published = vec![bar(1, 1.0), bar(2, 2.0), bar(3, 3.0)];
        let replayed = vec![bar(3, 9.0), bar(2, 2.0), bar(1, 7.0)];
        let (report, diffs) = diff(
            Stage::Features,
            "features",
            published,
            replayed,
            (Some(2), Some(2)),
        );
        assert_eq!((report.published, report.identical), (1, 1));
        assert!(diffs.is_empty());
    }

    #[test]
    fn repeated_identities_pair_identical_records_first() {
        // Two records with one identity (a correction re-publishes a bar):
        // the unchanged one pairs with its copy, the changed one differs.
        let published = vec![bar(1, 1.0), bar(1, 1.5)];
        let replayed = vec![bar(1, 1.6), bar(1, 1.0)];
        let (report, diffs) = diff(
            Stage::Features,
            "features",
            published,
            replayed,
            (None, None),
        );
        assert_eq!((report.identical, report.different), (1, 1));
        assert_eq!(diffs.len(), 1);
    }

    #[test]
    fn model_versions_are_named_by_key_version_event_and_alias() {
        let v = |alias: Option<&str>, auc: f64| {
            rec(
                "hmm/x",
                "ModelVersion",
                serde_json::json!({"model_key": "hmm/x", "version": 3, "event": "alias_moved",
                    "alias": alias, "effective_from": 100, "metrics": auc}),
            )
        };
        let (report, diffs) = diff(
            Stage::Trainer,
            "model.updates",
            vec![v(Some("prod"), 1.0), v(None, 1.0)],
            vec![v(None, 1.0), v(Some("prod"), 2.0)],
            (None, None),
        );
        assert_eq!((report.identical, report.different), (1, 1));
        assert_eq!(diffs[0].identity, "hmm/x/v3/alias_moved/prod");
        assert_eq!(diffs[0].event_time, Some(100));
    }

    #[test]
    fn times_parse_as_rfc3339_dates_or_epoch_ms() {
        assert_eq!(parse_time("1500000000000"), Ok(1_500_000_000_000));
        assert_eq!(parse_time("2018-01-01"), Ok(1_514_764_800_000));
        assert_eq!(parse_time("2018-01-01T00:30:00Z"), Ok(1_514_766_600_000));
        assert!(parse_time("soon").is_err());
    }
}
