//! The three consumers' handlers: sweep requests, Trading API callbacks
//! and deadlines (notifications are the [`crate::notify`] module's). Each reads and checks its message, asks
//! [`crate::job`] what to do, and does it; the outcome becomes an ack, a
//! delayed nak or a dead letter in the consume loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::sweep::{SweepCallback, SweepTrigger, callback_token};
use hookmesh_contracts::sweep_jobs::{JobId, JobStatus, RecordedJob, SweepDeadline};
use hookmesh_contracts::{EventData, Timestamp};
use hookmesh_nats::jobs::JobRegistry;
use hookmesh_runtime::ops::DatabaseHealth;
use hookmesh_runtime::publish::EventSink;
use hookmesh_runtime::{Delivery, Handler, Outcome};
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::SweepSettings;
use crate::events;
use crate::job::{self, CallbackStep, DeadlineStep, TriggerStep};
use crate::store::{JobRow, SweepStore};
use crate::telemetry::SweepMetrics;
use crate::trading_api::{ApiError, TradingApi};

/// How long recording an accepted submission is retried before the trigger
/// is handed back (and, redelivered, submitted again).
const RECORD_SUBMISSION_FOR: Duration = Duration::from_secs(60);

/// What every handler works with but the job registry, which each consume
/// loop opens as it starts.
#[derive(Debug, Clone)]
pub struct Tools {
    pub store: SweepStore,
    pub api: TradingApi,
    pub sink: Arc<dyn EventSink>,
    pub settings: Arc<SweepSettings>,
    pub metrics: SweepMetrics,
    pub database: DatabaseHealth,
    pub shutdown: watch::Receiver<bool>,
}

/// What every handler works with.
#[derive(Debug, Clone)]
pub struct Worker {
    tools: Tools,
    registry: JobRegistry,
}

impl Worker {
    pub fn new(tools: Tools, registry: JobRegistry) -> Self {
        Self { tools, registry }
    }
}

impl std::ops::Deref for Worker {
    type Target = Tools;

    fn deref(&self) -> &Tools {
        &self.tools
    }
}

/// Reads a message's envelope and payload; a message that fails either can
/// never succeed.
pub(crate) fn read<D: EventData>(delivery: &Delivery) -> Result<(Envelope<Value>, D), Outcome> {
    let envelope = Envelope::parse(delivery.payload())
        .map_err(|e| Outcome::dead_letter(format!("not a valid envelope: {e}")))?;
    let data = envelope
        .data_as::<D>()
        .map_err(|e| Outcome::dead_letter(format!("invalid {} payload: {e}", D::SCHEMA.uri())))?;
    Ok((envelope, data))
}

/// The job a message is about: the envelope's `subject`.
fn job_id_of(envelope: &Envelope<Value>) -> Result<JobId, Outcome> {
    let id = envelope.subject.as_deref().unwrap_or(&envelope.id);
    JobId::parse(id)
        .map_err(|reason| Outcome::dead_letter(format!("{id:?} cannot name a job: {reason}")))
}

impl Worker {
    fn database_failed(&self, delivery: &Delivery, error: &sqlx::Error) -> Outcome {
        self.database.record(false);
        Outcome::retry(
            delivery.delivered,
            format!("the database is unavailable: {error}"),
        )
    }

    /// The URL the Trading API calls back on: the job and an HMAC of it, so
    /// nobody can guess another job's.
    fn callback_url(&self, job_id: &str) -> String {
        format!(
            "{}/webhook/sweep-callback?job_id={job_id}&token={}",
            self.settings.public_url.trim_end_matches('/'),
            callback_token(&self.settings.callback_secret, job_id)
        )
    }

    fn seconds_since_created(job: &JobRow, now: Timestamp) -> f64 {
        job.created_at.seconds_until(now)
    }

    /// Fails the job (once), counting and logging it.
    async fn fail(&self, delivery: &Delivery, job: &JobRow, message: &str) -> Outcome {
        let now = Timestamp::now();
        match self.store.fail(job, message, now).await {
            Ok(moved) => {
                self.database.record(true);
                if moved {
                    self.metrics
                        .ended(JobStatus::Failed, Self::seconds_since_created(job, now));
                    tracing::warn!(
                        job_id = %job.id,
                        tenant_id = %job.tenant,
                        correlation_id = delivery.correlation_id(),
                        reason = message,
                        "Job failed."
                    );
                }
                Outcome::Done
            }
            Err(error) => self.database_failed(delivery, &error),
        }
    }

