use serde::{Deserialize, Serialize};

use crate::payload::payload;

/// How far a source stream has been published
/// (`schemas/source_watermark.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceWatermark {
    pub stream: String,
    pub next_ts: i64,
    pub bars: i64,
    pub chunks: i64,
    pub last_chunk_sha256: Option<String>,
    pub source: String,
}

payload!(SourceWatermark, "SourceWatermark", "source_watermark.avsc");
