//! [`ReviewQueue`]: the human-in-the-loop view of `market.flags`.
//!
//! Built by applying every flag on the topic in order: findings raise items
//! (anomalies arrive `pending`, gaps `open`), decisions (same `flag_id`,
//! state `approved` / `rejected` / `overridden`, with actor and time) settle
//! them. The CLI (`autotrain flags`) and the API read it and produce
//! decision events through [`ReviewQueue::decide`], which refuses decisions
//! that make no sense for the item's kind or state.

use std::collections::BTreeMap;

use autotrain_schemas::{FlagKind, HitlState, ValidationFlag};
use serde::Serialize;

/// What ops can do with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A held anomalous bar is genuine: publish it.
    Approve,
    /// A held anomalous bar is bad data: keep it out.
    Reject,
    /// Accept a known problem: an open gap no longer blocks training; a
    /// held bar is published.
    Override,
}

impl Action {
    fn state(self) -> HitlState {
        match self {
            Action::Approve => HitlState::Approved,
            Action::Reject => HitlState::Rejected,
            Action::Override => HitlState::Overridden,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReviewError {
    #[error("no flag {0:?} on market.flags")]
    Unknown(String),
    #[error("cannot {action:?} flag {id:?}: it is a {kind:?} flag in state {state:?}{hint}")]
    NotDecidable {
        id: String,
        action: Action,
        kind: FlagKind,
        state: HitlState,
        hint: &'static str,
    },
}

/// One flag with its current state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewItem {
    /// The finding as the validator raised it.
    pub raised: ValidationFlag,
    /// The latest event about it (the finding itself, or the decision).
    pub current: ValidationFlag,
}

impl ReviewItem {
    pub fn state(&self) -> HitlState {
        self.current.state
    }
}

/// Which items to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StateFilter {
    /// Anomalies holding a bar until someone decides.
    #[default]
    Pending,
    /// Open findings (gaps block trainings over their window until
    /// overridden).
    Open,
    /// Approved, rejected or overridden.
    Decided,
    All,
}

impl StateFilter {
    pub fn parse(text: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(text, true).ok()
    }

    fn admits(self, state: HitlState) -> bool {
        match self {
            StateFilter::Pending => state == HitlState::Pending,
            StateFilter::Open => state == HitlState::Open,
            StateFilter::Decided => matches!(
                state,
                HitlState::Approved | HitlState::Rejected | HitlState::Overridden
            ),
            StateFilter::All => true,
        }
    }
}

fn is_decision(state: HitlState) -> bool {
    matches!(
        state,
        HitlState::Approved | HitlState::Rejected | HitlState::Overridden
    )
}

#[derive(Debug, Default, Clone)]
pub struct ReviewQueue {
    items: BTreeMap<String, ReviewItem>,
}

impl ReviewQueue {
    pub fn new() -> Self {
        ReviewQueue::default()
    }

    /// Applies the next flag from the topic.
    pub fn apply(&mut self, flag: &ValidationFlag) {
        match self.items.get_mut(&flag.flag_id) {
            None => {
                self.items.insert(
                    flag.flag_id.clone(),
                    ReviewItem {
                        raised: flag.clone(),
                        current: flag.clone(),
                    },
                );
            }
            Some(item) => {
                // A decision settles the item; a re-raised finding (a
                // validator replaying after a restart) changes nothing.
                if is_decision(flag.state) && !is_decision(item.current.state) {
                    item.current = flag.clone();
                }
            }
        }
    }

    pub fn get(&self, flag_id: &str) -> Option<&ReviewItem> {
        self.items.get(flag_id)
    }

    /// Items in the given state, by flag id (kind, instrument, time).
    pub fn list(&self, filter: StateFilter) -> Vec<&ReviewItem> {
        self.items
            .values()
            .filter(|i| filter.admits(i.state()))
            .collect()
    }

