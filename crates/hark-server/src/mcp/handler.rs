//! [`HarkMcp`]: the MCP server handler. It lists the tools of `crate::tools` and dispatches a
//! call through that table's decoder to the participant's session.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use tokio_util::sync::CancellationToken;

use super::delivery::{Outbox, RequestScope};
use super::render;
use super::session::{Answer, Delivery, ParticipantSession, ToolError};
use crate::tools::{self, ToolCall, ToolCallError, ToolLimits};

/// MCP clients give up on a tool call after a minute (the TypeScript SDK's default request
/// timeout is 60 s), so `check` never waits longer than this over MCP, whatever the server's own
/// `max_check_ms` allows: well under the minute, so the answer arrives before the client quits.
pub const MAX_MCP_CHECK_MS: u64 = 50_000;

/// The MCP server: the tools over a [`ParticipantSession`].
///
/// Over stdio the session is fixed when the handler is made. Over streamable HTTP a handler
/// may be shared by requests of several participants, so each request brings its own session,
/// put into the request's extensions by the `/mcp` authentication layer.
#[derive(Clone)]
pub struct HarkMcp {
    session: Option<Arc<dyn ParticipantSession>>,
    /// Over stdio: where answers wait until they are written.
    outbox: Option<Arc<Outbox>>,
    tools: Arc<[Tool]>,
    instructions: Arc<str>,
}

/// The session of one HTTP request, set by the `/mcp` authentication layer.
#[derive(Clone)]
pub(crate) struct RequestSession(pub Arc<dyn ParticipantSession>);

impl HarkMcp {
    /// A handler that acts for `session` on every call (stdio). Its descriptions state the
    /// protocol's default limits (a remote server's own are not known here).
    pub fn for_session(session: Arc<dyn ParticipantSession>) -> Self {
        let limits = hark_core::protocol::Limits::default();
        HarkMcp::new(Some(session), limits.default_check_ms, limits.max_check_ms)
    }

    /// A handler that acts for whoever each HTTP request authenticated as, describing the
    /// server's own `check` limits.
    pub(crate) fn per_request(default_check_ms: u64, max_check_ms: u64) -> Self {
        HarkMcp::new(None, default_check_ms, max_check_ms)
    }

    fn new(
        session: Option<Arc<dyn ParticipantSession>>,
        default_check_ms: u64,
        max_check_ms: u64,
    ) -> Self {
        let max_check_ms = max_check_ms.min(MAX_MCP_CHECK_MS);
        let limits = ToolLimits {
            default_check_ms: default_check_ms.min(max_check_ms),
            max_check_ms,
        };
        let tools: Vec<Tool> = tools::table(&limits)
            .into_iter()
            .map(|t| {
                let schema = match t.schema {
                    Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                let mut tool = Tool::new(t.name, t.description, Arc::new(schema));
                if let Value::Object(output) = t.output_schema {
                    tool.output_schema = Some(Arc::new(output));
                }
                tool
            })
            .collect();
        HarkMcp {
            session,
            outbox: None,
            tools: tools.into(),
            instructions: tools::instructions(&limits).into(),
        }
    }

    /// Over stdio: answers are settled by the transport that writes them (see `stdio`).
    pub(crate) fn with_outbox(mut self, outbox: Arc<Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Where this call's answer waits until it reached the client.
    fn sink(&self, ctx: &RequestContext<RoleServer>) -> Sink {
        if let Some(outbox) = &self.outbox {
            return Sink::Stdio(Arc::clone(outbox), ctx.id.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<RequestScope>>())
            .map_or(Sink::Direct, |scope| Sink::Http(Arc::clone(scope)))
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

    /// Runs one decoded call for the request's participant.
    async fn run(&self, ctx: &RequestContext<RoleServer>, call: ToolCall) -> CallToolResult {
        let session = match self.session(ctx) {
            Ok(session) => session,
            Err(error) => return failure(&error),
        };
        match call {
            ToolCall::Act(action) => {
                let action = match action {
                    // The server clamps to its own maximum too; this keeps an MCP call under a
                    // minute even where the server allows longer checks over HTTP.
                    hark_core::protocol::Action::Check { timeout_ms } => {
                        hark_core::protocol::Action::Check {
                            timeout_ms: timeout_ms.map(|t| t.min(MAX_MCP_CHECK_MS)),
                        }
                    }
                    other => other,
                };
                // rmcp cancels the context's token only when the client cancels the call (or a
                // stateless request's connection drops); a session's POST may drop while the
                // call runs on, and a stdio client may die. The sink knows those. The future
                // must be dropped for a waiting `check` to be withdrawn (locally by the service,
                // remotely by closing the HTTP request), or it would hand messages over to
                // nobody.
                let sink = self.sink(ctx);
                let gone = sink.gone();
                let result = tokio::select! {
                    result = session.act(action) => result,
                    () = ctx.ct.cancelled() => Err(ToolError::new(
                        "cancelled",
                        "The call was cancelled before it finished.",
                    )),
                    () = gone.cancelled() => Err(ToolError::new(
                        "cancelled",
                        "The client went away before the call finished.",
                    )),
                };
                match result {
                    Ok(Answer { envelope, delivery }) => {
                        sink.hold(delivery);
                        success(render::envelope(&envelope, session.participant()), envelope)
                    }
                    Err(error) => failure(&error),
                }
            }
            ToolCall::History { after, limit } => match session.history(after, limit).await {
                Ok(page) => success(render::history(&page, after), page),
                Err(error) => failure(&error),
            },
            ToolCall::Whoami => match session.whoami().await {
                Ok(who) => success(render::whoami(&who), who),
                Err(error) => failure(&error),
            },
        }
    }
}

impl ServerHandler for HarkMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("hark", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.instructions.to_string())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.map_or(Value::Null, Value::Object);
        let result = match tools::decode(&request.name, arguments) {
            Ok(call) => self.run(&context, call).await,
            Err(ToolCallError::Unknown(_)) => {
                return Err(ErrorData::invalid_params("tool not found", None));
            }
            // Arguments of the wrong shape get the code the HTTP API gives a body of the wrong
            // shape.
            Err(ToolCallError::BadArguments(detail)) => failure(&ToolError::new(
                "bad_request",
                format!("The arguments are not valid for this tool: {detail}."),
            )),
        };
        Ok(result.into())
    }
}

/// Where a call's answer waits for its delivery.
enum Sink {
    /// Written by the stdio transport, which settles it by JSON-RPC id.
    Stdio(Arc<Outbox>, rmcp::model::RequestId),
    /// Carried by the response body of this `POST /mcp`.
    Http(Arc<RequestScope>),
    /// Nobody reports delivery (a handler driven directly): it counts as delivered.
    Direct,
}

impl Sink {
    /// Fires when the client is known to be gone.
    fn gone(&self) -> CancellationToken {
        match self {
            Sink::Stdio(outbox, _) => outbox.closed(),
            Sink::Http(scope) => scope.gone(),
            Sink::Direct => CancellationToken::new(),
        }
    }

    fn hold(self, delivery: Delivery) {
        match self {
            Sink::Stdio(outbox, id) => outbox.hold(id, delivery),
            Sink::Http(scope) => scope.hold(delivery),
            Sink::Direct => delivery.delivered(),
        }
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
