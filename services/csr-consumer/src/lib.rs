//! csr-consumer: buddy-system events (seed 002) become CSR metrics and
//! participant journeys, exactly once.
//!
//! - [`facts`]: what an event says, and the journey rules;
//! - [`report`]: daily metrics from facts;
//! - [`store`]: the tables and the one-transaction application of an event;
//! - [`outbox`]: publishing journey transitions;
//! - [`queries`]: the read API on the NATS services API;
//! - [`telemetry`]: seed 002's metrics.
//!
//! An event is applied once, however often it arrives. Three checks see to
//! it. JetStream drops a redelivered `Nats-Msg-Id` inside its window. The
//! `csr_events` KV bucket remembers applied event ids for 30 days. The
//! `csr_processed_events` primary key is the last word. Whatever cannot be
//! read as a buddy event goes to the dead-letter stream with the reason.

pub mod facts;
pub mod outbox;
pub mod queries;
pub mod report;
pub mod store;
pub mod telemetry;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::buddy::BuddyEventData;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_nats::definitions::{CSR_CONSUMER, CSR_EVENTS_BUCKET};
use hookmesh_nats::{STREAMS, ensure_streams};
use hookmesh_runtime::consume::{self, ConsumeSettings};
use hookmesh_runtime::db::{self, DbError};
use hookmesh_runtime::kv::SeenKeys;
use hookmesh_runtime::metrics::ConsumeMetrics;
use hookmesh_runtime::ops::{self, Check, DatabaseHealth};
use hookmesh_runtime::{BoxError, Delivery, Handler, Outcome, supervise};
use sqlx::migrate::Migrator;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::store::{Applied, Store};
use crate::telemetry::{CsrMetrics, ErrorReason};

/// The csr-consumer's migrations (versions 2xxx).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How the service runs.
#[derive(Debug, Clone)]
pub struct CsrSettings {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Replicas of the streams, bucket and consumer it ensures.
    pub stream_replicas: usize,
}

/// Applies buddy events.
struct CsrHandler {
    store: Store,
    seen: Option<SeenKeys>,
    metrics: CsrMetrics,
    outbox: Arc<Notify>,
    database: DatabaseHealth,
}

/// What a delivery turned out to be before touching the database.
enum Prepared {
    Refused(Outcome),
    Apply {
        facts: Box<facts::EventFacts>,
        key: String,
    },
}

impl CsrHandler {
    /// Reads and checks one delivery.
    fn prepare(&self, delivery: &Delivery) -> Prepared {
        let refuse = |reason: String| {
            self.metrics.error(ErrorReason::Invalid);
            Prepared::Refused(Outcome::dead_letter(reason))
        };
        let envelope = match Envelope::parse(delivery.payload()) {
            Ok(envelope) => envelope,
            Err(errors) => return refuse(format!("not a valid CloudEvents envelope: {errors}")),
        };
        let data = match BuddyEventData::from_envelope(&envelope) {
            Ok(data) => data,
            Err(errors) => {
                return refuse(format!(
                    "not a valid {:?} event: {errors}",
                    envelope.event_type
                ));
            }
        };
        if envelope.tenantid != *data.tenant_id() {
            return refuse(format!(
                "tenantid {:?} does not match data.tenant_id {:?}",
                envelope.tenantid.as_str(),
                data.tenant_id().as_str()
            ));
        }
        self.metrics.received(data.event_type());
        Prepared::Apply {
            facts: Box::new(facts::facts(&envelope.id, envelope.time, &data)),
            key: SeenKeys::key(envelope.tenantid.as_str(), &envelope.id),
        }
    }

    /// The keys KV says were applied, in one batched read; none when KV is
    /// unreachable (the database decides).
    async fn already_applied(&self, keys: &[String]) -> HashSet<String> {
        let Some(seen) = &self.seen else {
            return HashSet::new();
        };
        match seen.contains_many(keys).await {
            Ok(found) => found,
            Err(error) => {
                self.metrics.kv_fallback();
                tracing::warn!(%error, "Idempotency bucket unreachable; the database decides.");
                HashSet::new()
            }
        }
    }
}

