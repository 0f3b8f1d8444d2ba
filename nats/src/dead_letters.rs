//! Reading and replaying the dead-letter stream, shared by `hookmesh dlq`
//! and the gateway's dashboard. A list is read by an ordered consumer (in
//! memory, without acknowledgements, gone when the read ends) and one
//! letter by a direct get: looking at dead letters never leaves state
//! behind.
//!
//! A dead letter is kept at `dlq.<original subject>` with the original
//! payload and headers, plus the `Hookmesh-Dlq-*` headers below saying where
//! it came from and why.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::subjects::dead_letter as dead_letter_subject;

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
/// `None`), oldest first, at most `limit`: those in the stream when the
/// read starts. One ordered consumer streams them in batches (10,000
/// letters are one read, not 10,000 round trips).
pub async fn list(
    js: &jetstream::Context,
    filter: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredDeadLetter>, DlqError> {
    use futures_util::StreamExt as _;
    let stream = js.get_stream(DEAD_LETTER_STREAM).await.map_err(broker)?;
    let mut consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: dead_letter_subject(filter.unwrap_or(">")),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(broker)?;
    let mut remaining = consumer.info().await.map_err(broker)?.num_pending;
    let mut letters = Vec::with_capacity(usize::try_from(remaining).unwrap_or(0).min(limit));
    if remaining == 0 || limit == 0 {
        return Ok(letters);
    }
    let mut messages = consumer.messages().await.map_err(broker)?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(broker)?;
        let info = message.info().map_err(broker)?;
        remaining = info.pending;
        letters.push(StoredDeadLetter::from_message(
            jetstream::message::StreamMessage {
                sequence: info.stream_sequence,
                time: info.published,
                subject: message.subject.clone(),
                headers: message.headers.clone().unwrap_or_default(),
                payload: message.payload.clone(),
            },
        ));
        if remaining == 0 || letters.len() >= limit {
            break;
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

/// Removes dead letter `sequence` from the stream for good.
pub async fn remove(js: &jetstream::Context, sequence: u64) -> Result<(), DlqError> {
    let stream = js.get_stream(DEAD_LETTER_STREAM).await.map_err(broker)?;
    match stream.delete_message(sequence).await {
        Ok(_) => Ok(()),
        Err(error) => match error.kind() {
            jetstream::stream::DeleteMessageErrorKind::JetStream(refusal)
                if refusal.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND =>
            {
                Err(DlqError::NotFound(sequence))
            }
            _ => Err(broker(error)),
        },
    }
}
