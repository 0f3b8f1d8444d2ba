//! The engine every consumer service's events run on: seed 004's batch
//! pipeline, written once. A service describes a [`Family`] of events
//! (how to read one, its identity, how a batch of them is applied) and an
//! [`Observer`] (its metrics, under the names its seed gives them); the
//! engine does the rest, the same way for every family:
//!
//! - reading: each delivery is parsed as it arrives (its payload let go at
//!   once, before the batch is complete); one that can never be processed is
//!   dead-lettered with the reason;
//! - [`dedup`]: twins inside the batch follow their first occurrence, then
//!   memory (one minute) and the family's KV bucket answer for the whole
//!   batch at once; the family's unique constraint is the last layer;
//! - applying: the fresh events go to the family's `apply`, one transaction
//!   for the batch. When the database refuses the data itself (not when it
//!   is away), the batch is split until the events it refuses are alone, so
//!   one poison message is dead-lettered and the others are applied;
//! - [`BatchHandler`]: the one place where a batch's result becomes each
//!   message's outcome: acked only after the commit, retried (nak with
//!   backoff) when the commit fails, dead-lettered when it never can.

pub mod cache;
pub mod dedup;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hookmesh_contracts::Timestamp;

use self::cache::FastHash;
pub use self::dedup::{DedupKey, Deduplicator, Layer};
use tracing::Instrument as _;

use crate::consume::{Delivery, Handler, Outcome};
use crate::ops::DatabaseHealth;
use crate::publish::TraceHeaders;

/// An event read from a delivery, with the delivery it came in: what the
/// broker says about it is read from there rather than copied per event (a
/// batch holds ten thousand).
#[derive(Debug, Clone)]
pub struct Fresh<'d, E> {
    pub event: E,
    pub delivery: &'d Delivery,
}

impl<E> Fresh<'_, E> {
    /// When JetStream stored it: the webhook's arrival, for lag figures.
    pub fn received_at(&self) -> Timestamp {
        self.delivery.published
    }

    pub fn stream_sequence(&self) -> u64 {
        self.delivery.stream_sequence
    }

    pub fn correlation_id(&self) -> &str {
        self.delivery.correlation_id()
    }

    /// The message's W3C `traceparent`, carried on to the events it causes.
    pub fn traceparent(&self) -> &str {
        self.delivery.traceparent()
    }

    /// The trace headers of the events this one causes downstream.
    pub fn trace(&self) -> TraceHeaders {
        TraceHeaders {
            traceparent: self.traceparent().to_owned(),
            correlation_id: self.correlation_id().to_owned(),
        }
    }
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

/// Why a family could not apply a batch.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database (or another dependency) is away or failed: the batch is
    /// retried whole, later.
    #[error("{0}")]
    Unavailable(String),
    /// The database refused the data itself (a value it cannot store, a
    /// constraint it breaks): retrying the same events cannot help, so the
    /// engine isolates the events it refuses.
    #[error("{0}")]
    Refused(String),
}

impl From<sqlx::Error> for ApplyError {
    fn from(error: sqlx::Error) -> Self {
        if crate::db::is_refusal(&error) {
            Self::Refused(error.to_string())
        } else {
            Self::Unavailable(error.to_string())
        }
    }
}

/// One family of events over the engine.
pub trait Family: Send + Sync + 'static {
    type Event: Send + Sync + 'static;

    /// The family's name in logs, and the label of its metrics where its
    /// observer uses one (`delivery`, `ci`, `csr`).
    const NAME: &'static str;

    /// Reads and checks a message; an error is why it can never be
    /// processed (it is dead-lettered with that reason).
    fn parse(&self, delivery: &Delivery) -> Result<Self::Event, String>;

    /// The event's identity: deliveries with the same key are one event.
    fn dedup_key(&self, event: &Self::Event) -> DedupKey;

    /// A bounded label for the received-events metric.
    fn event_type(&self, event: &Self::Event) -> &'static str;

    /// Applies `events` in one transaction; one answer per event, in order.
    /// An error rolls the whole batch back.
    fn apply(
        &self,
        events: &[Fresh<'_, Self::Event>],
    ) -> impl Future<Output = Result<Vec<Applied>, ApplyError>> + Send;
}

