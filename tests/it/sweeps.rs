//! The trading sweep pipeline (seeds 000 and 003) end to end: the gateway,
//! JetStream, the sweep-worker, a real database and the Trading API
//! simulator, through every failure row of 003's table.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::SWEEP_TRIGGER;
use hookmesh_contracts::sweep::SweepTrigger;
use hookmesh_contracts::{EventData as _, TenantId, Timestamp};
use hookmesh_sweep_worker::SweepSettings;
use hookmesh_tests::{
    TestClient as _, TestDb, TestGateway, TestNats, TestSweep, eventually, secrets,
    stream_messages, sweep_settings, test_config, trading_api,
};
use hookmesh_trading_api_sim::{Knobs, Simulator};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::deliveries::{self, trigger_body};

/// A broker, a gateway, a Trading API and a sweep-worker on a database.
pub(crate) struct Pipeline {
    pub(crate) nats: TestNats,
    pub(crate) gateway: TestGateway,
    api: Simulator,
    db: TestDb,
    worker: Option<TestSweep>,
}

pub(crate) fn knobs(run_time_ms: u64) -> Knobs {
    Knobs {
        run_time_ms,
        ..Knobs::default()
    }
}

impl Pipeline {
    pub(crate) async fn start(
        knobs: Knobs,
        db: TestDb,
        tweak: impl FnOnce(&mut SweepSettings),
    ) -> Self {
        let nats = TestNats::start().await;
        let gateway = TestGateway::start(nats.url(), test_config()).await;
        let api = trading_api(knobs).await;
        let mut pipeline = Self {
            nats,
            gateway,
            api,
            db,
            worker: None,
        };
        let mut settings = pipeline.settings();
        tweak(&mut settings);
        pipeline.worker = Some(TestSweep::start(pipeline.nats.url(), settings).await);
        pipeline
    }

    fn settings(&self) -> SweepSettings {
        sweep_settings(&self.db.url, &self.api.url(), &self.gateway.base_url)
    }

    pub(crate) fn worker(&self) -> &TestSweep {
        self.worker.as_ref().expect("a running worker")
    }

