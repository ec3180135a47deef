//! The validator as a runner [`Processor`]: `market.bars.raw` and the ops
//! decisions on `market.flags` in; `market.bars` and `market.flags` out.
//!
//! One [`Validator`] per (timeframe, calendar). A bar whose timeframe cannot
//! be read is poison (dead-lettered by the runner). Anomalous bars are held
//! until a decision (`approved`, `overridden` ⇒ published; `rejected` ⇒
//! discarded) arrives on `market.flags`; the released bar's event id is
//! derived from its flag id, so whichever path publishes it, it is the same
//! record. The core's state is a function of its inputs, so the runner
//! rebuilds it after a restart by replaying them.

use std::collections::HashMap;

use autotrain_kafka::{EventId, Inbound, Incoming, Outputs, ProcessError, Processor};
use autotrain_schemas::{decode, Bar, FlagKind, HitlState, ValidationFlag, WireError};
use autotrain_topics::{MARKET_BARS, MARKET_BARS_RAW, MARKET_FLAGS};

use crate::calendar::Calendar;
use crate::summary::Summary;
use crate::timeframe::parse_timeframe;
use crate::validator::{Decided, Validator, ValidatorConfig, Verdict};

/// The topics the validator consumes: raw bars, and `market.flags` for ops'
/// decisions on the bars it holds (its own findings come back there too).
pub const INPUTS: &[&str] = &[MARKET_BARS_RAW.name(), MARKET_FLAGS.name()];

/// What the validator reads: raw bars, and flags (of which it acts on ops
/// decisions about held bars and ignores its own findings).
#[derive(Debug, Clone)]
pub enum ValidatorInput {
    Bar(Bar),
    Flag(ValidationFlag),
}

impl Inbound for ValidatorInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == MARKET_FLAGS.name() {
            decode::<ValidationFlag>(bytes).map(ValidatorInput::Flag)
        } else {
            decode::<Bar>(bytes).map(ValidatorInput::Bar)
        }
    }
}

/// The id of the `market.bars` record that publishes a held bar.
pub fn release_id(flag_id: &str) -> EventId {
    EventId::derive(&[b"validator/release", flag_id.as_bytes()])
}

/// Is this flag an ops decision the validator acts on? `Some(true)` releases
/// the held bar, `Some(false)` discards it.
pub fn ops_decision(flag: &ValidationFlag) -> Option<bool> {
    if flag.kind != FlagKind::Anomaly {
        return None;
    }
    match flag.state {
        HitlState::Approved | HitlState::Overridden => Some(true),
        HitlState::Rejected => Some(false),
        _ => None,
    }
}

#[derive(Debug, Default)]
pub struct ValidatorProcessor {
    /// Calendar per instrument (`exchange:SYMBOL`); others use 24x7.
    pub calendars: HashMap<String, Calendar>,
    validators: HashMap<(String, Calendar), Validator>,
    /// Decisions seen before the bar they are about (possible when a
    /// restart replays the flags partition before the bars one).
    early: HashMap<String, bool>,
    /// Counts of everything validated so far.
    pub summary: Summary,
}

/// Longest text of a bar's names (exchange, symbol, timeframe) …
pub const MAX_NAME_BYTES: usize = 128;
/// … and of its `source`.
pub const MAX_SOURCE_BYTES: usize = 4_096;
/// How far a bar's start may lie after the moment it was published (the
/// record's Kafka timestamp): a bar is published once it has closed.
pub const MAX_LEAD_MS: i64 = 86_400_000;

/// Why a raw bar is not a market observation at all (dead-lettered, not
/// flagged): prices that are not positive finite numbers, a negative or
/// non-finite volume, a start before 1970 or a day or more after it was
/// published, names or source beyond their limits. A bar that is a market
/// observation but inconsistent (low above high) is flagged instead.
pub fn unusable(bar: &Bar, published_at: Option<i64>) -> Option<String> {
    for (name, v) in [
        ("open", bar.open),
        ("high", bar.high),
        ("low", bar.low),
        ("close", bar.close),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Some(format!(
                "{name} = {v}: prices must be positive finite numbers"
            ));
        }
    }
    if !(bar.volume.is_finite() && bar.volume >= 0.0) {
        return Some(format!(
            "volume = {}: must be a finite number >= 0",
            bar.volume
        ));
    }
    if bar.ts < 0 {
        return Some(format!("ts = {} is before 1970", bar.ts));
    }
    if let Some(at) = published_at.filter(|at| *at > 0) {
        if bar.ts > at.saturating_add(MAX_LEAD_MS) {
            return Some(format!(
                "ts = {} starts {} h after the record was published ({at}): a clock or unit error",
                bar.ts,
                (bar.ts - at) / 3_600_000
            ));
        }
    }
    for (name, text) in [
        ("exchange", &bar.exchange),
        ("symbol", &bar.symbol),
        ("timeframe", &bar.timeframe),
    ] {
        if text.len() > MAX_NAME_BYTES {
            return Some(format!(
                "{name} is {} bytes (at most {MAX_NAME_BYTES})",
                text.len()
            ));
        }
    }
    if bar.source.len() > MAX_SOURCE_BYTES {
        return Some(format!(
            "source is {} bytes (at most {MAX_SOURCE_BYTES})",
            bar.source.len()
        ));
    }
    None
}

