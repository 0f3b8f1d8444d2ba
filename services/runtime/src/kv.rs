//! Idempotency keys in a JetStream KV bucket: the middle of the three
//! layers (in memory, KV, database constraint).
//!
//! A key is recorded only after the work it stands for has been committed
//! to the database. Recording it first would lose an event whose processing
//! then failed: its redelivery would look like a duplicate. So KV is the
//! fast "already done" answer shared by every replica, and the database's
//! unique constraint stays the final word. When KV is unreachable, callers
//! carry on and rely on that constraint.

use async_nats::jetstream::{self, kv};
use hookmesh_nats::{BucketDefinition, EnsureError, ensure_bucket};
use ring::digest;

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
    store: kv::Store,
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
        let store =
            js.get_key_value(definition.bucket)
                .await
                .map_err(|e| SeenKeysError::Unavailable {
                    bucket: definition.bucket.to_owned(),
                    reason: e.to_string(),
                })?;
        Ok(Self {
            store,
            bucket: definition.bucket,
        })
    }

    /// A valid key for `id` within `scope`: ids may hold any character, so
    /// they are hashed (`scope` must be made of `A-Za-z0-9_-`).
    pub fn key(scope: &str, id: &str) -> String {
        let digest = digest::digest(&digest::SHA256, id.as_bytes());
        let hex: String = digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{scope}.{hex}")
    }

    pub async fn contains(&self, key: &str) -> Result<bool, SeenKeysError> {
        self.store
            .get(key)
            .await
            .map(|value| value.is_some())
            .map_err(|e| self.unavailable(e))
    }

    /// Records `key`; recording an existing key is not an error.
    pub async fn insert(&self, key: &str) -> Result<(), SeenKeysError> {
        match self
            .store
            .create(key, bytes::Bytes::from_static(b"1"))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(self.unavailable(error)),
        }
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
