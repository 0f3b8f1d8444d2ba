//! The transactional outbox: an event decided inside a database transaction
//! (a campaign completed, a failure detected) is written to an outbox table
//! in that same transaction, and published to JetStream after the commit.
//!
//! So no event is lost when the process stops between the commit and the
//! publish, and none is published for a transaction that rolled back.
//! Publishing again after a crash is harmless: each message carries its
//! `Nats-Msg-Id`, so JetStream keeps one copy, and replicas racing on the
//! same rows do the same.
//!
//! A service's outbox table has the columns `msg_id` (primary key),
//! `subject`, `payload`, `traceparent`, `correlation_id` (those of the
//! message that caused it), `created_at` and `published_at`.

use std::sync::Arc;
use std::time::Duration;

use hookmesh_contracts::Timestamp;
use sqlx::{Any, AssertSqlSafe, Row as _, Transaction};
use tokio::sync::{Notify, watch};

use crate::db::{Backend, Pool, rows_per_statement};
use crate::publish::EventSink;
pub use crate::publish::OutboxMessage;

/// Rows published per round.
const ROUND: i64 = 500;
/// How often the table is looked at without a nudge.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// A service's outbox table and the task that drains it.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: Pool,
    backend: Backend,
    table: &'static str,
    nudge: Arc<Notify>,
}

impl Outbox {
    /// `table` is a fixed name from the service's migrations.
    pub fn new(pool: Pool, backend: Backend, table: &'static str) -> Self {
        Self {
            pool,
            backend,
            table,
            nudge: Arc::new(Notify::new()),
        }
    }

    /// Writes `messages` inside `tx`. A message id already in the table is
    /// left as it was.
    pub async fn write(
        &self,
        tx: &mut Transaction<'static, Any>,
        messages: &[OutboxMessage],
        now_millis: i64,
    ) -> Result<(), sqlx::Error> {
        for chunk in messages.chunks(rows_per_statement(6)) {
            let sql = format!(
                "INSERT INTO {} (msg_id, subject, payload, traceparent, correlation_id, created_at) \
                 VALUES {} ON CONFLICT (msg_id) DO NOTHING",
                self.table,
                self.backend.values(chunk.len(), 6, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for message in chunk {
                query = query
                    .bind(&message.msg_id)
                    .bind(&message.subject)
                    .bind(&message.payload)
                    .bind(&message.trace.traceparent)
                    .bind(&message.trace.correlation_id)
                    .bind(now_millis);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Asks the publishing task to look now (call after a commit that wrote
    /// messages).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    async fn unpublished(&self) -> Result<Vec<OutboxMessage>, sqlx::Error> {
        let sql = format!(
            "SELECT msg_id, subject, payload, traceparent, correlation_id FROM {} \
             WHERE published_at IS NULL \
             ORDER BY created_at LIMIT $1",
            self.table
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(ROUND)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| {
                Ok(OutboxMessage {
                    msg_id: row.try_get("msg_id")?,
                    subject: row.try_get("subject")?,
                    payload: row.try_get("payload")?,
                    trace: crate::publish::TraceHeaders {
                        traceparent: row.try_get("traceparent")?,
                        correlation_id: row.try_get("correlation_id")?,
                    },
                })
            })
            .collect()
    }

    async fn mark_published(&self, ids: &[&str], now_millis: i64) -> Result<(), sqlx::Error> {
        for chunk in ids.chunks(rows_per_statement(1) - 1) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "UPDATE {} SET published_at = $1 WHERE msg_id IN ({})",
                self.table,
                placeholders.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql))
                .persistent(false)
                .bind(now_millis);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Publishes one round; returns how many were published.
    async fn publish_round(
        &self,
        sink: &dyn EventSink,
        on_published: &(dyn Fn(&OutboxMessage) + Send + Sync),
    ) -> Result<usize, String> {
        let pending = self.unpublished().await.map_err(|e| e.to_string())?;
        let results = sink.publish(&pending).await;
        let mut published = Vec::with_capacity(pending.len());
        for (message, result) in pending.iter().zip(results) {
            match result {
                Ok(()) => published.push(message),
                Err(error) => {
                    tracing::warn!(%error, subject = %message.subject, "An outbox message was not published yet; it will be published again.");
                }
            }
        }
        let ids: Vec<&str> = published.iter().map(|m| m.msg_id.as_str()).collect();
        self.mark_published(&ids, Timestamp::now().unix_millis())
            .await
            .map_err(|e| format!("marking published: {e}"))?;
        for message in &published {
            on_published(message);
        }
        Ok(published.len())
    }

    /// Publishes what is waiting now, in this task, when an event must be in
    /// the stream before the caller goes on; the draining task would get to
    /// it a moment later. Failures are left to that task.
    pub async fn publish_now(&self, sink: &dyn EventSink) {
        if let Err(error) = self.publish_round(sink, &|_| {}).await {
            tracing::debug!(%error, table = self.table, "The outbox could not be published now; it will be.");
        }
    }

    /// Drains the table whenever nudged, and every few seconds, until
    /// `shutdown`; `on_published` sees each message once JetStream has it.
    pub async fn run(
        self,
        sink: Arc<dyn EventSink>,
        on_published: impl Fn(&OutboxMessage) + Send + Sync + 'static,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            loop {
                match self.publish_round(sink.as_ref(), &on_published).await {
                    Ok(count) if count as i64 >= ROUND => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, table = self.table, "Cannot drain the outbox; retrying.");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
                () = self.nudge.notified() => {}
                () = tokio::time::sleep(IDLE_CHECK) => {}
            }
        }
    }
}
