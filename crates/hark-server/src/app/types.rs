//! The plain values the service takes and gives.

use hark_core::protocol::{Event, Message, ParticipantKind, ParticipantName};
use tokio::sync::broadcast;

/// A participant to create: validated at the edge, checked against the others by the service.
#[derive(Clone, Debug)]
pub struct ParticipantSpec {
    /// Its name.
    pub name: ParticipantName,
    /// Person or model.
    pub kind: ParticipantKind,
    /// The built-in agent to play it, by its configured name.
    pub agent: Option<String>,
    /// The name people see (validated by [`display_name`]); `None` shows `name`.
    pub display_name: Option<String>,
}

/// Most Unicode scalar values of a display name.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// A display name as given, trimmed and checked: 1 to [`MAX_DISPLAY_NAME_CHARS`] Unicode scalar
/// values after trimming, no control characters. `Err` says why, as a sentence.
pub fn display_name(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    let count = trimmed.chars().count();
    if count == 0 || count > MAX_DISPLAY_NAME_CHARS {
        return Err(format!(
            "A display name is 1 to {MAX_DISPLAY_NAME_CHARS} characters after trimming ({count} given)."
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("A display name cannot hold control characters (line breaks, tabs…).".into());
    }
    Ok(trimmed.to_owned())
}

/// An attachment just stored, or as a message carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// Its id, unique in its conversation.
    pub id: String,
    /// Its media type.
    pub mime: String,
    /// Its size in bytes.
    pub bytes: usize,
}

/// The media types an attachment may have, each with the magic bytes its data must start with
/// (WebP: `RIFF`, four size bytes, then `WEBP`).
pub const ATTACHMENT_TYPES: &[(&str, &[u8])] = &[
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF8"),
    ("image/webp", b"RIFF"),
];

/// Whether `data` looks like `mime` by its first bytes; `Err` says why not, as a sentence.
pub fn check_attachment(mime: &str, data: &[u8]) -> Result<(), String> {
    let Some((_, magic)) = ATTACHMENT_TYPES.iter().find(|(m, _)| *m == mime) else {
        let known: Vec<&str> = ATTACHMENT_TYPES.iter().map(|(m, _)| *m).collect();
        return Err(format!(
            "An attachment is one of {}; {mime:?} is not.",
            known.join(", ")
        ));
    };
    let webp = mime != "image/webp" || data.get(8..12) == Some(b"WEBP".as_slice());
    if !data.starts_with(magic) || !webp {
        return Err(format!(
            "The data is not a {mime} image (its first bytes say otherwise)."
        ));
    }
    Ok(())
}

/// A participant as a description lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Its name (the protocol's handle).
    pub name: ParticipantName,
    /// Person or model.
    pub kind: ParticipantKind,
    /// The built-in agent playing it.
    pub agent: Option<String>,
    /// The name people see, if one was given.
    pub display_name: Option<String>,
}

/// A participant just created, with its bearer token (shown once, never stored).
#[derive(Clone, Debug)]
pub struct CreatedParticipant {
    /// Its name.
    pub name: ParticipantName,
    /// Person or model.
    pub kind: ParticipantKind,
    /// The built-in agent playing it.
    pub agent: Option<String>,
    /// The name people see, if one was given.
    pub display_name: Option<String>,
    /// Its bearer token.
    pub token: String,
}

/// A conversation just created.
#[derive(Clone, Debug)]
pub struct Created {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: Option<String>,
    /// Its participants with their tokens, in the order asked for.
    pub participants: Vec<CreatedParticipant>,
}

/// A page of history.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// More messages follow the last one.
    pub more: bool,
}

/// Live events of a conversation, from a known point on.
pub struct Subscription {
    /// Every event after `last_seq` was committed arrives here (a lagging receiver must catch up
    /// from history).
    pub live: broadcast::Receiver<Event>,
    /// The last message committed when the subscription began.
    pub last_seq: u64,
}

/// A configured built-in agent, as `GET /v1/agents` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentInfo {
    /// Its name in the config (`[[agent]] name`).
    pub name: String,
    /// `"reply"` or `"actions"`.
    pub mode: &'static str,
}
