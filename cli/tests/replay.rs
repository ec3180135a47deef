//! `autotrain replay` on a real Kafka: a finished demo's log replays with no
//! difference; a copy of that log in which one published `ParamUpdate` and
//! one `ModelVersion` were altered replays with exactly those two records
//! reported (both versions shown) and exit status 1; a range that leaves the
//! altered update out compares clean.

use std::cell::Cell;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Result};
use autotrain_integration_tests::{data_sample, shared_kafka, unique};
use autotrain_kafka::copy::{copy_topic, Verdict};
use autotrain_kafka::{ClientSettings, PROGRESS_HEADER};
use autotrain_schemas::{decode, encode, ModelVersion, ParamUpdate, RegistryEvent};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde_json::Value;

fn autotrain(kafka: &str, prefix: &str, args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_autotrain"))
        .args(["--brokers", kafka])
        .args(args)
        .env_remove("AUTOTRAIN_BROKERS")
        .env("AUTOTRAIN__TOPIC_PREFIX", prefix)
        .env("AUTOTRAIN__REPLICATION_FACTOR", "1")
        .env(
            "AUTOTRAIN__LOG__LEVEL",
            "warn,librdkafka=error,rdkafka=error",
        )
        .output()?)
}

fn replay(kafka: &str, prefix: &str, extra: &[&str]) -> Result<(bool, Value)> {
    let mut args = vec!["replay", "--demo", "--json"];
    args.extend_from_slice(extra);
    let out = autotrain(kafka, prefix, &args)?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!("no report ({e}): {}", String::from_utf8_lossy(&out.stderr))
    })?;
    Ok((out.status.success(), report))
}

fn is_progress(m: &BorrowedMessage<'_>) -> bool {
    m.headers()
        .is_some_and(|h| h.iter().any(|h| h.key == PROGRESS_HEADER))
}

/// Copies every catalogue topic of `from` to `to`, altering the first
/// registered model version (a tag added) and the first controller update
/// (a note added) on the way. Returns the altered update's bar time.
fn tampered_copy(kafka: &str, from: &str, to: &str) -> Result<i64> {
    let out = autotrain(kafka, to, &["topics", "create"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (source, target) = (
        ClientSettings::new(kafka).with_prefix(from),
        ClientSettings::new(kafka).with_prefix(to),
    );
    let altered_at = Cell::new(None);
    // The middle update, so a range can end before it and still hold some.
    let updates = autotrain_kafka::read_topic::<ParamUpdate>(
        &source,
        "param.updates",
        Duration::from_secs(60),
    )?
    .len();
    ensure!(updates >= 2, "{updates} controller update(s) published");
    let pick = updates / 2;
    let (model_done, updates_seen) = (Cell::new(false), Cell::new(0usize));
    for spec in &autotrain_topics::catalogue().topics {
        let topic = spec.name.as_str();
        let decide = |m: &BorrowedMessage<'_>| {
            let payload = m.payload().unwrap_or_default();
            if is_progress(m) {
                return Verdict::Copy;
            }
            if topic == "model.updates" && !model_done.get() {
                if let Ok(mut v) = decode::<ModelVersion>(payload) {
                    if v.event == RegistryEvent::Registered {
                        v.tags.push("edited-after-the-fact".into());
                        model_done.set(true);
                        return Verdict::Replace(encode(&v).expect("encode"));
                    }
                }
            }
            if topic == "param.updates" && updates_seen.get() < pick {
                if let Ok(mut u) = decode::<ParamUpdate>(payload) {
                    updates_seen.set(updates_seen.get() + 1);
                    if updates_seen.get() == pick {
                        u.note = Some("edited after the fact".into());
                        altered_at.set(Some(u.at));
                        return Verdict::Replace(encode(&u).expect("encode"));
                    }
                }
            }
            Verdict::Copy
        };
        copy_topic(
            &source,
            &source.physical(topic),
            &target,
            &target.physical(topic),
            &decide,
            Duration::from_secs(120),
        )?;
    }
    ensure!(model_done.get(), "no registered model version to alter");
    altered_at
        .get()
        .ok_or_else(|| anyhow::anyhow!("no controller update to alter"))
}

#[test]
fn a_demo_log_replays_identically_and_an_altered_log_shows_exactly_the_edits() -> Result<()> {
    let kafka = shared_kafka();
    let dir = tempfile::tempdir()?;
    data_sample(dir.path(), "bitfinex_BTCUSD_30m.csv", 8_000)?;
    let prefix = format!("{}.", unique("replay"));
    let data = dir.path().to_str().unwrap_or_default();
    let out = autotrain(
        &kafka,
        &prefix,
        &[
            "demo",
            "--json",
            "--api-bind",
            "127.0.0.1:0",
            "--data",
            data,
        ],
    )?;
    ensure!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout)?;

    // The demo's own log: every processor, every decision, identical.
    let (ok, report) = replay(&kafka, &prefix, &[])?;
    assert!(ok, "{report}");
    assert_eq!(report["differences"], serde_json::json!([]), "{report}");
    let processors = report["processors"].as_array().cloned().unwrap_or_default();
    assert_eq!(processors.len(), 8, "{report}");
    for p in &processors {
        for t in p["topics"].as_array().into_iter().flatten() {
            assert_eq!(t["published"], t["replayed"], "{p}");
            assert_eq!(t["published"], t["identical"], "{p}");
        }
    }
    let identical = |topic: &str| {
        processors
            .iter()
            .flat_map(|p| p["topics"].as_array().cloned().unwrap_or_default())
            .find(|t| t["topic"] == topic)
            .and_then(|t| t["identical"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(
        identical("features"),
        summary["features_published"].as_u64().unwrap_or(0)
    );
    assert!(
        identical("model.updates")
            >= summary["model_versions"].as_u64().unwrap_or(0)
                + summary["promotions"].as_u64().unwrap_or(0),
        "every registration and promotion compared: {summary}"
    );
    assert!(identical("param.updates") > 0 && identical("trade.outcomes") > 0);
    assert_eq!(
        identical("regimes"),
        summary["regimes_published"].as_u64().unwrap_or(0)
    );

    // The same log with two records edited after the fact.
    let tampered = format!("{}.", unique("replay-tampered"));
    let at = tampered_copy(&kafka, &prefix, &tampered)?;
    let (ok, report) = replay(&kafka, &tampered, &[])?;
    assert!(!ok, "an altered log must fail the replay: {report}");
    let diffs = report["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(diffs.len(), 2, "{report:#}");
    let find = |topic: &str| diffs.iter().find(|d| d["topic"] == topic).cloned();
    let model = find("model.updates").expect("the model version");
    assert_eq!(model["kind"], "different");
    assert_eq!(model["processor"], "trainer");
    assert!(model["published"]["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "edited-after-the-fact")));
    assert!(!model["replayed"]["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "edited-after-the-fact")));
    let update = find("param.updates").expect("the parameter update");
    assert_eq!(update["kind"], "different");
    assert_eq!(update["processor"], "params");
    assert_eq!(update["published"]["note"], "edited after the fact");
    assert_ne!(update["replayed"]["note"], "edited after the fact");
    assert_eq!(update["event_time"], at);

    // A range that ends before the altered update compares clean.
    let to = (at - 1).to_string();
    let (ok, report) = replay(&kafka, &tampered, &["--processors", "params", "--to", &to])?;
    assert!(ok, "{report:#}");
    assert_eq!(report["processors"].as_array().map(Vec::len), Some(1));
    assert!(report["identical"].as_u64().unwrap_or(0) > 0, "{report}");
    Ok(())
}
