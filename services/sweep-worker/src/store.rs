//! The job and result tables (seed 003's PipelineJob and
//! TradingSweepResult) through sqlx, on SQLite and PostgreSQL alike.
//!
//! Every status change is one guarded `UPDATE … WHERE status IN (…)`: it
//! applies once, only forward, and tells whether it applied, so a repeated
//! message and a racing replica change nothing. The change's event is
//! written to the outbox in the same transaction.

use hookmesh_contracts::sweep::{StrategyType, SweepResult, SweepTrigger};
use hookmesh_contracts::sweep_jobs::{
    JobMetrics, JobResult, JobStatus, PipelineJob, TRADING_SWEEP,
};
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_runtime::db::{Backend, Keyset, Pool, rows_per_statement};
use hookmesh_runtime::outbox::Outbox;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row as _};

use crate::events::{self, Details};

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub tenant: TenantId,
    pub status: JobStatus,
    pub trigger: SweepTrigger,
    pub trading_job_id: Option<String>,
    pub sweep_run_id: Option<String>,
    pub result: Option<JobResult>,
    pub metrics: Option<JobMetrics>,
    pub error_message: Option<String>,
    pub poll_failures: i64,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

impl JobRow {
    /// The read API's view, with `results` when one job is asked for.
    pub fn view(self, results: Option<Vec<SweepResult>>) -> PipelineJob {
        PipelineJob {
            id: self.id,
            tenant_id: self.tenant,
            job_type: TRADING_SWEEP.to_owned(),
            status: self.status,
            parameters: self.trigger,
            result: self.result,
            metrics: self.metrics,
            error_message: self.error_message,
            trading_job_id: self.trading_job_id,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            results,
        }
    }
}

/// A LIKE pattern finding `ticker` in a job's stored parameters (the
/// trigger as serde writes it: no spaces), with LIKE's wildcards escaped.
fn ticker_pattern(ticker: &str) -> String {
    let member = format!("\"ticker\":{}", serde_json::Value::from(ticker));
    let escaped: String = member
        .chars()
        .flat_map(|c| match c {
            '\\' | '%' | '_' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}

const JOB_COLUMNS: &str = "id, tenant_id, status, parameters, result, metrics, error_message, \
    trading_job_id, sweep_run_id, poll_failures, created_at, started_at, completed_at";

const RESULT_COLUMNS: &str = "ticker, strategy_type, fast_period, slow_period, score, \
    sharpe_ratio, sortino_ratio, total_return_pct, annualized_return, max_drawdown_pct, \
    win_rate_pct, profit_factor, total_trades, trades_per_month, avg_trade_duration";

fn decode(column: &str, error: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: error.to_string().into(),
    }
}

fn instant(row: &AnyRow, column: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    let millis: Option<i64> = row.try_get(column)?;
    millis
        .map(|m| Timestamp::from_unix_millis(m).ok_or_else(|| decode(column, "out of range")))
        .transpose()
}

fn document<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &str,
) -> Result<Option<T>, sqlx::Error> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| decode(column, e)))
        .transpose()
}

fn job_from_row(row: &AnyRow) -> Result<JobRow, sqlx::Error> {
    let tenant: String = row.try_get("tenant_id")?;
    let status: String = row.try_get("status")?;
    Ok(JobRow {
        id: row.try_get("id")?,
        tenant: TenantId::parse(&tenant).map_err(|e| decode("tenant_id", e))?,
        status: status.parse().map_err(|e: String| decode("status", e))?,
        trigger: document(row, "parameters")?.ok_or_else(|| decode("parameters", "missing"))?,
        trading_job_id: row.try_get("trading_job_id")?,
        sweep_run_id: row.try_get("sweep_run_id")?,
        result: document(row, "result")?,
        metrics: document(row, "metrics")?,
        error_message: row.try_get("error_message")?,
        poll_failures: row.try_get("poll_failures")?,
        created_at: instant(row, "created_at")?.ok_or_else(|| decode("created_at", "missing"))?,
        started_at: instant(row, "started_at")?,
        completed_at: instant(row, "completed_at")?,
    })
}

