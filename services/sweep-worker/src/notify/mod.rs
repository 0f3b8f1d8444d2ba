//! The notifier: facts people act on, told by email and Slack.
//!
//! It runs in the sweep-worker's process, in two stages joined by the
//! NATS stream `NOTIFICATIONS`:
//!
//! 1. **Routing.** Durable consumers of finished sweeps
//!    (`sweeps.jobs.*.completed|failed`), detected CI failures
//!    (`ci.failure.detected`) and completed campaigns
//!    (`delivery.campaign.completed`), and a watcher of the dead letters,
//!    match each fact against the [`rules`], render a message per
//!    (rule, channel) ([`render`]) and publish it to `notify.<channel>`
//!    under an id derived from the fact, so routing a fact twice publishes
//!    it once.
//! 2. **Delivery.** A durable consumer per channel sends each
//!    notification ([`email`], [`slack`]); [`outcome`] decides: sent,
//!    retried with backoff (a transient failure), or dead-lettered with the
//!    reason (refused, or out of attempts).
//!
//! A sweep never waits for its notification: the job is settled before its
//! event is published, and a slow or failing channel only holds its own
//! consumer.

pub mod email;
pub mod outcome;
pub mod render;
pub mod rules;
pub mod slack;
pub mod threshold;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use hookmesh_contracts::ci::CiFailureDetected;
use hookmesh_contracts::delivery::CampaignCompleted;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::notify::{ChannelKind, Notification, NotificationKind, notification_id};
use hookmesh_contracts::subjects::{self, NOTIFICATION_DEAD_LETTERS};
use hookmesh_contracts::sweep_jobs::{JobStatus, SweepJobEvent};
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_nats::definitions::{
    CAMPAIGN_NOTIFY_CONSUMER, CI_NOTIFY_CONSUMER, EMAIL_CONSUMER, SLACK_CONSUMER,
    SWEEP_NOTIFY_CONSUMER,
};
use hookmesh_nats::{ConsumerDefinition, STREAMS, ensure_streams};
use hookmesh_runtime::consume::ConsumeSettings;
use hookmesh_runtime::dead_letter::DEAD_LETTER_STREAM;
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_runtime::publish::{EventSink, OutboxMessage};
use hookmesh_runtime::{Delivery, Handler, Loops, Outcome};
use tokio::sync::watch;

use self::email::{Mailer, SmtpSettings};
use self::outcome::{Decision, SendError, decide};
use self::render::{DeadLetterAlert, Message, SweepView};
use self::rules::{Channel, Fact, Rules};
use self::slack::Slack;
use self::threshold::DeadLetterCounter;
use crate::handlers::read;
use crate::job::NO_CALLBACK;
use crate::store::SweepStore;
use crate::telemetry::SweepMetrics;

/// The `source` of the notifications' envelopes.
const SOURCE: &str = "/hookmesh/sweep-worker/notifier";

/// How the notifier runs.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub rules: Arc<Rules>,
    /// Required when a rule sends email.
    pub smtp: Option<SmtpSettings>,
    /// Delays between attempts while a channel fails transiently; when they
    /// are used up the notification is dead-lettered.
    pub delays: Vec<Duration>,
    /// Whether webhooks may be on loopback or private addresses.
    pub allow_private: bool,
    /// Bound on each webhook call.
    pub timeout: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            rules: Arc::default(),
            smtp: None,
            delays: [2, 4, 8, 16, 32, 64].map(Duration::from_secs).to_vec(),
            allow_private: false,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why the notifier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "channel {channel:?} sends email, so HOOKMESH_SMTP_URL and HOOKMESH_SMTP_FROM are required"
    )]
    NoSmtp { channel: String },
    #[error("the SMTP settings cannot be used: {0}")]
    Smtp(String),
    #[error("cannot build the webhook client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(
        "HOOKMESH_NOTIFY_RETRY_DELAYS lists {delays} delays, but a notification is delivered at \
         most {max_deliver} times ({file}): list at most {} delays",
        max_deliver - 1
    )]
    TooManyRetries {
        delays: usize,
        max_deliver: usize,
        file: &'static str,
    },
}

/// What the routing stage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sweeps,
    CiFailures,
    Campaigns,
}

