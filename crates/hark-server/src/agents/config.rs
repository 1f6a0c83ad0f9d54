//! What an agent is: [`AgentSpec`] (its [`AgentConfig`] and the providers it talks to) and the
//! [`Activity`] it reports for live displays.

use std::sync::Arc;

use hark_core::turn::TurnConfig;
use hark_llm::Provider;

/// How an agent takes part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentMode {
    /// The turn engine decides when to answer a bursty person; the reply goes out as bubbles.
    Reply,
    /// The model drives append/undo/reset/preview/push as tools. With `streaming`, its streamed
    /// text is appended sentence by sentence and it is interrupted when news arrives.
    Actions {
        /// Append the streamed text sentence by sentence instead of offering `append`.
        streaming: bool,
    },
}

/// One `[[agent]]` of the config, with its secrets already resolved by the binary.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The agent's name (`"agent": NAME` in a participant).
    pub name: String,
    /// The model to ask.
    pub model: String,
    /// Its instructions; the runtime adds what its mode needs.
    pub system_prompt: String,
    /// Reply (turn engine) or actions (the model drives the tools).
    pub mode: AgentMode,
    /// The turn engine's knobs (mode "reply"). Two are not its own to set: `typing_timeout_ms`
    /// is the server's `[limits]` value and `endpoint_model_timeout_ms` the endpoint model's
    /// `timeout_ms`; the driver fills both in.
    pub turn: TurnConfig,
    /// Most tokens per answer.
    pub max_tokens: u32,
    /// Sampling temperature; the provider's default when `None`.
    pub temperature: Option<f32>,
    /// Say so in the conversation when the provider fails (mode "reply").
    pub error_notice: bool,
    /// Loop guard (mode "actions"): messages this agent may send per minute.
    pub max_messages_per_minute: u32,
    /// Loop guard (mode "actions"): model turns in all before the agent stops.
    pub max_turns: u32,
    /// Loop guard (mode "actions"): tool calls in one model turn.
    pub max_tool_steps: u32,
}

impl AgentConfig {
    /// An agent of `name` on `model` with every default.
    pub fn new(name: impl Into<String>, model: impl Into<String>) -> Self {
        AgentConfig {
            name: name.into(),
            model: model.into(),
            system_prompt: String::new(),
            mode: AgentMode::Reply,
            turn: TurnConfig::default(),
            max_tokens: 512,
            temperature: None,
            error_notice: true,
            max_messages_per_minute: 6,
            max_turns: 50,
            max_tool_steps: 12,
        }
    }
}

/// The small, fast model a reply-mode agent asks whether the person is done
/// (`[agent.endpoint_model]`): it answers `{"done": bool, "wait_ms": n}` within `timeout_ms`, or
/// the rules decide.
#[derive(Clone)]
pub struct EndpointModel {
    /// Where it runs.
    pub provider: Arc<dyn Provider>,
    /// Its model name.
    pub model: String,
    /// Its instructions (a default that asks for the JSON verdict when the config gives none).
    pub prompt: String,
    /// How long a verdict may take; later, the engine has already fallen back to its rules.
    pub timeout_ms: u64,
}

impl EndpointModel {
    /// What the endpoint model is told when the config says nothing.
    pub const DEFAULT_PROMPT: &'static str = "You watch a text chat and decide whether the person \
        has finished their turn or is still in the middle of a thought, about to send more. \
        Answer with JSON only: {\"done\": true} when they are done, or {\"done\": false, \
        \"wait_ms\": N} with N the milliseconds to wait for more (at most 10000).";
}

/// An agent ready to run: its config and the providers it talks to.
#[derive(Clone)]
pub struct AgentSpec {
    /// What it is.
    pub config: AgentConfig,
    /// The model that writes its replies or drives its tools.
    pub provider: Arc<dyn Provider>,
    /// Mode "reply": the model that judges when the person is done, if any.
    pub endpoint: Option<EndpointModel>,
}

/// What an agent is doing, for live displays such as `hark talk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Text added to the draft.
    Appended {
        /// The agent.
        agent: String,
        /// What it added.
        text: String,
    },
    /// A new message arrived while drafting; generation was stopped to re-read.
    Interrupted {
        /// The agent.
        agent: String,
        /// Who wrote the news.
        by: Vec<String>,
    },
    /// The draft was revised: a segment undone, or the whole draft reset.
    Revised {
        /// The agent.
        agent: String,
        /// How, in a few words.
        how: String,
    },
    /// A push was held because unseen messages arrived.
    Held {
        /// The agent.
        agent: String,
        /// How many arrived.
        unseen: usize,
    },
    /// A message was sent.
    Sent {
        /// The agent.
        agent: String,
        /// Its seq.
        seq: u64,
        /// Its text.
        text: String,
    },
    /// The model or the loop guards stopped the agent.
    Stopped {
        /// The agent.
        agent: String,
        /// Why.
        why: String,
    },
    /// The provider failed.
    Failed {
        /// The agent.
        agent: String,
        /// The provider's error (never a key: providers strip them).
        error: String,
    },
}

/// Keeps `text` to at most `max` characters, for notices and logs.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}
