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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream;
use futures_util::future::join_all;
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::buddy::BuddyEventData;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_nats::definitions::{CSR_CONSUMER, CSR_EVENTS_BUCKET};
use hookmesh_nats::{STREAMS, ensure_streams};
use hookmesh_runtime::consume::{self, ConsumeSettings};
use hookmesh_runtime::db::{self, DbError};
use hookmesh_runtime::kv::SeenKeys;
use hookmesh_runtime::metrics::ConsumeMetrics;
use hookmesh_runtime::ops::Check;
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
    database_ok: Arc<AtomicBool>,
}

/// What a delivery turned out to be before touching the database.
enum Prepared {
    Refused(Outcome),
    AlreadyApplied,
    Apply {
        facts: Box<facts::EventFacts>,
        key: String,
    },
}

impl CsrHandler {
    /// Reads and checks one delivery, and asks KV whether it was applied.
    async fn prepare(&self, delivery: &Delivery) -> Prepared {
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
        let key = SeenKeys::key(envelope.tenantid.as_str(), &envelope.id);
        if let Some(seen) = &self.seen {
            match seen.contains(&key).await {
                Ok(true) => {
                    self.metrics.duplicate("kv");
                    return Prepared::AlreadyApplied;
                }
                Ok(false) => {}
                Err(error) => {
                    self.metrics.kv_fallback();
                    tracing::warn!(%error, "Idempotency bucket unreachable; the database decides.");
                }
            }
        }
        Prepared::Apply {
            facts: Box::new(facts::facts(&envelope.id, envelope.time, &data)),
            key,
        }
    }
}

impl Handler for CsrHandler {
    /// Checks every delivery, then applies the batch's new events in one
    /// transaction: one commit per batch instead of one per event.
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        let started = Instant::now();
        let prepared = join_all(batch.iter().map(|delivery| self.prepare(delivery))).await;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut to_apply = Vec::new();
        let mut facts = Vec::new();
        for (index, prepared) in prepared.into_iter().enumerate() {
            outcomes.push(match prepared {
                Prepared::Refused(outcome) => outcome,
                Prepared::AlreadyApplied => Outcome::Done,
                Prepared::Apply { facts: event, key } => {
                    to_apply.push((index, key));
                    facts.push(*event);
                    Outcome::Done
                }
            });
        }
        if to_apply.is_empty() {
            return outcomes;
        }
        let now = Timestamp::now();
        match self.store.apply_batch(&facts, now.unix_millis()).await {
            Ok(applied) => {
                self.database_ok.store(true, Ordering::Relaxed);
                let seconds_each = started.elapsed().as_secs_f64() / to_apply.len() as f64;
                for (((index, key), facts), applied) in to_apply.iter().zip(&facts).zip(applied) {
                    if let Some(seen) = &self.seen
                        && seen.insert(key).await.is_err()
                    {
                        self.metrics.kv_fallback();
                    }
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
            }
            Err(error) => {
                self.database_ok.store(false, Ordering::Relaxed);
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
    database_ok: Arc<AtomicBool>,
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
        let database_ok = Arc::new(AtomicBool::new(true));
        let mut tasks = Vec::new();

        let consume = {
            let (js, store, outbox, metrics, database_ok, stop) = (
                js.clone(),
                store.clone(),
                outbox.clone(),
                metrics.clone(),
                database_ok.clone(),
                shutdown.clone(),
            );
            let replicas = settings.stream_replicas;
            supervise("csr-consumer", shutdown.clone(), move || {
                let (js, store, outbox, metrics, database_ok, consume_metrics, stop) = (
                    js.clone(),
                    store.clone(),
                    outbox.clone(),
                    metrics.clone(),
                    database_ok.clone(),
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
                        database_ok,
                    });
                    let settings = ConsumeSettings {
                        definition: CSR_CONSUMER,
                        replicas,
                        max_batch: 64,
                        max_wait: Duration::ZERO,
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
        {
            let (store, database_ok, mut stop) = (store, database_ok.clone(), shutdown);
            tasks.push(tokio::spawn(async move {
                loop {
                    database_ok.store(store.ping().await.is_ok(), Ordering::Relaxed);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }));
        }
        Ok(Self {
            client,
            database_ok,
            tasks,
        })
    }

    /// Readiness checks for `/readyz`.
    pub fn readiness(&self) -> Vec<(&'static str, Check)> {
        let client = self.client.clone();
        let database_ok = self.database_ok.clone();
        vec![
            (
                "broker",
                Arc::new(move || match client.connection_state() {
                    State::Connected => Ok(()),
                    _ => Err("not connected".to_owned()),
                }),
            ),
            (
                "database",
                Arc::new(move || {
                    if database_ok.load(Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err("unreachable".to_owned())
                    }
                }),
            ),
        ]
    }

    /// Waits for every loop to finish (after shutdown was signalled).
    pub async fn finished(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
