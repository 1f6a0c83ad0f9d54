//! The stand-in's raw wire output, byte for byte, so that a change to what it sends is seen.

use std::time::Duration;

use expect_test::{Expect, expect};
use hark_test_llm::{Script, StandIn};
use serde_json::{Value, json};

const GENEROUS: Duration = Duration::from_secs(30);

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn post(stand_in: &StandIn, path: &str, headers: &[(&str, &str)], body: Value) -> Raw {
    let client = reqwest::Client::new();
    let mut request = client
        .post(format!("{}{path}", stand_in.url()))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(GENEROUS, request.send())
        .await
        .expect("within the bound")
        .expect("the stand-in answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(GENEROUS, response.text())
        .await
        .expect("within the bound")
        .expect("a body");
    Raw {
        status,
        headers,
        body,
    }
}

fn openai_body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10,
           "stream": true, "stream_options": {"include_usage": true}})
}

fn anthropic_body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
           "max_tokens": 10, "stream": true})
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", "k"),
    ("anthropic-version", "2023-06-01"),
    ("content-type", "application/json"),
];

fn check(raw: &Raw, expected: Expect) {
    assert_eq!(raw.status, 200);
    assert_eq!(
        raw.headers["content-type"].to_str().unwrap(),
        "text/event-stream; charset=utf-8"
    );
    expected.assert_eq(&raw.body);
}

#[tokio::test]
async fn openai_stream_with_text_tool_call_usage_and_done() {
    let stand_in = StandIn::start().await;
    stand_in.push(
        Script::text("Hi there")
            .then_tool_call("f", json!({"a": 1}))
            .chunked(4)
            .usage(5, 3),
    );
    let raw = post(&stand_in, "/v1/chat/completions", &[], openai_body()).await;
    check(
        &raw,
        expect![[r#"
            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{"content":"Hi t"},"logprobs":null,"finish_reason":null}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{"content":"here"},"logprobs":null,"finish_reason":null}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_standin_0","type":"function","function":{"name":"f","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

            data: {"id":"chatcmpl-standin0","object":"chat.completion.chunk","created":1700000000,"model":"m","system_fingerprint":"fp_standin","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}

            data: [DONE]

        "#]],
    );
}

#[tokio::test]
async fn anthropic_stream_with_text_and_tool_use() {
    let stand_in = StandIn::start().await;
    stand_in.push(
        Script::text("Hi there")
            .then_tool_call("f", json!({"a": 1}))
            .chunked(4)
            .usage(5, 3),
    );
    let raw = post(
        &stand_in,
        "/v1/messages",
        ANTHROPIC_HEADERS,
        anthropic_body(),
    )
    .await;
    check(
        &raw,
        expect![[r#"
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_standin0","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

            event: ping
            data: {"type":"ping"}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi t"}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"here"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":0}

            event: content_block_start
            data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_standin_0","name":"f","input":{}}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":":1}"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":1}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":3}}

            event: message_stop
            data: {"type":"message_stop"}

        "#]],
    );
}

#[tokio::test]
async fn without_include_usage_openai_sends_no_usage() {
    let stand_in = StandIn::start().await;
    stand_in.push(Script::text("Hi"));
    let mut body = openai_body();
    body.as_object_mut().unwrap().remove("stream_options");
    let raw = post(&stand_in, "/v1/chat/completions", &[], body).await;
    assert!(!raw.body.contains("usage"), "{}", raw.body);
    assert!(raw.body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn error_statuses_carry_each_providers_error_body() {
    let stand_in = StandIn::start().await;
    stand_in.push(Script::rate_limited().retry_after_secs(7));
    stand_in.push(Script::overloaded());
    let raw = post(&stand_in, "/v1/chat/completions", &[], openai_body()).await;
    assert_eq!(raw.status, 429);
    assert_eq!(raw.headers["retry-after"], "7");
    expect![[r#"{"error":{"message":"Rate limit reached for requests. Please try again later.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#]]
        .assert_eq(&raw.body);
    let raw = post(
        &stand_in,
        "/v1/messages",
        ANTHROPIC_HEADERS,
        anthropic_body(),
    )
    .await;
    assert_eq!(raw.status, 529);
    expect![[r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_standin"}"#]]
        .assert_eq(&raw.body);
}

#[tokio::test]
async fn requests_the_real_api_would_refuse_get_400_and_keep_the_script() {
    let stand_in = StandIn::start().await;
    stand_in.push(Script::text("Hi"));
    let raw = post(
        &stand_in,
        "/v1/messages",
        &[("x-api-key", "k")],
        anthropic_body(),
    )
    .await;
    assert_eq!(raw.status, 400);
    assert!(raw.body.contains("anthropic-version"), "{}", raw.body);
    let mut body = anthropic_body();
    body["messages"] = json!([{"role": "system", "content": "no"}]);
    let raw = post(&stand_in, "/v1/messages", ANTHROPIC_HEADERS, body).await;
    assert_eq!(raw.status, 400);
    // The queued script is still there for a good request.
    let raw = post(
        &stand_in,
        "/v1/messages",
        ANTHROPIC_HEADERS,
        anthropic_body(),
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(stand_in.requests().len(), 3);
}

#[tokio::test]
async fn queued_scripts_come_first_then_the_responder_then_501() {
    let stand_in = StandIn::start().await;
    let raw = post(&stand_in, "/v1/chat/completions", &[], openai_body()).await;
    assert_eq!(raw.status, 501);
    assert!(raw.body.contains("nothing scripted"));

    stand_in.push(Script::text("queued").chunked(10));
    stand_in.set_responder(|request| {
        Script::text(format!(
            "echo {}",
            request.last_user_text().unwrap_or_default()
        ))
        .chunked(10)
    });
    let raw = post(&stand_in, "/v1/chat/completions", &[], openai_body()).await;
    assert!(raw.body.contains(r#""content":"queued""#), "{}", raw.body);
    let raw = post(
        &stand_in,
        "/v1/messages",
        ANTHROPIC_HEADERS,
        anthropic_body(),
    )
    .await;
    assert!(raw.body.contains(r#""text":"echo Hi""#), "{}", raw.body);

    let requests = stand_in.wait_for_requests(3, GENEROUS).await;
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[2].path, "/v1/messages");
    assert_eq!(requests[2].header("X-Api-Key"), Some("k"));
    assert_eq!(requests[2].body, anthropic_body());
}
