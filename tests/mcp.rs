//! Black-box MCP tests: the real `hark` binary, driven by the official MCP Python SDK (a client
//! this project did not write) over stdio (`hark mcp --url …`, `hark mcp --db …`) and over
//! streamable HTTP (`/mcp` on `hark serve`).

mod common;

use common::mcp::{McpClient, ToolResult};
use common::{Conversation, TestServer};
use serde_json::{Value, json};

const TOOLS: [&str; 8] = [
    "append", "check", "history", "preview", "push", "reset", "undo", "whoami",
];

/// The keys of the common envelope (SPEC.md section 2), as the HTTP API sends them.
const ENVELOPE_KEYS: [&str; 8] = [
    "action",
    "composing",
    "cursor",
    "draft",
    "incoming",
    "more_incoming",
    "receipts",
    "result",
];

fn ok(result: &ToolResult) -> &Value {
    assert!(!result.is_error, "tool error: {}", result.text);
    &result.structured
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Lists the tools, calls every one of them as bob, and shows what alice does over plain HTTP
/// arriving in bob's tool results.
async fn every_tool_as_bob(s: &TestServer, c: &Conversation, bob: &mut McpClient) {
    let tools = bob.list_tools().await;
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, TOOLS);
    let check = tools.iter().find(|t| t["name"] == "check").unwrap();
    assert!(
        check["description"]
            .as_str()
            .unwrap()
            .contains("50 seconds"),
        "check teaches its limit: {check}"
    );
    assert_eq!(
        check["input_schema"]["properties"]["timeout_ms"]["type"],
        json!(["integer", "null"])
    );

    let who = bob.call("whoami", json!({})).await;
    assert_eq!(ok(&who)["you"], json!({"name": "bob", "kind": "agent"}));
    assert_eq!(who.structured["id"], c.id);
    assert!(
        who.text.starts_with("You are bob (agent) in conversation ")
            && who.text.contains("with alice (human)"),
        "{}",
        who.text
    );

    let appended = bob.call("append", json!({"text": "I think "})).await;
    let envelope = ok(&appended);
    assert_eq!(keys(envelope), ENVELOPE_KEYS);
    assert_eq!(envelope["action"], "append");
    assert_eq!(envelope["result"]["appended_chars"], 8);
    assert_eq!(envelope["draft"], json!({"segments": 1, "chars": 8}));
    assert_eq!(
        appended.text,
        "Appended 8 characters (draft: 1 segment, 8 characters)."
    );

    // Alice writes over HTTP; bob hears it on his next append, in the text and the envelope.
    let (status, _) = s
        .act(
            c,
            "alice",
            "send",
            json!({"text": "wait, noon is bad for me"}),
        )
        .await;
    assert_eq!(status, 200);
    let heard = bob
        .call("append", json!({"text": "we should meet at noon."}))
        .await;
    let envelope = ok(&heard);
    assert_eq!(envelope["incoming"][0]["from"], "alice");
    assert_eq!(envelope["incoming"][0]["text"], "wait, noon is bad for me");
    assert_eq!(envelope["incoming"][0]["seq"], 1);
    assert_eq!(envelope["cursor"], 1);
    assert!(
        heard.text.starts_with(
            "New since you last looked:\n[1] alice: wait, noon is bad for me\n\nAppended 23 \
             characters (draft: 2 segments, 31 characters)."
        ),
        "{}",
        heard.text
    );

    let preview = bob.call("preview", json!({})).await;
    assert_eq!(
        ok(&preview)["result"]["text"],
        "I think we should meet at noon."
    );
    assert!(preview.text.ends_with(":\nI think we should meet at noon."));

    // A message bob has not seen holds his push; the draft stays and the message is shown.
    s.act(c, "alice", "send", json!({"text": "and I'm vegetarian"}))
        .await;
    let held = bob.call("push", json!({})).await;
    let envelope = ok(&held);
    assert_eq!(
        envelope["result"],
        json!({"status": "held", "reason": "unseen_messages"})
    );
    assert_eq!(envelope["incoming"][0]["text"], "and I'm vegetarian");
    assert_eq!(envelope["draft"], json!({"segments": 2, "chars": 31}));
    assert!(
        held.text.contains("[2] alice: and I'm vegetarian")
            && held.text.contains(
                "Your push was held: 1 new message arrived — read it, then push again to send \
                 as is, or revise."
            ),
        "{}",
        held.text
    );

    // Bob revises and pushes again: now it is sent.
    let undone = bob.call("undo", json!({})).await;
    assert_eq!(ok(&undone)["result"]["removed"], "we should meet at noon.");
    assert!(
        undone
            .text
            .starts_with("Removed your last segment, \"we should meet at noon.\"")
    );
    bob.call(
        "append",
        json!({"text": "one o'clock, at the veggie place?"}),
    )
    .await;
    let sent = bob.call("push", json!({"client_id": "bob-1"})).await;
    let envelope = ok(&sent);
    assert_eq!(envelope["result"]["status"], "sent");
    assert_eq!(
        envelope["result"]["message"]["text"],
        "I think one o'clock, at the veggie place?"
    );
    assert_eq!(envelope["result"]["message"]["seq"], 3);
    assert_eq!(sent.text, "Sent as message 3.");
    // Alice, over HTTP, hears bob's message.
    let (_, alice) = s.act(c, "alice", "preview", json!({})).await;
    assert_eq!(
        alice["incoming"][0]["text"],
        "I think one o'clock, at the veggie place?"
    );

    // Alice's read position comes with bob's next result, as a receipt.
    let scratch = bob.call("append", json!({"text": "scratch"})).await;
    assert_eq!(
        ok(&scratch)["receipts"],
        json!([{"participant": "alice", "read_up_to": 3}])
    );
    assert!(
        scratch.text.ends_with("\nalice has read up to [3]."),
        "{}",
        scratch.text
    );
    let reset = bob.call("reset", json!({})).await;
    assert_eq!(ok(&reset)["result"]["discarded_chars"], 7);
    assert_eq!(
        reset.text,
        "Discarded your draft (7 characters); it is empty now."
    );

    let quiet = bob.call("check", json!({"timeout_ms": 0})).await;
    assert_eq!(ok(&quiet)["result"], json!({"timed_out": true}));
    assert_eq!(quiet.text, "Nothing new; call check again.");

    let history = bob.call("history", json!({})).await;
    let page = ok(&history);
    assert_eq!(page["messages"].as_array().unwrap().len(), 3);
    assert_eq!(page["more"], false);
    assert!(
        history.text.contains("[1] alice: wait, noon is bad for me")
            && history
                .text
                .contains("[3] bob: I think one o'clock, at the veggie place?"),
        "{}",
        history.text
    );
    let page = bob.call("history", json!({"after": 1, "limit": 1})).await;
    assert_eq!(ok(&page)["messages"][0]["seq"], 2);
    assert_eq!(page.structured["more"], true);
    assert!(
        page.text
            .ends_with("(More after [2]: call history with after=2 to read on.)")
    );

    // Errors are tool errors with the HTTP API's code and sentence.
    let refused = bob.call("undo", json!({})).await;
    assert!(refused.is_error);
    let (status, http_error) = s.act(c, "alice", "undo", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(refused.structured, http_error);
    assert_eq!(refused.structured["error"]["code"], "nothing_to_undo");
    assert_eq!(
        refused.text,
        format!(
            "nothing_to_undo: {}",
            http_error["error"]["message"].as_str().unwrap()
        )
    );
    let empty = bob.call("push", json!({})).await;
    assert!(empty.is_error);
    assert!(
        empty.text.starts_with("empty_draft: Your draft is empty"),
        "{}",
        empty.text
    );
    let typo = bob.call("push", json!({"forse": true})).await;
    assert!(typo.is_error);
    assert_eq!(typo.structured["error"]["code"], "bad_request");
    assert!(typo.text.contains("unknown field `forse`"), "{}", typo.text);
}

#[tokio::test]
async fn stdio_client_of_a_running_server_uses_every_tool() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut bob = McpClient::stdio_remote(&s, c.token("bob")).await;
    every_tool_as_bob(&s, &c, &mut bob).await;
    bob.close().await;
}

