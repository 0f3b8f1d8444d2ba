//! Slow, idle and too many clients cannot starve the gateway: against a
//! gateway process whose open-file limit is below the number of attacking
//! connections, 2,000 of them (headers sent byte by byte, bodies trickled,
//! kept-alive connections left idle) are each closed within its timeout or
//! refused at once with a JSON 503, while a producer's webhooks keep being
//! accepted. Protocol errors answer the JSON error object, and a stopping
//! gateway closes its idle connections at once.

use std::sync::Arc;
use std::time::Duration;

use hookmesh_tests::mesh::resident_kib;
use hookmesh_tests::process::ServiceProcess;
use hookmesh_tests::{TestDir, TestNats, free_port, secrets, sign, unix_now};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The gateway's open-file limit in the attack test: below the attack.
const OPEN_FILES: u64 = 1024;
const ATTACKERS: usize = 2000;
/// The gateway's head, body and idle timeouts in the attack test.
const TIMEOUT_SECS: u64 = 2;
/// Scheduling slack on a shared 2-core machine, on top of a timeout.
const SLACK: Duration = Duration::from_secs(6);

struct Gateway {
    process: ServiceProcess,
    address: String,
    _nats: TestNats,
    _dir: TestDir,
}

async fn start_gateway(open_files: Option<u64>, timeout_secs: u64) -> Gateway {
    let nats = TestNats::start().await;
    let dir = TestDir::new("slow-clients");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let env = [
        ("NATS_URL", nats.url().to_owned()),
        ("HOOKMESH_HTTP_ADDR", address.clone()),
        ("HOOKMESH_SECRET_BUDDY", secrets::BUDDY.to_owned()),
        ("HOOKMESH_RATE_LIMITS", "buddy=0".to_owned()),
        (
            "HOOKMESH_HTTP_HEADER_TIMEOUT_SECS",
            timeout_secs.to_string(),
        ),
        ("HOOKMESH_HTTP_BODY_TIMEOUT_SECS", timeout_secs.to_string()),
        ("HOOKMESH_HTTP_IDLE_TIMEOUT_SECS", timeout_secs.to_string()),
        ("HOOKMESH_HTTP_MAX_HEADER_BYTES", "8192".to_owned()),
    ];
    let binary = env!("CARGO_BIN_EXE_hookmesh");
    let ready = format!("http://{address}/readyz");
    let mut process = match open_files {
        Some(limit) => {
            ServiceProcess::start_with_open_files(
                limit,
                binary,
                "gateway",
                "gateway",
                &env,
                ready,
                dir.path(),
            )
            .await
        }
        None => ServiceProcess::start(binary, "gateway", "gateway", &env, ready, dir.path()).await,
    };
    process
        .wait_ready(&hookmesh_runtime::http::client_builder().build().unwrap())
        .await;
    Gateway {
        process,
        address,
        _nats: nats,
        _dir: dir,
    }
}

/// Open file descriptors and resident memory (KiB) of process `pid`.
fn usage(pid: u32) -> (usize, u64) {
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    (descriptors, resident_kib(pid))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// Sends its request head one byte a second, never finishing it.
    Slowloris,
    /// Sends a whole head, then its body one byte a second.
    SlowBody,
    /// Makes one request on a kept-alive connection, then says nothing.
    Idle,
}

#[derive(Debug)]
struct Outcome {
    attack: Attack,
    /// Answered 503 (too many connections) at once.
    refused: bool,
    /// From connecting (for an idle one, from its answer) to the server
    /// closing the connection; `None`: still open at the end of the test.
    closed_after: Option<Duration>,
    /// What the server said before closing.
    answer: String,
}

const SLOW_HEAD: &[u8] =
    b"POST /webhooks/buddy-events HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

