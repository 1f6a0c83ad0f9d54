//! [`Delivering`]: a response body that says whether it reached the client.
//!
//! hyper takes a body's frames as it writes them and drops the body when it is done with it. A
//! body whose last frame hyper took was handed to the connection whole; a body dropped before
//! that (the connection went away, the request was reset) was not. That is the only delivery
//! signal a server has: TCP tells nobody whether the peer application read the bytes.
//!
//! The report runs synchronously inside hyper's poll, before the last bytes are written to the
//! socket, so it is queued before the client can see the answer and act on it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// What to run once the body reached the client. Dropping it without running it means the body
/// did not: whatever it captured (a delivery ticket, a scope guard) reports that on its drop.
pub(crate) type OnDelivered = Box<dyn FnOnce() + Send>;

/// A body that runs its [`OnDelivered`] when hyper took its last frame, and drops it otherwise.
pub(crate) struct Delivering {
    inner: Body,
    on_delivered: Option<OnDelivered>,
    /// An event stream (MCP's answer to a POST): the frame that carries the JSON-RPC answer
    /// counts as the last one, since the client acts on it before the stream's end arrives.
    answers: bool,
}

impl Delivering {
    /// `response` with its body wrapped: for an event stream, the frame with the JSON-RPC
    /// answer counts as the last one; for any other body, its last frame.
    pub(crate) fn wrap(response: Response, on_delivered: OnDelivered) -> Response {
        let answers = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        response.map(|inner| {
            Body::new(Delivering {
                inner,
                on_delivered: Some(on_delivered),
                answers,
            })
        })
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
            Poll::Ready(Some(Ok(frame)))
                if self.answers && frame.data_ref().is_some_and(|d| carries_answer(d)) =>
            {
                self.done()
            }
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

/// Whether an event-stream frame carries a JSON-RPC answer (an `id` with a `result` or an
/// `error`), not a notification.
fn carries_answer(frame: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(frame) else {
        return false;
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data.trim()).ok())
        .any(|message| {
            message.get("id").is_some()
                && (message.get("result").is_some() || message.get("error").is_some())
        })
}

impl Drop for Delivering {
    fn drop(&mut self) {
        // An empty body is complete before hyper polls it: it wrote the whole answer.
        if http_body::Body::is_end_stream(&self.inner) {
            self.done();
        }
    }
}

/// The header with which a node answering a forwarded request names the delivery the
/// forwarding node must report (see [`Parked`]).
pub(crate) const DELIVERY_HEADER: HeaderName = HeaderName::from_static("x-hark-delivery");

/// How long a forwarded answer's delivery report is awaited before it counts as lost.
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// Deliveries of answers to forwarded requests, waiting for the forwarding node's report.
///
/// An answer to a request that another node forwarded reaches its client only through that
/// node: hyper taking the body whole here says nothing. So its [`OnDelivered`] waits here under
/// an id sent back in [`DELIVERY_HEADER`], until the forwarding node reports that its client
/// took the body whole (it runs) or not (it is dropped: lost). A report that never comes
/// (the forwarding node died) counts as lost after [`PARK_TIMEOUT`]: the answer's messages come
/// again, as the hand-over rule wants.
///
/// The report follows the delivery, so the client may already act again when it is on its way:
/// a participant's next request first waits (at most [`REPORT_WAIT`]) until none of its answers
/// is parked, so that it is not held for messages it did receive.
#[derive(Default)]
pub(crate) struct Parked {
    next: AtomicU64,
    waiting: Mutex<Waiting>,
    settled: tokio::sync::Notify,
}

#[derive(Default)]
struct Waiting {
    by_id: HashMap<u64, (OnDelivered, Instant, Arc<str>)>,
    /// How many answers of each participant (`conversation/name`) are parked.
    by_participant: HashMap<Arc<str>, usize>,
}

impl Waiting {
    fn remove(&mut self, id: u64) -> Option<OnDelivered> {
        let (on_delivered, _, who) = self.by_id.remove(&id)?;
        if let Some(count) = self.by_participant.get_mut(&who) {
            *count -= 1;
            if *count == 0 {
                self.by_participant.remove(&who);
            }
        }
        Some(on_delivered)
    }
}

/// How long a participant's request waits for the reports on its earlier answers; a report
/// later than that counts as lost (the forwarding node lost its client before it could read
/// the answer, or is gone): the answer's messages come again.
const REPORT_WAIT: Duration = Duration::from_millis(500);

impl Parked {
    fn park(&self, who: &str, on_delivered: OnDelivered) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut stale = Vec::new();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.by_id.len() >= 256 {
            // Reports that never came: dropped, so lost (a ticket's drop only queues a report).
            let old: Vec<u64> = waiting
                .by_id
                .iter()
                .filter(|(_, (_, at, _))| now.duration_since(*at) >= PARK_TIMEOUT)
                .map(|(id, _)| *id)
                .collect();
            stale.extend(old.into_iter().filter_map(|id| waiting.remove(id)));
        }
        let who: Arc<str> = Arc::from(who);
        *waiting.by_participant.entry(Arc::clone(&who)).or_default() += 1;
        waiting.by_id.insert(id, (on_delivered, now, who));
        drop(waiting);
        drop(stale);
        id
    }

