//! The simulation: every turn of a trace replayed through the real [`TurnEngine`] on a virtual
//! clock, once per policy.
//!
//! # How a turn is replayed (an episode)
//!
//! A *turn* is a maximal run of one sender's messages; its *end* is its last bubble. For each
//! turn the engine plays the other side:
//!
//! - The engine is restored (`TurnEngine::restore`, the server's restart path) from the snapshot a
//!   runtime would hold at the start of the turn: everything before it answered, the person's
//!   rhythm as learned by this policy's engine over the person's earlier turns in this
//!   conversation, and as context the person's previous message and the other side's last
//!   message, at their real times (so the engine learns how fast the person answers: tempo).
//! - The episode starts at the other side's last real message before the turn (or at the turn's
//!   first event). The person's typing (from the trace, or synthesised) and the turn's bubbles
//!   are fed at their real times. While the person types, the driver refreshes the lease every
//!   [`TYPING_REFRESH_MS`], as a chat client does.
//! - The stand-in LLM answers every `StartGeneration` after `ttft + tokens / tps` with a reply
//!   of the configured length; an abort stops it. Bubbles are acknowledged at once.
//! - The episode runs until the person's events are over, no generation runs and the engine is
//!   idle. Nothing after the turn's end is fed: the other side's real reply and the person's
//!   next turn are what actually happened next, a reaction to the real reply, and would not have
//!   been written the same way in answer to a simulated one. So a simulated reply is never
//!   compared with the person's *next turn*; it can only cross the bubbles of the turn it answers.
//!
//! # What is measured (SPEC.md section 8)
//!
//! - **premature**: a reply bubble was delivered that had not read the whole turn
//!   (`SendBubble.read_up_to` below the turn's last message): it answered a fragment, or crossed
//!   a bubble of the turn. A generation aborted or dropped before delivery is not premature.
//! - **dead air** (turns not premature, with a reply): the turn's end → the first reply bubble.
//!   This includes the endpoint delay, the generation, and the engine's typing cadence before the
//!   first bubble (the cadence runs from the commit, or from the start of an adopted speculative
//!   draft, so it overlaps the generation).
//! - **endpoint delay** (turns not premature): the turn's end → the `Committed` of the epoch that
//!   answered (or, for a turn that ended silent, the last commit).
//! - **LLM calls**: `StartGeneration`s, speculative ones included.
//! - **wasted tokens**: tokens generated for nothing: an aborted generation's tokens so far, and
//!   the part of a finished reply whose bubbles were never sent.

use hark_core::time::Millis;
use hark_core::turn::{
    GenerationResult, Input, LogMessage, Output, PersonMessage, PersonRhythm, Role, TurnConfig,
    TurnEngine, TurnSnapshot, split_bubbles,
};

use crate::policy::Policy;
use crate::trace::{Conversation, EventKind, Turn};

/// How often a typing client refreshes its lease (well inside `typing_timeout_ms`).
pub const TYPING_REFRESH_MS: u64 = 3000;
/// An episode that has not settled this long after the turn's end is cut (and counted).
pub const EPISODE_LIMIT_MS: u64 = 30 * 60_000;
/// Characters per token of the stand-in LLM's replies.
pub const CHARS_PER_TOKEN: u32 = 4;
/// Characters per sentence of the stand-in LLM's replies (about a median chat bubble).
pub const SENTENCE_CHARS: usize = 40;

/// The stand-in LLM: every reply is `reply_tokens` long and takes `ttft + tokens / tps`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmModel {
    /// Time to the first token.
    pub ttft_ms: u64,
    /// Tokens per second after it.
    pub tokens_per_s: f64,
    /// Length of every reply.
    pub reply_tokens: u32,
}

impl LlmModel {
    /// Time from `StartGeneration` to the finished reply.
    pub fn generation_ms(&self) -> u64 {
        self.ttft_ms + self.stream_ms(self.reply_tokens)
    }

    fn stream_ms(&self, tokens: u32) -> u64 {
        if self.tokens_per_s <= 0.0 {
            return 0;
        }
        (f64::from(tokens) * 1000.0 / self.tokens_per_s).round() as u64
    }

    /// Tokens produced by a generation cut off `elapsed_ms` after it started.
    fn tokens_after(&self, elapsed_ms: u64) -> f64 {
        let streaming = elapsed_ms.saturating_sub(self.ttft_ms) as f64;
        (streaming * self.tokens_per_s / 1000.0).min(f64::from(self.reply_tokens))
    }