#[tokio::test]
async fn streamable_http_client_uses_every_tool() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut bob = McpClient::http(&s, c.token("bob"), "auto").await;
    assert_eq!(bob.protocol_version, "2026-07-28");
    every_tool_as_bob(&s, &c, &mut bob).await;
    bob.close().await;
}

#[tokio::test]
async fn streamable_http_client_with_a_legacy_session_uses_every_tool() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    // The initialize handshake and an Mcp-Session-Id, as clients before 2026-07-28 do it.
    let mut bob = McpClient::http(&s, c.token("bob"), "legacy").await;
    assert_eq!(bob.protocol_version, "2025-11-25");
    every_tool_as_bob(&s, &c, &mut bob).await;
    bob.close().await;
}

/// `waiter` blocks in `check`; once the server has it parked, `writer` pushes `text`, and the
/// check returns with it.
async fn check_wakes_on_push(
    s: &TestServer,
    c: &Conversation,
    (waiter, waiter_name): (&mut McpClient, &str),
    (writer, writer_name): (&mut McpClient, &str),
    text: &str,
    seq: u64,
) {
    waiter
        .start_call("check", json!({"timeout_ms": 60_000}))
        .await;
    writer.call("append", json!({"text": text})).await;
    s.until_checking(c, waiter_name, true).await;
    let sent = writer.call("push", json!({})).await;
    assert_eq!(ok(&sent)["result"]["message"]["seq"], seq);

    let woke = waiter.finish_call().await;
    let envelope = ok(&woke);
    assert_eq!(envelope["action"], "check");
    assert_eq!(envelope["result"], json!({"timed_out": false}));
    assert_eq!(envelope["incoming"][0]["from"], writer_name);
    assert_eq!(envelope["incoming"][0]["text"], text);
    assert!(
        woke.text.starts_with(&format!(
            "New since you last looked:\n[{seq}] {writer_name}: {text}"
        )),
        "{}",
        woke.text
    );
}

