//! The `.avsc` files are the truth: each Rust payload type must have exactly
//! the schema's fields, in order, with compatible types; records must round
//! trip; and readers of the current schemas must read records written with
//! the previous ones.

mod samples;

use apache_avro::schema::{RecordSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;
use autotrain_schemas::*;

/// Checks that a serde-produced Avro value has exactly the fields of the
/// schema (recursively), then lets Avro validate the types.
fn shape(value: &Value, schema: &Schema, path: &str) -> Result<(), String> {
    match (value, schema) {
        (Value::Record(fields), Schema::Record(RecordSchema { fields: sf, .. })) => {
            let rust: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            let avsc: Vec<&str> = sf.iter().map(|f| f.name.as_str()).collect();
            if rust != avsc {
                return Err(format!(
                    "{path}: Rust fields {rust:?} != .avsc fields {avsc:?}"
                ));
            }
            for ((name, v), f) in fields.iter().zip(sf) {
                shape(v, &f.schema, &format!("{path}.{name}"))?;
            }
            Ok(())
        }
        (Value::Array(items), Schema::Array(a)) => items
            .iter()
            .try_for_each(|v| shape(v, &a.items, &format!("{path}[]"))),
        (Value::Union(_, inner), Schema::Union(u)) => shape_in_union(inner, u, path),
        (inner, Schema::Union(u)) => shape_in_union(inner, u, path),
        (Value::Record(_), other) => Err(format!("{path}: Rust has a record, .avsc has {other:?}")),
        _ => Ok(()),
    }
}

fn shape_in_union(value: &Value, union: &UnionSchema, path: &str) -> Result<(), String> {
    if matches!(value, Value::Null) {
        return Ok(());
    }
    let branch = union
        .variants()
        .iter()
        .find(|s| !matches!(s, Schema::Null))
        .ok_or(format!("{path}: union without a non-null branch"))?;
    shape(value, branch, path)
}

#[test]
fn every_rust_type_matches_its_avsc() {
    let samples = samples::all();
    assert_eq!(samples.len(), registry().len(), "a sample per payload type");
    for (name, values, checks) in samples {
        let set = registry()
            .iter()
            .find(|s| s.name == name)
            .expect("registered");
        for value in &values {
            shape(value, &set.current, name).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                value.validate(&set.current),
                "{name}: sample does not validate against schemas/{}",
                set.file
            );
        }
        for check in checks {
            check().unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn avsc_files_parse_to_their_canonical_form_and_fingerprints_are_unique() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("schemas dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    on_disk.sort();
    let mut registered: Vec<String> = registry().iter().map(|s| s.file.to_string()).collect();
    registered.sort();
    assert_eq!(
        on_disk, registered,
        "every .avsc file has a Rust type and vice versa"
    );

    let mut fps = std::collections::HashSet::new();
    for set in registry() {
        let text = std::fs::read_to_string(format!("{dir}{}", set.file)).expect("read avsc");
        let parsed = Schema::parse_str(&text).expect("parse");
        let canonical = payload::canonical_form(&parsed);
        assert_eq!(canonical, payload::canonical_form(&set.current));
        assert!(
            !canonical.contains("logicalType") && !canonical.contains("doc"),
            "{canonical}"
        );
        assert!(
            !canonical.contains(r#"{"type":"long"}"#),
            "[PRIMITIVES] rule: {canonical}"
        );
        let reparsed = Schema::parse_str(&canonical).expect("canonical form parses");
        assert_eq!(payload::canonical_form(&reparsed), canonical);
        assert!(
            fps.insert(set.fingerprint),
            "{} fingerprint collides",
            set.name
        );
        for (fp, _) in &set.history {
            assert!(fps.insert(*fp), "{} history fingerprint collides", set.name);
        }
    }
}

/// The evolution rule (docs/schemas.md): a new field needs a default, so the
/// current reader fills it in for records written before it existed.
#[test]
fn current_bar_schema_reads_records_written_with_v1() {
    let v1 = Schema::parse_str(include_str!("../history/bar.v1.avsc")).expect("v1 parses");
    let old = Value::Record(vec![
        ("exchange".into(), Value::String("bitfinex".into())),
        ("symbol".into(), Value::String("BTCUSD".into())),
        ("timeframe".into(), Value::String("30m".into())),
        ("ts".into(), Value::TimestampMillis(1_506_816_000_000)),
        ("open".into(), Value::Double(1.0)),
        ("high".into(), Value::Double(2.0)),
        ("low".into(), Value::Double(0.5)),
        ("close".into(), Value::Double(1.5)),
        ("volume".into(), Value::Double(10.0)),
        ("source".into(), Value::String("old-feed".into())),
    ]);
    let mut bytes = MAGIC.to_vec();
    let fp = Bar::schemas().history[0].0;
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v1, old).expect("encode v1"));
    assert_ne!(fp, Bar::schemas().fingerprint);

    let bar: Bar = decode(&bytes).expect("current reader reads v1");
    assert_eq!(bar.symbol, "BTCUSD");
    assert_eq!(bar.close, 1.5);
    assert_eq!(bar.checksum, None, "default of the added field");
    assert_eq!(bar.revision, 0, "default of the added field");
}

#[test]
fn current_regime_posterior_schema_reads_records_written_with_v1() {
    let v1 =
        Schema::parse_str(include_str!("../history/regime_posterior.v1.avsc")).expect("v1 parses");
    let old = Value::Record(vec![
        ("instrument".into(), Value::String("bitfinex:BTCUSD".into())),
        ("timeframe".into(), Value::String("30m".into())),
        ("ts".into(), Value::TimestampMillis(1_506_816_000_000)),
        (
            "model_key".into(),
            Value::String("hmm/bitfinex:BTCUSD".into()),
        ),
        ("model_version".into(), Value::Int(3)),
        (
            "probabilities".into(),
            Value::Array(vec![Value::Double(0.25), Value::Double(0.75)]),
        ),
        ("regime".into(), Value::Int(1)),
        ("loglik".into(), Value::Double(-2.5)),
    ]);
    let mut bytes = MAGIC.to_vec();
    let fp = RegimePosterior::schemas().history[0].0;
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v1, old).expect("encode v1"));
    assert_ne!(fp, RegimePosterior::schemas().fingerprint);
    let p: RegimePosterior = decode(&bytes).expect("current reader reads v1");
    assert_eq!((p.model_version, p.regime), (3, 1));
    assert!(p.features.is_empty(), "default of the added field");
}

