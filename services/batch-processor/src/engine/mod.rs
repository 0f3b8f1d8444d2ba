//! The batch engine both families run on, seed 004's components as small
//! modules with one job each:
//!
//! - buffering: the runtime's consume loop hands over a batch when it holds
//!   `HOOKMESH_BATCH_SIZE` events or its first event has waited
//!   `HOOKMESH_BATCH_INTERVAL_MS`, whichever comes first, and on shutdown
//!   settles what it holds;
//! - [`dedup`]: memory, then KV, for the whole batch at once;
//! - [`enrich`]: cached, batched, bounded lookups (used by the delivery
//!   family);
//! - the family's `apply`: one transaction per batch, with the database
//!   constraint as the last dedup layer. Seed 004 groups events by type so
//!   that each type is one update; here the event type is a column, so one
//!   set-based statement per table covers every type of the batch, and the
//!   events about one recipient or run are folded into one row change;
//! - [`BatchHandler`]: the order of those steps, and the one place where a
//!   batch's result becomes each message's outcome: every message is acked
//!   only after the commit, and the whole batch is retried (nak with
//!   backoff) when the commit fails.

pub mod cache;
pub mod dedup;
pub mod enrich;

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use hookmesh_contracts::Timestamp;
use hookmesh_runtime::{BoxError, Delivery, Handler, Outcome};

use self::dedup::{DedupKey, Deduplicator, Layer};
use crate::telemetry::{BatchMetrics, Processed};

/// An event read from a delivery, with what the broker says about it.
#[derive(Debug, Clone)]
pub struct Fresh<E> {
    pub event: E,
    /// When JetStream stored it: the webhook's arrival, for lag figures.
    pub received_at: Timestamp,
    pub stream_sequence: u64,
    pub correlation_id: String,
}

/// What the database made of a fresh event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applied {
    /// Applied now.
    New,
    /// Logged, but nothing it refers to is known (a message id of no
    /// registered recipient): acknowledged, counted, not applied.
    Unmatched,
    /// The unique constraint had it already.
    Duplicate,
}

/// One family of events over the engine.
pub trait Family: Send + Sync + 'static {
    type Event: Send + Sync + 'static;

    /// `delivery` or `ci`: the metrics label and the first part of the
    /// dedup keys.
    const NAME: &'static str;

    /// Reads and checks a message; an error is why it can never be
    /// processed (it is dead-lettered with that reason).
    fn parse(&self, delivery: &Delivery) -> Result<Self::Event, String>;

    /// The event's identity, isolated by source and event type.
    fn dedup_key(&self, event: &Self::Event) -> DedupKey;

    /// A bounded label for `webhooks_received_total`.
    fn event_type(&self, event: &Self::Event) -> &'static str;

    /// Applies `events` in one transaction; one answer per event, in order.
    /// An error rolls the whole batch back.
    fn apply(
        &self,
        events: Vec<Fresh<Self::Event>>,
    ) -> impl Future<Output = Result<Vec<Applied>, BoxError>> + Send;
}

/// A family's batches through dedup and `apply`, as the consume loop's
/// handler.
#[derive(Debug)]
pub struct BatchHandler<F: Family> {
    family: F,
    dedup: Deduplicator,
    metrics: BatchMetrics,
}

impl<F: Family> BatchHandler<F> {
    pub fn new(family: F, dedup: Deduplicator, metrics: BatchMetrics) -> Self {
        Self {
            family,
            dedup,
            metrics,
        }
    }
}

/// Where a parsed delivery goes.
enum Route {
    /// The first delivery of its key in this batch.
    First,
    /// The same key as the delivery at this index: shares its outcome.
    Twin(usize),
}

impl<F: Family> Handler for BatchHandler<F> {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let started = Instant::now();
        let name = F::NAME;
        let mut outcomes = vec![Outcome::Done; batch.len()];

        let mut parsed = Vec::with_capacity(batch.len());
        let mut invalid = 0;
        for (index, delivery) in batch.iter().enumerate() {
            match self.family.parse(delivery) {
                Ok(event) => {
                    self.metrics.received(name, self.family.event_type(&event));
                    let key = self.family.dedup_key(&event);
                    parsed.push((index, key, event));
                }
                Err(reason) => {
                    invalid += 1;
                    tracing::warn!(
                        family = name,
                        subject = %delivery.subject(),
                        stream_sequence = delivery.stream_sequence,
                        correlation_id = delivery.correlation_id(),
                        %reason,
                        "An event can never be processed; dead-lettering it."
                    );
                    outcomes[index] = Outcome::dead_letter(reason);
                }
            }
        }
        self.metrics.processed(name, Processed::Invalid, invalid);

