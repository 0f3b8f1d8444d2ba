//! The JSON Schemas generated from the contract types, checked in under
//! `contracts/schemas/`. A test fails when they drift from the types; rerun
//! it with `HOOKMESH_BLESS_SCHEMAS=1` to rewrite them.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::buddy::{
    BuddyWebhookEvent, CheckinCompleted, EventAttended, FeedbackSubmitted, MatchCreated,
    MatchEnded, MilestoneReached, ParticipantEnrolled,
};
use crate::ci::{CiFailureDetected, CiFailureListQuery, CiFailurePage, CiPipelineEvent};
use crate::csr::{JourneyQuery, JourneyReport, JourneyTransition, MetricsQuery, MetricsReport};
use crate::delivery::{
    CampaignCompleted, CampaignListQuery, CampaignPage, CampaignQuery, CampaignRegistration,
    CampaignView, DeliveryEvent, DeliveryWebhookBody,
};
use crate::envelope::{Envelope, EventData, SchemaId};
use crate::notify::Notification;
use crate::sweep::{BestResults, SweepCallback, SweepTrigger};
use crate::sweep_jobs::{
    JobListQuery, JobQuery, PipelineJob, PipelineJobPage, RecordedJob, SweepDeadline, SweepJobEvent,
};
use crate::validation::FieldError;

/// The schema of the CloudEvents envelope itself.
pub const ENVELOPE: SchemaId = SchemaId::new("cloudevents.envelope", 1);
/// The schema of one entry of a 400 answer's `fields`.
pub const FIELD_ERROR: SchemaId = SchemaId::new("gateway.field-error", 1);

fn generate<T: JsonSchema>(id: SchemaId) -> (String, Value) {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("$id".to_owned(), Value::String(id.uri()));
    (id.file_name(), schema.to_value())
}

fn payload<T: EventData>() -> (String, Value) {
    generate::<T>(T::SCHEMA)
}

/// Every generated schema as `(file name, schema)`, sorted by file name.
pub fn all() -> Vec<(String, Value)> {
    let mut schemas = vec![
        generate::<Envelope<Value>>(ENVELOPE),
        generate::<FieldError>(FIELD_ERROR),
        payload::<SweepTrigger>(),
        payload::<SweepCallback>(),
        generate::<BestResults>(BestResults::SCHEMA),
        payload::<SweepJobEvent>(),
        payload::<SweepDeadline>(),
        generate::<JobQuery>(SchemaId::new("sweep.job-query", 1)),
        generate::<JobListQuery>(SchemaId::new("sweep.job-list-query", 1)),
        generate::<PipelineJob>(SchemaId::new("sweep.pipeline-job", 1)),
        generate::<PipelineJobPage>(SchemaId::new("sweep.pipeline-job-page", 1)),
        generate::<RecordedJob>(SchemaId::new("sweep.recorded-job", 1)),
        generate::<BuddyWebhookEvent>(BuddyWebhookEvent::SCHEMA),
        payload::<ParticipantEnrolled>(),
        payload::<MatchCreated>(),
        payload::<MatchEnded>(),
        payload::<CheckinCompleted>(),
        payload::<EventAttended>(),
        payload::<FeedbackSubmitted>(),
        payload::<MilestoneReached>(),
        payload::<CiPipelineEvent>(),
        payload::<CiFailureDetected>(),
        generate::<CiFailureListQuery>(SchemaId::new("ci.failure-list-query", 1)),
        generate::<CiFailurePage>(SchemaId::new("ci.failure-page", 1)),
        payload::<JourneyTransition>(),
        generate::<MetricsQuery>(SchemaId::new("csr.metrics-query", 1)),
        generate::<MetricsReport>(SchemaId::new("csr.metrics-report", 1)),
        generate::<JourneyQuery>(SchemaId::new("csr.journey-query", 1)),
        generate::<JourneyReport>(SchemaId::new("csr.journey-report", 1)),
        generate::<DeliveryWebhookBody>(DeliveryWebhookBody::SCHEMA),
        payload::<DeliveryEvent>(),
        payload::<CampaignCompleted>(),
        payload::<CampaignRegistration>(),
        generate::<CampaignQuery>(SchemaId::new("delivery.campaign-query", 1)),
        generate::<CampaignListQuery>(SchemaId::new("delivery.campaign-list-query", 1)),
        generate::<CampaignView>(SchemaId::new("delivery.campaign-view", 1)),
        generate::<CampaignPage>(SchemaId::new("delivery.campaign-page", 1)),
        payload::<Notification>(),
    ];
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas
}

/// The text a schema file holds.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("schemas serialise");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn checked_in_schemas_match_the_contract_types() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let bless = std::env::var_os("HOOKMESH_BLESS_SCHEMAS").is_some();
        let generated = all();
        let mut drifted = Vec::new();
        for (file, schema) in &generated {
            let path = dir.join(file);
            let expected = render(schema);
            if bless {
                std::fs::write(&path, &expected).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(expected.as_str()) {
                drifted.push(file.clone());
            }
        }
        let wanted: BTreeSet<_> = generated.iter().map(|(file, _)| file.clone()).collect();
        let stale: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|file| file.ends_with(".json") && !wanted.contains(file))
            .collect();
        if bless {
            for file in &stale {
                std::fs::remove_file(dir.join(file)).unwrap();
            }
            return;
        }
        assert!(
            drifted.is_empty() && stale.is_empty(),
            "contracts/schemas/ is out of date (drifted: {drifted:?}, stale: {stale:?}); \
             regenerate with `HOOKMESH_BLESS_SCHEMAS=1 cargo test -p hookmesh-contracts schemas`"
        );
    }

    #[test]
    fn every_schema_names_itself() {
        for (file, schema) in all() {
            let id = schema["$id"].as_str().unwrap();
            let (name, version) = SchemaId::parse_uri(id).unwrap();
            assert_eq!(file, format!("{name}.v{version}.json"));
        }
    }
}
