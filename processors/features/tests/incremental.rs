//! Incremental equals batch (the differential-dataflow reference-test
//! pattern): after any sequence of bars — out of order, repeated, late
//! corrections of bars already processed — the latest published row per ts
//! equals a from-scratch computation over the final bars, bit for bit; a
//! correction re-publishes nothing before the corrected bar; the timely
//! dataflow on 1 or 3 workers publishes the same rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use autotrain_features::{batch, dataflow, Contract, Engine, Point, Row};
use autotrain_schemas::Bar;
use proptest::prelude::*;

fn contract() -> Arc<Contract> {
    Arc::new(Contract::bundled().expect("bundled contract"))
}

fn bits(values: &[Option<f64>]) -> Vec<Option<u64>> {
    values.iter().map(|v| v.map(f64::to_bits)).collect()
}

/// Final bars: per ts the highest revision (the first copy of it), sorted.
fn final_bars(events: &[Point]) -> Vec<Point> {
    let mut latest: BTreeMap<i64, Point> = BTreeMap::new();
    for p in events {
        match latest.get(&p.ts) {
            Some(q) if q.revision >= p.revision => {}
            _ => {
                latest.insert(p.ts, *p);
            }
        }
    }
    latest.into_values().collect()
}

prop_compose! {
    /// Up to 200 events over 120 time slots: prices move ±2 %, volumes
    /// random (sometimes equal, so volume std can be 0), revisions grow
    /// per ts, and some events repeat an earlier one verbatim.
    fn events()(raw in prop::collection::vec((0i64..120, -0.02f64..0.02, 0u8..4, any::<bool>()), 1..200))
        -> Vec<Point> {
        let mut out: Vec<Point> = Vec::new();
        let mut revisions: BTreeMap<i64, i32> = BTreeMap::new();
        for (slot, r, vol, repeat) in raw {
            if repeat && !out.is_empty() {
                let again = out[(slot as usize) % out.len()];
                out.push(again);
                continue;
            }
            let rev = revisions.entry(slot).and_modify(|v| *v += 1).or_insert(0);
            out.push(Point {
                ts: slot * 60_000,
                close: 100.0 * (1.0 + r) * (1.0 + slot as f64 * 0.001),
                volume: f64::from(vol) * 10.0,
                revision: *rev,
            });
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_rows_equal_a_batch_recomputation(events in events()) {
        let c = contract();
        let mut engine = Engine::new(c.clone());
        let mut latest: BTreeMap<i64, Row> = BTreeMap::new();
        let mut rows = Vec::new();
        for p in &events {
            rows.clear();
            engine.upsert(*p, &mut rows);
            // Only the event's bar and later bars are (re)published.
            prop_assert!(rows.iter().all(|r| r.ts >= p.ts), "{rows:?} for {p:?}");
            for r in rows.drain(..) {
                latest.insert(r.ts, r);
            }
        }
        let finals = final_bars(&events);
        let want = batch::compute(&c, &finals.iter().map(|p| (p.close, p.volume)).collect::<Vec<_>>());
        prop_assert_eq!(latest.len(), finals.len());
        for ((ts, row), (p, values)) in latest.iter().zip(finals.iter().zip(&want)) {
            prop_assert_eq!(*ts, p.ts);
            prop_assert_eq!(row.revision, p.revision);
            prop_assert_eq!(bits(&row.values), bits(values), "ts {}", ts);
        }
    }

    #[test]
    fn the_dataflow_publishes_what_one_engine_does(events in events(), workers in 1usize..4) {
        let c = contract();
        let bars: Vec<Bar> = events
            .iter()
            .enumerate()
            .map(|(i, p)| Bar {
                exchange: "x".into(),
                symbol: if i % 3 == 0 { "A".into() } else { "B".into() },
                timeframe: "1m".into(),
                ts: p.ts,
                open: p.close,
                high: p.close,
                low: p.close,
                close: p.close,
                volume: p.volume,
                source: "t".into(),
                checksum: None,
                revision: p.revision,
            })
            .collect();
        let m = dataflow::run(&c, &bars, workers, true).map_err(TestCaseError::fail)?;
        let mut by_instrument: BTreeMap<String, Vec<Vec<Option<u64>>>> = BTreeMap::new();
        for v in &m.rows {
            by_instrument.entry(v.instrument.clone()).or_default()
                .push(v.values.iter().map(|x| x.value.map(f64::to_bits)).collect());
        }
        for symbol in ["A", "B"] {
            let mut engine = Engine::new(c.clone());
            let mut rows = Vec::new();
            for b in bars.iter().filter(|b| b.symbol == symbol) {
                engine.upsert(Point { ts: b.ts, close: b.close, volume: b.volume, revision: b.revision }, &mut rows);
            }
            let want: Vec<Vec<Option<u64>>> = rows.iter().map(|r| bits(&r.values)).collect();
            let got = by_instrument.remove(&format!("x:{symbol}")).unwrap_or_default();
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(m.published as usize, m.rows.len());
    }
}

#[test]
fn in_order_bars_publish_one_row_each_and_repeats_none() {
    let c = contract();
    let mut engine = Engine::new(c);
    let mut rows = Vec::new();
    for i in 0..300 {
        rows.clear();
        let p = Point {
            ts: i * 60_000,
            close: 100.0 + (i % 7) as f64,
            volume: 1.0 + (i % 3) as f64,
            revision: 0,
        };
        engine.upsert(p, &mut rows);
        assert_eq!(rows.len(), 1);
        rows.clear();
        engine.upsert(p, &mut rows);
        assert!(rows.is_empty(), "a repeat publishes nothing");
    }
    // A correction of bar 250 re-publishes bar 250 and the later bars whose
    // values changed (EMAs and RSI carry it forward), nothing earlier.
    rows.clear();
    engine.upsert(
        Point {
            ts: 250 * 60_000,
            close: 150.0,
            volume: 2.0,
            revision: 1,
        },
        &mut rows,
    );
    assert_eq!(rows[0].ts, 250 * 60_000);
    assert!(rows.len() > 1 && rows.iter().all(|r| r.ts >= 250 * 60_000));
    // An older revision arriving late changes nothing.
    rows.clear();
    engine.upsert(
        Point {
            ts: 250 * 60_000,
            close: 107.0,
            volume: 2.0,
            revision: 0,
        },
        &mut rows,
    );
    assert!(rows.is_empty());
}
