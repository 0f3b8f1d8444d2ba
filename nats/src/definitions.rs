//! The streams of `nats/streams/`, the durable consumers of
//! `nats/consumers/` and the KV buckets of `nats/kv/`, compiled into the
//! binary.
//!
//! The files are the JetStream API's own configuration JSON, so
//! `nats stream add --config nats/streams/CI.json` and
//! `nats consumer add BUDDY csr-consumer --config nats/consumers/BUDDY.csr-consumer.json`
//! create exactly what the services create. A KV bucket is a stream named
//! `KV_<bucket>`, so its file is a stream configuration too. Only
//! `num_replicas` is overridden at run time (`HOOKMESH_STREAM_REPLICAS`: 1
//! locally, 3 in a cluster).

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use serde_json::{Map, Value};

/// One stream definition file.
#[derive(Debug, Clone, Copy)]
pub struct StreamDefinition {
    /// Path under `nats/`.
    pub file: &'static str,
    /// The file's contents.
    pub json: &'static str,
}

macro_rules! stream_file {
    ($name:literal) => {
        StreamDefinition {
            file: concat!("streams/", $name),
            json: include_str!(concat!("../streams/", $name)),
        }
    };
}

/// Every stream of the mesh.
pub const STREAMS: &[StreamDefinition] = &[
    stream_file!("SWEEPS.json"),
    stream_file!("BUDDY.json"),
    stream_file!("CI.json"),
    stream_file!("PROVIDERS.json"),
    stream_file!("CSR.json"),
    stream_file!("DELIVERY.json"),
    stream_file!("DEAD_LETTERS.json"),
    stream_file!("NOTIFICATIONS.json"),
];

/// The streams that take webhooks whose signatures carry a timestamp: a
/// signature-valid resend is possible for as long as the tolerance, so
/// their duplicate window must outlast it (plus clock skew), or a resend
/// would be stored twice.
pub const SIGNED_INGEST_STREAMS: &[&str] = &["BUDDY", "CI", "PROVIDERS"];

static DUPLICATE_WINDOW: OnceLock<Duration> = OnceLock::new();

/// Gives the signed ingest streams `window` as their duplicate window
/// (`HOOKMESH_DUPLICATE_WINDOW_SECS`) instead of their files', for this
/// process; call it before any stream is ensured. Every service of a mesh
/// must be given the same, or they would update the streams back and
/// forth. Fails when a window was set already.
pub fn set_ingest_duplicate_window(window: Duration) -> Result<(), Duration> {
    DUPLICATE_WINDOW.set(window)
}

/// The duplicate window of the signed ingest streams: the one set, else
/// the shortest their files declare.
pub fn ingest_duplicate_window() -> Duration {
    DUPLICATE_WINDOW.get().copied().unwrap_or_else(|| {
        STREAMS
            .iter()
            .filter(|definition| SIGNED_INGEST_STREAMS.contains(&definition.name().as_str()))
            .filter_map(|definition| definition.config(1).ok())
            .map(|config| config.duplicate_window)
            .min()
            .unwrap_or_default()
    })
}

impl StreamDefinition {
    /// The fields the file sets, as written.
    pub fn fields(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(self.json)
    }

    /// The configuration to apply, with `replicas` replicas (and the
    /// duplicate window set for the signed ingest streams, if one is).
    pub fn config(&self, replicas: usize) -> Result<stream::Config, serde_json::Error> {
        let mut config: stream::Config = serde_json::from_str(self.json)?;
        config.num_replicas = replicas;
        if let Some(window) = DUPLICATE_WINDOW.get()
            && SIGNED_INGEST_STREAMS.contains(&config.name.as_str())
        {
            config.duplicate_window = *window;
        }
        Ok(config)
    }

    /// The stream's name, from the file.
    pub fn name(&self) -> String {
        self.fields()
            .ok()
            .and_then(|fields| fields.get("name")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| self.file.to_owned())
    }
}

/// One durable consumer definition: `nats/consumers/<STREAM>.<durable>.json`.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerDefinition {
    /// The stream it reads.
    pub stream: &'static str,
    /// Path under `nats/`.
    pub file: &'static str,
    /// The file's contents.
    pub json: &'static str,
}

macro_rules! consumer_file {
    ($stream:literal, $durable:literal) => {
        ConsumerDefinition {
            stream: $stream,
            file: concat!("consumers/", $stream, ".", $durable, ".json"),
            json: include_str!(concat!("../consumers/", $stream, ".", $durable, ".json")),
        }
    };
}

/// The csr-consumer's durable consumer of `BUDDY`.
pub const CSR_CONSUMER: ConsumerDefinition = consumer_file!("BUDDY", "csr-consumer");

/// The batch-processor's durable consumer of `PROVIDERS` (delivery events).
pub const DELIVERY_CONSUMER: ConsumerDefinition = consumer_file!("PROVIDERS", "batch-processor");

