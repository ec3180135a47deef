//! `autotrain tail TOPIC`: decode any topic to JSON lines, from the
//! beginning, the end, an offset or a time.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use autotrain_connector_file::parse_ts;
use autotrain_kafka::EVENT_ID_HEADER;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalogue topic name (`market.bars`, `model.updates`, …).
    pub topic: String,
    /// Where to start: `beginning`, `end`, an offset (`42`, every
    /// partition), or a time (`2019-06-26T00:00:00Z`, by record timestamp).
    #[arg(long, default_value = "beginning")]
    pub from: String,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<usize>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short)]
    pub follow: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let topic = ctx.settings.physical(&args.topic);
    let settings = ctx.settings.clone();
    tokio::task::spawn_blocking(move || tail(&settings, &topic, &args)).await?
}

fn tail(settings: &autotrain_kafka::ClientSettings, topic: &str, args: &Args) -> Result<()> {
    let consumer: BaseConsumer<autotrain_kafka::LinkContext> = settings
        .reader_config()
        .create_with_context(settings.context())?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    drop(metadata);
    if partitions.is_empty() {
        bail!("topic {topic} does not exist (try `autotrain topics list`)");
    }
    let mut tpl = TopicPartitionList::new();
    match args.from.as_str() {
        "beginning" => partitions
            .iter()
            .try_for_each(|p| tpl.add_partition_offset(topic, *p, Offset::Beginning))?,
        "end" => partitions
            .iter()
            .try_for_each(|p| tpl.add_partition_offset(topic, *p, Offset::End))?,
        other => match other.parse::<i64>() {
            Ok(o) => partitions
                .iter()
                .try_for_each(|p| tpl.add_partition_offset(topic, *p, Offset::Offset(o)))?,
            Err(_) => {
                let ms = parse_ts(other)
                    .map_err(anyhow::Error::msg)
                    .context("--from")?;
                let mut times = TopicPartitionList::new();
                partitions
                    .iter()
                    .try_for_each(|p| times.add_partition_offset(topic, *p, Offset::Offset(ms)))?;
                let found = consumer.offsets_for_times(times, Duration::from_secs(10))?;
                tpl = found;
            }
        },
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut at_end = std::collections::HashSet::new();
    let mut printed = 0usize;
    let mut idle_since = Instant::now();
    loop {
        if args.max.is_some_and(|m| printed >= m) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                at_end.remove(&m.partition());
                let event_id = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == EVENT_ID_HEADER)
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                let progress = autotrain_kafka::reader::progress_of(&m);
                let (schema, value) = match m.payload().map(autotrain_schemas::decode_any_json) {
                    _ if progress.is_some() => (json!("progress"), json!({ "through": progress })),
                    Some(Ok((name, v))) => (json!(name), v),
                    Some(Err(e)) => (json!(null), json!({ "undecodable": e.to_string() })),
                    None => (json!(null), json!(null)),
                };
                let line = json!({
                    "topic": args.topic,
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "timestamp": m.timestamp().to_millis(),
                    "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    "event_id": event_id,
                    "schema": schema,
                    "value": value,
                });
                println!("{line}");
                printed += 1;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                if !args.follow && at_end.len() == partitions.len() {
                    break;
                }
            }
            // librdkafka reconnects by itself.
            Some(Err(e)) if autotrain_kafka::link::is_transport(e.rdkafka_error_code()) => {}
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {
                if !args.follow && idle_since.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
        }
    }
    Ok(())
}
