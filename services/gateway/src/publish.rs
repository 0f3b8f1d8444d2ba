//! Publishing envelopes to JetStream, and keeping the streams in place.
//!
//! A 202 is a promise that nothing is lost, so a publish succeeds only when
//! JetStream's acknowledgement arrives. Every message carries `Nats-Msg-Id`
//! (JetStream drops a redelivery inside the stream's duplicate window and
//! says so in the ack), `traceparent`, the correlation id and the CloudEvents
//! content type. When the client is not connected the gateway answers 503 at
//! once instead of queueing behind a dead connection; the client reconnects
//! by itself, and the stream keeper re-ensures the streams on every
//! (re)connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures_util::future::join_all;
use hookmesh_contracts::envelope::CLOUDEVENTS_CONTENT_TYPE;
use hookmesh_nats::{EnsureError, STREAMS, ensure_streams};
use tokio::sync::{Notify, watch};

use crate::trace::TraceContext;
use crate::trace::{CORRELATION_ID, TRACEPARENT};

/// One envelope to publish.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub subject: String,
    /// `Nats-Msg-Id`: derived from the producer's delivery id.
    pub message_id: String,
    /// The envelope's JSON.
    pub payload: Bytes,
}

/// JetStream's acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// JetStream had already stored a message with this `Nats-Msg-Id`.
    pub duplicate: bool,
}

/// Why an envelope was not made durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the message broker is unreachable; nothing was stored, retry later")]
    Disconnected,
    #[error("no stream stores {0} yet; nothing was stored, retry later")]
    NoStream(String),
    #[error(
        "the message broker did not confirm storage in time; retry later (a retry is deduplicated)"
    )]
    TimedOut,
    #[error("the message broker refused the message ({0}); retry later")]
    Refused(String),
    #[error("the event is larger than the message broker accepts")]
    TooLarge,
}

impl PublishError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::NoStream(_) => "no_stream",
            Self::TimedOut => "timeout",
            Self::Refused(_) => "refused",
            Self::TooLarge => "too_large",
        }
    }
}

/// Publishes envelopes and tracks whether the streams are in place.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    streams_ready: Arc<AtomicBool>,
    reensure: Arc<Notify>,
}

impl Publisher {
    /// `timeout` bounds the wait for each acknowledgement.
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        Self {
            client,
            js,
            streams_ready: Arc::new(AtomicBool::new(false)),
            reensure: Arc::new(Notify::new()),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Whether the streams were ensured since the last (re)connection.
    pub fn streams_ready(&self) -> bool {
        self.streams_ready.load(Ordering::Relaxed)
    }

    /// Publishes `events` and waits for every acknowledgement; sends them all
    /// before waiting, so a batch costs about one round trip.
    pub async fn publish(
        &self,
        events: Vec<OutgoingEvent>,
        trace: &TraceContext,
    ) -> Result<Vec<Published>, PublishError> {
        if !self.is_connected() {
            return Err(PublishError::Disconnected);
        }
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.message_id.as_str());
            headers.insert(TRACEPARENT, trace.traceparent.as_str());
            headers.insert(CORRELATION_ID, trace.correlation_id.as_str());
            headers.insert("Content-Type", CLOUDEVENTS_CONTENT_TYPE);
            let message = PublishMessage::build()
                .payload(event.payload)
                .headers(headers);
            let ack = self
                .js
                .send_publish(event.subject.clone(), message)
                .await
                .map_err(|e| self.classify(e.kind(), &event.subject, &e))?;
            acks.push((event.subject, ack));
        }
        let results = join_all(acks.into_iter().map(|(subject, ack)| async move {
            ack.await
                .map(|ack| Published {
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                })
                .map_err(|e| self.classify(e.kind(), &subject, &e))
        }))
        .await;
        results.into_iter().collect()
    }

    fn classify(
        &self,
        kind: PublishErrorKind,
        subject: &str,
        error: &dyn std::fmt::Display,
    ) -> PublishError {
        match kind {
            PublishErrorKind::StreamNotFound => {
                // A stream was deleted under us (or never created): put it back.
                self.streams_ready.store(false, Ordering::Relaxed);
                self.reensure.notify_one();
                PublishError::NoStream(subject.to_owned())
            }
            PublishErrorKind::TimedOut => PublishError::TimedOut,
            PublishErrorKind::BrokenPipe => PublishError::Disconnected,
            PublishErrorKind::MaxPayloadExceeded => PublishError::TooLarge,
            _ if !self.is_connected() => PublishError::Disconnected,
            _ => PublishError::Refused(error.to_string()),
        }
    }

    /// Ensures the streams now, if the broker is reachable within `wait`.
    /// A definition NATS cannot apply is an error; an unreachable broker is
    /// not (the keeper keeps trying in the background).
    pub async fn ensure_streams_now(
        &self,
        replicas: usize,
        wait: Duration,
    ) -> Result<(), EnsureError> {
        if !hookmesh_nats::wait_connected(&self.client, wait).await {
            tracing::warn!(
                "The message broker is not reachable yet; the gateway answers 503 until it is."
            );
            return Ok(());
        }
        match ensure_streams(&self.js, STREAMS, replicas).await {
            Ok(()) => {
                self.streams_ready.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(error @ EnsureError::Unavailable { .. }) => {
                tracing::warn!(%error, "Streams not ensured yet; retrying in the background.");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Re-ensures the streams whenever the client (re)connects (a new
    /// broker may lack them) or a publish finds one missing, retrying with
    /// backoff until it succeeds; stops at `shutdown`.
    pub async fn keep_streams(
        self,
        replicas: usize,
        mut connects: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        const IDLE: Duration = Duration::from_secs(3600);
        let mut pending = !self.streams_ready();
        connects.borrow_and_update();
        let mut backoff = Duration::from_millis(250);
        loop {
            if *shutdown.borrow() {
                return;
            }
            if pending && self.is_connected() {
                let started = Instant::now();
                match ensure_streams(&self.js, STREAMS, replicas).await {
                    Ok(()) => {
                        self.streams_ready.store(true, Ordering::Relaxed);
                        pending = false;
                        backoff = Duration::from_millis(250);
                        tracing::debug!(elapsed = ?started.elapsed(), "Streams are in place.");
                    }
                    Err(error) => {
                        self.streams_ready.store(false, Ordering::Relaxed);
                        tracing::error!(%error, retry_in = ?backoff, "Could not ensure the streams.");
                    }
                }
            }
            let wait = if pending { backoff } else { IDLE };
            tokio::select! {
                changed = connects.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending = true;
                }
                _ = self.reensure.notified() => pending = true,
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(wait) => {
                    if pending {
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }
}
