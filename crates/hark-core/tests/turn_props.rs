//! Property tests of the turn engine's guarantees (SPEC.md section 6.1) under random
//! interleavings of a person's messages and typing, a stand-in LLM with random latencies and
//! results, a store that acknowledges bubbles late or loses them, an endpoint model that answers
//! late, and crashes with restore.
//!
//! The driver runs the engine on a virtual clock exactly as a runtime would: it delivers events in
//! time order, wakes the engine at `poll_timeout`, and drains `poll_output` after every call. A
//! checker watches every output and asserts:
//!
//! - single flight: a generation starts only when none is in flight (finished, failed or aborted);
//! - epochs: generations start with increasing epochs and read everything the engine was told;
//!   every bubble belongs to a committed, not yet ended epoch whose generation finished with a
//!   reply containing that text and was not aborted (no stale epoch is ever delivered);
//! - pairing: each committed epoch ends exactly once, and by the end of the run every one has;
//! - no fragment replies (with both rechecks on): no bubble while the person's typing lease, as
//!   the engine was told it, is fresh, and no bubble whose `read_up_to` is below a person message
//!   the engine already had;
//! - high-water mark: `read_up_to` of bubbles never goes down; no two identical bubbles between
//!   idle periods; prompts alternate roles and end with the person's latest message;
//! - liveness: every message is eventually answered or deliberately left silent (or failed), and
//!   when the person goes quiet (no message, no typing) for `bound_ms` after it, within that bound;
//! - hard cap (with barge-in and both rechecks): every message is committed by the hard cap of its
//!   burst (first unanswered message + `window_hard_cap_ms`, restarted by a hold word or a
//!   `wait_for_more`) even while the person keeps sending or typing;
//! - restart: after a restore, nothing at or below the snapshot's `answered_up_to` is committed or
//!   answered again;
//! - the timer never asks to be woken in the past, and the run is deterministic.

use std::collections::BTreeMap;

use hark_core::time::Millis;
use hark_core::turn::{
    Attachment, EndpointPolicy, GenerationResult, Input, LogMessage, Output, PersonMessage, Role,
    TurnConfig, TurnEngine, TurnOutcome, TurnSnapshot,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/turn_props.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn guarantees_hold_under_random_interleavings(s in scenario()) {
        let (first, _) = Driver::run(&s);
        let (second, _) = Driver::run(&s);
        prop_assert_eq!(first, second, "the engine is deterministic");
    }
}

/// The generator reaches what the properties are about: a property that never meets a barge-in
/// proves nothing about barge-in.
#[test]
fn scenarios_cover_the_interesting_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let mut total = Coverage::default();
    for _ in 0..500 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let (trace, coverage) = Driver::run(&s);
        total.liveness_checked += coverage.liveness_checked;
        total.cap_checked += coverage.cap_checked;
        total.crashes += usize::from(s.crash.is_some());
        for (_, out) in &trace {
            match out {
                Output::SendBubble { index, .. } => {
                    total.bubbles += 1;
                    total.later_bubbles += usize::from(*index > 0);
                }
                Output::AbortGeneration { .. } => total.aborts += 1,
                Output::StartGeneration {
                    speculative: true, ..
                } => total.speculative += 1,
                Output::StartGeneration { prompt, .. } if !prompt.allow_wait => total.rewaits += 1,
                Output::AskEndpoint { .. } => total.asks += 1,
                Output::TurnEnded { outcome, .. } => match outcome {
                    TurnOutcome::Replied => total.replied += 1,
                    TurnOutcome::Silent => total.silent += 1,
                    TurnOutcome::Failed => total.failed += 1,
                    TurnOutcome::Superseded => total.superseded += 1,
                },
                _ => {}
            }
        }
        total.held_by_typing += coverage.held_by_typing;
    }
    let c = &total;
    let all = [
        c.bubbles,
        c.later_bubbles,
        c.aborts,
        c.speculative,
        c.rewaits,
        c.asks,
        c.replied,
        c.silent,
        c.failed,
        c.superseded,
        c.liveness_checked,
        c.cap_checked,
        c.crashes,
        c.held_by_typing,
    ];
    eprintln!("{c:?}");
    assert!(all.iter().all(|&n| n >= 10), "thin coverage: {c:?}");
}

