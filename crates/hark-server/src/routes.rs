//! The routes of SPEC.md section 3 (except `/` and `/mcp`, which `mcp::http` adds), plus
//! `GET /v1/whoami`.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hark_core::protocol::{ActionKind, ParticipantKind, ParticipantName};
use hark_store::{NewConversation, NewParticipant, TokenOwner};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Caller, hash_token, mint_conversation_id, mint_token};
use crate::conversation::{ActError, Handle, now};
use crate::error::ApiError;
use crate::events;
use crate::wire;

const MAX_PARTICIPANTS: usize = 64;
const MAX_TITLE_CHARS: usize = 200;
const HISTORY_DEFAULT_LIMIT: usize = 100;
const HISTORY_MAX_LIMIT: usize = 1000;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web_chat))
        .route("/healthz", get(healthz))
        .route("/v1/agents", get(list_agents))
        .route("/v1/whoami", get(whoami))
        .route("/v1/conversations", post(create_conversation))
        .route("/v1/conversations/{id}", get(describe))
        .route("/v1/conversations/{id}/participants", post(add_participant))
        .route("/v1/conversations/{id}/messages", get(history))
        .route("/v1/conversations/{id}/events", get(events::stream))
        .route("/v1/conversations/{id}/{action}", post(act))
        .merge(crate::mcp::http::router(state.clone()))
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

/// The web chat (SPEC.md section 7): one self-contained page, compiled into the binary.
async fn web_chat() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../web/index.html"),
    )
        .into_response()
}

/// The built-in agents a conversation can include. Names only: nothing secret.
async fn list_agents(State(state): State<AppState>) -> Response {
    let agents: Vec<Value> = state
        .agents
        .names()
        .map(|(name, mode)| json!({ "name": name, "mode": mode }))
        .collect();
    Json(json!({ "agents": agents })).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn create_conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.auth.require_admin(&headers, &*state.store).await?;
    let body = read_body(&state, &headers, body).await?;
    let request: wire::CreateConversation = wire::parse(&body)?;
    if let Some(title) = &request.title
        && title.chars().count() > MAX_TITLE_CHARS
    {
        return Err(ApiError::bad_request(format!(
            "A title is at most {MAX_TITLE_CHARS} characters."
        )));
    }
    if request.participants.is_empty() || request.participants.len() > MAX_PARTICIPANTS {
        return Err(ApiError::bad_request(format!(
            "A conversation starts with 1 to {MAX_PARTICIPANTS} participants."
        )));
    }
    let mut participants = Vec::with_capacity(request.participants.len());
    for p in request.participants {
        participants.push((
            participant_name(&p.name)?,
            ParticipantKind::from(p.kind),
            p.agent,
        ));
    }
    let (id, listed) = create_listed(&state, request.title.clone(), participants).await?;
    let body = json!({ "id": id, "title": request.title, "participants": listed });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Creates a conversation; returns its id and each participant's token, in order.
pub(crate) async fn create(
    state: &AppState,
    title: Option<String>,
    participants: Vec<(ParticipantName, ParticipantKind, Option<String>)>,
) -> Result<(String, Vec<String>), ApiError> {
    let (id, listed) = create_listed(state, title, participants).await?;
    let tokens = listed
        .iter()
        .map(|p| p["token"].as_str().unwrap_or_default().to_owned())
        .collect();
    Ok((id, tokens))
}

async fn create_listed(
    state: &AppState,
    title: Option<String>,
    requested: Vec<(ParticipantName, ParticipantKind, Option<String>)>,
) -> Result<(String, Vec<Value>), ApiError> {
    let mut participants: Vec<NewParticipant> = Vec::with_capacity(requested.len());
    let mut tokens = Vec::with_capacity(requested.len());
    for (name, kind, agent) in requested {
        if participants.iter().any(|q| q.name == name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_name",
                format!("Two participants are named '{name}': names are unique in a conversation."),
            ));
        }
        let (participant, token) = new_participant(state, name, kind, agent)?;
        tokens.push(token);
        participants.push(participant);
    }
    let id = mint_conversation_id();
    state
        .store
        .create_conversation(NewConversation {
            id: id.clone(),
            title,
            created_at: now(),
            participants: participants.clone(),
        })
        .await?;
    let mut listed = Vec::with_capacity(participants.len());
    for (participant, token) in participants.into_iter().zip(tokens) {
        state.auth.remember(
            participant.token_hash,
            TokenOwner {
                conversation: id.clone(),
                name: participant.name.clone(),
                kind: participant.kind,
            },
        );
        listed.push(participant_json(&participant, &token));
        if let Some(agent) = &participant.agent {
            state
                .agents
                .start(state, &id, participant.name.clone(), agent);
        }
    }
    Ok((id, listed))
}

