//! The processors as users deploy them on Apache Kafka: `autotrain run
//! validator` and `autotrain run features` as separate processes, each in
//! its consumer group, exactly-once. Every scenario feeds 100,000 real bars
//! and compares what a `read_committed` reader of `market.bars`,
//! `market.flags` and `features` sees with an offline run of the same cores
//! (`reference`): every record once, by event id and by content.
//!
//! - kill -9 of each processor at three random moments, restarted each time;
//! - two instances of each in one group (scale-out), one of each killed for
//!   good mid-stream: the survivors take over its partitions;
//! - the Kafka process stopped mid-stream and started again on its data;
//! - a processor that cannot reach any broker says so and gives up after
//!   its configured time;
//! - the broker killed under running processors and `serve`: one logged
//!   outage, 503s with the reason (never empty data), answers again after
//!   the restart, processors exit after their limit, `serve` stops at once
//!   on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use autotrain_integration_tests::reference::{same_records, validator_then_features, ByTopic};
use autotrain_integration_tests::{
    bars, output_within, produce_bars, read_topic, shared_kafka, Kafka, TestBroker,
};
use autotrain_kafka::ClientSettings;
use autotrain_schemas::Bar;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The three scenarios that push 100,000 bars through processes run one at
/// a time: on two cores, the broker restart run next to the kill -9 run
/// timed its transaction coordinator out and stalled the validator after
/// the restart (see docs/delivery.md, known gaps).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 100,000 real bars: BTC/USD and ETH/USD whole, LTC/USD in part.
fn input() -> Vec<Bar> {
    let mut all = bars("bitfinex_BTCUSD_30m.csv", 35_000);
    all.extend(bars("bitfinex_ETHUSD_30m.csv", 35_000));
    all.extend(bars("bitfinex_LTCUSD_30m.csv", 30_000));
    all
}

/// One `autotrain run PROCESSOR` process.
struct Service {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Service {
    fn spawn(
        bootstrap: &str,
        prefix: &str,
        processor: &str,
        instance: &str,
        logs: &Path,
        extra_env: &[(&str, &str)],
    ) -> Result<Self> {
        let group = format!("{prefix}{processor}");
        let args = ["run", processor, "--group", &group];
        let what = format!("{processor}.{instance}");
        Self::command(bootstrap, prefix, &args, &what, instance, logs, extra_env)
    }