#[test]
fn current_param_update_schema_reads_records_written_with_v1() {
    let v1 = Schema::parse_str(include_str!("../history/param_update.v1.avsc")).expect("v1 parses");
    let old = Value::Record(vec![
        ("strategy".into(), Value::String("trend_following".into())),
        ("instrument".into(), Value::String("bitfinex:BTCUSD".into())),
        ("config_id".into(), Value::String("cfg-1".into())),
        ("preset_id".into(), Value::String("safe".into())),
        ("params".into(), Value::Array(vec![])),
        ("model_key".into(), Value::Union(0, Box::new(Value::Null))),
        (
            "model_version".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("reason".into(), Value::Enum(0, "initial".into())),
        (
            "effective_for".into(),
            Value::Enum(0, "new_positions".into()),
        ),
        ("at".into(), Value::TimestampMillis(1_700_000_000_000)),
    ]);
    let mut bytes = MAGIC.to_vec();
    let fp = ParamUpdate::schemas().history[0].0;
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v1, old).expect("encode v1"));
    assert_ne!(fp, ParamUpdate::schemas().fingerprint);
    let u: ParamUpdate = decode(&bytes).expect("current reader reads v1");
    assert_eq!(u.preset_id, "safe");
    assert!(u.context.is_empty(), "default of the added field");
}

#[test]
fn current_param_update_schema_reads_records_written_with_v2() {
    let v2 = Schema::parse_str(include_str!("../history/param_update.v2.avsc")).expect("v2 parses");
    let old = Value::Record(vec![
        ("strategy".into(), Value::String("trend_following".into())),
        ("instrument".into(), Value::String("bitfinex:BTCUSD".into())),
        ("config_id".into(), Value::String("cfg-1".into())),
        ("preset_id".into(), Value::String("safe".into())),
        ("params".into(), Value::Array(vec![])),
        ("model_key".into(), Value::Union(0, Box::new(Value::Null))),
        (
            "model_version".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("reason".into(), Value::Enum(4, "manual".into())),
        (
            "effective_for".into(),
            Value::Enum(0, "new_positions".into()),
        ),
        ("context".into(), Value::Array(vec![Value::Double(1.0)])),
        ("at".into(), Value::TimestampMillis(1_700_000_000_000)),
    ]);
    let mut bytes = MAGIC.to_vec();
    let fp = ParamUpdate::schemas().history[1].0;
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v2, old).expect("encode v2"));
    assert_ne!(fp, ParamUpdate::schemas().fingerprint);
    let u: ParamUpdate = decode(&bytes).expect("current reader reads v2");
    assert_eq!((u.reason, u.context), (UpdateReason::Manual, vec![1.0]));
    assert_eq!(
        (u.actor, u.note),
        (None, None),
        "defaults of the added fields"
    );
}

