//! The gateway's connection loop: hyper's HTTP/1.1 server under limits that
//! slow, idle or too many clients cannot outlast (seed 002 asks a 202 to be
//! a promise; a gateway out of file descriptors can promise nothing).
//!
//! - a cap on open connections: beyond it a new connection is answered 503
//!   with `Retry-After` and closed at once, never queued;
//! - a head timeout, an idle keep-alive timeout and protocol errors answered
//!   with the JSON error object: [`stream::GuardedStream`];
//! - a body timeout, answered 408: [`body::DeadlineBody`];
//! - at shutdown, idle connections close at once and requests in flight
//!   finish (each bounded by the timeouts and the publish timeout).

mod body;
mod stream;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

pub use body::BodyTimedOut;
use stream::GuardedStream;

use crate::config::ConnectionLimits;

/// Pause after a failed accept (typically out of file descriptors), so the
/// loop does not spin while the kernel keeps the connection queued.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Seconds a client refused for too many connections is told to wait.
const TOO_MANY_CONNECTIONS_RETRY_AFTER: u64 = 1;

/// Serves `router` on `listener` within `limits` until `shutdown` resolves,
/// then closes idle connections and waits for the requests in flight (each
/// of which answers only after its publish is acknowledged or refused).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let capacity = limits
        .max_connections
        .clamp(1, u32::MAX as usize)
        .min(Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(capacity));
    let (stop, stopping) = watch::channel(false);
    let mut http = http1::Builder::new();
    // The head is timed by GuardedStream (hyper's header timer would also
    // run through idle keep-alive waits, making the two one setting).
    http.header_read_timeout(None)
        .max_header_size(limits.max_header_bytes);
    let too_many = stream::json_response(
        "503 Service Unavailable",
        "too_many_connections",
        "the gateway has as many connections open as it accepts; retry shortly",
        Some(TOO_MANY_CONNECTIONS_RETRY_AFTER),
    );
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "Cannot accept a connection.");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&stream, &too_many);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_timeout;
        let service = TowerToHyperService::new(router.clone().map_request(
            move |request: Request<Incoming>| {
                request.map(|incoming| body::with_deadline(incoming, body_timeout))
            },
        ));
        let connection =
            http.serve_connection(TokioIo::new(GuardedStream::new(stream, &limits)), service);
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "Connection closed.");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it ends.
    let _all_closed = permits.acquire_many(capacity as u32).await;
    Ok(())
}

/// Answers a connection beyond the cap with `answer` and closes it, without
/// waiting on the client: what it has sent is read first, so that closing
/// does not reset the connection before the client reads the 503.
fn refuse(stream: &TcpStream, answer: &[u8]) {
    let mut discard = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut discard) {
            Ok(read) if read > 0 => {}
            _ => break,
        }
    }
    let _ = stream.try_write(answer);
    tracing::debug!("Connection refused: too many open.");
}
