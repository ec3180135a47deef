//! Counts over a validation run: what `autotrain validate --json` prints.

use std::collections::BTreeMap;

use autotrain_schemas::FlagKind;
use serde::Serialize;

use crate::validator::Verdict;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapReport {
    pub start: i64,
    pub end: i64,
    pub missing_bars: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub bars: u64,
    pub passed: u64,
    pub flags: BTreeMap<&'static str, u64>,
    pub gaps: Vec<GapReport>,
    /// Held bars published after an approval or override.
    #[serde(skip_serializing_if = "is_zero")]
    pub released: u64,
    /// Held bars discarded after a rejection.
    #[serde(skip_serializing_if = "is_zero")]
    pub rejected: u64,
    /// Decisions about no held bar (already decided, superseded, unknown).
    #[serde(skip_serializing_if = "is_zero")]
    pub decisions_not_held: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for Summary {
    fn default() -> Self {
        let flags = ["ohlc", "stale", "gap", "anomaly", "duplicate", "correction"]
            .into_iter()
            .map(|k| (k, 0))
            .collect();
        Summary {
            bars: 0,
            passed: 0,
            flags,
            gaps: Vec::new(),
            released: 0,
            rejected: 0,
            decisions_not_held: 0,
        }
    }
}

fn name(kind: FlagKind) -> &'static str {
    match kind {
        FlagKind::Gap => "gap",
        FlagKind::Anomaly => "anomaly",
        FlagKind::Ohlc => "ohlc",
        FlagKind::Stale => "stale",
        FlagKind::Duplicate => "duplicate",
        FlagKind::Correction => "correction",
    }
}

impl Summary {
    /// Counts one verdict. `passed` counts bars published (corrections too).
    pub fn add(&mut self, verdict: &Verdict) {
        self.bars += 1;
        let flags = match verdict {
            Verdict::Passed { flags, .. } | Verdict::Correction { flags, .. } => {
                self.passed += 1;
                flags.as_slice()
            }
            Verdict::Withheld { flags } => flags.as_slice(),
            Verdict::Duplicate => {
                *self.flags.entry("duplicate").or_default() += 1;
                &[]
            }
        };
        for f in flags {
            *self.flags.entry(name(f.kind)).or_default() += 1;
            if let (FlagKind::Gap, Some(start), Some(end), Some(n)) =
                (f.kind, f.gap_start, f.gap_end, f.missing_bars)
            {
                self.gaps.push(GapReport {
                    start,
                    end,
                    missing_bars: i64::from(n),
                });
            }
        }
    }
}
