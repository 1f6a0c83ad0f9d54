//! The accept loop: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one listener.
//!
//! Hand-written rather than `axum::serve`, because that one sets no timer and so no header-read
//! timeout: a client dribbling headers could hold a socket forever. What it keeps bounded:
//! - connections: at most `max_connections` at once; one more is answered a `503` JSON error
//!   and closed (a few at a time: beyond that it is closed at once);
//! - slow first bytes: the bytes that decide the protocol are read (and replayed to hyper), so
//!   a connection that sends one byte and stops costs a wait, not a poll loop; nothing within
//!   the header-read timeout closes it;
//! - idle connections: HTTP/1.1 waits for a request's headers (the next one's too) at most the
//!   header-read timeout; HTTP/2 is closed (`GOAWAY`) once no request was in flight for the
//!   idle timeout, and pinged so a vanished peer is noticed;
//! - shutdown: every connection drains gracefully for at most the drain time, then what is left
//!   (a client that stopped reading its event stream, say) is closed.
//!
//! Each request passes the [`Edge`] checks, which know its peer's address, before the router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::FutureExt;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::routes::edge::{Admission, Edge};
use crate::wire::WireError;

/// Concurrent requests one HTTP/2 connection may carry.
const MAX_HTTP2_STREAMS: u32 = 16_384;
/// How long to wait before accepting again after `accept` failed (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// HTTP/2 pings a connection this often while it is open, and closes it when the answer takes
/// longer than this: a peer that vanished without closing is noticed.
const HTTP2_PING: Duration = Duration::from_secs(30);
/// Connections refused at the cap that may be answered at once; more are closed unanswered.
const REFUSING_MAX: usize = 64;
/// How long a refused connection is given to take its answer.
const REFUSE_LINGER: Duration = Duration::from_millis(200);

/// What the accept loop keeps bounded, and for how long.
#[derive(Clone, Debug)]
pub(crate) struct Bounds {
    /// Open connections at once.
    pub(crate) max_connections: usize,
    /// Time to send the first bytes and then a request's headers (HTTP/1.1).
    pub(crate) header_timeout: Duration,
    /// Time an HTTP/2 connection may stay without a request in flight.
    pub(crate) idle_timeout: Duration,
    /// Time connections get to finish after shutdown fired.
    pub(crate) drain: Duration,
}

/// Serves `router` on `listener`, every request through `edge` first, until `shutdown` fires
/// and every connection has finished (or the drain time has passed and the rest were closed).
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    edge: Edge,
    bounds: Bounds,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    // Cancelled when the drain time is over: every connection still open is dropped.
    let force = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(REFUSING_MAX));
    let bounds = Arc::new(bounds);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors must not end the server: back off.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                let max = bounds.max_connections;
                tokio::spawn(async move {
                    refuse(stream, max).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            router: router.clone(),
            edge: edge.clone(),
            peer,
            bounds: Arc::clone(&bounds),
            shutdown: shutdown.clone(),
            force: force.clone(),
        };
        // `map`, not an `async` block: awaiting the future there would store it twice.
        connections.spawn(connection.run(stream).map(move |()| drop(slot)));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(bounds.drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_ms = bounds.drain.as_millis() as u64,
            "connections still open after the drain time are closed"
        );
        force.cancel();
        connections.wait().await;
    }
}

/// One accepted connection, before its protocol is known.
struct Connection {
    router: axum::Router,
    edge: Edge,
    peer: SocketAddr,
    bounds: Arc<Bounds>,
    shutdown: CancellationToken,
    force: CancellationToken,
}

// What a connection holds while it waits is kept small on purpose: a client may park thousands
// of `check`s, one HTTP/1.1 connection each, for up to a minute. So the futures are built
// without `async fn` where an argument would be stored twice (an `async fn` keeps its
// arguments beside the locals they are moved into), the short-lived first read is boxed, and
// HTTP/2's much larger state machine is boxed on its own.
impl Connection {
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store `self` and `stream` twice for the connection's life"
    )]
    fn run(self, stream: TcpStream) -> impl Future<Output = ()> + Send {
        // HTTP/1.1, and HTTP/2 with prior knowledge (h2c): a client that keeps many calls open
        // (thousands of waiting `check`s) multiplexes them on one connection instead of paying
        // hyper's fixed 16 KiB of buffers per HTTP/1.1 connection.
        async move {
            let Some((stream, head, http2)) = Box::pin(self.first_bytes(stream)).await else {
                return;
            };
            let io = TokioIo::new(Rewound {
                head,
                stream,
                rewritten: None,
            });
            if http2 {
                Box::pin(self.serve_http2(io)).await
            } else {
                self.serve_http1(io).await
            }
        }
    }

    /// The connection's first bytes (see [`first_bytes`]), if they arrive within the
    /// header-read timeout and before shutdown.
    async fn first_bytes(&self, mut stream: TcpStream) -> Option<(TcpStream, Vec<u8>, bool)> {
        let first = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            first = tokio::time::timeout(self.bounds.header_timeout, first_bytes(&mut stream)) => first,
        };
        // Nothing arrived in time, or the peer went away: drop the connection.
        let Ok(Ok((head, http2))) = first else {
            return None;
        };
        Some((stream, head, http2))
    }

    fn serve_http1(self, io: TokioIo<Rewound>) -> impl Future<Output = ()> + Send {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.bounds.header_timeout);
        let service = self.service(None);
        let connection = builder.serve_connection(io, service);
        // HTTP/1.1 idles in hyper's header read, which its own timer bounds.
        drive(connection, self.shutdown, self.force, std::future::pending)
    }

    fn serve_http2(self, io: TokioIo<Rewound>) -> impl Future<Output = ()> + Send {
        let activity = Arc::new(Activity::default());
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_HTTP2_STREAMS)
            .keep_alive_interval(HTTP2_PING)
            .keep_alive_timeout(HTTP2_PING);
        let service = self.service(Some(Arc::clone(&activity)));
        let connection = builder.serve_connection(io, service);
        let timeout = self.bounds.idle_timeout;
        let idle = move || {
            let activity = Arc::clone(&activity);
            async move { activity.idle_for(timeout).await }
        };
        drive(connection, self.shutdown, self.force, idle)
    }

    /// The router as this connection's hyper service.
    fn service(&self, activity: Option<Arc<Activity>>) -> ConnectionService {
        ConnectionService {
            router: self.router.clone(),
            edge: self.edge.clone(),
            peer: self.peer,
            activity,
        }
    }
}

