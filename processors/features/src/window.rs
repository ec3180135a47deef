//! Training-window statistics on **differential dataflow**: per instrument
//! and feature, the count, mean and standard deviation of the values in
//! the instrument's last `buckets` event-time buckets (e.g. the last 30
//! days), kept current while feature rows arrive late, get corrected, or
//! are retracted.
//!
//! Two collections, both maintained by differential:
//! 1. **the valid rows** — an upsert arrangement keyed by (instrument,
//!    bar): a newer row of a bar replaces the one before it (differential
//!    derives the retraction), `None` removes the bar. When an
//!    instrument's newest bucket moves on, the bars that left its window
//!    are upserted to `None`.
//! 2. **the aggregates** — a reduce per (instrument, feature, bucket)
//!    (Welford over the bucket's values in bar order), then a reduce per
//!    (instrument, feature) merging the window's buckets in bucket order
//!    (Chan et al.). A change re-reads one bucket and the window's bucket
//!    summaries, never the history.
//!
//! Each instrument's window ends at its own newest bucket (its *round*),
//! so a lagging feed is not mistaken for late data; a row whose bucket has
//! left its instrument's window changes nothing. Differential's time is
//! an epoch of arrivals (one upsert per bar and epoch, the last action
//! winning). The statistics after each round equal a
//! from-scratch recomputation ([`reference()`]) bit for bit
//! (`tests/window.rs`). [`run`] computes a whole feed (offline,
//! benchmark); [`LiveWindow`] keeps a dataflow running on its own thread
//! and answers "the window now" (the API's `/api/features/…/window`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::{InputHandle, ProbeHandle};

/// The window: `buckets` buckets of `bucket_ms` each, ending at the
/// instrument's newest bucket.
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
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
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

    fn to_bits(self) -> Bits {
        (self.n, self.mean.to_bits(), self.m2.to_bits())
    }

    fn from_bits((n, mean, m2): Bits) -> Self {
        Moments {
            n,
            mean: f64::from_bits(mean),
            m2: f64::from_bits(m2),
        }
    }
}

/// The statistics of one (instrument, feature) at the end of one of the
/// instrument's rounds in which they changed; `None` once no value is
/// left in its window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowChange {
    pub instrument: u32,
    pub round: i64,
    pub feature: u16,
    pub moments: Option<Moments>,
}

type Bits = (u64, u64, u64);
type Key = (u32, i64);
type Vals = Vec<Option<u64>>;
type Upsert = (Key, Option<Vals>, u64);
type Output = Arc<Mutex<Vec<((u32, u16), Bits, u64, isize)>>>;

