//! The server over a store that can be made to fail: it answers 503 `unavailable`, loses nothing
//! and keeps serving once the store is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use hark_core::protocol::{Effect, Message, ParticipantName};
use hark_server::{Server, ServerConfig};
use hark_store::{
    AgentParticipant, AgentState, NewAttachment, NewConversation, NewParticipant, SqliteStore,
    Store, StoreError, StoredAttachment, StoredConversation, TokenHash, TokenOwner,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// SQLite, except that writes fail while `broken` is set, and reads of old messages while
/// `reads_broken` is.
struct Flaky {
    inner: SqliteStore,
    broken: AtomicBool,
    reads_broken: AtomicBool,
}

impl Flaky {
    fn open(path: std::path::PathBuf) -> Flaky {
        Flaky {
            inner: SqliteStore::open(path).unwrap(),
            broken: AtomicBool::new(false),
            reads_broken: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk unplugged (test)".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Flaky {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    async fn create_conversation(&self, c: NewConversation) -> Result<(), StoreError> {
        self.check()?;
        self.inner.create_conversation(c).await
    }
    async fn add_participant(&self, c: &str, p: NewParticipant) -> Result<(), StoreError> {
        self.check()?;
        self.inner.add_participant(c, p).await
    }
    async fn load_conversation(&self, id: &str) -> Result<Option<StoredConversation>, StoreError> {
        self.inner.load_conversation(id).await
    }
    async fn conversation_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.conversation_exists(id).await
    }
    async fn find_token(&self, hash: TokenHash) -> Result<Option<TokenOwner>, StoreError> {
        self.inner.find_token(hash).await
    }
    async fn messages_after(
        &self,
        c: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        if self.reads_broken.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("read failed (test)".into()));
        }
        self.inner.messages_after(c, after, limit).await
    }
    async fn commit(&self, c: &str, effects: Vec<Effect>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.commit(c, effects).await
    }
    async fn agent_participants(&self) -> Result<Vec<AgentParticipant>, StoreError> {
        self.inner.agent_participants().await
    }
    async fn load_agent_state(
        &self,
        c: &str,
        p: &ParticipantName,
    ) -> Result<Option<AgentState>, StoreError> {
        self.inner.load_agent_state(c, p).await
    }
    async fn save_agent_state(
        &self,
        c: &str,
        p: &ParticipantName,
        s: AgentState,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.save_agent_state(c, p, s).await
    }
    async fn put_attachment(&self, c: &str, a: NewAttachment) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_attachment(c, a).await
    }
    async fn attachment(&self, c: &str, id: &str) -> Result<Option<StoredAttachment>, StoreError> {
        self.inner.attachment(c, id).await
    }
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A server on a [`Flaky`] store with one conversation of alice (a person) and bob (a model).
struct Fixture {
    store: Arc<Flaky>,
    client: reqwest::Client,
    base: String,
    id: String,
    alice: String,
    bob: String,
    shutdown: CancellationToken,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Fixture {
    async fn start(dir: &std::path::Path, config: ServerConfig) -> Fixture {
        let store = Arc::new(Flaky::open(dir.join("t.db")));
        let shutdown = CancellationToken::new();
        let server = Server::new(store.clone(), config, shutdown.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let serving = tokio::spawn(server.serve(listener));
        let client = reqwest::Client::new();
        let (_, created) = post(
            &client,
            format!("{base}/v1/conversations"),
            None,
            json!({
                "participants": [{"name": "alice", "kind": "human"}, {"name": "bob", "kind": "agent"}]
            }),
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
            store,
            client,
            base,
            shutdown,
            serving,
        }
    }

    /// Posts `body` to the conversation's `action` route with `token`.
    async fn act(&self, action: &str, token: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/v1/conversations/{}/{action}", self.base, self.id);
        post(&self.client, url, Some(token), body).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.serving.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_failing_store_answers_unavailable_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::start(dir.path(), ServerConfig::default()).await;

    let (status, _) = f.act("append", &f.bob, json!({"text": "draft "})).await;
    assert_eq!(status, 200);
    let (status, _) = f.act("send", &f.alice, json!({"text": "kept"})).await;
    assert_eq!(status, 200);

    f.store.broken.store(true, Ordering::SeqCst);
    let (status, body) = f.act("send", &f.alice, json!({"text": "lost?"})).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, body) = f.act("append", &f.bob, json!({"text": "more"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    let health = f
        .client
        .get(format!("{}/healthz", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    f.store.broken.store(false, Ordering::SeqCst);
    // Nothing of the failed calls took effect: bob's draft is as it was, and the message that
    // was refused does not exist; bob's cursor did not move, so "kept" is still handed over.
    let (status, preview) = f.act("preview", &f.bob, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(preview["result"]["text"], "draft ");
    let incoming: Vec<&str> = preview["incoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(incoming, ["kept"]);
    let (status, sent) = f.act("send", &f.alice, json!({"text": "after"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        sent["result"]["message"]["seq"], 2,
        "no seq was burnt by the failure"
    );

    f.stop().await;
}

/// A participant far behind a small log window needs old messages read from the store before
/// its request: if that read fails it gets 503 and nothing moves; once reads work again it gets
/// them all, in order, none skipped.
#[tokio::test]
async fn a_failing_read_of_old_messages_answers_unavailable_and_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::default();
    config.limits.log_window_messages = 2;
    config.limits.max_incoming = 2;
    let f = Fixture::start(dir.path(), config).await;
    for n in 1..=7 {
        let (status, _) = f
            .act("send", &f.alice, json!({"text": format!("a{n}")}))
            .await;
        assert_eq!(status, 200);
    }

    f.store.reads_broken.store(true, Ordering::SeqCst);
    let (status, body) = f.act("preview", &f.bob, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    f.store.reads_broken.store(false, Ordering::SeqCst);

    let mut heard = Vec::new();
    for _ in 0..4 {
        let (status, body) = f.act("preview", &f.bob, json!({})).await;
        assert_eq!(status, 200, "{body}");
        heard.extend(
            body["incoming"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(heard, ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]);

    f.stop().await;
}
