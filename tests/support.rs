//! Shared helpers for the integration tests: brokers (embedded, and Apache
//! Kafka nodes run by `scripts/kafka`), unique topic prefixes and group ids,
//! bar files, a forwarding processor, the `autotrain` binary as a process,
//! and a reader that collects a topic.

#[path = "support/cycle.rs"]
pub mod cycle;
#[path = "support/exchange.rs"]
pub mod exchange;
#[path = "support/mlflow.rs"]
pub mod mlflow;
#[path = "support/questdb.rs"]
pub mod questdb;
#[path = "support/reference.rs"]
pub mod reference;
#[path = "support/services.rs"]
pub mod services;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use autotrain_connector_file::{infer_instrument, BarReader};
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{
    create_topics, Broker, ClientSettings, EventId, Incoming, OutRecord, Outputs, ProcessError,
    Processor, Producer, RunStats, EVENT_ID_HEADER,
};
use autotrain_schemas::{Bar, Payload};
use autotrain_topics::{catalogue, MARKET_BARS};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// Wall-clock time, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Logs to the test output when RUST_LOG is set (e.g. RUST_LOG=debug).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    init_logging();
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}-{}-{nanos:x}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn data_file(name: &str) -> PathBuf {
    repo_root().join("data").join(name)
}

/// Writes the header and first `rows` bars of bundled data file `file` to
/// `dir/file` (a real sample the demo can replay quickly).
pub fn data_sample(dir: &Path, file: &str, rows: usize) -> Result<()> {
    let text = std::fs::read_to_string(data_file(file))?;
    let lines: Vec<&str> = text.lines().take(rows + 1).collect();
    std::fs::write(dir.join(file), lines.join("\n") + "\n")?;
    Ok(())
}

/// The first `n` bars of a bundled data file.
pub fn bars(file: &str, n: usize) -> Vec<Bar> {
    let path = data_file(file);
    let id = infer_instrument(&path).expect("instrument from file name");
    BarReader::open(&path, id)
        .expect("open data file")
        .take(n)
        .map(|r| r.expect("bundled rows are valid"))
        .collect()
}

