//! Model-based test: drafts, cursors, idempotent push and the push gate against a small model,
//! with results that are lost on their way to the client.
//!
//! The reference model is written as plainly as possible (whole strings, linear scans); the
//! system under test is `hark_core::protocol::Conversation`. After every action both must agree
//! on the result, the messages handed over, the cursor and the draft. Some results are lost (the
//! driver reports `handle_lost`): their messages must come again, the read receipt must not
//! move past them, and a push must be held until they have arrived. Those guarantees are also
//! checked from the system's outputs alone, against what each client really received.

use std::collections::HashMap;
use std::sync::Arc;

use hark_core::protocol::*;
use hark_core::time::Millis;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const NAMES: [&str; 3] = ["alice", "bob", "carol"];
const APPEND_MAX: usize = 6;
const DRAFT_MAX: usize = 15;
const INCOMING_MAX: usize = 3;

/// One action and the fate of its result.
#[derive(Clone, Debug)]
struct Step {
    op: Op,
    /// The result never reaches the client.
    lost: bool,
}

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
    /// What each participant provably received: the read receipt and the push gate's line.
    heard: [u64; 3],
    last: Option<Observation>,
}

impl Model {
    fn draft_chars(&self, p: usize) -> usize {
        self.drafts[p].iter().map(|s| s.chars().count()).sum()
    }

    fn unseen(&self, p: usize) -> bool {
        self.log[self.heard[p] as usize..]
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

    fn step(&mut self, step: &Step) {
        let (p, result) = match step.op.clone() {
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
                    cursor: self.heard[p],
                    draft_chars: self.draft_chars(p),
                });
                return;
            }
        };
        // Hand over what others wrote after the cursor, at most INCOMING_MAX of them. Steps are
        // sequential, so the previous result's fate is known: everything handed was heard.
        let mut incoming = Vec::new();
        let mut more = false;
        let mut cursor = self.heard[p];
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
        // A lost result that handed messages over is rolled back: they come again. One that
        // handed none (only the participant's own messages, or nothing) loses nothing.
        if !step.lost || incoming.is_empty() {
            self.heard[p] = cursor;
        }
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
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        let who = 0..3usize;
        // Short texts with multi-byte characters so limits cut inside non-ASCII text.
        let text = prop_oneof![Just(String::new()), Just("  ".to_owned()), "[a-cé🙂 ]{1,9}",];
        let id = proptest::option::of(0..3u8);
        let op = prop_oneof![
            3 => (who.clone(), text.clone()).prop_map(|(p, t)| Op::Append(p, t)),
            1 => who.clone().prop_map(Op::Undo),
            1 => who.clone().prop_map(Op::Reset),
            1 => who.clone().prop_map(Op::Preview),
            3 => (who.clone(), any::<bool>(), id.clone()).prop_map(|(p, f, i)| Op::Push(p, f, i)),
            2 => (who, text, id).prop_map(|(p, t, i)| Op::Send(p, t, i)),
        ];
        (op, proptest::bool::weighted(0.25))
            .prop_map(|(op, lost)| Step { op, lost })
            .boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        state.step(step);
        state
    }
}

