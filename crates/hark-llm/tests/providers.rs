//! Both providers against the stand-in server, over real HTTP on loopback. Every test runs once
//! per wire format, with a fresh stand-in each time.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use hark_llm::{
    ChatMessage, ChatRequest, EventStream, LlmError, ProviderConfig, ProviderKind, Secret,
    StopReason, StreamEvent, ToolCall, ToolSpec, Usage, collect, provider,
};
use hark_test_llm::{RecordedRequest, Script, StandIn};
use serde_json::{Value, json};

const KINDS: [ProviderKind; 2] = [ProviderKind::OpenAi, ProviderKind::Anthropic];
const KEY: &str = "sk-test-4f9a1c0d-very-secret";
/// Bounds every wait in these tests; never an expectation about speed.
const GENEROUS: Duration = Duration::from_secs(30);

/// A config for the stand-in with quick retries; timeouts stay generous unless a test is
/// about them.
fn config(stand_in: &StandIn, kind: ProviderKind) -> ProviderConfig {
    let base_url = match kind {
        ProviderKind::OpenAi => stand_in.openai_base_url(),
        ProviderKind::Anthropic => stand_in.anthropic_base_url(),
    };
    let mut config = ProviderConfig::new(kind, base_url, Some(Secret::new(KEY)));
    config.connect_timeout_ms = 5_000;
    config.first_token_timeout_ms = 20_000;
    config.idle_timeout_ms = 20_000;
    config.max_retries = 2;
    config.retry_base_ms = 1;
    config.max_retry_delay_ms = 50;
    config
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        model: "stand-in-model".to_owned(),
        system: None,
        messages: vec![ChatMessage::User {
            text: text.to_owned(),
        }],
        tools: Vec::new(),
        max_tokens: 256,
        temperature: None,
    }
}

/// Runs a future with the generous bound.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(GENEROUS, future)
        .await
        .expect("the test went past its generous bound")
}

/// Everything a stream yields, up to its end.
async fn drain(stream: EventStream) -> Vec<Result<StreamEvent, LlmError>> {
    within(stream.collect()).await
}

/// Starts a request on a fresh stand-in with `script` queued.
async fn run(kind: ProviderKind, script: Script) -> (StandIn, Result<EventStream, LlmError>) {
    run_with(kind, vec![script], |_| {}).await
}

async fn run_with(
    kind: ProviderKind,
    scripts: Vec<Script>,
    adjust: impl FnOnce(&mut ProviderConfig),
) -> (StandIn, Result<EventStream, LlmError>) {
    let stand_in = StandIn::start().await;
    for script in scripts {
        stand_in.push(script);
    }
    let mut config = config(&stand_in, kind);
    adjust(&mut config);
    let result = within(provider(config).stream(ask("Hello?"))).await;
    (stand_in, result)
}

fn texts(events: &[Result<StreamEvent, LlmError>]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Text(text)) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn text_streams_in_order_and_finishes_once() {
    for kind in KINDS {
        let script = Script::text("Hello there, friend.")
            .chunked(5)
            .chunk_delay_ms(5)
            .usage(12, 4);
        let (_stand_in, stream) = run(kind, script).await;
        let events = drain(stream.expect("the stream starts")).await;
        assert_eq!(
            texts(&events),
            ["Hello", " ther", "e, fr", "iend."],
            "{kind:?}"
        );
        let finished: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, Ok(StreamEvent::Finished { .. })))
            .collect();
        assert_eq!(finished.len(), 1, "{kind:?}: {events:?}");
        assert_eq!(
            events.last().and_then(|e| e.as_ref().ok()),
            Some(&StreamEvent::Finished {
                stop: StopReason::EndTurn,
                usage: Some(Usage {
                    input_tokens: 12,
                    output_tokens: 4
                }),
            }),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn tool_calls_split_in_fragments_assemble() {
    for kind in KINDS {
        let arguments = json!({"city": "Oslo", "days": [1, 2, 3], "note": "fjord «view»"});
        let script = Script::text("Let me check.")
            .then_tool_call("weather", arguments.clone())
            .then_tool_call("clock", json!({}))
            .chunked(3);
        let (_stand_in, stream) = run(kind, script).await;
        let completion = within(collect(stream.expect("the stream starts")))
            .await
            .expect("a complete answer");
        assert_eq!(completion.text, "Let me check.", "{kind:?}");
        let calls: Vec<(&str, &Value)> = completion
            .tool_calls
            .iter()
            .map(|call| (call.name.as_str(), &call.arguments))
            .collect();
        assert_eq!(
            calls,
            [("weather", &arguments), ("clock", &json!({}))],
            "{kind:?}"
        );
        assert!(completion.tool_calls.iter().all(|c| !c.id.is_empty()));
        assert_ne!(completion.tool_calls[0].id, completion.tool_calls[1].id);
        assert_eq!(completion.stop, StopReason::ToolUse, "{kind:?}");
    }
}

#[tokio::test]
async fn tool_call_events_come_after_the_text_and_before_finished() {
    for kind in KINDS {
        let script = Script::text("Hm.").then_tool_call("look", json!({"q": "x"}));
        let (_stand_in, stream) = run(kind, script).await;
        let events = drain(stream.expect("the stream starts")).await;
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                Ok(StreamEvent::Text(_)) => "text",
                Ok(StreamEvent::ToolCall(_)) => "tool",
                Ok(StreamEvent::Finished { .. }) => "finished",
                Err(_) => "error",
            })
            .collect();
        assert_eq!(kinds, ["text", "tool", "finished"], "{kind:?}");
    }
}