/// The sample `ModelVersion` written with an older schema (`history[index]`,
/// whose manifest lacks `dropped`), as its writer framed it.
fn old_model_version(schema: &str, index: usize, dropped: &[&str]) -> Vec<u8> {
    let old_schema = Schema::parse_str(schema).expect("history parses");
    let mut value = apache_avro::to_value(samples::model_version()).expect("to value");
    let Value::Record(fields) = &mut value else {
        panic!("a record: {value:?}")
    };
    let (_, manifest) = fields
        .iter_mut()
        .find(|(n, _)| n == "manifest")
        .expect("manifest");
    let Value::Union(_, inner) = manifest else {
        panic!("a union: {manifest:?}")
    };
    let Value::Record(m) = inner.as_mut() else {
        panic!("a record: {inner:?}")
    };
    let before = m.len();
    m.retain(|(n, _)| !dropped.contains(&n.as_str()));
    assert_eq!(m.len(), before - dropped.len());
    let old = value.resolve(&old_schema).expect("an old record");
    let fp = ModelVersion::schemas().history[index].0;
    assert_ne!(fp, ModelVersion::schemas().fingerprint);
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&old_schema, old).expect("encode"));
    bytes
}

#[test]
fn current_model_version_schema_reads_records_written_with_v2() {
    let bytes = old_model_version(
        include_str!("../history/model_version.v2.avsc"),
        1,
        &[
            "dataset_version",
            "code_commit",
            "feature_contract_hash",
            "feature_build",
        ],
    );
    let v: ModelVersion = decode(&bytes).expect("current reader reads v2");
    let m = v.manifest.expect("manifest");
    assert_eq!((m.seed, m.dataset_version, m.code_commit), (7, None, None));
}

#[test]
fn current_model_version_schema_reads_records_written_with_v3() {
    let bytes = old_model_version(
        include_str!("../history/model_version.v3.avsc"),
        2,
        &["feature_contract_hash", "feature_build"],
    );
    let v: ModelVersion = decode(&bytes).expect("current reader reads v3");
    let m = v.manifest.expect("manifest");
    assert_eq!(
        (
            m.seed,
            m.code_commit.as_deref(),
            m.feature_contract_hash,
            m.feature_build
        ),
        (7, Some("0123abc"), None, None)
    );
}

#[test]
fn current_training_command_schema_reads_records_written_with_v1() {
    let v1 =
        Schema::parse_str(include_str!("../history/training_command.v1.avsc")).expect("v1 parses");
    let old = Value::Record(vec![
        ("command_id".into(), Value::String("cmd-1".into())),
        ("action".into(), Value::Enum(3, "rollback".into())),
        ("training_id".into(), Value::Union(0, Box::new(Value::Null))),
        (
            "model_key".into(),
            Value::Union(1, Box::new(Value::String("hmm/x".into()))),
        ),
        ("version".into(), Value::Union(1, Box::new(Value::Int(1)))),
        ("tenant".into(), Value::Union(0, Box::new(Value::Null))),
        ("actor".into(), Value::String("ops".into())),
        ("reason".into(), Value::String("why".into())),
        ("at".into(), Value::TimestampMillis(1_700_000_000_000)),
    ]);
    let fp = TrainingCommand::schemas().history[0].0;
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v1, old).expect("encode v1"));
    assert_ne!(fp, TrainingCommand::schemas().fingerprint);
    let c: TrainingCommand = decode(&bytes).expect("current reader reads v1");
    assert_eq!((c.action, c.version), (CommandAction::Rollback, Some(1)));
    assert!(!c.force, "default of the added field");
}

