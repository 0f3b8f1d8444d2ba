//! Gateway configuration: command-line flags that mirror environment
//! variables ([`GatewayArgs`], shown by `hookmesh --help`), parsed once at
//! start into typed values ([`GatewayConfig`]) so that a bad value stops the
//! gateway with the variable's name instead of surfacing on first use.
//!
//! A route whose secret is unset refuses every request with 401: nothing is
//! ever accepted unsigned by default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hookmesh_contracts::TenantId;
use hookmesh_contracts::delivery::is_valid_provider_name;

use crate::verify::{HmacKey, SecretToken, StandardWebhooksKeys};

/// Providers accepted by default at `/webhooks/providers/{provider}`.
pub const DEFAULT_PROVIDERS: &str = "sendgrid,mailgun,postmark,ses,sparkpost,twilio,generic";

/// The clock skew between a producer and the gateway that a signature's
/// timestamp is allowed beside the tolerance, when the duplicate window is
/// checked against it.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Default `HOOKMESH_SWEEP_MAX_COMBINATIONS`: generous for a research sweep,
/// finite so that one trigger cannot ask for a hundred thousand backtests.
pub const DEFAULT_SWEEP_MAX_COMBINATIONS: usize = 10_000;

/// Rate-limited source families and their default requests per second.
pub const DEFAULT_RATE_LIMITS: &[(&str, u32)] = &[
    ("api", 50),
    ("callback", 100),
    ("buddy", 500),
    ("github", 200),
    ("gitlab", 200),
    ("jenkins", 200),
    ("circleci", 200),
    ("providers", 100_000),
    // dashboard sign-in attempts, all together: guessing keys stays slow
    ("ui-sign-in", 10),
];

/// The gateway's flags; each mirrors an environment variable. `Debug`
/// shows whether each secret is set, never its value.
#[derive(Clone, clap::Args)]
#[command(next_help_heading = "Gateway")]
pub struct GatewayArgs {
    /// Address the HTTP gateway listens on.
    #[arg(long, env = "HOOKMESH_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// API keys accepted on /api/*, as comma-separated tenant:key pairs; clients send
    /// `Authorization: Bearer <key>` or `X-API-Key: <key>`. Unset: /api/* refuses every request.
    #[arg(long, env = "HOOKMESH_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,

    /// Operator keys, as comma-separated name:key pairs: the admin API (/api/admin/*) and the
    /// dashboard's operator pages (streams, consumers, dead letters, replay, purge).
    /// Unset: no one is an operator.
    #[arg(long, env = "HOOKMESH_ADMIN_KEYS", hide_env_values = true)]
    pub admin_keys: Option<String>,

    /// Read-only operator keys (name:key,…): see the operator pages and the admin API's reads,
    /// but never replay or purge.
    #[arg(long, env = "HOOKMESH_ADMIN_READONLY_KEYS", hide_env_values = true)]
    pub admin_readonly_keys: Option<String>,

    /// How long a dashboard sign-in lasts, in seconds; then the dashboard asks for the key again.
    #[arg(long, env = "HOOKMESH_UI_SESSION_SECS", default_value_t = 8 * 3600)]
    pub ui_session_secs: u64,

    /// Secret (32 characters or more) that signs dashboard sessions, the same for every gateway
    /// replica, so that a sign-in holds on any of them and across restarts. Unset: a key drawn
    /// at start, so each replica signs its own sessions and a restart signs everyone out.
    #[arg(long, env = "HOOKMESH_UI_SESSION_SECRET", hide_env_values = true)]
    pub ui_session_secret: Option<String>,

    /// HMAC-SHA256 secret of POST /webhooks/buddy-events (X-Webhook-Signature). Unset: refuses all.
    #[arg(long, env = "HOOKMESH_SECRET_BUDDY", hide_env_values = true)]
    pub secret_buddy: Option<String>,

    /// GitHub webhook secret (X-Hub-Signature-256) of /webhooks/ci/github. Unset: refuses all.
    #[arg(long, env = "HOOKMESH_SECRET_GITHUB", hide_env_values = true)]
    pub secret_github: Option<String>,

