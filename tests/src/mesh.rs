//! The mesh as a deployment runs it, for the cluster test and `hookmesh
//! soak`: a three-node JetStream cluster whose nodes can be killed and
//! restarted, a private PostgreSQL server that can be stopped and started,
//! the signed webhooks producers send, and counts read back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use sqlx::Row as _;
use tokio::process::{Child, Command};

use crate::{eventually, free_port, query_pool, secrets, sign, unix_now};

/// One nats-server of a cluster, killed and restarted on the same ports and
/// store.
#[derive(Debug)]
pub struct ClusterNode {
    pub name: String,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl ClusterNode {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub async fn start(&mut self) {
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

    /// `kill -9`.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("nats-server is killed");
        }
    }
}

/// Three clustered nats-servers with JetStream, stores under `dir`.
pub async fn start_cluster(dir: &Path) -> Vec<ClusterNode> {
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
        nodes.push(ClusterNode {
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

/// The cluster's URLs, comma-separated, as `NATS_URL` takes them.
pub fn cluster_url(nodes: &[ClusterNode]) -> String {
    nodes
        .iter()
        .map(ClusterNode::url)
        .collect::<Vec<_>>()
        .join(",")
}

/// The consumer processes of a deployment: two replicas of each service.
pub const CONSUMERS: [(&str, &str); 6] = [
    ("batch-1", "batch-processor"),
    ("batch-2", "batch-processor"),
    ("csr-1", "csr-consumer"),
    ("csr-2", "csr-consumer"),
    ("sweep-1", "sweep-worker"),
    ("sweep-2", "sweep-worker"),
];

/// A gateway's settings on the cluster at `nats_url`, listening on `port`,
/// with the test secrets and no rate limits on the loaded sources.
pub fn gateway_env(nats_url: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", nats_url.to_owned()),
        ("HOOKMESH_STREAM_REPLICAS", "3".to_owned()),
        ("HOOKMESH_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("HOOKMESH_SECRET_BUDDY", secrets::BUDDY.to_owned()),
        ("HOOKMESH_SECRET_PROVIDERS", secrets::PROVIDERS.to_owned()),
        ("HOOKMESH_SECRET_JENKINS", secrets::JENKINS.to_owned()),
        (
            "HOOKMESH_API_KEYS",
            format!("acme:{}", secrets::API_KEY_ACME),
        ),
        (
            "HOOKMESH_RATE_LIMITS",
            "buddy=0,providers=0,api=0,jenkins=0".to_owned(),
        ),
        ("HOOKMESH_CALLBACK_SECRET", secrets::CALLBACK.to_owned()),
        ("HOOKMESH_PUBLISH_TIMEOUT_MS", "2000".to_owned()),
    ]
}

/// A consumer's settings: the cluster, the database, its ops address, the
/// Trading API and the gateway's URL for callbacks.
pub fn consumer_env(
    nats_url: &str,
    database_url: &str,
    ops: &str,
    trading_api_url: &str,
    gateway_url: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", nats_url.to_owned()),
        ("HOOKMESH_STREAM_REPLICAS", "3".to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("HOOKMESH_OPS_ADDR", ops.to_owned()),
        ("HOOKMESH_BATCH_SIZE", "100".to_owned()),
        ("TRADING_API_URL", trading_api_url.to_owned()),
        ("TRADING_API_KEY", secrets::TRADING_API.to_owned()),
        ("HOOKMESH_PUBLIC_URL", gateway_url.to_owned()),
        ("HOOKMESH_CALLBACK_SECRET", secrets::CALLBACK.to_owned()),
        // A callback lost while the broker was away is replaced by a poll
        // of the Trading API.
        ("HOOKMESH_SWEEP_CALLBACK_TIMEOUT_SECS", "20".to_owned()),
    ]
}

/// A PostgreSQL server of its own (initdb in a scratch directory, a free
/// port, trust authentication), to be stopped and started without touching
/// the machine's shared server.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// The newest PostgreSQL's binaries under /usr/lib/postgresql, or
    /// `HOOKMESH_POSTGRES_BIN`.
    pub fn find_binaries() -> Option<PathBuf> {
        if let Ok(bin) = std::env::var("HOOKMESH_POSTGRES_BIN") {
            return Some(PathBuf::from(bin));
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop()
    }

    /// initdb under `dir`, then start.
    pub async fn start(bin: PathBuf, dir: &Path) -> Self {
        let data = dir.join("pgdata");
        let mut initdb = std::process::Command::new(bin.join("initdb"));
        initdb
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // initdb refuses to run as root; run it as the postgres user then.
        let status = if is_root() {
            std::fs::create_dir_all(dir).unwrap();
            let _ = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status();
            run_as_postgres(&initdb)
        } else {
            initdb.status().expect("initdb runs")
        };
        assert!(status.success(), "initdb failed in {}", data.display());
        let postgres = Self {
            bin,
            data,
            port: free_port(),
        };
        postgres.resume().await;
        postgres
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::ExitStatus {
        let mut command = std::process::Command::new(self.bin.join("pg_ctl"));
        command
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            run_as_postgres(&command)
        } else {
            command.status().expect("pg_ctl runs")
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200 -c fsync=off",
            self.port
        );
        let log = self.data.join("server.log");
        let status = self.pg_ctl(&["-w", "-o", &options, "-l", &log.to_string_lossy(), "start"]);
        assert!(status.success(), "the private PostgreSQL did not start");
        let url = self.url("postgres");
        eventually(Duration::from_secs(30), "PostgreSQL accepting", || {
            let url = url.clone();
            async move {
                use sqlx::Connection as _;
                sqlx::postgres::PgConnection::connect(&url)
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
    }

    /// A fast shutdown: connections are cut, nothing committed is lost.
    pub fn pause(&self) {
        let status = self.pg_ctl(&["-w", "-m", "fast", "stop"]);
        assert!(status.success(), "the private PostgreSQL did not stop");
    }

    /// The postmaster's process id, for its memory.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    pub async fn create_database(&self, name: &str) -> String {
        use sqlx::Connection as _;
        let mut connection = sqlx::postgres::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("the private PostgreSQL accepts");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .expect("a database can be created");
        self.url(name)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// Runs `command` as the `postgres` user (with `runuser`), for tools that
/// refuse root.
fn run_as_postgres(command: &std::process::Command) -> std::process::ExitStatus {
    let mut wrapped = std::process::Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(command.get_program())
        .args(command.get_args())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    wrapped.status().expect("runuser runs")
}

/// A provider's `delivered` event for message `m-<n>`, signed.
pub fn delivery_request(
    http: &reqwest::Client,
    gateway: &str,
    run: &str,
    n: usize,
) -> reqwest::RequestBuilder {
    let id = format!("msg_{run}_{n}");
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

/// A buddy check-in `c-<n>`, signed (seed 002).
pub fn checkin_request(
    http: &reqwest::Client,
    gateway: &str,
    run: &str,
    n: usize,
) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(&json!({
        "id": format!("evt-checkin-{run}-{n}"),
        "type": "buddy.checkin.completed",
        "timestamp": "2025-11-14T10:30:00Z",
        "data": {
            "tenant_id": "acme", "program_id": format!("{run}-program"), "match_id": "m-1",
            "checkin_id": format!("c-{n}"), "buddy_id": "p-1", "newcomer_id": "p-2",
            "duration_minutes": 30, "channel": "video"
        }
    }))
    .unwrap();
    crate::buddy_request(
        http,
        gateway,
        secrets::BUDDY,
        &format!("checkin-{run}-{n}"),
        body,
    )
}

/// Jenkins' notification that build `n` of job `<run>-job` finished,
/// failed when `failed`.
pub fn jenkins_request(
    http: &reqwest::Client,
    gateway: &str,
    run: &str,
    n: usize,
    failed: bool,
) -> reqwest::RequestBuilder {
    let (status, log) = if failed {
        (
            "FAILURE",
            "test retry::tests::backoff ... FAILED\nerror: test failed\n",
        )
    } else {
        ("SUCCESS", "ok\n")
    };
    let body = serde_json::to_vec(&json!({
        "name": format!("{run}-job"),
        "url": format!("job/{run}-job/"),
        "build": {
            "full_url": format!("https://jenkins.example.com/job/{run}-job/{n}/"),
            "number": n,
            "timestamp": 1_715_678_311_000_i64,
            "duration": 381_000,
            "phase": "COMPLETED",
            "status": status,
            "url": format!("job/{run}-job/{n}/"),
            "scm": {"url": "https://github.com/acme/payments-api.git", "branch": "origin/main",
                    "commit": "e3f1c0a9b7d24e8f6a1c5b3d9e0f7a2c4b6d8e1f"},
            "log": log,
        }
    }))
    .unwrap();
    http.post(format!("{gateway}/webhooks/ci/jenkins"))
        .header("content-type", "application/json")
        .header("Authorization", sign::basic("jenkins", secrets::JENKINS))
        .body(body)
}

/// The first column of the first row of `sql` as a number, or -1 when the
/// database cannot answer.
pub async fn count(database_url: &str, sql: &str) -> i64 {
    let pool = query_pool(database_url).await;
    let value = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&pool)
        .await
        .map(|row| row.try_get::<i64, _>(0).unwrap_or(-1))
        .unwrap_or(-1);
    pool.close().await;
    value
}

/// The last lines of every log in `logs`, for a failure's message.
pub fn log_tails(logs: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!("\n== {}\n", entry.file_name().to_string_lossy()));
        text.push_str(&lines[lines.len().saturating_sub(8)..].join("\n"));
    }
    text
}

/// Resident memory of process `pid`, in KiB (0 when it is gone).
pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
