//! The two wire formats: how a `Script` becomes OpenAI chat-completion chunks or Anthropic
//! Messages events, what the providers' error bodies look like, and which requests the real
//! APIs would refuse outright.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::script::{Ending, Response, Script, ScriptStop};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    OpenAi,
    Anthropic,
}

/// What the request tells the renderer.
pub(crate) struct Context {
    pub(crate) request_index: usize,
    pub(crate) model: String,
    /// OpenAI only sends the usage chunk when `stream_options.include_usage` asks for it.
    pub(crate) include_usage: bool,
    pub(crate) default_input_tokens: u64,
}

/// One SSE frame as written on the wire (with its terminating blank line).
pub(crate) struct Frame {
    pub(crate) text: String,
    /// Carries a piece of text or of a tool call; `Ending` counts these.
    pub(crate) content: bool,
}

/// What the writer does after the last frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    End,
    Hang,
}

/// Renders a streamed script: the frames to write, in order, and what to do after them.
pub(crate) fn render(wire: Wire, script: &Script, ctx: &Context) -> (Vec<Frame>, After) {
    let Response::Stream { text, tool_calls } = &script.response else {
        return (Vec::new(), After::End);
    };
    let pieces = |s: &str| split_chars(s, script.chunk_chars);
    let text_pieces = pieces(text);
    let calls: Vec<(String, Vec<String>)> = tool_calls
        .iter()
        .map(|call| (call.name.clone(), pieces(&call.arguments)))
        .collect();
    let content_frames =
        text_pieces.len() + calls.iter().map(|(_, args)| 1 + args.len()).sum::<usize>();
    let (input, output) = script
        .usage
        .unwrap_or((ctx.default_input_tokens, content_frames.max(1) as u64));
    let max_tokens = script.stop == Some(ScriptStop::MaxTokens);
    let frames = match wire {
        Wire::OpenAi => openai_frames(ctx, &text_pieces, &calls, max_tokens, (input, output)),
        Wire::Anthropic => anthropic_frames(ctx, &text_pieces, &calls, max_tokens, (input, output)),
    };
    apply_ending(wire, frames, script.ending)
}

fn apply_ending(wire: Wire, frames: Vec<Frame>, ending: Ending) -> (Vec<Frame>, After) {
    // The frames up to and including the k-th content frame.
    let prefix = |frames: Vec<Frame>, k: usize| -> Vec<Frame> {
        let mut seen = 0;
        let mut out = Vec::new();
        for frame in frames {
            if seen >= k {
                break;
            }
            seen += usize::from(frame.content);
            out.push(frame);
        }
        out
    };
    let plain = |text: &str| Frame {
        text: text.to_owned(),
        content: false,
    };
    match ending {
        Ending::Complete => (frames, After::End),
        Ending::Truncated => {
            let total = frames.iter().filter(|f| f.content).count();
            (prefix(frames, total), After::End)
        }
        Ending::StallAfter(k) => (prefix(frames, k), After::Hang),
        Ending::FailAfter(k) => {
            let mut out = prefix(frames, k);
            out.push(plain(&stream_error(wire)));
            (out, After::End)
        }
        Ending::GarbageAfter(k) => {
            let mut out = prefix(frames, k);
            out.push(plain("<html><body>502 Bad Gateway</body></html>\n\n"));
            (out, After::End)
        }
        Ending::BadJsonAfter(k) => {
            let mut out = prefix(frames, k);
            out.push(plain(
                "data: {\"choices\": [{\"delta\": {\"content\": \"Hel\n\n",
            ));
            (out, After::End)
        }
    }
}

fn split_chars(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

fn openai_frames(
    ctx: &Context,
    text: &[String],
    calls: &[(String, Vec<String>)],
    max_tokens: bool,
    (input, output): (u64, u64),
) -> Vec<Frame> {
    let base = |choices: Value| {
        let mut body = json!({
            "id": format!("chatcmpl-standin{}", ctx.request_index),
            "object": "chat.completion.chunk",
            "created": 1_700_000_000 + ctx.request_index,
            "model": ctx.model,
            "system_fingerprint": "fp_standin",
            "choices": choices,
        });
        // With include_usage, every chunk carries `"usage": null` until the usage chunk.
        if ctx.include_usage {
            body["usage"] = Value::Null;
        }
        body
    };
    let frame = |body: Value, content: bool| Frame {
        text: format!("data: {body}\n\n"),
        content,
    };
    let delta = |delta: Value, finish: Value, content: bool| {
        frame(
            base(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])),
            content,
        )
    };

    let mut frames = vec![delta(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
        false,
    )];
    for piece in text {
        frames.push(delta(json!({"content": piece}), Value::Null, true));
    }
    for (i, (name, args)) in calls.iter().enumerate() {
        frames.push(delta(
            json!({"tool_calls": [{
                "index": i,
                "id": format!("call_standin_{i}"),
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]}),
            Value::Null,
            true,
        ));
        for piece in args {
            frames.push(delta(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
                true,
            ));
        }
    }
    let finish = if max_tokens {
        "length"
    } else if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    frames.push(delta(json!({}), json!(finish), false));
    if ctx.include_usage {
        let mut body = base(json!([]));
        body["usage"] = json!({"prompt_tokens": input, "completion_tokens": output,
                               "total_tokens": input + output});
        frames.push(frame(body, false));
    }
    frames.push(Frame {
        text: "data: [DONE]\n\n".to_owned(),
        content: false,
    });
    frames
}

