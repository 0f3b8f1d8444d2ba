//! Buddy events as a family of the runtime's engine: how one is read and
//! identified, and how a batch of them is applied.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::buddy::BuddyEventData;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::Delivery;
use hookmesh_runtime::engine::{Applied, ApplyError, DedupKey, Family, Fresh};

use crate::facts::{self, EventFacts};
use crate::store::Store;
use crate::telemetry::CsrMetrics;

#[derive(Debug)]
pub struct CsrFamily {
    store: Store,
    metrics: CsrMetrics,
}

impl CsrFamily {
    pub fn new(store: Store, metrics: CsrMetrics) -> Self {
        Self { store, metrics }
    }
}

/// Reads a buddy event as strictly as the gateway reads the webhook: a
/// CloudEvents envelope whose data is a valid buddy event of its tenant.
pub fn parse_buddy(payload: &[u8]) -> Result<EventFacts, String> {
    let envelope = Envelope::parse(payload)
        .map_err(|errors| format!("not a valid CloudEvents envelope: {errors}"))?;
    let data = BuddyEventData::from_envelope(&envelope)
        .map_err(|errors| format!("not a valid {:?} event: {errors}", envelope.event_type))?;
    if envelope.tenantid != *data.tenant_id() {
        return Err(format!(
            "tenantid {:?} does not match data.tenant_id {:?}",
            envelope.tenantid.as_str(),
            data.tenant_id().as_str()
        ));
    }
    Ok(facts::facts(&envelope.id, envelope.time, &data))
}

impl Family for CsrFamily {
    type Event = EventFacts;

    const NAME: &'static str = "csr";

    fn parse(&self, delivery: &Delivery) -> Result<EventFacts, String> {
        parse_buddy(delivery.payload())
    }

    /// An event id is unique within its tenant (002's `X-Webhook-Id`).
    fn dedup_key(&self, facts: &EventFacts) -> DedupKey {
        DedupKey::new(facts.tenant_id.as_str(), &facts.event_id)
    }