#[derive(Debug, Default)]
struct Coverage {
    bubbles: usize,
    later_bubbles: usize,
    aborts: usize,
    speculative: usize,
    rewaits: usize,
    asks: usize,
    replied: usize,
    silent: usize,
    failed: usize,
    superseded: usize,
    liveness_checked: usize,
    cap_checked: usize,
    crashes: usize,
    /// Steps at which a reply was ready but held because the person was typing.
    held_by_typing: usize,
}

// --- Scenarios ---------------------------------------------------------------------------------

const TEXTS: &[&str] = &[
    "hey",
    "ok cool",
    "pizza tonight",
    "sounds good.",
    "what time?",
    "yes!",
    "so",
    "and then,",
    "i was thinking...",
    "wait",
    "hold on",
    "stop",
    "nvm",
    "look at this",
    "😂",
];

const REPLIES: &[&str] = &[
    "Sure.",
    "Sounds good. See you then!",
    "Hmm. Let me think. Okay. Yes. Definitely.",
    "Not yet.\n\nMaybe later.",
    "",
    "Sure. Sure.",
];

#[derive(Clone, Debug)]
enum Act {
    Message { text: usize, photo: bool },
    TypingOn,
    TypingOff,
}

#[derive(Clone, Debug)]
struct Llm {
    delay_ms: u64,
    /// 0..70 reply, 70..80 silent, 80..90 wait, 90..100 failure.
    kind: u8,
    reply: usize,
    wait_ms: u64,
}

#[derive(Clone, Debug)]
struct Scenario {
    policy: usize,
    person: Vec<(u64, Act)>,
    llm: Vec<Llm>,
    /// Store and endpoint-model latencies, cycled; `None` loses the bubble.
    io: Vec<Option<u64>>,
    verdicts: Vec<(bool, u64)>,
    /// Crash and restore this long after the person's action of that index.
    crash: Option<(usize, u64)>,
}

const POLICIES: usize = 11;

fn policy(i: usize) -> TurnConfig {
    let d = TurnConfig::default();
    match i {
        0 => d,
        1 => TurnConfig {
            speculate: false,
            ..d
        },
        2 => TurnConfig {
            endpoint_model_timeout_ms: Some(300),
            ..d
        },
        3 => TurnConfig {
            endpoint: EndpointPolicy::Punct,
            ..d
        },
        4 => TurnConfig {
            endpoint: EndpointPolicy::Typing { window_ms: 1500 },
            ..d
        },
        5 => TurnConfig::fixed(2000),
        6 => TurnConfig {
            speculate: true,
            ..TurnConfig::fixed(800)
        },
        7 => TurnConfig {
            max_bubbles: 1,
            learn_rhythm: false,
            use_tempo: false,
            max_spec_restarts: 0,
            ..d
        },
        8 => TurnConfig {
            bargein: false,
            ..d
        },
        // A patient engine: long adaptive windows, up to the hard cap, without the text model.
        9 => TurnConfig {
            endpoint_patience_ms: 40_000,
            completeness_model: false,
            ..d
        },
        _ => TurnConfig {
            build_prompt: false,
            window_hard_cap_ms: 4000,
            typing_timeout_ms: 3000,
            max_context_messages: 2,
            ..d
        },
    }
}

fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..500, 500u64..3000, 3000u64..12_000, 12_000u64..60_000]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (0..TEXTS.len(), prop::bool::weighted(0.1))
            .prop_map(|(text, photo)| Act::Message { text, photo }),
        3 => Just(Act::TypingOn),
        2 => Just(Act::TypingOff),
    ]
}

fn llm() -> impl Strategy<Value = Llm> {
    (50u64..6000, 0u8..100, 0..REPLIES.len(), 0u64..15_000).prop_map(
        |(delay_ms, kind, reply, wait_ms)| Llm {
            delay_ms,
            kind,
            reply,
            wait_ms,
        },
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0..POLICIES,
        prop::collection::vec((gap(), act()), 1..40),
        prop::collection::vec(llm(), 1..8),
        prop::collection::vec(prop::option::weighted(0.95, 0u64..400), 1..8),
        prop::collection::vec((any::<bool>(), 0u64..6000), 1..4),
        prop::option::weighted(0.2, (0usize..40, 0u64..5000)),
    )
        .prop_map(|(policy, person, llm, io, verdicts, crash)| Scenario {
            policy,
            person,
            llm,
            io,
            verdicts,
            crash,
        })
}

