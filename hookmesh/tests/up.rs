//! `hookmesh up` as a newcomer runs it: from an empty data directory to a
//! ready line, a signed webhook accepted, a graceful stop, and a restart that
//! finds the broker's data again.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookmesh_tests::{
    TestDir, assert_no_secret, eventually, free_port, generated_secrets, sign, stream_messages,
    unix_now,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

struct Up {
    child: Child,
    data_dir: std::path::PathBuf,
    gateway: String,
    broker: String,
    /// Every line logged on stderr so far.
    logged: Arc<Mutex<Vec<String>>>,
}

async fn start_up(data_dir: &Path, http_port: u16) -> Up {
    start_up_with(data_dir, http_port, |_| {}).await
}

/// `hookmesh up` on `data_dir`, with whatever `configure` adds.
async fn start_up_with(
    data_dir: &Path,
    http_port: u16,
    configure: impl FnOnce(&mut Command),
) -> Up {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookmesh"));
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_") || variable == "NATS_URL" || variable == "DATABASE_URL"
        {
            command.env_remove(variable);
        }
    }
    command
        .arg("up")
        .arg("--no-install")
        .env("HOOKMESH_DATA_DIR", data_dir)
        .env("HOOKMESH_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    configure(&mut command);
    let mut child = command.spawn().expect("the hookmesh binary runs");
    let logged = Arc::new(Mutex::new(Vec::new()));
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = logged.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = errors.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("ready") {
                return line;
            }
        }
        panic!("hookmesh up exited without a ready line");
    })
    .await
    .expect("a ready line within 60 s");
    let word_after = |marker: &str| {
        ready
            .split_whitespace()
            .skip_while(|word| *word != marker)
            .nth(1)
            .unwrap_or_else(|| panic!("{marker} in {ready:?}"))
            .trim_end_matches([',', ')'])
            .to_owned()
    };
    Up {
        data_dir: data_dir.to_owned(),
        gateway: word_after("gateway"),
        broker: word_after("(broker"),
        child,
        logged,
    }
}

async fn stop_gracefully(mut up: Up) {
    let pid = up.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), up.child.wait())
        .await
        .expect("hookmesh up stops within 30 s of SIGTERM")
        .unwrap();
    assert!(
        status.success(),
        "hookmesh up exits 0 on SIGTERM, got {status}"
    );
    let logged = up.logged.lock().unwrap().join("\n");
    let mut secrets = generated_secrets(&up.data_dir);
    secrets.extend(hookmesh_tests::secrets::ALL.iter().map(|s| s.to_string()));
    assert_no_secret("the log of hookmesh up", &logged, &secrets);
}

