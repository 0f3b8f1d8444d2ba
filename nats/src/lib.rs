//! hookmesh's side of NATS.
//!
//! - [`definitions`]: the streams declared as JSON in `nats/streams/` (the
//!   JetStream API's own configuration, which `nats stream add --config`
//!   accepts), compiled into the binary.
//! - [`ensure`]: creating or updating them idempotently at start, with an
//!   actionable error when a change cannot be applied in place.
//! - [`server`]: finding a recent enough `nats-server` and running it as the
//!   embedded broker of `hookmesh up` and of the tests.
//! - [`dead_letters`]: reading, replaying and purging the dead-letter
//!   stream with direct gets.
//! - [`jobs`]: the registry of sweep jobs, shared by the gateway and the
//!   sweep-worker.
//! - [`NatsEndpoint`]: a broker and how to reach it (every way NATS
//!   authenticates: user and password, token, NKey, JWT credentials, TLS
//!   with a custom CA, mutual TLS); one way to open a client connection,
//!   with logged events, and URLs shown without their credentials.

pub mod dead_letters;
pub mod definitions;
pub mod ensure;
pub mod jobs;
pub mod server;
pub mod trace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};

pub use definitions::{
    BUCKETS, BucketDefinition, CONSUMERS, ConsumerDefinition, STREAMS, StreamDefinition,
    subject_matches,
};
pub use ensure::{EnsureError, ensure_all, ensure_bucket, ensure_consumer, ensure_streams};

/// A client connection and a counter of its (re)connections, which a
/// service watches to redo what a new broker may lack (ensuring streams).
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: async_nats::Client,
    pub connects: tokio::sync::watch::Receiver<u64>,
}

/// How to authenticate to NATS and secure the connection, the ways NATS
/// offers (the variables the `nats` CLI reads too). Credentials in the URL
/// (`nats://user:pass@host`, `nats://token@host`) work as well; these win
/// over them. `Debug` says which are set, never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A file holding an NKey user seed (`SU…`).
    pub nkey_file: Option<PathBuf>,
    /// A JWT credentials file (`.creds`: the user JWT and its seed).
    pub creds_file: Option<PathBuf>,
    /// PEM bundle of the CA(s) that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |value: bool| if value { "[set]" } else { "[unset]" };
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &set(self.password.is_some()))
            .field("token", &set(self.token.is_some()))
            .field("nkey_file", &self.nkey_file)
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// Why a connection could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum ConnectSetupError {
    #[error("NATS_URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("{variable}: cannot read {path}: {reason}")]
    File {
        variable: &'static str,
        path: String,
        reason: String,
    },
    #[error("NATS_CERT and NATS_KEY name a client certificate and its key: set both, or neither")]
    HalfCertificate,
    #[error("NATS_PASSWORD is set without NATS_USER")]
    PasswordWithoutUser,
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
}

/// A broker and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsEndpoint {
    /// One server or several, comma-separated (the nodes of a cluster).
    pub url: String,
    pub auth: NatsAuth,
}

