//! Message delivery events from email/SMS providers (seed 004).
//!
//! Providers post one event or a JSON array of events to
//! `/webhooks/providers/{provider}`, signed with Standard Webhooks. Each event
//! becomes one envelope on `providers.<provider>.<event_type>`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::envelope::{EventData, SchemaId};
use crate::str_enum;
use crate::tenant::{TenantId, tenant_id};
use crate::timestamp::Timestamp;
use crate::validation::{
    Object, ValidationErrors, array_of, free_object, identifier, integer, kind_of, parse_object,
    read_object, string, timestamp, variant,
};

str_enum! {
    /// A recipient's delivery status. `sent < delivered < opened < clicked`
    /// move forward only; `bounced`, `complained` and `failed` are terminal.
    pub enum DeliveryStatus {
        Sent = "sent",
        Delivered = "delivered",
        Opened = "opened",
        Clicked = "clicked",
        Bounced = "bounced",
        Complained = "complained",
        Failed = "failed",
    }
}

/// Most events one request may carry.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

/// A provider name: 1–32 characters of `a–z 0–9 _ -`, starting with a letter
/// or digit (a subject token and a bounded label value).
pub fn is_valid_provider_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One delivery event as a provider posts it.
///
/// Example: `{"event_type": "delivered", "message_id": "msg_8f2c",
/// "timestamp": "2025-03-01T09:00:02Z", "recipient": "recipient@example.com"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveryWebhookEvent {
    pub event_type: DeliveryStatus,
    /// The provider's id of the message this event is about.
    pub message_id: String,
    /// When the provider observed it.
    pub timestamp: Timestamp,
    /// Address or number the message went to, when the provider includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Campaign the message belongs to, when the provider knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Bounce, complaint or failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The link, for `clicked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Anything else the provider sent, kept as is (at most 64 keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl DeliveryWebhookEvent {
    fn read(o: &mut Object<'_>) -> Option<Self> {
        let event_type = o.required("event_type", variant);
        let message_id = o.required("message_id", identifier(256));
        let timestamp = o.required("timestamp", timestamp);
        let recipient = o.optional("recipient", string(1, 320));
        let campaign_id = o.optional("campaign_id", identifier(256));
        let reason = o.optional("reason", string(1, 2048));
        let url = o.optional("url", string(1, 4096));
        let metadata = o.optional("metadata", free_object(64));
        Some(Self {
            event_type: event_type?,
            message_id: message_id?,
            timestamp: timestamp?,
            recipient: recipient?,
            campaign_id: campaign_id?,
            reason: reason?,
            url: url?,
            metadata: metadata?,
        })
    }
}

/// Body of `POST /webhooks/providers/{provider}`: one event or an array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DeliveryWebhookBody {
    One(DeliveryWebhookEvent),
    Many(#[schemars(length(min = 1, max = 1000))] Vec<DeliveryWebhookEvent>),
}

impl DeliveryWebhookBody {
    pub const SCHEMA: SchemaId = SchemaId::new("delivery.webhook", 1);

    /// Reads the body, reporting every invalid field of every event
    /// (`[3].message_id`).
    pub fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let body = match value {
            Value::Array(_) => array_of(
                value,
                "",
                &mut errors,
                1,
                MAX_EVENTS_PER_REQUEST,
                |value, path, errors| read_object(value, path, errors, DeliveryWebhookEvent::read),
            )
            .map(Self::Many),
            Value::Object(_) => {
                read_object(value, "", &mut errors, DeliveryWebhookEvent::read).map(Self::One)
            }
            other => {
                errors.push(
                    "",
                    format!(
                        "must be an event object or an array of events, not {}",
                        kind_of(other)
                    ),
                );
                None
            }
        };
        errors.finish(body)
    }

    pub fn into_events(self) -> Vec<DeliveryWebhookEvent> {
        match self {
            Self::One(event) => vec![event],
            Self::Many(events) => events,
        }
    }
}

