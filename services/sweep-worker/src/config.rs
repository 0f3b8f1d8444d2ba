//! The sweep-worker's flags, each mirroring an environment variable, and
//! the settings they make.

use std::sync::Arc;
use std::time::Duration;

use hookmesh_contracts::notify::NotificationKind;

use crate::SweepSettings;
use crate::notify::NotifySettings;
use crate::notify::email::{SmtpEndpoint, SmtpSettings};
use crate::notify::rules::{Rules, Shorthand};

/// How the sweep-worker reaches the Trading API, waits for it and reports.
#[derive(Clone, clap::Args)]
#[command(next_help_heading = "Sweep-worker")]
pub struct SweepArgs {
    /// Base URL of the Trading API (seed 003). Unset: `up` starts the built-in simulator;
    /// `sweep-worker` refuses to start.
    #[arg(long, env = "TRADING_API_URL")]
    pub trading_api_url: Option<String>,

    /// The Trading API's key, sent as X-API-Key. `up` generates one for the simulator.
    #[arg(long, env = "TRADING_API_KEY", hide_env_values = true)]
    pub trading_api_key: Option<String>,

    /// Base URL at which the Trading API reaches the gateway's callback routes; each sweep's
    /// callback URL is <this>/webhook/sweep-callback?job_id=…&token=…. Unset in `up`: the gateway's
    /// own URL.
    #[arg(long, env = "HOOKMESH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds a submitted sweep may go without a callback; then the Trading API is polled and
    /// the job completed or failed (seed 000: one hour).
    #[arg(
        long,
        env = "HOOKMESH_SWEEP_CALLBACK_TIMEOUT_SECS",
        default_value_t = 3600.0
    )]
    pub callback_timeout_secs: f64,

    /// Seconds between attempts while the Trading API is unavailable, comma-separated; when they
    /// are used up the job fails with the reason (seed 000: 2, 4, 8).
    #[arg(
        long,
        env = "HOOKMESH_SWEEP_RETRY_DELAYS",
        value_delimiter = ',',
        default_value = "2,4,8"
    )]
    pub retry_delays_secs: Vec<f64>,

    /// In `up` with the built-in simulator: how long each sweep runs there, in seconds.
    #[arg(long, env = "HOOKMESH_SIM_RUN_TIME_SECS", default_value_t = 5.0)]
    pub sim_run_time_secs: f64,

    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Notifications (docs/notifications.md): rules, channels and the SMTP server.
#[derive(Clone, clap::Args)]
#[command(next_help_heading = "Notifications")]
pub struct NotifyArgs {
    /// JSON file of notification rules and channels (docs/notifications.md), checked at start.
    /// Unset: the shorthand below (HOOKMESH_NOTIFY_WEBHOOK_URL, HOOKMESH_NOTIFY_EMAIL_TO).
    #[arg(long, env = "HOOKMESH_NOTIFY_RULES")]
    pub notify_rules: Option<std::path::PathBuf>,

    /// Without a rules file: a Slack-compatible incoming webhook URL told of HOOKMESH_NOTIFY_EVENTS.
    #[arg(long, env = "HOOKMESH_NOTIFY_WEBHOOK_URL", hide_env_values = true)]
    pub notify_webhook_url: Option<String>,

    /// Without a rules file: email addresses (comma-separated) told of HOOKMESH_NOTIFY_EVENTS;
    /// needs HOOKMESH_SMTP_URL and HOOKMESH_SMTP_FROM.
    #[arg(
        long,
        env = "HOOKMESH_NOTIFY_EMAIL_TO",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub notify_email_to: Vec<String>,

