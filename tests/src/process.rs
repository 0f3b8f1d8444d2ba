//! `hookmesh` services as separate processes, as a deployment runs them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A `hookmesh` service process, its log in a file.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    child: Child,
    /// Where `/readyz` answers.
    ready_url: String,
    /// Its stderr: the service's log.
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Runs `binary command` with `env` (and none of the caller's hookmesh,
    /// NATS or database variables); `/readyz` answers at `ready_url`.
    pub async fn start(
        binary: &str,
        name: &str,
        command: &str,
        env: &[(&str, String)],
        ready_url: String,
        logs: &Path,
    ) -> Self {
        Self::spawn(Command::new(binary), name, command, env, ready_url, logs)
    }

    /// As [`start`](Self::start), with the process's open-file limit (soft
    /// and hard) set to `open_files` by prlimit(1), which then runs it.
    pub async fn start_with_open_files(
        open_files: u64,
        binary: &str,
        name: &str,
        command: &str,
        env: &[(&str, String)],
        ready_url: String,
        logs: &Path,
    ) -> Self {
        let mut process = Command::new("prlimit");
        process
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg("--")
            .arg(binary);
        Self::spawn(process, name, command, env, ready_url, logs)
    }

    fn spawn(
        mut process: Command,
        name: &str,
        command: &str,
        env: &[(&str, String)],
        ready_url: String,
        logs: &Path,
    ) -> Self {
        isolate(&mut process);
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = process
            .arg(command)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HOOKMESH_LOG", "info,async_nats=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the hookmesh binary runs");
        Self {
            name: name.to_owned(),
            child,
            ready_url,
            log: log_path,
        }
    }

    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(&self.ready_url).send().await
                && response.status().is_success()
            {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "{} not ready ({exited:?}); its log ends:\n{}",
                    self.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its log so far.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id (prlimit runs the service in its own process).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn kill(mut self) {
        self.child.kill().await.expect("the service is killed");
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// Every service a test runs is checked, whatever the test is about: none of
/// the test secrets may have reached its log.
impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            crate::assert_no_secret(
                &format!("the log of {}", self.name),
                &self.logged(),
                crate::secrets::ALL,
            );
        }
    }
}

/// Runs `command` with none of the caller's hookmesh, NATS, OpenTelemetry,
/// database or Trading API variables: a test's process sees only what the
/// test gives it.
pub fn isolate(command: &mut Command) {
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_")
            || variable.starts_with("NATS_")
            || variable.starts_with("OTEL_")
            || variable == "DATABASE_URL"
            || variable.starts_with("TRADING_API")
        {
            command.env_remove(variable);
        }
    }
}
