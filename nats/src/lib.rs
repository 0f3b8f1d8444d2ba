//! hookmesh's side of NATS.
//!
//! - [`definitions`]: the streams declared as JSON in `nats/streams/` (the
//!   JetStream API's own configuration, which `nats stream add --config`
//!   accepts), compiled into the binary.
//! - [`ensure`]: creating or updating them idempotently at start, with an
//!   actionable error when a change cannot be applied in place.
//! - [`server`]: finding a recent enough `nats-server` and running it as the
//!   embedded broker of `hookmesh up` and of the tests.
//! - [`jobs`]: the registry of sweep jobs, shared by the gateway and the
//!   sweep-worker.
//! - [`connect`]: one way to open a client connection, with logged events.

pub mod definitions;
pub mod ensure;
pub mod jobs;
pub mod server;

use std::time::Duration;

pub use definitions::{
    BUCKETS, BucketDefinition, CONSUMERS, ConsumerDefinition, STREAMS, StreamDefinition,
    subject_matches,
};
pub use ensure::{EnsureError, ensure_bucket, ensure_consumer, ensure_streams};

/// A client connection and a counter of its (re)connections, which a
/// service watches to redo what a new broker may lack (ensuring streams).
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: async_nats::Client,
    pub connects: tokio::sync::watch::Receiver<u64>,
}

/// Opens a client connection that keeps retrying in the background: the
/// first connection included, so a service can start before its broker and
/// become ready when the broker does. Connection events are logged.
pub async fn connect(url: &str, client_name: &str) -> Result<Connection, async_nats::ConnectError> {
    let name = client_name.to_owned();
    let (connected, connects) = tokio::sync::watch::channel(0u64);
    let connected = std::sync::Arc::new(connected);
    let client = async_nats::ConnectOptions::new()
        .name(client_name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
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
                    // Failed reconnection attempts repeat while the broker is
                    // away; the disconnection itself was already logged.
                    async_nats::Event::ClientError(error) => {
                        tracing::debug!(client = %name, %error, "NATS client error.")
                    }
                    other => {
                        tracing::info!(client = %name, event = %other, "NATS connection event.")
                    }
                }
            }
        })
        .connect(server_list(url).as_slice())
        .await?;
    Ok(Connection { client, connects })
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
