//! Each route: missing or wrong credentials, stale timestamps, malformed
//! JSON, wrong types, every trigger bound and refinement, oversize bodies and
//! wrong content types → the right 4xx with a reason, and nothing published.
//! None needs a broker: each gateway here publishes to memory and is asked
//! without a socket (`tower::ServiceExt::oneshot`).

use std::time::Instant;

use hookmesh_contracts::TenantId;
use hookmesh_contracts::sweep_jobs::{JobId, RecordedJob};
use hookmesh_gateway::GatewayConfig;
use hookmesh_tests::{Call, MemoryGateway, TestClient, secrets, sign, test_config, unix_now};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deliveries::{self, buddy_body, callback_body, delivery_body, trigger_body};
use crate::fixture;

/// A gateway in memory with every test secret configured.
fn mesh() -> MemoryGateway {
    MemoryGateway::new(test_config())
}

/// Records `job_id` as a job of `tenant`, as the sweep-worker does.
async fn record_job(gateway: &MemoryGateway, job_id: &str, tenant: &str) {
    let job = RecordedJob {
        tenant_id: TenantId::parse(tenant).unwrap(),
        parameters: serde_json::from_value(trigger_body()).unwrap(),
        created_at: hookmesh_contracts::Timestamp::now(),
    };
    gateway
        .broker
        .registry()
        .record(&JobId::parse(job_id).unwrap(), &job)
        .await
        .unwrap();
}

/// Sends `request` and checks the refusal: status, error code, a message.
async fn refuse(request: Call, status: StatusCode, error: &str, case: &str) -> Value {
    let response = request.send().await.unwrap();
    let got = response.status();
    let headers = response.headers().clone();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{case}: body is not JSON: {e}"));
    assert_eq!(got, status, "{case}: {body}");
    assert_eq!(body["error"], error, "{case}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: every refusal says why: {body}"
    );
    if matches!(status.as_u16(), 429 | 503) {
        assert!(headers.contains_key("retry-after"), "{case}: Retry-After");
    }
    body
}

