//! `/mcp` on `hark serve`: MCP over streamable HTTP.
//!
//! An axum layer resolves the bearer token of every request through the service before rmcp sees
//! it: no token or an unknown one is answered `401` with the usual JSON error (and
//! `WWW-Authenticate: Bearer`), the admin token `403`; a participant's token becomes a
//! [`LocalSession`] in the request's extensions, which rmcp hands to the tool handler with the
//! request's `http::request::Parts`. So the token selects conversation and participant on each
//! request, with or without an MCP session.
//!
//! The same layer:
//! - gives each `POST` a [`RequestScope`] (in the extensions too) where the tool call's answer
//!   waits for the response body: taken whole, the answer counts as heard; dropped first (the
//!   client went away), the answer is lost and a call still running is withdrawn. With sessions,
//!   rmcp runs the call in the session's task, which outlives the `POST`: this is what stops it;
//! - remembers which participant opened each session, and answers any other token `404` for it;
//! - answers `DELETE` of a session `204`, and rewrites rmcp's plain-text refusals (`413`, an
//!   unknown session, a wrong `Accept`) as JSON-RPC errors.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hark_core::protocol::ParticipantName;
use http_body::{Frame, SizeHint};
use rmcp::transport::common::http_header::HEADER_SESSION_ID;
use rmcp::transport::streamable_http_server::session::SessionId;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::delivery::{RequestScope, ScopeGuard};
use super::handler::{HarkMcp, RequestSession};
use super::local::LocalSession;
use crate::app::{App, Participant};
use crate::config::{Caps, ServerConfig};
use crate::routes::delivery::{Relay, participant_key, when_delivered};
use crate::routes::error::ApiError;

/// How `/mcp` ends on shutdown: its `POST` answers in flight are tracked, and its sessions end
/// when `end` fires.
#[derive(Clone, Default)]
pub(crate) struct McpShutdown {
    /// `POST /mcp` requests whose answer is not delivered yet, so that shutdown can let them
    /// answer before it ends the MCP sessions.
    posts: TaskTracker,
    /// Ends MCP sessions: cancelled once the server's shutdown fired and the running tool calls
    /// answered.
    end: CancellationToken,
}

impl McpShutdown {
    /// Once `shutdown` fires, waiting `check` calls answer at once (`timed_out: true`). MCP
    /// requests in flight are given the time to deliver that answer before their sessions are
    /// ended; ending the sessions at the same instant would cut the answer off.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        /// A request still running after this (a store that hangs) is cut off after all.
        const GRACE: Duration = Duration::from_secs(5);
        shutdown.cancelled().await;
        self.posts.close();
        if tokio::time::timeout(GRACE, self.posts.wait())
            .await
            .is_err()
        {
            tracing::warn!("MCP tool calls still running at shutdown are cut off");
        }
        self.end.cancel();
    }
}

#[derive(Clone)]
struct McpState {
    app: App,
    config: Arc<ServerConfig>,
    shutdown: McpShutdown,
    sessions: Arc<LocalSessionManager>,
    owners: Arc<SessionOwners>,
}

/// The `/mcp` route, to be merged into the server's router.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(
    app: App,
    config: Arc<ServerConfig>,
    shutdown: McpShutdown,
) -> Router<S> {
    let rmcp_config = StreamableHttpServerConfig::default()
        // rmcp's DNS-rebinding guard is off: the server's own `Host` check (`routes::edge`)
        // guards every route, `/mcp` included, with one allow-list.
        .disable_allowed_hosts()
        // Ends every MCP session and stream when the server shuts down (just after the tool
        // calls in flight answered), so that graceful shutdown does not wait on them.
        .with_cancellation_token(shutdown.end.child_token())
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_millis(config.keepalive_ms)));
    let limits = app.limits();
    let (default_check_ms, max_check_ms) = (limits.default_check_ms, limits.max_check_ms);
    let mut sessions = LocalSessionManager::default();
    // A session without a request for this long ends (rmcp's worker times it out).
    sessions.session_config.keep_alive =
        Some(Duration::from_millis(config.caps.mcp_session_idle_ms));
    let sessions = Arc::new(sessions);
    let service = StreamableHttpService::new(
        move || Ok(HarkMcp::per_request(default_check_ms, max_check_ms)),
        Arc::clone(&sessions),
        rmcp_config,
    );
    let state = McpState {
        app,
        config,
        shutdown,
        sessions,
        owners: Arc::default(),
    };
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(state, authenticate))
}

