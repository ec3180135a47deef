//! [`EventSchedules`]: cron schedules run on *event* time — the bar times
//! seen on `features` — instead of the wall clock.
//!
//! A replay compresses two years into minutes, and a backtest or an audit
//! must fire a weekly retrain at the same bar whenever it runs: with the
//! wall clock neither is possible. Here each schedule's clock is the
//! newest bar time of its instruments (the oldest of those newest times
//! when it lists several, so every listed instrument has data up to the
//! instant; any instrument's bars when it lists none). A scheduled instant
//! is due once a bar strictly after it has been seen: then the bars up to
//! it are complete. Clocks start at the first bar, so nothing before the
//! data is caught up, and after a gap in the data the missed instants are
//! caught up once, as [`Schedules`] does for wall time. The state is a
//! function of the bars seen, so the drift processor that owns it rebuilds
//! it by replay; trigger ids are `schedule:{model_key}:{instant}` as the
//! wall-clock scheduler makes them. A trigger trains as of its instant and
//! is `revealed_at` the bar that made it due: the drift processor's
//! progress on `training.triggers` counts in revealed time (a bar at `t`
//! fires instants before `t`), and the trainer's activation delay counts
//! from there.

use autotrain_schemas::TrainingTrigger;
use rustc_hash::FxHashMap;

use crate::scheduler::{Due, Schedule, ScheduleError, Schedules};

#[derive(Debug)]
struct Clocked {
    instruments: Vec<String>,
    /// Created when the clock is first defined (it counts from there).
    schedules: Option<Schedules>,
    schedule: Schedule,
}

/// Schedules on event time, fed one bar time at a time.
#[derive(Debug)]
pub struct EventSchedules {
    clocked: Vec<Clocked>,
    newest: FxHashMap<String, i64>,
    /// Triggers emitted, and scheduled instants skipped by a catch-up.
    pub fired: u64,
    pub missed: u64,
}

