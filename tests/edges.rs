//! The server's edges on the real binary (issue 12): connections, idle timeouts, shutdown, the
//! database lock and the open file limit.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (bounded, so a server that never closes fails
/// the test instead of hanging it) and returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes the connection");
    seen
}

/// The body of a raw HTTP/1.1 answer, as JSON.
fn json_body(answer: &[u8]) -> Value {
    let text = String::from_utf8_lossy(answer);
    let (_, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {text}"))
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_answered_503_json_and_the_slot_comes_back() {
    let s = TestServer::start_with(Some("[limits]\nmax_connections = 3\n"), &[]).await;
    let addr = addr(&s);
    // Three connections that say nothing hold every slot (the kernel queues connections, and
    // the server accepts them in order, so these are accepted before the next one).
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut extra).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let body = json_body(&answer);
    assert_eq!(body["error"]["code"], "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 connections") && message.contains("max_connections"));

    // A holder goes away: its slot serves the next client.
    drop(holders.pop());
    let mut served = false;
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut stream).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a freed slot serves a new connection");
}

/// HTTP/2's client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// The types of the HTTP/2 frames in `bytes`.
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    types
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_with_goaway_but_not_while_a_request_runs() {
    let s = TestServer::start_with(Some("[limits]\nidle_timeout_ms = 300\n"), &[]).await;
    let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
    stream.write_all(H2_PREFACE).await.unwrap();
    let seen = read_until_closed(&mut stream).await;
    const GOAWAY: u8 = 0x7;
    assert!(
        frame_types(&seen).contains(&GOAWAY),
        "{:?}",
        frame_types(&seen)
    );

    // A `check` that waits longer than the idle timeout keeps its connection: it is in flight.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let c = s.create(&[("alice", "human")]).await;
    let response = client
        .post(format!("{}/v1/conversations/{}/check", s.url, c.id))
        .bearer_auth(c.token("alice"))
        .json(&json!({"timeout_ms": 1500}))
        .send()
        .await
        .expect("the connection stays open while the check waits");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["result"]["timed_out"], true, "{envelope}");
}

