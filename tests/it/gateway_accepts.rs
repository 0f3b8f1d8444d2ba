//! Each route: a valid delivery → 202 and exactly one envelope on the right
//! subject with the right message id, trace and correlation id; the same
//! delivery again → 202 marked duplicate, and one message stored. These
//! run on a gateway in memory, without a broker; the last test runs one
//! route on JetStream, for what only a real broker shows (the stored
//! headers, JetStream's own duplicate answer).

use async_nats::jetstream;
use hookmesh_contracts::sweep_jobs::{JobId, RecordedJob};
use hookmesh_tests::{
    Call, MemoryGateway, StoredMessage, TestClient as _, stream_messages, test_config,
    total_messages,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deliveries::{self, buddy_body, callback_body, delivery_body, trigger_body};
use crate::{fixture, mesh};

fn memory_mesh() -> MemoryGateway {
    MemoryGateway::new(test_config())
}

/// The one event stored, checked as `only_message` checks a stream's;
/// its envelope.
fn only_event(
    gateway: &MemoryGateway,
    subject: &str,
    message_id: &str,
    correlation_id: &str,
) -> Value {
    let stored = gateway.stored();
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let event = &stored[0];
    assert_eq!(event.subject, subject);
    assert_eq!(event.message_id, message_id);
    assert_eq!(event.correlation_id, correlation_id);
    assert!(
        event.traceparent.starts_with(&format!("00-{TRACE_ID}-"))
            && !event.traceparent.contains("00f067aa0ba902b7"),
        "the trace continues with the gateway's own span: {}",
        event.traceparent
    );
    let parsed = hookmesh_contracts::Envelope::parse(&event.payload)
        .expect("stored envelopes pass the consumers' strict reading");
    assert!(parsed.dataschema.starts_with("urn:hookmesh:schema:"));
    let envelope: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["datacontenttype"], "application/json");
    envelope
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Sends `request` with a known trace and correlation id, expecting 202.
async fn accept(request: Call, correlation_id: &str) -> Value {
    let response = request
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header("X-Correlation-Id", correlation_id)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["x-correlation-id"].to_str().unwrap(),
        correlation_id
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body
}

/// The one message of `stream`, checked against what every publish carries.
async fn only_message(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    message_id: &str,
    correlation_id: &str,
) -> StoredMessage {
    let messages = stream_messages(js, stream).await;
    assert_eq!(messages.len(), 1, "{stream} holds {messages:#?}");
    let message = messages.into_iter().next().unwrap();
    assert_eq!(message.subject, subject);
    assert_eq!(message.header("Nats-Msg-Id"), Some(message_id));
    assert_eq!(message.header("X-Correlation-Id"), Some(correlation_id));
    assert_eq!(
        message.header("Content-Type"),
        Some("application/cloudevents+json")
    );
    let traceparent = message.header("traceparent").unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{TRACE_ID}-"))
            && !traceparent.contains("00f067aa0ba902b7"),
        "the trace continues with the gateway's own span: {traceparent}"
    );
    let envelope = &message.envelope;
    assert_eq!(envelope["specversion"], "1.0");
    assert_eq!(envelope["datacontenttype"], "application/json");
    let parsed = hookmesh_contracts::Envelope::parse(&serde_json::to_vec(envelope).unwrap())
        .expect("stored envelopes pass the consumers' strict reading");
    assert!(parsed.dataschema.starts_with("urn:hookmesh:schema:"));
    message
}

