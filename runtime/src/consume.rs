//! The consume loop every consumer service runs.
//!
//! A service supplies a [`Handler`] that turns a batch of deliveries into
//! one [`Outcome`] each; this loop does everything else, the same way for
//! every service:
//!
//! - ensures the durable pull consumer from its file in `nats/consumers/`;
//! - hands over batches of up to `max_batch` messages, or fewer when no more
//!   arrive within `max_wait` (0: whatever is there);
//! - keeps the batch's messages alive with progress acks while the handler
//!   works, so a slow step is not redelivered mid-work;
//! - settles each message as its outcome says, and nowhere else:
//!   `Done` → ack, `Retry` → nak with the handler's delay, `Defer` → nak
//!   with a delay that is not a failure, `DeadLetter` → copy to the dead-letter
//!   stream, then terminate. A `Retry` on the last allowed
//!   delivery is dead-lettered instead of dropped;
//! - dead-letters messages the server gives up on by itself (ack timeouts on
//!   the last delivery), from its max-deliveries advisory;
//! - on shutdown, stops fetching, settles what it holds, hands back what it
//!   pulled ahead, and returns.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::{MessagesError, MessagesErrorKind};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use hookmesh_contracts::Timestamp;
use hookmesh_nats::{ConsumerDefinition, EnsureError, ensure_consumer};
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::dead_letter::{self, DeadLetter};
use crate::metrics::ConsumeMetrics;

/// How long, at shutdown, pulled-ahead messages are handed back for; they
/// are redelivered after it.
const RETURN_WINDOW: Duration = Duration::from_secs(1);

/// One message as a handler sees it, in a form of our own: a batch of ten
/// thousand is held at once, so what each message keeps matters (see
/// docs/batch.md, memory).
///
/// The client's message is dropped as soon as it is read. Its payload is a
/// view into the connection's read buffer, which it would keep alive, so it
/// is copied out at its exact size; its header map (a hash map and an
/// allocation per name and value) becomes one block of lines; its reply
/// subject is kept apart, in [`Reply`], for the consume loop's acks. A
/// handler that has read the payload may release it
/// ([`Delivery::release_payload`]): a dead letter then copies the message
/// from the stream, where it stays until acknowledged.
#[derive(Debug)]
pub struct Delivery {
    subject: async_nats::Subject,
    /// `name: value` lines, one per header value, in the order received.
    headers: Box<str>,
    /// `None` once released.
    payload: Option<bytes::Bytes>,
    pub stream_sequence: u64,
    /// Which delivery of this message this is (1 for the first).
    pub delivered: u64,
    /// When the broker stored the message.
    pub published: Timestamp,
}

/// Where a pulled delivery's acknowledgement goes: its reply subject.
#[derive(Debug)]
struct Reply(async_nats::Subject);

impl Reply {
    /// Sends `kind` (ack, nak, progress, term).
    async fn send(
        &self,
        client: &async_nats::Client,
        kind: AckKind,
    ) -> Result<(), async_nats::PublishError> {
        client.publish(self.0.clone(), kind.into()).await
    }
}

impl Delivery {
    /// A delivery made here rather than pulled from a broker: for testing a
    /// handler without one (nothing acknowledges it). It is the first
    /// delivery of sequence 1, stored now.
    pub fn detached(subject: &str, payload: impl Into<bytes::Bytes>) -> Self {
        Self {
            subject: subject.into(),
            headers: Box::default(),
            payload: Some(payload.into()),
            stream_sequence: 1,
            delivered: 1,
            published: Timestamp::now(),
        }
    }

