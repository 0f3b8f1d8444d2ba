//! `hookmesh up` as a test starts it: the real binary on a data directory
//! and a port, read until its ready line, stopped with SIGTERM — also when
//! the test fails, so that its broker and services stop with it and
//! nothing is left behind.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A running `hookmesh up`.
#[derive(Debug)]
pub struct Up {
    pub child: Child,
    pub data_dir: std::path::PathBuf,
    pub gateway: String,
    /// The dashboard's URL, as the ready line gives it.
    pub dashboard: String,
    pub broker: String,
    /// Every line logged on stderr so far.
    pub logged: Arc<Mutex<Vec<String>>>,
}

/// `hookmesh up` (the binary at `binary`) on `data_dir` and a free port,
/// with `env` and nothing else of the caller's configuration.
pub async fn start(binary: &str, data_dir: &Path, env: &[(&str, String)]) -> Up {
    start_up_with(Path::new(binary), data_dir, crate::free_port(), |command| {
        command.envs(env.iter().map(|(name, value)| (*name, value.as_str())));
    })
    .await
}

/// `hookmesh up` (the binary at `binary`) on `data_dir`, without the
/// caller's configuration ([`isolate`](crate::process::isolate)), with
/// whatever `configure` adds.
pub async fn start_up_with(
    binary: &Path,
    data_dir: &Path,
    http_port: u16,
    configure: impl FnOnce(&mut Command),
) -> Up {
    let mut command = Command::new(binary);
    crate::process::isolate(&mut command);
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
        dashboard: word_after("dashboard"),
        broker: word_after("(broker"),
        child,
        logged,
    }
}

pub async fn stop_gracefully(mut up: Up) {
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
    let mut secrets = crate::generated_secrets(&up.data_dir);
    secrets.extend(crate::secrets::ALL.iter().map(|s| s.to_string()));
    crate::assert_no_secret("the log of hookmesh up", &logged, &secrets);
}

impl Drop for Up {
    /// A test that ends without [`stop_gracefully`] (it failed) still stops
    /// the mesh the way an operator would, waiting for it a while.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.start_kill();
    }
}

/// A secret `hookmesh up` generated into the data directory.
pub fn local_secret(data_dir: &Path, variable: &str) -> String {
    let text = std::fs::read_to_string(data_dir.join("secrets.env")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{variable}=")))
        .unwrap_or_else(|| panic!("{variable} in secrets.env"))
        .to_owned()
}
