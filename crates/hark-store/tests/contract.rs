//! The store's contract, one suite for both backends: every test runs against SQLite (a file in a
//! temporary directory) and against PostgreSQL (a fresh schema in the database named by
//! `HARK_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`; `.ci/run` starts the
//! server). A PostgreSQL that cannot be reached fails the PostgreSQL half: it is never skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hark_core::protocol::{
    AttachmentRef, Effect, LogPrefix, Message, ParticipantKind, ParticipantName,
};
use hark_core::time::Millis;
use hark_core::turn::PersonRhythm;
use hark_store::{
    AgentState, Cluster, NewAttachment, NewConversation, NewParticipant, NodeIdentity, Owner,
    PostgresStore, SqliteStore, Store, StoreError,
};

/// Where a test's store lives, so that it can be opened again (a restart).
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

fn postgres_base() -> String {
    std::env::var("HARK_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

/// A raw connection to the test database, for setting up schemas and damaging rows.
async fn raw_postgres(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is needed by these tests: {e}"));
    tokio::spawn(connection);
    client
}

impl Backend {
    fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = postgres_base();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let schema = format!(
            "hark_test_{}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        raw_postgres(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Backend::Postgres { url, schema }
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path().join("t.db")).unwrap()),
            Backend::Postgres { url, .. } => Arc::new(PostgresStore::connect(url).await.unwrap()),
        }
    }

    /// Runs one statement on the raw database, beside the store (to damage a row, say).
    async fn raw(&self, sql: &str) {
        match self {
            Backend::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Backend::Postgres { url, .. } => {
                raw_postgres(url).await.batch_execute(sql).await.unwrap()
            }
        }
    }

    async fn finish(self) {
        if let Backend::Postgres { schema, .. } = self {
            raw_postgres(&postgres_base())
                .await
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .unwrap();
        }
    }
}

/// Each contract test, once per backend.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let backend = super::Backend::sqlite();
                super::$test(&backend).await;
                backend.finish().await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let backend = super::Backend::postgres().await;
                super::$test(&backend).await;
                backend.finish().await;
            })*
        }
    };
}

contract!(
    round_trips_a_conversation_across_reopen,
    a_failing_commit_applies_nothing_and_spares_other_jobs,
    agent_state_round_trips_and_its_marks_never_move_back,
    concurrent_commits_all_land_in_order,
    a_client_id_is_unique_per_sender_in_the_database,
    agents_are_listed_in_join_order,
    damaged_rows_are_an_error_not_a_panic,
    attachments_are_durable_and_belong_to_their_conversation,
    display_names_round_trip_in_any_script,
    a_window_load_reads_the_end_and_summarises_the_rest,
);

fn name(raw: &str) -> ParticipantName {
    ParticipantName::parse(raw).unwrap()
}

fn participant(raw: &str, hash: u8) -> NewParticipant {
    NewParticipant {
        name: name(raw),
        kind: ParticipantKind::Human,
        agent: None,
        display_name: None,
        token_hash: [hash; 32],
    }
}

fn message(seq: u64, from: &str, text: &str, client_id: Option<&str>) -> Arc<Message> {
    Arc::new(Message {
        seq,
        id: format!("c-{seq}"),
        from: name(from),
        text: text.into(),
        sent_at: Millis(1_000 + seq),
        client_id: client_id.map(str::to_owned),
        attachment: None,
    })
}

async fn create(store: &dyn Store, id: &str, participants: Vec<NewParticipant>) {
    store
        .create_conversation(NewConversation {
            id: id.into(),
            title: None,
            created_at: Millis(0),
            participants,
        })
        .await
        .unwrap();
}

