//! Notifications (issue 17) against real receivers: an SMTP server
//! (aiosmtpd, STARTTLS and AUTH) and an HTTP incoming webhook, with a real
//! nats-server, the sweep-worker's notifier and, where a sweep is the fact,
//! the whole sweep pipeline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use hookmesh_contracts::notify::{ChannelKind, Notification, NotificationKind};
use hookmesh_contracts::{Envelope, TenantId, Timestamp};
use hookmesh_runtime::dead_letter::{self, StoredDeadLetter};
use hookmesh_sweep_worker::notify::NotifySettings;
use hookmesh_sweep_worker::notify::email::{SmtpEndpoint, SmtpSettings};
use hookmesh_sweep_worker::notify::rules::Rules;
use hookmesh_tests::smtp::{PASSWORD, SmtpOptions, TestSmtp};
use hookmesh_tests::{TestDb, TestNats, TestSweep, eventually, secrets, sweep_settings};
use serde_json::{Value, json};

use crate::deliveries::trigger_body;
use crate::sweeps::{Pipeline, knobs};

const FROM: &str = "hookmesh@example.com";

/// Retries quick enough for a test, and enough of them to outlast a
/// restart of the SMTP server.
fn quick_delays() -> Vec<Duration> {
    vec![Duration::from_millis(500); 9]
}

/// Settings sending by `rules`, email through `smtp` logged in with
/// `password`.
fn notify_settings(rules: &Value, smtp: Option<(&TestSmtp, &str)>) -> NotifySettings {
    NotifySettings {
        rules: Arc::new(Rules::from_json(&rules.to_string(), "test rules", true).unwrap()),
        smtp: smtp.map(|(server, password)| SmtpSettings {
            endpoint: SmtpEndpoint::parse(&server.url(password)).unwrap(),
            from: FROM.parse().unwrap(),
            ca_pem: Some(std::fs::read(server.ca()).unwrap()),
            timeout: Duration::from_secs(5),
            pool_size: 2,
        }),
        delays: quick_delays(),
        allow_private: true,
        timeout: Duration::from_secs(5),
    }
}

fn email_rules(events: &[&str]) -> Value {
    json!({
        "channels": {"desk": {"type": "email", "to": ["desk@example.com"]}},
        "rules": [{"name": "desk", "events": events, "channels": ["desk"]}]
    })
}

