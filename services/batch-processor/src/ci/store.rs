//! The CI family's tables: the events log, runs with their forward-only
//! status, failure counters per repository and pattern, and the outbox of
//! `ci.failure.detected`. One transaction per batch.

use std::collections::{BTreeMap, HashSet};

use futures_util::TryStreamExt as _;
use hookmesh_contracts::ci::{CiFailureDetected, CiPipelineEvent, ErrorPattern, PipelineEventType};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::CI_FAILURE_DETECTED;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_runtime::db::{
    self, ARRAY_ROWS_PER_STATEMENT, Backend, PgArray, Pool, rows_per_statement,
};
use hookmesh_runtime::outbox::{Outbox, OutboxMessage};
use hookmesh_runtime::publish::TraceHeaders;
use sqlx::{Any, AssertSqlSafe, Row as _, Transaction};

use super::runs::{Decisive, decide};
use hookmesh_runtime::engine::{Applied, Fresh, Laps};

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
    pub(super) pool: Pool,
    backend: Backend,
    outbox: Outbox,
}

struct CurrentRun {
    decisive: Option<Decisive>,
    started_at: Option<i64>,
}

pub(super) fn event_type(text: &str) -> Result<PipelineEventType, sqlx::Error> {
    PipelineEventType::from_wire(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("not a pipeline event: {text:?}").into()))
}

fn patterns_json(patterns: &[ErrorPattern]) -> Option<String> {
    (!patterns.is_empty()).then(|| serde_json::to_string(patterns).expect("patterns serialise"))
}

/// The patterns a row keeps as JSON; none when the column is empty.
pub(super) fn patterns_of(json: Option<String>) -> Result<Vec<ErrorPattern>, sqlx::Error> {
    json.map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(e.into()))
        .map(Option::unwrap_or_default)
}

impl CiStore {
    pub fn new(pool: Pool, backend: Backend, outbox: Outbox) -> Self {
        Self {
            pool,
            backend,
            outbox,
        }
    }