impl ValidatorProcessor {
    pub fn new(calendars: HashMap<String, Calendar>) -> Self {
        ValidatorProcessor {
            calendars,
            ..ValidatorProcessor::default()
        }
    }

    /// Bars currently held for review.
    pub fn held(&self) -> Vec<&Bar> {
        let mut held: Vec<&Bar> = self.validators.values().flat_map(Validator::held).collect();
        held.sort_by(|a, b| (&a.exchange, &a.symbol, a.ts).cmp(&(&b.exchange, &b.symbol, b.ts)));
        held
    }

    fn validator(
        &mut self,
        instrument: &str,
        timeframe: &str,
    ) -> Result<&mut Validator, ProcessError> {
        let step = parse_timeframe(timeframe)
            .ok_or_else(|| ProcessError::invalid(format!("unknown timeframe {timeframe:?}")))?;
        let calendar = self.calendars.get(instrument).copied().unwrap_or_default();
        Ok(self
            .validators
            .entry((timeframe.to_string(), calendar))
            .or_insert_with(|| Validator::new(ValidatorConfig::new(step, calendar))))
    }

    fn on_bar(&mut self, raw: &Bar, out: &mut Outputs) -> Result<(), ProcessError> {
        let key = raw.instrument();
        let verdict = self.validator(&key, &raw.timeframe)?.validate(raw);
        match &verdict {
            Verdict::Passed { bar, flags } | Verdict::Correction { bar, flags } => {
                out.send(MARKET_BARS, &key, bar)?;
                flags
                    .iter()
                    .try_for_each(|f| out.send(MARKET_FLAGS, &key, f))?;
            }
            Verdict::Withheld { flags } => {
                flags
                    .iter()
                    .try_for_each(|f| out.send(MARKET_FLAGS, &key, f))?;
                for f in flags.iter().filter(|f| f.state == HitlState::Pending) {
                    if let Some(release) = self.early.remove(&f.flag_id) {
                        self.apply(f, release, out)?;
                    }
                }
            }
            Verdict::Duplicate => {}
        }
        self.summary.add(&verdict);
        Ok(())
    }

    fn on_flag(&mut self, flag: &ValidationFlag, out: &mut Outputs) -> Result<(), ProcessError> {
        let Some(release) = ops_decision(flag) else {
            return Ok(());
        };
        self.apply(flag, release, out)
    }

    fn apply(
        &mut self,
        flag: &ValidationFlag,
        release: bool,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        match self.validator(&flag.instrument, &flag.timeframe)?.decide(
            &flag.instrument,
            flag.ts,
            release,
        ) {
            Decided::Released(bar) => {
                out.send_with_id(
                    MARKET_BARS,
                    &flag.instrument,
                    &bar,
                    release_id(&flag.flag_id),
                )?;
                self.summary.released += 1;
            }
            Decided::Discarded => self.summary.rejected += 1,
            Decided::NotHeld => {
                self.early.insert(flag.flag_id.clone(), release);
                self.summary.decisions_not_held += 1;
            }
        }
        Ok(())
    }
}

impl Processor for ValidatorProcessor {
    type Input = ValidatorInput;

    fn name(&self) -> &str {
        "validator"
    }

    fn process(
        &mut self,
        input: &Incoming<ValidatorInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        match &input.value {
            ValidatorInput::Bar(bar) => {
                if let Some(reason) = unusable(bar, input.timestamp) {
                    return Err(ProcessError::invalid(reason));
                }
                self.on_bar(bar, out)
            }
            ValidatorInput::Flag(flag) => self.on_flag(flag, out),
        }
    }

    fn rebuilds_from_inputs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar() -> Bar {
        Bar {
            exchange: "x".into(),
            symbol: "Y".into(),
            timeframe: "1m".into(),
            ts: 1_600_000_000_000,
            open: 10.0,
            high: 11.0,
            low: 9.0,
            close: 10.5,
            volume: 3.0,
            source: "test".into(),
            checksum: None,
            revision: 0,
        }
    }

    #[test]
    fn records_that_are_no_market_observation_are_named() {
        let published = Some(1_600_000_100_000);
        assert_eq!(unusable(&bar(), published), None);
        type Change = Box<dyn Fn(&mut Bar)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|b| b.close = f64::NAN), "close = NaN"),
            (Box::new(|b| b.low = -1.0), "low = -1"),
            (Box::new(|b| b.open = 0.0), "open = 0"),
            (Box::new(|b| b.volume = f64::INFINITY), "volume = inf"),
            (Box::new(|b| b.ts = -5), "before 1970"),
            (
                Box::new(|b| b.ts = 1_600_000_000_000 + 365 * 86_400_000),
                "clock or unit error",
            ),
            (
                Box::new(|b| b.source = "s".repeat(1_000_000)),
                "source is 1000000 bytes",
            ),
            (
                Box::new(|b| b.symbol = "s".repeat(90_000)),
                "symbol is 90000 bytes",
            ),
        ];
        for (change, want) in cases {
            let mut b = bar();
            change(&mut b);
            let reason = unusable(&b, published).expect(want);
            assert!(reason.contains(want), "{reason} / {want}");
        }
        // Without a publication time only the bar itself is judged.
        let mut future = bar();
        future.ts += 365 * 86_400_000;
        assert_eq!(unusable(&future, None), None);
    }
}
