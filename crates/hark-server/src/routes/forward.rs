//! Requests for a conversation that another node runs are forwarded to it (several nodes on
//! one database; see `app::cluster`). A client may talk to any node, behind any load balancer.
//!
//! - Which conversation a request is about: the `{id}` of `/v1/conversations/{id}/…`, or the
//!   conversation of the bearer token for `/v1/whoami` and `/mcp`. Other routes are served
//!   where they arrive.
//! - Where it runs: [`App::locate`] (here, possibly after taking it over, or the owner's URL,
//!   remembered for a moment).
//! - The forwarded request carries the nodes' shared secret in `x-hark-node`; the owner serves it
//!   without the edge checks the first node already made. An owner that no longer runs the
//!   conversation answers `421`, and the first node asks again. A node that cannot be reached
//!   is asked again until its lease has run out and another node (this one, say) takes over:
//!   the request is delayed, not refused. The body is read first (it is small: the configured
//!   limits bound it) so that it can be sent again.
//! - The answer streams back as it comes (an event stream, a waiting `check`). An answer that
//!   hands messages over counts as heard only once it reached the client: the owner parks its
//!   delivery under an id ([`DELIVERY_HEADER`]), and this node reports, once hyper took the
//!   answer's last frame here, that its client has it, or, if the client went away first, that
//!   it does not (`POST /v1/internal/deliveries/{id}`, between nodes only). The report follows
//!   the delivery, never precedes it: a client that acts again within the report's round trip
//!   may be shown the same messages once more ("again", its push held once), never fewer.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header, request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::delivery::{DELIVERY_HEADER, Delivering, Parked, Relay};
use super::error::ApiError;
use super::input::bearer;
use crate::app::{App, Location};

/// The header a forwarded request carries: the nodes' shared secret.
pub(crate) const NODE_HEADER: HeaderName = HeaderName::from_static("x-hark-node");

/// How long to wait between two tries to reach a conversation's owner.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone)]
struct Forward {
    app: App,
    client: Client<HttpConnector, Body>,
    /// Largest body read before forwarding.
    max_body: usize,
    /// How long the body may take to arrive.
    body_timeout: Duration,
    /// Answers to requests forwarded here, waiting for the forwarding node's delivery report.
    parked: Arc<Parked>,
}

/// Where a node reports the delivery of an answer to a request it forwarded.
const DELIVERIES: &str = "/v1/internal/deliveries/";

