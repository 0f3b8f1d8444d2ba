//! GitLab CI: Pipeline Hook (a pipeline) and Job Hook (a job of a pipeline).
//!
//! | status | becomes |
//! |---|---|
//! | `running` | `pipeline.started` |
//! | `failed` | `pipeline.failed` |
//! | `success`, `canceled`, `skipped` | `pipeline.completed` |
//! | `created`, `pending`, `manual`, `scheduled`, … | acknowledged, not published |
//!
//! The event id is `Idempotency-Key` (stable across GitLab's retries and
//! manual resends), else `webhook-id` (equal to it when a signing token is
//! set), else `X-Gitlab-Event-UUID`.

use axum::http::HeaderMap;
use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::validation::ValidationErrors;
use serde_json::Value;

use super::{Normalized, Payload, failure_context_if_failed, header_id};

const DELIVERY_HEADERS: &[&str] = &["Idempotency-Key", "webhook-id", "X-Gitlab-Event-UUID"];

fn event_type(status: Option<&str>) -> Option<PipelineEventType> {
    match status? {
        "running" => Some(PipelineEventType::Started),
        "failed" => Some(PipelineEventType::Failed),
        "success" | "canceled" | "skipped" => Some(PipelineEventType::Completed),
        _ => None,
    }
}

pub fn normalize(headers: &HeaderMap, body: &Value) -> Result<Normalized, ValidationErrors> {
    let kind = headers
        .get("X-Gitlab-Event")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| body["object_kind"].as_str().map(str::to_owned));
    match kind.as_deref() {
        Some("Pipeline Hook" | "pipeline") => pipeline(headers, body),
        Some("Job Hook" | "build") => job(headers, body),
        Some(other) => Ok(Normalized::Ignored(format!(
            "GitLab event {other:?} is not consumed; enable Pipeline events and Job events"
        ))),
        None => Err(ValidationErrors::single(
            "headers.X-Gitlab-Event",
            "is required (or the payload's object_kind)",
        )),
    }
}

fn ignored(status: Option<&str>, what: &str) -> Normalized {
    Normalized::Ignored(format!(
        "{what} status {:?} is not consumed; pipelines are reported from running on",
        status.unwrap_or("unknown")
    ))
}

fn pipeline(headers: &HeaderMap, body: &Value) -> Result<Normalized, ValidationErrors> {
    let delivery = header_id(headers, DELIVERY_HEADERS)?;
    let mut p = Payload::new(body)?;
    let pipeline_id = p.require_id("object_attributes.id");
    let repository = p.require_text("project.path_with_namespace");
    let status = p.require_text("object_attributes.status");
    let Some(event_type) = event_type(status) else {
        return match status {
            Some(_) => Ok(ignored(status, "pipeline")),
            None => p.finish(None),
        };
    };
    let finished = p.time("object_attributes.finished_at");
    let timestamp = match event_type {
        PipelineEventType::Started => p.time("object_attributes.created_at"),
        _ => finished.or_else(|| p.time("object_attributes.created_at")),
    }
    .unwrap_or_else(hookmesh_contracts::Timestamp::now);
    let failed_builds: Vec<&Value> = p
        .get("builds")
        .and_then(Value::as_array)
        .map(|builds| {
            builds
                .iter()
                .filter(|b| b["status"].as_str() == Some("failed"))
                .collect()
        })
        .unwrap_or_default();
    let failure_context = failure_context_if_failed(
        event_type,
        FailureContext {
            duration_ms: p
                .number("object_attributes.duration")
                .map(|seconds| (seconds * 1000.0).round() as u64),
            reason: failed_builds
                .iter()
                .find_map(|b| b["failure_reason"].as_str())
                .map(str::to_owned),
            failed_steps: failed_builds
                .iter()
                .filter_map(|b| b["name"].as_str().map(str::to_owned))
                .collect(),
            ..FailureContext::default()
        },
    );
    let metadata = CiMetadata {
        commit_sha: p.text("object_attributes.sha").map(str::to_owned),
        branch: p.text("object_attributes.ref").map(str::to_owned),
        author: p
            .text("commit.author.email")
            .or_else(|| p.text("user.username"))
            .map(str::to_owned),
        logs_url: p.text("object_attributes.url").map(str::to_owned),
        artifacts_url: None,
        pipeline_name: p
            .text("object_attributes.name")
            .or_else(|| p.text("project.name"))
            .map(str::to_owned),
        job_name: None,
        platform_status: status.map(str::to_owned),
    };
    let event = (|| {
        Some(CiPipelineEvent {
            id: delivery,
            timestamp,
            platform: CiPlatform::Gitlab,
            event_type,
            repository: repository?.to_owned(),
            pipeline_id: pipeline_id?,
            job_id: None,
            run_attempt: None,
            metadata,
            failure_context,
        })
    })();
    p.finish(event)
}

