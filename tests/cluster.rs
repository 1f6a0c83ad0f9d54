//! Several nodes on one PostgreSQL database (the real binary, twice): a client may talk to any
//! node. Each test gets a fresh schema (`common::pg`); `.ci/run` starts PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::fresh_schema;
use common::{Conversation, TestServer};
use hark_test_llm::{Script, StandIn};
use rand::Rng;
use serde_json::{Value, json};

/// A short lease, so that a killed node's conversations move quickly.
const NODE_CONFIG: &str = r#"
[server]
rate_limit_per_s = 0

[cluster]
lease_ms = 1000
"#;

const PATIENCE: Duration = Duration::from_secs(30);

async fn two_nodes(config: &str) -> (String, TestServer, TestServer) {
    let (_schema, url) = fresh_schema(None).await;
    let a = TestServer::start_on(&url, Some(config)).await;
    let b = TestServer::start_on(&url, Some(config)).await;
    (url, a, b)
}

fn texts(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn history(node: &TestServer, c: &Conversation, who: &str) -> Value {
    let (status, page) = node
        .get(
            &format!("/v1/conversations/{}/messages?limit=1000", c.id),
            Some(c.token(who)),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page
}

#[tokio::test]
async fn what_happens_on_one_node_is_seen_on_the_other() {
    let (_url, a, b) = two_nodes(NODE_CONFIG).await;
    let c = a.create(&[("alice", "human"), ("bob", "human")]).await;

    // A check waiting on b is woken by a send on a.
    let check = b.spawn_check(&c, "bob");
    b.until_checking(&c, "bob", true).await;
    let (status, sent) = a
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "hello from a", "client_id": "a1"}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let woken = tokio::time::timeout(PATIENCE, check)
        .await
        .expect("the check on b returns")
        .unwrap();
    assert_eq!(woken["incoming"][0]["text"], "hello from a", "{woken}");

    // An event stream on b sees a send on a.
    let mut events = b.events(&c, "bob", None).await;
    a.act(&c, "alice", "send", json!({"text": "second"})).await;
    let message = tokio::time::timeout(PATIENCE, events.next_message())
        .await
        .expect("the event arrives")
        .expect("the stream stays open");
    assert_eq!(message["text"], "second", "{message}");

    // The held push across nodes: bob drafts on b, alice sends on a, bob's push on b is held.
    let (status, _) = b.act(&c, "bob", "append", json!({"text": "noon?"})).await;
    assert_eq!(status, 200);
    a.act(&c, "alice", "send", json!({"text": "not noon"}))
        .await;
    let (_, held) = b.act(&c, "bob", "push", json!({})).await;
    assert_eq!(held["result"]["status"], "held", "{held}");
    assert_eq!(held["incoming"][0]["text"], "not noon", "{held}");
    let (_, pushed) = a.act(&c, "bob", "push", json!({})).await;
    assert_eq!(pushed["result"]["status"], "sent", "{pushed}");

    // A client_id retried on the other node is the same message.
    let (status, again) = b
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "hello from a", "client_id": "a1"}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["result"]["duplicate"], true, "{again}");
    assert_eq!(
        again["result"]["message"]["seq"], sent["result"]["message"]["seq"],
        "{again}"
    );

    // History and whoami on either node.
    let on_b = history(&b, &c, "bob").await;
    assert_eq!(
        texts(&on_b),
        ["hello from a", "second", "not noon", "noon?"],
        "{on_b}"
    );
    assert_eq!(on_b, history(&a, &c, "alice").await);
    let (status, me) = b.get("/v1/whoami", Some(c.token("bob"))).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["you"]["name"], "bob", "{me}");
    assert_eq!(me["last_seq"], 4, "{me}");
}

/// The nodes' shared secret lets a forwarded request past the edge checks; anything else in
/// its header does not.
#[tokio::test]
async fn only_the_nodes_secret_passes_as_a_forwarded_request() {
    let (url, a, _b) = two_nodes(NODE_CONFIG).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let secret: String = client
        .query_one("SELECT secret FROM hark_cluster", &[])
        .await
        .unwrap()
        .get(0);
    let ask = |value: &str| {
        a.client
            .get(format!("{}/v1/agents", a.url))
            .header("Host", "evil.example")
            .header("x-hark-node", value.to_owned())
            .send()
    };
    assert_eq!(ask("guess").await.unwrap().status(), 403);
    assert_eq!(ask(&secret[1..]).await.unwrap().status(), 403);
    assert_eq!(ask(&secret).await.unwrap().status(), 200);
}

