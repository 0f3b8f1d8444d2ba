//! `hookmesh tail`: what lands on the mesh's streams, live, one line a
//! message, from ordered ephemeral consumers (nothing is acknowledged and
//! nothing is left behind on the broker).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use hookmesh_contracts::Timestamp;
use hookmesh_nats::definitions::{STREAMS, stream_of};
use serde_json::{Value, json};

use crate::AnyError;
use crate::broker::ChosenBroker;
use crate::cli::{CommonArgs, TailArgs};

/// `5m` → 300 s; units s, m, h, d; a bare number is seconds.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let count: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 5m, 2h or 1d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(count * seconds))
}

/// `--filter data.tenant_id=acme`: a dotted path into the envelope (a
/// leading `$.` is allowed) and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    path: Vec<String>,
    value: String,
}

impl std::str::FromStr for Filter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (path, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not PATH=VALUE (data.tenant_id=acme)"))?;
        let path = path.trim().trim_start_matches("$.").trim_start_matches('$');
        Ok(Self {
            path: path
                .split('.')
                .filter(|part| !part.is_empty())
                .map(str::to_owned)
                .collect(),
            value: value.to_owned(),
        })
    }
}

impl Filter {
    fn matches(&self, envelope: &Value) -> bool {
        let found = self
            .path
            .iter()
            .try_fold(envelope, |value, key| match value {
                Value::Array(items) => items.get(key.parse::<usize>().ok()?),
                other => other.get(key),
            });
        match found {
            Some(Value::String(text)) => *text == self.value,
            // A number, boolean or null, written as JSON.
            Some(other) => {
                serde_json::from_str::<Value>(&self.value).is_ok_and(|wanted| wanted == *other)
            }
            None => false,
        }
    }
}

/// Which streams to read, and with which subject filter.
fn targets(target: Option<&str>) -> Result<Vec<(String, Option<String>)>, AnyError> {
    let names: Vec<String> = STREAMS.iter().map(|definition| definition.name()).collect();
    match target {
        None => Ok(names.into_iter().map(|name| (name, None)).collect()),
        Some(stream) if names.iter().any(|name| name == stream) => {
            Ok(vec![(stream.to_owned(), None)])
        }
        Some(subject) => {
            // The stream of a filter's concrete prefix: `buddy.>` → BUDDY.
            let probe: String = subject
                .split('.')
                .map(|token| {
                    if token == "*" || token == ">" {
                        "x"
                    } else {
                        token
                    }
                })
                .collect::<Vec<_>>()
                .join(".");
            let stream = stream_of(&probe).ok_or_else(|| {
                format!(
                    "{subject:?} is neither a stream ({}) nor a subject any of them stores",
                    names.join(", ")
                )
            })?;
            Ok(vec![(stream, Some(subject.to_owned()))])
        }
    }
}

/// The trace id of a `traceparent` value.
fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

/// Remembers the envelopes shown, to flag one seen again (the same event
/// stored under another delivery id: its consumers will skip it).
struct Seen {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Seen {
    const CAPACITY: usize = 100_000;

    /// Whether `key` was seen before; remembers it.
    fn again(&mut self, key: String) -> bool {
        if self.set.contains(&key) {
            return true;
        }
        if self.order.len() == Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.set.insert(key);
        false
    }
}

/// One stored message, as `tail` shows it.
fn describe(message: &jetstream::Message, seen: &mut Seen) -> Value {
    let info = message.info().ok();
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(name))
            .map(|value| value.as_str().to_owned())
    };
    let envelope: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
    let text = |key: &str| envelope.get(key).and_then(Value::as_str).map(str::to_owned);
    let traceparent = header("traceparent");
    let duplicate = match (text("source"), text("id")) {
        (Some(source), Some(id)) => seen.again(format!("{source}\u{0}{id}")),
        _ => false,
    };
    json!({
        "time": info.as_ref().map(|info| Timestamp::from(info.published).to_rfc3339()),
        "stream": info.as_ref().map(|info| info.stream),
        "sequence": info.as_ref().map(|info| info.stream_sequence),
        "subject": message.subject.as_str(),
        "type": text("type"),
        "tenant": text("tenantid"),
        "id": text("id"),
        "about": text("subject"),
        "message_id": header("Nats-Msg-Id"),
        "duplicate": duplicate,
        "trace_id": traceparent.as_deref().and_then(trace_id),
        "traceparent": traceparent,
        "correlation_id": header("X-Correlation-Id"),
        "envelope": envelope,
    })
}