async fn round_trips_a_conversation_across_reopen(backend: &Backend) {
    {
        let store = backend.open().await;
        store
            .create_conversation(NewConversation {
                id: "c".into(),
                title: Some("plans".into()),
                created_at: Millis(5),
                participants: vec![participant("alice", 1), participant("bob", 2)],
            })
            .await
            .unwrap();
        let alice = name("alice");
        let segment = |text: &str| Effect::PushSegment {
            participant: alice.clone(),
            text: text.into(),
        };
        store
            .commit(
                "c",
                vec![
                    segment("a"),
                    segment("b"),
                    segment("c"),
                    Effect::PopSegment {
                        participant: alice.clone(),
                    },
                    Effect::InsertMessage(message(1, "bob", "hi", Some("k1"))),
                    Effect::SetCursor {
                        participant: alice.clone(),
                        cursor: 1,
                    },
                    Effect::SetCursor {
                        participant: alice.clone(),
                        cursor: 0,
                    },
                ],
            )
            .await
            .unwrap();
        let err = store
            .add_participant("c", participant("alice", 3))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NameTaken), "{err}");
        let err = store
            .add_participant("nope", participant("zed", 4))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err}");
        store
            .add_participant("c", participant("carol", 5))
            .await
            .unwrap();
    }
    let store = backend.open().await;
    store.ping().await.unwrap();
    let loaded = store.load_conversation("c").await.unwrap().unwrap();
    assert_eq!(loaded.title.as_deref(), Some("plans"));
    assert_eq!(loaded.created_at, Millis(5));
    let names: Vec<_> = loaded
        .participants
        .iter()
        .map(|p| p.record.name.as_str())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"], "in the order they joined");
    let alice = &loaded.participants[0].record;
    assert_eq!(alice.cursor, 1, "a cursor never moves back");
    assert_eq!(alice.draft_segments, vec!["a".to_owned(), "b".to_owned()]);
    assert!(loaded.participants[1].record.draft_segments.is_empty());
    assert_eq!(loaded.messages.len(), 1);
    assert_eq!(loaded.messages[0].text, "hi");
    assert_eq!(loaded.messages[0].id, "c-1");
    assert_eq!(loaded.messages[0].sent_at, Millis(1_001));
    assert_eq!(loaded.messages[0].client_id.as_deref(), Some("k1"));
    let owner = store.find_token([2; 32]).await.unwrap().unwrap();
    assert_eq!(
        (owner.conversation.as_str(), owner.name.as_str()),
        ("c", "bob")
    );
    assert!(store.find_token([9; 32]).await.unwrap().is_none());
    assert!(store.load_conversation("other").await.unwrap().is_none());
    assert!(store.conversation_exists("c").await.unwrap());
    assert!(!store.conversation_exists("other").await.unwrap());
}

async fn a_failing_commit_applies_nothing_and_spares_other_jobs(backend: &Backend) {
    let store = backend.open().await;
    create(&*store, "c", vec![participant("alice", 1)]).await;
    store
        .commit(
            "c",
            vec![Effect::InsertMessage(message(1, "alice", "one", None))],
        )
        .await
        .unwrap();
    // The same seq twice violates the primary key: the whole batch must be refused, and the
    // jobs committed beside it (in the same group commit, most likely) must land.
    let bad = store.commit(
        "c",
        vec![
            Effect::PushSegment {
                participant: name("alice"),
                text: "x".into(),
            },
            Effect::InsertMessage(message(1, "alice", "again", None)),
        ],
    );
    let good = store.commit(
        "c",
        vec![Effect::InsertMessage(message(2, "alice", "two", None))],
    );
    let (bad, good) = tokio::join!(bad, good);
    assert!(bad.is_err());
    good.unwrap();
    let loaded = store.load_conversation("c").await.unwrap().unwrap();
    let texts: Vec<_> = loaded.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    assert!(loaded.participants[0].record.draft_segments.is_empty());
    let page = store.messages_after("c", 1, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].text, "two");
    assert!(store.messages_after("c", 0, 0).await.unwrap().is_empty());
}