/// A request with everything in it: system prompt, tool call, tool result, tools.
fn full_request() -> ChatRequest {
    ChatRequest {
        model: "stand-in-model".to_owned(),
        system: Some("You are terse.".to_owned()),
        messages: vec![
            ChatMessage::User {
                text: "Weather in Oslo?".to_owned(),
            },
            ChatMessage::Assistant {
                text: "Checking.".to_owned(),
                tool_calls: vec![ToolCall {
                    id: "call_7".to_owned(),
                    name: "weather".to_owned(),
                    arguments: json!({"city": "Oslo"}),
                }],
            },
            ChatMessage::ToolResult {
                call_id: "call_7".to_owned(),
                content: "4 °C, rain".to_owned(),
                is_error: false,
            },
            ChatMessage::User {
                text: "And tomorrow?".to_owned(),
            },
        ],
        tools: vec![ToolSpec {
            name: "weather".to_owned(),
            description: "Current weather for a city.".to_owned(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}),
        }],
        max_tokens: 300,
        temperature: Some(0.25),
    }
}

async fn recorded_request(kind: ProviderKind) -> RecordedRequest {
    let stand_in = StandIn::start().await;
    stand_in.push(Script::text("Fine."));
    let provider = provider(config(&stand_in, kind));
    let stream = within(provider.stream(full_request()))
        .await
        .expect("the stream starts");
    within(collect(stream)).await.expect("a complete answer");
    let mut requests = stand_in.requests();
    assert_eq!(requests.len(), 1);
    requests.remove(0)
}

#[tokio::test]
async fn openai_request_has_the_real_shape() {
    let request = recorded_request(ProviderKind::OpenAi).await;
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "model": "stand-in-model",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_7", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_7", "content": "4 °C, rain"},
                {"role": "user", "content": "And tomorrow?"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "weather",
                "description": "Current weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]},
            }}],
            "max_tokens": 300,
            "temperature": 0.25,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[tokio::test]
async fn anthropic_request_has_the_real_shape() {
    let request = recorded_request(ProviderKind::Anthropic).await;
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "model": "stand-in-model",
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_7", "name": "weather",
                     "input": {"city": "Oslo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_7", "content": "4 °C, rain",
                     "is_error": false},
                    {"type": "text", "text": "And tomorrow?"},
                ]},
            ],
            "tools": [{
                "name": "weather",
                "description": "Current weather for a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]},
            }],
            "max_tokens": 300,
            "temperature": 0.25,
            "stream": true,
        })
    );
}

#[tokio::test]
async fn no_key_sends_no_key_header() {
    for kind in KINDS {
        let stand_in = StandIn::start().await;
        stand_in.push(Script::text("Hi."));
        let mut config = config(&stand_in, kind);
        config.api_key = None;
        let stream = within(provider(config).stream(ask("Hi")))
            .await
            .expect("the stream starts");
        within(collect(stream)).await.expect("a complete answer");
        let request = &stand_in.requests()[0];
        assert_eq!(request.header("authorization"), None, "{kind:?}");
        assert_eq!(request.header("x-api-key"), None, "{kind:?}");
    }
}

#[tokio::test]
async fn rate_limits_are_retried_until_the_answer_comes() {
    for kind in KINDS {
        let scripts = vec![
            Script::rate_limited(),
            Script::rate_limited(),
            Script::text("Finally."),
        ];
        let (stand_in, stream) = run_with(kind, scripts, |_| {}).await;
        let completion = within(collect(stream.expect("the stream starts after retries")))
            .await
            .expect("a complete answer");
        assert_eq!(completion.text, "Finally.", "{kind:?}");
        assert_eq!(stand_in.requests().len(), 3, "{kind:?}");
    }
}

