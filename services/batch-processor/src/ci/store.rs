//! The CI family's tables: the events log, runs with their forward-only
//! status, failure counters per repository and pattern, and the outbox of
//! `ci.failure.detected`. One transaction per batch.

use std::collections::{BTreeMap, HashSet};

use hookmesh_contracts::ci::{CiFailureDetected, CiPipelineEvent, ErrorPattern, PipelineEventType};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::CI_FAILURE_DETECTED;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_runtime::db::{Backend, Pool, rows_per_statement};
use hookmesh_runtime::outbox::{Outbox, OutboxMessage};
use hookmesh_runtime::publish::TraceHeaders;
use sqlx::{Any, AssertSqlSafe, Row as _, Transaction};

use super::runs::{Decisive, decide};
use hookmesh_runtime::engine::{Applied, Fresh};

/// A CI event as the family applies it: the normalised event, the tenant
/// of its envelope, and its classification when it is a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiFact {
    pub tenant: TenantId,
    pub event: CiPipelineEvent,
    pub error_patterns: Vec<ErrorPattern>,
}

impl CiFact {
    fn job_key(&self) -> &str {
        self.event.job_id.as_deref().unwrap_or("")
    }

    fn run_key(&self) -> RunKey {
        (
            self.event.platform.as_str().to_owned(),
            self.event.repository.clone(),
            self.event.pipeline_id.clone(),
            self.job_key().to_owned(),
        )
    }

    fn log_key(&self) -> (String, String, String) {
        (
            self.event.platform.as_str().to_owned(),
            self.event.kind().to_owned(),
            self.event.id.clone(),
        )
    }

    fn decisive(&self) -> Decisive {
        Decisive {
            event_type: self.event.event_type,
            at: self.event.timestamp,
        }
    }
}

/// `(platform, repository, pipeline id, job key)`; the job key is empty for
/// the run itself.
pub type RunKey = (String, String, String, String);

/// A run's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub status: Option<PipelineEventType>,
    pub error_patterns: Vec<ErrorPattern>,
    pub failure_reason: Option<String>,
}

/// What a batch did.
#[derive(Debug, Default)]
pub struct CiOutcome {
    pub applied: Vec<Applied>,
    pub detected: Vec<CiFailureDetected>,
}

#[derive(Debug, Clone)]
pub struct CiStore {
    pool: Pool,
    backend: Backend,
    outbox: Outbox,
}

struct CurrentRun {
    decisive: Option<Decisive>,
    started_at: Option<i64>,
}

fn event_type(text: &str) -> Result<PipelineEventType, sqlx::Error> {
    PipelineEventType::from_wire(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("not a pipeline event: {text:?}").into()))
}

fn patterns_json(patterns: &[ErrorPattern]) -> Option<String> {
    (!patterns.is_empty()).then(|| serde_json::to_string(patterns).expect("patterns serialise"))
}

impl CiStore {
    pub fn new(pool: Pool, backend: Backend, outbox: Outbox) -> Self {
        Self {
            pool,
            backend,
            outbox,
        }
    }

