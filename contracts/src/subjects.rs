//! Every NATS subject the mesh publishes to, named once.
//!
//! The streams in `nats/streams/` capture these subjects; a test there checks
//! that each one lands in exactly one stream.

use crate::buddy::BuddyEventType;
use crate::ci::{CiPlatform, PipelineEventType};
use crate::csr::JourneyStage;
use crate::delivery::DeliveryStatus;
use crate::notify::ChannelKind;
use crate::sweep_jobs::JobEventName;
use crate::validation::StrEnum as _;

/// Sweep requests accepted by `POST /api/pipelines/trigger`.
pub const SWEEP_TRIGGER: &str = "sweeps.trigger";
/// Trading API completion callbacks.
pub const SWEEP_CALLBACK: &str = "sweeps.callback";
/// The sweep-worker's reminder to poll the Trading API when no callback
/// came in time.
pub const SWEEP_DEADLINE: &str = "sweeps.deadline";
/// Every job event: `sweeps.jobs.<job>.<event>`.
pub const SWEEP_JOB_EVENTS: &str = "sweeps.jobs.>";

/// `sweeps.jobs.job_123.completed`; `job_id` must be a valid job id.
pub fn sweep_job_event(job_id: &str, event: JobEventName) -> String {
    format!("sweeps.jobs.{job_id}.{event}")
}

/// Every event of one job.
pub fn sweep_job_events(job_id: &str) -> String {
    format!("sweeps.jobs.{job_id}.*")
}

/// The sweep read API's endpoints (NATS services API, request/reply).
pub const SWEEP_JOB_ENDPOINT: &str = "hookmesh.sweeps.job";
pub const SWEEP_LIST_ENDPOINT: &str = "hookmesh.sweeps.list";

/// Prefix of the dead-letter subjects: `dlq.<original subject>`.
pub const DEAD_LETTER_PREFIX: &str = "dlq";

/// `buddy.match.created`: a buddy event's subject is its type.
pub fn buddy(event_type: BuddyEventType) -> &'static str {
    event_type.as_str()
}

/// `ci.pipeline.github.failed`.
pub fn ci_pipeline(platform: CiPlatform, event: PipelineEventType) -> String {
    format!("ci.pipeline.{platform}.{}", event.short_name())
}

/// `providers.sendgrid.delivered`; `provider` must be a valid provider name.
pub fn provider_delivery(provider: &str, status: DeliveryStatus) -> String {
    format!("providers.{provider}.{status}")
}

/// `csr.journey.completed`: a participant reached a journey stage.
pub fn csr_journey(stage: JourneyStage) -> String {
    format!("csr.journey.{stage}")
}

/// A CI run or job failed (the batch-processor's detection, seed 001).
pub const CI_FAILURE_DETECTED: &str = "ci.failure.detected";
/// Consumed CI events: everything the gateway publishes under `ci.pipeline.`.
pub const CI_PIPELINE_EVENTS: &str = "ci.pipeline.>";
/// The CI read API's endpoint (the batch-processor answers): recent
/// failures and per-platform counts.
pub const CI_FAILURES_ENDPOINT: &str = "hookmesh.ci.failures";
/// Every recipient of a campaign has an outcome (seed 004).
pub const CAMPAIGN_COMPLETED: &str = "delivery.campaign.completed";
/// A campaign's recipients, from `POST /api/campaigns`.
pub const CAMPAIGN_REGISTRATION: &str = "delivery.campaign.registration";

/// The campaigns read API's endpoints (the batch-processor answers).
pub const CAMPAIGN_ENDPOINT: &str = "hookmesh.delivery.campaign";
pub const CAMPAIGN_LIST_ENDPOINT: &str = "hookmesh.delivery.campaigns";

/// The CSR read API's endpoints (NATS services API, request/reply). They
/// live outside every stream's subjects, so requests are never stored.
pub const CSR_METRICS_ENDPOINT: &str = "hookmesh.csr.metrics";
pub const CSR_JOURNEY_ENDPOINT: &str = "hookmesh.csr.journey";

/// Notifications on their way out: `notify.<channel>`.
pub fn notification(channel: ChannelKind) -> String {
    format!("notify.{}", channel.as_str())
}

/// Dead letters of notifications, which the dead-letter threshold rules do
/// not count (a failing channel would otherwise announce its own failures).
pub const NOTIFICATION_DEAD_LETTERS: &str = "dlq.notify.>";

/// `dlq.<original>`: where a message that can never be processed is kept.
pub fn dead_letter(original: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}.{original}")
}

/// One example of every subject family, for checks against the stream
/// definitions.
pub fn examples() -> Vec<String> {
    let mut subjects = vec![
        SWEEP_TRIGGER.to_owned(),
        SWEEP_CALLBACK.to_owned(),
        SWEEP_DEADLINE.to_owned(),
    ];
    subjects.extend(
        JobEventName::VARIANTS
            .iter()
            .map(|(_, event)| sweep_job_event("job_1", *event)),
    );
    subjects.extend(
        BuddyEventType::VARIANTS
            .iter()
            .map(|(_, t)| buddy(*t).to_owned()),
    );
    for (_, platform) in CiPlatform::VARIANTS {
        for (_, event) in PipelineEventType::VARIANTS {
            subjects.push(ci_pipeline(*platform, *event));
        }
    }
    subjects.extend(
        DeliveryStatus::VARIANTS
            .iter()
            .map(|(_, s)| provider_delivery("sendgrid", *s)),
    );
    subjects.extend(
        JourneyStage::VARIANTS
            .iter()
            .map(|(_, stage)| csr_journey(*stage)),
    );
    subjects.push(CI_FAILURE_DETECTED.to_owned());
    subjects.push(CAMPAIGN_COMPLETED.to_owned());
    subjects.push(CAMPAIGN_REGISTRATION.to_owned());
    subjects.push(dead_letter(SWEEP_TRIGGER));
    subjects.extend(
        ChannelKind::VARIANTS
            .iter()
            .map(|(_, channel)| notification(*channel)),
    );
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_wire_names() {
        assert_eq!(
            ci_pipeline(CiPlatform::Circleci, PipelineEventType::Failed),
            "ci.pipeline.circleci.failed"
        );
        assert_eq!(
            provider_delivery("ses", DeliveryStatus::Bounced),
            "providers.ses.bounced"
        );
        assert_eq!(dead_letter("sweeps.callback"), "dlq.sweeps.callback");
    }
}