/// A CSV of `n` hourly bars around 100 with one jump to 200 at `jump`.
pub fn jumpy_csv(path: &std::path::Path, n: usize, jump: usize) -> Result<()> {
    let mut text = String::from("ts,open,high,low,close,volume\n");
    for i in 0..n {
        let wiggle = [0.0, 0.001, -0.0005, 0.0015, -0.001][i % 5];
        let close = if i >= jump { 200.0 } else { 100.0 } * (1.0 + wiggle);
        let ts = 1_600_000_000 + i as i64 * 3_600;
        text.push_str(&format!(
            "{ts},{close},{},{},{close},5\n",
            close * 1.002,
            close * 0.998
        ));
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// The local Apache Kafka tool (`scripts/kafka`).
pub fn kafka_script() -> PathBuf {
    repo_root().join("scripts/kafka")
}

/// Runs one of the repository's tool scripts (`scripts/kafka`,
/// `scripts/questdb`); a failure carries what it printed.
pub(crate) fn run_tool(c: &mut Command, what: &str) -> Result<()> {
    let out = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs `c` to its end like [`Command::output`], but kills it after
/// `limit`: a process that hangs fails its test with its output so far
/// instead of holding CI until CI's own limit.
pub fn output_within(c: &mut Command, limit: Duration) -> Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = c
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let said = std::fs::read_to_string(&err).unwrap_or_default();
            let from = said.char_indices().rev().nth(4_000).map_or(0, |(i, _)| i);
            let tail = &said[from..];
            bail!("{c:?} still running after {limit:?}; killed. stderr (tail):\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Ok(std::process::Output {
        status,
        stdout: std::fs::read(&out)?,
        stderr: std::fs::read(&err)?,
    })
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An Apache Kafka node (KRaft, broker + controller) of the test's own, in
/// its own JVM process with its own data directory: for tests that stop,
/// kill or reconfigure the broker. Other tests share [`shared_kafka`].
#[derive(Debug)]
pub struct Kafka {
    pub port: u16,
    dir: tempfile::TempDir,
    props: Vec<String>,
    /// `--sasl` and `--scram NAME=PASSWORD` of a node with authentication.
    sasl: Vec<String>,
}

impl Kafka {
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// With extra `server.properties` lines (`log.cleaner.backoff.ms=500`).
    /// A start that fails (two cores shared with the tests: a JVM may not
    /// come up) is tried once more on a fresh port and directory.
    pub fn start_with(props: &[&str]) -> Result<Self> {
        let attempt = || -> Result<Self> {
            let k = Kafka {
                port: free_port(),
                dir: tempfile::tempdir()?,
                props: props.iter().map(|p| p.to_string()).collect(),
                sasl: Vec::new(),
            };
            k.script("start")?;
            Ok(k)
        };
        attempt().or_else(|e| {
            eprintln!("a test Kafka did not start ({e:#}); trying once more");
            attempt()
        })
    }

    /// A node whose clients authenticate with SASL/SCRAM-SHA-256 and whose
    /// topics are guarded by ACLs: `admin` (password `admin-secret`) is the
    /// super user; `users` are `NAME=PASSWORD`.
    pub fn start_sasl(users: &[&str]) -> Result<Self> {
        let mut sasl = vec!["--sasl".to_string()];
        for u in users {
            sasl.extend(["--scram".to_string(), u.to_string()]);
        }
        let k = Kafka {
            port: free_port(),
            dir: tempfile::tempdir()?,
            props: Vec::new(),
            sasl,
        };
        k.script("start")?;
        Ok(k)
    }

    /// `kafka-acls` as the super user (a SASL node): `ARGS` as that tool
    /// takes them (`--add --allow-principal User:x --operation Write …`).
    pub fn acls(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(kafka_script())
            .arg("acls")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--")
            .args(args)
            .output()
            .context("scripts/kafka acls")?;
        if !out.status.success() {
            bail!(
                "scripts/kafka acls {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("kafka.log")
    }

    fn script(&self, cmd: &str) -> Result<()> {
        let mut c = Command::new(kafka_script());
        c.arg(cmd)
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path());
        c.args(&self.sasl);
        for p in &self.props {
            c.args(["--prop", p]);
        }
        run_tool(&mut c, &format!("scripts/kafka {cmd}"))
    }

    /// SIGKILL: no clean shutdown, as in a crash.
    pub fn kill(&mut self) -> Result<()> {
        self.script("kill")
    }

    /// A clean shutdown (SIGTERM, controlled).
    pub fn stop(&mut self) -> Result<()> {
        self.script("stop")
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.script("start")
    }

    /// Settings for this node under a fresh topic prefix, the catalogue's
    /// topics created under it.
    pub async fn fresh_topics(&self, test: &str) -> Result<ClientSettings> {
        let broker = Broker::connect_or_embed(Some(&self.bootstrap()))?;
        let settings = broker.settings(&format!("{}.", unique(test)));
        create_topics(&broker, &settings, &catalogue().topics, 1).await?;
        Ok(settings)
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.script("kill");
    }
}

/// The Kafka most tests share: `$AUTOTRAIN_TEST_KAFKA` (set by
/// `scripts/test`, which starts a fresh node for the run), else a node on
/// 127.0.0.1:19092 started on first use and left running for the next run.
pub fn shared_kafka() -> String {
    static SHARED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(addr) = std::env::var("AUTOTRAIN_TEST_KAFKA")
                .ok()
                .filter(|a| !a.trim().is_empty())
            {
                return addr;
            }
            let out = Command::new(kafka_script())
                .args(["start", "--port", "19092"])
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/kafka start");
            assert!(out.status.success(), "scripts/kafka start failed");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .clone()
}

/// Replaces a topic's configs through Kafka's admin API (AlterConfigs:
/// configs not given return to the broker's defaults).
pub async fn set_topic_configs(
    bootstrap: &str,
    topic: &str,
    configs: &[(&str, &str)],
) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let change = configs.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)),
        |c, (k, v)| c.set(k, v),
    );
    for r in admin.alter_configs(&[change], &AdminOptions::new()).await? {
        r.map_err(|(_, e)| anyhow::anyhow!("alter configs of {topic}: {e}"))?;
    }
    // The broker applies the change asynchronously (KRaft metadata): wait
    // until it describes the topic with the new values.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
            .await?;
        let applied = described.into_iter().all(|r| {
            r.is_ok_and(|res| {
                configs.iter().all(|(k, v)| {
                    res.entries
                        .iter()
                        .any(|e| e.name == *k && e.value.as_deref() == Some(*v))
                })
            })
        });
        if applied {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{topic}: configs {configs:?} not applied after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which broker a test runs against.
#[derive(Debug)]
pub enum TestBroker {
    Embedded(Broker),
    Kafka(Broker),
}

impl TestBroker {
    pub fn embedded() -> Self {
        TestBroker::Embedded(Broker::embedded().expect("embedded broker"))
    }

    /// The shared Apache Kafka.
    pub fn kafka() -> Self {
        TestBroker::Kafka(Broker::connect_or_embed(Some(&shared_kafka())).expect("external"))
    }

    pub fn broker(&self) -> &Broker {
        match self {
            TestBroker::Embedded(b) | TestBroker::Kafka(b) => b,
        }
    }

    pub fn is_kafka(&self) -> bool {
        matches!(self, TestBroker::Kafka(_))
    }

    /// Settings with a fresh topic prefix, and the catalogue's topics
    /// created under it.
    pub async fn fresh_topics(&self, test: &str) -> Result<ClientSettings> {
        let settings = self.broker().settings(&format!("{}.", unique(test)));
        create_topics(self.broker(), &settings, &catalogue().topics, 1).await?;
        Ok(settings)
    }
}

/// Produces bars as an outside producer would (content-derived event ids).
pub async fn produce_bars(settings: &ClientSettings, bars: &[Bar]) -> Result<()> {
    publish_bars(settings, autotrain_topics::MARKET_BARS_RAW, bars).await
}

/// Publishes `items` to `topic` under one key (content-derived ids) and
/// waits for every acknowledgement.
pub async fn publish<T: Payload>(
    settings: &ClientSettings,
    topic: autotrain_topics::Topic<T>,
    key: &str,
    items: &[T],
) -> Result<()> {
    let producer = Producer::new(settings)?;
    let mut pending = Vec::with_capacity(items.len());
    for item in items {
        pending.push(
            producer
                .enqueue(&OutRecord::from_content(topic, key, item)?)
                .await?,
        );
    }
    for p in pending {
        p.confirm().await?;
    }
    Ok(())
}

/// Publishes bars to `topic`, keyed by instrument, content-derived ids, and
/// waits for every acknowledgement.
pub async fn publish_bars(
    settings: &ClientSettings,
    topic: autotrain_topics::Topic<Bar>,
    bars: &[Bar],
) -> Result<()> {
    let producer = Producer::new(settings)?;
    let mut pending = Vec::with_capacity(bars.len());
    for bar in bars {
        let record = OutRecord::from_content(topic, &bar.instrument(), bar)?;
        pending.push(producer.enqueue(&record).await?);
    }
    for p in pending {
        p.confirm().await?;
    }
    Ok(())
}

/// Sends raw bytes to a topic (for garbage and foreign records).
pub async fn produce_raw(
    settings: &ClientSettings,
    topic: &str,
    key: &str,
    payload: Vec<u8>,
) -> Result<()> {
    let producer = Producer::new(settings)?;
    let record = OutRecord {
        topic: topic.to_string(),
        key: key.as_bytes().to_vec(),
        event_id: EventId::for_content(topic, key.as_bytes(), &payload),
        payload,
        progress: None,
    };
    producer.send(&record).await?;
    Ok(())
}

/// Forwards raw bars to `market.bars` unchanged, remembering what it saw.
#[derive(Debug, Default)]
pub struct Forward {
    pub seen: Vec<Bar>,
}

impl Processor for Forward {
    type Input = Bar;

    fn name(&self) -> &str {
        "forward"
    }

    fn process(&mut self, input: &Incoming<Bar>, out: &mut Outputs) -> Result<(), ProcessError> {
        self.seen.push(input.value.clone());
        out.send(MARKET_BARS, &input.value.instrument(), &input.value)
    }
}

/// Collects every decoded record of a topic (a downstream consumer).
#[derive(Debug)]
pub struct Collect<T> {
    pub records: Vec<(EventId, T)>,
}

impl<T> Default for Collect<T> {
    fn default() -> Self {
        Collect {
            records: Vec::new(),
        }
    }
}

impl<T: Payload> Processor for Collect<T> {
    type Input = T;

    fn name(&self) -> &str {
        "collect"
    }

    fn process(&mut self, input: &Incoming<T>, _out: &mut Outputs) -> Result<(), ProcessError> {
        self.records.push((input.event_id, input.value.clone()));
        Ok(())
    }
}

/// A shutdown signal that fires once `done` holds for the counters, or
/// after `limit` (then the test's own assertions report what is missing).
pub async fn stop_when(
    counters: Arc<Counters>,
    limit: Duration,
    done: impl Fn(&RunStats) -> bool + Send + 'static,
) {
    let start = Instant::now();
    let mut next_report = Duration::from_secs(5);
    while !done(&counters.snapshot()) && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if start.elapsed() > next_report {
            eprintln!("[{:?}] {:?}", start.elapsed(), counters.snapshot());
            next_report += Duration::from_secs(5);
        }
    }
}

