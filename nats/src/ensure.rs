//! Creating or updating the declared streams, idempotently.
//!
//! Every service runs this at start (and the gateway again after a
//! reconnect), so replicas starting together must agree: an absent stream is
//! created, an identical one is left alone, a changed one is updated in place
//! — and where NATS refuses the update (storage type, retention and a few
//! other fields are fixed for a stream's life), the error names the fields,
//! quotes the server and says how to migrate.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{Consumer, pull};
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::ConsumerErrorKind;
use serde_json::Value;

use crate::definitions::{BucketDefinition, ConsumerDefinition, StreamDefinition};

/// Why the declared streams could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("nats/{file} is not a valid stream definition: {source}")]
    InvalidDefinition {
        file: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "stream {stream}: {fields} in nats/{file} differ from the running stream, and NATS cannot \
         change them in place ({reason}). Either restore the previous values in nats/{file}, or \
         migrate: back the stream up with `nats stream backup {stream} <dir>`, remove it with \
         `nats stream rm {stream}`, and restart hookmesh, which creates it from nats/{file}; \
         then restore or replay what you still need from the backup"
    )]
    CannotUpdate {
        stream: String,
        file: &'static str,
        fields: String,
        reason: String,
    },
    #[error(
        "consumer {consumer} of {stream}: {fields} in nats/{file} differ from the running \
         consumer, and NATS cannot change them in place ({reason}). Either restore the previous \
         values in nats/{file}, or remove the consumer with `nats consumer rm {stream} {consumer}` \
         and restart the service, which creates it anew and reads {stream} from its deliver \
         policy again (the service's idempotency keys make re-reading safe)"
    )]
    CannotUpdateConsumer {
        stream: String,
        consumer: String,
        file: &'static str,
        fields: String,
        reason: String,
    },
    #[error("nats/{file} is not a valid consumer definition: {source}")]
    InvalidConsumerDefinition {
        file: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "stream {stream}: JetStream did not answer ({reason}); is the broker running with JetStream enabled (`-js`)?"
    )]
    Unavailable { stream: String, reason: String },
    #[error(
        "stream {stream}: the broker has no room for it ({reason}). JetStream reserves each \
         stream's max_bytes, and the streams of nats/streams/ together reserve more than the \
         broker's max_file_store (or the account's storage limit): raise max_file_store in the \
         server's configuration (`jetstream {{ max_file_store: … }}`), or lower max_bytes in \
         nats/{file}"
    )]
    NoRoom {
        stream: String,
        file: &'static str,
        reason: String,
    },
}

/// The result of ensuring one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChange {
    Created,
    Unchanged,
    /// Updated in place; the fields that changed.
    Updated(Vec<String>),
}

/// Creates or updates every stream and KV bucket of the mesh, one after
/// the other: what `hookmesh up` does once before its services start, so
/// that they find them in place instead of racing to create them.
pub async fn ensure_all(js: &jetstream::Context, replicas: usize) -> Result<(), EnsureError> {
    ensure_streams(js, crate::STREAMS, replicas).await?;
    for bucket in crate::BUCKETS {
        ensure_bucket(js, bucket, replicas).await?;
    }
    Ok(())
}

/// Creates or updates every stream in `definitions` with `replicas` replicas.
pub async fn ensure_streams(
    js: &jetstream::Context,
    definitions: &[StreamDefinition],
    replicas: usize,
) -> Result<(), EnsureError> {
    for definition in definitions {
        let change = ensure_stream(js, definition, replicas).await?;
        let stream = definition.name();
        match change {
            StreamChange::Created => tracing::info!(%stream, "Created stream."),
            StreamChange::Updated(fields) => {
                tracing::info!(%stream, fields = %fields.join(", "), "Updated stream definition.")
            }
            StreamChange::Unchanged => tracing::debug!(%stream, "Stream is up to date."),
        }
    }
    Ok(())
}

/// Creates or updates one stream.
pub async fn ensure_stream(
    js: &jetstream::Context,
    definition: &StreamDefinition,
    replicas: usize,
) -> Result<StreamChange, EnsureError> {
    let invalid = |source| EnsureError::InvalidDefinition {
        file: definition.file,
        source,
    };
    let desired = definition.config(replicas).map_err(invalid)?;
    let declared = definition.fields().map_err(invalid)?;
    let unavailable = |reason: String| EnsureError::Unavailable {
        stream: desired.name.clone(),
        reason,
    };

    // Two attempts: a replica starting at the same moment may create the
    // stream between our lookup and our create.
    for attempt in 0..2 {
        match js.get_stream(&desired.name).await {
            Ok(existing) => {
                let fields = differing_fields(
                    &declared,
                    &config_json(&desired),
                    &config_json(&existing.cached_info().config),
                );
                if fields.is_empty() {
                    return Ok(StreamChange::Unchanged);
                }
                return match js.update_stream(&desired).await {
                    Ok(_) => Ok(StreamChange::Updated(fields)),
                    Err(error) => match error.kind() {
                        CreateStreamErrorKind::JetStream(api) => Err(EnsureError::CannotUpdate {
                            stream: desired.name.clone(),
                            file: definition.file,
                            fields: fields.join(", "),
                            reason: api.to_string(),
                        }),
                        _ => Err(unavailable(error.to_string())),
                    },
                };
            }
            Err(error) => match error.kind() {
                GetStreamErrorKind::JetStream(api)
                    if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    match js.create_stream(desired.clone()).await {
                        Ok(_) => return Ok(StreamChange::Created),
                        // Another replica creating it at the same moment:
                        // the name is taken, or both reservations briefly
                        // count against the broker's storage. Look again.
                        Err(error)
                            if attempt == 0
                                && (is_name_taken(&error) || is_out_of_storage(&error)) =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(error) if is_out_of_storage(&error) => {
                            return Err(EnsureError::NoRoom {
                                stream: desired.name.clone(),
                                file: definition.file,
                                reason: error.to_string(),
                            });
                        }
                        Err(error) => return Err(unavailable(error.to_string())),
                    }
                }
                _ => return Err(unavailable(error.to_string())),
            },
        }
    }
    Err(unavailable(
        "the stream kept appearing and disappearing while it was being created".to_owned(),
    ))
}

