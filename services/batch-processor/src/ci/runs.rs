//! A pipeline run's (or job's) status; plain code, the same whatever order
//! the events arrive in.
//!
//! Status moves forward only: `started` < the end of the run. Among end
//! events (`completed`, `failed`) the one the platform timestamps later
//! wins, and on equal timestamps `failed` wins; among starts, the later. So a late `started` never
//! undoes a `failed`, a re-run that passes after a failure ends the run
//! `completed`, and the status is a function of the set of events alone.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::PipelineEventType;

/// What decides a run's status: an event's type and platform time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decisive {
    pub event_type: PipelineEventType,
    pub at: Timestamp,
}

impl Decisive {
    /// The order events are compared in.
    fn rank(self) -> (u8, i64, u8) {
        match self.event_type {
            // Starts rank by time too: with two of them (a platform that
            // reports a start twice), the same one decides whatever the
            // order they come in (found by the property test below).
            PipelineEventType::Started => (0, self.at.unix_millis(), 0),
            PipelineEventType::Completed => (1, self.at.unix_millis(), 0),
            PipelineEventType::Failed => (1, self.at.unix_millis(), 1),
        }
    }

    /// Whether `self` outranks `current` (nothing outranks an equal event,
    /// so a duplicate changes nothing).
    pub fn outranks(self, current: Option<Self>) -> bool {
        current.is_none_or(|current| self.rank() > current.rank())
    }
}

/// The decisive event among `current` and `events`.
pub fn decide(
    current: Option<Decisive>,
    events: impl IntoIterator<Item = Decisive>,
) -> Option<Decisive> {
    events.into_iter().fold(current, |best, event| {
        if event.outranks(best) {
            Some(event)
        } else {
            best
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(event_type: PipelineEventType, second: i64) -> Decisive {
        Decisive {
            event_type,
            at: Timestamp::from_unix_millis(1_700_000_000_000 + second * 1000).unwrap(),
        }
    }

    #[test]
    fn a_late_started_never_undoes_a_failure() {
        use PipelineEventType::*;
        let failed = at(Failed, 10);
        assert_eq!(decide(Some(failed), [at(Started, 20)]), Some(failed));
        assert_eq!(decide(None, [at(Started, 1), failed]), Some(failed));
    }

    #[test]
    fn the_later_end_wins_and_failure_wins_a_tie() {
        use PipelineEventType::*;
        assert_eq!(
            decide(None, [at(Completed, 30), at(Failed, 10)]),
            Some(at(Completed, 30))
        );
        assert_eq!(
            decide(None, [at(Completed, 10), at(Failed, 10)]),
            Some(at(Failed, 10))
        );
    }

    #[test]
    fn two_starts_decide_the_same_in_either_order() {
        use PipelineEventType::*;
        let (early, late) = (at(Started, 1), at(Started, 2));
        assert_eq!(decide(None, [early, late]), Some(late));
        assert_eq!(decide(None, [late, early]), Some(late));
    }

    #[test]
    fn every_order_gives_the_same_status() {
        use PipelineEventType::*;
        let events = [
            at(Started, 1),
            at(Failed, 5),
            at(Started, 6),
            at(Completed, 9),
        ];
        let forward = decide(None, events);
        let mut reversed = events;
        reversed.reverse();
        assert_eq!(decide(None, reversed), forward);
        assert_eq!(decide(decide(None, [events[3]]), events), forward);
        assert_eq!(forward, Some(at(Completed, 9)));
    }
}

/// Any order and any duplication of a run's events, delivered in any
/// batches, decides the same status.
#[cfg(test)]
mod properties {
    use hookmesh_runtime::redelivery::redelivered;
    use proptest::prelude::*;

    use super::*;

    fn event() -> impl Strategy<Value = Decisive> {
        (
            proptest::sample::select(vec![
                PipelineEventType::Started,
                PipelineEventType::Completed,
                PipelineEventType::Failed,
            ]),
            // Few distinct seconds, so that ties happen.
            0i64..5,
        )
            .prop_map(|(event_type, second)| Decisive {
                event_type,
                at: Timestamp::from_unix_millis(1_700_000_000_000 + second * 1000).unwrap(),
            })
    }

    /// A run's events, and the same events with repeats, shuffled.
    fn run_and_redelivery() -> impl Strategy<Value = (Vec<Decisive>, Vec<Decisive>)> {
        proptest::collection::vec(event(), 1..10)
            .prop_flat_map(|events| (Just(events.clone()), redelivered(events, 10)))
    }

    proptest! {
        #[test]
        fn any_order_duplication_and_batching_decides_the_same(
            (events, redelivered) in run_and_redelivery(),
            split in any::<proptest::sample::Index>(),
        ) {
            let decided = decide(None, events.iter().copied());
            let (first, second) = redelivered.split_at(split.index(redelivered.len() + 1));
            let in_two_batches = decide(decide(None, first.iter().copied()), second.iter().copied());
            prop_assert_eq!(in_two_batches, decided);
        }
    }
}
