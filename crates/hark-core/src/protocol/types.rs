//! The values the protocol state machine takes in and hands out.

use std::fmt;
use std::sync::Arc;

use crate::time::Millis;

#[cfg(doc)]
use super::Conversation;

/// A participant's name: 1–64 characters of ASCII letters, digits, `-`, `_` and `.`.
///
/// Validated once, at the edge; a value of this type cannot hold a bad name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantName(Arc<str>);

impl ParticipantName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidName> {
        if raw.is_empty() || raw.len() > Self::MAX_CHARS {
            return Err(InvalidName);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !raw.chars().all(allowed) {
            return Err(InvalidName);
        }
        Ok(ParticipantName(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParticipantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The error of [`ParticipantName::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidName;

impl fmt::Display for InvalidName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a participant name is 1 to {} ASCII letters, digits, '-', '_' and '.'",
            ParticipantName::MAX_CHARS
        )
    }
}

impl std::error::Error for InvalidName {}

/// Whether a participant is a person or a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParticipantKind {
    Human,
    Agent,
}

impl ParticipantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantKind::Human => "human",
            ParticipantKind::Agent => "agent",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "human" => Some(ParticipantKind::Human),
            "agent" => Some(ParticipantKind::Agent),
            _ => None,
        }
    }
}

/// One published message. Shared by reference: the same message goes to many listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Position in the conversation, from 1, without gaps.
    pub seq: u64,
    /// Globally unique: `{conversation id}-{seq}`.
    pub id: String,
    pub from: ParticipantName,
    pub text: String,
    pub sent_at: Millis,
    pub client_id: Option<String>,
    /// A file sent with the message (its caption is `text`, which may then be empty).
    pub attachment: Option<AttachmentRef>,
}

/// A file attached to a message: the store holds its bytes, the log this reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRef {
    /// Its id in the conversation.
    pub id: String,
    /// Its media type, e.g. `image/png`.
    pub mime: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// An id the driver gives each request so that it can route the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// An action of SPEC.md section 2, already validated for shape by the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Append {
        text: String,
    },
    Undo,
    Reset,
    Preview,
    Push {
        force: bool,
        client_id: Option<String>,
    },
    /// `timeout_ms: None` takes the default; values above the maximum are clamped.
    Check {
        timeout_ms: Option<u64>,
    },
    Typing {
        typing: bool,
    },
    Read {
        up_to: u64,
    },
    /// `attachment`: a stored file the service resolved; with one, `text` (the caption) may be
    /// empty.
    Send {
        text: String,
        client_id: Option<String>,
        attachment: Option<AttachmentRef>,
    },
}

/// The name of an action, as it appears in the envelope and in routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Append,
    Undo,
    Reset,
    Preview,
    Push,
    Check,
    Typing,
    Read,
    Send,
}

impl ActionKind {
    pub const ALL: [ActionKind; 9] = [
        ActionKind::Append,
        ActionKind::Undo,
        ActionKind::Reset,
        ActionKind::Preview,
        ActionKind::Push,
        ActionKind::Check,
        ActionKind::Typing,
        ActionKind::Read,
        ActionKind::Send,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Append => "append",
            ActionKind::Undo => "undo",
            ActionKind::Reset => "reset",
            ActionKind::Preview => "preview",
            ActionKind::Push => "push",
            ActionKind::Check => "check",
            ActionKind::Typing => "typing",
            ActionKind::Read => "read",
            ActionKind::Send => "send",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Append { .. } => ActionKind::Append,
            Action::Undo => ActionKind::Undo,
            Action::Reset => ActionKind::Reset,
            Action::Preview => ActionKind::Preview,
            Action::Push { .. } => ActionKind::Push,
            Action::Check { .. } => ActionKind::Check,
            Action::Typing { .. } => ActionKind::Typing,
            Action::Read { .. } => ActionKind::Read,
            Action::Send { .. } => ActionKind::Send,
        }
    }
}

/// How a participant's client confirms that a result reached it (SPEC.md section 2: a message
/// counts as heard only once the participant has provably received a result that carried it).
///
/// A result that hands something over (incoming messages, changed receipts) is *tentative* until
/// it is confirmed; if it is lost instead, its messages and receipts come again in the next
/// result. See [`Conversation::handle_delivered`] and [`Conversation::handle_lost`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// The driver confirms: it reports with [`Conversation::handle_delivered`] that the result was
    /// completely handed to the client's transport (an HTTP body written to the connection, a
    /// value handed to an in-process caller), or with [`Conversation::handle_lost`] that it was
    /// not (the connection dropped, the caller went away). [`Output::Reply::confirm`] says which
    /// replies need a report.
    Transport,
    /// The client confirms itself, for clients that can lose a result after the transport
    /// delivered it (a stdio bridge whose MCP client may die): this request reports that the
    /// client has received every result whose `cursor` was at most `received`. Earlier
    /// client-confirmed results beyond it were lost and are handed over again. The result of this
    /// request waits for the next request's report in turn.
    Client {
        /// The highest envelope `cursor` the client received.
        received: u64,
    },
}

/// The common envelope every successful action returns (SPEC.md section 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The action that was taken.
    pub action: ActionKind,
    /// What the action itself did.
    pub result: ActionResult,
    /// Messages from others handed over by this result, oldest first.
    pub incoming: Vec<Arc<Message>>,
    /// More messages are waiting beyond `incoming`.
    pub more_incoming: bool,
    /// The seqs of `incoming` that already reached the participant in an earlier result: they
    /// come again because a result before that one was lost (results arriving out of order).
    /// Empty in the common case.
    pub repeated: Vec<u64>,
    /// Others' read positions that changed since this participant's previous result.
    pub receipts: Vec<Receipt>,
    /// Who else is composing now.
    pub composing: Vec<ParticipantName>,
    /// This participant's draft after the action.
    pub draft: DraftSummary,
    /// The highest seq handed to this participant (this result included).
    pub cursor: u64,
}

/// The action-specific part of an [`Envelope`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionResult {
    Append {
        appended_chars: usize,
        truncated: bool,
        dropped_chars: usize,
        notice: Option<String>,
    },
    Undo {
        removed: String,
    },
    Reset {
        discarded_chars: usize,
    },
    Preview {
        text: String,
    },
    Sent {
        message: Arc<Message>,
        duplicate: bool,
    },
    Held {
        reason: HoldReason,
    },
    Check {
        timed_out: bool,
    },
    /// `typing` and `read` have nothing of their own to say.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldReason {
    UnseenMessages,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::UnseenMessages => "unseen_messages",
        }
    }
}

/// Another participant's read position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub participant: ParticipantName,
    pub read_up_to: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DraftSummary {
    pub segments: usize,
    pub chars: usize,
}

/// A refused action. Nothing was handed over and no cursor moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionError {
    EmptyText,
    NothingToUndo,
    EmptyDraft,
    TooLong {
        chars: usize,
        max_chars: usize,
    },
    /// A `client_id` that is empty or longer than the configured `max_client_id_chars`.
    InvalidClientId {
        max_chars: usize,
    },
    UnknownParticipant,
}

impl ActionError {
    /// The stable, snake_case error code of SPEC.md section 4.
    pub fn code(&self) -> &'static str {
        match self {
            ActionError::EmptyText => "empty_text",
            ActionError::NothingToUndo => "nothing_to_undo",
            ActionError::EmptyDraft => "empty_draft",
            ActionError::TooLong { .. } => "too_long",
            ActionError::InvalidClientId { .. } => "bad_request",
            ActionError::UnknownParticipant => "forbidden",
        }
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::EmptyText => f.write_str("The text is empty: write something to add."),
            ActionError::NothingToUndo => {
                f.write_str("Your draft is empty, so there is nothing to undo.")
            }
            ActionError::EmptyDraft => f.write_str(
                "Your draft is empty (or only white space): append text before you push.",
            ),
            ActionError::TooLong { chars, max_chars } => write!(
                f,
                "The message would be {chars} characters, more than the limit of {max_chars}: \
                 shorten it or split it into several messages."
            ),
            ActionError::InvalidClientId { max_chars } => write!(
                f,
                "client_id must be 1 to {max_chars} characters: use a fresh random id per message."
            ),
            ActionError::UnknownParticipant => {
                f.write_str("You are not a participant of this conversation.")
            }
        }
    }
}

/// A change that must be durable before any reply or event of the same batch is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    InsertMessage(Arc<Message>),
    SetCursor {
        participant: ParticipantName,
        cursor: u64,
    },
    PushSegment {
        participant: ParticipantName,
        text: String,
    },
    PopSegment {
        participant: ParticipantName,
    },
    ClearDraft {
        participant: ParticipantName,
    },
}

/// Something live listeners (event streams) should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Message(Arc<Message>),
    Composing {
        participant: ParticipantName,
        composing: bool,
    },
    Receipt(Receipt),
}

/// Everything the protocol state machine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make this durable. The driver commits every `Persist` of a batch before it releases any
    /// `Reply` or `Event` of that batch, so nobody ever sees a state that a crash could undo.
    Persist(Effect),
    /// The answer to request `request`.
    Reply {
        /// The request answered.
        request: RequestId,
        /// The envelope, or why the action was refused.
        reply: Result<Envelope, ActionError>,
        /// The reply hands something over under [`Confirm::Transport`]: the driver must report
        /// whether it reached the client, with [`Conversation::handle_delivered`] or
        /// [`Conversation::handle_lost`]. Until then its messages do not count as heard.
        confirm: bool,
    },
    /// Fan this out to live listeners.
    Event(Event),
}
