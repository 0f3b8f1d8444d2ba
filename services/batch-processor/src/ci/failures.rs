//! Reads of announced CI failures, for `hookmesh.ci.failures`: each
//! failure of a run (or job) and attempt with what the run says of it, and
//! per-platform counts by day.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::{CiFailureCount, CiFailureView, CiPlatform};
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::db::Keyset;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row as _};

use super::store::{CiStore, event_type, patterns_of};

const DAY_MILLIS: i64 = 86_400_000;

/// A failure's place in the list: its detection time, then platform and
/// event id (event ids are unique per platform).
const FAILURE_ID: &str = "(a.platform || ':' || a.event_id)";

/// Which failures a page shows.
#[derive(Debug, Clone, Default)]
pub struct FailureFilter {
    pub platform: Option<CiPlatform>,
    pub repository: Option<String>,
}

fn decode(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn failure_view(row: &AnyRow) -> Result<CiFailureView, sqlx::Error> {
    let platform: String = row.try_get("platform")?;
    let job_key: String = row.try_get("job_key")?;
    let announced_at: i64 = row.try_get("announced_at")?;
    let status: Option<String> = row.try_get("status")?;
    let run_attempt: i64 = row.try_get("run_attempt")?;
    Ok(CiFailureView {
        platform: CiPlatform::from_wire(&platform)
            .ok_or_else(|| decode(format!("not a CI platform: {platform:?}")))?,
        repository: row.try_get("repository")?,
        pipeline_id: row.try_get("pipeline_id")?,
        job_id: (!job_key.is_empty()).then_some(job_key),
        run_attempt: u64::try_from(run_attempt).unwrap_or_default(),
        event_id: row.try_get("event_id")?,
        error_patterns: patterns_of(row.try_get("patterns")?)?,
        failure_reason: row.try_get("failure_reason")?,
        pipeline_name: row.try_get("pipeline_name")?,
        job_name: row.try_get("job_name")?,
        branch: row.try_get("branch")?,
        commit_sha: row.try_get("commit_sha")?,
        logs_url: row.try_get("logs_url")?,
        current_status: status.as_deref().map(event_type).transpose()?,
        detected_at: Timestamp::from_unix_millis(announced_at)
            .ok_or_else(|| decode(format!("not an instant: {announced_at}")))?,
    })
}

impl CiStore {
    /// One page of announced failures, newest first, and the next page's
    /// cursor. The classification is the failure event's own (a later
    /// failure of the same run may have another).
    pub async fn failure_page(
        &self,
        filter: &FailureFilter,
        limit: u32,
        after: Option<Keyset>,
    ) -> Result<(Vec<CiFailureView>, Option<String>), sqlx::Error> {
        let mut sql = String::from(
            "SELECT a.platform, a.repository, a.pipeline_id, a.job_key, a.run_attempt, \
             a.event_id, a.announced_at, r.status, r.failure_reason, r.pipeline_name, \
             r.job_name, r.branch, r.commit_sha, r.logs_url, \
             COALESCE(e.error_patterns, r.error_patterns) AS patterns \
             FROM ci_failure_announcements a \
             LEFT JOIN ci_runs r ON r.platform = a.platform AND r.repository = a.repository \
             AND r.pipeline_id = a.pipeline_id AND r.job_key = a.job_key \
             LEFT JOIN ci_events e ON e.platform = a.platform \
             AND e.event_type = 'pipeline.failed' AND e.event_id = a.event_id \
             WHERE 1 = 1",
        );
        let mut next = 1;
        if filter.platform.is_some() {
            sql.push_str(&format!(" AND a.platform = ${next}"));
            next += 1;
        }
        if filter.repository.is_some() {
            sql.push_str(&format!(" AND a.repository = ${next}"));
            next += 1;
        }
        sql.push_str(&Keyset::clause(
            "a.announced_at",
            FAILURE_ID,
            after.as_ref(),
            next,
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(platform) = filter.platform {
            query = query.bind(platform.as_str());
        }
        if let Some(repository) = &filter.repository {
            query = query.bind(repository.clone());
        }
        let rows = Keyset::bind(query, after.as_ref(), limit)
            .fetch_all(&self.pool)
            .await?;
        let failures = rows
            .iter()
            .map(failure_view)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyset::page(failures, limit, |failure| {
            Keyset::new(
                failure.detected_at.unix_millis(),
                format!("{}:{}", failure.platform.as_str(), failure.event_id),
            )
        }))
    }

    /// Failures per platform and UTC day over the `days` ending `today`,
    /// oldest day first; days without a failure are left out.
    pub async fn failure_counts(
        &self,
        today: Timestamp,
        days: u32,
    ) -> Result<Vec<CiFailureCount>, sqlx::Error> {
        let first_day = today.unix_millis().div_euclid(DAY_MILLIS) - i64::from(days) + 1;
        let rows = sqlx::query(
            "SELECT platform, announced_at / 86400000 AS day, COUNT(*) AS failures \
             FROM ci_failure_announcements WHERE announced_at >= $1 \
             GROUP BY platform, announced_at / 86400000 ORDER BY day, platform",
        )
        .bind(first_day * DAY_MILLIS)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let platform: String = row.try_get("platform")?;
                let day: i64 = row.try_get("day")?;
                let failures: i64 = row.try_get("failures")?;
                Ok(CiFailureCount {
                    platform: CiPlatform::from_wire(&platform)
                        .ok_or_else(|| decode(format!("not a CI platform: {platform:?}")))?,
                    day: Timestamp::from_unix_millis(day * DAY_MILLIS)
                        .ok_or_else(|| decode(format!("not a day: {day}")))?
                        .as_offset_date_time()
                        .date()
                        .to_string(),
                    failures: u64::try_from(failures).unwrap_or_default(),
                })
            })
            .collect()
    }
}
