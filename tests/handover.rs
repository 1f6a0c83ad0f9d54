//! Nothing handed to nobody (issue 11), black-box against the real binary: for each way a
//! result can fail to reach its participant — the connection drops at the worst moment, the MCP
//! client dies, the stdio bridge cannot write — the other side sends, the first participant's
//! next call shows the message, and its push is held until it has. A result that did reach the
//! client is never handed over again, and the read receipt moves only over what was received.

mod common;

use std::time::{Duration, Instant};

use common::mcp::McpClient;
use common::{Conversation, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// `who`'s read position, as the conversation's description shows it to everyone.
async fn read_up_to(s: &TestServer, c: &Conversation, who: &str) -> u64 {
    let (status, described) = s.get(&format!("/v1/conversations/{}", c.id), None).await;
    assert_eq!(status, 200, "{described}");
    described["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["participant"] == who)
        .and_then(|r| r["read_up_to"].as_u64())
        .unwrap()
}

/// Whether an envelope hands over message `seq`.
fn hands_over(envelope: &Value, seq: u64) -> bool {
    envelope["incoming"]
        .as_array()
        .is_some_and(|incoming| incoming.iter().any(|m| m["seq"] == seq))
}

/// `who`'s next push, right after its previous result was received or lost: held with message
/// `seq` if the participant never got it (then pushed again, and sent), sent at once if it did.
async fn push_is_held_until_heard(
    s: &TestServer,
    c: &Conversation,
    who: &str,
    seq: u64,
    heard: bool,
) {
    let (status, pushed) = s.act(c, who, "push", json!({})).await;
    assert_eq!(status, 200, "{pushed}");
    if heard {
        assert_eq!(pushed["result"]["status"], "sent", "{pushed}");
        assert!(
            !hands_over(&pushed, seq),
            "heard once, handed twice: {pushed}"
        );
        return;
    }
    assert_eq!(pushed["result"]["status"], "held", "{pushed}");
    assert!(
        hands_over(&pushed, seq),
        "the lost message comes again: {pushed}"
    );
    let (_, again) = s.act(c, who, "push", json!({})).await;
    assert_eq!(again["result"]["status"], "sent", "{again}");
}

/// Sends an action of `who` over a raw HTTP/1.1 connection and returns it unread.
async fn raw_action(
    s: &TestServer,
    c: &Conversation,
    who: &str,
    action: &str,
    body: Value,
) -> TcpStream {
    let mut stream = TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /v1/conversations/{}/{action} HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        c.id,
        c.token(who),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Everything the server writes until it closes the connection, as an envelope if it was a
/// complete `200` answer (the whole body its `Content-Length` announced), else `None`.
async fn answer_received(mut stream: TcpStream) -> Option<Value> {
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .expect("the server closes the half-closed connection")
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let length: usize = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })?;
    (body.len() >= length)
        .then(|| serde_json::from_str(&body[..length]).ok())
        .flatten()
}

/// Plain HTTP, the race the issue measured (9 of 20 trials lost the message): bob's connection
/// goes away right after his request while alice's message is in flight. Whatever bob actually
/// received decides: if his answer carried the message, it is never handed to him again and his
/// push goes out; if not, his receipt stays below it, his next push is held and shows it.
///
/// Bob half-closes (he stops writing but still reads), so the test sees exactly what reached
/// him; hyper answers a half-closed HTTP/1.1 request by dropping it, as it does a closed one.
#[tokio::test]
async fn plain_http_a_dropped_connection_never_loses_a_message() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    dropped_connection_trials(&s, &s, &c).await;
}

/// The same through two nodes on one PostgreSQL database: bob talks to one node, the
/// conversation runs on the other (alice's node), and what bob's node relays is what counts.
#[tokio::test]
async fn through_another_node_a_dropped_connection_never_loses_a_message() {
    let (_schema, url) = common::pg::fresh_schema(None).await;
    let config = "[server]\nrate_limit_per_s = 0\n";
    let alice_node = TestServer::start_on(&url, Some(config)).await;
    let bob_node = TestServer::start_on(&url, Some(config)).await;
    let c = alice_node
        .create(&[("alice", "human"), ("bob", "agent")])
        .await;
    // alice's node runs the conversation.
    let (status, _) = alice_node.act(&c, "alice", "preview", json!({})).await;
    assert_eq!(status, 200);
    dropped_connection_trials(&bob_node, &alice_node, &c).await;
}

