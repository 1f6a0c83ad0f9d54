//! What a built-in agent gets: [`AgentContext`], a narrow view of the service (its own
//! conversation as its own participant, the store reads it needs, the clock), and the
//! [`AgentLauncher`] seam through which the service starts agents without knowing how they run.

use std::sync::Arc;

use async_trait::async_trait;
use hark_core::protocol::{Action, Envelope, Limits, Message};
use hark_store::{AgentState, Store};
use tokio_util::sync::CancellationToken;

use super::auth::Participant;
use super::error::AppError;
use super::types::{AgentInfo, Subscription};
use crate::clock::Clock;

/// Starts built-in agents. The service calls it when a participant played by an agent joins, and
/// for every such participant when the server starts.
pub trait AgentLauncher: Send + Sync + 'static {
    /// Whether an agent of this name is configured.
    fn knows(&self, agent: &str) -> bool;

    /// The configured agents, in name order.
    fn agents(&self) -> Vec<AgentInfo>;

    /// Starts `agent` playing `context`'s participant, unless it already runs.
    fn launch(&self, context: AgentContext, agent: &str);
}

/// A server without built-in agents.
pub struct NoAgents;

impl AgentLauncher for NoAgents {
    fn knows(&self, _: &str) -> bool {
        false
    }

    fn agents(&self) -> Vec<AgentInfo> {
        Vec::new()
    }

    fn launch(&self, context: AgentContext, agent: &str) {
        tracing::warn!(
            agent,
            conversation = context.me().conversation(),
            "a participant names an agent this server does not define"
        );
    }
}

/// The part of the service an agent's context reaches (the service implements it).
#[async_trait]
pub(crate) trait Port: Send + Sync + 'static {
    async fn act(&self, who: &Participant, action: Action) -> Result<Envelope, AppError>;
    async fn subscribe(&self, who: &Participant) -> Result<Subscription, AppError>;
    fn store(&self) -> &dyn Store;
    fn clock(&self) -> Clock;
    fn shutdown(&self) -> &CancellationToken;
    fn limits(&self) -> &Limits;
}

/// One agent's view of the server: it acts as its participant in its conversation, reads that
/// conversation's log and its own saved state, and tells time by the server's clock. Nothing
/// else of the server is reachable from here.
#[derive(Clone)]
pub struct AgentContext {
    port: Arc<dyn Port>,
    me: Participant,
}

impl std::fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentContext")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl AgentContext {
    pub(crate) fn new(port: Arc<dyn Port>, me: Participant) -> Self {
        AgentContext { port, me }
    }

    /// The participant this agent plays, and its conversation.
    pub fn me(&self) -> &Participant {
        &self.me
    }

    /// The server's clock: every `now` and every deadline of the agent comes from it.
    pub fn clock(&self) -> Clock {
        self.port.clock()
    }

    /// Fires when the server shuts down.
    pub fn shutdown(&self) -> CancellationToken {
        self.port.shutdown().clone()
    }

    /// How long a typing lease lasts without a refresh (the server's `[limits]`).
    pub fn typing_timeout_ms(&self) -> u64 {
        self.port.limits().typing_timeout_ms
    }

    /// Applies one of this participant's actions, as any client's.
    pub async fn act(&self, action: Action) -> Result<Envelope, AppError> {
        self.port.act(&self.me, action).await
    }

    /// Live events of the conversation, and the last seq committed before them.
    pub async fn subscribe(&self) -> Result<Subscription, AppError> {
        self.port.subscribe(&self.me).await
    }

    /// Messages with `seq > after`, oldest first, at most `limit` (no page limit: an agent
    /// restoring its context reads what it needs in one go).
    pub async fn messages_after(&self, after: u64, limit: usize) -> Result<Vec<Message>, AppError> {
        Ok(self
            .port
            .store()
            .messages_after(self.me.conversation(), after, limit)
            .await?)
    }

    /// What this agent saved about its turn engine, if anything.
    pub async fn load_state(&self) -> Result<Option<AgentState>, AppError> {
        Ok(self
            .port
            .store()
            .load_agent_state(self.me.conversation(), self.me.name())
            .await?)
    }

    /// Durably replaces this agent's saved state.
    pub async fn save_state(&self, state: AgentState) -> Result<(), AppError> {
        Ok(self
            .port
            .store()
            .save_agent_state(self.me.conversation(), self.me.name(), state)
            .await?)
    }
}
