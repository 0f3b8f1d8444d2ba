//! Seed 002's consumer metrics, in Prometheus form (seconds, `_total`):
//! `csr_webhook_received_total`, `csr_webhook_processing_duration_seconds`,
//! `csr_webhook_errors_total`, `csr_event_processing_lag_seconds`, plus
//! duplicates by layer and journey transitions by stage.

use hookmesh_contracts::buddy::BuddyEventType;
use hookmesh_contracts::csr::JourneyStage;
use hookmesh_contracts::validation::StrEnum as _;
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

/// Why an event was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    /// Failed its schema: dead-lettered.
    Invalid,
    /// The database refused or was unreachable: retried.
    Database,
}

/// Handles to the csr-consumer's metrics.
#[derive(Debug, Clone)]
pub struct CsrMetrics {
    received: Family<TypeLabels, Counter>,
    processing: Histogram,
    errors: Family<ReasonLabels, Counter>,
    lag: Histogram,
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
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
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
            "Buddy events that failed, by reason: invalid (dead-lettered) or database (retried) (seed 002)",
            metrics.errors.clone(),
        );
        registry.register(
            "csr_event_processing_lag_seconds",
            "Time from a buddy event happening to the csr-consumer applying it (seed 002)",
            metrics.lag.clone(),
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

    pub(crate) fn received(&self, event_type: BuddyEventType) {
        self.received
            .get_or_create(&TypeLabels {
                event_type: event_type.as_str(),
            })
            .inc();
    }

    pub(crate) fn applied(&self, seconds: f64, lag_seconds: f64) {
        self.processing.observe(seconds);
        self.lag.observe(lag_seconds.max(0.0));
    }

    pub(crate) fn error(&self, reason: ErrorReason) {
        let reason = match reason {
            ErrorReason::Invalid => "invalid",
            ErrorReason::Database => "database",
        };
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn duplicate(&self, layer: &'static str) {
        self.duplicates.get_or_create(&LayerLabels { layer }).inc();
    }

    pub(crate) fn transition(&self, stage: JourneyStage) {
        self.transitions
            .get_or_create(&StageLabels {
                stage: stage.as_str(),
            })
            .inc();
    }

    pub(crate) fn kv_fallback(&self) {
        self.kv_fallbacks.inc();
    }
}
