//! Buddy-system engagement events (seed 002) for the CSR platform.
//!
//! The Buddy System posts 002's envelope — `{id, type, version, timestamp,
//! correlation_id?, data}` — to `/webhooks/buddy-events`, or publishes the
//! CloudEvents form natively. Every event's payload names its tenant (the
//! company running the program) and program, so metrics can be kept per
//! tenant, program and day. Each payload type is its own schema, version 1.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{Envelope, EventData, SchemaId};
use crate::str_enum;
use crate::tenant::{TenantId, tenant_id};
use crate::timestamp::Timestamp;
use crate::validation::{
    Object, StrEnum, ValidationErrors, identifier, integer, number, parse_object, read_object,
    string, text, timestamp, variant,
};

str_enum! {
    /// Every buddy event type the mesh understands.
    pub enum BuddyEventType {
        ParticipantEnrolled = "buddy.participant.enrolled",
        MatchCreated = "buddy.match.created",
        MatchEnded = "buddy.match.ended",
        CheckinCompleted = "buddy.checkin.completed",
        EventAttended = "buddy.event.attended",
        FeedbackSubmitted = "buddy.feedback.submitted",
        MilestoneReached = "buddy.milestone.reached",
    }
}

str_enum! {
    /// Which side of a buddy pair a participant enrolled as.
    pub enum ParticipantRole {
        /// The volunteer employee.
        Buddy = "buddy",
        /// The person being supported.
        Newcomer = "newcomer",
    }
}

str_enum! {
    /// Why a match ended.
    pub enum MatchEndReason {
        /// The pair finished the program together.
        Completed = "completed",
        /// One side or the coordinator stopped it early.
        Cancelled = "cancelled",
        /// It ran out its time without completing.
        Expired = "expired",
    }
}

str_enum! {
    /// How a check-in took place.
    pub enum CheckinChannel {
        InPerson = "in_person",
        Video = "video",
        Phone = "phone",
        Chat = "chat",
    }
}

const ID_MAX: usize = 128;

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "participant_id": "p-1042", "role": "newcomer"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ParticipantEnrolled {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub participant_id: String,
    pub role: ParticipantRole,
}

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "match_id": "m-77", "buddy_id": "p-7", "newcomer_id": "p-1042"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MatchCreated {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub match_id: String,
    pub buddy_id: String,
    pub newcomer_id: String,
}

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "match_id": "m-77", "buddy_id": "p-7", "newcomer_id": "p-1042",
/// "reason": "completed", "duration_days": 92}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MatchEnded {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub match_id: String,
    pub buddy_id: String,
    pub newcomer_id: String,
    pub reason: MatchEndReason,
    /// Days from match to end.
    #[schemars(range(max = 3660))]
    pub duration_days: u32,
}

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "match_id": "m-77", "checkin_id": "c-901", "buddy_id": "p-7",
/// "newcomer_id": "p-1042", "duration_minutes": 45, "channel": "video"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CheckinCompleted {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub match_id: String,
    pub checkin_id: String,
    pub buddy_id: String,
    pub newcomer_id: String,
    #[schemars(range(min = 1, max = 1440))]
    pub duration_minutes: u32,
    pub channel: CheckinChannel,
}

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "event_id": "ev-12", "participant_id": "p-7", "hours": 2.5}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventAttended {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub event_id: String,
    pub participant_id: String,
    /// Volunteer hours credited for attending (0 < hours <= 24).
    pub hours: f64,
}

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "feedback_id": "f-3", "participant_id": "p-1042", "match_id": "m-77",
/// "rating": 5, "comment": "Very helpful"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FeedbackSubmitted {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub feedback_id: String,
    pub participant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
    /// 1 (poor) to 5 (excellent).
    #[schemars(range(min = 1, max = 5))]
    pub rating: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2000))]
    pub comment: Option<String>,
}

/// Example: `{"tenant_id": "acme", "program_id": "ukraine-2025",
/// "participant_id": "p-1042", "milestone": "first_month", "match_id": "m-77"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MilestoneReached {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub participant_id: String,
    /// A slug such as `first_checkin`, `first_month` or `program_completed`.
    pub milestone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_id: Option<String>,
}

fn id(o: &mut Object<'_>, key: &str) -> Option<String> {
    o.required(key, identifier(ID_MAX))
}

