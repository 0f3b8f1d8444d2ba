//! batch-processor: the mesh's high-volume path. Provider delivery events
//! (seed 004) and CI/CD pipeline events (seed 001), as two families over
//! one batch engine:
//!
//! - [`engine`]: buffering, the memory and KV dedup layers, enrichment, and
//!   the mapping of a batch's result to acks, naks and dead letters;
//! - [`delivery`]: recipients, forward-only statuses, bounded campaign
//!   counters and campaign completion;
//! - [`ci`]: runs, failure classification, per-repository counters and
//!   `ci.failure.detected`;
//! - [`telemetry`]: seed 004's metrics.
//!
//! Each family has its durable consumer (`PROVIDERS` and `CI`), and
//! campaign registrations a third (`DELIVERY`); several replicas share
//! each, and every batch is one database transaction acked only after it
//! commits.

pub mod ci;
pub mod delivery;
pub mod engine;
pub mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use hookmesh_nats::definitions::{
    CAMPAIGN_CONSUMER, CI_CONSUMER, DELIVERY_CONSUMER, WEBHOOK_DEDUP_BUCKET,
};
use hookmesh_nats::{ConsumerDefinition, STREAMS, ensure_streams};
use hookmesh_runtime::consume::{self, ConsumeSettings};
use hookmesh_runtime::db::{self, Backend, DbError};
use hookmesh_runtime::kv::SeenKeys;
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_runtime::ops::{self, Check, DatabaseHealth};
use hookmesh_runtime::outbox::Outbox;
use hookmesh_runtime::{BoxError, supervise};
use sqlx::migrate::Migrator;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ci::CiFamily;
use crate::ci::store::CiStore;
use crate::delivery::DeliveryFamily;
use crate::delivery::registration::RegistrationHandler;
use crate::delivery::store::{DeliveryStore, RecipientLookup};
use crate::engine::dedup::Deduplicator;
use crate::engine::enrich::{EnrichSettings, Enricher};
use crate::engine::{BatchHandler, Family};
use crate::telemetry::BatchMetrics;

/// The batch-processor's migrations (versions 3xxx).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Default `HOOKMESH_BATCH_SIZE`.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Default `HOOKMESH_BATCH_WORKERS`.
pub const DEFAULT_WORKERS: usize = 2;
/// Default `HOOKMESH_BATCH_INTERVAL_MS`.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where recipients are looked up for enrichment (a read replica, say);
    /// `None`: the main database.
    pub lookup_database_url: Option<String>,
    /// Replicas of the streams, bucket and consumers it ensures.
    pub stream_replicas: usize,
    /// Events per batch at most.
    pub batch_size: usize,
    /// Longest the first event of a batch waits for the batch to fill.
    pub batch_interval: Duration,
    /// Batches of one family handled at once.
    pub workers: usize,
    pub enrich: EnrichSettings,
}

/// The running service.
#[derive(Debug)]
pub struct BatchProcessor {
    client: async_nats::Client,
    database: DatabaseHealth,
    /// Families whose consume loop is running.
    consuming: Arc<AtomicUsize>,
    delivery: DeliveryStore,
    ci: CiStore,
    tasks: Vec<JoinHandle<()>>,
}

