//! Model-based test: drafts, cursors, idempotent push and the push gate against a small model.
//!
//! The reference model is written as plainly as possible (whole strings, linear scans); the
//! system under test is `hark_core::protocol::Conversation`. After every action both must agree
//! on the result, the messages handed over, the cursor and the draft.

use std::sync::Arc;

use hark_core::protocol::*;
use hark_core::time::Millis;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const APPEND_MAX: usize = 6;
const DRAFT_MAX: usize = 15;
const INCOMING_MAX: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Append(usize, String),
    Undo(usize),
    Reset(usize),
    Preview(usize),
    Push(usize, bool, Option<u8>),
    Send(usize, String, Option<u8>),
}

/// What an action observably did, in terms both sides can produce.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Appended {
        kept: usize,
        dropped: usize,
    },
    Undone(String),
    Reset(usize),
    Preview(String),
    Sent {
        seq: u64,
        text: String,
        duplicate: bool,
    },
    Held,
    Error(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Observation {
    seen: Seen,
    incoming: Vec<u64>,
    more: bool,
    cursor: u64,
    draft_chars: usize,
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// `(author, text, client_id)` per seq - 1.
    log: Vec<(usize, String, Option<u8>)>,
    drafts: [Vec<String>; 3],
    cursors: [u64; 3],
    last: Option<Observation>,
}

impl Model {
    fn draft_chars(&self, p: usize) -> usize {
        self.drafts[p].iter().map(|s| s.chars().count()).sum()
    }

    fn unseen(&self, p: usize) -> bool {
        self.log[self.cursors[p] as usize..]
            .iter()
            .any(|(from, _, _)| *from != p)
    }

    fn duplicate(&self, p: usize, id: Option<u8>) -> Option<Seen> {
        let id = id?;
        let index = self
            .log
            .iter()
            .position(|(from, _, cid)| *from == p && *cid == Some(id))?;
        Some(Seen::Sent {
            seq: index as u64 + 1,
            text: self.log[index].1.clone(),
            duplicate: true,
        })
    }

    fn publish(&mut self, p: usize, text: String, id: Option<u8>) -> Seen {
        self.log.push((p, text.clone(), id));
        Seen::Sent {
            seq: self.log.len() as u64,
            text,
            duplicate: false,
        }
    }

    fn step(&mut self, op: &Op) {
        let (p, result) = match op.clone() {
            Op::Append(p, text) => {
                if text.is_empty() {
                    (p, Err("empty_text"))
                } else {
                    let chars: Vec<char> = text.chars().collect();
                    let room = DRAFT_MAX - self.draft_chars(p);
                    let kept = chars.len().min(APPEND_MAX).min(room);
                    if kept > 0 {
                        self.drafts[p].push(chars[..kept].iter().collect());
                    }
                    let dropped = chars.len() - kept;
                    (p, Ok(Seen::Appended { kept, dropped }))
                }
            }
            Op::Undo(p) => match self.drafts[p].pop() {
                Some(text) => (p, Ok(Seen::Undone(text))),
                None => (p, Err("nothing_to_undo")),
            },
            Op::Reset(p) => {
                let n = self.draft_chars(p);
                self.drafts[p].clear();
                (p, Ok(Seen::Reset(n)))
            }
            Op::Preview(p) => (p, Ok(Seen::Preview(self.drafts[p].concat()))),
            Op::Push(p, force, id) => {
                if let Some(dup) = self.duplicate(p, id) {
                    (p, Ok(dup))
                } else if self.drafts[p].concat().trim().is_empty() {
                    (p, Err("empty_draft"))
                } else if !force && self.unseen(p) {
                    (p, Ok(Seen::Held))
                } else {
                    let text = self.drafts[p].concat();
                    self.drafts[p].clear();
                    (p, Ok(self.publish(p, text, id)))
                }
            }
            Op::Send(p, text, id) => {
                let draft = self.drafts[p].concat();
                if let Some(dup) = self.duplicate(p, id) {
                    (p, Ok(dup))
                } else if text.trim().is_empty() && draft.trim().is_empty() {
                    (p, Err("empty_text"))
                } else if draft.chars().count() + text.chars().count() > DRAFT_MAX {
                    (p, Err("too_long"))
                } else {
                    self.drafts[p].clear();
                    (p, Ok(self.publish(p, draft + &text, id)))
                }
            }
        };
        let seen = match result {
            Ok(seen) => seen,
            Err(code) => {
                self.last = Some(Observation {
                    seen: Seen::Error(code),
                    incoming: vec![],
                    more: false,
                    cursor: self.cursors[p],
                    draft_chars: self.draft_chars(p),
                });
                return;
            }
        };
        // Hand over what others wrote after the cursor, at most INCOMING_MAX of them.
        let mut incoming = Vec::new();
        let mut more = false;
        let mut cursor = self.cursors[p];
        for (index, (from, _, _)) in self.log.iter().enumerate().skip(cursor as usize) {
            let seq = index as u64 + 1;
            if *from == p {
                cursor = seq;
                continue;
            }
            if incoming.len() == INCOMING_MAX {
                more = true;
                break;
            }
            cursor = seq;
            incoming.push(seq);
        }
        self.cursors[p] = cursor;
        self.last = Some(Observation {
            seen,
            incoming,
            more,
            cursor,
            draft_chars: self.draft_chars(p),
        });
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        let who = 0..3usize;
        // Short texts with multi-byte characters so limits cut inside non-ASCII text.
        let text = prop_oneof![Just(String::new()), Just("  ".to_owned()), "[a-cé🙂 ]{1,9}",];
        let id = proptest::option::of(0..3u8);
        prop_oneof![
            3 => (who.clone(), text.clone()).prop_map(|(p, t)| Op::Append(p, t)),
            1 => who.clone().prop_map(Op::Undo),
            1 => who.clone().prop_map(Op::Reset),
            1 => who.clone().prop_map(Op::Preview),
            3 => (who.clone(), any::<bool>(), id.clone()).prop_map(|(p, f, i)| Op::Push(p, f, i)),
            2 => (who, text, id).prop_map(|(p, t, i)| Op::Send(p, t, i)),
        ]
        .boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.step(op);
        state
    }
}

struct Sut {
    conversation: Conversation,
    next_request: u64,
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        let limits = Limits {
            max_append_chars: APPEND_MAX,
            max_draft_chars: DRAFT_MAX,
            max_incoming: INCOMING_MAX,
            ..Limits::default()
        };
        let mut conversation = Conversation::new("m", limits);
        for name in NAMES {
            conversation.add_participant(
                ParticipantName::parse(name).unwrap(),
                ParticipantKind::Agent,
            );
        }
        Sut {
            conversation,
            next_request: 0,
        }
    }

    fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
        let id = |i: Option<u8>| i.map(|i| format!("id{i}"));
        let (p, action) = match op {
            Op::Append(p, text) => (p, Action::Append { text }),
            Op::Undo(p) => (p, Action::Undo),
            Op::Reset(p) => (p, Action::Reset),
            Op::Preview(p) => (p, Action::Preview),
            Op::Push(p, force, i) => (
                p,
                Action::Push {
                    force,
                    client_id: id(i),
                },
            ),
            Op::Send(p, text, i) => (
                p,
                Action::Send {
                    text,
                    client_id: id(i),
                },
            ),
        };
        sut.next_request += 1;
        let request = RequestId(sut.next_request);
        let who = ParticipantName::parse(NAMES[p]).unwrap();
        sut.conversation
            .handle_request(Millis(sut.next_request), request, &who, action);
        let mut reply = None;
        while let Some(output) = sut.conversation.poll_output() {
            if let Output::Reply {
                request: r,
                reply: body,
            } = output
            {
                assert_eq!(r, request);
                assert!(reply.is_none(), "one reply per request");
                reply = Some(body);
            }
        }
        let observed = match reply.expect("every action replies at once") {
            Err(error) => {
                // An error hands nothing over and leaves the cursor where it was.
                let cursor = model.cursors[p];
                Observation {
                    seen: Seen::Error(error.code()),
                    incoming: vec![],
                    more: false,
                    cursor,
                    draft_chars: model.draft_chars(p),
                }
            }
            Ok(envelope) => Observation {
                seen: match envelope.result {
                    ActionResult::Append {
                        appended_chars,
                        dropped_chars,
                        ..
                    } => Seen::Appended {
                        kept: appended_chars,
                        dropped: dropped_chars,
                    },
                    ActionResult::Undo { removed } => Seen::Undone(removed),
                    ActionResult::Reset { discarded_chars } => Seen::Reset(discarded_chars),
                    ActionResult::Preview { text } => Seen::Preview(text),
                    ActionResult::Sent { message, duplicate } => Seen::Sent {
                        seq: message.seq,
                        text: message.text.clone(),
                        duplicate,
                    },
                    ActionResult::Held { .. } => Seen::Held,
                    other => panic!("unexpected result {other:?}"),
                },
                incoming: envelope
                    .incoming
                    .iter()
                    .map(|m: &Arc<Message>| m.seq)
                    .collect(),
                more: envelope.more_incoming,
                cursor: envelope.cursor,
                draft_chars: envelope.draft.chars,
            },
        };
        assert_eq!(Some(&observed), model.last.as_ref());
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        assert_eq!(sut.conversation.last_seq(), model.log.len() as u64);
        let log = sut.conversation.messages_after(0, usize::MAX);
        for (index, message) in log.iter().enumerate() {
            assert_eq!(message.seq, index as u64 + 1, "seqs have no gaps");
            assert_eq!(message.text, model.log[index].1);
        }
        for (p, receipt) in sut.conversation.receipts().iter().enumerate() {
            assert_eq!(receipt.read_up_to, model.cursors[p]);
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn drafts_and_push_gate_follow_the_model(sequential 1..60 => Sut);
}