fn optional_id(o: &mut Object<'_>, key: &str) -> Option<Option<String>> {
    o.optional(key, identifier(ID_MAX))
}

/// Implements [`EventData`] for a payload type from its field reader.
macro_rules! buddy_payload {
    ($type:ident, $variant:ident, $schema:literal, |$o:ident| $read:block) => {
        impl $type {
            fn read($o: &mut Object<'_>) -> Option<Self> $read
        }

        impl EventData for $type {
            const SCHEMA: SchemaId = SchemaId::new($schema, 1);

            fn parse(value: &Value) -> Result<Self, ValidationErrors> {
                parse_object(value, Self::read)
            }

            fn event_type(&self) -> &'static str {
                BuddyEventType::$variant.as_str()
            }
        }
    };
}

buddy_payload!(
    ParticipantEnrolled,
    ParticipantEnrolled,
    "buddy.participant.enrolled",
    |o| {
        let tenant_id = o.required("tenant_id", tenant_id);
        let program_id = id(o, "program_id");
        let participant_id = id(o, "participant_id");
        let role = o.required("role", variant);
        Some(Self {
            tenant_id: tenant_id?,
            program_id: program_id?,
            participant_id: participant_id?,
            role: role?,
        })
    }
);

buddy_payload!(MatchCreated, MatchCreated, "buddy.match.created", |o| {
    let tenant_id = o.required("tenant_id", tenant_id);
    let program_id = id(o, "program_id");
    let match_id = id(o, "match_id");
    let buddy_id = id(o, "buddy_id");
    let newcomer_id = id(o, "newcomer_id");
    if let (Some(buddy), Some(newcomer)) = (&buddy_id, &newcomer_id) {
        o.refine(
            "newcomer_id",
            buddy != newcomer,
            "must differ from buddy_id",
        );
    }
    Some(Self {
        tenant_id: tenant_id?,
        program_id: program_id?,
        match_id: match_id?,
        buddy_id: buddy_id?,
        newcomer_id: newcomer_id?,
    })
});

buddy_payload!(MatchEnded, MatchEnded, "buddy.match.ended", |o| {
    let tenant_id = o.required("tenant_id", tenant_id);
    let program_id = id(o, "program_id");
    let match_id = id(o, "match_id");
    let buddy_id = id(o, "buddy_id");
    let newcomer_id = id(o, "newcomer_id");
    let reason = o.required("reason", variant);
    let duration_days = o.required("duration_days", integer(0, 3660));
    Some(Self {
        tenant_id: tenant_id?,
        program_id: program_id?,
        match_id: match_id?,
        buddy_id: buddy_id?,
        newcomer_id: newcomer_id?,
        reason: reason?,
        duration_days: duration_days?,
    })
});

buddy_payload!(
    CheckinCompleted,
    CheckinCompleted,
    "buddy.checkin.completed",
    |o| {
        let tenant_id = o.required("tenant_id", tenant_id);
        let program_id = id(o, "program_id");
        let match_id = id(o, "match_id");
        let checkin_id = id(o, "checkin_id");
        let buddy_id = id(o, "buddy_id");
        let newcomer_id = id(o, "newcomer_id");
        let duration_minutes = o.required("duration_minutes", integer(1, 1440));
        let channel = o.required("channel", variant);
        Some(Self {
            tenant_id: tenant_id?,
            program_id: program_id?,
            match_id: match_id?,
            checkin_id: checkin_id?,
            buddy_id: buddy_id?,
            newcomer_id: newcomer_id?,
            duration_minutes: duration_minutes?,
            channel: channel?,
        })
    }
);

buddy_payload!(EventAttended, EventAttended, "buddy.event.attended", |o| {
    let tenant_id = o.required("tenant_id", tenant_id);
    let program_id = id(o, "program_id");
    let event_id = id(o, "event_id");
    let participant_id = id(o, "participant_id");
    let hours = o.required("hours", |v| {
        let hours = number(0.0, 24.0)(v)?;
        if hours == 0.0 {
            return Err("must be greater than 0".to_owned());
        }
        Ok(hours)
    });
    Some(Self {
        tenant_id: tenant_id?,
        program_id: program_id?,
        event_id: event_id?,
        participant_id: participant_id?,
        hours: hours?,
    })
});

