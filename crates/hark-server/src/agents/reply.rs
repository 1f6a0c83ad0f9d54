//! Mode "reply": the driver that runs a [`TurnEngine`] on the server's clock.
//!
//! One task per (conversation, agent) owns its engine. It selects over the conversation's live
//! events, the results of the generation and the endpoint verdict in flight, the engine's timer,
//! the typing-lease refresh and shutdown, feeds each to the engine with the clock's `now`, and
//! executes what comes out: start or abort a generation, ask the endpoint model, show typing,
//! send a bubble.
//!
//! Restart: every bubble is sent with its [`TurnId`] as client id. The message and its client id
//! are committed together, so after a crash the log itself says which bursts were answered and
//! which epoch was last used; a resent bubble is recognised as a duplicate instead of being sent
//! twice. Silent endings and the person's rhythm are saved in the store's agent state after every
//! turn.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hark_core::protocol::{Action, ActionResult, Event, Message, ParticipantName};
use hark_core::turn::{
    Attachment, GenerationResult, Input, LogMessage, Output, Prompt, Role, TurnConfig, TurnEngine,
    TurnId, TurnOutcome, TurnSnapshot,
};
use hark_llm::{ChatRequest, StopReason, StreamEvent, ToolSpec};
use hark_store::AgentState;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{AgentSpec, shorten};
use super::endpoint;
use super::prompt::chat_messages;
use crate::app::{AgentContext, AppError};
use crate::clock::Clock;

/// Messages of context handed to the engine on restore, beyond the unanswered ones.
const RESTORE_CONTEXT: usize = 80;
/// Tries to store a bubble before giving it up.
const SEND_ATTEMPTS: u32 = 3;
/// What `wait_for_more` waits when the model leaves out `ms` (the engine still bounds it by
/// `max_wait_for_more_ms`).
const DEFAULT_WAIT_FOR_MORE_MS: u64 = 3_000;
/// The shortest typing-lease refresh period, whatever the lease length.
const MIN_TYPING_REFRESH_MS: u64 = 100;

pub(crate) async fn run(ctx: AgentContext, spec: Arc<AgentSpec>) {
    let subscription = match ctx.subscribe().await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%error, "cannot reach the conversation; the agent does not start");
            return;
        }
    };
    let engine = match restore(&ctx, &spec, subscription.last_seq).await {
        Ok(engine) => engine,
        Err(error) => {
            tracing::error!(%error, "cannot restore the agent's state; it does not start");
            return;
        }
    };
    let (results, results_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        clock: ctx.clock(),
        me: ctx.me().name().clone(),
        ctx,
        spec,
        engine,
        generation: None,
        asking: None,
        results,
        typing_refresh: None,
        people_typing: BTreeSet::new(),
        last_seq: subscription.last_seq,
        committed: None,
    };
    driver.run(subscription.live, results_rx).await;
}

/// The engine's knobs: the agent's own, with the two that have another home filled in.
pub(crate) fn turn_config(ctx: &AgentContext, spec: &AgentSpec) -> TurnConfig {
    let mut turn = spec.config.turn.clone();
    // One lease length for everybody: the protocol's, which the person's client refreshes by.
    turn.typing_timeout_ms = ctx.typing_timeout_ms();
    // Asking is only worth it with a model to ask.
    turn.endpoint_model_timeout_ms = spec.endpoint.as_ref().map(|e| e.timeout_ms);
    turn
}

