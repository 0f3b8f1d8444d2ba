//! Slack incoming webhooks (and the Slack-compatible ones of Mattermost
//! and Rocket.Chat): `{"text", "blocks"}` posted to a configured URL,
//! without following redirects, refusing private addresses unless allowed.
//! Slack takes no idempotency key, so a crash between its answer and the
//! acknowledgement can post a message twice (at least once).

use std::time::Duration;

use hookmesh_contracts::notify::Notification;
use serde_json::{Value, json};

use super::outcome::{SendError, classify_http};
use super::rules::is_public;

/// The JSON posted for `notification`.
pub fn payload(notification: &Notification) -> Value {
    json!({"text": notification.text, "blocks": notification.blocks})
}

/// Posts notifications to incoming webhooks.
#[derive(Debug, Clone)]
pub struct Slack {
    http: reqwest::Client,
    allow_private: bool,
}

impl Slack {
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, reqwest::Error> {
        let http = hookmesh_runtime::http::client_builder()
            .timeout(timeout)
            .build()?;
        Ok(Self {
            http,
            allow_private,
        })
    }

    /// Refuses a URL whose host resolves to a loopback or private address
    /// (checked before each post: the configuration names a host, DNS says
    /// where it is now).
    async fn check_resolved(&self, url: &reqwest::Url) -> Result<(), SendError> {
        if self.allow_private {
            return Ok(());
        }
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|error| {
                SendError::transient(format!("cannot resolve the webhook's host: {error}"))
            })?;
        for address in addresses {
            if !is_public(address.ip()) {
                return Err(SendError::Permanent(
                    "the webhook's host resolves to a loopback or private address; set HOOKMESH_NOTIFY_ALLOW_PRIVATE=true to allow it".to_owned(),
                ));
            }
        }
        Ok(())
    }

    pub async fn send(
        &self,
        url: &reqwest::Url,
        notification: &Notification,
    ) -> Result<(), SendError> {
        self.check_resolved(url).await?;
        let response = self
            .http
            .post(url.clone())
            .json(&payload(notification))
            .send()
            .await
            .map_err(|error| {
                SendError::transient(format!("the webhook: {}", error.without_url()))
            })?;
        if let Some(reason) = hookmesh_runtime::http::refused_redirect(&response) {
            return Err(SendError::Permanent(format!("the webhook: {reason}")));
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        classify_http(response.status().as_u16(), retry_after)
    }
}