async fn authenticate(State(state): State<McpState>, mut request: Request, next: Next) -> Response {
    let token = match crate::routes::bearer(request.headers()) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    let me = match state.app.authenticate(token).await {
        Ok(caller) => state.app.any_participant(&caller),
        Err(error) => Err(error),
    };
    let me = match me {
        Ok(me) => me,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let owner = Owner::of(&me);
    let method = request.method().clone();
    let session = request
        .headers()
        .get(HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A session belongs to the participant whose token opened it: another token may neither
    // use it nor end it, and learns nothing about it (an unknown session answers the same).
    if let Some(id) = &session
        && state.owners.owner(id).as_ref() != Some(&owner)
    {
        return session_not_found();
    }
    // A request without a session may open one: the caps on sessions apply before it does.
    if method == Method::POST
        && session.is_none()
        && let Some(refusal) = state
            .owners
            .refusal(&owner, &state.config.caps, &state.sessions)
            .await
    {
        return refusal;
    }
    let session_for_me = LocalSession::new(state.app.clone(), me);
    request
        .extensions_mut()
        .insert(RequestSession(Arc::new(session_for_me)));
    // The answers of this request's tool call wait here for the response to reach the client.
    let scope = (method == Method::POST).then(|| {
        let scope = Arc::new(RequestScope::default());
        request.extensions_mut().insert(Arc::clone(&scope));
        scope
    });
    // rmcp reads the body itself; give it the same deadline as every other route's body.
    let deadline = Duration::from_millis(state.config.body_read_timeout_ms);
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(Deadline {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            expired: Arc::clone(&expired),
        })
    });
    // A POST's answer (JSON, or an SSE stream that ends with the answer) is tracked until its
    // body is done, so shutdown can wait for it; GET streams are endless and are simply ended.
    let tracked = (method == Method::POST).then(|| state.shutdown.posts.token());
    // On a node of several: the participant's key, under which its relayed answers wait.
    let relay = request.extensions().get::<Relay>().cloned().map(|relay| {
        let who = participant_key(&owner.conversation, owner.name.as_str());
        (relay, who)
    });
    if let Some((relay, who)) = &relay {
        // An earlier answer relayed by another node: its report comes first.
        relay.parked.reported(who).await;
    }
    // From here until the response body is taken whole, the client may go away: then the
    // guard's drop loses this request's answers and withdraws its call.
    let guard = scope.map(ScopeGuard::new);
    let response = next.run(request).await;
    if expired.load(Ordering::Relaxed) {
        // rmcp calls any body error its own (500); it is the client's, answered as elsewhere.
        return ApiError::body_timeout().into_response();
    }
    let response = match (&method, &session) {
        (&Method::POST, None) => {
            // An initialize that opened a session: remember whose it is.
            if let Some(id) = response
                .headers()
                .get(HEADER_SESSION_ID)
                .and_then(|v| v.to_str().ok())
            {
                state.owners.insert(id, owner, &state.sessions).await;
            }
            response
        }
        (&Method::DELETE, Some(id)) if response.status().is_success() => {
            state.owners.remove(id);
            // The session is gone and there is nothing to say (rmcp answers 202 Accepted, which
            // promises work still to come).
            StatusCode::NO_CONTENT.into_response()
        }
        _ => response,
    };
    if response.status() == StatusCode::NOT_FOUND
        && let Some(id) = &session
    {
        // The session ended (idle, or its worker stopped): forget its owner too.
        state.owners.remove(id);
    }
    let response = as_json_error(response, state.config.max_body_bytes).await;
    match (tracked, guard) {
        (Some(token), Some(guard)) => when_delivered(
            response,
            Box::new(move || {
                guard.delivered();
                drop(token);
            }),
            relay.as_ref().map(|(relay, who)| (relay, who.as_str())),
        ),
        _ => response,
    }
}

/// Who may use an MCP session: the participant whose token opened it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    conversation: String,
    name: ParticipantName,
}

impl Owner {
    fn of(me: &Participant) -> Self {
        Owner {
            conversation: me.conversation().to_owned(),
            name: me.name().clone(),
        }
    }
}

/// The owner of every MCP session this server opened.
#[derive(Default)]
struct SessionOwners {
    owners: Mutex<HashMap<String, Owner>>,
    /// Sessions known after the last sweep of ended ones.
    swept_at: AtomicUsize,
}

impl SessionOwners {
    /// Below this many sessions, ended ones are not swept.
    const SWEEP_FROM: usize = 1024;

    fn owner(&self, id: &str) -> Option<Owner> {
        self.lock().get(id).cloned()
    }

    /// Remembers `id`'s owner; now and then forgets sessions rmcp has ended on its own (idle
    /// ones), so the map stays as large as the live sessions.
    async fn insert(&self, id: &str, owner: Owner, sessions: &LocalSessionManager) {
        let known = {
            let mut owners = self.lock();
            owners.insert(id.to_owned(), owner);
            owners.len()
        };
        if known < Self::SWEEP_FROM || known < 2 * self.swept_at.load(Ordering::Relaxed) {
            return;
        }
        self.sweep(sessions).await;
    }