#[tokio::test]
async fn retry_after_is_honoured_over_the_backoff() {
    for kind in KINDS {
        // The backoff alone would wait five minutes or more; only `Retry-After: 1` lets this
        // finish within the generous bound.
        let scripts = vec![
            Script::rate_limited().retry_after_secs(1),
            Script::text("Now."),
        ];
        let (stand_in, stream) = run_with(kind, scripts, |config| {
            config.retry_base_ms = 600_000;
            config.max_retry_delay_ms = 600_000;
        })
        .await;
        let completion = within(collect(stream.expect("the stream starts after a retry")))
            .await
            .expect("a complete answer");
        assert_eq!(completion.text, "Now.", "{kind:?}");
        assert_eq!(stand_in.requests().len(), 2, "{kind:?}");
    }
}

#[tokio::test]
async fn server_errors_end_as_server_after_max_retries() {
    for kind in KINDS {
        for status in [500, 502, 503, 504, 529] {
            let scripts = (0..3)
                .map(|_| Script::status(status, "upstream trouble"))
                .collect();
            let (stand_in, result) = run_with(kind, scripts, |_| {}).await;
            match result {
                Err(LlmError::Server {
                    status: got,
                    message,
                }) => {
                    assert_eq!(got, status, "{kind:?}");
                    assert_eq!(message, "upstream trouble", "{kind:?}");
                }
                other => panic!("{kind:?} {status}: expected Server, got {:?}", other.err()),
            }
            // The first try and `max_retries` (2) retries.
            assert_eq!(stand_in.requests().len(), 3, "{kind:?} {status}");
        }
    }
}

#[tokio::test]
async fn rate_limits_end_as_rate_limited_after_max_retries() {
    for kind in KINDS {
        let scripts = (0..3).map(|_| Script::rate_limited()).collect();
        let (stand_in, result) = run_with(kind, scripts, |_| {}).await;
        assert!(
            matches!(result, Err(LlmError::RateLimited { retries: 2 })),
            "{kind:?}: {:?}",
            result.err()
        );
        assert_eq!(stand_in.requests().len(), 3, "{kind:?}");
    }
}

#[tokio::test]
async fn a_bad_key_fails_at_once_and_never_prints() {
    for kind in KINDS {
        // Some providers echo the key they were given; even then it must not come through.
        let script = Script::status(401, format!("Incorrect API key provided: {KEY}."));
        let (stand_in, result) = run(kind, script).await;
        let Err(error) = result else {
            panic!("{kind:?}: a 401 must fail");
        };
        assert!(
            matches!(error, LlmError::BadKey { status: 401, .. }),
            "{kind:?}: {error:?}"
        );
        assert!(!error.to_string().contains(KEY), "{kind:?}: {error}");
        assert!(!format!("{error:?}").contains(KEY), "{kind:?}: {error:?}");
        assert!(error.to_string().contains("Incorrect API key provided"));
        assert_eq!(stand_in.requests().len(), 1, "{kind:?}: no retry on 401");
        assert!(!format!("{:?}", config(&stand_in, kind)).contains(KEY));
    }
}

