//! [`Claims`]: the ledger of data claims, a fold over `training.claims`.
//!
//! A strict-mode run claims every offset range of its inputs no other
//! strict run of the same model key holds or has consumed; the claim is
//! *consumed* when the run's model is registered and *released* when the
//! run fails or is cancelled, so a later run picks those offsets up. Each
//! bar (feature record) therefore trains at most once per model key.
//! Sliding-window claims only record what a run read; they never exclude.

use std::collections::BTreeMap;

use autotrain_schemas::{ClaimMode, ClaimState, DataClaim, OffsetRange};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    latest: BTreeMap<String, DataClaim>,
}

/// The id of a run attempt's claim.
pub fn claim_id(training_id: &str, attempt: i32) -> String {
    format!("{training_id}/{attempt}")
}

impl Claims {
    pub fn new() -> Self {
        Claims::default()
    }

    pub fn apply(&mut self, c: &DataClaim) {
        self.latest.insert(c.claim_id.clone(), c.clone());
    }

    pub fn get(&self, claim_id: &str) -> Option<&DataClaim> {
        self.latest.get(claim_id)
    }

    /// Claims still held (neither consumed nor released) by a training.
    pub fn held_by<'a>(&'a self, training_id: &'a str) -> impl Iterator<Item = &'a DataClaim> {
        self.latest
            .values()
            .filter(move |c| c.training_id == training_id && c.state == ClaimState::Claimed)
    }

    /// Every claim still held.
    pub fn held_by_any(&self) -> impl Iterator<Item = &DataClaim> {
        self.latest
            .values()
            .filter(|c| c.state == ClaimState::Claimed)
    }

    /// Offsets of (topic, partition) held or consumed by strict claims of
    /// `model_key`, merged and sorted.
    pub fn taken(&self, model_key: &str, topic: &str, partition: i32) -> Vec<(i64, i64)> {
        let mut spans: Vec<(i64, i64)> = self
            .latest
            .values()
            .filter(|c| {
                c.model_key == model_key
                    && c.mode == ClaimMode::Strict
                    && c.state != ClaimState::Released
            })
            .flat_map(|c| c.ranges.iter())
            .filter(|r| r.topic == topic && r.partition == partition && r.start < r.end)
            .map(|r| (r.start, r.end))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::new();
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// The parts of `[start, end)` of (topic, partition) no strict claim of
    /// `model_key` holds or has consumed.
    pub fn free(
        &self,
        model_key: &str,
        topic: &str,
        partition: i32,
        start: i64,
        end: i64,
    ) -> Vec<OffsetRange> {
        let mut out = Vec::new();
        let mut at = start;
        for (a, b) in self.taken(model_key, topic, partition) {
            if b <= at {
                continue;
            }
            if a >= end {
                break;
            }
            if a > at {
                out.push(range(topic, partition, at, a.min(end)));
            }
            at = at.max(b);
        }
        if at < end {
            out.push(range(topic, partition, at, end));
        }
        out
    }
}

fn range(topic: &str, partition: i32, start: i64, end: i64) -> OffsetRange {
    OffsetRange {
        topic: topic.into(),
        partition,
        start,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(
        id: &str,
        key: &str,
        mode: ClaimMode,
        state: ClaimState,
        spans: &[(i64, i64)],
    ) -> DataClaim {
        DataClaim {
            claim_id: id.into(),
            training_id: id.split('/').next().unwrap_or(id).into(),
            model_key: key.into(),
            attempt: 1,
            mode,
            state,
            ranges: spans
                .iter()
                .map(|&(a, b)| range("features", 0, a, b))
                .collect(),
            reason: String::new(),
            at: 0,
        }
    }

    fn spans(r: &[OffsetRange]) -> Vec<(i64, i64)> {
        r.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn strict_claims_exclude_until_released_and_sliding_never_excludes() {
        let mut c = Claims::new();
        c.apply(&claim(
            "t1/1",
            "k",
            ClaimMode::Strict,
            ClaimState::Claimed,
            &[(0, 100)],
        ));
        c.apply(&claim(
            "t2/1",
            "k",
            ClaimMode::Strict,
            ClaimState::Consumed,
            &[(150, 200)],
        ));
        c.apply(&claim(
            "t3/1",
            "k",
            ClaimMode::Sliding,
            ClaimState::Consumed,
            &[(0, 300)],
        ));
        c.apply(&claim(
            "t4/1",
            "other",
            ClaimMode::Strict,
            ClaimState::Consumed,
            &[(0, 300)],
        ));
        assert_eq!(
            spans(&c.free("k", "features", 0, 0, 300)),
            [(100, 150), (200, 300)]
        );
        assert_eq!(spans(&c.free("k", "features", 1, 0, 300)), [(0, 300)]);
        assert_eq!(c.held_by("t1").count(), 1);
        c.apply(&claim(
            "t1/1",
            "k",
            ClaimMode::Strict,
            ClaimState::Released,
            &[(0, 100)],
        ));
        assert_eq!(c.held_by("t1").count(), 0);
        assert_eq!(
            spans(&c.free("k", "features", 0, 0, 300)),
            [(0, 150), (200, 300)]
        );
        assert_eq!(
            spans(&c.free("k", "features", 0, 160, 180)),
            Vec::<(i64, i64)>::new()
        );
        assert_eq!(spans(&c.free("k", "features", 0, 120, 170)), [(120, 150)]);
    }
}
