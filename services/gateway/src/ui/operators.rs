//! Operator pages (admin and read-only admin keys): the overview, streams
//! and consumers, the live tail of a stream, and dead letters with
//! filter → count → replay and purge.

use std::sync::atomic::Ordering;
use std::time::Instant;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use hookmesh_contracts::Timestamp;
use hookmesh_nats::dead_letters::StoredDeadLetter;

use super::{Layout, UiError, Viewer, field, form_pairs, html, same_origin, utc};
use crate::Gateway;
use crate::broker::{AskError, StoredMessage};
use crate::error::Rejection;
use crate::operators::{Candidate, MessageFilter, ReplayOutcome, StreamRow, filter_from_pairs};
use crate::trace::TraceContext;

/// Dead letters shown on one page.
const LETTERS_SHOWN: usize = 200;
/// Newest messages of a stream the tail reads, and shows.
const TAIL_READ: usize = 500;
const TAIL_SHOWN: usize = 50;

/// The services that answer reads, by their NATS services API name.
const SERVICES: &[(&str, &str)] = &[
    ("sweep-worker", "$SRV.PING.hookmesh-sweeps"),
    ("csr-consumer", "$SRV.PING.hookmesh-csr"),
    ("batch-processor", "$SRV.PING.hookmesh-batch"),
];

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/ui/overview", get(overview))
        .route("/ui/streams", get(streams))
        .route("/ui/tail", get(tail))
        .route("/ui/tail/rows", get(tail_rows))
        .route("/ui/dead-letters", get(dead_letters))
        .route("/ui/dead-letters/confirm", post(confirm))
        .route("/ui/dead-letters/replay", post(replay))
        .route("/ui/dead-letters/purge", post(purge))
        .route("/ui/dead-letters/{sequence}", get(dead_letter))
}

/// "3 min 20 s" since `time`.
fn age(time: Timestamp) -> String {
    let seconds = Timestamp::now()
        .unix_seconds()
        .saturating_sub(time.unix_seconds())
        .max(0);
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn per_second(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |rate| format!("{rate:.1}/s"))
}

