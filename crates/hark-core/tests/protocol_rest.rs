//! `Conversation::is_at_rest`: when a driver may drop a conversation's state machine and restore
//! it from the store later (the server's idle eviction).

use hark_core::protocol::*;
use hark_core::time::Millis;

fn name(raw: &str) -> ParticipantName {
    ParticipantName::parse(raw).unwrap()
}

struct Machine {
    conversation: Conversation,
    next: u64,
}

impl Machine {
    fn new() -> Machine {
        let mut conversation = Conversation::new("c1", Limits::default());
        conversation.add_participant(name("alice"), ParticipantKind::Human);
        conversation.add_participant(name("bob"), ParticipantKind::Agent);
        Machine {
            conversation,
            next: 1,
        }
    }

    /// Applies an action and drains its outputs; returns the request and whether its reply
    /// must be confirmed (`None` while a `check` waits).
    fn act(&mut self, now: u64, who: &str, action: Action) -> (RequestId, Option<bool>) {
        let request = RequestId(self.next);
        self.next += 1;
        self.conversation.handle_request(
            Millis(now),
            request,
            &name(who),
            action,
            Confirm::Transport,
        );
        (request, self.drain())
    }

    /// Drains every output; the last reply's confirm flag, if a reply came out.
    fn drain(&mut self) -> Option<bool> {
        let mut confirm = None;
        while let Some(output) = self.conversation.poll_output() {
            if let Output::Reply { confirm: c, .. } = output {
                confirm = Some(c);
            }
        }
        confirm
    }

    fn at_rest(&self) -> bool {
        self.conversation.is_at_rest()
    }
}

#[test]
fn a_fresh_conversation_is_at_rest() {
    assert!(Machine::new().at_rest());
}

#[test]
fn undrained_outputs_are_not_at_rest() {
    let mut m = Machine::new();
    m.conversation.handle_request(
        Millis(0),
        RequestId(1),
        &name("alice"),
        Action::Send {
            text: "hi".into(),
            client_id: None,
            attachment: None,
        },
        Confirm::Transport,
    );
    assert!(!m.at_rest(), "the message is not committed yet");
    m.drain();
    assert!(m.at_rest());
}

#[test]
fn a_tentative_hand_over_holds_it_until_reported() {
    let mut m = Machine::new();
    m.act(
        0,
        "alice",
        Action::Send {
            text: "hi".into(),
            client_id: None,
            attachment: None,
        },
    );
    assert!(
        m.at_rest(),
        "alice's own message is never tentative for her"
    );
    let (request, confirm) = m.act(10, "bob", Action::Check { timeout_ms: None });
    assert_eq!(confirm, Some(true), "bob's check hands the message over");
    assert!(!m.at_rest(), "the hand-over is tentative");
    m.conversation.handle_delivered(Millis(20), request);
    m.drain();
    assert!(m.at_rest());

    // A lost one rolls back: then nothing is tentative either.
    let (told, confirm) = m.act(
        30,
        "alice",
        Action::Send {
            text: "again".into(),
            client_id: None,
            attachment: None,
        },
    );
    assert_eq!(
        confirm,
        Some(true),
        "alice's result tells her bob's receipt"
    );
    assert!(!m.at_rest());
    m.conversation.handle_delivered(Millis(35), told);
    m.drain();
    assert!(m.at_rest());
    let (request, _) = m.act(40, "bob", Action::Check { timeout_ms: None });
    assert!(!m.at_rest());
    m.conversation.handle_lost(Millis(50), request);
    m.drain();
    assert!(
        m.at_rest(),
        "rolled back: the message is simply unseen again"
    );
}

#[test]
fn a_waiting_check_holds_it_until_it_returns() {
    let mut m = Machine::new();
    let (_, confirm) = m.act(
        0,
        "bob",
        Action::Check {
            timeout_ms: Some(1_000),
        },
    );
    assert_eq!(confirm, None, "nothing to hand over: the check waits");
    assert!(!m.at_rest());
    m.conversation.handle_timeout(Millis(1_000));
    let confirm = m.drain();
    assert_eq!(confirm, Some(false), "timed out with nothing to confirm");
    assert!(m.at_rest());
}

#[test]
fn a_withdrawn_check_is_at_rest() {
    let mut m = Machine::new();
    let (request, _) = m.act(0, "bob", Action::Check { timeout_ms: None });
    assert!(!m.at_rest());
    m.conversation.handle_lost(Millis(5), request);
    m.drain();
    assert!(m.at_rest());
}

#[test]
fn a_typing_lease_holds_it_until_it_expires() {
    let mut m = Machine::new();
    m.act(0, "alice", Action::Typing { typing: true });
    assert!(!m.at_rest());
    let due = m.conversation.poll_timeout().expect("the lease expires");
    m.conversation.handle_timeout(due);
    m.drain();
    assert!(m.at_rest());
    m.act(10_000, "alice", Action::Typing { typing: true });
    m.act(10_001, "alice", Action::Typing { typing: false });
    assert!(m.at_rest(), "a lease given up is gone");
}

#[test]
fn a_draft_is_stored_so_it_does_not_hold_it() {
    let mut m = Machine::new();
    m.act(
        0,
        "alice",
        Action::Append {
            text: "half a thought".into(),
        },
    );
    assert!(m.at_rest());
}
