//! hark's storage: one [`Store`] interface, [`SqliteStore`], the embedded default, and
//! [`PostgresStore`], for several nodes on one database.
#![warn(missing_docs)]
//!
//! The interface speaks in the core's terms (messages, participants, durable effects), never in
//! SQL or wire formats: the PostgreSQL implementation sits beside SQLite without touching the
//! core or the server, and both pass one contract suite (`tests/contract.rs`).
//!
//! **Invariant:** when [`Store::commit`] returns `Ok`, every effect it was given is durable (on
//! disk, fsynced), and a batch is applied whole or not at all.

mod agent_state;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use hark_core::protocol::{
    Effect, LogPrefix, Message, ParticipantKind, ParticipantName, ParticipantRecord,
};
use hark_core::time::Millis;
use hark_core::turn::PersonRhythm;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A token's SHA-256 digest: tokens themselves are never stored.
pub type TokenHash = [u8; 32];

/// Storage for conversations. Every method is safe to call from many tasks at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers `Ok` when the store can serve reads and writes.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a conversation with its first participants.
    async fn create_conversation(&self, conversation: NewConversation) -> Result<(), StoreError>;

    /// Adds a participant; [`StoreError::NameTaken`] if the name is in use there.
    async fn add_participant(
        &self,
        conversation: &str,
        participant: NewParticipant,
    ) -> Result<(), StoreError>;

    /// Everything needed to rebuild a conversation's state machine, or `None` if it is unknown.
    async fn load_conversation(&self, id: &str) -> Result<Option<StoredConversation>, StoreError>;

    /// Like [`Store::load_conversation`], but with only the newest `window` messages (at most)
    /// and what the state machine must know of the older ones. The default reads the whole log
    /// and cuts it; a store that can read only the end overrides it.
    async fn load_conversation_window(
        &self,
        id: &str,
        window: usize,
    ) -> Result<Option<(StoredConversation, LogPrefix)>, StoreError> {
        let Some(mut stored) = self.load_conversation(id).await? else {
            return Ok(None);
        };
        let cut = stored.messages.len().saturating_sub(window);
        let prefix = LogPrefix::of(&stored.messages[..cut]);
        stored.messages.drain(..cut);
        Ok(Some((stored, prefix)))
    }

    /// The message `sender` sent with `client_id` in this conversation, if any. The default
    /// reads the log page by page; a store with an index on client ids overrides it.
    async fn message_by_client_id(
        &self,
        conversation: &str,
        sender: &ParticipantName,
        client_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        const PAGE: usize = 1_000;
        let mut after = 0;
        loop {
            let page = self.messages_after(conversation, after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            after = last.seq;
            let full = page.len() == PAGE;
            if let Some(found) = page
                .into_iter()
                .find(|m| &m.from == sender && m.client_id.as_deref() == Some(client_id))
            {
                return Ok(Some(found));
            }
            if !full {
                return Ok(None);
            }
        }
    }

    /// Whether the store knows this conversation (cheaper than loading it).
    async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError>;

    /// Who a token belongs to.
    async fn find_token(&self, hash: TokenHash) -> Result<Option<TokenOwner>, StoreError>;

    /// Messages with `seq > after`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        conversation: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError>;

    /// Makes a batch of effects durable, all or nothing.
    async fn commit(&self, conversation: &str, effects: Vec<Effect>) -> Result<(), StoreError>;

    /// Every participant played by a built-in agent, in every conversation.
    async fn agent_participants(&self) -> Result<Vec<AgentParticipant>, StoreError>;

    /// What a built-in agent saved about its turn engine, if anything.
    async fn load_agent_state(
        &self,
        conversation: &str,
        participant: &ParticipantName,
    ) -> Result<Option<AgentState>, StoreError>;

    /// Durably replaces a built-in agent's saved state.
    async fn save_agent_state(
        &self,
        conversation: &str,
        participant: &ParticipantName,
        state: AgentState,
    ) -> Result<(), StoreError>;

    /// Durably stores an attachment's bytes (the caller checked them); [`StoreError::NotFound`]
    /// if the conversation does not exist.
    async fn put_attachment(
        &self,
        conversation: &str,
        attachment: NewAttachment,
    ) -> Result<(), StoreError>;

    /// An attachment of this conversation, or `None` if it has none of that id.
    async fn attachment(
        &self,
        conversation: &str,
        id: &str,
    ) -> Result<Option<StoredAttachment>, StoreError>;
}

/// An attachment to store: bytes whose type the server checked.
#[derive(Clone, Debug)]
pub struct NewAttachment {
    /// Its id (random, hex), chosen by the caller; unique in its conversation.
    pub id: String,
    /// Its media type, e.g. `image/png`.
    pub mime: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// When it was uploaded.
    pub created_at: Millis,
}

/// An attachment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAttachment {
    /// Its media type.
    pub mime: String,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A participant played by a built-in agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentParticipant {
    /// The conversation's id.
    pub conversation: String,
    /// The participant's name in it.
    pub name: ParticipantName,
    /// Its kind (usually `agent`, but a person's seat may be played by a model too).
    pub kind: ParticipantKind,
    /// The configured agent that plays it (`[[agent]] name`).
    pub agent: String,
}

