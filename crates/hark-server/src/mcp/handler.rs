//! [`HarkMcp`]: the MCP server handler and its eight tools.

use std::sync::{Arc, OnceLock};

use hark_core::protocol::Action;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ServerCapabilities, ServerConfig,
};
use rmcp::schemars::JsonSchema;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::Value;

use super::{MAX_MCP_CHECK_MS, ParticipantSession, ToolError, render};

const INSTRUCTIONS: &str = "You are a participant in a hark conversation. Write privately with \
append (and undo, reset, preview), then publish with push. Every tool result also shows the \
messages that arrived since you last looked, so you hear others while you write. A push is held \
when new messages arrived that you have not seen: read them, then push again or revise. To wait \
for others, call check; it returns after at most 60 seconds, so simply call it again.";

const APPEND: &str = "Add text to the end of your private draft; nobody sees it until you push. \
Like every tool here, the result also shows messages that arrived since you last looked, so you \
hear others while you write: if one changes what you want to say, revise with undo or reset.";
const UNDO: &str = "Remove the most recently appended segment of your draft and return its text. \
Also shows messages that arrived meanwhile.";
const RESET: &str = "Discard your whole draft. Also shows messages that arrived meanwhile.";
const PREVIEW: &str = "Show the exact text push would send now (your draft's segments joined as \
they are). Also shows messages that arrived meanwhile.";
const PUSH: &str = "Publish your draft as one message. If others wrote something you have not \
seen yet, the push is held instead: nothing is sent, your draft stays, and the new messages are \
shown; read them, then push again to send as is, or revise first. force=true skips that check; a \
client_id makes a retry safe (the same id never sends twice).";
const CHECK: &str = "Wait for new messages: returns as soon as one arrives, or after timeout_ms \
(default 25000, at most 60000) saying nothing new. It never runs longer than 60 seconds because \
MCP clients drop longer calls: simply call it again to keep listening.";
const HISTORY: &str = "Read past messages with seq greater than after (default 0), oldest first, \
at most limit (default 100, at most 1000). Does not change which messages count as new for you.";
const WHOAMI: &str = "Who you are here: your name, the conversation's id and title, the other \
participants, the last message's seq and who is composing.";

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct AppendParams {
    /// The text to add to the end of your draft (segments are joined exactly, without a
    /// separator, so include spaces where you want them).
    pub text: String,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct PushParams {
    /// Send even if unseen messages arrived (default false: the push is held so you read them).
    #[serde(default)]
    pub force: Option<bool>,
    /// A fresh random id for this message; pushing again with the same id never sends twice.
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// How long to wait for a new message, in milliseconds (default 25000, at most 60000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Return messages with a seq greater than this (default 0: from the start).
    #[serde(default)]
    pub after: Option<u64>,
    /// How many messages at most (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The MCP server: eight tools over a [`ParticipantSession`].
///
/// Over stdio the session is fixed when the handler is made. Over streamable HTTP a handler
/// may be shared by requests of several participants, so each request brings its own session,
/// put into the request's extensions by the `/mcp` authentication layer.
#[derive(Clone)]
pub struct HarkMcp {
    session: Option<Arc<dyn ParticipantSession>>,
    tool_router: ToolRouter<HarkMcp>,
}

/// The session of one HTTP request, set by the `/mcp` authentication layer.
#[derive(Clone)]
pub(crate) struct RequestSession(pub Arc<dyn ParticipantSession>);

impl HarkMcp {
    /// A handler that acts for `session` on every call (stdio).
    pub fn for_session(session: Arc<dyn ParticipantSession>) -> Self {
        HarkMcp {
            session: Some(session),
            tool_router: router(),
        }
    }

    /// A handler that acts for whoever each HTTP request authenticated as.
    pub(crate) fn per_request() -> Self {
        HarkMcp {
            session: None,
            tool_router: router(),
        }
    }

    fn session(
        &self,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Arc<dyn ParticipantSession>, ToolError> {
        if let Some(session) = &self.session {
            return Ok(Arc::clone(session));
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<RequestSession>())
            .map(|s| Arc::clone(&s.0))
            .ok_or_else(|| {
                ToolError::new(
                    "unauthorized",
                    "Send your participant token: 'Authorization: Bearer <token>'.",
                )
            })
    }

    async fn act(&self, ctx: &RequestContext<RoleServer>, action: Action) -> CallToolResult {
        let session = match self.session(ctx) {
            Ok(session) => session,
            Err(error) => return failure(&error),
        };
        // rmcp only cancels the context's token when the client cancels the call or goes away;
        // the future must be dropped for a waiting `check` to be withdrawn (locally through
        // `Handle::act`'s drop guard, remotely by closing the HTTP request), or it would hand
        // messages over to nobody.
        let result = tokio::select! {
            result = session.act(action) => result,
            () = ctx.ct.cancelled() => Err(ToolError::new(
                "cancelled",
                "The call was cancelled before it finished.",
            )),
        };
        match result {
            Ok(envelope) => success(render::envelope(&envelope, session.participant()), envelope),
            Err(error) => failure(&error),
        }
    }
}

/// The tool list never changes, so it is built once.
fn router() -> ToolRouter<HarkMcp> {
    static ROUTER: OnceLock<ToolRouter<HarkMcp>> = OnceLock::new();
    ROUTER.get_or_init(HarkMcp::tool_router).clone()
}

#[tool_router]
impl HarkMcp {
    #[tool(description = APPEND)]
    async fn append(
        &self,
        Parameters(p): Parameters<AppendParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.act(&ctx, Action::Append { text: p.text }).await
    }

    #[tool(description = UNDO)]
    async fn undo(
        &self,
        _: Parameters<NoParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.act(&ctx, Action::Undo).await
    }

    #[tool(description = RESET)]
    async fn reset(
        &self,
        _: Parameters<NoParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.act(&ctx, Action::Reset).await
    }

    #[tool(description = PREVIEW)]
    async fn preview(
        &self,
        _: Parameters<NoParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        self.act(&ctx, Action::Preview).await
    }

    #[tool(description = PUSH)]
    async fn push(
        &self,
        Parameters(p): Parameters<PushParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let action = Action::Push {
            force: p.force.unwrap_or(false),
            client_id: p.client_id,
        };
        self.act(&ctx, action).await
    }

    #[tool(description = CHECK)]
    async fn check(
        &self,
        Parameters(p): Parameters<CheckParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        // The server clamps to its own maximum too; this keeps an MCP call under a minute even
        // where the server allows longer checks over HTTP.
        let timeout_ms = Some(
            p.timeout_ms
                .map_or(DEFAULT_CHECK_MS, |t| t.min(MAX_MCP_CHECK_MS)),
        );
        self.act(&ctx, Action::Check { timeout_ms }).await
    }

    #[tool(description = HISTORY)]
    async fn history(
        &self,
        Parameters(p): Parameters<HistoryParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let session = match self.session(&ctx) {
            Ok(session) => session,
            Err(error) => return failure(&error),
        };
        let after = p.after.unwrap_or(0);
        match session.history(after, p.limit).await {
            Ok(page) => success(render::history(&page, after), page),
            Err(error) => failure(&error),
        }
    }

    #[tool(description = WHOAMI)]
    async fn whoami(
        &self,
        _: Parameters<NoParams>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let session = match self.session(&ctx) {
            Ok(session) => session,
            Err(error) => return failure(&error),
        };
        match session.whoami().await {
            Ok(who) => success(render::whoami(&who), who),
            Err(error) => failure(&error),
        }
    }
}

/// What `check` waits without a `timeout_ms` (SPEC.md section 2's default).
const DEFAULT_CHECK_MS: u64 = 25_000;

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HarkMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hark", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = ToolCallContext::new(self, request, context);
        let response = self.tool_router.call(call).await?;
        Ok(match response {
            CallToolResponse::Complete(result) => bad_arguments(result).into(),
            other => other,
        })
    }
}

/// A successful tool result: the text for the model, the wire JSON as structured content.
fn success(text: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// A tool error with the HTTP API's code and sentence, in the text and as structured content.
fn failure(error: &ToolError) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(render::error(error))]);
    result.structured_content = Some(error.to_json());
    result
}

/// rmcp reports arguments that do not fit a tool's schema as a bare tool error; give it the
/// `bad_request` code that the HTTP API uses for a body of the wrong shape.
fn bad_arguments(result: CallToolResult) -> CallToolResult {
    const PREFIX: &str = "failed to deserialize parameters:";
    if result.is_error != Some(true) || result.structured_content.is_some() {
        return result;
    }
    let detail = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .and_then(|t| t.text.strip_prefix(PREFIX))
        .map(|d| d.trim().to_owned());
    match detail {
        Some(detail) => failure(&ToolError::new(
            "bad_request",
            format!("The arguments are not valid for this tool: {detail}."),
        )),
        None => result,
    }
}