/// `time stream#seq subject type tenant ids [duplicate] trace`.
fn human_line(shown: &Value) -> String {
    let field = |key: &str| match &shown[key] {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut line = format!(
        "{} {}#{} {} type={} tenant={} id={}",
        field("time"),
        field("stream"),
        field("sequence"),
        field("subject"),
        field("type"),
        field("tenant"),
        field("id"),
    );
    if !shown["about"].is_null() {
        line.push_str(&format!(" about={}", field("about")));
    }
    line.push_str(&format!(" msg-id={}", field("message_id")));
    if shown["duplicate"] == json!(true) {
        line.push_str(" DUPLICATE");
    }
    line.push_str(&format!(" trace={}", field("trace_id")));
    line
}

pub async fn run(args: TailArgs, common: CommonArgs) -> Result<(), AnyError> {
    let broker = ChosenBroker::choose(&common, &args.data_dir);
    let client = broker.connect("hookmesh-tail").await?;
    let js = jetstream::new(client.clone());
    let deliver_policy = match &args.since {
        Some(since) => consumer::DeliverPolicy::ByStartTime {
            start_time: (Timestamp::now().as_offset_date_time() - *since),
        },
        None => consumer::DeliverPolicy::New,
    };
    let mut feeds = Vec::new();
    for (stream, filter) in targets(args.target.as_deref())? {
        let handle = js
            .get_stream(&stream)
            .await
            .map_err(|error| broker.explain(format!("stream {stream}: {error}")))?;
        let consumer = handle
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.unwrap_or_default(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|error| broker.explain(format!("stream {stream}: {error}")))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|error| broker.explain(format!("stream {stream}: {error}")))?;
        feeds.push(messages.boxed());
    }
    eprintln!(
        "# following {} on {} (Ctrl-C stops)",
        args.target.as_deref().unwrap_or("every stream"),
        broker.describe()
    );
    let mut all = futures_util::stream::select_all(feeds);
    let mut seen = Seen {
        order: VecDeque::new(),
        set: HashSet::new(),
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    while let Some(message) = tokio::select! {
        message = all.next() => message,
        _ = crate::shutdown::signalled() => None,
    } {
        let message = message.map_err(|error| broker.explain(error))?;
        let shown = describe(&message, &mut seen);
        if !args
            .filter
            .iter()
            .all(|filter| filter.matches(&shown["envelope"]))
        {
            continue;
        }
        let line = if args.json {
            serde_json::to_string(&shown)?
        } else {
            human_line(&shown)
        };
        // A closed pipe (`| head`) ends the tail quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_filters_are_read() {
        assert_eq!(parse_since("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_since("30"), Ok(Duration::from_secs(30)));
        assert!(parse_since("5 parsecs").is_err());
        let filter: Filter = "$.data.tenant_id=acme".parse().unwrap();
        assert!(filter.matches(&json!({"data": {"tenant_id": "acme"}})));
        assert!(!filter.matches(&json!({"data": {"tenant_id": "globex"}})));
        let number: Filter = "data.items.0.n=3".parse().unwrap();
        assert!(number.matches(&json!({"data": {"items": [{"n": 3}]}})));
    }

    #[test]
    fn targets_are_streams_or_subjects() {
        assert_eq!(targets(Some("CI")).unwrap(), [("CI".to_owned(), None)]);
        assert_eq!(
            targets(Some("buddy.>")).unwrap(),
            [("BUDDY".to_owned(), Some("buddy.>".to_owned()))]
        );
        assert!(targets(Some("nowhere.>")).is_err());
        assert_eq!(targets(None).unwrap().len(), STREAMS.len());
    }
}
