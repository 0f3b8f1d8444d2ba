//! The sweep-worker (seeds 000 and 003): trading sweep jobs through
//! JetStream, the Trading API and a database.
//!
//! A job moves QUEUED → RUNNING → COMPLETED | FAILED, only forward. Three
//! durable consumers carry it, and none holds a worker while the sweep
//! runs on the Trading API:
//!
//! - `sweeps.trigger`: record the job (QUEUED), make it known to the
//!   gateway (KV `sweep_jobs`), health-check the Trading API and submit the
//!   sweep with an unguessable callback URL; RUNNING, and a deadline
//!   reminder. Trading API down: retried after 2 s, 4 s, 8 s (delayed naks),
//!   then FAILED with the reason.
//! - `sweeps.callback`: fetch the best results (3 attempts), store every row
//!   once, COMPLETED with 003's metrics; or FAILED with the callback's
//!   error message.
//! - `sweeps.deadline`: held back with delayed naks until due; a job still
//!   unsettled then is polled on the Trading API and completed or failed.
//!
//! Beside them runs the notifier ([`notify`]): finished sweeps, CI
//! failures, completed campaigns and dead-letter thresholds, by rules, to
//! email and Slack.
//!
//! Status changes are guarded updates ([`store`]) whose events go through
//! the outbox, so a duplicate or a racing replica changes nothing twice.
//! [`job`] holds the rules, free of I/O; [`queries`] the read API.

pub mod config;
pub mod events;
pub mod handlers;
pub mod job;
pub mod notify;
pub mod queries;
pub mod store;
pub mod telemetry;
pub mod trading_api;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use hookmesh_nats::definitions::{
    SWEEP_CALLBACK_CONSUMER, SWEEP_DEADLINE_CONSUMER, SWEEP_TRIGGER_CONSUMER,
};
use hookmesh_nats::jobs::JobRegistry;
use hookmesh_nats::{ConsumerDefinition, STREAMS, ensure_streams};
use hookmesh_runtime::Loops;
use hookmesh_runtime::consume::ConsumeSettings;
use hookmesh_runtime::db::{self, Backend, DbError};
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_runtime::ops::{self, Check, DatabaseHealth};
use hookmesh_runtime::outbox::Outbox;
use hookmesh_runtime::publish::{EventSink, JetStreamSink};
use sqlx::migrate::Migrator;
use tokio::sync::watch;

use crate::handlers::{Step, StepHandler, Tools, Worker};
use crate::store::SweepStore;
use crate::telemetry::SweepMetrics;
use crate::trading_api::TradingApi;

/// The sweep-worker's tables (migrations 1xxx).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Default `HOOKMESH_SWEEP_CALLBACK_TIMEOUT_SECS`: 000's one hour.
pub const DEFAULT_CALLBACK_TIMEOUT: Duration = Duration::from_secs(3600);
/// 000's retry schedule.
pub const DEFAULT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// How the sweep-worker runs.
#[derive(Clone)]
pub struct SweepSettings {
    pub database_url: String,
    pub stream_replicas: usize,
    pub trading_api_url: String,
    pub trading_api_key: String,
    /// Base URL the Trading API reaches the gateway on.
    pub public_url: String,
    /// Signs callback URLs; the gateway checks them with the same secret.
    pub callback_secret: Vec<u8>,
    /// How long a submitted sweep may go without a callback before the
    /// Trading API is polled.
    pub callback_timeout: Duration,
    /// Delays between attempts when the Trading API is unavailable (000:
    /// 2 s, 4 s, 8 s; then the job fails).
    pub retry_delays: Vec<Duration>,
    /// Tries to fetch a run's best results (003: 3).
    pub results_attempts: usize,
    /// Bound on each Trading API call.
    pub request_timeout: Duration,
    /// Notifications: rules, channels, SMTP.
    pub notify: notify::NotifySettings,
}

impl std::fmt::Debug for SweepSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepSettings")
            .field("database_url", &db::redacted(&self.database_url))
            .field(
                "trading_api_url",
                &hookmesh_contracts::redact::url(&self.trading_api_url),
            )
            .field(
                "public_url",
                &hookmesh_contracts::redact::url(&self.public_url),
            )
            .field("callback_timeout", &self.callback_timeout)
            .field("retry_delays", &self.retry_delays)
            .field("results_attempts", &self.results_attempts)
            .field("notify", &self.notify)
            .finish_non_exhaustive()
    }
}

impl SweepSettings {
    /// Settings with the seeds' defaults.
    pub fn new(
        database_url: &str,
        trading_api_url: &str,
        trading_api_key: &str,
        public_url: &str,
        callback_secret: &[u8],
    ) -> Self {
        Self {
            database_url: database_url.to_owned(),
            stream_replicas: 1,
            trading_api_url: trading_api_url.to_owned(),
            trading_api_key: trading_api_key.to_owned(),
            public_url: public_url.to_owned(),
            callback_secret: callback_secret.to_vec(),
            callback_timeout: DEFAULT_CALLBACK_TIMEOUT,
            retry_delays: DEFAULT_RETRY_DELAYS.to_vec(),
            results_attempts: 3,
            request_timeout: Duration::from_secs(10),
            notify: notify::NotifySettings::default(),
        }
    }
}