    /// Fetches the run's results, stores them and completes the job.
    async fn complete(
        &self,
        delivery: &Delivery,
        job: &JobRow,
        sweep_run_id: &str,
        callback: Option<&SweepCallback>,
    ) -> Outcome {
        let best = match self.api.best(sweep_run_id, &job.trigger.ticker).await {
            Ok(best) => best,
            Err(error) => {
                // Counted on the job rather than by deliveries: a message's
                // deliveries may have gone to waiting for its job or to an
                // unreachable database. Failed polls share the count.
                let attempt = match self.store.record_poll_failure(&job.id).await {
                    Ok(failures) => u64::try_from(failures).unwrap_or(u64::MAX),
                    Err(db) => return self.database_failed(delivery, &db),
                };
                let delays = &self.settings.retry_delays[..self
                    .settings
                    .results_attempts
                    .saturating_sub(1)
                    .min(self.settings.retry_delays.len())];
                return match job::next_attempt(delays, attempt) {
                    Some(delay) if error.is_retryable() => Outcome::Retry {
                        delay,
                        reason: format!("fetching the results of {sweep_run_id}: {error}"),
                    },
                    _ => {
                        let message = format!(
                            "Fetching the results of {sweep_run_id} failed after {attempt} attempt(s): {error}"
                        );
                        self.fail(delivery, job, &message).await
                    }
                };
            }
        };
        let now = Timestamp::now();
        let metrics = job::job_metrics(callback, job.started_at, now, best.results.len());
        match self
            .store
            .complete(job, sweep_run_id, &best.results, metrics, now)
            .await
        {
            Ok(moved) => {
                self.database.record(true);
                if moved {
                    self.metrics
                        .ended(JobStatus::Completed, Self::seconds_since_created(job, now));
                    tracing::info!(
                        job_id = %job.id,
                        tenant_id = %job.tenant,
                        sweep_run_id,
                        results = best.results.len(),
                        duration_seconds = metrics.duration_seconds,
                        correlation_id = delivery.correlation_id(),
                        "Job completed."
                    );
                }
                Outcome::Done
            }
            Err(error) => self.database_failed(delivery, &error),
        }
    }

    /// `sweeps.trigger`: record the job, make it known to the gateway,
    /// health-check the Trading API and submit the sweep; then let go (the
    /// callback or the deadline carries on).
    async fn on_trigger(&self, delivery: &Delivery) -> Outcome {
        let (envelope, trigger) = match read::<SweepTrigger>(delivery) {
            Ok(read) => read,
            Err(outcome) => return outcome,
        };
        let job_id = match job_id_of(&envelope) {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let tenant = envelope.tenantid.clone();
        let (job, new) = match self
            .store
            .record_queued(job_id.as_str(), &tenant, &trigger, Timestamp::now())
            .await
        {
            Ok(recorded) => recorded,
            Err(error) => return self.database_failed(delivery, &error),
        };
        self.database.record(true);
        if job.tenant != tenant {
            return Outcome::dead_letter(format!(
                "job {job_id} exists for another tenant; a sweep request cannot reuse its id"
            ));
        }
        if new {
            self.metrics.queued(tenant.as_str());
            tracing::info!(
                %job_id,
                job_type = hookmesh_contracts::sweep_jobs::TRADING_SWEEP,
                tenant_id = %tenant,
                ticker = %trigger.ticker,
                correlation_id = delivery.correlation_id(),
                "Job queued."
            );
        }
        // Known to the gateway before the Trading API can call back (the
        // gateway recorded the jobs it accepted; native requests start here).
        let recorded = RecordedJob {
            tenant_id: tenant.clone(),
            parameters: job.trigger.clone(),
            created_at: job.created_at,
        };
        if let Err(error) = self.registry.record(&job_id, &recorded).await {
            return Outcome::retry(delivery.delivered, error.to_string());
        }
        if job::trigger_step(job.status, job.trading_job_id.as_deref()) == TriggerStep::Settled {
            return Outcome::Done;
        }
        let submitted = async {
            self.api.health().await?;
            self.api
                .submit(&job.trigger, &self.callback_url(job_id.as_str()))
                .await
        }
        .await;
        let submitted = match submitted {
            Ok(submitted) => submitted,
            Err(error) => return self.submit_failed(delivery, &job, &error).await,
        };
        let deadline = Timestamp::from_unix_millis(
            Timestamp::now().unix_millis()
                + i64::try_from(self.settings.callback_timeout.as_millis()).unwrap_or(i64::MAX / 2),
        )
        .unwrap_or_else(Timestamp::now);
        // The sweep is running now, and a redelivery would submit it again:
        // keep trying to record it through a database failover (progress
        // acks keep the message ours meanwhile).
        let giving_up = Instant::now() + RECORD_SUBMISSION_FOR;
        let mut pause = Duration::from_millis(250);
        let moved = loop {
            match self
                .store
                .record_submission(&job, &submitted.job_id, Timestamp::now(), deadline)
                .await
            {
                Ok(moved) => break moved,
                Err(error) if Instant::now() + pause < giving_up => {
                    tracing::warn!(%job_id, %error, "Cannot record the submission yet; retrying.");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(8));
                }
                Err(error) => return self.database_failed(delivery, &error),
            }
        };
        self.database.record(true);
        tracing::info!(
            %job_id,
            trading_job_id = %submitted.job_id,
            tenant_id = %tenant,
            correlation_id = delivery.correlation_id(),
            "Sweep submitted to the Trading API."
        );
        if moved {
            // RUNNING is in the stream before any progress follows it.
            self.store.outbox().publish_now(self.sink.as_ref()).await;
            self.follow_progress(job.clone(), submitted.job_id);
        }
        Outcome::Done
    }

