//! `hookmesh bench gateway`: how close the gateway comes to the broker.
//!
//! One run, one machine, one broker: raw JetStream publish-and-ack of the
//! webhook body by `--concurrency` publishers (the baseline, measured before
//! and after), then signed provider webhooks of the same body through a child
//! `hookmesh gateway` process over as many keep-alive HTTP connections. The
//! figure of merit is the ratio of the two rates; latencies are taken per
//! request, resident memory and CPU time from `/proc`.
//!
//! A last phase publishes, raw, the message the gateway itself stored (its
//! CloudEvents envelope and trace headers): the broker works harder for it
//! than for the bare webhook, and the ratio against that phase shows what
//! the gateway costs apart from the larger message.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use hookmesh_gateway::trace::TRACEPARENT;
use hookmesh_gateway::verify::StandardWebhooksKeys;
use hookmesh_nats::{STREAMS, ensure_streams};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{ScratchDir, broker, free_port, percentile_ms, rss_mib, stop_broker, wait_ready};
use crate::AnyError;
use crate::cli::{CommonArgs, GatewayBenchArgs};

const PROVIDER: &str = "bench";
/// Where the gateway publishes the bench's delivery events, and where the
/// raw publishers publish too.
const BENCH_SUBJECT: &str = "providers.bench.delivered";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The results of one measured phase.
#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    completed: u64,
    errors: u64,
    seconds: f64,
    rate_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    fn new(name: &'static str, mut latencies_us: Vec<u32>, errors: u64, seconds: f64) -> Self {
        latencies_us.sort_unstable();
        let percentile = |p: f64| percentile_ms(&latencies_us, p, 1000.0);
        Self {
            name,
            completed: latencies_us.len() as u64,
            errors,
            seconds,
            rate_per_second: latencies_us.len() as f64 / seconds,
            p50_ms: percentile(0.50),
            p99_ms: percentile(0.99),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    payload_bytes: usize,
    /// Size of the envelope the gateway stores for one webhook.
    envelope_bytes: usize,
    concurrency: usize,
    phases: Vec<Phase>,
    /// Gateway accepts per second ÷ the mean raw publish rate.
    ratio: f64,
    /// Gateway accepts per second ÷ raw publishes of the gateway's own
    /// messages (envelope and headers): the gateway's cost without the
    /// broker's extra work for the larger message.
    ratio_to_gateway_messages: f64,
    gateway_rss_idle_mib: f64,
    gateway_rss_peak_mib: f64,
    gateway_cpu_us_per_request: f64,
    broker_cpu_us_per_message_raw: Option<f64>,
    broker_cpu_us_per_message_gateway: Option<f64>,
    broker_cpu_us_per_message_raw_gateway_messages: Option<f64>,
    /// With `--traces`: the gateway exporting spans, at each sampling ratio.
    traced: Vec<TracedRun>,
}

/// The gateway with the trace exporter on.
#[derive(Debug, Serialize)]
struct TracedRun {
    sampled: f64,
    rate_per_second: f64,
    p99_ms: f64,
    gateway_cpu_us_per_request: f64,
    exported_bytes_per_request: f64,
}

/// One child gateway under load: its phase, CPU and memory.
struct GatewayRun {
    phase: Phase,
    /// Warm-up requests are counted in CPU time too, so CPU is per request
    /// of the whole phase, warm-up included.
    cpu_us_per_request: f64,
    broker_us_per_message: Option<f64>,
    rss_idle_mib: f64,
    rss_peak_mib: f64,
}

impl GatewayRun {
    /// Starts a `hookmesh gateway` with `env`, loads it for one phase, stops it.
    async fn measure(
        name: &'static str,
        nats_url: &str,
        env: &[(&str, String)],
        broker_pid: Option<u32>,
        body: &Bytes,
        args: &GatewayBenchArgs,
    ) -> Result<Self, AnyError> {
        let address = format!("127.0.0.1:{}", free_port()?);
        let mut child = spawn_gateway(nats_url, &address, env).await?;
        wait_ready("the gateway", &address, &mut child).await?;
        let pid = child.id().ok_or("the gateway has no pid")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_idle_mib = rss_mib(pid);
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    peak.fetch_max((rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let cpu_before = cpu_seconds(pid);
        let (phase, broker_us_per_message) =
            with_broker_cpu(broker_pid, args, http_phase(name, &address, body, args)).await;
        let cpu = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.await;
        let _ = child.kill().await;
        let requests = phase.rate_per_second * (args.duration_secs + args.warmup_secs) as f64;
        Ok(Self {
            cpu_us_per_request: cpu.map_or(0.0, |s| s * 1e6 / requests),
            broker_us_per_message,
            rss_idle_mib,
            rss_peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
            phase,
        })
    }
}

/// An OTLP/HTTP endpoint that takes every export and answers 200 at once,
/// counting the bytes it was sent: the traced phases' collector, so that the
/// gateway pays the whole cost of exporting and nothing else.
async fn otlp_sink() -> std::io::Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let exported = Arc::new(AtomicU64::new(0));
    let counter = exported.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = take_exports(socket, &counter).await;
            });
        }
    });
    Ok((endpoint, exported))
}

