//! Buddy events as a family of the runtime's engine: how one is read and
//! identified, and how a batch of them is applied.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::buddy::BuddyEventData;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::Delivery;
use hookmesh_runtime::engine::{Applied, ApplyError, DedupKey, Family, Fresh};

use crate::facts::{self, EventFacts};
use crate::store::Store;
use crate::telemetry::CsrMetrics;

#[derive(Debug)]
pub struct CsrFamily {
    store: Store,
    metrics: CsrMetrics,
}

impl CsrFamily {
    pub fn new(store: Store, metrics: CsrMetrics) -> Self {
        Self { store, metrics }
    }
}

/// Reads a buddy event as strictly as the gateway reads the webhook: a
/// CloudEvents envelope whose data is a valid buddy event of its tenant.
pub fn parse_buddy(payload: &[u8]) -> Result<EventFacts, String> {
    let envelope = Envelope::parse(payload)
        .map_err(|errors| format!("not a valid CloudEvents envelope: {errors}"))?;
    let data = BuddyEventData::from_envelope(&envelope)
        .map_err(|errors| format!("not a valid {:?} event: {errors}", envelope.event_type))?;
    if envelope.tenantid != *data.tenant_id() {
        return Err(format!(
            "tenantid {:?} does not match data.tenant_id {:?}",
            envelope.tenantid.as_str(),
            data.tenant_id().as_str()
        ));
    }
    Ok(facts::facts(&envelope.id, envelope.time, &data))
}

impl Family for CsrFamily {
    type Event = EventFacts;

    const NAME: &'static str = "csr";

    fn parse(&self, delivery: &Delivery) -> Result<EventFacts, String> {
        parse_buddy(delivery.payload())
    }

    /// An event id is unique within its tenant (002's `X-Webhook-Id`).
    fn dedup_key(&self, facts: &EventFacts) -> DedupKey {
        DedupKey::new(facts.tenant_id.as_str(), &facts.event_id)
    }

    fn event_type(&self, facts: &EventFacts) -> &'static str {
        facts.event_type.as_str()
    }

    async fn apply(&self, events: &[Fresh<EventFacts>]) -> Result<Vec<Applied>, ApplyError> {
        let now = Timestamp::now();
        let applied = self.store.apply(events, now).await?;
        for (fresh, answer) in events.iter().zip(&applied) {
            if *answer == Applied::New {
                let facts = &fresh.event;
                self.metrics.event_age(facts.occurred_at.seconds_until(now));
                tracing::debug!(
                    event_id = %facts.event_id,
                    event_type = %facts.event_type,
                    tenant = %facts.tenant_id,
                    correlation_id = %fresh.correlation_id,
                    "Applied a buddy event."
                );
            }
        }
        Ok(applied)
    }
}
