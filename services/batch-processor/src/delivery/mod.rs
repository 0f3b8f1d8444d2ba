//! The delivery family (seed 004): provider events about messages move
//! each recipient's status forward, count toward its campaign, and
//! complete the campaign once every recipient has an outcome.
//!
//! - [`status`]: the status order and the counters (plain code);
//! - [`store`]: the tables and the one-transaction batch;
//! - [`by_recipient`]: a batch's statuses grouped by recipient (plain code);
//! - [`registration`]: campaigns' recipients, from `POST /api/campaigns`.

pub mod by_recipient;
pub mod registration;
pub mod status;
pub mod store;

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::delivery::DeliveryEvent;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::provider_delivery;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::Delivery;
use hookmesh_runtime::engine::{Applied, ApplyError, DedupKey, Family, Fresh, Laps};

use self::store::{DeliveryFact, DeliveryStore, Enriched, RecipientKey, RecipientLookup};
use crate::enrich::Enricher;
use crate::telemetry::BatchMetrics;

#[derive(Debug)]
pub struct DeliveryFamily {
    store: DeliveryStore,
    /// `None`: the recipients are read from the main database, so the
    /// events log's insert joins them (see [`Enriched::InTransaction`]).
    enricher: Option<Enricher<RecipientLookup>>,
    metrics: BatchMetrics,
}

impl DeliveryFamily {
    pub fn new(
        store: DeliveryStore,
        enricher: Option<Enricher<RecipientLookup>>,
        metrics: BatchMetrics,
    ) -> Self {
        Self {
            store,
            enricher,
            metrics,
        }
    }
}

/// Reads a `providers.<provider>.<event_type>` message as strictly as the
/// gateway reads the webhook.
pub fn parse_delivery(subject: &str, payload: &[u8]) -> Result<DeliveryFact, String> {
    let envelope = Envelope::parse(payload)
        .map_err(|errors| format!("not a valid CloudEvents envelope: {errors}"))?;
    let event: DeliveryEvent = envelope
        .data_as()
        .map_err(|errors| format!("not a valid delivery event: {errors}"))?;
    let expected = provider_delivery(&event.provider, event.delivery.event_type);
    if subject != expected {
        return Err(format!(
            "published on {subject:?}, but a {} event of provider {:?} belongs on {expected:?}",
            event.delivery.event_type.as_str(),
            event.provider
        ));
    }
    let mut fact = DeliveryFact::new(
        &event.provider,
        event.delivery.event_type,
        &event.delivery.message_id,
        &envelope.id,
        event.delivery.timestamp,
    );
    fact.reason = event.delivery.reason.map(String::into_boxed_str);
    fact.url = event.delivery.url.map(String::into_boxed_str);
    Ok(fact)
}

/// A delivery event's identity: provider, event type and the provider's
/// message id.
pub fn dedup_key(fact: &DeliveryFact) -> DedupKey {
    DedupKey::of_source(
        DeliveryFamily::NAME,
        fact.provider(),
        fact.status.as_str(),
        fact.message_id(),
    )
}

impl Family for DeliveryFamily {
    type Event = DeliveryFact;

    const NAME: &'static str = "delivery";

    fn parse(&self, delivery: &Delivery) -> Result<DeliveryFact, String> {
        parse_delivery(delivery.subject(), delivery.payload())
    }

    fn dedup_key(&self, fact: &DeliveryFact) -> DedupKey {
        dedup_key(fact)
    }

    fn event_type(&self, fact: &DeliveryFact) -> &'static str {
        fact.status.as_str()
    }

    async fn apply(&self, events: &[Fresh<'_, DeliveryFact>]) -> Result<Vec<Applied>, ApplyError> {
        let mut laps = Laps::start();
        let looked_up = match &self.enricher {
            Some(enricher) => {
                // Gone before the statements: a batch holds ten thousand.
                let keys: Vec<_> = events
                    .iter()
                    .map(|fresh| {
                        RecipientKey::new(fresh.event.provider(), fresh.event.message_id())
                    })
                    .collect();
                let enrichment = enricher.enrich(&keys).await;
                laps.lap("enrich");
                Some(enrichment)
            }
            None => None,
        };
        let enriched = match &looked_up {
            Some(enrichment) => Enriched::Looked(enrichment),
            None => Enriched::InTransaction,
        };
        let outcome = self
            .store
            .apply(events, enriched, Timestamp::now(), &mut laps)
            .await;
        laps.report(&self.metrics.family(Self::NAME));
        let outcome = outcome?;
        if looked_up.is_none() {
            // The join's answers: a new event's recipient was there, an
            // unmatched one's was not.
            let count = |wanted: Applied| {
                outcome
                    .applied
                    .iter()
                    .filter(|applied| **applied == wanted)
                    .count() as u64
            };
            self.metrics.enrichment("found", count(Applied::New));
            self.metrics
                .enrichment("unknown", count(Applied::Unmatched));
        }
        for completed in &outcome.completed {
            self.metrics.campaign_completed();
            tracing::info!(
                tenant = completed.tenant_id.as_str(),
                campaign = %completed.campaign_id,
                size = completed.size,
                delivered = completed.counts.delivered,
                bounced = completed.counts.bounced,
                failed = completed.counts.failed,
                "A campaign completed."
            );
        }
        Ok(outcome.applied)
    }
}