    /// Without a rules file: the events told, comma-separated, of sweep.completed, sweep.failed,
    /// sweep.timed_out, dead_letters, ci.failure, campaign.completed.
    #[arg(
        long,
        env = "HOOKMESH_NOTIFY_EVENTS",
        value_delimiter = ',',
        default_value = "sweep.completed,sweep.failed,sweep.timed_out,dead_letters"
    )]
    pub notify_events: Vec<String>,

    /// Without a rules file: dead_letters fires when more than this many dead letters arrive
    /// within HOOKMESH_NOTIFY_DLQ_WINDOW_SECS (seed 001: 10).
    #[arg(long, env = "HOOKMESH_NOTIFY_DLQ_THRESHOLD", default_value_t = 10)]
    pub notify_dlq_threshold: u64,

    /// Without a rules file: the dead-letter window, in seconds (1-3600).
    #[arg(long, env = "HOOKMESH_NOTIFY_DLQ_WINDOW_SECS", default_value_t = 300)]
    pub notify_dlq_window_secs: u64,

    /// Whether webhooks may point at loopback or private addresses. Unset: false, except in `up`.
    #[arg(long, env = "HOOKMESH_NOTIFY_ALLOW_PRIVATE")]
    pub notify_allow_private: Option<bool>,

    /// Seconds between attempts while a channel fails transiently (down, 4xx SMTP, 5xx or 429
    /// webhook), comma-separated; when they are used up the notification is dead-lettered.
    #[arg(
        long,
        env = "HOOKMESH_NOTIFY_RETRY_DELAYS",
        value_delimiter = ',',
        default_value = "2,4,8,16,32,64"
    )]
    pub notify_retry_delays_secs: Vec<f64>,

    /// SMTP server: smtp://user:pass@host:587?tls=starttls (STARTTLS, required), smtps://host:465
    /// or ?tls=implicit (TLS from the start), ?tls=none (a local relay only). Userinfo is
    /// percent-encoded.
    #[arg(long, env = "HOOKMESH_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The sender of notification emails: `hookmesh@example.com` or `Hookmesh <hookmesh@example.com>`.
    #[arg(long, env = "HOOKMESH_SMTP_FROM")]
    pub smtp_from: Option<String>,

    /// PEM file of extra CA certificates to trust for the SMTP server (a relay with a private CA).
    #[arg(long, env = "HOOKMESH_SMTP_CA")]
    pub smtp_ca: Option<std::path::PathBuf>,

    /// Seconds allowed for connecting to the SMTP server and for each command.
    #[arg(long, env = "HOOKMESH_SMTP_TIMEOUT_SECS", default_value_t = 10.0)]
    pub smtp_timeout_secs: f64,

    /// SMTP connections kept open for reuse.
    #[arg(long, env = "HOOKMESH_SMTP_POOL_SIZE", default_value_t = 4)]
    pub smtp_pool_size: u32,
}

impl std::fmt::Debug for NotifyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyArgs")
            .field("notify_rules", &self.notify_rules)
            .field(
                "notify_webhook_url",
                &self.notify_webhook_url.as_ref().map(|_| "[set]"),
            )
            .field("notify_email_to", &self.notify_email_to.len())
            .field("notify_events", &self.notify_events)
            .field("notify_allow_private", &self.notify_allow_private)
            .field(
                "smtp_url",
                &self
                    .smtp_url
                    .as_deref()
                    .map(hookmesh_contracts::redact::url),
            )
            .field("smtp_from", &self.smtp_from)
            .finish_non_exhaustive()
    }
}

