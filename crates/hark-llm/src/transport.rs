//! What both providers share: the HTTP client, starting a request with retries and backoff,
//! mapping failures to `LlmError`, and turning the response body into an `EventStream` with
//! first-token and idle timeouts.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;

use crate::sse::{SseEvent, SseParser, preview};
use crate::{EventStream, LlmError, ProviderConfig, Secret, StreamEvent};

/// The most of an error response body we read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The most of a provider's error message we keep.
const MAX_MESSAGE_CHARS: usize = 1_000;

/// Turns the SSE events of one wire format into stream events.
pub(crate) trait Decoder: Send + 'static {
    /// The wire format's terminal event, named in the error when a stream ends without it.
    const TERMINAL: &'static str;

    /// Handles one event; whatever it yields goes to `out`, in order.
    fn decode(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) -> Result<Flow, LlmError>;
}

/// Whether a decoder expects more events.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    More,
    /// The terminal event arrived (and the decoder yielded `Finished`).
    Done,
}

/// One HTTP client and the config, shared by every request of a provider.
pub(crate) struct Transport {
    /// Building a client only fails if the platform's TLS or resolver setup does; that is
    /// reported on every request rather than panicking in `provider()`.
    client: Result<reqwest::Client, String>,
    config: ProviderConfig,
}

/// A request the server accepted (`2xx`), whose body has not been read yet.
pub(crate) struct Started {
    response: reqwest::Response,
    first_token_deadline: Instant,
}

impl Transport {
    pub(crate) fn new(config: ProviderConfig) -> Transport {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            // A redirect would carry the key header to wherever it points; providers do not
            // redirect API calls, so one is reported instead of followed.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(|e| describe(&e));
        Transport { client, config }
    }

    pub(crate) fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// `base_url` (without trailing slashes) followed by `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// A header value carrying the key, marked sensitive so that no layer logs it.
    pub(crate) fn key_header(&self, prefix: &str) -> Result<Option<HeaderValue>, LlmError> {
        let Some(key) = &self.config.api_key else {
            return Ok(None);
        };
        // Keys read from files or the environment often carry a trailing newline.
        let key = key.expose().trim();
        if key.is_empty() {
            return Ok(None);
        }
        let mut value =
            HeaderValue::from_str(&format!("{prefix}{key}")).map_err(|_| LlmError::BadKey {
                status: 0,
                message: "the API key has characters that cannot go in an HTTP header".to_owned(),
            })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Sends the request, retrying with backoff on 429, 5xx and connection failures, until a
    /// `2xx` arrives; the body is not read yet. Nothing is retried once a `2xx` is in.
    pub(crate) async fn start(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Started, LlmError> {
        self.start_inner(url, headers, body)
            .await
            .map_err(|e| redact(e, self.config.api_key.as_ref()))
    }

    async fn start_inner(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Started, LlmError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| LlmError::Unreachable(format!("cannot set up the HTTP client: {e}")))?;
        let config = &self.config;
        let first_token = Duration::from_millis(config.first_token_timeout_ms);
        let mut retries = 0;
        loop {
            let first_token_deadline = Instant::now() + first_token;
            let request = client
                .post(url)
                .headers(headers.clone())
                .body(body.clone())
                .send();
            let (error, retry_after) = match tokio::time::timeout(first_token, request).await {
                Err(_) => return Err(LlmError::Timeout("the answer to start")),
                Ok(Err(e)) if e.is_builder() => {
                    return Err(LlmError::Unreachable(format!(
                        "cannot send to {}: {}",
                        safe_url(url),
                        describe(&e)
                    )));
                }
                Ok(Err(e)) => {
                    let cause = describe(&e);
                    (
                        LlmError::Unreachable(format!("{}: {cause}", safe_url(url))),
                        None,
                    )
                }
                Ok(Ok(response)) if response.status().is_success() => {
                    return Ok(Started {
                        response,
                        first_token_deadline,
                    });
                }
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let retry_after = retry_after(response.headers());
                    let message = error_body_message(response, config).await;
                    let (error, retryable) = status_error(status, message, retries);
                    if !retryable {
                        return Err(error);
                    }
                    (error, retry_after)
                }
            };
            if retries >= config.max_retries {
                return Err(error);
            }
            let delay = retry_after
                .unwrap_or_else(|| backoff(config.retry_base_ms, retries))
                .min(Duration::from_millis(config.max_retry_delay_ms));
            tracing::warn!(
                url = %safe_url(url),
                error = %redact(error, config.api_key.as_ref()),
                retry = retries + 1,
                delay_ms = delay.as_millis() as u64,
                "retrying the model request"
            );
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    /// The event stream over a started response. Dropping it drops the response, which closes
    /// the connection.
    pub(crate) fn events<D: Decoder>(&self, started: Started, decoder: D) -> EventStream {
        let reader = Reader {
            response: Some(started.response),
            parser: SseParser::default(),
            decoder,
            ready: VecDeque::new(),
            first_token_deadline: started.first_token_deadline,
            idle: Duration::from_millis(self.config.idle_timeout_ms),
            content_seen: false,
            key: self.config.api_key.clone(),
        };
        Box::pin(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        }))
    }
}

