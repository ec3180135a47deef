//! [`Topic<T>`]: a topic name that only accepts its own payload type.

use std::fmt;
use std::marker::PhantomData;

use autotrain_schemas::Payload;

/// A catalogue topic carrying payloads of type `T`.
///
/// Producers take a `Topic<T>` and a `&T`, so the compiler rejects a `Bar`
/// sent to `param.updates`:
///
/// ```compile_fail
/// use autotrain_schemas::Bar;
/// fn send<T: autotrain_schemas::Payload>(_: autotrain_topics::Topic<T>, _: &T) {}
/// fn publish(bar: &Bar) {
///     send(autotrain_topics::PARAM_UPDATES, bar);
/// }
/// ```
pub struct Topic<T> {
    name: &'static str,
    _payload: PhantomData<fn() -> T>,
}

impl<T: Payload> Topic<T> {
    pub const fn new(name: &'static str) -> Self {
        Topic {
            name,
            _payload: PhantomData,
        }
    }

    /// The catalogue name (before any deployment prefix).
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Topic<T> {}

impl<T: Payload> fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic<{}>({})", T::NAME, self.name)
    }
}
