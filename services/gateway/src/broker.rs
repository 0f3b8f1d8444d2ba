//! What the gateway needs of the message broker, as one seam: publishing
//! envelopes (and whether it can), asking the owning service for a read,
//! the registry of sweep jobs, and a job's events. [`NatsBroker`] is
//! JetStream; [`MemoryBroker`] keeps everything in memory, so that every
//! route can be tested without a broker (`tower::ServiceExt::oneshot`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::subjects::sweep_job_events;
use hookmesh_contracts::sweep_jobs::JobId;
use hookmesh_nats::dead_letters::{self, DlqError, StoredDeadLetter};
use hookmesh_nats::jobs::{JobRegistry, RegistryError};
use hookmesh_nats::subject_matches;

use crate::publish::{OutgoingEvent, PublishError, Published, Publisher};
use crate::trace::{CORRELATION_ID, TRACEPARENT, TraceContext};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A job's events in the order stored: each with its stream sequence (when
/// the broker has one) and its envelope.
pub type JobEvents = BoxStream<'static, Result<(Option<u64>, Bytes), String>>;

/// Longest wait for a service's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a service did not answer a read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("is not running")]
    NoResponders,
    #[error("did not answer in time")]
    TimedOut,
    #[error("is unreachable")]
    Unreachable,
    /// It answered with a refusal: a status code and why.
    #[error("refused ({code}): {status}")]
    Refused { code: u16, status: String },
}

/// The broker, as the routes use it.
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes `events` and waits for every acknowledgement.
    fn publish<'a>(
        &'a self,
        events: Vec<OutgoingEvent>,
        trace: &'a TraceContext,
    ) -> BoxFuture<'a, Result<Vec<Published>, PublishError>>;

    fn is_connected(&self) -> bool;

    /// Whether the streams are in place (ensured since the last connection).
    fn streams_ready(&self) -> bool;

    /// Asks the service at `subject` (NATS request/reply).
    fn ask<'a>(
        &'a self,
        subject: &'static str,
        request: Bytes,
        trace: &'a TraceContext,
    ) -> BoxFuture<'a, Result<Bytes, AskError>>;

    /// The registry of sweep jobs.
    fn jobs(&self) -> BoxFuture<'_, Result<JobRegistry, RegistryError>>;

    /// Every event of `job`, from its first, then live.
    fn job_events<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<JobEvents, String>>;

    /// Every stream with its consumers, for operators.
    fn streams(&self) -> BoxFuture<'_, Result<Vec<StreamView>, String>>;

    /// The newest `limit` messages of `stream`, newest first (direct gets:
    /// no consumer is created).
    fn tail<'a>(
        &'a self,
        stream: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, String>>;

    /// Dead letters whose original subject matches `subject` (all when
    /// `None`), oldest first, at most `limit` (direct gets).
    fn dead_letters<'a>(
        &'a self,
        subject: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadLetter>, DlqError>>;

    /// Publishes dead letter `sequence` again to its original subject and
    /// removes it; returns that subject and its sequence in the stream that
    /// took it.
    fn replay_dead_letter(&self, sequence: u64) -> BoxFuture<'_, Result<(String, u64), DlqError>>;

    /// Removes dead letter `sequence` for good.
    fn purge_dead_letter(&self, sequence: u64) -> BoxFuture<'_, Result<(), DlqError>>;
}

/// A stream as the operator pages show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamView {
    pub name: String,
    pub subjects: Vec<String>,
    pub messages: u64,
    pub bytes: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub first_time: Option<Timestamp>,
    pub last_time: Option<Timestamp>,
    pub consumers: Vec<ConsumerView>,
}

/// A consumer of a stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerView {
    pub name: String,
    pub durable: bool,
    /// Messages not delivered yet.
    pub pending: u64,
    /// Delivered, not acknowledged yet.
    pub ack_pending: usize,
    pub redelivered: usize,
    /// The last stream sequence delivered (its rate is the consumer's).
    pub delivered_sequence: u64,
    /// When the oldest message not acknowledged yet was stored.
    pub oldest_pending: Option<Timestamp>,
}

/// A message of a stream, read directly.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub stream: String,
    pub sequence: u64,
    pub subject: String,
    pub time: Timestamp,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

/// Every header of a message, in order, as name and value.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |value| (name.to_owned(), value.as_str().to_owned()))
        })
        .collect()
}

fn raw_to_stored(stream: &str, message: StreamMessage) -> StoredMessage {
    StoredMessage {
        stream: stream.to_owned(),
        sequence: message.sequence,
        subject: message.subject.to_string(),
        time: Timestamp::from(message.time),
        headers: header_pairs(&message.headers),
        payload: message.payload,
    }
}

