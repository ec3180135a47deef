//! [`TimedRegistry`]: the registry as of a bar's event time, for the
//! processors that read `model.updates` next to `features` (drift, regime).
//!
//! Every event is checked on arrival (a refused event is the reader's
//! error to report, as before), then waits until the reader's data of
//! that model key reaches its `effective_from`: a bar at time `t` sees
//! exactly the events in effect at `t`, however early or late they arrived
//! relative to the bars. With the runner holding bars until
//! `model.updates` is complete through their time (progress records), the
//! outcome is a function of the two logs, not of their interleaving.

use std::collections::{BTreeMap, VecDeque};

use autotrain_schemas::ModelVersion;

use crate::registry::{Registry, RegistryError};

#[derive(Debug, Default)]
pub struct TimedRegistry {
    /// Every event as it arrived (validation).
    arrived: Registry,
    /// The events in effect at the time each key's data has reached.
    current: Registry,
    /// Per model key: arrived events not yet in effect, in arrival order
    /// (the trainer publishes them with non-decreasing `effective_from`).
    pending: BTreeMap<String, VecDeque<ModelVersion>>,
}

impl TimedRegistry {
    pub fn new() -> Self {
        TimedRegistry::default()
    }

    /// An event from `model.updates`: refused if it does not fold onto
    /// what arrived before it; otherwise in effect once
    /// [`TimedRegistry::advance`] passes its `effective_from` (at once if
    /// it has none).
    pub fn apply(&mut self, e: &ModelVersion) -> Result<(), RegistryError> {
        self.arrived.apply(e)?;
        let queue = self.pending.entry(e.model_key.clone()).or_default();
        queue.push_back(e.clone());
        if e.effective_from.is_none() && queue.len() == 1 {
            self.advance(&e.model_key, i64::MIN);
        }
        Ok(())
    }

    /// Puts in effect the events of `key` taking effect at or before `t`.
    pub fn advance(&mut self, key: &str, t: i64) {
        let Some(queue) = self.pending.get_mut(key) else {
            return;
        };
        while queue
            .front()
            .is_some_and(|e| e.effective_from.is_none_or(|from| from <= t))
        {
            if let Some(e) = queue.pop_front() {
                // It folded onto the same events in `arrived`.
                if let Err(err) = self.current.apply(&e) {
                    tracing::error!(key, error = %err, "registry event accepted on arrival refused in effect");
                }
            }
        }
    }

    /// The registry in effect (after the last [`TimedRegistry::advance`] of
    /// each key).
    pub fn current(&self) -> &Registry {
        &self.current
    }

    /// Events arrived but not yet in effect.
    pub fn pending(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::PROD;
    use autotrain_schemas::Manifest;

    fn manifest() -> Manifest {
        Manifest {
            trigger_id: "t".into(),
            code_version: "0".into(),
            feature_contract_version: "1".into(),
            inputs: Vec::new(),
            split_version: "s".into(),
            reference_hash: "r".into(),
            hyperparams: Vec::new(),
            seed: 1,
            dataset_version: None,
            code_commit: None,
            feature_contract_hash: None,
            feature_build: None,
        }
    }

    fn events(r: &mut Registry, version: i32, from: i64) -> Vec<ModelVersion> {
        let mut reg = r.register("k", "tr", vec![1], "h".into(), Vec::new(), manifest(), 0);
        reg.effective_from = Some(from);
        r.apply(&reg).unwrap();
        let mut p = r.promote("k", version, PROD, 0).unwrap();
        p.effective_from = Some(from);
        r.apply(&p).unwrap();
        vec![reg, p]
    }

    #[test]
    fn events_take_effect_at_their_event_time_whenever_they_arrive() {
        let mut source = Registry::new();
        let mut all = events(&mut source, 1, 100);
        all.extend(events(&mut source, 2, 200));
        let prod = |t: &TimedRegistry| {
            t.current()
                .model("k")
                .and_then(|m| m.alias(PROD))
                .map(|v| v.version)
        };
        // Everything arrives early.
        let mut early = TimedRegistry::new();
        for e in &all {
            early.apply(e).unwrap();
        }
        let mut seen = Vec::new();
        for t in [50, 100, 150, 199, 200, 250] {
            early.advance("k", t);
            seen.push(prod(&early));
        }
        assert_eq!(seen, [None, Some(1), Some(1), Some(1), Some(2), Some(2)]);
        // Just in time: the same answer at every bar.
        let mut late = TimedRegistry::new();
        let mut next = all.iter();
        let mut seen_late = Vec::new();
        for t in [50, 100, 150, 199, 200, 250] {
            for e in next.by_ref().take(if t == 100 || t == 200 { 2 } else { 0 }) {
                late.apply(e).unwrap();
            }
            late.advance("k", t);
            seen_late.push(prod(&late));
        }
        assert_eq!(seen, seen_late);
        assert_eq!(early.pending(), 0);
    }

    #[test]
    fn an_event_that_does_not_fold_is_refused_on_arrival() {
        let mut source = Registry::new();
        let all = events(&mut source, 1, 100);
        let mut t = TimedRegistry::new();
        assert!(t.apply(&all[1]).is_err(), "promote before register");
        t.apply(&all[0]).unwrap();
        t.apply(&all[1]).unwrap();
    }
}
