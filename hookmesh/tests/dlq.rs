//! `hookmesh dlq` as an operator runs it: list, show and replay dead
//! letters on a real broker.

use std::process::Output;

use hookmesh_nats::{STREAMS, ensure_streams};
use hookmesh_runtime::dead_letter::{self, DeadLetter};
use hookmesh_tests::{TestNats, stream_messages};

fn hookmesh(nats_url: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookmesh"))
        .env("NATS_URL", nats_url)
        .env("HOOKMESH_LOG", "warn")
        .args(args)
        .output()
        .expect("the hookmesh binary runs");
    assert!(
        output.status.success(),
        "hookmesh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_to_their_subject() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    ensure_streams(&js, STREAMS, 1).await.unwrap();
    for (sequence, subject) in [
        (7, "providers.ses.bounced"),
        (8, "ci.pipeline.github.failed"),
    ] {
        dead_letter::publish(
            &js,
            &DeadLetter {
                stream: if subject.starts_with("ci.") {
                    "CI"
                } else {
                    "PROVIDERS"
                },
                consumer: "batch-processor",
                subject,
                sequence,
                deliveries: 6,
                reason: "gave up after 6 deliveries: database: connection refused",
                headers: None,
                payload: format!("{{\"n\":{sequence}}}").into(),
            },
        )
        .await
        .unwrap();
    }

    let listed = hookmesh(nats.url(), &["dlq", "list", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["subject"], "providers.ses.bounced");
    assert_eq!(lines[0]["original_sequence"], 7);
    assert_eq!(lines[1]["stream"], "CI");

    let table = hookmesh(nats.url(), &["dlq", "list", "--subject", "ci.>"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("ci.pipeline.github.failed"), "{table}");
    assert!(!table.contains("providers.ses.bounced"), "{table}");

    let first = lines[0]["sequence"].as_u64().unwrap().to_string();
    let shown = hookmesh(nats.url(), &["dlq", "show", &first]);
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.contains("database: connection refused"), "{shown}");
    assert!(shown.contains("\"n\": 7"), "{shown}");

    let replayed = hookmesh(
        nats.url(),
        &["dlq", "replay", "--all", "--subject", "providers.>"],
    );
    assert!(
        String::from_utf8(replayed.stdout)
            .unwrap()
            .contains("1 replayed, 0 failed")
    );
    let providers = stream_messages(&js, "PROVIDERS").await;
    assert_eq!(providers.len(), 1);
    assert_eq!(providers[0].subject, "providers.ses.bounced");
    assert_eq!(&providers[0].payload[..], b"{\"n\":7}");
    assert!(
        providers[0].header("Hookmesh-Dlq-Error").is_none(),
        "the replayed message is the original, without the dead-letter headers"
    );
    let left = dead_letter::list(&js, None, 10).await.unwrap();
    assert_eq!(
        left.len(),
        1,
        "the replayed letter left the dead-letter stream"
    );
    assert_eq!(left[0].subject, "ci.pipeline.github.failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_the_mesh_is_named_with_why_it_was_chosen_once() {
    // A plain broker: no hookmesh streams on it.
    let nats = TestNats::start().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookmesh"))
        .env("NATS_URL", nats.url())
        .env("HOOKMESH_LOG", "warn")
        .args(["dlq", "list"])
        .output()
        .expect("the hookmesh binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(nats.url()) && stderr.contains("from NATS_URL"),
        "the broker and why: {stderr}"
    );
    assert!(stderr.contains("hookmesh up"), "what to do: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");

    // No NATS_URL, and no mesh in the data directory: the default, said so.
    let empty = hookmesh_tests::TestDir::new("no-mesh");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hookmesh"))
        .env_remove("NATS_URL")
        .env("HOOKMESH_LOG", "warn")
        .args(["dlq", "--data-dir"])
        .arg(empty.path())
        .arg("list")
        .output()
        .expect("the hookmesh binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("NATS_URL is unset and no `hookmesh up` runs in"),
        "why the default broker: {stderr}"
    );
}
