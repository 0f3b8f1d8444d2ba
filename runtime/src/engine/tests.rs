//! The engine with a family of its own and no broker: twins, invalid and
//! poison messages, an unavailable database, and every layer of dedup.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// An observer that counts what it is told.
#[derive(Debug, Default)]
pub(crate) struct Counting {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Counting {
    fn add(&self, name: String, count: u64) {
        *self.counts.lock().unwrap().entry(name).or_default() += count;
    }

    pub(crate) fn get(&self, name: &str) -> u64 {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl Observer for Counting {
    fn received(&self, event_type: &'static str) {
        self.add(format!("received.{event_type}"), 1);
    }
    fn processed(&self, outcome: Processed, count: u64) {
        self.add(format!("processed.{}", outcome.label()), count);
    }
    fn duplicates(&self, layer: Layer, count: u64) {
        self.add(format!("duplicates.{}", layer.label()), count);
    }
    fn lag(&self, _seconds: f64) {
        self.add("lag".to_owned(), 1);
    }
    fn batch(&self, size: usize, _seconds: f64) {
        self.add("batches".to_owned(), 1);
        self.add("batched".to_owned(), size as u64);
    }
    fn dedup_fail_open(&self) {
        self.add("fail_open".to_owned(), 1);
    }
}

/// Events are `<id>` or `poison:<id>`; the "database" keeps applied ids,
/// refuses any transaction holding a poison event, and can be away.
#[derive(Debug, Default)]
struct Ledger {
    applied: Mutex<Vec<String>>,
    down: AtomicBool,
    transactions: AtomicUsize,
}

impl Family for Ledger {
    type Event = String;
    const NAME: &'static str = "ledger";

    fn parse(&self, delivery: &Delivery) -> Result<String, String> {
        std::str::from_utf8(delivery.payload())
            .ok()
            .filter(|text| !text.is_empty() && !text.contains(' '))
            .map(str::to_owned)
            .ok_or_else(|| "not an event id".to_owned())
    }

    fn dedup_key(&self, event: &String) -> DedupKey {
        DedupKey::new("ledger", event)
    }

    fn event_type(&self, _event: &String) -> &'static str {
        "entry"
    }

    async fn apply(&self, events: &[Fresh<'_, String>]) -> Result<Vec<Applied>, ApplyError> {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            return Err(ApplyError::Unavailable("connection refused".to_owned()));
        }
        if events.iter().any(|fresh| fresh.event.starts_with("poison")) {
            return Err(ApplyError::Refused("invalid byte sequence".to_owned()));
        }
        let mut applied = self.applied.lock().unwrap();
        let before: HashSet<String> = applied.iter().cloned().collect();
        Ok(events
            .iter()
            .map(|fresh| {
                if before.contains(&fresh.event) {
                    Applied::Duplicate
                } else {
                    applied.push(fresh.event.clone());
                    Applied::New
                }
            })
            .collect())
    }
}

fn handler() -> (BatchHandler<Ledger>, Arc<Counting>) {
    let observer = Arc::new(Counting::default());
    let dedup = Deduplicator::new("ledger", None, observer.clone());
    (
        BatchHandler::new(Ledger::default(), dedup, observer.clone()),
        observer,
    )
}

fn batch(ids: &[&str]) -> Vec<Delivery> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| Delivery::detached("ledger.entry", id.to_string()).at(i as u64 + 1, 1))
        .collect()
}

#[tokio::test]
async fn twins_in_one_batch_are_applied_once_and_share_the_outcome() {
    let (handler, observer) = handler();
    let outcomes = handler.handle(&mut batch(&["a", "b", "a", "a"])).await;
    assert_eq!(outcomes, vec![Outcome::Done; 4]);
    assert_eq!(*handler.family().applied.lock().unwrap(), ["a", "b"]);
    assert_eq!(observer.get("duplicates.memory"), 2);
    assert_eq!(observer.get("processed.applied"), 2);
    assert_eq!(observer.get("processed.duplicate"), 2);
}

#[tokio::test]
async fn an_unreadable_message_is_dead_lettered_and_the_rest_applied() {
    let (handler, observer) = handler();
    let mut deliveries = batch(&["a", "not an id", "b"]);
    let outcomes = handler.handle(&mut deliveries).await;
    assert_eq!(outcomes[0], Outcome::Done);
    assert_eq!(outcomes[1], Outcome::dead_letter("not an event id"));
    assert_eq!(outcomes[2], Outcome::Done);
    assert_eq!(*handler.family().applied.lock().unwrap(), ["a", "b"]);
    assert_eq!(observer.get("processed.invalid"), 1);
    // Read events let their payloads go; the unreadable one keeps its own
    // for its dead letter.
    let payloads: Vec<&[u8]> = deliveries.iter().map(Delivery::payload).collect();
    assert_eq!(payloads, [&b""[..], b"not an id", b""]);
}

#[tokio::test]
async fn a_poison_message_the_database_refuses_is_isolated_and_the_rest_applied() {
    let (handler, observer) = handler();
    let ids: Vec<String> = (0..64)
        .map(|i| {
            if i == 37 {
                "poison:37".to_owned()
            } else {
                format!("e{i}")
            }
        })
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let outcomes = handler.handle(&mut batch(&ids)).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 37 {
            assert!(
                matches!(outcome, Outcome::DeadLetter { reason } if reason.contains("invalid byte sequence")),
                "{outcome:?}"
            );
        } else {
            assert_eq!(outcome, &Outcome::Done, "event {i}");
        }
    }
    assert_eq!(handler.family().applied.lock().unwrap().len(), 63);
    assert_eq!(observer.get("processed.refused"), 1);
    assert_eq!(observer.get("processed.applied"), 63);
    // One failed try per halving on the poison's side, one commit per
    // clean half: logarithmic in the batch, not one transaction per event.
    let transactions = handler.family().transactions.load(Ordering::Relaxed);
    assert!(transactions <= 2 * 7 + 1, "{transactions} transactions");
}

#[tokio::test]
async fn a_database_away_retries_every_fresh_event_and_remembers_none() {
    let (handler, observer) = handler();
    handler.family().down.store(true, Ordering::Relaxed);
    let outcomes = handler.handle(&mut batch(&["a", "b", "a"])).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Retry { reason, .. } if reason == "connection refused")),
        "{outcomes:?}"
    );
    assert_eq!(observer.get("processed.retry"), 2);
    handler.family().down.store(false, Ordering::Relaxed);
    let outcomes = handler.handle(&mut batch(&["a", "b"])).await;
    assert_eq!(outcomes, vec![Outcome::Done; 2]);
    assert_eq!(
        observer.get("processed.applied"),
        2,
        "not taken for duplicates"
    );
}

#[tokio::test]
async fn a_redelivery_is_caught_in_memory_and_a_forgotten_one_by_the_database() {
    let (handler, observer) = handler();
    handler.handle(&mut batch(&["a"])).await;
    handler.handle(&mut batch(&["a"])).await;
    assert_eq!(observer.get("duplicates.memory"), 1);

    // Another replica's memory does not know it; its database does.
    let dedup = Deduplicator::new("ledger", None, observer.clone());
    let other = BatchHandler::new(Ledger::default(), dedup, observer.clone());
    other.family().applied.lock().unwrap().push("a".to_owned());
    assert_eq!(other.handle(&mut batch(&["a"])).await, vec![Outcome::Done]);
    assert_eq!(observer.get("duplicates.database"), 1);
    assert_eq!(other.family().applied.lock().unwrap().len(), 1);
}
