//! A stand-in model server for hark's tests. Test support only: nothing in the product depends
//! on this crate.
//!
//! It listens on `127.0.0.1:0` and speaks both real wire formats: `POST /v1/chat/completions`
//! answers with OpenAI chat-completion chunks (`data: {...}` lines, tool-call fragments, the usage
//! chunk, `data: [DONE]`), `POST /v1/messages` with Anthropic Messages events (`event:` and
//! `data:` lines, `message_start` … `message_stop`). What it answers is scripted: queue
//! [`Script`]s with [`StandIn::push`], or compute them from the request with
//! [`StandIn::set_responder`]. Every request is recorded, including whether the client went away
//! before the scripted stream finished.
//!
//! ```no_run
//! # async fn demo() {
//! use hark_test_llm::{Script, StandIn};
//! let stand_in = StandIn::start().await;
//! stand_in.push(Script::text("Hello there.").chunked(5).chunk_delay_ms(20));
//! let openai_base = stand_in.openai_base_url(); // "http://127.0.0.1:PORT/v1"
//! let anthropic_base = stand_in.anthropic_base_url(); // "http://127.0.0.1:PORT"
//! # }
//! ```
#![warn(missing_docs)]

mod script;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

pub use script::Script;

use script::Response as Scripted;
use wire::{After, Context, Wire};

