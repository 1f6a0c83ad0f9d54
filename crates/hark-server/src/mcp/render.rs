//! The text content of a tool result: the wire JSON, rendered as plain sentences a model reads
//! without parsing anything ("New since you last looked: [12] bob: …").
//!
//! The renderer reads only the wire JSON (the same that goes out as structured content), so the
//! text can never say something the structured content does not.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::session::ToolError;
use crate::wire::{
    WireDescription, WireDraft, WireEnvelope, WireHistory, WireMessage, WireResult, WireWhoami,
};

/// The text for a successful action's envelope. `me` (this participant's name, if known) is
/// left out of "composing" and receipts: a model need not be told about itself.
pub fn envelope(body: &Value, me: Option<&str>) -> String {
    let Ok(e) = WireEnvelope::deserialize(body) else {
        // Only reachable if a server speaks another version of the wire format.
        return format!("The server answered: {body}");
    };
    let mut out = String::new();
    if !e.incoming.is_empty() {
        out.push_str("New since you last looked:\n");
        for m in &e.incoming {
            push_message(&mut out, m, e.repeated.contains(&m.seq));
        }
        if e.more_incoming {
            out.push_str("(More new messages are waiting: call check to read them.)\n");
        }
        if e.incoming.iter().any(|m| e.repeated.contains(&m.seq)) {
            out.push_str(
                "(Messages marked \"again\" reached you before: an answer that came before \
                 them was lost, so they are shown once more. Nothing was sent twice.)\n",
            );
        }
        out.push('\n');
    }
    out.push_str(&action_line(&e));
    let others: Vec<&str> = e
        .composing
        .iter()
        .map(String::as_str)
        .filter(|name| Some(*name) != me)
        .collect();
    if !others.is_empty() {
        let verb = if others.len() == 1 { "is" } else { "are" };
        let _ = write!(out, "\n{} {verb} composing.", list(&others));
    }
    for r in e
        .receipts
        .iter()
        .filter(|r| Some(r.participant.as_str()) != me)
    {
        let _ = write!(
            out,
            "\n{} has read up to [{}].",
            r.participant, r.read_up_to
        );
    }
    out
}

/// The text for `history`'s `{messages, more}`.
pub fn history(body: &Value, after: u64) -> String {
    let Ok(page) = WireHistory::deserialize(body) else {
        return format!("The server answered: {body}");
    };
    let Some(last) = page.messages.last().map(|m| m.seq) else {
        return if page.more {
            format!(
                "Messages follow [{after}]: call history with a limit of 1 or more to read them."
            )
        } else {
            format!("No messages after [{after}].")
        };
    };
    let mut out = format!("Messages after [{after}], oldest first:\n");
    for m in &page.messages {
        push_message(&mut out, m, false);
    }
    if page.more {
        let _ = write!(
            out,
            "(More after [{last}]: call history with after={last} to read on.)"
        );
    }
    out.trim_end().to_owned()
}

/// The text for `whoami`'s body (that of `GET /v1/whoami`).
pub fn whoami(body: &Value) -> String {
    let Ok(WireWhoami { conversation, you }) = WireWhoami::deserialize(body) else {
        return format!("The server answered: {body}");
    };
    let WireDescription {
        id,
        title,
        participants,
        last_seq,
        composing,
        ..
    } = conversation;
    let mut out = format!(
        "You are {} ({}) in conversation {id}",
        you.name,
        kind(you.kind)
    );
    if let Some(title) = title.filter(|t| !t.is_empty()) {
        let _ = write!(out, " \"{title}\"");
    }
    let others: Vec<String> = participants
        .iter()
        .filter(|p| p.name != you.name)
        .map(|p| format!("{} ({})", p.name, kind(p.kind)))
        .collect();
    if others.is_empty() {
        out.push_str(", alone so far.");
    } else {
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        let _ = write!(out, " with {}.", list(&others));
    }
    if last_seq == 0 {
        out.push_str(" Nobody has written yet.");
    } else {
        let _ = write!(
            out,
            " The last message is [{last_seq}]; call history to read the conversation so far."
        );
    }
    let composing: Vec<&str> = composing
        .iter()
        .map(String::as_str)
        .filter(|n| *n != you.name)
        .collect();
    if !composing.is_empty() {
        let verb = if composing.len() == 1 { "is" } else { "are" };
        let _ = write!(out, " {} {verb} composing.", list(&composing));
    }
    out
}

