//! The broker a command (not a service) talks to, and why that one: the
//! `NATS_URL` given, else the broker of a `hookmesh up` running on the data
//! directory, else the default local server. Every error a command reports
//! names the broker and the reason it was chosen, so that a person never
//! wonders which one answered.

use std::path::Path;

use hookmesh_nats::NatsEndpoint;

use crate::AnyError;
use crate::cli::{CommonArgs, DEFAULT_NATS_URL};

/// A broker and why it was chosen.
#[derive(Debug, Clone)]
pub struct ChosenBroker {
    pub nats: NatsEndpoint,
    why: String,
}

impl ChosenBroker {
    /// The broker for a command run with `common` on `data_dir`.
    pub fn choose(common: &CommonArgs, data_dir: &Path) -> Self {
        if let Some(url) = &common.nats_url {
            return Self {
                nats: common.nats_at(url.clone()),
                why: "from NATS_URL".to_owned(),
            };
        }
        let local = data_dir.join("nats");
        match hookmesh_nats::server::running_url(&local) {
            // The embedded broker needs no credentials.
            Some(url) => Self {
                nats: NatsEndpoint::plain(url),
                why: format!("the running `hookmesh up` in {}", data_dir.display()),
            },
            None => Self {
                nats: common.nats_at(DEFAULT_NATS_URL.to_owned()),
                why: format!(
                    "the default: NATS_URL is unset and no `hookmesh up` runs in {}",
                    data_dir.display()
                ),
            },
        }
    }

    /// `nats://…:4222 (why)`, with no credentials.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.nats.redacted(), self.why)
    }

    /// Connects, failing at once when the broker is away (a command, not a
    /// service, should not wait for one).
    pub async fn connect(&self, client_name: &str) -> Result<async_nats::Client, AnyError> {
        self.nats.connect_once(client_name).await.map_err(|error| {
            format!(
                "cannot reach the broker {} ({error}); start `hookmesh up` in this directory, \
                     pass --data-dir for another one, or set NATS_URL",
                self.describe()
            )
            .into()
        })
    }

    /// `error`, said of this broker, with what to do.
    pub fn explain(&self, error: impl std::fmt::Display) -> AnyError {
        let text = error.to_string();
        let hint = if text.contains("stream not found") || text.contains("10059") {
            ": the broker has no hookmesh streams — it is not a hookmesh broker, or no mesh has \
             run on it yet; start `hookmesh up` in this directory, pass --data-dir, or set NATS_URL"
        } else {
            ""
        };
        format!("{text} (broker {}){hint}", self.describe()).into()
    }
}
