//! The batch-processor's delivery family end to end (seed 004's lists, for
//! real): deduplication is exact over a thousand-odd events with
//! duplicates, across providers, event types and concurrent consumers;
//! counters equal an independent model after duplicates, reordering and a
//! shutdown mid-batch; KV down fails open; a database outage loses nothing;
//! a failing enrichment is skipped; a poison message is dead-lettered and
//! replay brings dead letters back.

use std::collections::BTreeMap;
use std::time::Duration;

use hookmesh_batch_processor::BatchSettings;
use hookmesh_runtime::dead_letter::{self, DeadLetter};
use hookmesh_tests::{
    TestBatch, TestClient as _, TestDb, TestGateway, TestNats, batch_settings, drained, eventually,
    query_pool, secrets, stream_messages, test_config,
};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::buddy_program::Random;
use crate::delivery_program::{
    Program, Sent, envelope, expected_campaigns, expected_statuses, generate, post_to_gateway,
    publish_natively, register, registration_body, stored_campaigns,
};

async fn count(database_url: &str, sql: &'static str) -> i64 {
    let pool = query_pool(database_url).await;
    let count = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .map(|row| row.try_get::<i64, _>(0).unwrap())
        .unwrap_or(-1);
    pool.close().await;
    count
}

async fn logged(database_url: &str) -> i64 {
    count(database_url, "SELECT COUNT(*) FROM delivery_events").await
}

async fn wait_logged(database_url: &str, expected: usize) {
    eventually(
        Duration::from_secs(120),
        "every distinct event logged",
        || async { (logged(database_url).await == expected as i64).then_some(()) },
    )
    .await;
}

/// Events each processor has settled as applied, unmatched or duplicate.
fn settled(processors: &[&TestBatch]) -> f64 {
    processors
        .iter()
        .map(|p| {
            ["applied", "unmatched", "duplicate"]
                .iter()
                .map(|status| {
                    p.metric(&format!(
                        "webhooks_processed_total{{family=\"delivery\",status=\"{status}\"}}"
                    ))
                })
                .sum::<f64>()
        })
        .sum()
}

fn duplicates(processors: &[&TestBatch]) -> f64 {
    processors
        .iter()
        .flat_map(|p| {
            ["memory", "kv", "database"].map(|layer| {
                p.metric(&format!(
                    "webhook_duplicates_total{{family=\"delivery\",layer=\"{layer}\"}}"
                ))
            })
        })
        .sum()
}

async fn stored_statuses(database_url: &str) -> BTreeMap<(String, String), String> {
    let pool = query_pool(database_url).await;
    let rows = sqlx::query("SELECT provider, message_id, status FROM delivery_recipients")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|row| {
            (
                (row.get("provider"), row.get("message_id")),
                row.get("status"),
            )
        })
        .collect()
}

async fn assert_matches_model(processor: &TestBatch, database_url: &str, program: &Program) {
    let stored = stored_campaigns(processor.service().delivery_store(), program).await;
    assert_eq!(stored, expected_campaigns(program), "campaign counters");
    for campaign in stored.values() {
        for count in campaign.counts {
            assert!(
                count <= campaign.size,
                "a counter never exceeds the campaign"
            );
        }
    }
    let expected: BTreeMap<(String, String), String> = expected_statuses(program)
        .into_iter()
        .map(|((provider, message), status)| ((provider.to_owned(), message), status.to_owned()))
        .collect();
    assert_eq!(
        stored_statuses(database_url).await,
        expected,
        "recipient statuses"
    );
}

/// A program of seed `seed` registered, published and applied by a
/// processor with `settings`, which is then stopped: a later one starts
/// with nothing in memory.
async fn applied_by_a_stopped_processor(
    nats: &TestNats,
    db: &TestDb,
    settings: BatchSettings,
    seed: u64,
) -> Program {
    let processor = TestBatch::start(nats.url(), settings).await;
    let program = generate(seed, 2, 100);
    register(processor.service().delivery_store(), &program).await;
    publish_natively(&nats.jetstream().await, &program.events, "a").await;
    wait_logged(&db.url, program.events.len()).await;
    processor.stop().await;
    program
}