/// JetStream.
#[derive(Debug)]
pub struct NatsBroker {
    publisher: Publisher,
    jobs: tokio::sync::OnceCell<JobRegistry>,
}

impl NatsBroker {
    pub fn new(publisher: Publisher) -> Self {
        Self {
            publisher,
            jobs: tokio::sync::OnceCell::new(),
        }
    }
}

impl Broker for NatsBroker {
    fn publish<'a>(
        &'a self,
        events: Vec<OutgoingEvent>,
        trace: &'a TraceContext,
    ) -> BoxFuture<'a, Result<Vec<Published>, PublishError>> {
        Box::pin(self.publisher.publish(events, trace))
    }

    fn is_connected(&self) -> bool {
        self.publisher.is_connected()
    }

    fn streams_ready(&self) -> bool {
        self.publisher.streams_ready()
    }

    fn ask<'a>(
        &'a self,
        subject: &'static str,
        request: Bytes,
        trace: &'a TraceContext,
    ) -> BoxFuture<'a, Result<Bytes, AskError>> {
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT, trace.traceparent.as_str());
            headers.insert(CORRELATION_ID, trace.correlation_id.as_str());
            let asking = self
                .publisher
                .client()
                .request_with_headers(subject, headers, request);
            let answer = match tokio::time::timeout(READ_TIMEOUT, asking).await {
                Err(_) => return Err(AskError::TimedOut),
                Ok(Err(error)) => {
                    return Err(match error.kind() {
                        RequestErrorKind::NoResponders => AskError::NoResponders,
                        RequestErrorKind::TimedOut => AskError::TimedOut,
                        _ => AskError::Unreachable,
                    });
                }
                Ok(Ok(answer)) => answer,
            };
            let refusal = answer.headers.as_ref().and_then(|headers| {
                let code = headers
                    .get(NATS_SERVICE_ERROR_CODE)?
                    .as_str()
                    .parse::<u16>()
                    .ok()?;
                let status = headers
                    .get(NATS_SERVICE_ERROR)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default();
                Some(AskError::Refused { code, status })
            });
            match refusal {
                None => Ok(answer.payload),
                Some(refusal) => Err(refusal),
            }
        })
    }

    fn jobs(&self) -> BoxFuture<'_, Result<JobRegistry, RegistryError>> {
        Box::pin(async move {
            self.jobs
                .get_or_try_init(|| JobRegistry::open_existing(self.publisher.jetstream()))
                .await
                .cloned()
        })
    }

    fn job_events<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<JobEvents, String>> {
        Box::pin(async move {
            let stream = self
                .publisher
                .jetstream()
                .get_stream("SWEEPS")
                .await
                .map_err(|e| e.to_string())?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    filter_subject: sweep_job_events(job.as_str()),
                    deliver_policy: DeliverPolicy::All,
                    ..OrderedConfig::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let messages = consumer.messages().await.map_err(|e| e.to_string())?;
            let events = messages.map(|message| {
                let message = message.map_err(|e| e.to_string())?;
                let sequence = message.info().ok().map(|info| info.stream_sequence);
                Ok((sequence, message.payload.clone()))
            });
            Ok(events.boxed())
        })
    }

    fn streams(&self) -> BoxFuture<'_, Result<Vec<StreamView>, String>> {
        Box::pin(async move {
            let js = self.publisher.jetstream();
            let mut names: Vec<String> = js
                .stream_names()
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            names.sort();
            let mut views = Vec::with_capacity(names.len());
            for name in names {
                let mut stream = js.get_stream(&name).await.map_err(|e| e.to_string())?;
                let info = stream.info().await.map_err(|e| e.to_string())?.clone();
                let time = |count: u64, at| (count > 0).then(|| Timestamp::from(at));
                let mut consumers = Vec::new();
                let mut infos = stream.consumers();
                while let Some(consumer) = infos.next().await {
                    let consumer = consumer.map_err(|e| e.to_string())?;
                    let oldest_pending = if consumer.num_ack_pending > 0 || consumer.num_pending > 0
                    {
                        let filter = match consumer.config.filter_subject.as_str() {
                            "" => ">".to_owned(),
                            only => only.to_owned(),
                        };
                        stream
                            .raw_message_builder()
                            .sequence(consumer.ack_floor.stream_sequence + 1)
                            .next_by_subject(filter)
                            .send()
                            .await
                            .ok()
                            .map(|message| Timestamp::from(message.time))
                    } else {
                        None
                    };
                    consumers.push(ConsumerView {
                        name: consumer.name.clone(),
                        durable: consumer.config.durable_name.is_some(),
                        pending: consumer.num_pending,
                        ack_pending: consumer.num_ack_pending,
                        redelivered: consumer.num_redelivered,
                        delivered_sequence: consumer.delivered.stream_sequence,
                        oldest_pending,
                    });
                }
                views.push(StreamView {
                    subjects: info.config.subjects.clone(),
                    messages: info.state.messages,
                    bytes: info.state.bytes,
                    first_sequence: info.state.first_sequence,
                    last_sequence: info.state.last_sequence,
                    first_time: time(info.state.messages, info.state.first_timestamp),
                    last_time: time(info.state.messages, info.state.last_timestamp),
                    name,
                    consumers,
                });
            }
            Ok(views)
        })
    }

    fn tail<'a>(
        &'a self,
        stream: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, String>> {
        Box::pin(async move {
            let mut handle = self
                .publisher
                .jetstream()
                .get_stream(stream)
                .await
                .map_err(|e| e.to_string())?;
            let state = handle
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .clone();
            let mut messages = Vec::with_capacity(limit);
            let mut sequence = state.last_sequence;
            while messages.len() < limit && sequence >= state.first_sequence.max(1) {
                match handle.get_raw_message(sequence).await {
                    Ok(message) => messages.push(raw_to_stored(stream, message)),
                    // Deleted messages leave gaps.
                    Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => {}
                    Err(error) => return Err(error.to_string()),
                }
                sequence -= 1;
            }
            Ok(messages)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        subject: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadLetter>, DlqError>> {
        Box::pin(dead_letters::list(
            self.publisher.jetstream(),
            subject,
            limit,
        ))
    }

    fn replay_dead_letter(&self, sequence: u64) -> BoxFuture<'_, Result<(String, u64), DlqError>> {
        Box::pin(async move {
            let js = self.publisher.jetstream();
            let letter = dead_letters::get(js, sequence).await?;
            let stored = dead_letters::replay(js, &letter, false).await?;
            Ok((letter.subject, stored))
        })
    }

    fn purge_dead_letter(&self, sequence: u64) -> BoxFuture<'_, Result<(), DlqError>> {
        Box::pin(dead_letters::remove(self.publisher.jetstream(), sequence))
    }
}

