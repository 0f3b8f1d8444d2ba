//! The consume loop's last resort: a message that keeps failing is
//! dead-lettered on its last allowed delivery, with the count and the
//! reason, rather than dropped by the broker.

use std::sync::Arc;
use std::time::Duration;

use hookmesh_nats::{ConsumerDefinition, STREAMS, ensure_streams};
use hookmesh_runtime::consume::{self, ConsumeSettings};
use hookmesh_runtime::dead_letter;
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_runtime::{Delivery, Handler, Outcome};
use hookmesh_tests::{TestNats, eventually, stream_messages};
use prometheus_client::registry::Registry;

/// A dependency that never comes back.
struct AlwaysRetry;

impl Handler for AlwaysRetry {
    async fn handle(&self, batch: &[Delivery]) -> Vec<Outcome> {
        batch
            .iter()
            .map(|_| Outcome::Retry {
                delay: Duration::from_millis(50),
                reason: "the dependency is down".to_owned(),
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_exhausts_its_deliveries_is_dead_lettered_with_the_count() {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    ensure_streams(&js, STREAMS, 1).await.unwrap();
    let definition = ConsumerDefinition {
        stream: "BUDDY",
        file: "consumers/BUDDY.exhaust-test.json",
        json: r#"{"durable_name": "exhaust-test", "filter_subject": "buddy.>",
                  "deliver_policy": "all", "ack_policy": "explicit",
                  "ack_wait": 5000000000, "max_deliver": 3, "replay_policy": "instant"}"#,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = ConsumeFamilies::register(&mut Registry::default()).consumer("exhaust-test");
    let settings = ConsumeSettings {
        definition,
        replicas: 1,
        max_batch: 1,
        max_wait: Duration::ZERO,
        concurrency: 1,
        flush_when_idle: false,
    };
    let running = tokio::spawn(consume::run(
        js.clone(),
        settings,
        Arc::new(AlwaysRetry),
        metrics,
        stopped,
    ));

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "poison-1");
    js.publish_with_headers("buddy.match.created", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let letter = eventually(Duration::from_secs(30), "the dead letter", || async {
        stream_messages(&js, "DEAD_LETTERS")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(letter.subject, "dlq.buddy.match.created");
    assert_eq!(letter.header(dead_letter::DELIVERIES), Some("3"));
    assert_eq!(
        letter.header(dead_letter::SUBJECT),
        Some("buddy.match.created")
    );
    assert_eq!(letter.header(dead_letter::CONSUMER), Some("exhaust-test"));
    assert_eq!(
        letter.header(dead_letter::ORIGINAL_MESSAGE_ID),
        Some("poison-1")
    );
    assert_eq!(
        letter.header(dead_letter::ERROR),
        Some("gave up after 3 deliveries: the dependency is down")
    );
    hookmesh_tests::drained(&js, "BUDDY", "exhaust-test").await;
    assert_eq!(
        stream_messages(&js, "DEAD_LETTERS").await.len(),
        1,
        "dead-lettered once"
    );

    let _ = stop.send(true);
    running.await.unwrap().unwrap();
}
