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
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use hookmesh_contracts::subjects::sweep_job_events;
use hookmesh_contracts::sweep_jobs::JobId;
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
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self {
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
}