/// One job by id, through the pool or inside a transaction.
async fn fetch_job<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    job_id: &str,
) -> Result<Option<JobRow>, sqlx::Error> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM pipeline_jobs WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(job_from_row)
        .transpose()
}

fn result_from_row(row: &AnyRow) -> Result<SweepResult, sqlx::Error> {
    let strategy: String = row.try_get("strategy_type")?;
    let period = |column: &str| -> Result<u32, sqlx::Error> {
        let value: i64 = row.try_get(column)?;
        u32::try_from(value).map_err(|e| decode(column, e))
    };
    Ok(SweepResult {
        ticker: row.try_get("ticker")?,
        strategy_type: strategy
            .parse::<StrategyType>()
            .map_err(|e| decode("strategy_type", e))?,
        fast_period: period("fast_period")?,
        slow_period: period("slow_period")?,
        score: row.try_get("score")?,
        sharpe_ratio: row.try_get("sharpe_ratio")?,
        sortino_ratio: row.try_get("sortino_ratio")?,
        total_return_pct: row.try_get("total_return_pct")?,
        annualized_return: row.try_get("annualized_return")?,
        max_drawdown_pct: row.try_get("max_drawdown_pct")?,
        win_rate_pct: row.try_get("win_rate_pct")?,
        profit_factor: row.try_get("profit_factor")?,
        total_trades: period("total_trades")?,
        trades_per_month: row.try_get("trades_per_month")?,
        avg_trade_duration: row.try_get("avg_trade_duration")?,
    })
}

