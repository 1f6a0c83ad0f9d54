//! The state machine: IDLE → COLLECTING → THINKING → SPEAKING.
//!
//! The engine is level-triggered: every input updates the facts (the burst, the generation in
//! flight, the turn being delivered, the typing lease), then `drive` applies every decision that
//! is due at `now` and recomputes the timer table from the facts. Timers therefore never carry
//! meaning of their own; a spurious wake-up finds nothing due and does nothing.
//!
//! This file holds the public API and every piece of state; each concern's behaviour has its own
//! file, as quinn-proto's `connection/` does:
//!
//! - `person`: typing leases, quiet gaps, and what the person's rhythm learns from them;
//! - `collect`: COLLECTING — the burst, the endpoint window (the decision itself lives in
//!   `turn::endpoint::decide`), the endpoint model's verdicts, the hard cap;
//! - `generate`: speculation, the commit, and what a finished generation leads to;
//! - `deliver`: SPEAKING — cadence, rechecks, and how turns end;
//! - `timers`: the timer table.

mod collect;
mod deliver;
mod generate;
mod person;
mod timers;

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::bubbles::cadence_ms;
use super::config::TurnConfig;
use super::endpoint::Completeness;
use super::prompt::{History, Prompt, Role};
use super::rhythm::PersonRhythm;
use super::{GenerationResult, Input, LogMessage, Output, PersonMessage};
use crate::time::Millis;

/// Where the engine is, for tests, logs and the runtime's status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Nothing pending.
    Idle,
    /// Buffering a burst; the endpoint window is open (a speculative draft may be running).
    Collecting,
    /// Committed; the turn's generation is running.
    Thinking,
    /// Delivering the turn's bubbles (possibly held by the deliver-time recheck).
    Speaking,
}

/// What the runtime persists to survive a restart (see [`TurnEngine::restore`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TurnSnapshot {
    /// Every person message up to this seq was answered: a bubble reading it was delivered
    /// ([`Input::BubbleDelivered`]) or its turn ended deliberately silent.
    pub answered_up_to: u64,
    /// The last epoch handed out; a restored engine continues above it.
    pub epoch: u64,
    /// What the engine learned of the person.
    pub rhythm: PersonRhythm,
}

/// The turn engine of one (conversation, agent). See the module documentation.
#[derive(Debug)]
pub struct TurnEngine {
    cfg: TurnConfig,
    now: Millis,
    /// The last epoch handed out.
    epoch: u64,
    /// Durable mark: see [`TurnSnapshot::answered_up_to`].
    answered_up_to: u64,
    /// High-water mark: the `read_up_to` of the last bubble sent (or silent ending). It advances
    /// on each send; everything above it stays in the context.
    high_water: u64,
    last_person_seq: u64,
    rhythm: PersonRhythm,
    history: History,
    person: Activity,
    /// The person's typing lease, until this instant.
    lease_until: Option<Millis>,
    /// The burst not yet read by a committed turn. While a turn is in progress this holds what
    /// arrived after its read (the `fixed` baseline, or between bubbles with the recheck off).
    burst: Option<Burst>,
    /// The one generation in flight (single flight by construction: there is one slot).
    generation: Option<Generation>,
    /// A finished speculative result, waiting for the window to close.
    spec_ready: Option<Ready>,
    /// The committed turn: thinking or speaking.
    turn: Option<Turn>,
    /// Hashes of the bubbles sent since the engine was last idle, for duplicate suppression.
    sent_in_turn: Vec<u64>,
    /// Bubbles sent and not yet acknowledged by the store: (epoch, index, read_up_to).
    unacked: VecDeque<(u64, u32, u64)>,
    ask: Option<Ask>,
    last_ask: u64,
    /// Since when the agent's typing indicator is shown.
    typing_since: Option<Millis>,
    timers: [Option<Millis>; TIMERS],
    out: VecDeque<Output>,
}

impl TurnEngine {
    /// A fresh engine: nothing answered, nothing learned.
    pub fn new(config: TurnConfig) -> Self {
        let history = History::new(config.build_prompt, config.max_context_messages);
        TurnEngine {
            cfg: config,
            now: Millis::ZERO,
            epoch: 0,
            answered_up_to: 0,
            high_water: 0,
            last_person_seq: 0,
            rhythm: PersonRhythm::default(),
            history,
            person: Activity::default(),
            lease_until: None,
            burst: None,
            generation: None,
            spec_ready: None,
            turn: None,
            sent_in_turn: Vec::new(),
            unacked: VecDeque::new(),
            ask: None,
            last_ask: 0,
            typing_since: None,
            timers: [None; TIMERS],
            out: VecDeque::new(),
        }
    }