struct Reader<D> {
    /// `None` once the stream is over (terminal event or error): the connection is gone.
    response: Option<reqwest::Response>,
    parser: SseParser,
    decoder: D,
    ready: VecDeque<Result<StreamEvent, LlmError>>,
    first_token_deadline: Instant,
    idle: Duration,
    /// A text or tool call arrived; from then on the idle timeout applies between chunks.
    content_seen: bool,
    key: Option<Secret>,
}

impl<D: Decoder> Reader<D> {
    async fn next(&mut self) -> Option<Result<StreamEvent, LlmError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item.map_err(|e| redact(e, self.key.as_ref())));
            }
            let response = self.response.as_mut()?;
            let (wait, what) = if self.content_seen {
                (self.idle, "the next chunk")
            } else {
                let left = self
                    .first_token_deadline
                    .saturating_duration_since(Instant::now());
                (left, "the first token")
            };
            let result = match tokio::time::timeout(wait, response.chunk()).await {
                Err(_) => Err(LlmError::Timeout(what)),
                Ok(Err(e)) => Err(LlmError::Unreachable(format!(
                    "the connection broke mid-answer: {}",
                    describe(&e)
                ))),
                Ok(Ok(Some(bytes))) => self.feed(&bytes, false),
                Ok(Ok(None)) => self.feed(&[], true),
            };
            if let Err(error) = result {
                self.response = None;
                self.ready.push_back(Err(error));
            }
        }
    }

    /// Parses and decodes a chunk (or the end of the body); events decoded before an error
    /// are still delivered, the error after them.
    fn feed(&mut self, bytes: &[u8], end: bool) -> Result<(), LlmError> {
        let mut events = Vec::new();
        let parsed = if end {
            self.parser.finish(&mut events)
        } else {
            self.parser.push(bytes, &mut events)
        };
        let mut out = Vec::new();
        for event in events {
            let flow = self.decoder.decode(event, &mut out);
            self.content_seen |= out
                .iter()
                .any(|e| matches!(e, StreamEvent::Text(_) | StreamEvent::ToolCall(_)));
            self.ready.extend(out.drain(..).map(Ok));
            if flow? == Flow::Done {
                if let Some(response) = self.response.take() {
                    reuse_connection(response);
                }
                return Ok(());
            }
        }
        parsed?;
        if end {
            return Err(LlmError::Malformed(format!(
                "the stream ended without {}",
                D::TERMINAL
            )));
        }
        Ok(())
    }
}

/// Reads what is left of a finished answer's body (normally just the end of the chunked
/// encoding) in the background, so that the connection goes back to the pool instead of being
/// closed: the next request then skips the TCP and TLS handshakes. Bounded in time and bytes.
fn reuse_connection(mut response: reqwest::Response) {
    const DRAIN_MS: u64 = 2_000;
    const DRAIN_BYTES: usize = 64 * 1024;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // Dropping the response closes the connection instead.
    };
    runtime.spawn(async move {
        let drain = async {
            let mut read = 0;
            while read < DRAIN_BYTES {
                match response.chunk().await {
                    Ok(Some(bytes)) => read += bytes.len(),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(DRAIN_MS), drain).await;
    });
}

/// Maps an HTTP error status to the error and whether it is worth retrying.
fn status_error(status: u16, message: String, retries: u32) -> (LlmError, bool) {
    match status {
        401 | 403 => (LlmError::BadKey { status, message }, false),
        429 => (LlmError::RateLimited { retries }, true),
        // "Not implemented" and "HTTP version not supported" will not change on a retry.
        501 | 505 => (LlmError::Server { status, message }, false),
        500..=599 => (LlmError::Server { status, message }, true),
        300..=399 => (
            LlmError::Request {
                status,
                message: format!("the provider answered with a redirect, not followed: {message}"),
            },
            false,
        ),
        _ => (LlmError::Request { status, message }, false),
    }
}

/// The error for a provider's error object (an HTTP error body, or an error event inside a
/// `200` stream, where `status` is what its type corresponds to).
pub(crate) fn error_from_status(status: u16, message: String) -> LlmError {
    status_error(status, message, 0).0
}

/// How long `Retry-After` (seconds) or OpenAI's `retry-after-ms` asks us to wait. The
/// HTTP-date form is not honoured (the backoff applies instead).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    number("retry-after").map(Duration::from_secs_f64)
}

/// `base_ms · 2^retry`, with "equal jitter": half of it fixed, the other half random, so that
/// clients that failed together do not retry together.
fn backoff(base_ms: u64, retry: u32) -> Duration {
    let full = base_ms.saturating_mul(1u64 << retry.min(32));
    let half = full / 2;
    Duration::from_millis(half + random_u64() % (full - half + 1))
}

/// Randomness without a dependency: std's per-process random hasher keys, mixed with the
/// clock. Good enough to spread retries; not for anything secret.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

