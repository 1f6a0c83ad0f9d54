//! The HTTP JSON wire format: every body the HTTP API reads or writes, as its own types, converted
//! by hand from and to the core's and the service's types.
//!
//! **Invariant:** only this module knows field names on the wire; renaming a core type never
//! changes the protocol. The response types are also `Deserialize`, so that what a remote server
//! answered (`hark mcp --url`) is read back through the same definitions (`mcp::render` renders
//! the text a model reads from them).

use hark_core::protocol::{
    Action, ActionKind, ActionResult, AttachmentRef, Envelope, Event, Message, ParticipantKind,
    Receipt,
};
use hark_core::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{
    AgentInfo, AttachmentInfo, Created, CreatedParticipant, Description, HistoryPage, Participant,
};

/// A body that is not what the route takes, with serde's reason, as a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadBody(pub String);

// ---- requests -----------------------------------------------------------------------------------

/// `POST /v1/conversations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// An optional title.
    #[serde(default)]
    pub title: Option<String>,
    /// The first participants.
    pub participants: Vec<NewParticipant>,
}

/// One participant of `POST /v1/conversations`, or the body of `POST …/participants`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewParticipant {
    /// The name, checked by the route.
    pub name: String,
    /// `human` or `agent`.
    pub kind: WireKind,
    /// A configured built-in agent to play it.
    #[serde(default)]
    pub agent: Option<String>,
    /// The name people see, in any script; checked by the route.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /v1/conversations/{id}/attachments`: an image, base64 in JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAttachment {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub mime: String,
    /// The bytes, standard base64 (padding optional).
    pub data: String,
}

impl NewAttachment {
    /// The decoded bytes, or why they are not base64.
    pub fn bytes(&self) -> Result<Vec<u8>, BadBody> {
        use base64::Engine;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        engine
            .decode(self.data.trim())
            .map_err(|e| BadBody(format!("The attachment's data is not base64: {e}.")))
    }
}

/// An attachment as answers and messages show it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireAttachment {
    /// Its id in the conversation.
    pub id: String,
    /// Its media type.
    pub mime: String,
    /// Its size in bytes.
    pub bytes: usize,
}

/// `POST …/attachments` answered.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireAttached {
    /// What was stored.
    pub attachment: WireAttachment,
}

impl From<&AttachmentInfo> for WireAttached {
    fn from(a: &AttachmentInfo) -> Self {
        WireAttached {
            attachment: WireAttachment {
                id: a.id.clone(),
                mime: a.mime.clone(),
                bytes: a.bytes,
            },
        }
    }
}

/// A participant's kind on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WireKind {
    /// `human`.
    Human,
    /// `agent`.
    Agent,
}

impl From<WireKind> for ParticipantKind {
    fn from(kind: WireKind) -> Self {
        match kind {
            WireKind::Human => ParticipantKind::Human,
            WireKind::Agent => ParticipantKind::Agent,
        }
    }
}

impl From<ParticipantKind> for WireKind {
    fn from(kind: ParticipantKind) -> Self {
        match kind {
            ParticipantKind::Human => WireKind::Human,
            ParticipantKind::Agent => WireKind::Agent,
        }
    }
}

/// The query of `GET …/messages`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Messages after this seq.
    #[serde(default)]
    pub after: u64,
    /// At most this many.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The query of `GET …/events`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay messages after this seq (`Last-Event-ID` wins).
    #[serde(default)]
    pub after: Option<u64>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    #[serde(default)]
    force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    typing: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    up_to: u64,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// An attachment uploaded to this conversation; `text` is then its caption (may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attachment_id: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// The request header by which a client confirms its results itself: `Hark-Received: N` on an
/// action request says it has received every result whose envelope `cursor` was at most `N`
/// (see `Confirm::Client`). As hyper spells header names.
pub const RECEIVED_HEADER: &str = "hark-received";

/// [`RECEIVED_HEADER`] as the docs spell it.
pub const RECEIVED_HEADER_NAME: &str = "Hark-Received";