    /// The reply of generation `epoch`: `reply_tokens × 4` characters in sentences of about 40
    /// (a median chat bubble), which the engine splits into bubbles. Every sentence starts with a
    /// tag of its epoch and position, so duplicate suppression never mistakes a new reply for an
    /// old one; the length does not depend on the epoch.
    pub fn reply(&self, epoch: u64) -> String {
        const WORDS: [&str; 8] = ["sounds", "good", "to", "me", "and", "then", "we", "talk"];
        let chars = (self.reply_tokens * CHARS_PER_TOKEN).max(12) as usize;
        let sentences = chars.div_ceil(SENTENCE_CHARS);
        let mut text = String::with_capacity(chars + 8);
        for k in 0..sentences {
            let target = (chars * (k + 1)) / sentences;
            if k > 0 {
                text.push(' ');
            }
            text.push_str(&format!("S{}E{:04}", k % 10, epoch % 10_000));
            let mut w = 0;
            while text.len() + 1 < target {
                let word = WORDS[w % WORDS.len()];
                let room = target - 1 - text.len();
                text.push(' ');
                text.push_str(&word[..word.len().min(room.max(1))]);
                w += 1;
            }
            text.push('.');
        }
        text
    }
}

/// What happened to one turn under one policy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TurnResult {
    /// A reply bubble went out that had not read the whole turn.
    pub premature: bool,
    /// Turn end → first reply bubble (`None` if no bubble was sent).
    pub dead_air_ms: Option<u64>,
    /// Turn end → the deciding commit (`None` if the engine never committed after the end).
    pub endpoint_ms: Option<u64>,
    /// Generations started, speculative ones included.
    pub llm_calls: u32,
    /// Tokens generated for nothing (aborted, or never sent).
    pub wasted_tokens: f64,
    /// The episode had not settled by [`EPISODE_LIMIT_MS`].
    pub cut: bool,
}

/// A person's input to the engine at a time.
#[derive(Clone, Debug)]
enum PersonInput {
    Message(PersonMessage),
    Typing(bool),
}

/// One turn, prepared once and replayed under every policy.
#[derive(Clone, Debug)]
pub struct Episode {
    sender: usize,
    start: u64,
    end: u64,
    last_seq: u64,
    answered_up_to: u64,
    recent: Vec<LogMessage>,
    inputs: Vec<(u64, PersonInput)>,
}

/// Prepares the episodes of a conversation, in turn order.
pub fn episodes(conv: &Conversation) -> Vec<Episode> {
    // Conversation-wide message seq of every event (messages only).
    let mut seq_of = vec![0u64; conv.events.len()];
    let mut seq = 0;
    for (i, e) in conv.events.iter().enumerate() {
        if matches!(e.kind, EventKind::Message { .. }) {
            seq += 1;
            seq_of[i] = seq;
        }
    }
    conv.turns()
        .iter()
        .map(|t| episode(conv, &seq_of, t))
        .collect()
}

