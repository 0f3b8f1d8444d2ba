//! The contracts of the mesh, defined once.
//!
//! Every message that crosses a process boundary — an HTTP body the gateway
//! accepts, the CloudEvents envelope it publishes, the payload a native NATS
//! publisher sends, a row a Trading API returns — has exactly one Rust type
//! here. Each payload type knows how to `parse` itself from JSON while
//! collecting *every* invalid field (the gateway answers 400 with all of them,
//! and consumers run the very same check before dead-lettering), and derives a
//! JSON Schema that is checked in under `contracts/schemas/`.
//!
//! Layout: [`validation`] holds the field-by-field parsing toolkit,
//! [`envelope`] the CloudEvents 1.0 envelope, [`subjects`] every NATS subject
//! name, and one module per seed family: [`sweep`] (003/000) with
//! [`sweep_jobs`] for the sweep-worker's jobs, [`buddy`] (002),
//! [`ci`] (001) and [`delivery`] (004), with [`csr`] for what the CSR platform
//! derives from buddy events. [`schemas`] lists what is generated.

pub mod buddy;
pub mod ci;
pub mod csr;
pub mod delivery;
pub mod envelope;
pub mod health;
pub mod hex;
pub mod notify;
pub mod redact;
pub mod schemas;
pub mod subjects;
pub mod sweep;
pub mod sweep_jobs;
pub mod tenant;
pub mod timestamp;
pub mod validation;

pub use envelope::{Envelope, EventData, SchemaId};
pub use tenant::TenantId;
pub use timestamp::Timestamp;
pub use validation::{FieldError, ValidationErrors};
