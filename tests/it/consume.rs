//! The consume loop's dead letters: a message that keeps failing is
//! dead-lettered on its last allowed delivery, with the count and the
//! reason, rather than dropped by the broker; a message whose payload the
//! handler released is dead-lettered whole, copied from the stream.

use std::sync::Arc;
use std::time::Duration;

use hookmesh_nats::{ConsumerDefinition, STREAMS, ensure_streams};
use hookmesh_runtime::consume::{self, ConsumeSettings};
use hookmesh_runtime::dead_letter;
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_runtime::{Delivery, Handler, Outcome};
use hookmesh_tests::{StoredMessage, TestNats, eventually, stream_messages};
use prometheus_client::registry::Registry;

/// A dependency that never comes back.
struct AlwaysRetry;

impl Handler for AlwaysRetry {
    type Arrival = ();

    /// Read when the batch is handled.
    fn arrive(&self, _: &mut Delivery) {}

    async fn handle_arrived(&self, batch: &mut [Delivery], _: Vec<()>) -> Vec<Outcome> {
        batch
            .iter()
            .map(|_| Outcome::Retry {
                delay: Duration::from_millis(50),
                reason: "the dependency is down".to_owned(),
            })
            .collect()
    }
}

/// Reads each payload, lets it go, then finds the message can never be
/// processed: the engine's way with an event the database refuses.
struct ReleaseThenRefuse;

impl Handler for ReleaseThenRefuse {
    type Arrival = ();

    /// Read when the batch is handled.
    fn arrive(&self, _: &mut Delivery) {}

    async fn handle_arrived(&self, batch: &mut [Delivery], _: Vec<()>) -> Vec<Outcome> {
        batch
            .iter_mut()
            .map(|delivery| {
                let read = delivery.payload().len();
                delivery.release_payload();
                assert!(delivery.payload().is_empty());
                Outcome::dead_letter(format!("refused after reading {read} bytes"))
            })
            .collect()
    }
}

/// Publishes one message on `buddy.match.created` to a consumer `durable`
/// run by `handler`, and returns its dead letter once there is exactly one.
async fn dead_letter_of(handler: impl Handler, durable: &'static str) -> StoredMessage {
    let nats = TestNats::start().await;
    let js = nats.jetstream().await;
    ensure_streams(&js, STREAMS, 1).await.unwrap();
    let json = format!(
        r#"{{"durable_name": "{durable}", "filter_subject": "buddy.>",
            "deliver_policy": "all", "ack_policy": "explicit",
            "ack_wait": 5000000000, "max_deliver": 3, "replay_policy": "instant"}}"#
    );
    let definition = ConsumerDefinition {
        stream: "BUDDY",
        file: "consumers/BUDDY.test.json",
        json: Box::leak(json.into_boxed_str()),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = ConsumeFamilies::register(&mut Registry::default()).consumer(durable);
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
        Arc::new(handler),
        metrics,
        stopped,
    ));

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "poison-1");
    headers.insert("X-Correlation-Id", "req-7");
    js.publish_with_headers("buddy.match.created", headers, r#"{"id":"m-1"}"#.into())
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
    hookmesh_tests::drained(&js, "BUDDY", durable).await;
    assert_eq!(
        stream_messages(&js, "DEAD_LETTERS").await.len(),
        1,
        "dead-lettered once"
    );
    let _ = stop.send(true);
    running.await.unwrap().unwrap();

    assert_eq!(letter.subject, "dlq.buddy.match.created");
    assert_eq!(
        letter.header(dead_letter::SUBJECT),
        Some("buddy.match.created")
    );
    assert_eq!(letter.header(dead_letter::CONSUMER), Some(durable));
    assert_eq!(
        letter.header(dead_letter::ORIGINAL_MESSAGE_ID),
        Some("poison-1")
    );
    assert_eq!(letter.header("X-Correlation-Id"), Some("req-7"));
    assert_eq!(
        &letter.payload[..],
        br#"{"id":"m-1"}"#,
        "the original payload"
    );
    letter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_exhausts_its_deliveries_is_dead_lettered_with_the_count() {
    let letter = dead_letter_of(AlwaysRetry, "exhaust-test").await;
    assert_eq!(letter.header(dead_letter::DELIVERIES), Some("3"));
    assert_eq!(
        letter.header(dead_letter::ERROR),
        Some("gave up after 3 deliveries: the dependency is down")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_payload_was_released_is_dead_lettered_whole_from_the_stream() {
    let letter = dead_letter_of(ReleaseThenRefuse, "release-test").await;
    assert_eq!(letter.header(dead_letter::DELIVERIES), Some("1"));
    assert_eq!(
        letter.header(dead_letter::ERROR),
        Some("refused after reading 12 bytes")
    );
}