/// Answers each request on `socket` with an empty 200 until it closes.
async fn take_exports(mut socket: TcpStream, exported: &AtomicU64) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(at) = find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            let read = socket.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let length = content_length(&buffer[..head_end]).unwrap_or(0);
        while buffer.len() < head_end + length {
            let read = socket.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        exported.fetch_add(length as u64, Ordering::Relaxed);
        buffer.drain(..head_end + length);
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

/// A delivery event of exactly `size` bytes (padded in `metadata.note`).
fn webhook_body(size: usize) -> Vec<u8> {
    let event = |note: &str| {
        serde_json::to_vec(&serde_json::json!({
            "event_type": "delivered",
            "message_id": "msg_5f0c9a7e2b1d4c3a",
            "timestamp": "2025-03-01T09:00:02Z",
            "recipient": "recipient@example.com",
            "campaign_id": "spring-launch-2025",
            "metadata": {"note": note}
        }))
        .expect("JSON")
    };
    let base = event("").len();
    event(&"x".repeat(size.saturating_sub(base)))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// CPU time (user + system) consumed by `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Shared by the workers of a phase: whether to record, whether to stop.
#[derive(Debug, Default)]
struct Control {
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// What one worker saw: latencies of successful calls while measuring, and
/// failures.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

impl Tally {
    fn record(&mut self, control: &Control, started: Instant, ok: bool) {
        if !control.measuring.load(Ordering::Relaxed) || control.stop.load(Ordering::Relaxed) {
            return;
        }
        if ok {
            let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            self.latencies_us.push(micros);
        } else {
            self.errors += 1;
        }
    }
}

/// Runs `worker` on `concurrency` tasks through warm-up and measurement.
async fn drive<W, Fut>(
    name: &'static str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    worker: W,
) -> Phase
where
    W: Fn(usize, Arc<Control>) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let control = Arc::new(Control::default());
    let tasks: Vec<_> = (0..concurrency)
        .map(|index| tokio::spawn(worker(index, control.clone())))
        .collect();
    tokio::time::sleep(warmup).await;
    control.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    control.stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let tally = task.await.unwrap_or_default();
        latencies.extend(tally.latencies_us);
        errors += tally.errors;
    }
    Phase::new(name, latencies, errors, seconds)
}

/// What the raw publishers send: a payload, and the headers besides
/// `Nats-Msg-Id` (which is fresh for every publish).
#[derive(Clone)]
struct RawMessage {
    payload: Bytes,
    headers: async_nats::HeaderMap,
}

async fn raw_phase(
    name: &'static str,
    js: &jetstream::Context,
    message: &RawMessage,
    args: &GatewayBenchArgs,
) -> Phase {
    let run = hookmesh_contracts::hex::random::<4>();
    drive(
        name,
        args.concurrency,
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.duration_secs),
        |index, control| {
            let (js, message, run) = (js.clone(), message.clone(), run.clone());
            async move {
                let mut tally = Tally::default();
                let mut sequence = 0u64;
                while !control.stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let id = format!("raw-{run}-{index}-{sequence}");
                    sequence += 1;
                    let publish = PublishMessage::build()
                        .payload(message.payload.clone())
                        .headers(message.headers.clone())
                        .message_id(id);
                    let ok = match js.send_publish(BENCH_SUBJECT, publish).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    tally.record(&control, started, ok);
                }
                tally
            }
        },
    )
    .await
}

