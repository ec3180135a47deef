//! `autotrain digest`: a fingerprint of what topics hold, by content, to
//! compare two runs or two deployments over the same bars.
//!
//! Each record is decoded to JSON, wall-clock fields are left out (the
//! time an event was written; a run's manifest input ranges and read
//! counts, which end at the log end the run saw; its load and fit
//! seconds), and the `key \0 json` lines are sorted and
//! hashed: offsets, partition interleaving and progress records do not
//! count, content and event times do.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use autotrain_kafka::reader::{partitions_of, read_range};
use autotrain_kafka::ClientSettings;
use autotrain_topics::{
    FEATURES, MARKET_BARS, MARKET_FLAGS, MODEL_UPDATES, PARAM_UPDATES, REGIMES, TRADE_OUTCOMES,
    TRAINING_TRIGGERS,
};
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::context::Context;

/// The topics the pipeline decides: each a function of the input bars
/// (event-time aligned end to end, the controller ⇄ engine cycle too).
pub const OUTPUTS: &[&str] = &[
    MARKET_BARS.name(),
    MARKET_FLAGS.name(),
    FEATURES.name(),
    TRAINING_TRIGGERS.name(),
    MODEL_UPDATES.name(),
    REGIMES.name(),
    PARAM_UPDATES.name(),
    TRADE_OUTCOMES.name(),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TopicDigest {
    pub records: u64,
    /// SHA-256 of the sorted canonical lines, hex.
    pub sha256: String,
    /// `false`: the broker no longer holds the topic's first records (the
    /// embedded broker keeps only the newest of each partition), so the
    /// digest covers the records it still holds, which depends on when
    /// it dropped the others; compare only complete digests.
    pub complete: bool,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Topics to digest (default: every topic the pipeline writes).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// One JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Also write each topic's sorted canonical lines to `DIR/<topic>.lines`,
    /// so two deployments whose digests differ can be diffed record by record.
    #[arg(long, value_name = "DIR")]
    pub lines: Option<PathBuf>,
}

/// Metrics of a training that describe what it read up to the log end it
/// saw and how long it took, not what it decided (its parameters and
/// evaluation are a function of the data as of its event time).
const READ_DIAGNOSTICS: &[&str] = &[
    "load_seconds",
    "train_seconds",
    "records_read",
    "records_superseded",
    "records_other_instruments",
    "records_outside_window",
    "records_undecodable",
    "records_other_contract",
];

/// Wall-clock fields of a decoded record, left out of its digest.
fn strip(schema: &str, value: &mut serde_json::Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    match schema {
        "ModelVersion" => {
            obj.remove("at");
            if let Some(m) = obj.get_mut("manifest").and_then(|m| m.as_object_mut()) {
                m.remove("inputs");
            }
            if let Some(metrics) = obj.get_mut("metrics").and_then(|m| m.as_array_mut()) {
                metrics.retain(|m| {
                    m.get("name")
                        .and_then(|n| n.as_str())
                        .is_none_or(|n| !READ_DIAGNOSTICS.contains(&n))
                });
            }
        }
        // Which offsets a training set was read at depends on the log end
        // the trainer saw; the build id does not (it names the table).
        "FeatureBuild" => {
            obj.remove("built_at");
            obj.remove("inputs");
        }
        "TrainingStatus" | "DataClaim" | "TrainingCommand" => {
            obj.remove("at");
        }
        _ => {}
    }
}

/// One record as the digest and `replay` compare it: its key and its value
/// decoded to JSON without wall-clock fields.
#[derive(Debug, Clone)]
pub struct Canonical {
    pub key: String,
    /// The payload's schema name; `None` for a record that does not decode
    /// or a tombstone.
    pub schema: Option<&'static str>,
    pub value: serde_json::Value,
}

impl Canonical {
    /// `key \0 json`, what the digest sorts and hashes.
    pub fn line(&self) -> String {
        format!("{}\u{0}{}", self.key, self.value)
    }
}

/// Decodes one payload to its canonical JSON.
pub fn canonical(payload: Option<&[u8]>) -> (Option<&'static str>, serde_json::Value) {
    match payload.map(autotrain_schemas::decode_any_json) {
        Some(Ok((schema, mut v))) => {
            strip(schema, &mut v);
            (Some(schema), v)
        }
        Some(Err(e)) => (None, serde_json::Value::String(format!("undecodable: {e}"))),
        None => (None, serde_json::Value::String("tombstone".into())),
    }
}

/// The data records (progress records left out) of catalogue topic
/// `logical`, each partition read from the offset `starts` gives (its log
/// start otherwise) to its current end. Blocking.
pub fn canonical_records(
    settings: &ClientSettings,
    logical: &str,
    starts: &BTreeMap<i32, i64>,
) -> Result<Vec<Canonical>> {
    Ok(read_canonical(settings, logical, starts)?.0)
}

/// Partitions of one topic read at once, and topics digested at once: at
/// most 4 × 4 readers (clients) open, whatever the partition count.
const READERS_PER_TOPIC: usize = 4;
const TOPICS_AT_ONCE: usize = 4;

/// [`canonical_records`], and whether every partition's log still starts
/// at offset 0. Up to [`READERS_PER_TOPIC`] partitions are read at once,
/// one reader each: a read waits on the broker's round trips far more than
/// it computes. Records come back in partition order.
fn read_canonical(
    settings: &ClientSettings,
    logical: &str,
    starts: &BTreeMap<i32, i64>,
) -> Result<(Vec<Canonical>, bool)> {
    let timeout = Duration::from_secs(60);
    let physical = settings.physical(logical);
    let probe: BaseConsumer = settings.reader_config().create()?;
    let mut ranges = Vec::new();
    let mut complete = true;
    for partition in partitions_of(&probe, &physical, timeout)? {
        let (low, high) =
            autotrain_kafka::reader::query_watermarks(&probe, &physical, partition, timeout)?;
        complete &= low == 0;
        let low = low.max(starts.get(&partition).copied().unwrap_or(0));
        if low < high {
            ranges.push((partition, low, high));
        }
    }
    drop(probe);
    let physical = &physical;
    let parts = autotrain_trainer::par::map(
        ranges.len(),
        READERS_PER_TOPIC,
        |i| -> Result<Vec<Canonical>> {
            let (partition, low, high) = ranges[i];
            let records = read_range(
                &settings.reader_config(),
                physical,
                partition,
                low,
                high,
                timeout,
            )?;
            Ok(records
                .into_iter()
                .filter(|r| r.progress.is_none())
                .map(|r| {
                    let key =
                        String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
                    let (schema, value) = canonical(r.payload.as_deref());
                    Canonical { key, schema, value }
                })
                .collect())
        },
        &mut |_, _| {},
    )
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    Ok((parts.into_iter().flatten().collect(), complete))
}

/// The digest of one catalogue topic as it is now; with `lines`, its
/// canonical lines are written to `lines/<topic>.lines`. Blocking.
pub fn topic_digest(
    settings: &ClientSettings,
    logical: &str,
    lines_dir: Option<&Path>,
) -> Result<TopicDigest> {
    let (records, complete) = read_canonical(settings, logical, &BTreeMap::new())?;
    let mut lines: Vec<String> = records.iter().map(Canonical::line).collect();
    lines.sort_unstable();
    if let Some(dir) = lines_dir {
        std::fs::create_dir_all(dir)?;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{logical}.lines")))?);
        for l in &lines {
            writeln!(f, "{}", l.replace('\u{0}', "\t"))?;
        }
        f.flush()?;
    }
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    Ok(TopicDigest {
        records: lines.len() as u64,
        sha256: hex::encode(h.finalize()),
        complete,
    })
}

/// Digests of several topics, up to [`TOPICS_AT_ONCE`] read at once
/// (blocking).
pub fn digests(
    settings: &ClientSettings,
    topics: &[&str],
    lines_dir: Option<&Path>,
) -> Result<BTreeMap<String, TopicDigest>> {
    autotrain_trainer::par::map(
        topics.len(),
        TOPICS_AT_ONCE,
        |i| topic_digest(settings, topics[i], lines_dir).map(|d| (topics[i].to_string(), d)),
        &mut |_, _| {},
    )
    .into_iter()
    .collect()
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let topics: Vec<String> = if args.topics.is_empty() {
        OUTPUTS.iter().map(|t| t.to_string()).collect()
    } else {
        args.topics
    };
    let settings = ctx.settings.clone();
    let out = tokio::task::spawn_blocking(move || {
        digests(
            &settings,
            &topics.iter().map(String::as_str).collect::<Vec<_>>(),
            args.lines.as_deref(),
        )
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for (topic, d) in out {
            let partial = if d.complete {
                ""
            } else {
                "  (partial: the log no longer starts at offset 0)"
            };
            println!(
                "{topic:<20} {:>9} records  {}{partial}",
                d.records, d.sha256
            );
        }
    }
    Ok(())
}