/// Why the sweep-worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Notify(#[from] notify::NotifyError),
    #[error("HOOKMESH_CALLBACK_SECRET is required: it signs the callback URLs the gateway checks")]
    NoCallbackSecret,
    #[error(
        "HOOKMESH_SWEEP_RETRY_DELAYS lists {delays} delays, but a trigger is delivered at most \
         {max_deliver} times ({file}): list at most {} delays",
        max_deliver - 1
    )]
    TooManyRetries {
        delays: usize,
        max_deliver: usize,
        file: &'static str,
    },
}

/// A running sweep-worker.
#[derive(Debug)]
pub struct SweepWorker {
    client: async_nats::Client,
    database: DatabaseHealth,
    store: SweepStore,
    loops: Loops,
}

/// The consume loops: the step, its consumer, its batch size.
const LOOPS: [(Step, ConsumerDefinition, &str, usize); 3] = [
    (
        Step::Trigger,
        SWEEP_TRIGGER_CONSUMER,
        "sweep-worker-trigger",
        16,
    ),
    (
        Step::Callback,
        SWEEP_CALLBACK_CONSUMER,
        "sweep-worker-callback",
        16,
    ),
    (
        Step::Deadline,
        SWEEP_DEADLINE_CONSUMER,
        "sweep-worker-deadline",
        64,
    ),
];

/// Each retry is a redelivery of the trigger; one beyond the consumer's
/// limit would dead-letter it and leave the job QUEUED.
fn check_retry_delays(delays: &[Duration]) -> Result<(), StartError> {
    let max_deliver = SWEEP_TRIGGER_CONSUMER
        .config(1)
        .map_or(-1, |config| config.max_deliver);
    match usize::try_from(max_deliver) {
        Ok(max_deliver) if delays.len() >= max_deliver => Err(StartError::TooManyRetries {
            delays: delays.len(),
            max_deliver,
            file: SWEEP_TRIGGER_CONSUMER.file,
        }),
        _ => Ok(()),
    }
}

impl SweepWorker {
    /// Opens the database (applying migrations), then runs the three consume
    /// loops, the notifier's, the outbox and the read API until `shutdown`. Each loop
    /// survives broker and database outages by restarting with backoff.
    pub async fn start(
        client: async_nats::Client,
        settings: SweepSettings,
        metrics: SweepMetrics,
        consume_metrics: ConsumeFamilies,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, StartError> {
        if settings.callback_secret.is_empty() {
            return Err(StartError::NoCallbackSecret);
        }
        check_retry_delays(&settings.retry_delays)?;
        let backend = Backend::of(&settings.database_url)?;
        let pool = db::connect(&settings.database_url).await?;
        db::migrate(&pool, &MIGRATOR).await?;
        let outbox = Outbox::new(pool.clone(), backend, "sweep_outbox");
        let store = SweepStore::new(pool.clone(), backend, outbox.clone());
        let api = TradingApi::new(
            &settings.trading_api_url,
            &settings.trading_api_key,
            settings.request_timeout,
            metrics.clone(),
        )?;
        let js = jetstream::new(client.clone());
        let sink: Arc<dyn EventSink> = Arc::new(JetStreamSink(js.clone()));
        let database = DatabaseHealth::default();
        let settings = Arc::new(settings);
        let mut loops = Loops::new(shutdown.clone());
        tracing::info!(trading_api = %api.base_url(), public_url = %hookmesh_contracts::redact::url(&settings.public_url), "Sweep-worker starting.");

        let tools = Tools {
            store: store.clone(),
            api,
            sink: sink.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
            database: database.clone(),
            shutdown: shutdown.clone(),
        };
        for (step, definition, label, max_batch) in LOOPS {
            let replicas = settings.stream_replicas;
            let (js, tools) = (js.clone(), tools.clone());
            loops.consume(
                js.clone(),
                ConsumeSettings {
                    definition,
                    replicas,
                    max_batch,
                    max_wait: Duration::ZERO,
                    concurrency: 1,
                    flush_when_idle: false,
                },
                consume_metrics.consumer(label),
                move || {
                    let (js, tools) = (js.clone(), tools.clone());
                    async move {
                        ensure_streams(&js, STREAMS, replicas).await?;
                        let registry = JobRegistry::open(&js, replicas).await?;
                        Ok(StepHandler {
                            worker: Worker::new(tools, registry),
                            step,
                        })
                    }
                },
            );
        }
        notify::start(
            &mut loops,
            &js,
            &settings.notify,
            (
                store.clone(),
                sink.clone(),
                settings.public_url.clone(),
                metrics,
            ),
            &consume_metrics,
            settings.stream_replicas,
        )?;
        loops.spawn(outbox.run(sink, |_| {}, shutdown.clone()));
        loops.serve_reads(client.clone(), queries::api(&store));
        loops.spawn(database.clone().watch(pool, shutdown));
        Ok(Self {
            client,
            database,
            store,
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

    /// The job tables, for tests and tools.
    pub fn store(&self) -> &SweepStore {
        &self.store
    }

    /// Waits for every loop to finish (after shutdown was signalled): the
    /// messages in hand are settled first.
    pub async fn finished(self) {
        self.loops.finished().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_must_fit_the_trigger_consumers_deliveries() {
        assert!(check_retry_delays(&DEFAULT_RETRY_DELAYS).is_ok());
        let nine = vec![Duration::from_secs(1); 9];
        assert!(check_retry_delays(&nine).is_ok());
        let ten = vec![Duration::from_secs(1); 10];
        let error = check_retry_delays(&ten).unwrap_err().to_string();
        assert!(error.contains("lists 10 delays"), "{error}");
        assert!(error.contains("at most 9 delays"), "{error}");
    }
}