/// The kind of notification a finished sweep's event makes.
pub fn sweep_kind(event: &SweepJobEvent) -> Option<NotificationKind> {
    match event.status {
        JobStatus::Completed => Some(NotificationKind::SweepCompleted),
        JobStatus::Failed
            if event
                .error_message
                .as_deref()
                .is_some_and(|reason| reason.starts_with(NO_CALLBACK)) =>
        {
            Some(NotificationKind::SweepTimedOut)
        }
        JobStatus::Failed => Some(NotificationKind::SweepFailed),
        _ => None,
    }
}

/// The notifications `message` makes for a fact `fact_id` matched by
/// `matched`, one per (rule, channel).
fn notifications(
    rules: &Rules,
    fact_id: &str,
    kind: NotificationKind,
    matched: &[(&rules::Rule, &str)],
    message: &Message,
    occurred_at: Timestamp,
) -> Vec<Notification> {
    matched
        .iter()
        .filter_map(|(rule, channel)| {
            let kind_of_channel = rules.channels.get(*channel)?.kind();
            Some(Notification {
                id: notification_id(&[fact_id, &rule.name, channel]),
                rule: rule.name.clone(),
                kind,
                channel: kind_of_channel,
                target: (*channel).to_owned(),
                subject: message.subject.clone(),
                text: message.text.clone(),
                html: message.html.clone(),
                blocks: if kind_of_channel == ChannelKind::Slack {
                    message.blocks.clone()
                } else {
                    Vec::new()
                },
                occurred_at,
            })
        })
        .collect()
}

/// Publishes `notifications` of `tenant`, each under its id.
async fn publish(
    sink: &dyn EventSink,
    tenant: &TenantId,
    notifications: Vec<Notification>,
) -> Result<(), String> {
    let messages: Vec<OutboxMessage> = notifications
        .into_iter()
        .map(|notification| {
            let id = notification.id.clone();
            let subject = subjects::notification(notification.channel);
            let envelope = Envelope::new(
                id.clone(),
                SOURCE,
                Timestamp::now(),
                tenant.clone(),
                Some(notification.rule.clone()),
                notification,
            );
            OutboxMessage {
                msg_id: id,
                subject,
                payload: String::from_utf8(envelope.to_json()).expect("JSON is UTF-8"),
                // The routed fact's trace goes on to the delivery.
                trace: hookmesh_runtime::publish::TraceHeaders::current(),
            }
        })
        .collect();
    for result in sink.publish(&messages).await {
        result?;
    }
    Ok(())
}

/// The routing stage.
#[derive(Debug)]
pub struct Router {
    rules: Arc<Rules>,
    store: SweepStore,
    sink: Arc<dyn EventSink>,
    public_url: String,
}

impl Router {
    pub fn new(
        rules: Arc<Rules>,
        store: SweepStore,
        sink: Arc<dyn EventSink>,
        public_url: String,
    ) -> Self {
        Self {
            rules,
            store,
            sink,
            public_url,
        }
    }

    /// Routes one fact from `source`: its notifications are published, or
    /// it is retried or dead-lettered.
    pub async fn route(&self, source: Source, delivery: &Delivery) -> Outcome {
        let routed = match source {
            Source::Sweeps => self.sweep(delivery).await,
            Source::CiFailures => self.ci_failure(delivery),
            Source::Campaigns => self.campaign(delivery),
        };
        let (tenant, notifications) = match routed {
            Ok(Some(routed)) => routed,
            Ok(None) => return Outcome::Done,
            Err(outcome) => return outcome,
        };
        match publish(self.sink.as_ref(), &tenant, notifications).await {
            Ok(()) => Outcome::Done,
            Err(reason) => Outcome::retry(
                delivery.delivered,
                format!("cannot publish notifications: {reason}"),
            ),
        }
    }

