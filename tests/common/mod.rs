//! Starts the real `hark` binary on port 0 with a temporary database, and talks to it.

#![allow(dead_code)]

pub mod coach;
pub mod mcp;
pub mod pg;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct TestServer {
    pub url: String,
    child: Child,
    pub dir: tempfile::TempDir,
    config: Option<String>,
    env: Vec<(String, String)>,
    /// The `--db` argument when it is not the temporary directory's `hark.db` (a PostgreSQL URL).
    db_arg: Option<String>,
    /// Where the server's stderr goes, if not to the test's.
    log: Option<PathBuf>,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(None, &[]).await
    }

    /// Starts with an optional config file body and extra environment variables.
    pub async fn start_with(config: Option<&str>, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_inner(config, env, false).await
    }

    /// As [`TestServer::start_with`], with the server's stderr (its logs) written to
    /// [`TestServer::log`] instead of the test's output.
    pub async fn start_logged(config: Option<&str>, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_inner(config, env, true).await
    }

    /// Starts on the database `db` (a PostgreSQL URL) instead of a temporary SQLite file.
    pub async fn start_on(db: &str, config: Option<&str>) -> TestServer {
        TestServer::start_inner_on(config, &[], false, Some(db.to_owned())).await
    }

    /// As [`TestServer::start_on`], with extra environment variables.
    pub async fn start_on_with(db: &str, config: Option<&str>, env: &[(&str, &str)]) -> TestServer {
        TestServer::start_inner_on(config, env, false, Some(db.to_owned())).await
    }

    async fn start_inner(config: Option<&str>, env: &[(&str, &str)], logged: bool) -> TestServer {
        TestServer::start_inner_on(config, env, logged, None).await
    }

    async fn start_inner_on(
        config: Option<&str>,
        env: &[(&str, &str)],
        logged: bool,
        db_arg: Option<String>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = config.map(str::to_owned);
        let log = logged.then(|| dir.path().join("server.log"));
        let (child, url) = spawn(
            dir.path(),
            db_arg.as_deref(),
            config.as_deref(),
            &env,
            "127.0.0.1:0",
            log.as_deref(),
        )
        .await;
        TestServer {
            url,
            child,
            dir,
            config,
            env,
            db_arg,
            log,
            client: reqwest::Client::new(),
        }
    }

    /// Everything the server logged so far (with [`TestServer::start_logged`]).
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server runs")
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("hark.db")
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Starts a new server process on the same database (after a kill or a stop).
    pub async fn restart(&mut self) {
        let (child, url) = spawn(
            self.dir.path(),
            self.db_arg.as_deref(),
            self.config.as_deref(),
            &self.env,
            "127.0.0.1:0",
            self.log.as_deref(),
        )
        .await;
        self.child = child;
        self.url = url;
    }

    /// SIGTERM, then waits for the process to exit and returns its exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().unwrap();
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .unwrap()
            .code()
    }

    pub async fn create(&self, participants: &[(&str, &str)]) -> Conversation {
        let list: Vec<Value> = participants
            .iter()
            .map(|(name, kind)| json!({"name": name, "kind": kind}))
            .collect();
        let response = self
            .client
            .post(format!("{}/v1/conversations", self.url))
            .json(&json!({"title": "test", "participants": list}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        Conversation::from_created(&response.json().await.unwrap())
    }

    /// POST an action as `who`; returns (status, body).
    pub async fn act(
        &self,
        c: &Conversation,
        who: &str,
        action: &str,
        body: Value,
    ) -> (u16, Value) {
        self.post_raw(
            &format!("/v1/conversations/{}/{action}", c.id),
            Some(c.token(who)),
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Starts a `check` (60 s) as `who` in the background; the handle yields its envelope.
    pub fn spawn_check(&self, c: &Conversation, who: &str) -> tokio::task::JoinHandle<Value> {
        let url = format!("{}/v1/conversations/{}/check", self.url, c.id);
        let (client, token) = (self.client.clone(), c.token(who).to_owned());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"timeout_ms": 60_000}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    }

    /// Polls the conversation's description until `who` is (or, with `waiting: false`, is no
    /// longer) waiting in `check`. Bounded: a check that never arrives fails the test instead
    /// of hanging it.
    pub async fn until_checking(&self, c: &Conversation, who: &str, waiting: bool) {
        let path = format!("/v1/conversations/{}", c.id);
        for _ in 0..3_000 {
            // No token: admin routes are open on a loopback test server, and not rate-limited.
            let (status, described) = self.get(&path, None).await;
            assert_eq!(status, 200, "{described}");
            let listed = described["checking"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == who);
            if listed == waiting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{who} never reached checking = {waiting}");
    }

    /// Opens the event stream of `c` as `who`, with an optional Last-Event-ID.
    pub async fn events(&self, c: &Conversation, who: &str, last_event_id: Option<u64>) -> Events {
        let mut request = self
            .client
            .get(format!("{}/v1/conversations/{}/events", self.url, c.id))
            .bearer_auth(c.token(who));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events::from_response(response)
    }
}

pub struct Conversation {
    pub id: String,
    pub tokens: Vec<(String, String)>,
}

impl Conversation {
    /// From the body of a `201` to `POST /v1/conversations`.
    pub fn from_created(body: &Value) -> Conversation {
        let tokens = body["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["token"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        Conversation {
            id: body["id"].as_str().unwrap().to_owned(),
            tokens,
        }
    }

    pub fn token(&self, who: &str) -> &str {
        &self
            .tokens
            .iter()
            .find(|(name, _)| name == who)
            .unwrap_or_else(|| panic!("no participant {who}"))
            .1
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub struct Events {
    stream: ByteStream,
    buffer: Vec<u8>,
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl Events {
    pub fn from_response(response: reqwest::Response) -> Events {
        Events {
            stream: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }

    /// The next event (keep-alive comments skipped); `None` when the stream ended. Panics after
    /// 30 s without one, so a broken server fails the test instead of hanging it.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(raw).unwrap();
                let mut event = SseEvent {
                    event: "message".into(),
                    id: None,
                    data: Value::Null,
                };
                let mut has_data = false;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(v).unwrap_or(Value::String(v.into()));
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.stream.next())
                .await
                .expect("an event within 30 s");
            match chunk {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                _ => return None,
            }
        }
    }

    /// The next `message` event's data, skipping other kinds.
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            let event = self.next().await?;
            if event.event == "message" {
                assert_eq!(
                    event.id.as_deref(),
                    Some(event.data["seq"].to_string().as_str())
                );
                return Some(event.data);
            }
        }
    }
}

async fn spawn(
    dir: &Path,
    db: Option<&str>,
    config: Option<&str>,
    env: &[(String, String)],
    listen: &str,
    log: Option<&Path>,
) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hark"));
    command
        .arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--db")
        .arg(db.map_or_else(|| dir.join("hark.db"), PathBuf::from))
        .env_remove("HARK_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            command.stderr(Stdio::from(file));
        }
        None => {
            command.stderr(Stdio::inherit());
        }
    }
    if let Some(config) = config {
        let path = dir.join("hark.toml");
        std::fs::write(&path, config).unwrap();
        command.arg("--config").arg(path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the hark binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the server says where it listens")
        .unwrap()
        .expect("a line on stdout");
    let url = line
        .strip_prefix("hark listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}
