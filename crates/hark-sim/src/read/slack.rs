//! Slack export: a channel is a folder of day files (`2018-01-04.json`), each a JSON array of
//! messages `{"type": "message", "user", "text", "ts": "1515096287.000200", "files"?: [...]}`.
//! Pass the folder (or one day file); the channel is one conversation named after it.
//!
//! Kept: messages with a `user`, with no `subtype` or one of `file_share`, `thread_broadcast`,
//! `me_message`. Left out: joins, topic changes, bots, and thread replies (a `thread_ts` other
//! than the message's own `ts`), which are not part of the channel's back-and-forth.
//! An attachment is the first file's MIME type: `image/*` a photo, `video/*` a video,
//! `audio/*` a voice note, anything else a file.

use std::path::Path;

use hark_core::turn::Attachment;
use serde_json::Value;

use super::{Format, TraceError, parse_seconds_ms, read_to_string};
use crate::trace::{ConversationBuilder, Trace};

const KEPT_SUBTYPES: &[&str] = &["file_share", "thread_broadcast", "me_message"];

pub(super) fn read(path: &Path) -> Result<Trace, TraceError> {
    let files = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| TraceError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slack".to_owned());
    let mut b = ConversationBuilder::new(name);
    for file in &files {
        let text = read_to_string(file)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| TraceError::parse(file, Format::Slack, e.line(), e))?;
        let Value::Array(messages) = value else {
            return Err(TraceError::parse(
                file,
                Format::Slack,
                1,
                "expected an array of messages",
            ));
        };
        for m in &messages {
            read_message(&mut b, m);
        }
    }
    Ok(Trace::from_conversations(vec![b.build()]))
}

fn read_message(b: &mut ConversationBuilder, m: &Value) {
    let Some(user) = m.get("user").and_then(Value::as_str) else {
        return;
    };
    if let Some(sub) = m.get("subtype").and_then(Value::as_str)
        && !KEPT_SUBTYPES.contains(&sub)
    {
        return;
    }
    let Some(ts_str) = m.get("ts").and_then(Value::as_str) else {
        return;
    };
    if let Some(thread) = m.get("thread_ts").and_then(Value::as_str)
        && thread != ts_str
        && m.get("subtype").and_then(Value::as_str) != Some("thread_broadcast")
    {
        return;
    }
    let Some(ts) = parse_seconds_ms(ts_str) else {
        return;
    };
    let text = m.get("text").and_then(Value::as_str).unwrap_or("");
    let attachment = m
        .get("files")
        .and_then(Value::as_array)
        .and_then(|f| f.first())
        .map(|f| {
            let mime = f.get("mimetype").and_then(Value::as_str).unwrap_or("");
            if mime.starts_with("image/") {
                Attachment::Photo
            } else if mime.starts_with("video/") {
                Attachment::Video
            } else if mime.starts_with("audio/") {
                Attachment::Audio
            } else {
                Attachment::File
            }
        });
    if text.trim().is_empty() && attachment.is_none() {
        return;
    }
    b.message(user, ts, text, attachment);
}