/// The router for one connection: each request passes the [`Edge`], learns its peer, and (on
/// HTTP/2, whose idle timeout needs it) counts as activity until its response body is done or
/// dropped.
#[derive(Clone)]
struct ConnectionService {
    router: axum::Router,
    edge: Edge,
    peer: SocketAddr,
    activity: Option<Arc<Activity>>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        detach(&mut parts);
        let request = hyper::Request::from_parts(parts, Body::new(Detached(body)));
        let busy = self.activity.as_ref().map(Busy::new);
        let while_busy = move |response: axum::response::Response| match busy {
            Some(busy) => response.map(|body| Body::new(WhileBusy { body, _busy: busy })),
            None => response,
        };
        let (request, closing) = match self.edge.admit(request, self.peer) {
            Admission::Admitted { request, closing } => (request, closing),
            Admission::Refused(refused) => {
                return Box::pin(std::future::ready(Ok(while_busy(refused))));
            }
        };
        // A `Router` is always ready: no `poll_ready` needed.
        let response = self.router.clone().call(request);
        // `map`, not an `async` block, which would store the router's future twice.
        Box::pin(response.map(move |response| {
            response.map(|mut response| {
                closing.apply(&mut response);
                while_busy(response)
            })
        }))
    }
}

/// Gives the request head its own memory. hyper's HTTP/1.1 parser hands out the target and the
/// header values as views into the connection's 8 KiB read buffer; a handler that keeps any of
/// them while it waits (a `check` holds its headers up to a minute) keeps that buffer, and
/// hyper, which reads on to notice the peer going away, then takes a second one. A few small
/// copies per request are cheaper than 8 KiB per waiting connection.
fn detach(parts: &mut axum::http::request::Parts) {
    if let Some(target) = parts.uri.path_and_query()
        && let Ok(copy) =
            axum::http::Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_str().as_bytes()))
    {
        // Origin-form (`/path?query`), as HTTP/1.1 requests are; anything else keeps its view.
        if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
            parts.uri = copy;
        }
    }
    for value in parts.headers.values_mut() {
        let Ok(mut copy) = axum::http::HeaderValue::from_bytes(value.as_bytes()) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        *value = copy;
    }
}

/// A request body whose data frames are copies: like the head (see [`detach`]), a frame is
/// otherwise a view into hyper's read buffer, and a handler keeps its body while it waits.
struct Detached(Incoming);

impl http_body::Body for Detached {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| frame.map_data(|data| Bytes::copy_from_slice(&data)))
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Serves `connection` until it ends. On shutdown its requests in flight may finish (the
/// graceful path), until `force` fires; it is also shut down gracefully once `idle()`
/// completes (HTTP/2: no request in flight for the idle timeout).
///
/// A plain `fn` returning an `async` block that polls `connection` where it was captured: an
/// `async fn` would keep hyper's connection twice (its argument and the local it moves into).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store hyper's connection twice"
)]
fn drive<C, I, F>(
    mut connection: C,
    shutdown: CancellationToken,
    force: CancellationToken,
    idle: I,
) -> impl Future<Output = ()> + Send
where
    C: GracefulConnection + Unpin + Send,
    I: Fn() -> F + Send,
    F: Future<Output = ()> + Send,
{
    async move {
        tokio::select! {
            _ = &mut connection => return,
            _ = shutdown.cancelled() => {}
            () = idle() => {}
        }
        Pin::new(&mut connection).graceful_shutdown();
        // HTTP/2's graceful end waits for the peer to acknowledge a ping; a peer that never
        // does is dropped once the connection has been idle that long again.
        tokio::select! {
            _ = &mut connection => {}
            _ = force.cancelled() => {}
            () = idle() => {}
        }
    }
}

