//! CI/CD pipeline events (seed 001), normalised from GitHub Actions, GitLab
//! CI, Jenkins and CircleCI into one schema.
//!
//! The gateway fills `failure_context` with the raw signals each platform
//! gives (exit code, duration, the platform's failure reason, failed steps,
//! a log excerpt); `error_patterns` are assigned downstream by the failure
//! classifier.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{EventData, SchemaId};
use crate::str_enum;
use crate::timestamp::Timestamp;
use crate::validation::{
    Object, StrEnum as _, ValidationErrors, array_of, identifier, integer, parse_object,
    read_object, string, text, timestamp, variant,
};

str_enum! {
    /// The CI/CD platforms the mesh receives from.
    pub enum CiPlatform {
        Github = "github",
        Gitlab = "gitlab",
        Jenkins = "jenkins",
        Circleci = "circleci",
    }
}

str_enum! {
    /// What happened to the pipeline (001's `event_type`).
    pub enum PipelineEventType {
        Started = "pipeline.started",
        Failed = "pipeline.failed",
        Completed = "pipeline.completed",
    }
}

impl PipelineEventType {
    /// The last token, as used in subjects: `started`, `failed`, `completed`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Failed => "failed",
            Self::Completed => "completed",
        }
    }
}

/// Where the run came from and where to look at it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit author or triggering user (name or email, as the platform gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_url: Option<String>,
    /// Workflow, pipeline or Jenkins job name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
    /// Name of the job, for job-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The platform's own status or conclusion (`timed_out`, `canceled`, `UNSTABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_status: Option<String>,
}

/// Raw failure signals, for classification and for humans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FailureContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Classified error patterns (`timeout`, `connection_refused`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The platform's failure reason (`script_failure`, `timed_out`, `FAILURE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Names of the steps, stages or jobs that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_steps: Vec<String>,
    /// The last log lines the platform sent, when it sent any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_excerpt: Option<String>,
}

/// 001's normalised pipeline event; the payload of `ci.pipeline.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiPipelineEvent {
    /// Same as the envelope id.
    pub id: String,
    /// When the platform says it happened.
    pub timestamp: Timestamp,
    pub platform: CiPlatform,
    pub event_type: PipelineEventType,
    /// `org/repo` where the platform knows it, else the project or job name.
    pub repository: String,
    /// The run: a GitHub workflow run, GitLab pipeline, CircleCI workflow or
    /// Jenkins build (`job#number`).
    pub pipeline_id: String,
    /// The job inside the run, for job-level events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Which attempt of the run this is, where the platform re-runs a run
    /// under the same id (GitHub's `run_attempt`); absent means the first.
    /// A new attempt is a new run: its failure is announced again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_attempt: Option<u32>,
    pub metadata: CiMetadata,
    /// Present on `pipeline.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_context: Option<FailureContext>,
}

/// Longest log excerpt kept in an event, in characters.
pub const LOG_EXCERPT_MAX: usize = 16_384;

impl CiMetadata {
    fn read(o: &mut Object<'_>) -> Option<Self> {
        let mut optional = |key: &str| o.optional(key, string(1, 2048));
        let (commit_sha, branch, author, logs_url, artifacts_url) = (
            optional("commit_sha"),
            optional("branch"),
            optional("author"),
            optional("logs_url"),
            optional("artifacts_url"),
        );
        let (pipeline_name, job_name, platform_status) = (
            optional("pipeline_name"),
            optional("job_name"),
            optional("platform_status"),
        );
        Some(Self {
            commit_sha: commit_sha?,
            branch: branch?,
            author: author?,
            logs_url: logs_url?,
            artifacts_url: artifacts_url?,
            pipeline_name: pipeline_name?,
            job_name: job_name?,
            platform_status: platform_status?,
        })
    }
}

fn strings(value: &Value, path: &str, errors: &mut ValidationErrors) -> Option<Vec<String>> {
    array_of(value, path, errors, 0, 256, |value, path, errors| {
        string(1, 256)(value)
            .map_err(|message| errors.push(path, message))
            .ok()
    })
}

impl FailureContext {
    fn read(o: &mut Object<'_>) -> Option<Self> {
        let exit_code = o.optional(
            "exit_code",
            integer(i64::from(i32::MIN), i64::from(i32::MAX)),
        );
        let error_patterns = o.optional_with("error_patterns", strings);
        let duration_ms = o.optional("duration_ms", integer(0, i64::MAX));
        let reason = o.optional("reason", string(1, 1024));
        let failed_steps = o.optional_with("failed_steps", strings);
        let log_excerpt = o.optional("log_excerpt", text(LOG_EXCERPT_MAX));
        Some(Self {
            exit_code: exit_code?,
            error_patterns: error_patterns?.unwrap_or_default(),
            duration_ms: duration_ms?,
            reason: reason?,
            failed_steps: failed_steps?.unwrap_or_default(),
            log_excerpt: log_excerpt?,
        })
    }
}