/// Payload of `providers.<provider>.<event_type>`: the event and its provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliveryEvent {
    /// The provider the event came from (from the route).
    pub provider: String,
    #[serde(flatten)]
    pub delivery: DeliveryWebhookEvent,
}

impl EventData for DeliveryEvent {
    const SCHEMA: SchemaId = SchemaId::new("delivery.event", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let provider = o.required("provider", |v| {
                let name = string(1, 32)(v)?;
                if !is_valid_provider_name(&name) {
                    return Err(format!("{name:?} is not a valid provider name"));
                }
                Ok(name)
            });
            let delivery = DeliveryWebhookEvent::read(o);
            Some(Self {
                provider: provider?,
                delivery: delivery?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        match self.delivery.event_type {
            DeliveryStatus::Sent => "delivery.sent",
            DeliveryStatus::Delivered => "delivery.delivered",
            DeliveryStatus::Opened => "delivery.opened",
            DeliveryStatus::Clicked => "delivery.clicked",
            DeliveryStatus::Bounced => "delivery.bounced",
            DeliveryStatus::Complained => "delivery.complained",
            DeliveryStatus::Failed => "delivery.failed",
        }
    }
}

/// Recipients of a campaign counted by status. A recipient counts toward
/// every status its events show it reached: `clicked` implies `opened` and
/// `delivered`, `opened` implies `delivered`, `complained` implies
/// `delivered`. Each count is of distinct recipients, so none exceeds the
/// campaign's size.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct CampaignCounts {
    pub delivered: u64,
    pub opened: u64,
    pub clicked: u64,
    pub bounced: u64,
    pub complained: u64,
    pub failed: u64,
}

/// Every recipient of a campaign has an outcome (delivered, bounced or
/// failed); the payload of `delivery.campaign.completed`, published once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignCompleted {
    pub tenant_id: TenantId,
    pub campaign_id: String,
    /// Recipients in the campaign.
    pub size: u64,
    pub counts: CampaignCounts,
    pub completed_at: Timestamp,
}

impl EventData for CampaignCompleted {
    const SCHEMA: SchemaId = SchemaId::new("delivery.campaign-completed", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let tenant_id = o.required("tenant_id", tenant_id);
            let campaign_id = o.required("campaign_id", identifier(256));
            let size = o.required("size", integer(0, i64::MAX));
            let counts = o.required_with("counts", |value, path, errors| {
                read_object(value, path, errors, |o| {
                    let mut count = |key: &str| o.required(key, integer(0, i64::MAX));
                    let (delivered, opened, clicked) =
                        (count("delivered"), count("opened"), count("clicked"));
                    let (bounced, complained, failed) =
                        (count("bounced"), count("complained"), count("failed"));
                    Some(CampaignCounts {
                        delivered: delivered?,
                        opened: opened?,
                        clicked: clicked?,
                        bounced: bounced?,
                        complained: complained?,
                        failed: failed?,
                    })
                })
            });
            let completed_at = o.required("completed_at", timestamp);
            Some(Self {
                tenant_id: tenant_id?,
                campaign_id: campaign_id?,
                size: size?,
                counts: counts?,
                completed_at: completed_at?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        "delivery.campaign.completed"
    }
}

/// Most recipients one registration carries (a larger campaign is
/// registered in parts, each declaring the campaign's `size`).
pub const MAX_RECIPIENTS_PER_REGISTRATION: usize = 10_000;

/// A message of a campaign: which provider message goes to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignRecipient {
    /// The provider the message goes out through (its route name).
    pub provider: String,
    /// The provider's id of the message, as its delivery events will name it.
    pub message_id: String,
    /// Address or number it goes to.
    pub address: String,
}

impl CampaignRecipient {
    fn read(o: &mut Object<'_>) -> Option<Self> {
        let provider = o.required("provider", |v| {
            let name = string(1, 32)(v)?;
            if !is_valid_provider_name(&name) {
                return Err(format!("{name:?} is not a valid provider name"));
            }
            Ok(name)
        });
        let message_id = o.required("message_id", identifier(256));
        let address = o.required("address", string(1, 320));
        Some(Self {
            provider: provider?,
            message_id: message_id?,
            address: address?,
        })
    }
}

/// Body of `POST /api/campaigns` and payload of
/// `delivery.campaign.registration`: a campaign's recipients, registered by
/// the sending application as its messages go out. Delivery events of a
/// message registered later still count, once it is registered.
///
/// Example: `{"campaign_id": "spring-sale", "recipients": [{"provider":
/// "sendgrid", "message_id": "msg_8f2c", "address": "recipient@example.com"}]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignRegistration {
    pub campaign_id: String,
    /// Recipients in the whole campaign, when it is registered in several
    /// parts; every part declares the same size. Absent: this part is the
    /// whole campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[schemars(length(min = 1, max = 10_000))]
    pub recipients: Vec<CampaignRecipient>,
}