/// The value of [`RECEIVED_HEADER`]: a whole number, nothing else.
pub fn parse_received(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Decodes the body of `POST /v1/conversations/{id}/{action}`. An empty body means `{}`.
pub fn decode_action(kind: ActionKind, body: &[u8]) -> Result<Action, BadBody> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    Ok(match kind {
        ActionKind::Append => {
            let TextBody { text } = parse(body)?;
            Action::Append { text }
        }
        ActionKind::Undo => parse::<NoFields>(body).map(|_| Action::Undo)?,
        ActionKind::Reset => parse::<NoFields>(body).map(|_| Action::Reset)?,
        ActionKind::Preview => parse::<NoFields>(body).map(|_| Action::Preview)?,
        ActionKind::Push => {
            let PushBody { force, client_id } = parse(body)?;
            Action::Push { force, client_id }
        }
        ActionKind::Check => {
            let CheckBody { timeout_ms } = parse(body)?;
            Action::Check { timeout_ms }
        }
        ActionKind::Typing => {
            let TypingBody { typing } = parse(body)?;
            Action::Typing { typing }
        }
        ActionKind::Read => {
            let ReadBody { up_to } = parse(body)?;
            Action::Read { up_to }
        }
        ActionKind::Send => {
            let SendBody {
                text,
                client_id,
                attachment_id,
            } = parse(body)?;
            Action::Send {
                text,
                client_id,
                // Named only: the service fills in the rest from the store.
                attachment: attachment_id.map(|id| AttachmentRef {
                    id,
                    mime: String::new(),
                    bytes: 0,
                }),
            }
        }
    })
}

/// The route name and body of an action, as a client sends it: the inverse of [`decode_action`].
/// Used by `hark mcp --url`, which talks to a running server over this same API.
pub fn encode_action(action: &Action) -> (ActionKind, Value) {
    let body = match action {
        Action::Append { text } => to_value(&TextBody { text: text.clone() }),
        Action::Undo | Action::Reset | Action::Preview => to_value(&NoFields {}),
        Action::Push { force, client_id } => to_value(&PushBody {
            force: *force,
            client_id: client_id.clone(),
        }),
        Action::Check { timeout_ms } => to_value(&CheckBody {
            timeout_ms: *timeout_ms,
        }),
        Action::Typing { typing } => to_value(&TypingBody { typing: *typing }),
        Action::Read { up_to } => to_value(&ReadBody { up_to: *up_to }),
        Action::Send {
            text,
            client_id,
            attachment,
        } => to_value(&SendBody {
            text: text.clone(),
            client_id: client_id.clone(),
            attachment_id: attachment.as_ref().map(|a| a.id.clone()),
        }),
    };
    (action.kind(), body)
}

/// Parses JSON into `T`, turning serde's complaint into a sentence a client can act on.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, BadBody> {
    serde_json::from_slice(body)
        .map_err(|e| BadBody(format!("The request body is not valid here: {e}.")))
}

/// Any wire value as JSON. Serialising these plain structs cannot fail (no maps with non-string
/// keys, no failing `Serialize` impls), so a failure is a bug reported as `null`.
pub fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|error| {
        tracing::error!(%error, "a wire value did not serialise");
        Value::Null
    })
}

/// Any wire value as JSON text (what an SSE `data:` line carries), without building a `Value`
/// first. Like [`to_value`], it cannot fail for these types.
pub fn to_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| {
        tracing::error!(%error, "a wire value did not serialise");
        "null".to_owned()
    })
}

