//! Stream watermarks on the compacted `source.watermarks` topic: the
//! newest record per stream key says up to where its bars are published.

use std::collections::HashMap;
use std::time::Duration;

use autotrain_kafka::{read_topic, ClientSettings, OutRecord, Producer};
use autotrain_schemas::SourceWatermark;
use autotrain_topics::SOURCE_WATERMARKS;

use crate::error::FetchError;

/// The newest watermark of every stream (blocking read of the topic).
pub fn load_watermarks(
    settings: &ClientSettings,
) -> Result<HashMap<String, SourceWatermark>, FetchError> {
    let records =
        read_topic::<SourceWatermark>(settings, SOURCE_WATERMARKS.name(), Duration::from_secs(30))?;
    let mut latest: HashMap<String, SourceWatermark> = HashMap::new();
    for r in records {
        match r.value {
            Ok(w) => {
                latest.insert(w.stream.clone(), w);
            }
            Err(e) => {
                tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "unreadable watermark record skipped")
            }
        }
    }
    Ok(latest)
}

/// Publishes a watermark and waits for the broker's acknowledgement.
pub async fn publish_watermark(
    producer: &Producer,
    watermark: &SourceWatermark,
) -> Result<(), FetchError> {
    let record = OutRecord::from_content(SOURCE_WATERMARKS, &watermark.stream, watermark)?;
    producer.enqueue(&record).await?.confirm().await?;
    Ok(())
}