    async fn sweep(
        &self,
        delivery: &Delivery,
    ) -> Result<Option<(TenantId, Vec<Notification>)>, Outcome> {
        let (envelope, event) = read::<SweepJobEvent>(delivery)?;
        let Some(kind) = sweep_kind(&event).filter(|_| event.done) else {
            return Ok(None);
        };
        let tenant = envelope.tenantid.as_str();
        let matched = self.rules.matching(&Fact {
            kind,
            tenant,
            ci: None,
        });
        if matched.is_empty() {
            return Ok(None);
        }
        // The stored results make the table; the event carries only the best.
        let job = match self.store.job(&event.job_id).await {
            Ok(Some(job)) if job.tenant == envelope.tenantid => {
                match self.store.results(&job.id).await {
                    Ok(results) => Some(job.view(Some(results))),
                    Err(error) => {
                        return Err(Outcome::retry(
                            delivery.delivered,
                            format!("the database is unavailable: {error}"),
                        ));
                    }
                }
            }
            Ok(_) => None,
            Err(error) => {
                return Err(Outcome::retry(
                    delivery.delivered,
                    format!("the database is unavailable: {error}"),
                ));
            }
        };
        let view = SweepView::new(&event, tenant, kind, job.as_ref());
        let message = render::sweep(&view, &self.public_url);
        let made = notifications(
            &self.rules,
            &envelope.id,
            kind,
            &matched,
            &message,
            event.at,
        );
        Ok(Some((envelope.tenantid, made)))
    }

    fn ci_failure(
        &self,
        delivery: &Delivery,
    ) -> Result<Option<(TenantId, Vec<Notification>)>, Outcome> {
        let (envelope, failure) = read::<CiFailureDetected>(delivery)?;
        let kind = NotificationKind::CiFailure;
        let matched = self.rules.matching(&Fact {
            kind,
            tenant: envelope.tenantid.as_str(),
            ci: Some(&failure),
        });
        let message = render::ci_failure(&failure);
        let made = notifications(
            &self.rules,
            &envelope.id,
            kind,
            &matched,
            &message,
            failure.detected_at,
        );
        Ok((!made.is_empty()).then_some((envelope.tenantid, made)))
    }

    fn campaign(
        &self,
        delivery: &Delivery,
    ) -> Result<Option<(TenantId, Vec<Notification>)>, Outcome> {
        let (envelope, completed) = read::<CampaignCompleted>(delivery)?;
        let kind = NotificationKind::CampaignCompleted;
        let matched = self.rules.matching(&Fact {
            kind,
            tenant: completed.tenant_id.as_str(),
            ci: None,
        });
        let message = render::campaign(&completed);
        let made = notifications(
            &self.rules,
            &envelope.id,
            kind,
            &matched,
            &message,
            completed.completed_at,
        );
        Ok((!made.is_empty()).then_some((completed.tenant_id, made)))
    }
}

/// A consume loop's handler for one routing source.
#[derive(Debug)]
pub struct RouteHandler {
    router: Arc<Router>,
    source: Source,
}

impl Handler for RouteHandler {
    type Arrival = ();

    /// Read when the batch is handled.
    fn arrive(&self, _: &mut Delivery) {}

    async fn handle_arrived(&self, batch: &mut [Delivery], _: Vec<()>) -> Vec<Outcome> {
        join_all(
            batch
                .iter()
                .map(|delivery| self.router.route(self.source, delivery)),
        )
        .await
    }
}

/// The delivery stage.
#[derive(Debug)]
pub struct Deliverer {
    rules: Arc<Rules>,
    mailer: Option<Mailer>,
    slack: Slack,
    delays: Vec<Duration>,
    metrics: SweepMetrics,
}

impl Deliverer {
    /// The channels of `settings`, with a mailer when some channel emails.
    pub fn new(settings: &NotifySettings, metrics: SweepMetrics) -> Result<Self, NotifyError> {
        check_delays(&settings.delays)?;
        let rules = settings.rules.clone();
        let emailing = rules
            .channels
            .iter()
            .find(|(_, channel)| channel.kind() == ChannelKind::Email);
        let mailer = match (&settings.smtp, emailing) {
            (Some(smtp), Some(_)) => Some(Mailer::new(smtp).map_err(NotifyError::Smtp)?),
            (None, Some((name, _))) => {
                return Err(NotifyError::NoSmtp {
                    channel: name.clone(),
                });
            }
            (_, None) => None,
        };
        Ok(Self {
            rules,
            mailer,
            slack: Slack::new(settings.timeout, settings.allow_private)?,
            delays: settings.delays.clone(),
            metrics,
        })
    }