/// Two MCP clients in one conversation, each in turn blocked in `check` while the other pushes:
/// the check returns with the message, not at its 60 s timeout.
#[tokio::test]
async fn a_check_blocked_on_one_client_returns_with_the_other_clients_push() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut alice = McpClient::stdio_remote(&s, c.token("alice")).await;
    let mut bob = McpClient::http(&s, c.token("bob"), "auto").await;
    assert_eq!(alice.list_tools().await.len(), 8);
    assert_eq!(bob.list_tools().await.len(), 8);

    // Alice (stdio) waits while bob (HTTP) pushes, then the other way round.
    check_wakes_on_push(
        &s,
        &c,
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        "are you there?",
        1,
    )
    .await;
    check_wakes_on_push(
        &s,
        &c,
        (&mut bob, "bob"),
        (&mut alice, "alice"),
        "yes, here",
        2,
    )
    .await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn mcp_without_a_valid_token_is_401() {
    let s = TestServer::start().await;
    let initialize = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}},
    });
    for token in [Some("hark_not_a_token"), None] {
        let mut request = s
            .client
            .post(format!("{}/mcp", s.url))
            .header("Accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    // Over stdio the server's answer comes back as a tool error with the same code.
    let mut stranger = McpClient::stdio_remote(&s, "hark_not_a_token").await;
    let refused = stranger.call("whoami", json!({})).await;
    assert!(refused.is_error);
    assert_eq!(refused.text, "unauthorized: That token is not known here.");
    stranger.close().await;
}

/// rmcp's DNS-rebinding guard answers only loopback `Host`s unless configured otherwise.
#[tokio::test]
async fn mcp_allowed_hosts_default_to_loopback_and_are_configurable() {
    async fn initialize_with_host(s: &TestServer, token: &str, host: &str) -> u16 {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "1"}},
        });
        s.client
            .post(format!("{}/mcp", s.url))
            .header("Host", host)
            .header("Accept", "application/json, text/event-stream")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    assert_eq!(
        initialize_with_host(&s, c.token("bob"), "localhost").await,
        200
    );
    assert_eq!(
        initialize_with_host(&s, c.token("bob"), "hark.example").await,
        403
    );

    let config = "[server]\nmcp_allowed_hosts = [\"hark.example\"]\n";
    let s = TestServer::start_with(Some(config), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    assert_eq!(
        initialize_with_host(&s, c.token("bob"), "hark.example").await,
        200
    );
    // Loopback names stay answered beside the configured ones; any other name is not.
    assert_eq!(
        initialize_with_host(&s, c.token("bob"), "127.0.0.1").await,
        200
    );
    assert_eq!(
        initialize_with_host(&s, c.token("bob"), "other.example").await,
        403
    );
}

