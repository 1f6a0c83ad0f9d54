//! MCP (SPEC.md section 5): one tool server, reached three ways.
//!
//! [`HarkMcp`] is the `rmcp` server handler with the tools `append`, `undo`, `reset`, `preview`,
//! `push`, `check`, `history` and `whoami`. It is written against [`ParticipantSession`], one
//! participant's view of one conversation, which has two implementations:
//!
//! - **local** ([`Server::participant_session`](crate::Server::participant_session), and `/mcp`
//!   on `hark serve`): actions go in process to the conversation's task (`Handle::act`), history
//!   to the store;
//! - **remote** ([`RemoteSession`]): HTTP calls to a running `hark serve` with the participant's
//!   token, for `hark mcp --url … --token …`.
//!
//! Both speak the JSON of the HTTP API (`wire`), so a tool's structured content is byte for byte
//! what the same action answers over HTTP, and an error carries the same code and sentence.
//!
//! **Invariant:** the MCP surface adds no protocol of its own. Every tool is one action of
//! SPEC.md section 2 (or a read: `history`, `whoami`) and its result is that action's envelope;
//! the text content is a rendering of the structured content and nothing else.

mod handler;
pub(crate) mod http;
mod local;
mod remote;
pub(crate) mod render;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use hark_core::protocol::Action;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

pub use handler::HarkMcp;
pub(crate) use local::LocalSession;
pub use remote::RemoteSession;

/// MCP clients drop a tool call that runs longer than about a minute, so `check` never waits
/// longer than this over MCP, whatever the server's own `max_check_ms` allows.
pub const MAX_MCP_CHECK_MS: u64 = 60_000;

/// One participant in one conversation, as the MCP tools see it.
///
/// Every method answers the JSON body the HTTP API would answer for the same request, or the
/// error it would answer (code and sentence).
#[async_trait]
pub trait ParticipantSession: Send + Sync + 'static {
    /// Applies one action; `Ok` is the common envelope (SPEC.md section 2) as wire JSON.
    async fn act(&self, action: Action) -> Result<Value, ToolError>;

    /// Messages with `seq > after`, oldest first: `{messages, more}`. Moves no cursor.
    async fn history(&self, after: u64, limit: Option<usize>) -> Result<Value, ToolError>;

    /// Who this participant is, and its conversation: the body of `GET /v1/whoami`.
    async fn whoami(&self) -> Result<Value, ToolError>;

    /// This participant's name, when known (a remote session learns it on its first call).
    fn participant(&self) -> Option<&str>;
}

/// An error as the HTTP API would answer it: a stable snake_case code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolError {
    pub code: Cow<'static, str>,
    pub message: String,
}

impl ToolError {
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ToolError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The HTTP API's error body, `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ToolError {}

impl From<ApiError> for ToolError {
    fn from(error: ApiError) -> Self {
        ToolError::new(error.code, error.message)
    }
}

/// Serves `session` over stdin/stdout until the client closes stdin or `shutdown` fires.
///
/// Nothing else may write to stdout meanwhile: it carries the MCP messages.
pub async fn serve_stdio(
    session: Arc<dyn ParticipantSession>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use rmcp::ServiceExt;

    let running = HarkMcp::for_session(session)
        .serve_with_ct(rmcp::transport::stdio(), shutdown)
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
