//! The state machine: IDLE → COLLECTING → THINKING → SPEAKING.
//!
//! The engine is level-triggered: every input updates the facts (the burst, the generation in
//! flight, the turn being delivered, the typing lease), then [`TurnEngine::drive`] applies every
//! decision that is due at `now` and recomputes the timer table from the facts. Timers therefore
//! never carry meaning of their own; a spurious wake-up finds nothing due and does nothing.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::bubbles::{cadence_ms, split_bubbles};
use super::config::{EndpointPolicy, TurnConfig};
use super::endpoint::{Completeness, ControlWord, completeness, control_word};
use super::prompt::{History, Prompt, Role};
use super::rhythm::{PAUSE_MS, PersonRhythm, ln_ms};
use super::{Attachment, GenerationResult, Input, LogMessage, Output, PersonMessage, TurnOutcome};
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

    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.advance(now);
        self.drive(now);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next instant at which something can become due, if any. Always later than the last
    /// `now` once the outputs are drained.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.timers.iter().flatten().min().copied()
    }

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

    pub fn snapshot(&self) -> TurnSnapshot {
        TurnSnapshot {
            answered_up_to: self.answered_up_to,
            epoch: self.epoch,
            rhythm: self.rhythm,
        }
    }

    pub fn rhythm(&self) -> PersonRhythm {
        self.rhythm
    }

    pub fn set_rhythm(&mut self, rhythm: PersonRhythm) {
        self.rhythm = rhythm;
    }

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