fn is_out_of_storage(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(error.kind(), CreateStreamErrorKind::JetStream(api)
        if api.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED)
}

fn is_name_taken(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(error.kind(), CreateStreamErrorKind::JetStream(api)
        if api.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST)
}

/// Ensures a KV bucket: its `KV_<bucket>` stream, from its file.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    definition: &BucketDefinition,
    replicas: usize,
) -> Result<StreamChange, EnsureError> {
    ensure_stream(js, &definition.stream, replicas).await
}

/// Creates or updates a durable pull consumer from its file. NATS applies
/// what it can in place; when it refuses, the error names the fields and
/// the way out.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    definition: &ConsumerDefinition,
    replicas: usize,
) -> Result<Consumer<pull::Config>, EnsureError> {
    let invalid = |source| EnsureError::InvalidConsumerDefinition {
        file: definition.file,
        source,
    };
    let desired = definition.config(replicas).map_err(invalid)?;
    let declared = definition.fields().map_err(invalid)?;
    let durable = definition.durable_name();
    let existing = js
        .get_consumer_from_stream::<pull::Config, _, _>(&durable, definition.stream)
        .await;
    let fields = match &existing {
        Ok(existing) => differing_fields(
            &declared,
            &config_json(&desired),
            &config_json(&existing.cached_info().config),
        ),
        Err(_) => Vec::new(),
    };
    let unchanged = existing.is_ok() && fields.is_empty();
    match js
        .create_consumer_on_stream(desired, definition.stream)
        .await
    {
        Ok(consumer) => {
            if existing.is_err() {
                tracing::info!(stream = definition.stream, consumer = %durable, "Created consumer.");
            } else if !unchanged {
                tracing::info!(stream = definition.stream, consumer = %durable, fields = %fields.join(", "), "Updated consumer definition.");
            }
            Ok(consumer)
        }
        Err(error) => match error.kind() {
            ConsumerErrorKind::JetStream(api) => Err(EnsureError::CannotUpdateConsumer {
                stream: definition.stream.to_owned(),
                consumer: durable,
                file: definition.file,
                fields: if fields.is_empty() {
                    "fields".to_owned()
                } else {
                    fields.join(", ")
                },
                reason: api.to_string(),
            }),
            _ => Err(EnsureError::Unavailable {
                stream: definition.stream.to_owned(),
                reason: error.to_string(),
            }),
        },
    }
}

fn config_json(config: &impl serde::Serialize) -> Value {
    serde_json::to_value(config).expect("configurations serialise")
}

/// The fields the definition file sets whose value differs in the running
/// stream or consumer. Fields the file leaves out are the server's to default.
fn differing_fields(
    declared: &serde_json::Map<String, Value>,
    desired: &Value,
    running: &Value,
) -> Vec<String> {
    let mut fields: Vec<String> = declared
        .keys()
        .chain(std::iter::once(&"num_replicas".to_owned()))
        .filter(|field| desired.get(field.as_str()) != running.get(field.as_str()))
        .cloned()
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream;

    use super::*;
    use crate::definitions::STREAMS;

    #[test]
    fn only_declared_fields_that_differ_are_reported() {
        let definition = STREAMS[0];
        let declared = definition.fields().unwrap();
        let desired = definition.config(1).unwrap();

        let mut running = desired.clone();
        running.max_message_size = 1234; // declared as -1 in the file
        running.first_sequence = Some(7); // not declared: the server's business
        running.storage = stream::StorageType::Memory;
        let (desired, running) = (config_json(&desired), config_json(&running));
        assert_eq!(
            differing_fields(&declared, &desired, &running),
            ["max_msg_size", "storage"]
        );
        assert!(differing_fields(&declared, &desired, &desired).is_empty());
    }

    #[test]
    fn a_replica_count_change_is_noticed() {
        let definition = STREAMS[0];
        let declared = definition.fields().unwrap();
        let running = definition.config(1).unwrap();
        let desired = definition.config(3).unwrap();
        assert_eq!(
            differing_fields(&declared, &config_json(&desired), &config_json(&running)),
            ["num_replicas"]
        );
    }
}
