//! Time only from the clock: the server on a virtual clock whose wall time was set back between
//! two runs. Timers follow the monotonic clock (a 2 s `check` takes 2 s, a typing lease lapses
//! on time), and `sent_at` never goes backwards within a conversation.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hark_core::protocol::{Action, ActionResult, ParticipantKind, ParticipantName};
use hark_core::time::Millis;
use hark_server::app::NoAgents;
use hark_server::{Clock, Server, ServerConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use support::WALL_START;
use support::memory::MemoryStore;

const HOUR_MS: u64 = 3_600_000;

fn server(store: &MemoryStore, wall: Millis) -> Server {
    Server::with_clock(
        Arc::new(store.clone()),
        ServerConfig::default(),
        Arc::new(NoAgents),
        Clock::starting_at(wall),
        CancellationToken::new(),
    )
}

fn name(n: &str) -> ParticipantName {
    ParticipantName::parse(n).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_set_back_neither_hangs_check_nor_stamps_backwards() {
    let store = MemoryStore::new();
    let first = server(&store, WALL_START);
    let (id, _) = first
        .create_conversation(
            None,
            vec![
                (name("pat"), ParticipantKind::Human, None),
                (name("sam"), ParticipantKind::Human, None),
            ],
        )
        .await
        .unwrap();
    let sent = |envelope: hark_core::protocol::Envelope| match envelope.result {
        ActionResult::Sent { message, .. } => message.sent_at,
        other => panic!("not sent: {other:?}"),
    };
    let send = Action::Send {
        text: "before".into(),
        client_id: None,
        attachment: None,
    };
    let before = sent(first.act(&id, name("sam"), send).await.unwrap());
    assert_eq!(before, WALL_START);

    // The process ends; the machine's wall clock is set back an hour; a new process starts.
    let store = store.reopen();
    let second = server(&store, Millis(WALL_START.0 - HOUR_MS));
    let app = second.app();
    let pat = app.participant_named(&id, &name("pat")).await.unwrap();
    let sam = app.participant_named(&id, &name("sam")).await.unwrap();
    // Catch up with "before", so the next check has nothing to hand over.
    app.act(&pat, Action::Read { up_to: 1 }).await.unwrap();

    let started = Instant::now();
    let checked = app
        .act(
            &pat,
            Action::Check {
                timeout_ms: Some(2_000),
            },
        )
        .await
        .unwrap();
    assert_eq!(checked.result, ActionResult::Check { timed_out: true });
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(2_000),
        "a 2 s check takes 2 s"
    );

    // A typing lease lapses after typing_timeout_ms of this run's time.
    app.act(&sam, Action::Typing { typing: true })
        .await
        .unwrap();
    let reader = app.reader(&hark_server::app::Caller::Admin, &id).unwrap();
    tokio::time::sleep(Duration::from_millis(7_900)).await;
    assert_eq!(
        app.describe(&reader).await.unwrap().composing,
        [name("sam")]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(app.describe(&reader).await.unwrap().composing.is_empty());

    let after = Action::Send {
        text: "after".into(),
        client_id: None,
        attachment: None,
    };
    let after = sent(app.act(&sam, after).await.unwrap());
    assert!(
        after >= before,
        "sent_at went backwards: {after:?} < {before:?}"
    );
}