    /// GitLab secret token (X-Gitlab-Token) of /webhooks/ci/gitlab. Unset (and no signing token):
    /// refuses all.
    #[arg(long, env = "HOOKMESH_SECRET_GITLAB", hide_env_values = true)]
    pub secret_gitlab: Option<String>,

    /// GitLab signing token (whsec_…); when set, Standard Webhooks signatures from GitLab are
    /// verified too.
    #[arg(long, env = "HOOKMESH_SECRET_GITLAB_SIGNING", hide_env_values = true)]
    pub secret_gitlab_signing: Option<String>,

    /// CircleCI webhook secret (circleci-signature) of /webhooks/ci/circleci. Unset: refuses all.
    #[arg(long, env = "HOOKMESH_SECRET_CIRCLECI", hide_env_values = true)]
    pub secret_circleci: Option<String>,

    /// Password Jenkins must send as HTTP Basic credentials to /webhooks/ci/jenkins (set the
    /// Notification plugin URL to https://jenkins:<secret>@host/webhooks/ci/jenkins). Unset:
    /// refuses all.
    #[arg(long, env = "HOOKMESH_SECRET_JENKINS", hide_env_values = true)]
    pub secret_jenkins: Option<String>,

    /// Standard Webhooks secret (whsec_…) of /webhooks/providers/{provider}; several,
    /// comma-separated, during a rotation. Unset: refuses all.
    #[arg(long, env = "HOOKMESH_SECRET_PROVIDERS", hide_env_values = true)]
    pub secret_providers: Option<String>,

    /// Secret that signs each sweep's callback URL (shared with the sweep-worker). Unset: the
    /// sweep callback routes refuse all.
    #[arg(long, env = "HOOKMESH_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,

    /// Provider names accepted at /webhooks/providers/{provider}, comma-separated.
    #[arg(long, env = "HOOKMESH_PROVIDERS", default_value = DEFAULT_PROVIDERS)]
    pub providers: String,

    /// Largest accepted request body in bytes; larger ones are answered 413.
    #[arg(long, env = "HOOKMESH_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,

    /// Largest distance, in seconds, between a signed delivery timestamp and the server's clock.
    #[arg(long, env = "HOOKMESH_TIMESTAMP_TOLERANCE_SECS", default_value_t = 300)]
    pub timestamp_tolerance_secs: u64,

    /// Rate limits in requests per second, e.g. `buddy=100,providers=20000`; 0 turns one off.
    /// Sources: api (per tenant), callback, buddy, github, gitlab, jenkins, circleci, providers
    /// (per provider). Defaults: api=50 callback=100 buddy=500 github/gitlab/jenkins/circleci=200
    /// providers=100000.
    #[arg(long, env = "HOOKMESH_RATE_LIMITS", default_value = "")]
    pub rate_limits: String,

    /// How long to wait for JetStream to confirm a publish before answering 503, in milliseconds.
    #[arg(long, env = "HOOKMESH_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_timeout_ms: u64,

    /// Largest sweep accepted, in (fast, slow) combinations; larger triggers are answered 400.
    #[arg(long, env = "HOOKMESH_SWEEP_MAX_COMBINATIONS", default_value_t = DEFAULT_SWEEP_MAX_COMBINATIONS)]
    pub sweep_max_combinations: usize,

    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// How the gateway treats slow, idle and too many clients. Webhook producers
/// give up early (GitHub after 10 s), so holding a connection longer than
/// that for a client that sends nothing serves no one.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Gateway connections")]
pub struct ConnectionArgs {
    /// Longest a request's headers may take to arrive, in seconds, counted from the connection's
    /// opening or the request's first byte; then the connection is closed.
    #[arg(long, env = "HOOKMESH_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// Longest a request's body may take to arrive, in seconds, counted from the end of its
    /// headers; a slower body is answered 408 and its connection closed.
    #[arg(long, env = "HOOKMESH_HTTP_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub http_body_timeout_secs: u64,

    /// How long a kept-alive connection may wait for its next request, in seconds, before the
    /// gateway closes it.
    #[arg(long, env = "HOOKMESH_HTTP_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub http_idle_timeout_secs: u64,

