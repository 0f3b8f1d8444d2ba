//! Seed 002's consumer metrics, in Prometheus form (seconds, `_total`):
//! `csr_webhook_received_total`, `csr_webhook_processing_duration_seconds`,
//! `csr_webhook_errors_total`, `csr_event_processing_lag_seconds` (002's
//! "time from receipt to processing": from the event's arrival in JetStream
//! to the commit that applied it), plus the event's own age when applied,
//! duplicates by layer and journey transitions by stage. The engine reports
//! through [`Observer`]; the rest is recorded here.

use hookmesh_contracts::csr::JourneyStage;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::engine::{Layer, Observer, Processed};
use hookmesh_runtime::outbox::OutboxMessage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    event_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LayerLabels {
    layer: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// Handles to the csr-consumer's metrics.
#[derive(Debug, Clone)]
pub struct CsrMetrics {
    received: Family<TypeLabels, Counter>,
    processing: Histogram,
    errors: Family<ReasonLabels, Counter>,
    lag: Histogram,
    age: Histogram,
    duplicates: Family<LayerLabels, Counter>,
    transitions: Family<StageLabels, Counter>,
    kv_fallbacks: Counter,
}

impl CsrMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            received: Family::default(),
            processing: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            errors: Family::default(),
            lag: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ]),
            age: Histogram::new([
                1.0,
                10.0,
                60.0,
                300.0,
                3600.0,
                21_600.0,
                86_400.0,
                604_800.0,
                2_592_000.0,
            ]),
            duplicates: Family::default(),
            transitions: Family::default(),
            kv_fallbacks: Counter::default(),
        };
        registry.register(
            "csr_webhook_received",
            "Buddy events received by the csr-consumer, by type (seed 002)",
            metrics.received.clone(),
        );
        registry.register(
            "csr_webhook_processing_duration_seconds",
            "Time to apply one buddy event (seed 002)",
            metrics.processing.clone(),
        );
        registry.register(
            "csr_webhook_errors",
            "Buddy events that failed, by reason: invalid or refused (dead-lettered), database (retried) (seed 002)",
            metrics.errors.clone(),
        );
        registry.register(
            "csr_event_processing_lag_seconds",
            "Time from a buddy event's receipt (its arrival in JetStream) to the commit that applied it (seed 002)",
            metrics.lag.clone(),
        );
        registry.register(
            "csr_event_age_seconds",
            "Age of a buddy event when applied: from its own timestamp to the commit (large for back-dated, retried or replayed events)",
            metrics.age.clone(),
        );
        registry.register(
            "csr_duplicates",
            "Buddy events recognised as already applied, by layer (kv, database)",
            metrics.duplicates.clone(),
        );
        registry.register(
            "csr_journey_transitions",
            "Participants who reached a journey stage",
            metrics.transitions.clone(),
        );
        registry.register(
            "csr_kv_fallbacks",
            "Times the idempotency bucket was unreachable and the database constraint decided alone",
            metrics.kv_fallbacks.clone(),
        );
        metrics
    }

    pub(crate) fn event_age(&self, seconds: f64) {
        self.age.observe(seconds.max(0.0));
    }

    /// A journey event reached JetStream (the outbox's report).
    pub fn published(&self, message: &OutboxMessage) {
        if let Some(stage) = message.subject.strip_prefix("csr.journey.") {
            let stage = JourneyStage::from_wire(stage).map_or("other", JourneyStage::as_str);
            self.transitions.get_or_create(&StageLabels { stage }).inc();
        }
    }

    fn error(&self, reason: &'static str, count: u64) {
        if count > 0 {
            self.errors
                .get_or_create(&ReasonLabels { reason })
                .inc_by(count);
        }
    }
}

impl Observer for CsrMetrics {
    fn received(&self, event_type: &'static str) {
        self.received
            .get_or_create(&TypeLabels { event_type })
            .inc();
    }

    fn processed(&self, outcome: Processed, count: u64) {
        match outcome {
            Processed::Invalid => self.error("invalid", count),
            Processed::Refused => self.error("refused", count),
            Processed::Retry => self.error("database", count),
            Processed::Applied | Processed::Unmatched | Processed::Duplicate => {}
        }
    }

    fn duplicates(&self, layer: Layer, count: u64) {
        self.duplicates
            .get_or_create(&LayerLabels {
                layer: layer.label(),
            })
            .inc_by(count);
    }

    fn lag(&self, seconds: f64) {
        self.lag.observe(seconds.max(0.0));
    }

    /// 002's processing duration is per event: each event of the batch is
    /// counted with its share of the batch's time.
    fn batch(&self, size: usize, seconds: f64) {
        let each = seconds / size.max(1) as f64;
        for _ in 0..size {
            self.processing.observe(each);
        }
    }

    fn dedup_fail_open(&self) {
        self.kv_fallbacks.inc();
    }
}
