//! GitHub Actions: `workflow_run` (a run) and `workflow_job` (a job of a run).
//!
//! | event / action | becomes |
//! |---|---|
//! | `workflow_run` `requested`, `in_progress` | `pipeline.started` |
//! | `workflow_job` `in_progress` | `pipeline.started` (with `job_id`) |
//! | `completed`, conclusion `failure`, `timed_out`, `startup_failure` | `pipeline.failed` |
//! | `completed`, any other conclusion (`success`, `cancelled`, `skipped`, …) | `pipeline.completed` |
//! | `workflow_job` `queued`, `waiting`; `ping`; other events | acknowledged, not published |
//!
//! The event id is `X-GitHub-Delivery`, which a redelivery keeps.

use axum::http::HeaderMap;
use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::validation::ValidationErrors;
use serde_json::Value;

use super::{Normalized, Payload, duration_ms, failure_context_if_failed, header_id};

const FAILED_CONCLUSIONS: &[&str] = &["failure", "timed_out", "startup_failure"];

fn completed(conclusion: Option<&str>) -> PipelineEventType {
    match conclusion {
        Some(c) if FAILED_CONCLUSIONS.contains(&c) => PipelineEventType::Failed,
        _ => PipelineEventType::Completed,
    }
}

pub fn normalize(headers: &HeaderMap, body: &Value) -> Result<Normalized, ValidationErrors> {
    let event = header_id(headers, &["X-GitHub-Event"])?;
    match event.as_str() {
        "workflow_run" => workflow_run(headers, body),
        "workflow_job" => workflow_job(headers, body),
        "ping" => Ok(Normalized::Ignored(
            "ping received; the hook is reachable and its signature verified".to_owned(),
        )),
        other => Ok(Normalized::Ignored(format!(
            "GitHub event {other:?} is not consumed; subscribe the hook to workflow_run and \
             workflow_job"
        ))),
    }
}

/// The run's attempt (1 for the first run, more for re-runs), where given.
fn run_attempt(p: &Payload<'_>, path: &str) -> Option<u32> {
    p.get(path)
        .and_then(Value::as_u64)
        .and_then(|attempt| u32::try_from(attempt).ok())
        .filter(|attempt| (1..=100_000).contains(attempt))
}

fn workflow_run(headers: &HeaderMap, body: &Value) -> Result<Normalized, ValidationErrors> {
    let delivery = header_id(headers, &["X-GitHub-Delivery"])?;
    let mut p = Payload::new(body)?;
    let action = p.require_text("action");
    let run_id = p.require_id("workflow_run.id");
    let repository = p
        .text("repository.full_name")
        .or_else(|| p.text("workflow_run.repository.full_name"));
    if repository.is_none() {
        p.require_text("repository.full_name");
    }
    let conclusion = p.text("workflow_run.conclusion");
    let attempt = run_attempt(&p, "workflow_run.run_attempt");
    let event_type = match action {
        Some("requested" | "in_progress") => PipelineEventType::Started,
        Some("completed") => completed(conclusion),
        Some(other) => {
            return Ok(Normalized::Ignored(format!(
                "workflow_run action {other:?} is not consumed"
            )));
        }
        None => PipelineEventType::Started,
    };
    let started = p.time("workflow_run.run_started_at");
    let updated = p.time("workflow_run.updated_at");
    let timestamp = match event_type {
        PipelineEventType::Started => started.or_else(|| p.time("workflow_run.created_at")),
        _ => updated,
    }
    .unwrap_or_else(hookmesh_contracts::Timestamp::now);
    let metadata = CiMetadata {
        commit_sha: p.text("workflow_run.head_sha").map(str::to_owned),
        branch: p.text("workflow_run.head_branch").map(str::to_owned),
        author: p
            .text("workflow_run.head_commit.author.email")
            .or_else(|| p.text("workflow_run.actor.login"))
            .map(str::to_owned),
        logs_url: p.text("workflow_run.html_url").map(str::to_owned),
        artifacts_url: p.text("workflow_run.artifacts_url").map(str::to_owned),
        pipeline_name: p.text("workflow_run.name").map(str::to_owned),
        job_name: None,
        platform_status: conclusion
            .or_else(|| p.text("workflow_run.status"))
            .map(str::to_owned),
    };
    let failure_context = failure_context_if_failed(
        event_type,
        FailureContext {
            duration_ms: duration_ms(started, updated),
            reason: conclusion.map(str::to_owned),
            ..FailureContext::default()
        },
    );
    let event = (|| {
        Some(CiPipelineEvent {
            id: delivery,
            timestamp,
            platform: CiPlatform::Github,
            event_type,
            repository: repository?.to_owned(),
            pipeline_id: run_id?,
            job_id: None,
            run_attempt: attempt,
            metadata,
            failure_context,
        })
    })();
    p.finish(event)
}