/// Bob acts through `bob_side`, alice through `alice_side` (the same server, or two nodes).
async fn dropped_connection_trials(
    bob_side: &TestServer,
    alice_side: &TestServer,
    c: &Conversation,
) {
    const TRIALS: usize = 24;
    let (s, c) = (alice_side, c);
    let mut outcomes = [0usize; 2];
    for trial in 0..TRIALS {
        let (status, _) = bob_side.act(c, "bob", "append", json!({"text": "d"})).await;
        assert_eq!(status, 200);
        // A waiting `check` (found parked through `checking`, no sleep), or an `append`.
        let checking = trial % 2 == 0;
        let stream = if checking {
            let stream =
                raw_action(bob_side, c, "bob", "check", json!({"timeout_ms": 20_000})).await;
            s.until_checking(c, "bob", true).await;
            stream
        } else {
            raw_action(bob_side, c, "bob", "append", json!({"text": "x"})).await
        };
        let mut stream = stream;
        let text = format!("news {trial}");
        let send = s.act(c, "alice", "send", json!({"text": text}));
        // Bob's side goes away before, with, or after alice's message, in turn.
        let sent = match trial % 3 {
            0 => {
                stream.shutdown().await.unwrap();
                send.await
            }
            1 => {
                let (sent, shut) = tokio::join!(send, stream.shutdown());
                shut.unwrap();
                sent
            }
            _ => {
                let sent = send.await;
                stream.shutdown().await.unwrap();
                sent
            }
        };
        let seq = sent.1["result"]["message"]["seq"].as_u64().unwrap();
        let heard = answer_received(stream)
            .await
            .is_some_and(|envelope| hands_over(&envelope, seq));
        outcomes[usize::from(heard)] += 1;
        let mut receipt = read_up_to(s, c, "bob").await;
        // Through another node, the report that bob has it follows the answer by a moment.
        for _ in 0..200 {
            if !heard || receipt >= seq {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            receipt = read_up_to(s, c, "bob").await;
        }
        if heard {
            assert!(
                receipt >= seq,
                "trial {trial}: heard {seq}, receipt {receipt}"
            );
        } else {
            assert!(
                receipt < seq,
                "trial {trial}: never heard {seq}, receipt {receipt}"
            );
        }
        push_is_held_until_heard(bob_side, c, "bob", seq, heard).await;
    }
    eprintln!(
        "{TRIALS} trials: {} answers lost with the connection, {} received",
        outcomes[0], outcomes[1]
    );
}

/// `curl -m 1` on a waiting check, as the issue reproduced it: the connection is closed, then
/// the other side sends. The check was withdrawn, so it handed nothing over and moved no
/// receipt; bob's next call shows the message.
#[tokio::test]
async fn a_dropped_check_hands_nothing_over_and_moves_no_receipt() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    s.act(&c, "bob", "append", json!({"text": "draft"})).await;
    let stream = raw_action(&s, &c, "bob", "check", json!({"timeout_ms": 20_000})).await;
    s.until_checking(&c, "bob", true).await;
    drop(stream);
    s.until_checking(&c, "bob", false).await;
    let (_, sent) = s
        .act(&c, "alice", "send", json!({"text": "still there?"}))
        .await;
    let seq = sent["result"]["message"]["seq"].as_u64().unwrap();
    assert_eq!(read_up_to(&s, &c, "bob").await, 0);
    let (_, preview) = s.act(&c, "bob", "preview", json!({})).await;
    assert!(hands_over(&preview, seq), "{preview}");
    assert_eq!(read_up_to(&s, &c, "bob").await, seq);
}

