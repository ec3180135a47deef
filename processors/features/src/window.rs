//! Training-window statistics on **differential dataflow**: per instrument
//! and feature, the count, mean and standard deviation of the values in
//! the last `buckets` event-time buckets (e.g. the last 30 days), kept
//! current while feature rows arrive late, get corrected, or are
//! retracted.
//!
//! Two collections, both maintained by differential:
//! 1. **the valid rows** — an upsert arrangement keyed by (instrument,
//!    bar): a newer row of a bar replaces the one before it (differential
//!    derives the retraction), `None` removes the bar, and a row leaves the
//!    window by an upsert to `None` scheduled at the bucket where it
//!    expires. The driver never remembers a previous value.
//! 2. **the aggregates** — a reduce per (instrument, feature, bucket)
//!    (Welford over the bucket's values in bar order), then a reduce per
//!    (instrument, feature) that merges the window's buckets in bucket
//!    order (Chan et al.). A change re-reads one bucket and the window's
//!    bucket summaries, never the whole history.
//!
//! Time is the arrival sequence inside *rounds*: round `r` is the newest
//! bucket seen when a row arrives, so windows move with event time and a
//! late row lands in the round it arrived in. A row whose bucket has
//! already left the window changes nothing. The statistics after round `r`
//! are a function of the rows that arrived by then — the same as a
//! from-scratch computation (`reference`), bit for bit
//! (`tests/window.rs`).

use std::sync::{Arc, Mutex};

use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::{InputHandle, ProbeHandle};

/// The window: `buckets` buckets of `bucket_ms` each, ending at the
/// newest bucket seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub bucket_ms: i64,
    pub buckets: i64,
}

impl WindowSpec {
    /// The last `days` days in daily buckets.
    pub fn days(days: i64) -> Self {
        WindowSpec {
            bucket_ms: 86_400_000,
            buckets: days.max(1),
        }
    }

    pub fn bucket(&self, ts: i64) -> i64 {
        ts.div_euclid(self.bucket_ms.max(1))
    }
}

/// One arriving feature row: the newest row of a bar wins; `values: None`
/// retracts the bar. Values are in contract order.
#[derive(Debug, Clone, PartialEq)]
pub struct RowUpdate {
    pub instrument: u32,
    pub ts: i64,
    pub values: Option<Vec<Option<f64>>>,
}

/// Count, mean and sum of squared deviations of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    /// Welford's update.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Chan et al.'s merge of two disjoint sets.
    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        let (a, b) = (self.n as f64, o.n as f64);
        self.mean += d * b / n as f64;
        self.m2 += o.m2 + d * d * a * b / n as f64;
        self.n = n;
    }

    /// Sample standard deviation (ddof = 1); NaN below two values.
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            f64::NAN
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }

    fn to_bits(self) -> (u64, u64, u64) {
        (self.n, self.mean.to_bits(), self.m2.to_bits())
    }

    fn from_bits((n, mean, m2): (u64, u64, u64)) -> Self {
        Moments {
            n,
            mean: f64::from_bits(mean),
            m2: f64::from_bits(m2),
        }
    }
}

/// The statistics of one (instrument, feature) after a round in which
/// they changed; `None` once no value is left in its window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowChange {
    pub round: i64,
    pub instrument: u32,
    pub feature: u16,
    pub moments: Option<Moments>,
}

/// Bits of the arrival time per round: up to 2^24 rows arrive in a round.
const SEQ_BITS: u32 = 24;

fn round_start(round: i64) -> u64 {
    (round.max(0) as u64) << SEQ_BITS
}

type Key = (u32, i64);
type Vals = Vec<Option<u64>>;

