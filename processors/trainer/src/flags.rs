//! [`FlagBook`]: the newest state of every validation flag (a fold over
//! `market.flags`), and the questions the trainer asks it: which
//! unresolved flags block a run's window (an open gap, a held anomaly),
//! and how many unresolved error-or-worse flags the promotion guardrail
//! counts.

use std::collections::BTreeMap;

use autotrain_schemas::{FlagKind, HitlState, Severity, ValidationFlag};

#[derive(Debug, Clone, Default)]
pub struct FlagBook {
    latest: BTreeMap<String, ValidationFlag>,
}

fn unresolved(f: &ValidationFlag) -> bool {
    matches!(f.state, HitlState::Open | HitlState::Pending)
}

fn inside(f: &ValidationFlag, spans: &BTreeMap<String, (i64, i64)>) -> bool {
    spans
        .get(&f.instrument)
        .is_some_and(|(a, b)| f.ts >= *a && f.ts <= *b)
}

impl FlagBook {
    pub fn new() -> Self {
        FlagBook::default()
    }

    pub fn apply(&mut self, f: ValidationFlag) {
        self.latest.insert(f.flag_id.clone(), f);
    }

    /// Unresolved flags of `kinds` within the spans (instrument → first
    /// and last bar time): the run must wait for ops to decide them.
    pub fn blocking(
        &self,
        spans: &BTreeMap<String, (i64, i64)>,
        kinds: &[FlagKind],
    ) -> Vec<&ValidationFlag> {
        self.latest
            .values()
            .filter(|f| kinds.contains(&f.kind) && unresolved(f) && inside(f, spans))
            .collect()
    }

    /// Unresolved critical flags within the spans (the promotion
    /// guardrail: e.g. a day or more of bars missing).
    pub fn critical(&self, spans: &BTreeMap<String, (i64, i64)>) -> usize {
        self.latest
            .values()
            .filter(|f| f.severity == Severity::Critical && unresolved(f) && inside(f, spans))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(id: &str, kind: FlagKind, state: HitlState, ts: i64) -> ValidationFlag {
        ValidationFlag {
            flag_id: id.into(),
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            kind,
            severity: if kind == FlagKind::Gap {
                Severity::Critical
            } else {
                Severity::Warning
            },
            ts,
            gap_start: None,
            gap_end: None,
            missing_bars: None,
            detail: String::new(),
            state,
            actor: None,
            decided_at: None,
        }
    }

    #[test]
    fn open_gaps_and_held_anomalies_in_the_window_block_until_decided() {
        let spans = BTreeMap::from([("x:A".to_string(), (100, 200))]);
        let kinds = [FlagKind::Gap, FlagKind::Anomaly];
        let mut book = FlagBook::new();
        book.apply(flag("g1", FlagKind::Gap, HitlState::Open, 150));
        book.apply(flag("g2", FlagKind::Gap, HitlState::Open, 250));
        book.apply(flag("a1", FlagKind::Anomaly, HitlState::Pending, 120));
        book.apply(flag("s1", FlagKind::Stale, HitlState::Open, 130));
        let ids = |b: &FlagBook| -> Vec<String> {
            b.blocking(&spans, &kinds)
                .iter()
                .map(|f| f.flag_id.clone())
                .collect()
        };
        assert_eq!(ids(&book), ["a1", "g1"]);
        assert_eq!(book.critical(&spans), 1);
        book.apply(flag("g1", FlagKind::Gap, HitlState::Overridden, 150));
        book.apply(flag("a1", FlagKind::Anomaly, HitlState::Approved, 120));
        assert!(ids(&book).is_empty());
        assert_eq!(book.critical(&spans), 0);
        assert!(
            book.blocking(&spans, &[]).is_empty(),
            "nothing blocks if no kind is listed"
        );
    }
}
