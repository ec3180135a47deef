//! [`Schedules`]: cron schedules per model key (and tenant) in their own
//! time zones, and which runs are due.
//!
//! `due(now)` returns, per schedule, the newest scheduled instant in
//! (last run, now]: after downtime the missed runs are caught up **once**
//! (the count of skipped ones is reported), never N times. The last run of
//! each schedule is rebuilt from `training.triggers` (reason `schedule`,
//! `created_at` = the scheduled instant), so a restart neither repeats nor
//! forgets a run. Trigger ids are `schedule:{model_key}:{instant}`, so two
//! schedulers (or a replay) publish the same records.

use std::str::FromStr;

use autotrain_schemas::{Param, Priority, TrainingTrigger, TriggerReason};
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::processor::seed_of;

/// One schedule, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub model_key: String,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Five-field cron (`0 2 * * 0`: Sundays 02:00).
    pub cron: String,
    /// IANA time zone the cron fields are read in (`UTC`,
    /// `America/New_York`).
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub instruments: Vec<String>,
    #[serde(default)]
    pub hyperparams: Vec<(String, String)>,
    #[serde(default)]
    pub auto_promote: bool,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("schedule {model_key}: bad cron {cron:?}: {reason}")]
    Cron {
        model_key: String,
        cron: String,
        reason: String,
    },
    #[error("schedule {model_key}: unknown time zone {timezone:?}")]
    TimeZone { model_key: String, timezone: String },
    #[error("schedule {0}: appears twice")]
    Duplicate(String),
}

/// A run that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub model_key: String,
    /// The scheduled instant (epoch ms).
    pub at_ms: i64,
    /// Scheduled runs skipped because a later one is due too.
    pub missed: usize,
}

#[derive(Debug)]
struct Entry {
    schedule: Schedule,
    cron: Cron,
    tz: Tz,
}

#[derive(Debug)]
pub struct Schedules {
    entries: Vec<Entry>,
    last: FxHashMap<String, i64>,
    started_ms: i64,
}

impl Schedules {
    /// Schedules that count from `started_ms` (runs before it are not
    /// caught up unless [`Schedules::restore`] says an earlier run exists).
    pub fn new(schedules: Vec<Schedule>, started_ms: i64) -> Result<Self, ScheduleError> {
        let mut entries: Vec<Entry> = Vec::new();
        for s in schedules {
            if entries.iter().any(|e| e.schedule.model_key == s.model_key) {
                return Err(ScheduleError::Duplicate(s.model_key));
            }
            let cron = Cron::from_str(&s.cron).map_err(|e| ScheduleError::Cron {
                model_key: s.model_key.clone(),
                cron: s.cron.clone(),
                reason: e.to_string(),
            })?;
            let tz = Tz::from_str(&s.timezone).map_err(|_| ScheduleError::TimeZone {
                model_key: s.model_key.clone(),
                timezone: s.timezone.clone(),
            })?;
            entries.push(Entry {
                schedule: s,
                cron,
                tz,
            });
        }
        Ok(Schedules {
            entries,
            last: FxHashMap::default(),
            started_ms,
        })
    }

    /// Records a run found on `training.triggers`.
    pub fn restore(&mut self, model_key: &str, at_ms: i64) {
        let last = self.last.entry(model_key.to_string()).or_insert(at_ms);
        *last = (*last).max(at_ms);
    }

    /// The runs due at `now_ms` (each schedule at most once), marked done.
    pub fn due(&mut self, now_ms: i64) -> Vec<Due> {
        let mut out = Vec::new();
        for e in &self.entries {
            let key = &e.schedule.model_key;
            let from = self.last.get(key).copied().unwrap_or(self.started_ms);
            let Some(start) = e.tz.timestamp_millis_opt(from).single() else {
                continue;
            };
            let mut newest: Option<i64> = None;
            let mut count = 0usize;
            for at in e.cron.iter_after(start) {
                let ms = at.timestamp_millis();
                if ms > now_ms {
                    break;
                }
                newest = Some(ms);
                count += 1;
            }
            if let Some(at_ms) = newest {
                out.push(Due {
                    model_key: key.clone(),
                    at_ms,
                    missed: count - 1,
                });
            }
        }
        for d in &out {
            self.last.insert(d.model_key.clone(), d.at_ms);
        }
        out
    }

