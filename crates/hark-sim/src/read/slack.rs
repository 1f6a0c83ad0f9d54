//! Slack export: a channel is a folder of day files (`2018-01-04.json`), each a JSON array of
//! messages `{"type": "message", "user", "text", "ts": "1515096287.000200", "files"?: [...]}`.
//! Pass a day file, the channel's folder, or the export's root folder (a folder per channel,
//! beside `channels.json` and `users.json`): each channel is one conversation named after its
//! folder. A folder that holds neither day files nor channel folders is refused with a sentence,
//! not read as an empty channel.
//!
//! Kept: messages with a `user`, with no `subtype` or one of `file_share`, `thread_broadcast`,
//! `me_message`. Left out: joins, topic changes, bots, and thread replies (a `thread_ts` other
//! than the message's own `ts`), which are not part of the channel's back-and-forth.
//! An attachment is the first file's MIME type: `image/*` a photo, `video/*` a video,
//! `audio/*` a voice note, anything else a file.

use std::path::{Path, PathBuf};

use hark_core::turn::Attachment;
use serde_json::Value;

use super::{Format, TraceError, parse_seconds_ms, read_to_string};
use crate::trace::{ConversationBuilder, Trace};

const KEPT_SUBTYPES: &[&str] = &["file_share", "thread_broadcast", "me_message"];

pub(super) fn read(path: &Path) -> Result<Trace, TraceError> {
    if !path.is_dir() {
        let mut b = ConversationBuilder::new(name_of(path));
        read_day_file(&mut b, path)?;
        return Ok(Trace::from_conversations(vec![b.build()]));
    }
    let (files, folders) = listing(path)?;
    if !files.is_empty() && folders.is_empty() {
        return Ok(Trace::from_conversations(vec![read_channel(path, &files)?]));
    }
    // The export's root: one folder per channel (beside channels.json, users.json, …, which
    // describe the workspace and hold no messages).
    let mut conversations = Vec::new();
    for folder in &folders {
        let (days, _) = listing(folder)?;
        if !days.is_empty() {
            conversations.push(read_channel(folder, &days)?);
        }
    }
    if conversations.is_empty() {
        return Err(TraceError::NotSlackFolder(path.to_owned()));
    }
    Ok(Trace::from_conversations(conversations))
}

/// The `.json` files and the subfolders of a folder, sorted.
fn listing(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), TraceError> {
    let mut files = Vec::new();
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TraceError::io(dir, e))? {
        let p = entry.map_err(|e| TraceError::io(dir, e))?.path();
        if p.is_dir() {
            folders.push(p);
        } else if p.extension().is_some_and(|x| x == "json") {
            files.push(p);
        }
    }
    files.sort();
    folders.sort();
    Ok((files, folders))
}

fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slack".to_owned())
}

/// One channel: its day files, in date order, as one conversation named after the folder.
fn read_channel(
    folder: &Path,
    files: &[PathBuf],
) -> Result<crate::trace::Conversation, TraceError> {
    let mut b = ConversationBuilder::new(name_of(folder));
    for file in files {
        read_day_file(&mut b, file)?;
    }
    Ok(b.build())
}

fn read_day_file(b: &mut ConversationBuilder, file: &Path) -> Result<(), TraceError> {
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
        read_message(b, m);
    }
    Ok(())
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
