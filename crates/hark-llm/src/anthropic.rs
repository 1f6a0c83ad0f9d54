//! Anthropic Messages: `POST {base_url}/v1/messages` with `stream: true`, answered by named
//! events from `message_start` to `message_stop`.

use std::collections::BTreeMap;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sse::{SseEvent, preview};
use crate::transport::{Decoder, Flow, Transport, error_from_status};
use crate::{
    ChatMessage, ChatRequest, EventStream, LlmError, Provider, ProviderConfig, StopReason,
    StreamEvent, ToolCall, Usage,
};

/// The API version this module speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

pub(crate) struct Anthropic {
    transport: Transport,
}

impl Anthropic {
    pub(crate) fn new(config: ProviderConfig) -> Anthropic {
        Anthropic {
            transport: Transport::new(config),
        }
    }
}

#[async_trait::async_trait]
impl Provider for Anthropic {
    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        if let Some(value) = self.transport.key_header("")? {
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        let body = serde_json::to_vec(&request_body(&request))
            .map_err(|e| LlmError::Malformed(format!("cannot encode the request: {e}")))?;
        let url = self.transport.url("/v1/messages");
        let started = self.transport.start(&url, headers, body).await?;
        Ok(self.transport.events(started, EventDecoder::default()))
    }
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("base_url", &self.transport.config().base_url)
            .finish_non_exhaustive()
    }
}

// ---- The request ----------------------------------------------------------------------------

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: Role,
    content: Vec<Block<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        is_error: bool,
    },
}

#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

fn request_body(request: &ChatRequest) -> Body<'_> {
    // The API refuses empty text blocks, and wants user and assistant turns to alternate:
    // empty texts are left out and consecutive messages of one role merged into one turn.
    let mut messages: Vec<Message<'_>> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message {
            ChatMessage::User { text } => (Role::User, text_block(text)),
            ChatMessage::Assistant { text, tool_calls } => {
                let mut blocks = text_block(text);
                blocks.extend(tool_calls.iter().map(|call| Block::ToolUse {
                    id: &call.id,
                    name: &call.name,
                    input: &call.arguments,
                }));
                (Role::Assistant, blocks)
            }
            ChatMessage::ToolResult {
                call_id,
                content,
                is_error,
            } => (
                Role::User,
                vec![Block::ToolResult {
                    tool_use_id: call_id,
                    content,
                    is_error: *is_error,
                }],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    // In a user turn, tool results must come before any text.
    for message in &mut messages {
        message
            .content
            .sort_by_key(|block| !matches!(block, Block::ToolResult { .. }));
    }
    Body {
        model: &request.model,
        system: request.system.as_deref().filter(|s| !s.is_empty()),
        messages,
        tools: request
            .tools
            .iter()
            .map(|tool| Tool {
                name: &tool.name,
                description: &tool.description,
                input_schema: &tool.parameters,
            })
            .collect(),
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        stream: true,
    }
}

fn text_block(text: &str) -> Vec<Block<'_>> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![Block::Text { text }]
    }
}

// ---- The answer -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockStart,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorBody,
    },
    /// The API may add event types; they are ignored.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct MessageStart {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockStart {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking and server-tool blocks: not part of hark's events.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

enum OpenBlock {
    Text,
    Tool {
        id: String,
        name: String,
        input: Value,
        json: String,
    },
    Other,
}

#[derive(Default)]
struct EventDecoder {
    /// By content block index.
    blocks: BTreeMap<usize, OpenBlock>,
    usage: Option<Usage>,
    stop_reason: Option<String>,
    /// Tool calls whose input was not JSON: fine if the token limit cut them off, malformed
    /// otherwise; which one is known only at `message_delta`.
    unparsable: Vec<String>,
}

impl Decoder for EventDecoder {
    const TERMINAL: &'static str = "message_stop";

