//! OpenTelemetry traces from the HTTP request through JetStream to every
//! consumer's commit, exported by `hookmesh up` to a real OTLP receiver
//! (`tests/otlp/receiver.py`, which decodes the official protobuf
//! definitions), and the trace headers on every message the mesh stores.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hookmesh_tests::up::{self, Up};
use hookmesh_tests::{TestDir, eventually, secrets, sign, stream_messages, unix_now};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// The receiver: a Python process writing each span it is sent as a line
/// of JSON.
struct Receiver {
    _child: Child,
    endpoint: String,
    spans: PathBuf,
}

impl Receiver {
    async fn start(dir: &Path) -> Self {
        let spans = dir.join("spans.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/otlp/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&spans)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (with opentelemetry-proto installed: pip install opentelemetry-proto)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver starts")
            .unwrap()
            .expect("the receiver prints its port (is opentelemetry-proto installed?)");
        Self {
            _child: child,
            endpoint: format!("http://127.0.0.1:{}", port.trim()),
            spans,
        }
    }

    /// Every span received so far in trace `trace_id`.
    fn trace(&self, trace_id: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|span| span["trace_id"] == trace_id)
            .collect()
    }
}

/// The one span of `spans` of `kind` named `name`.
fn span<'a>(spans: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    spans
        .iter()
        .find(|span| span["kind"] == format!("SPAN_KIND_{kind}") && span["name"] == name)
}

fn random_hex(bytes: usize) -> String {
    hookmesh_contracts::hex::encode(&hookmesh_contracts::hex::random_bytes::<16>()[..bytes])
}

/// `up` with the tests' secrets, exporting every span to `receiver`.
async fn mesh(dir: &Path, receiver: &Receiver) -> Up {
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("HOOKMESH_SIM_RUN_TIME_SECS", "1".to_owned()),
        ("HOOKMESH_SECRET_BUDDY", secrets::BUDDY.to_owned()),
        ("HOOKMESH_SECRET_GITHUB", secrets::GITHUB.to_owned()),
        ("HOOKMESH_SECRET_PROVIDERS", secrets::PROVIDERS.to_owned()),
        (
            "HOOKMESH_API_KEYS",
            format!("acme:{}", secrets::API_KEY_ACME),
        ),
    ];
    up::start(env!("CARGO_BIN_EXE_hookmesh"), &dir.join(".hookmesh"), &env).await
}

