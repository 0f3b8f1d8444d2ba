//! The mesh on a three-node JetStream cluster, every stream with three
//! replicas, the services as separate processes (two replicas of each
//! consumer), under a steady load of signed webhooks: one broker node is
//! killed and later restarted, one consumer replica is killed. Every webhook
//! answered 202 is processed exactly once, and anything the gateway could
//! not make durable is answered 503, never 202.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hookmesh_tests::mesh::{
    CONSUMERS, checkin_request, cluster_url, consumer_env, count, delivery_request, gateway_env,
    log_tails, start_cluster,
};
use hookmesh_tests::process::ServiceProcess;
use hookmesh_tests::{TestDb, TestDir, eventually, free_port, secrets};
use serde_json::{Value, json};

const CAMPAIGN: &str = "cluster-campaign";
/// Delivery events sent under load: one per recipient of the campaign.
const DELIVERIES: usize = 1200;
/// Buddy check-ins sent under load.
const CHECKINS: usize = 1200;
/// Webhooks per second of each kind.
const RATE: u64 = 60;
/// Longest a producer retries one webhook.
const PATIENCE: Duration = Duration::from_secs(60);
/// Trading sweeps triggered during the run.
const SWEEPS: usize = 6;

/// What the load generator saw.
#[derive(Debug, Default)]
struct Tally {
    accepted: AtomicU64,
    unavailable: AtomicU64,
    refused: AtomicU64,
    unreachable: AtomicU64,
}