    /// Sends one notification: done, retried or dead-lettered.
    pub async fn deliver(&self, delivery: &Delivery) -> Outcome {
        let (_, notification) = match read::<Notification>(delivery) {
            Ok(read) => read,
            Err(outcome) => return outcome,
        };
        let channel_name = notification.channel.as_str();
        let started = Instant::now();
        let result = match (self.rules.channels.get(&notification.target), &self.mailer) {
            (Some(Channel::Email { to }), Some(mailer))
                if notification.channel == ChannelKind::Email =>
            {
                mailer.send(&notification, to).await
            }
            (Some(Channel::Slack { url }), _) if notification.channel == ChannelKind::Slack => {
                self.slack.send(url, &notification).await
            }
            _ => Err(SendError::Permanent(format!(
                "no {channel_name} channel named {:?} in the rules (removed or changed since it was routed)",
                notification.target
            ))),
        };
        let send_seconds = started.elapsed().as_secs_f64();
        let decision = decide(result, delivery.delivered, &self.delays);
        let latency = (decision == Decision::Sent)
            .then(|| notification.occurred_at.seconds_until(Timestamp::now()));
        self.metrics.notification(
            notification.channel.as_str(),
            decision.label(),
            send_seconds,
            latency,
        );
        match decision {
            Decision::Sent => {
                tracing::info!(notification = %notification.id, rule = %notification.rule, kind = %notification.kind, channel = %notification.target, attempt = delivery.delivered, "Notification sent.");
                Outcome::Done
            }
            Decision::Retry { delay, reason } => Outcome::Retry {
                delay,
                reason: format!("notification {} not sent: {reason}", notification.id),
            },
            Decision::DeadLetter { reason } => {
                tracing::error!(notification = %notification.id, rule = %notification.rule, channel = %notification.target, attempt = delivery.delivered, %reason, "Notification not sent; it goes to the dead letters.");
                Outcome::DeadLetter { reason }
            }
        }
    }
}

/// A consume loop's handler for one channel.
#[derive(Debug)]
pub struct DeliverHandler {
    deliverer: Arc<Deliverer>,
}

impl Handler for DeliverHandler {
    type Arrival = ();

    /// Read when the batch is handled.
    fn arrive(&self, _: &mut Delivery) {}

    async fn handle_arrived(&self, batch: &mut [Delivery], _: Vec<()>) -> Vec<Outcome> {
        join_all(
            batch
                .iter()
                .map(|delivery| self.deliverer.deliver(delivery)),
        )
        .await
    }
}

/// Counts dead letters (not the notifier's own) from the start of the
/// rules' current windows, and publishes a notification per channel of a
/// rule whose threshold is crossed. Returns on shutdown; an error restarts
/// it, recounting from the stream.
async fn watch_dead_letters(
    js: jetstream::Context,
    replicas: usize,
    rules: Arc<Rules>,
    sink: Arc<dyn EventSink>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut counter = DeadLetterCounter::new(
        rules
            .thresholds()
            .map(|(rule, threshold)| (rule.name.as_str(), threshold)),
    );
    ensure_streams(&js, STREAMS, replicas)
        .await
        .map_err(|e| e.to_string())?;
    let stream = js
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let start = counter.replay_from(Timestamp::now());
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: "dlq.>".to_owned(),
            deliver_policy: DeliverPolicy::ByStartTime {
                start_time: start.as_offset_date_time(),
            },
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let own = NOTIFICATION_DEAD_LETTERS.trim_end_matches('>');
    loop {
        let message = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            message = messages.next() => match message {
                Some(message) => message.map_err(|e| e.to_string())?,
                None => return Err("the dead-letter consumer ended".to_owned()),
            },
        };
        if message.subject.starts_with(own) {
            continue;
        }
        let info = message.info().map_err(|e| e.to_string())?;
        let (sequence, at) = (info.stream_sequence, Timestamp::from(info.published));
        for firing in counter.observe(at) {
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(name))
                    .map(|value| value.as_str().to_owned())
            };
            let alert = DeadLetterAlert {
                rule: firing.rule.clone(),
                threshold: firing.threshold.threshold,
                window_secs: firing.threshold.window.as_secs(),
                window_start: firing.window_start,
                subject: header(hookmesh_runtime::dead_letter::SUBJECT)
                    .unwrap_or_else(|| message.subject.to_string()),
                reason: header(hookmesh_runtime::dead_letter::ERROR).unwrap_or_default(),
            };
            let Some(rule) = rules.rules.iter().find(|rule| rule.name == firing.rule) else {
                continue;
            };
            let matched: Vec<(&rules::Rule, &str)> = rule
                .channels
                .iter()
                .map(|channel| (rule, channel.as_str()))
                .collect();
            // The window names the fact: every replica and restart agrees.
            let fact_id = format!("dead-letters:{}", firing.window_start.unix_millis());
            let rendered = render::dead_letters(&alert);
            let made = notifications(
                &rules,
                &fact_id,
                NotificationKind::DeadLetters,
                &matched,
                &rendered,
                at,
            );
            tracing::warn!(rule = %firing.rule, threshold = alert.threshold, window_secs = alert.window_secs, sequence, "Dead-letter threshold crossed.");
            publish(sink.as_ref(), &TenantId::default_tenant(), made).await?;
        }
    }
}