/// Reads the first bytes of a connection, enough to tell HTTP/2's preface (`PRI * HTTP/2.0…`)
/// from HTTP/1.1: methods never start with "PR", so two bytes decide. The bytes are consumed
/// (and replayed by [`Rewound`]), so a peer that sends one byte and stops is simply awaited.
async fn first_bytes(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, bool)> {
    let mut head = vec![0u8; 2];
    let mut filled = 0;
    while filled < 2 {
        let n = stream.read(&mut head[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if head[0] != b'P' {
            break;
        }
    }
    head.truncate(filled);
    let http2 = head == b"PR";
    Ok((head, http2))
}

/// Answers a connection beyond the cap with a `503` and closes it.
async fn refuse(mut stream: TcpStream, max_connections: usize) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"error\":{{\"code\":\"unavailable\",\"message\":\"The server holds its limit of \
         {max_connections} connections ([limits] max_connections): retry in a moment.\"}}}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answered = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes, so that closing does not reset the
        // connection (and with it the answer) under unread bytes.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSE_LINGER, answered).await;
}

/// A connection with the bytes read to tell its protocol put back in front.
struct Rewound {
    head: Vec<u8>,
    stream: TcpStream,
    /// hyper's own error answer, rewritten with a JSON body, being written; and how many bytes
    /// of hyper's original to report once it is.
    rewritten: Option<(Vec<u8>, usize, usize)>,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.drain(..n);
            if self.head.is_empty() {
                self.head = Vec::new();
                // Read on in the same call. hyper reserves another 8 KiB whenever less than
                // that is free, and a first read that brought only these two bytes would have it
                // double its 8 KiB read buffer for the rest of the request, for the connection's
                // life. What is there now comes with them; if nothing is, hyper reads again.
                if buf.remaining() > 0 {
                    let _ = Pin::new(&mut self.stream).poll_read(cx, buf);
                }
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl Rewound {
    /// Writes the rewritten answer on; once it is all out, reports hyper's original written.
    fn poll_rewritten(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        while let Some((answer, written, original)) = &mut self.rewritten {
            if *written == answer.len() {
                let original = *original;
                self.rewritten = None;
                return Poll::Ready(Ok(original));
            }
            match Pin::new(&mut self.stream).poll_write(cx, &answer[*written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *written += n,
                other => return other,
            }
        }
        Poll::Ready(Ok(0))
    }
}

/// hyper answers a request it cannot parse itself (400, 414, 431), with an empty body and
/// `connection: close`, before any route sees it. The same answer with a JSON error body, as
/// every other error of this server has, if `head` is one of those.
fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (code, message) = match text.get(..13)? {
        "HTTP/1.1 400 " => ("bad_request", "The request is not valid HTTP."),
        "HTTP/1.1 414 " => ("too_large", "The request's URI is too long."),
        "HTTP/1.1 431 " => (
            "too_large",
            "The request's headers are too large: at most 100 headers, about 400 KB in all.",
        ),
        _ => return None,
    };
    if !text.ends_with("\r\n\r\n") || !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::to_string(&WireError::new(code, message)).ok()?;
    let head = text[..text.len() - 2].replace(
        "\r\ncontent-length: 0\r\n",
        &format!(
            "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ),
    );
    Some(format!("{head}\r\n{body}").into_bytes())
}

/// Heads longer than this are never one of hyper's own error answers.
const ERROR_HEAD_MAX: usize = 256;

/// How every one of hyper's own error answers starts: a cheap test before anything else, since
/// every small write of every connection passes here.
const ERROR_HEAD_START: &[u8] = b"HTTP/1.1 4";

/// Whether a write of `len` bytes starting with `first` may be one of hyper's error answers.
fn may_be_error_head(first: &[u8], len: usize) -> bool {
    len <= ERROR_HEAD_MAX && first.starts_with(ERROR_HEAD_START)
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.rewritten.is_none()
            && may_be_error_head(buf, buf.len())
            && let Some(answer) = with_json_body(buf)
        {
            self.rewritten = Some((answer, 0, buf.len()));
        }
        if self.rewritten.is_some() {
            return self.poll_rewritten(cx);
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if self.rewritten.is_none() && may_be_error_head(first, total) {
            // hyper writes a head in one slice; joining is for the rare answer that got here.
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if let Some(answer) = with_json_body(&joined) {
                self.rewritten = Some((answer, 0, total));
            }
        }
        if self.rewritten.is_some() {
            return self.poll_rewritten(cx);
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Requests in flight on one connection.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Requests ever started: an idle period is over as soon as one starts.
    started: AtomicU64,
    changed: Notify,
}

impl Activity {
    /// Returns once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let started = self.started.load(Ordering::Acquire);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(timeout) => {
                    if self.in_flight.load(Ordering::Acquire) == 0
                        && self.started.load(Ordering::Acquire) == started
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// One request in flight, from its arrival until its response body is done or dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.changed.notify_waiters();
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight while it is alive.
struct WhileBusy {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for WhileBusy {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