/// 003 keeps its figures as `Decimal(10, 2)`.
fn two_decimals(value: f64) -> f64 {
    if value.is_finite() {
        (value * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// A page of a tenant's jobs starts after this one: `<created ms>.<id>`.
pub fn parse_cursor(cursor: &str) -> Option<Keyset> {
    Keyset::parse(cursor)
        .filter(|after| hookmesh_contracts::sweep_jobs::JobId::parse(&after.id).is_ok())
}

#[derive(Debug, Clone)]
pub struct SweepStore {
    pool: Pool,
    backend: Backend,
    outbox: Outbox,
}

impl SweepStore {
    pub fn new(pool: Pool, backend: Backend, outbox: Outbox) -> Self {
        Self {
            pool,
            backend,
            outbox,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Records a new job as QUEUED (announcing it), or finds the job
    /// already there. Returns the job and whether it was new.
    pub async fn record_queued(
        &self,
        job_id: &str,
        tenant: &TenantId,
        trigger: &SweepTrigger,
        now: Timestamp,
    ) -> Result<(JobRow, bool), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO pipeline_jobs (id, tenant_id, job_type, status, parameters, created_at, updated_at) \
             VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(job_id)
        .bind(tenant.as_str())
        .bind(TRADING_SWEEP)
        .bind(serde_json::to_string(trigger).expect("triggers serialise"))
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            let combinations = trigger.combination_count();
            let event = events::status_event(
                job_id,
                tenant,
                trigger,
                JobStatus::Queued,
                Details {
                    message: format!(
                        "Queued: {} {} sweep of {combinations} combinations",
                        trigger.ticker, trigger.strategy_type
                    ),
                    ..Details::default()
                },
                now,
            );
            self.outbox
                .write(&mut tx, &[event], now.unix_millis())
                .await?;
        }
        let job = fetch_job(&mut *tx, job_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        if inserted {
            self.outbox.nudge();
        }
        Ok((job, inserted))
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRow>, sqlx::Error> {
        fetch_job(&self.pool, job_id).await
    }

    /// Notes the Trading API's id of the sweep, and moves a QUEUED job to
    /// RUNNING with its deadline reminder. A job that moved on already (a
    /// fast callback) keeps its status. Returns whether it moved.
    pub async fn record_submission(
        &self,
        job: &JobRow,
        trading_job_id: &str,
        now: Timestamp,
        deadline: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE pipeline_jobs SET status = 'RUNNING', trading_job_id = $1, started_at = $2, \
             updated_at = $3 WHERE id = $4 AND status = 'QUEUED'",
        )
        .bind(trading_job_id)
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .bind(&job.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if moved {
            let running = events::status_event(
                &job.id,
                &job.tenant,
                &job.trigger,
                JobStatus::Running,
                Details {
                    message: format!(
                        "Running: the Trading API accepted the sweep as {trading_job_id}"
                    ),
                    ..Details::default()
                },
                now,
            );
            let reminder = events::deadline(&job.id, &job.tenant, trading_job_id, deadline, now);
            self.outbox
                .write(&mut tx, &[running, reminder], now.unix_millis())
                .await?;
        } else {
            sqlx::query(
                "UPDATE pipeline_jobs SET trading_job_id = COALESCE(trading_job_id, $1), \
                 updated_at = $2 WHERE id = $3",
            )
            .bind(trading_job_id)
            .bind(now.unix_millis())
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if moved {
            self.outbox.nudge();
        }
        Ok(moved)
    }

    /// Completes the job with its results (each row stored once) and
    /// metrics. Returns whether it completed now (false: it was over).
    pub async fn complete(
        &self,
        job: &JobRow,
        sweep_run_id: &str,
        results: &[SweepResult],
        metrics: JobMetrics,
        now: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        let best = results
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .cloned();
        let summary = JobResult {
            sweep_run_id: sweep_run_id.to_owned(),
            total_results: u32::try_from(results.len()).unwrap_or(u32::MAX),
            best: best.clone(),
        };
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE pipeline_jobs SET status = 'COMPLETED', sweep_run_id = $1, result = $2, \
             metrics = $3, started_at = COALESCE(started_at, $4), completed_at = $5, updated_at = $6 \
             WHERE id = $7 AND status IN ('QUEUED', 'RUNNING')",
        )
        .bind(sweep_run_id)
        .bind(serde_json::to_string(&summary).expect("results serialise"))
        .bind(serde_json::to_string(&metrics).expect("metrics serialise"))
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .bind(&job.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !moved {
            tx.rollback().await?;
            return Ok(false);
        }
        const COLUMNS: usize = 18;
        for chunk in results.chunks(rows_per_statement(COLUMNS)) {
            let sql = format!(
                "INSERT INTO trading_sweep_results (job_id, sweep_run_id, {RESULT_COLUMNS}, created_at) \
                 VALUES {} ON CONFLICT (job_id, strategy_type, fast_period, slow_period) DO NOTHING",
                self.backend.values(chunk.len(), COLUMNS, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for row in chunk {
                query = query
                    .bind(&job.id)
                    .bind(sweep_run_id)
                    .bind(&row.ticker)
                    .bind(row.strategy_type.to_string())
                    .bind(i64::from(row.fast_period))
                    .bind(i64::from(row.slow_period))
                    .bind(two_decimals(row.score))
                    .bind(two_decimals(row.sharpe_ratio))
                    .bind(two_decimals(row.sortino_ratio))
                    .bind(two_decimals(row.total_return_pct))
                    .bind(two_decimals(row.annualized_return))
                    .bind(two_decimals(row.max_drawdown_pct))
                    .bind(two_decimals(row.win_rate_pct))
                    .bind(two_decimals(row.profit_factor))
                    .bind(i64::from(row.total_trades))
                    .bind(two_decimals(row.trades_per_month))
                    .bind(&row.avg_trade_duration)
                    .bind(now.unix_millis());
            }
            query.execute(&mut *tx).await?;
        }
        let message = match &best {
            Some(best) => format!(
                "Completed: {} results; best fast {} / slow {} (score {:.2}, Sharpe {:.2})",
                results.len(),
                best.fast_period,
                best.slow_period,
                best.score,
                best.sharpe_ratio
            ),
            None => "Completed: no combination reached min_trades".to_owned(),
        };
        let event = events::status_event(
            &job.id,
            &job.tenant,
            &job.trigger,
            JobStatus::Completed,
            Details {
                message,
                metrics: Some(metrics),
                best,
                error_message: None,
            },
            now,
        );
        self.outbox
            .write(&mut tx, &[event], now.unix_millis())
            .await?;
        tx.commit().await?;
        self.outbox.nudge();
        Ok(true)
    }

    /// Fails the job with `message`. Returns whether it failed now.
    pub async fn fail(
        &self,
        job: &JobRow,
        message: &str,
        now: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE pipeline_jobs SET status = 'FAILED', error_message = $1, completed_at = $2, \
             updated_at = $3 WHERE id = $4 AND status IN ('QUEUED', 'RUNNING')",
        )
        .bind(message)
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .bind(&job.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !moved {
            tx.rollback().await?;
            return Ok(false);
        }
        let event = events::status_event(
            &job.id,
            &job.tenant,
            &job.trigger,
            JobStatus::Failed,
            Details {
                message: format!("Failed: {message}"),
                error_message: Some(message.to_owned()),
                ..Details::default()
            },
            now,
        );
        self.outbox
            .write(&mut tx, &[event], now.unix_millis())
            .await?;
        tx.commit().await?;
        self.outbox.nudge();
        Ok(true)
    }

    /// Counts a failed poll of the Trading API; returns the count so far.
    pub async fn record_poll_failure(&self, job_id: &str) -> Result<i64, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE pipeline_jobs SET poll_failures = poll_failures + 1 WHERE id = $1 \
             RETURNING poll_failures",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        row.try_get(0)
    }

    /// A job's results, best score first.
    pub async fn results(&self, job_id: &str) -> Result<Vec<SweepResult>, sqlx::Error> {
        let sql = format!(
            "SELECT {RESULT_COLUMNS} FROM trading_sweep_results WHERE job_id = $1 \
             ORDER BY score DESC, fast_period, slow_period"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(result_from_row)
            .collect()
    }

    /// One page of a tenant's jobs, newest first, and the cursor of the
    /// next page.
    pub async fn list(
        &self,
        tenant: &TenantId,
        status: Option<JobStatus>,
        ticker: Option<&str>,
        limit: u32,
        after: Option<Keyset>,
    ) -> Result<(Vec<JobRow>, Option<String>), sqlx::Error> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM pipeline_jobs WHERE tenant_id = $1");
        let mut next = 2;
        if status.is_some() {
            sql.push_str(&format!(" AND status = ${next}"));
            next += 1;
        }
        if ticker.is_some() {
            sql.push_str(&format!(" AND parameters LIKE ${next} ESCAPE '\\'"));
            next += 1;
        }
        sql.push_str(&Keyset::clause("created_at", "id", after.as_ref(), next));
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str());
        if let Some(status) = status {
            query = query.bind(status.to_string());
        }
        if let Some(ticker) = ticker {
            query = query.bind(ticker_pattern(ticker));
        }
        let rows = Keyset::bind(query, after.as_ref(), limit)
            .fetch_all(&self.pool)
            .await?;
        let jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, cursor) = Keyset::page(jobs, limit, |job| {
            Keyset::new(job.created_at.unix_millis(), &job.id)
        });
        Ok((jobs, cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(
            parse_cursor("1700000000000.job_abc"),
            Some(Keyset::new(1_700_000_000_000, "job_abc"))
        );
        assert_eq!(parse_cursor("x.job_abc"), None);
        assert_eq!(parse_cursor("17.bad id"), None);
        assert_eq!(parse_cursor("nodot"), None);
        assert_eq!(two_decimals(2.4649), 2.46);
        assert_eq!(two_decimals(f64::NAN), 0.0);
    }
}