    /// Most connections open at once; beyond it a new connection is answered 503 with
    /// Retry-After and closed. 0: the process's open-file limit less 128 (kept for the broker
    /// connection, logs and files).
    #[arg(long, env = "HOOKMESH_HTTP_MAX_CONNECTIONS", default_value_t = 0)]
    pub http_max_connections: usize,

    /// Largest request head (request line and headers) in bytes, or more than 100 headers; beyond
    /// it the request is answered 431 and its connection closed.
    #[arg(long, env = "HOOKMESH_HTTP_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub http_max_header_bytes: usize,
}

impl std::fmt::Debug for GatewayArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |value: &Option<String>| {
            if set(value).is_some() {
                "[set]"
            } else {
                "[unset]"
            }
        };
        f.debug_struct("GatewayArgs")
            .field("http_addr", &self.http_addr)
            .field("api_keys", &secret(&self.api_keys))
            .field("admin_keys", &secret(&self.admin_keys))
            .field("admin_readonly_keys", &secret(&self.admin_readonly_keys))
            .field("ui_session_secs", &self.ui_session_secs)
            .field("ui_session_secret", &secret(&self.ui_session_secret))
            .field("secret_buddy", &secret(&self.secret_buddy))
            .field("secret_github", &secret(&self.secret_github))
            .field("secret_gitlab", &secret(&self.secret_gitlab))
            .field(
                "secret_gitlab_signing",
                &secret(&self.secret_gitlab_signing),
            )
            .field("secret_circleci", &secret(&self.secret_circleci))
            .field("secret_jenkins", &secret(&self.secret_jenkins))
            .field("secret_providers", &secret(&self.secret_providers))
            .field("callback_secret", &secret(&self.callback_secret))
            .field("providers", &self.providers)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("timestamp_tolerance_secs", &self.timestamp_tolerance_secs)
            .field("rate_limits", &self.rate_limits)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .field("sweep_max_combinations", &self.sweep_max_combinations)
            .field("connections", &self.connections)
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

fn config_error(variable: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        reason: reason.into(),
    }
}

/// Per-source secrets; `None` means the route refuses everything.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub buddy: Option<HmacKey>,
    pub github: Option<HmacKey>,
    pub gitlab: Option<SecretToken>,
    pub gitlab_signing: Option<StandardWebhooksKeys>,
    pub circleci: Option<HmacKey>,
    pub jenkins: Option<SecretToken>,
    pub providers: Option<StandardWebhooksKeys>,
    pub callback: Option<HmacKey>,
}

/// Shortest dashboard session secret accepted, in bytes.
const MIN_SESSION_SECRET: usize = 32;

/// The gateway's configuration, typed.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub api_keys: Vec<(TenantId, SecretToken)>,
    /// Operators who may change things (replay, purge), by name.
    pub admin_keys: Vec<(TenantId, SecretToken)>,
    /// Operators who may only look.
    pub admin_readonly_keys: Vec<(TenantId, SecretToken)>,
    /// How long a dashboard session lasts.
    pub ui_session: Duration,
    /// The key that signs dashboard sessions; None: drawn at start.
    pub ui_session_key: Option<ring::hmac::Key>,
    pub secrets: Secrets,
    pub providers: Vec<String>,
    pub max_body_bytes: usize,
    pub timestamp_tolerance_secs: u64,
    /// Requests per second by source family (`api`, `buddy`, `providers`, …); 0 = unlimited.
    pub rate_limits: BTreeMap<String, u32>,
    pub publish_timeout: Duration,
    /// Replicas of each stream the gateway ensures.
    pub stream_replicas: usize,
    /// Largest sweep accepted, in combinations.
    pub sweep_max_combinations: usize,
    pub connections: ConnectionLimits,
}

/// Open-file descriptors kept free of client connections when the
/// connection cap is derived from the process's limit.
pub const RESERVED_FILE_DESCRIPTORS: usize = 128;

/// The connection limits, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: default_max_connections(),
            max_header_bytes: 32 * 1024,
        }
    }
}

/// The soft open-file limit less [`RESERVED_FILE_DESCRIPTORS`], or 1024
/// where the limit cannot be read.
pub fn default_max_connections() -> usize {
    open_file_limit()
        .map_or(1024, |limit| {
            limit.saturating_sub(RESERVED_FILE_DESCRIPTORS)
        })
        .max(1)
}