    /// The decision event to publish on `market.flags`.
    pub fn decide(
        &self,
        flag_id: &str,
        action: Action,
        actor: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<ValidationFlag, ReviewError> {
        let item = self
            .items
            .get(flag_id)
            .ok_or_else(|| ReviewError::Unknown(flag_id.to_string()))?;
        let (kind, state) = (item.current.kind, item.current.state);
        let allowed = match action {
            Action::Approve | Action::Reject => {
                kind == FlagKind::Anomaly && state == HitlState::Pending
            }
            Action::Override => {
                (kind == FlagKind::Anomaly && state == HitlState::Pending)
                    || (kind == FlagKind::Gap && state == HitlState::Open)
            }
        };
        if !allowed {
            return Err(ReviewError::NotDecidable {
                id: flag_id.to_string(),
                action,
                kind,
                state,
                hint: if is_decision(state) {
                    " (already decided)"
                } else if kind == FlagKind::Gap {
                    " (gaps can only be overridden)"
                } else {
                    " (only pending anomalies and open gaps take decisions)"
                },
            });
        }
        let mut decision = item.raised.clone();
        decision.state = action.state();
        decision.actor = Some(actor.to_string());
        decision.decided_at = Some(now_ms);
        if let Some(reason) = reason {
            let verb = match action {
                Action::Approve => "approved",
                Action::Reject => "rejected",
                Action::Override => "overridden",
            };
            decision.detail = format!("{} — {verb}: {reason}", item.raised.detail);
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::Severity;

    fn finding(id: &str, kind: FlagKind, state: HitlState) -> ValidationFlag {
        ValidationFlag {
            flag_id: id.into(),
            instrument: "x:ABC".into(),
            timeframe: "30m".into(),
            kind,
            severity: Severity::Warning,
            ts: 1_000,
            gap_start: None,
            gap_end: None,
            missing_bars: None,
            detail: "found".into(),
            state,
            actor: None,
            decided_at: None,
        }
    }

    #[test]
    fn findings_queue_and_decisions_settle_them() {
        let mut q = ReviewQueue::new();
        q.apply(&finding("a", FlagKind::Anomaly, HitlState::Pending));
        q.apply(&finding("g", FlagKind::Gap, HitlState::Open));
        q.apply(&finding("c", FlagKind::Correction, HitlState::Resolved));
        assert_eq!(q.list(StateFilter::Pending).len(), 1);
        assert_eq!(q.list(StateFilter::Open).len(), 1);
        assert_eq!(q.list(StateFilter::All).len(), 3);

        let approve = q
            .decide("a", Action::Approve, "ana", Some("ETF news"), 5)
            .unwrap();
        assert_eq!(approve.state, HitlState::Approved);
        assert_eq!(approve.actor.as_deref(), Some("ana"));
        assert_eq!(approve.decided_at, Some(5));
        q.apply(&approve);
        // Replayed finding after the decision does not reopen it.
        q.apply(&finding("a", FlagKind::Anomaly, HitlState::Pending));
        assert!(q.list(StateFilter::Pending).is_empty());
        assert_eq!(q.list(StateFilter::Decided).len(), 1);
        assert!(matches!(
            q.decide("a", Action::Reject, "bob", None, 6),
            Err(ReviewError::NotDecidable {
                hint: " (already decided)",
                ..
            })
        ));
    }

    #[test]
    fn only_sensible_decisions_are_accepted() {
        let mut q = ReviewQueue::new();
        q.apply(&finding("g", FlagKind::Gap, HitlState::Open));
        q.apply(&finding("s", FlagKind::Stale, HitlState::Open));
        assert!(q.decide("g", Action::Approve, "ana", None, 1).is_err());
        assert_eq!(
            q.decide("g", Action::Override, "ana", None, 1)
                .unwrap()
                .state,
            HitlState::Overridden
        );
        assert!(q.decide("s", Action::Override, "ana", None, 1).is_err());
        assert_eq!(
            q.decide("nope", Action::Approve, "ana", None, 1),
            Err(ReviewError::Unknown("nope".into()))
        );
    }
}