    /// Rebuilds an engine after a restart from the persisted snapshot and the tail of the log
    /// (`recent`, oldest first, any roles). Person messages above `snapshot.answered_up_to` form
    /// the unanswered burst, timed by their `at`: if its window has already passed, the engine
    /// commits at once (the outputs are waiting in [`TurnEngine::poll_output`]). Older messages
    /// and the agent's own are context only, so nothing answered is answered again.
    pub fn restore(
        config: TurnConfig,
        snapshot: TurnSnapshot,
        recent: Vec<LogMessage>,
        now: Millis,
    ) -> Self {
        let mut engine = TurnEngine::new(config);
        engine.now = now;
        engine.epoch = snapshot.epoch;
        engine.answered_up_to = snapshot.answered_up_to;
        engine.high_water = snapshot.answered_up_to;
        engine.last_person_seq = snapshot.answered_up_to;
        engine.rhythm = snapshot.rhythm;
        for m in recent {
            let at = m.at.min(now);
            match m.role {
                Role::Assistant => {
                    engine.history.push_agent(&m.text, false, engine.high_water);
                    engine.person.agent_spoke(at);
                }
                Role::User if m.seq <= snapshot.answered_up_to => {
                    engine
                        .history
                        .push_person(m.seq, m.text, m.attachment, engine.high_water);
                    engine.person.quiet(at);
                }
                Role::User => {
                    let msg = PersonMessage {
                        seq: m.seq,
                        text: m.text,
                        attachment: m.attachment,
                    };
                    engine.on_person_message(at, msg, false);
                }
            }
        }
        engine.drive(now);
        engine
    }

    /// Handles one input at `now`; then drain [`TurnEngine::poll_output`] and re-arm the timer.
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        let now = self.advance(now);
        self.expire_lease(now);
        match input {
            Input::PersonMessage(m) => self.on_person_message(now, m, true),
            Input::PersonTyping(on) => self.on_typing(now, on),
            Input::AgentMessage { text, .. } => {
                self.history.push_agent(&text, false, self.high_water);
                self.person.agent_spoke(now);
            }
            // Deltas are accepted for the in-flight epoch and otherwise unused: the engine acts
            // on finished results only.
            Input::GenerationStreamed { .. } => {}
            Input::GenerationFinished { epoch, result } => self.on_finished(now, epoch, Ok(result)),
            Input::GenerationFailed { epoch, .. } => self.on_finished(now, epoch, Err(())),
            Input::BubbleDelivered { epoch, index, .. } => self.on_delivered(epoch, index),
            Input::EndpointVerdict { ask, done, wait_ms } => {
                self.on_verdict(now, ask, done, wait_ms)
            }
        }
        self.drive(now);
    }

    /// Wakes the engine at `now` (the driver's clock, not the deadline). A spurious wake-up does
    /// nothing.
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.advance(now);
        self.drive(now);
    }

    /// The next command for the driver, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next instant at which something can become due, if any. Always later than the last
    /// `now` once the outputs are drained.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.iter().flatten().min().copied()
    }

    /// Where the engine is.
    pub fn state(&self) -> State {
        match &self.turn {
            Some(Turn {
                phase: Phase::Thinking,
                ..
            }) => State::Thinking,
            Some(Turn {
                phase: Phase::Speaking(_),
                ..
            }) => State::Speaking,
            None if self.burst.is_some() => State::Collecting,
            None => State::Idle,
        }
    }

    /// What the runtime persists (with each delivered bubble and after every turn).
    pub fn snapshot(&self) -> TurnSnapshot {
        TurnSnapshot {
            answered_up_to: self.answered_up_to,
            epoch: self.epoch,
            rhythm: self.rhythm,
        }
    }

    /// What the engine learned of the person, to persist.
    pub fn rhythm(&self) -> PersonRhythm {
        self.rhythm
    }

    /// Restores what was learned of the person.
    pub fn set_rhythm(&mut self, rhythm: PersonRhythm) {
        self.rhythm = rhythm;
    }

    /// The knobs the engine runs with.
    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// The high-water mark: `read_up_to` of the last bubble sent or silent ending.
    pub fn high_water(&self) -> u64 {
        self.high_water
    }
}

// ---------------------------------------------------------------------------------------------
// Internals.

const TIMERS: usize = 5;

/// The timer table's slots. Each is recomputed from the state after every step.
#[derive(Clone, Copy, Debug)]
enum Timer {
    /// The endpoint window of the burst (rules, model verdict, `wait_for_more`, typing grace).
    Window,
    /// The burst's hard cap.
    HardCap,
    /// The person's typing lease expires.
    Lease,
    /// The endpoint model's verdict is overdue.
    Ask,
    /// The next bubble's typing cadence is over.
    Deliver,
}

/// Unacknowledged bubbles remembered for the durable mark.
const MAX_UNACKED: usize = 64;

/// The person's activity, for the rhythm: when they last went quiet, and what happened since.
#[derive(Clone, Copy, Debug, Default)]
struct Activity {
    /// When the person last became quiet (message sent, typing stopped, lease expired).
    quiet_since: Option<Millis>,
    /// When typing last stopped without a message (cleared by a message): the grace runs from it.
    typing_stopped_at: Option<Millis>,
    /// The agent sent a bubble since `quiet_since`: the next activity answers it.
    agent_spoke_since: bool,
    last_agent_at: Option<Millis>,
    /// The previous message was a photo, video or file without a caption.
    bare_attachment: bool,
}

