//! The streams of `nats/streams/`, compiled into the binary.
//!
//! The files are the JetStream API's stream configuration JSON, so
//! `nats stream add --config nats/streams/CI.json` creates exactly what the
//! services create. Only `num_replicas` is overridden at run time
//! (`HOOKMESH_STREAM_REPLICAS`: 1 locally, 3 in a cluster).

use async_nats::jetstream::stream;
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
    stream_file!("DEAD_LETTERS.json"),
];

impl StreamDefinition {
    /// The fields the file sets, as written.
    pub fn fields(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(self.json)
    }

    /// The configuration to apply, with `replicas` replicas.
    pub fn config(&self, replicas: usize) -> Result<stream::Config, serde_json::Error> {
        let mut config: stream::Config = serde_json::from_str(self.json)?;
        config.num_replicas = replicas;
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
