//! A valid example of every kind of event the mesh accepts, as each
//! producer sends it: the seeds' example bodies, and the CI platforms' real
//! payload shapes from `tests/fixtures/ci/`. Each example is made fresh for
//! each send (new event and delivery ids), so that sending twice stores two
//! events; `--duplicate` resends one as it was.

use hookmesh_contracts::buddy::BuddyEventType;
use hookmesh_contracts::delivery::DeliveryStatus;
use hookmesh_contracts::hex;
use hookmesh_contracts::validation::StrEnum;
use serde_json::{Value, json};

use crate::cli::SendSource;

/// A fixture: its event name for `--event`, and its body.
type Fixture = (&'static str, &'static str);

macro_rules! fixture {
    ($platform:literal, $name:literal) => {
        (
            $name,
            include_str!(concat!(
                "../../../tests/fixtures/ci/",
                $platform,
                "/",
                $name,
                ".json"
            )),
        )
    };
}

const GITHUB: &[Fixture] = &[
    fixture!("github", "workflow_run.completed.failure"),
    fixture!("github", "workflow_run.completed.success"),
    fixture!("github", "workflow_run.in_progress"),
    fixture!("github", "workflow_run.requested"),
    fixture!("github", "workflow_job.completed.failure"),
    fixture!("github", "workflow_job.in_progress"),
    fixture!("github", "push"),
    fixture!("github", "ping"),
];

const GITLAB: &[Fixture] = &[
    fixture!("gitlab", "pipeline.failed"),
    fixture!("gitlab", "pipeline.running"),
    fixture!("gitlab", "pipeline.success"),
    fixture!("gitlab", "job.failed"),
    fixture!("gitlab", "job.running"),
];

const CIRCLECI: &[Fixture] = &[
    fixture!("circleci", "workflow-completed.failed"),
    fixture!("circleci", "workflow-completed.success"),
    fixture!("circleci", "job-completed.failed"),
];

const JENKINS: &[Fixture] = &[
    fixture!("jenkins", "completed.failure"),
    fixture!("jenkins", "completed.success"),
    fixture!("jenkins", "finalized.success"),
    fixture!("jenkins", "started"),
    fixture!("jenkins", "queued"),
];

/// The provider events: each delivery status alone, or `batch`, one
/// message's delivered, opened and clicked in one request.
const BATCH: &str = "batch";

/// The event sent when `--event` is not given: the one the README shows.
fn default_event(source: SendSource) -> &'static str {
    match source {
        SendSource::Buddy => "buddy.match.created",
        SendSource::Providers => "delivered",
        other => events(other)[0],
    }
}

/// The events `--event` can name for `source`.
pub fn events(source: SendSource) -> Vec<&'static str> {
    let names = |fixtures: &[Fixture]| fixtures.iter().map(|(name, _)| *name).collect();
    match source {
        SendSource::Buddy => BuddyEventType::VARIANTS
            .iter()
            .map(|(wire, _)| *wire)
            .collect(),
        SendSource::Github => names(GITHUB),
        SendSource::Gitlab => names(GITLAB),
        SendSource::Circleci => names(CIRCLECI),
        SendSource::Jenkins => names(JENKINS),
        SendSource::Providers => DeliveryStatus::VARIANTS
            .iter()
            .map(|(wire, _)| *wire)
            .chain([BATCH])
            .collect(),
        SendSource::Sweep => vec!["trigger"],
        SendSource::Campaign => vec!["registration"],
    }
}

/// `event` as one of `source`'s names (buddy types may omit `buddy.`), or
/// the default; an error lists the names there are.
pub fn resolve(source: SendSource, event: Option<&str>) -> Result<&'static str, String> {
    let Some(wanted) = event else {
        return Ok(default_event(source));
    };
    let known = events(source);
    known
        .iter()
        .find(|name| **name == wanted || name.strip_prefix("buddy.") == Some(wanted))
        .copied()
        .ok_or_else(|| {
            format!(
                "no {} example named {wanted:?}; there are: {}",
                source.name(),
                known.join(", ")
            )
        })
}