/// `hark mcp --db` acts on the embedded store directly (no server running), and what it sends
/// is there for the server that opens the file next.
#[tokio::test]
async fn stdio_on_the_database_file_without_a_server() {
    let mut s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    s.act(&c, "alice", "send", json!({"text": "anyone?"})).await;
    assert_eq!(s.terminate().await, Some(0));

    let db = s.db();
    let db = db.to_str().unwrap();
    let mut bob =
        McpClient::stdio(&["mcp", "--db", db, "--conversation", &c.id, "--as", "bob"]).await;
    let mut names: Vec<String> = bob
        .list_tools()
        .await
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort_unstable();
    assert_eq!(names, TOOLS);
    let who = bob.call("whoami", json!({})).await;
    assert_eq!(ok(&who)["you"]["name"], "bob");
    let heard = bob.call("append", json!({"text": "me, offline"})).await;
    assert!(
        heard
            .text
            .starts_with("New since you last looked:\n[1] alice: anyone?")
    );
    let sent = bob.call("push", json!({})).await;
    assert_eq!(sent.text, "Sent as message 2.");
    let history = bob.call("history", json!({})).await;
    assert_eq!(ok(&history)["messages"][1]["text"], "me, offline");
    bob.close().await;

    s.restart().await;
    let (_, page) = s
        .get(
            &format!("/v1/conversations/{}/messages", c.id),
            Some(c.token("alice")),
        )
        .await;
    assert_eq!(page["messages"][1]["from"], "bob");
    assert_eq!(page["messages"][1]["text"], "me, offline");
}

/// A client that gives up on its `check` (here: its read timeout) withdraws it in the server,
/// so the message that arrives next is not handed over to nobody: bob still gets it.
#[tokio::test]
async fn an_abandoned_mcp_check_hands_nothing_over() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    for transport in ["stdio", "http"] {
        let mut bob = match transport {
            "stdio" => McpClient::stdio_remote(&s, c.token("bob")).await,
            _ => McpClient::http(&s, c.token("bob"), "auto").await,
        };
        assert_eq!(bob.list_tools().await.len(), 8);
        bob.send(json!({
            "op": "call", "tool": "check", "args": {"timeout_ms": 60_000},
            "read_timeout_seconds": 1,
        }))
        .await;
        s.until_checking(&c, "bob", true).await;
        let gave_up = bob.recv_raw().await;
        assert!(gave_up.get("exception").is_some(), "{gave_up}");
        s.until_checking(&c, "bob", false).await;

        let text = format!("are you still there ({transport})?");
        s.act(&c, "alice", "send", json!({"text": text})).await;
        let preview = bob.call("preview", json!({})).await;
        assert_eq!(ok(&preview)["incoming"][0]["text"], text);
        bob.close().await;
    }
}

/// SIGTERM while an MCP client waits in `check`: the check answers "nothing new" (as over HTTP)
/// and the server exits instead of waiting on the open MCP session.
#[tokio::test]
async fn shutdown_answers_a_waiting_mcp_check_and_ends_the_session() {
    let mut s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut bob = McpClient::http(&s, c.token("bob"), "legacy").await;
    assert_eq!(bob.list_tools().await.len(), 8);
    bob.call("whoami", json!({})).await;
    bob.start_call("check", json!({"timeout_ms": 60_000})).await;
    s.until_checking(&c, "bob", true).await;
    assert_eq!(s.terminate().await, Some(0));
    let answer = bob.finish_call().await;
    assert_eq!(ok(&answer)["result"], json!({"timed_out": true}));
    assert_eq!(answer.text, "Nothing new; call check again.");
}

/// `/mcp` gives a request body the same deadline as every other route: a body that never
/// completes is answered (and the connection closed), not waited on forever.
#[tokio::test]
async fn a_dribbled_mcp_body_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = "[server]\nbody_read_timeout_ms = 300\n";
    let s = TestServer::start_with(Some(config), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut stream = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 100\r\nConnection: close\r\n\r\n{{\"jsonrpc\": \"2.0\", ",
        c.token("bob")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server gives up on the body")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert_eq!(status, 408, "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
}

/// One raw JSON-RPC POST to `/mcp` as a 2025-11-25 client makes it.
async fn raw_mcp(
    s: &TestServer,
    method: reqwest::Method,
    token: Option<&str>,
    session: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = s
        .client
        .request(method, format!("{}/mcp", s.url))
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-11-25");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(session) = session {
        request = request.header("Mcp-Session-Id", session);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn initialize(client_name: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": client_name, "version": "1"}},
    })
}

/// A JSON-RPC error answer of `/mcp`: `(status, error object)`.
async fn jsonrpc_error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json",
        "status {status}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(body["id"].is_null(), "{body}");
    (status, body["error"].clone())
}