struct Sut {
    conversation: Conversation,
    next_request: u64,
    /// Per participant, the seqs of others' messages in results that reached it.
    received: [Vec<u64>; 3],
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
            received: Default::default(),
        }
    }

    fn apply(mut sut: Sut, model: &Model, step: Step) -> Sut {
        let id = |i: Option<u8>| i.map(|i| format!("id{i}"));
        let force_push = matches!(step.op, Op::Push(_, true, _) | Op::Send(..));
        let (p, action) = match step.op {
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
                    attachment: None,
                },
            ),
        };
        sut.next_request += 1;
        let request = RequestId(sut.next_request);
        let who = ParticipantName::parse(NAMES[p]).unwrap();
        let now = Millis(sut.next_request);
        sut.conversation
            .handle_request(now, request, &who, action, Confirm::Transport);
        let mut reply = None;
        let mut confirm = false;
        while let Some(output) = sut.conversation.poll_output() {
            if let Output::Reply {
                request: r,
                reply: body,
                confirm: c,
            } = output
            {
                assert_eq!(r, request);
                assert!(reply.is_none(), "one reply per request");
                reply = Some(body);
                confirm = c;
            }
        }
        if let Some(Ok(envelope)) = &reply {
            assert_eq!(
                confirm,
                !envelope.incoming.is_empty() || !envelope.receipts.is_empty(),
                "exactly the results that hand something over wait for their delivery"
            );
        }
        if confirm {
            if step.lost {
                sut.conversation.handle_lost(now, request);
            } else {
                sut.conversation.handle_delivered(now, request);
            }
            while sut.conversation.poll_output().is_some() {}
        }
        let delivered = !step.lost || !confirm;
        if let Some(Ok(envelope)) = &reply
            && delivered
        {
            sut.received[p].extend(envelope.incoming.iter().map(|m| m.seq));
        }
        if let Some(Ok(envelope)) = &reply
            && let ActionResult::Sent {
                message,
                duplicate: false,
            } = &envelope.result
            && !force_push
        {
            // The push gate: never sent past a message from someone else that the participant
            // has not received (in an earlier result, or in this one's hold before it).
            let log = sut.conversation.messages_after(0, usize::MAX);
            for m in &log[..message.seq as usize - 1] {
                if m.from != who {
                    assert!(
                        sut.received[p].contains(&m.seq),
                        "{who} pushed past message {} it never received",
                        m.seq
                    );
                }
            }
        }
        let observed = match reply.expect("every action replies at once") {
            Err(error) => {
                // An error hands nothing over and leaves the cursor where it was.
                let cursor = model.heard[p];
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
            assert_eq!(receipt.read_up_to, model.heard[p]);
            // Nothing handed to nobody: every message from someone else up to the read receipt
            // reached this participant in a result.
            for m in &log[..receipt.read_up_to as usize] {
                if m.from.as_str() != NAMES[p] {
                    assert!(
                        sut.received[p].contains(&m.seq),
                        "{} has a receipt past message {} it never received",
                        NAMES[p],
                        m.seq
                    );
                }
            }
        }
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn drafts_and_push_gate_follow_the_model(sequential 1..60 => Sut);
}

/// What happens to a result on its way to the client.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Delivered,
    Lost,
    /// Still in flight while later actions run; settled by a later [`Race::Settle`].
    Later,
}

#[derive(Clone, Debug)]
enum Race {
    Act {
        who: usize,
        op: u8,
        fate: Fate,
    },
    /// Settles the in-flight result at this index (modulo their number): delivered or lost.
    Settle {
        index: usize,
        delivered: bool,
    },
    /// If the conversation is at rest, drops it and restores it from the store, as the server's
    /// idle eviction does.
    Restore,
}

/// One participant's action (an op of [`races_hold`]) and the fate of its result.
fn act(who: usize, op: u8, fate: Fate) -> Race {
    Race::Act { who, op, fate }
}

fn race() -> impl Strategy<Value = Race> {
    let fate = prop_oneof![
        2 => Just(Fate::Delivered),
        1 => Just(Fate::Lost),
        2 => Just(Fate::Later),
    ];
    prop_oneof![
        3 => (0..3usize, 0..7u8, fate).prop_map(|(who, op, fate)| act(who, op, fate)),
        1 => (0..8usize, any::<bool>()).prop_map(|(index, delivered)| Race::Settle { index, delivered }),
        1 => Just(Race::Restore),
    ]
}

/// The conversation and what each client really received.
struct Clients {
    names: [ParticipantName; 3],
    conversation: Conversation,
    /// The whole log, as a store would hold it (the conversation keeps only its window).
    store: Vec<Arc<Message>>,
    received: [Vec<u64>; 3],
    in_flight: Vec<(RequestId, usize, Vec<u64>)>,
    /// `check` calls waiting for their answer: who asked, and the fate of the answer.
    checks: HashMap<RequestId, (usize, Fate)>,
    /// The store's cursors and drafts, from the effects.
    cursors: [u64; 3],
    drafts: [Vec<String>; 3],
    limits: Limits,
    next: u64,
}

/// A request being handled, and what its reply is judged against.
struct Asked {
    request: RequestId,
    who: usize,
    fate: Fate,
    /// A forced push or a send: not gated.
    forced: bool,
    client_id: Option<String>,
    /// Messages in the store before the request.
    stored_before: u64,
}

