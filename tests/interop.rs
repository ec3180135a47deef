//! Independent clients on Apache Kafka, given only the `.avsc` files —
//! Python (confluent-kafka + fastavro) and Java (kafka-clients + Apache
//! Avro) — write bars autotrain decodes, and read the bars autotrain wrote.
//! Proves the wire format is plain Avro single-object encoding with spec
//! fingerprints.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, RunnerConfig};
use autotrain_schemas::Bar;

fn python(args: &[&str]) -> Result<Vec<serde_json::Value>> {
    let script = repo_root().join("tests/interop/avro_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .context("python3 (install tests/interop/requirements.txt; .ci/run does)")?;
    ensure!(
        out.status.success(),
        "python client failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .map(|l| serde_json::from_str(l).context("python output line"))
        .collect()
}

/// Runs the Java client (`tests/interop/AvroInterop.java`, kafka-clients +
/// Apache Avro from Maven Central) as a single-file program.
fn java(args: &[&str]) -> Result<Vec<serde_json::Value>> {
    let classpath = Command::new(kafka_script())
        .arg("classpath")
        .output()
        .context("scripts/kafka classpath")?;
    ensure!(classpath.status.success(), "scripts/kafka classpath failed");
    let out = Command::new("java")
        .arg("-cp")
        .arg(String::from_utf8(classpath.stdout)?)
        .arg(repo_root().join("tests/interop/AvroInterop.java"))
        .args(args)
        .output()
        .context("java")?;
    ensure!(
        out.status.success(),
        "java client failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).context("java output line"))
        .collect()
}

/// An outside client writes three bars to `market.bars.raw`; autotrain
/// decodes and forwards them (exactly-once or not); the client reads back
/// what autotrain wrote to `market.bars`, event id header included.
async fn round_trip(
    name: &str,
    client: fn(&[&str]) -> Result<Vec<serde_json::Value>>,
    exactly_once: bool,
) -> Result<()> {
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics(name).await?;
    let bootstrap = tb.broker().bootstrap().to_string();
    let schemas = repo_root().join("schemas");
    let schemas = schemas.to_str().context("utf-8 path")?;

    let raw = settings.physical("market.bars.raw");
    let written = client(&["produce", &bootstrap, &raw, schemas])?;
    assert_eq!(written.len(), 3);

    let mut config = RunnerConfig::new(unique(name), &["market.bars.raw"]);
    if exactly_once {
        config.exactly_once = Some(autotrain_kafka::ExactlyOnce::new(unique(name)));
    }
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(60), |s| {
        s.acknowledged >= 3
    });
    let (fwd, stats) = run(&settings, &config, Forward::default(), counters, stop).await?;
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert_eq!(fwd.seen.len(), 3);
    for (bar, json) in fwd.seen.iter().zip(&written) {
        let want: Bar = serde_json::from_value(json.clone())?;
        assert_same_bar(bar, &want);
    }

    let bars = settings.physical("market.bars");
    let read = client(&["consume", &bootstrap, &bars, schemas, "3"])?;
    assert_eq!(read.len(), 3);
    for (json, want) in read.iter().zip(&fwd.seen) {
        let mut json = json.clone();
        let event_id = json
            .as_object_mut()
            .and_then(|o| o.remove("_event_id"))
            .context("event id")?;
        assert_eq!(
            event_id.as_str().map(str::len),
            Some(32),
            "event id header readable by other clients"
        );
        let got: Bar = serde_json::from_value(json)?;
        assert_same_bar(&got, want);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fastavro_client_reads_and_writes_autotrain_records() -> Result<()> {
    round_trip("interop", python, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kafka_clients_and_avro_read_and_write_autotrain_records() -> Result<()> {
    round_trip("java", java, true).await
}
