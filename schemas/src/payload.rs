//! The [`Payload`] trait: a Rust type bound to its `.avsc` file, and the
//! parsed [`SchemaSet`] (current schema, earlier versions, fingerprints).

use std::fmt::Debug;
use std::sync::OnceLock;

use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest allocation the Avro decoder may make for one record. Garbage
/// input can claim gigabyte-long strings; this turns that into an error.
const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// A payload type carried on a topic. Implemented by the types in
/// [`crate::types`] through `payload!`.
pub trait Payload:
    Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// Avro record name (without namespace), e.g. `Bar`.
    const NAME: &'static str;
    /// The `.avsc` file under `schemas/`.
    const FILE: &'static str;
    fn schemas() -> &'static SchemaSet;
}

/// One payload's schemas: the one writers use now and the earlier ones
/// readers still accept (resolved to the current one).
#[derive(Debug)]
pub struct SchemaSet {
    pub name: &'static str,
    pub file: &'static str,
    pub avsc: &'static str,
    pub current: Schema,
    pub fingerprint: u64,
    pub history: Vec<(u64, Schema)>,
}

impl SchemaSet {
    /// Parses the embedded schema texts. They are compiled into the binary and
    /// covered by tests, so a parse failure is a build defect: it panics.
    pub fn load(
        name: &'static str,
        file: &'static str,
        avsc: &'static str,
        history: &[&str],
    ) -> Self {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let parse = |text: &str| {
            Schema::parse_str(text)
                .unwrap_or_else(|e| panic!("schemas/{file} (or its history) does not parse: {e}"))
        };
        let current = parse(avsc);
        let fingerprint = fingerprint(&current);
        let history = history
            .iter()
            .map(|text| {
                let schema = parse(text);
                (fingerprint_of_schema(&schema), schema)
            })
            .collect();
        SchemaSet {
            name,
            file,
            avsc,
            current,
            fingerprint,
            history,
        }
    }

    /// The schema a fingerprint names, if it is this payload's current or an
    /// earlier version.
    pub fn writer(&self, fingerprint: u64) -> Option<&Schema> {
        if fingerprint == self.fingerprint {
            return Some(&self.current);
        }
        self.history
            .iter()
            .find(|(fp, _)| *fp == fingerprint)
            .map(|(_, s)| s)
    }
}

/// CRC-64-AVRO (Rabin) fingerprint of a schema's parsing canonical form.
pub fn fingerprint(schema: &Schema) -> u64 {
    fingerprint_of_schema(schema)
}

fn fingerprint_of_schema(schema: &Schema) -> u64 {
    crc64_avro(canonical_form(schema).as_bytes())
}

/// The schema's Parsing Canonical Form, as the Avro specification defines it.
///
/// apache-avro 0.21 writes a logical type as `{"type":"long"}`, which the
/// specification's `PRIMITIVES` rule reduces to `"long"` (as Java and
/// fastavro do). Reparsing its output reaches the specification's form, so
/// this iterates to the fixed point.
pub fn canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    loop {
        let next = match Schema::parse_str(&form) {
            Ok(s) => s.canonical_form(),
            Err(_) => return form,
        };
        if next == form {
            return form;
        }
        form = next;
    }
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: OnceLock<[u64; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        table
    });
    bytes.iter().fold(EMPTY, |fp, &b| {
        (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// Every payload's schema set, for code that decodes records of any type
/// (`autotrain tail`, the dead-letter inspector).
pub fn registry() -> &'static [&'static SchemaSet] {
    static ALL: OnceLock<Vec<&'static SchemaSet>> = OnceLock::new();
    ALL.get_or_init(|| {
        use crate::types::*;
        vec![
            Bar::schemas(),
            ValidationFlag::schemas(),
            DeadLetter::schemas(),
            FeatureVector::schemas(),
            RegimePosterior::schemas(),
            Forecast::schemas(),
            TrainingTrigger::schemas(),
            TrainingStatus::schemas(),
            ModelVersion::schemas(),
            ParamUpdate::schemas(),
            TradeOutcome::schemas(),
            SourceWatermark::schemas(),
            FeatureBuild::schemas(),
            TrainingCommand::schemas(),
            DataClaim::schemas(),
            PresetRegistration::schemas(),
        ]
    })
}

/// Binds a type to its `.avsc` file (and earlier versions under `history/`).
macro_rules! payload {
    ($ty:ty, $name:literal, $file:literal $(, $hist:literal)* $(,)?) => {
        impl $crate::payload::Payload for $ty {
            const NAME: &'static str = $name;
            const FILE: &'static str = $file;
            fn schemas() -> &'static $crate::payload::SchemaSet {
                static SET: ::std::sync::OnceLock<$crate::payload::SchemaSet> =
                    ::std::sync::OnceLock::new();
                SET.get_or_init(|| {
                    $crate::payload::SchemaSet::load(
                        $name,
                        $file,
                        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $file)),
                        &[$(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/history/", $hist))),*],
                    )
                })
            }
        }
    };
}
pub(crate) use payload;