buddy_payload!(
    FeedbackSubmitted,
    FeedbackSubmitted,
    "buddy.feedback.submitted",
    |o| {
        let tenant_id = o.required("tenant_id", tenant_id);
        let program_id = id(o, "program_id");
        let feedback_id = id(o, "feedback_id");
        let participant_id = id(o, "participant_id");
        let match_id = optional_id(o, "match_id");
        let rating = o.required("rating", integer(1, 5));
        let comment = o.optional("comment", text(2000));
        Some(Self {
            tenant_id: tenant_id?,
            program_id: program_id?,
            feedback_id: feedback_id?,
            participant_id: participant_id?,
            match_id: match_id?,
            rating: rating?,
            comment: comment?,
        })
    }
);

buddy_payload!(
    MilestoneReached,
    MilestoneReached,
    "buddy.milestone.reached",
    |o| {
        let tenant_id = o.required("tenant_id", tenant_id);
        let program_id = id(o, "program_id");
        let participant_id = id(o, "participant_id");
        let milestone = o.required("milestone", |v| {
            let slug = string(1, 64)(v)?;
            if !slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err("must be a slug of a-z, 0-9 and '_'".to_owned());
            }
            Ok(slug)
        });
        let match_id = optional_id(o, "match_id");
        Some(Self {
            tenant_id: tenant_id?,
            program_id: program_id?,
            participant_id: participant_id?,
            milestone: milestone?,
            match_id: match_id?,
        })
    }
);

/// A buddy payload of any type, tagged by its event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum BuddyEventData {
    #[serde(rename = "buddy.participant.enrolled")]
    ParticipantEnrolled(ParticipantEnrolled),
    #[serde(rename = "buddy.match.created")]
    MatchCreated(MatchCreated),
    #[serde(rename = "buddy.match.ended")]
    MatchEnded(MatchEnded),
    #[serde(rename = "buddy.checkin.completed")]
    CheckinCompleted(CheckinCompleted),
    #[serde(rename = "buddy.event.attended")]
    EventAttended(EventAttended),
    #[serde(rename = "buddy.feedback.submitted")]
    FeedbackSubmitted(FeedbackSubmitted),
    #[serde(rename = "buddy.milestone.reached")]
    MilestoneReached(MilestoneReached),
}

/// Applies `$body` to the payload inside whichever variant `$data` is.
macro_rules! each_payload {
    ($data:expr, |$payload:ident| $body:expr) => {
        match $data {
            BuddyEventData::ParticipantEnrolled($payload) => $body,
            BuddyEventData::MatchCreated($payload) => $body,
            BuddyEventData::MatchEnded($payload) => $body,
            BuddyEventData::CheckinCompleted($payload) => $body,
            BuddyEventData::EventAttended($payload) => $body,
            BuddyEventData::FeedbackSubmitted($payload) => $body,
            BuddyEventData::MilestoneReached($payload) => $body,
        }
    };
}

impl BuddyEventData {
    /// The payload schema version this build of hookmesh reads, per type.
    pub const SUPPORTED_VERSION: u32 = 1;

    /// Reads the payload of an event of type `event_type` at `path`.
    fn read(
        event_type: BuddyEventType,
        value: &Value,
        path: &str,
        errors: &mut ValidationErrors,
    ) -> Option<Self> {
        use BuddyEventType as T;
        match event_type {
            T::ParticipantEnrolled => read_object(value, path, errors, ParticipantEnrolled::read)
                .map(Self::ParticipantEnrolled),
            T::MatchCreated => {
                read_object(value, path, errors, MatchCreated::read).map(Self::MatchCreated)
            }
            T::MatchEnded => {
                read_object(value, path, errors, MatchEnded::read).map(Self::MatchEnded)
            }
            T::CheckinCompleted => {
                read_object(value, path, errors, CheckinCompleted::read).map(Self::CheckinCompleted)
            }
            T::EventAttended => {
                read_object(value, path, errors, EventAttended::read).map(Self::EventAttended)
            }
            T::FeedbackSubmitted => read_object(value, path, errors, FeedbackSubmitted::read)
                .map(Self::FeedbackSubmitted),
            T::MilestoneReached => {
                read_object(value, path, errors, MilestoneReached::read).map(Self::MilestoneReached)
            }
        }
    }

