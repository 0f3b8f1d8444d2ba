//! `hookmesh send`, `hookmesh sign` and `hookmesh tail` against `hookmesh up`,
//! run as a person runs them: every kind of webhook is accepted and its
//! resend answered as a duplicate, signed headers work with curl, and a sent
//! webhook shows in the tail within a second.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hookmesh_tests::TestDir;
use hookmesh_tests::up;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_hookmesh");

/// Every kind `hookmesh send` makes.
const SOURCES: [&str; 8] = [
    "buddy",
    "github",
    "gitlab",
    "circleci",
    "jenkins",
    "providers",
    "sweep",
    "campaign",
];

/// `hookmesh <args>` on the mesh's data directory: (success, stdout, stderr).
async fn hookmesh(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = command(data_dir).args(args).output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_") || variable.starts_with("NATS_") {
            command.env_remove(variable);
        }
    }
    command
        .env("HOOKMESH_DATA_DIR", data_dir)
        .kill_on_drop(true);
    command
}

/// The answer lines (`NNN {json}`) and the `stored:` lines `send` printed.
fn answers(stdout: &str) -> Vec<(u16, serde_json::Value)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (status, body) = line.split_once(' ')?;
            Some((status.parse().ok()?, serde_json::from_str(body).ok()?))
        })
        .collect()
}

fn stored(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("stored: "))
        .collect()
}

/// The example names of `source`, from the error an unknown one gets.
async fn examples(data_dir: &Path, source: &str) -> Vec<String> {
    let (ok, _, stderr) = hookmesh(data_dir, &["send", source, "--event", "no-such-event"]).await;
    assert!(!ok, "an unknown example is refused");
    let list = stderr
        .split("there are: ")
        .nth(1)
        .unwrap_or_else(|| panic!("the examples are listed: {stderr}"));
    list.trim().split(", ").map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_sent_signed_accepted_and_deduplicated() {
    let dir = TestDir::new("send");
    let data_dir = dir.path().join(".hookmesh");
    let _mesh = up::start(BINARY, &data_dir, &[]).await;

    for source in SOURCES {
        let (ok, stdout, stderr) = hookmesh(&data_dir, &["send", source, "--duplicate"]).await;
        assert!(ok, "send {source}: {stdout}{stderr}");
        let answers = answers(&stdout);
        assert_eq!(answers.len(), 2, "send {source}: {stdout}");
        assert_eq!(answers[0].0, 202, "send {source}: {stdout}");
        assert_eq!(answers[0].1["duplicate"], false, "send {source}: {stdout}");
        assert_eq!(answers[1].0, 202, "send {source}: {stdout}");
        assert_eq!(answers[1].1["duplicate"], true, "send {source}: {stdout}");
        let stored = stored(&stdout);
        assert_eq!(stored.len(), 2, "send {source}: {stdout}");
        assert_eq!(stored[0], stored[1], "a duplicate names the stored copy");
        assert!(stored[0].contains(" in stream "), "{stdout}");
    }

    // Every example of every source: accepted (202), or acknowledged
    // without publishing (200) where the mesh does not consume the event.
    // (The sweep trigger and the campaign registration have one example each.)
    for &source in &SOURCES[..6] {
        for event in examples(&data_dir, source).await {
            let (ok, stdout, stderr) =
                hookmesh(&data_dir, &["send", source, "--event", &event]).await;
            assert!(ok, "send {source} --event {event}: {stdout}{stderr}");
            let status = answers(&stdout)[0].0;
            let consumed = !matches!(event.as_str(), "ping" | "push" | "queued");
            assert_eq!(
                status,
                if consumed { 202 } else { 200 },
                "send {source} --event {event}: {stdout}"
            );
        }
    }
    let (ok, stdout, _) = hookmesh(&data_dir, &["send", "providers", "--event", "batch"]).await;
    assert!(ok);
    assert_eq!(answers(&stdout)[0].1["accepted"], 3, "{stdout}");
    assert_eq!(stored(&stdout).len(), 3, "{stdout}");

    // Several in a row, each a new delivery.
    let (ok, stdout, _) = hookmesh(
        &data_dir,
        &["send", "buddy", "--count", "3", "--rate", "50"],
    )
    .await;
    assert!(ok, "{stdout}");
    let sent = answers(&stdout);
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|(status, body)| *status == 202 && body["duplicate"] == false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_headers_are_accepted_from_curl_and_the_tail_shows_each_webhook() {
    let dir = TestDir::new("sign");
    let data_dir = dir.path().join(".hookmesh");
    let mesh = up::start(BINARY, &data_dir, &[]).await;

    // `hookmesh sign` + curl, a real HTTP request from another program.
    let body = dir.path().join("run.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/ci/github/workflow_run.completed.failure.json"),
        &body,
    )
    .unwrap();
    let (ok, headers, stderr) = hookmesh(
        &data_dir,
        &[
            "sign",
            "github",
            "--event",
            "workflow_run",
            "--file",
            body.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(
        headers.contains("X-Hub-Signature-256: sha256="),
        "{headers}"
    );
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("{}/webhooks/ci/github", mesh.gateway));
    for header in headers.lines() {
        curl.arg("-H").arg(header);
    }
    let curled = curl
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .output()
        .await
        .expect("curl runs");
    let printed = String::from_utf8_lossy(&curled.stdout);
    assert!(
        printed.ends_with("\n202"),
        "curl with the signed headers: {printed}"
    );
    // The signature covers the body: another body with those headers is refused.
    let mut tampered = Command::new("curl");
    tampered
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("{}/webhooks/ci/github", mesh.gateway));
    for header in headers.lines() {
        tampered.arg("-H").arg(header);
    }
    let refused = tampered
        .args(["--data-binary", "{}"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");

    // `hookmesh tail` shows what is sent, within a second.
    let mut tail = command(&data_dir)
        .args(["tail", "buddy.>"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says so on stderr once its consumer exists (log lines may come first).
    let mut notes = BufReader::new(tail.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = notes.next_line().await.unwrap() {
            if line.contains("following buddy.>") {
                return;
            }
        }
        panic!("the tail ended before following");
    })
    .await
    .expect("the tail starts within 20 s");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();

    let (ok, stdout, _) = hookmesh(
        &data_dir,
        &["send", "buddy", "--event", "checkin.completed"],
    )
    .await;
    assert!(ok, "{stdout}");
    let event_id = answers(&stdout)[0].1["eventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("the tail goes on");
            if line.contains(&event_id) {
                return line;
            }
        }
    })
    .await
    .expect("the sent webhook shows in the tail within a second");
    for part in [
        " BUDDY#",
        " buddy.checkin.completed ",
        "type=buddy.checkin.completed",
        "tenant=local",
        " trace=",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }
    let trace = line.split(" trace=").nth(1).unwrap();
    assert_eq!(trace.len(), 32, "a trace id: {line}");

    // --since reads back, --json for scripts, --filter on the envelope.
    let mut past = command(&data_dir)
        .args(["tail", "BUDDY", "--since", "5m", "--json", "--filter"])
        .arg(format!("id={event_id}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut json_lines = BufReader::new(past.stdout.take().unwrap()).lines();
    let shown = tokio::time::timeout(Duration::from_secs(10), json_lines.next_line())
        .await
        .expect("the past message is shown")
        .unwrap()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["id"], event_id.as_str());
    assert_eq!(shown["stream"], "BUDDY");
    assert_eq!(shown["duplicate"], false);
    assert!(shown["traceparent"].as_str().unwrap().starts_with("00-"));
    assert_eq!(shown["envelope"]["type"], "buddy.checkin.completed");
}
