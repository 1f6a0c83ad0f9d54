//! [`ParticipantSession`]: one participant's view of one conversation, as the MCP tools use it,
//! [`Answer`] and [`Delivery`], an action's result and how to report that it reached the client,
//! and [`ToolError`], the one form an error takes over MCP.

use std::borrow::Cow;

use async_trait::async_trait;
use hark_core::protocol::Action;
use serde_json::Value;

use crate::app::AppError;
use crate::wire::{self, WireError};

/// One participant in one conversation, as the MCP tools see it.
///
/// Every method answers the JSON body the HTTP API would answer for the same request, or the
/// error it would answer (code and sentence).
#[async_trait]
pub trait ParticipantSession: Send + Sync + 'static {
    /// Applies one action; `Ok` is the common envelope (SPEC.md section 2) as wire JSON, with
    /// the [`Delivery`] to settle once the answer reached the MCP client (or to drop if it did
    /// not: its messages then come again).
    async fn act(&self, action: Action) -> Result<Answer, ToolError>;

    /// Messages with `seq > after`, oldest first: `{messages, more}`. Moves no cursor.
    async fn history(&self, after: u64, limit: Option<usize>) -> Result<Value, ToolError>;

    /// Who this participant is, and its conversation: the body of `GET /v1/whoami`.
    async fn whoami(&self) -> Result<Value, ToolError>;

    /// This participant's name, when known (a remote session learns it on its first call).
    fn participant(&self) -> Option<&str>;
}

/// An action's envelope and its delivery.
pub struct Answer {
    /// The common envelope as wire JSON.
    pub envelope: Value,
    /// Settle it once the envelope reached the MCP client.
    pub delivery: Delivery,
}

/// What to do once an answer reached the MCP client: confirm a delivery ticket (in process), or
/// remember the envelope's cursor for the next `Hark-Received` report (`hark mcp --url`).
/// Dropping it unsettled reports the answer lost, or simply never confirms it.
#[must_use = "a dropped delivery counts its answer as lost"]
pub struct Delivery(Option<Box<dyn FnOnce() + Send>>);

impl Delivery {
    /// Nothing to report.
    pub fn none() -> Self {
        Delivery(None)
    }

    /// Runs `settle` on delivery; dropping `settle` unrun is the loss.
    pub fn new(settle: impl FnOnce() + Send + 'static) -> Self {
        Delivery(Some(Box::new(settle)))
    }

    /// The answer reached the MCP client.
    pub fn delivered(mut self) {
        if let Some(settle) = self.0.take() {
            settle();
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Delivery")
            .field(&self.0.as_ref().map(|_| "pending"))
            .finish()
    }
}

/// An error as the HTTP API would answer it: a stable snake_case code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolError {
    /// The stable code.
    pub code: Cow<'static, str>,
    /// The sentence.
    pub message: String,
}

impl ToolError {
    /// An error with this code and sentence.
    pub fn new(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ToolError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The HTTP API's error body, `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> Value {
        wire::to_value(&WireError::new(&self.code, &self.message))
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ToolError {}

/// The one mapping of service errors to MCP: the same code and sentence as over HTTP.
impl From<AppError> for ToolError {
    fn from(error: AppError) -> Self {
        ToolError::new(error.code(), error.message().to_owned())
    }
}
