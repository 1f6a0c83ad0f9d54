//! The in-process [`ParticipantSession`]: actions go straight to the service. An answer that
//! hands something over carries the service's delivery ticket, confirmed by whoever carries the
//! answer to the client (the `/mcp` response body, the stdio writer).

use async_trait::async_trait;
use hark_core::protocol::{Action, Confirm};
use serde_json::Value;

use super::session::{Answer, Delivery, ParticipantSession, ToolError};
use crate::app::{App, Participant};
use crate::wire::{self, WireEnvelope, WireHistory, WireWhoami};

/// One participant of a conversation served by this process (`/mcp`, `hark mcp --db`).
pub(crate) struct LocalSession {
    app: App,
    me: Participant,
}

impl LocalSession {
    pub(crate) fn new(app: App, me: Participant) -> Self {
        LocalSession { app, me }
    }
}

#[async_trait]
impl ParticipantSession for LocalSession {
    async fn act(&self, action: Action) -> Result<Answer, ToolError> {
        let acted = self
            .app
            .act_with(&self.me, action, Confirm::Transport)
            .await?;
        let envelope = wire::to_value(&WireEnvelope::from(&acted.envelope));
        let ticket = acted.ticket;
        let delivery = if ticket.is_pending() {
            Delivery::new(|| ticket.delivered())
        } else {
            Delivery::none()
        };
        Ok(Answer { envelope, delivery })
    }

    async fn history(&self, after: u64, limit: Option<usize>) -> Result<Value, ToolError> {
        let page = self.app.history(&self.me, after, limit).await?;
        Ok(wire::to_value(&WireHistory::from(&page)))
    }

    async fn whoami(&self) -> Result<Value, ToolError> {
        let description = self.app.whoami(&self.me).await?;
        Ok(wire::to_value(&WireWhoami::new(&description, &self.me)))
    }

    fn participant(&self) -> Option<&str> {
        Some(self.me.name().as_str())
    }
}
