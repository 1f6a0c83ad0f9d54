//! Arbitrary sequences of actions, timeouts, participants and result fates (delivered, lost,
//! confirmed by the client) against the protocol core: it never panics, and after every step its
//! invariants hold. Half the inputs run with a log window of one to four messages and a driver
//! that commits at once and recalls what each request needs from its own store, as the server
//! does (also before it reports a result lost): the recall rounds end, a held push always shows
//! what it waits for, and no result says more is waiting with nothing in it.
#![no_main]

use arbitrary::Arbitrary;
use std::sync::Arc;

use hark_core::protocol::{
    Action, ActionResult, AttachmentRef, Confirm, Conversation, Effect, Limits, Message, Output,
    ParticipantKind, ParticipantName, Recall, RequestId,
};
use hark_core::time::Millis;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    Act {
        who: u8,
        dt_ms: u16,
        action: FuzzAction,
        received: Option<u64>,
    },
    /// Reports the fate of a reply that waits for it (by its position among those waiting).
    Fate {
        index: u8,
        delivered: bool,
    },
    Timeout {
        dt_ms: u32,
    },
    Join {
        name: String,
    },
    Shutdown,
}

#[derive(Arbitrary, Debug)]
enum FuzzAction {
    Append(String),
    Undo,
    Reset,
    Preview,
    Push {
        force: bool,
        client_id: Option<String>,
    },
    Check {
        timeout_ms: Option<u64>,
    },
    Typing(bool),
    Read(u64),
    /// `photo`: a photo of that many bytes, its caption being `text`.
    Send {
        text: String,
        client_id: Option<String>,
        photo: Option<u16>,
    },
}

/// What a driver does before a request (`recall_for`) or before it reports a result lost
/// (`recall_for_lost`): read what the machine names from before the window, round after round,
/// until it names nothing more.
fn recall(
    conversation: &mut Conversation,
    store: &[Arc<Message>],
    who: Option<&ParticipantName>,
    next: impl Fn(&Conversation) -> Recall,
) {
    for round in 0.. {
        let recall = next(conversation);
        if recall.is_empty() {
            return;
        }
        assert!(round <= store.len(), "recall rounds never end: {recall:?}");
        let mut recalled = Vec::new();
        for &(after, limit) in &recall.runs {
            assert!(limit > 0 && after + limit as u64 <= conversation.window_base());
            recalled.extend(
                store
                    .iter()
                    .skip(after as usize)
                    .take(limit)
                    .map(|m| (**m).clone()),
            );
        }
        if let (Some(who), Some(client_id)) = (who, &recall.client_id) {
            recalled.extend(
                store
                    .iter()
                    .find(|m| &m.from == who && m.client_id.as_ref() == Some(client_id))
                    .map(|m| (**m).clone()),
            );
        }
        conversation.handle_recalled(&recall, recalled);
    }
}

