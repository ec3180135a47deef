//! Bounded memory of recently seen event ids, per input partition.
//!
//! A duplicate is a record re-sent after a producer or processor restarted
//! before its offsets were stored, so it lies within a bounded distance of
//! the original in the same partition. Keeping the last `window` ids of each
//! partition (and re-reading that many records before the resume point after
//! a restart, see the runner) catches every such duplicate in bounded memory.
//!
//! An id is remembered with a fingerprint of the record's key and value: a
//! repeat with the same content is a duplicate, one with different content
//! is a conflict (an outside producer reusing ids) that the runner
//! dead-letters instead of dropping.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::event_id::EventId;

#[derive(Debug)]
pub struct Dedupe {
    window: usize,
    /// topic → partition → window (looked up by `&str`, no allocation).
    partitions: HashMap<String, HashMap<i32, Window>>,
}

#[derive(Debug, Default)]
struct Window {
    order: VecDeque<EventId>,
    seen: HashMap<EventId, u64>,
}

/// What an id has been seen with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    /// The same id with the same content: a re-sent record.
    Repeat,
    /// The same id with different content.
    Conflict,
}

/// A record's content fingerprint (key and value), stable across runs.
pub fn fingerprint(key: Option<&[u8]>, payload: Option<&[u8]>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

impl Dedupe {
    pub fn new(window: usize) -> Self {
        Dedupe {
            window: window.max(1),
            partitions: HashMap::new(),
        }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Records `id` with its content's fingerprint unless it was seen.
    pub fn insert(&mut self, topic: &str, partition: i32, id: EventId, content: u64) -> Seen {
        let topic_windows = match self.partitions.get_mut(topic) {
            Some(t) => t,
            None => self.partitions.entry(topic.to_string()).or_default(),
        };
        let w = topic_windows.entry(partition).or_default();
        if let Some(&seen) = w.seen.get(&id) {
            return if seen == content {
                Seen::Repeat
            } else {
                Seen::Conflict
            };
        }
        w.seen.insert(id, content);
        w.order.push_back(id);
        if w.order.len() > self.window {
            if let Some(old) = w.order.pop_front() {
                w.seen.remove(&old);
            }
        }
        Seen::New
    }

    /// Whether `id` was seen, and with this content or another.
    pub fn check(&self, topic: &str, partition: i32, id: EventId, content: u64) -> Seen {
        match self
            .partitions
            .get(topic)
            .and_then(|t| t.get(&partition))
            .and_then(|w| w.seen.get(&id))
        {
            None => Seen::New,
            Some(&seen) if seen == content => Seen::Repeat,
            Some(_) => Seen::Conflict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_window_ids_per_partition() {
        let mut d = Dedupe::new(3);
        let id = |n: u128| EventId(n);
        assert_eq!(d.insert("t", 0, id(1), 7), Seen::New);
        assert_eq!(d.insert("t", 0, id(1), 7), Seen::Repeat);
        assert_eq!(d.insert("t", 0, id(1), 8), Seen::Conflict);
        assert_eq!(
            d.insert("t", 1, id(1), 8),
            Seen::New,
            "partitions are separate"
        );
        for n in 2..=4 {
            assert_eq!(d.insert("t", 0, id(n), 7), Seen::New);
        }
        assert_eq!(
            d.check("t", 0, id(1), 7),
            Seen::New,
            "evicted after the window"
        );
        assert_eq!(d.check("t", 0, id(4), 7), Seen::Repeat);
        assert_eq!(d.check("t", 0, id(4), 9), Seen::Conflict);
        assert_eq!(d.insert("t", 0, id(1), 8), Seen::New);
        assert_ne!(
            fingerprint(Some(b"k"), Some(b"v1")),
            fingerprint(Some(b"k"), Some(b"v2"))
        );
        assert_ne!(
            fingerprint(Some(b"kv"), None),
            fingerprint(Some(b"k"), Some(b"v"))
        );
    }
}