    /// The same, with header `name` set to `value` (replacing its values).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let mut lines = String::new();
        for (line_name, line_value) in header_lines(&self.headers) {
            if line_name != name {
                push_header_line(&mut lines, line_name, line_value);
            }
        }
        push_header_line(&mut lines, name, value);
        self.headers = lines.into_boxed_str();
        self
    }

    /// The same, as delivery `delivered` of stream sequence `sequence`.
    pub fn at(mut self, sequence: u64, delivered: u64) -> Self {
        self.stream_sequence = sequence;
        self.delivered = delivered;
        self
    }

    /// Reads a pulled message into our form, with where its acknowledgement
    /// goes. Messages in a row mostly share their subject, so they share
    /// one copy of it: `previous_subject` is the last one read.
    fn new(
        message: jetstream::Message,
        previous_subject: &mut Option<async_nats::Subject>,
    ) -> Result<(Self, Reply), String> {
        let info = message.info().map_err(|e| e.to_string())?;
        let (stream_sequence, delivered) = (info.stream_sequence, info.delivered.max(1) as u64);
        let published = Timestamp::from(info.published);
        let message = message.message;
        let Some(reply) = message.reply else {
            return Err("a message without a reply subject cannot be acknowledged".to_owned());
        };
        let mut headers = String::new();
        for (name, values) in message.headers.iter().flat_map(|headers| headers.iter()) {
            for value in values {
                push_header_line(&mut headers, name.as_ref(), value.as_str());
            }
        }
        let subject = match previous_subject {
            Some(previous) if *previous == message.subject => previous.clone(),
            _ => previous_subject.insert(message.subject).clone(),
        };
        let delivery = Self {
            subject,
            headers: headers.into_boxed_str(),
            payload: Some(bytes::Bytes::copy_from_slice(&message.payload)),
            stream_sequence,
            delivered,
            published,
        };
        Ok((delivery, Reply(reply)))
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        self.subject.as_str()
    }

    /// The payload; empty once released.
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// Lets the payload go once the handler holds what it read from it.
    /// Should the message be dead-lettered after all, the copy is made from
    /// the stream.
    pub fn release_payload(&mut self) {
        self.payload = None;
    }

    /// The first value of header `name` (names match exactly, as in NATS).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_lines(&self.headers)
            .find(|(line_name, _)| *line_name == name)
            .map(|(_, value)| value)
    }

    /// The correlation id the gateway (or a native publisher) attached.
    pub fn correlation_id(&self) -> &str {
        self.header("X-Correlation-Id").unwrap_or("")
    }

    pub fn traceparent(&self) -> &str {
        self.header("traceparent").unwrap_or("")
    }

    /// The headers as the client's map, for a copy of the message.
    pub(crate) fn header_map(&self) -> async_nats::HeaderMap {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in header_lines(&self.headers) {
            map.append(name, value);
        }
        map
    }
}

/// Adds header `name: value` to a block of header lines.
fn push_header_line(block: &mut String, name: &str, value: &str) {
    block.push_str(name);
    block.push_str(": ");
    block.push_str(value);
    block.push('\n');
}

/// The `(name, value)` pairs of a block of header lines.
fn header_lines(block: &str) -> impl Iterator<Item = (&str, &str)> {
    block.lines().filter_map(|line| line.split_once(": "))
}

/// What to do with a message, decided by the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed, or a duplicate of something already processed: acknowledge.
    Done,
    /// Could succeed later (a dependency is down): redeliver after `delay`.
    Retry { delay: Duration, reason: String },
    /// Can never succeed (invalid, unknown schema version): copy it to the
    /// dead-letter stream with `reason`, then stop redelivering it.
    DeadLetter { reason: String },
    /// Not due yet (a reminder for later): redeliver after `delay`. Nothing
    /// failed, so it is neither logged as a failure nor ever dead-lettered.
    Defer { delay: Duration },
}

impl Outcome {
    /// A retry with seed 000's schedule: 2 s, 4 s, 8 s, … capped at 60 s,
    /// by delivery count.
    pub fn retry(delivered: u64, reason: impl Into<String>) -> Self {
        let exponent = delivered.clamp(1, 6) as u32;
        Self::Retry {
            delay: Duration::from_secs(2u64.pow(exponent)).min(Duration::from_secs(60)),
            reason: reason.into(),
        }
    }

    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Self::DeadLetter {
            reason: reason.into(),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retry { .. } => "retry",
            Self::DeadLetter { .. } => "dead_letter",
            Self::Defer { .. } => "deferred",
        }
    }
}