impl BatchProcessor {
    /// Opens the database (applying migrations) and starts both families'
    /// consume loops, the outbox and the queue-depth gauge. Each loop
    /// survives broker and database outages by restarting with backoff.
    pub async fn start(
        client: async_nats::Client,
        settings: BatchSettings,
        metrics: BatchMetrics,
        consume_metrics: ConsumeFamilies,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, DbError> {
        let backend = Backend::of(&settings.database_url)?;
        let pool = db::connect(&settings.database_url).await?;
        db::migrate(&pool, &MIGRATOR).await?;
        let (lookup_pool, lookup_backend) = match &settings.lookup_database_url {
            Some(url) => (db::connect_lazy(url)?, Backend::of(url)?),
            None => (pool.clone(), backend),
        };
        let js = jetstream::new(client.clone());
        let outbox = Outbox::new(pool.clone(), backend, "batch_outbox");
        let delivery = DeliveryStore::new(pool.clone(), backend, outbox.clone());
        let ci = CiStore::new(pool.clone(), backend, outbox.clone());
        let database = DatabaseHealth::default();
        let consuming = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();

        let consume = Consume {
            js: js.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
            consume_metrics,
            database: database.clone(),
            consuming: consuming.clone(),
            shutdown: shutdown.clone(),
        };
        {
            let (delivery, metrics, enrich) =
                (delivery.clone(), metrics.clone(), settings.enrich.clone());
            tasks.push(
                consume.spawn(DELIVERY_CONSUMER, "batch-processor-delivery", move || {
                    let enricher = Enricher::new(
                        RecipientLookup::new(lookup_pool.clone(), lookup_backend),
                        enrich.clone(),
                        metrics.clone(),
                    );
                    DeliveryFamily::new(delivery.clone(), enricher, metrics.clone())
                }),
            );
        }
        {
            let (ci, metrics) = (ci.clone(), metrics.clone());
            tasks.push(consume.spawn(CI_CONSUMER, "batch-processor-ci", move || {
                CiFamily::new(ci.clone(), metrics.clone())
            }));
        }
        tasks.push(consume.spawn_registrations(delivery.clone()));
        tasks.push(tokio::spawn(outbox.run(
            js.clone(),
            |_| {},
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(queue_depth(js, metrics, shutdown.clone())));
        tasks.push(database.watch(pool, shutdown));
        Ok(Self {
            client,
            database,
            consuming,
            delivery,
            ci,
            tasks,
        })
    }

    /// Readiness checks for `/readyz`.
    pub fn readiness(&self) -> Vec<(&'static str, Check)> {
        vec![
            ("broker", ops::broker_check(self.client.clone())),
            ("database", self.database.check()),
            (
                "consumers",
                ops::consumers_check(self.consuming.clone(), LOOPS),
            ),
        ]
    }

    /// The delivery family's tables (registering campaigns, reading
    /// counters).
    pub fn delivery_store(&self) -> &DeliveryStore {
        &self.delivery
    }

    /// The CI family's tables.
    pub fn ci_store(&self) -> &CiStore {
        &self.ci
    }

    /// Waits for every loop to finish (after shutdown was signalled): the
    /// batches in hand are committed and acked first.
    pub async fn finished(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The consume loops: the delivery and CI families, and registrations.
const LOOPS: usize = 3;

/// What each family's consume loop needs.
#[derive(Clone)]
struct Consume {
    js: jetstream::Context,
    settings: BatchSettings,
    metrics: BatchMetrics,
    consume_metrics: ConsumeFamilies,
    database: DatabaseHealth,
    consuming: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
}

impl Consume {
    /// Runs a family's consume loop under supervision; `family` builds the
    /// family anew for each restart.
    fn spawn<F: Family>(
        &self,
        definition: ConsumerDefinition,
        label: &'static str,
        family: impl Fn() -> F + Send + Sync + 'static,
    ) -> JoinHandle<()> {
        let this = self.clone();
        let family = Arc::new(family);
        tokio::spawn(supervise(F::NAME, self.shutdown.clone(), move || {
            let (this, family) = (this.clone(), family.clone());
            async move {
                let replicas = this.settings.stream_replicas;
                ensure_streams(&this.js, STREAMS, replicas).await?;
                let seen = match SeenKeys::open(&this.js, &WEBHOOK_DEDUP_BUCKET, replicas).await {
                    Ok(seen) => Some(seen),
                    Err(error) => {
                        this.metrics.dedup_fail_open(F::NAME);
                        tracing::warn!(%error, "The dedup bucket is unavailable; the database constraint decides alone.");
                        None
                    }
                };
                let dedup = Deduplicator::new(F::NAME, seen, this.metrics.clone())
                    .reopening(this.js.clone(), replicas);
                let handler = Arc::new(Recording {
                    inner: BatchHandler::new(family(), dedup, this.metrics.clone()),
                    database: this.database.clone(),
                });
                let settings = ConsumeSettings {
                    definition,
                    replicas,
                    max_batch: this.settings.batch_size.max(1),
                    max_wait: this.settings.batch_interval,
                    concurrency: this.settings.workers.max(1),
                };
                let metrics = this.consume_metrics.consumer(label);
                this.consuming.fetch_add(1, Ordering::Relaxed);
                let consumed =
                    consume::run(this.js, settings, handler, metrics, this.shutdown).await;
                this.consuming.fetch_sub(1, Ordering::Relaxed);
                consumed.map_err(BoxError::from)
            }
        }))
    }
}

impl Consume {
    /// Runs the campaign registrations' consume loop under supervision.
    fn spawn_registrations(&self, store: DeliveryStore) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(supervise(
            "batch-processor-campaigns",
            self.shutdown.clone(),
            move || {
                let (this, store) = (this.clone(), store.clone());
                async move {
                    let replicas = this.settings.stream_replicas;
                    ensure_streams(&this.js, STREAMS, replicas).await?;
                    let handler = Arc::new(RegistrationHandler::new(
                        store,
                        this.metrics.clone(),
                        this.database.clone(),
                    ));
                    let settings = ConsumeSettings {
                        definition: CAMPAIGN_CONSUMER,
                        replicas,
                        max_batch: 8,
                        max_wait: Duration::ZERO,
                        concurrency: 1,
                    };
                    let metrics = this.consume_metrics.consumer("batch-processor-campaigns");
                    this.consuming.fetch_add(1, Ordering::Relaxed);
                    let consumed =
                        consume::run(this.js, settings, handler, metrics, this.shutdown).await;
                    this.consuming.fetch_sub(1, Ordering::Relaxed);
                    consumed.map_err(BoxError::from)
                }
            },
        ))
    }
}

/// Notes in [`DatabaseHealth`] whether batches commit.
struct Recording<F: Family> {
    inner: BatchHandler<F>,
    database: DatabaseHealth,
}

impl<F: Family> hookmesh_runtime::Handler for Recording<F> {
    async fn handle(&self, batch: &[hookmesh_runtime::Delivery]) -> Vec<hookmesh_runtime::Outcome> {
        let outcomes = self.inner.handle(batch).await;
        let retried = outcomes
            .iter()
            .any(|outcome| matches!(outcome, hookmesh_runtime::Outcome::Retry { .. }));
        self.database.record(!retried);
        outcomes
    }
}

/// Keeps `webhook_queue_depth` at each consumer's pending count.
async fn queue_depth(
    js: jetstream::Context,
    metrics: BatchMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let consumers = [
        (DeliveryFamily::NAME, DELIVERY_CONSUMER),
        (CiFamily::NAME, CI_CONSUMER),
    ];
    loop {
        for (family, definition) in &consumers {
            let info = async {
                let stream = js.get_stream(definition.stream).await.ok()?;
                stream
                    .consumer_info(definition.durable_name())
                    .await
                    .ok()
                    .map(|info| info.num_pending)
            };
            if let Some(pending) = info.await {
                metrics.queue_depth(family, pending);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