        // Duplicates within the batch follow their first occurrence.
        let mut first_of: HashMap<DedupKey, usize> = HashMap::new();
        let mut routes = Vec::with_capacity(parsed.len());
        let mut firsts = Vec::new();
        let mut keys = Vec::new();
        for (index, key, event) in parsed {
            match first_of.get(&key) {
                Some(first) => routes.push((index, Route::Twin(*first))),
                None => {
                    first_of.insert(key.clone(), index);
                    routes.push((index, Route::First));
                    firsts.push((index, event));
                    keys.push(key);
                }
            }
        }
        drop(first_of);

        let verdicts = self.dedup.seen(&keys).await;
        let mut layer_hits: HashMap<Layer, u64> = HashMap::new();
        let mut fresh = Vec::new();
        let mut fresh_keys = Vec::new();
        let mut fresh_indexes = Vec::new();
        for (((index, event), key), verdict) in firsts.into_iter().zip(keys).zip(verdicts) {
            match verdict {
                Some(layer) => *layer_hits.entry(layer).or_default() += 1,
                None => {
                    let delivery = &batch[index];
                    fresh.push(Fresh {
                        event,
                        received_at: delivery.published,
                        stream_sequence: delivery.stream_sequence,
                        correlation_id: delivery.correlation_id().to_owned(),
                    });
                    fresh_keys.push(key);
                    fresh_indexes.push(index);
                }
            }
        }

        if !fresh.is_empty() {
            let count = fresh.len();
            let arrivals: Vec<Timestamp> = fresh.iter().map(|f| f.received_at).collect();
            match self.family.apply(fresh).await {
                Ok(applied) if applied.len() == count => {
                    let committed = Timestamp::now();
                    for (arrived, answer) in arrivals.iter().zip(&applied) {
                        if *answer != Applied::Duplicate {
                            self.metrics.lag(name, arrived.seconds_until(committed));
                        }
                    }
                    let mut by_outcome: HashMap<Applied, u64> = HashMap::new();
                    for answer in &applied {
                        *by_outcome.entry(*answer).or_default() += 1;
                    }
                    let get = |answer| by_outcome.get(&answer).copied().unwrap_or(0);
                    *layer_hits.entry(Layer::Database).or_default() += get(Applied::Duplicate);
                    self.metrics
                        .processed(name, Processed::Applied, get(Applied::New));
                    self.metrics
                        .processed(name, Processed::Unmatched, get(Applied::Unmatched));
                    self.dedup.remember(&fresh_keys).await;
                }
                Ok(applied) => {
                    tracing::error!(
                        family = name,
                        expected = count,
                        got = applied.len(),
                        "A family answered for the wrong number of events; retrying the batch."
                    );
                    self.retry(
                        &mut outcomes,
                        batch,
                        &fresh_indexes,
                        "internal: wrong number of answers",
                    );
                }
                Err(error) => {
                    tracing::warn!(family = name, events = count, %error, "The batch could not be committed; it will be redelivered.");
                    self.retry(&mut outcomes, batch, &fresh_indexes, &error.to_string());
                }
            }
        }

        let mut twins = 0;
        for (index, route) in routes {
            if let Route::Twin(first) = route {
                outcomes[index] = outcomes[first].clone();
                if outcomes[index] == Outcome::Done {
                    twins += 1;
                }
            }
        }
        *layer_hits.entry(Layer::Memory).or_default() += twins;
        let mut duplicates = 0;
        for (layer, hits) in layer_hits {
            self.metrics.duplicates(name, layer.label(), hits);
            duplicates += hits;
        }
        self.metrics
            .processed(name, Processed::Duplicate, duplicates);
        self.metrics
            .batch(name, batch.len(), started.elapsed().as_secs_f64());
        outcomes
    }
}

impl<F: Family> BatchHandler<F> {
    fn retry(&self, outcomes: &mut [Outcome], batch: &[Delivery], indexes: &[usize], reason: &str) {
        self.metrics
            .processed(F::NAME, Processed::Retry, indexes.len() as u64);
        for index in indexes {
            outcomes[*index] = Outcome::retry(batch[*index].delivered, reason);
        }
    }
}