/// What became of an event, for the processed-events metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// Applied to the database now.
    Applied,
    /// Logged, but nothing it refers to is known.
    Unmatched,
    /// Seen before, at any layer.
    Duplicate,
    /// Unreadable or of an unknown schema: dead-lettered.
    Invalid,
    /// Refused by the database itself: dead-lettered.
    Refused,
    /// The batch could not be committed: redelivered later.
    Retry,
}

impl Processed {
    pub fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unmatched => "unmatched",
            Self::Duplicate => "duplicate",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::Retry => "retry",
        }
    }
}

/// Where a family's figures go: each service records them under the names
/// its seed gives (004's `webhook_*`, 002's `csr_*`).
pub trait Observer: Send + Sync + std::fmt::Debug + 'static {
    /// A readable event of `event_type` arrived.
    fn received(&self, event_type: &'static str);
    /// `count` events ended as `outcome`.
    fn processed(&self, outcome: Processed, count: u64);
    /// `count` duplicates were recognised by `layer`.
    fn duplicates(&self, layer: Layer, count: u64);
    /// One event's time from its arrival in JetStream to the commit that
    /// applied it.
    fn lag(&self, seconds: f64);
    /// A batch of `size` deliveries was handled in `seconds`.
    fn batch(&self, size: usize, seconds: f64);
    /// The KV layer could not be read or written; the database constraint
    /// decided alone.
    fn dedup_fail_open(&self);
    /// One stage of a batch took `seconds`: the engine's own ([`Stage`])
    /// and those a family times inside its `apply` (its statements,
    /// commit). Where a batch's time goes, for profiles and dashboards.
    fn stage(&self, _stage: &'static str, _seconds: f64) {}
}

/// The engine's stages of a batch, as [`Observer::stage`] names them.
#[derive(Debug)]
pub struct Stage;

impl Stage {
    /// Each delivery's identity and the in-batch twins (the deliveries
    /// themselves are read as they arrive, before the batch is handed over).
    pub const PARSE: &'static str = "parse";
    /// The memory and KV layers' verdicts.
    pub const DEDUP_READ: &'static str = "dedup_read";
    /// The family's `apply`, isolation included (its own stages within).
    pub const APPLY: &'static str = "apply";
    /// Recording the committed keys (the KV writes go on off the path).
    pub const DEDUP_WRITE: &'static str = "dedup_write";
}

/// Times the stages of one piece of work, each from the end of the last.
#[derive(Debug)]
pub struct Laps {
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Default for Laps {
    fn default() -> Self {
        Self::start()
    }
}

impl Laps {
    pub fn start() -> Self {
        Self {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    /// Ends stage `name` now.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps
            .push((name, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }

    /// Hands every stage to `observer`.
    pub fn report(&self, observer: &dyn Observer) {
        for (name, seconds) in &self.laps {
            observer.stage(name, *seconds);
        }
    }
}

/// A family's batches through dedup and `apply`, as the consume loop's
/// handler.
#[derive(Debug)]
pub struct BatchHandler<F: Family> {
    family: F,
    dedup: Deduplicator,
    observer: Arc<dyn Observer>,
    database: Option<DatabaseHealth>,
}

impl<F: Family> BatchHandler<F> {
    pub fn new(family: F, dedup: Deduplicator, observer: Arc<dyn Observer>) -> Self {
        Self {
            family,
            dedup,
            observer,
            database: None,
        }
    }

    /// Notes in `database` whether batches commit (for `/readyz`).
    pub fn recording(mut self, database: DatabaseHealth) -> Self {
        self.database = Some(database);
        self
    }

    pub fn family(&self) -> &F {
        &self.family
    }
}

/// Where a parsed delivery goes.
enum Route {
    /// The first delivery of its key in this batch.
    First,
    /// The same key as the delivery at this index: shares its outcome.
    Twin(usize),
}

/// One fresh event's end.
enum Settled {
    Committed(Applied),
    Retry(String),
    Refused(String),
}

type Settling<'a> = Pin<Box<dyn Future<Output = Vec<Settled>> + Send + 'a>>;

impl<F: Family> Handler for BatchHandler<F> {
    type Arrival = Result<F::Event, String>;

    /// Each message is read as it arrives and its payload let go at once:
    /// a batch never holds its payloads (a dead letter of a read event is
    /// copied from the stream).
    fn arrive(&self, delivery: &mut Delivery) -> Self::Arrival {
        let parsed = self.family.parse(delivery);
        if parsed.is_ok() {
            delivery.release_payload();
        }
        parsed
    }

    async fn handle_arrived(
        &self,
        batch: &mut [Delivery],
        arrivals: Vec<Self::Arrival>,
    ) -> Vec<Outcome> {
        let batch: &[Delivery] = batch;
        let started = Instant::now();
        let mut laps = Laps::start();
        let name = F::NAME;
        let mut outcomes = vec![Outcome::Done; batch.len()];

        // One vector of events for the batch, built once and compacted in
        // place: a batch of ten thousand is held whole, so every copy of it
        // counts (see docs/batch.md, memory).
        let mut fresh: Vec<Fresh<F::Event>> = Vec::with_capacity(batch.len());
        let mut fresh_keys = Vec::with_capacity(batch.len());
        let mut fresh_indexes = Vec::with_capacity(batch.len());
        // Duplicates within the batch follow their first occurrence.
        let mut first_of: HashMap<DedupKey, usize, FastHash> =
            HashMap::with_capacity_and_hasher(batch.len(), FastHash::default());
        let mut routes = Vec::with_capacity(batch.len());
        let mut invalid = 0;
        for ((index, delivery), parsed) in batch.iter().enumerate().zip(arrivals) {
            match parsed {
                Ok(event) => {
                    self.observer.received(self.family.event_type(&event));
                    let key = self.family.dedup_key(&event);
                    if let Some(first) = first_of.get(&key) {
                        routes.push((index, Route::Twin(*first)));
                        continue;
                    }
                    first_of.insert(key.clone(), index);
                    routes.push((index, Route::First));
                    fresh.push(Fresh { event, delivery });
                    fresh_keys.push(key);
                    fresh_indexes.push(index);
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
        self.observer.processed(Processed::Invalid, invalid);
        drop(first_of);
        laps.lap(Stage::PARSE);

        let verdicts = self.dedup.seen(&fresh_keys).await;
        let mut layer_hits: HashMap<Layer, u64> = HashMap::new();
        for layer in verdicts.iter().flatten() {
            *layer_hits.entry(*layer).or_default() += 1;
        }
        keep_unseen(&mut fresh, &verdicts);
        keep_unseen(&mut fresh_keys, &verdicts);
        keep_unseen(&mut fresh_indexes, &verdicts);

        laps.lap(Stage::DEDUP_READ);

        if !fresh.is_empty() {
            let settled = self.settle_isolating(&fresh).await;
            laps.lap(Stage::APPLY);
            let committed_at = Timestamp::now();
            let mut counts: HashMap<Applied, u64> = HashMap::new();
            let (mut retried, mut refused) = (0, 0);
            let mut committed_keys = Vec::with_capacity(fresh_keys.len());
            for (((settled, event), key), index) in settled
                .into_iter()
                .zip(&fresh)
                .zip(fresh_keys)
                .zip(fresh_indexes)
            {
                let delivery = event.delivery;
                match settled {
                    Settled::Committed(applied) => {
                        if applied != Applied::Duplicate {
                            self.observer
                                .lag(event.received_at().seconds_until(committed_at));
                        }
                        *counts.entry(applied).or_default() += 1;
                        committed_keys.push(key);
                    }
                    Settled::Retry(reason) => {
                        retried += 1;
                        outcomes[index] = Outcome::retry(delivery.delivered, reason);
                    }
                    Settled::Refused(reason) => {
                        refused += 1;
                        tracing::warn!(
                            family = name,
                            subject = %delivery.subject(),
                            stream_sequence = delivery.stream_sequence,
                            correlation_id = delivery.correlation_id(),
                            %reason,
                            "The database refuses an event; dead-lettering it."
                        );
                        outcomes[index] =
                            Outcome::dead_letter(format!("the database refuses it: {reason}"));
                    }
                }
            }
            let count = |applied| counts.get(&applied).copied().unwrap_or(0);
            *layer_hits.entry(Layer::Database).or_default() += count(Applied::Duplicate);
            self.observer
                .processed(Processed::Applied, count(Applied::New));
            self.observer
                .processed(Processed::Unmatched, count(Applied::Unmatched));
            self.observer.processed(Processed::Retry, retried);
            self.observer.processed(Processed::Refused, refused);
            if let Some(database) = &self.database {
                database.record(retried == 0);
            }
            self.dedup.remember(&committed_keys).await;
            laps.lap(Stage::DEDUP_WRITE);
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
            if hits > 0 {
                self.observer.duplicates(layer, hits);
            }
            duplicates += hits;
        }
        self.observer.processed(Processed::Duplicate, duplicates);
        laps.report(self.observer.as_ref());
        self.observer
            .batch(batch.len(), started.elapsed().as_secs_f64());
        outcomes
    }
}

/// Keeps the items whose verdict is `None` (seen by no layer), in order.
fn keep_unseen<T>(items: &mut Vec<T>, verdicts: &[Option<Layer>]) {
    let mut verdicts = verdicts.iter();
    items.retain(|_| verdicts.next().is_some_and(Option::is_none));
}

impl<F: Family> BatchHandler<F> {
    /// Applies `events`; when the database refuses the batch's data, applies
    /// each half apart, down to single events, so that only the events it
    /// refuses are left out. One answer per event, in order.
    fn settle_isolating<'a>(&'a self, events: &'a [Fresh<'_, F::Event>]) -> Settling<'a> {
        Box::pin(async move {
            // One client span for the batch's transaction.
            let transaction = hookmesh_nats::trace::database_span(
                crate::db::Backend::connected_system(),
                "transaction",
                F::NAME,
            );
            match self.family.apply(events).instrument(transaction).await {
                Ok(applied) if applied.len() == events.len() => {
                    applied.into_iter().map(Settled::Committed).collect()
                }
                Ok(applied) => {
                    tracing::error!(
                        family = F::NAME,
                        expected = events.len(),
                        got = applied.len(),
                        "A family answered for the wrong number of events; retrying the batch."
                    );
                    let reason = "internal: wrong number of answers";
                    events
                        .iter()
                        .map(|_| Settled::Retry(reason.to_owned()))
                        .collect()
                }
                Err(ApplyError::Unavailable(reason)) => {
                    tracing::warn!(family = F::NAME, events = events.len(), %reason, "The batch could not be committed; it will be redelivered.");
                    events
                        .iter()
                        .map(|_| Settled::Retry(reason.clone()))
                        .collect()
                }
                Err(ApplyError::Refused(reason)) if events.len() == 1 => {
                    vec![Settled::Refused(reason)]
                }
                Err(ApplyError::Refused(reason)) => {
                    tracing::warn!(family = F::NAME, events = events.len(), %reason, "The database refuses part of a batch; applying it in parts to find which.");
                    let (left, right) = events.split_at(events.len() / 2);
                    let mut settled = self.settle_isolating(left).await;
                    settled.extend(self.settle_isolating(right).await);
                    settled
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
