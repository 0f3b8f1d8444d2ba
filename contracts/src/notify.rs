//! Notifications people act on: what the notifier decided to tell whom,
//! one per fact, rule and channel; the payload of `notify.<channel>`
//! (`notify.email`, `notify.slack`). The message is rendered when the fact
//! is routed, so delivering it is only sending; the address it goes to is
//! configuration, named here by the channel's name, never carried.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{EventData, SchemaId};
use crate::str_enum;
use crate::timestamp::Timestamp;
use crate::validation::ValidationErrors;

str_enum! {
    /// What a notification is about; the `events` a rule listens to.
    pub enum NotificationKind {
        SweepCompleted = "sweep.completed",
        SweepFailed = "sweep.failed",
        /// Failed because no callback came before the deadline.
        SweepTimedOut = "sweep.timed_out",
        /// More dead letters than a rule's threshold within its window.
        DeadLetters = "dead_letters",
        CiFailure = "ci.failure",
        CampaignCompleted = "campaign.completed",
    }
}

str_enum! {
    /// How a notification travels; the last token of its subject.
    pub enum ChannelKind {
        Email = "email",
        Slack = "slack",
    }
}

/// One notification on its way out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Derived from the fact, the rule and the channel, so routing a fact
    /// again makes the same notification: it is the `Nats-Msg-Id`, and an
    /// email's `Message-ID`, by which receivers drop a resend.
    pub id: String,
    /// The rule that asked for it.
    pub rule: String,
    pub kind: NotificationKind,
    pub channel: ChannelKind,
    /// The configured channel's name.
    pub target: String,
    /// One line: an email's subject.
    pub subject: String,
    /// Plain text: an email's text part, a Slack message's fallback.
    pub text: String,
    /// An email's HTML part.
    pub html: String,
    /// Slack Block Kit blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Value>,
    /// When the fact happened (a job finished, a CI run failed), so the
    /// delay until delivery can be measured.
    pub occurred_at: Timestamp,
}

impl EventData for Notification {
    const SCHEMA: SchemaId = SchemaId::new("notify.notification", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        // Only the notifier writes these; serde's checks are its contract.
        serde_json::from_value(value.clone())
            .map_err(|error| ValidationErrors::single("data", error.to_string()))
    }

    fn event_type(&self) -> &'static str {
        match self.channel {
            ChannelKind::Email => "notify.email",
            ChannelKind::Slack => "notify.slack",
        }
    }
}

/// A notification's id: `ntf_` and a digest of what makes it (the fact's
/// id, the rule, the channel), so routing the same fact again yields the
/// same id. Fit for a NATS message id and an email Message-ID's local part.
pub fn notification_id(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part.as_bytes());
        context.update(b"\n");
    }
    format!(
        "ntf_{}",
        crate::hex::encode(&context.finish().as_ref()[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_tell_their_parts_apart() {
        let id = notification_id(&["evt_1", "rule", "desk"]);
        assert_eq!(id, notification_id(&["evt_1", "rule", "desk"]));
        assert_ne!(id, notification_id(&["evt_1", "rule", "oncall"]));
        assert_ne!(notification_id(&["a", "bc"]), notification_id(&["ab", "c"]));
        assert_eq!(id.len(), 4 + 32);
    }
}
