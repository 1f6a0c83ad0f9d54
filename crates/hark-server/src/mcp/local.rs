//! The in-process [`ParticipantSession`]: actions go straight to the conversation's task.

use async_trait::async_trait;
use hark_core::protocol::Action;
use hark_store::TokenOwner;
use serde_json::Value;

use super::{ParticipantSession, ToolError};
use crate::AppState;
use crate::routes::{act_error, conversation, history_json, whoami_json};
use crate::wire;

/// One participant of a conversation served by this process (`/mcp`, `hark mcp --db`).
pub(crate) struct LocalSession {
    state: AppState,
    owner: TokenOwner,
}

impl LocalSession {
    pub(crate) fn new(state: AppState, owner: TokenOwner) -> Self {
        LocalSession { state, owner }
    }
}

#[async_trait]
impl ParticipantSession for LocalSession {
    async fn act(&self, action: Action) -> Result<Value, ToolError> {
        let handle = conversation(&self.state, &self.owner.conversation).await?;
        let envelope = handle
            .act(self.owner.name.clone(), action)
            .await
            .map_err(act_error)?;
        Ok(wire::envelope(&envelope))
    }

    async fn history(&self, after: u64, limit: Option<usize>) -> Result<Value, ToolError> {
        Ok(history_json(&self.state, &self.owner.conversation, after, limit).await?)
    }

    async fn whoami(&self) -> Result<Value, ToolError> {
        Ok(whoami_json(&self.state, &self.owner).await?)
    }

    fn participant(&self) -> Option<&str> {
        Some(self.owner.name.as_str())
    }
}
