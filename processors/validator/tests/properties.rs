//! Order and repetition do not change what the validator publishes: bars
//! shuffled and re-sent yield the same `market.bars` content (one checksum
//! per (instrument, ts), revision 0) as the same bars in order, once each.

use std::collections::BTreeMap;

use autotrain_schemas::Bar;
use autotrain_validator::{Calendar, Validator, ValidatorConfig, Verdict};
use proptest::prelude::*;

const STEP: i64 = 60_000;

fn walk(returns: &[f64], symbol: &str) -> Vec<Bar> {
    let mut close = 100.0;
    returns
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let open = close;
            close *= 1.0 + r;
            Bar {
                exchange: "p".into(),
                symbol: symbol.into(),
                timeframe: "1m".into(),
                ts: 1_500_000_000_000 + i as i64 * STEP,
                open,
                high: open.max(close) * 1.0005,
                low: open.min(close) * 0.9995,
                close,
                volume: 1.0 + i as f64,
                source: "proptest".into(),
                checksum: None,
                revision: 0,
            }
        })
        .collect()
}

/// What ends on `market.bars`: (instrument, ts) → (checksum, revision).
fn published(bars: &[Bar]) -> BTreeMap<(String, i64), (Option<String>, i32)> {
    let mut v = Validator::new(ValidatorConfig::new(STEP, Calendar::TwentyFourSeven));
    let mut out = BTreeMap::new();
    for b in bars {
        match v.validate(b) {
            Verdict::Passed { bar, .. } | Verdict::Correction { bar, .. } => {
                out.insert((bar.instrument(), bar.ts), (bar.checksum, bar.revision));
            }
            Verdict::Withheld { flags } => panic!("withheld {flags:?}"),
            Verdict::Duplicate => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shuffled_and_repeated_input_publishes_the_same_bars(
        a in prop::collection::vec(-0.01f64..0.01, 30..300),
        b in prop::collection::vec(-0.01f64..0.01, 30..300),
        order in prop::collection::vec(any::<u32>(), 600),
        repeats in prop::collection::vec(any::<prop::sample::Index>(), 0..100),
    ) {
        let clean: Vec<Bar> = walk(&a, "AAA").into_iter().chain(walk(&b, "BBB")).collect();
        let mut messy: Vec<(u32, Bar)> = clean
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, bar)| (order[i % order.len()], bar))
            .collect();
        messy.extend(repeats.iter().enumerate().map(|(j, ix)| {
            (order[(j * 7 + 3) % order.len()], ix.get(&clean).clone())
        }));
        messy.sort_by_key(|(k, _)| *k);
        let messy: Vec<Bar> = messy.into_iter().map(|(_, b)| b).collect();

        let want = published(&clean);
        prop_assert_eq!(want.len(), clean.len());
        prop_assert!(want.values().all(|(_, rev)| *rev == 0));
        prop_assert_eq!(published(&messy), want);
    }
}
