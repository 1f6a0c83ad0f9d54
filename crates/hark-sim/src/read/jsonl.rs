//! hark's JSONL: one object per line, either a message
//! `{"conversation", "sender", "ts_ms", "text", "attachment"?}` or a typing event
//! `{"conversation", "sender", "ts_ms", "typing": true|false}`. Blank lines are skipped.
//! `attachment` is one of `photo`, `video`, `file`, `audio` (or `voice`), `sticker`. Other fields
//! (an exporter's ids, reactions, …) are ignored, so a line with more than hark needs is read, not
//! refused; a misspelt field is simply absent.

use std::collections::BTreeMap;
use std::path::Path;

use hark_core::turn::Attachment;
use serde::Deserialize;

use super::{Format, TraceError, read_to_string};
use crate::trace::{ConversationBuilder, Trace};

#[derive(Deserialize)]
struct Line {
    conversation: String,
    sender: String,
    ts_ms: u64,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attachment: Option<String>,
    #[serde(default)]
    typing: Option<bool>,
}

pub(super) fn read(path: &Path) -> Result<Trace, TraceError> {
    let text = read_to_string(path)?;
    let mut convs: BTreeMap<String, ConversationBuilder> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |m: String| TraceError::parse(path, Format::Jsonl, i + 1, m);
        let l: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let b = convs
            .entry(l.conversation.clone())
            .or_insert_with(|| ConversationBuilder::new(l.conversation.clone()));
        match (l.typing, l.text, l.attachment) {
            (Some(on), None, None) => b.typing(&l.sender, l.ts_ms, on),
            (None, text, attachment) if text.is_some() || attachment.is_some() => {
                let attachment = match attachment.as_deref() {
                    None => None,
                    Some(a) => Some(
                        parse_attachment(a)
                            .ok_or_else(|| bad(format!("unknown attachment {a:?}")))?,
                    ),
                };
                b.message(&l.sender, l.ts_ms, text.unwrap_or_default(), attachment);
            }
            _ => {
                return Err(bad(
                    "a line is either a message (text and/or attachment) or a typing event"
                        .to_owned(),
                ));
            }
        }
    }
    Ok(Trace::from_conversations(
        convs
            .into_values()
            .map(ConversationBuilder::build)
            .collect(),
    ))
}

fn parse_attachment(s: &str) -> Option<Attachment> {
    Some(match s {
        "photo" | "image" => Attachment::Photo,
        "video" => Attachment::Video,
        "file" => Attachment::File,
        "audio" | "voice" => Attachment::Audio,
        "sticker" => Attachment::Sticker,
        _ => return None,
    })
}