fn episode(conv: &Conversation, seq_of: &[u64], t: &Turn) -> Episode {
    let events = &conv.events;
    let is_msg = |i: usize| matches!(events[i].kind, EventKind::Message { .. });
    // The last message before the turn (someone else's, as turns are maximal runs).
    let prev = (0..t.first).rev().find(|&i| is_msg(i));
    let own_prev = (0..t.first)
        .rev()
        .find(|&i| is_msg(i) && events[i].sender == t.sender);
    let mut recent = Vec::new();
    for i in [own_prev, prev].into_iter().flatten() {
        let EventKind::Message { text, attachment } = &events[i].kind else {
            continue;
        };
        recent.push(LogMessage {
            seq: seq_of[i],
            role: if events[i].sender == t.sender {
                Role::User
            } else {
                Role::Assistant
            },
            text: text.clone(),
            attachment: *attachment,
            at: Millis(events[i].ts_ms),
        });
    }
    recent.sort_by_key(|m| m.seq);
    recent.dedup_by_key(|m| m.seq);

    // The episode's events: everything after the last message before the turn (from the start
    // of the conversation for its first turn, so typing before the first message counts). The
    // person's typing state when it starts: on if their last typing event before it was "on"
    // and no message of theirs came after it.
    let window_from = prev.map_or(0, |p| p + 1);
    let mut typing_on = false;
    for e in &events[..window_from] {
        if e.sender != t.sender {
            continue;
        }
        match e.kind {
            EventKind::Typing(on) => typing_on = on,
            EventKind::Message { .. } => typing_on = false,
        }
    }
    let first_ts = events[window_from..=t.last]
        .iter()
        .find(|e| e.sender == t.sender)
        .map_or(events[t.first].ts_ms, |e| e.ts_ms);
    let start = prev.map_or(first_ts, |p| events[p].ts_ms);

    let mut raw: Vec<(u64, PersonInput)> = Vec::new();
    if typing_on {
        raw.push((start, PersonInput::Typing(true)));
    }
    for (i, e) in events.iter().enumerate().take(t.last + 1).skip(window_from) {
        if e.sender != t.sender {
            continue;
        }
        match &e.kind {
            EventKind::Typing(on) => raw.push((e.ts_ms, PersonInput::Typing(*on))),
            EventKind::Message { text, attachment } => raw.push((
                e.ts_ms,
                PersonInput::Message(PersonMessage {
                    seq: seq_of[i],
                    text: text.clone(),
                    attachment: *attachment,
                }),
            )),
        }
    }
    // Lease refreshes while typing, up to the person's next event.
    let mut inputs = Vec::with_capacity(raw.len() * 2);
    for (k, (ts, input)) in raw.iter().enumerate() {
        inputs.push((*ts, input.clone()));
        if matches!(input, PersonInput::Typing(true)) {
            let until = raw.get(k + 1).map_or(*ts, |(n, _)| *n);
            let mut r = ts + TYPING_REFRESH_MS;
            while r < until {
                inputs.push((r, PersonInput::Typing(true)));
                r += TYPING_REFRESH_MS;
            }
        }
    }
    Episode {
        sender: t.sender,
        start,
        end: events[t.last].ts_ms,
        last_seq: seq_of[t.last],
        answered_up_to: own_prev.map_or(0, |i| seq_of[i]),
        recent,
        inputs,
    }
}

/// Replays one conversation under one policy: its turns in order, carrying each person's learned
/// rhythm from turn to turn as a runtime's snapshot would.
pub fn run_conversation(
    episodes: &[Episode],
    senders: usize,
    policy: &Policy,
    llm: &LlmModel,
) -> Vec<TurnResult> {
    let mut rhythms = vec![PersonRhythm::default(); senders];
    episodes
        .iter()
        .map(|ep| {
            let (result, rhythm) = run_episode(ep, rhythms[ep.sender], policy, llm);
            rhythms[ep.sender] = rhythm;
            result
        })
        .collect()
}

/// A generation of the stand-in LLM.
#[derive(Clone, Copy, Debug)]
struct Gen {
    epoch: u64,
    started: u64,
    finishes: u64,
}

/// Per epoch: when it was committed, and the characters of its bubbles sent.
#[derive(Clone, Copy, Debug, Default)]
struct EpochLog {
    epoch: u64,
    committed_at: Option<u64>,
    finished: bool,
    sent_chars: usize,
}

struct Run<'a> {
    ep: &'a Episode,
    policy: &'a Policy,
    llm: &'a LlmModel,
    engine: TurnEngine,
    running: Option<Gen>,
    epochs: Vec<EpochLog>,
    result: TurnResult,
    first_bubble: Option<(u64, u64)>,
    last_commit: Option<u64>,
    reply_chars: usize,
}

/// Replays one turn under one policy; returns what happened and the person's rhythm after it.
pub fn run_episode(
    ep: &Episode,
    rhythm: PersonRhythm,
    policy: &Policy,
    llm: &LlmModel,
) -> (TurnResult, PersonRhythm) {
    let config: TurnConfig = policy.config.clone();
    let snapshot = TurnSnapshot {
        answered_up_to: ep.answered_up_to,
        epoch: 0,
        rhythm,
    };
    let engine = TurnEngine::restore(config, snapshot, ep.recent.clone(), Millis(ep.start));
    let reply_chars = split_bubbles(&llm.reply(1), policy.config.max_bubbles)
        .iter()
        .map(|b| b.chars().count())
        .sum();
    let mut run = Run {
        ep,
        policy,
        llm,
        engine,
        running: None,
        epochs: Vec::new(),
        result: TurnResult::default(),
        first_bubble: None,
        last_commit: None,
        reply_chars,
    };
    run.drain(ep.start);
    run.go();
    run.finish()
}