    /// Applies a batch of fresh events in one transaction.
    pub async fn apply(
        &self,
        events: &[Fresh<CiFact>],
        now: Timestamp,
    ) -> Result<CiOutcome, sqlx::Error> {
        let now_millis = now.unix_millis();
        let mut tx = self.pool.begin().await?;
        let new = insert_events(self.backend, &mut tx, events, now_millis).await?;
        let fresh: Vec<&Fresh<CiFact>> = events
            .iter()
            .filter(|fresh| new.contains(&fresh.stream_sequence))
            .collect();

        let mut by_run: BTreeMap<RunKey, Vec<&Fresh<CiFact>>> = BTreeMap::new();
        for event in &fresh {
            by_run.entry(event.event.run_key()).or_default().push(event);
        }
        let keys: Vec<&RunKey> = by_run.keys().collect();
        let current = self.lock_runs(&mut tx, &keys).await?;
        for (key, events) in &by_run {
            let Some(run) = current.get(key) else {
                continue;
            };
            update_run(&mut tx, key, run, events, now_millis).await?;
        }

        let failures: Vec<&Fresh<CiFact>> = fresh
            .iter()
            .filter(|fresh| fresh.event.event.event_type == PipelineEventType::Failed)
            .copied()
            .collect();
        let announced = announce(self.backend, &mut tx, &failures, now_millis).await?;
        let detected: Vec<CiFailureDetected> = announced
            .iter()
            .map(|fresh| detection(fresh, now))
            .collect();
        count_failures(self.backend, &mut tx, &detected).await?;
        if !detected.is_empty() {
            let messages: Vec<OutboxMessage> = announced
                .iter()
                .zip(&detected)
                .map(|(fresh, detected)| {
                    detection_message(&fresh.event.tenant, detected).caused_by(fresh.trace())
                })
                .collect();
            self.outbox.write(&mut tx, &messages, now_millis).await?;
        }
        tx.commit().await?;
        if !detected.is_empty() {
            self.outbox.nudge();
        }
        let applied = events
            .iter()
            .map(|fresh| {
                if new.contains(&fresh.stream_sequence) {
                    Applied::New
                } else {
                    Applied::Duplicate
                }
            })
            .collect();
        Ok(CiOutcome { applied, detected })
    }

    /// Creates missing run rows, then reads and locks them in key order.
    async fn lock_runs(
        &self,
        tx: &mut Transaction<'static, Any>,
        keys: &[&RunKey],
    ) -> Result<BTreeMap<RunKey, CurrentRun>, sqlx::Error> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let mut current = BTreeMap::new();
        for chunk in keys.chunks(rows_per_statement(4)) {
            let values = self.backend.values(chunk.len(), 4, 1);
            let bind_keys = |sql: String| {
                let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                for (platform, repository, pipeline, job) in chunk {
                    query = query
                        .bind(platform)
                        .bind(repository)
                        .bind(pipeline)
                        .bind(job);
                }
                query
            };
            bind_keys(format!(
                "INSERT INTO ci_runs (platform, repository, pipeline_id, job_key) VALUES {values} \
                 ON CONFLICT (platform, repository, pipeline_id, job_key) DO NOTHING"
            ))
            .execute(&mut **tx)
            .await?;
            let rows = bind_keys(format!(
                "SELECT platform, repository, pipeline_id, job_key, status, status_at, started_at \
                 FROM ci_runs WHERE (platform, repository, pipeline_id, job_key) IN (VALUES {values}) \
                 ORDER BY platform, repository, pipeline_id, job_key{lock}"
            ))
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                let status: Option<String> = row.try_get("status")?;
                let status_at: Option<i64> = row.try_get("status_at")?;
                let decisive = match (status, status_at.and_then(Timestamp::from_unix_millis)) {
                    (Some(status), Some(at)) => Some(Decisive {
                        event_type: event_type(&status)?,
                        at,
                    }),
                    _ => None,
                };
                current.insert(
                    (
                        row.try_get("platform")?,
                        row.try_get("repository")?,
                        row.try_get("pipeline_id")?,
                        row.try_get("job_key")?,
                    ),
                    CurrentRun {
                        decisive,
                        started_at: row.try_get("started_at")?,
                    },
                );
            }
        }
        Ok(current)
    }

    /// A run's status and failure details.
    pub async fn run(&self, key: &RunKey) -> Result<Option<RunRow>, sqlx::Error> {
        let (platform, repository, pipeline, job) = key;
        let Some(row) = sqlx::query(
            "SELECT status, error_patterns, failure_reason FROM ci_runs \
             WHERE platform = $1 AND repository = $2 AND pipeline_id = $3 AND job_key = $4",
        )
        .bind(platform)
        .bind(repository)
        .bind(pipeline)
        .bind(job)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let status: Option<String> = row.try_get("status")?;
        let patterns: Option<String> = row.try_get("error_patterns")?;
        Ok(Some(RunRow {
            status: status.as_deref().map(event_type).transpose()?,
            error_patterns: patterns
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| sqlx::Error::Decode(e.into()))?
                .unwrap_or_default(),
            failure_reason: row.try_get("failure_reason")?,
        }))
    }

    /// `(pipeline failures, job failures)` of a repository.
    pub async fn repository_failures(
        &self,
        platform: &str,
        repository: &str,
    ) -> Result<(u64, u64), sqlx::Error> {
        let row = sqlx::query(
            "SELECT pipeline_failures, job_failures FROM ci_repository_failures \
             WHERE platform = $1 AND repository = $2",
        )
        .bind(platform)
        .bind(repository)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok((0, 0));
        };
        let pipelines: i64 = row.try_get("pipeline_failures")?;
        let jobs: i64 = row.try_get("job_failures")?;
        Ok((pipelines as u64, jobs as u64))
    }
}

