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

/// The stream the message was in.
pub const STREAM: &str = "Hookmesh-Dlq-Stream";
/// The subject it was published to.
pub const SUBJECT: &str = "Hookmesh-Dlq-Subject";
/// Its sequence in that stream.
pub const SEQUENCE: &str = "Hookmesh-Dlq-Sequence";
/// The durable consumer that gave up on it.
pub const CONSUMER: &str = "Hookmesh-Dlq-Consumer";
/// Why.
pub const ERROR: &str = "Hookmesh-Dlq-Error";
/// How many times it was delivered.
pub const DELIVERIES: &str = "Hookmesh-Dlq-Deliveries";
/// When it was dead-lettered.
pub const TIME: &str = "Hookmesh-Dlq-Time";
/// Its original `Nats-Msg-Id`.
pub const ORIGINAL_MESSAGE_ID: &str = "Hookmesh-Dlq-Msg-Id";

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
    let source = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let message = source
        .get_raw_message(advisory.stream_seq)
        .await
        .map_err(|e| e.to_string())?;
    let reason = format!(
        "exhausted its {} deliveries without being acknowledged (the consumer timed out or stopped)",
        advisory.deliveries
    );
    publish(
        js,
        &DeadLetter {
            stream,
            consumer,
            subject: &message.subject,
            sequence: advisory.stream_seq,
            deliveries: advisory.deliveries,
            reason: &reason,
            headers: Some(&message.headers),
            payload: message.payload.clone(),
        },
    )
    .await?;
    tracing::warn!(%consumer, sequence = advisory.stream_seq, "Moved an exhausted message to the dead-letter stream.");
    Ok(())
}

/// The dead-letter stream's name.
pub const DEAD_LETTER_STREAM: &str = "DEAD_LETTERS";

/// A dead letter as the stream holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredDeadLetter {
    /// Its sequence in `DEAD_LETTERS`.
    pub sequence: u64,
    /// When it was dead-lettered.
    pub time: Timestamp,
    /// The subject it was first published to.
    pub subject: String,
    pub stream: String,
    pub original_sequence: u64,
    pub consumer: String,
    pub deliveries: u64,
    pub error: String,
    #[serde(skip)]
    pub headers: HeaderMap,
    #[serde(skip)]
    pub payload: Bytes,
}

/// Why the dead letters could not be read or replayed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead letter with sequence {0}")]
    NotFound(u64),
    #[error("dead letter {sequence} has no {header} header, so it cannot be replayed")]
    Unreplayable { sequence: u64, header: &'static str },
    #[error("{0}")]
    Broker(String),
}

fn broker(error: impl std::fmt::Display) -> DlqError {
    DlqError::Broker(error.to_string())
}

impl StoredDeadLetter {
    fn from_message(message: jetstream::message::StreamMessage) -> Self {
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let subject = header(SUBJECT).unwrap_or_else(|| {
            message
                .subject
                .strip_prefix("dlq.")
                .unwrap_or(&message.subject)
                .to_owned()
        });
        Self {
            sequence: message.sequence,
            time: Timestamp::from(message.time),
            subject,
            stream: header(STREAM).unwrap_or_default(),
            original_sequence: header(SEQUENCE).and_then(|s| s.parse().ok()).unwrap_or(0),
            consumer: header(CONSUMER).unwrap_or_default(),
            deliveries: header(DELIVERIES).and_then(|s| s.parse().ok()).unwrap_or(0),
            error: header(ERROR).unwrap_or_default(),
            headers: message.headers,
            payload: message.payload,
        }
    }
}

/// Dead letters whose original subject matches `filter` (all when
/// `None`), oldest first, at most `limit`.
pub async fn list(
    js: &jetstream::Context,
    filter: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredDeadLetter>, DlqError> {
    let stream = js.get_stream(DEAD_LETTER_STREAM).await.map_err(broker)?;
    let subjects = dead_letter_subject(filter.unwrap_or(">"));
    let mut letters = Vec::new();
    let mut next = 1;
    while letters.len() < limit {
        let found = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subjects.clone())
            .send()
            .await;
        match found {
            Ok(message) => {
                next = message.sequence + 1;
                letters.push(StoredDeadLetter::from_message(message));
            }
            Err(error)
                if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                break;
            }
            Err(error) => return Err(broker(error)),
        }
    }
    Ok(letters)
}

/// One dead letter.
pub async fn get(js: &jetstream::Context, sequence: u64) -> Result<StoredDeadLetter, DlqError> {
    let stream = js.get_stream(DEAD_LETTER_STREAM).await.map_err(broker)?;
    match stream.get_raw_message(sequence).await {
        Ok(message) => Ok(StoredDeadLetter::from_message(message)),
        Err(error) if error.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
            Err(DlqError::NotFound(sequence))
        }
        Err(error) => Err(broker(error)),
    }
}

/// Publishes a dead letter again to its original subject, with its
/// original headers; returns its sequence in the stream that took it.
/// Unless `keep`, it is then removed from the dead-letter stream.
///
/// Its `Nats-Msg-Id` becomes `replay:<dead-letter sequence>:<original id>`:
/// the original id would be dropped by a duplicate window still open, and a
/// replay repeated within the window is dropped instead of applied twice.
pub async fn replay(
    js: &jetstream::Context,
    letter: &StoredDeadLetter,
    keep: bool,
) -> Result<u64, DlqError> {
    if letter.headers.get(SUBJECT).is_none() {
        return Err(DlqError::Unreplayable {
            sequence: letter.sequence,
            header: SUBJECT,
        });
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Hookmesh-Dlq-") || name.eq_ignore_ascii_case("Nats-Msg-Id") {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    let original_id = letter
        .headers
        .get(ORIGINAL_MESSAGE_ID)
        .map(|value| value.as_str().to_owned())
        .unwrap_or_else(|| format!("{}:{}", letter.stream, letter.original_sequence));
    headers.insert(
        "Nats-Msg-Id",
        format!("replay:{}:{original_id}", letter.sequence),
    );
    let message = PublishMessage::build()
        .payload(letter.payload.clone())
        .headers(headers);
    let ack = js
        .send_publish(letter.subject.clone(), message)
        .await
        .map_err(broker)?
        .await
        .map_err(broker)?;
    if !keep {
        let stream = js.get_stream(DEAD_LETTER_STREAM).await.map_err(broker)?;
        stream
            .delete_message(letter.sequence)
            .await
            .map_err(broker)?;
    }
    Ok(ack.sequence)
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