/// A random id in the form of a UUID.
pub fn uuid() -> String {
    let hex = hex::random::<16>();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A fresh body of `event` (a name [`resolve`] returned) for `tenant`.
pub fn body(source: SendSource, event: &str, tenant: &str) -> Vec<u8> {
    let fixture = |fixtures: &[Fixture]| {
        let (_, text) = fixtures
            .iter()
            .find(|(name, _)| *name == event)
            .expect("a resolved event has a fixture");
        serde_json::from_str::<Value>(text).expect("the fixtures are JSON")
    };
    let value = match source {
        SendSource::Buddy => buddy(event, tenant),
        // These platforms' delivery ids are in their headers: the fixture as it is.
        SendSource::Github => fixture(GITHUB),
        SendSource::Gitlab => fixture(GITLAB),
        // CircleCI's delivery id is the payload's `id`.
        SendSource::Circleci => {
            let mut value = fixture(CIRCLECI);
            value["id"] = json!(uuid());
            value
        }
        // Jenkins' is the job, build number and phase: a new build.
        SendSource::Jenkins => {
            let mut value = fixture(JENKINS);
            value["build"]["number"] = json!(1000 + random_below(1_000_000));
            value
        }
        SendSource::Providers => provider(event),
        SendSource::Sweep => json!({
            "ticker": "BTC-USD",
            "fast_range": [10, 20],
            "slow_range": [20, 30],
            "step": 5,
            "min_trades": 50,
            "strategy_type": "SMA"
        }),
        SendSource::Campaign => json!({
            "campaign_id": format!("campaign-{}", hex::random::<4>()),
            "recipients": [
                {"provider": "sendgrid", "message_id": format!("msg_{}", hex::random::<6>()),
                 "address": "recipient@example.com"}
            ]
        }),
    };
    serde_json::to_vec(&value).expect("JSON values serialise")
}

fn random_below(bound: u64) -> u64 {
    u64::from_le_bytes(hookmesh_contracts::hex::random_bytes::<8>()) % bound
}

/// Seed 002's envelope of a buddy event of type `event`, about one match
/// between p-7 and p-1042 in program ukraine-2025.
fn buddy(event: &str, tenant: &str) -> Value {
    let common = json!({"tenant_id": tenant, "program_id": "ukraine-2025"});
    let specific = match event {
        "buddy.participant.enrolled" => json!({"participant_id": "p-1042", "role": "newcomer"}),
        "buddy.match.created" => {
            json!({"match_id": "m-77", "buddy_id": "p-7", "newcomer_id": "p-1042"})
        }
        "buddy.match.ended" => json!({
            "match_id": "m-77", "buddy_id": "p-7", "newcomer_id": "p-1042",
            "reason": "completed", "duration_days": 92
        }),
        "buddy.checkin.completed" => json!({
            "match_id": "m-77", "checkin_id": format!("c-{}", hex::random::<4>()),
            "buddy_id": "p-7", "newcomer_id": "p-1042", "duration_minutes": 45, "channel": "video"
        }),
        "buddy.event.attended" => json!({
            "event_id": "ev-12", "participant_id": "p-1042", "hours": 2.5
        }),
        "buddy.feedback.submitted" => json!({
            "feedback_id": format!("f-{}", hex::random::<4>()), "participant_id": "p-1042",
            "match_id": "m-77", "rating": 5, "comment": "Very helpful first weeks."
        }),
        "buddy.milestone.reached" => json!({
            "participant_id": "p-1042", "milestone": "first_month"
        }),
        other => unreachable!("{other} is not a buddy event type"),
    };
    let mut data = common;
    data.as_object_mut()
        .expect("an object")
        .extend(specific.as_object().expect("an object").clone());
    json!({
        "id": uuid(),
        "type": event,
        "timestamp": hookmesh_contracts::Timestamp::now().to_rfc3339(),
        "data": data,
    })
}

/// Seed 004's delivery event `status`, or a batch of three.
fn provider(status: &str) -> Value {
    let message_id = format!("msg_{}", hex::random::<6>());
    let now = hookmesh_contracts::Timestamp::now().to_rfc3339();
    let event = |event_type: &str| {
        let mut event = json!({
            "event_type": event_type,
            "message_id": message_id,
            "timestamp": now,
            "recipient": "recipient@example.com"
        });
        if matches!(event_type, "bounced" | "complained" | "failed") {
            event["reason"] = json!("mailbox unavailable");
        }
        event
    };
    if status == BATCH {
        json!([event("delivered"), event("opened"), event("clicked")])
    } else {
        event(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_is_what_its_route_accepts() {
        use hookmesh_contracts::envelope::EventData as _;
        for event in events(SendSource::Buddy) {
            let body: Value =
                serde_json::from_slice(&body(SendSource::Buddy, event, "local")).unwrap();
            hookmesh_contracts::buddy::BuddyWebhookEvent::parse(&body)
                .unwrap_or_else(|errors| panic!("{event}: {errors:?}"));
        }
        for event in events(SendSource::Providers) {
            let body: Value =
                serde_json::from_slice(&body(SendSource::Providers, event, "local")).unwrap();
            hookmesh_contracts::delivery::DeliveryWebhookBody::parse(&body)
                .unwrap_or_else(|errors| panic!("{event}: {errors:?}"));
        }
        let registration: Value =
            serde_json::from_slice(&body(SendSource::Campaign, "registration", "local")).unwrap();
        hookmesh_contracts::delivery::CampaignRegistration::parse(&registration).unwrap();
    }

    #[test]
    fn events_are_resolved_by_name_or_default() {
        assert_eq!(resolve(SendSource::Buddy, None), Ok("buddy.match.created"));
        assert_eq!(
            resolve(SendSource::Buddy, Some("match.created")),
            Ok("buddy.match.created")
        );
        assert_eq!(resolve(SendSource::Jenkins, Some("started")), Ok("started"));
        let error = resolve(SendSource::Github, Some("nope")).unwrap_err();
        assert!(error.contains("workflow_run.completed.failure"), "{error}");
    }
}