    /// Triggers a sweep as `key`'s tenant; the job id.
    pub(crate) async fn trigger(
        &self,
        key: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> String {
        let mut request = self
            .gateway
            .post("/api/pipelines/trigger", &serde_json::to_vec(body).unwrap())
            .bearer_auth(key);
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "QUEUED");
        body["job_id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn job(&self, key: &str, job_id: &str) -> (StatusCode, Value) {
        let response = self
            .gateway
            .http
            .get(self.gateway.url(&format!("/api/pipelines/{job_id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn list(&self, key: &str, query: &str) -> Value {
        let response = self
            .gateway
            .http
            .get(self.gateway.url(&format!("/api/pipelines{query}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        response.json().await.unwrap()
    }

    /// Waits until the job is `status`; its view.
    pub(crate) async fn wait_for(&self, job_id: &str, status: &str, within: Duration) -> Value {
        eventually(within, &format!("job {job_id} {status}"), || async {
            let (code, job) = self.job(secrets::API_KEY_ACME, job_id).await;
            (code == StatusCode::OK && job["status"] == status).then_some(job)
        })
        .await
    }

    /// Waits until a consumer has nothing pending or unacknowledged.
    pub(crate) async fn drained(&self, consumer: &str) {
        let js = self.nats.jetstream().await;
        eventually(
            Duration::from_secs(30),
            &format!("{consumer} drained"),
            || async {
                let stream = js.get_stream("SWEEPS").await.ok()?;
                let info = stream.consumer_info(consumer).await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            },
        )
        .await;
    }

    /// The status events stored for a job, in order.
    async fn status_events(&self, job_id: &str) -> Vec<String> {
        stream_messages(&self.nats.jetstream().await, "SWEEPS")
            .await
            .into_iter()
            .filter_map(|m| {
                m.subject
                    .strip_prefix(&format!("sweeps.jobs.{job_id}."))
                    .map(str::to_owned)
            })
            .filter(|event| event != "progress")
            .collect()
    }
}

/// Every event of a job's SSE stream, read until the server closes it.
async fn sse(gateway: &TestGateway, job_id: &str) -> Vec<(String, Value)> {
    let mut response = gateway
        .http
        .get(gateway.url(&format!("/api/pipelines/{job_id}/events")))
        .bearer_auth(secrets::API_KEY_ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the event stream closes once the job is over");
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            Some((
                field("event:")?,
                serde_json::from_str(&field("data:")?).ok()?,
            ))
        })
        .collect()
}

fn assert_the_003_results(job: &Value) {
    let results = job["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "{job}");
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted by score: {scores:?}"
    );
    let mut pairs: Vec<(u64, u64)> = results
        .iter()
        .map(|r| {
            (
                r["fast_period"].as_u64().unwrap(),
                r["slow_period"].as_u64().unwrap(),
            )
        })
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            (10, 20),
            (10, 25),
            (10, 30),
            (15, 20),
            (15, 25),
            (15, 30),
            (20, 25),
            (20, 30)
        ]
    );
    for row in results {
        assert_eq!(row["ticker"], "BTC-USD");
        assert_eq!(row["strategy_type"], "SMA");
        assert!(
            row["total_trades"].as_u64().unwrap() >= 50,
            "min_trades honoured: {row}"
        );
        assert!(
            row["avg_trade_duration"]
                .as_str()
                .unwrap()
                .ends_with(" days")
        );
    }
    assert_eq!(job["metrics"]["combinations_tested"], 8);
    assert!(job["metrics"]["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(job["result"]["total_results"], 8);
    assert_eq!(job["result"]["best"], results[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_003_example_runs_to_completed_with_its_eight_results_and_a_live_event_stream() {
    for db in TestDb::every_backend().await {
        let backend = db.backend();
        let p = Pipeline::start(knobs(1500), db, |_| {}).await;
        let job_id = p
            .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
            .await;
        let events = sse(&p.gateway, &job_id).await;

        let statuses: Vec<&str> = events
            .iter()
            .filter(|(kind, _)| kind != "progress")
            .map(|(kind, _)| kind.as_str())
            .collect();
        assert_eq!(statuses, ["queued", "running", "completed"], "{backend}");
        let running = events
            .iter()
            .position(|(kind, _)| kind == "running")
            .unwrap();
        let progress: Vec<&Value> = events
            .iter()
            .enumerate()
            .filter(|(_, (kind, _))| kind == "progress")
            .map(|(at, (_, data))| {
                assert!(at > running, "progress follows the start");
                data
            })
            .collect();
        assert!(
            !progress.is_empty(),
            "{backend}: the Trading API's progress is relayed"
        );
        assert!(
            progress
                .iter()
                .all(|p| p["percent"].as_u64().unwrap() <= 100)
        );
        let (_, last) = events.last().unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(last["status"], "COMPLETED");
        assert_eq!(last["metrics"]["combinations_tested"], 8);

        let (status, job) = p.job(secrets::API_KEY_ACME, &job_id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(job["status"], "COMPLETED", "{backend}");
        assert_eq!(job["job_type"], "trading-sweep");
        assert_eq!(job["tenant_id"], "acme");
        assert_eq!(job["parameters"], trigger_body());
        assert!(
            job["trading_job_id"]
                .as_str()
                .unwrap()
                .starts_with("sweep_")
        );
        assert_the_003_results(&job);
        let metric = |status: &str| {
            p.worker().metric(&format!(
                "pipeline_jobs_processed_total{{job_type=\"trading-sweep\",status=\"{status}\"}}"
            ))
        };
        assert_eq!(metric("COMPLETED"), 1.0);
        assert_eq!(
            p.worker().metric(
                "pipeline_jobs_queued_total{job_type=\"trading-sweep\",tenant_id=\"acme\"}"
            ),
            1.0
        );

        // A stream opened after the end replays the job and closes.
        let replay = sse(&p.gateway, &job_id).await;
        assert_eq!(replay.last().unwrap().1["status"], "COMPLETED");
    }
}

/// The envelope the gateway publishes for a trigger.
fn trigger_envelope(job_id: &str, tenant: &str) -> Vec<u8> {
    let trigger = SweepTrigger::parse(&trigger_body()).unwrap();
    Envelope::new(
        job_id,
        "/api/pipelines/trigger",
        Timestamp::now(),
        TenantId::parse(tenant).unwrap(),
        Some(job_id.to_owned()),
        trigger,
    )
    .to_json()
}

/// Publishes natively with a message id of its own, past JetStream's
/// duplicate window: what a redelivery a day later looks like.
async fn publish(js: &jetstream::Context, subject: &str, payload: Vec<u8>, message_id: &str) {
    js.send_publish(
        subject.to_owned(),
        PublishMessage::build()
            .payload(payload.into())
            .message_id(message_id),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_trigger_makes_one_job_and_a_repeated_callback_stores_each_row_once() {
    let p = Pipeline::start(knobs(300), TestDb::sqlite(), |_| {}).await;
    let js = p.nats.jetstream().await;

    // Over HTTP with the same Idempotency-Key: the same job, deduplicated.
    let job_id = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), Some("sweep-1"))
        .await;
    assert_eq!(
        p.trigger(secrets::API_KEY_ACME, &trigger_body(), Some("sweep-1"))
            .await,
        job_id
    );
    // And the same request again, natively, beyond the duplicate window.
    publish(
        &js,
        SWEEP_TRIGGER,
        trigger_envelope(&job_id, "acme"),
        "later-1",
    )
    .await;
    p.wait_for(&job_id, "COMPLETED", Duration::from_secs(30))
        .await;
    p.drained("sweep-worker-trigger").await;

    // The Trading API's callback, delivered again natively.
    let callback = stream_messages(&js, "SWEEPS")
        .await
        .into_iter()
        .find(|m| m.subject == "sweeps.callback")
        .expect("the callback was stored");
    publish(&js, "sweeps.callback", callback.payload.to_vec(), "later-2").await;
    publish(&js, "sweeps.callback", callback.payload.to_vec(), "later-3").await;
    p.drained("sweep-worker-callback").await;

    assert_eq!(
        p.api.sweeps_accepted(),
        1,
        "one submission to the Trading API"
    );
    let (_, job) = p.job(secrets::API_KEY_ACME, &job_id).await;
    assert_the_003_results(&job);
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM trading_sweep_results WHERE job_id = $1")
            .bind(&job_id)
            .fetch_one(p.worker().store().pool())
            .await
            .unwrap();
    assert_eq!(count, 8);
    assert_eq!(
        p.status_events(&job_id).await,
        ["queued", "running", "completed"]
    );
    assert_eq!(
        p.worker().metric(
            "pipeline_jobs_processed_total{job_type=\"trading-sweep\",status=\"COMPLETED\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trading_api_down_at_submission_is_retried_until_it_is_back() {
    let p = Pipeline::start(knobs(300), TestDb::sqlite(), |s| {
        s.retry_delays = [1, 2, 4, 8].map(Duration::from_secs).to_vec();
    })
    .await;
    p.api.go_down();
    let job_id = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let failures = "pipeline_trading_api_failures_total{endpoint=\"/health\"}";
    eventually(Duration::from_secs(10), "a failed health check", || async {
        (p.worker().metric(failures) >= 1.0).then_some(())
    })
    .await;
    let (_, job) = p.job(secrets::API_KEY_ACME, &job_id).await;
    assert_eq!(job["status"], "QUEUED", "not failed while attempts remain");
    p.api.come_back().await.unwrap();
    let job = p
        .wait_for(&job_id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert_the_003_results(&job);
    assert_eq!(p.api.sweeps_accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trading_api_down_for_good_fails_the_job_with_the_reason_after_every_attempt() {
    let p = Pipeline::start(knobs(300), TestDb::sqlite(), |_| {}).await;
    p.api.go_down();
    let job_id = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let job = p.wait_for(&job_id, "FAILED", Duration::from_secs(30)).await;
    let reason = job["error_message"].as_str().unwrap();
    assert!(
        reason.starts_with("The Trading API was unavailable after 4 attempts"),
        "{reason}"
    );
    assert!(reason.contains("unreachable"), "{reason}");
    assert_eq!(
        p.worker()
            .metric("pipeline_trading_api_failures_total{endpoint=\"/health\"}"),
        4.0
    );
    assert_eq!(p.status_events(&job_id).await, ["queued", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_callback_is_replaced_by_polling_the_trading_api_after_the_timeout() {
    let lost = Knobs {
        run_time_ms: 300,
        drop_callbacks: true,
        ..Knobs::default()
    };
    let p = Pipeline::start(lost, TestDb::sqlite(), |s| {
        s.callback_timeout = Duration::from_secs(2);
    })
    .await;
    let job_id = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let job = p
        .wait_for(&job_id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert_eq!(p.api.callbacks_delivered(), 0);
    assert_eq!(job["results"].as_array().unwrap().len(), 8);
    assert_eq!(job["metrics"]["combinations_tested"], 8);

    // A sweep still running at the deadline fails, saying so.
    p.api.set_knobs(Knobs {
        run_time_ms: 60_000,
        drop_callbacks: true,
        ..Knobs::default()
    });
    let slow = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let job = p.wait_for(&slow, "FAILED", Duration::from_secs(30)).await;
    let reason = job["error_message"].as_str().unwrap();
    assert!(
        reason
            .starts_with("No callback within 2s; the Trading API reports the sweep still running"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_callback_fails_the_job_with_the_trading_apis_message() {
    let p = Pipeline::start(knobs(200), TestDb::sqlite(), |_| {}).await;
    let mut body = trigger_body();
    body["ticker"] = json!("ZZZ-USD");
    let job_id = p.trigger(secrets::API_KEY_ACME, &body, None).await;
    let job = p.wait_for(&job_id, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(
        job["error_message"],
        "Insufficient historical data for ticker ZZZ-USD"
    );
    assert!(
        job.get("results")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    );

    p.api.set_knobs(Knobs {
        run_time_ms: 200,
        fail_with: Some("Backtest engine crashed".to_owned()),
        ..Knobs::default()
    });
    let job_id = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let job = p.wait_for(&job_id, "FAILED", Duration::from_secs(30)).await;
    assert_eq!(job["error_message"], "Backtest engine crashed");
    assert_eq!(
        p.worker()
            .metric("pipeline_jobs_processed_total{job_type=\"trading-sweep\",status=\"FAILED\"}"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_job_leaves_it_to_another_which_finishes_it_once() {
    let mut p = Pipeline::start(knobs(3000), TestDb::sqlite(), |_| {}).await;
    let job_id = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    p.wait_for(&job_id, "RUNNING", Duration::from_secs(30))
        .await;
    p.worker.take().unwrap().stop().await;
    // No worker answers reads now; the job waits in the database.
    let (status, _) = p.job(secrets::API_KEY_ACME, &job_id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let settings = p.settings();
    p.worker = Some(TestSweep::start(p.nats.url(), settings).await);
    let job = p
        .wait_for(&job_id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert_the_003_results(&job);
    assert_eq!(p.api.sweeps_accepted(), 1);
    assert_eq!(
        p.status_events(&job_id).await,
        ["queued", "running", "completed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_jobs_by_id_and_in_pages() {
    let p = Pipeline::start(knobs(100), TestDb::sqlite(), |_| {}).await;
    let acme_1 = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let acme_2 = p
        .trigger(secrets::API_KEY_ACME, &trigger_body(), None)
        .await;
    let globex = p
        .trigger(secrets::API_KEY_GLOBEX, &trigger_body(), None)
        .await;
    for job in [&acme_1, &acme_2] {
        p.wait_for(job, "COMPLETED", Duration::from_secs(30)).await;
    }
    eventually(
        Duration::from_secs(30),
        "globex's job completed",
        || async {
            let (_, job) = p.job(secrets::API_KEY_GLOBEX, &globex).await;
            (job["status"] == "COMPLETED").then_some(())
        },
    )
    .await;

    let (status, body) = p.job(secrets::API_KEY_GLOBEX, &acme_1).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = p.job(secrets::API_KEY_ACME, &globex).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let ids = |page: &Value| -> Vec<String> {
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&p.list(secrets::API_KEY_GLOBEX, "").await),
        std::slice::from_ref(&globex)
    );
    let acme = p.list(secrets::API_KEY_ACME, "?status=completed").await;
    let mut all = ids(&acme);
    all.sort();
    let mut expected = vec![acme_1.clone(), acme_2.clone()];
    expected.sort();
    assert_eq!(all, expected);
    assert!(
        acme["jobs"][0].get("results").is_none(),
        "lists leave the results out"
    );

    // Newest first, one per page.
    let first = p.list(secrets::API_KEY_ACME, "?limit=1").await;
    assert_eq!(ids(&first), std::slice::from_ref(&acme_2));
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = p
        .list(secrets::API_KEY_ACME, &format!("?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(&second), std::slice::from_ref(&acme_1));
    assert!(second.get("next_cursor").is_none());
    assert!(ids(&p.list(secrets::API_KEY_ACME, "?status=FAILED").await).is_empty());

    let refused = p
        .gateway
        .http
        .get(p.gateway.url("/api/pipelines?status=DONE&limit=0"))
        .bearer_auth(secrets::API_KEY_ACME)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = refused.json().await.unwrap();
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["status", "limit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_for_jobs_nobody_recorded_are_refused_at_the_gateway() {
    let p = Pipeline::start(knobs(100), TestDb::sqlite(), |_| {}).await;
    let body = serde_json::to_vec(&deliveries::callback_body()).unwrap();
    let response = deliveries::callback(
        &p.gateway,
        "/webhook/sweep-callback",
        "job_never_triggered",
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let refusal: Value = response.json().await.unwrap();
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("job_never_triggered")
    );
    assert!(
        stream_messages(&p.nats.jetstream().await, "SWEEPS")
            .await
            .iter()
            .all(|m| m.subject != "sweeps.callback")
    );
}
