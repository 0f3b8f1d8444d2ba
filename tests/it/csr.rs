//! The csr-consumer end to end: a generated buddy program delivered over
//! HTTP and natively gives exactly the metrics and journeys of an
//! independent model — with every event delivered twice and shuffled, and
//! across a restart — and what cannot be processed is dead-lettered.

use std::collections::BTreeMap;
use std::time::Duration;

use hookmesh_tests::{
    TestCsr, TestDb, TestGateway, TestNats, eventually, query_pool, secrets, stream_messages,
    test_config,
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Row as _;

use crate::buddy_program::{
    DAYS, Event, PROGRAM, Random, Route, TENANT, assert_same_metrics, date, deliver,
    expected_journeys, expected_metrics, generate, route_of,
};

async fn gateway_for(nats: &TestNats) -> TestGateway {
    let mut config = test_config();
    // The test sends a whole program as fast as it can and reads every journey.
    config.rate_limits.insert("buddy".to_owned(), 0);
    config.rate_limits.insert("api".to_owned(), 0);
    TestGateway::start(nats.url(), config).await
}

async fn processed(database_url: &str) -> i64 {
    let pool = query_pool(database_url).await;
    let count = sqlx::query("SELECT COUNT(*) AS n FROM csr_processed_events")
        .fetch_one(&pool)
        .await
        .map(|row| row.try_get::<i64, _>("n").unwrap())
        .unwrap_or(0);
    pool.close().await;
    count
}

async fn wait_processed(database_url: &str, expected: usize) {
    eventually(Duration::from_secs(120), "every event applied", || async {
        (processed(database_url).await == expected as i64).then_some(())
    })
    .await;
}

async fn metrics_of(gateway: &TestGateway, api_key: &str, program: &str) -> Value {
    let response = gateway
        .http
        .get(gateway.url(&format!(
            "/api/csr/metrics?program={program}&from={}&to={}",
            date(0),
            date(DAYS - 1)
        )))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn journey_of(
    gateway: &TestGateway,
    api_key: &str,
    participant: &str,
) -> (StatusCode, Value) {
    let response = gateway
        .http
        .get(gateway.url(&format!("/api/csr/participants/{participant}/journey")))
        .bearer_auth(api_key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// Compares everything the read API reports with the model.
async fn assert_matches_model(gateway: &TestGateway, events: &[Event]) {
    let report = metrics_of(gateway, secrets::API_KEY_ACME, PROGRAM).await;
    assert_eq!(report["tenant_id"], TENANT);
    assert_same_metrics(
        report["days"].as_array().unwrap(),
        &expected_metrics(events, PROGRAM),
    );
    let expected = expected_journeys(events);
    let mut reported = BTreeMap::new();
    for (_, participant) in expected.keys() {
        let (status, journey) = journey_of(gateway, secrets::API_KEY_ACME, participant).await;
        assert_eq!(status, StatusCode::OK, "{participant}");
        for program in journey["programs"].as_array().unwrap() {
            reported.insert(
                (
                    program["program_id"].as_str().unwrap().to_owned(),
                    participant.clone(),
                ),
                program["stage"].as_str().unwrap().to_owned(),
            );
        }
    }
    let expected: BTreeMap<_, _> = expected
        .into_iter()
        .map(|(key, stage)| (key, stage.to_owned()))
        .collect();
    assert_eq!(reported, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_program_yields_exactly_the_independently_computed_metrics_and_journeys() {
    let events = generate(7, TENANT, PROGRAM, 120);
    assert!(events.len() > 500, "a program of hundreds of participants");
    for db in TestDb::every_backend().await {
        let nats = TestNats::start().await;
        let gateway = gateway_for(&nats).await;
        let csr = TestCsr::start(nats.url(), &db.url).await;
        let client = nats.client().await;
        for (index, event) in events.iter().enumerate() {
            deliver(&gateway, &client, event, route_of(index), 0).await;
        }
        wait_processed(&db.url, events.len()).await;
        assert_matches_model(&gateway, &events).await;

        // Another tenant sees none of it.
        let other = metrics_of(&gateway, secrets::API_KEY_GLOBEX, PROGRAM).await;
        assert!(
            other["days"]
                .as_array()
                .unwrap()
                .iter()
                .all(|day| day["enrolled"] == 0 && day["checkins"] == 0),
            "{}",
            db.backend()
        );
        let (status, _) = journey_of(&gateway, secrets::API_KEY_GLOBEX, "n-001").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Every journey move was published once.
        let js = nats.jetstream().await;
        let transitions = eventually(
            Duration::from_secs(30),
            "journey transitions published",
            || async {
                let published = stream_messages(&js, "CSR").await;
                let pool = query_pool(&db.url).await;
                let recorded: i64 =
                    sqlx::query("SELECT COUNT(*) AS n FROM csr_journey_transitions")
                        .fetch_one(&pool)
                        .await
                        .unwrap()
                        .try_get("n")
                        .unwrap();
                (published.len() as i64 == recorded && recorded > 0).then_some(published)
            },
        )
        .await;
        assert!(
            transitions
                .iter()
                .all(|m| m.subject.starts_with("csr.journey."))
        );
        csr.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_twice_and_shuffled_gives_the_same_numbers() {
    let events = generate(11, TENANT, PROGRAM, 100);
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let gateway = gateway_for(&nats).await;
    let csr = TestCsr::start(nats.url(), &db.url).await;
    let client = nats.client().await;
    let mut deliveries: Vec<(usize, u32)> = (0..events.len())
        .flat_map(|index| [(index, 0), (index, 1)])
        .collect();
    Random::new(99).shuffle(&mut deliveries);
    for (position, (index, copy)) in deliveries.iter().enumerate() {
        deliver(
            &gateway,
            &client,
            &events[*index],
            route_of(position),
            *copy,
        )
        .await;
    }
    wait_processed(&db.url, events.len()).await;
    let js = nats.jetstream().await;
    let stored = stream_messages(&js, "BUDDY").await.len();
    assert_eq!(
        stored,
        events.len() * 2,
        "every copy is a distinct delivery"
    );
    // Compare only once every copy, the second ones included, is settled.
    hookmesh_tests::drained(&js, "BUDDY", "csr-consumer").await;
    assert_matches_model(&gateway, &events).await;
    csr.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_mid_stream_loses_nothing_and_counts_nothing_twice() {
    let events = generate(23, TENANT, PROGRAM, 100);
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let gateway = gateway_for(&nats).await;
    let client = nats.client().await;
    for event in &events {
        deliver(&gateway, &client, event, Route::Native, 0).await;
    }
    // One event a batch, so that the stop falls mid-stream: a whole batch
    // of the backlog is applied faster than a poll sees a third of it.
    let first = TestCsr::start_batching(nats.url(), &db.url, 1).await;
    eventually(
        Duration::from_secs(60),
        "a third of the events applied",
        || async { (processed(&db.url).await >= events.len() as i64 / 3).then_some(()) },
    )
    .await;
    first.stop().await;
    let part = processed(&db.url).await;
    let second = TestCsr::start(nats.url(), &db.url).await;
    wait_processed(&db.url, events.len()).await;
    assert!(
        part > 0 && part < events.len() as i64,
        "stopped mid-stream: {part} of {} applied before the stop",
        events.len()
    );
    assert_matches_model(&gateway, &events).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_native_event_is_dead_lettered_with_its_reason_and_the_rest_go_on() {
    let events = generate(31, TENANT, PROGRAM, 10);
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let gateway = gateway_for(&nats).await;
    let csr = TestCsr::start(nats.url(), &db.url).await;
    let client = nats.client().await;
    let js = nats.jetstream().await;
    let (before, after) = events.split_at(events.len() / 2);
    for event in before {
        deliver(&gateway, &client, event, Route::Native, 0).await;
    }
    // Fails its schema (a rating of 9), from a native publisher.
    let mut bad: Value = serde_json::from_slice(&before[0].envelope()).unwrap();
    bad["type"] = "buddy.feedback.submitted".into();
    bad["dataschema"] = "urn:hookmesh:schema:buddy.feedback.submitted:v1".into();
    bad["data"] = serde_json::json!({"tenant_id": TENANT, "program_id": PROGRAM,
        "feedback_id": "f-bad", "participant_id": "n-000", "rating": 9});
    let publish = |subject: &'static str, body: Vec<u8>, id: &'static str| {
        let js = js.clone();
        async move {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(body.into())
                .message_id(id);
            js.send_publish(subject, message)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(
        "buddy.feedback.submitted",
        serde_json::to_vec(&bad).unwrap(),
        "bad-1",
    )
    .await;
    // Not even JSON, and an unknown schema version.
    publish("buddy.match.created", b"{oops".to_vec(), "bad-2").await;
    let mut future = serde_json::from_slice::<Value>(&before[0].envelope()).unwrap();
    future["dataschema"] = format!(
        "urn:hookmesh:schema:{}:v2",
        future["type"].as_str().unwrap()
    )
    .into();
    publish(
        "buddy.participant.enrolled",
        serde_json::to_vec(&future).unwrap(),
        "bad-3",
    )
    .await;
    for event in after {
        deliver(&gateway, &client, event, Route::Native, 0).await;
    }
    wait_processed(&db.url, events.len()).await;
    let letters = eventually(Duration::from_secs(30), "three dead letters", || async {
        let letters = stream_messages(&js, "DEAD_LETTERS").await;
        (letters.len() == 3).then_some(letters)
    })
    .await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.header("Hookmesh-Dlq-Error").unwrap())
        .collect();
    assert!(
        reasons[0].contains("data.rating") && reasons[0].contains("at most 5"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("not a valid CloudEvents envelope"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("schema version 2"), "{reasons:?}");
    assert_eq!(letters[0].subject, "dlq.buddy.feedback.submitted");
    assert_eq!(letters[0].header("Hookmesh-Dlq-Stream"), Some("BUDDY"));
    assert_eq!(
        letters[0].header("Hookmesh-Dlq-Subject"),
        Some("buddy.feedback.submitted")
    );
    assert_eq!(
        letters[0].header("Hookmesh-Dlq-Consumer"),
        Some("csr-consumer")
    );
    assert_eq!(letters[0].header("Hookmesh-Dlq-Msg-Id"), Some("bad-1"));
    assert_eq!(letters[0].header("Hookmesh-Dlq-Deliveries"), Some("1"));
    assert!(
        letters[0]
            .header("Hookmesh-Dlq-Sequence")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    csr.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_consume_loop_cannot_run_and_returns_with_it() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let csr = TestCsr::start(nats.url(), &db.url).await;
    let checks = csr.service().readiness();
    let ready = || hookmesh_runtime::ops::readiness_response(&checks).status();
    assert_eq!(ready(), StatusCode::OK);

    // A BUDDY stream the consumer's definition cannot be applied to (memory
    // storage cannot be changed in place): the loop fails at every restart.
    let js = nats.jetstream().await;
    js.delete_stream("BUDDY").await.unwrap();
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BUDDY".to_owned(),
        subjects: vec!["buddy.>".to_owned()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the csr-consumer unready",
        || async { (ready() == StatusCode::SERVICE_UNAVAILABLE).then_some(()) },
    )
    .await;
    let answer = hookmesh_runtime::ops::readiness_response(&checks);
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["checks"]["consumers"], "0 of 1 consume loops running");

    js.delete_stream("BUDDY").await.unwrap();
    eventually(
        Duration::from_secs(60),
        "the csr-consumer ready again",
        || async { (ready() == StatusCode::OK).then_some(()) },
    )
    .await;
    csr.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_lag_runs_from_receipt_not_from_the_events_own_time() {
    let db = TestDb::sqlite();
    let nats = TestNats::start().await;
    let gateway = gateway_for(&nats).await;
    let csr = TestCsr::start(nats.url(), &db.url).await;
    // The README's example: an event dated 2025-11-14, received now.
    let body = serde_json::json!({
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "type": "buddy.match.created",
        "timestamp": "2025-11-14T10:30:00Z",
        "data": {"tenant_id": TENANT, "program_id": PROGRAM, "match_id": "m-77",
                 "buddy_id": "p-7", "newcomer_id": "p-1042"}
    });
    let response =
        crate::deliveries::buddy(&gateway, "wh-lag", &serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_processed(&db.url, 1).await;
    eventually(Duration::from_secs(10), "the lag observed", || async {
        (csr.metric("csr_event_processing_lag_seconds_count") == 1.0).then_some(())
    })
    .await;
    let lag = csr.metric("csr_event_processing_lag_seconds_sum");
    assert!(lag < 30.0, "receipt to commit took {lag} s");
    let age = csr.metric("csr_event_age_seconds_sum");
    assert!(
        age > 30.0 * 86_400.0,
        "the event's own age is kept apart: {age} s"
    );
    csr.stop().await;
}
