//! Seed 004's metrics, in Prometheus form (seconds, `_total`):
//! `webhooks_received_total`, `webhook_batch_size`,
//! `webhook_processing_duration_seconds`, `webhook_queue_depth`,
//! `webhooks_processed_total{status}`; plus the processing lag
//! (`webhook_processing_lag_seconds`, for 001's latency alert), duplicates by layer, the
//! fail-open and enrichment fallbacks, and what the two families announce.
//! Every label takes a bounded set of values: `family` is `delivery` or
//! `ci`, `event_type` a contract's event type.

use hookmesh_runtime::engine::{Layer, Observer, Processed};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FamilyLabels {
    family: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    family: &'static str,
    event_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    family: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    family: &'static str,
    stage: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LayerLabels {
    family: &'static str,
    layer: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PlatformLabels {
    platform: &'static str,
}

/// Handles to the batch-processor's metrics, shared by both families.
#[derive(Debug, Clone)]
pub struct BatchMetrics {
    received: Family<TypeLabels, Counter>,
    batch_size: Family<FamilyLabels, Histogram>,
    processing: Family<FamilyLabels, Histogram>,
    lag: Family<FamilyLabels, Histogram>,
    stages: Family<StageLabels, Histogram>,
    queue_depth: Family<FamilyLabels, Gauge>,
    processed: Family<StatusLabels, Counter>,
    duplicates: Family<LayerLabels, Counter>,
    dedup_fail_open: Family<FamilyLabels, Counter>,
    enrichment: Family<ResultLabels, Counter>,
    enrichment_fallbacks: Family<ReasonLabels, Counter>,
    failures_detected: Family<PlatformLabels, Counter>,
    failure_detection: Histogram,
    campaigns_completed: Counter,
    recipients_registered: Counter,
    late_events: Counter,
}

impl BatchMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            received: Family::default(),
            batch_size: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 15))
            }),
            processing: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
            lag: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 1.25, 50))
            }),
            stages: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
            queue_depth: Family::default(),
            processed: Family::default(),
            duplicates: Family::default(),
            dedup_fail_open: Family::default(),
            enrichment: Family::default(),
            enrichment_fallbacks: Family::default(),
            failures_detected: Family::default(),
            failure_detection: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
            ]),
            campaigns_completed: Counter::default(),
            recipients_registered: Counter::default(),
            late_events: Counter::default(),
        };
        registry.register(
            "webhooks_received",
            "Events read from JetStream by the batch-processor, by family and event type",
            metrics.received.clone(),
        );
        registry.register(
            "webhook_batch_size",
            "Events per batch handed to a family",
            metrics.batch_size.clone(),
        );
        registry.register(
            "webhook_processing_duration_seconds",
            "Time to deduplicate, enrich and commit one batch",
            metrics.processing.clone(),
        );
        registry.register(
            "webhook_processing_lag_seconds",
            "From an event's arrival in JetStream to the commit that applied it",
            metrics.lag.clone(),
        );
        registry.register(
            "webhook_batch_stage_duration_seconds",
            "Time of each stage of a batch: parse, dedup_read, apply (and within it enrich, each statement, commit), dedup_write",
            metrics.stages.clone(),
        );
        registry.register(
            "webhook_queue_depth",
            "Events waiting in the family's durable consumer (JetStream's pending count)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "webhooks_processed",
            "Events by outcome: applied, unmatched, duplicate, invalid or refused (dead-lettered), retry",
            metrics.processed.clone(),
        );
        registry.register(
            "webhook_duplicates",
            "Duplicates caught, by layer: memory (1 min), kv (24 h), database (constraint)",
            metrics.duplicates.clone(),
        );
        registry.register(
            "webhook_dedup_fail_open",
            "Batches whose KV check or record failed; the database constraint decided alone",
            metrics.dedup_fail_open.clone(),
        );
        registry.register(
            "webhook_enrichment_lookups",
            "Enrichment answers by result: cached, found, unknown (by the lookup database, or by the events log insert's join when there is none)",
            metrics.enrichment.clone(),
        );
        registry.register(
            "webhook_enrichment_fallbacks",
            "Events left unenriched because the lookup failed, by reason: timeout, error",
            metrics.enrichment_fallbacks.clone(),
        );
        registry.register(
            "ci_failures_detected",
            "Distinct pipeline.failed events of runs and jobs, by platform",
            metrics.failures_detected.clone(),
        );
        registry.register(
            "ci_failure_detection_seconds",
            "From the failure webhook's arrival in JetStream to its detection, in the batch that commits its ci.failure.detected",
            metrics.failure_detection.clone(),
        );
        registry.register(
            "delivery_campaigns_completed",
            "Campaigns whose every recipient has an outcome",
            metrics.campaigns_completed.clone(),
        );
        registry.register(
            "delivery_recipients_registered",
            "Recipients registered to campaigns",
            metrics.recipients_registered.clone(),
        );
        registry.register(
            "delivery_late_events_applied",
            "Delivery events applied when their recipient was registered after them",
            metrics.late_events.clone(),
        );
        metrics
    }

    /// The engine's figures for `family` (`delivery` or `ci`).
    pub fn family(&self, family: &'static str) -> FamilyMetrics {
        FamilyMetrics {
            metrics: self.clone(),
            family,
        }
    }

    pub(crate) fn queue_depth(&self, family: &'static str, pending: u64) {
        self.queue_depth
            .get_or_create(&FamilyLabels { family })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    pub(crate) fn enrichment(&self, result: &'static str, count: u64) {
        if count > 0 {
            self.enrichment
                .get_or_create(&ResultLabels { result })
                .inc_by(count);
        }
    }

    pub(crate) fn enrichment_fallback(&self, reason: &'static str, count: u64) {
        if count > 0 {
            self.enrichment_fallbacks
                .get_or_create(&ReasonLabels { reason })
                .inc_by(count);
        }
    }

    pub(crate) fn failure_detected(&self, platform: &'static str, seconds: f64) {
        self.failures_detected
            .get_or_create(&PlatformLabels { platform })
            .inc();
        self.failure_detection.observe(seconds);
    }

    pub(crate) fn registered(&self, recipients: u64, late_events: u64) {
        self.recipients_registered.inc_by(recipients);
        self.late_events.inc_by(late_events);
    }

    pub(crate) fn campaign_completed(&self) {
        self.campaigns_completed.inc();
    }
}

