//! How the front doors report delivery, in process: the router answers a request, and the test
//! holds the response in hand and either reads its body to the end (the result reached the
//! client) or drops it unread (the connection went away first). What was dropped comes again in
//! the participant's next result, and the push gate and the read receipt wait for it; what was
//! read never comes again.

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hark_server::{Server, ServerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use support::memory::MemoryStore;

struct Fixture {
    router: Router,
    id: String,
    alice: String,
    bob: String,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn fixture() -> Fixture {
    fixture_with(ServerConfig::default()).await
}

async fn fixture_with(config: ServerConfig) -> Fixture {
    let shutdown = CancellationToken::new();
    let server = Server::new(Arc::new(MemoryStore::new()), config, shutdown.clone());
    let router = server.router();
    let created = body_json(
        call(
            &router,
            "POST",
            "/v1/conversations",
            None,
            json!({"participants": [{"name": "alice", "kind": "human"}, {"name": "bob", "kind": "agent"}]}),
        )
        .await,
    )
    .await;
    let token = |i: usize| {
        created["participants"][i]["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    Fixture {
        id: created["id"].as_str().unwrap().to_owned(),
        alice: token(0),
        bob: token(1),
        router,
        _shutdown: shutdown.drop_guard(),
    }
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Response<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Body::from(body.to_string())).unwrap();
    router.clone().oneshot(request).await.unwrap()
}

async fn body_json(response: Response<Body>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

impl Fixture {
    async fn act(&self, token: &str, action: &str, body: Value) -> Response<Body> {
        let path = format!("/v1/conversations/{}/{action}", self.id);
        call(&self.router, "POST", &path, Some(token), body).await
    }

    async fn read_up_to(&self, who: &str) -> u64 {
        let path = format!("/v1/conversations/{}", self.id);
        let described = body_json(call(&self.router, "GET", &path, None, Value::Null).await).await;
        described["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["participant"] == who)
            .unwrap()["read_up_to"]
            .as_u64()
            .unwrap()
    }

    /// Polls until `who` is (or, with `waiting: false`, is no longer) waiting in `check`.
    async fn until_checking(&self, who: &str, waiting: bool) {
        let path = format!("/v1/conversations/{}", self.id);
        for _ in 0..10_000 {
            let described =
                body_json(call(&self.router, "GET", &path, None, Value::Null).await).await;
            let checking = described["checking"].as_array().unwrap();
            if checking.iter().any(|n| n == who) == waiting {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{who} never reached checking = {waiting}");
    }
}

fn seqs(envelope: &Value) -> Vec<u64> {
    envelope["incoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn an_http_answer_dropped_unread_hands_its_messages_over_again() {
    let f = fixture().await;
    f.act(&f.bob, "append", json!({"text": "draft"})).await;
    f.act(&f.alice, "send", json!({"text": "one"})).await;

    // The answer is ready, but its body never reaches bob: the connection went away.
    let lost = f.act(&f.bob, "preview", json!({})).await;
    assert_eq!(lost.status(), StatusCode::OK);
    drop(lost);
    assert_eq!(f.read_up_to("bob").await, 0);

    // So his push is held, and shows the message again; this answer he reads.
    let held = body_json(f.act(&f.bob, "push", json!({})).await).await;
    assert_eq!(held["result"]["status"], "held", "{held}");
    assert_eq!(seqs(&held), [1]);
    assert_eq!(f.read_up_to("bob").await, 1);

    // Read once, never again: the next push goes out.
    let sent = body_json(f.act(&f.bob, "push", json!({})).await).await;
    assert_eq!(sent["result"]["status"], "sent", "{sent}");
    assert!(seqs(&sent).is_empty(), "{sent}");
}

/// A result lost after its participant wrote more than the log window holds: the `check` that
/// the rollback wakes starts before the window, so the conversation reads what the answer needs
/// from the store first, and the answer carries the message again (not an empty "more").
#[tokio::test]
async fn a_check_woken_by_a_lost_result_before_the_window_carries_its_messages() {
    let mut config = ServerConfig::default();
    config.limits.log_window_messages = 2;
    let f = fixture_with(config).await;
    f.act(&f.alice, "send", json!({"text": "one"})).await;
    // Carries message 1; held in hand, unread, while bob writes three messages of his own.
    let lost = f.act(&f.bob, "preview", json!({})).await;
    for text in ["b1", "b2", "b3"] {
        let sent = body_json(f.act(&f.bob, "send", json!({ "text": text })).await).await;
        assert_eq!(sent["result"]["status"], "sent", "{sent}");
    }
    let (router, bob) = (f.router.clone(), f.bob.clone());
    let path = format!("/v1/conversations/{}/check", f.id);
    let check = tokio::spawn(async move {
        let body = json!({"timeout_ms": 50_000});
        body_json(call(&router, "POST", &path, Some(&bob), body).await).await
    });
    f.until_checking("bob", true).await;

    drop(lost);
    let answer = check.await.unwrap();
    assert_eq!(seqs(&answer), [1], "{answer}");
    assert_eq!(answer["more_incoming"], false, "{answer}");
    // Read to its end: the receipt passes message 1 and bob's own three after it.
    assert_eq!(f.read_up_to("bob").await, 4);
}

#[tokio::test]
async fn an_answer_without_news_needs_no_delivery() {
    let f = fixture().await;
    // Nothing handed over: dropping the answer changes nothing, and the push is not held.
    drop(f.act(&f.bob, "append", json!({"text": "draft"})).await);
    let sent = body_json(f.act(&f.bob, "push", json!({})).await).await;
    assert_eq!(sent["result"]["status"], "sent", "{sent}");
}

/// One JSON-RPC call to `/mcp` in a session, as the 2025-11-25 protocol makes it.
async fn mcp(f: &Fixture, session: Option<&str>, message: Value) -> Response<Body> {
    let mut request = Request::builder()
        .method("POST")
        .uri("/mcp")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {}", f.bob))
        .header("mcp-protocol-version", "2025-11-25");
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let request = request.body(Body::from(message.to_string())).unwrap();
    f.router.clone().oneshot(request).await.unwrap()
}

/// The JSON-RPC messages of an SSE body, read to its end.
async fn sse_messages(response: Response<Body>) -> Vec<Value> {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

async fn mcp_session(f: &Fixture) -> String {
    let initialized = mcp(
        f,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
    )
    .await;
    assert_eq!(initialized.status(), StatusCode::OK);
    let session = initialized.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    sse_messages(initialized).await;
    let notified = mcp(
        f,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(notified.status(), StatusCode::ACCEPTED);
    session
}

fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

/// With an MCP session, rmcp runs the tool call in the session's task, which outlives the POST.
/// Dropping the POST's response (the client's connection went away) withdraws the call: a
/// waiting check hands nothing over, and the message that arrives next waits for bob.
#[tokio::test]
async fn an_mcp_post_dropped_while_its_check_waits_withdraws_the_check() {
    let f = fixture().await;
    let session = mcp_session(&f).await;
    let waiting = mcp(
        &f,
        Some(&session),
        tool_call(2, "check", json!({"timeout_ms": 50_000})),
    )
    .await;
    assert_eq!(waiting.status(), StatusCode::OK);
    f.until_checking("bob", true).await;
    drop(waiting);
    f.until_checking("bob", false).await;
    f.act(&f.alice, "send", json!({"text": "news"})).await;

    let answer = mcp(&f, Some(&session), tool_call(3, "preview", json!({}))).await;
    let messages = sse_messages(answer).await;
    let envelope = &messages.last().unwrap()["result"]["structuredContent"];
    assert_eq!(seqs(envelope), [1], "{messages:?}");
    // That answer was read to its end: delivered, so the receipt moved.
    assert_eq!(f.read_up_to("bob").await, 1);
    let again =
        sse_messages(mcp(&f, Some(&session), tool_call(4, "preview", json!({}))).await).await;
    assert!(seqs(&again.last().unwrap()["result"]["structuredContent"]).is_empty());
}

/// An MCP answer whose response is dropped after the call finished counts as lost too.
#[tokio::test]
async fn an_mcp_answer_dropped_unread_comes_again() {
    let f = fixture().await;
    let session = mcp_session(&f).await;
    f.act(&f.alice, "send", json!({"text": "news"})).await;
    let unread = mcp(&f, Some(&session), tool_call(2, "preview", json!({}))).await;
    // The SSE body is dropped unread; the answer may still be on its way inside rmcp, and is
    // lost either way.
    drop(unread);
    let messages =
        sse_messages(mcp(&f, Some(&session), tool_call(3, "preview", json!({}))).await).await;
    assert_eq!(
        seqs(&messages.last().unwrap()["result"]["structuredContent"]),
        [1]
    );
}