/// A POST to the mesh with a trace of the test's own and a correlation id.
fn post(
    mesh: &Up,
    path: &str,
    body: &[u8],
    trace_id: &str,
    correlation_id: &str,
) -> reqwest::RequestBuilder {
    hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .post(format!("{}{path}", mesh.gateway))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace_id}-{}-01", random_hex(8)))
        .header("X-Correlation-Id", correlation_id)
        .body(body.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_one_trace_from_the_request_to_every_commit_and_event() {
    let dir = TestDir::new("traces");
    let receiver = Receiver::start(dir.path()).await;
    let mesh = mesh(dir.path(), &receiver).await;

    // One buddy webhook.
    let buddy_trace = random_hex(16);
    let body = format!(
        r#"{{"id":"evt-{buddy_trace}","type":"buddy.match.created","timestamp":"2025-11-14T10:30:00Z","data":{{"tenant_id":"acme","program_id":"ukraine-2025","match_id":"m-77","buddy_id":"p-7","newcomer_id":"p-1042"}}}}"#
    );
    let answer = post(
        &mesh,
        "/webhooks/buddy-events",
        body.as_bytes(),
        &buddy_trace,
        "corr-buddy",
    )
    .header("X-Webhook-Id", format!("wh-{buddy_trace}"))
    .header("X-Webhook-Timestamp", unix_now().to_string())
    .header(
        "X-Webhook-Signature",
        sign::sha256_header(secrets::BUDDY, body.as_bytes()),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 202);

    let spans = eventually(
        Duration::from_secs(30),
        "the buddy webhook's whole trace",
        || {
            let spans = receiver.trace(&buddy_trace);
            let complete = span(&spans, "PRODUCER", "publish csr.journey.matched").is_some()
                && spans.iter().any(|span| {
                    span["kind"] == "SPAN_KIND_CLIENT"
                        && span["attributes"]["db.system.name"] == "sqlite"
                });
            std::future::ready(complete.then_some(spans))
        },
    )
    .await;
    let server =
        span(&spans, "SERVER", "POST /webhooks/buddy-events").expect("the gateway's server span");
    assert_eq!(server["attributes"]["http.response.status_code"], 202);
    assert_eq!(server["attributes"]["http.route"], "/webhooks/buddy-events");
    let producer = span(&spans, "PRODUCER", "publish buddy.match.created")
        .expect("the gateway's producer span");
    assert_eq!(producer["parent_span_id"], server["span_id"]);
    assert_eq!(producer["attributes"]["messaging.system"], "nats");
    assert_eq!(
        producer["attributes"]["messaging.destination.name"],
        "buddy.match.created"
    );
    let consumer =
        span(&spans, "CONSUMER", "process BUDDY").expect("the csr-consumer's consumer span");
    assert_eq!(consumer["parent_span_id"], producer["span_id"]);
    assert_eq!(
        consumer["attributes"]["messaging.consumer.group.name"],
        "csr-consumer"
    );
    let sql = spans
        .iter()
        .find(|span| {
            span["kind"] == "SPAN_KIND_CLIENT" && span["attributes"]["db.system.name"] == "sqlite"
        })
        .unwrap();
    assert_eq!(
        sql["parent_span_id"], consumer["span_id"],
        "the SQL span is the consumer's"
    );
    let journey = span(&spans, "PRODUCER", "publish csr.journey.matched").unwrap();
    assert_eq!(
        journey["parent_span_id"], producer["span_id"],
        "a downstream event is a child of the message that caused it"
    );
    assert!(spans.iter().all(|span| span["service"] == "hookmesh"));

    // A CI failure's trace reaches ci.failure.detected.
    let ci_trace = random_hex(16);
    let fixture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/ci/github/workflow_run.completed.failure.json"),
    )
    .unwrap();
    let answer = post(&mesh, "/webhooks/ci/github", &fixture, &ci_trace, "corr-ci")
        .header("X-GitHub-Event", "workflow_run")
        .header("X-GitHub-Delivery", format!("d-{ci_trace}"))
        .header(
            "X-Hub-Signature-256",
            sign::sha256_header(secrets::GITHUB, &fixture),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    eventually(
        Duration::from_secs(30),
        "ci.failure.detected in the CI trace",
        || {
            let spans = receiver.trace(&ci_trace);
            std::future::ready(span(&spans, "PRODUCER", "publish ci.failure.detected").map(|_| ()))
        },
    )
    .await;

    // A campaign that completes, and a sweep that runs.
    let campaign_trace = random_hex(16);
    let registration = br#"{"campaign_id":"traced","recipients":[{"provider":"sendgrid","message_id":"msg_traced","address":"r@example.com"}]}"#;
    let answer = post(
        &mesh,
        "/api/campaigns",
        registration,
        &campaign_trace,
        "corr-delivery",
    )
    .bearer_auth(secrets::API_KEY_ACME)
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 202);
    let delivered = br#"{"event_type":"delivered","message_id":"msg_traced","timestamp":"2025-03-01T09:00:02Z"}"#;
    let now = unix_now();
    let answer = post(
        &mesh,
        "/webhooks/providers/sendgrid",
        delivered,
        &campaign_trace,
        "corr-delivery",
    )
    .header("webhook-id", "msg-traced-1")
    .header("webhook-timestamp", now.to_string())
    .header(
        "webhook-signature",
        sign::standard(secrets::PROVIDERS, "msg-traced-1", now, delivered),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 202);
    let trigger = br#"{"ticker":"BTC-USD","fast_range":[10,20],"slow_range":[20,30],"step":5,"min_trades":50,"strategy_type":"SMA"}"#;
    let answer = post(
        &mesh,
        "/api/pipelines/trigger",
        trigger,
        &random_hex(16),
        "corr-sweep",
    )
    .bearer_auth(secrets::API_KEY_ACME)
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), 202);

    // Every message stored, the gateway's and every consumer's, carries
    // traceparent and the correlation id of the request that caused it.
    let client = async_nats::connect(&mesh.broker).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let expected: [(&str, &str, Option<&str>); 4] = [
        ("CSR", "csr.journey.", Some("corr-buddy")),
        ("CI", "ci.failure.detected", Some("corr-ci")),
        (
            "DELIVERY",
            "delivery.campaign.completed",
            Some("corr-delivery"),
        ),
        // Later statuses come from the Trading API's callback, a request of its own.
        ("SWEEPS", "sweeps.jobs.", None),
    ];
    for (stream, subject, correlation) in expected {
        let messages = eventually(Duration::from_secs(30), subject, || {
            let js = js.clone();
            async move {
                let messages: Vec<_> = stream_messages(&js, stream)
                    .await
                    .into_iter()
                    .filter(|message| message.subject.starts_with(subject))
                    .collect();
                (!messages.is_empty()).then_some(messages)
            }
        })
        .await;
        for message in &messages {
            let traceparent = message.header("traceparent").unwrap_or_default();
            assert!(
                hookmesh_nats::trace::parse(traceparent).is_some(),
                "{}: traceparent {traceparent:?}",
                message.subject
            );
            let found = message.header("X-Correlation-Id").unwrap_or_default();
            match correlation {
                Some(expected) => assert_eq!(found, expected, "{}", message.subject),
                None => assert!(!found.is_empty(), "{}: a correlation id", message.subject),
            }
        }
    }
    let journey = stream_messages(&js, "CSR").await;
    assert!(
        journey.iter().all(|message| message
            .header("traceparent")
            .unwrap()
            .contains(&buddy_trace)),
        "journey events continue the buddy webhook's trace"
    );
    for definition in hookmesh_nats::STREAMS {
        for message in stream_messages(&js, &definition.name()).await {
            assert!(
                message.header("traceparent").is_some()
                    && message.header("X-Correlation-Id").is_some(),
                "{} carries traceparent and X-Correlation-Id",
                message.subject
            );
        }
    }
}
