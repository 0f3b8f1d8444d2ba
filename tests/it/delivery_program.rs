//! A generated set of campaigns and provider delivery events, the ways to
//! deliver them (natively and through the gateway), and an independent
//! model of what the batch-processor must make of them: written from the
//! documented rules (docs/batch.md), not from the service's code.

use std::collections::{BTreeMap, BTreeSet};
use std::future::IntoFuture as _;

use async_nats::jetstream;
use hookmesh_batch_processor::delivery::store::{DeliveryStore, NewRecipient};
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_tests::{TestClient as _, TestGateway, secrets, sign, unix_now};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::buddy_program::Random;

pub const TENANT: &str = "acme";
pub const PROVIDERS: [&str; 2] = ["sendgrid", "ses"];

/// The wire statuses in the order the rules apply them.
pub const ORDER: [&str; 7] = [
    "sent",
    "delivered",
    "opened",
    "clicked",
    "failed",
    "bounced",
    "complained",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub provider: &'static str,
    pub message_id: String,
    pub campaign: String,
}

/// One provider event, as the provider would post it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub provider: &'static str,
    pub status: &'static str,
    pub message_id: String,
    pub second: i64,
}

impl Sent {
    pub fn body(&self) -> Value {
        json!({
            "event_type": self.status,
            "message_id": self.message_id,
            "timestamp": Timestamp::from_unix_millis(1_740_000_000_000 + self.second * 1000)
                .unwrap()
                .to_rfc3339(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Program {
    /// Campaign id → its recipients.
    pub campaigns: BTreeMap<String, Vec<Recipient>>,
    /// Every distinct event, once.
    pub events: Vec<Sent>,
}

/// `recipients` per campaign over `campaigns` campaigns; the same message
/// ids are used by both providers (in different campaigns), and a few
/// events name messages nobody registered. In even-numbered campaigns every
/// recipient hears an outcome, so they complete; in the others about 5 %
/// hear nothing.
pub fn generate(seed: u64, campaigns: usize, recipients: usize) -> Program {
    let mut random = Random::new(seed);
    let mut program = Program {
        campaigns: BTreeMap::new(),
        events: Vec::new(),
    };
    for c in 0..campaigns {
        let provider = PROVIDERS[c % PROVIDERS.len()];
        let campaign = format!("campaign-{c}");
        let mut list = Vec::new();
        for r in 0..recipients {
            // Campaigns of the two providers share message ids.
            let message_id = format!("msg-{}-{r:04}", c / PROVIDERS.len());
            list.push(Recipient {
                provider,
                message_id: message_id.clone(),
                campaign: campaign.clone(),
            });
            let mut emit = |status: &'static str, random: &mut Random| {
                program.events.push(Sent {
                    provider,
                    status,
                    message_id: message_id.clone(),
                    second: random.range(0, 86_400),
                });
            };
            if random.chance(0.3) {
                emit("sent", &mut random);
            }
            let fate = if c % 2 == 0 {
                random.range(0, 95)
            } else {
                random.range(0, 100)
            };
            if fate < 4 {
                emit("failed", &mut random);
            } else if fate < 10 {
                emit("bounced", &mut random);
            } else if fate < 95 {
                emit("delivered", &mut random);
                if random.chance(0.5) {
                    emit("opened", &mut random);
                    if random.chance(0.4) {
                        emit("clicked", &mut random);
                    }
                }
                if random.chance(0.03) {
                    emit("complained", &mut random);
                }
            }
            // The remaining 5 % hear nothing: their campaign never completes.
        }
        program.campaigns.insert(campaign, list);
    }
    for n in 0..12 {
        program.events.push(Sent {
            provider: PROVIDERS[n % 2],
            status: "delivered",
            message_id: format!("unregistered-{n}"),
            second: n as i64,
        });
    }
    program
}

/// A campaign's numbers as the rules define them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedCampaign {
    pub size: u64,
    /// delivered, opened, clicked, bounced, complained, failed.
    pub counts: [u64; 6],
    pub settled: u64,
    pub completed: bool,
}

/// Per campaign, from the distinct events alone.
pub fn expected_campaigns(program: &Program) -> BTreeMap<String, ExpectedCampaign> {
    let mut seen: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for event in &program.events {
        seen.entry((event.provider, &event.message_id))
            .or_default()
            .insert(event.status);
    }
    program
        .campaigns
        .iter()
        .map(|(campaign, recipients)| {
            let mut counts = [0u64; 6];
            let mut settled = 0;
            for recipient in recipients {
                let statuses = seen
                    .get(&(recipient.provider, recipient.message_id.as_str()))
                    .cloned()
                    .unwrap_or_default();
                let any = |names: &[&str]| u64::from(names.iter().any(|n| statuses.contains(n)));
                counts[0] += any(&["delivered", "opened", "clicked", "complained"]);
                counts[1] += any(&["opened", "clicked"]);
                counts[2] += any(&["clicked"]);
                counts[3] += any(&["bounced"]);
                counts[4] += any(&["complained"]);
                counts[5] += any(&["failed"]);
                settled += u64::from(statuses.iter().any(|s| *s != "sent"));
            }
            let size = recipients.len() as u64;
            (
                campaign.clone(),
                ExpectedCampaign {
                    size,
                    counts,
                    settled,
                    completed: settled == size,
                },
            )
        })
        .collect()
}

/// Each registered recipient's final status: the last of its events in
/// [`ORDER`].
pub fn expected_statuses(program: &Program) -> BTreeMap<(&'static str, String), &'static str> {
    let mut statuses = BTreeMap::new();
    for recipients in program.campaigns.values() {
        for recipient in recipients {
            statuses.insert((recipient.provider, recipient.message_id.clone()), "sent");
        }
    }
    for event in &program.events {
        if let Some(status) = statuses.get_mut(&(event.provider, event.message_id.clone())) {
            let rank = |s: &str| ORDER.iter().position(|o| *o == s).unwrap();
            if rank(event.status) > rank(status) {
                *status = event.status;
            }
        }
    }
    statuses
}

/// Each campaign of `program` as `POST /api/campaigns` takes it.
pub fn registration_body(program: &Program, campaign: &str) -> Value {
    json!({
        "campaign_id": campaign,
        "recipients": program.campaigns[campaign]
            .iter()
            .map(|r| json!({
                "provider": r.provider,
                "message_id": r.message_id,
                "address": format!("{}@example.com", r.message_id),
            }))
            .collect::<Vec<_>>(),
    })
}

/// Registers every campaign of `program`, as the sending application would.
pub async fn register(store: &DeliveryStore, program: &Program) {
    let tenant = TenantId::parse(TENANT).unwrap();
    for (campaign, recipients) in &program.campaigns {
        let recipients: Vec<NewRecipient> = recipients
            .iter()
            .map(|r| NewRecipient {
                provider: r.provider.to_owned(),
                message_id: r.message_id.clone(),
                address: format!("{}@example.com", r.message_id),
            })
            .collect();
        store
            .register_campaign(
                &tenant,
                campaign,
                recipients.len() as u64,
                &recipients,
                Timestamp::now(),
            )
            .await
            .unwrap();
    }
}

/// The envelope a native publisher sends for `event`.
pub fn envelope(event: &Sent, event_id: &str) -> Vec<u8> {
    let mut data = event.body();
    data["provider"] = json!(event.provider);
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": event_id,
        "source": format!("/native/{}", event.provider),
        "type": format!("delivery.{}", event.status),
        "time": data["timestamp"],
        "datacontenttype": "application/json",
        "dataschema": "urn:hookmesh:schema:delivery.event:v1",
        "tenantid": "default",
        "data": data,
    }))
    .unwrap()
}

/// Publishes `events` natively, each under its own `Nats-Msg-Id` (so that
/// JetStream's window does not hide the duplicates from the consumer).
pub async fn publish_natively(js: &jetstream::Context, events: &[Sent], copy: &str) {
    for chunk in events.chunks(500) {
        let mut acks = Vec::new();
        for (index, event) in chunk.iter().enumerate() {
            let id = format!(
                "{copy}:{}:{}:{}:{index}",
                event.provider, event.status, event.message_id
            );
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let subject = format!("providers.{}.{}", event.provider, event.status);
            acks.push(
                js.publish_with_headers(subject, headers, envelope(event, &id).into())
                    .await
                    .unwrap()
                    .into_future(),
            );
        }
        for ack in futures_util::future::join_all(acks).await {
            ack.unwrap();
        }
    }
}

/// Posts `events` to the gateway in signed arrays of up to 50, per provider.
pub async fn post_to_gateway(gateway: &TestGateway, events: &[Sent], copy: &str) {
    for provider in PROVIDERS {
        let mine: Vec<&Sent> = events.iter().filter(|e| e.provider == provider).collect();
        for (n, chunk) in mine.chunks(50).enumerate() {
            let body =
                serde_json::to_vec(&chunk.iter().map(|e| e.body()).collect::<Vec<_>>()).unwrap();
            let id = format!("msg_{copy}_{provider}_{n}");
            let timestamp = unix_now();
            let response = gateway
                .post(&format!("/webhooks/providers/{provider}"), &body)
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    sign::standard(secrets::PROVIDERS, &id, timestamp, &body),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
    }
}

/// Reads every campaign's numbers from the service's tables.
pub async fn stored_campaigns(
    store: &DeliveryStore,
    program: &Program,
) -> BTreeMap<String, ExpectedCampaign> {
    let tenant = TenantId::parse(TENANT).unwrap();
    let mut stored = BTreeMap::new();
    for campaign in program.campaigns.keys() {
        let row = store.campaign(&tenant, campaign).await.unwrap().unwrap();
        let c = row.counts;
        stored.insert(
            campaign.clone(),
            ExpectedCampaign {
                size: row.size,
                counts: [
                    c.delivered,
                    c.opened,
                    c.clicked,
                    c.bounced,
                    c.complained,
                    c.failed,
                ],
                settled: row.settled,
                completed: row.completed_at.is_some(),
            },
        );
    }
    stored
}