fn fields(body: &Value) -> Vec<String> {
    body["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| f["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn missing_wrong_and_stale_credentials_are_refused_with_401() {
    let gateway = mesh();
    let g = &gateway;
    let buddy = serde_json::to_vec(&buddy_body("e-1")).unwrap();
    let github = fixture("github", "workflow_run.completed.failure");
    let gitlab = fixture("gitlab", "pipeline.failed");
    let jenkins = fixture("jenkins", "completed.failure");
    let circleci = fixture("circleci", "workflow-completed.failed");
    let delivery = serde_json::to_vec(&delivery_body("delivered", "m-1")).unwrap();
    let trigger = serde_json::to_vec(&trigger_body()).unwrap();
    let callback = serde_json::to_vec(&callback_body()).unwrap();
    let stale = (unix_now() - 301).to_string();
    let now = unix_now().to_string();

    let cases: Vec<(&str, Call)> = vec![
        (
            "buddy without signature",
            g.post("/webhooks/buddy-events", &buddy)
                .header("X-Webhook-Id", "w")
                .header("X-Webhook-Timestamp", &now),
        ),
        (
            "buddy signed with another secret",
            g.post("/webhooks/buddy-events", &buddy)
                .header("X-Webhook-Id", "w")
                .header("X-Webhook-Timestamp", &now)
                .header(
                    "X-Webhook-Signature",
                    sign::sha256_header("not-the-secret", &buddy),
                ),
        ),
        (
            "buddy with a stale timestamp",
            g.post("/webhooks/buddy-events", &buddy)
                .header("X-Webhook-Id", "w")
                .header("X-Webhook-Timestamp", &stale)
                .header(
                    "X-Webhook-Signature",
                    sign::sha256_header(secrets::BUDDY, &buddy),
                ),
        ),
        (
            "buddy signature over a re-serialised body",
            g.post("/webhooks/buddy-events", &buddy)
                .header("X-Webhook-Id", "w")
                .header("X-Webhook-Timestamp", &now)
                .header(
                    "X-Webhook-Signature",
                    sign::sha256_header(
                        secrets::BUDDY,
                        serde_json::to_string_pretty(&buddy_body("e-1"))
                            .unwrap()
                            .as_bytes(),
                    ),
                ),
        ),
        (
            "github without signature",
            g.post("/webhooks/ci/github", &github)
                .header("X-GitHub-Event", "workflow_run")
                .header("X-GitHub-Delivery", "d"),
        ),
        (
            "github with a wrong signature",
            g.post("/webhooks/ci/github", &github)
                .header("X-GitHub-Event", "workflow_run")
                .header("X-GitHub-Delivery", "d")
                .header("X-Hub-Signature-256", sign::sha256_header("wrong", &github)),
        ),
        (
            "gitlab without token",
            g.post("/webhooks/ci/gitlab", &gitlab)
                .header("X-Gitlab-Event", "Pipeline Hook")
                .header("Idempotency-Key", "i"),
        ),
        (
            "gitlab with a wrong token",
            g.post("/webhooks/ci/gitlab", &gitlab)
                .header("X-Gitlab-Event", "Pipeline Hook")
                .header("Idempotency-Key", "i")
                .header("X-Gitlab-Token", "guess"),
        ),
        (
            "gitlab with a stale signature",
            g.post("/webhooks/ci/gitlab", &gitlab)
                .header("X-Gitlab-Event", "Pipeline Hook")
                .header("webhook-id", "i")
                .header("webhook-timestamp", &stale)
                .header(
                    "webhook-signature",
                    sign::standard(secrets::GITLAB_SIGNING, "i", unix_now() - 301, &gitlab),
                ),
        ),
        (
            "jenkins without credentials",
            g.post("/webhooks/ci/jenkins", &jenkins),
        ),
        (
            "jenkins with a wrong password",
            g.post("/webhooks/ci/jenkins", &jenkins)
                .header("Authorization", sign::basic("jenkins", "wrong")),
        ),
        (
            "circleci without signature",
            g.post("/webhooks/ci/circleci", &circleci),
        ),
        (
            "circleci with a wrong signature",
            g.post("/webhooks/ci/circleci", &circleci)
                .header("circleci-signature", sign::circleci("wrong", &circleci)),
        ),
        (
            "provider without signature",
            g.post("/webhooks/providers/sendgrid", &delivery)
                .header("webhook-id", "w")
                .header("webhook-timestamp", &now),
        ),
        (
            "provider with a wrong signature",
            g.post("/webhooks/providers/sendgrid", &delivery)
                .header("webhook-id", "w")
                .header("webhook-timestamp", &now)
                .header(
                    "webhook-signature",
                    sign::standard(
                        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                        "w",
                        unix_now(),
                        &delivery,
                    ),
                ),
        ),
        (
            "provider with a stale timestamp",
            g.post("/webhooks/providers/sendgrid", &delivery)
                .header("webhook-id", "w")
                .header("webhook-timestamp", &stale)
                .header(
                    "webhook-signature",
                    sign::standard(secrets::PROVIDERS, "w", unix_now() - 301, &delivery),
                ),
        ),
        (
            "trigger without an API key",
            g.post("/api/pipelines/trigger", &trigger),
        ),
        (
            "trigger with an unknown API key",
            g.post("/api/pipelines/trigger", &trigger)
                .header("X-API-Key", "unknown-key-0123456789"),
        ),
        (
            "callback without a token",
            g.post("/webhook/sweep-callback?job_id=job_1", &callback),
        ),
        (
            "callback with another job's token",
            g.post(
                &format!(
                    "/webhook/sweep-callback?job_id=job_2&token={}",
                    hookmesh_contracts::sweep::callback_token(
                        secrets::CALLBACK.as_bytes(),
                        "job_1"
                    )
                ),
                &callback,
            ),
        ),
    ];
    let count = cases.len();
    for (case, request) in cases {
        refuse(request, StatusCode::UNAUTHORIZED, "unauthorized", case).await;
    }
    assert!(gateway.stored().is_empty());

    let metrics = g.get_text("/metrics").await;
    let failures: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("webhook_signature_failures_total"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(failures, count as u64, "{metrics}");
    assert!(metrics.contains("csr_webhook_signature_validation_failures_total 4"));
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_refused_with_400_naming_every_field() {
    let gateway = mesh();
    record_job(&gateway, "job_1", "acme").await;
    let g = &gateway;

    let not_json = b"{\"id\": \"e-1\", oops";
    let body = refuse(
        deliveries::buddy(g, "w-1", not_json),
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "buddy malformed",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("line 1"));

    let mut wrong = buddy_body("e-2");
    wrong["type"] = json!("buddy.checkin.completed");
    wrong["data"] = json!({"tenant_id": "acme", "program_id": "p", "match_id": 7,
        "checkin_id": "c", "buddy_id": "b", "newcomer_id": "n", "duration_minutes": "long", "channel": "fax"});
    let wrong = serde_json::to_vec(&wrong).unwrap();
    let body = refuse(
        deliveries::buddy(g, "w-2", &wrong),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "buddy wrong types",
    )
    .await;
    assert_eq!(
        fields(&body),
        ["data.match_id", "data.duration_minutes", "data.channel"]
    );

    let body = refuse(
        deliveries::buddy(g, "w-3", &serde_json::to_vec(&buddy_body("e-3")).unwrap())
            .remove_header("X-Webhook-Id"),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "buddy without a webhook id",
    )
    .await;
    assert_eq!(fields(&body), ["headers.X-Webhook-Id"]);

    let mut github: Value =
        serde_json::from_slice(&fixture("github", "workflow_run.completed.failure")).unwrap();
    github["workflow_run"].as_object_mut().unwrap().remove("id");
    let github = serde_json::to_vec(&github).unwrap();
    let body = refuse(
        deliveries::github(g, "workflow_run", "d-1", &github),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "github without a run id",
    )
    .await;
    assert_eq!(fields(&body), ["workflow_run.id"]);

    let body = refuse(
        deliveries::github(g, "workflow_run", "d-2", b"[1,2"),
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "github malformed",
    )
    .await;
    assert_eq!(fields(&body), [""]);

    let batch = serde_json::to_vec(&json!([
        delivery_body("delivered", "m-1"),
        {"event_type": "teleported", "message_id": 12, "timestamp": "soon"},
    ]))
    .unwrap();
    let body = refuse(
        deliveries::provider(g, "sendgrid", "w-4", &batch),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "provider batch with a bad event",
    )
    .await;
    assert_eq!(
        fields(&body),
        ["[1].event_type", "[1].message_id", "[1].timestamp"]
    );

    let mut callback = callback_body();
    callback["status"] = json!("done");
    callback["timestamp"] = json!(1738000000);
    let callback = serde_json::to_vec(&callback).unwrap();
    let body = refuse(
        deliveries::callback(g, "/webhook/sweep-callback", "job_1", &callback),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "callback with wrong types",
    )
    .await;
    assert_eq!(fields(&body), ["status", "timestamp"]);

    assert!(gateway.stored().is_empty());
}

#[tokio::test]
async fn every_trigger_bound_and_both_refinements_are_refused_naming_the_field() {
    let gateway = mesh();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("ticker", json!("BT"), "ticker"),
        ("ticker", json!("TOO-LONG-A-TICKER-XYZ"), "ticker"),
        ("ticker", json!(42), "ticker"),
        ("fast_range", json!([0, 20]), "fast_range[0]"),
        ("fast_range", json!([10]), "fast_range"),
        ("slow_range", json!([20, 501]), "slow_range[1]"),
        ("slow_range", json!("20-30"), "slow_range"),
        ("step", json!(0), "step"),
        ("step", json!(51), "step"),
        ("step", json!(1.5), "step"),
        ("min_trades", json!(9), "min_trades"),
        ("min_trades", json!(1001), "min_trades"),
        ("strategy_type", json!("RSI"), "strategy_type"),
        ("config_path", json!("maximum"), "config_path"),
    ];
    for (field, value, expected) in cases {
        let mut body = trigger_body();
        body[field] = value.clone();
        let body = refuse(
            deliveries::trigger(&gateway, None, &serde_json::to_vec(&body).unwrap()),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            &format!("{field} = {value}"),
        )
        .await;
        assert_eq!(fields(&body), [expected], "{field} = {value}");
    }

    let refinements = [
        (
            json!([20, 25]),
            json!([20, 30]),
            "Fast range min must be less than slow range min",
        ),
        (
            json!([10, 30]),
            json!([20, 30]),
            "Fast range max must be less than slow range max",
        ),
    ];
    for (fast, slow, message) in refinements {
        let mut body = trigger_body();
        body["fast_range"] = fast;
        body["slow_range"] = slow;
        let body = refuse(
            deliveries::trigger(&gateway, None, &serde_json::to_vec(&body).unwrap()),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            message,
        )
        .await;
        assert_eq!(body["fields"][0]["message"], message);
        assert_eq!(fields(&body), ["fast_range"]);
    }

    let missing = refuse(
        deliveries::trigger(&gateway, None, b"{}"),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "empty trigger",
    )
    .await;
    assert_eq!(
        fields(&missing),
        ["ticker", "fast_range", "slow_range", "step"]
    );
    assert!(gateway.stored().is_empty());
}

#[tokio::test]
async fn oversize_bodies_get_413_and_wrong_content_types_415_on_every_route() {
    let gateway = MemoryGateway::new(GatewayConfig {
        max_body_bytes: 4096,
        ..test_config()
    });
    let g = &gateway;
    let mut big = buddy_body("e-big");
    big["correlation_id"] = json!("x".repeat(8000));
    let big = serde_json::to_vec(&big).unwrap();
    let routes: Vec<(&str, Call)> = vec![
        ("buddy", deliveries::buddy(g, "w", &big)),
        ("github", deliveries::github(g, "workflow_run", "d", &big)),
        ("gitlab", deliveries::gitlab(g, "Pipeline Hook", "i", &big)),
        ("jenkins", deliveries::jenkins(g, &big)),
        ("circleci", deliveries::circleci(g, &big)),
        ("providers", deliveries::provider(g, "sendgrid", "w", &big)),
        ("trigger", deliveries::trigger(g, None, &big)),
        (
            "callback",
            deliveries::callback(g, "/webhook/sweep-callback", "job_1", &big),
        ),
    ];
    for (route, request) in routes {
        refuse(
            request,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            route,
        )
        .await;
    }

    let small = serde_json::to_vec(&buddy_body("e-small")).unwrap();
    let text_plain = |request: Call| request.replace_header("content-type", "text/plain");
    let routes: Vec<(&str, Call)> = vec![
        ("buddy", text_plain(deliveries::buddy(g, "w", &small))),
        (
            "github",
            text_plain(deliveries::github(g, "workflow_run", "d", &small)),
        ),
        (
            "gitlab",
            text_plain(deliveries::gitlab(g, "Pipeline Hook", "i", &small)),
        ),
        ("jenkins", text_plain(deliveries::jenkins(g, &small))),
        ("circleci", text_plain(deliveries::circleci(g, &small))),
        (
            "providers",
            text_plain(deliveries::provider(g, "sendgrid", "w", &small)),
        ),
        ("trigger", text_plain(deliveries::trigger(g, None, &small))),
        (
            "callback",
            text_plain(deliveries::callback(
                g,
                "/webhook/trading-sweep",
                "job_1",
                &small,
            )),
        ),
        (
            "form-encoded github",
            deliveries::github(g, "workflow_run", "d", b"payload=%7B%7D")
                .replace_header("content-type", "application/x-www-form-urlencoded"),
        ),
        (
            "no content type",
            deliveries::buddy(g, "w", &small).remove_header("content-type"),
        ),
    ];
    for (route, request) in routes {
        refuse(
            request,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            route,
        )
        .await;
    }
    assert!(gateway.stored().is_empty());
}

#[tokio::test]
async fn unknown_routes_sources_and_methods_are_refused() {
    let gateway = mesh();
    let g = &gateway;
    let body = fixture("github", "ping");
    refuse(
        g.post("/webhooks/ci/travis", &body),
        StatusCode::NOT_FOUND,
        "not_found",
        "platform",
    )
    .await;
    let answer = refuse(
        g.post("/webhooks/providers/pigeon-post", &body),
        StatusCode::NOT_FOUND,
        "not_found",
        "provider",
    )
    .await;
    assert!(answer["message"].as_str().unwrap().contains("sendgrid"));
    refuse(
        g.post("/webhooks/nope", &body),
        StatusCode::NOT_FOUND,
        "not_found",
        "route",
    )
    .await;
    refuse(
        g.get("/webhooks/buddy-events"),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "GET on a webhook",
    )
    .await;
}

#[tokio::test]
async fn a_gateway_without_secrets_accepts_nothing() {
    let gateway = MemoryGateway::new(GatewayConfig::default());
    let g = &gateway;
    let buddy = serde_json::to_vec(&buddy_body("e-1")).unwrap();
    let delivery = serde_json::to_vec(&delivery_body("delivered", "m-1")).unwrap();
    let trigger = serde_json::to_vec(&trigger_body()).unwrap();
    let callback = serde_json::to_vec(&callback_body()).unwrap();
    let requests: Vec<(&str, Call)> = vec![
        ("buddy", deliveries::buddy(g, "w", &buddy)),
        (
            "github",
            deliveries::github(g, "ping", "d", &fixture("github", "ping")),
        ),
        (
            "gitlab",
            deliveries::gitlab(
                g,
                "Pipeline Hook",
                "i",
                &fixture("gitlab", "pipeline.failed"),
            ),
        ),
        (
            "jenkins",
            deliveries::jenkins(g, &fixture("jenkins", "started")),
        ),
        (
            "circleci",
            deliveries::circleci(g, &fixture("circleci", "workflow-completed.failed")),
        ),
        (
            "providers",
            deliveries::provider(g, "sendgrid", "w", &delivery),
        ),
        ("trigger", deliveries::trigger(g, None, &trigger)),
        (
            "callback",
            deliveries::callback(g, "/webhook/sweep-callback", "job_1", &callback),
        ),
    ];
    for (route, request) in requests {
        let body = refuse(request, StatusCode::UNAUTHORIZED, "unauthorized", route).await;
        assert!(
            body["message"].as_str().unwrap().contains("HOOKMESH_"),
            "{route}: the refusal names the variable to set: {body}"
        );
    }
    assert!(gateway.stored().is_empty());
}

#[tokio::test]
async fn a_source_over_its_rate_limit_gets_429_with_retry_after() {
    let mut config = test_config();
    config.rate_limits.insert("buddy".to_owned(), 1);
    let gateway = MemoryGateway::new(config);
    let started = Instant::now();
    let (mut accepted, mut limited) = (0u64, 0u64);
    for i in 0..10 {
        let body = serde_json::to_vec(&buddy_body(&format!("e-{i}"))).unwrap();
        let response = deliveries::buddy(&gateway, &format!("w-{i}"), &body)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry_after: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(retry_after, 1);
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"], "rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // One request per second, plus a burst of one, however slow this machine is.
    let elapsed = started.elapsed().as_secs();
    assert!(
        accepted <= 1 + elapsed + 1,
        "{accepted} accepted in {elapsed} s"
    );
    if elapsed < 8 {
        assert!(limited > 0);
    }
    // Other sources keep their own budget.
    let delivery = serde_json::to_vec(&delivery_body("delivered", "m-1")).unwrap();
    let response = deliveries::provider(&gateway, "sendgrid", "w", &delivery)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(gateway.stored().len() as u64, accepted + 1);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_another_request_is_refused_with_422() {
    let gateway = mesh();
    let first = serde_json::to_vec(&trigger_body()).unwrap();
    let mut other = trigger_body();
    other["ticker"] = json!("ETH-USD");
    let other = serde_json::to_vec(&other).unwrap();

    let answer = deliveries::trigger(&gateway, Some("key-1"), &first)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let job: Value = answer.json().await.unwrap();

    let body = refuse(
        deliveries::trigger(&gateway, Some("key-1"), &other),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "the same key with another body",
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("\"key-1\""),
        "{body}"
    );

    let again = deliveries::trigger(&gateway, Some("key-1"), &first)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again["job_id"], job["job_id"],
        "the same request keeps its job"
    );
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        gateway.stored().len(),
        1,
        "nothing published for the refusal"
    );
}

#[tokio::test]
async fn a_sweep_over_the_configured_size_is_refused_naming_the_limit() {
    let gateway = MemoryGateway::new(GatewayConfig {
        sweep_max_combinations: 5,
        ..test_config()
    });
    let body = refuse(
        deliveries::trigger(
            &gateway,
            None,
            &serde_json::to_vec(&trigger_body()).unwrap(),
        ),
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        "eight combinations over a limit of five",
    )
    .await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("HOOKMESH_SWEEP_MAX_COMBINATIONS") && message.contains("8"),
        "{message}"
    );
    assert!(gateway.stored().is_empty());
}

#[tokio::test]
async fn webhook_health_is_degraded_when_no_source_can_accept() {
    let (status, health) = MemoryGateway::new(GatewayConfig::default())
        .get_json("/health/webhook")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["sources"]["buddy"], "refusing");
    assert!(
        health["reasons"][0]
            .as_str()
            .unwrap()
            .contains("HOOKMESH_SECRET_"),
        "{health}"
    );
    let (status, health) = mesh().get_json("/health/webhook").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "healthy");
}

