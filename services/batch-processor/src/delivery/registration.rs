//! Campaign registrations (`delivery.campaign.registration`, from
//! `POST /api/campaigns`): a campaign's recipients, as the sending
//! application knows them. Each registration is one transaction, which also
//! applies the delivery events that named its messages before they were
//! registered.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::delivery::CampaignRegistration;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_runtime::ops::DatabaseHealth;
use hookmesh_runtime::{Delivery, Handler, Outcome};

use super::store::{DeliveryStore, NewRecipient, RegisterError};
use crate::telemetry::BatchMetrics;

#[derive(Debug)]
pub struct RegistrationHandler {
    store: DeliveryStore,
    metrics: BatchMetrics,
    database: DatabaseHealth,
}

impl RegistrationHandler {
    pub fn new(store: DeliveryStore, metrics: BatchMetrics, database: DatabaseHealth) -> Self {
        Self {
            store,
            metrics,
            database,
        }
    }

    async fn register(&self, delivery: &Delivery) -> Outcome {
        let envelope = match Envelope::parse(delivery.payload()) {
            Ok(envelope) => envelope,
            Err(errors) => {
                return Outcome::dead_letter(format!("not a valid CloudEvents envelope: {errors}"));
            }
        };
        let registration: CampaignRegistration = match envelope.data_as() {
            Ok(registration) => registration,
            Err(errors) => {
                return Outcome::dead_letter(format!(
                    "not a valid campaign registration: {errors}"
                ));
            }
        };
        let recipients: Vec<NewRecipient> = registration
            .recipients
            .iter()
            .map(|r| NewRecipient {
                provider: r.provider.clone(),
                message_id: r.message_id.clone(),
                address: r.address.clone(),
            })
            .collect();
        let registered = self
            .store
            .register_campaign(
                &envelope.tenantid,
                &registration.campaign_id,
                registration.campaign_size(),
                &recipients,
                Timestamp::now(),
            )
            .await;
        match registered {
            Ok(registered) => {
                self.database.record(true);
                self.metrics.registered(
                    registered.new_recipients as u64,
                    registered.late_events as u64,
                );
                for completed in &registered.completed {
                    self.metrics.campaign_completed();
                    tracing::info!(tenant = completed.tenant_id.as_str(), campaign = %completed.campaign_id, size = completed.size, "A campaign completed.");
                }
                tracing::info!(
                    tenant = envelope.tenantid.as_str(),
                    campaign = %registration.campaign_id,
                    new_recipients = registered.new_recipients,
                    late_events = registered.late_events,
                    correlation_id = delivery.correlation_id(),
                    "Campaign recipients registered."
                );
                Outcome::Done
            }
            Err(RegisterError::Refused(reason)) => {
                // Kept for the read API before the registration goes to the
                // dead letters: the sender learns why from its campaign.
                let kept = self
                    .store
                    .record_rejection(
                        &envelope.tenantid,
                        &registration.campaign_id,
                        &envelope.id,
                        &reason,
                        registration.recipients.len() as u64,
                        Timestamp::now(),
                    )
                    .await;
                match kept {
                    Ok(()) => Outcome::dead_letter(reason),
                    Err(error) => {
                        self.database.record(false);
                        Outcome::retry(
                            delivery.delivered,
                            format!("the database is unavailable: {error}"),
                        )
                    }
                }
            }
            Err(RegisterError::Database(error)) => {
                self.database.record(false);
                Outcome::retry(
                    delivery.delivered,
                    format!("the database is unavailable: {error}"),
                )
            }
        }
    }
}

impl Handler for RegistrationHandler {
    type Arrival = ();

    /// Read when the batch is handled.
    fn arrive(&self, _: &mut Delivery) {}

    /// One registration at a time: each may hold ten thousand recipients.
    async fn handle_arrived(&self, batch: &mut [Delivery], _: Vec<()>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in batch {
            outcomes.push(self.register(delivery).await);
        }
        outcomes
    }
}