    /// Forgets the sessions rmcp has ended.
    async fn sweep(&self, sessions: &LocalSessionManager) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        let mut ended = Vec::new();
        for id in ids {
            if !sessions
                .has_session(&SessionId::from(id.as_str()))
                .await
                .unwrap_or(true)
            {
                ended.push(id);
            }
        }
        let mut owners = self.lock();
        for id in &ended {
            owners.remove(id);
        }
        self.swept_at.store(owners.len(), Ordering::Relaxed);
    }

    /// Sessions open in all, and those of `owner`.
    fn counts(&self, owner: &Owner) -> (usize, usize) {
        let owners = self.lock();
        let mine = owners.values().filter(|o| *o == owner).count();
        (owners.len(), mine)
    }

    /// The refusal that names the cap, if `owner` may not open one more session. (Requests
    /// racing at the cap may each open one.)
    async fn refusal(
        &self,
        owner: &Owner,
        caps: &Caps,
        sessions: &LocalSessionManager,
    ) -> Option<Response> {
        let (per, total) = (caps.max_mcp_sessions_per_participant, caps.max_mcp_sessions);
        let (all, mine) = self.counts(owner);
        if all < total && mine < per {
            return None;
        }
        // Some of them may have ended while idle: count again without those.
        self.sweep(sessions).await;
        let (all, mine) = self.counts(owner);
        let refusal = |message: String| {
            Some(jsonrpc_error(
                StatusCode::CONFLICT,
                SERVER_ERROR,
                "limit_reached",
                &message,
            ))
        };
        if mine >= per {
            return refusal(format!(
                "You hold {per} MCP sessions open, the server's limit per participant ([limits] \
                 max_mcp_sessions_per_participant): end one (DELETE /mcp with its session id) \
                 or reuse it."
            ));
        }
        if all >= total {
            return refusal(format!(
                "The server holds {total} MCP sessions, its limit ([limits] max_mcp_sessions): \
                 retry once some have ended."
            ));
        }
        None
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        // A panic while holding the lock leaves the map itself intact: keep using it.
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `404` for a session this token may not use, as a JSON-RPC error (MCP clients parse those).
fn session_not_found() -> Response {
    jsonrpc_error(
        StatusCode::NOT_FOUND,
        SESSION_NOT_FOUND,
        "not_found",
        "Session not found: it ended or was never opened with this token. Initialize a new \
         session.",
    )
}

/// rmcp's own refusals (a wrong `Accept`, a missing session, a body too large, …) come as
/// plain text; MCP clients parse JSON-RPC errors. Rewrites any error answer that is not JSON.
async fn as_json_error(response: Response, max_body_bytes: usize) -> Response {
    /// Longer texts than this are not rmcp's refusals: say only the status.
    const MAX_TEXT_BYTES: usize = 4096;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_TEXT_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, hark_code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            SERVER_ERROR,
            "too_large",
            ApiError::too_large(max_body_bytes).message,
        ),
        StatusCode::NOT_FOUND => (
            SESSION_NOT_FOUND,
            "not_found",
            "Session not found: it ended or was never opened. Initialize a new session.".to_owned(),
        ),
        // rmcp's 500s say which of its steps failed, with internal detail: keep that for the log.
        _ if status.is_server_error() => {
            tracing::warn!(%status, detail = %text, "the MCP transport failed a request");
            (
                INTERNAL_ERROR,
                "unavailable",
                "The MCP session could not serve this request; retry, or initialize a new \
                 session."
                    .to_owned(),
            )
        }
        _ if text.is_empty() => (SERVER_ERROR, "bad_request", status.to_string()),
        _ => (SERVER_ERROR, "bad_request", text),
    };
    let mut rewritten = jsonrpc_error(status, code, hark_code, &message);
    // Keep what rmcp said beside the body (`Allow` on a 405, say).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

/// JSON-RPC's code for a server-defined transport error, as the MCP SDKs use it.
const SERVER_ERROR: i64 = -32000;
/// The MCP SDKs' code for an unknown or ended session.
const SESSION_NOT_FOUND: i64 = -32001;
/// JSON-RPC's internal error.
const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error answer without a request id (the request was not read), carrying hark's
/// error code in `data` as the rest of the API names it.
fn jsonrpc_error(status: StatusCode, code: i64, hark_code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message, "data": {"code": hark_code}},
    });
    (status, axum::Json(body)).into_response()
}

/// A request body that fails once its deadline passes before it has all arrived (a client
/// dribbling its body would otherwise hold the connection as long as it likes).
struct Deadline {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time",
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