fn bytes(count: u64) -> String {
    match count {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// A service's readiness, as the overview shows it.
struct ServiceHealth {
    name: &'static str,
    up: bool,
    detail: String,
}

struct Figure {
    label: &'static str,
    value: String,
    id: &'static str,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    services: Vec<ServiceHealth>,
    figures: Vec<Figure>,
}

async fn overview(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
) -> Result<Response, UiError> {
    viewer.operator("The overview")?;
    let mut services = vec![ServiceHealth {
        name: "gateway",
        up: gateway.broker.is_connected() && gateway.broker.streams_ready(),
        detail: match (
            gateway.broker.is_connected(),
            gateway.broker.streams_ready(),
        ) {
            (true, true) => "broker connected, streams in place".to_owned(),
            (true, false) => "broker connected, streams not ensured yet".to_owned(),
            _ => "broker unreachable".to_owned(),
        },
    }];
    for &(name, subject) in SERVICES {
        let started = Instant::now();
        let answer = gateway.broker.ask(subject, Bytes::new(), &trace).await;
        services.push(ServiceHealth {
            name,
            up: answer.is_ok(),
            detail: match answer {
                Ok(_) => format!("answered in {} ms", started.elapsed().as_millis()),
                Err(AskError::NoResponders) => "not running".to_owned(),
                Err(error) => error.to_string(),
            },
        });
    }
    let totals = gateway.metrics.totals();
    let rate = |key: &str, value: u64| per_second(gateway.rates.observe(key, value));
    let requests = totals.requests.load(Ordering::Relaxed);
    let client_errors = totals.client_errors.load(Ordering::Relaxed);
    let server_errors = totals.server_errors.load(Ordering::Relaxed);
    let events = totals.events.load(Ordering::Relaxed);
    let mut figures = vec![
        Figure {
            label: "Requests",
            value: format!("{requests} ({})", rate("overview:requests", requests)),
            id: "requests",
        },
        Figure {
            label: "Events stored",
            value: format!("{events} ({})", rate("overview:events", events)),
            id: "events",
        },
        Figure {
            label: "4xx answers",
            value: format!("{client_errors} ({})", rate("overview:4xx", client_errors)),
            id: "client-errors",
        },
        Figure {
            label: "5xx answers",
            value: format!("{server_errors} ({})", rate("overview:5xx", server_errors)),
            id: "server-errors",
        },
    ];
    match gateway.stream_rows().await {
        Ok(rows) => {
            let dead = rows
                .iter()
                .find(|row| row.stream.name == hookmesh_nats::dead_letters::DEAD_LETTER_STREAM)
                .map_or(0, |row| row.stream.messages);
            let oldest = rows
                .iter()
                .flat_map(|row| row.stream.consumers.iter())
                .filter_map(|consumer| consumer.oldest_pending)
                .min();
            figures.push(Figure {
                label: "Dead letters",
                value: dead.to_string(),
                id: "dead-letters",
            });
            figures.push(Figure {
                label: "Oldest pending message",
                value: oldest.map_or_else(|| "none pending".to_owned(), age),
                id: "oldest-pending",
            });
        }
        Err(error) => figures.push(Figure {
            label: "Streams",
            value: error.to_string(),
            id: "streams-error",
        }),
    }
    Ok(html(&OverviewPage {
        layout: viewer.layout("Overview", "overview"),
        services,
        figures,
    }))
}

struct ConsumerLine {
    name: String,
    durable: bool,
    pending: u64,
    ack_pending: usize,
    redelivered: usize,
    oldest_pending: Option<String>,
    oldest_age: String,
    rate: String,
}

struct StreamLine {
    name: String,
    subjects: String,
    messages: u64,
    bytes: String,
    first_time: Option<String>,
    last_time: Option<String>,
    rate: String,
    consumers: Vec<ConsumerLine>,
}

impl From<StreamRow> for StreamLine {
    fn from(row: StreamRow) -> Self {
        let stream = row.stream;
        Self {
            subjects: stream.subjects.join(", "),
            messages: stream.messages,
            bytes: bytes(stream.bytes),
            first_time: stream.first_time.as_ref().map(utc),
            last_time: stream.last_time.as_ref().map(utc),
            rate: per_second(row.rate),
            consumers: stream
                .consumers
                .into_iter()
                .zip(row.consumer_rates)
                .map(|(consumer, rate)| ConsumerLine {
                    oldest_age: consumer.oldest_pending.map_or_else(|| "—".to_owned(), age),
                    oldest_pending: consumer.oldest_pending.as_ref().map(utc),
                    name: consumer.name,
                    durable: consumer.durable,
                    pending: consumer.pending,
                    ack_pending: consumer.ack_pending,
                    redelivered: consumer.redelivered,
                    rate: per_second(rate),
                })
                .collect(),
            name: stream.name,
        }
    }
}

#[derive(Template)]
#[template(path = "streams.html")]
struct StreamsPage {
    layout: Layout,
    streams: Vec<StreamLine>,
}

async fn streams(State(gateway): State<Gateway>, viewer: Viewer) -> Result<Response, UiError> {
    viewer.operator("Streams and consumers")?;
    let rows = gateway.stream_rows().await?;
    Ok(html(&StreamsPage {
        layout: viewer.layout("Streams and consumers", "streams"),
        streams: rows.into_iter().map(StreamLine::from).collect(),
    }))
}

/// The filter form's values, to show them again.
#[derive(Default)]
struct FilterForm {
    subject: String,
    source: String,
    event_type: String,
    since: String,
    until: String,
    payload: String,
    error: String,
}

impl FilterForm {
    fn of(pairs: &[(String, String)]) -> Self {
        let value = |name| field(pairs, name).unwrap_or("").to_owned();
        Self {
            subject: value("subject"),
            source: value("source"),
            event_type: value("type"),
            since: value("since"),
            until: value("until"),
            payload: value("payload"),
            error: value("error"),
        }
    }
}

fn filter_of(pairs: &[(String, String)]) -> Result<MessageFilter, UiError> {
    filter_from_pairs(pairs).map_err(|reason| UiError::Page {
        status: StatusCode::BAD_REQUEST,
        message: reason,
    })
}

/// Payload pretty-printed when it is JSON.
fn pretty(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|json| serde_json::to_string_pretty(&json).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

struct TailLine {
    sequence: u64,
    subject: String,
    time: String,
    event_type: String,
    source: String,
    headers: Vec<(String, String)>,
    payload: String,
}

impl From<StoredMessage> for TailLine {
    fn from(message: StoredMessage) -> Self {
        let envelope: serde_json::Value =
            serde_json::from_slice(&message.payload).unwrap_or_default();
        let text = |name: &str| {
            envelope
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        Self {
            sequence: message.sequence,
            subject: message.subject,
            time: utc(&message.time),
            event_type: text("type"),
            source: text("source"),
            headers: message.headers,
            payload: pretty(&message.payload),
        }
    }
}

#[derive(Template)]
#[template(path = "tail_rows.html")]
struct TailRows {
    lines: Vec<TailLine>,
}

#[derive(Template)]
#[template(path = "tail.html")]
struct TailPage {
    layout: Layout,
    stream: String,
    streams: Vec<String>,
    form: FilterForm,
    rows: String,
}

/// The newest messages of the chosen stream that pass the filter.
async fn tail_lines(
    gateway: &Gateway,
    pairs: &[(String, String)],
) -> Result<(String, Vec<TailLine>), UiError> {
    let stream = field(pairs, "stream").unwrap_or("BUDDY").to_owned();
    let filter = filter_of(pairs)?;
    let messages = gateway
        .broker
        .tail(&stream, TAIL_READ)
        .await
        .map_err(|error| match error.contains("not found") {
            true => UiError::not_found(format!("There is no stream {stream:?}.")),
            false => UiError::from(Rejection::ServiceUnavailable(error)),
        })?;
    let lines = messages
        .into_iter()
        .filter(|message| {
            filter.matches(&Candidate {
                subject: &message.subject,
                time: message.time,
                payload: &message.payload,
                error: None,
            })
        })
        .take(TAIL_SHOWN)
        .map(TailLine::from)
        .collect();
    Ok((stream, lines))
}

async fn tail(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    viewer.operator("The tail view")?;
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let (stream, lines) = tail_lines(&gateway, &pairs).await?;
    let mut streams: Vec<String> = gateway
        .stream_rows()
        .await?
        .into_iter()
        .map(|row| row.stream.name)
        .collect();
    streams.sort();
    let rows = TailRows { lines }.render().map_err(|e| UiError::Page {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: e.to_string(),
    })?;
    Ok(html(&TailPage {
        layout: viewer.layout(format!("Tail of {stream}"), "tail"),
        stream,
        streams,
        form: FilterForm::of(&pairs),
        rows,
    }))
}

async fn tail_rows(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    viewer.operator("The tail view")?;
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let (_, lines) = tail_lines(&gateway, &pairs).await?;
    Ok(html(&TailRows { lines }))
}

struct LetterLine {
    sequence: u64,
    subject: String,
    consumer: String,
    stream: String,
    error: String,
    deliveries: u64,
    time: String,
    age: String,
}

impl From<&StoredDeadLetter> for LetterLine {
    fn from(letter: &StoredDeadLetter) -> Self {
        Self {
            sequence: letter.sequence,
            subject: letter.subject.clone(),
            consumer: letter.consumer.clone(),
            stream: letter.stream.clone(),
            error: letter.error.clone(),
            deliveries: letter.deliveries,
            time: utc(&letter.time),
            age: age(letter.time),
        }
    }
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage {
    layout: Layout,
    form: FilterForm,
    /// The filter as a query string, carried by the action forms.
    query: String,
    count: usize,
    letters: Vec<LetterLine>,
    can_change: bool,
    csrf: String,
}

async fn dead_letters(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    viewer.operator("Dead letters")?;
    let query = query.unwrap_or_default();
    let pairs = form_pairs(&query);
    let filter = filter_of(&pairs)?;
    let (count, letters) = gateway
        .matching_dead_letters(&filter, LETTERS_SHOWN)
        .await?;
    Ok(html(&DeadLettersPage {
        layout: viewer.layout("Dead letters", "dead-letters"),
        form: FilterForm::of(&pairs),
        query,
        count,
        letters: letters.iter().map(LetterLine::from).collect(),
        can_change: viewer.identity.role == super::session::Role::Admin,
        csrf: viewer.csrf.clone(),
    }))
}

#[derive(Template)]
#[template(path = "dead_letter.html")]
struct DeadLetterPage {
    layout: Layout,
    letter: LetterLine,
    original_sequence: u64,
    headers: Vec<(String, String)>,
    payload: String,
    can_change: bool,
    csrf: String,
}

async fn dead_letter(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    Path(sequence): Path<u64>,
) -> Result<Response, UiError> {
    viewer.operator("Dead letters")?;
    let letters = gateway
        .broker
        .dead_letters(None, usize::MAX)
        .await
        .map_err(|e| UiError::from(Rejection::ServiceUnavailable(e.to_string())))?;
    let letter = letters
        .into_iter()
        .find(|letter| letter.sequence == sequence)
        .ok_or_else(|| UiError::not_found(format!("There is no dead letter {sequence}.")))?;
    let headers = letter
        .headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |value| (name.to_owned(), value.as_str().to_owned()))
        })
        .collect();
    Ok(html(&DeadLetterPage {
        layout: viewer.layout(format!("Dead letter {sequence}"), "dead-letters"),
        original_sequence: letter.original_sequence,
        payload: pretty(&letter.payload),
        letter: LetterLine::from(&letter),
        headers,
        can_change: viewer.identity.role == super::session::Role::Admin,
        csrf: viewer.csrf.clone(),
    }))
}

/// Which dead letters an action is about: those ticked, or every one the
/// filter matches.
async fn chosen(
    gateway: &Gateway,
    pairs: &[(String, String)],
    everything: bool,
) -> Result<Vec<u64>, UiError> {
    if everything {
        let filter_query = field(pairs, "filter").unwrap_or("");
        let filter = filter_of(&form_pairs(filter_query))?;
        let (_, letters) = gateway.matching_dead_letters(&filter, usize::MAX).await?;
        Ok(letters.iter().map(|letter| letter.sequence).collect())
    } else {
        Ok(pairs
            .iter()
            .filter(|(name, _)| name == "sequence")
            .filter_map(|(_, value)| value.parse().ok())
            .collect())
    }
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    layout: Layout,
    action: &'static str,
    verb: &'static str,
    sequences: Vec<u64>,
    filter: String,
    csrf: String,
}

/// Checks an operator's form: same origin, CSRF, a full admin.
fn changing(
    gateway: &Gateway,
    viewer: &Viewer,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    what: &str,
) -> Result<(), UiError> {
    same_origin(headers)?;
    viewer.check_csrf(gateway, field(pairs, "csrf").unwrap_or(""))?;
    viewer.admin(what)
}

/// `POST /ui/dead-letters/confirm`: states how many dead letters the
/// action would touch and asks once more.
async fn confirm(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, UiError> {
    let pairs = form_pairs(&body);
    changing(
        &gateway,
        &viewer,
        &headers,
        &pairs,
        "Replaying or purging dead letters",
    )?;
    let action = field(&pairs, "action").unwrap_or("");
    let (verb, path, everything) = match action {
        "replay-selected" => ("Replay", "/ui/dead-letters/replay", false),
        "replay-all" => ("Replay", "/ui/dead-letters/replay", true),
        "purge-selected" => ("Purge", "/ui/dead-letters/purge", false),
        "purge-all" => ("Purge", "/ui/dead-letters/purge", true),
        other => {
            return Err(UiError::Page {
                status: StatusCode::BAD_REQUEST,
                message: format!("{other:?} is not an action on dead letters."),
            });
        }
    };
    let sequences = chosen(&gateway, &pairs, everything).await?;
    Ok(html(&ConfirmPage {
        layout: viewer.layout(format!("{verb} dead letters?"), "dead-letters"),
        action: path,
        verb,
        sequences,
        filter: field(&pairs, "filter").unwrap_or("").to_owned(),
        csrf: viewer.csrf.clone(),
    }))
}

#[derive(Template)]
#[template(path = "outcome.html")]
struct OutcomePage {
    layout: Layout,
    summary: String,
    outcomes: Vec<ReplayOutcome>,
    errors: Vec<String>,
    filter: String,
}

fn confirmed_sequences(pairs: &[(String, String)]) -> Vec<u64> {
    pairs
        .iter()
        .filter(|(name, _)| name == "sequence")
        .filter_map(|(_, value)| value.parse().ok())
        .collect()
}

async fn replay(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, UiError> {
    let pairs = form_pairs(&body);
    changing(
        &gateway,
        &viewer,
        &headers,
        &pairs,
        "Replaying dead letters",
    )?;
    let sequences = confirmed_sequences(&pairs);
    let outcomes = gateway.replay_dead_letters(&sequences).await;
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    Ok(html(&OutcomePage {
        layout: viewer.layout("Replay outcome", "dead-letters"),
        summary: format!(
            "{} of {} dead letters replayed, {failed} failed.",
            outcomes.len() - failed,
            outcomes.len()
        ),
        outcomes,
        errors: Vec::new(),
        filter: field(&pairs, "filter").unwrap_or("").to_owned(),
    }))
}

async fn purge(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, UiError> {
    let pairs = form_pairs(&body);
    changing(&gateway, &viewer, &headers, &pairs, "Purging dead letters")?;
    let sequences = confirmed_sequences(&pairs);
    let (purged, errors) = gateway.purge_dead_letters(&sequences).await;
    Ok(html(&OutcomePage {
        layout: viewer.layout("Purge outcome", "dead-letters"),
        summary: format!(
            "{purged} of {} dead letters purged, {} failed.",
            sequences.len(),
            errors.len()
        ),
        outcomes: Vec::new(),
        errors,
        filter: field(&pairs, "filter").unwrap_or("").to_owned(),
    }))
}
