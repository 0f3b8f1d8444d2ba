//! Which facts notify whom through which channel. Rules come from a JSON
//! file (`HOOKMESH_NOTIFY_RULES`) or from the environment's shorthand, and
//! are checked once, at start, with every problem named.
//!
//! ```json
//! {
//!   "channels": {
//!     "desk": {"type": "email", "to": ["desk@example.com"]},
//!     "oncall": {"type": "slack", "url": "https://hooks.slack.com/services/…"}
//!   },
//!   "rules": [
//!     {"name": "acme-sweeps", "events": ["sweep.completed", "sweep.failed", "sweep.timed_out"],
//!      "tenants": ["acme"], "channels": ["desk"]},
//!     {"name": "dlq", "events": ["dead_letters"], "threshold": 10, "window_secs": 300,
//!      "channels": ["oncall"]},
//!     {"name": "ci", "events": ["ci.failure"], "platforms": ["github"],
//!      "repositories": ["acme/api"], "classes": ["test_failure"], "channels": ["oncall"]}
//!   ]
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use hookmesh_contracts::TenantId;
use hookmesh_contracts::ci::{CiFailureDetected, CiPlatform, ErrorPattern};
use hookmesh_contracts::notify::{ChannelKind, NotificationKind};
use lettre::message::Mailbox;
use serde::Deserialize;

/// The longest dead-letter window: the NOTIFICATIONS stream's duplicate
/// window, which keeps a threshold's firing to one per window across
/// replicas and restarts.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Seed 001's alert: more than 10 dead letters…
pub const DEFAULT_THRESHOLD: u64 = 10;
/// …within five minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// The rules file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// A channel as written: `{"type": "email", "to": [...]}` or
/// `{"type": "slack", "url": "..."}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    #[serde(rename = "type")]
    pub kind: ChannelKind,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// A rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub events: Vec<NotificationKind>,
    pub channels: Vec<String>,
    /// Only these tenants' facts (all when empty).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `ci.failure` only: these platforms, repositories, failure classes.
    #[serde(default)]
    pub platforms: Vec<CiPlatform>,
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub classes: Vec<ErrorPattern>,
    /// `dead_letters` only: fire when more than this many arrive in a window.
    #[serde(default)]
    pub threshold: Option<u64>,
    #[serde(default)]
    pub window_secs: Option<u64>,
}

/// Where a notification goes; its address never leaves the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum Channel {
    Email { to: Vec<Mailbox> },
    Slack { url: reqwest::Url },
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Email { to } => write!(f, "Email({} recipients)", to.len()),
            Self::Slack { url } => write!(f, "Slack({})", url.host_str().unwrap_or("?")),
        }
    }
}

impl Channel {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Email { .. } => ChannelKind::Email,
            Self::Slack { .. } => ChannelKind::Slack,
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub events: Vec<NotificationKind>,
    pub channels: Vec<String>,
    pub tenants: Vec<TenantId>,
    pub platforms: Vec<CiPlatform>,
    pub repositories: Vec<String>,
    pub classes: Vec<ErrorPattern>,
    /// Set when the rule listens to `dead_letters`.
    pub dead_letters: Option<Threshold>,
}

/// More than `threshold` dead letters within one `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub threshold: u64,
    pub window: Duration,
}

/// Checked rules and the channels they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub channels: BTreeMap<String, Channel>,
    pub rules: Vec<Rule>,
}

/// What a rule is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Fact<'a> {
    pub kind: NotificationKind,
    pub tenant: &'a str,
    /// For `ci.failure`: the failure.
    pub ci: Option<&'a CiFailureDetected>,
}

/// Rules that cannot be used, each problem on its own line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:\n  - {}", problems.join("\n  - "))]
pub struct RulesError {
    /// The file or variable the rules came from.
    pub origin: String,
    pub problems: Vec<String>,
}