async fn agent_state_round_trips_and_its_marks_never_move_back(backend: &Backend) {
    let coach = name("coach");
    let mut rhythm = PersonRhythm::default();
    rhythm.observe_gap(3_000);
    rhythm.observe_typing_start();
    {
        let store = backend.open().await;
        assert_eq!(store.load_agent_state("c", &coach).await.unwrap(), None);
        let state = AgentState {
            epoch: 7,
            answered_up_to: 12,
            rhythm,
        };
        store.save_agent_state("c", &coach, state).await.unwrap();
        // An older snapshot (a task that lagged) cannot take the marks back.
        let older = AgentState {
            epoch: 3,
            answered_up_to: 2,
            rhythm: PersonRhythm::default(),
        };
        store.save_agent_state("c", &coach, older).await.unwrap();
    }
    let store = backend.open().await;
    let loaded = store.load_agent_state("c", &coach).await.unwrap().unwrap();
    assert_eq!((loaded.epoch, loaded.answered_up_to), (7, 12));
    assert_eq!(
        loaded.rhythm,
        PersonRhythm::default(),
        "the rhythm is the latest"
    );
    let state = AgentState {
        epoch: 8,
        answered_up_to: 13,
        rhythm,
    };
    store
        .save_agent_state("c", &coach, state.clone())
        .await
        .unwrap();
    assert_eq!(
        store.load_agent_state("c", &coach).await.unwrap(),
        Some(state)
    );
}

/// Many conversations committing at once (as many pushes do): every commit that answered `Ok`
/// is there, once, and each log is gapless.
async fn concurrent_commits_all_land_in_order(backend: &Backend) {
    const CONVERSATIONS: usize = 8;
    const MESSAGES: u64 = 40;
    let store = backend.open().await;
    for c in 0..CONVERSATIONS {
        create(
            &*store,
            &format!("c{c}"),
            vec![participant("alice", c as u8 + 1)],
        )
        .await;
    }
    let writers = (0..CONVERSATIONS).map(|c| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let id = format!("c{c}");
            for seq in 1..=MESSAGES {
                let text = format!("{id} {seq}");
                store
                    .commit(
                        &id,
                        vec![
                            Effect::InsertMessage(message(seq, "alice", &text, None)),
                            Effect::SetCursor {
                                participant: name("alice"),
                                cursor: seq,
                            },
                        ],
                    )
                    .await
                    .unwrap();
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    for c in 0..CONVERSATIONS {
        let id = format!("c{c}");
        let loaded = store.load_conversation(&id).await.unwrap().unwrap();
        assert_eq!(loaded.messages.len() as u64, MESSAGES);
        for (i, m) in loaded.messages.iter().enumerate() {
            assert_eq!(m.text, format!("{id} {}", i + 1));
        }
        assert_eq!(loaded.participants[0].record.cursor, MESSAGES);
    }
}

/// `client_id` idempotency rests on the database: a second message with the same client id from
/// the same sender is refused by it, whatever the caller believed; another sender may reuse it.
async fn a_client_id_is_unique_per_sender_in_the_database(backend: &Backend) {
    let store = backend.open().await;
    create(
        &*store,
        "c",
        vec![participant("alice", 1), participant("bob", 2)],
    )
    .await;
    store
        .commit(
            "c",
            vec![Effect::InsertMessage(message(1, "alice", "hi", Some("k")))],
        )
        .await
        .unwrap();
    let again = store
        .commit(
            "c",
            vec![Effect::InsertMessage(message(2, "alice", "hi", Some("k")))],
        )
        .await;
    assert!(again.is_err(), "the same client id twice must be refused");
    store
        .commit(
            "c",
            vec![Effect::InsertMessage(message(2, "bob", "hi", Some("k")))],
        )
        .await
        .unwrap();
    assert_eq!(store.messages_after("c", 0, 10).await.unwrap().len(), 2);
}

async fn agents_are_listed_in_join_order(backend: &Backend) {
    let store = backend.open().await;
    let agent = |raw: &str, hash: u8, plays: &str| NewParticipant {
        name: name(raw),
        kind: ParticipantKind::Agent,
        agent: Some(plays.into()),
        display_name: None,
        token_hash: [hash; 32],
    };
    create(
        &*store,
        "a",
        vec![participant("alice", 1), agent("coach", 2, "coach")],
    )
    .await;
    create(
        &*store,
        "b",
        vec![agent("zed", 3, "helper"), agent("amy", 4, "coach")],
    )
    .await;
    let listed: Vec<_> = store
        .agent_participants()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.conversation, a.name.as_str().to_owned(), a.agent))
        .collect();
    let expected = [
        ("a", "coach", "coach"),
        ("b", "zed", "helper"),
        ("b", "amy", "coach"),
    ]
    .map(|(c, n, a)| (c.to_owned(), n.to_owned(), a.to_owned()));
    assert_eq!(listed, expected);
}

