//! The real binary on PostgreSQL (`--db postgres://…`): the protocol, durability across
//! `kill -9`, and a database that goes away and comes back (503 `unavailable`, then recovery).
//! Each test gets a fresh schema in the database named by `HARK_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); `.ci/run` starts PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TestServer;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::pg::fresh_schema;

#[tokio::test]
async fn the_protocol_holds_on_postgres() {
    let (_schema, url) = fresh_schema(None).await;
    let mut s = TestServer::start_on(&url, None).await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;

    // A held push: bob drafts, alice sends, bob's push is held and shows her message.
    s.act(&c, "bob", "append", json!({"text": "noon?"})).await;
    let (status, sent) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "not noon", "client_id": "a1"}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let (_, held) = s.act(&c, "bob", "push", json!({})).await;
    assert_eq!(held["result"]["status"], "held", "{held}");
    assert_eq!(held["incoming"][0]["text"], "not noon");
    let (_, pushed) = s.act(&c, "bob", "push", json!({"client_id": "b1"})).await;
    assert_eq!(pushed["result"]["status"], "sent", "{pushed}");

    // A waiting check is woken by a message (alice first hears bob's push).
    let (_, heard) = s.act(&c, "alice", "preview", json!({})).await;
    assert_eq!(heard["incoming"][0]["text"], "noon?", "{heard}");
    let check = s.spawn_check(&c, "alice");
    s.until_checking(&c, "alice", true).await;
    s.act(&c, "bob", "send", json!({"text": "ok then"})).await;
    let woken = check.await.unwrap();
    let texts: Vec<_> = woken["incoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["ok then"], "{woken}");

    // A retried send with the same client_id is the same message, also after a restart.
    s.kill9().await;
    s.restart().await;
    let (status, again) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "not noon", "client_id": "a1"}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["result"]["message"]["seq"], sent["result"]["message"]["seq"],
        "{again}"
    );
    let (_, history) = s
        .get(
            &format!("/v1/conversations/{}/messages", c.id),
            Some(c.token("alice")),
        )
        .await;
    let seqs: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "{history}");
}

/// Writers with client ids through several `kill -9`s: every acknowledged message is in the
/// database exactly once, in a gapless log.
#[tokio::test]
async fn acknowledged_messages_survive_kill9_on_postgres() {
    let (_schema, url) = fresh_schema(None).await;
    let mut s = TestServer::start_on(&url, None).await;
    let c = s.create(&[("alice", "human"), ("bob", "human")]).await;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    for round in 0..3 {
        // Four writers send without pause; the server is killed while their sends are in
        // flight, once each round has seen at least ten answers.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let who = if w % 2 == 0 { "alice" } else { "bob" };
                let client = s.client.clone();
                let url = format!("{}/v1/conversations/{}/send", s.url, c.id);
                let token = c.token(who).to_owned();
                let acknowledged = Arc::clone(&acknowledged);
                tokio::spawn(async move {
                    for i in 0.. {
                        let text = format!("r{round} w{w} m{i}");
                        let Ok(response) = client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"text": text, "client_id": text}))
                            .send()
                            .await
                        else {
                            return;
                        };
                        if response.status() != 200 {
                            return;
                        }
                        acknowledged.lock().unwrap().push(text);
                    }
                })
            })
            .collect();
        let before = acknowledged.lock().unwrap().len();
        while acknowledged.lock().unwrap().len() < before + 10 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        s.kill9().await;
        for writer in writers {
            writer.await.unwrap();
        }
        s.restart().await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 30);
    let (_, history) = s
        .get(
            &format!("/v1/conversations/{}/messages?limit=1000", c.id),
            Some(c.token("alice")),
        )
        .await;
    let messages = history["messages"].as_array().unwrap();
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["seq"].as_u64(), Some(i as u64 + 1), "gapless");
    }
    for text in &acknowledged {
        let count = messages
            .iter()
            .filter(|m| m["text"] == *text.as_str())
            .count();
        assert_eq!(count, 1, "{text} acknowledged, found {count} times");
    }
    eprintln!(
        "{} acknowledged across 3 kill -9s, {} in the log",
        acknowledged.len(),
        messages.len()
    );
}

/// A TCP relay between hark and PostgreSQL that the test can cut (closing every connection and
/// refusing new ones) and restore.
struct Relay {
    addr: String,
    up: watch::Sender<bool>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (up, _) = watch::channel(true);
        let up_tx = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut up_rx = up_tx.subscribe();
                if !*up_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect("127.0.0.1:5432").await else {
                        return;
                    };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = up_rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn postgres_going_away_is_503_and_hark_recovers() {
    let relay = Relay::start().await;
    let (_schema, url) = fresh_schema(Some(&relay.addr)).await;
    let s = TestServer::start_on(&url, None).await;
    let c = s.create(&[("alice", "human"), ("bob", "human")]).await;
    let (status, _) = s.act(&c, "alice", "send", json!({"text": "before"})).await;
    assert_eq!(status, 200);

    relay.set(false);
    let (status, body) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "during", "client_id": "d"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    relay.set(true);
    // The pool opens new connections when the database is back: the same send (same client id)
    // now goes through once.
    let recovered = Arc::new(AtomicBool::new(false));
    for _ in 0..100 {
        let (status, _) = s
            .act(
                &c,
                "alice",
                "send",
                json!({"text": "during", "client_id": "d"}),
            )
            .await;
        if status == 200 {
            recovered.store(true, Ordering::Relaxed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered.load(Ordering::Relaxed),
        "hark recovers when PostgreSQL is back"
    );
    let (_, history) = s
        .get(
            &format!("/v1/conversations/{}/messages", c.id),
            Some(c.token("bob")),
        )
        .await;
    let texts: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["before", "during"], "{history}");
    let (status, appended) = s.act(&c, "bob", "append", json!({"text": "back"})).await;
    assert_eq!(status, 200, "{appended}");
}
