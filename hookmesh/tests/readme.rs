//! The README's "Trying it" examples, run as written against `hookmesh up`:
//! each `curl` that a `# NNN …` comment follows must answer that status.
//! So the documentation and the behaviour cannot drift apart.
//!
//! The examples run in one bash process from the repository root, with a
//! `curl` function in front of the real one that records every answer's
//! status. Reads (GETs) are asked again for a few seconds while they fail:
//! the mesh applies what was just sent a moment later.

use std::path::{Path, PathBuf};

use hookmesh_tests::TestDir;
use hookmesh_tests::up;
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

/// How many answers a line of the script prints: one for a `curl`, one
/// for a `$HM send` (two with `--duplicate`), none for anything else.
fn answers(line: &str) -> usize {
    if line.starts_with("curl ") || line.contains("$(curl ") {
        1
    } else if line.starts_with("$HM send ") {
        if line.contains("--duplicate") { 2 } else { 1 }
    } else {
        0
    }
}

/// `(answer index, expected status)` for every `# NNN` comment: the
/// comments after a request are the statuses of its answers, in order.
fn expectations(script: &str) -> Vec<(usize, u16)> {
    let mut calls = 0;
    // The last request: its first answer's index, its answers, those commented.
    let mut request: Option<(usize, usize, usize)> = None;
    let mut expected = Vec::new();
    let mut continued = false;
    for line in script.lines() {
        let trimmed = line.trim_start();
        let printed = if continued { 0 } else { answers(trimmed) };
        if printed > 0 {
            request = Some((calls, printed, 0));
            calls += printed;
        }
        continued = trimmed.ends_with('\\');
        if let Some(comment) = trimmed.strip_prefix("# ")
            && let Some(status) = comment.get(..3).and_then(|s| s.parse::<u16>().ok())
            && comment.as_bytes().get(3) == Some(&b' ')
        {
            let (first, printed, commented) = request
                .as_mut()
                .unwrap_or_else(|| panic!("a status comment before any request: {line}"));
            assert!(
                *commented < *printed,
                "more status comments than answers: {line}"
            );
            expected.push((*first + *commented, status));
            *commented += 1;
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
# `$HM send` records the status of each answer it prints, as curl does.
hm() {
  local printed="$RUN/printed" status=0
  "$HOOKMESH_BIN" "$@" > "$printed" || status=$?
  cat "$printed"
  if [ "$1" = send ]; then
    grep -E '^[0-9]{3} ' "$printed" | cut -c1-3 >> "$CALLS"
    return 0
  fi
  return "$status"
}
HM=hm
"#;

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
    let binary = env!("CARGO_BIN_EXE_hookmesh");
    let mesh = up::start(
        binary,
        &data_dir,
        &[("HOOKMESH_SIM_RUN_TIME_SECS", "1".to_owned())],
    )
    .await;

    let calls = dir.path().join("calls");
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .current_dir(repository_root())
        .env("HOOKMESH_DATA_DIR", &data_dir)
        .env("GW", &mesh.gateway)
        .env("HOOKMESH_BIN", binary)
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
fn status_comments_belong_to_the_request_before_them() {
    let script = "curl -sS a \\\n  -d x\n# 202 {}\nX=$(curl b)\ncurl c\n# 200 ok\n\
                  $HM send buddy --duplicate\n# 202 first\n# 202 again\n$HM send github\n# 202 x\n";
    assert_eq!(
        expectations(script),
        [(0, 202), (2, 200), (3, 202), (4, 202), (5, 202)]
    );
}
