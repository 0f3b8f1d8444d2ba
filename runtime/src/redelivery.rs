//! A strategy the services' property tests share (feature `proptest`):
//! events as JetStream may deliver them — any of them again, in any order.

use proptest::prelude::*;

/// `events` (at least one), and up to `max_repeats - 1` of them delivered
/// again, all shuffled.
pub fn redelivered<T: Clone + std::fmt::Debug + 'static>(
    events: Vec<T>,
    max_repeats: usize,
) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(proptest::sample::select(events.clone()), 0..max_repeats)
        .prop_map(move |repeats| [events.clone(), repeats].concat())
        .prop_shuffle()
}