async fn attack(address: String, attack: Attack, give_up: Duration) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        attack,
        refused: false,
        closed_after: None,
        answer: String::new(),
    };
    let Ok(mut stream) = TcpStream::connect(&address).await else {
        // Refused by the kernel: never holds a descriptor of the gateway.
        outcome.closed_after = Some(started.elapsed());
        return outcome;
    };
    let mut started = Instant::now();
    let mut trickle: Vec<u8> = match attack {
        Attack::Slowloris => SLOW_HEAD.to_vec(),
        Attack::SlowBody => {
            let head = b"POST /webhooks/buddy-events HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
            let _ = stream.write_all(head).await;
            vec![b' '; 1000]
        }
        Attack::Idle => {
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
                .await;
            Vec::new()
        }
    };
    trickle.reverse();
    let mut buffer = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    outcome.closed_after = Some(started.elapsed());
                    break;
                }
                Ok(read) => {
                    // An idle connection's timeout runs from its answer.
                    if attack == Attack::Idle && outcome.answer.is_empty() {
                        started = Instant::now();
                    }
                    outcome.answer.push_str(&String::from_utf8_lossy(&buffer[..read]));
                }
            },
            _ = tick.tick() => {
                if let Some(byte) = trickle.pop()
                    && stream.write_all(&[byte]).await.is_err()
                {
                    outcome.closed_after = Some(started.elapsed());
                    break;
                }
            }
        }
    }
    outcome.refused = outcome.answer.starts_with("HTTP/1.1 503");
    outcome
}

