//! What the stand-in answers: a `Script` is one scripted response, rendered in whichever wire
//! format the request came in (OpenAI chat completions or Anthropic Messages).

use serde_json::Value;

/// One scripted response. Build it with a constructor, then adjust it with the builder methods:
///
/// ```
/// # use hark_test_llm::Script;
/// let script = Script::text("Hello there.").chunked(5).first_delay_ms(100).chunk_delay_ms(20);
/// let call = Script::text("Let me look.").then_tool_call("search", serde_json::json!({"q": "rust"}));
/// ```
#[derive(Clone, Debug)]
pub struct Script {
    pub(crate) response: Response,
    pub(crate) chunk_chars: usize,
    pub(crate) first_delay_ms: u64,
    pub(crate) chunk_delay_ms: u64,
    pub(crate) close_delay_ms: u64,
    pub(crate) ending: Ending,
    pub(crate) stop: Option<ScriptStop>,
    pub(crate) usage: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
pub(crate) enum Response {
    /// A `200` event stream: text (maybe empty), then tool calls.
    Stream {
        text: String,
        tool_calls: Vec<ScriptedCall>,
    },
    /// An HTTP error status with the provider's JSON error body.
    Status {
        status: u16,
        message: String,
        retry_after: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct ScriptedCall {
    pub(crate) name: String,
    /// The arguments as JSON text, streamed in fragments; may be deliberately invalid.
    pub(crate) arguments: String,
}

/// How a streamed response ends. "Content frames" are the frames that carry text or tool-call
/// pieces; the frames before them (OpenAI's role chunk, Anthropic's `message_start`) are not
/// counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every frame, with the terminal event (`[DONE]` / `message_stop`).
    Complete,
    /// The content frames, then the body ends without the finish and terminal events.
    Truncated,
    /// After this many content frames, nothing more is sent and the body stays open.
    StallAfter(usize),
    /// After this many content frames, the provider's in-stream error event, then the end.
    FailAfter(usize),
    /// After this many content frames, a line that is not an event stream, then the end.
    GarbageAfter(usize),
    /// After this many content frames, a `data:` line whose payload is not JSON, then the end.
    BadJsonAfter(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptStop {
    MaxTokens,
}

impl Script {
    fn stream(text: String, tool_calls: Vec<ScriptedCall>) -> Script {
        Script {
            response: Response::Stream { text, tool_calls },
            chunk_chars: 4,
            first_delay_ms: 0,
            chunk_delay_ms: 0,
            close_delay_ms: 0,
            ending: Ending::Complete,
            stop: None,
            usage: None,
        }
    }

    /// A text answer, streamed in chunks of 4 characters unless `chunked` says otherwise.
    pub fn text(text: impl Into<String>) -> Script {
        Script::stream(text.into(), Vec::new())
    }

    /// A single tool call with these arguments, streamed as fragments of the JSON text.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Script {
        Script::text("").then_tool_call(name, arguments)
    }

    /// A single tool call whose arguments are this raw text, which need not be valid JSON.
    pub fn tool_call_raw(name: impl Into<String>, arguments: impl Into<String>) -> Script {
        Script::stream(
            String::new(),
            vec![ScriptedCall {
                name: name.into(),
                arguments: arguments.into(),
            }],
        )
    }

    /// Adds a tool call after the text and any earlier tool calls of this script.
    pub fn then_tool_call(mut self, name: impl Into<String>, arguments: Value) -> Script {
        if let Response::Stream { tool_calls, .. } = &mut self.response {
            tool_calls.push(ScriptedCall {
                name: name.into(),
                arguments: arguments.to_string(),
            });
        }
        self
    }

    /// An HTTP error status with the provider's JSON error body carrying `message`.
    pub fn status(status: u16, message: impl Into<String>) -> Script {
        Script {
            response: Response::Status {
                status,
                message: message.into(),
                retry_after: None,
            },
            ..Script::text("")
        }
    }

    /// `429` with the provider's rate-limit error.
    pub fn rate_limited() -> Script {
        Script::status(
            429,
            "Rate limit reached for requests. Please try again later.",
        )
    }

    /// `500` with the provider's internal-error body.
    pub fn server_error() -> Script {
        Script::status(
            500,
            "The server had an error while processing your request.",
        )
    }

    /// `529`, Anthropic's "overloaded".
    pub fn overloaded() -> Script {
        Script::status(529, "Overloaded")
    }

    /// `401` with the provider's invalid-key error.
    pub fn unauthorized() -> Script {
        Script::status(401, "Incorrect API key provided.")
    }

    /// `400` with the provider's invalid-request error carrying `message`.
    pub fn bad_request(message: impl Into<String>) -> Script {
        Script::status(400, message)
    }

    /// Response headers, then nothing at all; the body stays open until the client goes away.
    pub fn hang() -> Script {
        Script::text("").stall_after(0)
    }

    /// One good text chunk, then a line that is not part of an event stream.
    pub fn garbage() -> Script {
        Script {
            ending: Ending::GarbageAfter(1),
            ..Script::text("Hello").chunked(5)
        }
    }

    /// One good text chunk, then a `data:` line whose payload is not JSON.
    pub fn bad_json() -> Script {
        Script {
            ending: Ending::BadJsonAfter(1),
            ..Script::text("Hello").chunked(5)
        }
    }

    /// Sets a `Retry-After` header (in seconds) on a status response.
    pub fn retry_after_secs(mut self, seconds: u64) -> Script {
        if let Response::Status { retry_after, .. } = &mut self.response {
            *retry_after = Some(seconds.to_string());
        }
        self
    }

    /// Streams text and tool-call arguments in pieces of this many characters (at least 1).
    pub fn chunked(mut self, chars: usize) -> Script {
        self.chunk_chars = chars.max(1);
        self
    }

    /// Waits this long after the response headers before the first frame.
    pub fn first_delay_ms(mut self, ms: u64) -> Script {
        self.first_delay_ms = ms;
        self
    }

    /// Waits this long before every frame after the first.
    pub fn chunk_delay_ms(mut self, ms: u64) -> Script {
        self.chunk_delay_ms = ms;
        self
    }

    /// Keeps the body open this long after the last frame before ending it, as real servers
    /// sometimes do after the terminal event.
    pub fn close_delay_ms(mut self, ms: u64) -> Script {
        self.close_delay_ms = ms;
        self
    }

    /// Ends the body after the content, without the finish and terminal events.
    pub fn truncated(mut self) -> Script {
        self.ending = Ending::Truncated;
        self
    }

    /// Sends `frames` content frames, then nothing more while keeping the body open.
    pub fn stall_after(mut self, frames: usize) -> Script {
        self.ending = Ending::StallAfter(frames);
        self
    }

    /// Sends `frames` content frames, then the provider's in-stream error event
    /// (Anthropic `overloaded_error`, OpenAI `server_error`).
    pub fn fail_after(mut self, frames: usize) -> Script {
        self.ending = Ending::FailAfter(frames);
        self
    }

    /// Finishes with the "output token limit reached" reason (`length` / `max_tokens`).
    pub fn max_tokens(mut self) -> Script {
        self.stop = Some(ScriptStop::MaxTokens);
        self
    }

    /// Reports this usage instead of the default (input ≈ request bytes / 4, output = frames).
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Script {
        self.usage = Some((input_tokens, output_tokens));
        self
    }
}