fn anthropic_frames(
    ctx: &Context,
    text: &[String],
    calls: &[(String, Vec<String>)],
    max_tokens: bool,
    (input, output): (u64, u64),
) -> Vec<Frame> {
    let event = |name: &str, data: Value, content: bool| Frame {
        text: format!("event: {name}\ndata: {data}\n\n"),
        content,
    };
    let ping = || event("ping", json!({"type": "ping"}), false);

    let mut frames = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_standin{}", ctx.request_index),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": ctx.model,
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1},
        }}),
        false,
    )];
    let mut index = 0;
    if text.is_empty() {
        frames.push(ping());
    } else {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}),
            false,
        ));
        frames.push(ping());
        for piece in text {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "text_delta", "text": piece}}),
                true,
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
            false,
        ));
        index += 1;
    }
    for (i, (name, args)) in calls.iter().enumerate() {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": format!("toolu_standin_{i}"), "name": name, "input": {},
            }}),
            true,
        ));
        // The real API opens every tool_use block with an empty partial_json.
        frames.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": ""}}),
            false,
        ));
        for piece in args {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
                true,
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
            false,
        ));
        index += 1;
    }
    let stop = if max_tokens {
        "max_tokens"
    } else if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    frames.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": output}}),
        false,
    ));
    frames.push(event(
        "message_stop",
        json!({"type": "message_stop"}),
        false,
    ));
    frames
}

/// The in-stream error a provider sends when it fails after the `200` was already written.
fn stream_error(wire: Wire) -> String {
    match wire {
        Wire::OpenAi => format!(
            "data: {}\n\n",
            json!({"error": {"message": "The server had an error while processing your request.",
                             "type": "server_error", "param": null, "code": null}})
        ),
        Wire::Anthropic => format!(
            "event: error\ndata: {}\n\n",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        ),
    }
}

/// The provider's JSON error body for an HTTP error status.
pub(crate) fn error_body(wire: Wire, status: u16, message: &str) -> Value {
    match wire {
        Wire::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                403 => (
                    "invalid_request_error",
                    json!("unsupported_country_region_territory"),
                ),
                404 => ("invalid_request_error", json!("model_not_found")),
                429 => ("requests", json!("rate_limit_exceeded")),
                400..=499 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Wire::Anthropic => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                400..=499 => "invalid_request_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message},
                   "request_id": "req_standin"})
        }
    }
}

/// The checks the real API makes before it starts answering; `Err` is the `400` message.
pub(crate) fn validate(
    wire: Wire,
    headers: &BTreeMap<String, String>,
    body: &Value,
) -> Result<(), String> {
    let Some(object) = body.as_object() else {
        return Err("the request body is not a JSON object".to_owned());
    };
    if !object.get("model").is_some_and(Value::is_string) {
        return Err("model: field required".to_owned());
    }
    if object.get("stream") != Some(&Value::Bool(true)) {
        return Err("the stand-in only answers streaming requests (stream: true)".to_owned());
    }
    let Some(messages) = object.get("messages").and_then(Value::as_array) else {
        return Err("messages: field required".to_owned());
    };
    let roles: &[&str] = match wire {
        Wire::OpenAi => &["system", "user", "assistant", "tool"],
        Wire::Anthropic => &["user", "assistant"],
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        if !roles.contains(&role) {
            return Err(format!("messages.{i}.role: unexpected role \"{role}\""));
        }
    }
    if wire == Wire::Anthropic {
        if !headers.contains_key("anthropic-version") {
            return Err("anthropic-version: header is required".to_owned());
        }
        if !object.get("max_tokens").is_some_and(Value::is_u64) {
            return Err("max_tokens: field required".to_owned());
        }
        if messages.is_empty() {
            return Err("messages: at least one message is required".to_owned());
        }
    }
    Ok(())
}