impl Activity {
    fn quiet(&mut self, at: Millis) {
        self.quiet_since = Some(at);
        self.agent_spoke_since = false;
    }

    fn agent_spoke(&mut self, at: Millis) {
        self.agent_spoke_since = true;
        self.last_agent_at = Some(at);
    }
}

/// The messages not yet read by a committed turn, as far as timing is concerned.
#[derive(Clone, Debug)]
struct Burst {
    last_seq: u64,
    /// Endpoint window deadline from the rules, the model or `wait_for_more`.
    deadline: Millis,
    cap_deadline: Millis,
    /// A hold word or `wait_for_more` moved the cap; a merge keeps the later cap.
    cap_moved: bool,
    class: Completeness,
    /// The last message ends in a question mark: the strongest sign of a finished turn.
    question: bool,
    /// Something other than hold words: worth answering.
    has_content: bool,
    last_is_hold: bool,
    /// Messages in the burst: the next one's position.
    messages: u32,
    spec_starts: u32,
    /// A new message (or the end of a turn) asks for a speculative start.
    spec_wanted: bool,
    allow_wait: bool,
}

impl Burst {
    /// `self` followed by `later`, which arrived while `self` was being answered.
    fn absorb(mut self, later: Burst) -> Burst {
        self.last_seq = later.last_seq;
        self.deadline = later.deadline;
        if later.cap_moved {
            self.cap_deadline = self.cap_deadline.max(later.cap_deadline);
            self.cap_moved = true;
        }
        self.class = later.class;
        self.question = later.question;
        self.has_content |= later.has_content;
        self.last_is_hold = later.last_is_hold;
        self.messages += later.messages;
        self.spec_wanted = true;
        self.allow_wait = true;
        self
    }
}

#[derive(Clone, Debug)]
struct Generation {
    epoch: u64,
    read_up_to: u64,
    speculative: bool,
    allow_wait: bool,
    /// When it started: a speculative draft has been composing the reply since then.
    started: Millis,
}

#[derive(Clone, Debug)]
struct Ready {
    epoch: u64,
    read_up_to: u64,
    result: GenerationResult,
    allow_wait: bool,
    started: Millis,
}

#[derive(Clone, Debug)]
struct Turn {
    epoch: u64,
    read_up_to: u64,
    /// The burst it read, folded back in if the turn is superseded before it sends anything.
    burst: Burst,
    phase: Phase,
    /// The turn adopted a speculative draft that has been composing the reply since then.
    composing_since: Option<Millis>,
}

#[derive(Clone, Debug)]
enum Phase {
    Thinking,
    Speaking(Delivery),
}

#[derive(Clone, Debug)]
struct Delivery {
    bubbles: VecDeque<String>,
    sent: u32,
    of: u32,
    /// When the typing cadence of the next bubble is over.
    next_at: Millis,
}

#[derive(Clone, Copy, Debug)]
struct Ask {
    id: u64,
    deadline: Millis,
}

impl TurnEngine {
    fn advance(&mut self, now: Millis) -> Millis {
        self.now = self.now.max(now);
        self.now
    }

    /// Applies every decision due at `now`, then re-arms the timer table.
    fn drive(&mut self, now: Millis) {
        loop {
            self.expire_lease(now);
            if self.ask.is_some_and(|a| a.deadline <= now) {
                // The model was too slow: the rules decide.
                self.ask = None;
            }
            if self.turn.is_none() {
                if let Some(b) = &self.burst
                    && self.should_commit(now, b)
                {
                    self.commit(now);
                    continue;
                }
                self.maybe_speculate();
            }
            if self.step_speaking(now) {
                continue;
            }
            break;
        }
        self.rearm(now);
    }

    // --- Small helpers ------------------------------------------------------------------------

    pub(super) fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    pub(super) fn prompt(&self, allow_wait: bool) -> Prompt {
        if self.cfg.build_prompt {
            self.history.prompt(allow_wait)
        } else {
            Prompt {
                turns: Vec::new(),
                allow_wait,
            }
        }
    }

    pub(super) fn cadence(&self, bubble: &str) -> u64 {
        cadence_ms(
            bubble.chars().count(),
            self.cfg.typing_cps,
            self.cfg.typing_cadence_min_ms,
            self.cfg.typing_cadence_max_ms,
        )
    }

    pub(super) fn show_typing(&mut self, now: Millis) {
        if self.typing_since.is_none() {
            self.typing_since = Some(now);
            self.out.push_back(Output::ShowTyping(true));
        }
    }

    pub(super) fn hide_typing(&mut self) {
        if self.typing_since.take().is_some() {
            self.out.push_back(Output::ShowTyping(false));
        }
    }
}

fn hash_text(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.trim().hash(&mut h);
    h.finish()
}
