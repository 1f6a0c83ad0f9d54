//! The Chit-Chat corpus: `{uuid: {"messages": [[{"text", "timestamp", "sender"}, …], …], …}}`.
//! The per-conversation `start` field is ignored (its README: it is hours off).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Format, Split, TraceError, parse_rfc3339_ms, read_to_string};
use crate::trace::{ConversationBuilder, Trace};

#[derive(Deserialize)]
struct Conv {
    messages: Vec<Vec<Msg>>,
}

#[derive(Deserialize)]
struct Msg {
    text: String,
    timestamp: String,
    sender: String,
}

pub(super) fn read(path: &Path, split: Option<Split>) -> Result<Trace, TraceError> {
    let text = read_to_string(path)?;
    let corpus: BTreeMap<String, Conv> = serde_json::from_str(&text)
        .map_err(|e| TraceError::parse(path, Format::Chitchat, e.line(), e))?;
    let mut conversations = Vec::new();
    for (id, conv) in corpus {
        if split.is_some_and(|s| !s.contains(&id)) {
            continue;
        }
        let mut b = ConversationBuilder::new(id);
        for m in conv.messages.into_iter().flatten() {
            let Some(ts) = parse_rfc3339_ms(&m.timestamp) else {
                return Err(TraceError::parse(
                    path,
                    Format::Chitchat,
                    0,
                    format!("bad timestamp {:?}", m.timestamp),
                ));
            };
            b.message(&m.sender, ts, m.text, None);
        }
        conversations.push(b.build());
    }
    Ok(Trace::from_conversations(conversations))
}