/// The process's soft open-file limit, from `/proc/self/limits` (read
/// instead of calling getrlimit, which would need unsafe code).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl ConnectionLimits {
    pub fn from_args(args: &ConnectionArgs) -> Result<Self, ConfigError> {
        let seconds = |variable: &'static str, value: u64| {
            if value == 0 {
                Err(config_error(variable, "must be positive"))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        const MIN_HEADER_BYTES: usize = 1024;
        if args.http_max_header_bytes < MIN_HEADER_BYTES {
            return Err(config_error(
                "HOOKMESH_HTTP_MAX_HEADER_BYTES",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        Ok(Self {
            header_timeout: seconds(
                "HOOKMESH_HTTP_HEADER_TIMEOUT_SECS",
                args.http_header_timeout_secs,
            )?,
            body_timeout: seconds(
                "HOOKMESH_HTTP_BODY_TIMEOUT_SECS",
                args.http_body_timeout_secs,
            )?,
            idle_timeout: seconds(
                "HOOKMESH_HTTP_IDLE_TIMEOUT_SECS",
                args.http_idle_timeout_secs,
            )?,
            max_connections: match args.http_max_connections {
                0 => default_max_connections(),
                cap => cap,
            },
            max_header_bytes: args.http_max_header_bytes,
        })
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            admin_readonly_keys: Vec::new(),
            ui_session: Duration::from_secs(8 * 3600),
            ui_session_key: None,
            secrets: Secrets::default(),
            providers: DEFAULT_PROVIDERS.split(',').map(str::to_owned).collect(),
            max_body_bytes: 1_048_576,
            timestamp_tolerance_secs: 300,
            rate_limits: DEFAULT_RATE_LIMITS
                .iter()
                .map(|(source, rate)| ((*source).to_owned(), *rate))
                .collect(),
            publish_timeout: Duration::from_secs(5),
            stream_replicas: 1,
            sweep_max_combinations: DEFAULT_SWEEP_MAX_COMBINATIONS,
            connections: ConnectionLimits::default(),
        }
    }
}

/// `None` for unset or blank values.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl GatewayConfig {
    /// Parses the flags; `stream_replicas` comes from the shared NATS settings.
    pub fn from_args(args: &GatewayArgs, stream_replicas: usize) -> Result<Self, ConfigError> {
        let hmac = |value: &Option<String>| set(value).map(|s| HmacKey::new(s.as_bytes()));
        let token = |value: &Option<String>| set(value).map(|s| SecretToken::new(s.as_bytes()));
        let standard = |variable, value: &Option<String>| {
            set(value)
                .map(StandardWebhooksKeys::parse)
                .transpose()
                .map_err(|reason| config_error(variable, reason))
        };
        let secrets = Secrets {
            buddy: hmac(&args.secret_buddy),
            github: hmac(&args.secret_github),
            gitlab: token(&args.secret_gitlab),
            gitlab_signing: standard(
                "HOOKMESH_SECRET_GITLAB_SIGNING",
                &args.secret_gitlab_signing,
            )?,
            circleci: hmac(&args.secret_circleci),
            jenkins: token(&args.secret_jenkins),
            providers: standard("HOOKMESH_SECRET_PROVIDERS", &args.secret_providers)?,
            callback: hmac(&args.callback_secret),
        };
        if args.max_body_bytes == 0 {
            return Err(config_error("HOOKMESH_MAX_BODY_BYTES", "must be positive"));
        }
        // A signature-valid resend must still be recognised as a duplicate.
        let window = hookmesh_nats::definitions::ingest_duplicate_window();
        if Duration::from_secs(args.timestamp_tolerance_secs) + MAX_CLOCK_SKEW > window {
            return Err(config_error(
                "HOOKMESH_TIMESTAMP_TOLERANCE_SECS",
                format!(
                    "{} s of tolerance plus {} s of clock skew outlast the ingest streams' \
                     duplicate window of {} s, so a resend within the tolerance would be stored \
                     twice: lower the tolerance, or raise HOOKMESH_DUPLICATE_WINDOW_SECS",
                    args.timestamp_tolerance_secs,
                    MAX_CLOCK_SKEW.as_secs(),
                    window.as_secs()
                ),
            ));
        }
        if args.sweep_max_combinations == 0 {
            return Err(config_error(
                "HOOKMESH_SWEEP_MAX_COMBINATIONS",
                "must be positive",
            ));
        }
        if args.publish_timeout_ms == 0 {
            return Err(config_error(
                "HOOKMESH_PUBLISH_TIMEOUT_MS",
                "must be positive",
            ));
        }
        if args.ui_session_secs == 0 {
            return Err(config_error("HOOKMESH_UI_SESSION_SECS", "must be positive"));
        }
        let ui_session_key = match set(&args.ui_session_secret) {
            None => None,
            Some(secret) if secret.len() < MIN_SESSION_SECRET => {
                return Err(config_error(
                    "HOOKMESH_UI_SESSION_SECRET",
                    "must be at least 32 characters (`openssl rand -hex 32` makes one)",
                ));
            }
            Some(secret) => Some(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                secret.as_bytes(),
            )),
        };
        Ok(Self {
            api_keys: parse_api_keys(set(&args.api_keys).unwrap_or(""))?,
            admin_keys: parse_named_keys(
                "HOOKMESH_ADMIN_KEYS",
                set(&args.admin_keys).unwrap_or(""),
            )?,
            admin_readonly_keys: parse_named_keys(
                "HOOKMESH_ADMIN_READONLY_KEYS",
                set(&args.admin_readonly_keys).unwrap_or(""),
            )?,
            ui_session: Duration::from_secs(args.ui_session_secs),
            ui_session_key,
            secrets,
            providers: parse_providers(&args.providers)?,
            max_body_bytes: args.max_body_bytes,
            timestamp_tolerance_secs: args.timestamp_tolerance_secs,
            rate_limits: parse_rate_limits(&args.rate_limits)?,
            publish_timeout: Duration::from_millis(args.publish_timeout_ms),
            stream_replicas,
            sweep_max_combinations: args.sweep_max_combinations,
            connections: ConnectionLimits::from_args(&args.connections)?,
        })
    }
}

