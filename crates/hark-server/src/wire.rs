//! The HTTP JSON wire format, converted by hand from and to the core's types.
//!
//! **Invariant:** only this module knows field names on the wire; renaming a core type never
//! changes the protocol.

use std::sync::Arc;

use hark_core::protocol::{
    Action, ActionKind, ActionResult, Envelope, Event, Message, ParticipantKind, Receipt,
};
use hark_core::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;

// ---- requests -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    #[serde(default)]
    pub title: Option<String>,
    pub participants: Vec<NewParticipant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewParticipant {
    pub name: String,
    pub kind: WireKind,
    #[serde(default)]
    pub agent: Option<String>,
}

#[derive(Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WireKind {
    Human,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    pub after: u64,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    pub after: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingBody {
    typing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    up_to: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    text: String,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// Decodes the body of `POST /v1/conversations/{id}/{action}`. An empty body means `{}`.
pub fn decode_action(kind: ActionKind, body: &[u8]) -> Result<Action, ApiError> {
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
            let SendBody { text, client_id } = parse(body)?;
            Action::Send { text, client_id }
        }
    })
}

/// The route name and body of an action, as a client sends it: the inverse of [`decode_action`].
/// Used by `hark mcp --url`, which talks to a running server over this same API.
pub fn encode_action(action: &Action) -> (ActionKind, Value) {
    let body = match action {
        Action::Append { text } => json!({ "text": text }),
        Action::Undo | Action::Reset | Action::Preview => json!({}),
        Action::Push { force, client_id } => {
            let mut body = json!({ "force": force });
            if let Some(client_id) = client_id {
                body["client_id"] = json!(client_id);
            }
            body
        }
        Action::Check { timeout_ms } => match timeout_ms {
            Some(timeout_ms) => json!({ "timeout_ms": timeout_ms }),
            None => json!({}),
        },
        Action::Typing { typing } => json!({ "typing": typing }),
        Action::Read { up_to } => json!({ "up_to": up_to }),
        Action::Send { text, client_id } => {
            let mut body = json!({ "text": text });
            if let Some(client_id) = client_id {
                body["client_id"] = json!(client_id);
            }
            body
        }
    };
    (action.kind(), body)
}

/// Parses JSON into `T`, turning serde's complaint into a 400 a client can act on.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid here: {e}.")))
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

pub fn message(m: &Message) -> Value {
    let mut value = json!({
        "seq": m.seq,
        "id": m.id,
        "from": m.from.as_str(),
        "text": m.text,
        "sent_at": timestamp(m.sent_at),
    });
    if let Some(client_id) = &m.client_id {
        value["client_id"] = json!(client_id);
    }
    value
}

pub fn messages(ms: &[Arc<Message>]) -> Value {
    Value::Array(ms.iter().map(|m| message(m)).collect())
}

pub fn receipt(r: &Receipt) -> Value {
    json!({ "participant": r.participant.as_str(), "read_up_to": r.read_up_to })
}

pub fn envelope(e: &Envelope) -> Value {
    let result = match &e.result {
        ActionResult::Append {
            appended_chars,
            truncated,
            dropped_chars,
            notice,
        } => {
            let mut r = json!({
                "appended_chars": appended_chars,
                "truncated": truncated,
                "dropped_chars": dropped_chars,
            });
            if let Some(notice) = notice {
                r["notice"] = json!(notice);
            }
            r
        }
        ActionResult::Undo { removed } => json!({ "removed": removed }),
        ActionResult::Reset { discarded_chars } => json!({ "discarded_chars": discarded_chars }),
        ActionResult::Preview { text } => json!({ "text": text }),
        ActionResult::Sent {
            message: m,
            duplicate,
        } => {
            json!({ "status": "sent", "message": message(m), "duplicate": duplicate })
        }
        ActionResult::Held { reason } => json!({ "status": "held", "reason": reason.as_str() }),
        ActionResult::Check { timed_out } => json!({ "timed_out": timed_out }),
        ActionResult::Done => json!({}),
    };
    json!({
        "action": e.action.as_str(),
        "result": result,
        "incoming": messages(&e.incoming),
        "more_incoming": e.more_incoming,
        "receipts": e.receipts.iter().map(receipt).collect::<Vec<_>>(),
        "composing": e.composing.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        "draft": { "segments": e.draft.segments, "chars": e.draft.chars },
        "cursor": e.cursor,
    })
}

/// An event for the SSE stream: its name, its data and, for messages, its id (the seq).
pub fn event(e: &Event) -> (&'static str, Value, Option<u64>) {
    match e {
        Event::Message(m) => ("message", message(m), Some(m.seq)),
        Event::Composing {
            participant,
            composing,
        } => (
            "composing",
            json!({ "participant": participant.as_str(), "composing": composing }),
            None,
        ),
        Event::Receipt(r) => ("receipt", receipt(r), None),
    }
}

#[cfg(test)]
mod tests {
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
            },
        ];
        for action in actions {
            let (kind, body) = encode_action(&action);
            let decoded = decode_action(kind, body.to_string().as_bytes()).unwrap();
            assert_eq!(decoded, action);
        }
    }
}