#[tokio::test]
async fn forbidden_is_a_bad_key_too() {
    for kind in KINDS {
        let (stand_in, result) = run(kind, Script::status(403, "not allowed")).await;
        assert!(
            matches!(result, Err(LlmError::BadKey { status: 403, .. })),
            "{kind:?}"
        );
        assert_eq!(stand_in.requests().len(), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn a_bad_request_carries_the_provider_message() {
    for kind in KINDS {
        let script = Script::bad_request("max_tokens: 999999 > 8192, the maximum for this model");
        let (stand_in, result) = run(kind, script).await;
        match result {
            Err(LlmError::Request { status, message }) => {
                assert_eq!(status, 400, "{kind:?}");
                assert_eq!(
                    message, "max_tokens: 999999 > 8192, the maximum for this model",
                    "{kind:?}"
                );
            }
            other => panic!("{kind:?}: expected Request, got {:?}", other.err()),
        }
        assert_eq!(stand_in.requests().len(), 1, "{kind:?}: no retry on 400");
    }
}

/// The events before the error, and the error (which must be the last item).
fn split_error(
    kind: ProviderKind,
    mut events: Vec<Result<StreamEvent, LlmError>>,
) -> (Vec<Result<StreamEvent, LlmError>>, LlmError) {
    match events.pop() {
        Some(Err(error)) => {
            assert!(
                events.iter().all(Result::is_ok),
                "{kind:?}: one error, at the end: {events:?}"
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Ok(StreamEvent::Finished { .. }))),
                "{kind:?}: no Finished before an error"
            );
            (events, error)
        }
        other => panic!("{kind:?}: expected the stream to end with an error, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_lines_are_malformed() {
    for kind in KINDS {
        let (_stand_in, stream) = run(kind, Script::garbage()).await;
        let (before, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert_eq!(texts(&before), ["Hello"], "{kind:?}");
        assert!(
            matches!(error, LlmError::Malformed(_)),
            "{kind:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn data_that_is_not_json_is_malformed() {
    for kind in KINDS {
        let (_stand_in, stream) = run(kind, Script::bad_json()).await;
        let (_, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert!(
            matches!(error, LlmError::Malformed(_)),
            "{kind:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn tool_arguments_that_are_not_json_are_malformed() {
    for kind in KINDS {
        let script = Script::tool_call_raw("weather", "{\"city\": Oslo}");
        let (_stand_in, stream) = run(kind, script).await;
        let (_, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert!(
            matches!(error, LlmError::Malformed(_)),
            "{kind:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_truncated_stream_is_malformed() {
    for kind in KINDS {
        let script = Script::text("Hello there").chunked(4).truncated();
        let (_stand_in, stream) = run(kind, script).await;
        let (before, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert_eq!(texts(&before).concat(), "Hello there", "{kind:?}");
        assert!(
            matches!(error, LlmError::Malformed(_)),
            "{kind:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_it_without_a_retry() {
    for kind in KINDS {
        let script = Script::text("Hello there").chunked(4).fail_after(2);
        let (stand_in, stream) = run(kind, script).await;
        let (before, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert_eq!(texts(&before), ["Hell", "o th"], "{kind:?}");
        assert!(
            matches!(error, LlmError::Server { .. }),
            "{kind:?}: {error:?}"
        );
        assert_eq!(stand_in.requests().len(), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn the_token_limit_is_reported() {
    for kind in KINDS {
        let (_stand_in, stream) = run(kind, Script::text("Once upon a").max_tokens()).await;
        let completion = within(collect(stream.expect("the stream starts")))
            .await
            .expect("a complete answer");
        assert_eq!(completion.stop, StopReason::MaxTokens, "{kind:?}");
        assert_eq!(completion.text, "Once upon a");
    }
}

#[tokio::test]
async fn a_hang_before_the_first_token_times_out() {
    for kind in KINDS {
        let (stand_in, stream) = run_with(kind, vec![Script::hang()], |config| {
            config.first_token_timeout_ms = 300;
        })
        .await;
        // The headers arrived, so the stream starts; its first item is the timeout.
        let (before, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert!(before.is_empty(), "{kind:?}");
        assert!(
            matches!(error, LlmError::Timeout("the first token")),
            "{kind:?}: {error:?}"
        );
        assert_eq!(
            stand_in.requests().len(),
            1,
            "{kind:?}: a timeout is not retried"
        );
    }
}

#[tokio::test]
async fn a_stall_mid_answer_times_out() {
    for kind in KINDS {
        let script = Script::text("Hello there").chunked(4).stall_after(2);
        let (_stand_in, stream) = run_with(kind, vec![script], |config| {
            config.idle_timeout_ms = 300;
        })
        .await;
        let (before, error) = split_error(kind, drain(stream.expect("the stream starts")).await);
        assert_eq!(texts(&before), ["Hell", "o th"], "{kind:?}");
        assert!(
            matches!(error, LlmError::Timeout("the next chunk")),
            "{kind:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_first_token_within_the_timeout_is_fine() {
    for kind in KINDS {
        // The idle timeout is shorter than the wait for the first token: it must not apply
        // before the answer has begun.
        let script = Script::text("Thought about it.").first_delay_ms(600);
        let (_stand_in, stream) = run_with(kind, vec![script], |config| {
            config.idle_timeout_ms = 200;
        })
        .await;
        let completion = within(collect(stream.expect("the stream starts")))
            .await
            .expect("a complete answer");
        assert_eq!(completion.text, "Thought about it.", "{kind:?}");
    }
}

#[tokio::test]
async fn an_unreachable_port_is_unreachable_after_retries() {
    for kind in KINDS {
        // A port that was just free: binding and dropping a listener leaves nothing there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let base_url = match kind {
            ProviderKind::OpenAi => format!("http://127.0.0.1:{port}/v1"),
            ProviderKind::Anthropic => format!("http://127.0.0.1:{port}"),
        };
        let mut config = ProviderConfig::new(kind, base_url, Some(Secret::new(KEY)));
        config.max_retries = 2;
        config.retry_base_ms = 1;
        let result = within(provider(config).stream(ask("Anyone?"))).await;
        match result {
            Err(LlmError::Unreachable(message)) => {
                assert!(!message.contains(KEY), "{kind:?}");
                assert!(message.contains(&port.to_string()), "{kind:?}: {message}");
            }
            other => panic!("{kind:?}: expected Unreachable, got {:?}", other.err()),
        }
    }
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    for kind in KINDS {
        let script = Script::text("a long answer that will not be read to its end at all")
            .chunked(2)
            .chunk_delay_ms(20);
        let (stand_in, stream) = run(kind, script).await;
        let mut stream = stream.expect("the stream starts");
        for _ in 0..2 {
            let event = within(stream.next()).await;
            assert!(matches!(event, Some(Ok(StreamEvent::Text(_)))), "{kind:?}");
        }
        drop(stream);
        assert!(
            stand_in.wait_for_close(0, GENEROUS).await,
            "{kind:?}: the stand-in saw the connection close"
        );
    }
}

#[tokio::test]
async fn dropping_a_stream_that_waits_for_its_first_token_closes_the_connection() {
    for kind in KINDS {
        let (stand_in, stream) = run(kind, Script::hang()).await;
        drop(stream.expect("the stream starts"));
        assert!(stand_in.wait_for_close(0, GENEROUS).await, "{kind:?}");
    }
}

#[tokio::test]
async fn a_stream_read_to_its_end_is_not_closed_early() {
    for kind in KINDS {
        let (stand_in, stream) = run(kind, Script::text("Short.")).await;
        within(collect(stream.expect("the stream starts")))
            .await
            .expect("a complete answer");
        assert!(!stand_in.wait_for_close(0, GENEROUS).await, "{kind:?}");
        assert!(stand_in.requests()[0].completed, "{kind:?}");
    }
}

#[tokio::test]
async fn one_provider_serves_many_requests_with_a_responder() {
    for kind in KINDS {
        let stand_in = StandIn::start().await;
        stand_in.set_responder(|request| {
            Script::text(format!(
                "echo: {}",
                request.last_user_text().unwrap_or_default()
            ))
        });
        let provider = provider(config(&stand_in, kind));
        let answers = futures::future::join_all((0..4).map(|i| {
            let provider = provider.clone();
            async move {
                let stream = provider.stream(ask(&format!("number {i}"))).await?;
                collect(stream).await
            }
        }));
        let answers = within(answers).await;
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.expect("a complete answer");
            assert_eq!(answer.text, format!("echo: number {i}"), "{kind:?}");
        }
        assert_eq!(stand_in.requests().len(), 4, "{kind:?}");
    }
}

#[tokio::test]
async fn an_https_endpoint_is_tried_over_tls() {
    // TLS is built in (rustls): an https URL is a connection attempt like any other, so a port
    // where nothing listens is unreachable, not a refusal of the scheme.
    let mut config = ProviderConfig::new(ProviderKind::Anthropic, "https://127.0.0.1:9", None);
    config.max_retries = 0;
    match within(provider(config).stream(ask("Hi"))).await {
        Err(LlmError::Unreachable(message)) => {
            assert!(
                message.starts_with("https://127.0.0.1:9/v1/messages"),
                "{message}"
            );
        }
        other => panic!("expected Unreachable, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_finished_answer_is_read_to_the_end_of_its_body() {
    for kind in KINDS {
        // The body ends a while after the terminal event. Dropping the response at the
        // terminal event would close the connection (the stand-in would see `closed_early`);
        // reading the rest in the background lets it go back to the pool for the next request.
        let stand_in = StandIn::start().await;
        stand_in.set_responder(|_| Script::text("Again.").close_delay_ms(100));
        let provider = provider(config(&stand_in, kind));
        for i in 0..2 {
            let stream = within(provider.stream(ask("Hi")))
                .await
                .expect("the stream starts");
            within(collect(stream)).await.expect("a complete answer");
            assert!(!stand_in.wait_for_close(i, GENEROUS).await, "{kind:?} {i}");
            assert!(stand_in.requests()[i].completed, "{kind:?} {i}");
        }
    }
}
