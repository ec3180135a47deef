use serde::{Deserialize, Serialize};

use crate::error::WireErrorKind;
use crate::payload::payload;

/// A record a processor could not use (`schemas/dead_letter.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub processor: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub payload: Option<Vec<u8>>,
    pub error_kind: ErrorKind,
    pub error: String,
    pub source_timestamp: Option<i64>,
}

payload!(DeadLetter, "DeadLetter", "dead_letter.avsc");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadMagic,
    Truncated,
    UnknownSchema,
    Malformed,
    WrongType,
    Invalid,
    Processing,
}

impl From<WireErrorKind> for ErrorKind {
    fn from(kind: WireErrorKind) -> Self {
        match kind {
            WireErrorKind::BadMagic => ErrorKind::BadMagic,
            WireErrorKind::Truncated => ErrorKind::Truncated,
            WireErrorKind::UnknownSchema => ErrorKind::UnknownSchema,
            WireErrorKind::Malformed => ErrorKind::Malformed,
            WireErrorKind::WrongType => ErrorKind::WrongType,
        }
    }
}