/// Builds the dataflow on `worker`; statistics updates go to `sink`.
fn build(
    worker: &mut timely::worker::Worker,
    spec: WindowSpec,
    sink: Output,
) -> (
    InputHandle<u64, CapacityContainerBuilder<Vec<Upsert>>>,
    ProbeHandle<u64>,
) {
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Upsert>>>::new();
    let probe = ProbeHandle::new();
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
        .reduce(|_key, buckets: &[(&(i64, Bits), isize)], out| {
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
    (input, probe)
}

/// Per instrument: its round (newest bucket) and, for the instruments
/// this worker owns, the bars in its window; the upserts of the current
/// epoch, one per bar (the last action wins).
#[derive(Debug, Default)]
struct Clocks {
    rounds: FxHashMap<u32, i64>,
    live: FxHashMap<u32, BTreeSet<i64>>,
    pending: BTreeMap<Key, Option<Vals>>,
}

impl Clocks {
    /// Whether `u` moves its instrument's round on (before it is applied).
    fn advances(&self, spec: WindowSpec, u: &RowUpdate) -> bool {
        self.rounds
            .get(&u.instrument)
            .is_some_and(|r| spec.bucket(u.ts) > *r)
    }

    /// Applies an arrival: moves its instrument's round (the bars that
    /// left the window are upserted away) and, if `owned`, upserts the
    /// row unless it is outside its window.
    fn arrive(&mut self, spec: WindowSpec, u: &RowUpdate, owned: bool) {
        let bucket = spec.bucket(u.ts);
        let round = self.rounds.entry(u.instrument).or_insert(bucket);
        let advanced = bucket > *round;
        *round = (*round).max(bucket);
        let round = *round;
        if !owned {
            return;
        }
        let live = self.live.entry(u.instrument).or_default();
        if advanced {
            // Bars of buckets <= round - buckets leave the window.
            let first_kept = (round - spec.buckets + 1).saturating_mul(spec.bucket_ms);
            let kept = live.split_off(&first_kept);
            for ts in std::mem::replace(live, kept) {
                self.pending.insert((u.instrument, ts), None);
            }
        }
        if bucket + spec.buckets > round {
            let values: Option<Vals> = u.values.as_ref().map(|v| {
                v.iter()
                    .map(|x| x.filter(|x| x.is_finite()).map(f64::to_bits))
                    .collect()
            });
            if values.is_some() {
                live.insert(u.ts);
            } else {
                live.remove(&u.ts);
            }
            self.pending.insert((u.instrument, u.ts), values);
        }
    }

    /// The epoch's upserts, at `time`.
    fn flush(&mut self, time: u64) -> impl Iterator<Item = Upsert> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(move |(k, v)| (k, v, time))
    }
}

/// Accumulated statistics per (instrument, feature).
#[derive(Debug, Default)]
struct Accumulated {
    state: FxHashMap<(u32, u16), FxHashMap<Bits, isize>>,
}

impl Accumulated {
    fn apply(&mut self, key: (u32, u16), m: Bits, diff: isize) {
        let s = self.state.entry(key).or_default();
        *s.entry(m).or_default() += diff;
        s.retain(|_, n| *n != 0);
        if s.is_empty() {
            self.state.remove(&key);
        }
    }

    fn get(&self, key: &(u32, u16)) -> Result<Option<Moments>, String> {
        match self.state.get(key) {
            None => Ok(None),
            Some(s) if s.len() == 1 => Ok(s.keys().next().copied().map(Moments::from_bits)),
            Some(s) => Err(format!("{key:?} has {} statistics at once", s.len())),
        }
    }
}

/// Epochs between two waits for the dataflow to catch up.
const EPOCHS_IN_FLIGHT: u64 = 64;

/// Runs `updates` (in arrival order) through the window dataflow on
/// `workers` timely workers (instruments spread over them) and returns
/// every change, ordered by (instrument, round, feature).
///
/// Differential's time is the *epoch*: it moves on whenever an arrival
/// moves its instrument's round on, so the statistics at the end of each
/// round are those at the end of an epoch.
pub fn run(
    updates: &[RowUpdate],
    spec: WindowSpec,
    workers: usize,
) -> Result<Vec<WindowChange>, String> {
    let feed: Arc<Vec<RowUpdate>> = Arc::new(updates.to_vec());
    let changes: Output = Arc::default();
    let out = changes.clone();
    timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let (mut input, probe) = build(worker, spec, out.clone());
        let (me, peers) = (worker.index() as u32, worker.peers() as u32);
        let mut clocks = Clocks::default();
        let mut epoch = 0u64;
        for u in feed.iter() {
            if clocks.advances(spec, u) {
                for x in clocks.flush(epoch) {
                    input.send(x);
                }
                epoch += 1;
                input.advance_to(epoch);
                if epoch.is_multiple_of(EPOCHS_IN_FLIGHT) {
                    while probe.less_than(input.time()) {
                        worker.step();
                    }
                }
            }
            clocks.arrive(spec, u, u.instrument % peers == me);
        }
        for x in clocks.flush(epoch) {
            input.send(x);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    })?;
    let mut raw = std::mem::take(&mut *changes.lock().map_err(|e| e.to_string())?);
    raw.sort_unstable_by_key(|(k, _, t, _)| (*t, *k));
    // Replay the epochs beside the updates: an instrument's statistics are
    // reported at the end of the epoch before its round moves on, and at
    // the end.
    let mut acc = Accumulated::default();
    let mut rounds: BTreeMap<u32, i64> = BTreeMap::new();
    let mut touched: BTreeMap<u32, BTreeSet<u16>> = BTreeMap::new();
    let mut reported: FxHashMap<(u32, u16), Bits> = FxHashMap::default();
    let mut out = Vec::new();
    let mut report = |instrument: u32,
                      round: i64,
                      acc: &Accumulated,
                      touched: &mut BTreeMap<u32, BTreeSet<u16>>|
     -> Result<(), String> {
        for f in touched.remove(&instrument).unwrap_or_default() {
            let now = acc.get(&(instrument, f))?;
            let was = reported.get(&(instrument, f)).copied();
            if now.map(Moments::to_bits) != was {
                match now {
                    Some(m) => reported.insert((instrument, f), m.to_bits()),
                    None => reported.remove(&(instrument, f)),
                };
                out.push(WindowChange {
                    instrument,
                    round,
                    feature: f,
                    moments: now,
                });
            }
        }
        Ok(())
    };
    let mut next = raw.iter().peekable();
    let mut apply =
        |through: u64, acc: &mut Accumulated, touched: &mut BTreeMap<u32, BTreeSet<u16>>| {
            while let Some((key, m, _, diff)) = next.next_if(|(_, _, t, _)| *t <= through) {
                acc.apply(*key, *m, *diff);
                touched.entry(key.0).or_default().insert(key.1);
            }
        };
    let mut epoch = 0u64;
    for u in updates {
        let bucket = spec.bucket(u.ts);
        match rounds.get(&u.instrument).copied() {
            Some(r) if bucket > r => {
                apply(epoch, &mut acc, &mut touched);
                report(u.instrument, r, &acc, &mut touched)?;
                rounds.insert(u.instrument, bucket);
                epoch += 1;
            }
            Some(_) => {}
            None => {
                rounds.insert(u.instrument, bucket);
            }
        }
    }
    apply(u64::MAX, &mut acc, &mut touched);
    for (instrument, round) in rounds {
        report(instrument, round, &acc, &mut touched)?;
    }
    out.sort_by_key(|c| (c.instrument, c.round, c.feature));
    Ok(out)
}