/// One signed check-in, retried like a producer until 202; returns how long
/// that took and every status seen.
async fn produce(http: &reqwest::Client, gateway: &str, n: usize) -> (Duration, Vec<u16>) {
    let body = serde_json::to_vec(&json!({
        "id": format!("evt-slow-{n}"),
        "type": "buddy.checkin.completed",
        "timestamp": "2025-11-14T10:30:00Z",
        "data": {
            "tenant_id": "acme", "program_id": "slow", "match_id": "m-1",
            "checkin_id": format!("c-{n}"), "buddy_id": "p-1", "newcomer_id": "p-2",
            "duration_minutes": 30, "channel": "video"
        }
    }))
    .unwrap();
    let started = Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        let answer = http
            .post(format!("http://{gateway}/webhooks/buddy-events"))
            .header("content-type", "application/json")
            .header("X-Webhook-Id", format!("wh-slow-{n}"))
            .header("X-Webhook-Timestamp", unix_now().to_string())
            .header(
                "X-Webhook-Signature",
                sign::sha256_header(secrets::BUDDY, &body),
            )
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                statuses.push(status);
                if status == 202 {
                    return (started.elapsed(), statuses);
                }
                assert_eq!(status, 503, "{:?}", response.text().await);
                assert!(response.headers().contains_key("retry-after"));
                let error: Value = response.json().await.expect("a JSON error object");
                assert_eq!(error["error"], "too_many_connections");
            }
            // A connection reset while the gateway sheds load.
            Err(_) => statuses.push(0),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("webhook {n} was not accepted within 30 s: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_while_producers_are_answered() {
    let gateway = start_gateway(Some(OPEN_FILES), TIMEOUT_SECS).await;
    let pid = gateway.process.pid().expect("the gateway runs");
    let (baseline_fds, baseline_rss) = usage(pid);

    // Most a connection can last: its head, then its body, each in time.
    let give_up = Duration::from_secs(2 * TIMEOUT_SECS) + SLACK;
    let peak = Arc::new(Mutex::new((0usize, 0u64)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let (fds, rss) = usage(pid);
                let mut peak = peak.lock().await;
                *peak = (peak.0.max(fds), peak.1.max(rss));
                drop(peak);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut attackers = tokio::task::JoinSet::new();
    for n in 0..ATTACKERS {
        let kind = match n % 3 {
            0 => Attack::Slowloris,
            1 => Attack::SlowBody,
            _ => Attack::Idle,
        };
        attackers.spawn(attack(gateway.address.clone(), kind, give_up));
        // In waves, so that the kernel's accept queue (1,024) does not
        // overflow: an overflowed handshake completes seconds later, by
        // retransmission, and its timeouts would start late.
        if n % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A producer keeps sending while the attack goes on.
    let http = hookmesh_runtime::http::client_builder().build().unwrap();
    let mut producer_waits = Vec::new();
    let attack_started = Instant::now();
    let mut n = 0;
    while attack_started.elapsed() < Duration::from_secs(2 * TIMEOUT_SECS + 2) {
        let (waited, statuses) = produce(&http, &gateway.address, n).await;
        producer_waits.push((waited, statuses));
        n += 1;
    }

    let mut outcomes = Vec::new();
    while let Some(outcome) = attackers.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    sampler.abort();
    let still_open: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.closed_after.is_none())
        .collect();
    let refused = outcomes.iter().filter(|o| o.refused).count();
    let timed_out_bodies = outcomes
        .iter()
        .filter(|o| o.attack == Attack::SlowBody && o.answer.starts_with("HTTP/1.1 408"))
        .count();
    let slowest = outcomes
        .iter()
        .filter_map(|o| o.closed_after)
        .max()
        .unwrap_or_default();
    let (after_fds, after_rss) = eventually_settled(pid, baseline_fds).await;
    let (peak_fds, peak_rss) = *peak.lock().await;
    eprintln!(
        "slow clients: {ATTACKERS} attacking connections ({refused} refused 503 at once, \
         {timed_out_bodies} slow bodies answered 408), {} still open after the timeouts, \
         slowest closed after {slowest:?}; gateway descriptors {baseline_fds} → peak {peak_fds} → {after_fds}, \
         RSS {baseline_rss} KiB → peak {peak_rss} KiB → {after_rss} KiB; producer: {} webhooks accepted, \
         longest wait {:?}",
        still_open.len(),
        producer_waits.len(),
        producer_waits
            .iter()
            .map(|(w, _)| *w)
            .max()
            .unwrap_or_default(),
    );
    assert!(
        still_open.is_empty(),
        "{} connections still open, e.g. {:?}",
        still_open.len(),
        still_open.first()
    );
    for outcome in &outcomes {
        if outcome.refused {
            let body = outcome.answer.split("\r\n\r\n").nth(1).unwrap_or_default();
            let error: Value = serde_json::from_str(body).expect("the 503 is JSON");
            assert_eq!(error["error"], "too_many_connections");
            continue;
        }
        // Each attack meets one timeout: the head's, the body's or the idle one.
        let timeout = Duration::from_secs(TIMEOUT_SECS);
        let closed_after = outcome.closed_after.unwrap();
        assert!(
            closed_after <= timeout + SLACK,
            "{outcome:?} outlasted its timeout"
        );
        if outcome.attack == Attack::SlowBody && !outcome.answer.is_empty() {
            assert!(
                outcome.answer.starts_with("HTTP/1.1 408"),
                "{}",
                outcome.answer
            );
            assert!(outcome.answer.contains("\"error\":\"body_timeout\""));
        }
    }
    assert!(
        peak_fds < OPEN_FILES as usize,
        "the gateway never ran out of descriptors"
    );
    assert!(
        after_fds <= baseline_fds + 2,
        "descriptors back to {baseline_fds}"
    );
    assert!(producer_waits.len() >= 3);
}

/// The gateway's descriptors and RSS once it has closed what it will close.
async fn eventually_settled(pid: u32, baseline_fds: usize) -> (usize, u64) {
    let deadline = Instant::now() + SLACK;
    loop {
        let (fds, rss) = usage(pid);
        if fds <= baseline_fds + 2 || Instant::now() > deadline {
            return (fds, rss);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `request` on a fresh connection and reads the answer to the end.
async fn raw(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn json_body(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_answer_the_json_error_object_and_stopping_closes_idle_connections() {
    let gateway = start_gateway(None, 30).await;

    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: gateway\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let answer = raw(&gateway.address, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(
        json_body(&answer)["error"],
        "request_header_fields_too_large"
    );

    let answer = raw(&gateway.address, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(json_body(&answer)["error"], "bad_request");

    // Keep-alive still serves several requests on one connection.
    let mut kept = TcpStream::connect(&gateway.address).await.unwrap();
    for _ in 0..3 {
        kept.write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 4096];
        let read = kept.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200 "));
    }

    // Idle connections do not hold up a stop, far shorter than the 30 s
    // idle timeout.
    let idle: Vec<TcpStream> = {
        let mut idle = vec![kept];
        for _ in 0..20 {
            idle.push(TcpStream::connect(&gateway.address).await.unwrap());
        }
        idle
    };
    let stopping = Instant::now();
    gateway.process.stop().await;
    let stopped_after = stopping.elapsed();
    assert!(
        stopped_after < Duration::from_secs(10),
        "stopping took {stopped_after:?}"
    );
    drop(idle);
}
