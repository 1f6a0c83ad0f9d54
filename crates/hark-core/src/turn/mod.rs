//! The turn engine (SPEC.md section 6.1): one coherent reply to a bursty person.
//!
//! One [`TurnEngine`] runs per (conversation, agent). It is a sans-IO state machine in the house
//! shape: the driver feeds it timed [`Input`]s with [`TurnEngine::handle_input`], wakes it at
//! [`TurnEngine::poll_timeout`] with [`TurnEngine::handle_timeout`], and after every call drains
//! [`TurnEngine::poll_output`] and executes each [`Output`] (start or abort a generation, show the
//! agent's typing indicator, store a bubble). Timers are internal; the driver only sleeps until the
//! deadline the engine names and passes its clock's `now`.
//!
//! The states are IDLE → COLLECTING → THINKING → SPEAKING ([`State`]); `docs/turn-engine.md`
//! describes how the engine decides, with the state table, the signals and every knob of
//! [`TurnConfig`].
//!
//! Submodules: `config` (the knobs), `engine` (the state machine, one file per concern),
//! [`endpoint`] (what a bubble's text says, the learned completeness model, and the adaptive
//! decision of how long to stay quiet), `rhythm` (what the engine learns of each person), `bubbles`
//! (splitting a reply and the typing cadence), `prompt` (the bounded history and the role-merged
//! prompt), `id` (a bubble's client id).

#![warn(missing_docs)]

mod bubbles;
mod config;
pub mod endpoint;
mod engine;
mod id;
mod prompt;
mod rhythm;

pub use bubbles::{cadence_ms, split_bubbles};
pub use config::{BadEndpointPolicy, EndpointPolicy, Knob, KnobError, KnobValue, TurnConfig};
pub use endpoint::{
    Completeness, CompletenessModel, ControlWord, Decision, Evidence, completeness, control_word,
    decide, ends_in_question,
};
pub use engine::{State, TurnEngine, TurnSnapshot};
pub use id::{NotATurnId, TurnId};
pub use prompt::{Prompt, PromptTurn, Role};
pub use rhythm::{PAUSE_MS, PersonRhythm};

use crate::time::Millis;

/// What the driver tells the engine. Every input is handled at the `now` passed with it.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A message from the person, with the `seq` the store gave it. A `seq` not above the highest
    /// one already seen is ignored entirely, so a replayed message is harmless (and an
    /// out-of-order one is lost: feed messages in seq order). The message ends the person's
    /// typing lease (SPEC.md section 1).
    PersonMessage(PersonMessage),
    /// The person's typing lease: `true` starts or refreshes it, `false` clears it.
    PersonTyping(bool),
    /// A message stored as the agent that this engine did not produce (an operator writing as the
    /// agent, say). It joins the context and counts as the agent speaking for the tempo; it
    /// answers nothing. `seq` is informational.
    AgentMessage {
        /// The message's seq in the conversation.
        seq: u64,
        /// What was said.
        text: String,
    },
    /// Streamed text of a running generation. Accepted and unused: the engine acts on finished
    /// results only (delivering bubbles while the stream runs is not implemented).
    GenerationStreamed {
        /// The generation's epoch.
        epoch: u64,
        /// The text streamed since the last delta.
        delta: String,
    },
    /// A generation finished. Ignored unless `epoch` is the one generation in flight.
    GenerationFinished {
        /// The generation's epoch.
        epoch: u64,
        /// What the model decided.
        result: GenerationResult,
    },
    /// A generation failed (after the provider's own retries). Ignored unless `epoch` is in flight.
    GenerationFailed {
        /// The generation's epoch.
        epoch: u64,
        /// Why, for logs.
        reason: String,
    },
    /// The store accepted bubble `index` of `epoch` as message `seq`. This is what advances the
    /// durable mark [`TurnSnapshot::answered_up_to`]; persist the snapshot with the bubble.
    BubbleDelivered {
        /// The bubble's epoch ([`Output::SendBubble`]).
        epoch: u64,
        /// The bubble's index in its reply.
        index: u32,
        /// The seq the store gave it.
        seq: u64,
    },
    /// The endpoint model's answer to [`Output::AskEndpoint`] `ask`: `done`, or wait `wait_ms`
    /// more. Ignored if it comes after a newer message or after `endpoint_model_timeout_ms`.
    EndpointVerdict {
        /// The ask this answers.
        ask: u64,
        /// The person is done: commit now (the typing gate still applies).
        done: bool,
        /// Otherwise wait this long more (cut to the hard cap).
        wait_ms: u64,
    },
}

/// A person's message as the store recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonMessage {
    /// Its seq in the conversation.
    pub seq: u64,
    /// Its text (empty for a bare attachment).
    pub text: String,
    /// What is attached, if anything.
    pub attachment: Option<Attachment>,
}