/// What the broker is told of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Redeliver after the delay.
    Nak(Duration),
    /// Copy to the dead-letter stream with the reason, then terminate.
    DeadLetter(String),
}

impl Settlement {
    /// How `outcome` settles delivery number `delivered` of a consumer that
    /// delivers a message at most `max_deliver` times (0: no limit): a
    /// retry on the last allowed delivery is dead-lettered instead of
    /// dropped; a deferral is never a failure.
    pub fn of(outcome: Outcome, delivered: u64, max_deliver: u64) -> Self {
        match outcome {
            Outcome::Done => Self::Ack,
            Outcome::Defer { delay } => Self::Nak(delay),
            Outcome::Retry { reason, .. } if max_deliver > 0 && delivered >= max_deliver => {
                Self::DeadLetter(format!("gave up after {delivered} deliveries: {reason}"))
            }
            Outcome::Retry { delay, .. } => Self::Nak(delay),
            Outcome::DeadLetter { reason } => Self::DeadLetter(reason),
        }
    }
}

/// A service's processing of batches.
pub trait Handler: Send + Sync + 'static {
    /// What the handler reads of a delivery as it arrives (`()` for one
    /// that reads it when its batch is handled).
    type Arrival: Send + 'static;

    /// Reads `delivery` as it arrives, while its batch fills: a payload
    /// read at once can be let go at once, instead of a batch of them being
    /// held until the batch is complete.
    fn arrive(&self, delivery: &mut Delivery) -> Self::Arrival;

    /// Handles `batch`, with what [`Handler::arrive`] read of each delivery;
    /// returns one outcome per delivery, in order. The batch is lent
    /// mutably so that payloads can be released once read.
    fn handle_arrived(
        &self,
        batch: &mut [Delivery],
        arrivals: Vec<Self::Arrival>,
    ) -> impl Future<Output = Vec<Outcome>> + Send;

    /// Reads and handles a batch assembled at once (tests, tools).
    fn handle(&self, batch: &mut [Delivery]) -> impl Future<Output = Vec<Outcome>> + Send {
        let arrivals = batch
            .iter_mut()
            .map(|delivery| self.arrive(delivery))
            .collect();
        self.handle_arrived(batch, arrivals)
    }
}

/// How a service consumes.
#[derive(Debug, Clone)]
pub struct ConsumeSettings {
    pub definition: ConsumerDefinition,
    pub replicas: usize,
    /// Largest batch handed to the handler.
    pub max_batch: usize,
    /// Longest a partial batch waits for more; zero hands over whatever has
    /// arrived.
    pub max_wait: Duration,
    /// Batches handled at once. More than one overlaps one batch's database
    /// round trips with the next one's reading and deduplication; the
    /// handler must then give the same result whatever order batches
    /// commit in (every service's state only moves forward, so it does).
    pub concurrency: usize,
    /// Seed 004's adaptive batching: while a worker is idle, a partial
    /// batch is handed over as soon as no further message is waiting, so
    /// a trickle is handled within milliseconds; while every worker is
    /// busy, the batch keeps filling (up to `max_batch`, or `max_wait`),
    /// so a backlog goes in full batches. Off: partial batches always wait
    /// `max_wait`.
    pub flush_when_idle: bool,
}

/// Why consuming could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Definition(#[from] EnsureError),
    #[error("cannot pull from consumer {consumer}: {reason}")]
    Pull { consumer: String, reason: String },
}