    /// Reads the payload of a CloudEvents envelope, whatever its buddy type.
    pub fn from_envelope(envelope: &Envelope<Value>) -> Result<Self, ValidationErrors> {
        use BuddyEventType as T;
        let event_type = BuddyEventType::from_wire(&envelope.event_type).ok_or_else(|| {
            ValidationErrors::single(
                "type",
                format!("{:?} is not a buddy event type", envelope.event_type),
            )
        })?;
        Ok(match event_type {
            T::ParticipantEnrolled => Self::ParticipantEnrolled(envelope.data_as()?),
            T::MatchCreated => Self::MatchCreated(envelope.data_as()?),
            T::MatchEnded => Self::MatchEnded(envelope.data_as()?),
            T::CheckinCompleted => Self::CheckinCompleted(envelope.data_as()?),
            T::EventAttended => Self::EventAttended(envelope.data_as()?),
            T::FeedbackSubmitted => Self::FeedbackSubmitted(envelope.data_as()?),
            T::MilestoneReached => Self::MilestoneReached(envelope.data_as()?),
        })
    }

    pub fn event_type(&self) -> BuddyEventType {
        use BuddyEventType as T;
        match self {
            Self::ParticipantEnrolled(_) => T::ParticipantEnrolled,
            Self::MatchCreated(_) => T::MatchCreated,
            Self::MatchEnded(_) => T::MatchEnded,
            Self::CheckinCompleted(_) => T::CheckinCompleted,
            Self::EventAttended(_) => T::EventAttended,
            Self::FeedbackSubmitted(_) => T::FeedbackSubmitted,
            Self::MilestoneReached(_) => T::MilestoneReached,
        }
    }

    pub fn tenant_id(&self) -> &TenantId {
        each_payload!(self, |payload| &payload.tenant_id)
    }

    pub fn program_id(&self) -> &str {
        each_payload!(self, |payload| &payload.program_id)
    }

    /// What the event is about, for the envelope's `subject`: the match when
    /// there is one, the participant otherwise.
    pub fn subject(&self) -> &str {
        match self {
            Self::ParticipantEnrolled(p) => &p.participant_id,
            Self::MatchCreated(p) => &p.match_id,
            Self::MatchEnded(p) => &p.match_id,
            Self::CheckinCompleted(p) => &p.match_id,
            Self::EventAttended(p) => &p.participant_id,
            Self::FeedbackSubmitted(p) => &p.participant_id,
            Self::MilestoneReached(p) => &p.participant_id,
        }
    }

    /// Wraps the payload in a CloudEvents envelope (as JSON).
    pub fn envelope_json(&self, id: &str, source: &str, time: Timestamp) -> Vec<u8> {
        let tenant = self.tenant_id().clone();
        let subject = Some(self.subject().to_owned());
        each_payload!(self, |payload| {
            Envelope::new(id, source, time, tenant, subject, payload.clone()).to_json()
        })
    }
}

/// 002's webhook body: the envelope the Buddy System posts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BuddyWebhookEvent {
    /// The event's own id (stable however often it is delivered).
    pub id: String,
    /// Payload schema version; 1 when absent.
    #[serde(default = "default_version")]
    pub version: u32,
    /// When the event happened.
    pub timestamp: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(flatten)]
    pub payload: BuddyEventData,
}

fn default_version() -> u32 {
    1
}

impl BuddyWebhookEvent {
    pub const SCHEMA: SchemaId = SchemaId::new("buddy.webhook", 1);