    fn decode(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, LlmError> {
        let parsed: Event = serde_json::from_str(&event.data).map_err(|e| {
            LlmError::Malformed(format!(
                "an event that is not JSON ({e}): {}",
                preview(&event.data)
            ))
        })?;
        match parsed {
            Event::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.add_usage(&usage);
                }
            }
            Event::ContentBlockStart {
                index,
                content_block,
            } => {
                let block = match content_block {
                    BlockStart::Text { text } => {
                        if !text.is_empty() {
                            out.push(StreamEvent::Text(text));
                        }
                        OpenBlock::Text
                    }
                    BlockStart::ToolUse { id, name, input } => OpenBlock::Tool {
                        id,
                        name,
                        input,
                        json: String::new(),
                    },
                    BlockStart::Other => OpenBlock::Other,
                };
                self.blocks.insert(index, block);
            }
            Event::ContentBlockDelta { index, delta } => {
                let Some(block) = self.blocks.get_mut(&index) else {
                    return Err(LlmError::Malformed(format!(
                        "a delta for content block {index}, which was never started"
                    )));
                };
                match (block, delta) {
                    (OpenBlock::Text, BlockDelta::TextDelta { text }) => {
                        if !text.is_empty() {
                            out.push(StreamEvent::Text(text));
                        }
                    }
                    (OpenBlock::Tool { json, .. }, BlockDelta::InputJsonDelta { partial_json }) => {
                        json.push_str(&partial_json);
                    }
                    (OpenBlock::Other, _) | (_, BlockDelta::Other) => {}
                    _ => {
                        return Err(LlmError::Malformed(format!(
                            "a delta that does not fit content block {index}"
                        )));
                    }
                }
            }
            Event::ContentBlockStop { index } => {
                if let Some(OpenBlock::Tool {
                    id,
                    name,
                    input,
                    json,
                }) = self.blocks.remove(&index)
                {
                    let arguments = if json.trim().is_empty() {
                        // No deltas: the start's `input` is the whole input.
                        match input {
                            Value::Null => Ok(Value::Object(Default::default())),
                            input => Ok(input),
                        }
                    } else {
                        serde_json::from_str(&json)
                    };
                    match arguments {
                        Ok(arguments) => out.push(StreamEvent::ToolCall(ToolCall {
                            id,
                            name,
                            arguments,
                        })),
                        Err(e) => self.unparsable.push(format!("{name:?}: {e}")),
                    }
                }
            }
            Event::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop_reason = Some(reason);
                }
                if let Some(usage) = usage {
                    self.add_usage(&usage);
                }
            }
            Event::MessageStop => return self.finish(out),
            Event::Ping | Event::Unknown => {}
            Event::Error { error } => return Err(stream_error(error)),
        }
        Ok(Flow::More)
    }
}

