//! The remote [`ParticipantSession`]: the HTTP API of a running `hark serve`, called with the
//! participant's token (`hark mcp --url … --token …`).
//!
//! A bridge can lose an answer after the server delivered it (its MCP client died, its stdout
//! broke), so it confirms its answers itself: every action request carries `Hark-Received: N`,
//! the cursor of the last envelope it wrote to stdout and flushed (0 for a fresh bridge). The
//! server counts what that answer handed over as heard, and hands over again whatever came in
//! an answer after it. Actions go one at a time, each only once the previous answer is written
//! or known lost, so a report never judges an answer still on its way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hark_core::protocol::Action;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use super::session::{Answer, Delivery, ParticipantSession, ToolError};
use crate::wire::{self, WireError, WireWhoami};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A participant of a conversation on another `hark serve`, reached over its HTTP API.
///
/// The token alone selects conversation and participant; the session learns both from
/// `GET /v1/whoami` on its first call and keeps them (a token never changes owner).
pub struct RemoteSession {
    client: reqwest::Client,
    base: String,
    token: String,
    me: OnceCell<Me>,
    /// The cursor of the last envelope written to the MCP client: the next `Hark-Received`.
    received: Arc<AtomicU64>,
    /// Held from an action's request until its answer is written or lost.
    turn: Arc<Mutex<()>>,
}

struct Me {
    conversation: String,
    name: String,
}

impl RemoteSession {
    /// `base_url` is the server's root, e.g. `http://127.0.0.1:7878`.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ToolError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(ToolError::new(
                "bad_request",
                format!(
                    "The server URL must start with http:// (this build speaks plain HTTP): \
                     got {base:?}."
                ),
            ));
        }
        if token.trim().is_empty() {
            return Err(ToolError::new(
                "unauthorized",
                "The participant token is empty: pass --token (or HARK_TOKEN).",
            ));
        }
        // No overall timeout: `check` may legitimately wait a minute, and a push that is slow
        // to commit must not be reported as failed while it may still succeed.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ToolError::new("unavailable", format!("Cannot set up HTTP: {e}.")))?;
        Ok(RemoteSession {
            client,
            base,
            token: token.trim().to_owned(),
            me: OnceCell::new(),
            received: Arc::new(AtomicU64::new(0)),
            turn: Arc::new(Mutex::new(())),
        })
    }

    async fn me(&self) -> Result<&Me, ToolError> {
        self.me
            .get_or_try_init(|| async {
                let who = self.get("/v1/whoami").await?;
                Me::from_whoami(&who)
            })
            .await
    }

    async fn get(&self, path: &str) -> Result<Value, ToolError> {
        let request = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, ToolError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                ToolError::new(
                    "unavailable",
                    format!(
                        "The server at {} answered something that is not JSON.",
                        self.base
                    ),
                )
            });
        }
        // Hand the server's own code and sentence through unchanged.
        let error = json
            .and_then(|j| serde_json::from_value::<WireError>(j).ok())
            .map(|e| ToolError::new(e.error.code, e.error.message));
        Err(error.unwrap_or_else(|| {
            ToolError::new(
                "unavailable",
                format!(
                    "The server at {} answered {status} without an error body: is this a hark \
                     server?",
                    self.base
                ),
            )
        }))
    }

    fn unreachable(&self, error: &reqwest::Error) -> ToolError {
        ToolError::new(
            "unavailable",
            format!(
                "Cannot reach the hark server at {} ({error}); nothing was changed. Check that \
                 `hark serve` is running, then retry.",
                self.base
            ),
        )
    }
}

impl Me {
    fn from_whoami(who: &Value) -> Result<Me, ToolError> {
        match serde_json::from_value::<WireWhoami>(who.clone()) {
            Ok(who) => Ok(Me {
                conversation: who.conversation.id,
                name: who.you.name,
            }),
            Err(_) => Err(ToolError::new(
                "unavailable",
                "The server's /v1/whoami answer lacks the conversation or the name: is it an \
                 older hark?",
            )),
        }
    }
}

#[async_trait]
impl ParticipantSession for RemoteSession {
    async fn act(&self, action: Action) -> Result<Answer, ToolError> {
        let me = self.me().await?;
        let (kind, body) = wire::encode_action(&action);
        let url = format!(
            "{}/v1/conversations/{}/{}",
            self.base,
            me.conversation,
            kind.as_str()
        );
        // One action at a time: the report this request carries must cover every earlier
        // answer, written or lost, never one still on its way to the client.
        let turn = Arc::clone(&self.turn).lock_owned().await;
        let received = self.received.load(Ordering::SeqCst);
        let request = self
            .client
            .post(url)
            .bearer_auth(&self.token)
            .header(wire::RECEIVED_HEADER, received)
            .json(&body);
        let envelope = self.send(request).await?;
        let cursor = envelope.get("cursor").and_then(Value::as_u64);
        let written = Arc::clone(&self.received);
        // Written: the next request reports it. Dropped unwritten: the next request reports the
        // older cursor, and the server hands this answer's messages over again.
        let delivery = Delivery::new(move || {
            if let Some(cursor) = cursor {
                written.store(cursor, Ordering::SeqCst);
            }
            drop(turn);
        });
        Ok(Answer { envelope, delivery })
    }

    async fn history(&self, after: u64, limit: Option<usize>) -> Result<Value, ToolError> {
        let me = self.me().await?;
        let mut path = format!(
            "/v1/conversations/{}/messages?after={after}",
            me.conversation
        );
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        self.get(&path).await
    }

    async fn whoami(&self) -> Result<Value, ToolError> {
        let who = self.get("/v1/whoami").await?;
        // Remember who we are if this is the first call.
        let _ = self
            .me
            .get_or_try_init(|| async { Me::from_whoami(&who) })
            .await;
        Ok(who)
    }

    fn participant(&self) -> Option<&str> {
        self.me.get().map(|me| me.name.as_str())
    }
}