fuzz_target!(|input: (u8, Vec<Step>)| {
    let (window, steps) = input;
    let windowed = window < 128;
    let limits = Limits {
        max_append_chars: 16,
        max_draft_chars: 40,
        max_incoming: 3,
        log_window_messages: if windowed {
            1 + usize::from(window % 4)
        } else {
            Limits::default().log_window_messages
        },
        ..Limits::default()
    };
    let mut conversation = Conversation::new("f", limits.clone());
    let mut names = Vec::new();
    for name in ["a", "b", "c"] {
        let name = ParticipantName::parse(name).unwrap();
        conversation.add_participant(name.clone(), ParticipantKind::Agent);
        names.push(name);
    }
    let mut now = 0u64;
    let mut request = 0;
    let mut replies = 0usize;
    let mut waiting: Vec<RequestId> = Vec::new();
    // The store: every message inserted, committed at once.
    let mut store: Vec<Arc<Message>> = Vec::new();
    for step in steps {
        match step {
            Step::Act {
                who,
                dt_ms,
                action,
                received,
            } => {
                now += u64::from(dt_ms);
                request += 1;
                // Sometimes an unknown participant: the core must refuse, not panic.
                let who = names
                    .get(who as usize % (names.len() + 1))
                    .cloned()
                    .unwrap_or_else(|| ParticipantName::parse("ghost").unwrap());
                let action = match action {
                    FuzzAction::Append(text) => Action::Append { text },
                    FuzzAction::Undo => Action::Undo,
                    FuzzAction::Reset => Action::Reset,
                    FuzzAction::Preview => Action::Preview,
                    FuzzAction::Push { force, client_id } => Action::Push { force, client_id },
                    FuzzAction::Check { timeout_ms } => Action::Check { timeout_ms },
                    FuzzAction::Typing(typing) => Action::Typing { typing },
                    FuzzAction::Read(up_to) => Action::Read { up_to },
                    FuzzAction::Send {
                        text,
                        client_id,
                        photo,
                    } => Action::Send {
                        text,
                        client_id,
                        attachment: photo.map(|bytes| AttachmentRef {
                            id: format!("a{bytes}"),
                            mime: "image/png".into(),
                            bytes: u64::from(bytes),
                        }),
                    },
                };
                let confirm = match received {
                    Some(received) => Confirm::Client { received },
                    None => Confirm::Transport,
                };
                if windowed {
                    recall(&mut conversation, &store, Some(&who), |c| {
                        c.recall_for(&who, &action)
                    });
                }
                conversation.handle_request(Millis(now), RequestId(request), &who, action, confirm);
            }
            Step::Fate { index, delivered } => {
                if !waiting.is_empty() {
                    let request = waiting.remove(index as usize % waiting.len());
                    if delivered {
                        conversation.handle_delivered(Millis(now), request);
                    } else {
                        if windowed {
                            recall(&mut conversation, &store, None, |c| {
                                c.recall_for_lost(request)
                            });
                        }
                        conversation.handle_lost(Millis(now), request);
                    }
                }
            }
            Step::Timeout { dt_ms } => {
                now += u64::from(dt_ms);
                conversation.handle_timeout(Millis(now));
            }
            Step::Join { name } => {
                if let Ok(name) = ParticipantName::parse(&name)
                    && !conversation.has_participant(&name)
                {
                    conversation.add_participant(name.clone(), ParticipantKind::Human);
                    names.push(name);
                }
            }
            Step::Shutdown => conversation.handle_shutdown(Millis(now)),
        }
        let mut outputs = Vec::new();
        while let Some(output) = conversation.poll_output() {
            if let Output::Persist(Effect::InsertMessage(message)) = &output {
                assert_eq!(message.seq, store.len() as u64 + 1);
                store.push(Arc::clone(message));
            }
            outputs.push(output);
        }
        if windowed {
            conversation.handle_committed();
        }
        for output in outputs {
            if let Output::Reply {
                request,
                reply: Ok(envelope),
                confirm,
            } = output
            {
                replies += 1;
                if confirm {
                    waiting.push(request);
                }
                assert!(envelope.cursor <= conversation.last_seq());
                assert!(envelope.draft.chars <= limits.max_draft_chars);
                assert!(envelope.incoming.len() <= limits.max_incoming);
                assert!(envelope.incoming.windows(2).all(|w| w[0].seq < w[1].seq));
                if matches!(envelope.result, ActionResult::Held { .. }) {
                    assert!(
                        !envelope.incoming.is_empty(),
                        "a push held with nothing to read"
                    );
                }
            }
        }
        let log = conversation.messages_after(0, usize::MAX);
        let base = conversation.window_base();
        assert!(
            log.iter()
                .enumerate()
                .all(|(i, m)| m.seq == base + i as u64 + 1)
        );
        assert_eq!(base + log.len() as u64, store.len() as u64);
        for receipt in conversation.receipts() {
            assert!(receipt.read_up_to <= conversation.last_seq());
        }
    }
    let _ = replies;
});
