//! The handlers of SPEC.md section 3 (and `GET /v1/whoami`, `GET /v1/agents`, `/healthz`, `/`).
//! Each one reads the token, decodes, calls the service once and encodes: nothing else.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hark_core::protocol::{ActionKind, Confirm, ParticipantName};

use super::delivery::{Relay, participant_key, when_delivered};
use super::error::ApiError;
use super::input::{bearer, read_body};
use super::state::HttpState;
use crate::app::{AppError, Caller, ParticipantSpec, Pending, display_name};
use crate::wire::{self, WireCreated, WireCreatedParticipant, WireDescription, WireWhoami};

/// The web chat (SPEC.md section 7): one self-contained page, compiled into the binary.
pub(super) async fn web_chat() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../web/index.html"),
    )
        .into_response()
}

/// The built-in agents a conversation can include. Names only: nothing secret.
pub(super) async fn list_agents(State(state): State<HttpState>) -> Response {
    Json(wire::WireAgents::from(&state.app.agents()[..])).into_response()
}

pub(super) async fn healthz(State(state): State<HttpState>) -> Result<Response, ApiError> {
    state.app.health().await?;
    Ok(Json(wire::WireHealth {
        status: "ok".to_owned(),
    })
    .into_response())
}

pub(super) async fn create_conversation(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let admin = state.app.admin(&caller(&state, &headers).await?)?;
    let body = read_body(
        &headers,
        body,
        state.config.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    let request: wire::CreateConversation = wire::parse(&body)?;
    let participants = request
        .participants
        .into_iter()
        .map(spec)
        .collect::<Result<Vec<_>, _>>()?;
    let created = state
        .app
        .create(&admin, request.title, participants)
        .await?;
    Ok((StatusCode::CREATED, Json(WireCreated::from(&created))).into_response())
}

pub(super) async fn add_participant(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    let admin = state.app.admin(&caller(&state, &headers).await?)?;
    let body = read_body(
        &headers,
        body,
        state.config.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    let requested: wire::NewParticipant = wire::parse(&body)?;
    let added = state
        .app
        .add_participant(&admin, &id, spec(requested)?)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WireCreatedParticipant::from(&added)),
    )
        .into_response())
}

pub(super) async fn describe(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    let reader = state.app.reader(&caller(&state, &headers).await?, &id)?;
    let description = state.app.describe(&reader).await?;
    Ok(Json(WireDescription::from(&description)).into_response())
}

/// `GET /v1/whoami`: who the participant token belongs to, and its conversation. A client that
/// holds only a token (`hark mcp --url … --token …`) learns its conversation id here.
pub(super) async fn whoami(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let me = state
        .app
        .any_participant(&caller(&state, &headers).await?)?;
    let description = state.app.whoami(&me).await?;
    Ok(Json(WireWhoami::new(&description, &me)).into_response())
}

pub(super) async fn history(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<wire::HistoryQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    let me = state
        .app
        .participant(&caller(&state, &headers).await?, &id)
        .await?;
    let Query(query) = query.map_err(bad_query)?;
    let page = state.app.history(&me, query.after, query.limit).await?;
    Ok(Json(wire::WireHistory::from(&page)).into_response())
}

/// The largest body `POST …/attachments` reads: the configured attachment size in base64, plus
/// room for the JSON around it.
pub(crate) fn attachment_body_limit(max_attachment_bytes: usize) -> usize {
    max_attachment_bytes.div_ceil(3) * 4 + 1024
}

pub(super) async fn upload_attachment(
    State(state): State<HttpState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    let me = state
        .app
        .participant(&caller(&state, &headers).await?, &id)
        .await?;
    let limit = attachment_body_limit(state.config.max_attachment_bytes);
    let body = read_body(&headers, body, limit, state.body_timeout()).await?;
    let request: wire::NewAttachment = wire::parse(&body)?;
    let data = request.bytes()?;
    let stored = state.app.attach(&me, &request.mime, data).await?;
    Ok((StatusCode::CREATED, Json(wire::WireAttached::from(&stored))).into_response())
}

/// The bytes of an attachment, as their own type; `nosniff` keeps a browser from reading them as
/// anything else.
pub(super) async fn get_attachment(
    State(state): State<HttpState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((id, attachment)) = path.map_err(bad_path)?;
    let me = state
        .app
        .participant(&caller(&state, &headers).await?, &id)
        .await?;
    let stored = state.app.attachment(&me, &attachment).await?;
    Ok((
        [
            (header::CONTENT_TYPE, stored.mime),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".to_owned(),
            ),
        ],
        stored.data,
    )
        .into_response())
}