impl Clients {
    /// `window`: messages the conversation keeps in memory.
    fn new(window: usize) -> Self {
        let names = NAMES.map(|n| ParticipantName::parse(n).unwrap());
        let limits = Limits {
            max_incoming: 2,
            log_window_messages: window,
            ..Limits::default()
        };
        let mut conversation = Conversation::new("r", limits.clone());
        for name in &names {
            conversation.add_participant(name.clone(), ParticipantKind::Agent);
        }
        Clients {
            cursors: [0; 3],
            drafts: Default::default(),
            limits,
            names,
            conversation,
            store: Vec::new(),
            received: Default::default(),
            in_flight: Vec::new(),
            checks: HashMap::new(),
            next: 0,
        }
    }

    fn act(&mut self, who: usize, action: Action, fate: Fate) -> Result<(), TestCaseError> {
        self.next += 1;
        let request = RequestId(self.next);
        let now = Millis(self.next);
        // Time passes: checks whose time is up answer.
        self.conversation.handle_timeout(now);
        self.pump(None)?;
        let asked = Asked {
            request,
            who,
            fate,
            forced: matches!(
                action,
                Action::Push { force: true, .. } | Action::Send { .. }
            ),
            client_id: match &action {
                Action::Send { client_id, .. } => client_id.clone(),
                _ => None,
            },
            stored_before: self.store.len() as u64,
        };
        let check = matches!(action, Action::Check { .. });
        // What a driver does: read what the request needs from before the window.
        let name = self.names[who].clone();
        self.recall(who, |c| c.recall_for(&name, &action))?;
        self.conversation.handle_request(
            now,
            request,
            &self.names[who],
            action,
            Confirm::Transport,
        );
        let answered = self.pump(Some(&asked))?;
        if check && !answered {
            if matches!(fate, Fate::Lost) {
                // The caller went away while it waited: the check is withdrawn, unanswered.
                self.lose(who, request)?;
                self.pump(None)?;
            } else {
                self.checks.insert(request, (who, fate));
            }
        }
        Ok(())
    }

    /// Reads from the store what `next` names for `who`, round after round until it names
    /// nothing more, as a driver does before a request or a report of a lost result.
    fn recall(
        &mut self,
        who: usize,
        next: impl Fn(&Conversation) -> Recall,
    ) -> Result<(), TestCaseError> {
        for round in 0.. {
            let recall = next(&self.conversation);
            if recall.is_empty() {
                break;
            }
            prop_assert!(
                round <= self.store.len(),
                "recall rounds never end: {recall:?}"
            );
            let mut recalled = Vec::new();
            for &(after, limit) in &recall.runs {
                prop_assert!(limit > 0);
                prop_assert!(after + limit as u64 <= self.conversation.window_base());
                recalled.extend(self.store.iter().skip(after as usize).take(limit));
            }
            if let Some(wanted) = &recall.client_id {
                recalled.extend(
                    self.store.iter().find(|m| {
                        m.from == self.names[who] && m.client_id.as_ref() == Some(wanted)
                    }),
                );
            }
            self.conversation.handle_recalled(
                &recall,
                recalled.into_iter().map(|m| (**m).clone()).collect(),
            );
        }
        Ok(())
    }

    /// What the store does with an effect.
    fn persist(&mut self, effect: Effect) -> Result<(), TestCaseError> {
        let index = |name: &ParticipantName| self.names.iter().position(|n| n == name).unwrap();
        match effect {
            Effect::InsertMessage(message) => {
                prop_assert_eq!(message.seq, self.store.len() as u64 + 1);
                self.store.push(message);
            }
            Effect::SetCursor {
                participant,
                cursor,
            } => self.cursors[index(&participant)] = cursor,
            Effect::PushSegment { participant, text } => {
                self.drafts[index(&participant)].push(text)
            }
            Effect::PopSegment { participant } => {
                self.drafts[index(&participant)].pop();
            }
            Effect::ClearDraft { participant } => self.drafts[index(&participant)].clear(),
        }
        Ok(())
    }

