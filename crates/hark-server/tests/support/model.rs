//! An in-process model: implements `hark_llm::Provider` directly, answers from a queue of
//! scripted replies on tokio's clock, and writes what it is asked and when its stream is dropped
//! to the trace.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use hark_llm::{
    ChatMessage, ChatRequest, EventStream, LlmError, Provider, StopReason, StreamEvent, ToolCall,
};
use serde_json::Value;
use tokio::time::Sleep;

use super::Trace;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `text` (and then `calls`), finished `after_ms` after the request.
    Say {
        text: String,
        calls: Vec<(String, Value)>,
        after_ms: u64,
    },
    /// The provider fails `after_ms` after the request (after its own retries).
    Fail { after_ms: u64 },
    /// Never answers.
    Hang,
}

impl Reply {
    pub fn say(text: &str, after_ms: u64) -> Reply {
        Reply::Say {
            text: text.to_owned(),
            calls: Vec::new(),
            after_ms,
        }
    }

    pub fn call(name: &str, arguments: Value, after_ms: u64) -> Reply {
        Reply::Say {
            text: String::new(),
            calls: vec![(name.to_owned(), arguments)],
            after_ms,
        }
    }
}

/// A scripted model.
pub struct Model {
    name: &'static str,
    trace: Trace,
    queue: Mutex<VecDeque<Reply>>,
    /// Summarise each request by its last message only (tool loops are long).
    last_only: bool,
}

impl Model {
    pub fn new(name: &'static str, trace: Trace, last_only: bool) -> Arc<Model> {
        Arc::new(Model {
            name,
            trace,
            queue: Mutex::new(VecDeque::new()),
            last_only,
        })
    }

    pub fn push(&self, reply: Reply) {
        self.queue.lock().unwrap().push_back(reply);
    }

    fn summary(&self, request: &ChatRequest) -> String {
        let one = |m: &ChatMessage| match m {
            ChatMessage::User { text } => format!("U {text:?}"),
            ChatMessage::Assistant { text, tool_calls } => {
                let mut out = format!("A {text:?}");
                for call in tool_calls {
                    out.push_str(&format!(" {}{}", call.name, call.arguments));
                }
                out
            }
            ChatMessage::ToolResult {
                content, is_error, ..
            } => format!("{} {content:?}", if *is_error { "E" } else { "T" }),
        };
        let shown: Vec<String> = if self.last_only {
            request.messages.last().map(one).into_iter().collect()
        } else {
            request.messages.iter().map(one).collect()
        };
        shown.join(", ")
    }
}

#[async_trait]
impl Provider for Model {
    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let reply = self.queue.lock().unwrap().pop_front();
        let summary = self.summary(&request);
        let Some(reply) = reply else {
            self.trace.log(format!(
                "{} ← [{summary}] (nothing scripted: hangs)",
                self.name
            ));
            return Ok(Box::pin(Scripted::new(self.name, self.trace.clone(), None)));
        };
        self.trace.log(format!("{} ← [{summary}]", self.name));
        match reply {
            Reply::Fail { after_ms } => {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                self.trace.log(format!("{} fails", self.name));
                Err(LlmError::Server {
                    status: 503,
                    message: "overloaded (test)".into(),
                })
            }
            Reply::Hang => Ok(Box::pin(Scripted::new(self.name, self.trace.clone(), None))),
            Reply::Say {
                text,
                calls,
                after_ms,
            } => {
                let mut events = VecDeque::new();
                if !text.is_empty() {
                    events.push_back(StreamEvent::Text(text));
                }
                for (i, (name, arguments)) in calls.into_iter().enumerate() {
                    events.push_back(StreamEvent::ToolCall(ToolCall {
                        id: format!("call-{i}"),
                        name,
                        arguments,
                    }));
                }
                events.push_back(StreamEvent::Finished {
                    stop: StopReason::EndTurn,
                    usage: None,
                });
                Ok(Box::pin(Scripted::new(
                    self.name,
                    self.trace.clone(),
                    Some((after_ms, events)),
                )))
            }
        }
    }
}

/// A stream that yields its events once its delay has passed (or never), and logs being dropped
/// before it finished: what closing the HTTP connection to a real model is.
struct Scripted {
    name: &'static str,
    trace: Trace,
    delay: Pin<Box<Sleep>>,
    events: Option<VecDeque<StreamEvent>>,
    finished: bool,
}

impl Scripted {
    fn new(
        name: &'static str,
        trace: Trace,
        plan: Option<(u64, VecDeque<StreamEvent>)>,
    ) -> Scripted {
        let (after_ms, events) = match plan {
            Some((after_ms, events)) => (after_ms, Some(events)),
            None => (0, None),
        };
        Scripted {
            name,
            trace,
            delay: Box::pin(tokio::time::sleep(Duration::from_millis(after_ms))),
            events,
            finished: false,
        }
    }
}

impl Stream for Scripted {
    type Item = Result<StreamEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(_) = &self.events else {
            return Poll::Pending;
        };
        if self.delay.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = self.events.as_mut().and_then(VecDeque::pop_front);
        // Once only the end is left, the answer is complete: a client may stop reading here.
        let rest = self.events.as_ref().map_or(0, |e| {
            e.iter()
                .filter(|e| !matches!(e, StreamEvent::Finished { .. }))
                .count()
        });
        if rest == 0 {
            self.finished = true;
        }
        Poll::Ready(next.map(Ok))
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if !self.finished {
            self.trace
                .log(format!("{} stream dropped before it finished", self.name));
        }
    }
}
