//! The gateway's Prometheus metrics. Label values come from closed sets
//! (route templates, status codes, configured sources), so cardinality is
//! bounded whatever the traffic.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PublishLabels {
    source: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceReasonLabels {
    source: &'static str,
    reason: &'static str,
}

/// Handles to every gateway metric.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    events: Family<PublishLabels, Counter>,
    publish_duration: Histogram,
    publish_errors: Family<ReasonLabels, Counter>,
    signature_failures: Family<SourceReasonLabels, Counter>,
    csr_signature_failures: Counter,
    rate_limited: Family<RouteLabels, Counter>,
    /// Sums the dashboard's overview reads (a Family cannot be read back).
    totals: std::sync::Arc<Totals>,
}

/// Requests and events since start, by class.
#[derive(Debug, Default)]
pub struct Totals {
    pub requests: std::sync::atomic::AtomicU64,
    pub client_errors: std::sync::atomic::AtomicU64,
    pub server_errors: std::sync::atomic::AtomicU64,
    pub events: std::sync::atomic::AtomicU64,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~4 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            events: Family::default(),
            publish_duration: latency_histogram(),
            publish_errors: Family::default(),
            signature_failures: Family::default(),
            csr_signature_failures: Counter::default(),
            rate_limited: Family::default(),
            totals: Default::default(),
        };
        registry.register(
            "hookmesh_gateway_requests",
            "HTTP requests answered, by route template and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "hookmesh_gateway_request_duration_seconds",
            "Time from request to response, by route template",
            metrics.request_duration.clone(),
        );
        registry.register(
            "hookmesh_gateway_events_published",
            "Envelopes acknowledged by JetStream, by source and outcome (stored or duplicate)",
            metrics.events.clone(),
        );
        registry.register(
            "hookmesh_gateway_publish_duration_seconds",
            "Time from publishing an envelope to JetStream's acknowledgement",
            metrics.publish_duration.clone(),
        );
        registry.register(
            "hookmesh_gateway_publish_errors",
            "Publishes that failed and were answered 503, by reason",
            metrics.publish_errors.clone(),
        );
        registry.register(
            "webhook_signature_failures",
            "Deliveries refused by authentication, by source and reason",
            metrics.signature_failures.clone(),
        );
        registry.register(
            "csr_webhook_signature_validation_failures",
            "Buddy-system deliveries whose signature or timestamp was refused (seed 002)",
            metrics.csr_signature_failures.clone(),
        );
        registry.register(
            "hookmesh_gateway_rate_limited",
            "Requests answered 429, by route template",
            metrics.rate_limited.clone(),
        );
        metrics
    }

    pub(crate) fn observe_request(&self, route: &'static str, status: u16, seconds: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.totals.requests.fetch_add(1, Relaxed);
        match status {
            400..=499 => self.totals.client_errors.fetch_add(1, Relaxed),
            500..=599 => self.totals.server_errors.fetch_add(1, Relaxed),
            _ => 0,
        };
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
        if status == 429 {
            self.rate_limited
                .get_or_create(&RouteLabels { route })
                .inc();
        }
    }

    pub(crate) fn published(&self, source: &'static str, duplicate: bool, seconds: f64) {
        let outcome = if duplicate { "duplicate" } else { "stored" };
        self.totals
            .events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.events
            .get_or_create(&PublishLabels { source, outcome })
            .inc();
        self.publish_duration.observe(seconds);
    }

    /// Requests and events since start.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    pub(crate) fn publish_failed(&self, reason: &'static str) {
        self.publish_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn authentication_failed(&self, source: &'static str, reason: &'static str) {
        self.signature_failures
            .get_or_create(&SourceReasonLabels { source, reason })
            .inc();
        if source == "buddy" {
            self.csr_signature_failures.inc();
        }
    }
}
