//! `/mcp` on `hark serve`: MCP over streamable HTTP.
//!
//! An axum layer resolves the bearer token of every request through the service before rmcp sees
//! it: no token or an unknown one is answered `401` with the usual JSON error, the admin token
//! `403`; a participant's token becomes a [`LocalSession`] in the request's extensions, which rmcp hands to the tool
//! handler with the request's `http::request::Parts`. So the token selects conversation and
//! participant on each request, with or without an MCP session.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::handler::{HarkMcp, RequestSession};
use super::local::LocalSession;
use crate::app::App;
use crate::config::ServerConfig;
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
}

/// The `/mcp` route, to be merged into the server's router.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(
    app: App,
    config: Arc<ServerConfig>,
    shutdown: McpShutdown,
) -> Router<S> {
    let rmcp_config = StreamableHttpServerConfig::default()
        // rmcp's DNS-rebinding guard: only these `Host` values are served (empty: any).
        .with_allowed_hosts(config.mcp_allowed_hosts.clone())
        // Ends every MCP session and stream when the server shuts down (just after the tool
        // calls in flight answered), so that graceful shutdown does not wait on them.
        .with_cancellation_token(shutdown.end.child_token())
        .with_max_request_body_bytes(config.max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_millis(config.keepalive_ms)));
    let limits = app.limits();
    let (default_check_ms, max_check_ms) = (limits.default_check_ms, limits.max_check_ms);
    let service = StreamableHttpService::new(
        move || Ok(HarkMcp::per_request(default_check_ms, max_check_ms)),
        Arc::new(LocalSessionManager::default()),
        rmcp_config,
    );
    let state = McpState {
        app,
        config,
        shutdown,
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
    let session = LocalSession::new(state.app.clone(), me);
    request
        .extensions_mut()
        .insert(RequestSession(Arc::new(session)));
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
    let tracked = (request.method() == Method::POST).then(|| state.shutdown.posts.token());
    let response = next.run(request).await;
    if expired.load(Ordering::Relaxed) {
        // rmcp calls any body error its own (500); it is the client's, answered as elsewhere.
        return ApiError::body_timeout().into_response();
    }
    match tracked {
        Some(token) => response.map(|body| {
            Body::new(Tracked {
                inner: body,
                _token: token,
            })
        }),
        None => response,
    }
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

/// A response body that holds a tracker token until hyper drops it (after its last frame).
struct Tracked {
    inner: Body,
    _token: TaskTrackerToken,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