/// Checks that every delay fits the channel consumers' deliveries.
pub fn check_delays(delays: &[Duration]) -> Result<(), NotifyError> {
    for definition in [EMAIL_CONSUMER, SLACK_CONSUMER] {
        let max_deliver = definition.config(1).map_or(-1, |config| config.max_deliver);
        match usize::try_from(max_deliver) {
            Ok(max_deliver) if delays.len() >= max_deliver => {
                return Err(NotifyError::TooManyRetries {
                    delays: delays.len(),
                    max_deliver,
                    file: definition.file,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Starts the notifier's loops in `loops`: only those some rule needs.
pub fn start(
    loops: &mut Loops,
    js: &jetstream::Context,
    settings: &NotifySettings,
    context: (SweepStore, Arc<dyn EventSink>, String, SweepMetrics),
    consume_metrics: &ConsumeFamilies,
    replicas: usize,
) -> Result<(), NotifyError> {
    let (store, sink, public_url, metrics) = context;
    let rules = settings.rules.clone();
    if rules.is_empty() {
        return Ok(());
    }
    let deliverer = Arc::new(Deliverer::new(settings, metrics)?);
    let router = Arc::new(Router::new(rules.clone(), store, sink.clone(), public_url));
    let sweeps = [
        NotificationKind::SweepCompleted,
        NotificationKind::SweepFailed,
        NotificationKind::SweepTimedOut,
    ];
    let routes: [(Source, ConsumerDefinition, &'static str, bool); 3] = [
        (
            Source::Sweeps,
            SWEEP_NOTIFY_CONSUMER,
            "sweep-worker-notify",
            sweeps.iter().any(|kind| rules.listens_to(*kind)),
        ),
        (
            Source::CiFailures,
            CI_NOTIFY_CONSUMER,
            "sweep-worker-notify-ci",
            rules.listens_to(NotificationKind::CiFailure),
        ),
        (
            Source::Campaigns,
            CAMPAIGN_NOTIFY_CONSUMER,
            "sweep-worker-notify-campaigns",
            rules.listens_to(NotificationKind::CampaignCompleted),
        ),
    ];
    let settings_for = |definition| ConsumeSettings {
        definition,
        replicas,
        max_batch: 16,
        max_wait: Duration::ZERO,
        concurrency: 1,
        flush_when_idle: false,
    };
    for (source, definition, label, wanted) in routes {
        if !wanted {
            continue;
        }
        let (js_setup, router) = (js.clone(), router.clone());
        loops.consume(
            js.clone(),
            settings_for(definition),
            consume_metrics.consumer(label),
            move || {
                let (js, router) = (js_setup.clone(), router.clone());
                async move {
                    ensure_streams(&js, STREAMS, replicas).await?;
                    Ok(RouteHandler { router, source })
                }
            },
        );
    }
    for (kind, definition, label) in [
        (ChannelKind::Email, EMAIL_CONSUMER, "sweep-worker-email"),
        (ChannelKind::Slack, SLACK_CONSUMER, "sweep-worker-slack"),
    ] {
        if !rules.uses(kind) {
            continue;
        }
        let (js_setup, deliverer) = (js.clone(), deliverer.clone());
        loops.consume(
            js.clone(),
            settings_for(definition),
            consume_metrics.consumer(label),
            move || {
                let (js, deliverer) = (js_setup.clone(), deliverer.clone());
                async move {
                    ensure_streams(&js, STREAMS, replicas).await?;
                    Ok(DeliverHandler { deliverer })
                }
            },
        );
    }
    if rules.thresholds().next().is_some() {
        let (js, shutdown) = (js.clone(), loops.shutdown());
        loops.supervise("notify-dead-letters", move || {
            watch_dead_letters(
                js.clone(),
                replicas,
                rules.clone(),
                sink.clone(),
                shutdown.clone(),
            )
        });
    }
    Ok(())
}
