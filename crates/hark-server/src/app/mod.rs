//! The service layer: the one API that the three front doors (HTTP routes, MCP sessions,
//! built-in agents) call. Start reading at [`App`].
//!
//! A front door decodes its input, proves who is calling ([`App::authenticate`], then
//! [`App::admin`], [`App::participant`] or [`App::reader`]), calls one method of [`App`], and
//! encodes the result or the [`AppError`]. Finding or loading a conversation, the token rules,
//! the limits and the mapping of store and protocol errors happen here and nowhere else.
//!
//! Inside: `conversation` (the per-conversation task that owns the state machine), `delivery`
//! (the tickets by which a front door reports whether a result reached its client), `auth`
//! (tokens and the proofs of access), `context` (what an agent may reach), `error` and `types`.

mod auth;
mod cluster;
mod context;
mod conversation;
mod delivery;
mod error;
mod service;
mod types;

pub use auth::{Admin, Caller, Participant, Reader};
pub use cluster::Node;
pub use context::{AgentContext, AgentLauncher, NoAgents};
pub use conversation::Description;
pub(crate) use conversation::Pending;
pub use delivery::{Acted, Ticket};
pub use error::{AppError, ErrorKind};
pub use service::{
    App, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT, Location, MAX_PARTICIPANTS, MAX_TITLE_CHARS,
};
pub use types::{
    ATTACHMENT_TYPES, AgentInfo, AttachmentInfo, Created, CreatedParticipant, HistoryPage,
    MAX_DISPLAY_NAME_CHARS, ParticipantInfo, ParticipantSpec, Subscription, check_attachment,
    display_name,
};
