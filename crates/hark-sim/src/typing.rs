//! Typing for traces that have none: a person types each bubble for `len / cps` seconds before
//! sending it.

use crate::trace::{Conversation, Event, EventKind};

/// Longest synthesised typing for one bubble. At 3 chars/s a 300-character bubble would "type" for
/// 100 s; people that slow pause and think, and the gap is the trace's own business beyond a minute.
pub const MAX_TYPING_MS: u64 = 60_000;

/// Adds a typing-on event before every message of a conversation that has no typing events:
/// `chars / cps` seconds before it (at most [`MAX_TYPING_MS`]), but never before the previous
/// message of the conversation (by anyone: a person starts typing their next bubble after the last
/// one, or after reading what the other side just said). A message ends its author's typing, so
/// no typing-off is added. A bubble with no room to type (sent the same instant as the previous
/// message) or no text (a bare photo) gets none. Returns whether anything was added.
pub fn synthesise(conv: &mut Conversation, cps: f64) -> bool {
    if conv.has_typing() || cps <= 0.0 {
        return false;
    }
    let mut out = Vec::with_capacity(conv.events.len() * 2);
    let mut prev_ts: Option<u64> = None;
    for e in conv.events.drain(..) {
        if let EventKind::Message { text, .. } = &e.kind {
            let chars = text.trim().chars().count() as f64;
            let ms = ((chars * 1000.0 / cps).round() as u64).min(MAX_TYPING_MS);
            let start = e.ts_ms.saturating_sub(ms).max(prev_ts.unwrap_or(0));
            if ms > 0 && start < e.ts_ms {
                out.push(Event {
                    sender: e.sender,
                    ts_ms: start,
                    kind: EventKind::Typing(true),
                });
            }
            prev_ts = Some(e.ts_ms);
        }
        out.push(e);
    }
    // Typing starts no earlier than the previous message, so the order is still by time.
    debug_assert!(out.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    conv.events = out;
    true
}