/// A damaged row (written by hand, or by a bug) is a `Corrupt` error naming it, not a panic.
async fn damaged_rows_are_an_error_not_a_panic(backend: &Backend) {
    let store = backend.open().await;
    create(&*store, "c", vec![participant("alice", 1)]).await;
    store
        .commit(
            "c",
            vec![Effect::InsertMessage(message(1, "alice", "hi", None))],
        )
        .await
        .unwrap();
    backend
        .raw("UPDATE messages SET sender = 'not a name!' WHERE conversation_id = 'c'")
        .await;
    let err = store.load_conversation("c").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("not a name!"), "{err}");
    backend
        .raw("UPDATE messages SET sender = 'alice', seq = 3 WHERE conversation_id = 'c'")
        .await;
    let err = store.load_conversation("c").await.unwrap_err();
    assert!(err.to_string().contains("gap"), "{err}");
    backend
        .raw("UPDATE participants SET kind = 'robot' WHERE conversation_id = 'c'")
        .await;
    let err = store.find_token([1; 32]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

async fn attachments_are_durable_and_belong_to_their_conversation(backend: &Backend) {
    let png = vec![0x89, b'P', b'N', b'G', 0, 1, 2, 255];
    {
        let store = backend.open().await;
        create(&*store, "c", vec![participant("alice", 1)]).await;
        let new = |id: &str| NewAttachment {
            id: id.into(),
            mime: "image/png".into(),
            data: png.clone(),
            created_at: Millis(3),
        };
        store.put_attachment("c", new("a1")).await.unwrap();
        let err = store.put_attachment("nope", new("a2")).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err}");
        let mut photo = (*message(1, "alice", "a caption", None)).clone();
        photo.attachment = Some(AttachmentRef {
            id: "a1".into(),
            mime: "image/png".into(),
            bytes: 8,
        });
        store
            .commit("c", vec![Effect::InsertMessage(Arc::new(photo))])
            .await
            .unwrap();
    }
    let store = backend.open().await;
    let loaded = store.load_conversation("c").await.unwrap().unwrap();
    let attachment = loaded.messages[0].attachment.as_ref().unwrap();
    assert_eq!(
        (
            attachment.id.as_str(),
            attachment.mime.as_str(),
            attachment.bytes
        ),
        ("a1", "image/png", 8),
        "a message keeps its photo across a reopen"
    );
    let got = store.attachment("c", "a1").await.unwrap().unwrap();
    assert_eq!((got.mime.as_str(), got.data), ("image/png", png));
    assert_eq!(store.attachment("other", "a1").await.unwrap(), None);
    assert_eq!(store.attachment("c", "a2").await.unwrap(), None);
}

async fn display_names_round_trip_in_any_script(backend: &Backend) {
    let store = backend.open().await;
    let mut zoe = participant("zoe", 2);
    zoe.display_name = Some("Zoë سارا".into());
    create(&*store, "c", vec![participant("old", 1), zoe]).await;
    let mut sam = participant("sam", 3);
    sam.display_name = Some("Sam Smith".into());
    store.add_participant("c", sam).await.unwrap();
    let store = backend.open().await;
    let loaded = store.load_conversation("c").await.unwrap().unwrap();
    let names: Vec<_> = loaded
        .participants
        .iter()
        .map(|p| (p.record.name.as_str(), p.display_name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("old", None),
            ("zoe", Some("Zoë سارا")),
            ("sam", Some("Sam Smith"))
        ]
    );
}