impl CampaignRegistration {
    /// The campaign's size: declared, or this part's recipients.
    pub fn campaign_size(&self) -> u64 {
        self.size.unwrap_or(self.recipients.len() as u64)
    }
}

impl EventData for CampaignRegistration {
    const SCHEMA: SchemaId = SchemaId::new("delivery.campaign-registration", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let campaign_id = o.required("campaign_id", identifier(256));
            let size = o.optional("size", integer(1, 100_000_000));
            let recipients = o.required_with("recipients", |value, path, errors| {
                array_of(
                    value,
                    path,
                    errors,
                    1,
                    MAX_RECIPIENTS_PER_REGISTRATION,
                    |value, path, errors| read_object(value, path, errors, CampaignRecipient::read),
                )
            });
            if let Some(recipients) = &recipients {
                let mut seen = std::collections::HashSet::new();
                let repeated = recipients
                    .iter()
                    .position(|r| !seen.insert((r.provider.as_str(), r.message_id.as_str())));
                if let Some(index) = repeated {
                    o.refine(
                        &format!("recipients[{index}].message_id"),
                        false,
                        "repeats an earlier recipient's provider and message id",
                    );
                }
                if let Some(Some(size)) = size
                    && (recipients.len() as u64) > size
                {
                    o.refine(
                        "size",
                        false,
                        format!(
                            "is {size}, fewer than the {} recipients given",
                            recipients.len()
                        ),
                    );
                }
            }
            Some(Self {
                campaign_id: campaign_id?,
                size: size?,
                recipients: recipients?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        "delivery.campaign.registration"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn registrations_name_every_bad_recipient_and_repeats() {
        let body = json!({
            "campaign_id": "spring-sale",
            "size": 1,
            "recipients": [
                {"provider": "sendgrid", "message_id": "m1", "address": "a@example.com"},
                {"provider": "Send Grid", "message_id": "m2"},
                {"provider": "sendgrid", "message_id": "m1", "address": "b@example.com"}
            ]
        });
        let errors = CampaignRegistration::parse(&body).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["recipients[1].provider", "recipients[1].address"]);
        let mut body = body;
        body["recipients"][1] = json!({"provider": "ses", "message_id": "m2", "address": "c"});
        let errors = CampaignRegistration::parse(&body).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["recipients[2].message_id", "size"]);
        body["recipients"].as_array_mut().unwrap().pop();
        body["size"] = json!(5);
        let registration = CampaignRegistration::parse(&body).unwrap();
        assert_eq!(registration.campaign_size(), 5);
        assert_eq!(registration.event_type(), "delivery.campaign.registration");
    }

    fn event() -> Value {
        json!({"event_type": "delivered", "message_id": "msg_1", "timestamp": "2025-03-01T09:00:02Z"})
    }

    #[test]
    fn a_single_event_and_an_array_both_parse() {
        assert_eq!(
            DeliveryWebhookBody::parse(&event())
                .unwrap()
                .into_events()
                .len(),
            1
        );
        let many = json!([event(), event(), event()]);
        assert_eq!(
            DeliveryWebhookBody::parse(&many)
                .unwrap()
                .into_events()
                .len(),
            3
        );
    }

    #[test]
    fn errors_in_an_array_name_the_element() {
        let mut bad = event();
        bad["event_type"] = json!("exploded");
        let errors =
            DeliveryWebhookBody::parse(&json!([event(), bad, {"message_id": 5}])).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "[1].event_type",
                "[2].event_type",
                "[2].message_id",
                "[2].timestamp"
            ]
        );
    }

    #[test]
    fn empty_and_oversized_arrays_are_refused() {
        assert!(DeliveryWebhookBody::parse(&json!([])).is_err());
        let many = Value::Array(vec![event(); MAX_EVENTS_PER_REQUEST + 1]);
        assert!(DeliveryWebhookBody::parse(&many).is_err());
    }

    #[test]
    fn provider_names_are_slugs() {
        assert!(is_valid_provider_name("sendgrid"));
        assert!(is_valid_provider_name("aws-ses_2"));
        for bad in ["", "-x", "Send", "a.b", &"x".repeat(33)] {
            assert!(!is_valid_provider_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_envelope_payload_flattens_the_event() {
        let payload = DeliveryEvent {
            provider: "sendgrid".into(),
            delivery: serde_json::from_value(event()).unwrap(),
        };
        let json = serde_json::to_value(&payload).unwrap();
        assert_eq!(json["provider"], "sendgrid");
        assert_eq!(json["message_id"], "msg_1");
        assert_eq!(DeliveryEvent::parse(&json).unwrap(), payload);
    }

    #[test]
    fn a_campaign_completion_round_trips() {
        let completed = CampaignCompleted {
            tenant_id: TenantId::parse("acme").unwrap(),
            campaign_id: "spring-sale".into(),
            size: 3,
            counts: CampaignCounts {
                delivered: 2,
                opened: 1,
                bounced: 1,
                ..CampaignCounts::default()
            },
            completed_at: Timestamp::parse_rfc3339("2025-03-01T10:00:00Z").unwrap(),
        };
        let json = serde_json::to_value(&completed).unwrap();
        assert_eq!(json["counts"]["delivered"], 2);
        assert_eq!(CampaignCompleted::parse(&json).unwrap(), completed);
        let errors = CampaignCompleted::parse(&json!({"tenant_id": "acme", "campaign_id": "c",
            "size": -1, "counts": {"delivered": 1}, "completed_at": "2025-03-01T10:00:00Z"}))
        .unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "size",
                "counts.opened",
                "counts.clicked",
                "counts.bounced",
                "counts.complained",
                "counts.failed"
            ]
        );
    }
}