fn job(headers: &HeaderMap, body: &Value) -> Result<Normalized, ValidationErrors> {
    let delivery = header_id(headers, DELIVERY_HEADERS)?;
    let mut p = Payload::new(body)?;
    let job_id = p.require_id("build_id");
    let pipeline_id = p.require_id("pipeline_id");
    let repository = p.require_text("project.path_with_namespace");
    let status = p.require_text("build_status");
    let Some(event_type) = event_type(status) else {
        return match status {
            Some(_) => Ok(ignored(status, "job")),
            None => p.finish(None),
        };
    };
    let timestamp = match event_type {
        PipelineEventType::Started => p.time("build_started_at"),
        _ => p.time("build_finished_at"),
    }
    .or_else(|| p.time("build_created_at"))
    .unwrap_or_else(hookmesh_contracts::Timestamp::now);
    let job_name = p.text("build_name");
    let failure_context = failure_context_if_failed(
        event_type,
        FailureContext {
            duration_ms: p
                .number("build_duration")
                .map(|seconds| (seconds * 1000.0).round() as u64),
            // GitLab fills build_failure_reason even for jobs that did not
            // fail; it is only read here, for failed ones.
            reason: p.text("build_failure_reason").map(str::to_owned),
            failed_steps: job_name.map(str::to_owned).into_iter().collect(),
            ..FailureContext::default()
        },
    );
    let logs_url = match (p.text("project.web_url"), &job_id) {
        (Some(web), Some(id)) => Some(format!("{web}/-/jobs/{id}")),
        _ => None,
    };
    let metadata = CiMetadata {
        commit_sha: p.text("sha").map(str::to_owned),
        branch: p.text("ref").map(str::to_owned),
        author: p
            .text("commit.author_email")
            .or_else(|| p.text("user.username"))
            .map(str::to_owned),
        logs_url,
        artifacts_url: None,
        pipeline_name: p.text("build_stage").map(str::to_owned),
        job_name: job_name.map(str::to_owned),
        platform_status: status.map(str::to_owned),
    };
    let event = (|| {
        Some(CiPipelineEvent {
            id: delivery,
            timestamp,
            platform: CiPlatform::Gitlab,
            event_type,
            repository: repository?.to_owned(),
            pipeline_id: pipeline_id?,
            job_id: Some(job_id?),
            run_attempt: None,
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

    fn deliver(kind: &'static str, fixture: &str) -> Result<Normalized, ValidationErrors> {
        let mut headers = HeaderMap::new();
        headers.insert("X-Gitlab-Event", HeaderValue::from_static(kind));
        headers.insert(
            "Idempotency-Key",
            HeaderValue::from_static("0193f3f2-5a61-7cc3-a1f4-3b8d2a9e6c01"),
        );
        normalize(&headers, &load("gitlab", fixture))
    }

    #[test]
    fn a_failed_pipeline_names_its_failed_jobs() {
        let pipeline = event(deliver("Pipeline Hook", "pipeline.failed").unwrap());
        assert_eq!(pipeline.event_type, PipelineEventType::Failed);
        assert_eq!(pipeline.repository, "acme/payments-api");
        assert_eq!(pipeline.pipeline_id, "1203344");
        assert_eq!(pipeline.id, "0193f3f2-5a61-7cc3-a1f4-3b8d2a9e6c01");
        assert_eq!(pipeline.timestamp.to_rfc3339(), "2024-05-14T09:17:49Z");
        let context = pipeline.failure_context.unwrap();
        assert_eq!(context.duration_ms, Some(342_000));
        assert!(
            context.failed_steps.contains(&"test-unit".to_owned()),
            "{context:?}"
        );
    }

    #[test]
    fn a_failed_job_reports_gitlabs_failure_reason() {
        let job = event(deliver("Job Hook", "job.failed").unwrap());
        assert_eq!(job.event_type, PipelineEventType::Failed);
        assert_eq!(job.pipeline_id, "1203344");
        assert_eq!(job.job_id.as_deref(), Some("6543210"));
        assert_eq!(
            job.metadata.logs_url.as_deref(),
            Some("https://gitlab.example.com/acme/payments-api/-/jobs/6543210")
        );
        let context = job.failure_context.unwrap();
        assert_eq!(context.reason.as_deref(), Some("script_failure"));
        assert_eq!(context.duration_ms, Some(187_521));
    }

    #[test]
    fn running_and_success_map_to_started_and_completed() {
        let running = event(deliver("Pipeline Hook", "pipeline.running").unwrap());
        assert_eq!(running.event_type, PipelineEventType::Started);
        let job = event(deliver("Job Hook", "job.running").unwrap());
        assert_eq!(job.event_type, PipelineEventType::Started);
        assert_eq!(job.failure_context, None);
        let success = event(deliver("Pipeline Hook", "pipeline.success").unwrap());
        assert_eq!(success.event_type, PipelineEventType::Completed);
        assert_eq!(success.pipeline_id, "1203401");
    }

    #[test]
    fn pending_pipelines_and_other_hooks_are_not_published() {
        let mut pending = load("gitlab", "pipeline.running");
        pending["object_attributes"]["status"] = "pending".into();
        let mut headers = HeaderMap::new();
        headers.insert("X-Gitlab-Event", HeaderValue::from_static("Pipeline Hook"));
        headers.insert("X-Gitlab-Event-UUID", HeaderValue::from_static("u-1"));
        assert!(matches!(
            normalize(&headers, &pending).unwrap(),
            Normalized::Ignored(_)
        ));
        headers.insert("X-Gitlab-Event", HeaderValue::from_static("Push Hook"));
        assert!(matches!(
            normalize(&headers, &pending).unwrap(),
            Normalized::Ignored(_)
        ));
    }

    #[test]
    fn a_delivery_without_any_id_header_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Gitlab-Event", HeaderValue::from_static("Pipeline Hook"));
        let errors = normalize(&headers, &load("gitlab", "pipeline.failed")).unwrap_err();
        assert_eq!(errors.errors()[0].field, "headers.Idempotency-Key");
    }
}
