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
use autotrain_topics::{MARKET_BARS, MARKET_FLAGS};

use crate::calendar::Calendar;
use crate::summary::Summary;
use crate::timeframe::parse_timeframe;
use crate::validator::{Decided, Validator, ValidatorConfig, Verdict};

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
fn decision(flag: &ValidationFlag) -> Option<bool> {
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
        let Some(release) = decision(flag) else {
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
            ValidatorInput::Bar(bar) => self.on_bar(bar, out),
            ValidatorInput::Flag(flag) => self.on_flag(flag, out),
        }
    }

    fn rebuilds_from_inputs(&self) -> bool {
        true
    }
}