#[tokio::test]
async fn ids_and_query_values_that_cannot_be_what_they_name_are_400_with_the_field() {
    let gateway = mesh();
    let cases = [
        (
            "/api/pipelines/%ff%fe",
            "path",
            "invalid UTF-8 in a path id",
        ),
        (
            "/api/csr/participants/a%E2%80%AEb/journey",
            "path.id",
            "a bidi override in a participant id",
        ),
        (
            "/api/campaigns/%2E%2E%2Fx",
            "path.id",
            "a path separator in a campaign id",
        ),
        (
            "/api/pipelines?cursor=%ff%fe%00",
            "cursor",
            "a malformed cursor",
        ),
        (
            "/api/pipelines?limit=%zz",
            "limit",
            "a broken percent-escape",
        ),
        (
            "/api/csr/metrics?program=a%0Ab",
            "program",
            "a line break in a program id",
        ),
    ];
    for (path, field, case) in cases {
        let body = refuse(
            gateway.get(path).bearer_auth(secrets::API_KEY_ACME),
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            case,
        )
        .await;
        assert!(
            fields(&body).iter().any(|f| f.starts_with(field)),
            "{case}: {body}"
        );
    }
}

#[tokio::test]
async fn an_oversize_body_sent_in_chunks_is_answered_413_not_a_reset() {
    use std::future::IntoFuture as _;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gateway = MemoryGateway::new(GatewayConfig {
        max_body_bytes: 64 * 1024,
        ..test_config()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, gateway.gateway.router()).into_future());
    for round in 0..20 {
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        socket
            .write_all(
                b"POST /webhooks/buddy-events HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\
                  Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..16 {
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            if socket.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.read_to_end(&mut answer),
        )
        .await
        .expect("an answer in time");
        assert!(
            read.is_ok(),
            "round {round}: the connection was reset: {read:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "round {round}: {answer}"
        );
        assert!(
            answer.contains("\"payload_too_large\""),
            "round {round}: {answer}"
        );
    }
}