/// The same statistics from scratch: replays the arrivals and, when an
/// instrument's round moves on (and at the end), recomputes its windows
/// from the rows valid then.
pub fn reference(updates: &[RowUpdate], spec: WindowSpec) -> Vec<WindowChange> {
    let mut valid: BTreeMap<(u32, i64), Vec<Option<f64>>> = BTreeMap::new();
    let mut rounds: BTreeMap<u32, i64> = BTreeMap::new();
    let mut last: BTreeMap<(u32, u16), Moments> = BTreeMap::new();
    let mut out = Vec::new();
    let mut snapshot = |instrument: u32,
                        round: i64,
                        valid: &BTreeMap<(u32, i64), Vec<Option<f64>>>,
                        out: &mut Vec<WindowChange>| {
        // feature → bucket → moments, in bar order.
        let mut buckets: BTreeMap<u16, BTreeMap<i64, Moments>> = BTreeMap::new();
        for ((_, ts), values) in valid.range((instrument, i64::MIN)..=(instrument, i64::MAX)) {
            let b = spec.bucket(*ts);
            if b + spec.buckets <= round || b > round {
                continue;
            }
            for (f, v) in values.iter().enumerate() {
                if let Some(x) = v.filter(|x| x.is_finite()) {
                    buckets
                        .entry(f as u16)
                        .or_default()
                        .entry(b)
                        .or_default()
                        .push(x);
                }
            }
        }
        let now: BTreeMap<u16, Moments> = buckets
            .into_iter()
            .map(|(f, bs)| {
                let mut m = Moments::default();
                bs.values().for_each(|b| m.merge(b));
                (f, m)
            })
            .collect();
        let before: Vec<u16> = last
            .range((instrument, 0)..=(instrument, u16::MAX))
            .map(|((_, f), _)| *f)
            .collect();
        let features: BTreeSet<u16> = before.into_iter().chain(now.keys().copied()).collect();
        for f in features {
            let (a, b) = (last.get(&(instrument, f)), now.get(&f));
            if a.map(|m| m.to_bits()) != b.map(|m| m.to_bits()) {
                out.push(WindowChange {
                    instrument,
                    round,
                    feature: f,
                    moments: b.copied(),
                });
                match b {
                    Some(m) => last.insert((instrument, f), *m),
                    None => last.remove(&(instrument, f)),
                };
            }
        }
    };
    for u in updates {
        let b = spec.bucket(u.ts);
        let round = match rounds.get(&u.instrument).copied() {
            Some(r) if b > r => {
                snapshot(u.instrument, r, &valid, &mut out);
                b
            }
            Some(r) => r,
            None => b,
        };
        rounds.insert(u.instrument, round);
        if b + spec.buckets <= round {
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
    for (instrument, round) in rounds {
        snapshot(instrument, round, &valid, &mut out);
    }
    out.sort_by_key(|c| (c.instrument, c.round, c.feature));
    out
}

/// An instrument's window as it stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WindowNow {
    /// Start (epoch ms) of the newest bucket the window ends with.
    pub newest_bucket_ms: i64,
    pub bucket_ms: i64,
    pub buckets: i64,
    /// Per feature in the window.
    pub features: Vec<(String, Moments)>,
}

#[derive(Debug, Default)]
struct LiveState {
    instruments: FxHashMap<String, u32>,
    rounds: FxHashMap<u32, i64>,
    acc: Accumulated,
    /// Rows handed in, and rows the dataflow has taken in.
    sent: u64,
    done: u64,
    error: Option<String>,
}

/// A window dataflow that runs on its own thread for as long as the
/// handle lives: rows go in with [`LiveWindow::push`], the statistics as
/// they stand come out of [`LiveWindow::get`]. Dropping the handle stops
/// the thread.
#[derive(Debug)]
pub struct LiveWindow {
    spec: WindowSpec,
    features: Vec<String>,
    tx: Option<Mutex<mpsc::Sender<RowUpdate>>>,
    state: Arc<(Mutex<LiveState>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveWindow {
    /// `features`: the contract's feature names, in contract order.
    pub fn start(spec: WindowSpec, features: Vec<String>) -> Self {
        let (tx, rx) = mpsc::channel::<RowUpdate>();
        // Timely wants a `Sync` closure; the receiver is only `Send`.
        let rx = Mutex::new(rx);
        let state: Arc<(Mutex<LiveState>, std::sync::Condvar)> = Arc::default();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("feature-window".into())
            .spawn(move || {
                timely::execute_directly(move |worker| {
                    let rx = rx.into_inner().unwrap_or_else(|e| e.into_inner());
                    let sink: Output = Arc::default();
                    let (mut input, probe) = build(worker, spec, sink.clone());
                    let mut clocks = Clocks::default();
                    let mut epoch = 0u64;
                    while let Ok(first) = rx.recv() {
                        // One differential time per batch taken in.
                        let mut taken = 0u64;
                        for u in std::iter::once(first).chain(rx.try_iter().take(100_000)) {
                            clocks.arrive(spec, &u, true);
                            taken += 1;
                        }
                        for x in clocks.flush(epoch) {
                            input.send(x);
                        }
                        epoch += 1;
                        input.advance_to(epoch);
                        while probe.less_than(input.time()) {
                            worker.step();
                        }
                        let updates =
                            std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
                        let (lock, grown) = &*shared;
                        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
                        for (key, m, _, diff) in updates {
                            s.acc.apply(key, m, diff);
                        }
                        s.rounds.extend(clocks.rounds.iter().map(|(i, r)| (*i, *r)));
                        s.done += taken;
                        grown.notify_all();
                    }
                });
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                if let Ok(mut s) = state.0.lock() {
                    s.error = Some(format!("cannot start the window thread: {e}"));
                }
                None
            }
        };
        LiveWindow {
            spec,
            features,
            tx: Some(Mutex::new(tx)),
            state,
            thread,
        }
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// A feature row, values in the order of the names given to
    /// [`LiveWindow::start`]; `None` retracts the bar.
    pub fn push(&self, instrument: &str, ts: i64, values: Option<Vec<Option<f64>>>) {
        let id = {
            let mut s = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
            let next = s.instruments.len() as u32;
            let id = *s.instruments.entry(instrument.to_string()).or_insert(next);
            s.sent += 1;
            id
        };
        let sent = self.tx.as_ref().is_some_and(|tx| {
            tx.lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(RowUpdate {
                    instrument: id,
                    ts,
                    values,
                })
                .is_ok()
        });
        if !sent {
            let mut s = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
            s.sent -= 1;
            s.error
                .get_or_insert_with(|| "the window dataflow stopped".into());
        }
    }

    /// A `features` record: its values matched to the names by name
    /// (features the window does not know are left out).
    pub fn push_vector(&self, v: &autotrain_schemas::FeatureVector) {
        let values = self
            .features
            .iter()
            .map(|name| {
                v.values
                    .iter()
                    .find(|f| &f.name == name)
                    .and_then(|f| f.value)
            })
            .collect();
        self.push(&v.instrument, v.ts, Some(values));
    }

    /// (rows handed in, rows taken in by the dataflow).
    pub fn progress(&self) -> (u64, u64) {
        let s = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        (s.sent, s.done)
    }

    /// Waits up to `timeout` until every row handed in is in the
    /// statistics; false if it did not get there.
    pub fn sync(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let (lock, grown) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        while s.done < s.sent && s.error.is_none() {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else {
                return false;
            };
            s = grown
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.error.is_none()
    }

    /// The instrument's window as the dataflow has it now (`None`: no row
    /// of it yet). Errs if the dataflow stopped.
    pub fn get(&self, instrument: &str) -> Result<Option<WindowNow>, String> {
        let s = self.state.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &s.error {
            return Err(e.clone());
        }
        let Some(id) = s.instruments.get(instrument).copied() else {
            return Ok(None);
        };
        let Some(round) = s.rounds.get(&id).copied() else {
            return Ok(None);
        };
        let mut features = Vec::new();
        for (f, name) in self.features.iter().enumerate() {
            if let Some(m) = s.acc.get(&(id, f as u16))? {
                features.push((name.clone(), m));
            }
        }
        Ok(Some(WindowNow {
            newest_bucket_ms: round * self.spec.bucket_ms,
            bucket_ms: self.spec.bucket_ms,
            buckets: self.spec.buckets,
            features,
        }))
    }
}

impl Drop for LiveWindow {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