    /// Drops the conversation and restores it from the store (its newest messages as the
    /// window), if it is at rest; nobody may be able to tell, but for receipts told again.
    fn restore(&mut self) -> Result<(), TestCaseError> {
        if !self.conversation.is_at_rest() {
            return Ok(());
        }
        let receipts = self.conversation.receipts();
        let records = (0..3)
            .map(|p| ParticipantRecord {
                name: self.names[p].clone(),
                kind: ParticipantKind::Agent,
                cursor: self.cursors[p],
                draft_segments: self.drafts[p].clone(),
            })
            .collect();
        let split = self
            .store
            .len()
            .saturating_sub(self.limits.log_window_messages);
        let messages: Vec<Message> = self.store.iter().map(|m| (**m).clone()).collect();
        self.conversation = Conversation::restore_window(
            "r",
            self.limits.clone(),
            records,
            LogPrefix::of(&messages[..split]),
            messages[split..].to_vec(),
        );
        prop_assert_eq!(self.conversation.receipts(), receipts);
        prop_assert_eq!(self.conversation.last_seq(), self.store.len() as u64);
        Ok(())
    }

    /// Reports `who`'s `request` lost, after reading what the answer of its waiting check may
    /// need.
    fn lose(&mut self, who: usize, request: RequestId) -> Result<(), TestCaseError> {
        self.recall(who, |c| c.recall_for_lost(request))?;
        self.conversation.handle_lost(Millis(self.next), request);
        Ok(())
    }

    /// Drains the machine's outputs: messages go to the store (committed at once), replies to
    /// their clients, which may report their fate and so produce more outputs (a lost result
    /// wakes a waiting check). `asked`: the request being handled, whose reply is judged here.
    /// Returns whether it was answered.
    fn pump(&mut self, asked: Option<&Asked>) -> Result<bool, TestCaseError> {
        let mut answered = false;
        loop {
            let mut replies = Vec::new();
            while let Some(output) = self.conversation.poll_output() {
                match output {
                    Output::Persist(effect) => self.persist(effect)?,
                    Output::Reply {
                        request,
                        reply,
                        confirm,
                    } => replies.push((request, reply, confirm)),
                    _ => {}
                }
            }
            self.conversation.handle_committed();
            if replies.is_empty() {
                return Ok(answered);
            }
            for (request, reply, confirm) in replies {
                let (who, fate) = match asked {
                    Some(asked) if asked.request == request => {
                        answered = true;
                        let Ok(envelope) = &reply else {
                            continue;
                        };
                        self.judge(asked, envelope)?;
                        (asked.who, asked.fate)
                    }
                    _ => {
                        let waiting = self.checks.remove(&request);
                        prop_assert!(waiting.is_some(), "a reply to no request: {request:?}");
                        let check = matches!(
                            reply,
                            Ok(Envelope {
                                result: ActionResult::Check { .. },
                                ..
                            })
                        );
                        prop_assert!(check, "a late reply that is not a check's");
                        waiting.unwrap()
                    }
                };
                let Ok(envelope) = reply else {
                    continue;
                };
                // Also a check woken by a lost result whose start lies before the window.
                prop_assert!(
                    !envelope.more_incoming || !envelope.incoming.is_empty(),
                    "a result says more is waiting and carries nothing"
                );
                let seqs: Vec<u64> = envelope.incoming.iter().map(|m| m.seq).collect();
                let now = Millis(self.next);
                if !confirm {
                    self.received[who].extend(seqs);
                    continue;
                }
                match fate {
                    Fate::Delivered => {
                        self.received[who].extend(seqs);
                        self.conversation.handle_delivered(now, request);
                    }
                    Fate::Lost => self.lose(who, request)?,
                    Fate::Later => self.in_flight.push((request, who, seqs)),
                }
            }
        }
    }