/// The text of a refused action: the HTTP API's code and sentence.
pub fn error(error: &ToolError) -> String {
    format!("{}: {}", error.code, error.message)
}

fn action_line(e: &WireEnvelope) -> String {
    let draft = draft_summary(&e.draft);
    match &e.result {
        WireResult::Append {
            appended_chars,
            truncated,
            dropped_chars,
            notice,
        } => {
            let mut line = format!(
                "Appended {} ({draft}).",
                count(*appended_chars, "character", "characters")
            );
            if *truncated {
                match notice {
                    Some(notice) => {
                        line.push(' ');
                        line.push_str(notice);
                    }
                    None => {
                        let _ = write!(
                            line,
                            " {} did not fit and were dropped.",
                            count(*dropped_chars, "character", "characters")
                        );
                    }
                }
            }
            line
        }
        WireResult::Undo { removed } => {
            format!("Removed your last segment, \"{removed}\" ({draft}).")
        }
        WireResult::Reset { discarded_chars } => format!(
            "Discarded your draft ({}); it is empty now.",
            count(*discarded_chars, "character", "characters")
        ),
        WireResult::Preview { text } => {
            if text.is_empty() {
                "Your draft is empty.".to_owned()
            } else {
                format!("Your draft ({draft}), exactly as push would send it:\n{text}")
            }
        }
        WireResult::Held { .. } => {
            let n = e.incoming.len() as u64;
            let arrived = if e.more_incoming {
                format!("more than {n} new messages arrived")
            } else if n == 1 {
                "1 new message arrived".to_owned()
            } else {
                format!("{n} new messages arrived")
            };
            let them = if n == 1 && !e.more_incoming {
                "it"
            } else {
                "them"
            };
            format!(
                "Your push was held: {arrived} — read {them}, then push again to send as is, or \
                 revise."
            )
        }
        WireResult::Sent {
            message, duplicate, ..
        } => {
            if *duplicate {
                format!(
                    "Already sent as message {} (same client_id); nothing changed.",
                    message.seq
                )
            } else {
                format!("Sent as message {}.", message.seq)
            }
        }
        WireResult::Check { timed_out } => {
            if *timed_out {
                "Nothing new; call check again.".to_owned()
            } else if e.incoming.is_empty() {
                "Nothing new to read; call check again to keep listening.".to_owned()
            } else {
                "Reply with append and push, or call check again to keep listening.".to_owned()
            }
        }
        WireResult::Done {} => "Done.".to_owned(),
    }
}

fn push_message(out: &mut String, m: &WireMessage, again: bool) {
    // Continuation lines are indented so a message's lines stay visibly together.
    let text = m.text.replace('\n', "\n    ");
    let again = if again { " (again)" } else { "" };
    let _ = writeln!(out, "[{}] {}{again}: {}", m.seq, m.from, text);
}

fn draft_summary(d: &WireDraft) -> String {
    if d.segments == 0 {
        return "draft: empty".to_owned();
    }
    format!(
        "draft: {}, {}",
        count(d.segments, "segment", "segments"),
        count(d.chars, "character", "characters")
    )
}

fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn kind(kind: crate::wire::WireKind) -> &'static str {
    match kind {
        crate::wire::WireKind::Human => "human",
        crate::wire::WireKind::Agent => "agent",
    }
}

