//! A request body that fails once it has taken longer than the body
//! timeout to arrive, so that a trickled body cannot hold a connection.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// The error a body yields when its time is up; the routes answer it 408.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub Duration);

/// `incoming`, failing after `timeout` unless complete; a request without a
/// body gets no timer.
pub(super) fn with_deadline(incoming: Incoming, timeout: Duration) -> Body {
    use http_body::Body as _;
    if incoming.is_end_stream() {
        return Body::new(incoming);
    }
    Body::new(DeadlineBody {
        incoming,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        timeout,
    })
}

struct DeadlineBody {
    incoming: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
