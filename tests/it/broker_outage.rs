//! A broker that goes away: the gateway answers 503 with Retry-After (a 202
//! is a promise it cannot keep then), and recovers by itself when the broker
//! returns — no restart.

use std::time::Duration;

use hookmesh_tests::{TestClient as _, eventually, stream_messages};
use reqwest::StatusCode;

use crate::deliveries::{self, buddy_body};
use crate::mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_503_while_the_broker_is_down_and_recovers_by_itself() {
    let (mut nats, gateway) = mesh().await;
    let first = serde_json::to_vec(&buddy_body("e-1")).unwrap();
    let status = deliveries::buddy(&gateway, "w-1", &first)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::ACCEPTED);

    nats.stop().await;
    let second = serde_json::to_vec(&buddy_body("e-2")).unwrap();
    let refused = eventually(
        Duration::from_secs(15),
        "a 503 while the broker is down",
        || async {
            let response = deliveries::buddy(&gateway, "w-2", &second)
                .send()
                .await
                .ok()?;
            (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
        },
    )
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "broker_unavailable");
    let (status, ready) = gateway.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["reason"], "the message broker is not connected");

    nats.restart().await;
    eventually(
        Duration::from_secs(30),
        "a 202 once the broker is back",
        || async {
            let response = deliveries::buddy(&gateway, "w-2", &second)
                .send()
                .await
                .ok()?;
            (response.status() == StatusCode::ACCEPTED).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "readiness once the broker is back",
        || async {
            let response = gateway.http.get(gateway.url("/readyz")).send().await.ok()?;
            (response.status() == StatusCode::OK).then_some(())
        },
    )
    .await;

    // The store survived the restart, and the delivery refused during the
    // outage is stored once, however often it was retried.
    let js = nats.jetstream().await;
    let ids: Vec<String> = stream_messages(&js, "BUDDY")
        .await
        .iter()
        .map(|m| m.header("Nats-Msg-Id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["buddy:w-1", "buddy:w-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_the_gateway_is_recreated() {
    let (nats, gateway) = mesh().await;
    let js = nats.jetstream().await;
    js.delete_stream("BUDDY").await.unwrap();
    let body = serde_json::to_vec(&buddy_body("e-1")).unwrap();
    let first = deliveries::buddy(&gateway, "w-1", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    eventually(
        Duration::from_secs(15),
        "a 202 once the stream is back",
        || async {
            let response = deliveries::buddy(&gateway, "w-1", &body)
                .send()
                .await
                .ok()?;
            (response.status() == StatusCode::ACCEPTED).then_some(())
        },
    )
    .await;
    assert_eq!(stream_messages(&js, "BUDDY").await.len(), 1);
}
