//! An event stream that stops reading falls behind the conversation's (small) live buffer; when
//! it reads again it gets every message it missed, in order and once, and the current receipts
//! and composing states.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hark_server::{Server, ServerConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use support::memory::MemoryStore;

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Response<Body> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    router.clone().oneshot(request).await.unwrap()
}

/// One SSE event: its name, id and data.
#[derive(Debug)]
struct SseEvent {
    name: String,
    id: Option<u64>,
    data: Value,
}

fn parse(block: &str) -> Option<SseEvent> {
    let mut name = None;
    let mut id = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event: ") {
            name = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str(v).ok();
        }
    }
    Some(SseEvent {
        name: name?,
        id,
        data: data?,
    })
}

#[tokio::test]
async fn a_stream_that_fell_behind_gets_every_message_and_the_current_state() {
    const MESSAGES: u64 = 1_000;
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let server = Server::new(
        Arc::new(MemoryStore::new()),
        ServerConfig {
            rate_limit_per_s: 0,
            ..ServerConfig::default()
        },
        shutdown,
    );
    let router = server.router();
    let created = call(
        &router,
        "POST",
        "/v1/conversations",
        None,
        Some(json!({"participants": [{"name": "alice", "kind": "human"}, {"name": "bob", "kind": "human"}]})),
    )
    .await;
    let created: Value =
        serde_json::from_slice(&created.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let id = created["id"].as_str().unwrap();
    let alice = created["participants"][0]["token"].as_str().unwrap();
    let bob = created["participants"][1]["token"].as_str().unwrap();

    // Bob's stream is open but not read while alice sends far more than any buffer holds.
    let stream = call(
        &router,
        "GET",
        &format!("/v1/conversations/{id}/events"),
        Some(bob),
        None,
    )
    .await;
    assert_eq!(stream.status(), StatusCode::OK);
    for i in 1..=MESSAGES {
        let sent = call(
            &router,
            "POST",
            &format!("/v1/conversations/{id}/send"),
            Some(alice),
            Some(json!({"text": format!("m{i}")})),
        )
        .await;
        assert_eq!(sent.status(), StatusCode::OK);
        sent.into_body().collect().await.unwrap();
    }

    // Now read: every message once and in order, then the state the dropped events told.
    let mut body = stream.into_body();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let caught_up = |events: &Vec<SseEvent>| {
        events
            .iter()
            .any(|e| e.name == "message" && e.id == Some(MESSAGES))
            // The recovered state ends with the last participant's composing state.
            && events
                .iter()
                .any(|e| e.name == "composing" && e.data["participant"] == "bob")
    };
    while !caught_up(&events) {
        // Generous: only a stream that stalls for good ever reaches it.
        let frame = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("the stream stalled before it caught up")
            .expect("the stream goes on")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            events.extend(parse(&block));
        }
    }
    let seqs: Vec<u64> = events
        .iter()
        .filter(|e| e.name == "message")
        .map(|e| e.id.unwrap())
        .collect();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
    let texts_match = events
        .iter()
        .filter(|e| e.name == "message")
        .all(|e| e.data["text"] == format!("m{}", e.id.unwrap()));
    assert!(texts_match);
    // The receipts: alice has read her own last message.
    let last_receipt = events
        .iter()
        .rev()
        .find(|e| e.name == "receipt" && e.data["participant"] == "alice")
        .expect("alice's receipt is told");
    assert_eq!(last_receipt.data["read_up_to"], MESSAGES);
    // Nobody composes: the recovered state says so for both.
    for who in ["alice", "bob"] {
        assert!(
            events.iter().any(|e| e.name == "composing"
                && e.data["participant"] == who
                && e.data["composing"] == false),
            "{who}'s composing state is told"
        );
    }
}
