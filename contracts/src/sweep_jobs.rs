//! The sweep-worker's jobs (seeds 000 and 003): their status, the events a
//! job emits as it moves (`sweeps.jobs.<job>.<event>`), the deadline the
//! worker sets itself, and the read API's queries and answers.

use std::fmt;

use ring::digest;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::envelope::{EventData, SchemaId};
use crate::str_enum;
use crate::sweep::{StrategyType, SweepResult, SweepTrigger};
use crate::tenant::TenantId;
use crate::timestamp::Timestamp;
use crate::validation::{
    Object, ValidationErrors, integer, number, parse_object, read_object, string, text, timestamp,
    variant,
};

/// `job_type` of every trading sweep (000's PipelineJob).
pub const TRADING_SWEEP: &str = "trading-sweep";

/// A sweep job's id: 1–64 of `A-Za-z0-9_-`, so that it is one NATS subject
/// token and one KV key as it is. Checked once, where an id comes in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct JobId(#[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))] String);

impl JobId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 1-64 of A-Z, a-z, 0-9, _ and -".to_owned())
        }
    }

    /// The id of a job a tenant triggers: derived from the tenant and the
    /// request's `Idempotency-Key` when it sends one (a retried trigger
    /// names the same job), random otherwise.
    pub fn for_trigger(tenant: &TenantId, idempotency_key: Option<&str>) -> Self {
        let entropy = match idempotency_key {
            Some(key) => {
                let digest = digest::digest(&digest::SHA256, format!("{tenant}\n{key}").as_bytes());
                crate::hex::encode(&digest.as_ref()[..12])
            }
            None => crate::hex::random::<12>(),
        };
        Self(format!("job_{entropy}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

str_enum! {
    /// 000's JobStatus. A job only moves forward: QUEUED → RUNNING →
    /// COMPLETED | FAILED; the last two are final.
    pub enum JobStatus {
        Queued = "QUEUED",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
    }
}

impl JobStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// Position in the forward order; the two final statuses share one.
    pub fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Running => 1,
            Self::Completed | Self::Failed => 2,
        }
    }

    /// Whether a job in `self` may move to `next`: forward, and never out
    /// of a final status.
    pub fn may_become(self, next: Self) -> bool {
        !self.is_final() && next.rank() > self.rank()
    }
}

str_enum! {
    /// The last token of a job event's subject.
    pub enum JobEventName {
        Queued = "queued",
        Running = "running",
        Progress = "progress",
        Completed = "completed",
        Failed = "failed",
    }
}

impl JobEventName {
    /// The event announcing that a job reached `status`.
    pub fn of(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Completed => Self::Completed,
            JobStatus::Failed => Self::Failed,
        }
    }
}

/// 003's job metrics: `{duration_seconds, combinations_tested}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobMetrics {
    /// How long the Trading API took to run the sweep.
    pub duration_seconds: f64,
    /// Combinations the Trading API backtested.
    pub combinations_tested: u64,
}

/// Something that happened to a job: a status change (published once per
/// change, from the worker's outbox) or progress (best effort). The payload
/// of `sweeps.jobs.<job>.<event>`, and what `GET /api/pipelines/{id}/events`
/// streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SweepJobEvent {
    pub job_id: String,
    pub event: JobEventName,
    /// The job's status once this event happened.
    pub status: JobStatus,
    /// Whether the job is over (COMPLETED or FAILED): nothing follows.
    pub done: bool,
    pub ticker: String,
    pub strategy_type: StrategyType,
    /// Percent of the sweep done, on progress events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// What happened, for people.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JobMetrics>,
    /// The best result, on completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<SweepResult>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub at: Timestamp,
}

fn read_metrics(value: &Value, path: &str, errors: &mut ValidationErrors) -> Option<JobMetrics> {
    read_object(value, path, errors, |m| {
        let duration = m.required("duration_seconds", number(0.0, f64::MAX));
        let combinations = m.required("combinations_tested", integer(0, i64::MAX));
        Some(JobMetrics {
            duration_seconds: duration?,
            combinations_tested: combinations?,
        })
    })
}

