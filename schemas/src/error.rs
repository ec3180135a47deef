//! Decoding failures. A record that fails here can never succeed on retry, so
//! every variant is poison: processors send it to the dead-letter topic with
//! [`WireError::kind`] and the message as the reason.

use thiserror::Error;

/// The class of a decoding failure, as recorded in a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireErrorKind {
    BadMagic,
    Truncated,
    UnknownSchema,
    Malformed,
    WrongType,
}

#[derive(Debug, Error)]
pub enum WireError {
    #[error("not an Avro single-object record: first bytes {found:02x?}, expected c3 01")]
    BadMagic { found: Vec<u8> },
    #[error("truncated record: {0}")]
    Truncated(String),
    #[error("unknown writer schema fingerprint {fingerprint:016x}: not in schemas/ nor schemas/history/")]
    UnknownSchema { fingerprint: u64 },
    #[error("record is a {found}, expected a {expected}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    #[error("malformed {schema} record: {reason}")]
    Malformed {
        schema: &'static str,
        reason: String,
    },
    #[error("cannot encode {schema}: {reason}")]
    Encode {
        schema: &'static str,
        reason: String,
    },
}

impl WireError {
    pub fn kind(&self) -> WireErrorKind {
        match self {
            WireError::BadMagic { .. } => WireErrorKind::BadMagic,
            WireError::Truncated(_) => WireErrorKind::Truncated,
            WireError::UnknownSchema { .. } => WireErrorKind::UnknownSchema,
            WireError::WrongType { .. } => WireErrorKind::WrongType,
            WireError::Malformed { .. } | WireError::Encode { .. } => WireErrorKind::Malformed,
        }
    }

    /// Decoding is a pure function of the bytes: trying again cannot help.
    pub fn is_retriable(&self) -> bool {
        false
    }
}