/// Rebuilds the engine from the log and the saved state.
async fn restore(
    ctx: &AgentContext,
    spec: &AgentSpec,
    last_seq: u64,
) -> Result<TurnEngine, AppError> {
    let me = ctx.me().name();
    let history = ctx.messages_after(0, last_seq as usize).await?;
    let saved = ctx.load_state().await?;
    let mut epoch = saved.as_ref().map_or(0, |s| s.epoch);
    let mut answered_up_to = saved.as_ref().map_or(0, |s| s.answered_up_to);
    for message in history.iter().filter(|m| &m.from == me) {
        if let Some(id) = turn_id(message) {
            epoch = epoch.max(id.epoch);
            answered_up_to = answered_up_to.max(id.read_up_to);
        }
        // A turn given up on with a notice is closed: the notice said so to the person.
        if let Some((notice_epoch, read_up_to)) = notice_id(message) {
            epoch = epoch.max(notice_epoch);
            answered_up_to = answered_up_to.max(read_up_to);
        }
    }
    let rhythm = saved.map(|s| s.rhythm).unwrap_or_default();
    let keep_from = history.len().saturating_sub(RESTORE_CONTEXT);
    let recent = history
        .iter()
        .enumerate()
        .filter(|(i, m)| *i >= keep_from || m.seq > answered_up_to)
        .map(|(_, m)| log_message(m, me))
        .collect();
    Ok(TurnEngine::restore(
        turn_config(ctx, spec),
        TurnSnapshot {
            answered_up_to,
            epoch,
            rhythm,
        },
        recent,
        ctx.clock().now(),
    ))
}

struct Driver {
    ctx: AgentContext,
    clock: Clock,
    me: ParticipantName,
    spec: Arc<AgentSpec>,
    engine: TurnEngine,
    /// The generation in flight: its epoch and the task streaming it.
    generation: Option<(u64, JoinHandle<()>)>,
    /// The endpoint question in flight: its ask id and the task asking it.
    asking: Option<(u64, JoinHandle<()>)>,
    results: mpsc::UnboundedSender<Input>,
    /// While the agent shows typing: when its lease is next refreshed.
    typing_refresh: Option<Instant>,
    /// Other participants whose composing indicator is on.
    people_typing: BTreeSet<ParticipantName>,
    /// The last message seq fed to the engine.
    last_seq: u64,
    /// The committed turn: its epoch and the last person seq it read.
    committed: Option<(u64, u64)>,
}

