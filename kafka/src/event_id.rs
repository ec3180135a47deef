//! Deterministic event ids. Every record autotrain writes carries one in the
//! `event_id` header; consumers drop a record whose id they have seen, which
//! turns at-least-once delivery into exactly-once effects.

use std::fmt;

use sha2::{Digest, Sha256};

/// 128 bits of SHA-256 over the parts that identify an event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// Hashes length-prefixed parts, so `("ab","c")` and `("a","bc")` differ.
    pub fn derive(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let digest = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        EventId(u128::from_be_bytes(b))
    }

    /// Id of the `index`-th output a processor made from the input `source`.
    pub fn for_output(processor: &str, source: EventId, index: usize) -> Self {
        Self::derive(&[
            b"out",
            processor.as_bytes(),
            &source.0.to_be_bytes(),
            &(index as u64).to_le_bytes(),
        ])
    }

    /// Id of a record that arrived without one: its log position names it.
    pub fn for_position(topic: &str, partition: i32, offset: i64) -> Self {
        Self::derive(&[
            b"pos",
            topic.as_bytes(),
            &partition.to_le_bytes(),
            &offset.to_le_bytes(),
        ])
    }

    /// Id of a record published from outside content (files, exchanges):
    /// the same content gets the same id, so a re-publish is recognised.
    pub fn for_content(topic: &str, key: &[u8], payload: &[u8]) -> Self {
        Self::derive(&[b"content", topic.as_bytes(), key, payload])
    }

    pub fn to_hex(self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn parse(text: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(text).ok()?;
        // Exactly 32 hex digits (`from_str_radix` alone takes a sign).
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(EventId)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_separate_their_parts() {
        let a = EventId::derive(&[b"ab", b"c"]);
        assert_eq!(a, EventId::derive(&[b"ab", b"c"]));
        assert_ne!(a, EventId::derive(&[b"a", b"bc"]));
        assert_eq!(EventId::parse(a.to_hex().as_bytes()), Some(a));
        assert_eq!(EventId::parse(b"nothex"), None);
        let signed = format!("+{}", &a.to_hex()[1..]);
        assert_eq!(
            EventId::parse(signed.as_bytes()),
            None,
            "a sign is no digit"
        );
        assert_eq!(EventId::parse(&[b'0'; 31]), None);
        let src = EventId::for_position("t", 0, 1);
        assert_ne!(
            EventId::for_output("p", src, 0),
            EventId::for_output("p", src, 1)
        );
        assert_ne!(
            EventId::for_output("p", src, 0),
            EventId::for_output("q", src, 0)
        );
    }
}
