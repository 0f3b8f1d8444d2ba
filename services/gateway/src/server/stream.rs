//! A client connection as hyper sees it, with two duties hyper leaves to
//! its caller:
//!
//! - **time**: a request head must arrive within the head timeout from the
//!   connection's opening or the request's first byte, and a kept-alive
//!   connection may wait for its next request only the idle timeout; past
//!   either, reads fail and hyper closes the connection. The phase is told
//!   from the bytes: a head ends at its blank line, a response write makes
//!   the connection idle.
//! - **JSON errors**: hyper answers a request it cannot parse (400, 414,
//!   431) itself, with an empty body; that answer is replaced by the JSON
//!   error object every other refusal carries.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::config::ConnectionLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head; `newlines` counts the line
    /// ends since the last byte of content, two of them end the head.
    Head { newlines: u8, content: bool },
    /// A request is being read or answered: its body has its own timer and
    /// its answer waits on the broker.
    Request,
    /// Answered; waiting for the next request.
    Idle,
}

/// A TCP connection with head and idle deadlines and JSON protocol errors.
pub(super) struct GuardedStream {
    inner: TcpStream,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
    /// A JSON answer being written in place of hyper's empty one, and the
    /// length of the write it stands for.
    replacement: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    stands_for: usize,
}

impl GuardedStream {
    pub(super) fn new(inner: TcpStream, limits: &ConnectionLimits) -> Self {
        Self {
            inner,
            phase: Phase::Head {
                newlines: 0,
                content: false,
            },
            deadline: Box::pin(tokio::time::sleep(limits.header_timeout)),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
            replacement: None,
        }
    }

    /// Follows the phase through bytes just read.
    fn on_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head {
                newlines: 0,
                content: false,
            };
            let deadline = Instant::now() + self.header_timeout;
            self.deadline.as_mut().reset(deadline);
        }
        let Phase::Head {
            mut newlines,
            mut content,
        } = self.phase
        else {
            return;
        };
        for &byte in bytes {
            match byte {
                b'\n' => {
                    newlines += 1;
                    // Blank lines before a request line are skipped, as
                    // hyper does.
                    if newlines >= 2 && content {
                        self.phase = Phase::Request;
                        return;
                    }
                }
                b'\r' => {}
                _ => {
                    newlines = 0;
                    content = true;
                }
            }
        }
        self.phase = Phase::Head { newlines, content };
    }

    /// After a response (not an interim `100 Continue`) was written.
    fn on_write(&mut self, bytes: &[u8], cx: &mut Context<'_>) {
        if bytes.starts_with(b"HTTP/1.1 1") {
            return;
        }
        if self.phase == Phase::Request {
            self.phase = Phase::Idle;
            let deadline = Instant::now() + self.idle_timeout;
            self.deadline.as_mut().reset(deadline);
            // hyper may not read again until the client sends something,
            // so the timer is armed here, with the connection task's waker:
            // when it fires, hyper's next poll reads, and the read fails.
            let _ = self.deadline.as_mut().poll(cx);
        }
    }

    fn timed(&self) -> bool {
        self.phase != Phase::Request
    }

    /// Writes what is left of the replacement; `Ready(Ok(n))` reports the
    /// write it replaced as done.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(replacement) = self.replacement.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while replacement.written < replacement.bytes.len() {
            let rest = &replacement.bytes[replacement.written..];
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => replacement.written += written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let stands_for = replacement.stands_for;
        self.replacement = None;
        Poll::Ready(Ok(stands_for))
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.timed() && this.deadline.as_mut().poll(cx).is_ready() => {
                let what = if this.phase == Phase::Idle {
                    "idle keep-alive timeout"
                } else {
                    "request head timeout"
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            other => other,
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacement.is_none()
            && let Some(bytes) = protocol_error_as_json(buf, this.max_header_bytes)
        {
            this.replacement = Some(Replacement {
                bytes,
                written: 0,
                stands_for: buf.len(),
            });
        }
        if this.replacement.is_some() {
            return this.poll_replacement(cx);
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(count)) = written {
            this.on_write(&buf[..count], cx);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|buf| !buf.is_empty());
        // A response's head is always the first slice; only a bodiless one
        // can be hyper's own protocol error.
        if this.replacement.is_some()
            || first
                .is_some_and(|head| protocol_error_as_json(head, this.max_header_bytes).is_some())
        {
            let head = first.map_or(&[][..], |head| &head[..]);
            return Pin::new(this).poll_write(cx, head);
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(count)), Some(head)) = (&written, first)
            && *count > 0
        {
            this.on_write(&head[..(*count).min(head.len())], cx);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replacement.is_some() {
            std::task::ready!(this.poll_replacement(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replacement.is_some() {
            std::task::ready!(this.poll_replacement(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The JSON answer standing for `head` when it is hyper's own answer to a
/// request it could not parse: one of its statuses and an empty body.
fn protocol_error_as_json(head: &[u8], max_header_bytes: usize) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..4)?;
    if !head.ends_with(b"\r\n\r\n") || !contains(head, b"\r\ncontent-length: 0\r\n") {
        return None;
    }
    let answer = match status {
        b"400 " => json_response(
            "400 Bad Request",
            "bad_request",
            "the request is not valid HTTP/1.1",
            None,
        ),
        b"414 " => json_response(
            "414 URI Too Long",
            "uri_too_long",
            "the request's target is too long",
            None,
        ),
        b"431 " => json_response(
            "431 Request Header Fields Too Large",
            "request_header_fields_too_large",
            &format!(
                "the request's head exceeds {max_header_bytes} bytes or has more than 100 header fields"
            ),
            None,
        ),
        _ => return None,
    };
    Some(answer)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// A whole HTTP/1.1 answer carrying the JSON error object; the connection
/// closes after it.
pub(super) fn json_response(
    status_line: &str,
    code: &'static str,
    message: &str,
    retry_after_seconds: Option<u64>,
) -> Vec<u8> {
    let body = crate::error::error_json(code, message, retry_after_seconds);
    let retry_after = retry_after_seconds
        .map(|seconds| format!("retry-after: {seconds}\r\n"))
        .unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry_after}connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_protocol_errors_become_json() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 05:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(protocol_error_as_json(hyper_431, 4096).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "request_header_fields_too_large");
        assert!(body["message"].as_str().unwrap().contains("4096"));
    }

    #[test]
    fn answers_with_bodies_pass_unchanged() {
        let handled = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 42\r\n\r\n";
        assert!(protocol_error_as_json(handled, 4096).is_none());
        let accepted = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
        assert!(protocol_error_as_json(accepted, 4096).is_none());
    }
}