/// The coach on `stand_in`, on a node of the cluster.
fn agent_config(stand_in: &StandIn) -> String {
    format!(
        "{}\n[cluster]\nlease_ms = 1000\n",
        common::coach::config(stand_in, "")
    )
}

async fn coach_messages(node: &TestServer, c: &Conversation) -> Vec<String> {
    let page = history(node, c, "pat").await;
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "coach")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls until the coach has written `n` messages.
async fn until_coach_wrote(node: &TestServer, c: &Conversation, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let written = coach_messages(node, c).await;
        if written.len() >= n {
            return written;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the coach wrote {written:?}, not {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A burst that arrives through two nodes is answered once, by one agent; when the node that
/// runs the agent is killed, the other takes the conversation and its agent over, and answers
/// the next burst once.
#[tokio::test]
async fn an_agent_answers_once_through_two_nodes_and_survives_its_node() {
    let stand_in = StandIn::start().await;
    let replies = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&replies);
    stand_in.set_responder(move |_| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        Script::text(format!("Answer {n}."))
    });
    let config = agent_config(&stand_in);
    let (_url, mut a, b) = two_nodes(&config).await;
    let c = common::coach::create(&a).await;
    // One burst, half through each node.
    let (status, _) = a
        .act(&c, "pat", "send", json!({"text": "I want to cook tonight"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = b
        .act(
            &c,
            "pat",
            "send",
            json!({"text": "something with mushrooms?"}),
        )
        .await;
    assert_eq!(status, 200);
    let written = until_coach_wrote(&b, &c, 1).await;
    // Long enough for a second agent (or a second answer) to show itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(coach_messages(&a, &c).await, written, "answered once");
    assert_eq!(written.len(), 1, "{written:?}");
    let last_request = stand_in.requests().last().unwrap().last_user_text();
    assert!(
        last_request
            .as_deref()
            .is_some_and(|t| t.contains("mushrooms")),
        "the answer read the whole burst: {last_request:?}"
    );

    // The node that runs the conversation (and its agent) dies; pat goes on through the other.
    a.kill9().await;
    let killed_at = tokio::time::Instant::now();
    let (status, sent) = b
        .act(
            &c,
            "pat",
            "send",
            json!({"text": "Thanks! And for dessert?"}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let written = until_coach_wrote(&b, &c, 2).await;
    let moved_in = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = coach_messages(&b, &c).await;
    assert_eq!(after, written, "nothing answered twice after the move");
    assert_eq!(after.len(), 2, "{after:?}");
    eprintln!("a killed node's agent answered again after {moved_in:?}");
    a.restart().await;
    assert_eq!(coach_messages(&a, &c).await, after);
}

/// Writers on both nodes while one node is killed at random moments and restarted: every
/// acknowledged message is stored exactly once, the log has no gap, and an acknowledged draft
/// is intact.
#[tokio::test]
async fn nothing_acknowledged_is_lost_or_doubled_when_a_node_is_killed() {
    let (url, a, b) = two_nodes(NODE_CONFIG).await;
    let c = Arc::new(
        a.create(&[("alice", "human"), ("bob", "human"), ("carol", "human")])
            .await,
    );
    // carol drafts (through both nodes) and never sends.
    let (status, _) = a
        .act(&c, "carol", "append", json!({"text": "draft one"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = b.act(&c, "carol", "append", json!({"text": " two"})).await;
    assert_eq!(status, 200);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut nodes = [a, b];
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut rng = rand::rng();
    for round in 0..3 {
        let urls = [nodes[0].url.clone(), nodes[1].url.clone()];
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let who = if w % 2 == 0 { "alice" } else { "bob" };
                let token = c.token(who).to_owned();
                let urls = urls.clone();
                let (client, id) = (nodes[0].client.clone(), c.id.clone());
                let acknowledged = Arc::clone(&acknowledged);
                tokio::spawn(async move {
                    for i in 0..40 {
                        let text = format!("r{round} w{w} m{i}");
                        // Each message is retried, on the other node, until it is acknowledged.
                        let mut attempt = i + w;
                        let deadline = tokio::time::Instant::now() + PATIENCE;
                        loop {
                            let node = &urls[attempt % 2];
                            attempt += 1;
                            let response = client
                                .post(format!("{node}/v1/conversations/{id}/send"))
                                .bearer_auth(&token)
                                .json(&json!({"text": text, "client_id": text}))
                                .timeout(Duration::from_secs(10))
                                .send()
                                .await;
                            if let Ok(response) = response
                                && response.status() == 200
                            {
                                acknowledged.lock().unwrap().push(text.clone());
                                break;
                            }
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "{text} never acknowledged"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
        // Kill the node that runs the conversation now (once the previous round's victim
        // handed it over: its row names a process that is gone until its lease runs out).
        let mut victim = None;
        for _ in 0..100 {
            let owner: Option<String> = client
                .query_opt(
                    "SELECT n.url FROM hark_owners o JOIN hark_nodes n ON n.node = o.node
                     WHERE o.conversation_id = $1 AND n.expires_at > now()",
                    &[&c.id],
                )
                .await
                .unwrap()
                .map(|row| row.get(0));
            victim = owner.and_then(|owner| nodes.iter().position(|n| n.url == owner));
            if victim.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let victim = victim.expect("one of the two nodes runs the conversation");
        nodes[victim].kill9().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
        nodes[victim].restart().await;
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let [a, b] = nodes;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(acknowledged.len(), 3 * 4 * 40);
    for node in [&a, &b] {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = node
                .get(
                    &format!(
                        "/v1/conversations/{}/messages?after={after}&limit=1000",
                        c.id
                    ),
                    Some(c.token("alice")),
                )
                .await;
            assert_eq!(status, 200, "{page}");
            let messages = page["messages"].as_array().unwrap().clone();
            after = messages
                .last()
                .map_or(after, |m| m["seq"].as_u64().unwrap());
            all.extend(messages);
            if page["more"] != true {
                break;
            }
        }
        let seqs: Vec<u64> = all.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "no gap");
        let mut counts = BTreeMap::<String, usize>::new();
        for m in &all {
            *counts
                .entry(m["text"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        for text in &acknowledged {
            assert_eq!(
                counts.get(text),
                Some(&1),
                "{text} stored exactly once ({} stored, {} acknowledged): {:?}",
                all.len(),
                acknowledged.len(),
                counts.keys().take(20).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            all.len(),
            acknowledged.len(),
            "nothing unacknowledged either"
        );
    }
    let (_, preview) = b.act(&c, "carol", "preview", json!({})).await;
    assert_eq!(
        preview["result"]["text"], "draft one two",
        "the acknowledged draft is intact: {preview}"
    );
}

/// MCP clients on different nodes, one over stdio (`hark mcp --url`) and one over streamable
/// HTTP with a session: each one's `check` is woken by the other's push.
#[tokio::test]
async fn mcp_clients_on_two_nodes_hear_each_other() {
    let (_url, a, b) = two_nodes(NODE_CONFIG).await;
    let c = a.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut alice = common::mcp::McpClient::stdio_remote(&a, c.token("alice")).await;
    let mut bob = common::mcp::McpClient::http(&b, c.token("bob"), "legacy").await;
    for (round, text) in ["are you there?", "yes, here"].into_iter().enumerate() {
        let ((waiter, waiter_name), writer) = match round {
            0 => ((&mut alice, "alice"), &mut bob),
            _ => ((&mut bob, "bob"), &mut alice),
        };
        waiter
            .start_call("check", json!({"timeout_ms": 50_000}))
            .await;
        a.until_checking(&c, waiter_name, true).await;
        let appended = writer.call("append", json!({"text": text})).await;
        assert!(!appended.is_error, "{}", appended.text);
        let sent = writer.call("push", json!({})).await;
        assert!(!sent.is_error, "{}", sent.text);
        let woke = waiter.finish_call().await;
        assert!(!woke.is_error, "{}", woke.text);
        assert_eq!(woke.structured["result"]["timed_out"], false);
        assert_eq!(
            woke.structured["incoming"][0]["text"], text,
            "{}",
            woke.text
        );
    }
    alice.close().await;
    bob.close().await;
}

/// A node that the others cannot reach (a wrong `--node-url`) still runs what it owns; a request
/// for it through another node is answered `503` with a sentence once the forwarding gives up,
/// and nothing is changed.
#[tokio::test]
async fn an_unreachable_owner_is_a_clear_503() {
    let (_schema, url) = fresh_schema(None).await;
    let lost = TestServer::start_on_with(
        &url,
        Some(NODE_CONFIG),
        &[("HARK_NODE_URL", "http://127.0.0.1:9")],
    )
    .await;
    let b = TestServer::start_on(&url, Some(NODE_CONFIG)).await;
    let c = lost.create(&[("alice", "human"), ("bob", "human")]).await;
    let (status, _) = lost.act(&c, "alice", "send", json!({"text": "mine"})).await;
    assert_eq!(status, 200);
    let (status, refused) = b.act(&c, "bob", "send", json!({"text": "lost"})).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{refused}"
    );
    assert_eq!(texts(&history(&lost, &c, "alice").await), ["mine"]);
}