/// Runs `handler` over the consumer until `shutdown` turns true.
pub async fn run<H: Handler>(
    js: jetstream::Context,
    settings: ConsumeSettings,
    handler: Arc<H>,
    metrics: ConsumeMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConsumeError> {
    let consumer = ensure_consumer(&js, &settings.definition, settings.replicas).await?;
    let config = consumer.cached_info().config.clone();
    let durable = settings.definition.durable_name();
    let settler = Arc::new(Settler {
        js: js.clone(),
        client: js.client(),
        stream: settings.definition.stream.to_owned(),
        consumer: durable.clone(),
        max_deliver: u64::try_from(config.max_deliver).unwrap_or(0),
        metrics: metrics.clone(),
        progress_every: (config.ack_wait / 3).max(Duration::from_millis(200)),
    });
    tokio::spawn(dead_letter::forward_exhausted(
        js.clone(),
        settings.definition.stream.to_owned(),
        durable.clone(),
        shutdown.clone(),
    ));
    let pull_error = |error: &dyn std::fmt::Display| ConsumeError::Pull {
        consumer: durable.clone(),
        reason: error.to_string(),
    };
    // Pull ahead one batch beyond those being handled, so the next is
    // waiting, and no more: a message waiting here gets no progress acks,
    // and a slow handler (the Trading API's 10 s calls) must not let it
    // outlive its ack wait. Within what the consumer lets be unacknowledged.
    let ack_pending = usize::try_from(config.max_ack_pending).unwrap_or(0);
    let concurrency = settings.concurrency.max(1);
    let mut pull_batch = settings.max_batch * (concurrency + 1);
    if ack_pending > 0 {
        pull_batch = pull_batch.min(ack_pending);
    }
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(pull_batch)
        .heartbeat(Duration::from_secs(15))
        .messages()
        .await
        .map_err(|e| pull_error(&e))?;
    let mut previous_subject = None;
    let mut batch: Vec<Delivery> = Vec::with_capacity(settings.max_batch);
    let mut replies: Vec<Reply> = Vec::with_capacity(settings.max_batch);
    let mut arrivals: Vec<H::Arrival> = Vec::with_capacity(settings.max_batch);
    let mut deadline = None;
    let mut in_flight = FuturesUnordered::new();
    // A macro rather than a closure: it awaits, and borrows the loop's
    // state mutably alongside the select below.
    macro_rules! hand_over {
        () => {{
            if !batch.is_empty() {
                while in_flight.len() >= concurrency {
                    in_flight.next().await;
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(settings.max_batch));
                let full_replies =
                    std::mem::replace(&mut replies, Vec::with_capacity(settings.max_batch));
                let full_arrivals =
                    std::mem::replace(&mut arrivals, Vec::with_capacity(settings.max_batch));
                // A task of its own, so that deduplicating, applying and
                // settling one batch run beside the pulling of the next.
                in_flight.push(tokio::spawn(settler.clone().process(
                    handler.clone(),
                    full,
                    full_replies,
                    full_arrivals,
                )));
            }
        }};
    }
    // The caller restarts the loop; what is in hand is finished first, as
    // cancelling a handler mid-work would leave its messages to their ack
    // wait.
    macro_rules! end_pulling {
        ($reason:expr) => {{
            hand_over!();
            while in_flight.next().await.is_some() {}
            return Err(pull_error($reason));
        }};
    }
    let idle_flush = |batch: &Vec<Delivery>, busy: usize| {
        settings.flush_when_idle && !batch.is_empty() && busy < concurrency
    };
    tracing::info!(consumer = %durable, stream = settings.definition.stream, "Consuming.");
    loop {
        let flush_due = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
            Some(_) = in_flight.next(), if !in_flight.is_empty() => {}
            next = messages.next() => match next {
                Some(Ok(message)) => match Delivery::new(message, &mut previous_subject) {
                    Ok((mut delivery, reply)) => {
                        if batch.is_empty() {
                            deadline = Some(tokio::time::Instant::now() + settings.max_wait);
                        }
                        arrivals.push(handler.arrive(&mut delivery));
                        batch.push(delivery);
                        replies.push(reply);
                        if batch.len() >= settings.max_batch {
                            hand_over!();
                            deadline = None;
                        }
                    }
                    Err(reason) => tracing::warn!(consumer = %durable, %reason, "A message without JetStream metadata was skipped."),
                },
                // The consumer or its stream is gone: its deletion was
                // announced, or a pull found no one to answer it (the
                // notice can be missed). Pulling again cannot succeed;
                // the caller ensures the consumer again.
                Some(Err(error)) if consumer_gone(&error) => {
                    end_pulling!(&error);
                }
                Some(Err(error)) => {
                    // Missed heartbeats and similar: the stream carries on.
                    tracing::warn!(consumer = %durable, %error, "Pulling messages failed; continuing.");
                }
                None => end_pulling!(&"the message stream ended"),
            },
            // Polled only when no message is ready (biased): a worker is
            // idle, so waiting for more would only add latency.
            () = std::future::ready(()), if idle_flush(&batch, in_flight.len()) => {
                hand_over!();
                deadline = None;
            }
            () = flush_due => {
                hand_over!();
                deadline = None;
            }
        }
    }
    // Settle what is in hand before returning. Messages pulled ahead but
    // not yet handed over go back (a nak with a short delay, so this loop
    // does not see them again) rather than waiting out their ack wait
    // before another consumer gets them.
    hand_over!();
    let mut returned = 0;
    let returning_until = tokio::time::Instant::now() + RETURN_WINDOW;
    while tokio::time::Instant::now() < returning_until {
        match tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
            Ok(Some(Ok(message))) => {
                let _ = message.ack_with(AckKind::Nak(Some(RETURN_WINDOW))).await;
                returned += 1;
            }
            _ => break,
        }
    }
    drop(messages);
    if returned > 0 {
        tracing::info!(consumer = %durable, returned, "Returned the messages pulled ahead.");
    }
    while in_flight.next().await.is_some() {}
    // Acks and naks are buffered writes: push them out before the
    // connection goes, or the broker redelivers after the ack wait.
    if tokio::time::timeout(Duration::from_secs(5), js.client().flush())
        .await
        .is_err()
    {
        tracing::warn!(consumer = %durable, "The last acknowledgements could not be flushed in time.");
    }
    tracing::info!(consumer = %durable, "Stopped consuming.");
    Ok(())
}

