//! A recipient's delivery status and what it counts toward; plain code,
//! the same whatever order or batching the events arrive in.
//!
//! **Status** moves forward only, along one total order:
//! `sent < delivered < opened < clicked < failed < bounced < complained`.
//! The ladder `sent…clicked` is the message's progress; `failed`, `bounced`
//! and `complained` end it: once one is recorded, no ladder event changes
//! the status. A recipient's status is the greatest of its events, so a
//! late `delivered` never undoes an `opened`. (Two ending events for one
//! message do not happen in practice; if they did, the later in the order
//! would stand, whatever order they came in.)
//!
//! **Counters** count distinct recipients by what their events show:
//! `delivered` counts every recipient with a `delivered`, `opened`,
//! `clicked` or `complained` event (each implies delivery), `opened` those
//! with `opened` or `clicked`, and `clicked`, `bounced`, `complained` and
//! `failed` those with that event. A recipient's evidence is kept as a bit
//! set, and a counter moves only when a bit is first set, so no duplicate
//! or replay can move it twice and none can exceed the campaign's size.
//!
//! **Settled** recipients have any status but `sent`; a campaign is
//! complete when all its recipients are settled.

use hookmesh_contracts::delivery::{CampaignCounts, DeliveryStatus};

/// Position in the order statuses are applied in.
pub fn precedence(status: DeliveryStatus) -> u8 {
    match status {
        DeliveryStatus::Sent => 0,
        DeliveryStatus::Delivered => 1,
        DeliveryStatus::Opened => 2,
        DeliveryStatus::Clicked => 3,
        DeliveryStatus::Failed => 4,
        DeliveryStatus::Bounced => 5,
        DeliveryStatus::Complained => 6,
    }
}

/// The counters, one bit each in a recipient's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Delivered = 1,
    Opened = 2,
    Clicked = 4,
    Bounced = 8,
    Complained = 16,
    Failed = 32,
}

impl Counter {
    pub const ALL: [Self; 6] = [
        Self::Delivered,
        Self::Opened,
        Self::Clicked,
        Self::Bounced,
        Self::Complained,
        Self::Failed,
    ];

    pub fn bit(self) -> i64 {
        self as i64
    }
}

/// The counters an event of `status` is evidence for.
pub fn evidence_of(status: DeliveryStatus) -> i64 {
    use Counter::*;
    match status {
        DeliveryStatus::Sent => 0,
        DeliveryStatus::Delivered => Delivered.bit(),
        DeliveryStatus::Opened => Delivered.bit() | Opened.bit(),
        DeliveryStatus::Clicked => Delivered.bit() | Opened.bit() | Clicked.bit(),
        DeliveryStatus::Bounced => Bounced.bit(),
        DeliveryStatus::Complained => Delivered.bit() | Complained.bit(),
        DeliveryStatus::Failed => Failed.bit(),
    }
}

/// What the database holds for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientState {
    pub status: DeliveryStatus,
    pub evidence: i64,
}

impl RecipientState {
    pub const NEW: Self = Self {
        status: DeliveryStatus::Sent,
        evidence: 0,
    };

    /// The state after an event of `status`.
    pub fn with(self, status: DeliveryStatus) -> Self {
        Self {
            status: if precedence(status) > precedence(self.status) {
                status
            } else {
                self.status
            },
            evidence: self.evidence | evidence_of(status),
        }
    }

    pub fn settled(self) -> bool {
        self.status != DeliveryStatus::Sent
    }
}

/// How a campaign's counters move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterDelta {
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub bounced: i64,
    pub complained: i64,
    pub failed: i64,
    pub settled: i64,
}

impl CounterDelta {
    /// The move of a recipient from `before` to `after`.
    pub fn between(before: RecipientState, after: RecipientState) -> Self {
        let added = after.evidence & !before.evidence;
        let count = |counter: Counter| i64::from(added & counter.bit() != 0);
        Self {
            delivered: count(Counter::Delivered),
            opened: count(Counter::Opened),
            clicked: count(Counter::Clicked),
            bounced: count(Counter::Bounced),
            complained: count(Counter::Complained),
            failed: count(Counter::Failed),
            settled: i64::from(after.settled() && !before.settled()),
        }
    }