impl Handler for CsrHandler {
    /// Checks every delivery, then applies the batch's new events in one
    /// transaction: one commit per batch instead of one per event.
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let started = Instant::now();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut candidates = Vec::new();
        for (index, delivery) in batch.iter().enumerate() {
            outcomes.push(match self.prepare(delivery) {
                Prepared::Refused(outcome) => outcome,
                Prepared::Apply { facts, key } => {
                    candidates.push((index, key, facts));
                    Outcome::Done
                }
            });
        }
        let keys: Vec<String> = candidates.iter().map(|(_, key, _)| key.clone()).collect();
        let applied_before = self.already_applied(&keys).await;
        let mut to_apply = Vec::new();
        let mut facts = Vec::new();
        for (index, key, event) in candidates {
            if applied_before.contains(&key) {
                self.metrics.duplicate("kv");
            } else {
                to_apply.push((index, key));
                facts.push(*event);
            }
        }
        if to_apply.is_empty() {
            return outcomes;
        }
        let now = Timestamp::now();
        match self.store.apply_batch(&facts, now.unix_millis()).await {
            Ok(applied) => {
                self.database.record(true);
                let seconds_each = started.elapsed().as_secs_f64() / to_apply.len() as f64;
                for (((index, _), facts), applied) in to_apply.iter().zip(&facts).zip(applied) {
                    match applied {
                        Applied::Duplicate => self.metrics.duplicate("database"),
                        Applied::New { transitions } => {
                            if transitions > 0 {
                                self.outbox.notify_one();
                            }
                            self.metrics
                                .applied(seconds_each, facts.occurred_at.seconds_until(now));
                            tracing::debug!(
                                event_id = %facts.event_id,
                                event_type = %facts.event_type,
                                tenant = %facts.tenant_id,
                                correlation_id = batch[*index].correlation_id(),
                                transitions,
                                "Applied a buddy event."
                            );
                        }
                    }
                }
                if let Some(seen) = &self.seen {
                    let keys: Vec<String> = to_apply.into_iter().map(|(_, key)| key).collect();
                    if seen.insert_many(&keys).await.is_err() {
                        self.metrics.kv_fallback();
                    }
                }
            }
            Err(error) => {
                self.database.record(false);
                for (index, _) in &to_apply {
                    self.metrics.error(ErrorReason::Database);
                    outcomes[*index] =
                        Outcome::retry(batch[*index].delivered, format!("database: {error}"));
                }
            }
        }
        outcomes
    }
}

/// The running service.
#[derive(Debug)]
pub struct CsrConsumer {
    client: async_nats::Client,
    database: DatabaseHealth,
    tasks: Vec<JoinHandle<()>>,
}

impl CsrConsumer {
    /// Opens the database (applying migrations) and starts consuming, the
    /// journey outbox and the read API. Each loop survives broker and
    /// database outages by restarting with backoff.
    pub async fn start(
        client: async_nats::Client,
        settings: CsrSettings,
        metrics: CsrMetrics,
        consume_metrics: ConsumeMetrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, DbError> {
        let pool = db::connect(&settings.database_url).await?;
        db::migrate(&pool, &MIGRATOR).await?;
        let store = Store::new(pool);
        let js = jetstream::new(client.clone());
        let outbox = Arc::new(Notify::new());
        let database = DatabaseHealth::default();
        let mut tasks = Vec::new();

        let consume = {
            let (js, store, outbox, metrics, database, stop) = (
                js.clone(),
                store.clone(),
                outbox.clone(),
                metrics.clone(),
                database.clone(),
                shutdown.clone(),
            );
            let replicas = settings.stream_replicas;
            supervise("csr-consumer", shutdown.clone(), move || {
                let (js, store, outbox, metrics, database, consume_metrics, stop) = (
                    js.clone(),
                    store.clone(),
                    outbox.clone(),
                    metrics.clone(),
                    database.clone(),
                    consume_metrics.clone(),
                    stop.clone(),
                );
                async move {
                    ensure_streams(&js, STREAMS, replicas).await?;
                    let seen = match SeenKeys::open(&js, &CSR_EVENTS_BUCKET, replicas).await {
                        Ok(seen) => Some(seen),
                        Err(error) => {
                            metrics.kv_fallback();
                            tracing::warn!(%error, "Idempotency bucket unavailable; the database decides alone.");
                            None
                        }
                    };
                    let handler = Arc::new(CsrHandler {
                        store,
                        seen,
                        metrics,
                        outbox,
                        database,
                    });
                    let settings = ConsumeSettings {
                        definition: CSR_CONSUMER,
                        replicas,
                        max_batch: 64,
                        max_wait: Duration::ZERO,
                        concurrency: 1,
                    };
                    consume::run(js, settings, handler, consume_metrics, stop)
                        .await
                        .map_err(BoxError::from)
                }
            })
        };
        tasks.push(tokio::spawn(consume));
        tasks.push(tokio::spawn(outbox::run(
            js,
            store.clone(),
            outbox,
            metrics,
            shutdown.clone(),
        )));
        {
            let (client, store, stop) = (client.clone(), store.clone(), shutdown.clone());
            tasks.push(tokio::spawn(supervise(
                "csr-queries",
                shutdown.clone(),
                move || queries::serve(client.clone(), store.clone(), stop.clone()),
            )));
        }
        tasks.push(database.watch(store.pool().clone(), shutdown));
        Ok(Self {
            client,
            database,
            tasks,
        })
    }

    /// Readiness checks for `/readyz`.
    pub fn readiness(&self) -> Vec<(&'static str, Check)> {
        vec![
            ("broker", ops::broker_check(self.client.clone())),
            ("database", self.database.check()),
        ]
    }

    /// Waits for every loop to finish (after shutdown was signalled).
    pub async fn finished(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