impl EventSchedules {
    /// Checks every schedule (cron, time zone, no model key twice).
    pub fn new(schedules: Vec<Schedule>) -> Result<Self, ScheduleError> {
        // Validated together so duplicates and bad crons are refused now.
        Schedules::new(schedules.clone(), 0)?;
        Ok(EventSchedules {
            clocked: schedules
                .into_iter()
                .map(|s| Clocked {
                    instruments: s.instruments.clone(),
                    schedules: None,
                    schedule: s,
                })
                .collect(),
            newest: FxHashMap::default(),
            fired: 0,
            missed: 0,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.clocked.is_empty()
    }

    /// A bar of `instrument` at `ts`; returns the scheduled triggers now
    /// due, in schedule order. Bars older than the instrument's newest
    /// (late bars, corrections) do not move any clock.
    pub fn observe(&mut self, instrument: &str, ts: i64) -> Vec<TrainingTrigger> {
        match self.newest.get_mut(instrument) {
            Some(t) if *t >= ts => return Vec::new(),
            Some(t) => *t = ts,
            None => {
                self.newest.insert(instrument.to_string(), ts);
            }
        }
        let mut out = Vec::new();
        for c in &mut self.clocked {
            let clock = if c.instruments.is_empty() {
                Some(ts)
            } else if c.instruments.iter().any(|i| i == instrument) {
                c.instruments
                    .iter()
                    .map(|i| self.newest.get(i).copied())
                    .try_fold(i64::MAX, |m, t| t.map(|t| m.min(t)))
            } else {
                None
            };
            let Some(clock) = clock else { continue };
            let schedules = match &mut c.schedules {
                Some(s) => s,
                None => match Schedules::new(vec![c.schedule.clone()], clock) {
                    Ok(s) => c.schedules.insert(s),
                    Err(_) => continue,
                },
            };
            // Due once a bar strictly after the instant exists.
            for due in schedules.due(clock - 1) {
                let Due { missed, .. } = due;
                if let Some(mut t) = schedules.trigger(&due) {
                    t.revealed_at = Some(ts);
                    self.fired += 1;
                    self.missed += missed as u64;
                    out.push(t);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::TriggerReason;
    use chrono::{TimeZone, Utc};

    const HALF_HOUR: i64 = 30 * 60_000;

    fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    fn weekly(key: &str, instruments: &[&str]) -> Schedule {
        Schedule {
            model_key: key.into(),
            tenant: None,
            cron: "0 2 * * 0".into(),
            timezone: "UTC".into(),
            instruments: instruments.iter().map(|s| s.to_string()).collect(),
            hyperparams: Vec::new(),
            auto_promote: true,
        }
    }

    /// Every trigger fired over half-hourly bars of `instrument`.
    fn feed(s: &mut EventSchedules, instrument: &str, from: i64, to: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut ts = from;
        while ts <= to {
            for t in s.observe(instrument, ts) {
                out.push((t.created_at, ts));
            }
            ts += HALF_HOUR;
        }
        out
    }

    #[test]
    fn fires_on_the_first_bar_after_each_instant() {
        let mut s = EventSchedules::new(vec![weekly("hmm/a", &["x:A"])]).expect("valid");
        // Thursday 2019-06-06 .. Wednesday 2019-06-19: Sundays 9th and 16th.
        let got = feed(&mut s, "x:A", ms(2019, 6, 6, 0), ms(2019, 6, 19, 0));
        assert_eq!(
            got,
            vec![
                (ms(2019, 6, 9, 2), ms(2019, 6, 9, 2) + HALF_HOUR),
                (ms(2019, 6, 16, 2), ms(2019, 6, 16, 2) + HALF_HOUR),
            ]
        );
        assert_eq!(s.fired, 2);
        let t = s.observe("x:A", ms(2019, 6, 23, 3)).remove(0);
        assert_eq!(t.reason, TriggerReason::Schedule);
        assert_eq!(t.created_at, ms(2019, 6, 23, 2));
        assert_eq!(t.revealed_at, Some(ms(2019, 6, 23, 3)));
        assert_eq!(t.trigger_id, "schedule:hmm/a:2019-06-23T02:00Z");
        assert!(t.auto_promote);
    }

    #[test]
    fn other_instruments_late_bars_and_gaps() {
        let mut s = EventSchedules::new(vec![weekly("hmm/a", &["x:A"])]).expect("valid");
        assert!(s.observe("x:A", ms(2019, 6, 6, 0)).is_empty());
        // Another instrument's clock does not move this schedule.
        assert!(feed(&mut s, "x:B", ms(2019, 6, 6, 0), ms(2019, 6, 30, 0)).is_empty());
        // A late bar does not move the clock back or forth.
        assert!(s.observe("x:A", ms(2019, 6, 5, 0)).is_empty());
        // Three weeks of no data: one catch-up run (the newest instant).
        let t = s.observe("x:A", ms(2019, 6, 27, 0));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].created_at, ms(2019, 6, 23, 2));
        assert_eq!(s.missed, 2);
    }

    #[test]
    fn several_instruments_wait_for_the_slowest() {
        let mut s = EventSchedules::new(vec![weekly("hmm/pair", &["x:A", "x:B"])]).expect("valid");
        assert!(s.observe("x:A", ms(2019, 6, 8, 0)).is_empty());
        assert!(
            s.observe("x:A", ms(2019, 6, 10, 0)).is_empty(),
            "x:B has no bar yet"
        );
        assert!(s.observe("x:B", ms(2019, 6, 8, 0)).is_empty());
        assert!(
            s.observe("x:B", ms(2019, 6, 9, 2)).is_empty(),
            "not after the instant"
        );
        let t = s.observe("x:B", ms(2019, 6, 9, 3));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].instruments, vec!["x:A", "x:B"]);
        assert!(
            s.observe("x:A", ms(2019, 6, 11, 0)).is_empty(),
            "fired once"
        );
    }

    #[test]
    fn replay_fires_the_same_triggers_and_bad_schedules_are_refused() {
        let run = || {
            let mut s =
                EventSchedules::new(vec![weekly("hmm/a", &["x:A"]), weekly("hmm/all", &[])])
                    .expect("valid");
            let mut out = Vec::new();
            for ts in (0..2_000).map(|i| ms(2019, 1, 1, 0) + i * HALF_HOUR) {
                out.extend(s.observe("x:A", ts));
            }
            out
        };
        let first = run();
        assert_eq!(first.len(), 2 * 6, "six Sundays in 41⅔ days, two schedules");
        assert_eq!(first, run());
        let mut bad = weekly("hmm/a", &[]);
        bad.cron = "61 * * * *".into();
        assert!(EventSchedules::new(vec![bad]).is_err());
        assert!(EventSchedules::new(vec![weekly("k", &[]), weekly("k", &[])]).is_err());
    }
}