/// Wraps `router` in the forwarding (nothing, on a single server).
pub(crate) fn layer(router: Router, app: &App, max_body: usize, body_timeout: Duration) -> Router {
    if app.node().is_none() {
        return router;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let forward = Forward {
        app: app.clone(),
        client: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
        max_body,
        body_timeout,
        parked: Arc::default(),
    };
    router.layer(axum::middleware::from_fn_with_state(forward, route))
}

/// Whether `headers` say another node of this cluster forwarded the request.
pub(crate) fn from_node(app: &App, headers: &HeaderMap) -> bool {
    app.node().is_some_and(|node| {
        headers
            .get(&NODE_HEADER)
            .is_some_and(|v| node.vouches(v.as_bytes()))
    })
}

/// What the forwarding makes of a request.
enum Routed {
    /// Served by this node.
    Here(Request),
    /// Answered already: by the owner, or with an error.
    Answered(Response),
}

/// A request served here (most of them, and every waiting `check` on its owner) waits in `next`
/// alone: the routing before it runs boxed and is gone by then. (A plain `fn`: an `async fn`
/// would also store the extractors it consumed.)
fn route(
    State(forward): State<Forward>,
    request: Request,
    next: Next,
) -> impl Future<Output = Response> + Send {
    let routed = Box::pin(forward.route(request));
    async move {
        // Not a `match` around the wait: its scrutinee would stay in the future.
        let request = match routed.await {
            Routed::Here(request) => request,
            Routed::Answered(response) => return response,
        };
        next.run(request).await
    }
}

/// What names a request's conversation.
enum About {
    Conversation(String),
    Token(String),
}

fn about(request: &Request) -> Option<About> {
    let path = request.uri().path();
    if let Some(rest) = path.strip_prefix("/v1/conversations/") {
        let id = rest.split('/').next().unwrap_or_default();
        return (!id.is_empty()).then(|| About::Conversation(id.to_owned()));
    }
    if path != "/v1/whoami" && path != "/mcp" && !path.starts_with("/mcp/") {
        return None;
    }
    let token = bearer(request.headers()).ok().flatten()?;
    Some(About::Token(token.to_owned()))
}

/// Why a forwarded request got no answer.
enum Failure {
    /// The owner could not be reached: nothing was sent, it may be sent again.
    Unreachable,
    /// The connection failed after the request went out.
    Lost,
}

impl Forward {
    /// Where `request` is served, and the answer of the owner if not here.
    async fn route(self, mut request: Request) -> Routed {
        let Some(node) = self.app.node() else {
            return Routed::Here(request);
        };
        let forwarded = from_node(&self.app, request.headers());
        if forwarded && let Some(report) = request.uri().path().strip_prefix(DELIVERIES) {
            return Routed::Answered(self.report(report, request.uri().query()));
        }
        request.extensions_mut().insert(Relay {
            parked: Arc::clone(&self.parked),
            from_node: forwarded,
        });
        let Some(id) = self.conversation_of(&request).await else {
            return Routed::Here(request);
        };
        if forwarded {
            // Sent here as the owner: serve it if this node runs the conversation (or can take
            // it), else say so, and the sender asks again.
            self.app.forget_location(&id);
            return match self.app.locate(&id).await {
                Ok(Location::Here) => Routed::Here(request),
                Ok(Location::At(_)) => Routed::Answered(
                    ApiError::new(
                        StatusCode::MISDIRECTED_REQUEST,
                        "unavailable",
                        "This node no longer runs this conversation.",
                    )
                    .into_response(),
                ),
                Err(error) => Routed::Answered(ApiError::from(error).into_response()),
            };
        }
        let mut location = match self.app.locate(&id).await {
            Ok(Location::Here) => return Routed::Here(request),
            Ok(location) => location,
            Err(error) => return Routed::Answered(ApiError::from(error).into_response()),
        };
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, self.max_body);
        let body = match tokio::time::timeout(self.body_timeout, body).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                return Routed::Answered(ApiError::too_large(self.max_body).into_response());
            }
            Err(_) => return Routed::Answered(ApiError::body_timeout().into_response()),
        };
        // Long enough for a dead owner's lease to run out and the conversation to move.
        let give_up = tokio::time::Instant::now() + node.lease() * 2 + Duration::from_secs(1);
        loop {
            let url = match location {
                Location::Here => {
                    return Routed::Here(Request::from_parts(parts, Body::from(body)));
                }
                Location::At(url) => url,
            };
            match self.send(&parts, body.clone(), &url, node.secret()).await {
                Ok(response) if response.status() != StatusCode::MISDIRECTED_REQUEST => {
                    return Routed::Answered(response);
                }
                Ok(_) => {}
                Err(Failure::Unreachable) => {}
                Err(Failure::Lost) => {
                    let error = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "The node that runs this conversation went away during the request; \
                         whether it took effect is unknown. Retry (a send with the same \
                         client_id is not doubled).",
                    );
                    return Routed::Answered(error.into_response());
                }
            }
            self.app.forget_location(&id);
            if tokio::time::Instant::now() >= give_up {
                let error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The node that runs this conversation cannot be reached; nothing was \
                     changed. Retry shortly.",
                );
                return Routed::Answered(error.into_response());
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            location = match self.app.locate(&id).await {
                Ok(location) => location,
                Err(error) => return Routed::Answered(ApiError::from(error).into_response()),
            };
        }
    }

    /// Another node's delivery report: `{id}?delivered=true|false`.
    fn report(&self, id: &str, query: Option<&str>) -> Response {
        let delivered = match query {
            Some("delivered=true") => true,
            Some("delivered=false") => false,
            _ => return ApiError::bad_request("delivered=true or delivered=false").into_response(),
        };
        match id.parse() {
            Ok(id) if self.parked.settle(id, delivered) => StatusCode::NO_CONTENT.into_response(),
            _ => ApiError::not_found("No delivery of that id waits here.").into_response(),
        }
    }

    /// The conversation a request is about, if it is about one.
    fn conversation_of(&self, request: &Request) -> impl Future<Output = Option<String>> + Send {
        let about = about(request);
        let app = self.app.clone();
        async move {
            let token = match about? {
                About::Conversation(id) => return Some(id),
                About::Token(token) => token,
            };
            // Not counted here: the node that serves the request counts it.
            app.conversation_of_token(&token).await.ok().flatten()
        }
    }

    async fn send(
        &self,
        parts: &request::Parts,
        body: Bytes,
        url: &str,
        secret: &str,
    ) -> Result<Response, Failure> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{}{path}", url.trim_end_matches('/'))
            .parse()
            .map_err(|_| Failure::Unreachable)?;
        let mut request = Request::builder().method(parts.method.clone()).uri(uri);
        if let Some(headers) = request.headers_mut() {
            for (name, value) in &parts.headers {
                if !is_hop_by_hop(name) && name != header::HOST && name != NODE_HEADER {
                    headers.append(name.clone(), value.clone());
                }
            }
            headers.insert(
                NODE_HEADER,
                HeaderValue::from_str(secret).map_err(|_| Failure::Unreachable)?,
            );
        }
        let request = request
            .body(Body::from(body))
            .map_err(|_| Failure::Unreachable)?;
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::Unreachable
            } else {
                tracing::warn!(error = %e, url, "a forwarded request failed");
                Failure::Lost
            }
        })?;
        let (mut parts, body) = response.into_parts();
        let delivery = parts.headers.remove(&DELIVERY_HEADER).and_then(|id| {
            let id = id.to_str().ok()?.parse::<u64>().ok()?;
            Some(Report {
                client: self.client.clone(),
                url: format!("{}{DELIVERIES}{id}", url.trim_end_matches('/')),
                secret: secret.to_owned(),
                sent: false,
            })
        });
        let hop: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|name| is_hop_by_hop(name))
            .cloned()
            .collect();
        for name in hop {
            parts.headers.remove(name);
        }
        let response = Response::from_parts(parts, Body::new(body));
        Ok(match delivery {
            // Reported once hyper took its last frame here (or an event stream's answer), as a
            // local answer is confirmed.
            Some(report) => Delivering::wrap(response, Box::new(|| report.delivered())),
            None => response,
        })
    }
}

/// Headers that describe one connection, not the message: not passed on.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Where and how to report the delivery of one forwarded answer to its owner. Dropped without
/// [`Report::delivered`], it reports the answer lost.
struct Report {
    client: Client<HttpConnector, Body>,
    url: String,
    secret: String,
    sent: bool,
}

impl Report {
    /// hyper took the answer's last frame: tell the owner its client has it.
    fn delivered(mut self) {
        self.sent = true;
        tokio::spawn(self.send(true));
    }

    fn send(&self, delivered: bool) -> impl Future<Output = ()> + Send + 'static {
        let request = Request::post(format!("{}?delivered={delivered}", self.url))
            .header(NODE_HEADER, self.secret.as_str())
            .body(Body::empty());
        let client = self.client.clone();
        async move {
            let Ok(request) = request else { return };
            match client.request(request).await {
                Ok(response) if response.status().is_success() => {}
                // The owner counts it lost after a while, and its messages come again.
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "a delivery report was refused")
                }
                Err(error) => tracing::debug!(%error, "a delivery report was not sent"),
            }
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.sent {
            tokio::spawn(self.send(false));
        }
    }
}