/// The kind of an attachment. A photo, video or file without a caption looks partial (its caption
/// usually follows); a voice note or a sticker looks complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attachment {
    /// A picture.
    Photo,
    /// A video.
    Video,
    /// Any other file.
    File,
    /// A voice note or audio file.
    Audio,
    /// A sticker.
    Sticker,
}

impl Attachment {
    /// The label used for the attachment in a prompt, e.g. `[photo]`.
    pub fn label(self) -> &'static str {
        match self {
            Attachment::Photo => "[photo]",
            Attachment::Video => "[video]",
            Attachment::File => "[file]",
            Attachment::Audio => "[voice note]",
            Attachment::Sticker => "[sticker]",
        }
    }
}

/// What the model decided, as the runtime parsed it from the reply and its tool calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationResult {
    /// Say this. The engine splits it into bubbles.
    Reply(String),
    /// The `wait_for_more {ms}` tool: hold up to `ms` (bounded by `max_wait_for_more_ms`) for the
    /// person to go on, then generate again without the tool.
    WaitForMore {
        /// How long, as the model asked.
        ms: u64,
    },
    /// The `stay_silent` tool: end the turn without a reply. Not an error.
    StaySilent,
}

/// A message of the conversation log, handed to [`TurnEngine::restore`] after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMessage {
    /// Its seq in the conversation.
    pub seq: u64,
    /// The person's, or the agent's.
    pub role: Role,
    /// Its text.
    pub text: String,
    /// What is attached, if anything.
    pub attachment: Option<Attachment>,
    /// When the store recorded it.
    pub at: Millis,
}

/// A command for the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Start generation `epoch` on `prompt`, which holds every person message up to `read_up_to`.
    /// At most one generation is in flight: the engine never emits this before the previous one
    /// finished, failed or was aborted.
    StartGeneration {
        /// The generation's epoch: every result it produces carries it.
        epoch: u64,
        /// The highest person message the prompt holds.
        read_up_to: u64,
        /// What the model reads (the runtime adds the system prompt and tools).
        prompt: Prompt,
        /// Started during the endpoint window, before the engine committed. It becomes the turn's
        /// generation if the person stays quiet, and is aborted if they go on.
        speculative: bool,
    },
    /// Cancel generation `epoch` (drop the stream). Anything it still produces is ignored.
    AbortGeneration {
        /// The generation to cancel.
        epoch: u64,
    },
    /// Show or hide the agent's typing indicator. A sent bubble ends the indicator by itself (a
    /// message ends its author's typing lease, SPEC.md section 1), so the engine emits
    /// `ShowTyping(true)` again before each further bubble and `ShowTyping(false)` only when it
    /// stops without sending.
    ShowTyping(bool),
    /// Store and fan out this bubble as the agent's message; answer with
    /// [`Input::BubbleDelivered`].
    SendBubble {
        /// The reply's epoch.
        epoch: u64,
        /// The highest person message the reply read.
        read_up_to: u64,
        /// The bubble.
        text: String,
        /// Its position in the reply, from 0 (with `epoch` and `read_up_to`: its [`TurnId`]).
        index: u32,
        /// Bubbles in the reply.
        of: u32,
    },
    /// The engine decided the person is done with everything up to `read_up_to` (or the hard cap
    /// forced it). `epoch` is the generation that will answer; the same burst can be committed
    /// again after a barge-in or a `wait_for_more`, under a new epoch.
    Committed {
        /// The epoch that will answer.
        epoch: u64,
        /// The highest person message it reads.
        read_up_to: u64,
    },
    /// Committed epoch `epoch` is over. Exactly one of these follows each [`Output::Committed`].
    TurnEnded {
        /// The epoch.
        epoch: u64,
        /// How it ended.
        outcome: TurnOutcome,
    },
    /// Ask the endpoint model whether the person is done (only with `endpoint_model_timeout_ms`
    /// set and the adaptive policy). Answer with [`Input::EndpointVerdict`].
    AskEndpoint {
        /// The ask's id, to quote in the verdict.
        ask: u64,
        /// The highest person message the question is about.
        read_up_to: u64,
        /// The conversation so far, for the endpoint model.
        prompt: Prompt,
    },
}

/// How a committed epoch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TurnOutcome {
    /// At least one bubble was sent.
    Replied,
    /// Deliberately no reply: `stay_silent`, a reply identical to what was already sent, a burst
    /// of nothing but "wait", or a "stop".
    Silent,
    /// The generation failed. The burst stays unanswered in the snapshot.
    Failed,
    /// Nothing was sent and a later epoch answers the same burst: the person barged in, the reply
    /// was dropped by the deliver-time recheck, or the model asked to wait for more.
    Superseded,
}
