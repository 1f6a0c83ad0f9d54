//! macOS Messages `chat.db` (SQLite, opened read-only): `message` joined through
//! `chat_message_join` to `chat`; `handle` names the other senders, `is_from_me` marks the
//! owner's messages (sender `me`). Each chat is one conversation, named by `chat_identifier`.
//!
//! `date` counts from the Apple epoch (2001-01-01 UTC): nanoseconds in modern versions, seconds
//! in old ones (a value below 10^12 is taken as seconds). `cache_has_attachments` marks an
//! attachment, taken as a photo (the common case; the attachment table is not read). The
//! object-replacement character Messages puts in the text of an attachment is removed. Messages
//! with no text and no attachment (reactions, or text stored only in `attributedBody`) are
//! left out.

use std::path::Path;

use hark_core::turn::Attachment;
use rusqlite::{Connection, OpenFlags};

use super::TraceError;
use crate::trace::{ConversationBuilder, Trace};

/// The Apple epoch (2001-01-01T00:00:00Z) in Unix milliseconds.
pub const APPLE_EPOCH_MS: u64 = 978_307_200_000;

const QUERY: &str = "
    SELECT c.ROWID, c.chat_identifier, m.is_from_me, h.id, m.date, m.text,
           m.cache_has_attachments
    FROM message m
    JOIN chat_message_join cmj ON cmj.message_id = m.ROWID
    JOIN chat c ON c.ROWID = cmj.chat_id
    LEFT JOIN handle h ON h.ROWID = m.handle_id
    ORDER BY c.ROWID, m.date, m.ROWID";

pub(super) fn read(path: &Path) -> Result<Trace, TraceError> {
    let sqlite = |error| TraceError::Sqlite {
        path: path.to_owned(),
        error,
    };
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    let mut stmt = db.prepare(QUERY).map_err(sqlite)?;
    let mut rows = stmt.query([]).map_err(sqlite)?;
    let mut conversations = Vec::new();
    let mut current: Option<(i64, ConversationBuilder)> = None;
    while let Some(row) = rows.next().map_err(sqlite)? {
        let chat: i64 = row.get(0).map_err(sqlite)?;
        let ident: Option<String> = row.get(1).map_err(sqlite)?;
        let from_me: bool = row.get::<_, Option<i64>>(2).map_err(sqlite)?.unwrap_or(0) != 0;
        let handle: Option<String> = row.get(3).map_err(sqlite)?;
        let date: i64 = row.get::<_, Option<i64>>(4).map_err(sqlite)?.unwrap_or(0);
        let text: Option<String> = row.get(5).map_err(sqlite)?;
        let has_attachment = row.get::<_, Option<i64>>(6).map_err(sqlite)?.unwrap_or(0) != 0;
        if current.as_ref().is_none_or(|(c, _)| *c != chat) {
            if let Some((_, b)) = current.take() {
                conversations.push(b.build());
            }
            let name = ident.unwrap_or_else(|| format!("chat-{chat}"));
            current = Some((chat, ConversationBuilder::new(name)));
        }
        let Some((_, b)) = current.as_mut() else {
            continue;
        };
        let text = text.unwrap_or_default().replace('\u{fffc}', "");
        let attachment = has_attachment.then_some(Attachment::Photo);
        if text.trim().is_empty() && attachment.is_none() {
            continue;
        }
        let sender = if from_me {
            "me".to_owned()
        } else {
            handle.unwrap_or_else(|| "unknown".to_owned())
        };
        b.message(&sender, apple_date_ms(date), text.trim(), attachment);
    }
    if let Some((_, b)) = current {
        conversations.push(b.build());
    }
    Ok(Trace::from_conversations(conversations))
}

/// Unix milliseconds of a Messages `date`: nanoseconds since 2001 in modern versions, seconds in
/// old ones.
pub fn apple_date_ms(date: i64) -> u64 {
    let date = date.max(0) as u64;
    let since = if date >= 1_000_000_000_000 {
        date / 1_000_000
    } else {
        date * 1000
    };
    APPLE_EPOCH_MS + since
}
