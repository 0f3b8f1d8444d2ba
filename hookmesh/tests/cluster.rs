//! The mesh on a three-node JetStream cluster, every stream with three
//! replicas, the services as separate processes (two replicas of each
//! consumer), under a steady load of signed webhooks: one broker node is
//! killed and later restarted, one consumer replica is killed. Every webhook
//! answered 202 is processed exactly once, and anything the gateway could
//! not make durable is answered 503, never 202.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hookmesh_tests::process::ServiceProcess;
use hookmesh_tests::{TestDb, TestDir, eventually, free_port, query_pool, secrets, sign, unix_now};
use serde_json::{Value, json};
use sqlx::Row as _;
use tokio::process::{Child, Command};

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

/// One nats-server of the cluster, killed and restarted on the same ports
/// and store.
struct Node {
    name: String,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Node {
    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let binary = hookmesh_nats::server::find().unwrap_or_else(|error| panic!("{error}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stderr.log"))
            .unwrap();
        self.child = Some(
            Command::new(&binary.path)
                .arg("-c")
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("nats-server starts"),
        );
        let url = self.url();
        eventually(
            Duration::from_secs(20),
            &format!("{} accepting", self.name),
            || {
                let url = url.clone();
                async move { async_nats::connect(&url).await.ok().map(|_| ()) }
            },
        )
        .await;
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("nats-server is killed");
        }
    }
}

async fn cluster(dir: &Path) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, cluster)| format!("nats://127.0.0.1:{cluster}"))
        .collect();
    let mut nodes = Vec::new();
    for (index, (port, cluster_port)) in ports.iter().enumerate() {
        let name = format!("n{}", index + 1);
        let node_dir = dir.join(&name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let config = node_dir.join("nats-server.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\nmax_payload: 4MB\n\
                 jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 50GB }}\n\
                 cluster {{ name: hookmesh-test, listen: 127.0.0.1:{cluster_port}, routes: [{routes}] }}\n",
                store = node_dir.join("store").display(),
                routes = routes.join(", ")
            ),
        )
        .unwrap();
        nodes.push(Node {
            name,
            config,
            port: *port,
            child: None,
            dir: node_dir,
        });
    }
    for node in &mut nodes {
        node.start().await;
    }
    nodes
}

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

fn delivery_request(http: &reqwest::Client, gateway: &str, n: usize) -> reqwest::RequestBuilder {
    let id = format!("msg_cluster_{n}");
    let timestamp = unix_now();
    let body = serde_json::to_vec(&json!({
        "event_type": "delivered",
        "message_id": format!("m-{n:05}"),
        "timestamp": "2025-03-01T09:00:02Z",
    }))
    .unwrap();
    http.post(format!("{gateway}/webhooks/providers/sendgrid"))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign::standard(secrets::PROVIDERS, &id, timestamp, &body),
        )
        .body(body)
}

fn checkin_request(http: &reqwest::Client, gateway: &str, n: usize) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(&json!({
        "id": format!("evt-checkin-{n}"),
        "type": "buddy.checkin.completed",
        "timestamp": "2025-11-14T10:30:00Z",
        "data": {
            "tenant_id": "acme", "program_id": "cluster-program", "match_id": "m-1",
            "checkin_id": format!("c-{n}"), "buddy_id": "p-1", "newcomer_id": "p-2",
            "duration_minutes": 30, "channel": "video"
        }
    }))
    .unwrap();
    http.post(format!("{gateway}/webhooks/buddy-events"))
        .header("content-type", "application/json")
        .header("X-Webhook-Id", format!("wh-checkin-{n}"))
        .header("X-Webhook-Timestamp", unix_now().to_string())
        .header(
            "X-Webhook-Signature",
            sign::sha256_header(secrets::BUDDY, &body),
        )
        .body(body)
}

/// The last lines of every service's log, for a failure's message.
fn log_tails(logs: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!("\n== {}\n", entry.file_name().to_string_lossy()));
        text.push_str(&lines[lines.len().saturating_sub(8)..].join("\n"));
    }
    text
}

async fn count(database_url: &str, sql: &'static str) -> i64 {
    let pool = query_pool(database_url).await;
    let value = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .map(|row| row.try_get::<i64, _>(0).unwrap())
        .unwrap_or(-1);
    pool.close().await;
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_loses_nothing_when_a_node_and_a_consumer_die() {
    let scratch = TestDir::new("cluster");
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut nodes = cluster(scratch.path()).await;
    let nats_url = nodes.iter().map(Node::url).collect::<Vec<_>>().join(",");
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
        &[
            ("NATS_URL", nats_url.clone()),
            ("HOOKMESH_STREAM_REPLICAS", "3".to_owned()),
            ("HOOKMESH_HTTP_ADDR", format!("127.0.0.1:{gateway_port}")),
            ("HOOKMESH_SECRET_BUDDY", secrets::BUDDY.to_owned()),
            ("HOOKMESH_SECRET_PROVIDERS", secrets::PROVIDERS.to_owned()),
            (
                "HOOKMESH_API_KEYS",
                format!("acme:{}", secrets::API_KEY_ACME),
            ),
            (
                "HOOKMESH_RATE_LIMITS",
                "buddy=0,providers=0,api=0".to_owned(),
            ),
            ("HOOKMESH_CALLBACK_SECRET", secrets::CALLBACK.to_owned()),
            ("HOOKMESH_PUBLISH_TIMEOUT_MS", "2000".to_owned()),
        ],
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
    for (name, command) in [
        ("batch-1", "batch-processor"),
        ("batch-2", "batch-processor"),
        ("csr-1", "csr-consumer"),
        ("csr-2", "csr-consumer"),
        ("sweep-1", "sweep-worker"),
        ("sweep-2", "sweep-worker"),
    ] {
        let ops = format!("127.0.0.1:{}", free_port());
        let mut service = ServiceProcess::start(
            env!("CARGO_BIN_EXE_hookmesh"),
            name,
            command,
            &[
                ("NATS_URL", nats_url.clone()),
                ("HOOKMESH_STREAM_REPLICAS", "3".to_owned()),
                ("DATABASE_URL", db.url.clone()),
                ("HOOKMESH_OPS_ADDR", ops.clone()),
                ("HOOKMESH_BATCH_SIZE", "100".to_owned()),
                ("TRADING_API_URL", trading_api.url()),
                ("TRADING_API_KEY", secrets::TRADING_API.to_owned()),
                ("HOOKMESH_PUBLIC_URL", gateway_url.clone()),
                ("HOOKMESH_CALLBACK_SECRET", secrets::CALLBACK.to_owned()),
                // A callback lost while the broker was away is replaced by a
                // poll of the Trading API within the test.
                ("HOOKMESH_SWEEP_CALLBACK_TIMEOUT_SECS", "20".to_owned()),
            ],
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
                        deliver(&tally, || delivery_request(&http, &gateway_url, n)).await;
                    } else {
                        deliver(&tally, || checkin_request(&http, &gateway_url, n)).await;
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
