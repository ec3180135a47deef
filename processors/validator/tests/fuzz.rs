//! Fuzz of the validator core (issue 18): bars with any numbers, any
//! timestamps and names of any length, as raw records arrive. The core never
//! panics. Every bar either ends on `market.bars` as a plausible
//! observation (positive finite prices, finite volume, a start after 1970
//! and at most a day after it was published, bounded names) or is refused
//! with a non-retriable reason (dead-lettered by the runner) or flagged.
//! Nothing is silently dropped, and state stays bounded however far apart
//! the timestamps lie.

use autotrain_kafka::{EventId, Incoming, Outputs, ProcessError, Processor};
use autotrain_schemas::{decode, Bar};
use autotrain_validator::processor::{
    ValidatorInput, MAX_LEAD_MS, MAX_NAME_BYTES, MAX_SOURCE_BYTES,
};
use autotrain_validator::ValidatorProcessor;
use proptest::prelude::*;

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 1.0f64..100.0,
        1 => any::<f64>(),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(0.0),
        1 => Just(-1.0),
    ]
}

fn ts() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => (0i64..2_000).prop_map(|i| 1_600_000_000_000 + i * 1_800_000),
        1 => any::<i64>(),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Z]{1,6}",
        1 => prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
    ]
}

prop_compose! {
    fn hostile_bar()(
        symbol in text(200),
        timeframe in prop_oneof![Just("30m".to_string()), text(20)],
        ts in ts(),
        open in number(), high in number(), low in number(), close in number(),
        volume in number(),
        source in prop_oneof![4 => Just("fuzz".to_string()), 1 => "x{4000,4200}"],
    ) -> Bar {
        Bar { exchange: "fz".into(), symbol, timeframe, ts, open, high, low, close, volume, source, checksum: None, revision: 0 }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_bars_are_published_plausible_or_refused_with_a_reason(
        bars in prop::collection::vec(hostile_bar(), 1..60),
        published in prop_oneof![Just(None), (0i64..4_000_000_000_000).prop_map(Some)],
    ) {
        let mut core = ValidatorProcessor::default();
        for (offset, bar) in bars.iter().enumerate() {
            let input = Incoming {
                topic: "market.bars.raw".into(),
                partition: 0,
                offset: offset as i64,
                key: None,
                timestamp: published,
                event_id: EventId::for_position("market.bars.raw", 0, offset as i64),
                value: ValidatorInput::Bar(bar.clone()),
            };
            let mut out = Outputs::new("validator", input.event_id);
            match core.process(&input, &mut out) {
                Ok(()) => {
                    for r in out.records() {
                        if r.topic != "market.bars" {
                            continue;
                        }
                        let b: Bar = decode(&r.payload).expect("own output decodes");
                        for p in [b.open, b.high, b.low, b.close] {
                            prop_assert!(p.is_finite() && p > 0.0, "{b:?}");
                        }
                        prop_assert!(b.volume.is_finite() && b.volume >= 0.0, "{b:?}");
                        prop_assert!(b.ts >= 0, "{b:?}");
                        if let Some(at) = published.filter(|at| *at > 0) {
                            prop_assert!(b.ts <= at.saturating_add(MAX_LEAD_MS), "{b:?}");
                        }
                        prop_assert!(b.symbol.len() <= MAX_NAME_BYTES && b.timeframe.len() <= MAX_NAME_BYTES);
                        prop_assert!(b.source.len() <= MAX_SOURCE_BYTES);
                    }
                }
                Err(ProcessError::Poison { reason, .. }) => prop_assert!(!reason.is_empty()),
                Err(e) => prop_assert!(false, "a bar is never retriable: {e}"),
            }
        }
    }
}
