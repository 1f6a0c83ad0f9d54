//! Telegram Desktop export (`result.json`): one chat `{"name", "type", "messages": [...]}`, or a
//! full export `{"chats": {"list": [chat, …]}}`. Each chat is one conversation.
//!
//! A message `{"type": "message", "date_unixtime": "1515096287", "from", "from_id", "text"}` has
//! `text` as a string or an array of strings and entities `{"type", "text"}`, which are joined.
//! Service messages (joins, calls) are left out. The sender is `from_id` (stable) or `from`.
//! Attachments: `photo` a photo; `media_type` `sticker`, `voice_message`/`audio_file` a voice
//! note, `video_file`/`video_message`/`animation` a video; any other `file` a file.

use std::path::Path;

use hark_core::turn::Attachment;
use serde_json::Value;

use super::{Format, TraceError, read_to_string};
use crate::trace::{ConversationBuilder, Trace};

pub(super) fn read(path: &Path) -> Result<Trace, TraceError> {
    let text = read_to_string(path)?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| TraceError::parse(path, Format::Telegram, e.line(), e))?;
    let chats: Vec<&Value> = match root.pointer("/chats/list").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None if root.get("messages").is_some() => vec![&root],
        None => {
            return Err(TraceError::parse(
                path,
                Format::Telegram,
                1,
                "expected a chat with \"messages\" or an export with \"chats\": {\"list\"}",
            ));
        }
    };
    let mut conversations = Vec::new();
    for (i, chat) in chats.into_iter().enumerate() {
        let id = match chat.get("id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => chat
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("chat-{i}")),
        };
        let mut b = ConversationBuilder::new(id);
        for m in chat
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            read_message(&mut b, m);
        }
        conversations.push(b.build());
    }
    Ok(Trace::from_conversations(conversations))
}

fn read_message(b: &mut ConversationBuilder, m: &Value) {
    if m.get("type").and_then(Value::as_str) != Some("message") {
        return;
    }
    let sender = m
        .get("from_id")
        .and_then(Value::as_str)
        .or_else(|| m.get("from").and_then(Value::as_str));
    let Some(sender) = sender else {
        return;
    };
    let ts = match m.get("date_unixtime") {
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    let Some(ts) = ts else {
        return;
    };
    let text = match m.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.as_str(),
                other => other.get("text").and_then(Value::as_str).unwrap_or(""),
            })
            .collect(),
        _ => String::new(),
    };
    let attachment = if m.get("photo").is_some() {
        Some(Attachment::Photo)
    } else {
        match m.get("media_type").and_then(Value::as_str) {
            Some("sticker") => Some(Attachment::Sticker),
            Some("voice_message" | "audio_file") => Some(Attachment::Audio),
            Some("video_file" | "video_message" | "animation") => Some(Attachment::Video),
            _ if m.get("file").is_some() => Some(Attachment::File),
            _ => None,
        }
    };
    if text.trim().is_empty() && attachment.is_none() {
        return;
    }
    b.message(sender, ts * 1000, text, attachment);
}