impl Run<'_> {
    fn go(&mut self) {
        let mut next = 0;
        let limit = self.ep.end.saturating_add(EPISODE_LIMIT_MS);
        loop {
            let input_at = self.ep.inputs.get(next).map(|(t, _)| *t);
            let gen_at = self.running.map(|g| g.finishes);
            let timer_at = self.engine.poll_timeout().map(|m| m.0);
            if input_at.is_none() && self.running.is_none() && self.engine_settled() {
                return;
            }
            // On a tie the person's input goes first (a bubble that lands exactly as a window
            // closes was in time), then the LLM, then the engine's timer.
            let Some(now) = [input_at, gen_at, timer_at].into_iter().flatten().min() else {
                return;
            };
            if now > limit {
                self.result.cut = true;
                return;
            }
            if input_at == Some(now) {
                let input = match &self.ep.inputs[next].1 {
                    PersonInput::Message(m) => Input::PersonMessage(m.clone()),
                    &PersonInput::Typing(on) if self.policy.typing => Input::PersonTyping(on),
                    PersonInput::Typing(_) => {
                        next += 1;
                        continue;
                    }
                };
                next += 1;
                self.engine.handle_input(Millis(now), input);
            } else if gen_at == Some(now) {
                let Some(g) = self.running.take() else {
                    continue;
                };
                if let Some(e) = self.epoch(g.epoch) {
                    e.finished = true;
                }
                let result = GenerationResult::Reply(self.llm.reply(g.epoch));
                self.engine.handle_input(
                    Millis(now),
                    Input::GenerationFinished {
                        epoch: g.epoch,
                        result,
                    },
                );
            } else {
                self.engine.handle_timeout(Millis(now));
            }
            self.drain(now);
        }
    }

    fn engine_settled(&self) -> bool {
        self.engine.state() == hark_core::turn::State::Idle
    }

    fn epoch(&mut self, epoch: u64) -> Option<&mut EpochLog> {
        if let Some(i) = self.epochs.iter().position(|e| e.epoch == epoch) {
            return self.epochs.get_mut(i);
        }
        self.epochs.push(EpochLog {
            epoch,
            ..EpochLog::default()
        });
        self.epochs.last_mut()
    }

    fn drain(&mut self, now: u64) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::StartGeneration { epoch, .. } => {
                    self.result.llm_calls += 1;
                    debug_assert!(self.running.is_none(), "single flight");
                    self.running = Some(Gen {
                        epoch,
                        started: now,
                        finishes: now + self.llm.generation_ms(),
                    });
                }
                Output::AbortGeneration { epoch } => {
                    if let Some(g) = self.running.take_if(|g| g.epoch == epoch) {
                        self.result.wasted_tokens += self.llm.tokens_after(now - g.started);
                    }
                }
                Output::Committed { epoch, .. } => {
                    self.last_commit = Some(now);
                    if let Some(e) = self.epoch(epoch) {
                        e.committed_at = Some(now);
                    }
                }
                Output::SendBubble {
                    epoch,
                    read_up_to,
                    text,
                    index,
                    ..
                } => {
                    if read_up_to < self.ep.last_seq {
                        self.result.premature = true;
                    }
                    self.first_bubble.get_or_insert((now, epoch));
                    if let Some(e) = self.epoch(epoch) {
                        e.sent_chars += text.chars().count();
                    }
                    self.engine.handle_input(
                        Millis(now),
                        Input::BubbleDelivered {
                            epoch,
                            index,
                            seq: 0,
                        },
                    );
                }
                Output::AskEndpoint {
                    ask, read_up_to, ..
                } if self.policy.oracle => {
                    let done = read_up_to >= self.ep.last_seq;
                    self.engine.handle_input(
                        Millis(now),
                        Input::EndpointVerdict {
                            ask,
                            done,
                            wait_ms: if done { 0 } else { u64::MAX },
                        },
                    );
                }
                Output::AskEndpoint { .. } | Output::ShowTyping(_) | Output::TurnEnded { .. } => {}
            }
        }
    }

    fn finish(mut self) -> (TurnResult, PersonRhythm) {
        let tokens = f64::from(self.llm.reply_tokens);
        for e in &self.epochs {
            if e.finished && self.reply_chars > 0 {
                let unsent = 1.0 - (e.sent_chars as f64 / self.reply_chars as f64).min(1.0);
                self.result.wasted_tokens += tokens * unsent;
            }
        }
        let end = self.ep.end;
        if !self.result.premature {
            self.result.dead_air_ms = self.first_bubble.map(|(t, _)| t.saturating_sub(end));
            let deciding = match self.first_bubble {
                Some((_, epoch)) => self
                    .epochs
                    .iter()
                    .find(|e| e.epoch == epoch)
                    .and_then(|e| e.committed_at),
                None => self.last_commit,
            };
            self.result.endpoint_ms = deciding.filter(|&t| t >= end).map(|t| t - end);
        }
        (self.result, self.engine.rhythm())
    }
}