/// One keep-alive HTTP/1.1 connection, spoken by hand: the load generator
/// shares the machine with what it measures, so it does no more than write a
/// request and read the status line and body of the answer.
pub(super) struct HttpConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    pub(super) async fn open(address: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` (complete, with body) and returns the status code.
    pub(super) async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(request).await?;
        self.buffer.clear();
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = &self.buffer[..end];
                let status = std::str::from_utf8(head.get(9..12).unwrap_or_default())
                    .ok()
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(0);
                let length = content_length(head).unwrap_or(0);
                while self.buffer.len() < end + 4 + length {
                    if self.read_more().await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                return Ok(status);
            }
            if self.read_more().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt as _;
        let filled = self.buffer.len();
        self.buffer.resize(filled + 4096, 0);
        let read = self.stream.read(&mut self.buffer[filled..]).await?;
        self.buffer.truncate(filled + read);
        Ok(read)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

async fn http_phase(
    name: &'static str,
    address: &str,
    body: &Bytes,
    args: &GatewayBenchArgs,
) -> Phase {
    let keys = StandardWebhooksKeys::parse(SECRET).expect("the bench secret parses");
    let run = hookmesh_contracts::hex::random::<4>();
    drive(
        name,
        args.concurrency,
        Duration::from_secs(args.warmup_secs),
        Duration::from_secs(args.duration_secs),
        |index, control| {
            let (keys, body, run, address) =
                (keys.clone(), body.clone(), run.clone(), address.to_owned());
            let pace = args.rate.map(|rate| {
                Duration::from_secs_f64(args.concurrency as f64 / f64::from(rate.max(1)))
            });
            async move {
                use std::io::Write as _;
                let mut tally = Tally::default();
                let mut ticks = pace.map(|period| {
                    let mut ticks = tokio::time::interval(period);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    ticks
                });
                let mut connection = None;
                let mut request = Vec::with_capacity(body.len() + 512);
                let mut sequence = 0u64;
                while !control.stop.load(Ordering::Relaxed) {
                    if let Some(ticks) = ticks.as_mut() {
                        ticks.tick().await;
                    }
                    let started = Instant::now();
                    let id = format!("msg_{run}_{index}_{sequence}");
                    sequence += 1;
                    let timestamp = unix_now();
                    request.clear();
                    let _ = write!(
                        request,
                        "POST /webhooks/providers/{PROVIDER} HTTP/1.1\r\nhost: {address}\r\n\
                         content-type: application/json\r\ncontent-length: {}\r\n\
                         webhook-id: {id}\r\nwebhook-timestamp: {timestamp}\r\n\
                         webhook-signature: {}\r\n\r\n",
                        body.len(),
                        keys.sign(&id, timestamp, &body)
                    );
                    request.extend_from_slice(&body);
                    if connection.is_none() {
                        connection = HttpConnection::open(&address).await.ok();
                    }
                    let ok = match connection.as_mut() {
                        Some(open) => matches!(open.exchange(&request).await, Ok(202)),
                        None => false,
                    };
                    if !ok {
                        connection = None;
                    }
                    tally.record(&control, started, ok);
                }
                tally
            }
        },
    )
    .await
}

async fn spawn_gateway(
    nats_url: &str,
    address: &str,
    env: &[(&str, String)],
) -> Result<Child, AnyError> {
    let mut command = Command::new(std::env::current_exe()?);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_")
            || variable.starts_with("OTEL_")
            || variable == "NATS_URL"
        {
            command.env_remove(variable);
        }
    }
    Ok(command
        .arg("gateway")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("NATS_URL", nats_url)
        .env("HOOKMESH_HTTP_ADDR", address)
        .env("HOOKMESH_SECRET_PROVIDERS", SECRET)
        .env("HOOKMESH_PROVIDERS", PROVIDER)
        .env("HOOKMESH_RATE_LIMITS", "providers=0")
        .env("HOOKMESH_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?)
}

/// Runs `phase` and returns it with the broker's CPU time per message it
/// carried (warm-up included in both, as CPU time counts it).
async fn with_broker_cpu(
    broker_pid: Option<u32>,
    args: &GatewayBenchArgs,
    phase: impl std::future::Future<Output = Phase>,
) -> (Phase, Option<f64>) {
    let before = broker_pid.and_then(cpu_seconds);
    let phase = phase.await;
    let spent = broker_pid
        .and_then(cpu_seconds)
        .zip(before)
        .map(|(a, b)| a - b);
    let messages = phase.rate_per_second * (args.duration_secs + args.warmup_secs) as f64;
    (phase, spent.map(|seconds| seconds * 1e6 / messages))
}

/// The last message the gateway stored for the bench: its envelope and
/// headers, which the raw publishers then send as they are.
async fn gateway_message(js: &jetstream::Context) -> Result<RawMessage, AnyError> {
    let stream = js.stream_by_subject(BENCH_SUBJECT).await?;
    let stored = js
        .get_stream(&stream)
        .await?
        .get_last_raw_message_by_subject(BENCH_SUBJECT)
        .await?;
    if stored.headers.get(TRACEPARENT).is_none() {
        return Err("the last bench message was not published by the gateway".into());
    }
    Ok(RawMessage {
        payload: stored.payload,
        headers: stored.headers,
    })
}

pub async fn run(args: GatewayBenchArgs, common: CommonArgs) -> Result<(), AnyError> {
    let scratch = ScratchDir::new("gateway")?;
    let (broker, nats) = broker(&scratch, &common).await?;
    let nats_url = nats.url.clone();
    let broker_pid = broker.as_ref().and_then(|b| broker_pid(b.dir()));
    let connection = nats.connect("hookmesh-bench").await?;
    let js = jetstream::new(connection.client.clone());
    ensure_streams(&js, STREAMS, common.stream_replicas).await?;
    let body = Bytes::from(webhook_body(args.payload_bytes));
    let webhook = RawMessage {
        payload: body.clone(),
        headers: async_nats::HeaderMap::new(),
    };
    eprintln!(
        "hookmesh bench gateway: {} B signed webhooks, {} connections, {} s per phase (+{} s warm-up)",
        body.len(),
        args.concurrency,
        args.duration_secs,
        args.warmup_secs
    );

    let (raw_before, broker_us_raw) = with_broker_cpu(
        broker_pid,
        &args,
        raw_phase("raw JetStream (before)", &js, &webhook, &args),
    )
    .await;

    let gateway = GatewayRun::measure(
        "gateway (HTTP 202)",
        &nats_url,
        &[],
        broker_pid,
        &body,
        &args,
    )
    .await?;
    let (through_gateway, broker_us_gateway) = (gateway.phase, gateway.broker_us_per_message);

    let mut phases_traced = Vec::new();
    let enveloped = gateway_message(&js).await?;
    let raw_after = raw_phase("raw JetStream (after)", &js, &webhook, &args).await;
    let enveloped_bytes = enveloped.payload.len();
    let (raw_enveloped, broker_us_enveloped) = with_broker_cpu(
        broker_pid,
        &args,
        raw_phase("raw, gateway's messages", &js, &enveloped, &args),
    )
    .await;

    let raw_rate = (raw_before.rate_per_second + raw_after.rate_per_second) / 2.0;
    // The same gateway exporting a span per request and per publish to an
    // OTLP endpoint, keeping every trace, then one in a hundred.
    let mut traced = Vec::new();
    if args.traces {
        let (endpoint, exported) = otlp_sink().await?;
        for (name, ratio) in [
            ("gateway, traces 100%", "1.0"),
            ("gateway, traces 1%", "0.01"),
        ] {
            let env = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", ratio.to_owned()),
            ];
            let before = exported.load(Ordering::Relaxed);
            let run = GatewayRun::measure(name, &nats_url, &env, broker_pid, &body, &args).await?;
            let bytes = exported.load(Ordering::Relaxed) - before;
            let requests =
                run.phase.rate_per_second * (args.duration_secs + args.warmup_secs) as f64;
            traced.push(TracedRun {
                sampled: ratio.parse().unwrap_or(0.0),
                rate_per_second: run.phase.rate_per_second,
                p99_ms: run.phase.p99_ms,
                gateway_cpu_us_per_request: run.cpu_us_per_request,
                exported_bytes_per_request: bytes as f64 / requests.max(1.0),
            });
            phases_traced.push(run.phase);
        }
    }
    let report = Report {
        payload_bytes: body.len(),
        envelope_bytes: enveloped_bytes,
        concurrency: args.concurrency,
        ratio: through_gateway.rate_per_second / raw_rate,
        ratio_to_gateway_messages: through_gateway.rate_per_second / raw_enveloped.rate_per_second,
        gateway_rss_idle_mib: gateway.rss_idle_mib,
        gateway_rss_peak_mib: gateway.rss_peak_mib,
        gateway_cpu_us_per_request: gateway.cpu_us_per_request,
        broker_cpu_us_per_message_raw: broker_us_raw,
        broker_cpu_us_per_message_gateway: broker_us_gateway,
        broker_cpu_us_per_message_raw_gateway_messages: broker_us_enveloped,
        phases: [raw_before, through_gateway, raw_after, raw_enveloped]
            .into_iter()
            .chain(phases_traced)
            .collect(),
        traced,
    };
    print_report(&report);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    stop_broker(&connection.client, broker).await?;
    drop(scratch);
    Ok(())
}

fn broker_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("nats-server.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn print_report(report: &Report) {
    println!(
        "\n{:<26} {:>12} {:>9} {:>9} {:>8}",
        "phase", "per second", "p50 ms", "p99 ms", "errors"
    );
    for phase in &report.phases {
        println!(
            "{:<26} {:>12.0} {:>9.2} {:>9.2} {:>8}",
            phase.name, phase.rate_per_second, phase.p50_ms, phase.p99_ms, phase.errors
        );
    }
    let gateway = &report.phases[1];
    println!(
        "\nratio gateway ÷ raw JetStream: {:.3}   (bar: at least 0.55)",
        report.ratio
    );
    println!(
        "ratio gateway ÷ raw JetStream of the gateway's own messages ({} B envelope + trace headers): {:.3}",
        report.envelope_bytes, report.ratio_to_gateway_messages
    );
    println!(
        "gateway p99: {:.2} ms            (bar: at most 10 ms)",
        gateway.p99_ms
    );
    println!(
        "gateway resident memory: {:.1} MiB at rest, {:.1} MiB peak under load",
        report.gateway_rss_idle_mib, report.gateway_rss_peak_mib
    );
    let micros = |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    println!(
        "CPU: gateway {:.1} µs per request; broker {} µs per raw publish, {} µs per gateway request, {} µs per raw publish of a gateway message",
        report.gateway_cpu_us_per_request,
        micros(report.broker_cpu_us_per_message_raw),
        micros(report.broker_cpu_us_per_message_gateway),
        micros(report.broker_cpu_us_per_message_raw_gateway_messages),
    );
    for traced in &report.traced {
        println!(
            "traces {:>5.1}% kept: {:.0}/s ({:.3} of untraced), p99 {:.2} ms, gateway {:.1} µs per request (+{:.1}), {:.0} B exported per request",
            traced.sampled * 100.0,
            traced.rate_per_second,
            traced.rate_per_second / gateway.rate_per_second,
            traced.p99_ms,
            traced.gateway_cpu_us_per_request,
            traced.gateway_cpu_us_per_request - report.gateway_cpu_us_per_request,
            traced.exported_bytes_per_request,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_bodies_have_the_requested_size_and_are_valid_events() {
        for size in [400, 600, 2048] {
            let body = webhook_body(size);
            assert_eq!(body.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            hookmesh_contracts::delivery::DeliveryWebhookBody::parse(&value).unwrap();
        }
    }

    #[test]
    fn percentiles_come_from_sorted_latencies() {
        let phase = Phase::new("x", (1..=100).rev().map(|ms| ms * 1000).collect(), 0, 1.0);
        assert_eq!(phase.completed, 100);
        assert_eq!(phase.p50_ms, 51.0);
        assert_eq!(phase.p99_ms, 100.0);
    }
}