/// A client that confirms its results itself (`Hark-Received`, as `hark mcp --url` does): a
/// result counts as heard only once a later request says its cursor was received, and a
/// request that says less gets the rest again.
#[tokio::test]
async fn hark_received_confirms_results_on_the_next_request() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let act = |action: &str, received: &str, body: Value| {
        s.client
            .post(format!("{}/v1/conversations/{}/{action}", s.url, c.id))
            .bearer_auth(c.token("bob"))
            .header("Hark-Received", received)
            .json(&body)
            .send()
    };
    let response = act("append", "0", json!({"text": "draft"})).await.unwrap();
    assert_eq!(response.status(), 200);
    s.act(&c, "alice", "send", json!({"text": "one"})).await;
    let preview: Value = act("preview", "0", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(hands_over(&preview, 1), "{preview}");
    assert_eq!(preview["cursor"], 1);
    // Delivered by HTTP, but not yet confirmed by the client: no receipt.
    assert_eq!(read_up_to(&s, &c, "bob").await, 0);
    // A client that says it received nothing past 0 lost that answer: held, shown again.
    let held: Value = act("push", "0", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(held["result"]["status"], "held", "{held}");
    assert!(hands_over(&held, 1), "{held}");
    // Received up to 1: heard, the push goes out.
    let sent: Value = act("push", "1", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["result"]["status"], "sent", "{sent}");
    assert!(!hands_over(&sent, 1), "{sent}");
    assert_eq!(read_up_to(&s, &c, "bob").await, 2);

    let refused = act("preview", "soon", json!({})).await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Hark-Received"),
        "{body}"
    );
}

/// Streamable HTTP, with a session (initialize; rmcp runs the call in the session, which
/// outlives the POST) and without (2026-07-28, stateless): the MCP client is killed while its
/// `check` waits. The dropped POST withdraws the check; alice's message then waits for bob, and
/// a new client's first push is held with it. No error is logged for the dead client.
#[tokio::test]
async fn streamable_http_client_killed_while_checking_misses_nothing() {
    for mode in ["legacy", "auto"] {
        let s = TestServer::start_logged(None, &[]).await;
        let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
        let mut bob = McpClient::http(&s, c.token("bob"), mode).await;
        let appended = bob.call("append", json!({"text": "my draft"})).await;
        assert!(!appended.is_error, "{}", appended.text);
        bob.start_call("check", json!({"timeout_ms": 50_000})).await;
        s.until_checking(&c, "bob", true).await;
        bob.kill().await;
        s.until_checking(&c, "bob", false).await;

        let (_, sent) = s
            .act(&c, "alice", "send", json!({"text": "did you see this?"}))
            .await;
        let seq = sent["result"]["message"]["seq"].as_u64().unwrap();
        assert_eq!(read_up_to(&s, &c, "bob").await, 0, "{mode}");
        let mut bob = McpClient::http(&s, c.token("bob"), mode).await;
        let held = bob.call("push", json!({})).await;
        assert!(!held.is_error, "{}", held.text);
        assert_eq!(held.structured["result"]["status"], "held", "{mode}");
        assert!(hands_over(&held.structured, seq), "{mode}: {}", held.text);
        assert!(
            held.text.contains("did you see this?"),
            "{mode}: {}",
            held.text
        );
        let sent = bob.call("push", json!({})).await;
        assert_eq!(sent.structured["result"]["status"], "sent", "{mode}");
        bob.close().await;
        let log = s.log();
        assert!(
            !log.contains("ERROR"),
            "{mode}: a dead client is no error:\n{log}"
        );
    }
}

