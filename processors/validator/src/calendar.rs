//! Trading calendars: a market closure is not a data gap.
//!
//! `24x7` (crypto), `fx` (the weekly FX close, New York time) and
//! `us-equity` (the regular session with holidays and early closes from
//! `calendars/us_equity.txt`, compiled in).

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::America::New_York;

/// One day of the US-equity session file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Closed,
    /// Closes early at this New York time.
    EarlyClose(NaiveTime),
}

#[derive(Debug)]
struct SessionFile {
    covers: (i32, i32),
    days: HashMap<NaiveDate, Session>,
}

const US_EQUITY: &str = include_str!("../calendars/us_equity.txt");

fn parse_sessions(text: &str) -> Result<SessionFile, String> {
    let mut covers = None;
    let mut days = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("us_equity.txt line {}: {line:?}", n + 1);
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["covers", from, to] => {
                covers = Some((
                    from.parse().map_err(|_| bad())?,
                    to.parse().map_err(|_| bad())?,
                ))
            }
            [date, "closed"] => {
                let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
                days.insert(d, Session::Closed);
            }
            [date, "early", time] => {
                let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| bad())?;
                let t = NaiveTime::parse_from_str(time, "%H:%M").map_err(|_| bad())?;
                days.insert(d, Session::EarlyClose(t));
            }
            _ => return Err(bad()),
        }
    }
    Ok(SessionFile {
        covers: covers.ok_or("us_equity.txt: no `covers` line")?,
        days,
    })
}

fn us_equity_sessions() -> &'static SessionFile {
    static FILE: OnceLock<SessionFile> = OnceLock::new();
    FILE.get_or_init(|| {
        // The file is compiled in and checked by a unit test.
        parse_sessions(US_EQUITY).unwrap_or_else(|e| panic!("bundled calendar: {e}"))
    })
}

/// Years the US-equity holiday file covers (outside them only weekends
/// are closures).
pub fn us_equity_coverage() -> (i32, i32) {
    us_equity_sessions().covers
}

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
    /// US equities' regular session, 09:30–16:00 America/New_York on
    /// weekdays, minus holidays, 13:00 close on early-close days. A bar is
    /// expected when it starts inside the session.
    UsEquity,
}

impl Calendar {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "24x7" => Some(Calendar::TwentyFourSeven),
            "fx" => Some(Calendar::Fx),
            "us-equity" => Some(Calendar::UsEquity),
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
            Calendar::UsEquity => {
                let Some(utc) = Utc.timestamp_millis_opt(ts_ms).single() else {
                    return true;
                };
                let ny = utc.with_timezone(&New_York);
                if matches!(ny.weekday(), Weekday::Sat | Weekday::Sun) {
                    return false;
                }
                let open = NaiveTime::from_hms_opt(9, 30, 0).unwrap_or_default();
                let close = match us_equity_sessions().days.get(&ny.date_naive()) {
                    Some(Session::Closed) => return false,
                    Some(Session::EarlyClose(t)) => *t,
                    None => NaiveTime::from_hms_opt(16, 0, 0).unwrap_or_default(),
                };
                let t = ny.time();
                t >= open && t < close
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
            Calendar::Fx | Calendar::UsEquity => (1..)
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

    fn ny(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        New_York
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .map(|t| t.timestamp_millis())
            .unwrap_or_default()
    }

    #[test]
    fn the_us_equity_file_parses_and_covers_its_years() {
        let file = parse_sessions(US_EQUITY).expect("parses");
        assert_eq!(file.covers, (2015, 2027));
        for year in 2015..=2027 {
            let closed = file
                .days
                .iter()
                .filter(|(d, s)| d.year() == year && **s == Session::Closed)
                .count();
            assert!((9..=11).contains(&closed), "{year}: {closed} holidays");
        }
        assert!(parse_sessions("2019-01-01 shut").is_err());
    }

    #[test]
    fn us_equity_session_holidays_and_early_closes() {
        let c = Calendar::UsEquity;
        // A regular Tuesday: 09:30 .. 16:00 New York.
        assert!(!c.is_open(ny(2019, 6, 25, 9, 29)));
        assert!(c.is_open(ny(2019, 6, 25, 9, 30)));
        assert!(c.is_open(ny(2019, 6, 25, 15, 59)));
        assert!(!c.is_open(ny(2019, 6, 25, 16, 0)));
        // Independence Day, the early close before it, a weekend.
        assert!(!c.is_open(ny(2019, 7, 4, 11, 0)));
        assert!(c.is_open(ny(2019, 7, 3, 12, 59)));
        assert!(!c.is_open(ny(2019, 7, 3, 13, 0)));
        assert!(!c.is_open(ny(2019, 7, 6, 11, 0)));
        // 1-minute bars from Wednesday's last to Friday's first: the early
        // close and the holiday are no gap.
        let minute = 60_000;
        assert_eq!(
            c.expected_between(ny(2019, 7, 3, 12, 59), ny(2019, 7, 5, 9, 30), minute),
            0
        );
        // A hole inside a session is.
        assert_eq!(
            c.expected_between(ny(2019, 6, 25, 10, 0), ny(2019, 6, 25, 10, 10), minute),
            9
        );
        // Friday close to Monday open across the DST change (2019-03-10).
        assert_eq!(
            c.expected_between(ny(2019, 3, 8, 15, 59), ny(2019, 3, 11, 9, 30), minute),
            0
        );
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
