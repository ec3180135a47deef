//! [`Validator`]: per-instrument state (last bar, checksums, rolling σ of
//! log returns) and the rules of the validator processor.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use autotrain_schemas::{Bar, FlagKind, HitlState, Severity, ValidationFlag};

use crate::calendar::Calendar;
use crate::checksum::{digest, short};

#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorConfig {
    /// Bar length in milliseconds.
    pub timeframe_ms: i64,
    pub calendar: Calendar,
    /// A hole is a gap when the missing time exceeds this (default 5 min).
    pub gap_threshold_ms: i64,
    /// |log return| above this many rolling σ is an anomaly (default 8).
    pub anomaly_sigma: f64,
    /// Returns in the rolling window (default 100) …
    pub anomaly_window: usize,
    /// … and how many it needs before judging (default 30).
    pub anomaly_min_window: usize,
    /// The first bar after a calendar close (overnight, weekend, holiday)
    /// is judged against the instrument's own session-open returns, not
    /// the bar-to-bar ones: this many in its window (default 60) …
    pub open_window: usize,
    /// … and this many before an open is judged at all (default 20).
    pub open_min_window: usize,
}

impl ValidatorConfig {
    pub fn new(timeframe_ms: i64, calendar: Calendar) -> Self {
        ValidatorConfig {
            timeframe_ms,
            calendar,
            gap_threshold_ms: 300_000,
            anomaly_sigma: 8.0,
            anomaly_window: 100,
            anomaly_min_window: 30,
            open_window: 60,
            open_min_window: 20,
        }
    }
}

/// What became of one raw bar.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Publish `bar` on `market.bars` (checksum and revision set); `flags`
    /// go to `market.flags` (a gap before it, a stale warning).
    Passed {
        bar: Bar,
        flags: Vec<ValidationFlag>,
    },
    /// Changed content for a known (instrument, ts): published with the
    /// next revision, with a `correction` flag.
    Correction {
        bar: Bar,
        flags: Vec<ValidationFlag>,
    },
    /// Identical resend: dropped and counted.
    Duplicate,
    /// Not published: invalid OHLC (error) or held for a human (anomaly).
    Withheld { flags: Vec<ValidationFlag> },
}

/// What an ops decision about a held bar did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// Approved (or overridden): publish this bar now.
    Released(Bar),
    /// Rejected: the bar stays out of `market.bars`.
    Discarded,
    /// No bar is held at that (instrument, ts): already decided, superseded
    /// by a correction, or never held.
    NotHeld,
}

#[derive(Debug, Default)]
struct State {
    last_ts: Option<i64>,
    last_close: Option<f64>,
    /// Per bar ts: 64 bits of its checksum and its revision.
    seen: Seen,
    /// Bar-to-bar log returns (per √bar) within sessions.
    returns: Window,
    /// Log returns from a session's last bar to the next session's first.
    opens: Window,
    /// Bars held for review (anomalies), by ts, checksum set.
    held: FxHashMap<i64, Bar>,
}

/// A rolling window of returns with its running sums.
#[derive(Debug, Default)]
struct Window {
    values: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
}

impl Window {
    /// Whether `r` lies beyond `sigmas` standard deviations of the window,
    /// once it holds `min` returns; `Some(σ)` when it does.
    fn beyond(&self, r: f64, sigmas: f64, min: usize) -> Option<f64> {
        let n = self.values.len();
        if n < min.max(2) || !r.is_finite() {
            return None;
        }
        let mean = self.sum / n as f64;
        let var = ((self.sum_sq - n as f64 * mean * mean) / (n as f64 - 1.0)).max(0.0);
        let sigma = var.sqrt();
        (sigma > 0.0 && r.abs() > sigmas * sigma).then_some(sigma)
    }

    fn push(&mut self, r: f64, cap: usize) {
        if !r.is_finite() {
            return;
        }
        self.values.push_back(r);
        self.sum += r;
        self.sum_sq += r * r;
        if self.values.len() > cap {
            if let Some(old) = self.values.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
    }
}

/// Checksums by bar ts. Bars sit on a grid (`base + k·step`), so they are
/// kept in a dense array indexed by `k` (16 bytes a bar, in time order,
/// cache-friendly) while the array stays at least half full; off-grid
/// timestamps and bars that would stretch it past that go to a map. Memory
/// is thus bounded by the bars seen, however far apart hostile input
/// spaces them.
#[derive(Debug, Default)]
struct Seen {
    base: Option<i64>,
    step: i64,
    /// (checksum prefix, revision); revision -1 = empty slot.
    slots: Vec<(u64, i32)>,
    /// Slots holding a bar.
    filled: usize,
    other: FxHashMap<i64, (u64, i32)>,
}

impl Seen {
    /// Empty slots the array may hold beyond as many as it has bars.
    const SLACK: usize = 4_096;

