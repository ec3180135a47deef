//! The validator as a runner [`Processor`]: one [`Validator`] per
//! (timeframe, calendar), verdicts turned into records on `market.bars`
//! and `market.flags`. A bar whose timeframe cannot be read is poison
//! (dead-lettered by the runner).

use std::collections::HashMap;

use autotrain_kafka::{Incoming, Outputs, ProcessError, Processor};
use autotrain_schemas::Bar;
use autotrain_topics::{MARKET_BARS, MARKET_FLAGS};

use crate::calendar::Calendar;
use crate::summary::Summary;
use crate::timeframe::parse_timeframe;
use crate::validator::{Validator, ValidatorConfig, Verdict};

#[derive(Debug, Default)]
pub struct ValidatorProcessor {
    /// Calendar per instrument (`exchange:SYMBOL`); others use 24x7.
    pub calendars: HashMap<String, Calendar>,
    validators: HashMap<(String, Calendar), Validator>,
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
}

impl Processor for ValidatorProcessor {
    type Input = Bar;

    fn name(&self) -> &str {
        "validator"
    }

    fn process(&mut self, input: &Incoming<Bar>, out: &mut Outputs) -> Result<(), ProcessError> {
        let raw = &input.value;
        let step = parse_timeframe(&raw.timeframe).ok_or_else(|| {
            ProcessError::invalid(format!("unknown timeframe {:?}", raw.timeframe))
        })?;
        let key = raw.instrument();
        let calendar = self.calendars.get(&key).copied().unwrap_or_default();
        let validator = self
            .validators
            .entry((raw.timeframe.clone(), calendar))
            .or_insert_with(|| Validator::new(ValidatorConfig::new(step, calendar)));
        let verdict = validator.validate(raw);
        match &verdict {
            Verdict::Passed { bar, flags } | Verdict::Correction { bar, flags } => {
                let bar: &Bar = bar;
                out.send(MARKET_BARS, &key, bar)?;
                flags
                    .iter()
                    .try_for_each(|f| out.send(MARKET_FLAGS, &key, f))?;
            }
            Verdict::Withheld { flags } => flags
                .iter()
                .try_for_each(|f| out.send(MARKET_FLAGS, &key, f))?,
            Verdict::Duplicate => {}
        }
        self.summary.add(&verdict);
        Ok(())
    }
}
