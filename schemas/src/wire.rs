//! Avro single-object encoding: `C3 01`, the writer schema's CRC-64-AVRO
//! fingerprint (8 bytes, little-endian), then the Avro binary datum.
//!
//! Decoding never panics: every failure is a [`WireError`]. Records written
//! with an earlier schema version (in `schemas/history/`) are resolved to the
//! current one by Avro's schema-resolution rules.

use apache_avro::types::Value;
use apache_avro::{from_avro_datum, from_value, write_avro_datum_ref};

use crate::error::WireError;
use crate::payload::{registry, Payload};

/// The two marker bytes that open every single-object record.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
/// Marker plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// Encodes a payload with its current schema.
pub fn encode<T: Payload>(value: &T) -> Result<Vec<u8>, WireError> {
    let set = T::schemas();
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&set.fingerprint.to_le_bytes());
    write_avro_datum_ref(&set.current, value, &mut out).map_err(|e| WireError::Encode {
        schema: T::NAME,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Reads the header and returns the writer fingerprint and the datum.
pub fn fingerprint_of(bytes: &[u8]) -> Result<(u64, &[u8]), WireError> {
    if bytes.len() < 2 || bytes[..2] != MAGIC {
        if bytes.len() < 2 && MAGIC.starts_with(bytes) {
            return Err(WireError::Truncated(format!(
                "{} byte(s), shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        return Err(WireError::BadMagic {
            found: bytes.iter().take(2).copied().collect(),
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(WireError::Truncated(format!(
            "{} byte(s), shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok((u64::from_le_bytes(fp), &bytes[HEADER_LEN..]))
}

/// Decodes a record of type `T`, resolving earlier schema versions.
pub fn decode<T: Payload>(bytes: &[u8]) -> Result<T, WireError> {
    let (fp, datum) = fingerprint_of(bytes)?;
    let set = T::schemas();
    let Some(writer) = set.writer(fp) else {
        return Err(match registry().iter().find(|s| s.writer(fp).is_some()) {
            Some(other) => WireError::WrongType {
                expected: T::NAME,
                found: other.name,
            },
            None => WireError::UnknownSchema { fingerprint: fp },
        });
    };
    let reader = (fp != set.fingerprint).then_some(&set.current);
    let value = read_datum(T::NAME, writer, reader, datum)?;
    from_value::<T>(&value).map_err(|e| WireError::Malformed {
        schema: T::NAME,
        reason: e.to_string(),
    })
}

/// Decodes a record of any known payload type to JSON (for `autotrain tail`).
/// Returns the payload name with the value.
pub fn decode_any_json(bytes: &[u8]) -> Result<(&'static str, serde_json::Value), WireError> {
    let (fp, datum) = fingerprint_of(bytes)?;
    let set = registry()
        .iter()
        .find(|s| s.writer(fp).is_some())
        .ok_or(WireError::UnknownSchema { fingerprint: fp })?;
    let writer = set
        .writer(fp)
        .ok_or(WireError::UnknownSchema { fingerprint: fp })?;
    let reader = (fp != set.fingerprint).then_some(&set.current);
    let value = read_datum(set.name, writer, reader, datum)?;
    Ok((set.name, to_json(value)))
}

fn read_datum(
    name: &'static str,
    writer: &apache_avro::Schema,
    reader: Option<&apache_avro::Schema>,
    datum: &[u8],
) -> Result<Value, WireError> {
    let mut cursor = datum;
    let value = from_avro_datum(writer, &mut cursor, reader).map_err(|e| classify(name, e))?;
    if !cursor.is_empty() {
        return Err(WireError::Malformed {
            schema: name,
            reason: format!("{} trailing byte(s) after the record", cursor.len()),
        });
    }
    Ok(value)
}

/// Separates "the bytes stop early" from other decoding failures.
fn classify(name: &'static str, err: apache_avro::Error) -> WireError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return WireError::Truncated(format!("{name} record ends early: {err}"));
            }
        }
        source = e.source();
    }
    WireError::Malformed {
        schema: name,
        reason: err.to_string(),
    }
}

fn to_json(value: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(b),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => J::from(i),
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => J::from(i),
        Value::Float(f) => J::from(f64::from(f)),
        Value::Double(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        Value::Bytes(b) | Value::Fixed(_, b) => J::String(hex_string(&b)),
        Value::String(s) | Value::Enum(_, s) => J::String(s),
        Value::Union(_, v) => to_json(*v),
        Value::Array(items) => J::Array(items.into_iter().map(to_json).collect()),
        Value::Map(m) => J::Object(m.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Value::Record(fields) => {
            J::Object(fields.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        other => J::String(format!("{other:?}")),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
