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
    /// The longest name, in characters.
    pub const MAX_CHARS: usize = 64;

    /// Checks `raw` and wraps it, or says why it is not a valid name.
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

    /// The name as text.
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
    /// A person.
    Human,
    /// A model.
    Agent,
}

impl ParticipantKind {
    /// The lowercase name of the kind: `human` or `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantKind::Human => "human",
            ParticipantKind::Agent => "agent",
        }
    }

    /// The kind named by `raw` (`human` or `agent`); `None` for anything else.
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
    /// Who sent it.
    pub from: ParticipantName,
    /// The message text, exactly as pushed or sent.
    pub text: String,
    /// When the service published it.
    pub sent_at: Millis,
    /// The sender's idempotency key, if it gave one.
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
    /// Adds `text` to the end of the draft as a new segment, cut at the limits.
    Append {
        /// The text to add.
        text: String,
    },
    /// Removes the draft's last segment.
    Undo,
    /// Discards the whole draft.
    Reset,
    /// Returns the draft's text without sending it.
    Preview,
    /// Publishes the draft as one message, unless it is held for unseen messages.
    Push {
        /// Publishes even though others' messages have not reached this participant.
        force: bool,
        /// An idempotency key: a repeated push with the same key returns the original message.
        client_id: Option<String>,
    },
    /// `timeout_ms: None` takes the default; values above the maximum are clamped.
    Check {
        /// How long to wait for news, in milliseconds.
        timeout_ms: Option<u64>,
    },
    /// Says whether the participant is typing.
    Typing {
        /// True starts or refreshes a typing lease that lasts `typing_timeout_ms`; false ends it.
        typing: bool,
    },
    /// Reports that the client has read messages up to a seq (from the event stream).
    Read {
        /// The highest seq read; clamped to the log.
        up_to: u64,
    },
    /// `attachment`: a stored file the service resolved; with one, `text` (the caption) may be
    /// empty.
    Send {
        /// Text published after the draft's text, in the same message.
        text: String,
        /// An idempotency key: a repeated send with the same key returns the original message.
        client_id: Option<String>,
        /// The file to send with the message.
        attachment: Option<AttachmentRef>,
    },
}

/// The name of an action, as it appears in the envelope and in routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// [`Action::Append`].
    Append,
    /// [`Action::Undo`].
    Undo,
    /// [`Action::Reset`].
    Reset,
    /// [`Action::Preview`].
    Preview,
    /// [`Action::Push`].
    Push,
    /// [`Action::Check`].
    Check,
    /// [`Action::Typing`].
    Typing,
    /// [`Action::Read`].
    Read,
    /// [`Action::Send`].
    Send,
}

impl ActionKind {
    /// Every action kind.
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

    /// The action's name as it appears in the envelope: `append`, `push` and so on.
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

    /// The kind named by `raw`; `None` for an unknown action.
    pub fn parse(raw: &str) -> Option<Self> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

impl Action {
    /// The kind of this action.
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
    /// The result of `append`.
    Append {
        /// Characters added to the draft.
        appended_chars: usize,
        /// Some of the text was dropped.
        truncated: bool,
        /// Characters dropped, past the append or draft limit.
        dropped_chars: usize,
        /// What was dropped and what to do about it, when something was.
        notice: Option<String>,
    },
    /// The result of `undo`.
    Undo {
        /// The segment taken off the draft.
        removed: String,
    },
    /// The result of `reset`.
    Reset {
        /// Characters the discarded draft held.
        discarded_chars: usize,
    },
    /// The result of `preview`.
    Preview {
        /// The draft's text.
        text: String,
    },
    /// The result of a `push` or `send` that published a message.
    Sent {
        /// The published message.
        message: Arc<Message>,
        /// The `client_id` was used before: this is the original message, not a new one.
        duplicate: bool,
    },
    /// The result of a `push` that did not publish.
    Held {
        /// Why it was held.
        reason: HoldReason,
    },
    /// The result of `check`.
    Check {
        /// The wait ended without news.
        timed_out: bool,
    },
    /// `typing` and `read` have nothing of their own to say.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Why a push was held instead of published.
pub enum HoldReason {
    /// Others' messages have not provably reached the participant yet; they come with this result.
    UnseenMessages,
}

impl HoldReason {
    /// The reason's stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::UnseenMessages => "unseen_messages",
        }
    }
}

/// Another participant's read position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Whose read position it is.
    pub participant: ParticipantName,
    /// The highest seq this participant has provably received.
    pub read_up_to: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
/// The size of a participant's draft.
pub struct DraftSummary {
    /// How many segments it holds.
    pub segments: usize,
    /// Unicode scalar values over all segments.
    pub chars: usize,
}

/// A refused action. Nothing was handed over and no cursor moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionError {
    /// `append` or `send` with nothing to add or send.
    EmptyText,
    /// `undo` with an empty draft.
    NothingToUndo,
    /// `push` with an empty or blank draft.
    EmptyDraft,
    /// `send` whose draft and text together exceed the draft limit.
    TooLong {
        /// Characters the message would have.
        chars: usize,
        /// The most a message may have.
        max_chars: usize,
    },
    /// A `client_id` that is empty or longer than the configured `max_client_id_chars`.
    InvalidClientId {
        /// The longest accepted `client_id`, in characters.
        max_chars: usize,
    },
    /// The requester is not a participant of this conversation.
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
    /// Store a newly published message.
    InsertMessage(Arc<Message>),
    /// Store a participant's confirmed cursor (its read receipt).
    SetCursor {
        /// Whose cursor it is.
        participant: ParticipantName,
        /// The new cursor.
        cursor: u64,
    },
    /// Add a segment to the end of a participant's draft.
    PushSegment {
        /// Whose draft it is.
        participant: ParticipantName,
        /// The segment's text.
        text: String,
    },
    /// Remove the last segment of a participant's draft.
    PopSegment {
        /// Whose draft it is.
        participant: ParticipantName,
    },
    /// Empty a participant's draft.
    ClearDraft {
        /// Whose draft it is.
        participant: ParticipantName,
    },
}

/// Something live listeners (event streams) should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message was published.
    Message(Arc<Message>),
    /// A participant started or stopped composing (typing, or holding a non-empty draft).
    Composing {
        /// Who it is.
        participant: ParticipantName,
        /// Whether they are composing now.
        composing: bool,
    },
    /// A participant's read position changed.
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