    /// Checks the reply to `asked` against what its client really received before it.
    fn judge(&self, asked: &Asked, envelope: &Envelope) -> Result<(), TestCaseError> {
        let who = asked.who;
        if let (Some(client_id), ActionResult::Sent { message, duplicate }) =
            (&asked.client_id, &envelope.result)
        {
            // Idempotent also for a key older than the window: the original, or new.
            let original = self
                .store
                .iter()
                .find(|m| m.from == self.names[who] && m.client_id.as_ref() == Some(client_id));
            prop_assert_eq!(original.map(|m| m.seq), Some(message.seq));
            prop_assert_eq!(*duplicate, message.seq <= asked.stored_before);
        }
        if matches!(envelope.result, ActionResult::Held { .. }) {
            // A hold shows what it waits for, also messages of results still in flight.
            prop_assert!(
                !envelope.incoming.is_empty(),
                "a push was held with nothing to read"
            );
        }
        if let ActionResult::Sent {
            message,
            duplicate: false,
        } = &envelope.result
            && !asked.forced
        {
            // The gate: nothing from someone else before the new message is unreceived.
            for m in &self.store[..message.seq as usize - 1] {
                prop_assert!(
                    m.from == self.names[who] || self.received[who].contains(&m.seq),
                    "{} pushed past message {} it never received",
                    self.names[who],
                    m.seq
                );
            }
        }
        Ok(())
    }