/// PostgreSQL only: nodes starting at once against an empty database migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_starting_at_once_migrate_once() {
    let backend = Backend::postgres().await;
    let Backend::Postgres { url, schema } = &backend else {
        unreachable!()
    };
    let opens = (0..4).map(|_| PostgresStore::connect(url));
    for store in futures::future::join_all(opens).await {
        store.unwrap().ping().await.unwrap();
    }
    let raw = raw_postgres(url).await;
    let rows = raw
        .query(&format!("SELECT version FROM {schema}.hark_schema"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one version row");
    assert!(rows[0].get::<_, i32>(0) >= 1);
    backend.finish().await;
}

/// PostgreSQL only: a database that cannot be reached is `Unavailable` (the server's 503), with
/// a sentence, and promptly.
#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    let err = match PostgresStore::connect("postgres://postgres@127.0.0.1:1/test").await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(err) => err,
    };
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    let err = match PostgresStore::connect("not a url").await {
        Ok(_) => panic!("not a URL"),
        Err(err) => err,
    };
    assert!(err.to_string().contains("bad PostgreSQL URL"), "{err}");
}

/// PostgreSQL only: a database that takes no writes (a standby, or read-only by setting) is
/// refused at connect, and `ping`, what `/healthz` asks, is a real write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_only_is_refused_and_ping_writes() {
    let backend = Backend::postgres().await;
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!()
    };
    let store = PostgresStore::connect(url).await.unwrap();
    store.ping().await.unwrap();
    let read_only = format!("{url}%20-cdefault_transaction_read_only%3Don");
    let err = match PostgresStore::connect(&read_only).await {
        Ok(store) => store.ping().await.unwrap_err(),
        Err(err) => err,
    };
    assert!(err.to_string().contains("read-only"), "{err}");
    backend.finish().await;
}

