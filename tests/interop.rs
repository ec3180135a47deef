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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fastavro_client_reads_and_writes_autotrain_records() -> Result<()> {
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("interop").await?;
    let bootstrap = tb.broker().bootstrap().to_string();
    let schemas = repo_root().join("schemas");
    let schemas = schemas.to_str().context("utf-8 path")?;

    // Python writes three bars to market.bars.raw.
    let raw = settings.physical("market.bars.raw");
    let written = python(&["produce", &bootstrap, &raw, schemas])?;
    assert_eq!(written.len(), 3);

    // autotrain decodes them (through the runner) and forwards them.
    let config = RunnerConfig::new(unique("interop"), &["market.bars.raw"]);
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(60), |s| {
        s.received >= 3
    });
    let (fwd, stats) = run(&settings, &config, Forward::default(), counters, stop).await?;
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert_eq!(fwd.seen.len(), 3);
    for (bar, json) in fwd.seen.iter().zip(&written) {
        let want: Bar = serde_json::from_value(json.clone())?;
        assert_same_bar(bar, &want);
    }

    // Python reads what autotrain wrote to market.bars.
    let read = python(&[
        "consume",
        &bootstrap,
        &settings.physical("market.bars"),
        schemas,
        "3",
    ])?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_kafka_clients_and_avro_read_and_write_autotrain_records() -> Result<()> {
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("java").await?;
    let bootstrap = tb.broker().bootstrap().to_string();
    let schemas = repo_root().join("schemas");
    let schemas = schemas.to_str().context("utf-8 path")?;

    // Java writes three bars to market.bars.raw with BinaryMessageEncoder.
    let written = java(&[
        "produce",
        &bootstrap,
        &settings.physical("market.bars.raw"),
        schemas,
    ])?;
    assert_eq!(written.len(), 3);

    // autotrain decodes them and forwards them to market.bars, exactly once.
    let mut config = RunnerConfig::new(unique("java"), &["market.bars.raw"]);
    config.exactly_once = Some(autotrain_kafka::ExactlyOnce::new(unique("java-txn")));
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

    // Java reads (read_committed) what autotrain wrote, with BinaryMessageDecoder.
    let read = java(&[
        "consume",
        &bootstrap,
        &settings.physical("market.bars"),
        schemas,
        "3",
    ])?;
    assert_eq!(read.len(), 3);
    for (json, want) in read.iter().zip(&fwd.seen) {
        let mut json = json.clone();
        let event_id = json
            .as_object_mut()
            .and_then(|o| o.remove("_event_id"))
            .context("event id")?;
        assert_eq!(event_id.as_str().map(str::len), Some(32));
        let got: Bar = serde_json::from_value(json)?;
        assert_same_bar(&got, want);
    }
    Ok(())
}
