//! The CI family (seed 001): normalised pipeline events from four platforms
//! become runs with a forward-only status, failures are classified and
//! counted per repository, and each failure is announced on
//! `ci.failure.detected` as soon as its batch commits.
//!
//! - [`classify`]: failure patterns from `failure_context` (plain code);
//! - [`runs`]: the status order (plain code);
//! - [`store`]: the tables and the one-transaction batch.

pub mod classify;
pub mod failures;
pub mod runs;
pub mod store;

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::{CiPipelineEvent, PipelineEventType};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::ci_pipeline;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::Delivery;
use hookmesh_runtime::engine::{Applied, ApplyError, DedupKey, Family, Fresh, Laps};

use self::store::{CiFact, CiStore};
use crate::telemetry::BatchMetrics;

#[derive(Debug)]
pub struct CiFamily {
    store: CiStore,
    metrics: BatchMetrics,
}

impl CiFamily {
    pub fn new(store: CiStore, metrics: BatchMetrics) -> Self {
        Self { store, metrics }
    }
}

/// Reads a `ci.pipeline.<platform>.<event>` message as strictly as the
/// gateway reads the webhook, and classifies failures.
pub fn parse_ci(subject: &str, payload: &[u8]) -> Result<CiFact, String> {
    let envelope = Envelope::parse(payload)
        .map_err(|errors| format!("not a valid CloudEvents envelope: {errors}"))?;
    let event: CiPipelineEvent = envelope
        .data_as()
        .map_err(|errors| format!("not a valid CI pipeline event: {errors}"))?;
    let expected = ci_pipeline(event.platform, event.event_type);
    if subject != expected {
        return Err(format!(
            "published on {subject:?}, but a {} event from {} belongs on {expected:?}",
            event.kind(),
            event.platform.as_str()
        ));
    }
    let error_patterns = match (&event.event_type, &event.failure_context) {
        (PipelineEventType::Failed, context) => {
            classify::classify(&context.clone().unwrap_or_default(), &event.metadata)
        }
        _ => Vec::new(),
    };
    Ok(CiFact {
        tenant: envelope.tenantid,
        event,
        error_patterns,
    })
}

impl Family for CiFamily {
    type Event = CiFact;

    const NAME: &'static str = "ci";

    fn parse(&self, delivery: &Delivery) -> Result<CiFact, String> {
        parse_ci(delivery.subject(), delivery.payload())
    }

    fn dedup_key(&self, fact: &CiFact) -> DedupKey {
        DedupKey::of_source(
            Self::NAME,
            fact.event.platform.as_str(),
            fact.event.kind(),
            &fact.event.id,
        )
    }

    fn event_type(&self, fact: &CiFact) -> &'static str {
        fact.event.kind()
    }

    async fn apply(&self, events: &[Fresh<'_, CiFact>]) -> Result<Vec<Applied>, ApplyError> {
        let mut laps = Laps::start();
        let outcome = self.store.apply(events, Timestamp::now(), &mut laps).await;
        laps.report(&self.metrics.family(Self::NAME));
        let outcome = outcome?;
        for failure in &outcome.detected {
            self.metrics.failure_detected(
                failure.platform.as_str(),
                failure.received_at.seconds_until(failure.detected_at),
            );
            // Each failure is counted and announced (`ci.failure.detected`);
            // a line apiece at INFO was 25 MB of log per replica over the
            // million-webhook soak.
            tracing::debug!(
                platform = failure.platform.as_str(),
                repository = %failure.repository,
                pipeline_id = %failure.pipeline_id,
                job_id = failure.job_id.as_deref().unwrap_or(""),
                patterns = ?failure.error_patterns,
                "A pipeline failure was detected."
            );
        }
        Ok(outcome.applied)
    }
}