    /// The trigger for a due run.
    pub fn trigger(&self, due: &Due) -> Option<TrainingTrigger> {
        let e = self
            .entries
            .iter()
            .find(|e| e.schedule.model_key == due.model_key)?;
        let at = Utc.timestamp_millis_opt(due.at_ms).single()?;
        let trigger_id = format!(
            "schedule:{}:{}",
            due.model_key,
            at.format("%Y-%m-%dT%H:%MZ")
        );
        Some(TrainingTrigger {
            seed: seed_of(&trigger_id),
            trigger_id,
            model_key: due.model_key.clone(),
            tenant: e.schedule.tenant.clone(),
            reason: TriggerReason::Schedule,
            instruments: e.schedule.instruments.clone(),
            dataset_version: None,
            feature_contract_version: None,
            hyperparams: e
                .schedule
                .hyperparams
                .iter()
                .map(|(name, value)| Param {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            priority: Priority::Normal,
            auto_promote: e.schedule.auto_promote,
            evidence: None,
            rerun_of: None,
            created_at: due.at_ms,
            revealed_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    fn schedule(key: &str, cron: &str, tz: &str) -> Schedule {
        Schedule {
            model_key: key.into(),
            tenant: Some("desk-a".into()),
            cron: cron.into(),
            timezone: tz.into(),
            instruments: vec!["bitfinex:BTCUSD".into()],
            hyperparams: vec![("states".into(), "3".into())],
            auto_promote: true,
        }
    }

    /// Every instant a schedule fires between two times, polling each
    /// minute like the runner does.
    fn fires(s: &mut Schedules, from: i64, to: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = from;
        while t <= to {
            out.extend(s.due(t).into_iter().map(|d| d.at_ms));
            t += 60_000;
        }
        out
    }

    #[test]
    fn new_york_mornings_move_in_utc_across_daylight_saving() {
        // Weekdays 09:00 New York; DST starts Sunday 2019-03-10.
        let mut s = Schedules::new(
            vec![schedule("hmm/a", "0 9 * * 1-5", "America/New_York")],
            ms(2019, 3, 7, 0, 0),
        )
        .expect("valid");
        let got = fires(&mut s, ms(2019, 3, 7, 0, 0), ms(2019, 3, 12, 23, 0));
        assert_eq!(
            got,
            vec![
                ms(2019, 3, 7, 14, 0),  // Thu, EST (UTC−5)
                ms(2019, 3, 8, 14, 0),  // Fri
                ms(2019, 3, 11, 13, 0), // Mon, EDT (UTC−4)
                ms(2019, 3, 12, 13, 0),
            ]
        );
    }

    #[test]
    fn a_weekly_utc_schedule_and_its_trigger() {
        let mut s = Schedules::new(
            vec![schedule("hmm/b", "0 2 * * 0", "UTC")],
            ms(2019, 6, 1, 0, 0),
        )
        .expect("valid");
        let got = fires(&mut s, ms(2019, 6, 1, 0, 0), ms(2019, 6, 20, 0, 0));
        assert_eq!(
            got,
            vec![
                ms(2019, 6, 2, 2, 0),
                ms(2019, 6, 9, 2, 0),
                ms(2019, 6, 16, 2, 0)
            ]
        );
        let t = s
            .trigger(&Due {
                model_key: "hmm/b".into(),
                at_ms: got[0],
                missed: 0,
            })
            .expect("trigger");
        assert_eq!(t.trigger_id, "schedule:hmm/b:2019-06-02T02:00Z");
        assert_eq!(
            (t.reason, t.created_at, t.tenant.as_deref()),
            (TriggerReason::Schedule, got[0], Some("desk-a"))
        );
        assert_eq!(t.seed, seed_of("schedule:hmm/b:2019-06-02T02:00Z"));
    }

    #[test]
    fn downtime_is_caught_up_once_and_restarts_do_not_repeat() {
        let mut s = Schedules::new(
            vec![schedule("hmm/c", "0 1 * * *", "UTC")],
            ms(2019, 6, 1, 0, 0),
        )
        .expect("valid");
        s.restore("hmm/c", ms(2019, 6, 3, 1, 0));
        // Down from the 3rd to the 7th at noon: four runs missed, one due.
        let due = s.due(ms(2019, 6, 7, 12, 0));
        assert_eq!(
            due,
            vec![Due {
                model_key: "hmm/c".into(),
                at_ms: ms(2019, 6, 7, 1, 0),
                missed: 3
            }]
        );
        assert!(s.due(ms(2019, 6, 7, 12, 1)).is_empty(), "not twice");
        // A restarted scheduler that reads the trigger back does not repeat it.
        let mut again = Schedules::new(
            vec![schedule("hmm/c", "0 1 * * *", "UTC")],
            ms(2019, 6, 7, 12, 5),
        )
        .expect("valid");
        again.restore("hmm/c", ms(2019, 6, 7, 1, 0));
        assert!(again.due(ms(2019, 6, 7, 23, 0)).is_empty());
        assert_eq!(
            again.due(ms(2019, 6, 8, 1, 0))[0].at_ms,
            ms(2019, 6, 8, 1, 0)
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(matches!(
            Schedules::new(vec![schedule("k", "61 * * * *", "UTC")], 0),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedules::new(vec![schedule("k", "0 * * * *", "Mars/Olympus")], 0),
            Err(ScheduleError::TimeZone { .. })
        ));
        assert!(matches!(
            Schedules::new(
                vec![
                    schedule("k", "0 * * * *", "UTC"),
                    schedule("k", "5 * * * *", "UTC")
                ],
                0
            ),
            Err(ScheduleError::Duplicate(_))
        ));
    }
}