async fn assert_total(js: &jetstream::Context, expected: u64) {
    assert_eq!(total_messages(js).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_trigger_is_published_once_per_idempotency_key() {
    let gateway = memory_mesh();
    let body = serde_json::to_vec(&trigger_body()).unwrap();

    let first = accept(
        deliveries::trigger(&gateway, Some("order-7"), &body),
        "corr-trigger",
    )
    .await;
    assert_eq!(first["status"], "QUEUED");
    assert_eq!(first["combinations"], 8);
    assert_eq!(first["duplicate"], false);
    let job_id = first["job_id"].as_str().unwrap().to_owned();
    let envelope = only_event(
        &gateway,
        "sweeps.trigger",
        &format!("sweeps.trigger:{job_id}"),
        "corr-trigger",
    );
    assert_eq!(envelope["type"], "sweep.triggered");
    assert_eq!(envelope["tenantid"], "acme");
    assert_eq!(envelope["subject"], job_id.as_str());
    assert_eq!(envelope["data"]["ticker"], "BTC-USD");

    let again = accept(
        deliveries::trigger(&gateway, Some("order-7"), &body),
        "corr-trigger",
    )
    .await;
    assert_eq!(again["job_id"], job_id.as_str());
    assert_eq!(again["duplicate"], true);
    assert_eq!(gateway.stored().len(), 1);

    // Without an idempotency key every trigger is a new job.
    let other = accept(deliveries::trigger(&gateway, None, &body), "corr-2").await;
    assert_ne!(other["job_id"], job_id.as_str());
    assert_eq!(gateway.stored().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_callback_paths_publish_the_trading_apis_callback() {
    for path in ["/webhook/sweep-callback", "/webhook/trading-sweep"] {
        let gateway = memory_mesh();
        let job = RecordedJob {
            tenant_id: hookmesh_contracts::TenantId::parse("acme").unwrap(),
            parameters: serde_json::from_value(trigger_body()).unwrap(),
            created_at: hookmesh_contracts::Timestamp::now(),
        };
        let registry = gateway.broker.registry();
        registry
            .record(&JobId::parse("job_1").unwrap(), &job)
            .await
            .unwrap();
        let body = serde_json::to_vec(&callback_body()).unwrap();
        let answer = accept(
            deliveries::callback(&gateway, path, "job_1", &body),
            "corr-cb",
        )
        .await;
        assert_eq!(
            answer,
            json!({"acknowledged": true, "job_id": "job_1", "duplicate": false})
        );
        let envelope = only_event(
            &gateway,
            "sweeps.callback",
            "sweeps.callback:job_1:completed",
            "corr-cb",
        );
        assert_eq!(envelope["type"], "sweep.completed");
        assert_eq!(envelope["subject"], "job_1");
        assert_eq!(envelope["data"]["sweep_run_id"], "run_abc123xyz789");

        let again = accept(
            deliveries::callback(&gateway, path, "job_1", &body),
            "corr-cb",
        )
        .await;
        assert_eq!(again["duplicate"], true, "{path}");
        assert_eq!(gateway.stored().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buddy_event_is_published_once_per_webhook_id() {
    let gateway = memory_mesh();
    let body = serde_json::to_vec(&buddy_body("550e8400-e29b-41d4-a716-446655440000")).unwrap();

    let answer = accept(deliveries::buddy(&gateway, "wh-1", &body), "corr-buddy").await;
    assert_eq!(
        answer,
        json!({"acknowledged": true, "eventId": "550e8400-e29b-41d4-a716-446655440000", "duplicate": false})
    );
    let envelope = only_event(&gateway, "buddy.match.created", "buddy:wh-1", "corr-buddy");
    assert_eq!(envelope["id"], "550e8400-e29b-41d4-a716-446655440000");
    assert_eq!(envelope["tenantid"], "acme");
    assert_eq!(envelope["subject"], "m-77");
    assert_eq!(envelope["data"]["newcomer_id"], "p-1042");

    let again = accept(deliveries::buddy(&gateway, "wh-1", &body), "corr-buddy").await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(gateway.stored().len(), 1);
}

/// Sends one CI delivery twice and checks the single stored event.
async fn ci_case(
    gateway: &MemoryGateway,
    request: impl Fn() -> Call,
    subject: &str,
    message_id: &str,
) -> Value {
    let answer = accept(request(), "corr-ci").await;
    assert_eq!(answer["published"], true);
    assert_eq!(answer["subject"], subject);
    assert_eq!(answer["duplicate"], false);
    let envelope = only_event(gateway, subject, message_id, "corr-ci");
    let again = accept(request(), "corr-ci").await;
    assert_eq!(again["duplicate"], true, "{subject}");
    assert_eq!(gateway.stored().len(), 1);
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_workflow_run_is_normalised_and_published_once() {
    let gateway = memory_mesh();
    let body = fixture("github", "workflow_run.completed.failure");
    let envelope = ci_case(
        &gateway,
        || {
            deliveries::github(
                &gateway,
                "workflow_run",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                &body,
            )
        },
        "ci.pipeline.github.failed",
        "ci.github:72d3162e-cc78-11e3-81ab-4c9367dc0958",
    )
    .await;
    let data = &envelope["data"];
    assert_eq!(data["platform"], "github");
    assert_eq!(data["event_type"], "pipeline.failed");
    assert_eq!(data["repository"], "acme/payments-api");
    assert_eq!(data["pipeline_id"], "9876543210");
    assert_eq!(data["failure_context"]["reason"], "failure");
    assert_eq!(envelope["type"], "ci.pipeline.failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_pipeline_is_published_once_by_token_or_by_signature() {
    let gateway = memory_mesh();
    let body = fixture("gitlab", "pipeline.failed");
    let envelope = ci_case(
        &gateway,
        || deliveries::gitlab(&gateway, "Pipeline Hook", "idem-1", &body),
        "ci.pipeline.gitlab.failed",
        "ci.gitlab:idem-1",
    )
    .await;
    assert_eq!(envelope["data"]["pipeline_id"], "1203344");

    // The signing token alone authenticates too (newer GitLab).
    let gateway = memory_mesh();
    let body = fixture("gitlab", "job.failed");
    let envelope = ci_case(
        &gateway,
        || deliveries::gitlab_signed(&gateway, "Job Hook", "idem-2", &body),
        "ci.pipeline.gitlab.failed",
        "ci.gitlab:idem-2",
    )
    .await;
    assert_eq!(
        envelope["data"]["failure_context"]["reason"],
        "script_failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jenkins_notification_is_published_once_per_job_build_and_phase() {
    let gateway = memory_mesh();
    let body = fixture("jenkins", "completed.failure");
    let envelope = ci_case(
        &gateway,
        || deliveries::jenkins(&gateway, &body),
        "ci.pipeline.jenkins.failed",
        "ci.jenkins:payments-api#142:COMPLETED",
    )
    .await;
    assert!(
        envelope["data"]["failure_context"]["log_excerpt"]
            .as_str()
            .unwrap()
            .contains("FAILED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circleci_workflow_is_published_once_per_event_id() {
    let gateway = memory_mesh();
    let body = fixture("circleci", "workflow-completed.failed");
    ci_case(
        &gateway,
        || deliveries::circleci(&gateway, &body),
        "ci.pipeline.circleci.failed",
        "ci.circleci:6a8c0e2b-4d6f-3b1a-8c9e-1a3c5e7b9d2f",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_unconsumed_events_are_acknowledged_without_publishing() {
    let gateway = memory_mesh();
    for (event, name) in [("ping", "ping"), ("push", "push")] {
        let body = fixture("github", name);
        let response = deliveries::github(&gateway, event, "d-ping", &body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["published"], false);
        assert!(answer["reason"].as_str().unwrap().len() > 10);
    }
    let body = fixture("jenkins", "queued");
    let response = deliveries::jenkins(&gateway, &body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(gateway.stored().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_events_are_published_one_envelope_each() {
    let gateway = memory_mesh();

    let single = serde_json::to_vec(&delivery_body("delivered", "msg_1")).unwrap();
    let answer = accept(
        deliveries::provider(&gateway, "sendgrid", "wh_1", &single),
        "corr-p",
    )
    .await;
    assert_eq!(
        answer,
        json!({"accepted": 1, "duplicates": 0, "duplicate": false, "event_ids": ["wh_1"]})
    );
    let envelope = only_event(
        &gateway,
        "providers.sendgrid.delivered",
        "providers.sendgrid:wh_1",
        "corr-p",
    );
    assert_eq!(envelope["data"]["provider"], "sendgrid");
    assert_eq!(envelope["data"]["message_id"], "msg_1");
    let again = accept(
        deliveries::provider(&gateway, "sendgrid", "wh_1", &single),
        "corr-p",
    )
    .await;
    assert_eq!(again["duplicate"], true);

    let batch = serde_json::to_vec(&json!([
        delivery_body("delivered", "msg_2"),
        delivery_body("opened", "msg_2"),
        delivery_body("bounced", "msg_3"),
    ]))
    .unwrap();
    let answer = accept(
        deliveries::provider(&gateway, "ses", "wh_2", &batch),
        "corr-b",
    )
    .await;
    assert_eq!(answer["accepted"], 3);
    assert_eq!(answer["event_ids"], json!(["wh_2:0", "wh_2:1", "wh_2:2"]));
    let again = accept(
        deliveries::provider(&gateway, "ses", "wh_2", &batch),
        "corr-b",
    )
    .await;
    assert_eq!(again["duplicates"], 3);
    assert_eq!(again["duplicate"], true);

    let subjects: Vec<String> = gateway.stored().into_iter().map(|m| m.subject).collect();
    assert_eq!(
        subjects,
        [
            "providers.sendgrid.delivered",
            "providers.ses.delivered",
            "providers.ses.opened",
            "providers.ses.bounced"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let gateway = memory_mesh();
    let (status, health) = gateway.get_json("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert!(health["version"].is_string() && health["timestamp"].is_string());

    let (status, _) = gateway.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, webhook) = gateway.get_json("/health/webhook").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(webhook["broker"], "connected");
    assert_eq!(webhook["sources"]["buddy"], "accepting");

    let body = serde_json::to_vec(&buddy_body("e-metrics")).unwrap();
    accept(deliveries::buddy(&gateway, "wh-m", &body), "corr-m").await;
    let metrics = gateway.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"hookmesh_gateway_requests_total{route="/webhooks/buddy-events",status="202"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"hookmesh_gateway_events_published_total{source="buddy",outcome="stored"} 1"#
        )
    );
    assert!(metrics.contains("csr_webhook_signature_validation_failures_total 0"));
}

/// On a real broker: what JetStream stores (the headers every publish
/// carries), and its own duplicate answer within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_stores_the_envelope_with_its_headers_once_per_delivery_id() {
    let (nats, gateway) = mesh().await;
    let js = nats.jetstream().await;
    let body = serde_json::to_vec(&buddy_body("550e8400-e29b-41d4-a716-446655440000")).unwrap();

    let answer = accept(deliveries::buddy(&gateway, "wh-1", &body), "corr-buddy").await;
    assert_eq!(
        answer,
        json!({"acknowledged": true, "eventId": "550e8400-e29b-41d4-a716-446655440000", "duplicate": false})
    );
    let message = only_message(
        &js,
        "BUDDY",
        "buddy.match.created",
        "buddy:wh-1",
        "corr-buddy",
    )
    .await;
    assert_eq!(
        message.envelope["id"],
        "550e8400-e29b-41d4-a716-446655440000"
    );
    assert_eq!(message.envelope["tenantid"], "acme");
    assert_eq!(message.envelope["subject"], "m-77");
    assert_eq!(message.envelope["data"]["newcomer_id"], "p-1042");

    let again = accept(deliveries::buddy(&gateway, "wh-1", &body), "corr-buddy").await;
    assert_eq!(again["duplicate"], true);
    assert_total(&js, 1).await;
}

/// The identical signed request resent after three minutes — beyond
/// JetStream's default two-minute window, within the five minutes a
/// signature stays valid — is still a duplicate: the ingest streams keep
/// delivery ids for longer than the tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_within_the_signature_tolerance_is_a_duplicate_after_three_minutes() {
    let (nats, gateway) = mesh().await;
    let js = nats.jetstream().await;
    let body = serde_json::to_vec(&delivery_body("delivered", "msg_late")).unwrap();
    let request = deliveries::provider(&gateway, "sendgrid", "wh_late", &body);
    let sent_at = tokio::time::Instant::now();
    let resend = request.try_clone_for_resend();
    let first = accept(request, "corr-late").await;
    assert_eq!(first["duplicate"], false);
    // Time itself is the condition here: the default window has passed.
    tokio::time::sleep_until(sent_at + std::time::Duration::from_secs(185)).await;
    let again = accept(resend, "corr-late").await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(stream_messages(&js, "PROVIDERS").await.len(), 1);
}
