//! Model providers behind one interface: a request in, a stream of events out.
//!
//! Implementations speak real wire formats: OpenAI-compatible chat completions (OpenAI, vLLM,
//! llama.cpp's server, Ollama, most gateways) and Anthropic Messages, both streaming with tools.
//! Cancelling a generation is dropping its stream: the HTTP response is dropped with it, which
//! closes the connection, so the provider stops generating.
//!
//! **Invariant:** API keys never appear in logs, errors or `Debug` output.
#![warn(missing_docs)]

mod anthropic;
mod openai;
mod sse;
mod transport;

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use futures::{Stream, StreamExt};

/// What to ask the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The model's name at the provider.
    pub model: String,
    /// The system prompt, if any.
    pub system: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Functions the model may call.
    pub tools: Vec<ToolSpec>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature; the provider's default when `None`.
    pub temperature: Option<f32>,
}

/// One message of the conversation as the model sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatMessage {
    /// What the person (or the runtime on their behalf) says.
    User {
        /// The text.
        text: String,
    },
    /// What the model said earlier, with the tools it called.
    Assistant {
        /// The text.
        text: String,
        /// The tool calls it made.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of a tool call the model made in the previous assistant message.
    ToolResult {
        /// The call's id, as the model gave it.
        call_id: String,
        /// What the tool answered.
        content: String,
        /// The tool failed.
        is_error: bool,
    },
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// A JSON Schema object for the arguments.
    pub parameters: serde_json::Value,
}

/// A complete tool call (arguments already assembled from the stream and parsed).
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// The call's id, to answer with a [`ChatMessage::ToolResult`].
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, parsed.
    pub arguments: serde_json::Value,
}

/// What a stream yields, in order: text deltas and tool calls, then exactly one `Finished`.
/// A stream that fails yields one `Err` instead of `Finished`, and ends.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// A piece of text.
    Text(String),
    /// A complete tool call.
    ToolCall(ToolCall),
    /// The answer is complete.
    Finished {
        /// Why it stopped.
        stop: StopReason,
        /// Tokens used, when the provider says.
        usage: Option<Usage>,
    },
}

/// Why an answer stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model finished its turn.
    EndTurn,
    /// The model called tools and waits for their results.
    ToolUse,
    /// `max_tokens` cut it off.
    MaxTokens,
    /// A reason this crate does not know, as the provider named it.
    Other(String),
}

/// Tokens one request used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens read.
    pub input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
}

/// A model's answer as it streams: [`StreamEvent`]s, ending with `Finished` or one error.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

/// A model provider. `stream` sends the request and returns once the provider has accepted it
/// (a `2xx` status), retrying with backoff on 429, 5xx and connection failures until then;
/// nothing is retried after that, and an error ends the stream. Dropping the future cancels the
/// request; dropping the stream closes the connection.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Sends `request`; the answer streams in the returned stream.
    async fn stream(&self, request: ChatRequest) -> Result<EventStream, LlmError>;
}

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// `POST {base_url}/v1/messages`, `x-api-key`, `anthropic-version: 2023-06-01`.
    Anthropic,
}

/// An API key that never prints: its `Debug` is `Secret(***)`, it has no `Display`, and the
/// providers remove it from any error text a server might echo it in.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Secret(key.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach a provider, and how patiently.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Which wire format it speaks.
    pub kind: ProviderKind,
    /// Its root URL (`https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`, …).
    pub base_url: String,
    /// Its API key, if it needs one.
    pub api_key: Option<Secret>,
    /// Connecting to the endpoint (each try).
    pub connect_timeout_ms: u64,
    /// From sending the request (each try) to the first text or tool call of the answer.
    /// Keep-alive pings and empty chunks before it do not count as the answer.
    pub first_token_timeout_ms: u64,
    /// Longest silence between two chunks once the answer has begun.
    pub idle_timeout_ms: u64,
    /// Retries on 429, 5xx (but 501 and 505) and connection failures before the answer starts;
    /// `0` tries once.
    pub max_retries: u32,
    /// First backoff; doubled on every retry (with jitter), honouring `Retry-After`.
    pub retry_base_ms: u64,
    /// Longest wait before one retry, whatever the backoff or `Retry-After` says.
    pub max_retry_delay_ms: u64,
}

impl ProviderConfig {
    /// A provider at `base_url` with the default timeouts and retries.
    pub fn new(kind: ProviderKind, base_url: impl Into<String>, api_key: Option<Secret>) -> Self {
        ProviderConfig {
            kind,
            base_url: base_url.into(),
            api_key,
            connect_timeout_ms: 5_000,
            first_token_timeout_ms: 60_000,
            idle_timeout_ms: 30_000,
            max_retries: 3,
            retry_base_ms: 500,
            max_retry_delay_ms: 30_000,
        }
    }
}

/// Builds the provider for a config. Each provider holds one HTTP client (a connection pool).
pub fn provider(config: ProviderConfig) -> Arc<dyn Provider> {
    match config.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAi::new(config)),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(config)),
    }
}

impl FromStr for ProviderKind {
    type Err = String;

    /// The names `hark.toml` uses: `"openai"` and `"anthropic"`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            other => Err(format!(
                "unknown provider {other:?}: expected \"openai\" or \"anthropic\""
            )),
        }
    }
}

/// A whole answer, for callers that do not need it streamed.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Every text delta, concatenated.
    pub text: String,
    /// Every tool call, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Tokens used, when the provider says.
    pub usage: Option<Usage>,
}

/// Reads a stream to its end. A stream that ends without `Finished` is `Malformed`.
pub async fn collect<S>(mut stream: S) -> Result<Completion, LlmError>
where
    S: Stream<Item = Result<StreamEvent, LlmError>> + Unpin,
{
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Text(delta) => text.push_str(&delta),
            StreamEvent::ToolCall(call) => tool_calls.push(call),
            StreamEvent::Finished { stop, usage } => {
                return Ok(Completion {
                    text,
                    tool_calls,
                    stop,
                    usage,
                });
            }
        }
    }
    Err(LlmError::Malformed(
        "the stream ended without finishing".to_owned(),
    ))
}

/// Why a request failed. Error texts never contain a key.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// 401/403: the key is missing, wrong or not allowed. Not retryable.
    #[error("the provider refused the API key (HTTP {status}): {message}")]
    BadKey {
        /// The HTTP status.
        status: u16,
        /// The provider's sentence.
        message: String,
    },
    /// Still 429 after every retry.
    #[error("the provider kept rate-limiting after {retries} retries")]
    RateLimited {
        /// Retries made.
        retries: u32,
    },
    /// The endpoint could not be reached (DNS, refused, TLS) after every retry.
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    /// No answer (or no next chunk) in time.
    #[error("the provider timed out waiting for {0}")]
    Timeout(&'static str),
    /// 5xx after every retry.
    #[error("the provider failed (HTTP {status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The provider's sentence.
        message: String,
    },
    /// Another 4xx: the request itself was refused (bad model name, bad parameters).
    #[error("the provider refused the request (HTTP {status}): {message}")]
    Request {
        /// The HTTP status.
        status: u16,
        /// The provider's sentence.
        message: String,
    },
    /// The answer did not follow the wire format (including a stream that ends early).
    #[error("the provider's answer is malformed: {0}")]
    Malformed(String),
}

impl LlmError {
    /// Whether trying the same request again later may work: rate limits, timeouts, server
    /// failures and an unreachable endpoint. A bad key, a refused request or a malformed
    /// answer will fail the same way again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Unreachable(_)
                | LlmError::Timeout(_)
                | LlmError::Server { .. }
        )
    }
}