/// z-scores of the 75th and 90th percentiles of a normal distribution (of log-gaps).
const Z_P75: f64 = 0.674;
const Z_P90: f64 = 1.2816;
/// Pause rate below which a person who types is trusted to be done after a bubble that looks
/// complete, and after one that looks neutral (tuned on the Chit-Chat train split).
const PAUSE_RATE_COMPLETE: f64 = 0.06;
const PAUSE_RATE_NEUTRAL: f64 = 0.03;
/// Prior of the pause rate, as pseudo-counts of pauses among gaps, blended with what is learned.
const PAUSE_PRIOR_PAUSES: f64 = 0.3;
const PAUSE_PRIOR_GAPS: f64 = 2.0;
/// How many learned gaps the person's rhythm weighs at most against this burst's own gaps.
const PERSON_WEIGHT_MAX: u32 = 10;
/// Spread of log-gaps assumed while only this burst's gaps are known.
const DEFAULT_LOG_SD: f64 = 0.8;
/// Smallest spread of log-gaps trusted from a learned rhythm.
const MIN_LOG_SD: f64 = 0.25;
/// Tempo factor bounds and slope (per doubling of the reply latency).
const TEMPO_MIN: f64 = 0.75;
const TEMPO_MAX: f64 = 1.5;
const TEMPO_SLOPE: f64 = 0.25;
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
    /// The quiet gap before the current activity, if it continued a burst.
    gap: Option<u64>,
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
    gap_log_sum: f64,
    gaps: u32,
    /// Gaps of this burst longer than `PAUSE_MS`.
    pauses: u32,
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
        self.gap_log_sum += later.gap_log_sum;
        self.gaps += later.gaps;
        self.pauses += later.pauses;
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

    fn rearm(&mut self, now: Millis) {
        let mut t = [None; TIMERS];
        let lease = self.lease_fresh(now);
        if self.turn.is_none()
            && let Some(b) = &self.burst
        {
            t[Timer::HardCap as usize] = Some(b.cap_deadline);
            if self.ask.is_none() && !(self.cfg.typing_gate() && lease) {
                t[Timer::Window as usize] = Some(self.window_deadline(b));
            }
        }
        t[Timer::Lease as usize] = self.lease_until;
        t[Timer::Ask as usize] = self.ask.map(|a| a.deadline);
        if let Some(Turn {
            phase: Phase::Speaking(d),
            ..
        }) = &self.turn
        {
            let gate = self.gate(d.sent);
            if !(gate && lease) {
                t[Timer::Deliver as usize] = Some(self.deliver_at(d, gate));
            }
        }
        debug_assert!(
            t.iter().flatten().all(|&d| d > now),
            "a due timer was left armed: {t:?} at {now:?}"
        );
        self.timers = t;
    }

    // --- Inputs -------------------------------------------------------------------------------

    fn on_person_message(&mut self, at: Millis, m: PersonMessage, live: bool) {
        if m.seq <= self.last_person_seq {
            return;
        }
        self.last_person_seq = m.seq;
        let typing = self.lease_until.take().is_some_and(|l| l > at);
        if !typing {
            self.activity_starts(at, live);
        }
        let gap = self.person.gap.take();
        self.person.quiet(at);
        self.person.typing_stopped_at = None;

        let control = if self.cfg.control_words && m.attachment.is_none() {
            control_word(&m.text)
        } else {
            None
        };
        let mut class = completeness(&m.text, m.attachment);
        let question = class == Completeness::Complete && ends_in_question(&m.text);
        let captioned = !m.text.trim().is_empty();
        if self.person.bare_attachment && m.attachment.is_none() && captioned {
            // The caption of the photo just sent: the pair is complete unless the caption
            // itself trails off.
            if class != Completeness::Partial {
                class = Completeness::Complete;
            }
        }
        self.person.bare_attachment = !captioned
            && matches!(
                m.attachment,
                Some(Attachment::Photo | Attachment::Video | Attachment::File)
            );
        self.history
            .push_person(m.seq, m.text, m.attachment, self.high_water);

        if control == Some(ControlWord::Stop) {
            self.stop(m.seq);
            return;
        }
        let thinking = matches!(
            self.turn,
            Some(Turn {
                phase: Phase::Thinking,
                ..
            })
        );
        if thinking && self.cfg.bargein {
            // Barge-in: abort the generation, bump the epoch, fold the message into the burst.
            self.end_turn(TurnOutcome::Superseded);
        }
        self.drop_speculation();
        self.add_to_burst(
            at,
            m.seq,
            class,
            question,
            control == Some(ControlWord::Hold),
            gap,
        );

        if live
            && self.turn.is_none()
            && control.is_none()
            && self.cfg.endpoint == EndpointPolicy::Adaptive
            && let Some(timeout) = self.cfg.endpoint_model_timeout_ms
        {
            self.last_ask += 1;
            let ask = Ask {
                id: self.last_ask,
                deadline: at.saturating_add(timeout),
            };
            self.ask = Some(ask);
            let prompt = self.prompt(true);
            self.out.push_back(Output::AskEndpoint {
                ask: ask.id,
                read_up_to: m.seq,
                prompt,
            });
        }
    }

    fn on_typing(&mut self, now: Millis, on: bool) {
        let fresh = self.lease_fresh(now);
        if on {
            if !fresh {
                self.rhythm.observe_typing_start();
                self.activity_starts(now, true);
            }
            self.lease_until = Some(now.saturating_add(self.cfg.typing_timeout_ms));
        } else if fresh {
            self.lease_until = None;
            self.lease_ended(now);
        }
    }

    fn on_finished(&mut self, now: Millis, epoch: u64, result: Result<GenerationResult, ()>) {
        if self.generation.as_ref().is_none_or(|g| g.epoch != epoch) {
            // A stale epoch: aborted, superseded or never ours. Dropped, never delivered.
            return;
        }
        let Some(g) = self.generation.take() else {
            return;
        };
        let ours = self.turn.as_ref().is_some_and(|t| t.epoch == epoch);
        match (ours, result) {
            (true, Ok(result)) => self.apply_result(now, result, g.allow_wait),
            (true, Err(())) => self.end_turn(TurnOutcome::Failed),
            (false, Ok(result)) => {
                self.spec_ready = Some(Ready {
                    epoch,
                    read_up_to: g.read_up_to,
                    result,
                    allow_wait: g.allow_wait,
                    started: g.started,
                });
            }
            // A failed speculation is simply gone; the commit starts a fresh generation.
            (false, Err(())) => {}
        }
    }

    fn on_delivered(&mut self, epoch: u64, index: u32) {
        let Some(pos) = self
            .unacked
            .iter()
            .position(|&(e, i, _)| e == epoch && i == index)
        else {
            return;
        };
        if let Some((_, _, read)) = self.unacked.remove(pos) {
            self.answered_up_to = self.answered_up_to.max(read);
        }
    }

    fn on_verdict(&mut self, now: Millis, ask: u64, done: bool, wait_ms: u64) {
        if self.ask.is_none_or(|a| a.id != ask) {
            return;
        }
        self.ask = None;
        if self.turn.is_none()
            && let Some(b) = &mut self.burst
        {
            b.deadline = if done {
                now
            } else {
                now.saturating_add(wait_ms.min(self.cfg.window_hard_cap_ms))
            };
        }
    }

    // --- The person's activity and the rhythm ------------------------------------------------

    /// The person starts doing something (typing or a message out of the blue): learn the quiet
    /// gap that ended, as a continuation of the burst or as a reply to the agent.
    fn activity_starts(&mut self, at: Millis, learn: bool) {
        self.person.gap = None;
        let Some(quiet) = self.person.quiet_since.take() else {
            return;
        };
        if self.person.agent_spoke_since {
            if learn && let Some(agent_at) = self.person.last_agent_at {
                self.rhythm.observe_reply_latency(at.since(agent_at));
            }
            return;
        }
        let gap = at.since(quiet);
        if gap > self.cfg.rhythm_max_gap_ms {
            return;
        }
        self.person.gap = Some(gap);
        if learn && self.cfg.learn_rhythm {
            self.rhythm.observe_gap(gap);
        }
    }

    fn expire_lease(&mut self, now: Millis) {
        if let Some(until) = self.lease_until
            && until <= now
        {
            self.lease_until = None;
            self.lease_ended(until);
        }
    }

    fn lease_ended(&mut self, at: Millis) {
        self.person.quiet(at);
        self.person.typing_stopped_at = Some(at);
    }

    fn lease_fresh(&self, now: Millis) -> bool {
        self.lease_until.is_some_and(|l| l > now)
    }

    /// When the typing grace after the last stop (without a message) is over.
    fn grace_until(&self) -> Option<Millis> {
        self.person
            .typing_stopped_at
            .map(|at| at.saturating_add(self.cfg.typing_grace_ms))
    }

    // --- Collecting ---------------------------------------------------------------------------

    fn add_to_burst(
        &mut self,
        at: Millis,
        seq: u64,
        class: Completeness,
        question: bool,
        hold: bool,
        gap: Option<u64>,
    ) {
        let cap = self.cfg.window_hard_cap_ms;
        let mut b = match self.burst.take() {
            Some(mut b) => {
                if let Some(gap) = gap {
                    b.gaps += 1;
                    b.gap_log_sum += ln_ms(gap);
                    b.pauses += u32::from(gap > PAUSE_MS);
                }
                b
            }
            None => Burst {
                last_seq: seq,
                deadline: at,
                cap_deadline: at.saturating_add(cap),
                cap_moved: false,
                class,
                question,
                has_content: false,
                last_is_hold: false,
                gap_log_sum: 0.0,
                gaps: 0,
                pauses: 0,
                spec_starts: 0,
                spec_wanted: true,
                allow_wait: true,
            },
        };
        b.last_seq = seq;
        b.class = class;
        b.question = question;
        b.has_content |= !hold;
        b.last_is_hold = hold;
        b.allow_wait = true;
        b.spec_wanted = true;
        if hold {
            // The person asked for time: wait as long as liveness allows, from now.
            b.cap_deadline = b.cap_deadline.max(at.saturating_add(cap));
            b.cap_moved = true;
            b.deadline = b.cap_deadline;
        } else {
            b.deadline = at.saturating_add(self.rule_window_ms(&b));
        }
        self.burst = Some(b);
    }

    fn should_commit(&self, now: Millis, b: &Burst) -> bool {
        if now >= b.cap_deadline {
            return true;
        }
        if self.cfg.typing_gate() && self.lease_fresh(now) {
            return false;
        }
        if self.ask.is_some() {
            return false;
        }
        now >= self.window_deadline(b)
    }

    fn window_deadline(&self, b: &Burst) -> Millis {
        match self.grace_until() {
            Some(g) if self.cfg.typing_gate() => b.deadline.max(g),
            _ => b.deadline,
        }
    }

    /// The quiet window after the burst's last message, by policy.
    fn rule_window_ms(&self, b: &Burst) -> u64 {
        let c = &self.cfg;
        let w = match c.endpoint {
            EndpointPolicy::Fixed { window_ms } | EndpointPolicy::Typing { window_ms } => window_ms,
            EndpointPolicy::Punct => self.base_window_ms(b.class),
            EndpointPolicy::Adaptive => self.adaptive_window_ms(b),
        };
        w.min(c.window_hard_cap_ms)
    }

    fn base_window_ms(&self, class: Completeness) -> u64 {
        match class {
            Completeness::Complete => self.cfg.window_complete_ms,
            Completeness::Neutral => self.cfg.window_neutral_ms,
            Completeness::Partial => self.cfg.window_partial_ms,
        }
    }

    /// Completeness picks the window; when gaps are known (this burst's, and the person's learned
    /// rhythm) a neutral bubble waits for the 75th percentile of the expected gap, kept between
    /// the complete and partial windows, and a partial one for the 90th, kept between the neutral
    /// and partial windows (a bubble that trails off never waits less than one that says
    /// nothing); tempo scales all.
    fn adaptive_window_ms(&self, b: &Burst) -> u64 {
        let c = &self.cfg;
        if self.rhythm.typing_starts > 0 {
            return self.typing_window_ms(b);
        }
        let base = self.base_window_ms(b.class) as f64;
        let high = c.window_partial_ms as f64;
        let w = match (b.class, self.gap_estimate(b)) {
            (Completeness::Complete, _) | (_, None) => base,
            (Completeness::Neutral, Some((mean, sd))) => {
                let low = c.window_complete_ms as f64;
                (mean + Z_P75 * sd).exp().clamp(low.min(high), high)
            }
            (Completeness::Partial, Some((mean, sd))) => {
                let low = c.window_neutral_ms as f64;
                (mean + Z_P90 * sd).exp().clamp(low.min(high), high)
            }
        };
        (w * self.tempo_factor()).round() as u64
    }

    /// The adaptive window for a person whose client sends typing leases. Their gaps are quiet
    /// times (a message sent → typing started), mostly near zero: whoever goes on usually starts
    /// typing at once, and the lease then holds the commit and the delivery. The risk is the
    /// person who stops to think mid-burst, so the window follows how often this person pauses
    /// (`pause_rate`, blended with a prior and with this burst's own pauses): a question, or a
    /// complete or neutral bubble from someone who seldom pauses, gets `window_complete_ms`
    /// (tempo-scaled); anything else waits until the hard cap (delivery still held while they
    /// type).
    fn typing_window_ms(&self, b: &Burst) -> u64 {
        let c = &self.cfg;
        let short = (c.window_complete_ms as f64 * self.tempo_factor()).round() as u64;
        if b.question {
            return short;
        }
        let rate = self.pause_rate(b);
        let limit = match b.class {
            Completeness::Complete => PAUSE_RATE_COMPLETE,
            Completeness::Neutral => PAUSE_RATE_NEUTRAL,
            Completeness::Partial => return c.window_hard_cap_ms,
        };
        if rate < limit {
            short
        } else {
            c.window_hard_cap_ms
        }
    }

    /// How often this person pauses mid-burst: the learned rate (weighing up to
    /// `PERSON_WEIGHT_MAX` gaps, with `learn_rhythm`) and this burst's own pauses, over a prior.
    fn pause_rate(&self, b: &Burst) -> f64 {
        let r = &self.rhythm;
        let person = if self.cfg.learn_rhythm {
            f64::from(r.gap_samples.min(PERSON_WEIGHT_MAX))
        } else {
            0.0
        };
        let pauses = person * r.pause_rate + f64::from(b.pauses) + PAUSE_PRIOR_PAUSES;
        let gaps = person + f64::from(b.gaps) + PAUSE_PRIOR_GAPS;
        pauses / gaps
    }

    /// Mean and spread of the expected log-gap, from this burst and the person's rhythm.
    fn gap_estimate(&self, b: &Burst) -> Option<(f64, f64)> {
        let r = &self.rhythm;
        let trusted = self.cfg.learn_rhythm && r.gap_samples >= self.cfg.rhythm_min_samples.max(1);
        let person_weight = if trusted {
            f64::from(r.gap_samples.min(PERSON_WEIGHT_MAX))
        } else {
            0.0
        };
        let n = person_weight + f64::from(b.gaps);
        if n == 0.0 {
            return None;
        }
        let mean = (person_weight * r.gap_log_mean + b.gap_log_sum) / n;
        let sd = if trusted {
            r.gap_log_var.sqrt().max(MIN_LOG_SD)
        } else {
            DEFAULT_LOG_SD
        };
        Some((mean, sd))
    }

    /// Tighter in a fast back-and-forth, looser in a cold chat.
    fn tempo_factor(&self) -> f64 {
        let c = &self.cfg;
        if !c.use_tempo || self.rhythm.reply_samples < c.rhythm_min_samples.max(1) {
            return 1.0;
        }
        let Some(typical) = self.rhythm.typical_reply_ms() else {
            return 1.0;
        };
        let ratio = typical / c.tempo_reference_ms.max(1) as f64;
        (1.0 + TEMPO_SLOPE * ratio.log2()).clamp(TEMPO_MIN, TEMPO_MAX)
    }

    fn maybe_speculate(&mut self) {
        let Some(b) = &mut self.burst else {
            return;
        };
        if !std::mem::take(&mut b.spec_wanted) {
            return;
        }
        if !self.cfg.speculate
            || self.generation.is_some()
            || !b.has_content
            || b.last_is_hold
            || b.spec_starts > self.cfg.max_spec_restarts
            || self
                .spec_ready
                .as_ref()
                .is_some_and(|r| r.read_up_to == b.last_seq)
        {
            return;
        }
        b.spec_starts += 1;
        let (read_up_to, allow_wait) = (b.last_seq, b.allow_wait);
        self.start_generation(read_up_to, allow_wait, true);
    }

    /// Aborts a speculative generation and forgets a speculative result: they read less than the
    /// burst now holds.
    fn drop_speculation(&mut self) {
        self.spec_ready = None;
        let turn_epoch = self.turn.as_ref().map(|t| t.epoch);
        if let Some(g) = self.generation.take_if(|g| Some(g.epoch) != turn_epoch) {
            self.out
                .push_back(Output::AbortGeneration { epoch: g.epoch });
        }
    }

    fn start_generation(&mut self, read_up_to: u64, allow_wait: bool, speculative: bool) -> u64 {
        debug_assert!(self.generation.is_none(), "single flight");
        let epoch = self.next_epoch();
        let prompt = self.prompt(allow_wait);
        self.generation = Some(Generation {
            epoch,
            read_up_to,
            speculative,
            allow_wait,
            started: self.now,
        });
        self.out.push_back(Output::StartGeneration {
            epoch,
            read_up_to,
            prompt,
            speculative,
        });
        epoch
    }

    /// The window elapsed (or the hard cap hit): COLLECTING → THINKING, or straight to SPEAKING
    /// when a speculative draft of exactly this burst is ready.
    fn commit(&mut self, now: Millis) {
        let Some(burst) = self.burst.take() else {
            return;
        };
        self.ask = None;
        let read_up_to = burst.last_seq;
        if !burst.has_content {
            // Nothing but "wait": the person never said what to answer.
            self.drop_speculation();
            let epoch = self.next_epoch();
            self.out.push_back(Output::Committed { epoch, read_up_to });
            self.finish_silently(epoch, read_up_to);
            return;
        }
        if let Some(ready) = self.spec_ready.take_if(|r| r.read_up_to == read_up_to) {
            self.begin_turn(now, ready.epoch, burst, ready.started);
            self.apply_result(now, ready.result, ready.allow_wait);
            return;
        }
        if let Some(g) = &mut self.generation
            && g.speculative
            && g.read_up_to == read_up_to
        {
            g.speculative = false;
            let (epoch, started) = (g.epoch, g.started);
            self.begin_turn(now, epoch, burst, started);
            return;
        }
        self.drop_speculation();
        // Committed comes first: the moment of the decision precedes the work it starts.
        let epoch = self.epoch + 1;
        self.out.push_back(Output::Committed { epoch, read_up_to });
        let started = self.start_generation(read_up_to, burst.allow_wait, false);
        debug_assert_eq!(started, epoch);
        self.turn = Some(Turn {
            epoch,
            read_up_to,
            burst,
            phase: Phase::Thinking,
            composing_since: None,
        });
        self.show_typing(now);
    }

    /// Commits to the speculative draft `epoch`, which started composing at `drafted_from`.
    fn begin_turn(&mut self, now: Millis, epoch: u64, burst: Burst, drafted_from: Millis) {
        let read_up_to = burst.last_seq;
        self.out.push_back(Output::Committed { epoch, read_up_to });
        self.turn = Some(Turn {
            epoch,
            read_up_to,
            burst,
            phase: Phase::Thinking,
            composing_since: Some(drafted_from),
        });
        self.show_typing(now);
    }

    // --- Thinking → Speaking ------------------------------------------------------------------

    fn apply_result(&mut self, now: Millis, result: GenerationResult, allow_wait: bool) {
        match result {
            GenerationResult::Reply(text) => {
                // Duplicate suppression: nothing this turn already said, and no bubble twice.
                let mut said = Vec::new();
                let bubbles: VecDeque<String> = split_bubbles(&text, self.cfg.max_bubbles)
                    .into_iter()
                    .filter(|b| {
                        let h = hash_text(b);
                        let new = !self.sent_in_turn.contains(&h) && !said.contains(&h);
                        said.push(h);
                        new
                    })
                    .collect();
                let Some(first) = bubbles.front() else {
                    // Empty, or identical to what this turn already said.
                    self.end_turn(TurnOutcome::Silent);
                    return;
                };
                let since = self.typing_since.unwrap_or(now);
                let cadence = self.cadence(first);
                let mut next_at = since.saturating_add(cadence);
                if let Some(from) = self.turn.as_ref().and_then(|t| t.composing_since) {
                    // A speculative draft composed the reply while the person paused: its time
                    // counts toward the first bubble's typing, as a person's would who started
                    // typing on reading the message. The indicator still shows for at least the
                    // shortest cadence.
                    let shortest = since.saturating_add(self.cfg.typing_cadence_min_ms);
                    next_at = next_at.min(from.saturating_add(cadence).max(shortest));
                }
                let of = bubbles.len() as u32;
                if let Some(turn) = &mut self.turn {
                    turn.phase = Phase::Speaking(Delivery {
                        bubbles,
                        sent: 0,
                        of,
                        next_at,
                    });
                }
            }
            GenerationResult::WaitForMore { ms } if allow_wait => self.wait_for_more(now, ms),
            // A second wait for the same read counts as silence: the model had its wait.
            GenerationResult::WaitForMore { .. } | GenerationResult::StaySilent => {
                self.end_turn(TurnOutcome::Silent);
            }
        }
    }

    /// The model asked to hold: back to COLLECTING until `ms` passes quietly (then generate once
    /// more, without the tool) or the person goes on.
    fn wait_for_more(&mut self, now: Millis, ms: u64) {
        let news = self.burst.is_some();
        self.end_turn(TurnOutcome::Superseded);
        let cap = self.cfg.window_hard_cap_ms;
        let until = now.saturating_add(ms.min(self.cfg.max_wait_for_more_ms).min(cap));
        if let Some(b) = &mut self.burst {
            b.cap_deadline = b.cap_deadline.max(now.saturating_add(cap));
            b.cap_moved = true;
            b.deadline = b.deadline.max(until);
            if !news {
                b.deadline = until;
                b.allow_wait = false;
            }
        }
    }

    // --- Speaking -----------------------------------------------------------------------------

    /// Whether the recheck guards the next bubble: the deliver-time recheck for the first, the
    /// between-bubbles recheck for the others.
    fn gate(&self, sent: u32) -> bool {
        if sent == 0 {
            self.cfg.deliver_recheck
        } else {
            self.cfg.bargein_recheck
        }
    }

    fn deliver_at(&self, d: &Delivery, gate: bool) -> Millis {
        match self.grace_until() {
            Some(g) if gate => d.next_at.max(g),
            _ => d.next_at,
        }
    }

    /// Sends the next bubble if due, or stops delivery for a newer message. True if it acted.
    fn step_speaking(&mut self, now: Millis) -> bool {
        let Some(Turn {
            phase: Phase::Speaking(d),
            ..
        }) = &self.turn
        else {
            return false;
        };
        let gate = self.gate(d.sent);
        if gate && self.burst.is_some() {
            // The person went on: the bubble in flight (already handed to the store) stands,
            // the rest is dropped, and the burst is collected again.
            let outcome = if d.sent > 0 {
                TurnOutcome::Replied
            } else {
                TurnOutcome::Superseded
            };
            self.end_turn(outcome);
            return true;
        }
        if now < self.deliver_at(d, gate) || (gate && self.lease_fresh(now)) {
            return false;
        }
        self.send_next_bubble(now);
        true
    }

    fn send_next_bubble(&mut self, now: Millis) {
        let (min, max, cps) = (
            self.cfg.typing_cadence_min_ms,
            self.cfg.typing_cadence_max_ms,
            self.cfg.typing_cps,
        );
        let Some(turn) = &mut self.turn else {
            return;
        };
        let Phase::Speaking(d) = &mut turn.phase else {
            return;
        };
        let Some(text) = d.bubbles.pop_front() else {
            return;
        };
        let index = d.sent;
        d.sent += 1;
        let of = d.of;
        let next = d
            .bubbles
            .front()
            .map(|b| cadence_ms(b.chars().count(), cps, min, max));
        if let Some(c) = next {
            d.next_at = now.saturating_add(c);
        }
        let (epoch, read_up_to) = (turn.epoch, turn.read_up_to);

        self.sent_in_turn.push(hash_text(&text));
        self.high_water = self.high_water.max(read_up_to);
        self.history.push_agent(&text, true, self.high_water);
        if self.unacked.len() == MAX_UNACKED {
            self.unacked.pop_front();
        }
        self.unacked.push_back((epoch, index, read_up_to));
        self.person.agent_spoke(now);
        // The bubble ends the agent's typing indicator by itself.
        self.typing_since = None;
        self.out.push_back(Output::SendBubble {
            epoch,
            read_up_to,
            text,
            index,
            of,
        });
        if next.is_some() {
            self.show_typing(now);
        } else {
            self.end_turn(TurnOutcome::Replied);
        }
    }

    // --- Ending turns -------------------------------------------------------------------------

    /// Ends the committed turn. A superseded turn's burst is folded back in front of whatever
    /// arrived since, to be collected again.
    fn end_turn(&mut self, outcome: TurnOutcome) {
        let Some(turn) = self.turn.take() else {
            return;
        };
        if let Some(g) = self.generation.take_if(|g| g.epoch == turn.epoch) {
            self.out
                .push_back(Output::AbortGeneration { epoch: g.epoch });
        }
        self.hide_typing();
        if outcome == TurnOutcome::Silent {
            self.mark_answered(turn.read_up_to);
        }
        self.out.push_back(Output::TurnEnded {
            epoch: turn.epoch,
            outcome,
        });
        if outcome == TurnOutcome::Superseded {
            let burst = match self.burst.take() {
                Some(later) => turn.burst.absorb(later),
                None => turn.burst,
            };
            self.burst = Some(burst);
        }
        match &mut self.burst {
            Some(b) => b.spec_wanted = true,
            None => self.go_idle(),
        }
    }

    /// A stop word: cancel everything and close the burst silently.
    fn stop(&mut self, seq: u64) {
        if let Some(turn) = &self.turn {
            let outcome = match &turn.phase {
                Phase::Speaking(d) if d.sent > 0 => TurnOutcome::Replied,
                _ => TurnOutcome::Superseded,
            };
            self.end_turn(outcome);
        }
        self.drop_speculation();
        self.burst = None;
        self.ask = None;
        self.hide_typing();
        let epoch = self.next_epoch();
        self.out.push_back(Output::Committed {
            epoch,
            read_up_to: seq,
        });
        self.finish_silently(epoch, seq);
    }

    /// Ends an epoch that never ran a generation: deliberately silent.
    fn finish_silently(&mut self, epoch: u64, read_up_to: u64) {
        self.mark_answered(read_up_to);
        self.out.push_back(Output::TurnEnded {
            epoch,
            outcome: TurnOutcome::Silent,
        });
        if self.burst.is_none() && self.turn.is_none() {
            self.go_idle();
        }
    }

    fn mark_answered(&mut self, read_up_to: u64) {
        self.high_water = self.high_water.max(read_up_to);
        self.answered_up_to = self.answered_up_to.max(read_up_to);
    }

    fn go_idle(&mut self) {
        self.sent_in_turn.clear();
        self.history.unpin(self.high_water);
    }

    // --- Small helpers ------------------------------------------------------------------------

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    fn prompt(&self, allow_wait: bool) -> Prompt {
        if self.cfg.build_prompt {
            self.history.prompt(allow_wait)
        } else {
            Prompt {
                turns: Vec::new(),
                allow_wait,
            }
        }
    }

    fn cadence(&self, bubble: &str) -> u64 {
        cadence_ms(
            bubble.chars().count(),
            self.cfg.typing_cps,
            self.cfg.typing_cadence_min_ms,
            self.cfg.typing_cadence_max_ms,
        )
    }

    fn show_typing(&mut self, now: Millis) {
        if self.typing_since.is_none() {
            self.typing_since = Some(now);
            self.out.push_back(Output::ShowTyping(true));
        }
    }

    fn hide_typing(&mut self) {
        if self.typing_since.take().is_some() {
            self.out.push_back(Output::ShowTyping(false));
        }
    }
}

/// Whether the text's last sentence is a question (closing quotes and brackets ignored).
fn ends_in_question(text: &str) -> bool {
    let core = text
        .trim_end()
        .trim_end_matches(['"', '\'', ')', ']', '}', '»', '”', '’', '*', '_']);
    core.ends_with(['?', '？', '⁉'])
}

fn hash_text(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.trim().hash(&mut h);
    h.finish()
}
