//! `hookmesh up` as a newcomer runs it: from an empty data directory to a
//! ready line, a signed webhook accepted, a graceful stop, and a restart that
//! finds the broker's data again.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use hookmesh_tests::up::{self, Up, local_secret, stop_gracefully};
use hookmesh_tests::{TestDir, buddy_request, eventually, free_port, stream_messages};

async fn start_up(data_dir: &Path, http_port: u16) -> Up {
    start_up_with(data_dir, http_port, |_| {}).await
}

async fn start_up_with(
    data_dir: &Path,
    http_port: u16,
    configure: impl FnOnce(&mut tokio::process::Command),
) -> Up {
    up::start_up_with(
        Path::new(env!("CARGO_BIN_EXE_hookmesh")),
        data_dir,
        http_port,
        configure,
    )
    .await
}

async fn post_buddy_webhook(gateway: &str, secret: &str, id: &str) -> reqwest::Response {
    let body = format!(
        r#"{{"id":"{id}","type":"buddy.match.created","timestamp":"2025-11-14T10:30:00Z","data":{{"tenant_id":"acme","program_id":"ukraine-2025","match_id":"m-77","buddy_id":"p-7","newcomer_id":"p-1042"}}}}"#
    );
    let http = hookmesh_runtime::http::client_builder().build().unwrap();
    buddy_request(&http, gateway, secret, id, body.into_bytes())
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
    assert_eq!(first.dashboard, format!("http://127.0.0.1:{port}/ui"));
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