impl EventData for SweepJobEvent {
    const SCHEMA: SchemaId = SchemaId::new("sweep.job-event", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o: &mut Object<'_>| {
            let job_id = o.required("job_id", job_id);
            let event = o.required("event", variant);
            let status = o.required("status", variant);
            let done = o.required("done", |v| {
                v.as_bool().ok_or("must be a boolean".to_owned())
            });
            let ticker = o.required("ticker", string(1, 64));
            let strategy_type = o.required("strategy_type", variant);
            let percent = o.optional("percent", integer(0, 100));
            let message = o.required("message", text(10_000));
            let metrics = o.optional_with("metrics", read_metrics);
            let best = o.optional_with("best", |value, path, errors| {
                read_object(value, path, errors, SweepResult::read)
            });
            let error_message = o.optional("error_message", text(10_000));
            let at = o.required("at", timestamp);
            Some(Self {
                job_id: job_id?,
                event: event?,
                status: status?,
                done: done?,
                ticker: ticker?,
                strategy_type: strategy_type?,
                percent: percent?,
                message: message?,
                metrics: metrics?,
                best: best?,
                error_message: error_message?,
                at: at?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        match self.event {
            JobEventName::Queued => "sweep.job.queued",
            JobEventName::Running => "sweep.job.running",
            JobEventName::Progress => "sweep.job.progress",
            JobEventName::Completed => "sweep.job.completed",
            JobEventName::Failed => "sweep.job.failed",
        }
    }
}

/// A leaf parser for job ids.
pub fn job_id(value: &Value) -> Result<String, String> {
    let id = string(1, 64)(value)?;
    JobId::parse(&id).map(|_| id)
}

/// The reminder the worker leaves itself when it submits a sweep
/// (`sweeps.deadline`): if no callback has settled the job by `deadline`,
/// poll the Trading API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SweepDeadline {
    pub job_id: String,
    /// The Trading API's id of the sweep.
    pub trading_job_id: String,
    pub deadline: Timestamp,
}

impl EventData for SweepDeadline {
    const SCHEMA: SchemaId = SchemaId::new("sweep.deadline", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o| {
            let job_id = o.required("job_id", job_id);
            let trading_job_id = o.required("trading_job_id", string(1, 256));
            let deadline = o.required("deadline", timestamp);
            Some(Self {
                job_id: job_id?,
                trading_job_id: trading_job_id?,
                deadline: deadline?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        "sweep.deadline"
    }
}

/// A job in the registry of sweep jobs (KV bucket `sweep_jobs`, key: the
/// job id). The gateway records each job it accepts, and the sweep-worker
/// each job it takes; the gateway refuses callbacks for jobs not in it, and
/// shows a job as QUEUED from it until the sweep-worker has taken it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordedJob {
    pub tenant_id: TenantId,
    pub parameters: SweepTrigger,
    pub created_at: Timestamp,
}

impl RecordedJob {
    /// The job as the read API shows it before the sweep-worker has it.
    pub fn queued_view(self, job_id: &JobId) -> PipelineJob {
        PipelineJob {
            id: job_id.as_str().to_owned(),
            tenant_id: self.tenant_id,
            job_type: TRADING_SWEEP.to_owned(),
            status: JobStatus::Queued,
            parameters: self.parameters,
            result: None,
            metrics: None,
            error_message: None,
            trading_job_id: None,
            created_at: self.created_at,
            started_at: None,
            completed_at: None,
            results: Some(Vec::new()),
        }
    }
}

/// Request of `hookmesh.sweeps.job`: one job of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobQuery {
    pub tenant_id: TenantId,
    pub job_id: JobId,
}

/// Most jobs one page lists.
pub const MAX_PAGE: u32 = 100;

/// Request of `hookmesh.sweeps.list`: a tenant's jobs, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobListQuery {
    pub tenant_id: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// Only the jobs sweeping this ticker (exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<String>,
    /// Jobs per page, 1–[`MAX_PAGE`].
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The summary of a finished job's results (003's PipelineJob `result`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobResult {
    pub sweep_run_id: String,
    /// Rows stored: the combinations that reached `min_trades`.
    pub total_results: u32,
    /// The row with the highest score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<SweepResult>,
}

/// A job as the read API shows it (000/003's PipelineJob, with its
/// TradingSweepResult rows when asked for one job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PipelineJob {
    pub id: String,
    pub tenant_id: TenantId,
    pub job_type: String,
    pub status: JobStatus,
    pub parameters: SweepTrigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JobMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The Trading API's id of the sweep, once submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trading_job_id: Option<String>,
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Every stored result, best score first (only when one job is asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<SweepResult>>,
}

impl PipelineJob {
    /// The job's final state as an event, for a watcher whose job is over
    /// and whose events are gone from the stream.
    pub fn final_event(&self) -> SweepJobEvent {
        SweepJobEvent {
            job_id: self.id.clone(),
            event: JobEventName::of(self.status),
            status: self.status,
            done: true,
            ticker: self.parameters.ticker.clone(),
            strategy_type: self.parameters.strategy_type,
            percent: None,
            message: self
                .error_message
                .clone()
                .unwrap_or_else(|| format!("The job is {}", self.status)),
            metrics: self.metrics,
            best: self.result.as_ref().and_then(|r| r.best.clone()),
            error_message: self.error_message.clone(),
            at: self.completed_at.unwrap_or_else(Timestamp::now),
        }
    }
}

/// Answer of `hookmesh.sweeps.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PipelineJobPage {
    pub jobs: Vec<PipelineJob>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use JobStatus::*;
        assert!(Queued.may_become(Running));
        assert!(Queued.may_become(Completed));
        assert!(Running.may_become(Failed));
        assert!(!Running.may_become(Queued));
        assert!(!Running.may_become(Running));
        assert!(!Completed.may_become(Failed));
        assert!(!Failed.may_become(Completed));
        assert!(!Failed.may_become(Running));
    }