impl Driver {
    async fn run(
        mut self,
        mut live: broadcast::Receiver<Event>,
        mut results: mpsc::UnboundedReceiver<Input>,
    ) {
        let shutdown = self.ctx.shutdown();
        self.execute().await;
        loop {
            let deadline = self
                .engine
                .poll_timeout()
                .map(|due| self.clock.deadline(due));
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
                    self.engine.handle_input(self.clock.now(), input);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.engine.handle_timeout(self.clock.now());
                }
                _ = sleep_until(self.typing_refresh), if self.typing_refresh.is_some() => {
                    self.show_typing().await;
                }
            }
            self.execute().await;
        }
        if let Some((_, task)) = self.generation.take() {
            task.abort();
        }
        if let Some((_, task)) = self.asking.take() {
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
                    self.engine
                        .handle_input(self.clock.now(), Input::PersonTyping(after));
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
        let now = self.clock.now();
        if message.from == self.me {
            // The engine learns of its own bubbles from `BubbleDelivered`; anything else this
            // participant sent (a notice) is an agent message it did not produce.
            let own_bubble = turn_id(message).is_some();
            if !own_bubble {
                self.engine.handle_input(
                    now,
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
            self.engine.handle_input(now, Input::PersonTyping(false));
        }
        self.engine.handle_input(
            now,
            Input::PersonMessage(hark_core::turn::PersonMessage {
                seq: message.seq,
                text: message.text.clone(),
                attachment: attachment_kind(message),
            }),
        );
    }

    /// After the live stream lagged: feed what was missed from the store.
    async fn catch_up(&mut self) {
        loop {
            match self.ctx.messages_after(self.last_seq, 1_000).await {
                Ok(missed) if missed.is_empty() => break,
                Ok(missed) => {
                    let before = self.last_seq;
                    for message in missed {
                        self.on_message(&message);
                    }
                    if self.last_seq == before {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot catch up with missed messages");
                    break;
                }
            }
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
                Output::AskEndpoint {
                    ask,
                    read_up_to,
                    prompt,
                } => {
                    // A newer question supersedes the one in flight: drop its stream.
                    if let Some((_, task)) = self.asking.take() {
                        task.abort();
                    }
                    if let Some(model) = &self.spec.endpoint {
                        tracing::debug!(ask, read_up_to, "asking the endpoint model");
                        let task = tokio::spawn(endpoint::ask(
                            model.clone(),
                            ask,
                            prompt,
                            self.results.clone(),
                        ));
                        self.asking = Some((ask, task));
                    }
                }
                Output::ShowTyping(true) => self.show_typing().await,
                Output::ShowTyping(false) => {
                    self.typing_refresh = None;
                    self.act(Action::Typing { typing: false }).await;
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
                    // The bubble ends the agent's typing lease (a message ends its author's);
                    // the engine shows typing again before a next bubble.
                    self.typing_refresh = None;
                    if let Some(seq) = self.send(text, client_id).await {
                        if seq > self.last_seq {
                            self.last_seq = seq;
                        }
                        self.engine.handle_input(
                            self.clock.now(),
                            Input::BubbleDelivered { epoch, index, seq },
                        );
                    }
                }
                Output::Committed { epoch, read_up_to } => {
                    tracing::debug!(epoch, read_up_to, "the person is done: committed");
                    self.committed = Some((epoch, read_up_to));
                }
                Output::TurnEnded { epoch, outcome } => {
                    tracing::debug!(epoch, ?outcome, "turn ended");
                    self.save_state().await;
                    let read_up_to = self
                        .committed
                        .take()
                        .filter(|(e, _)| *e == epoch)
                        .map(|(_, read_up_to)| read_up_to);
                    if outcome == TurnOutcome::Failed && self.spec.config.error_notice {
                        self.notice(epoch, read_up_to.unwrap_or(0)).await;
                    }
                }
            }
        }
    }

    /// Sets (or refreshes) the agent's typing lease and schedules the next refresh, well before
    /// the lease lapses.
    async fn show_typing(&mut self) {
        let refresh = (self.ctx.typing_timeout_ms() / 2).max(MIN_TYPING_REFRESH_MS);
        self.typing_refresh = Some(self.clock.instant() + Duration::from_millis(refresh));
        self.act(Action::Typing { typing: true }).await;
    }

    /// Sends a bubble; returns its seq. Retries a store failure a few times: the client id makes
    /// a retry of a bubble that did land a harmless duplicate.
    async fn send(&mut self, text: String, client_id: String) -> Option<u64> {
        for attempt in 1..=SEND_ATTEMPTS {
            let action = Action::Send {
                text: text.clone(),
                client_id: Some(client_id.clone()),
                attachment: None,
            };
            match self.ctx.act(action).await {
                Ok(envelope) => {
                    if let ActionResult::Sent { message, .. } = envelope.result {
                        return Some(message.seq);
                    }
                    return None;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "sending a bubble failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        None
    }

    async fn act(&self, action: Action) {
        if let Err(error) = self.ctx.act(action).await {
            tracing::warn!(%error, "an agent action failed");
        }
    }

    /// Tells the person the model could not answer, so the silence is not a mystery. The
    /// notice closes the turn: its client id `notice-{epoch}-r{read_up_to}`, committed with it,
    /// tells a restart that the burst up to `read_up_to` was given up on, not left unanswered.
    async fn notice(&mut self, epoch: u64, read_up_to: u64) {
        let text = "(I couldn't answer just now: my model did not respond. Send another message \
                    and I'll try again.)"
            .to_owned();
        let client_id = format!("notice-{epoch}-r{read_up_to}");
        let _ = self.send(text, client_id).await;
    }

    async fn save_state(&self) {
        let snapshot = self.engine.snapshot();
        let state = AgentState {
            epoch: snapshot.epoch,
            answered_up_to: snapshot.answered_up_to,
            rhythm: snapshot.rhythm,
        };
        if let Err(error) = self.ctx.save_state(state).await {
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
        let mut cut_off = false;
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::Text(delta) => text.push_str(&delta),
                StreamEvent::ToolCall(call) if call.name == "stay_silent" => {
                    return Ok(GenerationResult::StaySilent);
                }
                StreamEvent::ToolCall(call) if call.name == "wait_for_more" => {
                    let ms = call.arguments["ms"]
                        .as_u64()
                        .unwrap_or(DEFAULT_WAIT_FOR_MORE_MS);
                    return Ok(GenerationResult::WaitForMore { ms });
                }
                StreamEvent::ToolCall(call) => {
                    tracing::debug!(tool = %call.name, "the model called an unknown tool; ignored");
                }
                StreamEvent::Finished { stop, .. } => {
                    cut_off = stop == StopReason::MaxTokens;
                    break;
                }
            }
        }
        // The token limit stops a model mid-sentence: end at the last sentence it finished, or
        // say nothing rather than a fragment.
        let text = if cut_off {
            whole_sentences(&text)
        } else {
            text.trim()
        };
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
pub(crate) fn chat_request(spec: &AgentSpec, prompt: &Prompt) -> ChatRequest {
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
    let mut tools = vec![ToolSpec {
        name: "stay_silent".into(),
        description: "End your turn without replying (not an error).".into(),
        parameters: json!({"type": "object", "properties": {}}),
    }];
    if prompt.allow_wait {
        tools.push(ToolSpec {
            name: "wait_for_more".into(),
            description: "Hold on for the person to go on, up to ms milliseconds.".into(),
            // The engine bounds the wait by this knob; the schema says so to the model.
            parameters: json!({
                "type": "object",
                "properties": {"ms": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": spec.config.turn.max_wait_for_more_ms
                }},
                "required": ["ms"]
            }),
        });
    }
    ChatRequest {
        model: spec.config.model.clone(),
        system: Some(system),
        messages: chat_messages(prompt),
        tools,
        max_tokens: spec.config.max_tokens,
        temperature: spec.config.temperature,
    }
}

/// `text` up to the end of its last complete sentence (`.`, `!`, `?`, `…` or their CJK forms,
/// with any closing quotes or brackets), trimmed; empty when no sentence was finished.
pub(crate) fn whole_sentences(text: &str) -> &str {
    const ENDS: &[char] = &['.', '!', '?', '…', '。', '！', '？'];
    const CLOSERS: &[char] = &['"', '\'', '”', '’', ')', ']', '»', '」', '』'];
    let mut end = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !ENDS.contains(&c) {
            continue;
        }
        let mut stop = i + c.len_utf8();
        while let Some(&(j, next)) = chars.peek() {
            if ENDS.contains(&next) || CLOSERS.contains(&next) {
                stop = j + next.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        // A sentence ends where whitespace (or the text's end) follows; "3.5" or "e.g" does not.
        match chars.peek() {
            None => end = stop,
            Some(&(_, next)) if next.is_whitespace() => end = stop,
            Some(_) if ENDS[4..].contains(&c) => end = stop,
            Some(_) => {}
        }
    }
    text[..end].trim()
}

/// What the engine and the model are told a message carries: a photo for every image (the only
/// attachments the server takes today), a file otherwise.
fn attachment_kind(message: &Message) -> Option<Attachment> {
    let attachment = message.attachment.as_ref()?;
    Some(if attachment.mime.starts_with("image/") {
        Attachment::Photo
    } else {
        Attachment::File
    })
}

/// The turn id of one of the agent's own bubbles, if the message is one.
fn turn_id(message: &Message) -> Option<TurnId> {
    message.client_id.as_deref()?.parse().ok()
}

/// The epoch and `read_up_to` of an error notice (`notice-{epoch}-r{read_up_to}`), if the
/// message is one.
fn notice_id(message: &Message) -> Option<(u64, u64)> {
    let rest = message.client_id.as_deref()?.strip_prefix("notice-")?;
    let (epoch, read_up_to) = rest.split_once("-r")?;
    Some((epoch.parse().ok()?, read_up_to.parse().ok()?))
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
        attachment: attachment_kind(message),
        at: message.sent_at,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::whole_sentences;

    #[test]
    fn a_cut_off_reply_ends_at_its_last_finished_sentence() {
        let cases = [
            (
                "I went out. Then I went to the grocery store and",
                "I went out.",
            ),
            ("Really?! I had no idea", "Really?!"),
            ("She said \"go.\" And then", "She said \"go.\""),
            ("It costs 3.5 euros and", ""),
            ("Whole answer.", "Whole answer."),
            ("No sentence ends here", ""),
            ("", ""),
            ("好的。我们明天", "好的。"),
            ("Wait… what about", "Wait…"),
        ];
        for (text, expected) in cases {
            assert_eq!(whole_sentences(text), expected, "{text:?}");
        }
    }
}