/// The pids of running `hark` processes whose command line holds `arg`.
fn hark_processes_with(arg: &str) -> Vec<u32> {
    let hark = env!("CARGO_BIN_EXE_hark");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_hark = args.first().is_some_and(|a| *a == hark.as_bytes());
        let running = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false);
        if is_hark && running && args.contains(&arg.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until process `pid` has exited; returns how long that took.
async fn until_exited(pid: u32) -> Duration {
    let start = Instant::now();
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    };
    for _ in 0..3_000 {
        if gone(pid) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("process {pid} still runs");
}

/// `hark mcp --url` whose MCP client dies while `check` waits: stdin ends, the bridge withdraws
/// the check and exits; alice's message then waits for bob, and the next bridge's first push is
/// held with it.
#[tokio::test]
async fn stdio_bridge_whose_client_dies_exits_and_misses_nothing() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut bob = McpClient::stdio_remote(&s, c.token("bob")).await;
    bob.call("append", json!({"text": "my draft"})).await;
    bob.start_call("check", json!({"timeout_ms": 50_000})).await;
    s.until_checking(&c, "bob", true).await;
    let bridges = hark_processes_with(c.token("bob"));
    assert_eq!(bridges.len(), 1, "one hark mcp process: {bridges:?}");
    bob.kill().await;
    let took = until_exited(bridges[0]).await;
    eprintln!("the bridge exited {took:?} after its client was killed");
    s.until_checking(&c, "bob", false).await;

    let (_, sent) = s.act(&c, "alice", "send", json!({"text": "hello?"})).await;
    let seq = sent["result"]["message"]["seq"].as_u64().unwrap();
    let mut bob = McpClient::stdio_remote(&s, c.token("bob")).await;
    let held = bob.call("push", json!({})).await;
    assert_eq!(held.structured["result"]["status"], "held", "{}", held.text);
    assert!(hands_over(&held.structured, seq), "{}", held.text);
    let sent = bob.call("push", json!({})).await;
    assert_eq!(sent.structured["result"]["status"], "sent", "{}", sent.text);
    bob.close().await;
}

/// The next JSON-RPC message from a stdio MCP server.
async fn read_line(stdout: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("an answer within 30 s")
        .unwrap()
        .expect("a line");
    serde_json::from_str(&line).unwrap()
}

/// One JSON-RPC message to a stdio MCP server.
async fn write_line(stdin: &mut tokio::process::ChildStdin, message: Value) {
    stdin
        .write_all(format!("{message}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
}

/// `hark mcp --url` that got the answer from the server but could not write it: its client
/// stopped reading stdout. The answer was never received, so it does not count: the receipt
/// stays, the bridge ends, and the next bridge's push is held with the message.
#[tokio::test]
async fn stdio_bridge_that_cannot_write_the_answer_loses_nothing() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut bridge = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(["mcp", "--url", &s.url, "--token", c.token("bob")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = bridge.stdin.take().unwrap();
    let mut stdout = BufReader::new(bridge.stdout.take().unwrap()).lines();
    let mut stderr = bridge.stderr.take().unwrap();
    write_line(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
    )
    .await;
    assert!(read_line(&mut stdout).await["result"]["serverInfo"].is_object());
    write_line(
        &mut stdin,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    write_line(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "append", "arguments": {"text": "my draft"}}}),
    )
    .await;
    assert_eq!(read_line(&mut stdout).await["result"]["isError"], false);
    write_line(
        &mut stdin,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "check", "arguments": {"timeout_ms": 40_000}}}),
    )
    .await;
    s.until_checking(&c, "bob", true).await;
    // The client stops reading: the bridge's next write fails.
    drop(stdout);
    let (_, sent) = s.act(&c, "alice", "send", json!({"text": "news"})).await;
    let seq = sent["result"]["message"]["seq"].as_u64().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), bridge.wait())
        .await
        .expect("the bridge ends when nobody reads its answers")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut logged = String::new();
    stderr.read_to_string(&mut logged).await.unwrap();
    assert!(
        !logged.contains("ERROR"),
        "a gone client is no error:\n{logged}"
    );
    drop(stdin);
    // The server answered the check, but nobody received the answer: no receipt.
    assert_eq!(read_up_to(&s, &c, "bob").await, 0);

    let mut bob = McpClient::stdio_remote(&s, c.token("bob")).await;
    let held = bob.call("push", json!({})).await;
    assert_eq!(held.structured["result"]["status"], "held", "{}", held.text);
    assert!(hands_over(&held.structured, seq), "{}", held.text);
    let sent = bob.call("push", json!({})).await;
    assert_eq!(sent.structured["result"]["status"], "sent", "{}", sent.text);
    bob.close().await;
    // The held push's answer was confirmed by the push after it.
    assert!(read_up_to(&s, &c, "bob").await >= seq);
}