/// The batch-processor's durable consumer of campaign registrations.
pub const CAMPAIGN_CONSUMER: ConsumerDefinition =
    consumer_file!("DELIVERY", "batch-processor-campaigns");

/// The batch-processor's durable consumer of `CI` (pipeline events only).
pub const CI_CONSUMER: ConsumerDefinition = consumer_file!("CI", "batch-processor");

/// The sweep-worker's durable consumer of sweep requests.
pub const SWEEP_TRIGGER_CONSUMER: ConsumerDefinition =
    consumer_file!("SWEEPS", "sweep-worker-trigger");

/// The sweep-worker's durable consumer of Trading API callbacks.
pub const SWEEP_CALLBACK_CONSUMER: ConsumerDefinition =
    consumer_file!("SWEEPS", "sweep-worker-callback");

/// The sweep-worker's durable consumer of its own deadlines.
pub const SWEEP_DEADLINE_CONSUMER: ConsumerDefinition =
    consumer_file!("SWEEPS", "sweep-worker-deadline");

/// The sweep-worker's durable consumer of finished jobs, for notifications.
pub const SWEEP_NOTIFY_CONSUMER: ConsumerDefinition =
    consumer_file!("SWEEPS", "sweep-worker-notify");

/// The notifier's durable consumer of detected CI failures.
pub const CI_NOTIFY_CONSUMER: ConsumerDefinition = consumer_file!("CI", "sweep-worker-notify");

/// The notifier's durable consumer of completed campaigns.
pub const CAMPAIGN_NOTIFY_CONSUMER: ConsumerDefinition =
    consumer_file!("DELIVERY", "sweep-worker-notify");

/// The notifier's durable consumer of email notifications.
pub const EMAIL_CONSUMER: ConsumerDefinition =
    consumer_file!("NOTIFICATIONS", "sweep-worker-email");

/// The notifier's durable consumer of Slack notifications.
pub const SLACK_CONSUMER: ConsumerDefinition =
    consumer_file!("NOTIFICATIONS", "sweep-worker-slack");

/// Every durable consumer of the mesh.
pub const CONSUMERS: &[ConsumerDefinition] = &[
    CSR_CONSUMER,
    DELIVERY_CONSUMER,
    CAMPAIGN_CONSUMER,
    CI_CONSUMER,
    SWEEP_TRIGGER_CONSUMER,
    SWEEP_CALLBACK_CONSUMER,
    SWEEP_DEADLINE_CONSUMER,
    SWEEP_NOTIFY_CONSUMER,
    CI_NOTIFY_CONSUMER,
    CAMPAIGN_NOTIFY_CONSUMER,
    EMAIL_CONSUMER,
    SLACK_CONSUMER,
];

impl ConsumerDefinition {
    /// The fields the file sets, as written.
    pub fn fields(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(self.json)
    }

    /// The configuration to apply, with `replicas` replicas.
    pub fn config(&self, replicas: usize) -> Result<consumer::pull::Config, serde_json::Error> {
        let mut config: consumer::pull::Config = serde_json::from_str(self.json)?;
        config.num_replicas = replicas;
        Ok(config)
    }

    /// The durable name, from the file.
    pub fn durable_name(&self) -> String {
        self.fields()
            .ok()
            .and_then(|fields| fields.get("durable_name")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| self.file.to_owned())
    }
}

/// One KV bucket: `nats/kv/<bucket>.json`, the configuration of its
/// `KV_<bucket>` stream.
#[derive(Debug, Clone, Copy)]
pub struct BucketDefinition {
    pub bucket: &'static str,
    pub stream: StreamDefinition,
}

macro_rules! bucket_file {
    ($bucket:literal) => {
        BucketDefinition {
            bucket: $bucket,
            stream: StreamDefinition {
                file: concat!("kv/", $bucket, ".json"),
                json: include_str!(concat!("../kv/", $bucket, ".json")),
            },
        }
    };
}

/// Ids of the buddy events the csr-consumer has applied.
pub const CSR_EVENTS_BUCKET: BucketDefinition = bucket_file!("csr_events");

/// Keys of the provider and CI events the batch-processor has applied.
pub const WEBHOOK_DEDUP_BUCKET: BucketDefinition = bucket_file!("webhook_dedup");

/// Every sweep job the sweep-worker has recorded, with its tenant: the
/// gateway refuses callbacks for any other.
pub const SWEEP_JOBS_BUCKET: BucketDefinition = bucket_file!("sweep_jobs");

/// Every KV bucket of the mesh.
pub const BUCKETS: &[BucketDefinition] =
    &[CSR_EVENTS_BUCKET, WEBHOOK_DEDUP_BUCKET, SWEEP_JOBS_BUCKET];

