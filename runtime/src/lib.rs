//! What every hookmesh consumer service shares, so that each service is
//! only its domain logic and its SQL.
//!
//! - [`consume`]: the consume loop — batches, progress acks, and the one
//!   place where outcomes become ack, nak, term or a dead letter.
//! - [`engine`]: the batch pipeline every service's event families run on:
//!   parse, dedup in memory and KV, one transaction per batch, outcomes.
//! - [`dead_letter`]: the dead-letter stream's format and publisher.
//! - [`kv`]: idempotency keys in a JetStream KV bucket.
//! - [`db`]: the database pool (SQLite or PostgreSQL) and migrations.
//! - [`metrics`], [`ops`]: the consume loop's metrics and the operations
//!   endpoints (`/health`, `/readyz`, `/metrics`).
//! - [`outbox`]: events decided in a transaction, published after it.
//! - [`publish`]: where a service's own events go (JetStream, or memory).
//! - [`http`]: HTTP clients for calls out, with TLS.
//! - [`reads`]: a service's read API on the NATS services API.
//! - [`supervise`]: restarting a failed loop with backoff, and a service's
//!   loops counted for readiness.

pub mod consume;
pub mod db;
pub mod dead_letter;
pub mod engine;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod publish;
pub mod reads;
#[cfg(feature = "proptest")]
pub mod redelivery;
pub mod supervise;

pub use consume::{ConsumeSettings, Delivery, Handler, Outcome};
pub use supervise::{Loops, supervise};

/// Errors at a service's edge, where their kinds no longer matter.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