/// An event as [`MemoryBroker`] keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub subject: String,
    pub message_id: String,
    pub payload: Bytes,
    pub traceparent: String,
    pub correlation_id: String,
}

/// A broker in memory: it stores what is published (dropping a repeated
/// message id as JetStream's duplicate window does), answers reads as told,
/// and can be taken offline.
#[derive(Debug)]
pub struct MemoryBroker {
    stored: Mutex<Vec<StoredEvent>>,
    offline: AtomicBool,
    jobs: JobRegistry,
    answers: Mutex<HashMap<&'static str, Result<Bytes, AskError>>>,
    dead_letters: Mutex<Vec<StoredDeadLetter>>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self {
            dead_letters: Mutex::default(),
            stored: Mutex::default(),
            offline: AtomicBool::new(false),
            jobs: JobRegistry::in_memory(),
            answers: Mutex::default(),
        }
    }
}

impl MemoryBroker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything stored, in order.
    pub fn stored(&self) -> Vec<StoredEvent> {
        self.stored.lock().expect("never poisoned").clone()
    }

    /// Publishing fails (503) until [`MemoryBroker::online`].
    pub fn offline(&self) {
        self.offline.store(true, Ordering::Relaxed);
    }

    pub fn online(&self) {
        self.offline.store(false, Ordering::Relaxed);
    }

    /// Reads at `subject` get `answer`; unset subjects have no responders.
    pub fn answer(&self, subject: &'static str, answer: Result<Bytes, AskError>) {
        self.answers
            .lock()
            .expect("never poisoned")
            .insert(subject, answer);
    }

    pub fn registry(&self) -> &JobRegistry {
        &self.jobs
    }

    /// Keeps `letter` as a dead letter; its sequence is the next one.
    pub fn dead_letter(&self, mut letter: StoredDeadLetter) -> u64 {
        let mut letters = self.dead_letters.lock().expect("never poisoned");
        letter.sequence = letters.last().map_or(1, |last| last.sequence + 1);
        letters.push(letter);
        letters.last().expect("just pushed").sequence
    }

    fn take_dead_letter(&self, sequence: u64) -> Result<StoredDeadLetter, DlqError> {
        let mut letters = self.dead_letters.lock().expect("never poisoned");
        let index = letters
            .iter()
            .position(|letter| letter.sequence == sequence)
            .ok_or(DlqError::NotFound(sequence))?;
        Ok(letters.remove(index))
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        events: Vec<OutgoingEvent>,
        trace: &'a TraceContext,
    ) -> BoxFuture<'a, Result<Vec<Published>, PublishError>> {
        let published = if self.offline.load(Ordering::Relaxed) {
            Err(PublishError::Disconnected)
        } else {
            let mut stored = self.stored.lock().expect("never poisoned");
            Ok(events
                .into_iter()
                .map(|event| {
                    let earlier = stored.iter().position(|s| s.message_id == event.message_id);
                    match earlier {
                        Some(index) => Published {
                            sequence: index as u64 + 1,
                            duplicate: true,
                        },
                        None => {
                            stored.push(StoredEvent {
                                subject: event.subject,
                                message_id: event.message_id,
                                payload: event.payload,
                                traceparent: event
                                    .traceparent
                                    .unwrap_or_else(|| trace.traceparent.clone()),
                                correlation_id: trace.correlation_id.clone(),
                            });
                            Published {
                                sequence: stored.len() as u64,
                                duplicate: false,
                            }
                        }
                    }
                })
                .collect())
        };
        Box::pin(std::future::ready(published))
    }

    fn is_connected(&self) -> bool {
        !self.offline.load(Ordering::Relaxed)
    }

    fn streams_ready(&self) -> bool {
        self.is_connected()
    }

    fn ask<'a>(
        &'a self,
        subject: &'static str,
        _request: Bytes,
        _trace: &'a TraceContext,
    ) -> BoxFuture<'a, Result<Bytes, AskError>> {
        let answer = self
            .answers
            .lock()
            .expect("never poisoned")
            .get(subject)
            .cloned()
            .unwrap_or(Err(AskError::NoResponders));
        Box::pin(std::future::ready(answer))
    }

    fn jobs(&self) -> BoxFuture<'_, Result<JobRegistry, RegistryError>> {
        Box::pin(std::future::ready(Ok(self.jobs.clone())))
    }

    fn job_events<'a>(&'a self, job: &'a JobId) -> BoxFuture<'a, Result<JobEvents, String>> {
        let filter = sweep_job_events(job.as_str());
        let events: Vec<_> = self
            .stored()
            .into_iter()
            .enumerate()
            .filter(|(_, event)| subject_matches(&filter, &event.subject))
            .map(|(index, event)| Ok((Some(index as u64 + 1), event.payload)))
            .collect();
        Box::pin(std::future::ready(Ok(
            futures_util::stream::iter(events).boxed()
        )))
    }

    fn streams(&self) -> BoxFuture<'_, Result<Vec<StreamView>, String>> {
        let stored = self.stored();
        let view = StreamView {
            name: "MEMORY".to_owned(),
            subjects: vec![">".to_owned()],
            messages: stored.len() as u64,
            bytes: stored.iter().map(|event| event.payload.len() as u64).sum(),
            first_sequence: u64::from(!stored.is_empty()),
            last_sequence: stored.len() as u64,
            first_time: None,
            last_time: None,
            consumers: Vec::new(),
        };
        Box::pin(std::future::ready(Ok(vec![view])))
    }

    fn tail<'a>(
        &'a self,
        _stream: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, String>> {
        let messages = self
            .stored()
            .into_iter()
            .enumerate()
            .rev()
            .take(limit)
            .map(|(index, event)| StoredMessage {
                stream: "MEMORY".to_owned(),
                sequence: index as u64 + 1,
                subject: event.subject,
                time: Timestamp::now(),
                headers: vec![("Nats-Msg-Id".to_owned(), event.message_id)],
                payload: event.payload,
            })
            .collect();
        Box::pin(std::future::ready(Ok(messages)))
    }

    fn dead_letters<'a>(
        &'a self,
        subject: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredDeadLetter>, DlqError>> {
        let letters = self
            .dead_letters
            .lock()
            .expect("never poisoned")
            .iter()
            .filter(|letter| subject.is_none_or(|filter| subject_matches(filter, &letter.subject)))
            .take(limit)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(letters)))
    }

    fn replay_dead_letter(&self, sequence: u64) -> BoxFuture<'_, Result<(String, u64), DlqError>> {
        let replayed = self.take_dead_letter(sequence).map(|letter| {
            let mut stored = self.stored.lock().expect("never poisoned");
            stored.push(StoredEvent {
                message_id: format!("replay:{sequence}"),
                subject: letter.subject.clone(),
                payload: letter.payload,
                traceparent: String::new(),
                correlation_id: String::new(),
            });
            (letter.subject, stored.len() as u64)
        });
        Box::pin(std::future::ready(replayed))
    }

    fn purge_dead_letter(&self, sequence: u64) -> BoxFuture<'_, Result<(), DlqError>> {
        Box::pin(std::future::ready(
            self.take_dead_letter(sequence).map(|_| ()),
        ))
    }
}