    /// Applies a batch of fresh events in one transaction; each
    /// statement's time goes to `laps`.
    pub async fn apply(
        &self,
        events: &[Fresh<'_, CiFact>],
        now: Timestamp,
        laps: &mut Laps,
    ) -> Result<CiOutcome, sqlx::Error> {
        let now_millis = now.unix_millis();
        let mut tx = self.pool.begin().await?;
        laps.lap("begin");
        let new = insert_events(self.backend, &mut tx, events, now_millis).await?;
        laps.lap("insert_events");
        let fresh: Vec<&Fresh<CiFact>> = events
            .iter()
            .filter(|fresh| new.contains(&fresh.stream_sequence()))
            .collect();

        let mut by_run: BTreeMap<RunKey, Vec<&Fresh<CiFact>>> = BTreeMap::new();
        for event in &fresh {
            by_run.entry(event.event.run_key()).or_default().push(event);
        }
        let keys: Vec<&RunKey> = by_run.keys().collect();
        let current = self.lock_runs(&mut tx, &keys).await?;
        laps.lap("lock_runs");
        let mut moves = Vec::new();
        for (key, events) in &by_run {
            if let Some(run) = current.get(key)
                && let Some(moved) = run_move(key, run, events)
            {
                moves.push(moved);
            }
        }
        update_runs(self.backend, &mut tx, &moves, now_millis).await?;

        laps.lap("update_runs");
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
        laps.lap("failures");
        tx.commit().await?;
        laps.lap("commit");
        if !detected.is_empty() {
            self.outbox.nudge();
        }
        let applied = events
            .iter()
            .map(|fresh| {
                if new.contains(&fresh.stream_sequence()) {
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
            let mut rows = bind_keys(format!(
                "SELECT platform, repository, pipeline_id, job_key, status, status_at, started_at \
                 FROM ci_runs WHERE (platform, repository, pipeline_id, job_key) IN (VALUES {values}) \
                 ORDER BY platform, repository, pipeline_id, job_key{lock}"
            ))
            .fetch(&mut **tx);
            while let Some(row) = rows.try_next().await? {
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
            error_patterns: patterns_of(patterns)?,
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
    events: &[Fresh<'_, CiFact>],
    now_millis: i64,
) -> Result<HashSet<u64>, sqlx::Error> {
    const COLUMNS: usize = 11;
    // In key order, so that replicas never deadlock on each other.
    let mut events: Vec<_> = events.iter().collect();
    events.sort_by_key(|fresh| fresh.event.log_key());
    let mut new = HashSet::with_capacity(events.len());
    if backend == Backend::Postgres {
        for chunk in events.chunks(ARRAY_ROWS_PER_STATEMENT) {
            let mut columns: [PgArray; 10] = Default::default();
            for fresh in chunk {
                let fact = &fresh.event;
                let [
                    platform,
                    kind,
                    id,
                    repository,
                    pipeline,
                    job,
                    occurred_at,
                    received_at,
                    sequence,
                    patterns,
                ] = &mut columns;
                platform.text(Some(fact.event.platform.as_str()));
                kind.text(Some(fact.event.kind()));
                id.text(Some(&fact.event.id));
                repository.text(Some(&fact.event.repository));
                pipeline.text(Some(&fact.event.pipeline_id));
                job.text(Some(fact.job_key()));
                occurred_at.int(Some(fact.event.timestamp.unix_millis()));
                received_at.int(Some(fresh.received_at().unix_millis()));
                sequence.int(Some(fresh.stream_sequence() as i64));
                patterns.text(patterns_json(&fact.error_patterns).as_deref());
            }
            db::insert_returning_sequences(
                tx,
                "INSERT INTO ci_events (platform, event_type, event_id, repository, pipeline_id, \
                 job_key, occurred_at, received_at, processed_at, stream_sequence, error_patterns) \
                 SELECT platform, event_type, event_id, repository, pipeline_id, job_key, \
                 occurred_at, received_at, $11, stream_sequence, error_patterns \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[]) \
                 AS v(platform, event_type, event_id, repository, pipeline_id, job_key, \
                 occurred_at, received_at, stream_sequence, error_patterns) \
                 ON CONFLICT (platform, event_type, event_id) DO NOTHING \
                 RETURNING stream_sequence",
                columns,
                now_millis,
                &mut new,
            )
            .await?;
        }
        return Ok(new);
    }
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
                .bind(fresh.received_at().unix_millis())
                .bind(now_millis)
                .bind(fresh.stream_sequence() as i64)
                .bind(patterns_json(&fact.error_patterns));
        }
        db::collect_new_sequences(tx, query, &mut new).await?;
    }
    Ok(new)
}

/// What a batch changes in one run: its new status and failure details
/// (when its events outrank the status), or only an earlier start.
struct RunMove<'a> {
    key: &'a RunKey,
    started_at: Option<i64>,
    /// The event that decides the new status, when it changes.
    winner: Option<&'a CiFact>,
}

/// How `events` move `run`, if at all.
fn run_move<'a>(
    key: &'a RunKey,
    run: &CurrentRun,
    events: &[&'a Fresh<CiFact>],
) -> Option<RunMove<'a>> {
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
        .copied()
        .find(|fresh| Some(fresh.event.decisive()) == decided && decided != run.decisive)
        .map(|fresh| &fresh.event);
    (winner.is_some() || started_at != run.started_at).then_some(RunMove {
        key,
        started_at,
        winner,
    })
}

/// Moves the runs forward: one statement for those whose status changes,
/// one for those that only learn an earlier start.
async fn update_runs(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    moves: &[RunMove<'_>],
    now_millis: i64,
) -> Result<(), sqlx::Error> {
    const STATUS_COLUMNS: usize = 18;
    let (decided, started): (Vec<&RunMove>, Vec<&RunMove>) =
        moves.iter().partition(|moved| moved.winner.is_some());
    // Each row's values, in the statement's column order.
    let status_row = |moved: &RunMove| -> Vec<RunValue> {
        let (platform, repository, pipeline, job) = moved.key;
        let fact = moved.winner.expect("partitioned by winner");
        let event = &fact.event;
        let ended = event.event_type != PipelineEventType::Started;
        let failed = event.event_type == PipelineEventType::Failed;
        let failure = event.failure_context.as_ref().filter(|_| failed);
        vec![
            RunValue::Text(Some(platform.clone())),
            RunValue::Text(Some(repository.clone())),
            RunValue::Text(Some(pipeline.clone())),
            RunValue::Text(Some(job.clone())),
            RunValue::Text(Some(event.kind().to_owned())),
            RunValue::Int(Some(event.timestamp.unix_millis())),
            RunValue::Int(moved.started_at),
            RunValue::Int(ended.then(|| event.timestamp.unix_millis())),
            RunValue::Text(event.metadata.pipeline_name.clone()),
            RunValue::Text(event.metadata.job_name.clone()),
            RunValue::Text(event.metadata.branch.clone()),
            RunValue::Text(event.metadata.commit_sha.clone()),
            RunValue::Text(event.metadata.logs_url.clone()),
            RunValue::Text(if failed {
                patterns_json(&fact.error_patterns)
            } else {
                None
            }),
            RunValue::Text(failure.and_then(|f| f.reason.clone())),
            RunValue::Int(failure.and_then(|f| f.exit_code).map(i64::from)),
            RunValue::Int(
                event
                    .failure_context
                    .as_ref()
                    .and_then(|f| f.duration_ms)
                    .map(|ms| ms as i64),
            ),
            RunValue::Text(Some(event.id.clone())),
        ]
    };
    const SET_STATUS: &str = "status = v.status, status_at = v.status_at, \
        started_at = v.started_at, finished_at = v.finished_at, \
        pipeline_name = COALESCE(v.pipeline_name, ci_runs.pipeline_name), \
        job_name = COALESCE(v.job_name, ci_runs.job_name), \
        branch = COALESCE(v.branch, ci_runs.branch), \
        commit_sha = COALESCE(v.commit_sha, ci_runs.commit_sha), \
        logs_url = COALESCE(v.logs_url, ci_runs.logs_url), \
        error_patterns = v.error_patterns, failure_reason = v.failure_reason, \
        exit_code = v.exit_code, duration_ms = v.duration_ms, \
        last_event_id = v.last_event_id";
    const STATUS_NAMES: &str = "platform, repository, pipeline_id, job_key, status, status_at, \
        started_at, finished_at, pipeline_name, job_name, branch, commit_sha, logs_url, \
        error_patterns, failure_reason, exit_code, duration_ms, last_event_id";
    const STATUS_TYPES: [&str; STATUS_COLUMNS] = [
        "text", "text", "text", "text", "text", "bigint", "bigint", "bigint", "text", "text",
        "text", "text", "text", "text", "text", "bigint", "bigint", "text",
    ];
    let start_row = |moved: &RunMove| -> Vec<RunValue> {
        let (platform, repository, pipeline, job) = moved.key;
        vec![
            RunValue::Text(Some(platform.clone())),
            RunValue::Text(Some(repository.clone())),
            RunValue::Text(Some(pipeline.clone())),
            RunValue::Text(Some(job.clone())),
            RunValue::Int(moved.started_at),
        ]
    };
    let statements = [
        (
            decided.into_iter().map(status_row).collect::<Vec<_>>(),
            SET_STATUS,
            STATUS_NAMES,
            &STATUS_TYPES[..],
        ),
        (
            started.into_iter().map(start_row).collect(),
            "started_at = v.started_at",
            "platform, repository, pipeline_id, job_key, started_at",
            &["text", "text", "text", "text", "bigint"][..],
        ),
    ];
    for (rows, set, names, types) in statements {
        if rows.is_empty() {
            continue;
        }
        let columns = types.len();
        let matches = "ci_runs.platform = v.platform AND ci_runs.repository = v.repository \
            AND ci_runs.pipeline_id = v.pipeline_id AND ci_runs.job_key = v.job_key";
        match backend {
            Backend::Postgres => {
                let arrays: Vec<String> = (1..=columns)
                    .map(|n| format!("${n}::{}[]", types[n - 1]))
                    .collect();
                let sql = format!(
                    "UPDATE ci_runs SET {set}, updated_at = ${} FROM UNNEST({}) AS v({names}) \
                     WHERE {matches}",
                    columns + 1,
                    arrays.join(", ")
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for column in 0..columns {
                    let mut array = PgArray::new();
                    for row in &rows {
                        match &row[column] {
                            RunValue::Text(text) => array.text(text.as_deref()),
                            RunValue::Int(int) => array.int(*int),
                        };
                    }
                    query = query.bind(array.finish());
                }
                query.bind(now_millis).execute(&mut **tx).await?;
            }
            Backend::Sqlite => {
                // SQLite names a VALUES list's columns column1, column2…
                let renamed: Vec<String> = names
                    .split(", ")
                    .enumerate()
                    .map(|(n, name)| format!("column{} AS {name}", n + 1))
                    .collect();
                for chunk in rows.chunks(rows_per_statement(columns) - 1) {
                    let sql = format!(
                        "UPDATE ci_runs SET {set}, updated_at = ? FROM (SELECT {} FROM (VALUES {})) AS v \
                         WHERE {matches}",
                        renamed.join(", "),
                        backend.values(chunk.len(), columns, 2)
                    );
                    let mut query = sqlx::query(AssertSqlSafe(sql))
                        .persistent(false)
                        .bind(now_millis);
                    for row in chunk {
                        for value in row {
                            query = match value {
                                RunValue::Text(text) => query.bind(text.clone()),
                                RunValue::Int(int) => query.bind(*int),
                            };
                        }
                    }
                    query.execute(&mut **tx).await?;
                }
            }
        }
    }
    Ok(())
}

/// A value of a run's row, for the set-based update.
enum RunValue {
    Text(Option<String>),
    Int(Option<i64>),
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
    failures: &[&'e Fresh<'e, CiFact>],
    now_millis: i64,
) -> Result<Vec<&'e Fresh<'e, CiFact>>, sqlx::Error> {
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
        let mut rows = query.fetch(&mut **tx);
        while let Some(row) = rows.try_next().await? {
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
        received_at: fresh.received_at(),
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