async fn add_participant(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    state.auth.require_admin(&headers, &*state.store).await?;
    let body = read_body(&state, &headers, body).await?;
    let requested: wire::NewParticipant = wire::parse(&body)?;
    let name = participant_name(&requested.name)?;
    let (participant, token) =
        new_participant(&state, name, requested.kind.into(), requested.agent)?;
    let handle = conversation(&state, &id).await?;
    handle.add_participant(participant.clone()).await?;
    state.auth.remember(
        participant.token_hash,
        TokenOwner {
            conversation: id.clone(),
            name: participant.name.clone(),
            kind: participant.kind,
        },
    );
    if let Some(agent) = &participant.agent {
        state
            .agents
            .start(&state, &id, participant.name.clone(), agent);
    }
    Ok((
        StatusCode::CREATED,
        Json(participant_json(&participant, &token)),
    )
        .into_response())
}

async fn describe(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    state
        .auth
        .require_admin_or_participant(&headers, &*state.store, &id)
        .await?;
    Ok(Json(describe_json(&state, &id).await?).into_response())
}

/// `GET /v1/whoami`: who the participant token belongs to, and its conversation. A client that
/// holds only a token (`hark mcp --url … --token …`) learns its conversation id here.
async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let owner = match state.auth.caller(&headers, &*state.store).await? {
        Some(Caller::Participant(owner)) => owner,
        Some(Caller::Admin) => {
            return Err(ApiError::forbidden(
                "The admin token is nobody in particular: use a participant token.",
            ));
        }
        None => {
            return Err(ApiError::unauthorized(
                "Send your participant token: 'Authorization: Bearer <token>'.",
            ));
        }
    };
    Ok(Json(whoami_json(&state, &owner).await?).into_response())
}

/// The body of `GET /v1/conversations/{id}`.
pub(crate) async fn describe_json(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let handle = conversation(state, id).await?;
    let description = handle.describe().await.map_err(act_error)?;
    let participants: Vec<Value> = description
        .participants
        .iter()
        .map(|(name, kind, agent)| {
            let mut p = json!({ "name": name.as_str(), "kind": kind.as_str() });
            if let Some(agent) = agent {
                p["agent"] = json!(agent);
            }
            p
        })
        .collect();
    Ok(json!({
        "id": id,
        "title": handle.title.as_deref(),
        "participants": participants,
        "last_seq": description.last_seq,
        "receipts": description.receipts.iter().map(wire::receipt).collect::<Vec<_>>(),
        "composing": description.composing.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        "checking": description.checking.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
    }))
}

/// The body of `GET /v1/whoami` (and of the MCP `whoami` tool): the conversation's description
/// with `you: {name, kind}` added.
pub(crate) async fn whoami_json(state: &AppState, owner: &TokenOwner) -> Result<Value, ApiError> {
    let mut body = describe_json(state, &owner.conversation).await?;
    body["you"] = json!({ "name": owner.name.as_str(), "kind": owner.kind.as_str() });
    Ok(body)
}