// --- The driver ----------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Ev {
    Person(Act),
    Streamed {
        epoch: u64,
    },
    Finished {
        epoch: u64,
        result: Option<GenerationResult>,
    },
    Stored {
        epoch: u64,
        index: u32,
    },
    Verdict {
        ask: u64,
        done: bool,
        wait_ms: u64,
    },
    Crash,
}

#[derive(Clone, Debug, Default)]
struct Gen {
    result: Option<Option<GenerationResult>>,
    aborted: bool,
}

struct Driver<'a> {
    s: &'a Scenario,
    cfg: TurnConfig,
    engine: TurnEngine,
    now: Millis,
    queue: BTreeMap<(Millis, u64), Ev>,
    next_id: u64,
    /// The store.
    log: Vec<LogMessage>,
    last_seq: u64,
    persisted: TurnSnapshot,
    /// The person as the engine was told: last person seq, and the last typing-on still standing.
    known_person_seq: u64,
    lease_on: Option<Millis>,
    msg_times: Vec<(u64, Millis)>,
    /// Per message: (seq, arrival, the cap base of its burst at arrival).
    cap_bases: Vec<(u64, Millis, Millis)>,
    /// Instants at which the engine restarted a burst's cap (a hold word, a `wait_for_more`).
    cap_resets: Vec<Millis>,
    /// The highest `read_up_to` answered, left silent or failed so far.
    resolved_read: u64,
    crash_at: Option<Millis>,
    restart_floor: Option<u64>,
    // The checker's model.
    in_flight: Option<u64>,
    last_started: u64,
    gens: BTreeMap<u64, Gen>,
    /// Committed epochs: read_up_to, ended, abandoned by a crash.
    committed: BTreeMap<u64, (u64, bool)>,
    last_send_read: u64,
    sent_since_idle: Vec<String>,
    /// (read_up_to, time) of every answer or deliberate silence (or failure).
    resolutions: Vec<(u64, Millis)>,
    llm_next: usize,
    io_next: usize,
    verdict_next: usize,
    trace: Vec<(Millis, Output)>,
    held_by_typing: usize,
}

impl<'a> Driver<'a> {
    fn run(s: &'a Scenario) -> (Vec<(Millis, Output)>, Coverage) {
        let cfg = policy(s.policy);
        let mut d = Driver {
            s,
            engine: TurnEngine::new(cfg.clone()),
            cfg,
            now: Millis::ZERO,
            queue: BTreeMap::new(),
            next_id: 0,
            log: Vec::new(),
            last_seq: 0,
            persisted: TurnSnapshot::default(),
            known_person_seq: 0,
            lease_on: None,
            msg_times: Vec::new(),
            cap_bases: Vec::new(),
            cap_resets: Vec::new(),
            resolved_read: 0,
            crash_at: None,
            restart_floor: None,
            in_flight: None,
            last_started: 0,
            gens: BTreeMap::new(),
            committed: BTreeMap::new(),
            last_send_read: 0,
            sent_since_idle: Vec::new(),
            resolutions: Vec::new(),
            llm_next: 0,
            io_next: 0,
            verdict_next: 0,
            trace: Vec::new(),
            held_by_typing: 0,
        };
        let mut t = Millis(1000);
        for (i, (gap, act)) in s.person.iter().enumerate() {
            t = t.saturating_add(*gap);
            d.schedule(t, Ev::Person(act.clone()));
            if let Some((at, after)) = s.crash
                && at == i
            {
                d.crash_at = Some(t.saturating_add(after));
                d.schedule(t.saturating_add(after), Ev::Crash);
            }
        }
        let horizon = t.saturating_add(600_000);
        loop {
            let next_event = d.queue.first_key_value().map(|(&(at, _), _)| at);
            let next_timer = d.engine.poll_timeout();
            match (next_event, next_timer) {
                (None, None) => break,
                (event, Some(timer)) if event.is_none_or(|e| timer <= e) => {
                    d.now = timer;
                    d.engine.handle_timeout(d.now);
                }
                _ => {
                    let Some(((at, _), ev)) = d.queue.pop_first() else {
                        unreachable!()
                    };
                    d.now = at;
                    d.event(ev);
                }
            }
            d.drain();
            assert!(d.now <= horizon, "the run never quiesced");
        }
        let coverage = d.finish();
        (d.trace, coverage)
    }

