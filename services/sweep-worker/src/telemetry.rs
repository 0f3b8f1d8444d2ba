//! Seed 000's and 003's pipeline metrics, in Prometheus form (seconds,
//! `_total`): `pipeline_jobs_queued_total`, `pipeline_job_duration_seconds`
//! (000's buckets), `pipeline_jobs_processed_total`,
//! `pipeline_trading_api_latency_seconds`, plus Trading API failures and
//! notifications. Labels are bounded by configuration, not by traffic: job
//! types, the four statuses, the Trading API's endpoints, and tenants (the
//! gateway admits only the tenants of its API keys; a native publisher
//! chooses its own, so its tenants are as many as it sends).

use hookmesh_contracts::sweep_jobs::{JobStatus, TRADING_SWEEP};
use hookmesh_contracts::validation::StrEnum as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueuedLabels {
    job_type: &'static str,
    tenant_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    job_type: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    channel: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelLabels {
    channel: &'static str,
}

/// The Trading API's endpoints, as metric labels.
pub mod endpoint {
    pub const HEALTH: &str = "/health";
    pub const LOGIN: &str = "/api/v1/auth/login";
    pub const SWEEP: &str = "/api/v1/strategy/sweep";
    pub const BEST: &str = "/api/v1/sweeps/{id}/best";
    pub const STREAM: &str = "/sse-proxy/jobs/{id}/stream";
}

/// Handles to the sweep-worker's metrics.
#[derive(Debug, Clone)]
pub struct SweepMetrics {
    queued: Family<QueuedLabels, Counter>,
    duration: Family<StatusLabels, Histogram>,
    processed: Family<StatusLabels, Counter>,
    api_latency: Family<EndpointLabels, Histogram>,
    api_failures: Family<EndpointLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    notification_latency: Family<ChannelLabels, Histogram>,
    notification_send: Family<ChannelLabels, Histogram>,
}

impl SweepMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            queued: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 600.0])
            }),
            processed: Family::default(),
            api_latency: Family::new_with_constructor(|| {
                Histogram::new([0.1, 0.5, 1.0, 2.0, 5.0, 10.0])
            }),
            api_failures: Family::default(),
            notifications: Family::default(),
            notification_latency: Family::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0])
            }),
            notification_send: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
            }),
        };
        registry.register(
            "pipeline_jobs_queued",
            "Jobs recorded as QUEUED, by job type and tenant (seed 000)",
            metrics.queued.clone(),
        );
        registry.register(
            "pipeline_job_duration_seconds",
            "From a job's creation to its end, by job type and final status (seed 000)",
            metrics.duration.clone(),
        );
        registry.register(
            "pipeline_jobs_processed",
            "Jobs that ended, by job type and status: COMPLETED or FAILED (seed 000)",
            metrics.processed.clone(),
        );
        registry.register(
            "pipeline_trading_api_latency_seconds",
            "Trading API response time, by endpoint (seed 003)",
            metrics.api_latency.clone(),
        );
        registry.register(
            "pipeline_trading_api_failures",
            "Trading API calls that failed (unreachable, 5xx, refused or unreadable), by endpoint",
            metrics.api_failures.clone(),
        );
        registry.register(
            "pipeline_notifications",
            "Notification attempts, by channel (email, slack) and outcome: sent, retry (a transient failure, retried with backoff) or dead_letter (refused, or out of attempts)",
            metrics.notifications.clone(),
        );
        registry.register(
            "pipeline_notification_latency_seconds",
            "From the fact (a job finished, a CI run failed, a threshold crossed) to its notification's acceptance by the channel, by channel",
            metrics.notification_latency.clone(),
        );
        registry.register(
            "pipeline_notification_send_seconds",
            "One attempt to hand a notification to its channel (SMTP transaction, webhook POST), by channel",
            metrics.notification_send.clone(),
        );
        metrics
    }

    pub(crate) fn queued(&self, tenant: &str) {
        self.queued
            .get_or_create(&QueuedLabels {
                job_type: TRADING_SWEEP,
                tenant_id: tenant.to_owned(),
            })
            .inc();
    }

    /// A job ended in `status` after `seconds`.
    pub(crate) fn ended(&self, status: JobStatus, seconds: f64) {
        let labels = StatusLabels {
            job_type: TRADING_SWEEP,
            status: status.as_str(),
        };
        self.processed.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(seconds.max(0.0));
    }

    pub(crate) fn api_call(&self, endpoint: &'static str, seconds: f64, ok: bool) {
        let labels = EndpointLabels { endpoint };
        self.api_latency.get_or_create(&labels).observe(seconds);
        if !ok {
            self.api_failures.get_or_create(&labels).inc();
        }
    }

    /// An attempt on `channel` ended in `outcome` after `send_seconds`;
    /// when sent, `latency_seconds` after its fact.
    pub(crate) fn notification(
        &self,
        channel: &'static str,
        outcome: &'static str,
        send_seconds: f64,
        latency_seconds: Option<f64>,
    ) {
        let labels = ChannelLabels { channel };
        self.notifications
            .get_or_create(&NotificationLabels { channel, outcome })
            .inc();
        self.notification_send
            .get_or_create(&labels)
            .observe(send_seconds);
        if let Some(latency) = latency_seconds {
            self.notification_latency
                .get_or_create(&labels)
                .observe(latency.max(0.0));
        }
    }
}
