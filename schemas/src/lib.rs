//! Avro payloads of every autotrain topic and the bytes they travel as.
//!
//! # Layout
//! - `../*.avsc` — the truth: one Avro schema per payload. `../history/` keeps
//!   earlier versions of any schema that evolved, so old records stay readable.
//! - [`types`] — one Rust struct per schema (serde), with [`Payload`] tying it
//!   to its `.avsc`.
//! - [`payload`] — the [`Payload`] trait and [`SchemaSet`]: parsed schemas and
//!   their CRC-64-AVRO fingerprints.
//! - [`wire`] — Avro single-object encoding: `C3 01`, the 8-byte little-endian
//!   fingerprint of the writer schema, then the Avro binary datum. Any Avro
//!   library can read it with nothing but the `.avsc` files.
//! - [`error`] — [`WireError`]: every way bytes can fail to decode; all are
//!   poison (route to the dead-letter topic), none retriable.
//!
//! Where this sits: below `topics` (which names which payload each topic
//! carries) and `kafka` (which moves the bytes).

pub mod error;
pub mod payload;
pub mod types;
pub mod wire;

pub use error::{WireError, WireErrorKind};
pub use payload::{registry, Payload, SchemaSet};
pub use types::*;
pub use wire::{decode, decode_any_json, encode, fingerprint_of, HEADER_LEN, MAGIC};