    #[test]
    fn job_ids_are_single_subject_tokens() {
        assert!(JobId::parse("job_0123456789abcdef01234567").is_ok());
        assert!(JobId::parse("").is_err());
        assert!(JobId::parse("a.b").is_err());
        assert!(JobId::parse("a*").is_err());
        assert!(JobId::parse(&"x".repeat(65)).is_err());
        assert!(serde_json::from_str::<JobId>(r#""../x""#).is_err());
    }

    #[test]
    fn idempotency_keys_give_stable_tenant_scoped_job_ids() {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let id = |tenant, key| JobId::for_trigger(tenant, key);
        assert_eq!(id(&acme, Some("k1")), id(&acme, Some("k1")));
        assert_ne!(id(&acme, Some("k1")), id(&globex, Some("k1")));
        assert_ne!(id(&acme, None), id(&acme, None));
        assert!(id(&acme, None).as_str().starts_with("job_"));
        assert!(JobId::parse(id(&acme, Some("k")).as_str()).is_ok());
    }

    #[test]
    fn a_job_event_round_trips() {
        let event = SweepJobEvent {
            job_id: "job_1".to_owned(),
            event: JobEventName::Failed,
            status: JobStatus::Failed,
            done: true,
            ticker: "BTC-USD".to_owned(),
            strategy_type: StrategyType::Sma,
            percent: None,
            message: "Sweep failed".to_owned(),
            metrics: None,
            best: None,
            error_message: Some("Insufficient historical data for ticker BTC-USD".to_owned()),
            at: Timestamp::parse_rfc3339("2025-01-27T10:31:30Z").unwrap(),
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(SweepJobEvent::parse(&value).unwrap(), event);
        assert_eq!(event.event_type(), "sweep.job.failed");
        let errors = SweepJobEvent::parse(&json!({"job_id": "a.b"})).unwrap_err();
        assert_eq!(errors.errors()[0].field, "job_id");
    }
}