    /// The Trading API was down or refused: retry on 000's schedule, or fail.
    async fn submit_failed(&self, delivery: &Delivery, job: &JobRow, error: &ApiError) -> Outcome {
        if !error.is_retryable() {
            let message = format!("The Trading API refused the sweep: {error}");
            return self.fail(delivery, job, &message).await;
        }
        match job::next_attempt(&self.settings.retry_delays, delivery.delivered) {
            Some(delay) => Outcome::Retry {
                delay,
                reason: format!("Trading API unavailable: {error}"),
            },
            None => {
                let message = format!(
                    "The Trading API was unavailable after {} attempts: {error}",
                    delivery.delivered
                );
                self.fail(delivery, job, &message).await
            }
        }
    }

    /// Relays the Trading API's progress of a sweep as the job's progress
    /// events, until the sweep ends, the deadline passes or shutdown.
    /// Best effort: progress is for people watching, not for correctness.
    fn follow_progress(&self, job: JobRow, trading_job_id: String) {
        let this = self.clone();
        // A task of its own: it carries the trace of the batch that started it.
        let trace = hookmesh_runtime::publish::TraceHeaders::current();
        tokio::spawn(async move {
            let mut shutdown = this.shutdown.clone();
            let following = async {
                let mut stream = match this.api.progress(&trading_job_id).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::debug!(job_id = %job.id, %error, "Cannot follow the sweep's progress.");
                        return;
                    }
                };
                let mut last = None;
                while let Ok(Some(progress)) = stream.next().await {
                    if last == Some(progress.percent) {
                        continue;
                    }
                    last = Some(progress.percent);
                    let message = events::progress_event(
                        &job.id,
                        &job.tenant,
                        &job.trigger,
                        progress.percent,
                        format!("Trading API: {}", progress.message),
                        Timestamp::now(),
                    )
                    .caused_by(trace.clone());
                    let publishing = this.sink.publish(std::slice::from_ref(&message));
                    let _ = tokio::time::timeout(Duration::from_secs(5), publishing).await;
                }
            };
            tokio::select! {
                () = following => {}
                () = tokio::time::sleep(this.settings.callback_timeout) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }

    /// `sweeps.callback`: complete or fail the job the callback names.
    async fn on_callback(&self, delivery: &Delivery) -> Outcome {
        let (envelope, callback) = match read::<SweepCallback>(delivery) {
            Ok(read) => read,
            Err(outcome) => return outcome,
        };
        let job_id = match job_id_of(&envelope) {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let job = match self.store.job(job_id.as_str()).await {
            Ok(Some(job)) => job,
            // The gateway only accepts callbacks for recorded jobs; a
            // native publisher's may precede its trigger for a moment.
            Ok(None) if delivery.delivered < 5 => {
                return Outcome::retry(delivery.delivered, format!("no job {job_id} yet"));
            }
            Ok(None) => {
                return Outcome::dead_letter(format!(
                    "a callback for job {job_id}, which does not exist"
                ));
            }
            Err(error) => return self.database_failed(delivery, &error),
        };
        self.database.record(true);
        match job::callback_step(job.status, &callback) {
            CallbackStep::Ignore => {
                tracing::info!(%job_id, status = %job.status, callback = %callback.status, "A callback for a finished job changes nothing.");
                Outcome::Done
            }
            CallbackStep::Fail { message } => self.fail(delivery, &job, &message).await,
            CallbackStep::Complete { sweep_run_id } => {
                self.complete(delivery, &job, &sweep_run_id, Some(&callback))
                    .await
            }
        }
    }

    /// `sweeps.deadline`: wait until due; then, if no callback settled the
    /// job, poll the Trading API and complete or fail it.
    async fn on_deadline(&self, delivery: &Delivery) -> Outcome {
        let (envelope, deadline) = match read::<SweepDeadline>(delivery) {
            Ok(read) => read,
            Err(outcome) => return outcome,
        };
        let job = match self.store.job(&deadline.job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::warn!(job_id = %deadline.job_id, envelope = %envelope.id, "A deadline for a job that does not exist.");
                return Outcome::Done;
            }
            Err(error) => return self.database_failed(delivery, &error),
        };
        self.database.record(true);
        match job::deadline_step(job.status, deadline.deadline, Timestamp::now()) {
            DeadlineStep::Ignore => Outcome::Done,
            DeadlineStep::Wait(delay) => Outcome::Defer { delay },
            DeadlineStep::Poll => {
                tracing::warn!(job_id = %job.id, trading_job_id = %deadline.trading_job_id, "No callback before the deadline; polling the Trading API.");
                let timeout = self.settings.callback_timeout;
                let step = match self
                    .api
                    .poll(&deadline.trading_job_id, self.settings.request_timeout)
                    .await
                {
                    Ok(remote) => job::after_poll(remote, timeout),
                    Err(error) => return self.poll_failed(delivery, &job, &error).await,
                };
                match step {
                    CallbackStep::Ignore => Outcome::Done,
                    CallbackStep::Fail { message } => self.fail(delivery, &job, &message).await,
                    CallbackStep::Complete { sweep_run_id } => {
                        self.complete(delivery, &job, &sweep_run_id, None).await
                    }
                }
            }
        }
    }

    async fn poll_failed(&self, delivery: &Delivery, job: &JobRow, error: &ApiError) -> Outcome {
        let failures = match self.store.record_poll_failure(&job.id).await {
            Ok(failures) => u64::try_from(failures).unwrap_or(u64::MAX),
            Err(db) => return self.database_failed(delivery, &db),
        };
        match job::next_attempt(&self.settings.retry_delays, failures) {
            Some(delay) if error.is_retryable() => Outcome::Retry {
                delay,
                reason: format!("polling the Trading API: {error}"),
            },
            _ => {
                let message = format!(
                    "{} {}, and polling the Trading API failed after {failures} attempt(s): {error}",
                    job::NO_CALLBACK,
                    job::humanize(self.settings.callback_timeout)
                );
                self.fail(delivery, job, &message).await
            }
        }
    }
}

/// Which of the worker's messages a consume loop handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Trigger,
    Callback,
    Deadline,
}

