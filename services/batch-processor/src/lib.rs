//! batch-processor: the mesh's high-volume path. Provider delivery events
//! (seed 004) and CI/CD pipeline events (seed 001), as two families over
//! one batch engine:
//!
//! - the runtime's engine: buffering, the memory and KV dedup layers, one
//!   transaction per batch, and the mapping of a batch's result to acks,
//!   naks and dead letters;
//! - [`enrich`]: seed 004's cached, batched, bounded lookups (the delivery
//!   family's recipients);
//! - [`delivery`]: recipients, forward-only statuses, bounded campaign
//!   counters and campaign completion;
//! - [`ci`]: runs, failure classification, per-repository counters and
//!   `ci.failure.detected`;
//! - [`queries`]: the campaigns read API on the NATS services API;
//! - [`telemetry`]: seed 004's metrics.
//!
//! Each family has its durable consumer (`PROVIDERS` and `CI`), and
//! campaign registrations a third (`DELIVERY`); several replicas share
//! each, and every batch is one database transaction acked only after it
//! commits.

pub mod ci;
pub mod config;
pub mod delivery;
pub mod enrich;
pub mod queries;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use hookmesh_nats::definitions::{
    CAMPAIGN_CONSUMER, CI_CONSUMER, DELIVERY_CONSUMER, WEBHOOK_DEDUP_BUCKET,
};
use hookmesh_nats::{ConsumerDefinition, STREAMS, ensure_streams};
use hookmesh_runtime::Loops;
use hookmesh_runtime::consume::ConsumeSettings;
use hookmesh_runtime::db::{self, Backend, DbError};
use hookmesh_runtime::engine::{BatchHandler, Deduplicator, Family, Observer};
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_runtime::ops::{self, Check, DatabaseHealth};
use hookmesh_runtime::outbox::Outbox;
use hookmesh_runtime::publish::JetStreamSink;
use sqlx::migrate::Migrator;
use tokio::sync::watch;

use crate::ci::CiFamily;
use crate::ci::store::CiStore;
use crate::delivery::DeliveryFamily;
use crate::delivery::registration::RegistrationHandler;
use crate::delivery::store::{DeliveryStore, RecipientLookup};
use crate::enrich::{EnrichSettings, Enricher};
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
    /// Adaptive batching: a partial batch goes as soon as a worker is idle
    /// and nothing more is waiting (see `ConsumeSettings::flush_when_idle`).
    pub adaptive: bool,
    /// Batches of one family handled at once.
    pub workers: usize,
    /// Whether the KV bucket is a layer of deduplication (seed 004's
    /// distributed cache); without it, memory and the database constraint
    /// decide.
    pub dedup_kv: bool,
    pub enrich: EnrichSettings,
}

/// The running service.
#[derive(Debug)]
pub struct BatchProcessor {
    client: async_nats::Client,
    database: DatabaseHealth,
    delivery: DeliveryStore,
    ci: CiStore,
    loops: Loops,
}

impl BatchProcessor {
    /// Opens the database (applying migrations) and starts both families'
    /// consume loops, the registrations', the outbox and the queue-depth
    /// gauge. Each loop survives broker and database outages by restarting
    /// with backoff.
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
        // Without a lookup database of its own, the recipients are joined
        // by the events log's insert (see `delivery::store::Enriched`).
        let lookup = match &settings.lookup_database_url {
            Some(url) => Some((db::connect_lazy(url)?, Backend::of(url)?)),
            None => None,
        };
        let js = jetstream::new(client.clone());
        let outbox = Outbox::new(pool.clone(), backend, "batch_outbox");
        let delivery = DeliveryStore::new(pool.clone(), backend, outbox.clone());
        let ci = CiStore::new(pool.clone(), backend, outbox.clone());
        let database = DatabaseHealth::default();
        let mut loops = Loops::new(shutdown.clone());