async fn insert_events(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    events: &[Fresh<CiFact>],
    now_millis: i64,
) -> Result<HashSet<u64>, sqlx::Error> {
    const COLUMNS: usize = 11;
    // In key order, so that replicas never deadlock on each other.
    let mut events: Vec<_> = events.iter().collect();
    events.sort_by_key(|fresh| fresh.event.log_key());
    let mut new = HashSet::with_capacity(events.len());
    for chunk in events.chunks(rows_per_statement(COLUMNS)) {
        let sql = format!(
            "INSERT INTO ci_events (platform, event_type, event_id, repository, pipeline_id, \
             job_key, occurred_at, received_at, processed_at, stream_sequence, error_patterns) \
             VALUES {} ON CONFLICT (platform, event_type, event_id) DO NOTHING \
             RETURNING stream_sequence",
            backend.values(chunk.len(), COLUMNS, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for fresh in chunk {
            let fact = &fresh.event;
            query = query
                .bind(fact.event.platform.as_str())
                .bind(fact.event.kind())
                .bind(&fact.event.id)
                .bind(&fact.event.repository)
                .bind(&fact.event.pipeline_id)
                .bind(fact.job_key())
                .bind(fact.event.timestamp.unix_millis())
                .bind(fresh.received_at.unix_millis())
                .bind(now_millis)
                .bind(fresh.stream_sequence as i64)
                .bind(patterns_json(&fact.error_patterns));
        }
        for row in query.fetch_all(&mut **tx).await? {
            let sequence: i64 = row.try_get(0)?;
            new.insert(sequence as u64);
        }
    }
    Ok(new)
}

/// Moves a run forward with its new events, when they outrank its status.
async fn update_run(
    tx: &mut Transaction<'static, Any>,
    key: &RunKey,
    run: &CurrentRun,
    events: &[&Fresh<CiFact>],
    now_millis: i64,
) -> Result<(), sqlx::Error> {
    let started_at = events
        .iter()
        .filter(|fresh| fresh.event.event.event_type == PipelineEventType::Started)
        .map(|fresh| fresh.event.event.timestamp.unix_millis())
        .chain(run.started_at)
        .min();
    let decided = decide(
        run.decisive,
        events.iter().map(|fresh| fresh.event.decisive()),
    );
    let winner = events
        .iter()
        .find(|fresh| Some(fresh.event.decisive()) == decided && decided != run.decisive);
    let (platform, repository, pipeline, job) = key;
    let Some(winner) = winner else {
        // The status stands; only an earlier start may be new.
        if started_at != run.started_at {
            sqlx::query(
                "UPDATE ci_runs SET started_at = $1, updated_at = $2 \
                 WHERE platform = $3 AND repository = $4 AND pipeline_id = $5 AND job_key = $6",
            )
            .bind(started_at)
            .bind(now_millis)
            .bind(platform)
            .bind(repository)
            .bind(pipeline)
            .bind(job)
            .execute(&mut **tx)
            .await?;
        }
        return Ok(());
    };
    let event = &winner.event.event;
    let ended = event.event_type != PipelineEventType::Started;
    let failure = event.failure_context.as_ref();
    let failed = event.event_type == PipelineEventType::Failed;
    sqlx::query(
        "UPDATE ci_runs SET status = $1, status_at = $2, started_at = $3, finished_at = $4, \
         pipeline_name = COALESCE($5, pipeline_name), job_name = COALESCE($6, job_name), \
         branch = COALESCE($7, branch), commit_sha = COALESCE($8, commit_sha), \
         logs_url = COALESCE($9, logs_url), error_patterns = $10, failure_reason = $11, \
         exit_code = $12, duration_ms = $13, last_event_id = $14, updated_at = $15 \
         WHERE platform = $16 AND repository = $17 AND pipeline_id = $18 AND job_key = $19",
    )
    .bind(event.kind())
    .bind(event.timestamp.unix_millis())
    .bind(started_at)
    .bind(ended.then(|| event.timestamp.unix_millis()))
    .bind(event.metadata.pipeline_name.clone())
    .bind(event.metadata.job_name.clone())
    .bind(event.metadata.branch.clone())
    .bind(event.metadata.commit_sha.clone())
    .bind(event.metadata.logs_url.clone())
    .bind(if failed {
        patterns_json(&winner.event.error_patterns)
    } else {
        None
    })
    .bind(failure.filter(|_| failed).and_then(|f| f.reason.clone()))
    .bind(
        failure
            .filter(|_| failed)
            .and_then(|f| f.exit_code)
            .map(i64::from),
    )
    .bind(failure.and_then(|f| f.duration_ms).map(|ms| ms as i64))
    .bind(&event.id)
    .bind(now_millis)
    .bind(platform)
    .bind(repository)
    .bind(pipeline)
    .bind(job)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `(platform, repository, pipeline id, job key, attempt)`: one failure
/// to announce.
type FailureKey = (String, String, String, String, i64);

/// Records the failures not yet announced, each once (the first report of a
/// run's failure in this batch), and returns those: the others were
/// announced before, or are the same failure reported again.
async fn announce<'e>(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    failures: &[&'e Fresh<CiFact>],
    now_millis: i64,
) -> Result<Vec<&'e Fresh<CiFact>>, sqlx::Error> {
    let mut first: BTreeMap<FailureKey, &Fresh<CiFact>> = BTreeMap::new();
    for fresh in failures {
        let (platform, repository, pipeline, job) = fresh.event.run_key();
        let attempt = i64::from(fresh.event.event.run_attempt.unwrap_or(1));
        first
            .entry((platform, repository, pipeline, job, attempt))
            .or_insert(fresh);
    }
    let rows: Vec<_> = first.into_iter().collect();
    let mut recorded = HashSet::new();
    for chunk in rows.chunks(rows_per_statement(7)) {
        let sql = format!(
            "INSERT INTO ci_failure_announcements (platform, repository, pipeline_id, job_key, \
             run_attempt, event_id, announced_at) VALUES {} \
             ON CONFLICT (platform, repository, pipeline_id, job_key, run_attempt) DO NOTHING \
             RETURNING platform, repository, pipeline_id, job_key, run_attempt",
            backend.values(chunk.len(), 7, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((platform, repository, pipeline, job, attempt), fresh) in chunk {
            query = query
                .bind(platform)
                .bind(repository)
                .bind(pipeline)
                .bind(job)
                .bind(*attempt)
                .bind(&fresh.event.event.id)
                .bind(now_millis);
        }
        for row in query.fetch_all(&mut **tx).await? {
            recorded.insert((
                row.try_get::<String, _>("platform")?,
                row.try_get::<String, _>("repository")?,
                row.try_get::<String, _>("pipeline_id")?,
                row.try_get::<String, _>("job_key")?,
                row.try_get::<i64, _>("run_attempt")?,
            ));
        }
    }
    Ok(rows
        .into_iter()
        .filter(|(key, _)| recorded.contains(key))
        .map(|(_, fresh)| fresh)
        .collect())
}

fn detection(fresh: &Fresh<CiFact>, now: Timestamp) -> CiFailureDetected {
    let event = &fresh.event.event;
    let mut failure_context = event.failure_context.clone().unwrap_or_default();
    failure_context.error_patterns = fresh
        .event
        .error_patterns
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    CiFailureDetected {
        platform: event.platform,
        repository: event.repository.clone(),
        pipeline_id: event.pipeline_id.clone(),
        job_id: event.job_id.clone(),
        event_id: event.id.clone(),
        error_patterns: fresh.event.error_patterns.clone(),
        failure_context,
        metadata: event.metadata.clone(),
        failed_at: event.timestamp,
        received_at: fresh.received_at,
        detected_at: now,
    }
}

fn detection_message(tenant: &TenantId, detected: &CiFailureDetected) -> OutboxMessage {
    let id = format!("{}:{}", detected.platform, detected.event_id);
    let envelope = Envelope::new(
        id.clone(),
        "/batch-processor",
        detected.detected_at,
        tenant.clone(),
        Some(detected.repository.clone()),
        detected.clone(),
    );
    OutboxMessage {
        msg_id: format!("{CI_FAILURE_DETECTED}:{id}"),
        subject: CI_FAILURE_DETECTED.to_owned(),
        payload: String::from_utf8(envelope.to_json()).expect("JSON is UTF-8"),
        trace: TraceHeaders::default(),
    }
}

/// Adds each detected failure to its repository's counters and its
/// patterns' counters.
async fn count_failures(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    detected: &[CiFailureDetected],
) -> Result<(), sqlx::Error> {
    let mut repositories: BTreeMap<(&str, &str), (i64, i64, i64)> = BTreeMap::new();
    let mut patterns: BTreeMap<(&str, &str, &str), i64> = BTreeMap::new();
    for failure in detected {
        let key = (failure.platform.as_str(), failure.repository.as_str());
        let entry = repositories.entry(key).or_insert((0, 0, i64::MIN));
        if failure.job_id.is_some() {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
        entry.2 = entry.2.max(failure.failed_at.unix_millis());
        for pattern in &failure.error_patterns {
            *patterns
                .entry((key.0, key.1, pattern.as_str()))
                .or_default() += 1;
        }
    }
    let repositories: Vec<_> = repositories.into_iter().collect();
    for chunk in repositories.chunks(rows_per_statement(5)) {
        let sql = format!(
            "INSERT INTO ci_repository_failures \
             (platform, repository, pipeline_failures, job_failures, last_failed_at) VALUES {} \
             ON CONFLICT (platform, repository) DO UPDATE SET \
             pipeline_failures = ci_repository_failures.pipeline_failures + excluded.pipeline_failures, \
             job_failures = ci_repository_failures.job_failures + excluded.job_failures, \
             last_failed_at = CASE WHEN ci_repository_failures.last_failed_at IS NULL \
             OR excluded.last_failed_at > ci_repository_failures.last_failed_at \
             THEN excluded.last_failed_at ELSE ci_repository_failures.last_failed_at END",
            backend.values(chunk.len(), 5, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((platform, repository), (pipelines, jobs, last)) in chunk {
            query = query
                .bind(*platform)
                .bind(*repository)
                .bind(*pipelines)
                .bind(*jobs)
                .bind(*last);
        }
        query.execute(&mut **tx).await?;
    }
    let patterns: Vec<_> = patterns.into_iter().collect();
    for chunk in patterns.chunks(rows_per_statement(4)) {
        let sql = format!(
            "INSERT INTO ci_failure_patterns (platform, repository, pattern, failures) VALUES {} \
             ON CONFLICT (platform, repository, pattern) DO UPDATE SET \
             failures = ci_failure_patterns.failures + excluded.failures",
            backend.values(chunk.len(), 4, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((platform, repository, pattern), failures) in chunk {
            query = query
                .bind(*platform)
                .bind(*repository)
                .bind(*pattern)
                .bind(*failures);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