/// Whether a pull failed because its consumer or stream no longer exists.
fn consumer_gone(error: &MessagesError) -> bool {
    matches!(
        error.kind(),
        MessagesErrorKind::ConsumerDeleted | MessagesErrorKind::NoResponders
    )
}

/// Applies outcomes to messages: the one place where ack, nak, term and
/// dead-lettering are decided.
struct Settler {
    js: jetstream::Context,
    /// Where acknowledgements go out.
    client: async_nats::Client,
    stream: String,
    consumer: String,
    max_deliver: u64,
    metrics: ConsumeMetrics,
    /// How often the messages of a batch being handled are kept alive.
    progress_every: Duration,
}

impl Settler {
    /// Handles `batch` in a span naming the consumer and, for a batch of
    /// one, the message's correlation id, so its log lines group. When
    /// spans are exported it is OpenTelemetry's consumer span: a child of
    /// the message's producer span for a batch of one, else linked to each
    /// message's.
    async fn process<H: Handler>(
        self: Arc<Self>,
        handler: Arc<H>,
        batch: Vec<Delivery>,
        replies: Vec<Reply>,
        arrivals: Vec<H::Arrival>,
    ) {
        let span = tracing::info_span!(
            "batch",
            otel.name = %format_args!("process {}", self.stream),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = tracing::field::Empty,
            messaging.consumer.group.name = %self.consumer,
            messaging.batch.message_count = batch.len() as i64,
            consumer = %self.consumer,
            size = batch.len(),
            first_sequence = batch.first().map_or(0, |d| d.stream_sequence),
            correlation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if let [only] = batch.as_slice() {
            span.record("correlation_id", only.correlation_id());
            span.record("messaging.destination.name", only.subject());
            hookmesh_nats::trace::set_parent(&span, only.traceparent());
            // Without an exporter, the ids the message came with.
            if let Some(context) = hookmesh_nats::trace::parse(only.traceparent()) {
                span.record("trace_id", format!("{:032x}", context.trace_id()));
            }
        } else if hookmesh_nats::trace::enabled() {
            for delivery in &batch {
                hookmesh_nats::trace::link(&span, delivery.traceparent());
            }
        }
        hookmesh_nats::trace::record_ids(&span);
        self.process_in_span(handler, batch, replies, arrivals)
            .instrument(span)
            .await;
    }

    async fn process_in_span<H: Handler>(
        self: Arc<Self>,
        handler: Arc<H>,
        mut batch: Vec<Delivery>,
        replies: Vec<Reply>,
        arrivals: Vec<H::Arrival>,
    ) {
        let started = Instant::now();
        let outcomes = {
            let client = &self.client;
            let replies = &replies;
            let trace = batch
                .last()
                .map(crate::publish::TraceHeaders::of)
                .unwrap_or_default();
            let handling = trace.scope(handler.handle_arrived(&mut batch, arrivals));
            tokio::pin!(handling);
            let mut progress = tokio::time::interval(self.progress_every);
            progress.tick().await;
            loop {
                tokio::select! {
                    outcomes = &mut handling => break outcomes,
                    _ = progress.tick() => {
                        for reply in replies {
                            let _ = reply.send(client, AckKind::Progress).await;
                        }
                    }
                }
            }
        };
        self.metrics
            .handled(batch.len(), started.elapsed().as_secs_f64());
        if outcomes.len() != batch.len() {
            tracing::error!(
                consumer = %self.consumer,
                expected = batch.len(),
                got = outcomes.len(),
                "The handler returned the wrong number of outcomes; retrying the batch."
            );
        }
        let outcomes = outcomes
            .into_iter()
            .chain(std::iter::repeat(Outcome::retry(1, "no outcome")));
        // The acks go out back to back into the connection's write buffer,
        // which sends them together; the rarer outcomes take their own way.
        let settling = Instant::now();
        let mut acked = 0;
        for ((delivery, reply), outcome) in batch.into_iter().zip(replies).zip(outcomes) {
            if outcome != Outcome::Done {
                self.settle(delivery, reply, outcome).await;
                continue;
            }
            acked += 1;
            if let Err(error) = reply.send(&self.client, AckKind::Ack).await {
                // The broker redelivers after ack_wait; idempotency makes that safe.
                tracing::warn!(consumer = %self.consumer, %error, "Could not acknowledge a message to the broker.");
            }
        }
        self.metrics.settled(Outcome::Done.label(), acked);
        self.metrics.settled_batch(settling.elapsed().as_secs_f64());
    }

    async fn settle(&self, delivery: Delivery, reply: Reply, outcome: Outcome) {
        let client = &self.client;
        let retry_reason = match &outcome {
            Outcome::Retry { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        let label = outcome.label();
        let settlement = Settlement::of(outcome, delivery.delivered, self.max_deliver);
        self.metrics.settled(
            match settlement {
                Settlement::DeadLetter(_) => "dead_letter",
                _ => label,
            },
            1,
        );
        let settled = match settlement {
            Settlement::Ack => reply.send(client, AckKind::Ack).await,
            Settlement::Nak(delay) => {
                if let Some(reason) = retry_reason {
                    tracing::warn!(
                        consumer = %self.consumer,
                        subject = %delivery.subject(),
                        stream_sequence = delivery.stream_sequence,
                        delivery_attempt = delivery.delivered,
                        correlation_id = delivery.correlation_id(),
                        retry_in = ?delay,
                        %reason,
                        "Processing failed; the message will be redelivered."
                    );
                }
                reply.send(client, AckKind::Nak(Some(delay))).await
            }
            Settlement::DeadLetter(reason) => {
                let copied = match &delivery.payload {
                    Some(payload) => {
                        let letter = DeadLetter {
                            stream: &self.stream,
                            consumer: &self.consumer,
                            subject: delivery.subject(),
                            sequence: delivery.stream_sequence,
                            deliveries: delivery.delivered,
                            reason: &reason,
                            headers: Some(&delivery.header_map()),
                            payload: payload.clone(),
                        };
                        dead_letter::publish(&self.js, &letter).await
                    }
                    // Released by the handler: the stream still holds it,
                    // as it is not acknowledged.
                    None => {
                        dead_letter::copy_from_stream(
                            &self.js,
                            &self.stream,
                            &self.consumer,
                            delivery.stream_sequence,
                            delivery.delivered,
                            &reason,
                        )
                        .await
                    }
                };
                match copied {
                    Ok(()) => {
                        tracing::warn!(
                            consumer = %self.consumer,
                            subject = %delivery.subject(),
                            stream_sequence = delivery.stream_sequence,
                            delivery_attempt = delivery.delivered,
                            correlation_id = delivery.correlation_id(),
                            %reason,
                            "Moved a message to the dead-letter stream."
                        );
                        self.metrics.dead_lettered();
                        reply.send(client, AckKind::Term).await
                    }
                    Err(error) => {
                        tracing::error!(consumer = %self.consumer, %error, "Could not dead-letter a message; it will be redelivered.");
                        reply
                            .send(client, AckKind::Nak(Some(Duration::from_secs(5))))
                            .await
                    }
                }
            }
        };
        if let Err(error) = settled {
            // The broker redelivers after ack_wait; idempotency makes that safe.
            tracing::warn!(consumer = %self.consumer, %error, "Could not settle a message with the broker.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_2_4_8_schedule_and_are_capped() {
        let delays: Vec<_> = (1..=8)
            .map(|delivered| match Outcome::retry(delivered, "x") {
                Outcome::Retry { delay, .. } => delay.as_secs(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn outcomes_settle_as_acks_naks_and_dead_letters() {
        let retry = || Outcome::Retry {
            delay: Duration::from_secs(4),
            reason: "db away".to_owned(),
        };
        assert_eq!(Settlement::of(Outcome::Done, 1, 3), Settlement::Ack);
        assert_eq!(
            Settlement::of(retry(), 2, 3),
            Settlement::Nak(Duration::from_secs(4))
        );
        assert_eq!(
            Settlement::of(retry(), 3, 3),
            Settlement::DeadLetter("gave up after 3 deliveries: db away".to_owned())
        );
        assert_eq!(
            Settlement::of(retry(), 30, 0),
            Settlement::Nak(Duration::from_secs(4)),
            "no limit, no giving up"
        );
        let defer = Outcome::Defer {
            delay: Duration::from_secs(60),
        };
        assert_eq!(
            Settlement::of(defer, 99, 3),
            Settlement::Nak(Duration::from_secs(60)),
            "a deferral is never a failure"
        );
        assert_eq!(
            Settlement::of(Outcome::dead_letter("bad"), 1, 3),
            Settlement::DeadLetter("bad".to_owned())
        );
    }

    #[test]
    fn detached_deliveries_carry_what_a_handler_reads() {
        let delivery = Delivery::detached("buddy.match.created", &b"{}"[..])
            .with_header("X-Correlation-Id", "req-1")
            .at(42, 3);
        assert_eq!(delivery.subject(), "buddy.match.created");
        assert_eq!(delivery.payload(), b"{}");
        assert_eq!(delivery.correlation_id(), "req-1");
        assert_eq!((delivery.stream_sequence, delivery.delivered), (42, 3));
    }

    #[test]
    fn headers_are_read_from_their_block_by_exact_name() {
        let delivery = Delivery::detached("s", &b""[..])
            .with_header("traceparent", "00-aa-bb-01")
            .with_header("X-Note", "a: b")
            .with_header("traceparent", "00-cc-dd-01");
        assert_eq!(delivery.traceparent(), "00-cc-dd-01", "replaced");
        assert_eq!(delivery.header("X-Note"), Some("a: b"));
        assert_eq!(delivery.header("x-note"), None);
        assert_eq!(delivery.correlation_id(), "");
        let map = delivery.header_map();
        assert_eq!(map.get("X-Note").map(|v| v.as_str()), Some("a: b"));
        assert_eq!(map.iter().count(), 2);
    }
}