/// PostgreSQL only: two nodes on one database. A conversation belongs to one live node; another
/// takes it only after the owner's lease ran out, and from then on the old owner's commits are
/// refused by the fence (nothing written), its heartbeat no longer lists it, a stale release
/// does not free it, and a node that leaves frees everything at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ownership_moves_after_the_lease_and_fences_the_old_owner() {
    let backend = Backend::postgres().await;
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!()
    };
    let lease = std::time::Duration::from_millis(400);
    let node = |id: &str| NodeIdentity {
        id: id.into(),
        url: format!("http://{id}.invalid"),
        lease,
    };
    let x = PostgresStore::connect_node(url, node("x")).await.unwrap();
    let y = PostgresStore::connect_node(url, node("y")).await.unwrap();
    assert_eq!(x.secret("first").await.unwrap(), "first");
    assert_eq!(
        y.secret("second").await.unwrap(),
        "first",
        "the first proposal wins"
    );
    let mut pat = participant("pat", 1);
    let mut coach = participant("coach", 2);
    coach.agent = Some("coach".into());
    pat.kind = ParticipantKind::Human;
    create(&x, "c", vec![pat, coach]).await;
    create(&x, "d", vec![participant("dee", 3)]).await;
    x.heartbeat().await.unwrap();
    y.heartbeat().await.unwrap();
    assert_eq!(
        x.orphans().await.unwrap(),
        vec!["c".to_owned()],
        "nobody runs its agent"
    );

    let Owner::Me { ticket: first } = x.acquire("c").await.unwrap() else {
        panic!("a free conversation is taken")
    };
    assert!(x.orphans().await.unwrap().is_empty());
    assert_eq!(
        y.acquire("c").await.unwrap(),
        Owner::Node {
            node: "x".into(),
            url: "http://x.invalid".into()
        }
    );
    assert!(matches!(x.acquire("nope").await, Err(StoreError::NotFound)));
    x.commit(
        "c",
        vec![Effect::InsertMessage(message(1, "pat", "one", None))],
    )
    .await
    .unwrap();
    let refused = y
        .commit(
            "c",
            vec![Effect::InsertMessage(message(2, "pat", "y", None))],
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Moved(_)), "{refused}");

    assert!(matches!(x.acquire("d").await.unwrap(), Owner::Me { .. }));

    // x falls silent for longer than its lease; y keeps beating and takes c over.
    tokio::time::sleep(lease + std::time::Duration::from_millis(200)).await;
    y.heartbeat().await.unwrap();
    let Owner::Me { ticket: taken } = y.acquire("c").await.unwrap() else {
        panic!("an expired owner's conversation is taken over")
    };
    x.heartbeat().await.unwrap();
    // Committed together (one batch, or two): the lost conversation's job alone is refused.
    let (stale, kept) = futures::future::join(
        x.commit(
            "c",
            vec![Effect::InsertMessage(message(2, "pat", "stale", None))],
        ),
        x.commit(
            "d",
            vec![Effect::InsertMessage(message(1, "dee", "kept", None))],
        ),
    )
    .await;
    assert!(matches!(stale, Err(StoreError::Moved(_))), "{stale:?}");
    kept.unwrap();
    y.commit(
        "c",
        vec![Effect::InsertMessage(message(2, "pat", "two", None))],
    )
    .await
    .unwrap();
    let log = y.load_conversation("c").await.unwrap().unwrap().messages;
    let texts: Vec<&str> = log.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one", "two"], "the stale write left nothing");
    assert!(
        !x.heartbeat().await.unwrap().contains(&"c".to_owned()),
        "x learns it lost the conversation"
    );
    assert!(matches!(x.acquire("c").await.unwrap(), Owner::Node { .. }));

    // A release under an older ticket frees nothing; the right one does.
    y.release("c", first).await.unwrap();
    assert!(matches!(x.acquire("c").await.unwrap(), Owner::Node { .. }));
    y.release("c", taken).await.unwrap();
    assert!(matches!(x.acquire("c").await.unwrap(), Owner::Me { .. }));

    // Leaving frees at once, without waiting for the lease.
    x.leave().await.unwrap();
    assert!(matches!(y.acquire("c").await.unwrap(), Owner::Me { .. }));
    backend.finish().await;
}

/// `load_conversation_window` gives the newest messages and the prefix the state machine needs;
/// `message_by_client_id` finds a message however old.
async fn a_window_load_reads_the_end_and_summarises_the_rest(backend: &Backend) {
    let store = backend.open().await;
    create(
        &*store,
        "c",
        vec![participant("alice", 1), participant("bob", 2)],
    )
    .await;
    // bob, then alice four times, then bob, alice.
    let authors = ["bob", "alice", "alice", "alice", "alice", "bob", "alice"];
    let effects = authors
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let seq = i as u64 + 1;
            let key = format!("k{seq}");
            Effect::InsertMessage(message(seq, from, "t", Some(&key)))
        })
        .collect();
    store.commit("c", effects).await.unwrap();

    let (stored, prefix) = store
        .load_conversation_window("c", 2)
        .await
        .unwrap()
        .unwrap();
    let seqs: Vec<u64> = stored.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![6, 7]);
    assert_eq!(
        prefix,
        LogPrefix {
            seq: 5,
            last_from: Some(name("alice")),
            last_other_seq: 1,
        }
    );
    assert_eq!(stored.participants.len(), 2);
    // A window as long as the log: no prefix.
    let (whole, prefix) = store
        .load_conversation_window("c", 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole.messages.len(), 7);
    assert_eq!(prefix, LogPrefix::default());
    assert!(
        store
            .load_conversation_window("nope", 2)
            .await
            .unwrap()
            .is_none()
    );

    let found = store
        .message_by_client_id("c", &name("bob"), "k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.seq, found.from.as_str()), (1, "bob"));
    // Keys are per sender.
    assert!(
        store
            .message_by_client_id("c", &name("alice"), "k1")
            .await
            .unwrap()
            .is_none()
    );
}
