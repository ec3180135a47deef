//! Which topics exist, what they carry, and typed handles to them.
//!
//! # Layout
//! - `../catalogue.toml` — the declarative catalogue (name, key, payload,
//!   partitions, cleanup policy, retention, dead-letter topic).
//! - [`catalogue`](mod@catalogue) — the parsed catalogue.
//! - [`handle`] — [`Topic<T>`]: a topic name bound to its payload type, so
//!   writing a `Bar` to `param.updates` does not compile.
//! - [`handles`] — one constant per catalogue entry.
//!
//! Where this sits: above `schemas` (payload types), below `kafka` (which
//! creates topics and moves records).

pub mod catalogue;
pub mod handle;
pub mod handles;

pub use catalogue::{catalogue, Catalogue, CatalogueError, CleanupPolicy, TopicSpec};
pub use handle::Topic;
pub use handles::*;