/// A built-in agent's saved turn-engine state, in the core's types: the store alone decides how
/// it is written down (the rhythm's stored form is private to this crate).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    /// The last epoch the engine used.
    pub epoch: u64,
    /// The highest person seq answered or deliberately left silent.
    pub answered_up_to: u64,
    /// The learned rhythm of the person.
    pub rhythm: PersonRhythm,
}

/// A conversation to create, with its first participants.
#[derive(Clone, Debug)]
pub struct NewConversation {
    /// Its id (128 random bits, hex), chosen by the caller.
    pub id: String,
    /// An optional title.
    pub title: Option<String>,
    /// When it was created.
    pub created_at: Millis,
    /// Its first participants, in order.
    pub participants: Vec<NewParticipant>,
}

/// A participant to add.
#[derive(Clone, Debug)]
pub struct NewParticipant {
    /// Its name, unique in the conversation.
    pub name: ParticipantName,
    /// Person or model.
    pub kind: ParticipantKind,
    /// The built-in agent that plays this participant, if any.
    pub agent: Option<String>,
    /// The name people see, in any script (the server validated it); `None` shows `name`.
    pub display_name: Option<String>,
    /// The digest of its bearer token (the token itself is never stored).
    pub token_hash: TokenHash,
}

/// A conversation as the store holds it.
#[derive(Clone, Debug)]
pub struct StoredConversation {
    /// Its id.
    pub id: String,
    /// Its title, if it has one.
    pub title: Option<String>,
    /// When it was created.
    pub created_at: Millis,
    /// Its participants in the order they joined, with cursor and draft.
    pub participants: Vec<StoredParticipant>,
    /// The whole log in `seq` order (from [`Store::load_conversation_window`]: its end only).
    pub messages: Vec<Message>,
}

/// A participant as stored: what the protocol needs, and the agent that plays it.
#[derive(Clone, Debug)]
pub struct StoredParticipant {
    /// Name, kind, cursor and draft, as the state machine restores them.
    pub record: ParticipantRecord,
    /// The built-in agent that plays this participant, if any.
    pub agent: Option<String>,
    /// The name people see, if one was given.
    pub display_name: Option<String>,
}

/// The participant a token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    /// The conversation the token opens.
    pub conversation: String,
    /// The participant it acts as.
    pub name: ParticipantName,
    /// Person or model.
    pub kind: ParticipantKind,
}

/// Who runs a conversation's state machine, when several nodes share one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This node, which holds the conversation's ownership now under `ticket` (a new one each
    /// time the row is taken or renewed by an acquire).
    Me {
        /// What [`Cluster::release`] names: a later acquire's ownership is not released by an
        /// earlier one's release.
        ticket: i64,
    },
    /// Another live node, reachable at `url`.
    Node {
        /// Its id.
        node: String,
        /// Where it serves HTTP (what its requests are forwarded to).
        url: String,
    },
}

/// This process as one node of several on one database.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// Unique per process start.
    pub id: String,
    /// Where the other nodes reach this one (its HTTP base URL).
    pub url: String,
    /// How long the node's lease lasts after a heartbeat: a node silent for this long has
    /// lost every conversation it owned.
    pub lease: std::time::Duration,
}

/// Conversation ownership among the nodes sharing one database: at any moment at most one live
/// node owns a conversation, and only the owner's commits to it go through.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn node(&self) -> &str;
    /// The secret the nodes of this database share (the first node's `proposal` wins).
    async fn secret(&self, proposal: &str) -> Result<String, StoreError>;
    /// Renews this node's lease (registering it if new); returns the conversations it owns.
    async fn heartbeat(&self) -> Result<Vec<String>, StoreError>;
    /// Takes `conversation` if nobody live owns it (or this node does); else says who does.
    /// [`StoreError::NotFound`] if no such conversation exists.
    async fn acquire(&self, conversation: &str) -> Result<Owner, StoreError>;
    /// Gives `conversation` up, if this node still owns it under `ticket`.
    async fn release(&self, conversation: &str, ticket: i64) -> Result<(), StoreError>;
    /// Conversations with a built-in agent that no live node owns.
    async fn orphans(&self) -> Result<Vec<String>, StoreError>;
    /// Leaves the cluster: every conversation of this node is free at once.
    async fn leave(&self) -> Result<(), StoreError>;
}

/// What can go wrong in a store. `Clone`: one failed load answers every caller waiting for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed to write; the operation may be retried.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A participant of that name is already in the conversation.
    #[error("a participant with that name already exists in this conversation")]
    NameTaken,
    /// The conversation does not exist.
    #[error("no such conversation")]
    NotFound,
    /// Stored data that cannot be read back (a bug or a damaged file); not retryable.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// This node no longer owns the conversation it wrote to: nothing was written, and the
    /// request may be retried (it reaches the new owner).
    #[error("the conversation moved to another node: {0}")]
    Moved(String),
}

impl StoreError {
    /// Whether the same operation may succeed later (the store was unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Moved(_))
    }
}

/// A stored participant name, or [`StoreError::Corrupt`].
fn parse_name(raw: &str) -> Result<ParticipantName, StoreError> {
    ParticipantName::parse(raw)
        .map_err(|_| StoreError::Corrupt(format!("invalid participant name {raw:?}")))
}

/// A stored participant kind, or [`StoreError::Corrupt`].
fn parse_kind(raw: &str) -> Result<ParticipantKind, StoreError> {
    ParticipantKind::parse(raw)
        .ok_or_else(|| StoreError::Corrupt(format!("invalid participant kind {raw:?}")))
}
