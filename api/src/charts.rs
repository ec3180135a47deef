//! Per-instrument series for the dashboard's price charts: the newest
//! closes from `market.bars` and the regime posteriors from `regimes`,
//! each bounded to [`KEEP`] points (a chart shows a window, not history;
//! QuestDB and Grafana hold the rest). Folded by the views like every
//! other read model; a corrected bar replaces the close it corrects.

use std::collections::{BTreeMap, VecDeque};

use autotrain_schemas::{Bar, RegimePosterior};
use serde::Serialize;

/// Points kept per instrument and series.
pub const KEEP: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Close {
    pub ts: i64,
    pub close: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Regime {
    pub ts: i64,
    pub regime: i32,
    /// Posterior probability of that regime.
    pub p: f64,
    pub model_version: i32,
}

#[derive(Debug, Default, Clone)]
pub struct Series {
    pub timeframe: String,
    pub closes: VecDeque<Close>,
    pub regimes: VecDeque<Regime>,
}

/// Keeps `v` ordered by `ts` and at most [`KEEP`] long: a point at a time
/// already held replaces it, an older one than the window is left out.
fn insert<T: Copy>(v: &mut VecDeque<T>, x: T, ts: impl Fn(&T) -> i64) {
    let t = ts(&x);
    match v.back() {
        Some(last) if ts(last) < t => v.push_back(x),
        None => v.push_back(x),
        _ => match v.binary_search_by_key(&t, &ts) {
            Ok(i) => v[i] = x,
            Err(0) if v.len() >= KEEP => return,
            Err(i) => v.insert(i, x),
        },
    }
    while v.len() > KEEP {
        v.pop_front();
    }
}

#[derive(Debug, Default, Clone)]
pub struct Charts {
    by_instrument: BTreeMap<String, Series>,
}

impl Charts {
    pub fn on_bar(&mut self, b: &Bar) {
        let s = self
            .by_instrument
            .entry(format!("{}:{}", b.exchange, b.symbol))
            .or_default();
        s.timeframe.clone_from(&b.timeframe);
        insert(
            &mut s.closes,
            Close {
                ts: b.ts,
                close: b.close,
            },
            |c| c.ts,
        );
    }

    pub fn on_regime(&mut self, p: &RegimePosterior) {
        let s = self.by_instrument.entry(p.instrument.clone()).or_default();
        let prob = usize::try_from(p.regime)
            .ok()
            .and_then(|i| p.probabilities.get(i))
            .copied()
            .unwrap_or(f64::NAN);
        insert(
            &mut s.regimes,
            Regime {
                ts: p.ts,
                regime: p.regime,
                p: prob,
                model_version: p.model_version,
            },
            |r| r.ts,
        );
    }

    pub fn instruments(&self) -> impl Iterator<Item = (&String, &Series)> {
        self.by_instrument.iter()
    }

    pub fn get(&self, instrument: &str) -> Option<&Series> {
        self.by_instrument.get(instrument)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Against a from-scratch recomputation: the newest KEEP distinct
    /// times, each with the last close given for it, whatever the order
    /// (late points arrive within the window, as corrections do).
    #[test]
    fn keeps_the_newest_window_in_order_whatever_the_arrival_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5 {
            let mut v = VecDeque::new();
            let mut all: BTreeMap<i64, f64> = BTreeMap::new();
            for i in 0..(KEEP as i64 * 2) {
                let ts = if rng.random_bool(0.8) {
                    i * 10
                } else {
                    // A correction or a late bar, within the window.
                    (i * 10 - rng.random_range(0..(KEEP as i64 / 2) * 10)).max(0)
                };
                let close = rng.random::<f64>();
                insert(&mut v, Close { ts, close }, |c| c.ts);
                all.insert(ts, close);
            }
            let want: Vec<(i64, f64)> = all.into_iter().rev().take(KEEP).rev().collect();
            let got: Vec<(i64, f64)> = v.iter().map(|c| (c.ts, c.close)).collect();
            assert_eq!(got.len(), KEEP);
            assert_eq!(got, want);
        }
    }
}