/// Reads (a bounded part of) an error body and extracts the provider's message.
async fn error_body_message(mut response: reqwest::Response, config: &ProviderConfig) -> String {
    let mut body = Vec::new();
    let idle = Duration::from_millis(config.idle_timeout_ms);
    while body.len() < MAX_ERROR_BODY_BYTES {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    error_message(&body)
}

/// The human-readable message of an error body: OpenAI's and Anthropic's `error.message`,
/// Ollama's `error` string, vLLM's `message`, FastAPI's `detail`, or else the body's start.
pub(crate) fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let found = [
            value.pointer("/error/message"),
            value.get("error"),
            value.get("message"),
            value.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(Value::as_str);
        if let Some(message) = found {
            return truncate(message);
        }
    }
    let text = String::from_utf8_lossy(body);
    match text.trim() {
        "" => "(no message)".to_owned(),
        text => preview(text),
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A reqwest error with its chain of causes ("error sending request: … Connection refused"),
/// without the URL (which `safe_url` prints instead).
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = cause {
        let part = current.to_string();
        // Skip the URL reqwest appends, and causes that repeat their parent's text.
        let part = match error.url() {
            Some(url) => part.replace(&format!(" for url ({url})"), ""),
            None => part,
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        cause = current.source();
    }
    text
}

/// The URL without user info or query, which could hold credentials.
fn safe_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(an invalid URL)".to_owned(),
    }
}

/// Removes every occurrence of the key from an error's text: a provider may echo it back.
pub(crate) fn redact(error: LlmError, key: Option<&Secret>) -> LlmError {
    let Some(key) = key.map(|k| k.expose().trim()).filter(|k| !k.is_empty()) else {
        return error;
    };
    let clean = |text: String| text.replace(key, "***");
    match error {
        LlmError::BadKey { status, message } => LlmError::BadKey {
            status,
            message: clean(message),
        },
        LlmError::Server { status, message } => LlmError::Server {
            status,
            message: clean(message),
        },
        LlmError::Request { status, message } => LlmError::Request {
            status,
            message: clean(message),
        },
        LlmError::Unreachable(message) => LlmError::Unreachable(clean(message)),
        LlmError::Malformed(message) => LlmError::Malformed(clean(message)),
        other @ (LlmError::RateLimited { .. } | LlmError::Timeout(_)) => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_within_bounds() {
        for retry in 0..5 {
            let full = 100u64 << retry;
            for _ in 0..50 {
                let ms = backoff(100, retry).as_millis() as u64;
                assert!(ms >= full / 2 && ms <= full, "retry {retry}: {ms} ms");
            }
        }
        assert!(backoff(u64::MAX, 40) >= Duration::from_millis(u64::MAX / 2));
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut date = HeaderMap::new();
        date.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn error_messages_come_from_every_known_shape() {
        let cases: [(&str, &str); 6] = [
            (
                r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#,
                "bad model",
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#,
                "max_tokens: too big",
            ),
            (r#"{"error":"model 'x' not found"}"#, "model 'x' not found"),
            (
                r#"{"object":"error","message":"vllm says no","code":400}"#,
                "vllm says no",
            ),
            ("<html>nope</html>", "<html>nope</html>"),
            ("", "(no message)"),
        ];
        for (body, message) in cases {
            assert_eq!(error_message(body.as_bytes()), message);
        }
    }

    #[test]
    fn statuses_map_to_errors() {
        let kind = |status| status_error(status, "m".to_owned(), 2);
        assert!(matches!(
            kind(401),
            (LlmError::BadKey { status: 401, .. }, false)
        ));
        assert!(matches!(
            kind(403),
            (LlmError::BadKey { status: 403, .. }, false)
        ));
        assert!(matches!(
            kind(429),
            (LlmError::RateLimited { retries: 2 }, true)
        ));
        for status in [500, 502, 503, 504, 529] {
            assert!(matches!(kind(status), (LlmError::Server { .. }, true)));
        }
        assert!(matches!(kind(501), (LlmError::Server { .. }, false)));
        assert!(matches!(
            kind(400),
            (LlmError::Request { status: 400, .. }, false)
        ));
        assert!(matches!(
            kind(404),
            (LlmError::Request { status: 404, .. }, false)
        ));
        assert!(matches!(
            kind(307),
            (LlmError::Request { status: 307, .. }, false)
        ));
    }

    #[test]
    fn redaction_removes_the_key_everywhere() {
        let key = Secret::new("sk-very-secret\n");
        let error = LlmError::BadKey {
            status: 401,
            message: "Incorrect API key provided: sk-very-secret.".to_owned(),
        };
        let error = redact(error, Some(&key));
        assert!(!error.to_string().contains("sk-very-secret"));
        assert!(!format!("{error:?}").contains("sk-very-secret"));
    }

    #[test]
    fn safe_urls_lose_credentials() {
        assert_eq!(
            safe_url("http://user:pw@127.0.0.1:9/v1/chat/completions?key=abc"),
            "http://127.0.0.1:9/v1/chat/completions"
        );
    }
}
