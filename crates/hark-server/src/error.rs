//! The one error type of the HTTP surface (SPEC.md section 4).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hark_core::protocol::ActionError;
use hark_store::StoreError;
use serde_json::json;

/// An error as the client sees it: a status, a stable code and a sentence to act on.
///
/// Internal causes are logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("The request body is larger than {limit} bytes: send less at once."),
        )
    }

    pub fn rate_limited() -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests with this token: slow down and retry in a moment.",
        )
    }

    pub fn unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The store is unavailable right now; nothing was changed. Retry shortly.",
        )
    }

    pub fn conversation_not_found() -> Self {
        ApiError::not_found("No conversation has that id.")
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        let status = match error {
            ActionError::EmptyText | ActionError::TooLong { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ActionError::NothingToUndo | ActionError::EmptyDraft => StatusCode::CONFLICT,
            ActionError::InvalidClientId => StatusCode::BAD_REQUEST,
            ActionError::UnknownParticipant => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NameTaken => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_name",
                "A participant with that name is already in this conversation: pick another name.",
            ),
            StoreError::NotFound => ApiError::conversation_not_found(),
            StoreError::Unavailable(cause) | StoreError::Corrupt(cause) => {
                tracing::error!(%cause, "store error");
                ApiError::unavailable()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