/// (event id header, key, payload) of one record read back.
pub type WireRecord = (Option<EventId>, String, Vec<u8>);

/// Every record of a topic as (event id header, key, payload bytes), read
/// from the beginning of every partition by a plain consumer (progress
/// records left out).
pub fn read_topic(
    settings: &ClientSettings,
    logical: &str,
    min: usize,
    limit: Duration,
) -> Result<Vec<WireRecord>> {
    let topic = settings.physical(logical);
    let reader: BaseConsumer<autotrain_kafka::link::QuietContext> = settings
        .reader_config()
        .set("enable.partition.eof", "true")
        .create_with_context(autotrain_kafka::link::QuietContext)?;
    let metadata = reader.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    drop(metadata);
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&topic, *p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    drop(tpl);
    let mut out = Vec::new();
    let mut eof: HashMap<i32, bool> = HashMap::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                eof.insert(m.partition(), false);
                // Progress records (event-time alignment) are not data.
                if autotrain_kafka::reader::progress_of(&m).is_some() {
                    continue;
                }
                let id = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == EVENT_ID_HEADER)
                        .and_then(|h| h.value.and_then(EventId::parse))
                });
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                out.push((id, key, m.payload().unwrap_or_default().to_vec()));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p, true);
                if out.len() >= min
                    && partitions
                        .iter()
                        .all(|p| eof.get(p).copied().unwrap_or(false))
                {
                    break;
                }
            }
            Some(Err(e)) if autotrain_kafka::link::is_transport(e.rdkafka_error_code()) => {}
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {
                if out.len() >= min
                    && partitions
                        .iter()
                        .all(|p| eof.get(p).copied().unwrap_or(false))
                {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Asserts two bars are equal field by field (bit patterns for floats).
pub fn assert_same_bar(got: &Bar, want: &Bar) {
    assert_eq!(got.exchange, want.exchange);
    assert_eq!(got.symbol, want.symbol);
    assert_eq!(got.timeframe, want.timeframe);
    assert_eq!(got.ts, want.ts);
    for (g, w, name) in [
        (got.open, want.open, "open"),
        (got.high, want.high, "high"),
        (got.low, want.low, "low"),
        (got.close, want.close, "close"),
        (got.volume, want.volume, "volume"),
    ] {
        assert_eq!(g.to_bits(), w.to_bits(), "{name} at ts {}", want.ts);
    }
    assert_eq!(got.source, want.source);
    assert_eq!(got.checksum, want.checksum);
    assert_eq!(got.revision, want.revision);
}

/// Has `group` committed every partition of `topics` up to its end?
pub fn caught_up(settings: &ClientSettings, group: &str, topics: &[&str]) -> Result<bool> {
    Ok(autotrain_kafka::reader::group_caught_up(
        settings,
        group,
        topics,
        Duration::from_secs(10),
    )?)
}

/// A shutdown signal that fires once `group` has committed all of `topics`
/// (checked every 250 ms), or after `limit`.
pub async fn stop_when_caught_up(
    settings: ClientSettings,
    group: String,
    topics: Vec<&'static str>,
    limit: Duration,
) {
    let start = Instant::now();
    while start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (s, g, t) = (settings.clone(), group.clone(), topics.clone());
        let done = tokio::task::spawn_blocking(move || caught_up(&s, &g, &t))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if done {
            return;
        }
    }
    eprintln!("stop_when_caught_up: {group} still behind after {limit:?}");
}

/// Runs a sink in its group until the group has consumed its topics (or
/// `limit` passed); the sink and its counts.
pub async fn sink_until_caught_up<S: autotrain_kafka::Sink>(
    settings: &ClientSettings,
    config: &autotrain_kafka::SinkConfig,
    topics: &[&'static str],
    sink: S,
    limit: Duration,
) -> Result<(S, autotrain_kafka::RunStats)> {
    let done = stop_when_caught_up(
        settings.clone(),
        config.group_id.clone(),
        topics.to_vec(),
        limit,
    );
    let counters = std::sync::Arc::new(autotrain_kafka::runner::Counters::default());
    Ok(autotrain_kafka::run_sink(settings, config, sink, counters, done).await?)
}