#[tokio::test]
async fn a_request_whose_first_bytes_dribble_in_is_served() {
    let s = TestServer::start().await;
    // One byte, a pause, then the rest: the bytes read to tell the protocol are not lost.
    for (first, rest) in [
        (
            &b"G"[..],
            &b"ET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        ),
        (&b"P"[..], &H2_PREFACE[1..]),
    ] {
        let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
        stream.write_all(first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(rest).await.unwrap();
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        if first == b"G" {
            assert!(
                answer[..n].starts_with(b"HTTP/1.1 200"),
                "{:?}",
                &answer[..n]
            );
        } else {
            const SETTINGS: u8 = 0x4;
            assert_eq!(frame_types(&answer[..n]).first(), Some(&SETTINGS));
        }
    }
}

/// User plus system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn connections_that_sent_one_byte_cost_no_polling() {
    let s = TestServer::start().await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
        stream.write_all(b"P").await.unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ticks(s.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(s.pid()) - before;
    // Polling every 1 ms, 300 connections made 600,000 wake-ups in these 2 s (well over a
    // second of CPU); waiting for bytes makes none. 50 ticks (0.5 s at 100 Hz) is far from both.
    assert!(used < 50, "{used} clock ticks of CPU while idle");
    // The server still answers.
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sigterm_closes_an_event_stream_that_stopped_reading_after_the_drain_time() {
    let s = TestServer::start_with(
        Some(
            "[server]\nmax_body_bytes = 4000000\nrate_limit_per_s = 0\n\
             [limits]\nshutdown_drain_ms = 500\nmax_append_chars = 1000000\n\
             max_draft_chars = 1000000\n",
        ),
        &[],
    )
    .await;
    let mut s = s;
    let c = s.create(&[("alice", "human"), ("bob", "human")]).await;
    let big = "x".repeat(1_000_000);
    for _ in 0..12 {
        let (status, body) = s.act(&c, "bob", "send", json!({"text": big})).await;
        assert_eq!(status, 200, "{body}");
    }
    // An event stream whose client reads nothing: 12 MB of replay fill every buffer between.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr(&s).parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /v1/conversations/{}/events?after=0 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\n\r\n",
        c.id,
        c.token("alice")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // `terminate` fails the test if the process is still running 20 s after SIGTERM.
    let code = s.terminate().await;
    assert_eq!(code, Some(0));
    drop(stream);
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused_with_a_sentence() {
    let mut s = TestServer::start().await;
    let c = s.create(&[("alice", "human")]).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(s.db())
        .env_remove("HARK_ADMIN_TOKEN")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second server stops at once")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by another hark process")
            && stderr.contains("one server per database file"),
        "{stderr}"
    );
    // The first one is unaffected; once it is gone (even killed), the file is free again.
    let (status, _) = s.act(&c, "alice", "preview", json!({})).await;
    assert_eq!(status, 200);
    s.kill9().await;
    s.restart().await;
    let (status, _) = s.act(&c, "alice", "preview", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Started with a low soft limit, as many systems start services.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\" serve --listen 127.0.0.1:0 --db \"$1\"")
        .arg(env!("CARGO_BIN_EXE_hark"))
        .arg(dir.path().join("hark.db"))
        .env_remove("HARK_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .expect("the server starts")
        .unwrap();
    assert!(line.starts_with("hark listening on"), "{line}");
    let pid = child.id().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = row.split_whitespace().skip(3).take(2).collect();
    assert_ne!(numbers[0], "256", "{row}");
    assert_eq!(numbers[0], numbers[1], "soft equals hard: {row}");
    child.kill().await.unwrap();
}

/// Sends `request` on `stream` and reads one answer: its head (lowercased) and body.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (String, Vec<u8>) {
    stream.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return (head, seen[end + 4..end + 4 + length].to_vec());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "the connection closed before the answer");
        seen.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn an_answer_before_the_body_says_connection_close_and_one_after_it_keeps_the_connection() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human")]).await;
    let path = format!("/v1/conversations/{}/append", c.id);
    // A body read to its end: the connection serves the next request.
    let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
    let bad_json = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 5\r\n\r\n{{\"te}}",
        c.token("alice")
    );
    let (head, body) = exchange(&mut stream, bad_json.as_bytes()).await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("bad_request"));
    let (head, _) = exchange(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // Refused before the body arrived (401, 404, 413, 415): the answer says the connection ends.
    let cases = [
        ("401", format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")),
        ("404", "POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n".to_owned()),
        ("413", format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 900000000\r\n\r\n", c.token("alice"))),
        ("415", format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n", c.token("alice"))),
    ];
    for (status, request) in cases {
        let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
        let (head, body) = exchange(&mut stream, request.as_bytes()).await;
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(head.contains("connection: close"), "{status}: {head}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn open_loopback_mode_refuses_foreign_hosts_cross_site_requests_and_non_json_writes() {
    let s = TestServer::start().await;
    let port = s.url.rsplit(':').next().unwrap().to_owned();
    let create = json!({"participants": [{"name": "alice", "kind": "human"}]}).to_string();
    let post = |host: &str, extra: &str, content_type: &str| {
        format!(
            "POST /v1/conversations HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Type: \
             {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{create}",
            create.len()
        )
    };
    let local = format!("127.0.0.1:{port}");
    let cases = [
        // What a plain HTML form or a text/plain fetch can send cross-site without asking.
        (post(&local, "", "text/plain"), "415"),
        (post(&local, "", "application/x-www-form-urlencoded"), "415"),
        (post(&local, "", "multipart/form-data; boundary=x"), "415"),
        // A page whose DNS name now points at 127.0.0.1 still sends its own name.
        (
            post(&format!("evil.example:{port}"), "", "application/json"),
            "403",
        ),
        (post("127.0.0.1:1", "", "application/json"), "403"),
        (
            format!(
                "GET /v1/agents HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n"
            ),
            "403",
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: evil.example:{port}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
            "403",
        ),
        // Cross-site, as browsers say it.
        (
            post(
                &local,
                "Origin: http://evil.example\r\n",
                "application/json",
            ),
            "403",
        ),
        (post(&local, "Origin: null\r\n", "application/json"), "403"),
        (
            post(&local, "Sec-Fetch-Site: cross-site\r\n", "application/json"),
            "403",
        ),
        (
            post(&local, "Sec-Fetch-Site: same-site\r\n", "application/json"),
            "403",
        ),
        // The web chat's own requests: same origin.
        (
            post(
                &local,
                &format!("Origin: http://{local}\r\nSec-Fetch-Site: same-origin\r\n"),
                "application/json",
            ),
            "201",
        ),
        (
            post(
                &format!("localhost:{port}"),
                "",
                "application/json; charset=utf-8",
            ),
            "201",
        ),
        (post("localhost", "", "application/json"), "201"),
        (
            post(&format!("[::1]:{port}"), "", "application/json"),
            "201",
        ),
    ];
    for (request, status) in cases {
        let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
        let (head, body) = exchange(&mut stream, request.as_bytes()).await;
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{request}\n→ {head}"
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        if status != "201" {
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }

    // A configured name is answered on any port.
    let s =
        TestServer::start_with(Some("[server]\nallowed_hosts = [\"Chat.Example\"]\n"), &[]).await;
    let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
    let (head, _) = exchange(
        &mut stream,
        b"GET /healthz HTTP/1.1\r\nHost: chat.example:443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

#[tokio::test]
async fn requests_without_a_known_token_are_rate_limited_per_address() {
    let s = TestServer::start_with(
        Some("[server]\nrate_limit_per_s = 2\nrate_limit_burst = 5\n"),
        &[],
    )
    .await;
    let c = s.create(&[("alice", "human")]).await;
    let mut limited = 0;
    for guess in 0..30 {
        let (status, body) = s
            .get("/v1/whoami", Some(&format!("hark_guess{guess}")))
            .await;
        match status {
            401 => {}
            429 => {
                assert_eq!(body["error"]["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        limited > 0,
        "30 guesses at 2/s with a burst of 5 are limited"
    );
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(
        status, 429,
        "requests without a token share the address's allowance"
    );
    // A known token has its own allowance.
    let (status, body) = s.get("/v1/whoami", Some(c.token("alice"))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn event_streams_per_participant_are_capped_and_a_closed_one_frees_its_slot() {
    let s = TestServer::start_with(Some("[limits]\nmax_streams_per_participant = 2\n"), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "human")]).await;
    let first = s.events(&c, "alice", None).await;
    let _second = s.events(&c, "alice", None).await;
    let path = format!("/v1/conversations/{}/events", c.id);
    let (status, body) = s.get(&path, Some(c.token("alice"))).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 event streams") && message.contains("max_streams_per_participant"));
    // Another participant has slots of its own.
    let _bob = s.events(&c, "bob", None).await;
    // Alice closes one: its slot comes back once the server sees it gone.
    drop(first);
    let mut reopened = false;
    for _ in 0..200 {
        let response = s
            .client
            .get(format!("{}{path}", s.url))
            .bearer_auth(c.token("alice"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "a closed stream frees its slot");
}

/// Opens an MCP session with `token`: (status, session id, body).
async fn initialize(s: &TestServer, token: &str) -> (u16, Option<String>, Value) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}},
    });
    let response = s
        .client
        .post(format!("{}/mcp", s.url))
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, session, json)
}

#[tokio::test]
async fn mcp_sessions_are_capped_per_participant_and_in_total() {
    let s = TestServer::start_with(
        Some("[limits]\nmax_mcp_sessions_per_participant = 2\nmax_mcp_sessions = 3\n"),
        &[],
    )
    .await;
    let c = s
        .create(&[("alice", "agent"), ("bob", "agent"), ("carol", "agent")])
        .await;
    let (status, first, _) = initialize(&s, c.token("alice")).await;
    assert_eq!(status, 200);
    assert_eq!(initialize(&s, c.token("alice")).await.0, 200);
    let (status, _, body) = initialize(&s, c.token("alice")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["data"]["code"], "limit_reached");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_mcp_sessions_per_participant"),
        "{body}"
    );
    assert_eq!(initialize(&s, c.token("bob")).await.0, 200);
    let (status, _, body) = initialize(&s, c.token("carol")).await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 MCP sessions") && message.contains("max_mcp_sessions)"));
    // Ending a session frees its slot.
    let ended = s
        .client
        .delete(format!("{}/mcp", s.url))
        .bearer_auth(c.token("alice"))
        .header("mcp-session-id", first.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 204);
    assert_eq!(initialize(&s, c.token("carol")).await.0, 200);
}

#[tokio::test]
async fn participants_are_capped_added_ones_included() {
    let s = TestServer::start_with(Some("[limits]\nmax_participants = 3\n"), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "human")]).await;
    let add = |name: &str| {
        let body = json!({"name": name, "kind": "human"})
            .to_string()
            .into_bytes();
        let path = format!("/v1/conversations/{}/participants", c.id);
        let s = &s;
        async move { s.post_raw(&path, None, body).await }
    };
    assert_eq!(add("carol").await.0, 201);
    let (status, body) = add("dave").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "limit_reached");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_participants")
    );
    // Nor can a conversation start with more.
    let (status, body) = s
        .post_raw(
            "/v1/conversations",
            None,
            json!({"participants": [
                {"name": "a", "kind": "human"}, {"name": "b", "kind": "human"},
                {"name": "c", "kind": "human"}, {"name": "d", "kind": "human"}]})
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Sets or clears the immutable attribute of `path` (`chattr`, root on most Linux file
/// systems): the one way to make a file unwritable for root. `false` where it cannot be done.
fn immutable(path: &std::path::Path, on: bool) -> bool {
    std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn healthz_is_503_while_the_store_cannot_write_and_a_read_only_file_is_refused_at_start() {
    let mut s = TestServer::start().await;
    let c = s.create(&[("alice", "human")]).await;
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
    let wal = s.dir.path().join("hark.db-wal");
    if !immutable(&wal, true) {
        eprintln!(
            "skipped: chattr +i is not available here (needs root and a file system with it)"
        );
        return;
    }
    let (status, body) = s.get("/healthz", None).await;
    let (acted, _) = s.act(&c, "alice", "send", json!({"text": "lost?"})).await;
    immutable(&wal, false);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(acted, 503, "writes fail too, as healthz said");
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200, "writable again, healthy again");

    s.terminate().await;
    let db = s.db();
    assert!(immutable(&db, true));
    let started = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(&db)
        .env_remove("HARK_ADMIN_TOKEN")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), started).await;
    immutable(&db, false);
    let output = output.expect("the server stops at once").unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("read-only"), "{stderr}");
}

#[tokio::test]
async fn bench_floods_hold_what_they_say_and_measure_a_new_client() {
    for (kind, field) in [
        ("h1", "held_connections"),
        ("h2c", "held_connections"),
        ("byte", "held_connections"),
        ("mcp", "mcp_sessions"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
            .args(["bench", "--flood", "20", "--flood-kind", kind, "--json"])
            .env_remove("HARK_ADMIN_TOKEN")
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{kind}: {output:?}");
        let figures: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(figures[field], 20, "{kind}: {figures}");
        assert_eq!(figures["refused"], 0, "{kind}: {figures}");
        assert_eq!(figures["new_client_errors_flooded"], 0, "{kind}: {figures}");
        assert!(
            figures["new_client_p99_ms_flooded"].is_number(),
            "{figures}"
        );
    }
}