    fn slot(&self, ts: i64) -> Option<usize> {
        let base = self.base?;
        let d = ts.checked_sub(base)?;
        if d < 0 || self.step <= 0 || d % self.step != 0 {
            return None;
        }
        usize::try_from(d / self.step).ok()
    }

    fn get(&self, ts: i64) -> Option<(u64, i32)> {
        match self.slot(ts) {
            Some(k) if k < self.slots.len() => Some(self.slots[k]).filter(|s| s.1 >= 0),
            _ => self.other.get(&ts).copied(),
        }
    }

    fn insert(&mut self, ts: i64, step: i64, value: (u64, i32)) {
        if self.base.is_none() {
            self.base = Some(ts);
            self.step = step;
        }
        match self.slot(ts) {
            Some(k) if k < self.slots.len() => {
                if self.slots[k].1 < 0 {
                    self.filled += 1;
                }
                self.slots[k] = value;
            }
            Some(k) if k < 2 * (self.filled + 1) + Self::SLACK => {
                self.slots.resize(k, (0, -1));
                self.slots.push(value);
                self.filled += 1;
            }
            _ => {
                self.other.insert(ts, value);
            }
        }
    }
}

#[derive(Debug)]
pub struct Validator {
    config: ValidatorConfig,
    /// exchange → symbol → state (looked up without allocating).
    instruments: FxHashMap<String, FxHashMap<String, State>>,
}

fn state_of<'a>(
    instruments: &'a mut FxHashMap<String, FxHashMap<String, State>>,
    bar: &Bar,
) -> &'a mut State {
    if !instruments.contains_key(bar.exchange.as_str()) {
        instruments.insert(bar.exchange.clone(), FxHashMap::default());
    }
    let symbols = instruments
        .get_mut(bar.exchange.as_str())
        .unwrap_or_else(|| unreachable!("inserted above"));
    if !symbols.contains_key(bar.symbol.as_str()) {
        symbols.insert(bar.symbol.clone(), State::default());
    }
    symbols
        .get_mut(bar.symbol.as_str())
        .unwrap_or_else(|| unreachable!("inserted above"))
}

fn flag(
    bar: &Bar,
    kind: FlagKind,
    severity: Severity,
    state: HitlState,
    detail: String,
) -> ValidationFlag {
    let instrument = bar.instrument();
    ValidationFlag {
        flag_id: format!("{kind:?}:{instrument}:{}", bar.ts).to_lowercase(),
        instrument,
        timeframe: bar.timeframe.clone(),
        kind,
        severity,
        ts: bar.ts,
        gap_start: None,
        gap_end: None,
        missing_bars: None,
        detail,
        state,
        actor: None,
        decided_at: None,
    }
}

fn ohlc_problem(b: &Bar) -> Option<String> {
    let values = [b.open, b.high, b.low, b.close, b.volume];
    if values.iter().any(|v| !v.is_finite()) {
        return Some("a value is not finite".into());
    }
    if b.low > b.high {
        return Some(format!("low {} > high {}", b.low, b.high));
    }
    if b.low > b.open.min(b.close) {
        return Some(format!("low {} above min(open, close)", b.low));
    }
    if b.high < b.open.max(b.close) {
        return Some(format!("high {} below max(open, close)", b.high));
    }
    if b.volume < 0.0 {
        return Some(format!("negative volume {}", b.volume));
    }
    None
}

