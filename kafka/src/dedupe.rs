//! Bounded memory of recently seen event ids, per input partition.
//!
//! A duplicate is a record re-sent after a producer or processor restarted
//! before its offsets were stored, so it lies within a bounded distance of
//! the original in the same partition. Keeping the last `window` ids of each
//! partition (and re-reading that many records before the resume point after
//! a restart, see the runner) catches every such duplicate in bounded memory.

use std::collections::{HashMap, HashSet, VecDeque};

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
    seen: HashSet<EventId>,
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

    /// Records `id`; returns false if it was already seen (a duplicate).
    pub fn insert(&mut self, topic: &str, partition: i32, id: EventId) -> bool {
        let topic_windows = match self.partitions.get_mut(topic) {
            Some(t) => t,
            None => self.partitions.entry(topic.to_string()).or_default(),
        };
        let w = topic_windows.entry(partition).or_default();
        if !w.seen.insert(id) {
            return false;
        }
        w.order.push_back(id);
        if w.order.len() > self.window {
            if let Some(old) = w.order.pop_front() {
                w.seen.remove(&old);
            }
        }
        true
    }

    pub fn contains(&self, topic: &str, partition: i32, id: EventId) -> bool {
        self.partitions
            .get(topic)
            .and_then(|t| t.get(&partition))
            .is_some_and(|w| w.seen.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_window_ids_per_partition() {
        let mut d = Dedupe::new(3);
        let id = |n: u128| EventId(n);
        assert!(d.insert("t", 0, id(1)));
        assert!(!d.insert("t", 0, id(1)));
        assert!(d.insert("t", 1, id(1)), "partitions are separate");
        for n in 2..=4 {
            assert!(d.insert("t", 0, id(n)));
        }
        assert!(!d.contains("t", 0, id(1)), "evicted after the window");
        assert!(d.contains("t", 0, id(4)));
        assert!(d.insert("t", 0, id(1)));
    }
}
