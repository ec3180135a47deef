//! [`TrainingQueue`]: the trainer's job queue, pure. Triggers wait in
//! priority order (urgent > high > normal > low, first come first served
//! within a priority); at most `capacity` run at once; a failed run is
//! retried with exponential backoff up to `max_attempts` (same training id,
//! attempt + 1); queued or running jobs can be cancelled; a cancelled or
//! exhausted job can be retried by hand. Every transition returns the
//! `TrainingStatus` event to publish on `training.status`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use autotrain_schemas::{Metric, Priority, TrainingState, TrainingStatus, TrainingTrigger};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("no training {0}")]
    Unknown(String),
    #[error("training {id} is {state:?}: cannot {action}")]
    Transition {
        id: String,
        state: TrainingState,
        action: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub training_id: String,
    pub trigger: TrainingTrigger,
    pub state: TrainingState,
    pub attempt: i32,
    /// Not started before this time (retry backoff).
    pub not_before: i64,
    seq: u64,
    /// Why the job last parked (blocked / waiting for data).
    parked: Option<(TrainingState, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub active: usize,
    pub queued: usize,
    pub capacity: usize,
}

impl QueueStats {
    pub fn utilisation(&self) -> f64 {
        self.active as f64 / self.capacity.max(1) as f64
    }
}

#[derive(Debug, Clone)]
pub struct TrainingQueue {
    pub capacity: usize,
    pub max_attempts: i32,
    pub retry_base_ms: i64,
    jobs: BTreeMap<String, Job>,
    waiting: BTreeSet<(Reverse<Priority>, u64, String)>,
    running: BTreeSet<String>,
    seq: u64,
}

/// The training id of a trigger (one training per trigger).
pub fn training_id(trigger: &TrainingTrigger) -> String {
    format!("tr-{}", trigger.trigger_id)
}

/// The trigger of a rerun of training `of` (its manifest decides
/// everything else).
pub fn rerun_trigger(
    trigger_id: String,
    model_key: &str,
    of: &str,
    tenant: Option<String>,
    at: i64,
) -> TrainingTrigger {
    TrainingTrigger {
        trigger_id,
        model_key: model_key.to_string(),
        tenant,
        reason: autotrain_schemas::TriggerReason::Rerun,
        instruments: Vec::new(),
        dataset_version: None,
        feature_contract_version: None,
        hyperparams: Vec::new(),
        seed: 0,
        priority: Priority::High,
        auto_promote: false,
        evidence: None,
        rerun_of: Some(of.to_string()),
        created_at: at,
        revealed_at: None,
    }
}

fn status(job: &Job, state: TrainingState, message: String, at: i64) -> TrainingStatus {
    TrainingStatus {
        training_id: job.training_id.clone(),
        model_key: job.trigger.model_key.clone(),
        state,
        stage: None,
        progress: if state == TrainingState::Completed {
            1.0
        } else {
            0.0
        },
        message,
        metrics: Vec::new(),
        error: None,
        attempt: job.attempt,
        model_version: None,
        at,
    }
}

impl TrainingQueue {
    pub fn new(capacity: usize, max_attempts: i32, retry_base_ms: i64) -> Self {
        TrainingQueue {
            capacity: capacity.max(1),
            max_attempts: max_attempts.max(1),
            retry_base_ms,
            jobs: BTreeMap::new(),
            waiting: BTreeSet::new(),
            running: BTreeSet::new(),
            seq: 0,
        }
    }

    /// Triggers of `model_key` not yet resolved (queued, parked, running
    /// or awaiting a retry).
    pub fn unresolved<'a>(&'a self, model_key: &'a str) -> impl Iterator<Item = &'a Job> {
        self.jobs.values().filter(move |j| {
            j.trigger.model_key == model_key
                && !matches!(
                    j.state,
                    TrainingState::Completed | TrainingState::Failed | TrainingState::Cancelled
                )
        })
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn stats(&self) -> QueueStats {
        QueueStats {
            active: self.running.len(),
            queued: self.waiting.len(),
            capacity: self.capacity,
        }
    }

    fn enqueue(&mut self, id: &str) {
        self.seq += 1;
        if let Some(job) = self.jobs.get_mut(id) {
            job.seq = self.seq;
            job.state = TrainingState::Queued;
            self.waiting
                .insert((Reverse(job.trigger.priority), self.seq, id.to_string()));
        }
    }

    /// Queues a trigger; a trigger already known changes nothing.
    pub fn submit(&mut self, trigger: TrainingTrigger, now: i64) -> Option<TrainingStatus> {
        let id = training_id(&trigger);
        if self.jobs.contains_key(&id) {
            return None;
        }
        self.jobs.insert(
            id.clone(),
            Job {
                training_id: id.clone(),
                trigger,
                state: TrainingState::Queued,
                attempt: 1,
                not_before: now,
                seq: 0,
                parked: None,
            },
        );
        self.enqueue(&id);
        let job = &self.jobs[&id];
        Some(status(
            job,
            TrainingState::Queued,
            format!("queued ({:?})", job.trigger.priority).to_lowercase(),
            now,
        ))
    }

    /// Takes queued jobs due by `now` while capacity allows, best priority
    /// first; they hold a slot until completed, failed, cancelled or
    /// parked. Announce a run with [`TrainingQueue::running_status`] once
    /// its data is there.
    pub fn start_ready(&mut self, now: i64) -> Vec<String> {
        let mut out = Vec::new();
        while self.running.len() < self.capacity {
            // One run per model key at a time: runs of a key see each
            // other's versions (champion, reference set) in order.
            let busy: BTreeSet<&str> = self
                .running
                .iter()
                .map(|id| self.jobs[id].trigger.model_key.as_str())
                .collect();
            // Runs of a key start in the event-time order of their
            // triggers (then training id), whatever order they arrived or
            // parked in: which champion a run faces and which version
            // number it gets follow the data, not the wall clock. A run
            // blocked by flags waits for people and holds no one back.
            let first_of_key = |key: &str| {
                self.waiting
                    .iter()
                    .map(|(_, _, id)| &self.jobs[id])
                    .filter(|j| j.trigger.model_key == key && j.state != TrainingState::Blocked)
                    .map(|j| (j.trigger.created_at, j.training_id.as_str()))
                    .min()
            };
            let Some(entry) = self
                .waiting
                .iter()
                .find(|(_, _, id)| {
                    let job = &self.jobs[id];
                    job.not_before <= now
                        && !busy.contains(job.trigger.model_key.as_str())
                        && (job.state == TrainingState::Blocked
                            || first_of_key(&job.trigger.model_key)
                                == Some((job.trigger.created_at, job.training_id.as_str())))
                })
                .cloned()
            else {
                break;
            };
            self.waiting.remove(&entry);
            let id = entry.2;
            self.running.insert(id.clone());
            if let Some(job) = self.jobs.get_mut(&id) {
                job.state = TrainingState::Running;
                out.push(id);
            }
        }
        out
    }

    /// The `running` event of a started job (clears its parked reason).
    pub fn running_status(&mut self, id: &str, now: i64) -> Result<TrainingStatus, QueueError> {
        let job = self.running_job(id, "run")?;
        job.parked = None;
        Ok(status(
            job,
            TrainingState::Running,
            format!("attempt {}", job.attempt),
            now,
        ))
    }

    /// A started job that cannot run yet (`blocked` by flags, or
    /// `waiting_data`) gives its slot back and is looked at again from
    /// `recheck_at`. Returns the event only when the reason changed, so
    /// re-checks do not flood `training.status`.
    pub fn park(
        &mut self,
        id: &str,
        state: TrainingState,
        message: String,
        recheck_at: i64,
        now: i64,
    ) -> Result<Option<TrainingStatus>, QueueError> {
        let job = self.running_job(id, "park")?;
        let changed = job.parked.as_ref() != Some(&(state, message.clone()));
        job.parked = Some((state, message.clone()));
        job.not_before = recheck_at;
        self.running.remove(id);
        self.enqueue(id);
        let Some(job) = self.jobs.get_mut(id) else {
            return Err(QueueError::Unknown(id.to_string()));
        };
        job.state = state;
        Ok(changed.then(|| status(job, state, message, now)))
    }

    /// Puts a job back as a previous run left it (restart): terminal
    /// states stay terminal, anything else is queued again.
    pub fn restore(
        &mut self,
        trigger: TrainingTrigger,
        state: TrainingState,
        attempt: i32,
        now: i64,
    ) {
        let id = training_id(&trigger);
        if self.jobs.contains_key(&id) {
            return;
        }
        self.jobs.insert(
            id.clone(),
            Job {
                training_id: id.clone(),
                trigger,
                state,
                attempt: attempt.max(1),
                not_before: now,
                seq: 0,
                parked: None,
            },
        );
        if !matches!(
            state,
            TrainingState::Completed | TrainingState::Cancelled | TrainingState::Failed
        ) {
            self.enqueue(&id);
        }
    }

    /// Fails a job for good (bad request): no retry.
    pub fn reject(
        &mut self,
        id: &str,
        error: &str,
        now: i64,
    ) -> Result<TrainingStatus, QueueError> {
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| QueueError::Unknown(id.to_string()))?;
        let key = (Reverse(job.trigger.priority), job.seq, id.to_string());
        job.state = TrainingState::Failed;
        job.attempt = self.max_attempts.max(job.attempt);
        self.waiting.remove(&key);
        self.running.remove(id);
        let job = &self.jobs[id];
        let mut s = status(
            job,
            TrainingState::Failed,
            "not trainable as asked".into(),
            now,
        );
        s.error = Some(error.to_string());
        Ok(s)
    }

    /// Ids of running jobs.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.running.iter().map(String::as_str)
    }

    fn running_job(&mut self, id: &str, action: &'static str) -> Result<&mut Job, QueueError> {
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| QueueError::Unknown(id.to_string()))?;
        if job.state != TrainingState::Running {
            return Err(QueueError::Transition {
                id: id.to_string(),
                state: job.state,
                action,
            });
        }
        Ok(job)
    }

    /// Progress of a running job through a stage.
    pub fn progress(
        &mut self,
        id: &str,
        stage: &str,
        progress: f64,
        now: i64,
    ) -> Result<TrainingStatus, QueueError> {
        let job = self.running_job(id, "report progress")?;
        let mut s = status(job, TrainingState::Running, String::new(), now);
        s.stage = Some(stage.to_string());
        s.progress = progress.clamp(0.0, 1.0);
        Ok(s)
    }

    pub fn complete(
        &mut self,
        id: &str,
        metrics: Vec<Metric>,
        version: Option<i32>,
        now: i64,
    ) -> Result<TrainingStatus, QueueError> {
        let job = self.running_job(id, "complete")?;
        job.state = TrainingState::Completed;
        let mut s = status(job, TrainingState::Completed, "completed".into(), now);
        s.metrics = metrics;
        s.model_version = version;
        self.running.remove(id);
        Ok(s)
    }

    /// A failed attempt: `failed`, then `queued` again after a backoff while
    /// attempts remain.
    pub fn fail(
        &mut self,
        id: &str,
        error: &str,
        now: i64,
    ) -> Result<Vec<TrainingStatus>, QueueError> {
        let (max, base) = (self.max_attempts, self.retry_base_ms);
        let job = self.running_job(id, "fail")?;
        job.state = TrainingState::Failed;
        let mut failed = status(
            job,
            TrainingState::Failed,
            format!("attempt {} of {max} failed", job.attempt),
            now,
        );
        failed.error = Some(error.to_string());
        let mut out = vec![failed];
        self.running.remove(id);
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| QueueError::Unknown(id.to_string()))?;
        if job.attempt < max {
            let delay = base.saturating_mul(1i64 << (job.attempt - 1).min(30));
            job.attempt += 1;
            job.not_before = now.saturating_add(delay);
            let msg = format!("retry {} of {max} after {delay} ms", job.attempt);
            self.enqueue(id);
            let job = &self.jobs[id];
            out.push(status(job, TrainingState::Queued, msg, now));
        }
        Ok(out)
    }

    pub fn cancel(&mut self, id: &str, now: i64) -> Result<TrainingStatus, QueueError> {
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| QueueError::Unknown(id.to_string()))?;
        match job.state {
            TrainingState::Queued
            | TrainingState::Running
            | TrainingState::Blocked
            | TrainingState::WaitingData => {
                job.state = TrainingState::Cancelled;
                let key = (Reverse(job.trigger.priority), job.seq, id.to_string());
                self.waiting.remove(&key);
                self.running.remove(id);
                Ok(status(
                    &self.jobs[id],
                    TrainingState::Cancelled,
                    "cancelled".into(),
                    now,
                ))
            }
            state => Err(QueueError::Transition {
                id: id.to_string(),
                state,
                action: "cancel",
            }),
        }
    }

    /// Queues a cancelled or failed job again by hand (a new attempt).
    pub fn retry(&mut self, id: &str, now: i64) -> Result<TrainingStatus, QueueError> {
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| QueueError::Unknown(id.to_string()))?;
        if !matches!(job.state, TrainingState::Cancelled | TrainingState::Failed) {
            return Err(QueueError::Transition {
                id: id.to_string(),
                state: job.state,
                action: "retry",
            });
        }
        job.attempt += 1;
        job.not_before = now;
        // A new attempt reports why it waits afresh.
        job.parked = None;
        self.enqueue(id);
        Ok(status(
            &self.jobs[id],
            TrainingState::Queued,
            "retry requested".into(),
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::TriggerReason;

    fn trigger(id: &str, priority: Priority) -> TrainingTrigger {
        TrainingTrigger {
            trigger_id: id.into(),
            model_key: format!("hmm/{id}"),
            tenant: None,
            reason: TriggerReason::Manual,
            instruments: vec![],
            dataset_version: None,
            feature_contract_version: None,
            hyperparams: vec![],
            seed: 1,
            priority,
            auto_promote: false,
            evidence: None,
            rerun_of: None,
            created_at: 0,
            revealed_at: None,
        }
    }

    fn started(q: &mut TrainingQueue, now: i64) -> Vec<String> {
        q.start_ready(now)
    }

    #[test]
    fn priority_first_fifo_within_and_bounded_concurrency() {
        let mut q = TrainingQueue::new(2, 3, 1_000);
        for (id, p) in [
            ("a", Priority::Low),
            ("b", Priority::Normal),
            ("c", Priority::Urgent),
            ("d", Priority::Normal),
            ("e", Priority::High),
        ] {
            assert_eq!(
                q.submit(trigger(id, p), 0).map(|s| s.state),
                Some(TrainingState::Queued)
            );
        }
        assert!(
            q.submit(trigger("a", Priority::Low), 0).is_none(),
            "a trigger is trained once"
        );
        assert_eq!(started(&mut q, 0), ["tr-c", "tr-e"]);
        assert_eq!(
            q.stats(),
            QueueStats {
                active: 2,
                queued: 3,
                capacity: 2
            }
        );
        q.complete("tr-c", vec![], Some(1), 1).expect("complete");
        assert_eq!(
            started(&mut q, 1),
            ["tr-b"],
            "normal b before normal d (FIFO)"
        );
        q.complete("tr-e", vec![], None, 2).expect("complete");
        q.complete("tr-b", vec![], None, 2).expect("complete");
        assert_eq!(started(&mut q, 2), ["tr-d", "tr-a"]);
        assert_eq!(q.stats().utilisation(), 1.0);
    }

    #[test]
    fn failures_retry_with_backoff_until_the_limit() {
        let mut q = TrainingQueue::new(1, 3, 1_000);
        q.submit(trigger("x", Priority::Normal), 0);
        assert_eq!(started(&mut q, 0), ["tr-x"]);
        let events = q.fail("tr-x", "boom", 10).expect("fail");
        assert_eq!(
            events.iter().map(|s| s.state).collect::<Vec<_>>(),
            [TrainingState::Failed, TrainingState::Queued]
        );
        assert_eq!(events[0].error.as_deref(), Some("boom"));
        assert!(started(&mut q, 500).is_empty(), "backing off");
        assert_eq!(started(&mut q, 1_010), ["tr-x"]);
        assert_eq!(q.job("tr-x").map(|j| j.attempt), Some(2));
        q.fail("tr-x", "boom", 1_020).expect("fail");
        assert!(started(&mut q, 2_000).is_empty(), "second backoff is 2 s");
        assert_eq!(started(&mut q, 3_020), ["tr-x"]);
        let last = q.fail("tr-x", "boom", 3_030).expect("fail");
        assert_eq!(last.len(), 1, "no attempts left");
        assert_eq!(q.job("tr-x").map(|j| j.state), Some(TrainingState::Failed));
        assert_eq!(q.retry("tr-x", 4_000).map(|s| s.attempt), Ok(4));
    }

    #[test]
    fn cancel_queued_or_running_and_refuse_nonsense() {
        let mut q = TrainingQueue::new(1, 1, 0);
        q.submit(trigger("r", Priority::High), 0);
        q.submit(trigger("w", Priority::Low), 0);
        started(&mut q, 0);
        assert_eq!(
            q.cancel("tr-w", 1).map(|s| s.state),
            Ok(TrainingState::Cancelled)
        );
        assert_eq!(
            q.cancel("tr-r", 1).map(|s| s.state),
            Ok(TrainingState::Cancelled)
        );
        assert_eq!(
            q.stats(),
            QueueStats {
                active: 0,
                queued: 0,
                capacity: 1
            }
        );
        assert!(matches!(
            q.cancel("tr-r", 2),
            Err(QueueError::Transition { .. })
        ));
        assert!(matches!(
            q.complete("tr-r", vec![], None, 2),
            Err(QueueError::Transition { .. })
        ));
        assert_eq!(q.cancel("nope", 2), Err(QueueError::Unknown("nope".into())));
        assert!(q.retry("tr-w", 3).is_ok());
        assert_eq!(started(&mut q, 3), ["tr-w"]);
        let p = q.progress("tr-w", "fit", 0.5, 4).expect("progress");
        assert_eq!((p.stage.as_deref(), p.progress), (Some("fit"), 0.5));
    }

    #[test]
    fn parked_jobs_free_their_slot_and_report_only_changes() {
        let mut q = TrainingQueue::new(1, 3, 1_000);
        q.submit(trigger("p", Priority::High), 0);
        q.submit(trigger("n", Priority::Normal), 0);
        assert_eq!(started(&mut q, 0), ["tr-p"]);
        let first = q
            .park(
                "tr-p",
                TrainingState::Blocked,
                "gap flag f1 open".into(),
                100,
                1,
            )
            .expect("park");
        assert_eq!(first.map(|s| s.state), Some(TrainingState::Blocked));
        assert_eq!(
            started(&mut q, 2),
            ["tr-n"],
            "the slot went to the next job"
        );
        q.complete("tr-n", vec![], None, 3).expect("complete");
        assert!(started(&mut q, 50).is_empty(), "re-checked from 100");
        assert_eq!(started(&mut q, 100), ["tr-p"]);
        let again = q
            .park(
                "tr-p",
                TrainingState::Blocked,
                "gap flag f1 open".into(),
                200,
                100,
            )
            .expect("park");
        assert!(again.is_none(), "same reason, no new event");
        assert_eq!(started(&mut q, 200), ["tr-p"]);
        assert_eq!(
            q.running_status("tr-p", 200).map(|s| s.state),
            Ok(TrainingState::Running)
        );
        assert_eq!(
            q.cancel("tr-n", 201).map(|s| s.state),
            Err(QueueError::Transition {
                id: "tr-n".into(),
                state: TrainingState::Completed,
                action: "cancel"
            })
        );
        // Cancelled while parked, then retried: the new attempt reports
        // the same reason again.
        q.park(
            "tr-p",
            TrainingState::Blocked,
            "gap flag f1 open".into(),
            300,
            202,
        )
        .expect("park");
        q.cancel("tr-p", 203).expect("cancel");
        q.retry("tr-p", 204).expect("retry");
        assert_eq!(started(&mut q, 204), ["tr-p"]);
        let after_retry = q
            .park(
                "tr-p",
                TrainingState::Blocked,
                "gap flag f1 open".into(),
                400,
                205,
            )
            .expect("park");
        assert_eq!(after_retry.map(|s| s.attempt), Some(2));
    }
}