impl Validator {
    pub fn new(config: ValidatorConfig) -> Self {
        Validator {
            config,
            instruments: FxHashMap::default(),
        }
    }

    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    pub fn validate(&mut self, raw: &Bar) -> Verdict {
        if let Some(problem) = ohlc_problem(raw) {
            return Verdict::Withheld {
                flags: vec![flag(
                    raw,
                    FlagKind::Ohlc,
                    Severity::Error,
                    HitlState::Open,
                    problem,
                )],
            };
        }
        let cfg = &self.config;
        let state = state_of(&mut self.instruments, raw);
        let full = digest(raw);
        let sum = short(&full);
        let known = state.seen.get(raw.ts);
        if known.is_some_and(|(k, _)| k == sum) {
            return Verdict::Duplicate;
        }
        let mut bar = raw.clone();
        bar.checksum = Some(const_hex::encode(full));

        if let Some((known, revision)) = known {
            if known == sum {
                return Verdict::Duplicate;
            }
            bar.revision = revision + 1;
            state
                .seen
                .insert(raw.ts, cfg.timeframe_ms, (sum, bar.revision));
            let mut detail = format!("content changed; revision {}", bar.revision);
            if state.held.remove(&raw.ts).is_some() {
                detail.push_str("; supersedes the bar held for review");
            }
            let f = flag(
                &bar,
                FlagKind::Correction,
                Severity::Info,
                HitlState::Resolved,
                detail,
            );
            return Verdict::Correction {
                bar,
                flags: vec![f],
            };
        }

        let mut flags = Vec::new();
        // Held for review, with every other flag that applies beside it.
        let mut anomaly = None;
        let in_order = state.last_ts.is_none_or(|last| raw.ts > last);
        if in_order {
            if let (Some(prev_close), Some(last)) = (state.last_close, state.last_ts) {
                // A return over k expected bars has √k times the spread of
                // a one-bar return: judge (and remember) it per √bar, so a
                // hole or a late arrival is not mistaken for a jump.
                let expected = cfg
                    .calendar
                    .expected_between(last, raw.ts, cfg.timeframe_ms);
                let bars = 1 + expected;
                // More bar slots elapsed than the calendar expects: a close
                // lies between, and this bar opens a session.
                let opens = (raw.ts - last) / cfg.timeframe_ms.max(1) > bars;
                let (window, min, what) = if opens {
                    (&mut state.opens, cfg.open_min_window, "session-open ")
                } else {
                    (&mut state.returns, cfg.anomaly_min_window, "")
                };
                let r = (raw.close / prev_close).ln() / (bars as f64).sqrt();
                if let Some(sigma) = window.beyond(r, cfg.anomaly_sigma, min) {
                    anomaly = Some(flag(
                        raw,
                        FlagKind::Anomaly,
                        Severity::Warning,
                        HitlState::Pending,
                        format!(
                            "|log return| {:.6} > {} σ ({:.6}) of {what}returns",
                            r.abs(),
                            cfg.anomaly_sigma,
                            sigma
                        ),
                    ));
                } else {
                    // A held bar's return stays out of its window.
                    let cap = if opens {
                        cfg.open_window
                    } else {
                        cfg.anomaly_window
                    };
                    window.push(r, cap);
                }
            }
            if let Some(last) = state.last_ts {
                let missing = cfg
                    .calendar
                    .expected_between(last, raw.ts, cfg.timeframe_ms);
                if missing * cfg.timeframe_ms > cfg.gap_threshold_ms {
                    // A day or more of data missing is critical: the
                    // trainer's guardrails refuse to promote over it.
                    let severity = if missing * cfg.timeframe_ms >= 86_400_000 {
                        Severity::Critical
                    } else {
                        Severity::Error
                    };
                    let mut f = flag(
                        raw,
                        FlagKind::Gap,
                        severity,
                        HitlState::Open,
                        format!("{missing} bar(s) missing before this one"),
                    );
                    f.gap_start = cfg.calendar.next_open(last, raw.ts, cfg.timeframe_ms);
                    f.gap_end = Some(raw.ts);
                    f.missing_bars = i32::try_from(missing).ok();
                    flags.push(f);
                }
            }
            // A held bar exists (no gap) and is the new reference level, so
            // a genuine level shift is flagged once.
            state.last_ts = Some(raw.ts);
            state.last_close = Some(raw.close);
        }
        if raw.volume == 0.0 && raw.open == raw.high && raw.high == raw.low && raw.low == raw.close
        {
            flags.push(flag(
                raw,
                FlagKind::Stale,
                Severity::Warning,
                HitlState::Open,
                "zero volume, o=h=l=c".into(),
            ));
        }
        state.seen.insert(raw.ts, cfg.timeframe_ms, (sum, 0));
        match anomaly {
            Some(a) => {
                state.held.insert(raw.ts, bar);
                flags.insert(0, a);
                Verdict::Withheld { flags }
            }
            None => Verdict::Passed { bar, flags },
        }
    }

