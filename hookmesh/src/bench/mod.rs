//! `hookmesh bench`: performance figures anyone can rerun, each reported
//! against a baseline or under a load measured in the same run.

mod batch;
mod csr;
mod gateway;

use std::path::PathBuf;

use hookmesh_nats::server::{self, EmbeddedNats, EmbeddedOptions};

use hookmesh_nats::NatsEndpoint;

use crate::AnyError;
use crate::cli::{BenchArgs, BenchTarget, CommonArgs};

pub async fn run(args: BenchArgs, common: CommonArgs) -> Result<(), AnyError> {
    match args.target {
        BenchTarget::Gateway(args) => gateway::run(args, common).await,
        BenchTarget::Csr(args) => csr::run(args, common).await,
        BenchTarget::Batch(args) => batch::run(args, common).await,
    }
}

/// A scratch directory removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("hookmesh-bench-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The broker to measure against: NATS_URL when set, else an embedded one
/// in `scratch` (and its URL).
async fn broker(
    scratch: &ScratchDir,
    common: &CommonArgs,
) -> Result<(Option<EmbeddedNats>, NatsEndpoint), AnyError> {
    if let Some(url) = &common.nats_url {
        return Ok((None, common.nats_at(url.clone())));
    }
    let binary = server::find()?;
    let options = EmbeddedOptions {
        dir: scratch.0.join("nats"),
        port: None,
    };
    let embedded = EmbeddedNats::start(&binary, &options).await?;
    let nats = NatsEndpoint::plain(embedded.url());
    Ok((Some(embedded), nats))
}

/// Closes the benchmark's broker connection, then stops the embedded broker
/// if there is one: in that order, stopping it is not logged as a lost
/// connection.
async fn stop_broker(
    client: &async_nats::Client,
    broker: Option<EmbeddedNats>,
) -> Result<(), AnyError> {
    let _ = client.drain().await;
    if let Some(broker) = broker {
        broker.stop().await?;
    }
    Ok(())
}

/// The `p` quantile of sorted `values`, divided by `per_ms` (values in
/// units of 1/`per_ms` milliseconds).
fn percentile_ms<T: Copy + Into<f64>>(sorted: &[T], p: f64, per_ms: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[index].into() / per_ms
}

/// A free loopback port.
fn free_port() -> Result<u16, AnyError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the child `what` answers 200 on `address`'s `/readyz`.
async fn wait_ready(
    what: &str,
    address: &str,
    child: &mut tokio::process::Child,
) -> Result<(), AnyError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let request = format!("GET /readyz HTTP/1.1\r\nhost: {address}\r\n\r\n");
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited during start-up ({status})").into());
        }
        if let Ok(mut connection) = gateway::HttpConnection::open(address).await
            && let Ok(200) = connection.exchange(request.as_bytes()).await
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(format!("{what} did not become ready within 30 s").into())
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