    /// Reads 002's body, reporting every invalid field.
    pub fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let id = o.required("id", identifier(ID_MAX));
            let event_type: Option<BuddyEventType> = o.required("type", variant);
            let version = o.optional("version", integer(1, 1_000_000));
            if let (Some(event_type), Some(Some(version))) = (event_type, version) {
                o.refine(
                    "version",
                    version == BuddyEventData::SUPPORTED_VERSION,
                    format!(
                        "schema version {version} of {event_type} is not supported (supported: {})",
                        BuddyEventData::SUPPORTED_VERSION
                    ),
                );
            }
            let timestamp = o.required("timestamp", timestamp);
            let correlation_id = o.optional("correlation_id", identifier(ID_MAX));
            let payload = match event_type {
                Some(event_type) => o.required_with("data", |value, path, errors| {
                    BuddyEventData::read(event_type, value, path, errors)
                }),
                None => None,
            };
            if o.has_errors() {
                return None;
            }
            Some(Self {
                id: id?,
                version: version?.unwrap_or_else(default_version),
                timestamp: timestamp?,
                correlation_id: correlation_id?,
                payload: payload?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn match_created() -> Value {
        json!({
            "id": "550e8400-e29b-41d4-a716-446655440000",
            "type": "buddy.match.created",
            "timestamp": "2025-11-14T10:30:00Z",
            "data": {
                "tenant_id": "acme", "program_id": "ukraine-2025", "match_id": "m-77",
                "buddy_id": "p-7", "newcomer_id": "p-1042"
            }
        })
    }

    #[test]
    fn the_002_body_parses_with_version_one_by_default() {
        let event = BuddyWebhookEvent::parse(&match_created()).unwrap();
        assert_eq!(event.version, 1);
        assert_eq!(event.payload.event_type(), BuddyEventType::MatchCreated);
        assert_eq!(event.payload.tenant_id().as_str(), "acme");
        assert_eq!(event.payload.subject(), "m-77");
    }

    #[test]
    fn payload_errors_carry_the_data_prefix() {
        let mut body = match_created();
        body["data"]["tenant_id"] = json!("a.b");
        body["data"]["newcomer_id"] = json!("p-7");
        let errors = BuddyWebhookEvent::parse(&body).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["data.tenant_id", "data.newcomer_id"]);
    }

    #[test]
    fn unknown_types_and_versions_are_refused() {
        let mut body = match_created();
        body["type"] = json!("buddy.match.exploded");
        assert_eq!(
            BuddyWebhookEvent::parse(&body).unwrap_err().errors()[0].field,
            "type"
        );
        let mut body = match_created();
        body["version"] = json!(2);
        let errors = BuddyWebhookEvent::parse(&body).unwrap_err();
        assert_eq!(errors.errors()[0].field, "version");
        assert!(errors.errors()[0].message.contains("not supported"));
    }

    #[test]
    fn the_cloudevents_form_round_trips_through_the_strict_reader() {
        let event = BuddyWebhookEvent::parse(&match_created()).unwrap();
        let json =
            event
                .payload
                .envelope_json(&event.id, "/webhooks/buddy-events", event.timestamp);
        let envelope = Envelope::parse(&json).unwrap();
        assert_eq!(envelope.event_type, "buddy.match.created");
        assert_eq!(
            envelope.dataschema,
            "urn:hookmesh:schema:buddy.match.created:v1"
        );
        assert_eq!(
            BuddyEventData::from_envelope(&envelope).unwrap(),
            event.payload
        );
    }

    #[test]
    fn the_native_publish_recipe_in_the_nats_readme_is_a_valid_event() {
        let readme = include_str!("../../nats/README.md");
        let line = readme
            .lines()
            .find(|line| line.trim_start().starts_with("'{\"specversion\""))
            .expect("the recipe's envelope line");
        let json = line.trim().trim_matches('\'');
        let envelope = Envelope::parse(json.as_bytes()).unwrap();
        let data = BuddyEventData::from_envelope(&envelope).unwrap();
        assert_eq!(data.event_type(), BuddyEventType::MatchCreated);
    }

    #[test]
    fn every_type_has_a_valid_example() {
        let examples = [
            json!({"tenant_id": "acme", "program_id": "p", "participant_id": "a", "role": "buddy"}),
            json!({"tenant_id": "acme", "program_id": "p", "match_id": "m", "buddy_id": "a", "newcomer_id": "b"}),
            json!({"tenant_id": "acme", "program_id": "p", "match_id": "m", "buddy_id": "a", "newcomer_id": "b", "reason": "completed", "duration_days": 90}),
            json!({"tenant_id": "acme", "program_id": "p", "match_id": "m", "checkin_id": "c", "buddy_id": "a", "newcomer_id": "b", "duration_minutes": 30, "channel": "video"}),
            json!({"tenant_id": "acme", "program_id": "p", "event_id": "e", "participant_id": "a", "hours": 1.5}),
            json!({"tenant_id": "acme", "program_id": "p", "feedback_id": "f", "participant_id": "a", "rating": 4}),
            json!({"tenant_id": "acme", "program_id": "p", "participant_id": "a", "milestone": "first_month"}),
        ];
        for ((wire, _), data) in BuddyEventType::VARIANTS.iter().zip(examples) {
            let body = json!({"id": "e1", "type": wire, "timestamp": "2025-11-14T10:30:00Z", "data": data});
            let event =
                BuddyWebhookEvent::parse(&body).unwrap_or_else(|errors| panic!("{wire}: {errors}"));
            assert_eq!(event.payload.event_type().as_str(), *wire);
        }
    }
}
