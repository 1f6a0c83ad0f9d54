//! [`Delivering`]: a response body that says whether it reached the client.
//!
//! hyper takes a body's frames as it writes them and drops the body when it is done with it. A
//! body whose last frame hyper took was handed to the connection whole; a body dropped before
//! that (the connection went away, the request was reset) was not. That is the only delivery
//! signal a server has: TCP tells nobody whether the peer application read the bytes.
//!
//! The report runs synchronously inside hyper's poll, before the last bytes are written to the
//! socket, so it is queued before the client can see the answer and act on it.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// What to run once the body reached the client. Dropping it without running it means the body
/// did not: whatever it captured (a delivery ticket, a scope guard) reports that on its drop.
pub(crate) type OnDelivered = Box<dyn FnOnce() + Send>;

/// A body that runs its [`OnDelivered`] when hyper took its last frame, and drops it otherwise.
pub(crate) struct Delivering {
    inner: Body,
    on_delivered: Option<OnDelivered>,
}

impl Delivering {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Body, on_delivered: OnDelivered) -> Self {
        Delivering {
            inner,
            on_delivered: Some(on_delivered),
        }
    }

    fn done(&mut self) {
        if let Some(on_delivered) = self.on_delivered.take() {
            on_delivered();
        }
    }
}

impl http_body::Body for Delivering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // hyper stops polling once a body says it is at its end, so the frame that ends it
            // is the last one hyper takes.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            Poll::Ready(None) => self.done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Delivering {
    fn drop(&mut self) {
        // An empty body is complete before hyper polls it: it wrote the whole answer.
        if http_body::Body::is_end_stream(&self.inner) {
            self.done();
        }
    }
}
