//! A real SMTP server for the notification tests: aiosmtpd
//! (`tests/fixtures/smtp/smtp_server.py`) with STARTTLS required, AUTH
//! over TLS only, and a certificate made by the test. What it sees (each
//! connection, login and message, decoded) is read back as JSON lines.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::pki::{Pki, make_pki};
use crate::{TestDir, eventually, free_port};

/// The user the server accepts.
pub const USER: &str = "hookmesh";
/// Its password.
pub const PASSWORD: &str = "smtp-test-password";

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Holds each message this long before accepting it.
    pub delay: Option<Duration>,
    /// Refuses every recipient (550).
    pub refuse: bool,
}

/// A Python able to import aiosmtpd: `HOOKMESH_TEST_PYTHON`, Debian's
/// (python3-aiosmtpd), or the first `python3` on the path.
fn python() -> String {
    if let Ok(python) = std::env::var("HOOKMESH_TEST_PYTHON") {
        return python;
    }
    for candidate in ["/usr/bin/python3", "python3"] {
        let imports = std::process::Command::new(candidate)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if imports {
            return candidate.to_owned();
        }
    }
    panic!(
        "no python3 can import aiosmtpd: install it (apt-get install python3-aiosmtpd, or \
         pip install aiosmtpd), or point HOOKMESH_TEST_PYTHON at a python that has it"
    )
}

/// The SMTP server of a test.
#[derive(Debug)]
pub struct TestSmtp {
    child: Option<Child>,
    pub port: u16,
    options: SmtpOptions,
    events: PathBuf,
    pki: Pki,
    // Declared last: removed after the server has stopped.
    dir: TestDir,
}

impl TestSmtp {
    pub async fn start(options: SmtpOptions) -> Self {
        let dir = TestDir::new("smtp");
        let pki = make_pki(dir.path());
        let mut server = Self {
            child: None,
            port: free_port(),
            options,
            events: dir.path().join("events.jsonl"),
            pki,
            dir,
        };
        server.resume().await;
        server
    }

    /// `smtp://user:password@127.0.0.1:<port>?tls=starttls`.
    pub fn url(&self, password: &str) -> String {
        format!(
            "smtp://{USER}:{password}@127.0.0.1:{}?tls=starttls",
            self.port
        )
    }

    /// The CA that signed the server's certificate (HOOKMESH_SMTP_CA).
    pub fn ca(&self) -> &Path {
        &self.pki.ca
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server: connections are refused until [`Self::resume`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server (again), on the same port, and waits until it
    /// accepts connections.
    pub async fn resume(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smtp/smtp_server.py");
        let mut command = Command::new(python());
        command
            .arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--events")
            .arg(&self.events)
            .arg("--cert")
            .arg(&self.pki.server_cert)
            .arg("--key")
            .arg(&self.pki.server_key)
            .args(["--user", USER, "--password", PASSWORD]);
        if let Some(delay) = self.options.delay {
            command.args(["--delay", &delay.as_secs_f64().to_string()]);
        }
        if self.options.refuse {
            command.arg("--refuse");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the SMTP server script runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("ready") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(ready, Ok(true)), "the SMTP server did not start");
        self.child = Some(child);
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The events of `kind` (`connect`, `auth`, `refused`, `message`).
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|event| event["kind"] == kind)
            .collect()
    }

    /// The messages received.
    pub fn messages(&self) -> Vec<Value> {
        self.events_of("message")
    }

    /// Waits until at least `count` messages arrived; them all.
    pub async fn wait_for_messages(&self, count: usize, within: Duration) -> Vec<Value> {
        eventually(within, &format!("{count} emails received"), || async {
            let messages = self.messages();
            (messages.len() >= count).then_some(messages)
        })
        .await
    }
}
