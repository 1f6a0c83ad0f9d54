//! The registry of live conversations (issue 12, rows 1 and 7): loading one conversation never
//! delays another, concurrent requests share one load, and an idle conversation is unloaded and
//! comes back on the next request with nothing lost. On tokio's paused clock, over the in-memory
//! store; a load can be held at the store until the test releases it.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hark_core::protocol::{Action, Confirm, Effect, Message, ParticipantKind, ParticipantName};
use hark_server::app::{App, Created, Participant, ParticipantSpec};
use hark_server::{Server, ServerConfig};
use hark_store::{
    AgentParticipant, AgentState, NewAttachment, NewConversation, NewParticipant, Store,
    StoreError, StoredAttachment, StoredConversation, TokenHash, TokenOwner,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use support::memory::MemoryStore;

/// The in-memory store, whose `load_conversation` of a held id waits until released, and which
/// counts the loads of each id.
#[derive(Clone)]
struct Gated {
    inner: MemoryStore,
    gates: Arc<Mutex<HashMap<String, Arc<Gate>>>>,
    loads: Arc<Mutex<HashMap<String, usize>>>,
}

#[derive(Default)]
struct Gate {
    started: Notify,
    release: Notify,
}

impl Gated {
    fn new() -> Gated {
        Gated {
            inner: MemoryStore::new(),
            gates: Arc::default(),
            loads: Arc::default(),
        }
    }

    /// The next loads of `id` wait for [`Gate::release`]; [`Gate::started`] fires when one began.
    fn hold(&self, id: &str) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.gates
            .lock()
            .unwrap()
            .insert(id.to_owned(), Arc::clone(&gate));
        gate
    }

    fn loads(&self, id: &str) -> usize {
        self.loads.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Store for Gated {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn create_conversation(&self, c: NewConversation) -> Result<(), StoreError> {
        self.inner.create_conversation(c).await
    }
    async fn add_participant(&self, c: &str, p: NewParticipant) -> Result<(), StoreError> {
        self.inner.add_participant(c, p).await
    }
    async fn load_conversation(&self, id: &str) -> Result<Option<StoredConversation>, StoreError> {
        *self.loads.lock().unwrap().entry(id.to_owned()).or_default() += 1;
        let gate = self.gates.lock().unwrap().get(id).cloned();
        if let Some(gate) = gate {
            gate.started.notify_one();
            gate.release.notified().await;
        }
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
        self.inner.messages_after(c, after, limit).await
    }
    async fn commit(&self, c: &str, effects: Vec<Effect>) -> Result<(), StoreError> {
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
        self.inner.save_agent_state(c, p, s).await
    }
    async fn put_attachment(&self, c: &str, a: NewAttachment) -> Result<(), StoreError> {
        self.inner.put_attachment(c, a).await
    }
    async fn attachment(&self, c: &str, id: &str) -> Result<Option<StoredAttachment>, StoreError> {
        self.inner.attachment(c, id).await
    }
}

/// Longer than anything the tests wait for: on the paused clock a request that hangs reaches
/// it at once, and the test fails instead of hanging.
const NEVER: Duration = Duration::from_secs(24 * 3600);
const IDLE: Duration = Duration::from_secs(60);

struct Fixture {
    server: Server,
    store: Gated,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Fixture {
    fn new() -> Fixture {
        let shutdown = CancellationToken::new();
        let store = Gated::new();
        let config = ServerConfig {
            idle_conversation_ms: IDLE.as_millis() as u64,
            ..ServerConfig::default()
        };
        let server = Server::new(Arc::new(store.clone()), config, shutdown.clone());
        Fixture {
            server,
            store,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn app(&self) -> &App {
        self.server.app()
    }

    /// A conversation of alice and bob (created in the store, not loaded).
    async fn conversation(&self) -> Created {
        let app = self.app();
        let admin = app.admin(&app.authenticate(None).await.unwrap()).unwrap();
        let spec = |name: &str| ParticipantSpec {
            name: ParticipantName::parse(name).unwrap(),
            kind: ParticipantKind::Human,
            agent: None,
            display_name: None,
        };
        app.create(&admin, None, vec![spec("alice"), spec("bob")])
            .await
            .unwrap()
    }

    async fn who(&self, created: &Created, index: usize) -> Participant {
        let app = self.app();
        let caller = app
            .authenticate(Some(&created.participants[index].token))
            .await
            .unwrap();
        app.participant(&caller, &created.id).await.unwrap()
    }

    async fn describe(&self, id: &str) -> u64 {
        let app = self.app();
        let caller = app.authenticate(None).await.unwrap();
        let reader = app.reader(&caller, id).unwrap();
        app.describe(&reader).await.unwrap().last_seq
    }
}

async fn send(app: &App, who: &Participant, text: &str) -> u64 {
    let envelope = app
        .act(
            who,
            Action::Send {
                text: text.into(),
                client_id: None,
                attachment: None,
            },
        )
        .await
        .unwrap();
    match envelope.result {
        hark_core::protocol::ActionResult::Sent { message, .. } => message.seq,
        other => panic!("not sent: {other:?}"),
    }
}

fn texts(envelope: &hark_core::protocol::Envelope) -> Vec<String> {
    envelope.incoming.iter().map(|m| m.text.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_slow_load_delays_no_other_conversation_and_is_shared() {
    let f = Fixture::new();
    let a = f.conversation().await;
    let b = f.conversation().await;
    let gate = f.store.hold(&a.id);

    // Two requests for A: both wait for the one load the store holds.
    let first = tokio::spawn({
        let app = f.app().clone();
        let id = a.id.clone();
        async move {
            let caller = app.authenticate(None).await.unwrap();
            app.describe(&app.reader(&caller, &id).unwrap())
                .await
                .unwrap()
        }
    });
    gate.started.notified().await;
    let second = tokio::spawn({
        let app = f.app().clone();
        let id = a.id.clone();
        async move {
            let caller = app.authenticate(None).await.unwrap();
            app.describe(&app.reader(&caller, &id).unwrap())
                .await
                .unwrap()
        }
    });

    // B loads and answers while A's load is still held.
    let described = tokio::time::timeout(NEVER, f.describe(&b.id))
        .await
        .expect("B waited for A's load");
    assert_eq!(described, 0);
    assert!(!first.is_finished() && !second.is_finished());

    gate.release.notify_one();
    assert_eq!(first.await.unwrap().id, a.id);
    assert_eq!(second.await.unwrap().id, a.id);
    assert_eq!(f.store.loads(&a.id), 1, "the two requests shared one load");
    assert_eq!(f.app().loaded_conversations(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_idle_conversation_is_unloaded_and_comes_back_whole() {
    let f = Fixture::new();
    let c = f.conversation().await;
    let (alice, bob) = (f.who(&c, 0).await, f.who(&c, 1).await);
    let app = f.app();
    send(app, &alice, "before the pause").await;
    app.act(
        &alice,
        Action::Append {
            text: "a draft".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(app.loaded_conversations(), 1);

    tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
    assert_eq!(app.loaded_conversations(), 1, "not idle long enough yet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.loaded_conversations(), 0, "idle: unloaded");
    assert_eq!(f.store.loads(&c.id), 1);

    // The next request loads it again: the message, the draft and the cursors are all there.
    let checked = app
        .act(
            &bob,
            Action::Check {
                timeout_ms: Some(0),
            },
        )
        .await
        .unwrap();
    assert_eq!(texts(&checked), ["before the pause"]);
    assert_eq!(f.store.loads(&c.id), 2);
    let preview = app.act(&alice, Action::Preview).await.unwrap();
    assert_eq!(
        preview.result,
        hark_core::protocol::ActionResult::Preview {
            text: "a draft".into()
        }
    );
    assert_eq!(send(app, &alice, "after").await, 2);
    assert_eq!(app.loaded_conversations(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_listener_keeps_it_loaded_until_it_goes() {
    let f = Fixture::new();
    let c = f.conversation().await;
    let bob = f.who(&c, 1).await;
    let app = f.app();
    let subscription = app.subscribe(&bob).await.unwrap();
    tokio::time::sleep(IDLE * 10).await;
    assert_eq!(app.loaded_conversations(), 1, "an event stream listens");
    drop(subscription);
    tokio::time::sleep(IDLE * 2 + Duration::from_secs(1)).await;
    assert_eq!(app.loaded_conversations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_check_keeps_it_loaded_and_is_answered() {
    let f = Fixture::new();
    let c = f.conversation().await;
    let (alice, bob) = (f.who(&c, 0).await, f.who(&c, 1).await);
    let app = f.app().clone();
    // The longest check there is, and nothing else happening meanwhile.
    let waiting = tokio::spawn({
        let app = app.clone();
        async move {
            app.act(
                &bob,
                Action::Check {
                    timeout_ms: Some(60_000),
                },
            )
            .await
            .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(app.loaded_conversations(), 1);
    send(&app, &alice, "wake up").await;
    assert_eq!(texts(&waiting.await.unwrap()), ["wake up"]);
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_result_keeps_it_loaded_and_a_lost_one_comes_again() {
    let f = Fixture::new();
    let c = f.conversation().await;
    let (alice, bob) = (f.who(&c, 0).await, f.who(&c, 1).await);
    let app = f.app();
    send(app, &alice, "hello").await;
    let acted = app
        .act_with(
            &bob,
            Action::Check {
                timeout_ms: Some(0),
            },
            Confirm::Transport,
        )
        .await
        .unwrap();
    assert!(acted.ticket.is_pending());
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(
        app.loaded_conversations(),
        1,
        "the result's fate is not known yet"
    );
    drop(acted); // lost on the way
    tokio::time::sleep(IDLE * 2 + Duration::from_secs(1)).await;
    assert_eq!(app.loaded_conversations(), 0);
    let again = app
        .act(
            &bob,
            Action::Check {
                timeout_ms: Some(0),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        texts(&again),
        ["hello"],
        "the lost result's message comes again"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_racing_the_unload_are_never_lost_nor_doubled() {
    let f = Fixture::new();
    let c = f.conversation().await;
    let (alice, bob) = (f.who(&c, 0).await, f.who(&c, 1).await);
    let app = f.app().clone();
    let mut sent = 0;
    // Requests arriving just before, at and just after the instant the task would stop, alone
    // and in company.
    for offset_ms in [-2i64, -1, 0, 1, 2] {
        let pause = IDLE.as_millis() as i64 + offset_ms;
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
        let mut calls = Vec::new();
        for i in 0..4 {
            let (app, who) = (app.clone(), if i % 2 == 0 { &alice } else { &bob }.clone());
            calls.push(tokio::spawn(async move {
                send(&app, &who, &format!("at {offset_ms} #{i}")).await
            }));
        }
        for call in calls {
            call.await.unwrap();
            sent += 1;
        }
    }
    let history = app.history(&bob, 0, Some(1000)).await.unwrap();
    let seqs: Vec<u64> = history.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=sent).collect::<Vec<u64>>());
    assert!(
        f.store.loads(&c.id) > 1,
        "the conversation was unloaded in between (else this tests nothing)"
    );
}
