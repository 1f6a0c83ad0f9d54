//! OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp's server, Ollama, gateways):
//! `POST {base_url}/chat/completions` with `stream: true`, answered by `data: {chunk}` lines and
//! `data: [DONE]`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sse::{SseEvent, preview};
use crate::transport::{Decoder, Flow, Transport, error_from_status};
use crate::{
    ChatMessage, ChatRequest, EventStream, LlmError, Provider, ProviderConfig, StopReason,
    StreamEvent, ToolCall, Usage,
};

pub(crate) struct OpenAi {
    transport: Transport,
}

impl OpenAi {
    pub(crate) fn new(config: ProviderConfig) -> OpenAi {
        OpenAi {
            transport: Transport::new(config),
        }
    }
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = self.transport.key_header("Bearer ")? {
            headers.insert(AUTHORIZATION, value);
        }
        let body = serde_json::to_vec(&request_body(&request))
            .map_err(|e| LlmError::Malformed(format!("cannot encode the request: {e}")))?;
        let url = self.transport.url("/chat/completions");
        let started = self.transport.start(&url, headers, body).await?;
        Ok(self.transport.events(started, ChunkDecoder::default()))
    }
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("base_url", &self.transport.config().base_url)
            .finish_non_exhaustive()
    }
}

// ---- The request ----------------------------------------------------------------------------

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
    stream_options: StreamOptions,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Message<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `null` when the message is only tool calls, as the API itself returns it.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: Cow<'a, str>,
    },
}

#[derive(Serialize)]
struct CallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    /// The API takes the arguments as a JSON *string*.
    arguments: String,
}

#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionSpec<'a>,
}

#[derive(Serialize)]
struct FunctionSpec<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

fn request_body(request: &ChatRequest) -> Body<'_> {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(Message::System { content: system });
    }
    for message in &request.messages {
        messages.push(match message {
            ChatMessage::User { text } => Message::User { content: text },
            ChatMessage::Assistant { text, tool_calls } => Message::Assistant {
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text.as_str()),
                tool_calls: tool_calls
                    .iter()
                    .map(|call| CallOut {
                        id: &call.id,
                        kind: "function",
                        function: FunctionOut {
                            name: &call.name,
                            arguments: call.arguments.to_string(),
                        },
                    })
                    .collect(),
            },
            // The format has no error flag for tool results; the text carries it.
            ChatMessage::ToolResult {
                call_id,
                content,
                is_error,
            } => Message::Tool {
                tool_call_id: call_id,
                content: if *is_error {
                    Cow::Owned(format!("Error: {content}"))
                } else {
                    Cow::Borrowed(content)
                },
            },
        });
    }
    Body {
        model: &request.model,
        messages,
        tools: request
            .tools
            .iter()
            .map(|tool| Tool {
                kind: "function",
                function: FunctionSpec {
                    name: &tool.name,
                    description: &tool.description,
                    parameters: &tool.parameters,
                },
            })
            .collect(),
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
    }
}

// ---- The answer -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// Some servers report a failure inside a `200` stream this way.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<CallDelta>>,
}

#[derive(Deserialize)]
struct CallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    /// A fragment of the JSON text (a few servers send the whole object instead).
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// A tool call being assembled from fragments.
#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Default)]
struct ChunkDecoder {
    /// By the `index` the fragments carry.
    calls: BTreeMap<usize, PartialCall>,
    finish_reason: Option<String>,
    emitted_tool_call: bool,
    usage: Option<Usage>,
}

impl Decoder for ChunkDecoder {
    const TERMINAL: &'static str = "data: [DONE]";

    fn decode(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, LlmError> {
        if event.data.trim() == "[DONE]" {
            self.flush_calls(out)?;
            let Some(reason) = self.finish_reason.take() else {
                return Err(LlmError::Malformed(
                    "the stream ended without a finish_reason".to_owned(),
                ));
            };
            let stop = match reason.as_str() {
                "stop" if self.emitted_tool_call => StopReason::ToolUse,
                "stop" => StopReason::EndTurn,
                "tool_calls" | "function_call" => StopReason::ToolUse,
                "length" => StopReason::MaxTokens,
                _ => StopReason::Other(reason),
            };
            out.push(StreamEvent::Finished {
                stop,
                usage: self.usage,
            });
            return Ok(Flow::Done);
        }
        let chunk: Chunk = serde_json::from_str(&event.data).map_err(|e| {
            LlmError::Malformed(format!(
                "a chunk that is not JSON ({e}): {}",
                preview(&event.data)
            ))
        })?;
        if let Some(error) = chunk.error {
            return Err(stream_error(&error));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            });
        }
        // Only the first choice is ours: hark never asks for `n > 1`.
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index != 0 {
                continue;
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(text));
                }
                for fragment in delta.tool_calls.unwrap_or_default() {
                    self.add_fragment(fragment);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
                self.flush_calls(out)?;
            }
        }
        Ok(Flow::More)
    }
}

