//! The dead-letter stream: where a message goes when it can never be
//! processed, or exhausted its deliveries, instead of vanishing.
//!
//! A dead letter is published to `dlq.<original subject>` with the original
//! payload and headers, plus `Hookmesh-Dlq-*` headers saying where it came
//! from and why. Its `Nats-Msg-Id` is `dlq:<stream>:<sequence>`, so a
//! message dead-lettered twice (by its handler and by the max-deliveries
//! advisory, or after a crash) is kept once. The original message id moves
//! to `Hookmesh-Dlq-Msg-Id`.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt as _;
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::subjects::dead_letter as dead_letter_subject;
use serde::Deserialize;
use tokio::sync::watch;

// Reading and replaying live with the NATS definitions, for the gateway too.
pub use hookmesh_nats::dead_letters::{
    CONSUMER, DEAD_LETTER_STREAM, DELIVERIES, DlqError, ERROR, ORIGINAL_MESSAGE_ID, SEQUENCE,
    STREAM, SUBJECT, StoredDeadLetter, TIME, get, list, replay,
};

/// Longest reason kept in the header.
const REASON_MAX: usize = 1000;

/// A message on its way to the dead-letter stream.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub subject: &'a str,
    pub sequence: u64,
    pub deliveries: u64,
    pub reason: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: Bytes,
}

/// A reason fit for a header: one line, bounded.
fn header_safe(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_MAX)
        .collect()
}

/// Publishes `letter` and waits for JetStream's acknowledgement.
pub async fn publish(js: &jetstream::Context, letter: &DeadLetter<'_>) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    if let Some(original) = letter.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case("Nats-Msg-Id") {
                if let Some(value) = values.first() {
                    headers.insert(ORIGINAL_MESSAGE_ID, value.as_str());
                }
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
    }
    headers.insert(STREAM, letter.stream);
    headers.insert(SUBJECT, letter.subject);
    headers.insert(SEQUENCE, letter.sequence.to_string());
    headers.insert(CONSUMER, letter.consumer);
    headers.insert(ERROR, header_safe(letter.reason));
    headers.insert(DELIVERIES, letter.deliveries.to_string());
    headers.insert(TIME, Timestamp::now().to_rfc3339());
    headers.insert(
        "Nats-Msg-Id",
        format!("dlq:{}:{}", letter.stream, letter.sequence),
    );
    let message = PublishMessage::build()
        .payload(letter.payload.clone())
        .headers(headers);
    js.send_publish(dead_letter_subject(letter.subject), message)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The server's advisory when a message exhausts `max_deliver`.
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
}

/// Dead-letters the messages the server stops redelivering by itself (the
/// handler never decided: it timed out, or the process died on the last
/// delivery). One replica of a consumer handles each advisory.
pub async fn forward_exhausted(
    js: jetstream::Context,
    stream: String,
    consumer: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}");
    let client = js.client();
    let mut advisories = match client.queue_subscribe(subject, consumer.clone()).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%consumer, %error, "Cannot watch for exhausted deliveries.");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            _ = shutdown.changed() => return,
            advisory = advisories.next() => match advisory {
                Some(advisory) => advisory,
                None => return,
            },
        };
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveriesAdvisory>(&advisory.payload)
        else {
            continue;
        };
        // The message is still in the stream (limits retention); copy it.
        for attempt in 1..=5u32 {
            match forward_one(&js, &stream, &consumer, &advisory).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%consumer, sequence = advisory.stream_seq, %error, attempt, "Could not dead-letter an exhausted message yet.");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
            }
        }
    }
}

async fn forward_one(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    advisory: &MaxDeliveriesAdvisory,
) -> Result<(), String> {
    let reason = format!(
        "exhausted its {} deliveries without being acknowledged (the consumer timed out or stopped)",
        advisory.deliveries
    );
    copy_from_stream(
        js,
        stream,
        consumer,
        advisory.stream_seq,
        advisory.deliveries,
        &reason,
    )
    .await?;
    tracing::warn!(%consumer, sequence = advisory.stream_seq, "Moved an exhausted message to the dead-letter stream.");
    Ok(())
}

/// Dead-letters message `sequence` of `stream` as the stream holds it, with
/// its original subject, headers and payload: for a message whose copy in
/// hand is gone or was never there. The streams keep messages by limits,
/// so an unacknowledged message is still there.
pub async fn copy_from_stream(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
    sequence: u64,
    deliveries: u64,
    reason: &str,
) -> Result<(), String> {
    let source = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let message = source
        .get_raw_message(sequence)
        .await
        .map_err(|e| format!("cannot read sequence {sequence} of {stream}: {e}"))?;
    publish(
        js,
        &DeadLetter {
            stream,
            consumer,
            subject: &message.subject,
            sequence,
            deliveries,
            reason,
            headers: Some(&message.headers),
            payload: message.payload.clone(),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_single_bounded_header_lines() {
        assert_eq!(header_safe("bad\r\nvalue"), "bad  value");
        assert_eq!(header_safe(&"x".repeat(5000)).len(), REASON_MAX);
    }
}
