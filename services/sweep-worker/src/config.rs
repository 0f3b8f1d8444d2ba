//! The sweep-worker's flags, each mirroring an environment variable, and
//! the settings they make.

use std::time::Duration;

use crate::SweepSettings;

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

    /// Slack-compatible incoming webhook URL that hears of every COMPLETED and FAILED job. Unset:
    /// no notifications.
    #[arg(long, env = "HOOKMESH_NOTIFY_WEBHOOK_URL", hide_env_values = true)]
    pub notify_webhook_url: Option<String>,

    /// In `up` with the built-in simulator: how long each sweep runs there, in seconds.
    #[arg(long, env = "HOOKMESH_SIM_RUN_TIME_SECS", default_value_t = 5.0)]
    pub sim_run_time_secs: f64,
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
            .field(
                "notify_webhook_url",
                &self.notify_webhook_url.as_ref().map(|_| "[set]"),
            )
            .field("sim_run_time_secs", &self.sim_run_time_secs)
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
        settings.notify_url = self
            .notify_webhook_url
            .clone()
            .filter(|url| !url.trim().is_empty());
        Ok(settings)
    }
}
