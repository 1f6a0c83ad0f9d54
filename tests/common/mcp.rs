//! MCP clients this project did not write: the official MCP Python SDK, pinned in
//! `tests/mcp/requirements.txt` and driven line by line through `tests/mcp/driver.py`.
//!
//! The SDK is installed once into a virtual environment under the target directory
//! (`target/tmp/mcp-venv`), guarded by a lock file so that parallel tests and test binaries do
//! not race; `.ci/run` performs the same install beforehand.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::TestServer;

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/requirements.txt");
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp/driver.py");
/// Longer than any tool call a test makes (`check` waits at most 60 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// The venv's python, with the pinned MCP SDK installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(install_sdk)
}

fn install_sdk() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).unwrap();
    let venv = tmp.join("mcp-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(".hark-requirements");
    let wanted = std::fs::read_to_string(REQUIREMENTS).unwrap();
    // Another test binary (or .ci/run) may be installing right now: take turns.
    let lock = std::fs::File::create(tmp.join("mcp-venv.lock")).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let run = |command: &mut std::process::Command, what: &str| {
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run it ({e}); python3 is needed"));
        assert!(
            output.status.success(),
            "{what} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(
        std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "python3 -m venv",
    );
    run(
        std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            REQUIREMENTS,
        ]),
        "pip install -r tests/mcp/requirements.txt",
    );
    std::fs::File::create(&marker)
        .unwrap()
        .write_all(wanted.as_bytes())
        .unwrap();
    python
}

/// One MCP client process: the Python SDK connected to hark, taking commands from the test.
pub struct McpClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    pub protocol_version: String,
}

/// A tool result as the client received it.
#[derive(Debug, Clone)]
pub struct ToolResult {
    pub is_error: bool,
    pub text: String,
    pub structured: Value,
}

impl McpClient {
    /// Streamable HTTP at `/mcp` of `server`, as the owner of `token`. `mode` is the SDK's
    /// connect mode: `auto` (the 2026-07-28 protocol, stateless) or `legacy` (initialize and
    /// a session).
    pub async fn http(server: &TestServer, token: &str, mode: &str) -> McpClient {
        let url = format!("{}/mcp", server.url);
        McpClient::spawn(&["http", &url, token, mode]).await
    }

    /// stdio, launching `hark mcp --url … --token …` against `server`.
    pub async fn stdio_remote(server: &TestServer, token: &str) -> McpClient {
        McpClient::stdio(&["mcp", "--url", &server.url, "--token", token]).await
    }

    /// stdio, launching the `hark` binary with `args`.
    pub async fn stdio(args: &[&str]) -> McpClient {
        let mut argv = vec!["stdio", "auto", "--", env!("CARGO_BIN_EXE_hark")];
        argv.extend_from_slice(args);
        McpClient::spawn(&argv).await
    }

    async fn spawn(args: &[&str]) -> McpClient {
        let python = python();
        let mut child = Command::new(python)
            .arg(DRIVER)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the MCP driver starts");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Keep the client's stderr for failure messages instead of spilling it into test output.
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut client = McpClient {
            child,
            stdin,
            lines,
            stderr,
            protocol_version: String::new(),
        };
        let ready = client.recv().await;
        assert_eq!(ready["ready"], true, "driver did not connect: {ready}");
        client.protocol_version = ready["protocol_version"].as_str().unwrap().to_owned();
        client
    }

    pub async fn send(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The driver's next answer; panics on an exception (see [`McpClient::recv_raw`]).
    pub async fn recv(&mut self) -> Value {
        let value = self.recv_raw().await;
        if let Some(exception) = value.get("exception") {
            panic!(
                "the MCP client raised {exception}; its stderr:\n{}",
                self.stderr()
            );
        }
        value
    }

    /// The driver's next answer, an exception included.
    pub async fn recv_raw(&mut self) -> Value {
        let line = tokio::time::timeout(ANSWER_TIMEOUT, self.lines.next_line()).await;
        let line = match line {
            Ok(Ok(Some(line))) => line,
            Ok(_) => panic!("the MCP client ended; its stderr:\n{}", self.stderr()),
            Err(_) => panic!(
                "no answer from the MCP client; its stderr:\n{}",
                self.stderr()
            ),
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON from the driver ({e}): {line}"))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn list_tools(&mut self) -> Vec<Value> {
        self.send(json!({"op": "list_tools"})).await;
        let answer = self.recv().await;
        answer["tools"].as_array().unwrap().clone()
    }

    pub async fn call(&mut self, tool: &str, args: Value) -> ToolResult {
        self.start_call(tool, args).await;
        self.finish_call().await
    }

    /// Sends a tool call without waiting for its result (see [`McpClient::finish_call`]).
    pub async fn start_call(&mut self, tool: &str, args: Value) {
        self.send(json!({"op": "call", "tool": tool, "args": args}))
            .await;
    }

    pub async fn finish_call(&mut self) -> ToolResult {
        let answer = self.recv().await;
        ToolResult {
            is_error: answer["is_error"].as_bool().unwrap(),
            text: answer["text"].as_str().unwrap().to_owned(),
            structured: answer["structured"].clone(),
        }
    }

    /// The client process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the MCP client runs")
    }

    /// SIGKILL: the client dies at once, as a crashed MCP host does. Its connections close and
    /// the stdin of a stdio server it launched ends; nothing else tells hark.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Closes the client and waits for it (and the stdio server it launched) to exit.
    pub async fn close(mut self) {
        self.send(json!({"op": "close"})).await;
        let status = tokio::time::timeout(ANSWER_TIMEOUT, self.child.wait())
            .await
            .expect("the MCP client exits after close")
            .unwrap();
        assert!(status.success(), "MCP client failed:\n{}", self.stderr());
    }
}
