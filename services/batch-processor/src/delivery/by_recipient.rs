//! A batch's statuses grouped by recipient: one sorted vector and the
//! positions in it, rather than maps keyed by recipient, as a batch names
//! ten thousand recipients and each map entry cost about a hundred bytes
//! more than its data (see docs/batch.md, memory).

use hookmesh_contracts::delivery::DeliveryStatus;

/// `(provider, message id)`: a recipient's key, borrowed from the event or
/// row that names it.
pub type KeyRef<'a> = (&'a str, &'a str);

/// Each recipient once, in key order (the order its rows are locked in,
/// so that replicas never deadlock on each other), with the statuses of
/// its events in the order they arrived. A recipient is known by its
/// position, from 0 to `len() - 1`.
#[derive(Debug, Default)]
pub struct ByRecipient<'k> {
    /// Sorted by recipient; the sort is stable, so within a recipient its
    /// events keep their order.
    events: Vec<(KeyRef<'k>, DeliveryStatus)>,
    /// Where each recipient's events start in `events`.
    starts: Vec<u32>,
}

impl<'k> ByRecipient<'k> {
    pub fn new(mut events: Vec<(KeyRef<'k>, DeliveryStatus)>) -> Self {
        events.sort_by(|a, b| a.0.cmp(&b.0));
        let starts = (0..events.len())
            .filter(|&i| i == 0 || events[i - 1].0 != events[i].0)
            .map(|i| u32::try_from(i).expect("a batch holds fewer than 2³² events"))
            .collect();
        Self { events, starts }
    }

    /// How many recipients.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The recipient at `position`.
    pub fn key(&self, position: usize) -> KeyRef<'k> {
        self.events[self.starts[position] as usize].0
    }

    /// The statuses of the recipient at `position`, in arrival order.
    pub fn statuses(&self, position: usize) -> impl Iterator<Item = DeliveryStatus> + '_ {
        let start = self.starts[position] as usize;
        let end = self
            .starts
            .get(position + 1)
            .map_or(self.events.len(), |end| *end as usize);
        self.events[start..end].iter().map(|(_, status)| *status)
    }

    /// Where `key` is, if the batch names it.
    pub fn position(&self, (provider, message_id): KeyRef<'_>) -> Option<usize> {
        self.starts
            .binary_search_by(|start| {
                let (p, m) = self.events[*start as usize].0;
                (p, m).cmp(&(provider, message_id))
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::{Bounced, Delivered, Opened};

    #[test]
    fn recipients_are_in_key_order_with_their_statuses_in_arrival_order() {
        let recipients = ByRecipient::new(vec![
            (("p", "b"), Opened),
            (("p", "a"), Delivered),
            (("p", "b"), Delivered),
            (("o", "z"), Bounced),
            (("p", "b"), Bounced),
        ]);
        assert_eq!(recipients.len(), 3);
        let keys: Vec<_> = (0..recipients.len()).map(|p| recipients.key(p)).collect();
        assert_eq!(keys, [("o", "z"), ("p", "a"), ("p", "b")]);
        let statuses: Vec<_> = recipients.statuses(2).collect();
        assert_eq!(statuses, [Opened, Delivered, Bounced]);
        assert_eq!(recipients.statuses(0).collect::<Vec<_>>(), [Bounced]);
    }

    #[test]
    fn a_key_is_found_at_its_position_and_an_unnamed_one_nowhere() {
        let recipients = ByRecipient::new(vec![
            (("p", "b"), Opened),
            (("p", "a"), Delivered),
            (("p", "a"), Opened),
        ]);
        assert_eq!(recipients.position(("p", "a")), Some(0));
        assert_eq!(recipients.position(("p", "b")), Some(1));
        assert_eq!(recipients.position(("p", "c")), None);
        assert_eq!(recipients.position(("", "a")), None);
        assert!(ByRecipient::new(Vec::new()).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    use crate::delivery::status::any_status as status;

    proptest! {
        /// The grouping it replaced, a map from each recipient to its
        /// statuses in arrival order, is what it gives, position by
        /// position; every recipient is found at its position, and a
        /// recipient the batch does not name is not found.
        #[test]
        fn it_groups_as_a_map_of_recipients_to_their_statuses_does(
            events in proptest::collection::vec(
                (("[ab]{0,2}", "[a-c]{0,3}"), status()),
                0..60,
            ),
            absent in ("[ab]{0,2}", "[d-e]{1,2}"),
        ) {
            let mut expected: BTreeMap<(&str, &str), Vec<DeliveryStatus>> = BTreeMap::new();
            for ((provider, message_id), status) in &events {
                expected.entry((provider, message_id)).or_default().push(*status);
            }
            let recipients = ByRecipient::new(
                events
                    .iter()
                    .map(|((provider, message_id), status)| {
                        ((provider.as_str(), message_id.as_str()), *status)
                    })
                    .collect(),
            );
            prop_assert_eq!(recipients.len(), expected.len());
            for (position, (key, statuses)) in expected.iter().enumerate() {
                prop_assert_eq!(recipients.key(position), *key);
                prop_assert_eq!(&recipients.statuses(position).collect::<Vec<_>>(), statuses);
                prop_assert_eq!(recipients.position(*key), Some(position));
            }
            prop_assert_eq!(recipients.position((&absent.0, &absent.1)), None);
        }
    }
}