impl NatsEndpoint {
    /// `url`, with only the credentials it carries itself.
    pub fn plain(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: NatsAuth::default(),
        }
    }

    /// The URL as logs and errors show it: without credentials.
    pub fn redacted(&self) -> String {
        hookmesh_contracts::redact::url(&self.url)
    }

    /// The servers (without credentials) and the options that carry them.
    pub async fn options(
        &self,
        client_name: &str,
    ) -> Result<(Vec<ServerAddr>, ConnectOptions), ConnectSetupError> {
        let url_error = |reason: String| ConnectSetupError::Url {
            url: self.redacted(),
            reason,
        };
        let mut options = ConnectOptions::new()
            .name(client_name)
            .connection_timeout(Duration::from_secs(5));
        let mut servers = Vec::new();
        let mut from_url = None;
        for server in server_list(&self.url) {
            let address: ServerAddr = server
                .parse()
                .map_err(|e: std::io::Error| url_error(e.to_string()))?;
            if from_url.is_none()
                && let Some(user) = address.username()
            {
                let decode = |text: &str| {
                    hookmesh_contracts::hex::percent_decode(text, false).ok_or_else(|| {
                        url_error("a malformed %-escape in its credentials".to_owned())
                    })
                };
                from_url = Some((decode(user)?, address.password().map(decode).transpose()?));
            }
            let mut bare = address.into_inner();
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            servers.push(ServerAddr::from_url(bare).map_err(|e| url_error(e.to_string()))?);
        }
        if servers.is_empty() {
            return Err(url_error("names no server".to_owned()));
        }
        let auth = &self.auth;
        let read = |variable: &'static str, path: &Path| {
            std::fs::read_to_string(path).map_err(|error| ConnectSetupError::File {
                variable,
                path: path.display().to_string(),
                reason: error.to_string(),
            })
        };
        options = match (&auth.user, &auth.password, &auth.token, from_url) {
            (Some(user), password, _, _) => {
                options.user_and_password(user.clone(), password.clone().unwrap_or_default())
            }
            (None, Some(_), _, _) => return Err(ConnectSetupError::PasswordWithoutUser),
            (None, None, Some(token), _) => options.token(token.clone()),
            (None, None, None, Some((user, Some(password)))) => {
                options.user_and_password(user, password)
            }
            // `nats://<token>@host`, as the nats CLI reads it.
            (None, None, None, Some((token, None))) => options.token(token),
            (None, None, None, None) => options,
        };
        if let Some(path) = &auth.nkey_file {
            options = options.nkey(read("NATS_NKEY", path)?.trim().to_owned());
        }
        if let Some(path) = &auth.creds_file {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|error| ConnectSetupError::File {
                        variable: "NATS_CREDS",
                        path: path.display().to_string(),
                        reason: error.to_string(),
                    })?;
        }
        if let Some(path) = &auth.ca_file {
            read("NATS_CA", path)?;
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        match (&auth.cert_file, &auth.key_file) {
            (Some(cert), Some(key)) => {
                read("NATS_CERT", cert)?;
                read("NATS_KEY", key)?;
                options = options
                    .add_client_certificate(cert.clone(), key.clone())
                    .require_tls(true);
            }
            (None, None) => {}
            _ => return Err(ConnectSetupError::HalfCertificate),
        }
        Ok((servers, options))
    }

    /// Opens a client connection that keeps retrying in the background: the
    /// first connection included, so a service can start before its broker
    /// and become ready when the broker does. Connection events are logged;
    /// a refused login or a permission denied is a warning, each time.
    pub async fn connect(&self, client_name: &str) -> Result<Connection, ConnectSetupError> {
        let (servers, options) = self.options(client_name).await?;
        let name = client_name.to_owned();
        let (connected, connects) = tokio::sync::watch::channel(0u64);
        let connected = std::sync::Arc::new(connected);
        let client = options
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let name = name.clone();
                let connected = connected.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected.send_modify(|count| *count += 1);
                            tracing::info!(client = %name, "Connected to NATS.")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(client = %name, "Disconnected from NATS; reconnecting.")
                        }
                        async_nats::Event::ClientError(error) if is_refusal(&error.to_string()) => {
                            tracing::warn!(client = %name, %error, "NATS refused the connection's credentials.")
                        }
                        // Failed reconnection attempts repeat while the broker is
                        // away; the disconnection itself was already logged.
                        async_nats::Event::ClientError(error) => {
                            tracing::debug!(client = %name, %error, "NATS client error.")
                        }
                        async_nats::Event::ServerError(error) => {
                            tracing::warn!(client = %name, %error, "NATS refused an operation.")
                        }
                        other => {
                            tracing::info!(client = %name, event = %other, "NATS connection event.")
                        }
                    }
                }
            })
            .connect(servers.as_slice())
            .await
            .map_err(|error| ConnectSetupError::Connect {
                url: self.redacted(),
                reason: error.to_string(),
            })?;
        Ok(Connection { client, connects })
    }

    /// Connects once, failing at once when the broker is away or refuses:
    /// for a command a person runs, which should not wait for a broker.
    pub async fn connect_once(
        &self,
        client_name: &str,
    ) -> Result<async_nats::Client, ConnectSetupError> {
        let (servers, options) = self.options(client_name).await?;
        options
            .connect(servers.as_slice())
            .await
            .map_err(|error| ConnectSetupError::Connect {
                url: self.redacted(),
                reason: error.to_string(),
            })
    }
}

fn is_refusal(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("authorization") || error.contains("authentication")
}

/// Connects to `url` with only the credentials it carries (tests, tools).
pub async fn connect(url: &str, client_name: &str) -> Result<Connection, ConnectSetupError> {
    NatsEndpoint::plain(url).connect(client_name).await
}

/// `NATS_URL` names one server or several, comma-separated (the nodes of a
/// cluster); the client fails over between them.
pub fn server_list(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .collect()
}

/// Waits until `client` is connected, or `timeout` passes.
pub async fn wait_connected(client: &async_nats::Client, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if client.connection_state() == async_nats::connection::State::Connected {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod connect_tests {
    #[test]
    fn a_url_list_is_split_into_servers() {
        assert_eq!(
            super::server_list("nats://a:4222, nats://b:4222,,nats://c:4222"),
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
        assert_eq!(super::server_list("nats://a:4222"), ["nats://a:4222"]);
    }
}