    pub fn add(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.opened += other.opened;
        self.clicked += other.clicked;
        self.bounced += other.bounced;
        self.complained += other.complained;
        self.failed += other.failed;
        self.settled += other.settled;
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// The counts a set of recipient states adds up to (for checks and models).
pub fn counts_of(states: impl IntoIterator<Item = RecipientState>) -> (CampaignCounts, u64) {
    let mut counts = CampaignCounts::default();
    let mut settled = 0;
    for state in states {
        let has = |counter: Counter| u64::from(state.evidence & counter.bit() != 0);
        counts.delivered += has(Counter::Delivered);
        counts.opened += has(Counter::Opened);
        counts.clicked += has(Counter::Clicked);
        counts.bounced += has(Counter::Bounced);
        counts.complained += has(Counter::Complained);
        counts.failed += has(Counter::Failed);
        settled += u64::from(state.settled());
    }
    (counts, settled)
}

#[cfg(test)]
mod tests {
    use hookmesh_contracts::validation::StrEnum as _;

    use super::*;

    fn after(events: &[DeliveryStatus]) -> RecipientState {
        events
            .iter()
            .fold(RecipientState::NEW, |state, status| state.with(*status))
    }

    #[test]
    fn status_only_moves_forward() {
        use DeliveryStatus::*;
        assert_eq!(after(&[Opened, Delivered]).status, Opened);
        assert_eq!(after(&[Clicked, Opened, Delivered, Sent]).status, Clicked);
        assert_eq!(after(&[Bounced, Delivered]).status, Bounced);
        assert_eq!(after(&[Delivered, Complained, Clicked]).status, Complained);
    }

    #[test]
    fn every_order_of_every_set_of_events_ends_in_the_same_state() {
        let all: Vec<DeliveryStatus> = DeliveryStatus::VARIANTS.iter().map(|(_, s)| *s).collect();
        // Every subset, in forward and reverse order, and one at a time
        // versus folded in batches.
        for mask in 0u32..(1 << all.len()) {
            let events: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, s)| *s)
                .collect();
            let forward = after(&events);
            let mut reversed = events.clone();
            reversed.reverse();
            assert_eq!(after(&reversed), forward, "{events:?}");
            let twice: Vec<_> = events.iter().chain(&events).copied().collect();
            assert_eq!(after(&twice), forward, "{events:?} twice");
        }
    }

    #[test]
    fn counters_move_once_per_recipient_and_implied_statuses_count() {
        use DeliveryStatus::*;
        let mut total = CounterDelta::default();
        let mut state = RecipientState::NEW;
        for status in [Clicked, Delivered, Opened, Clicked, Complained] {
            let next = state.with(status);
            total.add(CounterDelta::between(state, next));
            state = next;
        }
        assert_eq!(
            total,
            CounterDelta {
                delivered: 1,
                opened: 1,
                clicked: 1,
                complained: 1,
                settled: 1,
                ..CounterDelta::default()
            }
        );
        let (counts, settled) = counts_of([state, RecipientState::NEW.with(Bounced)]);
        assert_eq!((counts.delivered, counts.bounced, settled), (1, 1, 2));
    }

    #[test]
    fn a_sent_event_changes_nothing() {
        let next = RecipientState::NEW.with(DeliveryStatus::Sent);
        assert_eq!(next, RecipientState::NEW);
        assert!(CounterDelta::between(RecipientState::NEW, next).is_zero());
    }
}

/// Any status, for the property tests of the family's plain code.
#[cfg(test)]
pub(crate) fn any_status() -> impl proptest::strategy::Strategy<Value = DeliveryStatus> {
    use hookmesh_contracts::validation::StrEnum as _;
    proptest::sample::select(
        DeliveryStatus::VARIANTS
            .iter()
            .map(|(_, status)| *status)
            .collect::<Vec<_>>(),
    )
}

/// Any order and any duplication of one recipient's events ends in the same
/// state, and the counters move once per recipient whatever the replays.
#[cfg(test)]
mod properties {
    use hookmesh_runtime::redelivery::redelivered;
    use proptest::prelude::*;

    use super::*;

    use super::any_status as status;

    /// The events, and the same events with repeats, shuffled.
    fn events_and_replay() -> impl Strategy<Value = (Vec<DeliveryStatus>, Vec<DeliveryStatus>)> {
        proptest::collection::vec(status(), 1..12)
            .prop_flat_map(|events| (Just(events.clone()), redelivered(events, 12)))
    }

    /// The state after `events`, and the counters' total move on the way.
    fn apply(events: &[DeliveryStatus]) -> (RecipientState, CounterDelta) {
        let mut state = RecipientState::NEW;
        let mut total = CounterDelta::default();
        for status in events {
            let next = state.with(*status);
            total.add(CounterDelta::between(state, next));
            state = next;
        }
        (state, total)
    }

    proptest! {
        #[test]
        fn any_order_and_duplication_ends_in_the_same_state((events, replay) in events_and_replay()) {
            let (state, total) = apply(&events);
            let (replayed, replayed_total) = apply(&replay);
            prop_assert_eq!(state, replayed);
            prop_assert_eq!(total, replayed_total);
            // The counters moved exactly to what the final state shows.
            let (counts, settled) = counts_of([state]);
            prop_assert_eq!(
                (total.delivered, total.opened, total.clicked, total.bounced, total.complained, total.failed, total.settled),
                (counts.delivered as i64, counts.opened as i64, counts.clicked as i64, counts.bounced as i64, counts.complained as i64, counts.failed as i64, settled as i64)
            );
            // The status is the greatest event's.
            let greatest = events.iter().copied().max_by_key(|s| precedence(*s)).unwrap();
            prop_assert_eq!(precedence(state.status), precedence(greatest));
        }
    }
}