    /// Applies an ops decision to the bar held at (instrument, ts).
    pub fn decide(&mut self, instrument: &str, ts: i64, release: bool) -> Decided {
        let (exchange, symbol) = instrument.split_once(':').unwrap_or(("", instrument));
        let Some(bar) = self
            .instruments
            .get_mut(exchange)
            .and_then(|m| m.get_mut(symbol))
            .and_then(|s| s.held.remove(&ts))
        else {
            return Decided::NotHeld;
        };
        if release {
            Decided::Released(bar)
        } else {
            Decided::Discarded
        }
    }

    /// Bars awaiting a decision, by instrument then ts.
    pub fn held(&self) -> Vec<&Bar> {
        let mut held: Vec<&Bar> = self
            .instruments
            .values()
            .flat_map(|m| m.values())
            .flat_map(|s| s.held.values())
            .collect();
        held.sort_by(|a, b| (&a.exchange, &a.symbol, a.ts).cmp(&(&b.exchange, &b.symbol, b.ts)));
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 1_800_000;

    fn bar(i: i64, close: f64) -> Bar {
        Bar {
            exchange: "x".into(),
            symbol: "ABC".into(),
            timeframe: "30m".into(),
            ts: i * STEP,
            open: close,
            high: close * 1.001,
            low: close * 0.999,
            close,
            volume: 10.0,
            source: "t".into(),
            checksum: None,
            revision: 0,
        }
    }

    fn v() -> Validator {
        Validator::new(ValidatorConfig::new(STEP, Calendar::TwentyFourSeven))
    }

    #[test]
    fn seen_keeps_on_grid_off_grid_early_and_far_bars() {
        let mut seen = Seen::default();
        seen.insert(1_000, 10, (1, 0));
        seen.insert(1_020, 10, (2, 0)); // leaves an empty slot at 1_010
        seen.insert(1_005, 10, (3, 0)); // off the grid
        seen.insert(990, 10, (4, 0)); // before the first
        seen.insert(1_000 + 10 * (Seen::SLACK as i64 + 100), 10, (5, 0)); // far away
        seen.insert(1_000, 10, (6, 1)); // overwrite
        assert_eq!(seen.get(1_000), Some((6, 1)));
        assert_eq!(seen.get(1_010), None);
        assert_eq!(seen.get(1_020), Some((2, 0)));
        assert_eq!(seen.get(1_005), Some((3, 0)));
        assert_eq!(seen.get(990), Some((4, 0)));
        assert_eq!(
            seen.get(1_000 + 10 * (Seen::SLACK as i64 + 100)),
            Some((5, 0))
        );
        assert_eq!(seen.get(5_000), None);
        assert_eq!(seen.slots.len(), 3);
    }

    /// Hostile spacing (each bar 2²⁰ − 1 steps after the last) keeps the
    /// array at most twice the bars plus the slack, and every bar is found.
    #[test]
    fn far_apart_bars_do_not_grow_the_array() {
        let mut seen = Seen::default();
        let step = 1_800_000;
        let at = |i: i64| i * ((1 << 20) - 1) * step;
        for i in 0..60 {
            seen.insert(at(i), step, (i as u64, 0));
        }
        assert!(
            seen.slots.len() <= 2 * 60 + Seen::SLACK,
            "{}",
            seen.slots.len()
        );
        for i in 0..60 {
            assert_eq!(seen.get(at(i)), Some((i as u64, 0)));
        }
        // Dense data still goes to the array, whatever came before.
        let mut dense = Seen::default();
        for i in 0..100_000 {
            dense.insert(i * step, step, (1, 0));
        }
        assert_eq!(dense.slots.len(), 100_000);
        assert!(dense.other.is_empty());
    }

    #[test]
    fn invalid_ohlc_is_withheld_with_an_error_flag() {
        let mut bad = bar(0, 100.0);
        bad.low = 101.0;
        match v().validate(&bad) {
            Verdict::Withheld { flags } => {
                assert_eq!(flags[0].kind, FlagKind::Ohlc);
                assert_eq!(flags[0].severity, Severity::Error);
            }
            other => panic!("{other:?}"),
        }
        let mut nan = bar(0, 100.0);
        nan.close = f64::NAN;
        assert!(matches!(v().validate(&nan), Verdict::Withheld { .. }));
    }

    #[test]
    fn resend_is_a_duplicate_and_changed_content_a_correction() {
        let mut val = v();
        assert!(matches!(
            val.validate(&bar(0, 100.0)),
            Verdict::Passed { .. }
        ));
        assert_eq!(val.validate(&bar(0, 100.0)), Verdict::Duplicate);
        match val.validate(&bar(0, 100.5)) {
            Verdict::Correction { bar, flags } => {
                assert_eq!(bar.revision, 1);
                assert_eq!(flags[0].kind, FlagKind::Correction);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(val.validate(&bar(0, 100.5)), Verdict::Duplicate);
    }

    #[test]
    fn holes_are_gaps_with_their_size() {
        let mut val = v();
        val.validate(&bar(0, 100.0));
        match val.validate(&bar(4, 100.0)) {
            Verdict::Passed { flags, .. } => {
                assert_eq!(flags.len(), 1);
                assert_eq!(flags[0].missing_bars, Some(3));
                assert_eq!(flags[0].gap_start, Some(STEP));
                assert_eq!(flags[0].gap_end, Some(4 * STEP));
                assert_eq!(flags[0].severity, Severity::Error);
            }
            other => panic!("{other:?}"),
        }
        // A day or more missing is critical.
        let day = 86_400_000 / STEP;
        match val.validate(&bar(5 + day, 100.0)) {
            Verdict::Passed { flags, .. } => assert_eq!(flags[0].severity, Severity::Critical),
            other => panic!("{other:?}"),
        }
        // 1-minute bars: five missing minutes is within the 5-minute threshold.
        let mut minute = Validator::new(ValidatorConfig::new(60_000, Calendar::TwentyFourSeven));
        let m = |i: i64| Bar {
            ts: i * 60_000,
            timeframe: "1m".into(),
            ..bar(0, 1.0)
        };
        minute.validate(&m(0));
        assert!(
            matches!(minute.validate(&m(6)), Verdict::Passed { flags, .. } if flags.is_empty())
        );
        assert!(
            matches!(minute.validate(&m(13)), Verdict::Passed { flags, .. } if flags.len() == 1)
        );
    }

    /// Minute bars of a US equity under its calendar: every session opens
    /// with a move since the previous close several times the σ of
    /// minute returns, judged against the instrument's own session opens
    /// (none held once the window has them), while a true intraday jump is
    /// still held.
    #[test]
    fn session_opens_are_judged_against_opens_and_jumps_still_held() {
        let mut cfg = ValidatorConfig::new(60_000, Calendar::UsEquity);
        cfg.anomaly_min_window = 30;
        let mut val = Validator::new(cfg);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % 2_001) as f64 / 1_000.0 - 1.0
        };
        let start = 1_704_205_800_000; // 2024-01-02 09:30 New York
        let (mut close, mut ts, mut last) = (100.0f64, start, None::<i64>);
        let (mut opens, mut held_opens, mut jumps, mut held_jumps) = (0, 0, 0, 0);
        while ts < start + 90 * 86_400_000 {
            if !Calendar::UsEquity.is_open(ts) {
                ts += 60_000;
                continue;
            }
            let opening = last.is_some_and(|l| ts - l > 60_000);
            let minute = (ts - start) / 60_000;
            let jump = !opening && minute % 9_973 == 4_000;
            let r = if opening {
                opens += 1;
                0.01 * noise()
            } else if jump {
                jumps += 1;
                0.03
            } else {
                0.0005 * noise()
            };
            close *= r.exp();
            let b = Bar {
                exchange: "nasdaq".into(),
                symbol: "XYZ".into(),
                timeframe: "1m".into(),
                ts,
                open: close,
                high: close * 1.0001,
                low: close * 0.9999,
                close,
                volume: 100.0,
                source: "t".into(),
                checksum: None,
                revision: 0,
            };
            if let Verdict::Withheld { flags } = val.validate(&b) {
                assert_eq!(flags[0].kind, FlagKind::Anomaly);
                if opening {
                    held_opens += 1;
                } else if jump {
                    held_jumps += 1;
                } else {
                    panic!("an ordinary minute held: {flags:?}");
                }
            }
            last = Some(ts);
            ts += 60_000;
        }
        assert!(opens > 55 && jumps >= 2, "{opens} opens, {jumps} jumps");
        assert_eq!(held_opens, 0, "of {opens} session opens");
        assert_eq!(held_jumps, jumps);
    }

    /// A bar carries every flag that applies: one that jumps after a gap,
    /// flat with no volume, is held as an anomaly and also reports the gap
    /// and the staleness; a stale bar after a gap gets both flags.
    #[test]
    fn a_bar_carries_every_flag_that_applies() {
        let mut val = v();
        for i in 0..60 {
            let close = 100.0 * (1.0 + 0.001 * ((i % 7) as f64 - 3.0));
            val.validate(&bar(i, close));
        }
        let flat = |i: i64, close: f64| Bar {
            high: close,
            low: close,
            volume: 0.0,
            ..bar(i, close)
        };
        match val.validate(&flat(70, 150.0)) {
            Verdict::Withheld { flags } => {
                let kinds: Vec<FlagKind> = flags.iter().map(|f| f.kind).collect();
                assert_eq!(
                    kinds,
                    [FlagKind::Anomaly, FlagKind::Gap, FlagKind::Stale],
                    "{flags:?}"
                );
                assert_eq!(flags[1].missing_bars, Some(10), "bars 60..=69");
            }
            other => panic!("{other:?}"),
        }
        match val.validate(&flat(80, 150.0)) {
            Verdict::Passed { flags, .. } => {
                let kinds: Vec<FlagKind> = flags.iter().map(|f| f.kind).collect();
                assert_eq!(kinds, [FlagKind::Gap, FlagKind::Stale], "{flags:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_jump_beyond_eight_sigma_is_held_for_review() {
        let mut val = v();
        for i in 0..60 {
            let close = 100.0 * (1.0 + 0.001 * ((i % 7) as f64 - 3.0));
            assert!(matches!(
                val.validate(&bar(i, close)),
                Verdict::Passed { .. }
            ));
        }
        match val.validate(&bar(60, 150.0)) {
            Verdict::Withheld { flags } => {
                assert_eq!(flags[0].kind, FlagKind::Anomaly);
                assert_eq!(flags[0].state, HitlState::Pending);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(val.held().len(), 1);
        // A resend of the held bar is a duplicate, not a second review item.
        assert_eq!(val.validate(&bar(60, 150.0)), Verdict::Duplicate);
        let inst = bar(0, 1.0).instrument();
        match val.decide(&inst, 60 * STEP, true) {
            Decided::Released(b) => {
                assert_eq!(b.close, 150.0);
                assert!(b.checksum.is_some());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(val.decide(&inst, 60 * STEP, true), Decided::NotHeld);
        assert!(val.held().is_empty());
    }

    #[test]
    fn a_rejected_bar_is_discarded_and_a_correction_supersedes_a_held_one() {
        let mut val = v();
        for i in 0..40 {
            val.validate(&bar(i, 100.0 + (i % 3) as f64 * 0.05));
        }
        let inst = bar(0, 1.0).instrument();
        assert!(matches!(
            val.validate(&bar(40, 200.0)),
            Verdict::Withheld { .. }
        ));
        assert_eq!(val.decide(&inst, 40 * STEP, false), Decided::Discarded);
        assert!(matches!(
            val.validate(&bar(41, 300.0)),
            Verdict::Withheld { .. }
        ));
        match val.validate(&bar(41, 200.1)) {
            Verdict::Correction { bar, flags } => {
                assert_eq!(bar.revision, 1);
                assert!(flags[0].detail.contains("supersedes"));
            }
            other => panic!("{other:?}"),
        }
        assert!(val.held().is_empty());
    }

    #[test]
    fn flat_zero_volume_bars_pass_marked_stale() {
        let mut stale = bar(0, 5.0);
        stale.high = 5.0;
        stale.low = 5.0;
        stale.volume = 0.0;
        match v().validate(&stale) {
            Verdict::Passed { bar, flags } => {
                assert_eq!(flags[0].kind, FlagKind::Stale);
                assert!(bar.checksum.is_some());
            }
            other => panic!("{other:?}"),
        }
    }
}