/// Whether `url` may be called: http(s), and not loopback, private or
/// link-local unless `allow_private` (a local run). Hostnames are checked
/// again, resolved, before each call.
pub fn check_target(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must be http or https, not {}", url.scheme()));
    }
    let Some(host) = url.host_str() else {
        return Err("has no host".to_owned());
    };
    if allow_private {
        return Ok(());
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let refused = match literal.parse::<IpAddr>() {
        Ok(ip) => !is_public(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if refused {
        return Err(format!(
            "points at a loopback or private address ({}); set HOOKMESH_NOTIFY_ALLOW_PRIVATE=true to allow it",
            url.host_str().unwrap_or("?")
        ));
    }
    Ok(())
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

impl Rules {
    /// Checks `file`, read from `origin`.
    pub fn check(file: RulesFile, origin: &str, allow_private: bool) -> Result<Self, RulesError> {
        let mut problems = Vec::new();
        // Rules are checked against every channel named, valid or not, so
        // that a bad channel is reported once, where it is defined.
        let declared: BTreeSet<String> = file.channels.keys().cloned().collect();
        let mut channels = BTreeMap::new();
        for (name, spec) in file.channels {
            match check_channel(&spec, allow_private) {
                Ok(channel) => {
                    channels.insert(name, channel);
                }
                Err(problem) => problems.push(format!("channel {name:?}: {problem}")),
            }
        }
        let mut rules: Vec<Rule> = Vec::new();
        let mut names = BTreeSet::new();
        for (index, spec) in file.rules.into_iter().enumerate() {
            let at = format!("rules[{index}] ({:?})", spec.name);
            if !names.insert(spec.name.clone()) {
                problems.push(format!("{at}: a second rule with this name"));
            }
            match check_rule(spec, &declared) {
                Ok(rule) => rules.push(rule),
                Err(found) => problems.extend(found.into_iter().map(|p| format!("{at}: {p}"))),
            }
        }
        if problems.is_empty() {
            Ok(Self { channels, rules })
        } else {
            Err(RulesError {
                origin: origin.to_owned(),
                problems,
            })
        }
    }

    /// Reads and checks a rules file.
    pub fn from_json(text: &str, origin: &str, allow_private: bool) -> Result<Self, RulesError> {
        let file: RulesFile = serde_json::from_str(text).map_err(|error| RulesError {
            origin: origin.to_owned(),
            problems: vec![error.to_string()],
        })?;
        Self::check(file, origin, allow_private)
    }

    /// Whether no rule asks for anything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule listens to `kind`.
    pub fn listens_to(&self, kind: NotificationKind) -> bool {
        self.rules.iter().any(|rule| rule.events.contains(&kind))
    }

    /// Whether some channel is of `kind`.
    pub fn uses(&self, kind: ChannelKind) -> bool {
        self.channels.values().any(|channel| channel.kind() == kind)
    }

    /// The (rule, channel name) pairs `fact` notifies, each once.
    pub fn matching(&self, fact: &Fact<'_>) -> Vec<(&Rule, &str)> {
        let mut found = Vec::new();
        for rule in &self.rules {
            if !rule.matches(fact) {
                continue;
            }
            for channel in &rule.channels {
                found.push((rule, channel.as_str()));
            }
        }
        found
    }

    /// The rules with a dead-letter threshold.
    pub fn thresholds(&self) -> impl Iterator<Item = (&Rule, Threshold)> {
        self.rules
            .iter()
            .filter_map(|rule| rule.dead_letters.map(|threshold| (rule, threshold)))
    }
}

impl Rule {
    fn matches(&self, fact: &Fact<'_>) -> bool {
        if !self.events.contains(&fact.kind) {
            return false;
        }
        if !self.tenants.is_empty() && !self.tenants.iter().any(|t| t.as_str() == fact.tenant) {
            return false;
        }
        let Some(ci) = fact.ci else {
            return true;
        };
        (self.platforms.is_empty() || self.platforms.contains(&ci.platform))
            && (self.repositories.is_empty() || self.repositories.contains(&ci.repository))
            && (self.classes.is_empty()
                || ci
                    .error_patterns
                    .iter()
                    .any(|class| self.classes.contains(class)))
    }
}

fn check_channel(spec: &ChannelSpec, allow_private: bool) -> Result<Channel, String> {
    match spec.kind {
        ChannelKind::Email => {
            if spec.url.is_some() {
                return Err("an email channel has no url (the server is HOOKMESH_SMTP_URL)".into());
            }
            if spec.to.is_empty() {
                return Err("`to` must list at least one address".to_owned());
            }
            let to = spec
                .to
                .iter()
                .map(|address| {
                    address
                        .parse::<Mailbox>()
                        .map_err(|error| format!("{address:?} is not an email address: {error}"))
                })
                .collect::<Result<_, _>>()?;
            Ok(Channel::Email { to })
        }
        ChannelKind::Slack => {
            if !spec.to.is_empty() {
                return Err(
                    "a slack channel has no `to`; its `url` is the incoming webhook".into(),
                );
            }
            let url = spec
                .url
                .as_deref()
                .ok_or("`url` (the incoming webhook) is required")?;
            let url = reqwest::Url::parse(url).map_err(|error| {
                format!(
                    "url {} is not a URL: {error}",
                    hookmesh_contracts::redact::url(url)
                )
            })?;
            check_target(&url, allow_private).map_err(|reason| format!("url {reason}"))?;
            Ok(Channel::Slack { url })
        }
    }
}

fn check_rule(spec: RuleSpec, channels: &BTreeSet<String>) -> Result<Rule, Vec<String>> {
    let mut problems = Vec::new();
    if spec.name.trim().is_empty() {
        problems.push("`name` must not be empty".to_owned());
    }
    if spec.events.is_empty() {
        problems.push("`events` must list at least one event".to_owned());
    }
    if spec.channels.is_empty() {
        problems.push("`channels` must list at least one channel".to_owned());
    }
    for channel in &spec.channels {
        if !channels.contains(channel) {
            problems.push(format!("channel {channel:?} is not defined in `channels`"));
        }
    }
    let tenants = spec
        .tenants
        .iter()
        .filter_map(|tenant| match TenantId::parse(tenant) {
            Ok(tenant) => Some(tenant),
            Err(reason) => {
                problems.push(format!("tenant {reason}"));
                None
            }
        })
        .collect();
    let ci_filters =
        !spec.platforms.is_empty() || !spec.repositories.is_empty() || !spec.classes.is_empty();
    if ci_filters && !spec.events.contains(&NotificationKind::CiFailure) {
        problems.push("`platforms`, `repositories` and `classes` apply to ci.failure only".into());
    }
    let dead_letters = if spec.events.contains(&NotificationKind::DeadLetters) {
        let threshold = spec.threshold.unwrap_or(DEFAULT_THRESHOLD);
        let window = spec.window_secs.map_or(DEFAULT_WINDOW, Duration::from_secs);
        if window.is_zero() || window > MAX_WINDOW {
            problems.push(format!(
                "`window_secs` must be 1-{} (the NOTIFICATIONS stream's duplicate window)",
                MAX_WINDOW.as_secs()
            ));
        }
        Some(Threshold { threshold, window })
    } else {
        if spec.threshold.is_some() || spec.window_secs.is_some() {
            problems.push("`threshold` and `window_secs` apply to dead_letters only".into());
        }
        None
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Rule {
        name: spec.name,
        events: spec.events,
        channels: spec.channels,
        tenants,
        platforms: spec.platforms,
        repositories: spec.repositories,
        classes: spec.classes,
        dead_letters,
    })
}

/// The environment's shorthand, for when there is no rules file: every
/// event of `events`, of every tenant, to the email recipients and the
/// incoming webhook that are set.
#[derive(Debug, Clone)]
pub struct Shorthand<'a> {
    pub webhook_url: Option<&'a str>,
    pub email_to: &'a [String],
    pub events: &'a [NotificationKind],
    pub dead_letter_threshold: u64,
    pub dead_letter_window_secs: u64,
}

/// The rule the shorthand makes.
pub const SHORTHAND_RULE: &str = "default";

impl Rules {
    /// The rules `shorthand` makes; none when neither channel is set.
    pub fn from_shorthand(
        shorthand: &Shorthand<'_>,
        allow_private: bool,
    ) -> Result<Self, RulesError> {
        let mut file = RulesFile::default();
        if let Some(url) = shorthand.webhook_url.filter(|url| !url.trim().is_empty()) {
            file.channels.insert(
                "slack".to_owned(),
                ChannelSpec {
                    kind: ChannelKind::Slack,
                    to: Vec::new(),
                    url: Some(url.to_owned()),
                },
            );
        }
        let to: Vec<String> = shorthand
            .email_to
            .iter()
            .map(|address| address.trim().to_owned())
            .filter(|address| !address.is_empty())
            .collect();
        if !to.is_empty() {
            file.channels.insert(
                "email".to_owned(),
                ChannelSpec {
                    kind: ChannelKind::Email,
                    to,
                    url: None,
                },
            );
        }
        if !file.channels.is_empty() && !shorthand.events.is_empty() {
            let dead_letters = shorthand.events.contains(&NotificationKind::DeadLetters);
            file.rules.push(RuleSpec {
                name: SHORTHAND_RULE.to_owned(),
                events: shorthand.events.to_vec(),
                channels: file.channels.keys().cloned().collect(),
                tenants: Vec::new(),
                platforms: Vec::new(),
                repositories: Vec::new(),
                classes: Vec::new(),
                threshold: dead_letters.then_some(shorthand.dead_letter_threshold),
                window_secs: dead_letters.then_some(shorthand.dead_letter_window_secs),
            });
        }
        Self::check(
            file,
            "HOOKMESH_NOTIFY_WEBHOOK_URL / HOOKMESH_NOTIFY_EMAIL_TO / HOOKMESH_NOTIFY_EVENTS",
            allow_private,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
      "channels": {
        "desk": {"type": "email", "to": ["desk@example.com", "Risk <risk@example.com>"]},
        "oncall": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/secret"}
      },
      "rules": [
        {"name": "acme", "events": ["sweep.completed", "sweep.failed"], "tenants": ["acme"], "channels": ["desk", "oncall"]},
        {"name": "dlq", "events": ["dead_letters"], "channels": ["oncall"]},
        {"name": "ci", "events": ["ci.failure"], "platforms": ["github"], "classes": ["test_failure"], "channels": ["oncall"]}
      ]
    }"#;

    #[test]
    fn a_rules_file_is_read_and_matched() {
        let rules = Rules::from_json(FILE, "rules.json", false).unwrap();
        let fact = |kind, tenant| Fact {
            kind,
            tenant,
            ci: None,
        };
        let names = |found: Vec<(&Rule, &str)>| {
            found
                .into_iter()
                .map(|(rule, channel)| format!("{}→{channel}", rule.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(rules.matching(&fact(NotificationKind::SweepCompleted, "acme"))),
            ["acme→desk", "acme→oncall"]
        );
        assert!(
            rules
                .matching(&fact(NotificationKind::SweepCompleted, "globex"))
                .is_empty()
        );
        assert!(
            rules
                .matching(&fact(NotificationKind::SweepTimedOut, "acme"))
                .is_empty()
        );
        let (rule, threshold) = rules.thresholds().next().unwrap();
        assert_eq!(rule.name, "dlq");
        assert_eq!(
            threshold,
            Threshold {
                threshold: DEFAULT_THRESHOLD,
                window: DEFAULT_WINDOW
            }
        );
        assert!(rules.listens_to(NotificationKind::CiFailure));
        assert!(!rules.listens_to(NotificationKind::CampaignCompleted));
        assert!(!format!("{rules:?}").contains("secret"));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let file = r#"{
          "channels": {
            "a": {"type": "email", "to": ["not an address"]},
            "b": {"type": "slack", "url": "http://127.0.0.1:9/hook"},
            "c": {"type": "slack"}
          },
          "rules": [
            {"name": "x", "events": [], "channels": ["nowhere"]},
            {"name": "x", "events": ["sweep.failed"], "channels": ["a"], "threshold": 3},
            {"name": "y", "events": ["dead_letters"], "channels": ["a"], "window_secs": 7200}
          ]
        }"#;
        let error = Rules::from_json(file, "rules.json", false).unwrap_err();
        let text = error.to_string();
        for expected in [
            "rules.json:",
            "channel \"a\": \"not an address\" is not an email address",
            "channel \"b\": url points at a loopback or private address (127.0.0.1)",
            "channel \"c\": `url` (the incoming webhook) is required",
            "rules[0] (\"x\"): `events` must list at least one event",
            "rules[0] (\"x\"): channel \"nowhere\" is not defined",
            "rules[1] (\"x\"): a second rule with this name",
            "rules[1] (\"x\"): `threshold` and `window_secs` apply to dead_letters only",
            "rules[2] (\"y\"): `window_secs` must be 1-3600",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        let unknown = Rules::from_json(r#"{"rulez": []}"#, "r.json", false).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field `rulez`"),
            "{unknown}"
        );
        let bad_event = Rules::from_json(
            r#"{"rules": [{"name": "a", "events": ["sweep.done"], "channels": []}]}"#,
            "r.json",
            false,
        )
        .unwrap_err();
        assert!(bad_event.to_string().contains("sweep.done"), "{bad_event}");
    }

    #[test]
    fn ci_rules_filter_by_platform_repository_and_class() {
        let rules = Rules::from_json(FILE, "rules.json", false).unwrap();
        let failure: CiFailureDetected = serde_json::from_value(serde_json::json!({
            "platform": "github", "repository": "acme/api", "pipeline_id": "1", "event_id": "e1",
            "error_patterns": ["test_failure"], "failure_context": {},
            "metadata": {}, "failed_at": "2025-01-27T10:00:00Z",
            "received_at": "2025-01-27T10:00:01Z", "detected_at": "2025-01-27T10:00:02Z"
        }))
        .unwrap();
        let fact = Fact {
            kind: NotificationKind::CiFailure,
            tenant: "default",
            ci: Some(&failure),
        };
        assert_eq!(rules.matching(&fact).len(), 1);
        let mut other = failure.clone();
        other.platform = CiPlatform::Gitlab;
        let fact = Fact {
            ci: Some(&other),
            ..fact
        };
        assert!(rules.matching(&fact).is_empty());
    }

    #[test]
    fn the_shorthand_makes_one_rule_to_every_channel_set() {
        let to = vec!["ops@example.com".to_owned()];
        let events = [
            NotificationKind::SweepCompleted,
            NotificationKind::DeadLetters,
        ];
        let shorthand = Shorthand {
            webhook_url: Some("http://127.0.0.1:9/hook"),
            email_to: &to,
            events: &events,
            dead_letter_threshold: 10,
            dead_letter_window_secs: 300,
        };
        assert!(Rules::from_shorthand(&shorthand, false).is_err());
        let rules = Rules::from_shorthand(&shorthand, true).unwrap();
        assert_eq!(rules.rules.len(), 1);
        assert_eq!(rules.rules[0].channels, ["email", "slack"]);
        let none = Shorthand {
            webhook_url: None,
            email_to: &[],
            ..shorthand
        };
        assert!(Rules::from_shorthand(&none, false).unwrap().is_empty());
    }

    #[test]
    fn only_public_addresses_pass_unless_allowed() {
        for private in [
            "http://localhost/x",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            let url = reqwest::Url::parse(private).unwrap();
            assert!(check_target(&url, false).is_err(), "{private}");
            assert!(check_target(&url, true).is_ok(), "{private}");
        }
        let public = reqwest::Url::parse("https://hooks.slack.com/services/x").unwrap();
        assert!(check_target(&public, false).is_ok());
        let ftp = reqwest::Url::parse("ftp://example.com/x").unwrap();
        assert!(check_target(&ftp, true).is_err());
    }
}