/// Waits until a durable consumer has nothing pending or unacknowledged.
async fn drained(js: &jetstream::Context, stream: &str, consumer: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{stream}/{consumer} drained"),
        || async {
            let stream = js.get_stream(stream).await.ok()?;
            let info = stream.consumer_info(consumer).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
}

/// Waits for the dead letters of `subject`, at least `count`.
async fn dead_letters(
    js: &jetstream::Context,
    subject: &str,
    count: usize,
) -> Vec<StoredDeadLetter> {
    eventually(
        Duration::from_secs(60),
        &format!("{count} dead letters of {subject}"),
        || async {
            let letters = dead_letter::list(js, Some(subject), 100).await.ok()?;
            (letters.len() >= count).then_some(letters)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_sweep_emails_its_results_once_and_a_failed_one_its_reason() {
    let smtp = TestSmtp::start(SmtpOptions::default()).await;
    let settings = notify_settings(
        &email_rules(&["sweep.completed", "sweep.failed", "sweep.timed_out"]),
        Some((&smtp, PASSWORD)),
    );
    let p = Pipeline::start(knobs(200), TestDb::sqlite(), |s| s.notify = settings).await;
    let done = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let mut body = trigger_body();
    body["ticker"] = json!("ZZZ-USD");
    let failed = p.trigger(secrets::API_KEY_ACME, &body, None).await;
    let job = p
        .wait_for(&done, "COMPLETED", Duration::from_secs(60))
        .await;
    smtp.wait_for_messages(2, Duration::from_secs(60)).await;
    let js = p.nats.jetstream().await;
    drained(&js, "SWEEPS", "sweep-worker-notify").await;
    drained(&js, "NOTIFICATIONS", "sweep-worker-email").await;
    let messages = smtp.messages();
    let of = |job: &str| -> Vec<&Value> {
        messages
            .iter()
            .filter(|m| m["subject"].as_str().unwrap().contains(job))
            .collect()
    };
    assert_eq!(
        of(&done).len(),
        1,
        "one email per finished job: {messages:?}"
    );
    assert_eq!(
        of(&failed).len(),
        1,
        "one email per finished job: {messages:?}"
    );

    let completed = of(&done)[0];
    assert_eq!(completed["from"], FROM);
    assert_eq!(completed["to"], json!(["desk@example.com"]));
    assert_eq!(completed["content_type"], "multipart/alternative");
    let message_id = completed["message_id"].as_str().unwrap();
    assert!(
        message_id.starts_with("<ntf_") && message_id.ends_with("@example.com>"),
        "{message_id}"
    );
    let text = completed["text"].as_str().unwrap();
    let html = completed["html"].as_str().unwrap();
    let results = job["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "{job}");
    for result in results {
        let row = [
            result["fast_period"].to_string(),
            result["slow_period"].to_string(),
            format!("{:.2}", result["score"].as_f64().unwrap()),
            format!("{:.2}", result["sharpe_ratio"].as_f64().unwrap()),
        ];
        assert!(
            text.lines().any(|line| line
                .split_whitespace()
                .take(4)
                .eq(row.iter().map(String::as_str))),
            "the text part lacks the row {row:?}:\n{text}"
        );
        let cells: String = row
            .iter()
            .map(|cell| {
                format!(
                    "<td style=\"border:1px solid #ccc;padding:2px 6px;text-align:right\">{cell}</td>"
                )
            })
            .collect();
        assert!(
            html.contains(&cells),
            "the HTML part lacks the row {row:?}:\n{html}"
        );
    }
    let best = &results[0];
    let best_parameters = format!(
        "fast {} / slow {}",
        best["fast_period"], best["slow_period"]
    );
    for part in [text, html] {
        assert!(part.contains("COMPLETED"), "{part}");
        assert!(part.contains("BTC-USD") && part.contains("SMA"), "{part}");
        assert!(part.contains(&best_parameters), "{part}");
        assert!(part.contains("Duration"), "{part}");
        assert!(part.contains(&format!("/ui/pipelines/{done}")), "{part}");
        assert!(part.contains(&format!("/api/pipelines/{done}")), "{part}");
    }

    let failure = of(&failed)[0];
    for part in ["text", "html"] {
        let body = failure[part].as_str().unwrap();
        assert!(
            body.contains("Insufficient historical data for ticker ZZZ-USD"),
            "{body}"
        );
        assert!(body.contains("FAILED"), "{body}");
    }
    let sent = p
        .worker()
        .metric("pipeline_notifications_total{channel=\"email\",outcome=\"sent\"}");
    assert_eq!(sent, 2.0);
}

/// A notification of its own, published to `notify.<channel>` as the
/// routing stage would.
async fn publish_notification(
    js: &jetstream::Context,
    id: &str,
    channel: ChannelKind,
    target: &str,
) {
    let notification = Notification {
        id: id.to_owned(),
        rule: "desk".to_owned(),
        kind: NotificationKind::SweepFailed,
        channel,
        target: target.to_owned(),
        subject: format!("[hookmesh] test {id}"),
        text: format!("test notification {id}"),
        html: format!("<p>test notification {id}</p>"),
        blocks: vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": id}})],
        occurred_at: Timestamp::now(),
    };
    let envelope = Envelope::new(
        id,
        "/test",
        Timestamp::now(),
        TenantId::parse("acme").unwrap(),
        None,
        notification,
    );
    let subject = hookmesh_contracts::subjects::notification(channel);
    js.send_publish(
        subject,
        PublishMessage::build()
            .payload(envelope.to_json().into())
            .message_id(id),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// A sweep-worker with no Trading API to speak of: only its notifier works.
async fn notifier(nats: &TestNats, db: &TestDb, notify: NotifySettings) -> TestSweep {
    let mut settings = sweep_settings(&db.url, "http://127.0.0.1:9", "http://127.0.0.1:8080");
    settings.notify = notify;
    TestSweep::start(nats.url(), settings).await
}

/// Sends one email that `smtp` will refuse; its dead letter's reason.
async fn refused_once(smtp: &TestSmtp, password: &str) -> (String, TestSweep, TestNats) {
    let nats = TestNats::start().await;
    let db = TestDb::sqlite();
    let worker = notifier(
        &nats,
        &db,
        notify_settings(&email_rules(&["sweep.failed"]), Some((smtp, password))),
    )
    .await;
    let js = nats.jetstream().await;
    publish_notification(&js, "ntf_refused", ChannelKind::Email, "desk").await;
    let letters = dead_letters(&js, "notify.email", 1).await;
    drained(&js, "NOTIFICATIONS", "sweep-worker-email").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].deliveries, 1, "refused, so never retried");
    assert_eq!(
        worker.metric("pipeline_notifications_total{channel=\"email\",outcome=\"dead_letter\"}"),
        1.0
    );
    assert_eq!(
        worker.metric("pipeline_notifications_total{channel=\"email\",outcome=\"retry\"}"),
        0.0
    );
    assert!(smtp.messages().is_empty());
    (letters[0].error.clone(), worker, nats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_smtp_credentials_end_in_a_dead_letter_after_one_attempt() {
    let smtp = TestSmtp::start(SmtpOptions::default()).await;
    let (reason, _worker, _nats) = refused_once(&smtp, "not-the-password").await;
    assert!(reason.contains("535"), "{reason}");
    assert!(!reason.contains("not-the-password"), "{reason}");
    let logins = smtp.events_of("auth");
    assert_eq!(logins.len(), 1, "one login, no retry storm: {logins:?}");
    assert_eq!(logins[0]["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_smtp_server_ends_in_a_dead_letter_after_one_attempt() {
    let smtp = TestSmtp::start(SmtpOptions {
        refuse: true,
        ..SmtpOptions::default()
    })
    .await;
    let (reason, _worker, _nats) = refused_once(&smtp, PASSWORD).await;
    assert!(reason.contains("550"), "{reason}");
    assert!(reason.contains("Relaying denied"), "{reason}");
    assert_eq!(
        smtp.events_of("refused").len(),
        1,
        "one attempt, no retry storm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_down_then_back_gets_the_email_once() {
    let mut smtp = TestSmtp::start(SmtpOptions::default()).await;
    let nats = TestNats::start().await;
    let db = TestDb::sqlite();
    let worker = notifier(
        &nats,
        &db,
        notify_settings(&email_rules(&["sweep.failed"]), Some((&smtp, PASSWORD))),
    )
    .await;
    smtp.stop().await;
    let js = nats.jetstream().await;
    publish_notification(&js, "ntf_outage", ChannelKind::Email, "desk").await;
    let retried = "pipeline_notifications_total{channel=\"email\",outcome=\"retry\"}";
    eventually(Duration::from_secs(30), "a failed attempt", || {
        let retries = worker.metric(retried);
        async move { (retries >= 1.0).then_some(()) }
    })
    .await;
    smtp.resume().await;
    let messages = smtp.wait_for_messages(1, Duration::from_secs(30)).await;
    drained(&js, "NOTIFICATIONS", "sweep-worker-email").await;
    assert_eq!(smtp.messages().len(), 1, "{messages:?}");
    assert_eq!(messages[0]["message_id"], "<ntf_outage@example.com>");
    assert_eq!(
        worker.metric("pipeline_notifications_total{channel=\"email\",outcome=\"sent\"}"),
        1.0
    );
    assert!(
        dead_letter::list(&js, Some("notify.email"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A Slack-compatible incoming webhook answering the statuses queued in
/// `answers`, then 200; it records every body it gets.
#[derive(Clone)]
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (seen, queued) = (received.clone(), answers.clone());
        let router = axum::Router::new().route(
            "/hooks/T000",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let (seen, queued) = (seen.clone(), queued.clone());
                async move {
                    seen.lock().unwrap().push(body);
                    let status = queued.lock().unwrap().pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/T000", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            received,
            answers,
        }
    }

    fn answer(&self, statuses: &[u16]) {
        self.answers.lock().unwrap().extend(statuses);
    }

    fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// The bodies whose text contains `needle`.
    fn mentioning(&self, needle: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|body| {
                body["text"]
                    .as_str()
                    .is_some_and(|text| text.contains(needle))
            })
            .collect()
    }
}

fn slack_rules(url: &str, rules: Value) -> Value {
    json!({
        "channels": {"oncall": {"type": "slack", "url": url}},
        "rules": rules
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_block_kit_with_a_text_fallback_retried_on_5xx_and_dead_lettered_on_4xx() {
    let slack = Receiver::start().await;
    slack.answer(&[503]);
    let rules = slack_rules(
        &slack.url,
        json!([{"name": "sweeps", "events": ["sweep.completed", "sweep.failed"], "channels": ["oncall"]}]),
    );
    let settings = notify_settings(&rules, None);
    let p = Pipeline::start(knobs(200), TestDb::sqlite(), |s| s.notify = settings).await;
    let done = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    // The first answer is 503: retried, then delivered.
    let posts = eventually(Duration::from_secs(60), "the retried post", || async {
        let posts = slack.mentioning(&done);
        (posts.len() >= 2).then_some(posts)
    })
    .await;
    let js = p.nats.jetstream().await;
    drained(&js, "NOTIFICATIONS", "sweep-worker-slack").await;
    assert_eq!(slack.mentioning(&done).len(), 2, "one 503, one 200");
    let post = &posts[1];
    assert!(
        post["text"].as_str().unwrap().contains("COMPLETED"),
        "{post}"
    );
    let blocks = post["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert!(
        blocks[1]["fields"]
            .as_array()
            .is_some_and(|fields| !fields.is_empty())
    );
    assert!(
        blocks[2]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("```"),
        "the results table: {post}"
    );
    let context = blocks.last().unwrap();
    assert_eq!(context["type"], "context");
    assert!(
        context["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("/ui/pipelines/{done}|dashboard>")),
        "{context}"
    );
    assert_eq!(
        p.worker()
            .metric("pipeline_notifications_total{channel=\"slack\",outcome=\"retry\"}"),
        1.0
    );

    // A 404 is a wrong address: dead-lettered at once, and the job is fine.
    slack.answer(&[404]);
    let unlucky = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    p.wait_for(&unlucky, "COMPLETED", Duration::from_secs(60))
        .await;
    let letters = dead_letters(&js, "notify.slack", 1).await;
    assert!(letters[0].error.contains("404"), "{}", letters[0].error);
    assert_eq!(letters[0].deliveries, 1);
    drained(&js, "NOTIFICATIONS", "sweep-worker-slack").await;
    assert_eq!(slack.mentioning(&unlucky).len(), 1, "never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_threshold_fires_once_per_window_across_replicas() {
    // Both rules' hour-long windows must hold the whole test.
    eventually(
        Duration::from_secs(120),
        "not the end of an hour",
        || async { (Timestamp::now().unix_seconds().rem_euclid(3600) < 3500).then_some(()) },
    )
    .await;
    let slack = Receiver::start().await;
    let rules = slack_rules(
        &slack.url,
        json!([
            {"name": "few", "events": ["dead_letters"], "threshold": 3, "window_secs": 3600, "channels": ["oncall"]},
            {"name": "many", "events": ["dead_letters"], "threshold": 19, "window_secs": 3600, "channels": ["oncall"]}
        ]),
    );
    let nats = TestNats::start().await;
    let db = TestDb::sqlite();
    let _first = notifier(&nats, &db, notify_settings(&rules, None)).await;
    let _second = notifier(&nats, &db, notify_settings(&rules, None)).await;
    let js = nats.jetstream().await;
    // The notifier's own dead letters do not count.
    for index in 0..5 {
        publish_dead_letter(&js, "notify.slack", index).await;
    }
    for index in 0..20 {
        publish_dead_letter(&js, "ci.pipeline.github.failed", index).await;
    }
    // "many" fires on the 20th counted letter: by then both replicas have
    // counted all of them, and "few" has fired (on the 4th) in each.
    eventually(
        Duration::from_secs(60),
        "the 19-letter threshold",
        || async { (!slack.mentioning("More than 19").is_empty()).then_some(()) },
    )
    .await;
    drained(&js, "NOTIFICATIONS", "sweep-worker-slack").await;
    assert_eq!(
        slack.mentioning("More than 3 ").len(),
        1,
        "{:?}",
        slack.received()
    );
    assert_eq!(
        slack.mentioning("More than 19").len(),
        1,
        "{:?}",
        slack.received()
    );
    let alert = &slack.mentioning("More than 3 ")[0];
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .contains("ci.pipeline.github.failed"),
        "{alert}"
    );
}

async fn publish_dead_letter(js: &jetstream::Context, original: &str, index: usize) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(dead_letter::SUBJECT, original);
    headers.insert(
        dead_letter::ERROR,
        "invalid payload: missing field `run_id`",
    );
    headers.insert(
        "Nats-Msg-Id",
        format!("dlq-test:{original}:{index}").as_str(),
    );
    js.publish_with_headers(
        hookmesh_contracts::subjects::dead_letter(original),
        headers,
        format!("{{\"n\":{index}}}").into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// `count` sweeps triggered at once through `p`; each job's view once
/// COMPLETED, and how long until the last completed.
async fn run_sweeps(p: &Pipeline, count: usize) -> (Vec<Value>, Duration) {
    let started = std::time::Instant::now();
    let mut jobs = Vec::with_capacity(count);
    for _ in 0..count {
        jobs.push(
            p.trigger(secrets::API_KEY_ACME, &trigger_body(), None)
                .await,
        );
    }
    let mut views = Vec::with_capacity(count);
    for job in &jobs {
        views.push(p.wait_for(job, "COMPLETED", Duration::from_secs(600)).await);
    }
    (views, started.elapsed())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The figures of docs/notifications.md (a measured run, not a check):
/// notification latency from job completion to the SMTP server's receipt
/// over 100 sweeps, and sweep throughput with an SMTP server that takes 1 s
/// per message. `cargo nextest run -p hookmesh-tests -E 'test(measure_notifications)' --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it on purpose"]
async fn measure_notifications() {
    for (label, delay, count) in [
        ("fast SMTP", None, 100),
        (
            "slow SMTP (1 s per message)",
            Some(Duration::from_secs(1)),
            40,
        ),
    ] {
        let smtp = TestSmtp::start(SmtpOptions {
            delay,
            ..SmtpOptions::default()
        })
        .await;
        let settings = notify_settings(&email_rules(&["sweep.completed"]), Some((&smtp, PASSWORD)));
        let p = Pipeline::start(knobs(50), TestDb::sqlite(), |s| s.notify = settings).await;
        let (views, sweeps_took) = run_sweeps(&p, count).await;
        let messages = smtp
            .wait_for_messages(count, Duration::from_secs(600))
            .await;
        let received_at = |job: &str| -> f64 {
            messages
                .iter()
                .find(|m| m["subject"].as_str().unwrap().contains(job))
                .and_then(|m| m["received_at"].as_f64())
                .unwrap_or_else(|| panic!("no email for {job}"))
        };
        let mut latencies: Vec<f64> = views
            .iter()
            .map(|view| {
                let completed = Timestamp::parse_rfc3339(view["completed_at"].as_str().unwrap())
                    .unwrap()
                    .unix_millis() as f64
                    / 1000.0;
                received_at(view["id"].as_str().unwrap()) - completed
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let last_email = messages
            .iter()
            .filter_map(|m| m["received_at"].as_f64())
            .fold(f64::MIN, f64::max);
        let first_trigger = views
            .iter()
            .map(|v| {
                Timestamp::parse_rfc3339(v["created_at"].as_str().unwrap())
                    .unwrap()
                    .unix_millis() as f64
                    / 1000.0
            })
            .fold(f64::MAX, f64::min);
        println!(
            "{label}: {count} sweeps completed in {:.1} s; emails all received {:.1} s after the first trigger; \
             completion → SMTP receipt p50 {:.3} s, p99 {:.3} s, max {:.3} s",
            sweeps_took.as_secs_f64(),
            last_email - first_trigger,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().unwrap()
        );
    }
}
