//! What every request passes before any route, `/mcp` included, when the server serves a
//! listener: the checks that keep a browser page elsewhere out of a local `hark serve` (open
//! loopback mode has no admin token), the rate limit of requests without a known token, and the
//! `Connection: close` that tells an HTTP/1.1 client its connection ends with this answer.
//!
//! - `Host` (or HTTP/2's `:authority`) must be a loopback name (`localhost`, `127.0.0.1`,
//!   `[::1]`) with the bound port (or none), or a configured name (`[server] allowed_hosts`,
//!   any port; `"*"` any name): a page that rebinds its own DNS name to 127.0.0.1 still sends
//!   its own name.
//! - A cross-site request is refused: `Sec-Fetch-Site` other than `same-origin` or `none`, or an
//!   `Origin` whose host and port are not the request's own.
//! - A request body must be JSON (`Content-Type: application/json`): an HTML form or a
//!   `text/plain` fetch, which a browser sends cross-site without asking, is refused `415`.
//! - Without a known token, requests count against their peer address (`App::screen`).
//! - An HTTP/1.1 answer sent before the request's body was read (a `401` before the body
//!   arrived, say) says `Connection: close`: hyper cannot find the next request behind an
//!   unread body, so it closes the connection, and the client should know.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};

use super::error::ApiError;
use super::input::bearer;
use crate::app::App;

/// What the edge checks are told: the names answered and the bound port.
#[derive(Clone)]
pub(crate) struct Edge {
    pub(crate) app: App,
    /// Configured names (lowercase); `"*"` answers any.
    pub(crate) allowed_hosts: Arc<[String]>,
    /// The port the server is bound to.
    pub(crate) port: u16,
}

/// What the edge makes of a request.
pub(crate) enum Admission {
    /// Let through, with what its answer must say.
    Admitted { request: Request, closing: Closing },
    /// Answered here.
    Refused(Response),
}

/// Whether an answer must say `Connection: close`: an HTTP/1.1 answer sent before the
/// request's body was read to its end (hyper then closes the connection).
pub(crate) struct Closing(Option<Arc<AtomicBool>>);

impl Closing {
    pub(crate) fn apply(self, response: &mut Response) {
        if self.0.is_some_and(|read| !read.load(Ordering::Acquire)) {
            close(response);
        }
    }
}

fn close(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

impl Edge {
    /// Lets `request` through, or answers it here. Called by the accept loop for every request,
    /// before any route (no middleware future of its own: a waiting `check` keeps its request's
    /// futures for up to a minute, so every byte of them counts, times thousands).
    pub(crate) fn admit(&self, request: Request, peer: SocketAddr) -> Admission {
        let http1 = request.version() <= Version::HTTP_11;
        let done = request.body().is_end_stream();
        if let Some(error) = self.refuse(&request, peer) {
            let mut response = error.into_response();
            if http1 && !done {
                close(&mut response);
            }
            return Admission::Refused(response);
        }
        if !http1 || done {
            return Admission::Admitted {
                request,
                closing: Closing(None),
            };
        }
        let read = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            Body::new(Watched {
                body,
                read: Arc::clone(&read),
            })
        });
        Admission::Admitted {
            request,
            closing: Closing(Some(read)),
        }
    }

    /// The refusal of a request that may not go further, if it may not.
    fn refuse(&self, request: &Request, peer: SocketAddr) -> Option<ApiError> {
        let headers = request.headers();
        // Forwarded by another node, which made these checks when the request arrived there.
        if super::forward::from_node(&self.app, headers) {
            return None;
        }
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()));
        let Some(authority) = authority.filter(|a| self.host_allowed(a)) else {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "This server does not answer to the host {:?}: use localhost:{} or a name \
                     in [server] allowed_hosts.",
                    authority.unwrap_or(""),
                    self.port
                ),
            ));
        };
        if cross_site(headers, authority) {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Cross-site requests are refused: call the API from the same origin or \
                 outside a browser.",
            ));
        }
        if writes(request.method()) && !request.body().is_end_stream() && !is_json(headers) {
            return Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "A request body must be JSON: send 'Content-Type: application/json'.",
            ));
        }
        let token = bearer(headers).ok().flatten();
        if let Err(error) = self.app.screen(peer.ip(), token) {
            return Some(error.into());
        }
        None
    }

    fn host_allowed(&self, authority: &str) -> bool {
        if self.allowed_hosts.iter().any(|h| h == "*") {
            return true;
        }
        let Some((name, port)) = split_authority(authority) else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let loopback = matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]");
        (loopback && port.is_none_or(|p| p == self.port)) || self.allowed_hosts.contains(&name)
    }
}

/// `name[:port]`, with `[v6]` names kept in brackets; `None` when the port is not a number.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    };
    match port {
        Some(port) => Some((name, Some(port.parse().ok()?))),
        None => Some((name, None)),
    }
}

/// Whether a browser says this request comes from another site or origin.
fn cross_site(headers: &HeaderMap, authority: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return true;
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => false,
        Some(Ok(origin)) => {
            let own = origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(authority));
            !own
        }
        Some(Err(_)) => true,
    }
}

fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || media.rsplit_once('+').is_some_and(|(kind, suffix)| {
            kind.to_ascii_lowercase().starts_with("application/")
                && suffix.eq_ignore_ascii_case("json")
        })
}

/// A request body that records when it has been read to its end.
struct Watched {
    body: Body,
    read: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_name_and_port() {
        assert_eq!(
            split_authority("localhost:7878"),
            Some(("localhost", Some(7878)))
        );
        assert_eq!(split_authority("localhost"), Some(("localhost", None)));
        assert_eq!(split_authority("[::1]:80"), Some(("[::1]", Some(80))));
        assert_eq!(split_authority("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_authority("host:port"), None);
    }

    #[test]
    fn json_media_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("text/plain+json"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
