//! Training-window statistics on differential dataflow equal a
//! from-scratch recomputation after every round (the differential-dataflow
//! reference-test pattern): random rows of several instruments arriving
//! out of order, repeated, corrected and retracted, on 1 and 2 workers;
//! the live form agrees with the batch one.

use autotrain_features::window::{self, Moments, RowUpdate, WindowChange, WindowSpec};
use proptest::prelude::*;

/// (round, instrument, feature, (n, mean bits, m2 bits)).
type Exact = (i64, u32, u16, Option<(u64, u64, u64)>);

fn bits(changes: &[WindowChange]) -> Vec<Exact> {
    changes
        .iter()
        .map(|c| {
            (
                c.round,
                c.instrument,
                c.feature,
                c.moments.map(|m| (m.n, m.mean.to_bits(), m.m2.to_bits())),
            )
        })
        .collect()
}

prop_compose! {
    /// Up to 300 arrivals: 3 instruments, 40 bar slots over 16 buckets of
    /// 25 ms, two features (sometimes absent), a fifth of them retractions.
    /// Later arrivals for a slot already seen are corrections; slots arrive
    /// in any order, so many rows are late.
    fn arrivals()(raw in prop::collection::vec(
        (0u32..3, 0i64..40, any::<bool>(), -50i32..50, -3i32..3, 0u8..10), 1..300))
        -> Vec<RowUpdate> {
        raw.into_iter().map(|(instrument, slot, absent, a, b, kind)| RowUpdate {
            instrument,
            ts: slot * 10,
            values: (kind >= 2).then(|| vec![
                (!absent).then_some(f64::from(a) * 0.37),
                Some(f64::from(b) * 1.5e-3),
            ]),
        }).collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn incremental_window_equals_recomputation(updates in arrivals(), buckets in 1i64..5) {
        let spec = WindowSpec { bucket_ms: 25, buckets };
        let expected = bits(&window::reference(&updates, spec));
        for workers in [1, 2] {
            let got = window::run(&updates, spec, workers).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&bits(&got), &expected, "workers {}", workers);
        }
    }
}

#[test]
fn a_correction_and_a_retraction_move_only_their_window() {
    let spec = WindowSpec {
        bucket_ms: 10,
        buckets: 2,
    };
    let row = |ts: i64, x: f64| RowUpdate {
        instrument: 0,
        ts,
        values: Some(vec![Some(x)]),
    };
    let updates = vec![
        row(0, 1.0),
        row(5, 3.0),
        row(10, 5.0),
        // Round 1: bar 5 corrected; bucket 0 is still in the window.
        row(5, 7.0),
        row(20, 9.0),
        // Round 2: bucket 0 has left; a correction of it changes nothing.
        row(0, 100.0),
        RowUpdate {
            instrument: 0,
            ts: 10,
            values: None,
        },
    ];
    let got = window::run(&updates, spec, 1).expect("runs");
    let counts: Vec<(i64, Option<u64>)> = got
        .iter()
        .map(|c| (c.round, c.moments.map(|m| m.n)))
        .collect();
    // Round 0: bars 0 and 5. Round 1: bar 5 corrected, bar 10 joins.
    // Round 2: bucket 0 left (its late correction ignored), bar 10
    // retracted, bar 20 joins.
    assert_eq!(counts, vec![(0, Some(2)), (1, Some(3)), (2, Some(1))]);
    let mean = |i: usize| got[i].moments.map_or(f64::NAN, |m| m.mean);
    assert!((mean(0) - 2.0).abs() < 1e-12);
    assert!((mean(1) - 13.0 / 3.0).abs() < 1e-12, "{}", mean(1));
    assert!((mean(2) - 9.0).abs() < 1e-12);
    assert_eq!(bits(&got), bits(&window::reference(&updates, spec)));
}

#[test]
fn moments_agree_with_two_pass_statistics() {
    let xs: Vec<f64> = (0..1_000)
        .map(|i| ((i * 7919) % 1_000) as f64 * 0.013 - 4.0)
        .collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    let mut whole = Moments::default();
    xs.iter().for_each(|x| whole.push(*x));
    let mut merged = Moments::default();
    for chunk in xs.chunks(37) {
        let mut m = Moments::default();
        chunk.iter().for_each(|x| m.push(*x));
        merged.merge(&m);
    }
    for m in [whole, merged] {
        assert_eq!(m.n, 1_000);
        assert!((m.mean - mean).abs() < 1e-12, "{} vs {mean}", m.mean);
        assert!((m.std() - var.sqrt()).abs() < 1e-12);
    }
    assert!(Moments::default().std().is_nan());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Rows pushed into the live dataflow one at a time leave the same
    /// statistics as the batch run's last report per (instrument, feature).
    #[test]
    fn the_live_window_ends_where_the_batch_run_does(updates in arrivals()) {
        let spec = WindowSpec { bucket_ms: 25, buckets: 3 };
        let names = vec!["a".to_string(), "b".to_string()];
        let live = window::LiveWindow::start(spec, names.clone());
        for u in &updates {
            live.push(&format!("x:{}", u.instrument), u.ts, u.values.clone());
        }
        prop_assert!(live.sync(std::time::Duration::from_secs(30)));
        let changes = window::run(&updates, spec, 1).map_err(TestCaseError::fail)?;
        for instrument in 0..3u32 {
            let mut expected: Vec<(String, (u64, u64, u64))> = Vec::new();
            for (f, name) in names.iter().enumerate() {
                let last = changes
                    .iter()
                    .rfind(|c| c.instrument == instrument && usize::from(c.feature) == f);
                if let Some(m) = last.and_then(|c| c.moments) {
                    expected.push((name.clone(), (m.n, m.mean.to_bits(), m.m2.to_bits())));
                }
            }
            let now = live.get(&format!("x:{instrument}")).map_err(TestCaseError::fail)?;
            let got: Vec<(String, (u64, u64, u64))> = now
                .map(|w| {
                    w.features
                        .into_iter()
                        .map(|(n, m)| (n, (m.n, m.mean.to_bits(), m.m2.to_bits())))
                        .collect()
                })
                .unwrap_or_default();
            prop_assert_eq!(got, expected, "instrument {}", instrument);
        }
    }
}