#[test]
fn decoding_failures_are_typed() {
    let good = encode(&samples::bar()).expect("encode");
    assert!(matches!(
        decode::<Bar>(b"garbage!").unwrap_err(),
        WireError::BadMagic { .. }
    ));
    assert!(matches!(
        decode::<Bar>(&good[..5]).unwrap_err(),
        WireError::Truncated(_)
    ));
    let cut = decode::<Bar>(&good[..good.len() - 3]).unwrap_err();
    assert_eq!(cut.kind(), WireErrorKind::Truncated, "{cut}");
    let mut unknown = good.clone();
    unknown[2] ^= 0xFF;
    assert!(matches!(
        decode::<Bar>(&unknown).unwrap_err(),
        WireError::UnknownSchema { .. }
    ));
    let wrong = decode::<TradeOutcome>(&good).unwrap_err();
    assert!(
        matches!(
            wrong,
            WireError::WrongType {
                expected: "TradeOutcome",
                found: "Bar"
            }
        ),
        "{wrong}"
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        decode::<Bar>(&trailing).unwrap_err().kind(),
        WireErrorKind::Malformed
    );
}

#[test]
fn fingerprint_is_crc64_avro_of_the_canonical_form() {
    // Test vector from the Avro specification's test data (Java's
    // SchemaNormalization): fingerprint64 of `"int"` is 0x7275d51a3f395c8f.
    let int = Schema::parse_str("\"int\"").expect("int");
    assert_eq!(
        autotrain_schemas::payload::fingerprint(&int),
        0x7275_d51a_3f39_5c8f
    );
}

#[test]
fn tail_decodes_any_payload_to_json() {
    let bytes = encode(&samples::bar()).expect("encode");
    let (name, json) = decode_any_json(&bytes).expect("decode");
    assert_eq!(name, "Bar");
    assert_eq!(json["symbol"], "BTCUSD");
    assert_eq!(json["ts"], 1_506_816_000_000_i64);
    assert_eq!(json["checksum"], "ab".repeat(32));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Bar>(&bytes);
            let _ = decode_any_json(&bytes);
        }

        #[test]
        fn arbitrary_datum_after_a_valid_header_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&Bar::schemas().fingerprint.to_le_bytes());
            bytes.extend(tail);
            let _ = decode::<Bar>(&bytes);
        }

        #[test]
        fn bars_round_trip(ts in any::<i64>(), o in any::<f64>(), v in any::<f64>(), sym in "[A-Z]{1,8}", rev in any::<i32>()) {
            let bar = Bar { ts, open: o, volume: v, symbol: sym, revision: rev, ..samples::bar() };
            let back: Bar = decode(&encode(&bar).expect("encode")).expect("decode");
            // NaN != NaN: compare bit patterns.
            prop_assert_eq!(back.open.to_bits(), bar.open.to_bits());
            prop_assert_eq!(back.volume.to_bits(), bar.volume.to_bits());
            prop_assert_eq!(back.ts, bar.ts);
            prop_assert_eq!(back.symbol, bar.symbol);
            prop_assert_eq!(back.revision, bar.revision);
        }
    }
}

#[test]
fn current_trade_outcome_schema_reads_records_written_with_v1() {
    let v1 =
        Schema::parse_str(include_str!("../history/trade_outcome.v1.avsc")).expect("v1 parses");
    let old = Value::Record(vec![
        ("trade_id".into(), Value::String("t-1".into())),
        ("strategy".into(), Value::String("trend_following".into())),
        ("instrument".into(), Value::String("bitfinex:BTCUSD".into())),
        ("config_id".into(), Value::String("cfg-1".into())),
        ("preset_id".into(), Value::String("safe".into())),
        ("reward".into(), Value::Double(0.25)),
        ("context".into(), Value::Array(vec![Value::Double(1.0)])),
        ("ts".into(), Value::TimestampMillis(1_700_000_000_000)),
    ]);
    let mut bytes = MAGIC.to_vec();
    let fp = TradeOutcome::schemas().history[0].0;
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v1, old).expect("encode v1"));
    assert_ne!(fp, TradeOutcome::schemas().fingerprint);
    let o: TradeOutcome = decode(&bytes).expect("current reader reads v1");
    assert_eq!(o.reward, 0.25);
    assert_eq!(
        (o.baseline_reward, o.flat),
        (None, false),
        "defaults of the added fields"
    );
}
