//! Idempotency keys in a JetStream KV bucket: the middle of the three
//! layers (in memory, KV, database constraint).
//!
//! A key is recorded only after the work it stands for has been committed
//! to the database. Recording it first would lose an event whose processing
//! then failed: its redelivery would look like a duplicate. So KV is the
//! fast "already done" answer shared by every replica, and the database's
//! unique constraint stays the final word. When KV is unreachable, callers
//! carry on and rely on that constraint.

use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument as _;

use async_nats::jetstream;
use futures_util::StreamExt as _;
use hookmesh_nats::{BucketDefinition, EnsureError, ensure_bucket};
use ring::digest;

/// Most keys one batched read asks for (the server refuses much larger
/// batches).
const READ_CHUNK: usize = 1000;
/// Longest a batched read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SeenKeysError {
    #[error(transparent)]
    Definition(#[from] EnsureError),
    #[error("KV bucket {bucket}: {reason}")]
    Unavailable { bucket: String, reason: String },
}

/// A set of keys of work already done, shared by every replica.
#[derive(Clone)]
pub struct SeenKeys {
    js: jetstream::Context,
    bucket: &'static str,
}

impl std::fmt::Debug for SeenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenKeys")
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl SeenKeys {
    /// Ensures the bucket from its file and opens it.
    pub async fn open(
        js: &jetstream::Context,
        definition: &BucketDefinition,
        replicas: usize,
    ) -> Result<Self, SeenKeysError> {
        ensure_bucket(js, definition, replicas).await?;
        Ok(Self {
            js: js.clone(),
            bucket: definition.bucket,
        })
    }

    /// A valid key for `id` within `scope`: ids may hold any character, so
    /// they are hashed (`scope` must be made of `A-Za-z0-9_-`).
    pub fn key(scope: &str, id: &str) -> String {
        let mut key = String::with_capacity(scope.len() + 33);
        Self::write_key(&mut key, scope, &Self::digest(id))
            .expect("writing to a String cannot fail");
        key
    }

    /// Writes the key of the id whose [`SeenKeys::digest`] is `digest`
    /// within `scope`: `<scope>.<hex digest>`.
    pub fn write_key(
        out: &mut impl std::fmt::Write,
        scope: &str,
        digest: &[u8; 16],
    ) -> std::fmt::Result {
        out.write_str(scope)?;
        out.write_char('.')?;
        hookmesh_contracts::hex::write(digest, out)
    }

    /// The hashed part of `id`'s key: the first 16 bytes of its SHA-256.
    pub fn digest(id: &str) -> [u8; 16] {
        let digest = digest::digest(&digest::SHA256, id.as_bytes());
        let mut first = [0; 16];
        first.copy_from_slice(&digest.as_ref()[..16]);
        first
    }

    /// Which of `keys` are recorded, in their order, in one request per
    /// thousand keys: a JetStream batched direct get (`multi_last`) answers
    /// with the keys it has and then an end-of-batch status, instead of one
    /// round trip each. A key is anything that writes itself as one
    /// (`Display`), so callers need not hold its text.
    pub async fn contains_many(
        &self,
        keys: &[impl std::fmt::Display + Sync],
    ) -> Result<Vec<bool>, SeenKeysError> {
        let span = hookmesh_nats::trace::kv_span("get", self.bucket);
        async {
            let mut found = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(READ_CHUNK) {
                tokio::time::timeout(READ_TIMEOUT, self.read_chunk(chunk, &mut found))
                    .await
                    .map_err(|_| {
                        self.unavailable(format!("no answer within {READ_TIMEOUT:?}"))
                    })??;
            }
            Ok(found)
        }
        .instrument(span)
        .await
    }

    async fn read_chunk(
        &self,
        keys: &[impl std::fmt::Display],
        found: &mut Vec<bool>,
    ) -> Result<(), SeenKeysError> {
        #[derive(serde::Serialize)]
        struct MultiLast<'a> {
            multi_last: &'a [String],
            batch: usize,
        }
        let prefix = self.prefix();
        let multi_last: Vec<String> = keys.iter().map(|key| format!("{prefix}{key}")).collect();
        let request = serde_json::to_vec(&MultiLast {
            multi_last: &multi_last,
            batch: multi_last.len(),
        })
        .map_err(|e| self.unavailable(e))?;
        let client = self.js.client();
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| self.unavailable(e))?;
        client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.KV_{}", self.bucket),
                inbox,
                request.into(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        // Only recorded keys come back, so this set stays small.
        let mut recorded = HashSet::new();
        while let Some(reply) = replies.next().await {
            if let Some(status) = reply.status {
                return match status.as_u16() {
                    // End of batch, or none of the keys is there.
                    204 | 404 => {
                        found.extend(multi_last.iter().map(|subject| recorded.contains(subject)));
                        Ok(())
                    }
                    code => Err(self.unavailable(format!(
                        "batched read answered {code} {}",
                        reply.description.as_deref().unwrap_or("")
                    ))),
                };
            }
            let headers = reply.headers.as_ref();
            let deleted = headers
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            let subject = headers.and_then(|h| h.get("Nats-Subject"));
            if let (Some(subject), false) = (subject, deleted) {
                recorded.insert(subject.as_str().to_owned());
            }
        }
        Err(self.unavailable("the reply subscription ended"))
    }

    /// Records every key. All but the last are plain publishes to the
    /// bucket's subjects, not acknowledged one by one: a thousand
    /// acknowledgements per batch cost the broker and this process more than
    /// the writes themselves. The last is acknowledged; the broker handles
    /// one connection's messages in order, so on one server its
    /// acknowledgement means the bucket has seen them all, and a missing
    /// bucket or a broken connection is reported rather than passed over.
    /// Across a leader change in a cluster, earlier keys can be lost; that
    /// costs only a later duplicate's early exit, which the database
    /// layer's uniqueness still catches.
    pub async fn insert_many(&self, keys: &[impl std::fmt::Display]) -> Result<(), SeenKeysError> {
        let Some((last, rest)) = keys.split_last() else {
            return Ok(());
        };
        let client = self.js.client();
        let prefix = self.prefix();
        for key in rest {
            client
                .publish(format!("{prefix}{key}"), bytes::Bytes::from_static(b"1"))
                .await
                .map_err(|e| self.unavailable(e))?;
        }
        self.js
            .publish(format!("{prefix}{last}"), bytes::Bytes::from_static(b"1"))
            .await
            .map_err(|e| self.unavailable(e))?
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    /// The subject prefix of the bucket's keys.
    fn prefix(&self) -> String {
        format!("$KV.{}.", self.bucket)
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> SeenKeysError {
        SeenKeysError::Unavailable {
            bucket: self.bucket.to_owned(),
            reason: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_hashes() {
        let key = SeenKeys::key("acme", "evt 1/with:odd*chars");
        assert!(key.starts_with("acme."));
        assert_eq!(key.len(), "acme.".len() + 32);
        assert!(key[5..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key, SeenKeys::key("acme", "evt 2"));
        assert_ne!(key, SeenKeys::key("globex", "evt 1/with:odd*chars"));
    }
}