    /// The forwarding node's report on delivery `id`; whether it was waiting.
    pub(crate) fn settle(&self, id: u64, delivered: bool) -> bool {
        let on_delivered = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let Some(on_delivered) = on_delivered else {
            return false;
        };
        if delivered {
            on_delivered();
        }
        self.settled.notify_waiters();
        true
    }

    /// Waits until no answer of `who` waits for its report: at most [`REPORT_WAIT`], after
    /// which the answers still waiting count as lost.
    pub(crate) async fn reported(&self, who: &str) {
        let deadline = tokio::time::Instant::now() + REPORT_WAIT;
        loop {
            let settled = self.settled.notified();
            let parked = self
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .by_participant
                .contains_key(who);
            if !parked {
                return;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                self.expire(who);
                return;
            }
        }
    }

    /// Drops (lost) the answers of `who` parked for longer than [`REPORT_WAIT`].
    fn expire(&self, who: &str) {
        let now = Instant::now();
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let late: Vec<u64> = waiting
            .by_id
            .iter()
            .filter(|(_, (_, at, of))| &**of == who && now.duration_since(*at) >= REPORT_WAIT)
            .map(|(id, _)| *id)
            .collect();
        let lost: Vec<OnDelivered> = late
            .into_iter()
            .filter_map(|id| waiting.remove(id))
            .collect();
        drop(waiting);
        drop(lost);
    }
}

/// In every request's extensions on a node of several: where answers to forwarded requests
/// wait for their reports, and whether this request was forwarded by another node.
#[derive(Clone)]
pub(crate) struct Relay {
    pub(crate) parked: Arc<Parked>,
    pub(crate) from_node: bool,
}

/// The key under which a participant's parked answers are counted.
pub(crate) fn participant_key(conversation: &str, name: &str) -> String {
    format!("{conversation}/{name}")
}

/// `response`, with `on_delivered` run once it reached the client: when hyper took its body
/// whole, or, for a request another node forwarded, when that node reports that its own client
/// did. `relay` comes with the key of the participant the answer is for ([`participant_key`]).
pub(crate) fn when_delivered(
    response: Response,
    on_delivered: OnDelivered,
    relay: Option<(&Relay, &str)>,
) -> Response {
    match relay {
        Some((
            Relay {
                parked,
                from_node: true,
            },
            who,
        )) => {
            let id = parked.park(who, on_delivered);
            let mut response = response;
            response
                .headers_mut()
                .insert(DELIVERY_HEADER, HeaderValue::from(id));
            // If the answer does not even reach the forwarding node, nobody will report on it:
            // it is lost at once.
            let unpark = Unpark {
                parked: Arc::clone(parked),
                id,
                armed: true,
            };
            Delivering::wrap(response, Box::new(move || unpark.disarm()))
        }
        _ => Delivering::wrap(response, on_delivered),
    }
}

/// Drops a parked delivery (lost) unless disarmed.
struct Unpark {
    parked: Arc<Parked>,
    id: u64,
    armed: bool,
}

impl Unpark {
    /// The answer reached the forwarding node: its report decides.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unpark {
    fn drop(&mut self) {
        if self.armed {
            self.parked.settle(self.id, false);
        }
    }
}
