//! `/mcp` on `hark serve`: MCP over streamable HTTP.
//!
//! An axum layer resolves the bearer token of every request before rmcp sees it: no token or an
//! unknown one is answered `401` with the usual JSON error, the admin token `403`; a participant's
//! token becomes a [`LocalSession`] in the request's extensions, which rmcp hands to the tool
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
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::time::Sleep;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::LocalSession;
use super::handler::{HarkMcp, RequestSession};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// The `/mcp` route, to be merged into the server's router.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(state: AppState) -> Router<S> {
    let config = StreamableHttpServerConfig::default()
        // rmcp's DNS-rebinding guard: only these `Host` values are served (empty: any).
        .with_allowed_hosts(state.config.mcp_allowed_hosts.clone())
        // Ends every MCP session and stream when the server shuts down (just after the tool
        // calls in flight answered), so that graceful shutdown does not wait on them.
        .with_cancellation_token(state.mcp_shutdown.child_token())
        .with_max_request_body_bytes(state.config.max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_millis(state.config.keepalive_ms)));
    let service = StreamableHttpService::new(
        || Ok(HarkMcp::per_request()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(state, authenticate))
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let owner = match state.auth.caller(request.headers(), &*state.store).await {
        Ok(Some(Caller::Participant(owner))) => owner,
        Ok(Some(Caller::Admin)) => {
            return ApiError::forbidden(
                "The admin token cannot act as a participant: use that participant's token.",
            )
            .into_response();
        }
        Ok(None) => {
            return ApiError::unauthorized(
                "Send your participant token: 'Authorization: Bearer <token>'.",
            )
            .into_response();
        }
        Err(error) => return error.into_response(),
    };
    let session = LocalSession::new(state.clone(), owner);
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
    let tracked = (request.method() == Method::POST).then(|| state.mcp_posts.token());
    let response = next.run(request).await;
    if expired.load(Ordering::Relaxed) {
        // rmcp calls any body error its own (500); it is the client's, answered as elsewhere.
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "The request body did not arrive in time: send it at once.",
        )
        .into_response();
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