    fn settle(&mut self, index: usize, delivered: bool) -> Result<(), TestCaseError> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let (request, who, seqs) = self.in_flight.remove(index % self.in_flight.len());
        if delivered {
            self.received[who].extend(seqs);
            self.conversation
                .handle_delivered(Millis(self.next), request);
        } else {
            self.lose(who, request)?;
        }
        self.pump(None).map(drop)
    }

    /// No read receipt passes a message from someone else that its participant never received.
    fn check_receipts(&self) -> Result<(), TestCaseError> {
        for (p, receipt) in self.conversation.receipts().iter().enumerate() {
            for m in &self.store[..receipt.read_up_to as usize] {
                prop_assert!(
                    m.from == self.names[p] || self.received[p].contains(&m.seq),
                    "{} has a receipt past message {} it never received",
                    self.names[p],
                    m.seq
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Results delivered late, out of order or never, with actions (also waiting `check` calls)
    /// running meanwhile: judged only by what each client really received. Nothing is handed to
    /// nobody (a read receipt or a non-forced push never passes a message the participant did
    /// not receive), and nothing is lost (once every result arrives, every message has reached
    /// everyone).
    #[test]
    fn hand_over_holds_when_results_are_lost_or_late(races in proptest::collection::vec(race(), 1..80)) {
        races_hold(races, Limits::default().log_window_messages)?;
    }

    /// The same with a log window of one to three messages: a participant far behind the window
    /// gets everything through what the driver recalls from the store, and an old client id is
    /// still a duplicate.
    #[test]
    fn hand_over_holds_with_a_small_log_window(
        races in proptest::collection::vec(race(), 1..80),
        window in 1..4usize,
    ) {
        races_hold(races, window)?;
    }
}

/// A result lost while its participant went on writing rolls the participant back before its
/// own messages; with a window of one they all lie before it, more of them than one recall
/// reads. The held push must still show the messages it waits for (CI's random cases found
/// this once: the push was held with nothing to read).
#[test]
fn a_held_push_reads_past_a_long_run_of_own_messages_before_the_window() {
    let mut races = vec![
        act(1, 0, Fate::Delivered),
        act(0, 3, Fate::Delivered),
        act(1, 5, Fate::Lost),
        act(1, 2, Fate::Later),
    ];
    races.extend((0..7).map(|_| act(1, 3, Fate::Delivered)));
    races.extend([
        act(1, 0, Fate::Delivered),
        act(0, 3, Fate::Delivered),
        act(2, 3, Fate::Delivered),
        Race::Settle {
            index: 0,
            delivered: false,
        },
        act(1, 2, Fate::Delivered),
    ]);
    races_hold(races, 1).unwrap();
}

/// alice's result is lost while her next is in flight and she writes on; with a window of one,
/// the rollback of the second loss lands before the window and wakes her waiting check, which
/// must carry bob's message, not an empty "more is waiting" (the race property's shrunk case).
#[test]
fn a_check_woken_by_a_lost_result_before_the_window_carries_its_messages() {
    let races = vec![
        act(1, 3, Fate::Delivered),
        act(0, 3, Fate::Lost),
        act(0, 3, Fate::Later),
        act(0, 3, Fate::Delivered),
        act(0, 6, Fate::Later),
        Race::Settle {
            index: 0,
            delivered: false,
        },
    ];
    races_hold(races, 1).unwrap();
}

/// Several checks of one participant wait when a lost result rolls it back before the window:
/// each woken check carries its part, one after another, so what is read first must cover all
/// of them (found by the race property with restores, which shrank to 23 steps).
#[test]
fn checks_woken_together_before_the_window_each_carry_their_part() {
    let mut races = vec![];
    races.extend((0..5).map(|_| act(1, 3, Fate::Delivered)));
    races.extend((0..3).map(|_| act(0, 1, Fate::Later)));
    races.extend((0..3).map(|_| act(0, 6, Fate::Delivered)));
    races.push(Race::Settle {
        index: 0,
        delivered: false,
    });
    races_hold(races, 1).unwrap();
}

/// What was recalled counts for the request in hand only: once a round was handed in, the
/// next round does not name it again; if a later read fails, the driver says so and everything
/// is named again for the retry (the client id too, so an old retried send is still found).
#[test]
fn a_failed_recall_is_forgotten_and_named_again() {
    let mut c = Clients::new(1);
    let send = |text: &str, key: Option<&str>| Action::Send {
        text: text.into(),
        client_id: key.map(str::to_owned),
        attachment: None,
    };
    c.act(0, send("first", Some("k")), Fate::Delivered).unwrap();
    for n in 0..4 {
        c.act(1, send(&format!("b{n}"), None), Fate::Delivered)
            .unwrap();
    }
    let retry = send("first", Some("k"));
    let first = c.conversation.recall_for(&c.names[0], &retry);
    assert_eq!(first.client_id.as_deref(), Some("k"));
    assert_eq!(
        first.runs,
        [(1, 3)],
        "alice's next result starts after her own message"
    );
    let read: Vec<Message> = c.store[1..4].iter().map(|m| (**m).clone()).collect();
    c.conversation.handle_recalled(
        &first,
        read.into_iter().chain([(*c.store[0]).clone()]).collect(),
    );
    assert!(c.conversation.recall_for(&c.names[0], &retry).is_empty());
    c.conversation.handle_recall_failed();
    assert_eq!(c.conversation.recall_for(&c.names[0], &retry), first);
}

fn races_hold(races: Vec<Race>, window: usize) -> Result<(), TestCaseError> {
    {
        let mut c = Clients::new(window);
        for step in races {
            match step {
                Race::Act { who, op, fate } => {
                    let action = match op {
                        0 => Action::Append { text: "x".into() },
                        1 => Action::Preview,
                        2 => Action::Push {
                            force: false,
                            client_id: None,
                        },
                        3 => Action::Send {
                            text: format!("m{}", c.next),
                            client_id: None,
                            attachment: None,
                        },
                        // Keys repeat: a retried send, maybe of a message long out of the window.
                        4 => Action::Send {
                            text: format!("m{}", c.next),
                            client_id: Some(format!("k{}", c.next % 5)),
                            attachment: None,
                        },
                        5 => {
                            // A client that reads from the event stream has received what it
                            // says it read.
                            let up_to = c.conversation.last_seq();
                            c.received[who].extend(1..=up_to);
                            Action::Read { up_to }
                        }
                        // Waits for news, at most three steps: woken by a message, by a lost
                        // result of its participant, or by its time running out.
                        _ => Action::Check {
                            timeout_ms: Some(3),
                        },
                    };
                    c.act(who, action, fate)?;
                }
                Race::Settle { index, delivered } => c.settle(index, delivered)?,
                Race::Restore => c.restore()?,
            }
            c.check_receipts()?;
        }
        // Every waiting check answers, everything in flight arrives, then each participant asks
        // until nothing more comes: every message from someone else has reached it.
        c.conversation.handle_timeout(Millis(u64::MAX / 2));
        c.pump(None)?;
        prop_assert!(c.checks.is_empty());
        while !c.in_flight.is_empty() {
            c.settle(0, true)?;
        }
        for who in 0..3 {
            for _ in 0..=c.conversation.last_seq() {
                c.act(who, Action::Preview, Fate::Delivered)?;
            }
            for m in &c.store {
                prop_assert!(
                    m.from == c.names[who] || c.received[who].contains(&m.seq),
                    "message {} never reached {}",
                    m.seq,
                    c.names[who]
                );
            }
        }
        c.check_receipts()?;
    }
    Ok(())
}
