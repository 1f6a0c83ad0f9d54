//! Mode "actions" (SPEC.md section 6.2): the model drives the protocol's actions.
//!
//! The agent waits with `check` until something new arrives, then runs one model turn:
//!
//! - plain: the model calls `append`, `undo`, `reset`, `preview` and `push` as tools in a loop;
//!   each tool result carries what arrived meanwhile, so it hears while it writes;
//! - streaming: the model's streamed text is appended sentence by sentence; when an append's
//!   result shows a new message, generation stops (the stream is dropped) and the model is
//!   re-prompted with its draft so far and the news, to continue, revise (`undo`/`reset`) or
//!   `push`. When it finishes, the draft is pushed; a held push re-prompts it with what it missed.
//!
//! Loop guards bound the messages per minute and the model turns in all.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hark_core::protocol::{Action, ActionResult, Envelope, ParticipantName};
use hark_llm::{ChatMessage, ChatRequest, StreamEvent, ToolCall, ToolSpec};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::{Activity, AgentSpec, shorten};
use crate::app::{AgentContext, AppError};
use crate::mcp::render;
use crate::tools::{self, ToolCallError};
use crate::wire::{self, WireEnvelope};

/// Lines of conversation the model is shown each turn.
const CONTEXT_MESSAGES: usize = 40;
/// The window of the messages-per-minute guard.
const RATE_WINDOW: Duration = Duration::from_secs(60);

