//! Where a consumer service's own events go: JetStream, each message
//! acknowledged before it counts as published, or a test's memory. The
//! outbox and the handlers that publish directly (a sweep's progress)
//! publish through this one seam.

use std::future::{Future, IntoFuture as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::future::join_all;
use hookmesh_contracts::envelope::CLOUDEVENTS_CONTENT_TYPE;

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Its `Nats-Msg-Id` (and its key in an outbox table).
    pub msg_id: String,
    pub subject: String,
    /// The CloudEvents envelope, as JSON.
    pub payload: String,
    /// Those of the message that caused it, so its trace and correlation
    /// id go on downstream.
    pub trace: TraceHeaders,
}

impl OutboxMessage {
    /// The same, caused by a message with `trace`.
    pub fn caused_by(mut self, trace: TraceHeaders) -> Self {
        self.trace = trace;
        self
    }
}

/// A message's `traceparent` and `X-Correlation-Id` headers (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub correlation_id: String,
}

tokio::task_local! {
    /// The trace headers of the batch being handled (see [`TraceHeaders::current`]).
    static BATCH_TRACE: TraceHeaders;
}

impl TraceHeaders {
    /// Those of the batch being handled in this task: its last message's,
    /// for events the whole batch caused (a campaign that completed, a
    /// job's next status); empty outside a batch.
    pub fn current() -> Self {
        BATCH_TRACE.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `handling` with `self` as [`TraceHeaders::current`].
    pub async fn scope<F: std::future::Future>(self, handling: F) -> F::Output {
        BATCH_TRACE.scope(self, handling).await
    }

    /// A delivery's, to hand on to what it causes.
    pub fn of(delivery: &crate::consume::Delivery) -> Self {
        Self {
            traceparent: delivery.traceparent().to_owned(),
            correlation_id: delivery.correlation_id().to_owned(),
        }
    }
}

type Published<'a> = Pin<Box<dyn Future<Output = Vec<Result<(), String>>> + Send + 'a>>;

/// Publishes events.
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes `messages` in order, each under its `Nats-Msg-Id`; one
    /// result per message, `Ok` once it is stored. A message that could not
    /// be sent ends the round: it and those after it are `Err`.
    fn publish<'a>(&'a self, messages: &'a [OutboxMessage]) -> Published<'a>;
}

/// JetStream: every message is sent, then every acknowledgement awaited,
/// so a round costs one round trip, not one per message.
#[derive(Debug, Clone)]
pub struct JetStreamSink(pub jetstream::Context);

impl EventSink for JetStreamSink {
    fn publish<'a>(&'a self, messages: &'a [OutboxMessage]) -> Published<'a> {
        Box::pin(async move {
            let mut acks = Vec::with_capacity(messages.len());
            // Each message's producer span, a child of the message that
            // caused it; they end with the acknowledgements.
            let mut producers = Vec::new();
            let mut unsent = None;
            for message in messages {
                let mut publish = PublishMessage::build()
                    .payload(message.payload.clone().into())
                    .message_id(&message.msg_id)
                    .header("Content-Type", CLOUDEVENTS_CONTENT_TYPE);
                let span = hookmesh_nats::trace::producer_span(
                    &message.subject,
                    &message.msg_id,
                    &message.trace.traceparent,
                );
                let traceparent = hookmesh_nats::trace::traceparent_of(&span)
                    .unwrap_or_else(|| message.trace.traceparent.clone());
                producers.push(span);
                if !traceparent.is_empty() {
                    publish =
                        publish.header(hookmesh_nats::trace::TRACEPARENT, traceparent.as_str());
                }
                if !message.trace.correlation_id.is_empty() {
                    publish = publish.header(
                        hookmesh_nats::trace::CORRELATION_ID,
                        message.trace.correlation_id.as_str(),
                    );
                }
                match self.0.send_publish(message.subject.clone(), publish).await {
                    Ok(ack) => acks.push(ack.into_future()),
                    Err(error) => {
                        unsent = Some(error.to_string());
                        break;
                    }
                }
            }
            let mut results: Vec<Result<(), String>> = join_all(acks)
                .await
                .into_iter()
                .map(|acked| acked.map(|_| ()).map_err(|e| e.to_string()))
                .collect();
            drop(producers);
            let reason = unsent.unwrap_or_default();
            results.resize(messages.len(), Err(reason));
            results
        })
    }
}

/// A test's memory: keeps what is published, in order.
#[derive(Debug, Clone, Default)]
pub struct MemorySink(Arc<Mutex<Vec<OutboxMessage>>>);

impl MemorySink {
    pub fn messages(&self) -> Vec<OutboxMessage> {
        self.0.lock().expect("never poisoned").clone()
    }
}

impl EventSink for MemorySink {
    fn publish<'a>(&'a self, messages: &'a [OutboxMessage]) -> Published<'a> {
        self.0
            .lock()
            .expect("never poisoned")
            .extend_from_slice(messages);
        Box::pin(std::future::ready(vec![Ok(()); messages.len()]))
    }
}