/// `POST /v1/conversations/{id}/{action}`. A `check` waits here up to a minute, and a client
/// may park thousands: what waits is kept small. Everything before the wait (the caller, the
/// body, the relay's report) runs in its own boxed future, gone once the action has reached
/// its conversation; and this is a plain `fn`, so the extractors are not stored a second time
/// beside the future that consumed them.
pub(super) fn act(
    State(state): State<HttpState>,
    path: Result<Path<(String, String)>, PathRejection>,
    relay: Option<Extension<Relay>>,
    headers: HeaderMap,
    body: Body,
) -> impl Future<Output = Result<Response, ApiError>> + Send {
    let begun = Box::pin(begin_act(state, path, relay, headers, body));
    async move {
        let (pending, relay) = begun.await?;
        let acted = pending.finish().await.map_err(AppError::from)?;
        let response = Json(wire::WireEnvelope::from(&acted.envelope)).into_response();
        if !acted.ticket.is_pending() {
            return Ok(response);
        }
        // The result counts as heard once hyper took the whole body (or the node that forwarded
        // the request says its client did); if the connection goes first, the ticket is dropped
        // and the result's messages come again.
        let ticket = acted.ticket;
        Ok(when_delivered(
            response,
            Box::new(|| ticket.delivered()),
            relay.as_ref().map(|(relay, who)| (relay, who.as_str())),
        ))
    }
}

/// [`act`] up to the wait: the action handed to its conversation, and on a node of several the
/// relay with the participant's key, under which its relayed answers wait.
async fn begin_act(
    state: HttpState,
    path: Result<Path<(String, String)>, PathRejection>,
    relay: Option<Extension<Relay>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(Pending, Option<(Relay, String)>), ApiError> {
    let Path((id, action_name)) = path.map_err(bad_path)?;
    let me = state
        .app
        .participant(&caller(&state, &headers).await?, &id)
        .await?;
    let kind = action_kind(&action_name)?;
    let body = read_body(
        &headers,
        body,
        state.config.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    let action = wire::decode_action(kind, &body)?;
    let confirm = confirm(&headers)?;
    let relay = relay.map(|Extension(relay)| {
        let who = participant_key(me.conversation(), me.name().as_str());
        (relay, who)
    });
    if let Some((relay, who)) = &relay {
        // An earlier answer relayed by another node: its report comes first.
        relay.parked.reported(who).await;
    }
    let pending = state.app.begin_act(&me, action, confirm).await?;
    Ok((pending, relay))
}

/// How the client confirms this request's result: itself, if it sends `Hark-Received` (the
/// highest envelope cursor it has received), else by the transport delivering the body.
fn confirm(headers: &HeaderMap) -> Result<Confirm, ApiError> {
    let Some(value) = headers.get(wire::RECEIVED_HEADER) else {
        return Ok(Confirm::Transport);
    };
    let received = value
        .to_str()
        .ok()
        .and_then(wire::parse_received)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "The {} header must be the highest envelope cursor you received, a whole \
                 number such as 0.",
                wire::RECEIVED_HEADER_NAME
            ))
        })?;
    Ok(Confirm::Client { received })
}

/// Decodes the body of `POST /v1/conversations/{id}/{action}` exactly as the route does: the
/// entry point the request-decoding fuzz target drives.
pub fn decode_action_request(
    action: &str,
    body: &[u8],
) -> Result<hark_core::protocol::Action, ApiError> {
    Ok(wire::decode_action(action_kind(action)?, body)?)
}

// ---- helpers ------------------------------------------------------------------------------------

pub(super) async fn caller(state: &HttpState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(state.app.authenticate(bearer(headers)?).await?)
}

fn action_kind(action: &str) -> Result<ActionKind, ApiError> {
    ActionKind::parse(action).ok_or_else(|| {
        let known: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad_request(format!(
            "Unknown action '{action}': use one of {}.",
            known.join(", ")
        ))
    })
}

/// A participant of a request body, its name checked once here.
fn spec(requested: wire::NewParticipant) -> Result<ParticipantSpec, ApiError> {
    Ok(ParticipantSpec {
        name: participant_name(&requested.name)?,
        kind: requested.kind.into(),
        agent: requested.agent,
        display_name: requested
            .display_name
            .as_deref()
            .map(|raw| {
                display_name(raw)
                    .map_err(|e| ApiError::bad_request(format!("Bad display name {raw:?}: {e}")))
            })
            .transpose()?,
    })
}

/// A participant name from a request, or the 400 that says what a name may be.
pub(crate) fn participant_name(raw: &str) -> Result<ParticipantName, ApiError> {
    ParticipantName::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("Bad participant name {raw:?}: {e}.")))
}

pub(super) fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("The path is not valid: {rejection}."))
}

pub(super) fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("The query string is not valid: {rejection}."))
}