/// A running stand-in server. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The client's address: two requests from one address came over one (reused) connection.
    pub peer: SocketAddr,
    /// Every header, names lowercased (the API key header included, so tests can check it).
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Value::Null` if it was not JSON).
    pub body: Value,
    /// The client dropped the connection before the scripted stream finished.
    pub closed_early: bool,
    /// The whole scripted response was handed to the connection.
    pub completed: bool,
}

/// Computes a response from a request when no script is queued.
type Responder = Arc<dyn Fn(&RecordedRequest) -> Script + Send + Sync>;

struct Shared {
    state: Mutex<StateInner>,
    /// Woken whenever a request is recorded or changes.
    changed: Notify,
}

#[derive(Default)]
struct StateInner {
    queue: VecDeque<Script>,
    responder: Option<Responder>,
    requests: Vec<RecordedRequest>,
}

impl StandIn {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start() -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in to 127.0.0.1:0");
        let addr = listener.local_addr().expect("the stand-in's local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(StateInner::default()),
            changed: Notify::new(),
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            // Tests may send long conversations; the real APIs accept far more than 2 MB.
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            // The server ends when the test drops the `StandIn` (which aborts this task).
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, service).await;
        });
        StandIn {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL an OpenAI-compatible client is configured with: `{url}/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The base URL an Anthropic client is configured with: `{url}`.
    pub fn anthropic_base_url(&self) -> String {
        self.url()
    }

    /// Queues the response to the next request that finds the queue non-empty.
    pub fn push(&self, script: Script) {
        self.shared.lock().queue.push_back(script);
    }

    /// Sets the response for requests that find the queue empty. Without one, such a request
    /// gets `501` with an error body saying that nothing was scripted.
    pub fn set_responder(
        &self,
        responder: impl Fn(&RecordedRequest) -> Script + Send + Sync + 'static,
    ) {
        self.shared.lock().responder = Some(Arc::new(responder));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Waits until at least `n` requests have arrived or `timeout` passes, and returns the
    /// requests then (check the length).
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        self.wait_until(timeout, |state| state.requests.len() >= n)
            .await;
        self.requests()
    }

    /// Waits until the client has dropped request `i`'s connection before its scripted stream
    /// finished. `false` if the stream completed instead, or `timeout` passed.
    pub async fn wait_for_close(&self, i: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| {
            state
                .requests
                .get(i)
                .is_some_and(|r| r.closed_early || r.completed)
        })
        .await;
        self.shared
            .lock()
            .requests
            .get(i)
            .is_some_and(|r| r.closed_early)
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&StateInner) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            // Registers interest before checking, so no change between check and wait is lost.
            changed.as_mut().enable();
            if done(&self.shared.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RecordedRequest {
    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The text of the last user message, in either wire format (text content or text blocks;
    /// tool results are skipped). Handy for echoing responders.
    pub fn last_user_text(&self) -> Option<String> {
        let messages = self.body.get("messages")?.as_array()?;
        messages.iter().rev().find_map(|message| {
            if message.get("role")?.as_str()? != "user" {
                return None;
            }
            match message.get("content")? {
                Value::String(text) => Some(text.clone()),
                Value::Array(blocks) => {
                    let text: Vec<&str> = blocks
                        .iter()
                        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                        .filter_map(|b| b.get("text").and_then(Value::as_str))
                        .collect();
                    (!text.is_empty()).then(|| text.concat())
                }
                _ => None,
            }
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, StateInner> {
        // A panic while holding the lock cannot leave the state half-changed (every critical
        // section is a single push or field write), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, i: usize, change: impl FnOnce(&mut RecordedRequest)) {
        if let Some(request) = self.lock().requests.get_mut(i) {
            change(request);
        }
        self.changed.notify_waiters();
    }
}

async fn openai(
    state: State<Arc<Shared>>,
    peer: ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(Wire::OpenAi, state, peer, uri, headers, body)
}

async fn anthropic(
    state: State<Arc<Shared>>,
    peer: ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(Wire::Anthropic, state, peer, uri, headers, body)
}

fn answer(
    wire: Wire,
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = RecordedRequest {
        path: uri.path().to_owned(),
        peer,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        closed_early: false,
        completed: false,
    };
    let invalid = wire::validate(wire, &request.headers, &request.body).err();
    let (index, queued, responder) = {
        let mut state = shared.lock();
        state.requests.push(request.clone());
        // An invalid request is refused like the real API would, and consumes no script.
        let queued = match invalid {
            Some(_) => None,
            None => state.queue.pop_front(),
        };
        (state.requests.len() - 1, queued, state.responder.clone())
    };
    shared.changed.notify_waiters();
    // The responder runs outside the lock, so it may take as long as it likes.
    let script = match invalid {
        Some(_) => None,
        None => queued.or_else(|| responder.map(|responder| responder(&request))),
    };

    if let Some(message) = invalid {
        return status_response(&shared, index, wire, 400, &message, None);
    }
    let Some(script) = script else {
        let message = "the stand-in has nothing scripted for this request";
        return status_response(&shared, index, wire, 501, message, None);
    };
    if let Scripted::Status {
        status,
        message,
        retry_after,
    } = &script.response
    {
        return status_response(
            &shared,
            index,
            wire,
            *status,
            message,
            retry_after.as_deref(),
        );
    }

    let ctx = Context {
        request_index: index,
        model: request.body["model"].as_str().unwrap_or("").to_owned(),
        include_usage: request.body["stream_options"]["include_usage"] == Value::Bool(true),
        default_input_tokens: (body.len() as u64 / 4).max(1),
    };
    let (frames, after) = wire::render(wire, &script, &ctx);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(write_stream(
        shared,
        index,
        tx,
        frames.into_iter().map(|f| f.text).collect(),
        after,
        (
            script.first_delay_ms,
            script.chunk_delay_ms,
            script.close_delay_ms,
        ),
    ));
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn status_response(
    shared: &Shared,
    index: usize,
    wire: Wire,
    status: u16,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    let body = wire::error_body(wire, status, message).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = retry_after.and_then(|s| s.parse::<HeaderValue>().ok()) {
        headers.insert(header::RETRY_AFTER, seconds);
    }
    shared.update(index, |r| r.completed = true);
    response
}

/// Writes the frames into the body channel with the scripted delays. Hyper drops the body (and
/// with it the receiver) when the client goes away, so a closed channel means `closed_early`.
async fn write_stream(
    shared: Arc<Shared>,
    index: usize,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    frames: Vec<String>,
    after: After,
    (first_delay_ms, chunk_delay_ms, close_delay_ms): (u64, u64, u64),
) {
    for (i, frame) in frames.into_iter().enumerate() {
        let delay = if i == 0 {
            first_delay_ms
        } else {
            chunk_delay_ms
        };
        if delay > 0 {
            tokio::select! {
                () = tx.closed() => {
                    shared.update(index, |r| r.closed_early = true);
                    return;
                }
                () = tokio::time::sleep(Duration::from_millis(delay)) => {}
            }
        }
        if tx.send(Ok(Bytes::from(frame))).await.is_err() {
            shared.update(index, |r| r.closed_early = true);
            return;
        }
    }
    match after {
        After::End => {
            if close_delay_ms > 0 {
                tokio::select! {
                    () = tx.closed() => {
                        shared.update(index, |r| r.closed_early = true);
                        return;
                    }
                    () = tokio::time::sleep(Duration::from_millis(close_delay_ms)) => {}
                }
            }
            drop(tx);
            shared.update(index, |r| r.completed = true);
        }
        After::Hang => {
            tx.closed().await;
            shared.update(index, |r| r.closed_early = true);
        }
    }
}