impl NotifyArgs {
    /// The notifier's settings; `local` (in `up`) allows private webhook
    /// addresses unless HOOKMESH_NOTIFY_ALLOW_PRIVATE says otherwise.
    pub fn settings(&self, local: bool) -> Result<NotifySettings, ConfigError> {
        let allow_private = self.notify_allow_private.unwrap_or(local);
        let rules = match &self.notify_rules {
            Some(path) => {
                let origin = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
                    variable: "HOOKMESH_NOTIFY_RULES",
                    reason: format!("cannot read {origin}: {error}"),
                })?;
                Rules::from_json(&text, &origin, allow_private)
            }
            None => {
                let events = self
                    .notify_events
                    .iter()
                    .map(|event| event.trim())
                    .filter(|event| !event.is_empty())
                    .map(|event| {
                        event
                            .parse::<NotificationKind>()
                            .map_err(|reason| ConfigError {
                                variable: "HOOKMESH_NOTIFY_EVENTS",
                                reason,
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Rules::from_shorthand(
                    &Shorthand {
                        webhook_url: self.notify_webhook_url.as_deref(),
                        email_to: &self.notify_email_to,
                        events: &events,
                        dead_letter_threshold: self.notify_dlq_threshold,
                        dead_letter_window_secs: self.notify_dlq_window_secs,
                    },
                    allow_private,
                )
            }
        }
        .map_err(|error| ConfigError {
            variable: "HOOKMESH_NOTIFY_RULES",
            reason: error.to_string(),
        })?;
        let smtp = match self
            .smtp_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
        {
            None => None,
            Some(url) => {
                let endpoint = SmtpEndpoint::parse(url).map_err(|reason| ConfigError {
                    variable: "HOOKMESH_SMTP_URL",
                    reason,
                })?;
                let from = self
                    .smtp_from
                    .as_deref()
                    .ok_or_else(|| ConfigError {
                        variable: "HOOKMESH_SMTP_FROM",
                        reason:
                            "required with HOOKMESH_SMTP_URL: the sender of notification emails"
                                .to_owned(),
                    })?
                    .parse()
                    .map_err(|error| ConfigError {
                        variable: "HOOKMESH_SMTP_FROM",
                        reason: format!("not an email address: {error}"),
                    })?;
                let ca_pem = match &self.smtp_ca {
                    None => None,
                    Some(path) => Some(std::fs::read(path).map_err(|error| ConfigError {
                        variable: "HOOKMESH_SMTP_CA",
                        reason: format!("cannot read {}: {error}", path.display()),
                    })?),
                };
                Some(SmtpSettings {
                    endpoint,
                    from,
                    ca_pem,
                    timeout: seconds(self.smtp_timeout_secs, "HOOKMESH_SMTP_TIMEOUT_SECS")?,
                    pool_size: self.smtp_pool_size,
                })
            }
        };
        let delays = self
            .notify_retry_delays_secs
            .iter()
            .map(|delay| seconds(*delay, "HOOKMESH_NOTIFY_RETRY_DELAYS"))
            .collect::<Result<_, _>>()?;
        Ok(NotifySettings {
            rules: Arc::new(rules),
            smtp,
            delays,
            allow_private,
            timeout: Duration::from_secs(10),
        })
    }
}

impl std::fmt::Debug for SweepArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepArgs")
            .field("trading_api_url", &self.trading_api_url)
            .field(
                "trading_api_key",
                &self.trading_api_key.as_ref().map(|_| "[set]"),
            )
            .field("public_url", &self.public_url)
            .field("callback_timeout_secs", &self.callback_timeout_secs)
            .field("retry_delays_secs", &self.retry_delays_secs)
            .field("sim_run_time_secs", &self.sim_run_time_secs)
            .field("notify", &self.notify)
            .finish()
    }
}

/// A configuration value that cannot be used, named by its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

/// `value` seconds as a duration, or why not.
pub fn seconds(value: f64, variable: &'static str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value).map_err(|_| ConfigError {
        variable,
        reason: format!("{value} is not a number of seconds"),
    })
}

/// The Trading API, the public URL and the secret, decided by the caller
/// (`up` runs a simulator and knows its own URL).
#[derive(Debug, Clone, Copy)]
pub struct Endpoints<'a> {
    pub trading_api_url: &'a str,
    pub trading_api_key: &'a str,
    pub public_url: &'a str,
    pub callback_secret: &'a str,
    /// A local run (`up`): notification webhooks may be on private
    /// addresses unless HOOKMESH_NOTIFY_ALLOW_PRIVATE says otherwise.
    pub local: bool,
}

impl SweepArgs {
    /// The service's settings, on `database_url` with streams of
    /// `stream_replicas` replicas.
    pub fn settings(
        &self,
        endpoints: Endpoints<'_>,
        database_url: &str,
        stream_replicas: usize,
    ) -> Result<SweepSettings, ConfigError> {
        let mut settings = SweepSettings::new(
            database_url,
            endpoints.trading_api_url,
            endpoints.trading_api_key,
            endpoints.public_url,
            endpoints.callback_secret.as_bytes(),
        );
        settings.stream_replicas = stream_replicas;
        settings.callback_timeout = seconds(
            self.callback_timeout_secs,
            "HOOKMESH_SWEEP_CALLBACK_TIMEOUT_SECS",
        )?;
        settings.retry_delays = self
            .retry_delays_secs
            .iter()
            .map(|delay| seconds(*delay, "HOOKMESH_SWEEP_RETRY_DELAYS"))
            .collect::<Result<_, _>>()?;
        settings.notify = self.notify.settings(endpoints.local)?;
        Ok(settings)
    }
}