/// The batch engine's figures for one family, under seed 004's names.
#[derive(Debug, Clone)]
pub struct FamilyMetrics {
    metrics: BatchMetrics,
    family: &'static str,
}

impl Observer for FamilyMetrics {
    fn received(&self, event_type: &'static str) {
        self.metrics
            .received
            .get_or_create(&TypeLabels {
                family: self.family,
                event_type,
            })
            .inc();
    }

    fn processed(&self, outcome: Processed, count: u64) {
        if count > 0 {
            self.metrics
                .processed
                .get_or_create(&StatusLabels {
                    family: self.family,
                    status: outcome.label(),
                })
                .inc_by(count);
        }
    }

    fn duplicates(&self, layer: Layer, count: u64) {
        self.metrics
            .duplicates
            .get_or_create(&LayerLabels {
                family: self.family,
                layer: layer.label(),
            })
            .inc_by(count);
    }

    fn lag(&self, seconds: f64) {
        self.metrics
            .lag
            .get_or_create(&FamilyLabels {
                family: self.family,
            })
            .observe(seconds);
    }

    fn batch(&self, size: usize, seconds: f64) {
        let labels = FamilyLabels {
            family: self.family,
        };
        self.metrics
            .batch_size
            .get_or_create(&labels)
            .observe(size as f64);
        self.metrics
            .processing
            .get_or_create(&labels)
            .observe(seconds);
    }

    fn stage(&self, stage: &'static str, seconds: f64) {
        self.metrics
            .stages
            .get_or_create(&StageLabels {
                family: self.family,
                stage,
            })
            .observe(seconds);
    }

    fn dedup_fail_open(&self) {
        self.metrics
            .dedup_fail_open
            .get_or_create(&FamilyLabels {
                family: self.family,
            })
            .inc();
    }
}