/// Runs `updates` (in arrival order) through the window dataflow on
/// `workers` timely workers (instruments spread over them) and returns
/// every change, ordered by (round, instrument, feature). Buckets must be
/// non-negative (bar times after 1970).
pub fn run(
    updates: &[RowUpdate],
    spec: WindowSpec,
    workers: usize,
) -> Result<Vec<WindowChange>, String> {
    let feed: Arc<Vec<RowUpdate>> = Arc::new(updates.to_vec());
    let changes: Arc<Mutex<Vec<((u32, u16), (u64, u64, u64), u64, isize)>>> = Arc::default();
    let out = changes.clone();
    timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let mut input =
            InputHandle::<u64, CapacityContainerBuilder<Vec<(Key, Option<Vals>, u64)>>>::new();
        let probe = ProbeHandle::new();
        let sink = out.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = input.to_stream(scope);
            let rows = arrange_from_upsert::<
                ValBuilder<Key, Vals, u64, isize>,
                ValSpine<Key, Vals, u64, isize>,
                Key,
                Vals,
            >(stream, "valid rows")
            .as_collection(|k: &Key, v: &Vals| (*k, v.clone()));
            rows.flat_map(move |((instrument, ts), values)| {
                values.into_iter().enumerate().filter_map(move |(f, v)| {
                    v.map(|bits| ((instrument, f as u16, spec.bucket(ts)), (ts, bits)))
                })
            })
            .reduce(|_key, rows: &[(&(i64, u64), isize)], out| {
                let mut m = Moments::default();
                for ((_, bits), n) in rows {
                    for _ in 0..*n {
                        m.push(f64::from_bits(*bits));
                    }
                }
                out.push((m.to_bits(), 1isize));
            })
            .map(|((instrument, feature, bucket), m)| ((instrument, feature), (bucket, m)))
            .reduce(|_key, buckets: &[(&(i64, (u64, u64, u64)), isize)], out| {
                let mut m = Moments::default();
                for ((_, b), _) in buckets {
                    m.merge(&Moments::from_bits(*b));
                }
                out.push((m.to_bits(), 1isize));
            })
            .inspect(move |((key, m), time, diff)| {
                if let Ok(mut s) = sink.lock() {
                    s.push((*key, *m, *time, *diff));
                }
            })
            .probe_with(&probe);
        });
        // Every worker walks the same rounds (the newest bucket of any
        // instrument) and sends the rows of the instruments it owns.
        let (me, peers) = (worker.index() as u32, worker.peers() as u32);
        let mut round = i64::MIN;
        let mut seq = 0u64;
        for u in feed.iter() {
            let bucket = spec.bucket(u.ts);
            if bucket > round {
                round = bucket;
                seq = 0;
                input.advance_to(round_start(round));
                while probe.less_than(input.time()) {
                    worker.step();
                }
            }
            if bucket + spec.buckets <= round || u.instrument % peers != me {
                continue;
            }
            seq += 1;
            let key = (u.instrument, u.ts);
            let values: Option<Vals> = u.values.as_ref().map(|v| {
                v.iter()
                    .map(|x| x.filter(|x| x.is_finite()).map(f64::to_bits))
                    .collect()
            });
            input.send((key, values, round_start(round) + seq));
            // Leaves the window at the start of the round it expires in.
            input.send((key, None, round_start(bucket + spec.buckets)));
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })?;
    let mut raw = std::mem::take(&mut *changes.lock().map_err(|e| e.to_string())?);
    raw.sort_unstable_by_key(|(k, _, t, _)| (*t >> SEQ_BITS, *k));
    // Accumulate each key's updates per round; report the keys whose
    // statistics differ from before the round.
    let mut current: FxHashMap<(u32, u16), FxHashMap<(u64, u64, u64), isize>> =
        FxHashMap::default();
    let mut out = Vec::new();
    for chunk in raw.chunk_by(|a, b| (a.2 >> SEQ_BITS, a.0) == (b.2 >> SEQ_BITS, b.0)) {
        let (key, round) = (chunk[0].0, (chunk[0].2 >> SEQ_BITS) as i64);
        let state = current.entry(key).or_default();
        let before: Vec<(u64, u64, u64)> = live(state);
        for (_, m, _, d) in chunk {
            *state.entry(*m).or_default() += d;
        }
        let after = live(state);
        if after != before {
            if after.len() > 1 {
                return Err(format!("{key:?} has {} statistics at once", after.len()));
            }
            out.push(WindowChange {
                round,
                instrument: key.0,
                feature: key.1,
                moments: after.first().copied().map(Moments::from_bits),
            });
        }
    }
    Ok(out)
}

fn live(state: &mut FxHashMap<(u64, u64, u64), isize>) -> Vec<(u64, u64, u64)> {
    state.retain(|_, n| *n != 0);
    let mut v: Vec<_> = state.keys().copied().collect();
    v.sort_unstable();
    v
}

/// The same statistics from scratch: replays the arrivals and, at the end
/// of every round, recomputes each window from the rows valid then.
pub fn reference(updates: &[RowUpdate], spec: WindowSpec) -> Vec<WindowChange> {
    use std::collections::BTreeMap;
    let mut valid: BTreeMap<(u32, i64), Vec<Option<f64>>> = BTreeMap::new();
    let mut last: BTreeMap<(u32, u16), Moments> = BTreeMap::new();
    let mut out = Vec::new();
    let mut snapshot = |round: i64,
                        valid: &BTreeMap<(u32, i64), Vec<Option<f64>>>,
                        out: &mut Vec<WindowChange>| {
        // (instrument, feature) → bucket → moments, in bar order.
        let mut buckets: BTreeMap<(u32, u16), BTreeMap<i64, Moments>> = BTreeMap::new();
        for ((instrument, ts), values) in valid {
            let b = spec.bucket(*ts);
            if b + spec.buckets <= round || b > round {
                continue;
            }
            for (f, v) in values.iter().enumerate() {
                if let Some(x) = v.filter(|x| x.is_finite()) {
                    buckets
                        .entry((*instrument, f as u16))
                        .or_default()
                        .entry(b)
                        .or_default()
                        .push(x);
                }
            }
        }
        let now: BTreeMap<(u32, u16), Moments> = buckets
            .into_iter()
            .map(|(k, bs)| {
                let mut m = Moments::default();
                for b in bs.values() {
                    m.merge(b);
                }
                (k, m)
            })
            .collect();
        let keys: std::collections::BTreeSet<(u32, u16)> =
            last.keys().chain(now.keys()).copied().collect();
        for k in keys {
            let (a, b) = (last.get(&k), now.get(&k));
            if a.map(|m| m.to_bits()) != b.map(|m| m.to_bits()) {
                out.push(WindowChange {
                    round,
                    instrument: k.0,
                    feature: k.1,
                    moments: b.copied(),
                });
            }
        }
        last = now;
    };
    let mut round: Option<i64> = None;
    for u in updates {
        let b = spec.bucket(u.ts);
        match round {
            Some(r) if b <= r => {}
            Some(r) => {
                for k in r..b {
                    snapshot(k, &valid, &mut out);
                }
                round = Some(b);
            }
            None => round = Some(b),
        }
        let r = round.unwrap_or(b);
        if b + spec.buckets <= r {
            continue;
        }
        match &u.values {
            Some(v) => {
                valid.insert((u.instrument, u.ts), v.clone());
            }
            None => {
                valid.remove(&(u.instrument, u.ts));
            }
        }
    }
    if let Some(r) = round {
        for k in r..=r + spec.buckets {
            snapshot(k, &valid, &mut out);
        }
    }
    out
}
