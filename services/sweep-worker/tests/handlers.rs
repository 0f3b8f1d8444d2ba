//! The sweep-worker's handlers without a broker: a SQLite database of the
//! test's own, the Trading API simulator, the job registry and the events
//! in memory. Twins in one batch, a poison message, a callback for a job
//! nobody recorded.

use std::sync::Arc;
use std::time::Duration;

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::sweep::SweepTrigger;
use hookmesh_contracts::sweep_jobs::{JobId, JobStatus};
use hookmesh_contracts::{Envelope, TenantId};
use hookmesh_nats::jobs::JobRegistry;
use hookmesh_runtime::ops::DatabaseHealth;
use hookmesh_runtime::outbox::Outbox;
use hookmesh_runtime::publish::MemorySink;
use hookmesh_runtime::{Delivery, Handler, Outcome, db};
use hookmesh_sweep_worker::handlers::{Step, StepHandler, Tools, Worker};
use hookmesh_sweep_worker::store::SweepStore;
use hookmesh_sweep_worker::telemetry::SweepMetrics;
use hookmesh_sweep_worker::trading_api::TradingApi;
use hookmesh_sweep_worker::{MIGRATOR, SweepSettings};
use hookmesh_trading_api_sim::{Knobs, SimConfig, Simulator};
use prometheus_client::registry::Registry;

const API_KEY: &str = "dev-key-000000000000000000000000";

struct Fixture {
    store: SweepStore,
    sink: MemorySink,
    registry: JobRegistry,
    simulator: Simulator,
    tools: Tools,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hookmesh-sweep-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pool = db::connect(&db::sqlite_url(&dir.join("sweep.db")))
        .await
        .unwrap();
    db::migrate(&pool, &MIGRATOR).await.unwrap();
    let store = SweepStore::new(
        pool.clone(),
        db::Backend::Sqlite,
        Outbox::new(pool, db::Backend::Sqlite, "sweep_outbox"),
    );
    // Sweeps run long enough that no callback comes during a test.
    let simulator = Simulator::start(SimConfig {
        api_key: API_KEY.to_owned(),
        addr: ([127, 0, 0, 1], 0).into(),
        knobs: Knobs {
            run_time_ms: 600_000,
            ..Knobs::default()
        },
    })
    .await
    .unwrap();
    let metrics = SweepMetrics::register(&mut Registry::default());
    let settings = SweepSettings::new(
        "sqlite://unused",
        &simulator.url(),
        API_KEY,
        "http://127.0.0.1:9",
        b"callback-secret",
    );
    let api = TradingApi::new(
        &simulator.url(),
        API_KEY,
        Duration::from_secs(5),
        metrics.clone(),
    )
    .unwrap();
    let sink = MemorySink::default();
    let (_, shutdown) = tokio::sync::watch::channel(false);
    let tools = Tools {
        store: store.clone(),
        api,
        sink: Arc::new(sink.clone()),
        settings: Arc::new(settings),
        metrics,
        database: DatabaseHealth::default(),
        shutdown,
    };
    Fixture {
        store,
        sink,
        registry: JobRegistry::in_memory(),
        simulator,
        tools,
        dir,
    }
}

impl Fixture {
    fn handler(&self, step: Step) -> StepHandler {
        StepHandler {
            worker: Worker::new(self.tools.clone(), self.registry.clone()),
            step,
        }
    }
}

fn trigger(job_id: &str) -> Delivery {
    let trigger: SweepTrigger = serde_json::from_value(serde_json::json!({
        "ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30], "step": 5,
        "min_trades": 50, "strategy_type": "SMA"
    }))
    .unwrap();
    let envelope = Envelope::new(
        job_id,
        "/api/pipelines/trigger",
        Timestamp::now(),
        TenantId::parse("acme").unwrap(),
        Some(job_id.to_owned()),
        trigger,
    );
    Delivery::detached("sweeps.trigger", envelope.to_json())
}

#[tokio::test]
async fn twin_triggers_in_one_batch_make_one_job_and_one_sweep() {
    let f = fixture("twins").await;
    let handler = f.handler(Step::Trigger);
    let outcomes = handler
        .handle(&mut [trigger("job_a"), trigger("job_a"), trigger("job_b")])
        .await;
    assert_eq!(outcomes, vec![Outcome::Done; 3]);
    assert_eq!(f.simulator.sweeps_accepted(), 2, "one sweep per job");
    for id in ["job_a", "job_b"] {
        let job = f.store.job(id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running);
        let recorded = f.registry.get(&JobId::parse(id).unwrap()).await.unwrap();
        assert_eq!(recorded.unwrap().tenant_id.as_str(), "acme");
    }
    // QUEUED and RUNNING of each job were handed to the sink.
    let subjects: Vec<String> = f.sink.messages().into_iter().map(|m| m.subject).collect();
    for expected in [
        "sweeps.jobs.job_a.queued",
        "sweeps.jobs.job_a.running",
        "sweeps.jobs.job_b.running",
    ] {
        assert!(subjects.iter().any(|s| s == expected), "{subjects:?}");
    }
}