// ---- responses ----------------------------------------------------------------------------------

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T09:07:24.512Z`.
pub fn timestamp(at: Millis) -> String {
    let nanos = i128::from(at.0) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        // Only reachable for times past the year 9999.
        Err(_) => "9999-12-31T23:59:59.999Z".to_owned(),
    }
}

/// A message.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireMessage {
    /// Its position in the conversation.
    pub seq: u64,
    /// Its global id.
    #[serde(default)]
    pub id: String,
    /// Its author.
    pub from: String,
    /// Its text.
    pub text: String,
    /// When it was stored, RFC 3339.
    #[serde(default)]
    pub sent_at: String,
    /// The author's idempotency key, if it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// A photo sent with it (`text` is its caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<WireAttachment>,
}

impl From<&Message> for WireMessage {
    fn from(m: &Message) -> Self {
        WireMessage {
            seq: m.seq,
            id: m.id.clone(),
            from: m.from.as_str().to_owned(),
            text: m.text.clone(),
            sent_at: timestamp(m.sent_at),
            client_id: m.client_id.clone(),
            attachment: m.attachment.as_ref().map(|a| WireAttachment {
                id: a.id.clone(),
                mime: a.mime.clone(),
                bytes: a.bytes as usize,
            }),
        }
    }
}

/// A participant's read position.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireReceipt {
    /// Whose.
    pub participant: String,
    /// Up to which seq.
    pub read_up_to: u64,
}

impl From<&Receipt> for WireReceipt {
    fn from(r: &Receipt) -> Self {
        WireReceipt {
            participant: r.participant.as_str().to_owned(),
            read_up_to: r.read_up_to,
        }
    }
}

/// The size of a draft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireDraft {
    /// Segments (appends) in it.
    pub segments: u64,
    /// Characters in it.
    pub chars: u64,
}

/// The action-specific part of the envelope. Untagged: the fields tell the shapes apart (the
/// envelope's `action` says which one to expect).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum WireResult {
    /// `push`/`send` that went out: `{status: "sent", message, duplicate}`.
    Sent {
        /// `"sent"`.
        status: String,
        /// The message.
        message: WireMessage,
        /// An earlier push with the same `client_id` sent it.
        duplicate: bool,
    },
    /// `push` held: `{status: "held", reason}`.
    Held {
        /// `"held"`.
        status: String,
        /// Why: `"unseen_messages"`.
        reason: String,
    },
    /// `append`.
    Append {
        /// Characters kept.
        appended_chars: u64,
        /// Whether the text was cut.
        truncated: bool,
        /// Characters cut.
        dropped_chars: u64,
        /// A sentence about what was cut.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice: Option<String>,
    },
    /// `undo`.
    Undo {
        /// The segment's text.
        removed: String,
    },
    /// `reset`.
    Reset {
        /// Characters thrown away.
        discarded_chars: u64,
    },
    /// `preview`.
    Preview {
        /// What push would send.
        text: String,
    },
    /// `check`.
    Check {
        /// Nothing arrived in time.
        timed_out: bool,
    },
    /// `typing` and `read`: `{}`.
    Done {},
}

impl From<&ActionResult> for WireResult {
    fn from(result: &ActionResult) -> Self {
        match result {
            ActionResult::Append {
                appended_chars,
                truncated,
                dropped_chars,
                notice,
            } => WireResult::Append {
                appended_chars: *appended_chars as u64,
                truncated: *truncated,
                dropped_chars: *dropped_chars as u64,
                notice: notice.clone(),
            },
            ActionResult::Undo { removed } => WireResult::Undo {
                removed: removed.clone(),
            },
            ActionResult::Reset { discarded_chars } => WireResult::Reset {
                discarded_chars: *discarded_chars as u64,
            },
            ActionResult::Preview { text } => WireResult::Preview { text: text.clone() },
            ActionResult::Sent { message, duplicate } => WireResult::Sent {
                status: "sent".to_owned(),
                message: WireMessage::from(&**message),
                duplicate: *duplicate,
            },
            ActionResult::Held { reason } => WireResult::Held {
                status: "held".to_owned(),
                reason: reason.as_str().to_owned(),
            },
            ActionResult::Check { timed_out } => WireResult::Check {
                timed_out: *timed_out,
            },
            ActionResult::Done => WireResult::Done {},
        }
    }
}

/// The common envelope of every successful action (SPEC.md section 2).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireEnvelope {
    /// Which action.
    pub action: String,
    /// What it did.
    pub result: WireResult,
    /// Messages handed over, oldest first.
    #[serde(default)]
    pub incoming: Vec<WireMessage>,
    /// More are waiting.
    #[serde(default)]
    pub more_incoming: bool,
    /// The seqs of `incoming` that already reached this participant: they come again because
    /// an earlier result was lost. Left out when empty, as it nearly always is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeated: Vec<u64>,
    /// Receipts that changed since this participant's previous result.
    #[serde(default)]
    pub receipts: Vec<WireReceipt>,
    /// Who is composing.
    #[serde(default)]
    pub composing: Vec<String>,
    /// This participant's draft.
    #[serde(default)]
    pub draft: WireDraft,
    /// This participant's cursor.
    #[serde(default)]
    pub cursor: u64,
}

impl From<&Envelope> for WireEnvelope {
    fn from(e: &Envelope) -> Self {
        WireEnvelope {
            action: e.action.as_str().to_owned(),
            result: WireResult::from(&e.result),
            incoming: e.incoming.iter().map(|m| WireMessage::from(&**m)).collect(),
            more_incoming: e.more_incoming,
            repeated: e.repeated.clone(),
            receipts: e.receipts.iter().map(WireReceipt::from).collect(),
            composing: e.composing.iter().map(|n| n.as_str().to_owned()).collect(),
            draft: WireDraft {
                segments: e.draft.segments as u64,
                chars: e.draft.chars as u64,
            },
            cursor: e.cursor,
        }
    }
}

/// A participant as a description lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireParticipant {
    /// Its name.
    pub name: String,
    /// `human` or `agent`.
    pub kind: WireKind,
    /// The built-in agent playing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The name people see (absent when none was given: show `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `GET /v1/conversations/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireDescription {
    /// The conversation's id.
    pub id: String,
    /// Its title (`null` when it has none).
    #[serde(default)]
    pub title: Option<String>,
    /// Its participants in joining order.
    pub participants: Vec<WireParticipant>,
    /// The last message's seq.
    pub last_seq: u64,
    /// Every participant's read position.
    #[serde(default)]
    pub receipts: Vec<WireReceipt>,
    /// Who is composing.
    #[serde(default)]
    pub composing: Vec<String>,
    /// Who waits in `check`.
    #[serde(default)]
    pub checking: Vec<String>,
    /// Who holds a fresh typing lease (a subset of `composing`: the rest are drafting).
    #[serde(default)]
    pub typing: Vec<String>,
}

impl From<&Description> for WireDescription {
    fn from(d: &Description) -> Self {
        WireDescription {
            id: d.id.clone(),
            title: d.title.clone(),
            participants: d
                .participants
                .iter()
                .map(|p| WireParticipant {
                    name: p.name.as_str().to_owned(),
                    kind: p.kind.into(),
                    agent: p.agent.clone(),
                    display_name: p.display_name.clone(),
                })
                .collect(),
            last_seq: d.last_seq,
            receipts: d.receipts.iter().map(WireReceipt::from).collect(),
            composing: d.composing.iter().map(|n| n.as_str().to_owned()).collect(),
            checking: d.checking.iter().map(|n| n.as_str().to_owned()).collect(),
            typing: d.typing.iter().map(|n| n.as_str().to_owned()).collect(),
        }
    }
}

/// Who a participant token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireYou {
    /// The name.
    pub name: String,
    /// `human` or `agent`.
    pub kind: WireKind,
    /// The name people see (absent when none was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `GET /v1/whoami`: the description plus `you`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireWhoami {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: WireDescription,
    /// The caller.
    pub you: WireYou,
}

impl WireWhoami {
    /// `who`'s answer, given its conversation's description.
    pub fn new(description: &Description, who: &Participant) -> Self {
        WireWhoami {
            conversation: WireDescription::from(description),
            you: WireYou {
                name: who.name().as_str().to_owned(),
                kind: who.kind().into(),
                display_name: description
                    .participants
                    .iter()
                    .find(|p| &p.name == who.name())
                    .and_then(|p| p.display_name.clone()),
            },
        }
    }
}

/// `GET …/messages`: a page of history.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireHistory {
    /// Oldest first.
    pub messages: Vec<WireMessage>,
    /// More follow.
    #[serde(default)]
    pub more: bool,
}

impl From<&HistoryPage> for WireHistory {
    fn from(page: &HistoryPage) -> Self {
        WireHistory {
            messages: page.messages.iter().map(WireMessage::from).collect(),
            more: page.more,
        }
    }
}

/// A participant just created, with its token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireCreatedParticipant {
    /// Its name.
    pub name: String,
    /// `human` or `agent`.
    pub kind: WireKind,
    /// Its bearer token.
    pub token: String,
    /// The built-in agent playing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The name people see, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl From<&CreatedParticipant> for WireCreatedParticipant {
    fn from(p: &CreatedParticipant) -> Self {
        WireCreatedParticipant {
            name: p.name.as_str().to_owned(),
            kind: p.kind.into(),
            token: p.token.clone(),
            agent: p.agent.clone(),
            display_name: p.display_name.clone(),
        }
    }
}

/// `POST /v1/conversations` answered.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireCreated {
    /// The new conversation's id.
    pub id: String,
    /// Its title.
    pub title: Option<String>,
    /// Its participants with their tokens.
    pub participants: Vec<WireCreatedParticipant>,
}

impl From<&Created> for WireCreated {
    fn from(c: &Created) -> Self {
        WireCreated {
            id: c.id.clone(),
            title: c.title.clone(),
            participants: c
                .participants
                .iter()
                .map(WireCreatedParticipant::from)
                .collect(),
        }
    }
}

/// One agent of `GET /v1/agents`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireAgent {
    /// Its configured name.
    pub name: String,
    /// `reply` or `actions`.
    pub mode: String,
}

/// `GET /v1/agents`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireAgents {
    /// The configured agents, in name order.
    pub agents: Vec<WireAgent>,
}

impl From<&[AgentInfo]> for WireAgents {
    fn from(agents: &[AgentInfo]) -> Self {
        WireAgents {
            agents: agents
                .iter()
                .map(|a| WireAgent {
                    name: a.name.clone(),
                    mode: a.mode.to_owned(),
                })
                .collect(),
        }
    }
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireHealth {
    /// `"ok"`.
    pub status: String,
}

/// The inner part of every error body.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireErrorDetail {
    /// The stable snake_case code.
    pub code: String,
    /// A sentence to act on.
    pub message: String,
}

/// Every error body: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireError {
    /// What went wrong.
    pub error: WireErrorDetail,
}

impl WireError {
    /// The body for `code` and `message`.
    pub fn new(code: &str, message: &str) -> Self {
        WireError {
            error: WireErrorDetail {
                code: code.to_owned(),
                message: message.to_owned(),
            },
        }
    }
}

/// `composing` events of the event stream.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct WireComposing {
    /// Who.
    pub participant: String,
    /// Started (`true`) or stopped.
    pub composing: bool,
}

/// An event for the SSE stream: its name, its data and, for messages, its id (the seq).
pub fn event(e: &Event) -> (&'static str, String, Option<u64>) {
    match e {
        Event::Message(m) => ("message", to_string(&WireMessage::from(&**m)), Some(m.seq)),
        Event::Composing {
            participant,
            composing,
        } => (
            "composing",
            to_string(&WireComposing {
                participant: participant.as_str().to_owned(),
                composing: *composing,
            }),
            None,
        ),
        Event::Receipt(r) => ("receipt", to_string(&WireReceipt::from(r)), None),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hark_core::protocol::{DraftSummary, HoldReason, ParticipantName};
    use serde_json::json;

    use super::*;

    #[test]
    fn timestamps_always_carry_milliseconds() {
        assert_eq!(timestamp(Millis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(Millis(1_795_251_444_512)),
            "2026-11-21T08:57:24.512Z"
        );
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        assert!(matches!(
            decode_action(ActionKind::Undo, b""),
            Ok(Action::Undo)
        ));
        assert!(decode_action(ActionKind::Undo, br#"{"x":1}"#).is_err());
        assert!(decode_action(ActionKind::Append, b"").is_err());
        assert!(decode_action(ActionKind::Read, br#"{"up_to": -1}"#).is_err());
        assert!(decode_action(ActionKind::Read, br#"{"up_to": 1e400}"#).is_err());
    }

    #[test]
    fn encoding_an_action_decodes_to_the_same_action() {
        let actions = [
            Action::Append { text: "hi".into() },
            Action::Undo,
            Action::Reset,
            Action::Preview,
            Action::Push {
                force: true,
                client_id: Some("c1".into()),
            },
            Action::Push {
                force: false,
                client_id: None,
            },
            Action::Check {
                timeout_ms: Some(5),
            },
            Action::Check { timeout_ms: None },
            Action::Typing { typing: true },
            Action::Read { up_to: 3 },
            Action::Send {
                text: "x".into(),
                client_id: None,
                attachment: None,
            },
        ];
        for action in actions {
            let (kind, body) = encode_action(&action);
            let decoded = decode_action(kind, body.to_string().as_bytes()).unwrap();
            assert_eq!(decoded, action);
        }
    }

    fn message(seq: u64, client_id: Option<&str>) -> Arc<Message> {
        Arc::new(Message {
            seq,
            id: format!("c-{seq}"),
            from: ParticipantName::parse("bob").unwrap(),
            text: "hi".into(),
            sent_at: Millis(1_795_251_444_512),
            client_id: client_id.map(str::to_owned),
            attachment: None,
        })
    }

    /// The envelope's JSON, byte for byte, for every shape of result: what clients parse.
    #[test]
    fn envelopes_keep_their_shape() {
        let results = [
            ActionResult::Append {
                appended_chars: 5,
                truncated: true,
                dropped_chars: 2,
                notice: Some("cut".into()),
            },
            ActionResult::Append {
                appended_chars: 5,
                truncated: false,
                dropped_chars: 0,
                notice: None,
            },
            ActionResult::Undo {
                removed: "so".into(),
            },
            ActionResult::Reset { discarded_chars: 3 },
            ActionResult::Preview { text: "x".into() },
            ActionResult::Sent {
                message: message(4, Some("k")),
                duplicate: false,
            },
            ActionResult::Held {
                reason: HoldReason::UnseenMessages,
            },
            ActionResult::Check { timed_out: true },
            ActionResult::Done,
        ];
        let mut out = String::new();
        for result in results {
            let envelope = Envelope {
                action: ActionKind::Push,
                result,
                incoming: vec![message(3, None)],
                more_incoming: false,
                repeated: Vec::new(),
                receipts: vec![Receipt {
                    participant: ParticipantName::parse("bob").unwrap(),
                    read_up_to: 2,
                }],
                composing: vec![ParticipantName::parse("bob").unwrap()],
                draft: DraftSummary {
                    segments: 1,
                    chars: 5,
                },
                cursor: 3,
            };
            let wire = WireEnvelope::from(&envelope);
            let json = to_value(&wire);
            // What a remote session reads back is what was sent.
            assert_eq!(
                serde_json::from_value::<WireEnvelope>(json.clone()).unwrap(),
                wire
            );
            out.push_str(&json["result"].to_string());
            out.push('\n');
        }
        expect_test::expect![[r#"
            {"appended_chars":5,"truncated":true,"dropped_chars":2,"notice":"cut"}
            {"appended_chars":5,"truncated":false,"dropped_chars":0}
            {"removed":"so"}
            {"discarded_chars":3}
            {"text":"x"}
            {"status":"sent","message":{"seq":4,"id":"c-4","from":"bob","text":"hi","sent_at":"2026-11-21T08:57:24.512Z","client_id":"k"},"duplicate":false}
            {"status":"held","reason":"unseen_messages"}
            {"timed_out":true}
            {}
        "#]]
        .assert_eq(&out);
        let envelope = Envelope {
            action: ActionKind::Read,
            result: ActionResult::Done,
            incoming: vec![message(3, None)],
            more_incoming: true,
            repeated: vec![3],
            receipts: Vec::new(),
            composing: Vec::new(),
            draft: DraftSummary::default(),
            cursor: 3,
        };
        assert_eq!(
            to_value(&WireEnvelope::from(&envelope)),
            json!({
                "action": "read",
                "result": {},
                "incoming": [{"seq": 3, "id": "c-3", "from": "bob", "text": "hi", "sent_at": "2026-11-21T08:57:24.512Z"}],
                "more_incoming": true,
                "repeated": [3],
                "receipts": [],
                "composing": [],
                "draft": {"segments": 0, "chars": 0},
                "cursor": 3,
            })
        );
    }
}