fn local_secret(data_dir: &Path, variable: &str) -> String {
    let text = std::fs::read_to_string(data_dir.join("secrets.env")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{variable}=")))
        .unwrap_or_else(|| panic!("{variable} in secrets.env"))
        .to_owned()
}

async fn post_buddy_webhook(gateway: &str, secret: &str, id: &str) -> reqwest::Response {
    let body = format!(
        r#"{{"id":"{id}","type":"buddy.match.created","timestamp":"2025-11-14T10:30:00Z","data":{{"tenant_id":"acme","program_id":"ukraine-2025","match_id":"m-77","buddy_id":"p-7","newcomer_id":"p-1042"}}}}"#
    );
    hookmesh_runtime::http::client_builder()
        .build()
        .unwrap()
        .post(format!("{gateway}/webhooks/buddy-events"))
        .header("content-type", "application/json")
        .header("X-Webhook-Id", format!("wh-{id}"))
        .header("X-Webhook-Timestamp", unix_now().to_string())
        .header(
            "X-Webhook-Signature",
            sign::sha256_header(secret, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn send_buddy_webhook(gateway: &str, secret: &str) -> serde_json::Value {
    let response = post_buddy_webhook(gateway, secret, "evt-up-1").await;
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_from_an_empty_data_dir_and_finds_its_data_again_after_a_restart() {
    let scratch = TestDir::new("up");
    let data_dir = scratch.path().join("data");
    let port = free_port();

    let first = start_up(&data_dir, port).await;
    assert_eq!(first.gateway, format!("http://127.0.0.1:{port}"));
    let secrets = data_dir.join("secrets.env");
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the generated secrets are private");
    let secret = local_secret(&data_dir, "HOOKMESH_SECRET_BUDDY");
    let answer = send_buddy_webhook(&first.gateway, &secret).await;
    assert_eq!(answer["duplicate"], false);
    stop_gracefully(first).await;

    let second = start_up(&data_dir, port).await;
    assert_eq!(
        local_secret(&data_dir, "HOOKMESH_SECRET_BUDDY"),
        secret,
        "secrets are generated once and kept"
    );
    let js = async_nats::jetstream::new(async_nats::connect(&second.broker).await.unwrap());
    let stored = stream_messages(&js, "BUDDY").await;
    assert_eq!(
        stored.len(),
        1,
        "the stream kept its message across the restart"
    );
    assert_eq!(stored[0].envelope["id"], "evt-up-1");
    let again = send_buddy_webhook(&second.gateway, &secret).await;
    assert_eq!(again["duplicate"], true, "deduplication state survived too");
    stop_gracefully(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_restarts_an_embedded_broker_that_dies_and_keeps_accepting() {
    let scratch = TestDir::new("up-broker-dies");
    let data_dir = scratch.path().join("data");
    let up = start_up(&data_dir, free_port()).await;
    let secret = local_secret(&data_dir, "HOOKMESH_SECRET_BUDDY");
    let pid_file = data_dir.join("nats").join("nats-server.pid");
    let first_pid = std::fs::read_to_string(&pid_file).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", first_pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());

    eventually(Duration::from_secs(30), "a new nats-server", || {
        let pid_file = pid_file.clone();
        let first_pid = first_pid.clone();
        async move {
            std::fs::read_to_string(&pid_file)
                .ok()
                .filter(|pid| !pid.trim().is_empty() && pid.trim() != first_pid.trim())
        }
    })
    .await;
    let answer: serde_json::Value = eventually(
        Duration::from_secs(30),
        "the gateway to accept again",
        || {
            let gateway = up.gateway.clone();
            let secret = secret.clone();
            async move {
                let response = post_buddy_webhook(&gateway, &secret, "evt-after-crash").await;
                (response.status() == reqwest::StatusCode::ACCEPTED)
                    .then_some(response)?
                    .json()
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(answer["duplicate"], false);
    let js = async_nats::jetstream::new(async_nats::connect(&up.broker).await.unwrap());
    let stored = stream_messages(&js, "BUDDY").await;
    assert_eq!(stored.len(), 1, "the restarted broker stored the webhook");
    assert_eq!(stored[0].envelope["id"], "evt-after-crash");
    stop_gracefully(up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_in_an_empty_directory_logs_no_errors_and_takes_a_relative_sqlite_url() {
    let scratch = TestDir::new("up-sqlite");
    let data_dir = scratch.path().join("data");
    // The documented form, relative, of a file that does not exist yet.
    let up = start_up_with(&data_dir, free_port(), |command| {
        command
            .current_dir(scratch.path())
            .env("DATABASE_URL", "sqlite://hookmesh.db");
    })
    .await;
    assert!(scratch.path().join("hookmesh.db").exists());
    let secret = local_secret(&data_dir, "HOOKMESH_SECRET_BUDDY");
    let answer = send_buddy_webhook(&up.gateway, &secret).await;
    assert_eq!(answer["duplicate"], false);
    let errors: Vec<String> = up
        .logged
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.contains("\"level\":\"ERROR\""))
        .cloned()
        .collect();
    assert!(
        errors.is_empty(),
        "a first start logs no errors: {errors:#?}"
    );
    stop_gracefully(up).await;
}