#[tokio::test]
async fn a_poison_trigger_is_dead_lettered_and_its_batch_goes_on() {
    let f = fixture("poison").await;
    let handler = f.handler(Step::Trigger);
    let outcomes = handler
        .handle(&mut [
            Delivery::detached("sweeps.trigger", &b"{\"specversion\": 1}"[..]),
            trigger("job_c"),
        ])
        .await;
    assert!(
        matches!(&outcomes[0], Outcome::DeadLetter { reason } if reason.contains("envelope")),
        "{:?}",
        outcomes[0]
    );
    assert_eq!(outcomes[1], Outcome::Done);
    assert_eq!(f.simulator.sweeps_accepted(), 1);
}

#[tokio::test]
async fn a_callback_for_a_job_nobody_recorded_is_retried_then_dead_lettered() {
    let f = fixture("callback").await;
    let handler = f.handler(Step::Callback);
    let callback = Envelope::new(
        "job_z:completed",
        "/webhook/sweep-callback",
        Timestamp::now(),
        TenantId::parse("acme").unwrap(),
        Some("job_z".to_owned()),
        serde_json::from_value::<hookmesh_contracts::sweep::SweepCallback>(serde_json::json!({
            "event_type": "sweep.completed", "job_id": "sweep_1", "sweep_run_id": "run_1",
            "status": "completed", "ticker": "BTC-USD", "timestamp": "2025-01-27T10:32:52Z"
        }))
        .unwrap(),
    );
    let delivery = || Delivery::detached("sweeps.callback", callback.to_json());
    let early = handler.handle(&mut [delivery()]).await;
    assert!(matches!(&early[0], Outcome::Retry { .. }), "{early:?}");
    let late = handler.handle(&mut [delivery().at(1, 5)]).await;
    assert!(
        matches!(&late[0], Outcome::DeadLetter { reason } if reason.contains("does not exist")),
        "{late:?}"
    );
}

/// A server answering every request with a 307 to `target`, and a server
/// counting what reaches it.
async fn redirector_and_trap() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let trap = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { "caught" }
    });
    let trap_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap_listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(trap_listener, trap).await });
    let redirect = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{trap_url}{uri}");
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirect).await });
    (url, reached)
}

#[tokio::test]
async fn a_trading_api_that_redirects_fails_the_job_and_no_key_leaves_for_the_other_address() {
    let (redirector, reached) = redirector_and_trap().await;
    let mut f = fixture("redirect").await;
    f.tools.api = TradingApi::new(
        &redirector,
        API_KEY,
        Duration::from_secs(5),
        f.tools.metrics.clone(),
    )
    .unwrap();
    let handler = f.handler(Step::Trigger);
    assert_eq!(
        handler.handle(&mut [trigger("job_r")]).await,
        vec![Outcome::Done]
    );
    let job = f.store.job("job_r").await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let reason = job.error_message.unwrap();
    assert!(
        reason.contains("307") && reason.contains("redirect"),
        "{reason}"
    );
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_notification_webhook_that_redirects_is_not_followed_nor_retried() {
    use hookmesh_contracts::notify::{ChannelKind, Notification, NotificationKind};
    use hookmesh_sweep_worker::notify::rules::Rules;
    use hookmesh_sweep_worker::notify::{Deliverer, NotifySettings};

    let (redirector, reached) = redirector_and_trap().await;
    let rules = format!(
        r#"{{"channels": {{"hook": {{"type": "slack", "url": "{redirector}/hooks/T000?token=secret"}}}},
            "rules": [{{"name": "all", "events": ["sweep.completed"], "channels": ["hook"]}}]}}"#
    );
    let settings = NotifySettings {
        rules: Arc::new(Rules::from_json(&rules, "test", true).unwrap()),
        allow_private: true,
        ..NotifySettings::default()
    };
    let deliverer =
        Deliverer::new(&settings, SweepMetrics::register(&mut Registry::default())).unwrap();
    let notification = Notification {
        id: "ntf_1".to_owned(),
        rule: "all".to_owned(),
        kind: NotificationKind::SweepCompleted,
        channel: ChannelKind::Slack,
        target: "hook".to_owned(),
        subject: "done".to_owned(),
        text: "done".to_owned(),
        html: "<p>done</p>".to_owned(),
        blocks: Vec::new(),
        occurred_at: Timestamp::now(),
    };
    let envelope = Envelope::new(
        "ntf_1",
        "/sweep-worker",
        Timestamp::now(),
        TenantId::parse("acme").unwrap(),
        None,
        notification,
    );
    let outcome = deliverer
        .deliver(&Delivery::detached("notify.slack", envelope.to_json()))
        .await;
    let Outcome::DeadLetter { reason } = outcome else {
        panic!("a redirect is refused, not retried: {outcome:?}");
    };
    assert!(
        reason.contains("307") && reason.contains("redirect"),
        "{reason}"
    );
    assert!(!reason.contains("secret"), "{reason}");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
}
