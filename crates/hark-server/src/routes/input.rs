//! What the HTTP door reads from a request before it calls the service: the bearer token and
//! the body, with its size and time limits.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;

use super::error::ApiError;

/// The bearer token of the request, if it sent an `Authorization` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::unauthorized("The Authorization header must be 'Bearer <token>'.");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// Reads the whole body, refusing more than `limit` bytes without buffering the excess, and
/// a body that takes longer than `timeout` to arrive.
///
/// An oversized body that is not absurdly large is read to its end and dropped before the 413
/// goes out: closing a connection with unread data makes the kernel reset it, and the client
/// would see a broken connection instead of the answer.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    /// Beyond this, an oversized body is refused without reading it.
    const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DRAIN_MAX_BYTES) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = body;
    let mut kept = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                ApiError::bad_request("The request body could not be read to the end.")
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len() as u64;
            if seen > DRAIN_MAX_BYTES {
                break;
            }
            if seen <= limit as u64 {
                kept.extend_from_slice(&data);
            }
        }
        Ok::<(), ApiError>(())
    };
    let finished = tokio::time::timeout(timeout, read).await;
    if seen > limit as u64 {
        return Err(ApiError::too_large(limit));
    }
    match finished {
        Ok(result) => result.map(|()| kept.freeze()),
        Err(_) => Err(ApiError::body_timeout()),
    }
}
