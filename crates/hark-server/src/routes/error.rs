//! [`ApiError`]: an error as the HTTP API answers it (SPEC.md section 4). The service's
//! [`AppError`] becomes one here, in the one mapping from error kinds to status codes; the HTTP
//! door's own refusals (a body too large or too slow, a bad path) are made here too.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::{AppError, ErrorKind};
use crate::wire::{BadBody, WireError};

/// An error as the client sees it: a status, a stable code and a sentence to act on.
///
/// Internal causes are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable snake_case code.
    pub code: &'static str,
    /// A sentence a person or a model can act on.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and sentence.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `401 unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `413 too_large`, naming the limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("The request body is larger than {limit} bytes: send less at once."),
        )
    }

    /// `408 timeout`: the body did not arrive in time.
    pub fn body_timeout() -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "The request body did not arrive in time: send it at once.",
        )
    }
}

/// The status of each kind of service error: the one place they are decided.
fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::EmptyText | ErrorKind::TooLong | ErrorKind::UnknownAgent => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorKind::NothingToUndo
        | ErrorKind::EmptyDraft
        | ErrorKind::DuplicateName
        | ErrorKind::LimitReached => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        ApiError::new(status(error.kind()), error.code(), error.message())
    }
}

impl From<BadBody> for ApiError {
    fn from(error: BadBody) -> Self {
        ApiError::bad_request(error.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(WireError::new(self.code, &self.message))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme it wants. Without it, MCP clients take the 401 for
            // an OAuth-protected server and start a discovery flow instead of reporting it.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