/// What third-party MCP clients were measured to trip over: `/mcp`'s own refusals are JSON-RPC
/// errors (not plain text), a 401 names its scheme (so clients do not start OAuth), deleting a
/// session answers 204, and a session belongs to the token that opened it.
#[tokio::test]
async fn mcp_refusals_are_json_and_sessions_belong_to_their_token() {
    let s = TestServer::start_with(Some("[server]\nmax_body_bytes = 2048\n"), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let (alice, bob) = (c.token("alice"), c.token("bob"));
    let post = reqwest::Method::POST;

    let anonymous = raw_mcp(&s, post.clone(), None, None, Some(initialize("x"))).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    // Every 401 of the API names it, not only `/mcp`'s.
    let stranger = s
        .client
        .get(format!("{}/v1/whoami", s.url))
        .bearer_auth("hark_not_a_token")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    assert_eq!(stranger.headers()["www-authenticate"], "Bearer");

    let huge = raw_mcp(
        &s,
        post.clone(),
        Some(bob),
        None,
        Some(initialize(&"x".repeat(4000))),
    )
    .await;
    let (status, error) = jsonrpc_error(huge).await;
    assert_eq!(status, 413);
    assert_eq!(error["data"]["code"], "too_large");
    assert!(
        error["message"].as_str().unwrap().contains("2048 bytes"),
        "{error}"
    );

    let opened = raw_mcp(&s, post.clone(), Some(bob), None, Some(initialize("bob"))).await;
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let notified = raw_mcp(
        &s,
        post.clone(),
        Some(bob),
        Some(&session),
        Some(initialized),
    )
    .await;
    assert_eq!(notified.status(), 202);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});

    let (status, error) = jsonrpc_error(
        raw_mcp(
            &s,
            post.clone(),
            Some(bob),
            Some("no-such-session"),
            Some(list.clone()),
        )
        .await,
    )
    .await;
    assert_eq!((status, error["code"].clone()), (404, json!(-32001)));

    // Alice's token can neither use nor end bob's session: to her it does not exist.
    for method in [post.clone(), reqwest::Method::DELETE] {
        let body = (method == post).then(|| list.clone());
        let (status, error) =
            jsonrpc_error(raw_mcp(&s, method, Some(alice), Some(&session), body).await).await;
        assert_eq!((status, error["code"].clone()), (404, json!(-32001)));
    }
    let listed = raw_mcp(
        &s,
        post.clone(),
        Some(bob),
        Some(&session),
        Some(list.clone()),
    )
    .await;
    assert_eq!(listed.status(), 200);
    assert!(listed.text().await.unwrap().contains("\"check\""));

    let deleted = raw_mcp(&s, reqwest::Method::DELETE, Some(bob), Some(&session), None).await;
    assert_eq!(deleted.status(), 204);
    let (status, _) =
        jsonrpc_error(raw_mcp(&s, post, Some(bob), Some(&session), Some(list)).await).await;
    assert_eq!(status, 404);
}

/// `history limit=0` returns no message (`more` says whether any follow), integers written as
/// floats (`100.0`, as some model providers send them) are integers, and every tool declares
/// the schema of its structured result.
#[tokio::test]
async fn history_limit_zero_whole_floats_and_output_schemas() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    for text in ["one", "two"] {
        s.act(&c, "alice", "send", json!({"text": text})).await;
    }
    let mut bob = McpClient::http(&s, c.token("bob"), "auto").await;
    for tool in bob.list_tools().await {
        assert_eq!(tool["output_schema"]["type"], "object", "{tool}");
    }

    let none = bob.call("history", json!({"limit": 0})).await;
    assert_eq!(ok(&none)["messages"], json!([]));
    assert_eq!(none.structured["more"], true);
    assert_eq!(
        none.text,
        "Messages follow [0]: call history with a limit of 1 or more to read them."
    );
    let (_, page) = s
        .get(
            &format!("/v1/conversations/{}/messages?limit=0", c.id),
            Some(c.token("bob")),
        )
        .await;
    assert_eq!(page, json!({"messages": [], "more": true}));

    let second = bob
        .call("history", json!({"after": 1.0, "limit": 1.0}))
        .await;
    assert_eq!(ok(&second)["messages"][0]["text"], "two");
    let checked = bob.call("check", json!({"timeout_ms": 100.0})).await;
    assert_eq!(ok(&checked)["incoming"].as_array().unwrap().len(), 2);
    let half = bob.call("check", json!({"timeout_ms": 100.5})).await;
    assert!(half.is_error, "{}", half.text);
    assert_eq!(half.structured["error"]["code"], "bad_request");
    bob.close().await;
}