/// The body of `GET /v1/conversations/{id}/messages`: `{messages, more}`, oldest first.
pub(crate) async fn history_json(
    state: &AppState,
    id: &str,
    after: u64,
    limit: Option<usize>,
) -> Result<Value, ApiError> {
    let limit = limit
        .unwrap_or(HISTORY_DEFAULT_LIMIT)
        .clamp(1, HISTORY_MAX_LIMIT);
    let mut page = state.store.messages_after(id, after, limit + 1).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let messages: Vec<Value> = page.iter().map(wire::message).collect();
    Ok(json!({ "messages": messages, "more": more }))
}

async fn history(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<wire::HistoryQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(bad_path)?;
    state
        .auth
        .require_participant(&headers, &*state.store, &id)
        .await?;
    let Query(query) = query.map_err(bad_query)?;
    Ok(Json(history_json(&state, &id, query.after, query.limit).await?).into_response())
}

async fn act(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((id, action)) = path.map_err(bad_path)?;
    let owner = state
        .auth
        .require_participant(&headers, &*state.store, &id)
        .await?;
    let Some(kind) = ActionKind::parse(&action) else {
        let known: Vec<&str> = ActionKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "Unknown action '{action}': use one of {}.",
            known.join(", ")
        )));
    };
    let body = read_body(&state, &headers, body).await?;
    let action = wire::decode_action(kind, &body)?;
    let handle = conversation(&state, &id).await?;
    let envelope = handle.act(owner.name, action).await.map_err(act_error)?;
    Ok(Json(wire::envelope(&envelope)).into_response())
}

// ---- helpers ------------------------------------------------------------------------------------

/// A JSON response with the right content type; `axum::Json` would do, this keeps the import
/// list of the handlers short.
struct Json<T>(T);

impl IntoResponse for Json<Value> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

pub(crate) async fn conversation(state: &AppState, id: &str) -> Result<Handle, ApiError> {
    state
        .registry
        .get(id)
        .await?
        .ok_or_else(ApiError::conversation_not_found)
}

pub(crate) fn act_error(error: ActError) -> ApiError {
    match error {
        ActError::Refused(error) => error.into(),
        ActError::Unavailable => ApiError::unavailable(),
    }
}

/// Reads the whole body, refusing more than `max_body_bytes` without buffering the excess.
///
/// An oversized body that is not absurdly large is read to its end and dropped before the 413
/// goes out: closing a connection with unread data makes the kernel reset it, and the client
/// would see a broken connection instead of the answer.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;

    /// Beyond this, an oversized body is refused without reading it.
    const DRAIN_MAX_BYTES: u64 = 8 * 1024 * 1024;
    let limit = state.config.max_body_bytes;
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
    let timeout = std::time::Duration::from_millis(state.config.body_read_timeout_ms);
    let finished = tokio::time::timeout(timeout, read).await;
    if seen > limit as u64 {
        return Err(ApiError::too_large(limit));
    }
    match finished {
        Ok(result) => result.map(|()| kept.freeze()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "The request body did not arrive in time: send it at once.",
        )),
    }
}

/// A participant name from a request, or the 400 that says what a name may be.
pub(crate) fn participant_name(raw: &str) -> Result<ParticipantName, ApiError> {
    ParticipantName::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("Bad participant name {raw:?}: {e}.")))
}

fn new_participant(
    state: &AppState,
    name: ParticipantName,
    kind: ParticipantKind,
    agent: Option<String>,
) -> Result<(NewParticipant, String), ApiError> {
    if let Some(agent) = &agent
        && !state.agents.knows(agent)
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_agent",
            format!("No built-in agent named '{agent}' is configured on this server."),
        ));
    }
    let token = mint_token();
    Ok((
        NewParticipant {
            name,
            kind,
            agent,
            token_hash: hash_token(&token),
        },
        token,
    ))
}

fn participant_json(participant: &NewParticipant, token: &str) -> Value {
    let mut value = json!({
        "name": participant.name.as_str(),
        "kind": participant.kind.as_str(),
        "token": token,
    });
    if let Some(agent) = &participant.agent {
        value["agent"] = json!(agent);
    }
    value
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("The path is not valid: {rejection}."))
}

pub(crate) fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!("The query string is not valid: {rejection}."))
}