impl EventData for CiPipelineEvent {
    const SCHEMA: SchemaId = SchemaId::new("ci.pipeline", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let id = o.required("id", string(1, 256));
            let timestamp = o.required("timestamp", timestamp);
            let platform = o.required("platform", variant);
            let event_type = o.required("event_type", variant);
            let repository = o.required("repository", string(1, 512));
            let pipeline_id = o.required("pipeline_id", string(1, 512));
            let job_id = o.optional("job_id", identifier(256));
            let run_attempt = o.optional("run_attempt", integer::<u32>(1, 100_000));
            let metadata = o.required_with("metadata", |value, path, errors| {
                read_object(value, path, errors, CiMetadata::read)
            });
            let failure_context = o.optional_with("failure_context", |value, path, errors| {
                read_object(value, path, errors, FailureContext::read)
            });
            Some(Self {
                id: id?,
                timestamp: timestamp?,
                platform: platform?,
                event_type: event_type?,
                repository: repository?,
                pipeline_id: pipeline_id?,
                job_id: job_id?,
                run_attempt: run_attempt?,
                metadata: metadata?,
                failure_context: failure_context?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        match self.event_type {
            PipelineEventType::Started => "ci.pipeline.started",
            PipelineEventType::Failed => "ci.pipeline.failed",
            PipelineEventType::Completed => "ci.pipeline.completed",
        }
    }
}

impl CiPipelineEvent {
    /// 001's wire spelling of `event_type`, e.g. `pipeline.failed`.
    pub fn kind(&self) -> &'static str {
        self.event_type.as_str()
    }
}

str_enum! {
    /// What a failure was classified as (the batch-processor's rules,
    /// documented in `docs/batch.md`). A failure may match several.
    pub enum ErrorPattern {
        Timeout = "timeout",
        ConnectionRefused = "connection_refused",
        Network = "network",
        OutOfMemory = "out_of_memory",
        DiskFull = "disk_full",
        TestFailure = "test_failure",
        Dependency = "dependency",
        Compilation = "compilation",
        Permission = "permission",
        Infrastructure = "infrastructure",
        Cancelled = "cancelled",
        /// Nothing recognisable: look at the logs.
        Unknown = "unknown",
    }
}

/// A pipeline run or job failed; the payload of `ci.failure.detected`,
/// published once per distinct `pipeline.failed` event (a repeat of the same
/// event publishes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiFailureDetected {
    pub platform: CiPlatform,
    pub repository: String,
    pub pipeline_id: String,
    /// Set when a job (not the whole run) failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The `pipeline.failed` event's id.
    pub event_id: String,
    /// The classification of `failure_context`, never empty.
    pub error_patterns: Vec<ErrorPattern>,
    /// The failure signals the platform sent.
    pub failure_context: FailureContext,
    pub metadata: CiMetadata,
    /// When the platform says the run failed.
    pub failed_at: Timestamp,
    /// When the mesh stored the failure webhook (JetStream's time).
    pub received_at: Timestamp,
    /// When the failure was recorded and this event written.
    pub detected_at: Timestamp,
}

