//! Trading calendars: a market closure is not a data gap.

use chrono::{Datelike, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::America::New_York;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Calendar {
    /// Always open (crypto).
    #[default]
    #[serde(rename = "24x7")]
    TwentyFourSeven,
    /// Closed from Friday 17:00 to Sunday 17:00 America/New_York (so the
    /// UTC hours move with daylight saving).
    Fx,
}

impl Calendar {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "24x7" => Some(Calendar::TwentyFourSeven),
            "fx" => Some(Calendar::Fx),
            _ => None,
        }
    }

    /// Is the market open at this instant (epoch millis)?
    pub fn is_open(self, ts_ms: i64) -> bool {
        match self {
            Calendar::TwentyFourSeven => true,
            Calendar::Fx => {
                let Some(utc) = Utc.timestamp_millis_opt(ts_ms).single() else {
                    return true;
                };
                let ny = utc.with_timezone(&New_York);
                match ny.weekday() {
                    Weekday::Sat => false,
                    Weekday::Fri => ny.hour() < 17,
                    Weekday::Sun => ny.hour() >= 17,
                    _ => true,
                }
            }
        }
    }

    /// The first bar start after `from_ms` (stepping by `step_ms`) at which
    /// the market is open; `None` if there is none before `to_ms`.
    pub fn next_open(self, from_ms: i64, to_ms: i64, step_ms: i64) -> Option<i64> {
        (1..)
            .map(|k| from_ms + k * step_ms)
            .take_while(|t| *t < to_ms)
            .find(|t| self.is_open(*t))
    }

    /// Bars the market should have produced strictly between two bar starts.
    pub fn expected_between(self, from_ms: i64, to_ms: i64, step_ms: i64) -> i64 {
        if to_ms <= from_ms + step_ms {
            return 0;
        }
        match self {
            Calendar::TwentyFourSeven => (to_ms - from_ms) / step_ms - 1,
            Calendar::Fx => (1..)
                .map(|k| from_ms + k * step_ms)
                .take_while(|t| *t < to_ms)
                .filter(|t| self.is_open(*t))
                .count() as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    #[test]
    fn fx_weekend_follows_new_york_daylight_saving() {
        // Winter (EST, UTC-5): Friday 17:00 NY = 22:00 UTC.
        assert!(Calendar::Fx.is_open(ms(2017, 1, 13, 21)));
        assert!(!Calendar::Fx.is_open(ms(2017, 1, 13, 22)));
        assert!(!Calendar::Fx.is_open(ms(2017, 1, 15, 21)));
        assert!(Calendar::Fx.is_open(ms(2017, 1, 15, 22)));
        // Summer (EDT, UTC-4): Friday 17:00 NY = 21:00 UTC.
        assert!(!Calendar::Fx.is_open(ms(2017, 7, 14, 21)));
        assert!(Calendar::Fx.is_open(ms(2017, 7, 16, 21)));
        // A weekend is no expected bar.
        let hour = 3_600_000;
        assert_eq!(
            Calendar::Fx.expected_between(ms(2017, 1, 13, 21), ms(2017, 1, 15, 22), hour),
            0
        );
        assert_eq!(
            Calendar::TwentyFourSeven.expected_between(
                ms(2017, 1, 13, 21),
                ms(2017, 1, 15, 22),
                hour
            ),
            48
        );
    }
}