/// Request of `hookmesh.delivery.campaign`: one campaign of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignQuery {
    pub tenant_id: TenantId,
    pub campaign_id: String,
}

/// Most campaigns one page lists.
pub const MAX_CAMPAIGN_PAGE: u32 = 100;

/// Request of `hookmesh.delivery.campaigns`: a tenant's campaigns, newest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignListQuery {
    pub tenant_id: TenantId,
    /// Campaigns per page, 1–[`MAX_CAMPAIGN_PAGE`].
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A registration the batch-processor refused (it was dead-lettered): why,
/// and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RejectedRegistration {
    /// The registration's envelope id.
    pub registration_id: String,
    pub reason: String,
    /// Recipients the registration carried.
    pub recipients: u64,
    pub rejected_at: Timestamp,
}

/// A campaign as the read API shows it: its counters, whether it is
/// complete, and the registrations refused for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignView {
    pub tenant_id: TenantId,
    pub campaign_id: String,
    /// Recipients the campaign declares.
    pub size: u64,
    /// Recipients registered so far.
    pub registered: u64,
    /// Recipients with an outcome (delivered, bounced or failed).
    pub settled: u64,
    pub counts: CampaignCounts,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Only when one campaign is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_registrations: Option<Vec<RejectedRegistration>>,
}

/// Answer of `hookmesh.delivery.campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CampaignPage {
    pub campaigns: Vec<CampaignView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