    fn event_type(&self, facts: &EventFacts) -> &'static str {
        facts.event_type.as_str()
    }

    async fn apply(&self, events: &[Fresh<'_, EventFacts>]) -> Result<Vec<Applied>, ApplyError> {
        let now = Timestamp::now();
        let applied = self.store.apply(events, now).await?;
        for (fresh, answer) in events.iter().zip(&applied) {
            if *answer == Applied::New {
                let facts = &fresh.event;
                self.metrics.event_age(facts.occurred_at.seconds_until(now));
                tracing::debug!(
                    event_id = %facts.event_id,
                    event_type = %facts.event_type,
                    tenant = %facts.tenant_id,
                    correlation_id = %fresh.correlation_id(),
                    "Applied a buddy event."
                );
            }
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    //! The family over the engine, on a SQLite database of its own and no
    //! broker: twins, a poison message and journey events.

    use std::sync::Arc;

    use hookmesh_contracts::TenantId;
    use hookmesh_contracts::buddy::{BuddyEventData, MatchCreated};
    use hookmesh_runtime::engine::{BatchHandler, Deduplicator};
    use hookmesh_runtime::outbox::Outbox;
    use hookmesh_runtime::publish::MemorySink;
    use hookmesh_runtime::{Delivery, Handler, Outcome, db};
    use prometheus_client::registry::Registry;
    use sqlx::Row as _;

    use super::*;

    struct Fixture {
        handler: BatchHandler<CsrFamily>,
        pool: db::Pool,
        outbox: Outbox,
        _dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self._dir);
        }
    }

    async fn fixture(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("hookmesh-csr-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = db::sqlite_url(&dir.join("csr.db"));
        let pool = db::connect(&url).await.unwrap();
        db::migrate(&pool, &crate::MIGRATOR).await.unwrap();
        let outbox = Outbox::new(pool.clone(), db::Backend::Sqlite, "csr_outbox");
        let store = Store::new(pool.clone(), db::Backend::Sqlite, outbox.clone());
        let metrics = CsrMetrics::register(&mut Registry::default());
        let observer = Arc::new(metrics.clone());
        let dedup = Deduplicator::new(CsrFamily::NAME, None, observer.clone());
        Fixture {
            handler: BatchHandler::new(CsrFamily::new(store, metrics), dedup, observer),
            pool,
            outbox,
            _dir: dir,
        }
    }

    fn match_created(id: &str, tenant: &str, match_id: &str) -> Delivery {
        let data = BuddyEventData::MatchCreated(MatchCreated {
            tenant_id: TenantId::parse(tenant).unwrap(),
            program_id: "p".to_owned(),
            match_id: match_id.to_owned(),
            buddy_id: "buddy".to_owned(),
            newcomer_id: "newcomer".to_owned(),
        });
        let json = data.envelope_json(id, "/test", Timestamp::now());
        Delivery::detached("buddy.match.created", json).with_header("X-Correlation-Id", id)
    }

    async fn count(pool: &db::Pool, sql: &'static str) -> i64 {
        sqlx::query(sql).fetch_one(pool).await.unwrap().get(0)
    }

    #[tokio::test]
    async fn twins_in_one_batch_are_applied_once_and_the_journeys_move_once() {
        let f = fixture("twins").await;
        let mut batch = [
            match_created("e-1", "acme", "m-1"),
            match_created("e-1", "acme", "m-1"),
            match_created("e-2", "acme", "m-2"),
            // The same event id in another tenant is another event.
            match_created("e-1", "globex", "m-1"),
        ];
        assert_eq!(f.handler.handle(&mut batch).await, vec![Outcome::Done; 4]);
        assert_eq!(
            count(&f.pool, "SELECT COUNT(*) FROM csr_processed_events").await,
            3
        );
        assert_eq!(count(&f.pool, "SELECT COUNT(*) FROM csr_matches").await, 3);
        // buddy and newcomer reach `matched` once per tenant.
        assert_eq!(
            count(&f.pool, "SELECT COUNT(*) FROM csr_journey_transitions").await,
            4
        );
        let sink = MemorySink::default();
        f.outbox.publish_now(&sink).await;
        let subjects: Vec<String> = sink.messages().into_iter().map(|m| m.subject).collect();
        assert_eq!(subjects, vec!["csr.journey.matched"; 4]);

        // Delivered again later: nothing changes, nothing more to publish.
        let mut again = [match_created("e-1", "acme", "m-1").at(1, 2)];
        assert_eq!(f.handler.handle(&mut again).await, vec![Outcome::Done]);
        assert_eq!(
            count(&f.pool, "SELECT COUNT(*) FROM csr_processed_events").await,
            3
        );
        f.outbox.publish_now(&sink).await;
        assert_eq!(sink.messages().len(), 4);
    }

    #[tokio::test]
    async fn a_poison_message_is_dead_lettered_and_the_rest_of_its_batch_applied() {
        let f = fixture("poison").await;
        let mut wrong_tenant = match_created("e-9", "acme", "m-9");
        let payload = String::from_utf8(wrong_tenant.payload().to_vec()).unwrap();
        wrong_tenant = Delivery::detached(
            "buddy.match.created",
            payload.replace("\"tenantid\":\"acme\"", "\"tenantid\":\"globex\""),
        );
        let mut batch = [
            match_created("e-1", "acme", "m-1"),
            Delivery::detached("buddy.match.created", &b"{\"not\": \"an envelope\"}"[..]),
            wrong_tenant,
            match_created("e-2", "acme", "m-2"),
        ];
        let outcomes = f.handler.handle(&mut batch).await;
        assert_eq!(outcomes[0], Outcome::Done);
        assert!(
            matches!(&outcomes[1], Outcome::DeadLetter { reason } if reason.contains("CloudEvents")),
            "{:?}",
            outcomes[1]
        );
        assert!(
            matches!(&outcomes[2], Outcome::DeadLetter { reason } if reason.contains("does not match")),
            "{:?}",
            outcomes[2]
        );
        assert_eq!(outcomes[3], Outcome::Done);
        assert_eq!(
            count(&f.pool, "SELECT COUNT(*) FROM csr_processed_events").await,
            2
        );
    }
}
