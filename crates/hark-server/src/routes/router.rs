//! The routes of SPEC.md section 3, assembled, with `/mcp` mounted beside them.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::conversations::{
    act, add_participant, create_conversation, describe, get_attachment, healthz, history,
    list_agents, upload_attachment, web_chat, whoami,
};
use super::error::ApiError;
use super::sse;
use super::state::HttpState;

/// Every route, `mounted` (the `/mcp` door) included, with JSON answers for unknown routes and
/// methods.
pub(crate) fn router(state: HttpState, mounted: Router<HttpState>) -> Router {
    Router::new()
        .route("/", get(web_chat))
        .route("/healthz", get(healthz))
        .route("/v1/agents", get(list_agents))
        .route("/v1/whoami", get(whoami))
        .route("/v1/conversations", post(create_conversation))
        .route("/v1/conversations/{id}", get(describe))
        .route("/v1/conversations/{id}/participants", post(add_participant))
        .route("/v1/conversations/{id}/messages", get(history))
        .route("/v1/conversations/{id}/events", get(sse::stream))
        .route(
            "/v1/conversations/{id}/attachments",
            post(upload_attachment),
        )
        .route(
            "/v1/conversations/{id}/attachments/{attachment}",
            get(get_attachment),
        )
        .route("/v1/conversations/{id}/{action}", post(act))
        .merge(mounted)
        .fallback(|| async {
            ApiError::not_found("No such route: see SPEC.md section 3 for the routes.")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This route does not take that method.",
            )
        })
        .with_state(state)
}
