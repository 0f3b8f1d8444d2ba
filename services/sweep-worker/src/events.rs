//! The messages a job's changes publish, built once here: its status
//! events (`sweeps.jobs.<job>.<event>`), progress, and the deadline
//! reminder (`sweeps.deadline`).
//!
//! Status events and deadlines go through the outbox with the transaction
//! that made the change, under a `Nats-Msg-Id` that names the job and the
//! change, so each is published exactly once however often the change is
//! attempted.

use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::{SWEEP_DEADLINE, sweep_job_event};
use hookmesh_contracts::sweep::{SweepResult, SweepTrigger};
use hookmesh_contracts::sweep_jobs::{
    JobEventName, JobMetrics, JobStatus, SweepDeadline, SweepJobEvent,
};
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_runtime::outbox::OutboxMessage;
use hookmesh_runtime::publish::TraceHeaders;

/// Where the worker's own messages say they come from.
pub const SOURCE: &str = "/sweep-worker";

/// What a status event carries besides the status.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub message: String,
    pub metrics: Option<JobMetrics>,
    pub best: Option<SweepResult>,
    pub error_message: Option<String>,
}

/// The event announcing that `job_id` reached `status`.
pub fn status_event(
    job_id: &str,
    tenant: &TenantId,
    trigger: &SweepTrigger,
    status: JobStatus,
    details: Details,
    at: Timestamp,
) -> OutboxMessage {
    let event = JobEventName::of(status);
    let payload = SweepJobEvent {
        job_id: job_id.to_owned(),
        event,
        status,
        done: status.is_final(),
        ticker: trigger.ticker.clone(),
        strategy_type: trigger.strategy_type,
        percent: None,
        message: details.message,
        metrics: details.metrics,
        best: details.best,
        error_message: details.error_message,
        at,
    };
    let id = format!("{job_id}:{event}");
    OutboxMessage {
        msg_id: format!("sweeps.jobs:{id}"),
        subject: sweep_job_event(job_id, event),
        payload: json(Envelope::new(
            id,
            SOURCE,
            at,
            tenant.clone(),
            Some(job_id.to_owned()),
            payload,
        )),
        trace: TraceHeaders::current(),
    }
}

/// A progress event (published directly, best effort).
pub fn progress_event(
    job_id: &str,
    tenant: &TenantId,
    trigger: &SweepTrigger,
    percent: u32,
    message: String,
    at: Timestamp,
) -> OutboxMessage {
    let payload = SweepJobEvent {
        job_id: job_id.to_owned(),
        event: JobEventName::Progress,
        status: JobStatus::Running,
        done: false,
        ticker: trigger.ticker.clone(),
        strategy_type: trigger.strategy_type,
        percent: Some(percent),
        message,
        metrics: None,
        best: None,
        error_message: None,
        at,
    };
    let id = format!("{job_id}:progress:{percent}");
    OutboxMessage {
        msg_id: format!("sweeps.jobs:{id}"),
        subject: sweep_job_event(job_id, JobEventName::Progress),
        payload: json(Envelope::new(
            id,
            SOURCE,
            at,
            tenant.clone(),
            Some(job_id.to_owned()),
            payload,
        )),
        trace: TraceHeaders::current(),
    }
}

/// The reminder to poll the Trading API at `deadline`.
pub fn deadline(
    job_id: &str,
    tenant: &TenantId,
    trading_job_id: &str,
    deadline: Timestamp,
    now: Timestamp,
) -> OutboxMessage {
    let payload = SweepDeadline {
        job_id: job_id.to_owned(),
        trading_job_id: trading_job_id.to_owned(),
        deadline,
    };
    let id = format!("{job_id}:deadline");
    OutboxMessage {
        msg_id: format!("sweeps.deadline:{job_id}"),
        subject: SWEEP_DEADLINE.to_owned(),
        payload: json(Envelope::new(
            id,
            SOURCE,
            now,
            tenant.clone(),
            Some(job_id.to_owned()),
            payload,
        )),
        trace: TraceHeaders::current(),
    }
}

fn json<D: hookmesh_contracts::EventData>(envelope: Envelope<D>) -> String {
    String::from_utf8(envelope.to_json()).expect("JSON is UTF-8")
}
