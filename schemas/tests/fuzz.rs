//! Fuzz of the record decoders (issue 18): hostile bytes, and valid
//! records with bytes flipped, cut or appended, never panic or abort in a
//! decoder. Each either decodes or fails with a typed [`WireError`]. A
//! record that decodes re-encodes to bytes that decode to the same value.
//! Avro length prefixes that announce gigabytes are the classic way to
//! make a decoder allocate itself to death; they are among the mutations
//! (varints written over the body).

use autotrain_schemas::{
    decode, decode_any_json, encode, Bar, Payload, TrainingCommand, ValidationFlag,
};
use proptest::prelude::*;

fn bar() -> Bar {
    Bar {
        exchange: "bitfinex".into(),
        symbol: "BTCUSD".into(),
        timeframe: "30m".into(),
        ts: 1_600_000_000_000,
        open: 10.0,
        high: 11.0,
        low: 9.0,
        close: 10.5,
        volume: 3.0,
        source: "fuzz".into(),
        checksum: Some("abc".into()),
        revision: 2,
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    Cut(prop::sample::Index),
    Append(Vec<u8>),
    /// A zig-zag varint (a huge or negative length) written over the body.
    Varint(prop::sample::Index, i64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Cut),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Edit::Append),
        (any::<prop::sample::Index>(), any::<i64>()).prop_map(|(i, v)| Edit::Varint(i, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    match e {
        Edit::Flip(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= b | 1;
        }
        Edit::Cut(i) => bytes.truncate(i.index(bytes.len() + 1)),
        Edit::Append(tail) => bytes.extend_from_slice(tail),
        Edit::Varint(i, v) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            let mut varint = Vec::new();
            loop {
                let byte = (z & 0x7f) as u8;
                z >>= 7;
                if z == 0 {
                    varint.push(byte);
                    break;
                }
                varint.push(byte | 0x80);
            }
            for (k, b) in varint.into_iter().enumerate() {
                if at + k < bytes.len() {
                    bytes[at + k] = b;
                } else {
                    bytes.push(b);
                }
            }
        }
        _ => {}
    }
}

/// Decodes `bytes` as `T`: an error is typed; a value round-trips.
fn check<T: Payload + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    match decode::<T>(bytes) {
        Ok(v) => {
            let again = encode(&v).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            let back: T = decode(&again)
                .map_err(|e| TestCaseError::fail(format!("decode of re-encoded: {e}")))?;
            // Compared as bytes: a NaN field is a value, not equal to itself.
            let twice =
                encode(&back).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            prop_assert_eq!(twice, again, "{:?}", back);
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    let _ = decode_any_json(bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_break_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check::<Bar>(&bytes)?;
        check::<ValidationFlag>(&bytes)?;
        check::<TrainingCommand>(&bytes)?;
    }

    /// Past the header check: a Bar's magic and fingerprint, then noise.
    #[test]
    fn a_valid_header_over_noise_never_breaks_a_decoder(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = encode(&bar()).expect("encode")[..autotrain_schemas::HEADER_LEN].to_vec();
        bytes.extend_from_slice(&body);
        check::<Bar>(&bytes)?;
    }

    #[test]
    fn edited_records_decode_or_fail_typed(edits in prop::collection::vec(edit(), 1..6)) {
        let mut bytes = encode(&bar()).expect("encode");
        for e in &edits {
            apply(&mut bytes, e);
        }
        check::<Bar>(&bytes)?;
        check::<ValidationFlag>(&bytes)?;
    }
}