/// Waits until `program`'s events, sent a second time, are settled, and
/// checks that the unique constraint recognised every one.
async fn database_caught_every_duplicate(processor: &TestBatch, program: &Program) {
    eventually(
        Duration::from_secs(60),
        "the duplicates settled",
        || async { (settled(&[processor]) == program.events.len() as f64).then_some(()) },
    )
    .await;
    assert_eq!(
        processor.metric("webhook_duplicates_total{family=\"delivery\",layer=\"database\"}"),
        program.events.len() as f64,
        "the unique constraint caught every duplicate"
    );
}

fn shuffled(program: &Program, seed: u64) -> Vec<Sent> {
    let mut events = program.events.clone();
    Random::new(seed).shuffle(&mut events);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_is_exact_across_providers_event_types_and_concurrent_consumers() {
    for db in TestDb::every_backend().await {
        let nats = TestNats::start().await;
        let gateway = TestGateway::start(nats.url(), test_config()).await;
        let first = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
        let second = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
        let program = generate(7, 4, 150);
        register(first.service().delivery_store(), &program).await;
        let js = nats.jetstream().await;

        // Every event twice natively, and every third one a third time
        // through the gateway: each copy under its own message id.
        publish_natively(&js, &shuffled(&program, 1), "a").await;
        publish_natively(&js, &shuffled(&program, 2), "b").await;
        let thirds: Vec<Sent> = program.events.iter().step_by(3).cloned().collect();
        post_to_gateway(&gateway, &thirds, "c").await;
        let published = 2 * program.events.len() + thirds.len();
        assert!(
            published > 2000,
            "a thousand-odd events, {published} deliveries"
        );

        wait_logged(&db.url, program.events.len()).await;
        eventually(
            Duration::from_secs(60),
            "every delivery settled",
            || async { (settled(&[&first, &second]) == published as f64).then_some(()) },
        )
        .await;
        assert_eq!(
            duplicates(&[&first, &second]),
            (published - program.events.len()) as f64,
            "{}: every duplicate, and only duplicates, caught",
            db.backend()
        );
        assert_matches_model(&first, &db.url, &program).await;
        let unmatched = count(
            &db.url,
            "SELECT COUNT(*) FROM delivery_events WHERE matched = FALSE",
        )
        .await;
        assert_eq!(
            unmatched, 12,
            "events of unregistered messages are logged as unmatched"
        );
        first.stop().await;
        second.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_equal_the_model_after_duplicates_reordering_and_a_shutdown_mid_batch() {
    for db in TestDb::every_backend().await {
        let nats = TestNats::start().await;
        let js = nats.jetstream().await;
        let settings = BatchSettings {
            batch_size: 40,
            ..batch_settings(&db.url)
        };
        let processor = TestBatch::start(nats.url(), settings.clone()).await;
        let program = generate(11, 3, 200);
        register(processor.service().delivery_store(), &program).await;

        // Stopped mid-stream, then started again: nothing lost, nothing twice.
        publish_natively(&js, &shuffled(&program, 3), "a").await;
        eventually(
            Duration::from_secs(60),
            "part of the events applied",
            || async { (logged(&db.url).await > 40).then_some(()) },
        )
        .await;
        processor.stop().await;
        let at_stop = logged(&db.url).await;
        assert!(at_stop < program.events.len() as i64, "stopped mid-stream");
        let processor = TestBatch::start(nats.url(), settings).await;
        wait_logged(&db.url, program.events.len()).await;
        assert_matches_model(&processor, &db.url, &program).await;

        // Every event again, in another order: still the same numbers.
        publish_natively(&js, &shuffled(&program, 4), "b").await;
        drained(&js, "PROVIDERS", "batch-processor").await;
        assert_matches_model(&processor, &db.url, &program).await;

        // Each completed campaign is announced once, with its final counts.
        let expected = expected_campaigns(&program);
        let completed: Vec<&String> = expected
            .iter()
            .filter(|(_, c)| c.completed)
            .map(|(id, _)| id)
            .collect();
        assert!(!completed.is_empty(), "the program completes campaigns");
        let announced = eventually(Duration::from_secs(30), "completions published", || async {
            let messages = stream_messages(&js, "DELIVERY").await;
            (messages.len() >= completed.len()).then_some(messages)
        })
        .await;
        assert_eq!(
            announced.len(),
            completed.len(),
            "one event per completed campaign"
        );
        for message in &announced {
            assert_eq!(message.subject, "delivery.campaign.completed");
            let data = &message.envelope["data"];
            let campaign = data["campaign_id"].as_str().unwrap();
            let model = &expected[campaign];
            assert!(model.completed);
            assert_eq!(data["size"], model.size);
            assert_eq!(data["counts"]["delivered"], model.counts[0]);
            assert_eq!(data["counts"]["bounced"], model.counts[3]);
            assert_eq!(data["counts"]["failed"], model.counts[5]);
        }
        processor.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kv_down_dedup_fails_open_and_the_database_keeps_counts_exact() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let program = applied_by_a_stopped_processor(&nats, &db, batch_settings(&db.url), 21).await;

    // A fresh process (nothing in memory), then the bucket disappears.
    let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
    js.delete_stream("KV_webhook_dedup").await.unwrap();
    publish_natively(&js, &shuffled(&program, 5), "b").await;
    database_caught_every_duplicate(&processor, &program).await;
    assert!(processor.metric("webhook_dedup_fail_open_total{family=\"delivery\"}") > 0.0);
    assert_eq!(logged(&db.url).await, program.events.len() as i64);
    assert_matches_model(&processor, &db.url, &program).await;
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_kv_layer_memory_and_the_database_keep_counts_exact() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let settings = BatchSettings {
        dedup_kv: false,
        ..batch_settings(&db.url)
    };
    let program = applied_by_a_stopped_processor(&nats, &db, settings.clone(), 23).await;

    // A fresh process: nothing in memory, nothing in the bucket.
    let processor = TestBatch::start(nats.url(), settings).await;
    publish_natively(&js, &shuffled(&program, 6), "b").await;
    database_caught_every_duplicate(&processor, &program).await;
    assert_eq!(
        processor.metric("webhook_dedup_fail_open_total{family=\"delivery\"}"),
        0.0,
        "a layer switched off is not a failure"
    );
    let keys_written = match js.get_stream("KV_webhook_dedup").await {
        Ok(bucket) => bucket.cached_info().state.messages,
        Err(_) => 0,
    };
    assert_eq!(keys_written, 0, "no key was written to the bucket");
    assert_eq!(logged(&db.url).await, program.events.len() as i64);
    assert_matches_model(&processor, &db.url, &program).await;
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_naks_retries_and_loses_nothing() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
    let program = generate(31, 2, 80);
    register(processor.service().delivery_store(), &program).await;

    let admin = query_pool(&db.admin_url()).await;
    let name = db.name();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&admin)
        .await
        .unwrap();
    publish_natively(&js, &program.events, "a").await;
    eventually(
        Duration::from_secs(60),
        "batches refused and naked",
        || async {
            (processor.metric("webhooks_processed_total{family=\"delivery\",status=\"retry\"}")
                > 0.0)
                .then_some(())
        },
    )
    .await;

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&admin)
    .await
    .unwrap();
    wait_logged(&db.url, program.events.len()).await;
    assert_matches_model(&processor, &db.url, &program).await;
    assert!(
        stream_messages(&js, "DEAD_LETTERS").await.is_empty(),
        "nothing gave up during a short outage"
    );
    processor.stop().await;
    admin.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_enrichment_is_skipped_and_processing_continues() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let mut settings = batch_settings(&db.url);
    // A lookup replica that does not answer.
    settings.lookup_database_url = Some("postgres://nobody@127.0.0.1:9/none".to_owned());
    settings.enrich.timeout = Duration::from_millis(200);
    let processor = TestBatch::start(nats.url(), settings).await;
    let program = generate(41, 2, 60);
    register(processor.service().delivery_store(), &program).await;
    publish_natively(&js, &program.events, "a").await;
    wait_logged(&db.url, program.events.len()).await;

    assert_matches_model(&processor, &db.url, &program).await;
    let fallbacks = processor.metric("webhook_enrichment_fallbacks_total{reason=\"timeout\"}")
        + processor.metric("webhook_enrichment_fallbacks_total{reason=\"error\"}");
    assert!(fallbacks > 0.0, "the skipped lookups are counted");
    let enriched = count(
        &db.url,
        "SELECT COUNT(*) FROM delivery_events WHERE tenant_id IS NOT NULL",
    )
    .await;
    assert_eq!(enriched, 0, "no event carries enrichment it could not get");
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_attaches_the_recipient_to_the_events_log() {
    // Joined by the events log's insert (no lookup database), then looked
    // up, cache first, on a lookup database (here the same one).
    for lookup_database in [false, true] {
        let db = TestDb::sqlite();
        let nats = TestNats::start().await;
        let js = nats.jetstream().await;
        let mut settings = batch_settings(&db.url);
        if lookup_database {
            settings.lookup_database_url = Some(db.url.clone());
        }
        let processor = TestBatch::start(nats.url(), settings).await;
        let program = generate(43, 2, 30);
        register(processor.service().delivery_store(), &program).await;
        publish_natively(&js, &program.events, "a").await;
        wait_logged(&db.url, program.events.len()).await;
        let pool = query_pool(&db.url).await;
        let row = sqlx::query(
            "SELECT tenant_id, campaign_id, recipient FROM delivery_events \
             WHERE provider = 'ses' AND message_id = 'msg-0-0000' AND matched = TRUE LIMIT 1",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        let column = |name: &str| row.get::<Option<String>, _>(name);
        assert_eq!(
            column("tenant_id").as_deref(),
            Some("acme"),
            "{lookup_database}"
        );
        assert_eq!(column("campaign_id").as_deref(), Some("campaign-1"));
        assert_eq!(
            column("recipient").as_deref(),
            Some("msg-0-0000@example.com")
        );
        let unenriched = count(
            &db.url,
            "SELECT COUNT(*) FROM delivery_events WHERE matched = TRUE AND tenant_id IS NULL",
        )
        .await;
        assert_eq!(
            unenriched, 0,
            "every matched event carries its recipient ({lookup_database})"
        );
        let found = processor.metric("webhook_enrichment_lookups_total{result=\"found\"}")
            + processor.metric("webhook_enrichment_lookups_total{result=\"cached\"}");
        assert!(found > 0.0, "the answers are counted ({lookup_database})");
        pool.close().await;
        processor.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_with_its_reason_and_replay_brings_letters_back() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
    let program = generate(51, 2, 20);
    register(processor.service().delivery_store(), &program).await;

    // A schema version the consumer does not know, between good events.
    let (before, after) = program.events.split_at(program.events.len() / 2);
    publish_natively(&js, before, "a").await;
    let mut poison: serde_json::Value =
        serde_json::from_slice(&envelope(&before[0], "poison-1")).unwrap();
    poison["dataschema"] = "urn:hookmesh:schema:delivery.event:v9".into();
    let subject = format!("providers.{}.{}", before[0].provider, before[0].status);
    js.publish(subject.clone(), serde_json::to_vec(&poison).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_natively(&js, after, "b").await;
    wait_logged(&db.url, program.events.len()).await;

    let letters = eventually(Duration::from_secs(30), "the dead letter", || async {
        let letters = dead_letter::list(&js, None, 10).await.ok()?;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.subject, subject);
    assert_eq!(letter.stream, "PROVIDERS");
    assert_eq!(letter.consumer, "batch-processor");
    assert!(
        letter
            .error
            .contains("schema version 9 of delivery.event is not supported"),
        "{}",
        letter.error
    );

    // Replay sends it back to its subject; still poison, it comes back to
    // the dead letters, and the replayed copy left them.
    dead_letter::replay(&js, letter, false).await.unwrap();
    let again = eventually(
        Duration::from_secs(30),
        "the poison dead-lettered again",
        || async {
            let letters = dead_letter::list(&js, None, 10).await.ok()?;
            (letters.len() == 1 && letters[0].sequence != letter.sequence).then_some(letters)
        },
    )
    .await;
    assert_eq!(again[0].payload, letter.payload);

    // A good event that was dead-lettered (say, after a long outage) is
    // applied once replayed.
    let statuses = expected_statuses(&program);
    let (_, message_id) = statuses
        .iter()
        .find(|((provider, _), status)| {
            *provider == "sendgrid" && ["sent", "delivered", "opened"].contains(status)
        })
        .map(|(key, _)| key.clone())
        .expect("a recipient that has not clicked");
    let late = Sent {
        provider: "sendgrid",
        status: "clicked",
        message_id,
        second: 99_999,
    };
    let late_subject = format!("providers.{}.{}", late.provider, late.status);
    dead_letter::publish(
        &js,
        &DeadLetter {
            stream: "PROVIDERS",
            consumer: "batch-processor",
            subject: &late_subject,
            sequence: 999_999,
            deliveries: 6,
            reason: "gave up after 6 deliveries: database: pool timed out",
            headers: None,
            payload: envelope(&late, "late-click").into(),
        },
    )
    .await
    .unwrap();
    let stored = dead_letter::list(&js, Some("providers.sendgrid.clicked"), 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "list filters by original subject");
    dead_letter::replay(&js, &stored[0], false).await.unwrap();
    let expected = program.events.len() + 1;
    wait_logged(&db.url, expected).await;
    assert_eq!(
        processor
            .service()
            .delivery_store()
            .recipient_status(late.provider, &late.message_id)
            .await
            .unwrap()
            .map(|s| s.to_string())
            .as_deref(),
        Some("clicked")
    );
    processor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_their_campaign_is_registered_count_once_it_is() {
    for db in TestDb::every_backend().await {
        let backend = db.backend();
        let nats = TestNats::start().await;
        let js = nats.jetstream().await;
        let gateway = TestGateway::start(nats.url(), test_config()).await;
        let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
        let program = generate(21, 2, 150);

        // The providers' events first: no recipient is registered yet.
        publish_natively(&js, &shuffled(&program, 5), "a").await;
        drained(&js, "PROVIDERS", "batch-processor").await;
        assert_eq!(
            processor.metric("webhooks_processed_total{family=\"delivery\",status=\"unmatched\"}"),
            program.events.len() as f64,
            "{backend}"
        );

        // Then the campaigns over HTTP: the first in two parts declaring its
        // size, the second whole, and twice.
        let gateway = &gateway;
        let register = |body: Value| async move {
            let response = gateway
                .post("/api/campaigns", &serde_json::to_vec(&body).unwrap())
                .bearer_auth(secrets::API_KEY_ACME)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        };
        let campaigns: Vec<&String> = program.campaigns.keys().collect();
        let whole = registration_body(&program, campaigns[0]);
        let recipients = whole["recipients"].as_array().unwrap();
        let (first, second) = recipients.split_at(recipients.len() / 2);
        for part in [first, second] {
            let body =
                json!({"campaign_id": campaigns[0], "size": recipients.len(), "recipients": part});
            let (status, answer) = register(body).await;
            assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{answer}");
            assert_eq!(answer["size"], recipients.len());
        }
        let (_, answer) = register(registration_body(&program, campaigns[1])).await;
        assert_eq!(answer["duplicate"], false);
        let (_, answer) = register(registration_body(&program, campaigns[1])).await;
        assert_eq!(answer["duplicate"], true);
        drained(&js, "DELIVERY", "batch-processor-campaigns").await;

        assert_matches_model(&processor, &db.url, &program).await;
        let registered: usize = program.campaigns.values().map(Vec::len).sum();
        assert_eq!(
            processor.metric("delivery_recipients_registered_total"),
            registered as f64
        );
        let expected = expected_campaigns(&program);
        let completions = eventually(Duration::from_secs(30), "completions published", || async {
            let completed: Vec<String> = stream_messages(&js, "DELIVERY")
                .await
                .into_iter()
                .filter(|m| m.subject == "delivery.campaign.completed")
                .map(|m| {
                    m.envelope["data"]["campaign_id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            let wanted = expected.values().filter(|c| c.completed).count();
            (completed.len() >= wanted).then_some(completed)
        })
        .await;
        let wanted: Vec<&String> = expected
            .iter()
            .filter(|(_, c)| c.completed)
            .map(|(id, _)| id)
            .collect();
        assert!(!wanted.is_empty(), "{backend}: a campaign completes");
        assert_eq!(
            completions.iter().collect::<Vec<_>>(),
            wanted,
            "{backend}: each completion once"
        );

        // A part that contradicts what is registered is dead-lettered, saying why.
        let wrong_size = json!({"campaign_id": campaigns[1], "size": 999, "recipients": [
            {"provider": "sendgrid", "message_id": "late-1", "address": "x@example.com"}]});
        let (status, _) = register(wrong_size).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED);
        let letter = eventually(Duration::from_secs(30), "the dead letter", || async {
            stream_messages(&js, "DEAD_LETTERS")
                .await
                .into_iter()
                .find(|m| m.subject == "dlq.delivery.campaign.registration")
        })
        .await;
        let reason = letter.header(dead_letter::ERROR).unwrap();
        assert!(reason.contains("this part declares 999"), "{reason}");

        // The gateway refuses what can never be registered, naming each field.
        let (status, answer) = register(json!({"campaign_id": "c", "recipients": [
            {"provider": "carrier-pigeon", "message_id": "m", "address": "a"},
            {"provider": "sendgrid", "message_id": "m"}]}))
        .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
        let fields: Vec<&str> = answer["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["recipients[1].address"]);
        let (status, answer) = register(json!({"campaign_id": "c", "recipients": [
            {"provider": "carrier-pigeon", "message_id": "m", "address": "a"}]}))
        .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
        assert_eq!(answer["fields"][0]["field"], "recipients[0].provider");
        processor.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_read_back_with_their_counters_completion_and_refused_registrations() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let gateway = TestGateway::start(nats.url(), test_config()).await;
    let processor = TestBatch::start(nats.url(), batch_settings(&db.url)).await;
    let gateway = &gateway;
    let get = |path: String, key: &'static str| async move {
        let answer = gateway.get(&path).bearer_auth(key).send().await.unwrap();
        (answer.status(), answer.json::<Value>().await.unwrap())
    };
    let register = |body: Value| async move {
        let answer = gateway
            .post("/api/campaigns", &serde_json::to_vec(&body).unwrap())
            .bearer_auth(secrets::API_KEY_ACME)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
    };
    let recipient =
        |id: &str| json!({"provider": "sendgrid", "message_id": id, "address": "a@example.com"});
    register(json!({"campaign_id": "c1", "recipients": [recipient("m-1"), recipient("m-2")]}))
        .await;
    register(json!({"campaign_id": "c3", "recipients": [recipient("m-3")]})).await;
    // m-1 belongs to c1 already: this registration can never succeed.
    register(json!({"campaign_id": "c2", "recipients": [recipient("m-1")]})).await;
    for id in ["m-1", "m-2"] {
        let body = serde_json::to_vec(&crate::deliveries::delivery_body("delivered", id)).unwrap();
        let answer = crate::deliveries::provider(gateway, "sendgrid", &format!("wh-{id}"), &body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
    }

    let c1 = eventually(Duration::from_secs(30), "c1 completed", || async {
        let (status, c1) = get("/api/campaigns/c1".to_owned(), secrets::API_KEY_ACME).await;
        (status == reqwest::StatusCode::OK && c1["completed_at"].is_string()).then_some(c1)
    })
    .await;
    assert_eq!(c1["size"], 2);
    assert_eq!(c1["registered"], 2);
    assert_eq!(c1["settled"], 2);
    assert_eq!(c1["counts"]["delivered"], 2);
    assert_eq!(c1["rejected_registrations"], json!([]));

    let c2 = eventually(Duration::from_secs(30), "c2's refusal", || async {
        let (status, c2) = get("/api/campaigns/c2".to_owned(), secrets::API_KEY_ACME).await;
        (status == reqwest::StatusCode::OK).then_some(c2)
    })
    .await;
    assert_eq!(c2["registered"], 0);
    let refused = &c2["rejected_registrations"][0];
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("another campaign"),
        "{c2}"
    );
    assert_eq!(refused["recipients"], 1);

    let (status, _) = get("/api/campaigns/c1".to_owned(), secrets::API_KEY_GLOBEX).await;
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "another tenant's campaign"
    );

    let (status, page) = get("/api/campaigns?limit=1".to_owned(), secrets::API_KEY_ACME).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let first = page["campaigns"][0]["campaign_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, page) = get(
        format!("/api/campaigns?limit=1&cursor={cursor}"),
        secrets::API_KEY_ACME,
    )
    .await;
    let second = page["campaigns"][0]["campaign_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut both = [first, second];
    both.sort();
    assert_eq!(both, ["c1", "c3"]);
    assert!(page["next_cursor"].is_null(), "{page}");
    processor.stop().await;
}
