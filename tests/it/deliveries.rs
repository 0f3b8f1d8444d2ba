//! Correctly signed requests for every route, as each producer sends them,
//! and the seeds' example bodies.

use hookmesh_tests::{Call, TestClient, secrets, sign, unix_now};
use serde_json::{Value, json};

/// 003's example trigger.
pub fn trigger_body() -> Value {
    json!({
        "ticker": "BTC-USD",
        "fast_range": [10, 20],
        "slow_range": [20, 30],
        "step": 5,
        "min_trades": 50,
        "strategy_type": "SMA"
    })
}

pub fn trigger(gateway: &impl TestClient, idempotency_key: Option<&str>, body: &[u8]) -> Call {
    let request = gateway
        .post("/api/pipelines/trigger", body)
        .bearer_auth(secrets::API_KEY_ACME);
    match idempotency_key {
        Some(key) => request.header("Idempotency-Key", key),
        None => request,
    }
}

/// 003's completion callback.
pub fn callback_body() -> Value {
    json!({
        "event_type": "sweep.completed",
        "job_id": "sweep_20250127_103045_btcusd",
        "sweep_run_id": "run_abc123xyz789",
        "status": "completed",
        "ticker": "BTC-USD",
        "result_data": {
            "sweep_run_id": "run_abc123xyz789",
            "total_combinations": 8,
            "execution_time_seconds": 127,
            "completed_at": "2025-01-27T10:32:52Z"
        },
        "timestamp": "2025-01-27T10:32:52Z"
    })
}

pub fn callback(gateway: &impl TestClient, path: &str, job_id: &str, body: &[u8]) -> Call {
    let token = hookmesh_contracts::sweep::callback_token(secrets::CALLBACK.as_bytes(), job_id);
    gateway.post(&format!("{path}?job_id={job_id}&token={token}"), body)
}

/// 002's envelope of a `buddy.match.created` event.
pub fn buddy_body(event_id: &str) -> Value {
    json!({
        "id": event_id,
        "type": "buddy.match.created",
        "timestamp": "2025-11-14T10:30:00Z",
        "correlation_id": "req-uuid-123",
        "data": {
            "tenant_id": "acme", "program_id": "ukraine-2025", "match_id": "m-77",
            "buddy_id": "p-7", "newcomer_id": "p-1042"
        }
    })
}

pub fn buddy(gateway: &impl TestClient, webhook_id: &str, body: &[u8]) -> Call {
    gateway
        .post("/webhooks/buddy-events", body)
        .header("X-Webhook-Id", webhook_id)
        .header("X-Webhook-Timestamp", unix_now().to_string())
        .header(
            "X-Webhook-Signature",
            sign::sha256_header(secrets::BUDDY, body),
        )
}

pub fn github(gateway: &impl TestClient, event: &str, delivery: &str, body: &[u8]) -> Call {
    gateway
        .post("/webhooks/ci/github", body)
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-GitHub-Hook-ID", "468829431")
        .header(
            "X-Hub-Signature-256",
            sign::sha256_header(secrets::GITHUB, body),
        )
}

pub fn gitlab(gateway: &impl TestClient, kind: &str, idempotency_key: &str, body: &[u8]) -> Call {
    gateway
        .post("/webhooks/ci/gitlab", body)
        .header("X-Gitlab-Event", kind)
        .header("X-Gitlab-Token", secrets::GITLAB)
        .header("Idempotency-Key", idempotency_key)
        .header(
            "X-Gitlab-Event-UUID",
            "7a9b6d5c-1111-2222-3333-444455556666",
        )
}

/// GitLab with a signing token: Standard Webhooks headers, no X-Gitlab-Token.
pub fn gitlab_signed(gateway: &impl TestClient, kind: &str, webhook_id: &str, body: &[u8]) -> Call {
    let timestamp = unix_now();
    gateway
        .post("/webhooks/ci/gitlab", body)
        .header("X-Gitlab-Event", kind)
        .header("Idempotency-Key", webhook_id)
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign::standard(secrets::GITLAB_SIGNING, webhook_id, timestamp, body),
        )
}

pub fn jenkins(gateway: &impl TestClient, body: &[u8]) -> Call {
    gateway
        .post("/webhooks/ci/jenkins", body)
        .replace_header("content-type", "application/json;charset=UTF-8")
        .header("Authorization", sign::basic("jenkins", secrets::JENKINS))
}

pub fn circleci(gateway: &impl TestClient, body: &[u8]) -> Call {
    gateway
        .post("/webhooks/ci/circleci", body)
        .header("circleci-event-type", "workflow-completed")
        .header(
            "circleci-signature",
            sign::circleci(secrets::CIRCLECI, body),
        )
}

pub fn delivery_body(event_type: &str, message_id: &str) -> Value {
    json!({
        "event_type": event_type,
        "message_id": message_id,
        "timestamp": "2025-03-01T09:00:02Z",
        "recipient": "recipient@example.com"
    })
}

pub fn provider(gateway: &impl TestClient, provider: &str, webhook_id: &str, body: &[u8]) -> Call {
    let timestamp = unix_now();
    gateway
        .post(&format!("/webhooks/providers/{provider}"), body)
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign::standard(secrets::PROVIDERS, webhook_id, timestamp, body),
        )
}