    /// `autotrain --brokers B ARGS…` with the test's prefix, logging to
    /// `logs/WHAT.log`.
    fn command(
        bootstrap: &str,
        prefix: &str,
        args: &[&str],
        what: &str,
        instance: &str,
        logs: &Path,
        extra_env: &[(&str, &str)],
    ) -> Result<Self> {
        let what = what.to_string();
        let log = logs.join(format!("{what}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(["--brokers", bootstrap])
            .args(args)
            .env_remove("AUTOTRAIN_BROKERS")
            .env("AUTOTRAIN__TOPIC_PREFIX", prefix)
            .env("AUTOTRAIN__RUNNER__DELIVERY", "exactly_once")
            .env("AUTOTRAIN__RUNNER__INSTANCE", instance)
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .env("AUTOTRAIN__LOG__LEVEL", "info,librdkafka=warn,rdkafka=warn")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("spawn {what}"))?;
        Ok(Service { child, what, log })
    }

    /// SIGKILL: no shutdown, no final commit, a transaction maybe open.
    fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, as a supervisor stops a service.
    fn terminate(&mut self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {}", self.child.id());
        Ok(())
    }

    /// Waits up to `limit` for the process to end; its exit status.
    fn ended_within(&mut self, limit: Duration) -> Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records on a topic so far (sum of high watermarks: transaction markers
/// and aborted records included; a progress gauge, not a count).
fn end_offsets(settings: &ClientSettings, logical: &str) -> Result<i64> {
    // A gauge read while brokers and processes compete for two cores: a
    // slow answer is asked again rather than failing the scenario.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_end_offsets(settings, logical) {
            Ok(n) => return Ok(n),
            Err(e) if attempt < 6 => {
                eprintln!("end offsets of {logical}: {e}; asking again");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn try_end_offsets(settings: &ClientSettings, logical: &str) -> Result<i64> {
    let topic = settings.physical(logical);
    let c: BaseConsumer = settings.reader_config().create()?;
    let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut sum = 0;
    for p in parts {
        sum += c.fetch_watermarks(&topic, p, Duration::from_secs(10))?.1;
    }
    Ok(sum)
}

/// Waits until a `read_committed` reader sees at least `want` records on
/// each topic, or fails after `limit` with the services' logs.
fn await_outputs(
    settings: &ClientSettings,
    expected: &ByTopic,
    services: &mut [Service],
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    for (topic, want) in expected {
        loop {
            let n = read_topic(settings, topic, 0, Duration::from_secs(60))?.len();
            if n >= want.len() {
                break;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = services
                    .iter()
                    .map(|s| format!("--- {} ---\n{}", s.what, s.log_tail()))
                    .collect();
                bail!(
                    "{topic}: {n} of {} records after {limit:?}\n{}",
                    want.len(),
                    logs.join("\n")
                );
            }
            for s in services.iter_mut() {
                if !s.alive()? {
                    bail!("{} exited:\n{}", s.what, s.log_tail());
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    Ok(())
}

/// Reads every expected topic (read_committed) and compares it with the
/// offline run: every record exactly once.
fn verify(settings: &ClientSettings, expected: &ByTopic) -> Result<()> {
    // Let anything a zombie might still write arrive before the final read.
    std::thread::sleep(Duration::from_secs(3));
    for (topic, want) in expected {
        let got = read_topic(settings, topic, want.len(), Duration::from_secs(120))?;
        same_records(topic, &got, want)?;
        eprintln!("{topic}: {} records, each exactly once", got.len());
    }
    let dlq = read_topic(settings, "market.bars.dlq", 0, Duration::from_secs(30))?;
    assert!(
        dlq.is_empty(),
        "no dead letters from real bars: {}",
        dlq.len()
    );
    Ok(())
}

/// A deterministic xorshift for kill moments (seed in the test).
fn fractions(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed;
    let mut out: Vec<f64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            0.1 + 0.8 * ((x >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Waits for every expected output, then checks each arrived exactly once.
fn finish(settings: &ClientSettings, expected: &ByTopic, services: &mut [Service]) -> Result<()> {
    await_outputs(settings, expected, services, Duration::from_secs(600))?;
    verify(settings, expected)
}

#[test]
fn exactly_once_through_kill_9_of_each_processor_three_times() -> Result<()> {
    let _alone = alone();
    let rt = tokio::runtime::Runtime::new()?;
    let bootstrap = shared_kafka();
    let settings = rt.block_on(TestBroker::kafka().fresh_topics("eos"))?;
    let prefix = settings.topic_prefix.clone();
    let logs = tempfile::tempdir()?;
    let input = input();
    let expected = validator_then_features(&input)?;
    let expected_bars = expected.get("market.bars").map_or(0, |m| m.len()) as f64;
    let expected_features = expected.get("features").map_or(0, |m| m.len()) as f64;
    rt.block_on(produce_bars(&settings, &input))?;

    let mut validator = Service::spawn(&bootstrap, &prefix, "validator", "a", logs.path(), &[])?;
    let mut features = Service::spawn(&bootstrap, &prefix, "features", "a", logs.path(), &[])?;
    // Kill moments: fractions of each stage's output, seeded.
    let mut kills: Vec<(f64, &str)> = fractions(0x5eed_0001, 3)
        .into_iter()
        .map(|f| (f * expected_bars, "validator"))
        .chain(
            fractions(0x5eed_0002, 3)
                .into_iter()
                .map(|f| (f * expected_features, "features")),
        )
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let logs_of = |v: &Service, f: &Service| {
        format!(
            "--- {} ---\n{}\n--- {} ---\n{}",
            v.what,
            v.log_tail(),
            f.what,
            f.log_tail()
        )
    };
    let mut last_kill: std::collections::HashMap<&str, f64> = Default::default();
    while !kills.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "kills not done: {kills:?}\n{}",
                logs_of(&validator, &features)
            );
        }
        for s in [&mut validator, &mut features] {
            if !s.alive()? {
                bail!("{} exited:\n{}", s.what, s.log_tail());
            }
        }
        let bars_now = end_offsets(&settings, "market.bars")? as f64;
        let features_now = end_offsets(&settings, "features")? as f64;
        // Each kill lands on output the stage made since its last restart.
        let mut killed = Vec::new();
        let mut left = Vec::new();
        for (at, which) in kills {
            let now = if which == "validator" {
                bars_now
            } else {
                features_now
            };
            // A stage can finish its whole input between two polls; its
            // remaining kills then land on the finished stage, whose restart
            // must write nothing twice.
            let done = now
                >= if which == "validator" {
                    expected_bars
                } else {
                    expected_features
                };
            let fresh = done || last_kill.get(which).is_none_or(|last| now > *last);
            if now < at || killed.contains(&which) || !fresh {
                left.push((at, which));
                continue;
            }
            last_kill.insert(which, now);
            let s = if which == "validator" {
                &mut validator
            } else {
                &mut features
            };
            eprintln!("kill -9 {} at {now} outputs", s.what);
            s.kill9()?;
            *s = Service::spawn(&bootstrap, &prefix, which, "a", logs.path(), &[])?;
            killed.push(which);
        }
        kills = left;
        std::thread::sleep(Duration::from_millis(if killed.is_empty() {
            100
        } else {
            500
        }));
    }
    let mut services = [validator, features];
    finish(&settings, &expected, &mut services)
}

#[test]
fn scale_out_two_instances_per_group_one_killed_for_good() -> Result<()> {
    let _alone = alone();
    let rt = tokio::runtime::Runtime::new()?;
    let bootstrap = shared_kafka();
    let settings = rt.block_on(TestBroker::kafka().fresh_topics("scale"))?;
    let prefix = settings.topic_prefix.clone();
    let logs = tempfile::tempdir()?;
    let input = input();
    let expected = validator_then_features(&input)?;
    let half = expected.get("features").map_or(0, |m| m.len()) as i64 / 2;
    let mut services = vec![
        Service::spawn(&bootstrap, &prefix, "validator", "a", logs.path(), &[])?,
        Service::spawn(&bootstrap, &prefix, "validator", "b", logs.path(), &[])?,
        Service::spawn(&bootstrap, &prefix, "features", "a", logs.path(), &[])?,
        Service::spawn(&bootstrap, &prefix, "features", "b", logs.path(), &[])?,
    ];
    // Both members of each group join before the bars arrive.
    std::thread::sleep(Duration::from_secs(5));
    rt.block_on(produce_bars(&settings, &input))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while end_offsets(&settings, "features")? < half {
        assert!(Instant::now() < deadline, "features never reached half way");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Validator a and features b die; nobody restarts them.
    services[0].kill9()?;
    services[3].kill9()?;
    let mut survivors: Vec<Service> = services.drain(1..3).collect();
    finish(&settings, &expected, &mut survivors)
}

#[test]
fn broker_stopped_and_restarted_mid_stream() -> Result<()> {
    let _alone = alone();
    let rt = tokio::runtime::Runtime::new()?;
    let mut kafka = Kafka::start()?;
    let bootstrap = kafka.bootstrap();
    let settings = rt.block_on(kafka.fresh_topics("restart"))?;
    let prefix = settings.topic_prefix.clone();
    let logs = tempfile::tempdir()?;
    let input = input();
    let expected = validator_then_features(&input)?;
    let (first, second) = input.split_at(input.len() / 2);
    rt.block_on(produce_bars(&settings, first))?;
    let mut services = vec![
        Service::spawn(&bootstrap, &prefix, "validator", "a", logs.path(), &[])?,
        Service::spawn(&bootstrap, &prefix, "features", "a", logs.path(), &[])?,
    ];
    let deadline = Instant::now() + Duration::from_secs(300);
    while end_offsets(&settings, "features")? < 10_000 {
        assert!(Instant::now() < deadline, "features never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    kafka.stop()?;
    eprintln!("kafka stopped");
    std::thread::sleep(Duration::from_secs(3));
    kafka.restart()?;
    eprintln!("kafka started again");
    rt.block_on(produce_bars(&settings, second))?;
    // The producer's retries across the restart kept each instrument's bars
    // in the order they were sent (an idempotent producer): the offline
    // run over the input is then the run over the log.
    let raw = read_topic(
        &settings,
        "market.bars.raw",
        input.len(),
        Duration::from_secs(120),
    )?;
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for (_, key, payload) in &raw {
        let bar: Bar = autotrain_schemas::decode(payload)?;
        let before = last.insert(key.clone(), bar.ts);
        assert!(
            before.is_none_or(|b| b < bar.ts),
            "{key}: bar {} after {before:?} on market.bars.raw (a resent batch landed behind later ones)",
            bar.ts
        );
    }
    assert_eq!(raw.len(), input.len(), "every bar once on market.bars.raw");
    finish(&settings, &expected, &mut services)?;
    let said: String = services.iter().map(Service::log_tail).collect();
    drop(services);
    eprintln!("{said}");
    Ok(())
}

#[test]
fn a_processor_without_a_broker_says_so_and_gives_up_in_time() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let nobody = format!("127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    });
    let started = Instant::now();
    let mut s = Service::spawn(
        &nobody,
        "nobody.",
        "validator",
        "a",
        logs.path(),
        &[("AUTOTRAIN__RUNNER__CONNECT_TIMEOUT_S", "5")],
    )?;
    let status = loop {
        if let Some(status) = s.child.try_wait()? {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "still running: {}",
            s.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&s.log)?;
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("cannot reach Kafka at {nobody}")),
        "{log}"
    );
    assert!(log.contains("retrying"), "{log}");
    assert!(log.contains("after 5 s"), "{log}");
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Issue 18, item 3: kill -9 of the broker under every processor and
/// `serve`. Wanted and checked: the outage is logged once per process
/// (not once per reconnect); `/health` says since when and why (503) and so
/// do reads and writes (503 with `Retry-After`, never 200 with empty data;
/// a write answers at once); after the restart the same data is served
/// again and the processors go on; past `[runner] unreachable_limit_s` the
/// processors exit with an error naming the outage; `serve` stops within
/// seconds of SIGTERM while the broker is still dead.
#[test]
fn broker_death_is_one_logged_outage_503_and_a_prompt_stop() -> Result<()> {
    use autotrain_integration_tests::services::ApiClient;
    let _alone = alone();
    let rt = tokio::runtime::Runtime::new()?;
    let mut kafka = Kafka::start()?;
    let bootstrap = kafka.bootstrap();
    let settings = rt.block_on(kafka.fresh_topics("outage"))?;
    let prefix = settings.topic_prefix.clone();
    let logs = tempfile::tempdir()?;
    let input = bars("bitfinex_BTCUSD_30m.csv", 4_000);
    let (first, second) = input.split_at(2_000);
    rt.block_on(produce_bars(&settings, first))?;
    let store = logs.path().join("references");
    let store = store.to_string_lossy();
    let limit = [
        ("AUTOTRAIN__RUNNER__UNREACHABLE_LIMIT_S", "40"),
        ("AUTOTRAIN__TRAINER__STORE_DIR", store.as_ref()),
    ];
    let bind = format!("127.0.0.1:{}", free_port()?);
    // Every processor of the pipeline.
    let mut services = [
        "validator",
        "features",
        "drift",
        "trainer",
        "regime",
        "params",
        "engine",
    ]
    .iter()
    .map(|p| Service::spawn(&bootstrap, &prefix, p, "a", logs.path(), &limit))
    .collect::<Result<Vec<_>>>()?;
    let mut serve = Service::command(
        &bootstrap,
        &prefix,
        &["serve", "--dev", "--bind", &bind],
        "serve",
        "a",
        logs.path(),
        &[],
    )?;
    let api = ApiClient::new(format!("http://{bind}"));
    let call = |method: &str, path: &str| rt.block_on(api.call(method, path, None, None));
    let wait_for = |what: &str, limit: Duration, done: &dyn Fn() -> Result<bool>| -> Result<()> {
        let deadline = Instant::now() + limit;
        while !done()? {
            if Instant::now() > deadline {
                bail!("never {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    wait_for("2,000 features", Duration::from_secs(120), &|| {
        Ok(end_offsets(&settings, "features")? >= 2_000)
    })?;
    wait_for("healthy", Duration::from_secs(60), &|| {
        Ok(call("GET", "/health").map(|r| r.0).unwrap_or(0) == 200)
    })?;
    let window = "/api/features/bitfinex:BTCUSD/window";
    // 30 days of 30-minute bars, every row read.
    wait_for("the feature window", Duration::from_secs(60), &|| {
        let w = call("GET", window)?.1;
        Ok(w["features"]["lr"]["n"].as_u64().unwrap_or(0) > 1_400 && w["rows_pending"] == 0)
    })?;
    let (_, before) = call("GET", window)?;
    let lines_before: Vec<usize> = services
        .iter()
        .map(|s| s.log_text().lines().count())
        .collect();

    // The broker dies.
    kafka.kill()?;
    let killed = Instant::now();
    wait_for("503 from /health", Duration::from_secs(30), &|| {
        Ok(call("GET", "/health")?.0 == 503)
    })?;
    let (_, health) = call("GET", "/health")?;
    assert_eq!(health["status"], "broker_unreachable", "{health}");
    assert_eq!(health["broker"]["reachable"], false, "{health}");
    assert!(
        health["broker"]["unreachable_since"].is_string(),
        "{health}"
    );
    for path in ["/api/flags", "/api/trainings", window] {
        let (status, body) = call("GET", path)?;
        assert_eq!(status, 503, "GET {path} during the outage: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("broker unreachable since"), "{body}");
    }
    let asked = Instant::now();
    let (status, body) = rt.block_on(api.call(
        "POST",
        "/api/trainings",
        None,
        Some(&serde_json::json!({"model_key": "hmm/bitfinex:BTCUSD"})),
    ))?;
    assert_eq!(status, 503, "a write during the outage: {body}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the write took {:?}",
        asked.elapsed()
    );
    std::thread::sleep(Duration::from_secs(15));
    for (s, before) in services.iter().zip(&lines_before) {
        let text = s.log_text();
        let during: Vec<&str> = text.lines().skip(*before).collect();
        let logged = during
            .iter()
            .filter(|l| l.contains("broker unreachable"))
            .count();
        assert_eq!(
            logged,
            1,
            "{}: the outage logged {logged} times:\n{}",
            s.what,
            during.join("\n")
        );
        assert!(
            during.len() <= 12,
            "{}: {} lines in {:?} of outage:\n{}",
            s.what,
            during.len(),
            killed.elapsed(),
            during.join("\n")
        );
    }

    // It comes back: the same views are served, the processors go on.
    kafka.restart()?;
    wait_for(
        "healthy after the restart",
        Duration::from_secs(90),
        &|| Ok(call("GET", "/health")?.0 == 200),
    )?;
    let (status, after) = call("GET", window)?;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["features"], before["features"],
        "the views after the outage"
    );
    rt.block_on(produce_bars(&settings, second))?;
    wait_for("4,000 features", Duration::from_secs(180), &|| {
        Ok(try_end_offsets(&settings, "features").unwrap_or(0) >= 4_000)
    })?;
    for s in &services {
        assert!(
            s.log_text().contains("broker reachable again"),
            "{}: {}",
            s.what,
            s.log_tail()
        );
    }

    // It dies for good: the processors give up after their limit, with the
    // reason; serve stops at once on SIGTERM.
    kafka.kill()?;
    for s in &mut services {
        let status = s.ended_within(Duration::from_secs(120))?;
        let log = s.log_text();
        let status =
            status.with_context(|| format!("{} still running: {}", s.what, s.log_tail()))?;
        assert!(!status.success(), "{}: {log}", s.what);
        assert!(
            log.contains("broker unreachable since") && log.contains("for over 40 s"),
            "{}: {}",
            s.what,
            s.log_tail()
        );
    }
    wait_for("503 from /health", Duration::from_secs(30), &|| {
        Ok(call("GET", "/health")?.0 == 503)
    })?;
    let asked = Instant::now();
    serve.terminate()?;
    let status = serve.ended_within(Duration::from_secs(10))?;
    assert!(
        status.is_some(),
        "serve ignored SIGTERM for 10 s: {}",
        serve.log_tail()
    );
    eprintln!(
        "serve stopped {:?} after SIGTERM with the broker dead",
        asked.elapsed()
    );
    Ok(())
}

/// Issue 18, item 10: a processor killed with -9 and started again takes
/// its partitions back at once (static membership: `group.instance.id` =
/// `{group}.{instance}`), not after the broker times the dead member's
/// session out (10 s); it then resumes from its last transaction.
#[test]
fn a_restarted_instance_resumes_without_waiting_out_its_session() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let bootstrap = shared_kafka();
    let settings = rt.block_on(TestBroker::kafka().fresh_topics("static"))?;
    let prefix = settings.topic_prefix.clone();
    let logs = tempfile::tempdir()?;
    let input = bars("bitfinex_ETHUSD_30m.csv", 2_000);
    let (first, second) = input.split_at(1_000);
    rt.block_on(produce_bars(&settings, first))?;
    let mut validator = Service::spawn(&bootstrap, &prefix, "validator", "a", logs.path(), &[])?;
    let group = format!("{prefix}validator");
    let caught_up =
        || autotrain_integration_tests::caught_up(&settings, &group, &["market.bars.raw"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up()? {
        assert!(
            Instant::now() < deadline,
            "never started: {}",
            validator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    validator.kill9()?;
    rt.block_on(produce_bars(&settings, second))?;
    let restarted = Instant::now();
    let mut validator = Service::spawn(&bootstrap, &prefix, "validator", "a", logs.path(), &[])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !caught_up()? {
        assert!(
            Instant::now() < deadline,
            "never resumed: {}",
            validator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = restarted.elapsed();
    eprintln!("restarted validator: its 2,000 inputs committed {resumed:?} after its start");
    assert!(validator.alive()?, "{}", validator.log_tail());
    assert!(
        resumed < Duration::from_secs(8),
        "the restarted instance took {resumed:?} (the session timeout is 10 s): {}",
        validator.log_tail()
    );
    Ok(())
}

/// The `[kafka]` properties of a SASL/SCRAM principal, as a config file
/// gives them to `autotrain`.
fn scram(user: &str, password: &str) -> Vec<(String, String)> {
    [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", user),
        ("sasl.password", password),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Issue 18, item 9: commands are topic records, so on a shared cluster
/// Kafka's own authentication and ACLs guard them. A node with SASL/SCRAM
/// and the StandardAuthorizer; `ops` may write `training.commands`,
/// `trader` may only read. `autotrain models promote` as `trader` fails
/// with the broker's authorisation error and leaves no command on the
/// topic; as `ops` the command lands; without credentials nothing connects.
#[test]
fn kafka_acls_keep_a_principal_without_write_from_promoting() -> Result<()> {
    use autotrain_kafka::{create_topics, Broker, OutRecord};
    let rt = tokio::runtime::Runtime::new()?;
    let kafka = Kafka::start_sasl(&["ops=ops-secret", "trader=trader-secret"])?;
    let bootstrap = kafka.bootstrap();
    let prefix = "acl.";
    let broker = Broker::connect_or_embed(Some(&bootstrap))?;
    let mut admin = broker.settings(prefix);
    admin.properties.extend(scram("admin", "admin-secret"));
    rt.block_on(create_topics(
        &broker,
        &admin,
        &autotrain_topics::catalogue().topics,
        1,
    ))?;
    // Both read every topic of the deployment; only ops writes commands.
    for user in ["ops", "trader"] {
        kafka.acls(&[
            "--add",
            "--allow-principal",
            &format!("User:{user}"),
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--topic",
            prefix,
            "--resource-pattern-type",
            "prefixed",
        ])?;
        // The CLI's readers join throwaway groups `autotrain-reader-…`.
        kafka.acls(&[
            "--add",
            "--allow-principal",
            &format!("User:{user}"),
            "--operation",
            "Read",
            "--group",
            "autotrain-reader-",
            "--resource-pattern-type",
            "prefixed",
        ])?;
    }
    kafka.acls(&[
        "--add",
        "--allow-principal",
        "User:ops",
        "--operation",
        "Write",
        "--topic",
        &admin.physical("training.commands"),
    ])?;
    // A registered version to promote (as the trainer would publish it).
    let registry = autotrain_trainer::registry::Registry::new();
    let v1 = registry.register(
        "hmm/acl-model",
        "t-acl",
        vec![1, 2, 3],
        "h1".into(),
        Vec::new(),
        autotrain_schemas::Manifest {
            trigger_id: "t".into(),
            code_version: "0.1.0".into(),
            feature_contract_version: "1".into(),
            inputs: Vec::new(),
            split_version: "s1".into(),
            reference_hash: "r".into(),
            hyperparams: Vec::new(),
            seed: 7,
            dataset_version: None,
            code_commit: None,
            feature_contract_hash: None,
            feature_build: None,
        },
        1,
    );
    rt.block_on(async {
        autotrain_kafka::Producer::new(&admin)?
            .send(&OutRecord::from_content(
                autotrain_topics::MODEL_UPDATES,
                "hmm/acl-model",
                &v1,
            )?)
            .await
    })?;

    let configs = tempfile::tempdir()?;
    let promote = |who: Option<(&str, &str)>| -> Result<std::process::Output> {
        let path = configs
            .path()
            .join(format!("{}.toml", who.map_or("nobody", |w| w.0)));
        let mut toml =
            format!("topic_prefix = {prefix:?}\n[runner]\nconnect_timeout_s = 5\n[kafka]\n");
        if let Some((user, password)) = who {
            for (k, v) in scram(user, password) {
                toml.push_str(&format!("{k:?} = {v:?}\n"));
            }
        }
        std::fs::write(&path, toml)?;
        Ok(Command::new(env!("CARGO_BIN_EXE_autotrain"))
            .args(["--brokers", &bootstrap, "--config"])
            .arg(&path)
            .args([
                "models",
                "promote",
                "hmm/acl-model",
                "--version",
                "1",
                "--timeout-s",
                "2",
            ])
            .env_remove("AUTOTRAIN_BROKERS")
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .output()?)
    };
    let commands = || -> Result<usize> {
        Ok(read_topic(&admin, "training.commands", 0, Duration::from_secs(5))?.len())
    };

    let trader = promote(Some(("trader", "trader-secret")))?;
    let said = String::from_utf8_lossy(&trader.stderr).into_owned();
    assert!(!trader.status.success(), "trader promoted: {said}");
    // trader may write to no topic, so its idempotent producer is refused
    // an id before the topic is asked; the error says so.
    assert!(
        said.contains("ClusterAuthorizationFailed"),
        "trader: {said}"
    );
    assert!(said.contains("needs Write"), "trader: {said}");
    assert!(said.contains("training.commands"), "trader: {said}");
    assert_eq!(commands()?, 0, "a command from trader landed");

    let nobody = promote(None)?;
    let said = String::from_utf8_lossy(&nobody.stderr).into_owned();
    assert!(!nobody.status.success(), "no credentials promoted: {said}");
    assert_eq!(commands()?, 0, "a command without credentials landed");

    // ops may: the command lands (no trainer runs here to apply it, so the
    // CLI then says nobody answered).
    let ops = promote(Some(("ops", "ops-secret")))?;
    let said = String::from_utf8_lossy(&ops.stderr).into_owned();
    assert!(said.contains("no answer from the trainer"), "ops: {said}");
    assert_eq!(commands()?, 1, "ops: {said}");
    Ok(())
}

/// `autotrain run params` and `autotrain run engine` as processes on Kafka
/// (exactly-once), once uninterrupted and once with each killed -9 at a
/// seeded moment and restarted (the controller restores from the topics,
/// the engine rebuilds from its inputs): the same `param.updates` and
/// `trade.outcomes`, record for record.
#[test]
fn params_and_engine_through_kill_9_decide_as_an_uninterrupted_run() -> Result<()> {
    use autotrain_integration_tests::cycle::{outputs, same, scenario, LEARN_LAG_MS};
    let _alone = alone();
    let rt = tokio::runtime::Runtime::new()?;
    let bootstrap = shared_kafka();
    let s = scenario()?;
    let lag = LEARN_LAG_MS.to_string();
    let env = [("AUTOTRAIN__PARAMS__LEARN_LAG_MS", lag.as_str())];
    let logs = tempfile::tempdir()?;
    let spawn = |prefix: &str, which: &str| {
        Service::spawn(&bootstrap, prefix, which, "a", logs.path(), &env)
    };
    // Until both outputs hold `want` distinct records (or the limit).
    let settle = |settings: &ClientSettings,
                  services: &mut [Service],
                  want: Option<(usize, usize)>|
     -> Result<(Vec<String>, Vec<String>)> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut last, mut stable) = ((0, 0), 0);
        loop {
            for sv in services.iter_mut() {
                if !sv.alive()? {
                    bail!("{} exited:\n{}", sv.what, sv.log_tail());
                }
            }
            let got = outputs(settings)?;
            let now = (got.0.len(), got.1.len());
            stable = if now == last && now.1 > 0 {
                stable + 1
            } else {
                0
            };
            last = now;
            let done = match want {
                Some(w) => now == w || stable >= 10,
                None => stable >= 5,
            };
            if done {
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!(
                    "{now:?} records, want {want:?}\n{}",
                    services
                        .iter()
                        .map(|sv| format!("--- {} ---\n{}", sv.what, sv.log_tail()))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    };

    let whole = rt.block_on(TestBroker::kafka().fresh_topics("cycle-whole"))?;
    let prefix = whole.topic_prefix.clone();
    let mut services = [spawn(&prefix, "params")?, spawn(&prefix, "engine")?];
    rt.block_on(s.publish_all(&whole))?;
    let want = settle(&whole, &mut services, None)?;
    drop(services);
    assert!(
        want.0.len() > 10 && want.1.len() > 1_000,
        "{} updates, {} outcomes",
        want.0.len(),
        want.1.len()
    );

    let killed = rt.block_on(TestBroker::kafka().fresh_topics("cycle-kill"))?;
    let prefix = killed.topic_prefix.clone();
    let mut services = [spawn(&prefix, "params")?, spawn(&prefix, "engine")?];
    rt.block_on(s.publish_all(&killed))?;
    let mut kills = vec![
        (
            fractions(0x5eed_0003, 1)[0] * want.0.len() as f64,
            "param.updates",
            0,
        ),
        (
            fractions(0x5eed_0004, 1)[0] * want.1.len() as f64,
            "trade.outcomes",
            1,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(300);
    while !kills.is_empty() {
        ensure_alive(&mut services)?;
        assert!(Instant::now() < deadline, "kills not done: {kills:?}");
        let mut left = Vec::new();
        for (at, topic, which) in kills {
            let now = end_offsets(&killed, topic)? as f64;
            if now < at {
                left.push((at, topic, which));
                continue;
            }
            let name = if which == 0 { "params" } else { "engine" };
            eprintln!("kill -9 {name} at {now} records of {topic}");
            services[which].kill9()?;
            services[which] = spawn(&prefix, name)?;
        }
        kills = left;
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = settle(&killed, &mut services, Some((want.0.len(), want.1.len())))?;
    same(&want.0, &got.0, "param.updates");
    same(&want.1, &got.1, "trade.outcomes");
    Ok(())
}

fn ensure_alive(services: &mut [Service]) -> Result<()> {
    for s in services.iter_mut() {
        if !s.alive()? {
            bail!("{} exited:\n{}", s.what, s.log_tail());
        }
    }
    Ok(())
}

/// One value of a Prometheus text exposition (`name{labels} value`).
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

/// `[runner] metrics_bind`: an `autotrain run` process serves `/metrics`
/// over HTTP: records in and out, processing time, its group's lag per
/// input topic (from the broker), broker reachability.
#[test]
fn a_processor_serves_its_metrics() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let bootstrap = shared_kafka();
    let settings = rt.block_on(TestBroker::kafka().fresh_topics("metrics"))?;
    let prefix = settings.topic_prefix.clone();
    let logs = tempfile::tempdir()?;
    let input = bars("bitfinex_ETHUSD_30m.csv", 2_000);
    rt.block_on(produce_bars(&settings, &input))?;
    let bind = format!("127.0.0.1:{}", free_port()?);
    let validator = Service::spawn(
        &bootstrap,
        &prefix,
        "validator",
        "a",
        logs.path(),
        &[("AUTOTRAIN__RUNNER__METRICS_BIND", bind.as_str())],
    )?;
    let scrape = || -> Result<String> {
        rt.block_on(async {
            Ok(reqwest::get(format!("http://{bind}/metrics"))
                .await?
                .error_for_status()?
                .text()
                .await?)
        })
    };
    let group = format!("{prefix}validator");
    let lag = format!("autotrain_consumer_lag{{group=\"{group}\",topic=\"market.bars.raw\"}}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = scrape().unwrap_or_default();
        if metric(&text, &lag) == Some(0.0) {
            // The counters are rendered before the lag is read from the
            // broker (slow under load): scrape again once nothing moves,
            // for counters taken after everything was consumed.
            let mut last = text;
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let again = scrape().unwrap_or_default();
                let counts = |t: &str| {
                    metric(
                        t,
                        "autotrain_processing_seconds_count{processor=\"validator\"}",
                    )
                };
                if counts(&again).is_some() && counts(&again) == counts(&last) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the counters never settled:\n{again}"
                );
                last = again;
            }
            break scrape()?;
        }
        assert!(
            Instant::now() < deadline,
            "the lag never reached 0:\n{text}\n{}",
            validator.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let received = metric(
        &text,
        "autotrain_processor_records_total{processor=\"validator\",kind=\"received\"}",
    )
    .context("received")?;
    let outputs = metric(
        &text,
        "autotrain_processor_records_total{processor=\"validator\",kind=\"outputs\"}",
    )
    .context("outputs")?;
    let timed = metric(
        &text,
        "autotrain_processing_seconds_count{processor=\"validator\"}",
    )
    .context("processing time")?;
    assert!(received >= input.len() as f64, "{text}");
    assert!(outputs > 0.0, "records out: {text}");
    assert_eq!(timed, received, "one processing time per input: {text}");
    assert_eq!(
        metric(&text, "autotrain_broker_reachable"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            &format!("autotrain_consumer_lag{{group=\"{group}\",topic=\"market.flags\"}}")
        )
        .is_some(),
        "every input topic has its lag: {text}"
    );
    Ok(())
}

/// Issue 13: the whole pipeline as seven `autotrain run` processes over
/// 8,000 real bars, each process killed -9 once at a seeded moment and
/// restarted, decides what one uninterrupted `autotrain demo` over the same
/// bars decides: every output topic's content digest is equal (bars, flags,
/// features, triggers, model versions, posteriors, parameter updates,
/// trades). Both run exactly-once on the same Kafka, with one config that
/// makes a deployment build its processors as the demo does.
#[test]
fn the_pipeline_killed_9_once_per_processor_decides_as_an_uninterrupted_demo() -> Result<()> {
    use autotrain_integration_tests::{data_sample, unique};
    let _alone = alone();
    let bootstrap = shared_kafka();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("bars");
    std::fs::create_dir_all(&data)?;
    data_sample(&data, "bitfinex_BTCUSD_30m.csv", 8_000)?;
    let config = dir.path().join("autotrain.toml");
    std::fs::write(
        &config,
        r#"replication_factor = 1
[scheduler]
clock = "event"
[[scheduler.schedule]]
model_key = "hmm/bitfinex:BTCUSD"
cron = "0 0 1 */3 *"
timezone = "UTC"
instruments = ["bitfinex:BTCUSD"]
auto_promote = true
[trainer]
block_on = []
"#,
    )?;
    let config_env = config.to_str().unwrap_or_default();
    let env = [("AUTOTRAIN_CONFIG", config_env)];
    let data_arg = data.to_str().unwrap_or_default();
    let cli = |prefix: &str, args: &[&str]| -> Result<std::process::Output> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_autotrain"));
        command
            .args(["--brokers", &bootstrap])
            .args(args)
            .env_remove("AUTOTRAIN_BROKERS")
            .env("AUTOTRAIN_CONFIG", config_env)
            .env("AUTOTRAIN__TOPIC_PREFIX", prefix)
            .env(
                "AUTOTRAIN__LOG__LEVEL",
                "warn,librdkafka=error,rdkafka=error",
            );
        let out = output_within(&mut command, Duration::from_secs(900))?;
        anyhow::ensure!(
            out.status.success(),
            "autotrain {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    };
    let digests = |prefix: &str| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(
            &cli(prefix, &["digest", "--json"])?.stdout,
        )?)
    };

    // Uninterrupted.
    let whole = format!("{}.", unique("crash-whole"));
    let out = cli(
        &whole,
        &[
            "demo",
            "--json",
            "--api-bind",
            "127.0.0.1:0",
            "--data",
            data_arg,
        ],
    )?;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let want = summary["digests"].clone();
    assert!(
        summary["promotions"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
    assert_eq!(want, digests(&whole)?, "the demo's digests are its topics'");
    let whole_settings = ClientSettings::new(bootstrap.as_str()).with_prefix(whole.as_str());

    // Seven processes, each killed -9 once.
    let prefix = format!("{}.", unique("crash-killed"));
    let settings = ClientSettings::new(bootstrap.as_str()).with_prefix(prefix.as_str());
    cli(&prefix, &["topics", "create"])?;
    let logs = tempfile::tempdir()?;
    let stages = [
        ("validator", "market.bars"),
        ("features", "features"),
        ("drift", "training.triggers"),
        ("trainer", "model.updates"),
        ("regime", "regimes"),
        ("params", "param.updates"),
        ("engine", "trade.outcomes"),
    ];
    let mut services = stages
        .iter()
        .map(|(p, _)| Service::spawn(&bootstrap, &prefix, p, "a", logs.path(), &env))
        .collect::<Result<Vec<_>>>()?;
    // Bars paced over ~15 s (a million times real time), so the first
    // stages are killed mid-stream too.
    let mut producer = Service::command(
        &bootstrap,
        &prefix,
        &[
            "produce", "--quiet", "--pace", "1000000", "--input", data_arg,
        ],
        "produce",
        "a",
        logs.path(),
        &env,
    )?;
    // Kill moments: seeded fractions of what each stage wrote in the
    // uninterrupted run (end offsets: records, progress and markers).
    let fractions = fractions(0x5eed_0013, stages.len());
    let mut kills = Vec::new();
    for (i, (stage, topic)) in stages.iter().enumerate() {
        let total = end_offsets(&whole_settings, topic)? as f64;
        kills.push((fractions[(i * 3) % stages.len()] * total, i, *stage, *topic));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while !kills.is_empty() {
        ensure_alive(&mut services)?;
        anyhow::ensure!(Instant::now() < deadline, "kills not done: {kills:?}");
        let mut left = Vec::new();
        for (at, i, stage, topic) in kills {
            let now = end_offsets(&settings, topic)? as f64;
            if now < at {
                left.push((at, i, stage, topic));
                continue;
            }
            eprintln!("kill -9 {stage} at {now} of {topic}");
            services[i].kill9()?;
            services[i] = Service::spawn(&bootstrap, &prefix, stage, "a", logs.path(), &env)?;
        }
        kills = left;
        std::thread::sleep(Duration::from_millis(100));
    }
    let produced = producer.ended_within(Duration::from_secs(300))?;
    anyhow::ensure!(
        produced.is_some_and(|s| s.success()),
        "produce: {produced:?}\n{}",
        producer.log_tail()
    );
    // Until the digests match, or nothing changes for a minute.
    let (mut last, mut since) = (serde_json::Value::Null, Instant::now());
    loop {
        ensure_alive(&mut services)?;
        let got = digests(&prefix)?;
        if got == want {
            break;
        }
        if got != last {
            (last, since) = (got, Instant::now());
        } else if since.elapsed() > Duration::from_secs(60) || Instant::now() > deadline {
            let logs: Vec<String> = services
                .iter()
                .map(|s| format!("--- {} ---\n{}", s.what, s.log_tail()))
                .collect();
            bail!(
                "after the kills the topics settled on\n{last:#}\nthe uninterrupted run has\n{want:#}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    Ok(())
}
