//! Hostile input against the real binary: never a 500, never a crash, and the server keeps
//! serving everyone else while it happens.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes on a fresh connection and returns the response status (0 if the server
/// closed the connection without answering).
async fn raw(url: &str, request: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything: keep what it said.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        out.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

#[tokio::test]
async fn malformed_bodies_are_400_or_413_never_500() {
    let s = TestServer::start_with(Some("[server]\nrate_limit_per_s = 0\n"), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let auth = format!("Bearer {}", c.token("alice"));
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let path = format!("/v1/conversations/{}/append", c.id);
    let deep = "[".repeat(100_000);
    let deep_object = format!("{{\"text\": {}}}", "[".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", br#"{"text": "abc"#.to_vec()),
        ("invalid utf-8", b"{\"text\": \"\xff\xfe\xfd\"}".to_vec()),
        ("lone surrogate", br#"{"text": "\ud800"}"#.to_vec()),
        ("deep array", deep.into_bytes()),
        ("deep in a field", deep_object.into_bytes()),
        ("huge number", br#"{"text": 1e99999999}"#.to_vec()),
        ("array", br#"[1, 2, 3]"#.to_vec()),
        ("null", b"null".to_vec()),
        ("nul bytes", b"{\"text\": \"a\0b\"}".to_vec()),
        ("duplicate keys", br#"{"text": "a", "text": "b"}"#.to_vec()),
        ("binary", (0..=255u8).collect()),
    ];
    for (what, body) in bodies {
        let (status, text) = raw(&s.url, &request("POST", &path, &headers, &body)).await;
        assert!(
            status == 400 || status == 413,
            "{what}: expected 400, got {status}: {text}"
        );
        assert!(text.contains("\"code\""), "{what}: a JSON error: {text}");
    }
    // A body larger than the limit without a Content-Length (chunked) is refused too.
    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
        chunked.extend(std::iter::repeat_n(b'a', 100_000));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _) = raw(&s.url, &chunked).await;
    assert_eq!(status, 413);

    // Nothing of it reached alice's draft, and the server still works.
    let (status, preview) = s.act(&c, "alice", "preview", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(preview["draft"]["chars"], 0);
}

#[tokio::test]
async fn tokens_paths_and_numbers_that_try_tricks() {
    let s = TestServer::start_with(Some("[server]\nrate_limit_per_s = 0\n"), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let other = s.create(&[("mallory", "human")]).await;
    let id = &c.id;
    let alice = format!("Bearer {}", c.token("alice"));
    let mallory = format!("Bearer {}", other.token("mallory"));
    let forged = format!("Bearer {}x", c.token("alice"));
    let long_token = format!("Bearer {}", "a".repeat(10_000));
    let long_path = format!("/v1/conversations/{}", "x".repeat(60_000));
    let cases: Vec<(Vec<u8>, &[u16])> = vec![
        (request("POST", &format!("/v1/conversations/{id}/preview"), &[("Authorization", &forged)], b"{}"), &[401]),
        (request("POST", &format!("/v1/conversations/{id}/preview"), &[("Authorization", &mallory)], b"{}"), &[403]),
        (request("POST", &format!("/v1/conversations/{id}/preview"), &[("Authorization", "Basic YWxpY2U6eA==")], b"{}"), &[401]),
        (request("POST", &format!("/v1/conversations/{id}/preview"), &[("Authorization", "Bearer")], b"{}"), &[401]),
        (request("POST", &format!("/v1/conversations/{id}/preview"), &[("Authorization", &long_token)], b"{}"), &[401, 431]),
        (b"POST /v1/conversations/x/preview HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(), &[401]),
        (request("GET", &format!("/v1/conversations/{id}/../../healthz"), &[], b""), &[200, 400, 404]),
        (request("GET", &format!("/v1/conversations/{id}/%2e%2e/messages"), &[("Authorization", &alice)], b""), &[400, 404, 405]),
        (request("GET", "/v1/conversations/%00/messages", &[("Authorization", &alice)], b""), &[403, 404]),
        (request("GET", "/v1/conversations/%ff%fe", &[("Authorization", &alice)], b""), &[400, 403, 404]),
        (request("GET", &long_path, &[("Authorization", &alice)], b""), &[400, 403, 404, 414, 431]),
        (request("GET", &format!("/v1/conversations/{id}/messages?limit=99999999999999999999999"), &[("Authorization", &alice)], b""), &[400]),
        (request("GET", &format!("/v1/conversations/{id}/messages?after=-1"), &[("Authorization", &alice)], b""), &[400]),
        (request("GET", &format!("/v1/conversations/{id}/messages?limit=0&after=18446744073709551615"), &[("Authorization", &alice)], b""), &[200]),
        (request("POST", &format!("/v1/conversations/{id}/check"), &[("Authorization", &alice)], br#"{"timeout_ms": 18446744073709551615}"#), &[200]),
        (request("POST", &format!("/v1/conversations/{id}/read"), &[("Authorization", &alice)], br#"{"up_to": 18446744073709551615}"#), &[200]),
        (request("DELETE", &format!("/v1/conversations/{id}"), &[("Authorization", &alice)], b""), &[405]),
        (b"GARBAGE\r\n\r\n".to_vec(), &[0, 400]),
        (b"GET / HTTP/9.9\r\n\r\n".to_vec(), &[0, 400, 404, 505]),
    ];
    // The huge check timeout is clamped to 60 s; make it return at once by giving alice news.
    s.act(&c, "bob", "send", json!({"text": "news"})).await;
    for (index, (bytes, allowed)) in cases.iter().enumerate() {
        let (status, text) = raw(&s.url, bytes).await;
        assert!(
            allowed.contains(&status),
            "case {index}: {status} not in {allowed:?}: {text}"
        );
        assert_ne!(status, 500);
    }
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_everyone_else_is_served() {
    let s = TestServer::start_with(
        Some(
            "[server]\nrate_limit_per_s = 0\nheader_read_timeout_ms = 300\nbody_read_timeout_ms = 300\n",
        ),
        &[],
    )
    .await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let addr = s.url.trim_start_matches("http://").to_owned();

    // Two hundred connections that send half their headers and then nothing.
    let mut lorises = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST /v1/conversations HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .unwrap();
        lorises.push(stream);
    }
    // Meanwhile the server serves normal requests.
    for i in 0..20 {
        let (status, _) = s
            .act(&c, "alice", "send", json!({"text": format!("m{i}")}))
            .await;
        assert_eq!(status, 200);
    }
    // And it closes the slow connections once the header timeout passes.
    for mut stream in lorises {
        let mut buffer = Vec::new();
        // read_to_end only returns once the server has closed the connection (or reset it).
        let _closed =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buffer))
                .await
                .expect("the server closes a connection that never finishes its headers");
        let answer = String::from_utf8_lossy(&buffer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }

    // A body that never completes is refused with 408.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/conversations/{}/append HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"text\": \"",
        c.id,
        c.token("alice")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"timeout\""), "{text}");
}

#[tokio::test]
async fn event_streams_send_keep_alive_comments() {
    let s = TestServer::start_with(Some("[server]\nsse_keepalive_ms = 100\n"), &[]).await;
    let c = s.create(&[("alice", "human")]).await;
    let response = s
        .client
        .get(format!("{}/v1/conversations/{}/events", s.url, c.id))
        .bearer_auth(c.token("alice"))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut seen = Vec::new();
    use futures::StreamExt;
    while !String::from_utf8_lossy(&seen).contains(": keep-alive") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a keep-alive comment within 10 s")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&chunk);
    }
}

/// What hyper refuses before any route sees it (a head it cannot parse, a URI or headers too
/// large) is answered with a JSON error like every other error, and the connection closes.
#[tokio::test]
async fn requests_hyper_refuses_get_json_errors_too() {
    let s = TestServer::start().await;
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        (
            b"GARBAGE\x01 / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            format!(
                "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes(),
            414,
            "too_large",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many_headers}\r\n").into_bytes(),
            431,
            "too_large",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
                "a".repeat(500_000)
            )
            .into_bytes(),
            431,
            "too_large",
        ),
    ];
    for (raw_request, status, code) in cases {
        let (got, text) = raw(&s.url, &raw_request).await;
        assert_eq!(got, status, "{text}");
        let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let error: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(error["error"]["code"], code, "{body}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The server goes on serving.
    let (status, _) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
}