impl EventDecoder {
    /// `message_start` carries the input tokens; `message_delta` the (cumulative) output.
    fn add_usage(&mut self, wire: &WireUsage) {
        let usage = self.usage.get_or_insert_with(Usage::default);
        if let Some(input) = wire.input_tokens {
            usage.input_tokens = input;
        }
        if let Some(output) = wire.output_tokens {
            usage.output_tokens = output;
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<Flow, LlmError> {
        let Some(reason) = self.stop_reason.take() else {
            return Err(LlmError::Malformed(
                "the stream ended without a stop_reason".to_owned(),
            ));
        };
        if reason != "max_tokens"
            && let Some(problem) = self.unparsable.first()
        {
            return Err(LlmError::Malformed(format!(
                "the input of tool call {problem} is not JSON"
            )));
        }
        let stop = match reason.as_str() {
            "end_turn" => StopReason::EndTurn,
            "tool_use" => StopReason::ToolUse,
            "max_tokens" => StopReason::MaxTokens,
            _ => StopReason::Other(reason),
        };
        out.push(StreamEvent::Finished {
            stop,
            usage: self.usage,
        });
        Ok(Flow::Done)
    }
}

/// An `error` event inside a `200` stream, by its type.
fn stream_error(error: ErrorBody) -> LlmError {
    let status = match error.kind.as_str() {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    };
    let message = if error.message.is_empty() {
        error.kind
    } else {
        error.message
    };
    error_from_status(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolSpec;
    use serde_json::json;

    #[test]
    fn the_body_merges_turns_and_has_the_real_api_shape() {
        let call = ToolCall {
            id: "toolu_1".to_owned(),
            name: "weather".to_owned(),
            arguments: json!({"city": "Oslo"}),
        };
        let request = ChatRequest {
            model: "claude-test".to_owned(),
            system: Some("Be brief.".to_owned()),
            messages: vec![
                ChatMessage::User {
                    text: "Hi.".to_owned(),
                },
                ChatMessage::User {
                    text: "Weather?".to_owned(),
                },
                ChatMessage::Assistant {
                    text: "Looking.".to_owned(),
                    tool_calls: vec![call],
                },
                ChatMessage::ToolResult {
                    call_id: "toolu_1".to_owned(),
                    content: "4 °C".to_owned(),
                    is_error: false,
                },
                ChatMessage::User {
                    text: "Thanks".to_owned(),
                },
                ChatMessage::Assistant {
                    text: String::new(),
                    tool_calls: Vec::new(),
                },
            ],
            tools: vec![ToolSpec {
                name: "weather".to_owned(),
                description: "Looks up the weather.".to_owned(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 100,
            temperature: None,
        };
        let body = serde_json::to_value(request_body(&request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-test",
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Hi."},
                        {"type": "text", "text": "Weather?"},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Looking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather",
                         "input": {"city": "Oslo"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4 °C",
                         "is_error": false},
                        {"type": "text", "text": "Thanks"},
                    ]},
                ],
                "tools": [{"name": "weather", "description": "Looks up the weather.",
                           "input_schema": {"type": "object"}}],
                "max_tokens": 100,
                "stream": true,
            })
        );
    }

    fn decode_all(events: &[Value]) -> Result<Vec<StreamEvent>, LlmError> {
        let mut decoder = EventDecoder::default();
        let mut out = Vec::new();
        for event in events {
            let sse = SseEvent {
                event: event["type"].as_str().map(str::to_owned),
                data: event.to_string(),
            };
            if decoder.decode(sse, &mut out)? == Flow::Done {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn a_tool_call_cut_off_by_max_tokens_is_dropped_and_otherwise_malformed() {
        let events = |stop: &str| {
            vec![
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\": \"b"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}}),
                json!({"type": "message_stop"}),
            ]
        };
        assert_eq!(
            decode_all(&events("max_tokens")).unwrap(),
            vec![StreamEvent::Finished {
                stop: StopReason::MaxTokens,
                usage: Some(Usage {
                    input_tokens: 3,
                    output_tokens: 9
                }),
            }]
        );
        assert!(matches!(
            decode_all(&events("tool_use")),
            Err(LlmError::Malformed(_))
        ));
    }

    #[test]
    fn thinking_blocks_and_unknown_events_are_skipped() {
        let events = decode_all(&[
            json!({"type": "message_start", "message": {}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "something_new"}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
            json!({"type": "message_stop"}),
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Text("Hi".to_owned()),
                StreamEvent::Finished {
                    stop: StopReason::EndTurn,
                    usage: None
                },
            ]
        );
    }

    #[test]
    fn error_events_map_by_type() {
        let error = |kind: &str| {
            decode_all(&[json!({"type": "error", "error": {"type": kind, "message": "m"}})])
                .unwrap_err()
        };
        assert!(matches!(
            error("overloaded_error"),
            LlmError::Server { status: 529, .. }
        ));
        assert!(matches!(
            error("api_error"),
            LlmError::Server { status: 500, .. }
        ));
        assert!(matches!(
            error("rate_limit_error"),
            LlmError::RateLimited { .. }
        ));
        assert!(matches!(
            error("invalid_request_error"),
            LlmError::Request { status: 400, .. }
        ));
        assert!(matches!(
            error("authentication_error"),
            LlmError::BadKey { .. }
        ));
    }
}