/// `tenant:key,tenant:key`.
pub fn parse_api_keys(text: &str) -> Result<Vec<(TenantId, SecretToken)>, ConfigError> {
    parse_named_keys("HOOKMESH_API_KEYS", text)
}

/// `name:key,name:key` of `VARIABLE`; names follow the tenant id rules.
pub fn parse_named_keys(
    variable: &'static str,
    text: &str,
) -> Result<Vec<(TenantId, SecretToken)>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(i, entry)| {
            let (tenant, key) = entry.split_once(':').ok_or_else(|| {
                config_error(variable, format!("entry {} is not tenant:key", i + 1))
            })?;
            let tenant = TenantId::parse(tenant.trim()).map_err(|reason| {
                config_error(variable, format!("entry {}: tenant {reason}", i + 1))
            })?;
            if key.trim().len() < 16 {
                return Err(config_error(
                    variable,
                    format!(
                        "entry {} ({tenant}): keys must be at least 16 characters",
                        i + 1
                    ),
                ));
            }
            Ok((tenant, SecretToken::new(key.trim().as_bytes())))
        })
        .collect()
}

fn parse_providers(text: &str) -> Result<Vec<String>, ConfigError> {
    let providers: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = providers.iter().find(|p| !is_valid_provider_name(p)) {
        return Err(config_error(
            "HOOKMESH_PROVIDERS",
            format!("{bad:?} is not a provider name (1-32 of a-z, 0-9, '_', '-')"),
        ));
    }
    Ok(providers)
}