/// "a", "a and b", "a, b and c".
fn list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use serde_json::json;

    use super::*;

    fn env(action: &str, result: Value, incoming: Value) -> Value {
        json!({
            "action": action,
            "result": result,
            "incoming": incoming,
            "more_incoming": false,
            "receipts": [],
            "composing": [],
            "draft": {"segments": 2, "chars": 120},
            "cursor": 12,
        })
    }

    #[test]
    fn append_with_a_message_piggybacked() {
        let body = env(
            "append",
            json!({"appended_chars": 42, "truncated": false, "dropped_chars": 0}),
            json!([{"seq": 12, "id": "c-12", "from": "bob", "text": "wait,\nnoon is bad", "sent_at": "…"}]),
        );
        expect![[r#"
            New since you last looked:
            [12] bob: wait,
                noon is bad

            Appended 42 characters (draft: 2 segments, 120 characters)."#]]
        .assert_eq(&envelope(&body, Some("alice")));
    }

    #[test]
    fn held_push_counts_what_arrived() {
        let mut body = env(
            "push",
            json!({"status": "held", "reason": "unseen_messages"}),
            json!([{"seq": 3, "from": "bob", "text": "hi"}]),
        );
        body["composing"] = json!(["alice", "bob"]);
        body["receipts"] = json!([{"participant": "bob", "read_up_to": 2}]);
        expect![[r#"
            New since you last looked:
            [3] bob: hi

            Your push was held: 1 new message arrived — read it, then push again to send as is, or revise.
            bob is composing.
            bob has read up to [2]."#]]
        .assert_eq(&envelope(&body, Some("alice")));
        body["incoming"] = json!([{"seq": 3, "from": "bob", "text": "a"}, {"seq": 4, "from": "carol", "text": "b"}]);
        body["more_incoming"] = json!(true);
        assert!(envelope(&body, Some("alice")).contains(
            "Your push was held: more than 2 new messages arrived — read them, then push again"
        ));
    }

    #[test]
    fn repeated_messages_say_so() {
        let mut body = env(
            "check",
            json!({"timed_out": false}),
            json!([{"seq": 1, "from": "bob", "text": "one"}, {"seq": 2, "from": "bob", "text": "two"}]),
        );
        body["repeated"] = json!([2]);
        expect![[r#"
            New since you last looked:
            [1] bob: one
            [2] bob (again): two
            (Messages marked "again" reached you before: an answer that came before them was lost, so they are shown once more. Nothing was sent twice.)

            Reply with append and push, or call check again to keep listening."#]]
        .assert_eq(&envelope(&body, Some("alice")));
    }

    #[test]
    fn sent_check_and_the_rest() {
        let sent = env(
            "push",
            json!({"status": "sent", "duplicate": false, "message": {"seq": 13, "from": "alice", "text": "hi"}}),
            json!([]),
        );
        assert_eq!(envelope(&sent, None), "Sent as message 13.");
        let quiet = env("check", json!({"timed_out": true}), json!([]));
        assert_eq!(envelope(&quiet, None), "Nothing new; call check again.");
        let undo = env("undo", json!({"removed": "so"}), json!([]));
        assert_eq!(
            envelope(&undo, None),
            "Removed your last segment, \"so\" (draft: 2 segments, 120 characters)."
        );
        let mut preview = env("preview", json!({"text": ""}), json!([]));
        preview["draft"] = json!({"segments": 0, "chars": 0});
        assert_eq!(envelope(&preview, None), "Your draft is empty.");
    }

    #[test]
    fn history_and_whoami() {
        let page = json!({"messages": [
            {"seq": 1, "from": "alice", "text": "hi"},
            {"seq": 2, "from": "bob", "text": "hello"},
        ], "more": true});
        expect![[r#"
            Messages after [0], oldest first:
            [1] alice: hi
            [2] bob: hello
            (More after [2]: call history with after=2 to read on.)"#]]
        .assert_eq(&history(&page, 0));
        assert_eq!(
            history(&json!({"messages": [], "more": false}), 5),
            "No messages after [5]."
        );
        let who = json!({
            "id": "abc", "title": "lunch", "you": {"name": "bob", "kind": "agent"},
            "participants": [{"name": "alice", "kind": "human"}, {"name": "bob", "kind": "agent"}],
            "last_seq": 13, "receipts": [], "composing": ["alice"],
        });
        expect![[r#"You are bob (agent) in conversation abc "lunch" with alice (human). The last message is [13]; call history to read the conversation so far. alice is composing."#]]
        .assert_eq(&whoami(&who));
    }
}
