//! Built-in agents: participants played by a model (SPEC.md section 6), the third front door.
//!
//! The [`Supervisor`] is the service's agent launcher: it starts one task per (conversation,
//! agent participant), handing it an [`AgentContext`](crate::app::AgentContext) — the agent's
//! own conversation as its own participant, the store reads it needs and the clock, nothing
//! more. In mode "reply" the task drives a [`hark_core::turn::TurnEngine`] (`reply`, with the
//! endpoint model in `endpoint`); in mode "actions" the model drives the protocol's actions as
//! tools (`actions`). Either way an agent acts like any participant, so everything it does is
//! durable, ordered and visible exactly as a person's actions are.

mod actions;
mod config;
mod endpoint;
mod prompt;
mod reply;
mod supervisor;

pub use actions::take_sentence;
pub use config::{Activity, AgentConfig, AgentMode, AgentSpec, EndpointModel};
pub use endpoint::MAX_VERDICT_WAIT_MS;
pub use supervisor::Supervisor;
