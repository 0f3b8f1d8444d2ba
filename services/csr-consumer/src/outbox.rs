//! Publishes journey transitions from the outbox table to
//! `csr.journey.<stage>`, and marks them published once JetStream has them.
//!
//! A transition is committed with the event that caused it, so none is lost
//! if the process stops before publishing. Publishing again after a crash
//! is harmless: the `Nats-Msg-Id` (`csr.journey:<tenant>:<program>:<participant>:<stage>`)
//! makes JetStream keep one, and replicas racing on the same row do the same.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use hookmesh_contracts::csr::JourneyTransition;
use hookmesh_contracts::envelope::{CLOUDEVENTS_CONTENT_TYPE, Envelope};
use hookmesh_contracts::subjects::csr_journey;
use hookmesh_contracts::{TenantId, Timestamp};
use tokio::sync::{Notify, watch};

use crate::store::{PendingTransition, Store};
use crate::telemetry::CsrMetrics;

const BATCH: i64 = 200;
/// How often the outbox is looked at without a nudge.
const IDLE_CHECK: Duration = Duration::from_secs(2);

fn envelope(transition: &PendingTransition) -> Option<(String, Vec<u8>)> {
    let tenant = TenantId::parse(&transition.tenant_id).ok()?;
    let at = Timestamp::from_unix_millis(transition.at_millis)?;
    let id = format!(
        "{}:{}:{}:{}",
        transition.tenant_id, transition.program_id, transition.participant_id, transition.stage
    );
    let payload = JourneyTransition {
        tenant_id: tenant.clone(),
        program_id: transition.program_id.clone(),
        participant_id: transition.participant_id.clone(),
        stage: transition.stage,
        from_stage: transition.from_stage,
        event_id: transition.event_id.clone(),
        at,
    };
    let json = Envelope::new(
        id.clone(),
        "/csr-consumer",
        at,
        tenant,
        Some(transition.participant_id.clone()),
        payload,
    )
    .to_json();
    Some((id, json))
}

async fn publish(js: &jetstream::Context, transition: &PendingTransition) -> Result<(), String> {
    let (id, json) = envelope(transition).ok_or("a stored transition is malformed")?;
    let message = PublishMessage::build()
        .payload(json.into())
        .message_id(format!("csr.journey:{id}"))
        .header("Content-Type", CLOUDEVENTS_CONTENT_TYPE);
    js.send_publish(csr_journey(transition.stage), message)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Drains the outbox whenever nudged (and every few seconds), until shutdown.
pub async fn run(
    js: jetstream::Context,
    store: Store,
    nudge: Arc<Notify>,
    metrics: CsrMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        loop {
            let pending = match store.unpublished_transitions(BATCH).await {
                Ok(pending) => pending,
                Err(error) => {
                    tracing::warn!(%error, "Cannot read the journey outbox; retrying.");
                    break;
                }
            };
            if pending.is_empty() {
                break;
            }
            let mut progressed = false;
            for transition in &pending {
                match publish(&js, transition).await {
                    Ok(()) => {
                        let now = Timestamp::now().unix_millis();
                        if let Err(error) = store.mark_published(transition, now).await {
                            tracing::warn!(%error, "Cannot mark a journey transition published; it will be published again (deduplicated).");
                        } else {
                            metrics.transition(transition.stage);
                            progressed = true;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, participant = %transition.participant_id, stage = %transition.stage, "Cannot publish a journey transition yet.");
                        break;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
            () = nudge.notified() => {}
            () = tokio::time::sleep(IDLE_CHECK) => {}
        }
    }
}