impl EventData for CiFailureDetected {
    const SCHEMA: SchemaId = SchemaId::new("ci.failure-detected", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let platform = o.required("platform", variant);
            let repository = o.required("repository", string(1, 512));
            let pipeline_id = o.required("pipeline_id", string(1, 512));
            let job_id = o.optional("job_id", identifier(256));
            let event_id = o.required("event_id", string(1, 256));
            let error_patterns = o.required_with("error_patterns", |value, path, errors| {
                array_of(value, path, errors, 1, 32, |value, path, errors| {
                    variant(value)
                        .map_err(|message| errors.push(path, message))
                        .ok()
                })
            });
            let failure_context = o.required_with("failure_context", |value, path, errors| {
                read_object(value, path, errors, FailureContext::read)
            });
            let metadata = o.required_with("metadata", |value, path, errors| {
                read_object(value, path, errors, CiMetadata::read)
            });
            let failed_at = o.required("failed_at", timestamp);
            let received_at = o.required("received_at", timestamp);
            let detected_at = o.required("detected_at", timestamp);
            Some(Self {
                platform: platform?,
                repository: repository?,
                pipeline_id: pipeline_id?,
                job_id: job_id?,
                event_id: event_id?,
                error_patterns: error_patterns?,
                failure_context: failure_context?,
                metadata: metadata?,
                failed_at: failed_at?,
                received_at: received_at?,
                detected_at: detected_at?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        "ci.failure.detected"
    }
}

/// Most failures one page of `hookmesh.ci.failures` lists.
pub const MAX_CI_FAILURE_PAGE: u32 = 200;
/// Days the per-platform failure counts cover, at most.
pub const MAX_CI_FAILURE_DAYS: u32 = 90;

/// Request of `hookmesh.ci.failures`: recent failures of runs and jobs,
/// newest first, and how many each platform had per day. CI webhooks are
/// the organisation's (one secret per platform), not a tenant's, so these
/// are operators' reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiFailureListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<CiPlatform>,
    /// Exact repository name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Failures per page, 1–[`MAX_CI_FAILURE_PAGE`].
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Days of per-platform counts, ending today (UTC), 1–[`MAX_CI_FAILURE_DAYS`].
    pub days: u32,
}

/// One announced failure of a run (or of one of its jobs) and attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiFailureView {
    pub platform: CiPlatform,
    pub repository: String,
    pub pipeline_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub run_attempt: u64,
    /// The failure event's id.
    pub event_id: String,
    /// The classification of the run's failure context.
    pub error_patterns: Vec<ErrorPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// The run on its platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_url: Option<String>,
    /// The run's status now (a later attempt may have passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_status: Option<PipelineEventType>,
    /// When the mesh detected and announced the failure.
    pub detected_at: Timestamp,
}

/// Failures a platform had on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiFailureCount {
    pub platform: CiPlatform,
    /// `YYYY-MM-DD`.
    pub day: String,
    pub failures: u64,
}

/// Answer of `hookmesh.ci.failures`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CiFailurePage {
    pub failures: Vec<CiFailureView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Per platform and day with a failure, over the asked days, whatever
    /// the page's filters; days without failures are left out.
    pub per_platform: Vec<CiFailureCount>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_001_example_parses() {
        let event = CiPipelineEvent::parse(&json!({
            "id": "0b7c1a4e-6a57-4f0c-9a1e-5c4f6f7e8d90",
            "timestamp": "2025-01-15T10:30:00Z",
            "platform": "github",
            "event_type": "pipeline.failed",
            "repository": "org/repo",
            "pipeline_id": "12345",
            "job_id": "67890",
            "metadata": {
                "commit_sha": "abc123", "branch": "main", "author": "user@example.com",
                "logs_url": "https://example.com/logs", "artifacts_url": "https://example.com/a"
            },
            "failure_context": {
                "exit_code": 1, "error_patterns": ["timeout", "connection_refused"],
                "duration_ms": 120000
            }
        }))
        .unwrap();
        assert_eq!(event.event_type(), "ci.pipeline.failed");
        assert_eq!(event.failure_context.unwrap().exit_code, Some(1));
    }

    #[test]
    fn bad_platforms_and_nested_fields_are_named() {
        let errors = CiPipelineEvent::parse(&json!({
            "id": "x", "timestamp": "2025-01-15T10:30:00Z", "platform": "travis",
            "event_type": "pipeline.failed", "repository": "org/repo", "pipeline_id": "1",
            "metadata": {"branch": 7},
            "failure_context": {"exit_code": "one"}
        }))
        .unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["platform", "metadata.branch", "failure_context.exit_code"]
        );
    }

    #[test]
    fn a_failure_detection_round_trips_and_needs_a_pattern() {
        let detected = CiFailureDetected {
            platform: CiPlatform::Gitlab,
            repository: "acme/payments".into(),
            pipeline_id: "1203344".into(),
            job_id: Some("88".into()),
            event_id: "evt-1".into(),
            error_patterns: vec![ErrorPattern::Timeout, ErrorPattern::Infrastructure],
            failure_context: FailureContext {
                reason: Some("stuck_or_timeout_failure".into()),
                ..FailureContext::default()
            },
            metadata: CiMetadata::default(),
            failed_at: Timestamp::parse_rfc3339("2025-01-15T10:30:00Z").unwrap(),
            received_at: Timestamp::parse_rfc3339("2025-01-15T10:30:01Z").unwrap(),
            detected_at: Timestamp::parse_rfc3339("2025-01-15T10:30:02Z").unwrap(),
        };
        let mut json = serde_json::to_value(&detected).unwrap();
        assert_eq!(json["error_patterns"], json!(["timeout", "infrastructure"]));
        assert_eq!(CiFailureDetected::parse(&json).unwrap(), detected);
        json["error_patterns"] = json!([]);
        json["platform"] = json!("travis");
        let errors = CiFailureDetected::parse(&json).unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["platform", "error_patterns"]);
    }
}