        let families = Families {
            js: js.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
            consume_metrics: consume_metrics.clone(),
            database: database.clone(),
        };
        {
            let (delivery, metrics, enrich) =
                (delivery.clone(), metrics.clone(), settings.enrich.clone());
            families.consume(
                &mut loops,
                DELIVERY_CONSUMER,
                "batch-processor-delivery",
                move || {
                    let enricher = lookup.as_ref().map(|(pool, backend)| {
                        Enricher::new(
                            RecipientLookup::new(pool.clone(), *backend),
                            enrich.clone(),
                            metrics.clone(),
                        )
                    });
                    DeliveryFamily::new(delivery.clone(), enricher, metrics.clone())
                },
            );
        }
        {
            let (ci, metrics) = (ci.clone(), metrics.clone());
            families.consume(&mut loops, CI_CONSUMER, "batch-processor-ci", move || {
                CiFamily::new(ci.clone(), metrics.clone())
            });
        }
        {
            let (js, store, metrics, database) = (
                js.clone(),
                delivery.clone(),
                metrics.clone(),
                database.clone(),
            );
            let replicas = settings.stream_replicas;
            loops.consume(
                js.clone(),
                ConsumeSettings {
                    definition: CAMPAIGN_CONSUMER,
                    replicas,
                    max_batch: 8,
                    max_wait: Duration::ZERO,
                    concurrency: 1,
                    flush_when_idle: false,
                },
                consume_metrics.consumer("batch-processor-campaigns"),
                move || {
                    let (js, store, metrics, database) =
                        (js.clone(), store.clone(), metrics.clone(), database.clone());
                    async move {
                        ensure_streams(&js, STREAMS, replicas).await?;
                        Ok(RegistrationHandler::new(store, metrics, database))
                    }
                },
            );
        }
        loops.spawn(outbox.run(
            Arc::new(JetStreamSink(js.clone())),
            |_| {},
            shutdown.clone(),
        ));
        loops.spawn(queue_depth(js, metrics, shutdown.clone()));
        loops.serve_reads(client.clone(), queries::api(&delivery, &ci));
        loops.spawn(database.clone().watch(pool, shutdown));
        Ok(Self {
            client,
            database,
            delivery,
            ci,
            loops,
        })
    }

    /// Readiness checks for `/readyz`.
    pub fn readiness(&self) -> Vec<(&'static str, Check)> {
        vec![
            ("broker", ops::broker_check(self.client.clone())),
            ("database", self.database.check()),
            ("consumers", self.loops.readiness()),
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
        self.loops.finished().await;
    }
}

/// What each family's consume loop needs.
struct Families {
    js: jetstream::Context,
    settings: BatchSettings,
    metrics: BatchMetrics,
    consume_metrics: ConsumeFamilies,
    database: DatabaseHealth,
}

impl Families {
    /// Runs a family's consume loop; `family` builds the family anew for
    /// each (re)start.
    fn consume<F: Family>(
        &self,
        loops: &mut Loops,
        definition: ConsumerDefinition,
        label: &'static str,
        family: impl Fn() -> F + Send + Sync + 'static,
    ) {
        let (js, metrics, database) =
            (self.js.clone(), self.metrics.clone(), self.database.clone());
        let (replicas, dedup_kv) = (self.settings.stream_replicas, self.settings.dedup_kv);
        let family = Arc::new(family);
        loops.consume(
            self.js.clone(),
            ConsumeSettings {
                definition,
                replicas,
                max_batch: self.settings.batch_size.max(1),
                max_wait: self.settings.batch_interval,
                concurrency: self.settings.workers.max(1),
                flush_when_idle: self.settings.adaptive,
            },
            self.consume_metrics.consumer(label),
            move || {
                let (js, metrics, database, family) = (
                    js.clone(),
                    metrics.clone(),
                    database.clone(),
                    family.clone(),
                );
                async move {
                    ensure_streams(&js, STREAMS, replicas).await?;
                    let observer = Arc::new(metrics.family(F::NAME));
                    let dedup =
                        deduplicator(F::NAME, &js, replicas, dedup_kv, observer.clone()).await;
                    Ok(BatchHandler::new(family(), dedup, observer).recording(database))
                }
            },
        );
    }
}

/// A family's layers of deduplication before the database: memory, and the
/// `webhook_dedup` bucket unless `kv` is false (`HOOKMESH_DEDUP_KV`).
pub async fn deduplicator(
    family: &'static str,
    js: &jetstream::Context,
    replicas: usize,
    kv: bool,
    observer: Arc<dyn Observer>,
) -> Deduplicator {
    if kv {
        Deduplicator::open(family, js, WEBHOOK_DEDUP_BUCKET, replicas, observer).await
    } else {
        Deduplicator::new(family, None, observer)
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