impl ChunkDecoder {
    fn add_fragment(&mut self, fragment: CallDelta) {
        // Servers that leave out `index` send a call whole, or its id first: a new id opens a
        // new call, and an id-less fragment continues the last one.
        let index = fragment.index.unwrap_or_else(|| {
            let last = self.calls.keys().next_back().copied();
            match (&fragment.id, last) {
                (_, None) => 0,
                (Some(_), Some(last)) => last + 1,
                (None, Some(last)) => last,
            }
        });
        let call = self.calls.entry(index).or_default();
        if call.id.is_none() {
            call.id = fragment.id.filter(|id| !id.is_empty());
        }
        let Some(function) = fragment.function else {
            return;
        };
        // Some servers repeat the name in every fragment; the first one counts.
        if let Some(name) = function.name.filter(|_| call.name.is_empty()) {
            call.name = name;
        }
        match function.arguments {
            Some(Value::String(piece)) => call.arguments.push_str(&piece),
            Some(Value::Null) | None => {}
            Some(whole) => call.arguments = whole.to_string(),
        }
    }

    /// Emits the assembled calls in index order. Arguments cut off by the token limit are
    /// dropped with their call (the `MaxTokens` stop says why); otherwise bad JSON is malformed.
    fn flush_calls(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), LlmError> {
        let cut_off = self.finish_reason.as_deref() == Some("length");
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(LlmError::Malformed(format!(
                    "tool call {index} has no name"
                )));
            }
            let text = call.arguments.trim();
            let arguments = if text.is_empty() {
                Ok(Value::Object(Default::default()))
            } else {
                serde_json::from_str(text)
            };
            let arguments = match arguments {
                Ok(arguments) => arguments,
                Err(_) if cut_off => continue,
                Err(e) => {
                    return Err(LlmError::Malformed(format!(
                        "the arguments of tool call {:?} are not JSON: {e}",
                        call.name
                    )));
                }
            };
            self.emitted_tool_call = true;
            out.push(StreamEvent::ToolCall(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{index}")),
                name: call.name,
                arguments,
            }));
        }
        Ok(())
    }
}

/// An `{"error": …}` chunk inside a `200` stream.
fn stream_error(error: &Value) -> LlmError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or(error.as_str())
        .unwrap_or("(no message)")
        .to_owned();
    let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or("");
    let status = match error.get("code").and_then(Value::as_u64) {
        Some(code @ 400..=599) => code as u16,
        _ if text("code").contains("rate_limit") || text("type").contains("rate_limit") => 429,
        _ if text("type").contains("invalid_request") => 400,
        _ => 500,
    };
    error_from_status(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolSpec;
    use serde_json::json;

    fn decode_all(lines: &[&str]) -> Result<Vec<StreamEvent>, LlmError> {
        let mut decoder = ChunkDecoder::default();
        let mut out = Vec::new();
        for line in lines {
            let flow = decoder.decode(
                SseEvent {
                    event: None,
                    data: (*line).to_owned(),
                },
                &mut out,
            )?;
            if flow == Flow::Done {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn the_body_has_the_real_api_shape() {
        let request = ChatRequest {
            model: "gpt-test".to_owned(),
            system: Some("Be brief.".to_owned()),
            messages: vec![
                ChatMessage::User {
                    text: "Weather?".to_owned(),
                },
                ChatMessage::Assistant {
                    text: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".to_owned(),
                        name: "weather".to_owned(),
                        arguments: json!({"city": "Oslo"}),
                    }],
                },
                ChatMessage::ToolResult {
                    call_id: "call_1".to_owned(),
                    content: "no such city".to_owned(),
                    is_error: true,
                },
            ],
            tools: vec![ToolSpec {
                name: "weather".to_owned(),
                description: "Looks up the weather.".to_owned(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 100,
            temperature: Some(0.5),
        };
        let body = serde_json::to_value(request_body(&request)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-test",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "Error: no such city"},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "weather", "description": "Looks up the weather.",
                    "parameters": {"type": "object"}}}],
                "max_tokens": 100,
                "temperature": 0.5,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn fragments_without_index_still_assemble() {
        let events = decode_all(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":{"y":2}}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::ToolCall(ToolCall {
                    id: "a".to_owned(),
                    name: "f".to_owned(),
                    arguments: json!({"x": 1}),
                }),
                StreamEvent::ToolCall(ToolCall {
                    id: "b".to_owned(),
                    name: "g".to_owned(),
                    arguments: json!({"y": 2}),
                }),
                // A server that says "stop" after tool calls still asked for them.
                StreamEvent::Finished {
                    stop: StopReason::ToolUse,
                    usage: None,
                },
            ]
        );
    }

    #[test]
    fn a_call_cut_off_by_the_token_limit_is_dropped() {
        let events = decode_all(&[
            r#"{"choices":[{"index":0,"delta":{"content":"Let me"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\": \"ab"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Text("Let me".to_owned()),
                StreamEvent::Finished {
                    stop: StopReason::MaxTokens,
                    usage: None,
                },
            ]
        );
    }

    #[test]
    fn error_chunks_become_errors() {
        let error = decode_all(&[r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#])
            .unwrap_err();
        assert!(matches!(error, LlmError::RateLimited { .. }), "{error:?}");
        let error =
            decode_all(&[r#"{"error":{"message":"boom","type":"server_error"}}"#]).unwrap_err();
        assert!(
            matches!(error, LlmError::Server { status: 500, .. }),
            "{error:?}"
        );
        let error = decode_all(&["[DONE]"]).unwrap_err();
        assert!(matches!(error, LlmError::Malformed(_)), "{error:?}");
    }
}