pub(crate) async fn run(
    ctx: AgentContext,
    spec: Arc<AgentSpec>,
    streaming: bool,
    activity: Option<mpsc::UnboundedSender<Activity>>,
) {
    let transcript = match ctx.messages_after(0, usize::MAX).await {
        Ok(history) => history
            .into_iter()
            .map(|m| (m.from.to_string(), m.text))
            .collect(),
        Err(error) => {
            tracing::error!(%error, "cannot read the history; the agent does not start");
            return;
        }
    };
    let shutdown = ctx.shutdown();
    let mut agent = ActionAgent {
        me: ctx.me().name().clone(),
        ctx,
        spec,
        streaming,
        activity,
        transcript,
        sent_at: VecDeque::new(),
    };
    let mut turns = 0;
    loop {
        // Wait for news. `check` returns at once if something unseen is already there.
        let checked = tokio::select! {
            _ = shutdown.cancelled() => return,
            checked = agent.act(Action::Check { timeout_ms: None }) => checked,
        };
        let Ok(envelope) = checked else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if envelope.incoming.is_empty() {
            continue;
        }
        if turns >= agent.spec.config.max_turns {
            agent.report(Activity::Stopped {
                agent: agent.me.to_string(),
                why: format!("reached max_turns ({})", agent.spec.config.max_turns),
            });
            return;
        }
        agent.respect_rate_limit(&shutdown).await;
        turns += 1;
        let turn = async {
            if streaming {
                agent.streaming_turn().await
            } else {
                agent.tool_turn().await
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = turn => {}
        }
    }
}

struct ActionAgent {
    ctx: AgentContext,
    me: ParticipantName,
    spec: Arc<AgentSpec>,
    /// Mode "actions" with streaming: its text goes into the draft sentence by sentence.
    streaming: bool,
    activity: Option<mpsc::UnboundedSender<Activity>>,
    /// `(author, text)` of every message so far, oldest first.
    transcript: Vec<(String, String)>,
    /// When this agent's recent messages were sent, for the per-minute guard.
    sent_at: VecDeque<Instant>,
}

enum Step {
    /// The draft went out as a message.
    Sent,
    /// Keep going.
    Continue,
}

impl ActionAgent {
    async fn act(&mut self, action: Action) -> Result<Envelope, AppError> {
        let result = self.ctx.act(action).await;
        if let Ok(envelope) = &result {
            for message in &envelope.incoming {
                self.transcript
                    .push((message.from.to_string(), message.text.clone()));
            }
        }
        result
    }

    fn report(&self, activity: Activity) {
        if let Some(tx) = &self.activity {
            let _ = tx.send(activity);
        }
    }

    async fn respect_rate_limit(&mut self, shutdown: &tokio_util::sync::CancellationToken) {
        let per_minute = self.spec.config.max_messages_per_minute.max(1) as usize;
        while self
            .sent_at
            .front()
            .is_some_and(|t| self.ctx.clock().instant() >= *t + RATE_WINDOW)
        {
            self.sent_at.pop_front();
        }
        if self.sent_at.len() >= per_minute
            && let Some(oldest) = self.sent_at.front()
        {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep_until(*oldest + RATE_WINDOW) => {}
            }
        }
    }

    fn system_prompt(&self, streaming: bool) -> String {
        let mut system = self.spec.config.system_prompt.clone();
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&format!(
            "You are {} in a group conversation. Others may write while you do. ",
            self.me
        ));
        if streaming {
            system.push_str(
                "Write your next message as plain text: it goes into your private draft sentence \
                 by sentence and is sent when you finish. If someone writes meanwhile you will be \
                 stopped and shown it; then continue writing, call undo (drop the last sentence) \
                 or reset (drop the whole draft) to revise, or call push to send the draft as is. \
                 Keep messages short.",
            );
        } else {
            system.push_str(
                "Build your message with append, check it with preview, and send it with push. \
                 Every tool result shows what arrived since you last looked: read it and revise \
                 (undo, reset) if it changes what you want to say. A push is held when unseen \
                 messages arrived; read them, then push again. Keep messages short.",
            );
        }
        system
    }

    /// The conversation so far, and the draft, as the model's user message.
    async fn context(&mut self, note: Option<String>) -> String {
        let draft = match self.act(Action::Preview).await {
            Ok(Envelope {
                result: ActionResult::Preview { text },
                ..
            }) => text,
            _ => String::new(),
        };
        let start = self.transcript.len().saturating_sub(CONTEXT_MESSAGES);
        let mut out = String::from("The conversation so far:\n");
        for (from, text) in &self.transcript[start..] {
            out.push_str(&format!("{from}: {text}\n"));
        }
        if draft.is_empty() {
            out.push_str("\nYour draft is empty.");
        } else {
            out.push_str(&format!("\nYour draft so far: «{draft}»"));
        }
        if let Some(note) = note {
            out.push_str("\n\n");
            out.push_str(&note);
        }
        out
    }

    fn request(&self, streaming: bool, messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest {
            model: self.spec.config.model.clone(),
            system: Some(self.system_prompt(streaming)),
            messages,
            tools: tools::for_agent(streaming)
                .into_iter()
                .map(|t| ToolSpec {
                    name: t.name.to_owned(),
                    description: t.description,
                    parameters: t.schema,
                })
                .collect(),
            max_tokens: self.spec.config.max_tokens,
            temperature: self.spec.config.temperature,
        }
    }

    /// Plain mode: the model calls the actions as tools until it pushes or stops.
    async fn tool_turn(&mut self) {
        let context = self.context(None).await;
        let mut messages = vec![ChatMessage::User { text: context }];
        for _ in 0..self.spec.config.max_tool_steps {
            let request = self.request(false, messages.clone());
            let completion = match self.complete(request).await {
                Some(completion) => completion,
                None => return,
            };
            messages.push(ChatMessage::Assistant {
                text: completion.0.clone(),
                tool_calls: completion.1.clone(),
            });
            if completion.1.is_empty() {
                return;
            }
            let mut sent = false;
            for call in completion.1 {
                let (content, is_error, step) = self.run_tool(&call).await;
                messages.push(ChatMessage::ToolResult {
                    call_id: call.id.clone(),
                    content,
                    is_error,
                });
                sent |= matches!(step, Step::Sent);
            }
            if sent {
                return;
            }
        }
        self.report(Activity::Stopped {
            agent: self.me.to_string(),
            why: "used every tool step of this turn".into(),
        });
    }

    /// Streaming mode: sentences are appended as they stream; news interrupts.
    async fn streaming_turn(&mut self) {
        let mut note = None;
        for _ in 0..self.spec.config.max_tool_steps {
            let context = self.context(note.take()).await;
            let request = self.request(true, vec![ChatMessage::User { text: context }]);
            let mut stream = match self.spec.provider.stream(request).await {
                Ok(stream) => stream,
                Err(error) => {
                    self.failed(error.to_string());
                    return;
                }
            };
            let mut pending = String::new();
            let mut interrupted_by: Vec<String> = Vec::new();
            let mut wrote = false;
            let mut tools_used: Vec<String> = Vec::new();
            let mut finished = false;
            'stream: while let Some(event) = stream.next().await {
                match event {
                    Ok(StreamEvent::Text(delta)) => {
                        pending.push_str(&delta);
                        while let Some(sentence) = take_sentence(&mut pending) {
                            wrote = true;
                            interrupted_by = self.append(sentence).await;
                            if !interrupted_by.is_empty() {
                                break 'stream;
                            }
                        }
                    }
                    Ok(StreamEvent::ToolCall(call)) => {
                        let (_, _, step) = self.run_tool(&call).await;
                        if matches!(step, Step::Sent) {
                            return;
                        }
                        tools_used.push(call.name.clone());
                    }
                    Ok(StreamEvent::Finished { .. }) => {
                        finished = true;
                        break;
                    }
                    Err(error) => {
                        self.failed(error.to_string());
                        return;
                    }
                }
            }
            // Dropping the stream here closes the connection: the model stops generating.
            drop(stream);
            if interrupted_by.is_empty() && finished && !pending.trim().is_empty() {
                wrote = true;
                interrupted_by = self.append(std::mem::take(&mut pending)).await;
            }
            if !interrupted_by.is_empty() {
                self.report(Activity::Interrupted {
                    agent: self.me.to_string(),
                    by: interrupted_by.clone(),
                });
                note = Some(format!(
                    "While you were writing, new messages arrived (from {}). Read them above. \
                     Then continue your draft, revise it (undo or reset first), or push it as is.",
                    interrupted_by.join(", ")
                ));
                continue;
            }
            if !wrote && !tools_used.is_empty() {
                // The model only revised (undo/reset): let it write what it means now.
                note = Some(format!(
                    "You called {}. Now write your message as plain text, or call push to send \
                     the draft as it is.",
                    tools_used.join(", ")
                ));
                continue;
            }
            match self
                .act(Action::Push {
                    force: false,
                    client_id: None,
                })
                .await
            {
                Ok(Envelope {
                    result: ActionResult::Held { .. },
                    incoming,
                    ..
                }) => {
                    self.report(Activity::Held {
                        agent: self.me.to_string(),
                        unseen: incoming.len(),
                    });
                    note = Some(
                        "Your push was held: new messages arrived (above). Push again to send \
                         your draft as is, or revise it first."
                            .into(),
                    );
                }
                Ok(Envelope {
                    result: ActionResult::Sent { message, .. },
                    ..
                }) => {
                    self.sent(message.seq, &message.text);
                    return;
                }
                // An empty draft (the model wrote nothing) or a store failure: nothing to send.
                _ => return,
            }
        }
    }

    /// Appends a sentence; returns who wrote the messages that arrived meanwhile.
    async fn append(&mut self, text: String) -> Vec<String> {
        match self.act(Action::Append { text: text.clone() }).await {
            Ok(envelope) => {
                self.report(Activity::Appended {
                    agent: self.me.to_string(),
                    text,
                });
                envelope
                    .incoming
                    .iter()
                    .map(|m| m.from.to_string())
                    .collect()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Runs one tool call: the text a model reads, whether it failed, and what it did. Arguments
    /// are decoded by the same table as MCP's, and the result reads as an MCP client's model
    /// would read it.
    async fn run_tool(&mut self, call: &ToolCall) -> (String, bool, Step) {
        let offered = tools::for_agent(self.streaming);
        let decoded = if offered.iter().any(|t| t.name == call.name) {
            tools::decode(&call.name, call.arguments.clone())
        } else {
            Err(ToolCallError::Unknown(call.name.clone()))
        };
        let action = match decoded {
            Ok(tools::ToolCall::Act(action)) => action,
            Ok(_) | Err(ToolCallError::Unknown(_)) => {
                return (
                    format!("There is no tool named {}.", call.name),
                    true,
                    Step::Continue,
                );
            }
            Err(ToolCallError::BadArguments(detail)) => {
                return (
                    format!("bad_request: The arguments are not valid for this tool: {detail}."),
                    true,
                    Step::Continue,
                );
            }
        };
        let envelope = match self.act(action).await {
            Ok(envelope) => envelope,
            Err(error) => return (error.to_string(), true, Step::Continue),
        };
        let step = match &envelope.result {
            ActionResult::Sent { message, .. } => {
                self.sent(message.seq, &message.text);
                Step::Sent
            }
            ActionResult::Held { .. } => {
                self.report(Activity::Held {
                    agent: self.me.to_string(),
                    unseen: envelope.incoming.len(),
                });
                Step::Continue
            }
            ActionResult::Undo { removed } => {
                self.report(Activity::Revised {
                    agent: self.me.to_string(),
                    how: format!("undo «{}»", shorten(removed, 60)),
                });
                Step::Continue
            }
            ActionResult::Reset { discarded_chars } => {
                self.report(Activity::Revised {
                    agent: self.me.to_string(),
                    how: format!("reset ({discarded_chars} characters discarded)"),
                });
                Step::Continue
            }
            ActionResult::Append { .. } => {
                self.report(Activity::Appended {
                    agent: self.me.to_string(),
                    text: call.arguments["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                });
                Step::Continue
            }
            _ => Step::Continue,
        };
        // The same text an MCP client's model reads for the same result.
        let json = wire::to_value(&WireEnvelope::from(&envelope));
        (render::envelope(&json, Some(self.me.as_str())), false, step)
    }

    fn sent(&mut self, seq: u64, text: &str) {
        self.sent_at.push_back(self.ctx.clock().instant());
        self.transcript.push((self.me.to_string(), text.to_owned()));
        self.report(Activity::Sent {
            agent: self.me.to_string(),
            seq,
            text: text.to_owned(),
        });
    }

    fn failed(&self, error: String) {
        tracing::warn!(%error, "the provider failed");
        self.report(Activity::Failed {
            agent: self.me.to_string(),
            error,
        });
    }

    /// Collects a whole (non-streaming use of a) completion: text and tool calls.
    async fn complete(&mut self, request: ChatRequest) -> Option<(String, Vec<ToolCall>)> {
        let mut stream = match self.spec.provider.stream(request).await {
            Ok(stream) => stream,
            Err(error) => {
                self.failed(error.to_string());
                return None;
            }
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(StreamEvent::Text(delta)) => text.push_str(&delta),
                Ok(StreamEvent::ToolCall(call)) => calls.push(call),
                Ok(StreamEvent::Finished { .. }) => break,
                Err(error) => {
                    self.failed(error.to_string());
                    return None;
                }
            }
        }
        Some((text, calls))
    }
}

/// Takes the first complete sentence (ending in `.`, `!`, `?` or a newline, followed by white
/// space) off the front of `pending`.
pub fn take_sentence(pending: &mut String) -> Option<String> {
    let bytes = pending.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ends = matches!(b, b'.' | b'!' | b'?' | b'\n');
        if ends && bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace()) {
            // Keep the white space with the sentence so the draft reads as written.
            let mut end = i + 1;
            while bytes.get(end).is_some_and(|n| n.is_ascii_whitespace()) {
                end += 1;
            }
            if end == bytes.len() {
                // The white space may continue in the next delta; wait for it.
                return None;
            }
            let rest = pending.split_off(end);
            return Some(std::mem::replace(pending, rest));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_taken_whole() {
        let mut pending = "Hello there. How are".to_owned();
        assert_eq!(
            take_sentence(&mut pending).as_deref(),
            Some("Hello there. ")
        );
        assert_eq!(pending, "How are");
        assert_eq!(take_sentence(&mut pending), None);
        pending.push_str(" you? ");
        assert_eq!(
            take_sentence(&mut pending),
            None,
            "trailing space may continue"
        );
        pending.push('I');
        assert_eq!(
            take_sentence(&mut pending).as_deref(),
            Some("How are you? ")
        );
        let mut decimal = "It costs 3.50 dollars. Ok".to_owned();
        assert_eq!(
            take_sentence(&mut decimal).as_deref(),
            Some("It costs 3.50 dollars. ")
        );
    }
}