/// The name of the stream of [`STREAMS`] that stores `subject`.
pub fn stream_of(subject: &str) -> Option<String> {
    STREAMS.iter().find_map(|definition| {
        let config = definition.config(1).ok()?;
        config
            .subjects
            .iter()
            .any(|filter| subject_matches(filter, subject))
            .then_some(config.name)
    })
}

/// Whether `subject` matches the NATS subject `filter` (`*` one token, `>`
/// one or more trailing tokens).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (literal, Some(actual)) if literal == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_found_in_their_streams() {
        assert_eq!(stream_of("buddy.match.created").as_deref(), Some("BUDDY"));
        assert_eq!(stream_of("ci.failure.detected").as_deref(), Some("CI"));
        assert_eq!(stream_of("nowhere.at.all"), None);
    }

    #[test]
    fn every_definition_is_a_valid_stream_config() {
        for definition in STREAMS {
            let config = definition
                .config(3)
                .unwrap_or_else(|e| panic!("{}: {e}", definition.file));
            assert_eq!(config.num_replicas, 3);
            assert_eq!(
                format!("streams/{}.json", config.name),
                definition.file,
                "a stream file is named after its stream"
            );
            assert_eq!(
                config.discard,
                stream::DiscardPolicy::New,
                "{}: a full stream must refuse new messages (the gateway answers 503) rather than \
                 drop accepted ones",
                definition.file
            );
        }
    }

    #[test]
    fn every_subject_of_the_contracts_lands_in_exactly_one_stream() {
        let filters: Vec<(String, String)> = STREAMS
            .iter()
            .flat_map(|definition| {
                let config = definition.config(1).unwrap();
                config
                    .subjects
                    .into_iter()
                    .map(move |filter| (config.name.clone(), filter))
            })
            .collect();
        for subject in hookmesh_contracts::subjects::examples() {
            let streams: Vec<_> = filters
                .iter()
                .filter(|(_, filter)| subject_matches(filter, &subject))
                .map(|(stream, _)| stream.as_str())
                .collect();
            assert_eq!(streams.len(), 1, "{subject} is captured by {streams:?}");
        }
    }

    #[test]
    fn every_consumer_reads_a_declared_stream_and_is_named_after_its_file() {
        for definition in CONSUMERS {
            let config = definition
                .config(1)
                .unwrap_or_else(|e| panic!("{}: {e}", definition.file));
            let durable = config.durable_name.clone().expect("consumers are durable");
            assert_eq!(
                definition.file,
                format!("consumers/{}.{durable}.json", definition.stream)
            );
            let stream = STREAMS
                .iter()
                .map(|s| s.config(1).unwrap())
                .find(|s| s.name == definition.stream)
                .unwrap_or_else(|| panic!("{}: no stream {}", definition.file, definition.stream));
            let filters: Vec<&String> = std::iter::once(&config.filter_subject)
                .filter(|filter| !filter.is_empty())
                .chain(&config.filter_subjects)
                .collect();
            assert!(!filters.is_empty(), "{}: no filter", definition.file);
            for filter in filters {
                let example = filter.replace(['*', '>'], "x");
                assert!(
                    stream.subjects.iter().any(|s| subject_matches(s, &example)),
                    "{}: {filter} reads nothing of {}",
                    definition.file,
                    definition.stream
                );
            }
            // With a backoff list, nats-server takes backoff[0] as the ack
            // wait and stretches every delayed nak by backoff[n] - ack_wait
            // (measured: a 400 ms nak on the third delivery waited 2.4 s),
            // so retries follow explicit nak delays alone.
            assert!(
                config.backoff.is_empty(),
                "{}: retries are scheduled by delayed naks; a backoff list distorts them",
                definition.file
            );
            assert!(
                config.max_deliver < 0 || config.max_deliver >= 2,
                "{}: a retried message needs a second delivery (max_deliver -1 or at least 2)",
                definition.file
            );
        }
    }

    #[test]
    fn every_bucket_is_a_kv_stream() {
        for definition in BUCKETS {
            let config = definition.stream.config(1).unwrap();
            assert_eq!(config.name, format!("KV_{}", definition.bucket));
            assert_eq!(config.subjects, [format!("$KV.{}.>", definition.bucket)]);
            assert!(config.allow_direct && config.allow_rollup && config.deny_delete);
        }
    }

    #[test]
    fn subject_matching_follows_nats_wildcards() {
        assert!(subject_matches("ci.>", "ci.pipeline.github.failed"));
        assert!(!subject_matches("ci.>", "ci"));
        assert!(subject_matches(
            "ci.*.github.*",
            "ci.pipeline.github.failed"
        ));
        assert!(!subject_matches("ci.*", "ci.pipeline.github"));
        assert!(subject_matches("sweeps.trigger", "sweeps.trigger"));
        assert!(!subject_matches("sweeps.trigger", "sweeps.trigger.x"));
    }
}
