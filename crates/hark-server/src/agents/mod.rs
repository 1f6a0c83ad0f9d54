//! Built-in agents: participants played by a model (SPEC.md section 6).
//!
//! A [`Supervisor`] starts one task per (conversation, agent participant): in mode "reply" the
//! task drives a [`hark_core::turn::TurnEngine`] with the real clock ([`reply`]); in mode
//! "actions" the model drives the protocol's actions as tools ([`actions`]). Tasks act through
//! the conversation's [`Handle`](crate::conversation::Handle) like any participant, so everything
//! an agent does is durable, ordered and visible exactly as a person's actions are.

pub mod actions;
pub mod reply;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hark_core::protocol::ParticipantName;
use hark_core::turn::TurnConfig;
use hark_llm::Provider;
use tokio::sync::mpsc;

use crate::AppState;

/// How an agent takes part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentMode {
    /// The turn engine decides when to answer a bursty person; the reply goes out as bubbles.
    Reply,
    /// The model drives append/undo/reset/preview/push/check as tools. With `streaming`, its
    /// streamed text is appended sentence by sentence and it is interrupted when news arrives.
    Actions { streaming: bool },
}

/// One `[[agent]]` of the config, with its secrets already resolved by the binary.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub name: String,
    pub model: String,
    pub system_prompt: String,
    pub mode: AgentMode,
    /// The turn engine's knobs (mode "reply").
    pub turn: TurnConfig,
    pub max_tokens: u32,
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

/// An agent ready to run: its config and the provider it talks to.
#[derive(Clone)]
pub struct AgentSpec {
    pub config: AgentConfig,
    pub provider: Arc<dyn Provider>,
}

/// What an agent is doing, for live displays such as `hark talk`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Text added to the draft.
    Appended { agent: String, text: String },
    /// A new message arrived while drafting; generation was stopped to re-read.
    Interrupted { agent: String, by: Vec<String> },
    /// The draft was revised: a segment undone, or the whole draft reset.
    Revised { agent: String, how: String },
    /// A push was held because unseen messages arrived.
    Held { agent: String, unseen: usize },
    /// A message was sent.
    Sent {
        agent: String,
        seq: u64,
        text: String,
    },
    /// The model or the loop guards stopped the agent.
    Stopped { agent: String, why: String },
    /// The provider failed.
    Failed { agent: String, error: String },
}

/// Starts and tracks the agent tasks of this server.
pub struct Supervisor {
    specs: BTreeMap<String, Arc<AgentSpec>>,
    running: Mutex<BTreeSet<(String, ParticipantName)>>,
    activity: Option<mpsc::UnboundedSender<Activity>>,
}

impl Supervisor {
    pub fn new(specs: Vec<AgentSpec>, activity: Option<mpsc::UnboundedSender<Activity>>) -> Self {
        Supervisor {
            specs: specs
                .into_iter()
                .map(|s| (s.config.name.clone(), Arc::new(s)))
                .collect(),
            running: Mutex::new(BTreeSet::new()),
            activity,
        }
    }

    pub fn knows(&self, agent: &str) -> bool {
        self.specs.contains_key(agent)
    }

    /// The configured agents' names and modes ("reply" or "actions"), in name order.
    pub fn names(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.specs.iter().map(|(name, spec)| {
            let mode = match spec.config.mode {
                AgentMode::Reply => "reply",
                AgentMode::Actions { .. } => "actions",
            };
            (name.as_str(), mode)
        })
    }

    /// Starts the task playing `participant` in `conversation`, unless it already runs.
    pub(crate) fn start(
        &self,
        state: &AppState,
        conversation: &str,
        participant: ParticipantName,
        agent: &str,
    ) {
        let Some(spec) = self.specs.get(agent).cloned() else {
            tracing::warn!(
                agent,
                "a participant names an agent this server does not define"
            );
            return;
        };
        let key = (conversation.to_owned(), participant.clone());
        if !self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            return;
        }
        let state = state.clone();
        let conversation = conversation.to_owned();
        let activity = self.activity.clone();
        let span = tracing::info_span!("agent", conversation = %conversation, participant = %participant, agent = %spec.config.name);
        let task = async move {
            match spec.config.mode {
                AgentMode::Reply => reply::run(state, conversation, participant, spec).await,
                AgentMode::Actions { streaming } => {
                    actions::run(state, conversation, participant, spec, streaming, activity).await
                }
            }
        };
        self.spawn(task, span);
    }

    fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
        span: tracing::Span,
    ) {
        use tracing::Instrument;
        tokio::spawn(task.instrument(span));
    }
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