    fn schedule(&mut self, at: Millis, ev: Ev) {
        self.next_id += 1;
        self.queue.insert((at, self.next_id), ev);
    }

    fn input(&mut self, input: Input) {
        self.engine.handle_input(self.now, input);
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Person(Act::Message { text, photo }) => {
                self.last_seq += 1;
                let seq = self.last_seq;
                let (text, attachment) = match (photo, TEXTS[text]) {
                    (true, "look at this") => (String::new(), Some(Attachment::Photo)),
                    (true, t) => (t.to_owned(), Some(Attachment::Photo)),
                    (false, t) => (t.to_owned(), None),
                };
                self.log.push(LogMessage {
                    seq,
                    role: Role::User,
                    text: text.clone(),
                    attachment,
                    at: self.now,
                });
                self.msg_times.push((seq, self.now));
                if self.cfg.control_words
                    && attachment.is_none()
                    && matches!(text.as_str(), "wait" | "hold on")
                {
                    self.cap_resets.push(self.now);
                }
                let first_unanswered = self
                    .msg_times
                    .iter()
                    .find(|&&(s, _)| s > self.resolved_read)
                    .map_or(self.now, |&(_, at)| at);
                let reset = self
                    .cap_resets
                    .iter()
                    .copied()
                    .filter(|&r| r >= first_unanswered);
                let base = reset
                    .max()
                    .unwrap_or(first_unanswered)
                    .max(first_unanswered);
                self.cap_bases.push((seq, self.now, base));
                self.known_person_seq = seq;
                self.lease_on = None;
                self.input(Input::PersonMessage(PersonMessage {
                    seq,
                    text,
                    attachment,
                }));
            }
            Ev::Person(Act::TypingOn) => {
                self.lease_on = Some(self.now);
                self.input(Input::PersonTyping(true));
            }
            Ev::Person(Act::TypingOff) => {
                self.lease_on = None;
                self.input(Input::PersonTyping(false));
            }
            Ev::Streamed { epoch } => self.input(Input::GenerationStreamed {
                epoch,
                delta: "…".into(),
            }),
            Ev::Finished { epoch, result } => {
                if self.in_flight == Some(epoch) {
                    self.in_flight = None;
                    self.gens.entry(epoch).or_default().result = Some(result.clone());
                }
                self.input(match result {
                    Some(result) => Input::GenerationFinished { epoch, result },
                    None => Input::GenerationFailed {
                        epoch,
                        reason: "stand-in failure".into(),
                    },
                });
            }
            Ev::Stored { epoch, index } => {
                // The store writes the bubble and the runtime persists the snapshot with it.
                self.last_seq += 1;
                let seq = self.last_seq;
                let text = self.bubble_text(epoch, index);
                self.log.push(LogMessage {
                    seq,
                    role: Role::Assistant,
                    text,
                    attachment: None,
                    at: self.now,
                });
                self.input(Input::BubbleDelivered { epoch, index, seq });
            }
            Ev::Verdict { ask, done, wait_ms } => {
                self.input(Input::EndpointVerdict { ask, done, wait_ms })
            }
            Ev::Crash => {
                // The process dies: bubbles not yet stored and the endpoint model's calls die
                // with it; the LLM's late results still arrive, for epochs the new engine never
                // issued.
                self.queue
                    .retain(|_, ev| !matches!(ev, Ev::Stored { .. } | Ev::Verdict { .. }));
                self.in_flight = None;
                self.lease_on = None;
                self.sent_since_idle.clear();
                for (_, ended) in self.committed.values_mut() {
                    *ended = true;
                }
                self.restart_floor = Some(self.persisted.answered_up_to);
                self.engine = TurnEngine::restore(
                    self.cfg.clone(),
                    self.persisted,
                    self.log.clone(),
                    self.now,
                );
            }
        }
    }

    fn bubble_text(&self, epoch: u64, index: u32) -> String {
        self.trace
            .iter()
            .find_map(|(_, o)| match o {
                Output::SendBubble {
                    epoch: e,
                    index: i,
                    text,
                    ..
                } if *e == epoch && *i == index => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn lease_fresh(&self) -> bool {
        self.lease_on
            .is_some_and(|on| self.now < on.saturating_add(self.cfg.typing_timeout_ms))
    }

    fn io_delay(&mut self) -> Option<u64> {
        let d = self.s.io[self.io_next % self.s.io.len()];
        self.io_next += 1;
        d
    }

    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            self.check(&out);
            self.trace.push((self.now, out));
        }
        match self.engine.state() {
            hark_core::turn::State::Idle => self.sent_since_idle.clear(),
            hark_core::turn::State::Speaking if self.lease_fresh() => self.held_by_typing += 1,
            _ => {}
        }
        if let Some(deadline) = self.engine.poll_timeout() {
            assert!(
                deadline > self.now,
                "timer in the past: {deadline:?} at {:?}",
                self.now
            );
        }
        self.persisted = self.engine.snapshot();
    }

    fn check(&mut self, out: &Output) {
        let rechecks = self.cfg.deliver_recheck && self.cfg.bargein_recheck;
        match out {
            Output::StartGeneration {
                epoch,
                read_up_to,
                prompt,
                ..
            } => {
                assert!(self.in_flight.is_none(), "single flight: {out:?}");
                assert!(*epoch > self.last_started, "epochs increase: {out:?}");
                assert_eq!(*read_up_to, self.known_person_seq, "reads all it knows");
                self.assert_above_floor(*read_up_to, out);
                if self.cfg.build_prompt {
                    for pair in prompt.turns.windows(2) {
                        assert_ne!(pair[0].role, pair[1].role, "roles alternate: {prompt:?}");
                    }
                    let latest = &self
                        .log
                        .iter()
                        .rfind(|m| m.role == Role::User)
                        .unwrap()
                        .text;
                    let last = prompt.turns.last().expect("a prompt is never empty");
                    if rechecks && self.restart_floor.is_none() {
                        // Nothing the agent sent can follow the person's latest message. (A
                        // restored engine reads the log, where a bubble stored late can follow
                        // messages it did not read.)
                        assert_eq!(last.role, Role::User, "the person spoke last: {prompt:?}");
                        assert!(last.text.ends_with(latest.as_str()), "{prompt:?}");
                    } else {
                        // Without the rechecks a bubble can follow it in the log, as in the prompt.
                        let user = prompt.turns.iter().rev().find(|t| t.role == Role::User);
                        assert!(user.is_some_and(|u| u.text.ends_with(latest.as_str())));
                    }
                }
                self.last_started = *epoch;
                self.in_flight = Some(*epoch);
                self.gens.insert(*epoch, Gen::default());
                let llm = self.s.llm[self.llm_next % self.s.llm.len()].clone();
                self.llm_next += 1;
                let result = match llm.kind {
                    0..70 => Some(GenerationResult::Reply(REPLIES[llm.reply].to_owned())),
                    70..80 => Some(GenerationResult::StaySilent),
                    80..90 => Some(GenerationResult::WaitForMore { ms: llm.wait_ms }),
                    _ => None,
                };
                let epoch = *epoch;
                self.schedule(
                    self.now.saturating_add(llm.delay_ms / 2),
                    Ev::Streamed { epoch },
                );
                self.schedule(
                    self.now.saturating_add(llm.delay_ms),
                    Ev::Finished { epoch, result },
                );
            }
            Output::AbortGeneration { epoch } => {
                assert_eq!(self.in_flight, Some(*epoch), "abort what is in flight");
                self.in_flight = None;
                self.gens.entry(*epoch).or_default().aborted = true;
            }
            Output::Committed { epoch, read_up_to } => {
                assert!(
                    !self.committed.contains_key(epoch),
                    "committed twice: {out:?}"
                );
                assert!(*read_up_to <= self.known_person_seq);
                self.assert_above_floor(*read_up_to, out);
                self.committed.insert(*epoch, (*read_up_to, false));
            }
            Output::TurnEnded { epoch, outcome } => {
                let entry = self.committed.get_mut(epoch);
                let Some((read, ended)) = entry else {
                    panic!("ended without a commit: {out:?}");
                };
                assert!(!*ended, "ended twice: {out:?}");
                *ended = true;
                let read = *read;
                if matches!(outcome, TurnOutcome::Silent | TurnOutcome::Failed) {
                    self.resolutions.push((read, self.now));
                    self.resolved_read = self.resolved_read.max(read);
                }
                let waited = self.gens.get(epoch).is_some_and(|g| {
                    matches!(g.result, Some(Some(GenerationResult::WaitForMore { .. })))
                });
                if *outcome == TurnOutcome::Superseded && waited {
                    self.cap_resets.push(self.now);
                }
            }
            Output::SendBubble {
                epoch,
                read_up_to,
                text,
                index,
                ..
            } => {
                let Some(&(read, ended)) = self.committed.get(epoch) else {
                    panic!("a bubble of an uncommitted epoch: {out:?}");
                };
                assert!(!ended, "a bubble after its turn ended: {out:?}");
                assert_eq!(read, *read_up_to);
                let generation = self.gens.get(epoch).cloned().unwrap_or_default();
                let Some(Some(GenerationResult::Reply(reply))) = generation.result else {
                    panic!("a bubble without a finished reply: {out:?}");
                };
                assert!(!generation.aborted, "a bubble of an aborted epoch: {out:?}");
                assert!(reply.contains(text.as_str()), "{text:?} not in {reply:?}");
                assert!(
                    *read_up_to >= self.last_send_read,
                    "high-water mark went back"
                );
                self.last_send_read = *read_up_to;
                if rechecks {
                    assert_eq!(
                        *read_up_to, self.known_person_seq,
                        "a bubble after a newer person message: {out:?}"
                    );
                    assert!(
                        !self.lease_fresh(),
                        "a bubble while the person types: {out:?}"
                    );
                }
                assert!(
                    !self.sent_since_idle.contains(text),
                    "duplicate bubble {text:?} in one turn"
                );
                self.sent_since_idle.push(text.clone());
                self.assert_above_floor(*read_up_to, out);
                self.resolutions.push((*read_up_to, self.now));
                self.resolved_read = self.resolved_read.max(*read_up_to);
                if let Some(delay) = self.io_delay() {
                    let (epoch, index) = (*epoch, *index);
                    self.schedule(self.now.saturating_add(delay), Ev::Stored { epoch, index });
                }
            }
            Output::AskEndpoint { ask, .. } => {
                let (done, wait_ms) = self.s.verdicts[self.verdict_next % self.s.verdicts.len()];
                self.verdict_next += 1;
                let delay = self.io_delay().unwrap_or(1000) * 2;
                let ask = *ask;
                self.schedule(
                    self.now.saturating_add(delay),
                    Ev::Verdict { ask, done, wait_ms },
                );
            }
            Output::ShowTyping(_) => {}
        }
    }

    fn assert_above_floor(&self, read_up_to: u64, out: &Output) {
        if let Some(floor) = self.restart_floor {
            assert!(read_up_to > floor, "answered twice after restart: {out:?}");
        }
    }

    /// The worst case from the moment the person went quiet to the first bubble (or a deliberate
    /// silence, or a failure): the hard cap (or the model's timeout on top), a generation that
    /// asks to wait, the wait, a second generation, the first bubble's cadence, the typing grace.
    /// Without barge-in or the rechecks a bubble may also wait for the turn in progress.
    fn bound_ms(&self) -> u64 {
        let c = &self.cfg;
        let gen_max = 6000;
        let model = c.endpoint_model_timeout_ms.unwrap_or(0);
        let wait = c.max_wait_for_more_ms.min(c.window_hard_cap_ms);
        let base = c.window_hard_cap_ms
            + model
            + 2 * gen_max
            + wait
            + c.typing_cadence_max_ms
            + c.typing_grace_ms;
        if c.bargein && c.deliver_recheck && c.bargein_recheck {
            base
        } else {
            base + 2 * gen_max + wait + u64::from(c.max_bubbles) * c.typing_cadence_max_ms
        }
    }

    fn finish(&self) -> Coverage {
        let mut coverage = Coverage {
            held_by_typing: self.held_by_typing,
            ..Coverage::default()
        };
        assert_eq!(
            self.engine.state(),
            hark_core::turn::State::Idle,
            "ends idle"
        );
        assert!(self.in_flight.is_none(), "nothing in flight at the end");
        for (epoch, (_, ended)) in &self.committed {
            assert!(ended, "epoch {epoch} committed but never ended");
        }
        let bound = self.bound_ms();
        for &(seq, at) in &self.msg_times {
            let resolved = self
                .resolutions
                .iter()
                .filter(|&&(read, when)| read >= seq && when >= at)
                .map(|&(_, when)| when)
                .min();
            let Some(resolved) = resolved else {
                panic!("message {seq} was never answered nor left silent");
            };
            if let Some(quiet) = self.quiet_point(at, bound) {
                coverage.liveness_checked += 1;
                assert!(
                    resolved.since(quiet) <= bound,
                    "message {seq}: quiet from {quiet:?}, answered at {resolved:?}, bound {bound}ms"
                );
            }
        }
        if self.cfg.bargein && self.cfg.deliver_recheck && self.cfg.bargein_recheck {
            self.check_hard_cap(&mut coverage);
        }
        coverage
    }

    /// Every message is committed by its burst's hard cap, whatever the person does meanwhile.
    fn check_hard_cap(&self, coverage: &mut Coverage) {
        let cap = self.cfg.window_hard_cap_ms;
        let mut resets = self.cap_resets.clone();
        resets.sort();
        for &(seq, at, base) in &self.cap_bases {
            let mut deadline = at.max(base.saturating_add(cap));
            for &r in &resets {
                // A reset at the same instant may come after the message: it counts.
                if r >= at && r <= deadline {
                    deadline = deadline.max(r.saturating_add(cap));
                }
            }
            if let Some(crash) = self.crash_at
                && crash >= at
                && crash <= deadline
            {
                deadline = deadline.max(crash);
            }
            let committed = self.trace.iter().find_map(|(when, out)| match out {
                Output::Committed { read_up_to, .. } if *read_up_to >= seq && *when >= at => {
                    Some(*when)
                }
                _ => None,
            });
            let Some(committed) = committed else {
                panic!("message {seq} never committed");
            };
            coverage.cap_checked += 1;
            assert!(
                committed <= deadline,
                "message {seq} at {at:?}: committed at {committed:?}, hard cap {deadline:?}"
            );
        }
    }

    /// When the person went quiet after a message at `at`, if they then stayed quiet (no message,
    /// no typing) for `bound` ms; `None` if they went on sooner. A crash restarts the clock.
    fn quiet_point(&self, at: Millis, bound: u64) -> Option<Millis> {
        let mut quiet = at;
        let mut lease: Option<Millis> = None;
        let mut t = Millis(1000);
        for (gap, act) in &self.s.person {
            t = t.saturating_add(*gap);
            if t <= at {
                continue;
            }
            if let Some(until) = lease
                && until <= t
            {
                quiet = until;
                lease = None;
            }
            if lease.is_none() && t.since(quiet) > bound {
                break;
            }
            match act {
                Act::Message { .. } => return None,
                Act::TypingOn => lease = Some(t.saturating_add(self.cfg.typing_timeout_ms)),
                Act::TypingOff => {
                    if lease.take().is_some() {
                        quiet = t;
                    }
                }
            }
        }
        if let Some(until) = lease {
            quiet = until;
        }
        if let Some(crash) = self.crash_at
            && crash >= at
            && crash.since(quiet) <= bound
        {
            quiet = quiet.max(crash);
        }
        Some(quiet)
    }
}
