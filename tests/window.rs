//! The log window (issue 12): a loaded conversation keeps only its newest messages in memory,
//! and a participant far behind them still gets every message exactly once — by `check`, by
//! the history pages and by the event stream — on the real binary, before and after a restart
//! (which loads only the window from the database).

mod common;

use std::collections::BTreeSet;

use common::{Conversation, TestServer};
use serde_json::{Value, json};

/// Four messages in memory, three handed over per result: thirty messages are far beyond both.
const CONFIG: &str =
    "[server]\nrate_limit_per_s = 0\n[limits]\nlog_window_messages = 4\nmax_incoming = 3\n";
const MESSAGES: u64 = 30;

/// Alice writes `MESSAGES` messages, each with a client id; half before a restart, half after.
async fn thirty_messages(server: &mut TestServer) -> Conversation {
    let c = server
        .create(&[("alice", "agent"), ("bob", "agent"), ("carol", "agent")])
        .await;
    for i in 1..=MESSAGES {
        let (status, body) = server
            .act(
                &c,
                "alice",
                "send",
                json!({"text": format!("m{i}"), "client_id": format!("a{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["message"]["seq"], i);
        if i == MESSAGES / 2 {
            server.kill9().await;
            server.restart().await;
        }
    }
    c
}

fn seqs(envelope: &Value) -> Vec<u64> {
    envelope["incoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_participant_far_behind_the_window_gets_every_message_once_by_check() {
    let mut server = TestServer::start_with(Some(CONFIG), &[]).await;
    let c = thirty_messages(&mut server).await;
    let mut got = Vec::new();

    // Every result hands over what came meanwhile: the append's the first three, then Bob's
    // push is held (most is still unseen) and its result hands over the next three.
    let (status, appended) = server
        .act(&c, "bob", "append", json!({"text": "hello"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(seqs(&appended), vec![1, 2, 3]);
    got.extend(seqs(&appended));
    let (status, held) = server.act(&c, "bob", "push", json!({})).await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["result"]["status"], "held", "{held}");
    assert_eq!(seqs(&held), vec![4, 5, 6]);
    got.extend(seqs(&held));

    // Then `check` until nothing more is waiting; each result continues where the last ended.
    loop {
        let (status, envelope) = server
            .act(&c, "bob", "check", json!({"timeout_ms": 0}))
            .await;
        assert_eq!(status, 200, "{envelope}");
        assert!(envelope.get("repeated").is_none(), "{envelope}");
        got.extend(seqs(&envelope));
        if !envelope["more_incoming"].as_bool().unwrap() && seqs(&envelope).is_empty() {
            break;
        }
        assert!(got.len() <= MESSAGES as usize, "more than sent: {got:?}");
    }
    assert_eq!(
        got,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "each once, in order"
    );

    // Now bob has everything: the push goes out, and his receipt covers the whole log.
    let (status, sent) = server.act(&c, "bob", "push", json!({})).await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["result"]["status"], "sent");
    assert_eq!(sent["result"]["message"]["seq"], MESSAGES + 1);
    let (_, described) = server
        .get(&format!("/v1/conversations/{}", c.id), None)
        .await;
    let bob = described["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["participant"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob["read_up_to"], MESSAGES + 1, "{described}");
}

#[tokio::test]
async fn a_client_id_older_than_the_window_is_still_a_duplicate() {
    let mut server = TestServer::start_with(Some(CONFIG), &[]).await;
    let c = thirty_messages(&mut server).await;
    // a1 left the window long ago (and before the restart): the same message comes back.
    let (status, again) = server
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "m1", "client_id": "a1"}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["result"]["duplicate"], true, "{again}");
    assert_eq!(again["result"]["message"]["seq"], 1);
    assert_eq!(again["result"]["message"]["text"], "m1");
    // Another participant's key of the same name is its own.
    let (status, new) = server
        .act(&c, "carol", "send", json!({"text": "c", "client_id": "a1"}))
        .await;
    assert_eq!(status, 200, "{new}");
    assert_eq!(new["result"]["duplicate"], false);
    assert_eq!(new["result"]["message"]["seq"], MESSAGES + 1);
}

#[tokio::test]
async fn history_and_the_event_stream_reach_before_the_window() {
    let mut server = TestServer::start_with(Some(CONFIG), &[]).await;
    let c = thirty_messages(&mut server).await;

    // History, page by page.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let (status, page) = server
            .get(
                &format!("/v1/conversations/{}/messages?after={after}&limit=7", c.id),
                Some(c.token("carol")),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        for m in page["messages"].as_array().unwrap() {
            paged.push(m["seq"].as_u64().unwrap());
        }
        after = *paged.last().unwrap();
        if !page["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(paged, (1..=MESSAGES).collect::<Vec<_>>());

    // The event stream from the start, then one live message: each once, in order.
    let mut events = server.events(&c, "carol", Some(0)).await;
    let (status, _) = server
        .act(&c, "alice", "send", json!({"text": "live"}))
        .await;
    assert_eq!(status, 200);
    let mut streamed = Vec::new();
    while streamed.len() < MESSAGES as usize + 1 {
        let event = events.next().await.expect("the stream goes on");
        if event.event == "message" {
            streamed.push(event.data["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(streamed, (1..=MESSAGES + 1).collect::<Vec<_>>());
    let unique: BTreeSet<u64> = streamed.iter().copied().collect();
    assert_eq!(unique.len(), streamed.len());
}

#[tokio::test]
async fn a_waiting_check_behind_the_window_wakes_with_what_it_missed() {
    let mut server = TestServer::start_with(Some(CONFIG), &[]).await;
    let c = thirty_messages(&mut server).await;
    // Carol catches up, then waits; Bob (far behind) waits too, after catching up only partly.
    let (_, first) = server
        .act(&c, "bob", "check", json!({"timeout_ms": 0}))
        .await;
    assert_eq!(seqs(&first), vec![1, 2, 3]);
    loop {
        let (_, e) = server
            .act(&c, "carol", "check", json!({"timeout_ms": 0}))
            .await;
        if seqs(&e).is_empty() {
            break;
        }
    }
    let carol = server.spawn_check(&c, "carol");
    server.until_checking(&c, "carol", true).await;
    let (status, _) = server
        .act(&c, "alice", "send", json!({"text": "wake"}))
        .await;
    assert_eq!(status, 200);
    let woken = carol.await.unwrap();
    assert_eq!(seqs(&woken), vec![MESSAGES + 1]);
    // Bob's next call starts where his first result ended, far before the window.
    let (_, next) = server
        .act(&c, "bob", "check", json!({"timeout_ms": 0}))
        .await;
    assert_eq!(seqs(&next), vec![4, 5, 6]);
    assert_eq!(next["more_incoming"], true);
}
