//! Mode "reply": the driver that runs a [`TurnEngine`] with the real clock.
//!
//! One task per (conversation, agent) owns its engine. It selects over the conversation's live
//! events, the results of the generation in flight, the engine's timer and shutdown, feeds each
//! to the engine with the clock's `now`, and executes what comes out: start or abort a
//! generation, show typing, send a bubble.
//!
//! Restart: every bubble is sent with the client id `turn-{epoch}-{index}-r{read_up_to}`. The
//! message and its client id are committed together, so after a crash the log itself says which
//! bursts were answered and which epoch was last used; a resent bubble is recognised as a
//! duplicate instead of being sent twice. Silent endings and the person's rhythm are saved in the
//! store's agent state after every turn.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hark_core::protocol::{Action, ActionResult, Event, Message, ParticipantName};
use hark_core::turn::{
    GenerationResult, Input, LogMessage, Output, PersonRhythm, Prompt, Role, TurnEngine, TurnId,
    TurnOutcome, TurnSnapshot,
};
use hark_llm::{ChatMessage, ChatRequest, StreamEvent, ToolSpec};
use hark_store::AgentState;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::{AgentSpec, shorten};
use crate::AppState;
use crate::conversation::{Handle, now};

/// Messages of context handed to the engine on restore, beyond the unanswered ones.
const RESTORE_CONTEXT: usize = 80;
const SEND_ATTEMPTS: u32 = 3;

pub(crate) async fn run(
    state: AppState,
    conversation: String,
    me: ParticipantName,
    spec: Arc<AgentSpec>,
) {
    let handle = match state.registry.get(&conversation).await {
        Ok(Some(handle)) => handle,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, "cannot load the conversation; the agent does not start");
            return;
        }
    };
    let Ok((live, last_seq)) = handle.subscribe().await else {
        return;
    };
    let engine = match restore(&state, &conversation, &me, &spec, last_seq).await {
        Ok(engine) => engine,
        Err(error) => {
            tracing::error!(%error, "cannot restore the agent's state; it does not start");
            return;
        }
    };
    let (results, results_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        state,
        conversation,
        handle,
        me,
        spec,
        engine,
        generation: None,
        results,
        typing_shown: false,
        people_typing: BTreeSet::new(),
        last_seq,
    };
    driver.run(live, results_rx).await;
}

/// Rebuilds the engine from the log and the saved state.
async fn restore(
    state: &AppState,
    conversation: &str,
    me: &ParticipantName,
    spec: &AgentSpec,
    last_seq: u64,
) -> Result<TurnEngine, hark_store::StoreError> {
    let history = state
        .store
        .messages_after(conversation, 0, last_seq as usize)
        .await?;
    let saved = state.store.load_agent_state(conversation, me).await?;
    let mut epoch = saved.as_ref().map_or(0, |s| s.epoch);
    let mut answered_up_to = saved.as_ref().map_or(0, |s| s.answered_up_to);
    for message in history.iter().filter(|m| &m.from == me) {
        if let Some(id) = turn_id(message) {
            epoch = epoch.max(id.epoch);
            answered_up_to = answered_up_to.max(id.read_up_to);
        }
    }
    let rhythm = saved
        .as_ref()
        .and_then(|s| rhythm_from_json(&s.rhythm))
        .unwrap_or_default();
    let keep_from = history.len().saturating_sub(RESTORE_CONTEXT);
    let recent = history
        .iter()
        .enumerate()
        .filter(|(i, m)| *i >= keep_from || m.seq > answered_up_to)
        .map(|(_, m)| log_message(m, me))
        .collect();
    Ok(TurnEngine::restore(
        spec.config.turn.clone(),
        TurnSnapshot {
            answered_up_to,
            epoch,
            rhythm,
        },
        recent,
        now(),
    ))
}