/// The defaults, overridden by `source=rate` entries.
pub fn parse_rate_limits(text: &str) -> Result<BTreeMap<String, u32>, ConfigError> {
    const VARIABLE: &str = "HOOKMESH_RATE_LIMITS";
    let mut limits: BTreeMap<String, u32> = DEFAULT_RATE_LIMITS
        .iter()
        .map(|(source, rate)| ((*source).to_owned(), *rate))
        .collect();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (source, rate) = entry
            .split_once('=')
            .ok_or_else(|| config_error(VARIABLE, format!("{entry:?} is not source=rate")))?;
        let source = source.trim();
        if !limits.contains_key(source) {
            let known: Vec<_> = DEFAULT_RATE_LIMITS.iter().map(|(s, _)| *s).collect();
            return Err(config_error(
                VARIABLE,
                format!("unknown source {source:?} (known: {})", known.join(", ")),
            ));
        }
        let rate = rate.trim().parse().map_err(|_| {
            config_error(
                VARIABLE,
                format!("{entry:?}: the rate must be a whole number per second"),
            )
        })?;
        limits.insert(source.to_owned(), rate);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_into_tenants() {
        let keys = parse_api_keys("acme:0123456789abcdef, globex:fedcba9876543210").unwrap();
        let tenants: Vec<_> = keys.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tenants, ["acme", "globex"]);
        assert!(keys[0].1.matches(b"0123456789abcdef"));
    }

    #[test]
    fn bad_api_keys_name_the_entry() {
        assert_eq!(
            parse_api_keys("acme").unwrap_err().reason,
            "entry 1 is not tenant:key"
        );
        assert!(parse_api_keys("a.b:0123456789abcdef").is_err());
        assert!(
            parse_api_keys("acme:short")
                .unwrap_err()
                .reason
                .contains("16")
        );
    }

    #[test]
    fn rate_limits_override_the_defaults() {
        let limits = parse_rate_limits("buddy=5, providers=0").unwrap();
        assert_eq!(limits["buddy"], 5);
        assert_eq!(limits["providers"], 0);
        assert_eq!(limits["api"], 50);
        assert!(
            parse_rate_limits("nope=1")
                .unwrap_err()
                .reason
                .contains("unknown source")
        );
        assert!(parse_rate_limits("buddy=fast").is_err());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: GatewayArgs,
        }
        let wrapper = Wrapper::try_parse_from([
            "test",
            "--secret-buddy",
            "very-secret-value",
            "--api-keys",
            "acme:another-secret-value",
        ])
        .unwrap();
        let shown = format!("{:?}", wrapper.args);
        assert!(!shown.contains("very-secret-value") && !shown.contains("another-secret-value"));
        assert!(shown.contains("secret_buddy: \"[set]\""), "{shown}");
    }

    #[test]
    fn a_short_session_secret_is_refused_and_never_shown() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: GatewayArgs,
        }
        let config = |secret: &str| {
            let wrapper = Wrapper::try_parse_from(["test", "--ui-session-secret", secret]).unwrap();
            GatewayConfig::from_args(&wrapper.args, 1)
        };
        let error = config("too-short-secret").unwrap_err();
        assert_eq!(error.variable, "HOOKMESH_UI_SESSION_SECRET");
        assert!(!error.to_string().contains("too-short-secret"));
        let long = "a-session-secret-of-forty-characters-000";
        let config = config(long).unwrap();
        assert!(config.ui_session_key.is_some());
        assert!(!format!("{config:?}").contains(long));
    }

    #[test]
    fn a_tolerance_that_outlasts_the_duplicate_window_is_refused() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: GatewayArgs,
        }
        let parse = |tolerance: &str| {
            let wrapper =
                Wrapper::try_parse_from(["test", "--timestamp-tolerance-secs", tolerance]).unwrap();
            GatewayConfig::from_args(&wrapper.args, 1)
        };
        assert!(parse("300").is_ok(), "the defaults fit");
        let error = parse("3600").unwrap_err();
        assert_eq!(error.variable, "HOOKMESH_TIMESTAMP_TOLERANCE_SECS");
        assert!(
            error.reason.contains("duplicate window"),
            "{}",
            error.reason
        );
    }

    #[test]
    fn the_connection_cap_defaults_below_the_open_file_limit() {
        let limit = open_file_limit().expect("Linux shows the process's limits");
        assert_eq!(
            default_max_connections(),
            limit.saturating_sub(RESERVED_FILE_DESCRIPTORS).max(1)
        );
    }

    #[test]
    fn provider_names_are_checked() {
        assert_eq!(
            parse_providers("ses, sendgrid").unwrap(),
            ["ses", "sendgrid"]
        );
        assert!(parse_providers("Send Grid").is_err());
    }
}
