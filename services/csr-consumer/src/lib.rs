//! csr-consumer: buddy-system events (seed 002) become CSR metrics and
//! participant journeys, exactly once.
//!
//! - [`facts`]: what an event says, and the journey rules;
//! - [`family`]: buddy events as a family of the runtime's engine;
//! - [`store`]: the tables, and the set-based application of a batch;
//! - [`report`]: daily metrics from facts;
//! - [`queries`]: the read API on the NATS services API;
//! - [`telemetry`]: seed 002's metrics.
//!
//! An event is applied once, however often it arrives. JetStream drops a
//! redelivered `Nats-Msg-Id` inside its window; the engine remembers applied
//! event ids in memory for a minute and in the `csr_events` KV bucket for 30
//! days; the `csr_processed_events` primary key is the last word. Journey
//! transitions are published through the outbox. Whatever cannot be read as
//! a buddy event goes to the dead-letter stream with the reason.

pub mod config;
pub mod facts;
pub mod family;
pub mod queries;
pub mod report;
pub mod store;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use hookmesh_nats::definitions::{CSR_CONSUMER, CSR_EVENTS_BUCKET};
use hookmesh_nats::{STREAMS, ensure_streams};
use hookmesh_runtime::Loops;
use hookmesh_runtime::consume::ConsumeSettings;
use hookmesh_runtime::db::{self, Backend, DbError};
use hookmesh_runtime::engine::{BatchHandler, Deduplicator, Family as _};
use hookmesh_runtime::metrics::ConsumeMetrics;
use hookmesh_runtime::ops::{self, Check, DatabaseHealth};
use hookmesh_runtime::outbox::Outbox;
use hookmesh_runtime::publish::JetStreamSink;
use sqlx::migrate::Migrator;
use tokio::sync::watch;

use crate::family::CsrFamily;
use crate::store::Store;
use crate::telemetry::CsrMetrics;

/// The csr-consumer's migrations (versions 2xxx).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Default `HOOKMESH_CSR_BATCH_SIZE`.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct CsrSettings {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Replicas of the streams, bucket and consumer it ensures.
    pub stream_replicas: usize,
    /// Events per batch at most. A batch holds whatever has arrived, so a
    /// trickle is applied at once and a backlog in full batches.
    pub batch_size: usize,
}

/// The running service.
#[derive(Debug)]
pub struct CsrConsumer {
    client: async_nats::Client,
    database: DatabaseHealth,
    loops: Loops,
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
        let backend = Backend::of(&settings.database_url)?;
        let pool = db::connect(&settings.database_url).await?;
        db::migrate(&pool, &MIGRATOR).await?;
        let outbox = Outbox::new(pool.clone(), backend, "csr_outbox");
        let store = Store::new(pool.clone(), backend, outbox.clone());
        let adopted = store
            .adopt_unpublished_transitions()
            .await
            .map_err(DbError::Prepare)?;
        if adopted > 0 {
            tracing::info!(
                adopted,
                "Journey transitions from before the outbox were handed to it."
            );
        }
        let js = jetstream::new(client.clone());
        let database = DatabaseHealth::default();
        let mut loops = Loops::new(shutdown.clone());
        let replicas = settings.stream_replicas;
        {
            let (js, store, metrics, database) =
                (js.clone(), store.clone(), metrics.clone(), database.clone());
            loops.consume(
                js.clone(),
                ConsumeSettings {
                    definition: CSR_CONSUMER,
                    replicas,
                    max_batch: settings.batch_size.max(1),
                    max_wait: Duration::ZERO,
                    // One batch is read and deduplicated while the one
                    // before commits. Journeys only move forward, so the
                    // stages reached are the same whichever commits first;
                    // the transitions recorded on the way depend on the order
                    // events are applied, as they do on arrival order.
                    concurrency: 2,
                    flush_when_idle: false,
                },
                consume_metrics,
                move || {
                    let (js, store, metrics, database) =
                        (js.clone(), store.clone(), metrics.clone(), database.clone());
                    async move {
                        ensure_streams(&js, STREAMS, replicas).await?;
                        let observer = Arc::new(metrics.clone());
                        let dedup = Deduplicator::open(
                            CsrFamily::NAME,
                            &js,
                            CSR_EVENTS_BUCKET,
                            replicas,
                            observer.clone(),
                        )
                        .await;
                        Ok(
                            BatchHandler::new(CsrFamily::new(store, metrics), dedup, observer)
                                .recording(database),
                        )
                    }
                },
            );
        }
        {
            let metrics = metrics.clone();
            loops.spawn(outbox.run(
                Arc::new(JetStreamSink(js)),
                move |message| metrics.published(message),
                shutdown.clone(),
            ));
        }
        loops.serve_reads(client.clone(), queries::api(&store));
        loops.spawn(database.clone().watch(pool, shutdown));
        Ok(Self {
            client,
            database,
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

    /// Waits for every loop to finish (after shutdown was signalled).
    pub async fn finished(self) {
        self.loops.finished().await;
    }
}