struct Driver {
    state: AppState,
    conversation: String,
    handle: Handle,
    me: ParticipantName,
    spec: Arc<AgentSpec>,
    engine: TurnEngine,
    /// The generation in flight: its epoch and the task streaming it.
    generation: Option<(u64, JoinHandle<()>)>,
    results: mpsc::UnboundedSender<Input>,
    typing_shown: bool,
    /// Other participants whose composing indicator is on.
    people_typing: BTreeSet<ParticipantName>,
    /// The last message seq fed to the engine.
    last_seq: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut live: broadcast::Receiver<Event>,
        mut results: mpsc::UnboundedReceiver<Input>,
    ) {
        let shutdown = self.state.shutdown.clone();
        // A typing lease lasts `typing_timeout_ms`; refresh it well before it lapses.
        let refresh = Duration::from_millis(self.state.config.limits.typing_timeout_ms / 2);
        let mut refresh_typing = tokio::time::interval(refresh.max(Duration::from_millis(100)));
        self.execute().await;
        loop {
            let deadline = self
                .engine
                .poll_timeout()
                .map(|due| tokio::time::Instant::now() + Duration::from_millis(due.since(now())));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = live.recv() => match event {
                    Ok(event) => self.on_event(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(input) = results.recv() => {
                    if let Input::GenerationFinished { epoch, .. } | Input::GenerationFailed { epoch, .. } = &input
                        && self.generation.as_ref().is_some_and(|(e, _)| e == epoch)
                    {
                        self.generation = None;
                    }
                    self.engine.handle_input(now(), input);
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.engine.handle_timeout(now()),
                _ = refresh_typing.tick(), if self.typing_shown => {
                    self.act(Action::Typing { typing: true }).await;
                }
            }
            self.execute().await;
        }
        if let Some((_, task)) = self.generation.take() {
            task.abort();
        }
        self.save_state().await;
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(message) => self.on_message(&message),
            Event::Composing {
                participant,
                composing,
            } if participant != self.me => {
                let before = !self.people_typing.is_empty();
                if composing {
                    self.people_typing.insert(participant);
                } else {
                    self.people_typing.remove(&participant);
                }
                let after = !self.people_typing.is_empty();
                if before != after {
                    self.engine.handle_input(now(), Input::PersonTyping(after));
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, message: &Message) {
        if message.seq <= self.last_seq {
            return;
        }
        self.last_seq = message.seq;
        if message.from == self.me {
            // The engine learns of its own bubbles from `BubbleDelivered`; anything else this
            // participant sent (a notice) is an agent message it did not produce.
            let own_bubble = turn_id(message).is_some();
            if !own_bubble {
                self.engine.handle_input(
                    now(),
                    Input::AgentMessage {
                        seq: message.seq,
                        text: message.text.clone(),
                    },
                );
            }
            return;
        }
        // A message ends its author's typing, as the protocol says.
        if self.people_typing.remove(&message.from) && self.people_typing.is_empty() {
            self.engine.handle_input(now(), Input::PersonTyping(false));
        }
        self.engine.handle_input(
            now(),
            Input::PersonMessage(hark_core::turn::PersonMessage {
                seq: message.seq,
                text: message.text.clone(),
                attachment: None,
            }),
        );
    }

    /// After the live stream lagged: feed what was missed from the store.
    async fn catch_up(&mut self) {
        match self
            .state
            .store
            .messages_after(&self.conversation, self.last_seq, 10_000)
            .await
        {
            Ok(missed) => {
                for message in missed {
                    self.on_message(&message);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot catch up with missed messages"),
        }
    }

    /// Executes every output the engine has.
    async fn execute(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::StartGeneration {
                    epoch,
                    prompt,
                    speculative,
                    read_up_to,
                } => {
                    tracing::debug!(epoch, read_up_to, speculative, "generation starts");
                    if let Some((_, task)) = self.generation.take() {
                        task.abort();
                    }
                    let request = chat_request(&self.spec, &prompt);
                    let task = tokio::spawn(generate(
                        Arc::clone(&self.spec),
                        request,
                        epoch,
                        self.results.clone(),
                    ));
                    self.generation = Some((epoch, task));
                }
                Output::AbortGeneration { epoch } => {
                    if let Some((running, task)) = self.generation.take() {
                        if running == epoch {
                            // Dropping the stream closes the HTTP connection: the model stops.
                            task.abort();
                        } else {
                            self.generation = Some((running, task));
                        }
                    }
                }
                Output::ShowTyping(typing) => {
                    self.typing_shown = typing;
                    self.act(Action::Typing { typing }).await;
                }
                Output::SendBubble {
                    epoch,
                    read_up_to,
                    text,
                    index,
                    of,
                } => {
                    tracing::debug!(epoch, index, of, "bubble goes out");
                    let client_id = TurnId {
                        epoch,
                        index,
                        read_up_to,
                    }
                    .to_string();
                    if let Some(seq) = self.send(text, client_id).await {
                        if seq > self.last_seq {
                            self.last_seq = seq;
                        }
                        self.engine
                            .handle_input(now(), Input::BubbleDelivered { epoch, index, seq });
                    }
                }
                Output::Committed { epoch, read_up_to } => {
                    tracing::debug!(epoch, read_up_to, "the person is done: committed");
                }
                Output::TurnEnded { epoch, outcome } => {
                    tracing::debug!(epoch, ?outcome, "turn ended");
                    self.save_state().await;
                    if outcome == TurnOutcome::Failed && self.spec.config.error_notice {
                        self.notice(epoch).await;
                    }
                }
                Output::AskEndpoint { .. } => {
                    // No endpoint model is configured for built-in agents yet; the engine falls
                    // back to its rules when the verdict does not come.
                }
            }
        }
    }

    /// Sends a bubble; returns its seq. Retries a store failure a few times: the client id makes
    /// a retry of a bubble that did land a harmless duplicate.
    async fn send(&mut self, text: String, client_id: String) -> Option<u64> {
        for attempt in 1..=SEND_ATTEMPTS {
            let action = Action::Send {
                text: text.clone(),
                client_id: Some(client_id.clone()),
            };
            match self.handle.act(self.me.clone(), action).await {
                Ok(envelope) => {
                    if let ActionResult::Sent { message, .. } = envelope.result {
                        return Some(message.seq);
                    }
                    return None;
                }
                Err(error) => {
                    tracing::warn!(?error, attempt, "sending a bubble failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        None
    }

    async fn act(&self, action: Action) {
        if let Err(error) = self.handle.act(self.me.clone(), action).await {
            tracing::warn!(?error, "an agent action failed");
        }
    }

    /// Tells the person the model could not answer, so the silence is not a mystery.
    async fn notice(&mut self, epoch: u64) {
        let text = "(I couldn't answer just now: my model did not respond. Send another message \
                    and I'll try again.)"
            .to_owned();
        let client_id = format!("notice-{epoch}");
        let _ = self.send(text, client_id).await;
    }

    async fn save_state(&self) {
        let snapshot = self.engine.snapshot();
        let state = AgentState {
            epoch: snapshot.epoch,
            answered_up_to: snapshot.answered_up_to,
            rhythm: rhythm_to_json(&snapshot.rhythm),
        };
        if let Err(error) = self
            .state
            .store
            .save_agent_state(&self.conversation, &self.me, state)
            .await
        {
            tracing::warn!(%error, "cannot save the agent's state");
        }
    }
}

/// Streams one generation and reports its end to the driver.
async fn generate(
    spec: Arc<AgentSpec>,
    request: ChatRequest,
    epoch: u64,
    results: mpsc::UnboundedSender<Input>,
) {
    let outcome = async {
        let mut stream = spec.provider.stream(request).await?;
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::Text(delta) => text.push_str(&delta),
                StreamEvent::ToolCall(call) if call.name == "stay_silent" => {
                    return Ok(GenerationResult::StaySilent);
                }
                StreamEvent::ToolCall(call) if call.name == "wait_for_more" => {
                    let ms = call.arguments["ms"].as_u64().unwrap_or(3_000);
                    return Ok(GenerationResult::WaitForMore { ms });
                }
                StreamEvent::ToolCall(call) => {
                    tracing::debug!(tool = %call.name, "the model called an unknown tool; ignored");
                }
                StreamEvent::Finished { .. } => break,
            }
        }
        let text = text.trim();
        Ok::<_, hark_llm::LlmError>(if text.is_empty() {
            GenerationResult::StaySilent
        } else {
            GenerationResult::Reply(text.to_owned())
        })
    }
    .await;
    let input = match outcome {
        Ok(result) => Input::GenerationFinished { epoch, result },
        Err(error) => {
            tracing::warn!(%error, epoch, "generation failed");
            Input::GenerationFailed {
                epoch,
                reason: shorten(&error.to_string(), 300),
            }
        }
    };
    let _ = results.send(input);
}

/// The engine's prompt as a provider request, with the two tools of mode "reply".
pub fn chat_request(spec: &AgentSpec, prompt: &Prompt) -> ChatRequest {
    let mut system = spec.config.system_prompt.clone();
    if !system.is_empty() {
        system.push_str("\n\n");
    }
    system.push_str(
        "You are texting with a person. Answer like a text message: short, natural, no headings. \
         If no answer is needed, call stay_silent.",
    );
    if prompt.allow_wait {
        system
            .push_str(" If the person is clearly in the middle of a thought, call wait_for_more.");
    }
    // Providers want the conversation to open with the person.
    let messages = prompt
        .turns
        .iter()
        .skip_while(|t| t.role == Role::Assistant)
        .map(|t| match t.role {
            Role::User => ChatMessage::User {
                text: t.text.clone(),
            },
            Role::Assistant => ChatMessage::Assistant {
                text: t.text.clone(),
                tool_calls: Vec::new(),
            },
        })
        .collect();
    let mut tools = vec![ToolSpec {
        name: "stay_silent".into(),
        description: "End your turn without replying (not an error).".into(),
        parameters: json!({"type": "object", "properties": {}}),
    }];
    if prompt.allow_wait {
        tools.push(ToolSpec {
            name: "wait_for_more".into(),
            description: "Hold on for the person to go on, up to ms milliseconds.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 10000}},
                "required": ["ms"]
            }),
        });
    }
    ChatRequest {
        model: spec.config.model.clone(),
        system: Some(system),
        messages,
        tools,
        max_tokens: spec.config.max_tokens,
        temperature: spec.config.temperature,
    }
}

/// The turn id of one of the agent's own bubbles, if the message is one.
fn turn_id(message: &Message) -> Option<TurnId> {
    message.client_id.as_deref()?.parse().ok()
}

fn log_message(message: &Message, me: &ParticipantName) -> LogMessage {
    LogMessage {
        seq: message.seq,
        role: if &message.from == me {
            Role::Assistant
        } else {
            Role::User
        },
        text: message.text.clone(),
        attachment: None,
        at: message.sent_at,
    }
}

fn rhythm_to_json(rhythm: &PersonRhythm) -> String {
    json!({
        "gap_log_mean": rhythm.gap_log_mean,
        "gap_log_var": rhythm.gap_log_var,
        "gap_samples": rhythm.gap_samples,
        "reply_log_mean": rhythm.reply_log_mean,
        "reply_samples": rhythm.reply_samples,
        "pause_rate": rhythm.pause_rate,
        "typing_starts": rhythm.typing_starts,
    })
    .to_string()
}

fn rhythm_from_json(text: &str) -> Option<PersonRhythm> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(PersonRhythm {
        gap_log_mean: v["gap_log_mean"].as_f64()?,
        gap_log_var: v["gap_log_var"].as_f64()?,
        gap_samples: v["gap_samples"].as_u64()? as u32,
        reply_log_mean: v["reply_log_mean"].as_f64()?,
        reply_samples: v["reply_samples"].as_u64()? as u32,
        // Fields added later: a state saved before them starts from the defaults.
        pause_rate: v["pause_rate"]
            .as_f64()
            .unwrap_or(PersonRhythm::default().pause_rate),
        typing_starts: v["typing_starts"].as_u64().unwrap_or(0) as u32,
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhythm_round_trips_through_json() {
        let mut rhythm = PersonRhythm::default();
        rhythm.observe_gap(4_000);
        rhythm.observe_gap(9_000);
        rhythm.observe_reply_latency(20_000);
        assert_eq!(rhythm_from_json(&rhythm_to_json(&rhythm)), Some(rhythm));
    }
}