/// A [`Handler`] for one step. A batch's messages about different jobs are
/// handled at once; those about one job (twins: the same request published
/// twice) one after the other, so the second sees what the first did
/// instead of submitting the sweep again. Each message is handled in a span
/// carrying its correlation id.
#[derive(Debug)]
pub struct StepHandler {
    pub worker: Worker,
    pub step: Step,
}

/// The job a message names, read without checking the rest: its envelope's
/// `subject` (or `id`). Unreadable messages each stand alone.
fn job_key(delivery: &Delivery) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        subject: Option<String>,
        id: Option<String>,
    }
    let head: Head = serde_json::from_slice(delivery.payload()).ok()?;
    head.subject.or(head.id)
}

impl StepHandler {
    async fn handle_one(&self, delivery: &Delivery) -> Outcome {
        let span = tracing::info_span!(
            "message",
            subject = %delivery.subject(),
            stream_sequence = delivery.stream_sequence,
            delivery_attempt = delivery.delivered,
            correlation_id = %delivery.correlation_id(),
        );
        async move {
            match self.step {
                Step::Trigger => self.worker.on_trigger(delivery).await,
                Step::Callback => self.worker.on_callback(delivery).await,
                Step::Deadline => self.worker.on_deadline(delivery).await,
            }
        }
        .instrument(span)
        .await
    }
}

impl Handler for StepHandler {
    type Arrival = ();

    /// Read when the batch is handled.
    fn arrive(&self, _: &mut Delivery) {}

    async fn handle_arrived(&self, batch: &mut [Delivery], _: Vec<()>) -> Vec<Outcome> {
        let batch: &[Delivery] = batch;
        let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        for (index, delivery) in batch.iter().enumerate() {
            let key = job_key(delivery);
            match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
                Some((_, indexes)) => indexes.push(index),
                None => groups.push((key, vec![index])),
            }
        }
        let handled = join_all(groups.into_iter().map(|(_, indexes)| async move {
            let mut outcomes = Vec::with_capacity(indexes.len());
            for index in indexes {
                outcomes.push((index, self.handle_one(&batch[index]).await));
            }
            outcomes
        }))
        .await;
        let mut outcomes = vec![Outcome::Done; batch.len()];
        for (index, outcome) in handled.into_iter().flatten() {
            outcomes[index] = outcome;
        }
        outcomes
    }
}
