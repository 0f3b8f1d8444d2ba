//! Jenkins, through the Notification plugin's JSON.
//!
//! | phase / status | becomes |
//! |---|---|
//! | `QUEUED` | acknowledged, not published (`STARTED` follows) |
//! | `STARTED` | `pipeline.started` |
//! | `COMPLETED` or `FINALIZED` with `FAILURE` or `UNSTABLE` | `pipeline.failed` |
//! | `COMPLETED` or `FINALIZED` with `SUCCESS`, `ABORTED`, `NOT_BUILT` | `pipeline.completed` |
//!
//! The plugin sends no delivery id, so the event id is derived from what
//! identifies a notification: `<job>#<build number>:<phase>`. Its retries
//! resend the same body and so the same id. Both terminal phases are
//! published (whichever the endpoint is configured for); downstream state
//! only moves forward, so the second changes nothing.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::validation::ValidationErrors;
use serde_json::Value;

use super::{Normalized, Payload, failure_context_if_failed, log_excerpt, repository_from_url};

pub fn normalize(body: &Value) -> Result<Normalized, ValidationErrors> {
    let mut p = Payload::new(body)?;
    let name = p.require_text("name");
    let number = p.require_id("build.number");
    let phase = p.require_text("build.phase");
    let status = p.text("build.status");
    let event_type = match phase {
        Some("STARTED") => PipelineEventType::Started,
        Some("COMPLETED" | "FINALIZED") => match status {
            Some("FAILURE" | "UNSTABLE") => PipelineEventType::Failed,
            Some(_) => PipelineEventType::Completed,
            None => {
                p.require_text("build.status");
                PipelineEventType::Completed
            }
        },
        Some(other) => {
            return Ok(Normalized::Ignored(format!(
                "Jenkins phase {other:?} is not consumed; builds are reported from STARTED on"
            )));
        }
        None => return p.finish(None),
    };
    let repository = p
        .text("build.scm.url")
        .and_then(repository_from_url)
        .or_else(|| name.map(str::to_owned));
    let failed_tests: Vec<String> = p
        .get("build.test_summary.failed_tests")
        .and_then(Value::as_array)
        .map(|tests| {
            tests
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .take(256)
                .collect()
        })
        .unwrap_or_default();
    let failure_context = failure_context_if_failed(
        event_type,
        FailureContext {
            duration_ms: p.get("build.duration").and_then(Value::as_u64),
            reason: status.map(str::to_owned),
            failed_steps: failed_tests,
            log_excerpt: p.text("build.log").and_then(log_excerpt),
            ..FailureContext::default()
        },
    );
    let metadata = CiMetadata {
        commit_sha: p.text("build.scm.commit").map(str::to_owned),
        branch: p
            .text("build.scm.branch")
            .map(|branch| branch.strip_prefix("origin/").unwrap_or(branch).to_owned()),
        author: p
            .get("build.scm.culprits")
            .and_then(|c| c.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned),
        logs_url: p.text("build.full_url").map(|url| format!("{url}console")),
        artifacts_url: p
            .text("build.full_url")
            .map(|url| format!("{url}artifact/")),
        pipeline_name: name.map(str::to_owned),
        job_name: None,
        platform_status: status.or(phase).map(str::to_owned),
    };
    let timestamp = p
        .get("build.timestamp")
        .and_then(Value::as_i64)
        .and_then(Timestamp::from_unix_millis)
        .unwrap_or_else(Timestamp::now);
    let event = (|| {
        let (name, number) = (name?, number?);
        Some(CiPipelineEvent {
            id: format!("{name}#{number}:{}", phase?),
            timestamp,
            platform: CiPlatform::Jenkins,
            event_type,
            repository: repository?,
            pipeline_id: format!("{name}#{number}"),
            job_id: None,
            run_attempt: None,
            metadata,
            failure_context,
        })
    })();
    p.finish(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::fixtures::{expect_event as event, load};

    #[test]
    fn a_failed_build_keeps_its_log_tail_and_failed_tests() {
        let build = event(normalize(&load("jenkins", "completed.failure")).unwrap());
        assert_eq!(build.event_type, PipelineEventType::Failed);
        assert_eq!(build.id, "payments-api#142:COMPLETED");
        assert_eq!(build.pipeline_id, "payments-api#142");
        assert_eq!(build.repository, "acme/payments-api");
        assert_eq!(
            build.metadata.branch.as_deref(),
            Some("feature/retry-backoff")
        );
        let context = build.failure_context.unwrap();
        assert_eq!(context.reason.as_deref(), Some("FAILURE"));
        assert_eq!(context.duration_ms, Some(381_000));
        assert!(
            context
                .log_excerpt
                .unwrap()
                .contains("marked build as failure")
        );
        assert_eq!(context.failed_steps.len(), 2);
    }

    #[test]
    fn phases_map_to_the_lifecycle() {
        assert!(matches!(
            normalize(&load("jenkins", "queued")).unwrap(),
            Normalized::Ignored(_)
        ));
        let started = event(normalize(&load("jenkins", "started")).unwrap());
        assert_eq!(started.event_type, PipelineEventType::Started);
        assert_eq!(started.id, "payments-api#142:STARTED");
        let completed = event(normalize(&load("jenkins", "completed.success")).unwrap());
        let finalized = event(normalize(&load("jenkins", "finalized.success")).unwrap());
        assert_eq!(completed.event_type, PipelineEventType::Completed);
        assert_eq!(finalized.event_type, PipelineEventType::Completed);
        assert_eq!(completed.pipeline_id, finalized.pipeline_id);
        assert_ne!(completed.id, finalized.id);
    }

    #[test]
    fn a_terminal_phase_without_status_is_refused() {
        let mut body = load("jenkins", "completed.success");
        body["build"].as_object_mut().unwrap().remove("status");
        let errors = normalize(&body).unwrap_err();
        assert_eq!(errors.errors()[0].field, "build.status");
    }
}
