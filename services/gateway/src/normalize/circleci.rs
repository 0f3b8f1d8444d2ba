//! CircleCI: `workflow-completed` (a workflow, the run) and `job-completed`.
//!
//! CircleCI only reports completions, so there is no `pipeline.started`:
//!
//! | status | becomes |
//! |---|---|
//! | `failed`, `error`, `unauthorized`, `infrastructure_fail`, `timedout` | `pipeline.failed` |
//! | `success`, `canceled`, others | `pipeline.completed` |
//!
//! The event id is the payload's top-level `id`, which CircleCI documents as
//! the key to deduplicate redelivered events by.

use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::validation::ValidationErrors;
use serde_json::Value;

use super::{Normalized, Payload, duration_ms, failure_context_if_failed};

fn event_type(status: &str) -> PipelineEventType {
    match status {
        "failed" | "error" | "unauthorized" | "infrastructure_fail" | "timedout" => {
            PipelineEventType::Failed
        }
        _ => PipelineEventType::Completed,
    }
}

/// `acme/payments-api` from a `gh/acme/payments-api` slug; CircleCI's
/// opaque `circleci/<org-id>/<project-id>` slugs fall back to the project name.
fn repository(p: &Payload<'_>) -> Option<String> {
    let from_slug = p.text("project.slug").and_then(|slug| {
        let mut parts = slug.splitn(3, '/');
        match (parts.next()?, parts.next()?, parts.next()?) {
            ("gh" | "github" | "bb" | "bitbucket", org, repo) => Some(format!("{org}/{repo}")),
            _ => None,
        }
    });
    from_slug
        .or_else(|| {
            p.text("pipeline.vcs.target_repository_url")
                .and_then(super::repository_from_url)
        })
        .or_else(|| p.text("project.name").map(str::to_owned))
}

pub fn normalize(body: &Value) -> Result<Normalized, ValidationErrors> {
    let mut p = Payload::new(body)?;
    let kind = p.require_text("type");
    let is_job = match kind {
        Some("workflow-completed") => false,
        Some("job-completed") => true,
        Some(other) => {
            return Ok(Normalized::Ignored(format!(
                "CircleCI event {other:?} is not consumed; subscribe to workflow-completed and \
                 job-completed"
            )));
        }
        None => return p.finish(None),
    };
    let id = p.require_id("id");
    let workflow_id = p.require_id("workflow.id");
    let status_path = if is_job {
        "job.status"
    } else {
        "workflow.status"
    };
    let status = p.require_text(status_path);
    let job_id = if is_job { p.require_id("job.id") } else { None };
    let repository = repository(&p);
    if repository.is_none() {
        p.require_text("project.slug");
    }
    let event_type = status.map_or(PipelineEventType::Completed, event_type);
    let (started, stopped) = if is_job {
        (p.time("job.started_at"), p.time("job.stopped_at"))
    } else {
        (p.time("workflow.created_at"), p.time("workflow.stopped_at"))
    };
    let job_name = if is_job { p.text("job.name") } else { None };
    let logs_url = match (p.text("workflow.url"), p.id("job.number")) {
        (Some(url), Some(number)) if is_job => Some(format!("{url}/jobs/{number}")),
        (url, _) => url.map(str::to_owned),
    };
    let metadata = CiMetadata {
        commit_sha: p.text("pipeline.vcs.revision").map(str::to_owned),
        branch: p.text("pipeline.vcs.branch").map(str::to_owned),
        author: p
            .text("pipeline.vcs.commit.author.email")
            .or_else(|| p.text("pipeline.vcs.commit.author.name"))
            .map(str::to_owned),
        logs_url,
        artifacts_url: None,
        pipeline_name: p.text("workflow.name").map(str::to_owned),
        job_name: job_name.map(str::to_owned),
        platform_status: status.map(str::to_owned),
    };
    let failure_context = failure_context_if_failed(
        event_type,
        FailureContext {
            duration_ms: duration_ms(started, stopped),
            reason: status.map(str::to_owned),
            failed_steps: job_name.map(str::to_owned).into_iter().collect(),
            ..FailureContext::default()
        },
    );
    let timestamp = p
        .time("happened_at")
        .or(stopped)
        .unwrap_or_else(hookmesh_contracts::Timestamp::now);
    let event = (|| {
        Some(CiPipelineEvent {
            id: id?,
            timestamp,
            platform: CiPlatform::Circleci,
            event_type,
            repository: repository?,
            pipeline_id: workflow_id?,
            job_id: if is_job { Some(job_id?) } else { None },
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
    fn a_failed_workflow_becomes_a_failed_pipeline() {
        let run = event(normalize(&load("circleci", "workflow-completed.failed")).unwrap());
        assert_eq!(run.event_type, PipelineEventType::Failed);
        assert_eq!(run.repository, "acme/payments-api");
        assert_eq!(run.pipeline_id, "8f2e6a1c-4b3d-4f5e-a7c9-0b1d2e3f4a5b");
        assert_eq!(run.id, "6a8c0e2b-4d6f-3b1a-8c9e-1a3c5e7b9d2f");
        assert_eq!(run.job_id, None);
        let context = run.failure_context.unwrap();
        assert_eq!(context.reason.as_deref(), Some("failed"));
        assert_eq!(context.duration_ms, Some(346_811));
    }

    #[test]
    fn a_failed_job_points_at_its_job_page() {
        let job = event(normalize(&load("circleci", "job-completed.failed")).unwrap());
        assert_eq!(job.event_type, PipelineEventType::Failed);
        assert_eq!(
            job.job_id.as_deref(),
            Some("d4a6c8e0-2b1f-4d3a-8c5e-7f9a1b3c5d7e")
        );
        assert!(job.metadata.logs_url.unwrap().ends_with("/jobs/5423"));
        assert_eq!(job.failure_context.unwrap().failed_steps, ["unit-tests"]);
    }

    #[test]
    fn a_successful_workflow_completes() {
        let run = event(normalize(&load("circleci", "workflow-completed.success")).unwrap());
        assert_eq!(run.event_type, PipelineEventType::Completed);
        assert_eq!(run.failure_context, None);
    }

    #[test]
    fn a_payload_without_its_id_is_refused() {
        let mut body = load("circleci", "workflow-completed.failed");
        body.as_object_mut().unwrap().remove("id");
        let errors = normalize(&body).unwrap_err();
        assert_eq!(errors.errors()[0].field, "id");
    }
}