fn workflow_job(headers: &HeaderMap, body: &Value) -> Result<Normalized, ValidationErrors> {
    let delivery = header_id(headers, &["X-GitHub-Delivery"])?;
    let mut p = Payload::new(body)?;
    let action = p.require_text("action");
    let job_id = p.require_id("workflow_job.id");
    let run_id = p.require_id("workflow_job.run_id");
    let repository = p.require_text("repository.full_name");
    let conclusion = p.text("workflow_job.conclusion");
    let attempt = run_attempt(&p, "workflow_job.run_attempt");
    let event_type = match action {
        Some("in_progress") => PipelineEventType::Started,
        Some("completed") => completed(conclusion),
        Some(other) => {
            return Ok(Normalized::Ignored(format!(
                "workflow_job action {other:?} is not consumed; jobs are reported from in_progress on"
            )));
        }
        None => PipelineEventType::Started,
    };
    let started = p.time("workflow_job.started_at");
    let finished = p.time("workflow_job.completed_at");
    let timestamp = match event_type {
        PipelineEventType::Started => started,
        _ => finished,
    }
    .unwrap_or_else(hookmesh_contracts::Timestamp::now);
    let failed_steps = p
        .get("workflow_job.steps")
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .filter(|step| {
                    step["conclusion"]
                        .as_str()
                        .is_some_and(|c| FAILED_CONCLUSIONS.contains(&c))
                })
                .filter_map(|step| step["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let metadata = CiMetadata {
        commit_sha: p.text("workflow_job.head_sha").map(str::to_owned),
        branch: p.text("workflow_job.head_branch").map(str::to_owned),
        author: p.text("sender.login").map(str::to_owned),
        logs_url: p.text("workflow_job.html_url").map(str::to_owned),
        artifacts_url: None,
        pipeline_name: p.text("workflow_job.workflow_name").map(str::to_owned),
        job_name: p.text("workflow_job.name").map(str::to_owned),
        platform_status: conclusion
            .or_else(|| p.text("workflow_job.status"))
            .map(str::to_owned),
    };
    let failure_context = failure_context_if_failed(
        event_type,
        FailureContext {
            duration_ms: duration_ms(started, finished),
            reason: conclusion.map(str::to_owned),
            failed_steps,
            ..FailureContext::default()
        },
    );
    let event = (|| {
        Some(CiPipelineEvent {
            id: delivery,
            timestamp,
            platform: CiPlatform::Github,
            event_type,
            repository: repository?.to_owned(),
            pipeline_id: run_id?,
            job_id: Some(job_id?),
            run_attempt: attempt,
            metadata,
            failure_context,
        })
    })();
    p.finish(event)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::normalize::fixtures::{expect_event as event, load};

    fn deliver(event: &str, fixture: &str) -> Result<Normalized, ValidationErrors> {
        let mut headers = HeaderMap::new();
        headers.insert("X-GitHub-Event", HeaderValue::from_str(event).unwrap());
        headers.insert(
            "X-GitHub-Delivery",
            HeaderValue::from_static("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        );
        normalize(&headers, &load("github", fixture))
    }

    #[test]
    fn a_failed_run_carries_its_failure_context() {
        let run = event(deliver("workflow_run", "workflow_run.completed.failure").unwrap());
        assert_eq!(run.event_type, PipelineEventType::Failed);
        assert_eq!(run.repository, "acme/payments-api");
        assert_eq!(run.pipeline_id, "9876543210");
        assert_eq!(run.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(
            run.metadata.branch.as_deref(),
            Some("feature/retry-backoff")
        );
        assert_eq!(
            run.metadata.author.as_deref(),
            Some("jane.doe@acme.example")
        );
        let context = run.failure_context.unwrap();
        assert_eq!(context.reason.as_deref(), Some("failure"));
        assert_eq!(context.duration_ms, Some(279_000));
        assert_eq!(run.timestamp.to_rfc3339(), "2024-05-14T09:16:42Z");
    }

    #[test]
    fn run_actions_map_to_started_and_completed() {
        for fixture in ["workflow_run.requested", "workflow_run.in_progress"] {
            let run = event(deliver("workflow_run", fixture).unwrap());
            assert_eq!(run.event_type, PipelineEventType::Started, "{fixture}");
            assert_eq!(run.failure_context, None);
        }
        let run = event(deliver("workflow_run", "workflow_run.completed.success").unwrap());
        assert_eq!(run.event_type, PipelineEventType::Completed);
        assert_eq!(run.pipeline_id, "9876612345");
    }

    #[test]
    fn a_failed_job_names_its_failed_steps() {
        let job = event(deliver("workflow_job", "workflow_job.completed.failure").unwrap());
        assert_eq!(job.event_type, PipelineEventType::Failed);
        assert_eq!(job.pipeline_id, "9876543210");
        assert_eq!(job.job_id.as_deref(), Some("27011122233"));
        let context = job.failure_context.unwrap();
        assert!(!context.failed_steps.is_empty(), "{context:?}");
        assert_eq!(context.duration_ms, Some(260_000));
        let started = event(deliver("workflow_job", "workflow_job.in_progress").unwrap());
        assert_eq!(started.event_type, PipelineEventType::Started);
    }

    #[test]
    fn pings_and_other_events_are_acknowledged_without_publishing() {
        assert!(matches!(
            deliver("ping", "ping").unwrap(),
            Normalized::Ignored(_)
        ));
        let Normalized::Ignored(reason) = deliver("push", "push").unwrap() else {
            panic!("push must not be published");
        };
        assert!(reason.contains("push"));
    }

    #[test]
    fn missing_fields_and_headers_are_named() {
        let errors = normalize(&HeaderMap::new(), &load("github", "ping")).unwrap_err();
        assert_eq!(errors.errors()[0].field, "headers.X-GitHub-Event");

        let mut headers = HeaderMap::new();
        headers.insert("X-GitHub-Event", HeaderValue::from_static("workflow_run"));
        headers.insert("X-GitHub-Delivery", HeaderValue::from_static("d-1"));
        let errors = normalize(&headers, &serde_json::json!({"action": "completed"})).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["workflow_run.id", "repository.full_name"]);
    }
}
