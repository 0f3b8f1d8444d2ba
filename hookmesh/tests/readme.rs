//! The README's "Trying it" examples, run as written against `hookmesh up`:
//! each `curl` that a `# NNN …` comment follows must answer that status.
//! So the documentation and the behaviour cannot drift apart.
//!
//! The examples run in one bash process from the repository root, with a
//! `curl` function in front of the real one that records every answer's
//! status. Reads (GETs) are asked again for a few seconds while they fail:
//! the mesh applies what was just sent a moment later.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hookmesh_tests::{TestDir, free_port};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

/// The bash blocks of the README's "Trying it" section, in order.
fn examples(readme: &str) -> Vec<String> {
    let start = readme.find("## Trying it").expect("a Trying it section");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut blocks = Vec::new();
    let mut rest = &section[..end];
    while let Some(open) = rest.find("```bash\n") {
        let body = &rest[open + 8..];
        let close = body.find("```").expect("a closed block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

/// `(curl call index, expected status)` for every `# NNN` comment: the
/// status of the `curl` call before it.
fn expectations(script: &str) -> Vec<(usize, u16)> {
    let mut calls = 0;
    let mut expected = Vec::new();
    let mut continued = false;
    for line in script.lines() {
        let trimmed = line.trim_start();
        if !continued && (trimmed.starts_with("curl ") || trimmed.contains("$(curl ")) {
            calls += 1;
        }
        continued = trimmed.ends_with('\\');
        if let Some(comment) = trimmed.strip_prefix("# ")
            && let Some(status) = comment.get(..3).and_then(|s| s.parse::<u16>().ok())
            && comment.as_bytes().get(3) == Some(&b' ')
        {
            assert!(calls > 0, "a status comment before any curl: {line}");
            expected.push((calls - 1, status));
        }
    }
    expected
}

const PRELUDE: &str = r#"
set -euo pipefail
: > "$CALLS"
curl() {
  local answer="$RUN/answer" status deadline=$((SECONDS + 15))
  while true; do
    status=$(command curl -o "$answer" -w '%{http_code}' "$@")
    # Reads may come a moment before what they read is applied.
    case " $* " in *" -X POST "*) break ;; esac
    [ "$status" -lt 400 ] || [ "$SECONDS" -ge "$deadline" ] && break
    sleep 0.2
  done
  echo "$status" >> "$CALLS"
  cat "$answer"
  echo
}
"#;

/// `hookmesh up`, stopped gracefully when dropped (also when the test
/// fails), so that its broker stops with it and nothing is left behind.
struct RunningUp(tokio::process::Child);

impl Drop for RunningUp {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.start_kill();
    }
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_examples_answer_what_the_readme_says() {
    let readme = std::fs::read_to_string(repository_root().join("README.md")).unwrap();
    let script = examples(&readme).join("\n");
    let expected = expectations(&script);
    assert!(expected.len() >= 10, "the examples show their answers");

    let dir = TestDir::new("readme");
    let data_dir = dir.path().join(".hookmesh");
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookmesh"));
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_") || variable == "NATS_URL" {
            command.env_remove(variable);
        }
    }
    let mut child = command
        .arg("up")
        .arg("--no-install")
        .env("HOOKMESH_DATA_DIR", &data_dir)
        .env("HOOKMESH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("HOOKMESH_SIM_RUN_TIME_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _up = RunningUp(child);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("ready") {
                return;
            }
        }
        panic!("hookmesh up exited without a ready line");
    })
    .await
    .expect("a ready line within 60 s");

    let calls = dir.path().join("calls");
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .current_dir(repository_root())
        .env("HOOKMESH_DATA_DIR", &data_dir)
        .env("GW", format!("http://127.0.0.1:{port}"))
        .env("HM", env!("CARGO_BIN_EXE_hookmesh"))
        .env("CALLS", &calls)
        .env("RUN", dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the examples ran to the end\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let statuses: Vec<u16> = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    for (call, status) in expected {
        assert_eq!(
            statuses.get(call),
            Some(&status),
            "curl call {} answered {:?}, the README says {status}\nstdout:\n{stdout}",
            call + 1,
            statuses.get(call)
        );
    }
}

#[test]
fn status_comments_belong_to_the_curl_before_them() {
    let script = "curl -sS a \\\n  -d x\n# 202 {}\nX=$(curl b)\ncurl c\n# 200 ok\n";
    assert_eq!(expectations(script), [(0, 202), (2, 200)]);
}