/// Sends one webhook until it is answered 202, as a producer retrying on 503
/// does; anything but 202 and 503 is counted as refused. A webhook still
/// refused after [`PATIENCE`] fails the test.
async fn deliver(tally: &Tally, request: impl Fn() -> reqwest::RequestBuilder) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a webhook was not accepted within {PATIENCE:?}"
        );
        match request().timeout(Duration::from_secs(10)).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key("retry-after"));
                tally.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                panic!(
                    "a webhook was answered {}: {:?}",
                    response.status(),
                    response.text().await
                );
            }
            Err(_) => {
                tally.unreachable.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_nothing_when_a_node_and_a_consumer_die() {
    let scratch = TestDir::new("cluster");
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut nodes = start_cluster(scratch.path()).await;
    let nats_url = cluster_url(&nodes);
    let db = match TestDb::postgres().await {
        Some(db) => db,
        None => TestDb::sqlite(),
    };
    let http = hookmesh_runtime::http::client_builder().build().unwrap();

    let gateway_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let mut gateway = ServiceProcess::start(
        env!("CARGO_BIN_EXE_hookmesh"),
        "gateway",
        "gateway",
        &gateway_env(&nats_url, gateway_port),
        format!("{gateway_url}/readyz"),
        &logs,
    )
    .await;
    gateway.wait_ready(&http).await;

    let trading_api = hookmesh_tests::trading_api(hookmesh_trading_api_sim::Knobs {
        run_time_ms: 2000,
        ..hookmesh_trading_api_sim::Knobs::default()
    })
    .await;
    let mut consumers = Vec::new();
    for (name, command) in CONSUMERS {
        let ops = format!("127.0.0.1:{}", free_port());
        let mut service = ServiceProcess::start(
            env!("CARGO_BIN_EXE_hookmesh"),
            name,
            command,
            &consumer_env(&nats_url, &db.url, &ops, &trading_api.url(), &gateway_url),
            format!("http://{ops}/readyz"),
            &logs,
        )
        .await;
        service.wait_ready(&http).await;
        consumers.push(service);
    }

    // The campaign every delivery event counts toward.
    let recipients: Vec<Value> = (0..DELIVERIES)
        .map(|n| json!({"provider": "sendgrid", "message_id": format!("m-{n:05}"), "address": format!("r{n}@example.com")}))
        .collect();
    let registered = http
        .post(format!("{gateway_url}/api/campaigns"))
        .bearer_auth(secrets::API_KEY_ACME)
        .json(&json!({"campaign_id": CAMPAIGN, "recipients": recipients}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), reqwest::StatusCode::ACCEPTED);

    // A steady load of both kinds, each webhook retried until it is 202.
    let tally = Arc::new(Tally::default());
    let mut senders = Vec::new();
    for kind in ["delivery", "checkin"] {
        let (http, gateway_url, tally) = (http.clone(), gateway_url.clone(), tally.clone());
        let total = if kind == "delivery" {
            DELIVERIES
        } else {
            CHECKINS
        };
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut inflight = tokio::task::JoinSet::new();
            for n in 0..total {
                tick.tick().await;
                let (http, gateway_url, tally) = (http.clone(), gateway_url.clone(), tally.clone());
                inflight.spawn(async move {
                    if kind == "delivery" {
                        deliver(&tally, || {
                            delivery_request(&http, &gateway_url, "cluster", n)
                        })
                        .await;
                    } else {
                        deliver(&tally, || {
                            checkin_request(&http, &gateway_url, "cluster", n)
                        })
                        .await;
                    }
                });
            }
            while let Some(delivered) = inflight.join_next().await {
                delivered.expect("every webhook is answered 202 or 503");
            }
        }));
    }
    // Trading sweeps all along, each retried with its Idempotency-Key until 202.
    let sweeps = {
        let (http, gateway_url) = (http.clone(), gateway_url.clone());
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            for n in 0..SWEEPS {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let deadline = tokio::time::Instant::now() + PATIENCE;
                let job = loop {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "a sweep was not accepted"
                    );
                    let answer = http
                        .post(format!("{gateway_url}/api/pipelines/trigger"))
                        .bearer_auth(secrets::API_KEY_ACME)
                        .header("Idempotency-Key", format!("cluster-sweep-{n}"))
                        .json(&json!({"ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30], "step": 5}))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                            let body: Value = response.json().await.unwrap();
                            break body["job_id"].as_str().unwrap().to_owned();
                        }
                        Ok(response) => {
                            assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE)
                        }
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                jobs.push(job);
            }
            jobs
        })
    };
    let sent = tally.clone();
    let progress = |at: u64| {
        let sent = sent.clone();
        async move {
            eventually(
                Duration::from_secs(60),
                &format!("{at} webhooks accepted"),
                || {
                    let sent = sent.clone();
                    async move { (sent.accepted.load(Ordering::Relaxed) >= at).then_some(()) }
                },
            )
            .await;
        }
    };

    // A broker node dies under load, and comes back later.
    progress(300).await;
    nodes[1].kill().await;
    progress(900).await;
    nodes[1].start().await;
    // A consumer replica of each service dies, with batches in hand.
    progress(1500).await;
    consumers.remove(0).kill().await; // batch-1
    consumers.remove(1).kill().await; // csr-1
    consumers.remove(2).kill().await; // sweep-1
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(120), sender)
            .await
            .unwrap_or_else(|_| panic!("the load did not finish: {}", log_tails(&logs)))
            .unwrap();
    }
    let accepted = tally.accepted.load(Ordering::Relaxed);
    assert_eq!(
        accepted as usize,
        DELIVERIES + CHECKINS,
        "every webhook was accepted in the end"
    );
    assert_eq!(tally.refused.load(Ordering::Relaxed), 0);

    // Exactly once: each delivery moved its recipient once, so the counter
    // equals the campaign; each check-in is applied once.
    let campaign_done = eventually(Duration::from_secs(120), "every delivery counted", || {
        let url = db.url.clone();
        async move {
            let delivered = count(&url, "SELECT delivered_count FROM delivery_campaigns WHERE campaign_id = 'cluster-campaign'").await;
            (delivered == DELIVERIES as i64).then_some(delivered)
        }
    })
    .await;
    assert_eq!(campaign_done, DELIVERIES as i64);
    eventually(Duration::from_secs(120), "every check-in applied", || {
        let url = db.url.clone();
        async move {
            let applied = count(&url, "SELECT COUNT(*) FROM csr_processed_events").await;
            (applied == CHECKINS as i64).then_some(())
        }
    })
    .await;
    assert_eq!(
        count(&db.url, "SELECT COUNT(*) FROM delivery_events").await,
        DELIVERIES as i64,
        "each delivery event logged once"
    );
    assert_eq!(
        count(&db.url, "SELECT settled_count FROM delivery_campaigns").await,
        DELIVERIES as i64
    );
    // One row per participant of each check-in: the buddy and the newcomer.
    assert_eq!(
        count(
            &db.url,
            "SELECT COUNT(*) FROM csr_activities WHERE kind = 'checkin'"
        )
        .await,
        2 * CHECKINS as i64,
        "each check-in recorded once"
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT COUNT(DISTINCT activity_id) FROM csr_activities WHERE kind = 'checkin'"
        )
        .await,
        CHECKINS as i64
    );

    // The campaign's completion is announced once, on the replicated stream.
    let client = async_nats::connect(hookmesh_nats::server_list(&nats_url).as_slice())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let completions = eventually(Duration::from_secs(60), "the completion announced", || {
        let js = js.clone();
        async move {
            let stored = hookmesh_tests::stream_messages(&js, "DELIVERY").await;
            let completed: Vec<_> = stored
                .into_iter()
                .filter(|m| m.subject == "delivery.campaign.completed")
                .collect();
            (!completed.is_empty()).then_some(completed)
        }
    })
    .await;
    assert_eq!(completions.len(), 1);
    let mut stream = js.get_stream("PROVIDERS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(
        info.state.messages as usize, DELIVERIES,
        "retried webhooks were stored once"
    );

    // Every sweep completed once, with its results.
    let jobs = tokio::time::timeout(Duration::from_secs(60), sweeps)
        .await
        .unwrap_or_else(|_| panic!("the sweeps were not all accepted: {}", log_tails(&logs)))
        .unwrap();
    for job in &jobs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let view = loop {
            let view: Value = match http
                .get(format!("{gateway_url}/api/pipelines/{job}"))
                .bearer_auth(secrets::API_KEY_ACME)
                .send()
                .await
            {
                Ok(response) => response.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            if view["status"] == "COMPLETED" {
                break view;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{job} did not complete: {view}\n{}",
                log_tails(&logs)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(view["results"].as_array().unwrap().len(), 8, "{view}");
        let stored = hookmesh_tests::stream_messages(&js, "SWEEPS").await;
        let completed = stored
            .iter()
            .filter(|m| m.subject == format!("sweeps.jobs.{job}.completed"))
            .count();
        assert_eq!(completed, 1, "{job} completed once");
    }
    assert!(trading_api.sweeps_accepted() >= SWEEPS);

    eprintln!(
        "cluster: {} accepted, {} answered 503 and retried, {} unreachable and retried",
        accepted,
        tally.unavailable.load(Ordering::Relaxed),
        tally.unreachable.load(Ordering::Relaxed)
    );
    for service in consumers {
        service.stop().await;
    }
    gateway.stop().await;
    for node in &mut nodes {
        node.kill().await;
    }
}
