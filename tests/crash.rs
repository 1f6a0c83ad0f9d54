//! Crash safety: participants push concurrently while the server is killed with SIGKILL at
//! random moments and restarted on the same file. Afterwards every acknowledged message is
//! there exactly once, seqs have no gaps, no draft was ever seen half-applied, and no cursor
//! moved back.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TestServer;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::RwLock;

const KILLS: usize = 5;
const CONVERSATIONS: usize = 2;
const PARTICIPANTS: usize = 4;

/// What one worker learned from acknowledged answers.
#[derive(Default, Debug)]
struct Ledger {
    /// client_id → (seq, text) of every push answered `sent`.
    acknowledged: BTreeMap<String, (u64, String)>,
    /// The highest cursor an acknowledged answer reported.
    max_cursor: u64,
}

struct Shared {
    url: RwLock<String>,
    client: reqwest::Client,
    stop: AtomicBool,
}

impl Shared {
    /// One action; `None` if the server was unreachable or answered 5xx (outcome unknown).
    async fn act(&self, id: &str, token: &str, action: &str, body: Value) -> Option<(u16, Value)> {
        let url = format!("{}/v1/conversations/{id}/{action}", self.url.read().await);
        let response = self
            .client
            .post(url)
            .bearer_auth(token)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        if status >= 500 {
            return None;
        }
        Some((status, response.json().await.ok()?))
    }
}

async fn worker(shared: Arc<Shared>, id: String, name: String, token: String) -> Ledger {
    let mut ledger = Ledger::default();
    let mut round = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let a = format!("{name}/{round}/a|");
        let b = format!("{name}/{round}/b|");
        let full = format!("{a}{b}");
        let client_id = format!("{name}-{round}");
        // Whether a push for this round may have reached the server.
        let mut push_attempted = false;
        // How much of this round's draft the server has acknowledged.
        let mut acknowledged_draft = String::new();
        loop {
            let Some((status, preview)) = shared.act(&id, &token, "preview", json!({})).await
            else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            assert_eq!(status, 200, "{preview}");
            note_cursor(&mut ledger, &preview);
            let draft = preview["result"]["text"].as_str().unwrap().to_owned();
            // Never half-applied: the draft is one of the states this round goes through.
            assert!(
                draft.is_empty() || draft == a || draft == full,
                "{name}: draft {draft:?} is not a whole state of round {round}"
            );
            // Never lost: an acknowledged append stays until a push takes the draft away.
            if !push_attempted {
                assert!(
                    draft.starts_with(&acknowledged_draft),
                    "{name}: acknowledged draft {acknowledged_draft:?} lost, found {draft:?}"
                );
            }
            let (action, body) = if draft == full || (draft.is_empty() && push_attempted) {
                push_attempted = true;
                ("push", json!({"force": true, "client_id": client_id}))
            } else if draft.is_empty() {
                ("append", json!({"text": a}))
            } else {
                ("append", json!({"text": b}))
            };
            let Some((status, result)) = shared.act(&id, &token, action, body).await else {
                continue;
            };
            note_cursor(&mut ledger, &result);
            if action == "append" {
                assert_eq!(status, 200, "{result}");
                acknowledged_draft = preview_after_append(&draft, &a, &b);
                continue;
            }
            if status == 409 && result["error"]["code"] == "empty_draft" {
                // The earlier push never landed and the draft was empty: start the round over.
                push_attempted = false;
                continue;
            }
            assert_eq!(status, 200, "{result}");
            assert_eq!(result["result"]["status"], "sent", "{result}");
            let message = &result["result"]["message"];
            let seq = message["seq"].as_u64().unwrap();
            let text = message["text"].as_str().unwrap().to_owned();
            assert_eq!(text, full, "a message is the whole draft");
            ledger.acknowledged.insert(client_id.clone(), (seq, text));
            break;
        }
        round += 1;
    }
    ledger
}

fn preview_after_append(before: &str, a: &str, b: &str) -> String {
    if before.is_empty() {
        a.to_owned()
    } else {
        format!("{a}{b}")
    }
}

fn note_cursor(ledger: &mut Ledger, envelope: &Value) {
    if let Some(cursor) = envelope["cursor"].as_u64() {
        ledger.max_cursor = ledger.max_cursor.max(cursor);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill() {
    let seed: u64 = std::env::var("HARK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261121);
    println!("seed {seed} (set HARK_CRASH_SEED to replay the same kill schedule)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut server = TestServer::start_with(Some("[server]\nrate_limit_per_s = 0\n"), &[]).await;
    let names: Vec<String> = (0..PARTICIPANTS).map(|i| format!("p{i}")).collect();
    let list: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "agent")).collect();
    let mut conversations = Vec::new();
    for _ in 0..CONVERSATIONS {
        conversations.push(server.create(&list).await);
    }
    let shared = Arc::new(Shared {
        url: RwLock::new(server.url.clone()),
        client: reqwest::Client::new(),
        stop: AtomicBool::new(false),
    });
    let mut workers = Vec::new();
    for c in &conversations {
        for name in &names {
            workers.push((
                c.id.clone(),
                name.clone(),
                tokio::spawn(worker(
                    shared.clone(),
                    c.id.clone(),
                    name.clone(),
                    c.token(name).to_owned(),
                )),
            ));
        }
    }

    for _ in 0..KILLS {
        let delay = rng.random_range(150..600);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9().await;
        server.restart().await;
        *shared.url.write().await = server.url.clone();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.stop.store(true, Ordering::Relaxed);

    let mut ledgers: HashMap<(String, String), Ledger> = HashMap::new();
    for (id, name, task) in workers {
        ledgers.insert(
            (id, name),
            task.await.expect("no worker saw a broken invariant"),
        );
    }

    let mut total = 0;
    for c in &conversations {
        let (status, history) = server
            .get(
                &format!("/v1/conversations/{}/messages?limit=1000", c.id),
                Some(c.token("p0")),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(history["more"], false);
        let messages = history["messages"].as_array().unwrap();
        let seqs: Vec<u64> = messages
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=messages.len() as u64).collect::<Vec<_>>(),
            "no gaps"
        );
        let mut by_client_id: HashMap<&str, Vec<&Value>> = HashMap::new();
        for m in messages {
            let client_id = m["client_id"]
                .as_str()
                .expect("every push carried a client_id");
            by_client_id.entry(client_id).or_default().push(m);
        }
        for (client_id, copies) in &by_client_id {
            assert_eq!(copies.len(), 1, "{client_id} stored once");
        }
        let (_, described) = server
            .get(&format!("/v1/conversations/{}", c.id), Some(c.token("p0")))
            .await;
        for name in &names {
            let ledger = &ledgers[&(c.id.clone(), name.clone())];
            for (client_id, (seq, text)) in &ledger.acknowledged {
                let stored = by_client_id
                    .get(client_id.as_str())
                    .unwrap_or_else(|| panic!("acknowledged {client_id} was lost"));
                assert_eq!(stored[0]["seq"].as_u64(), Some(*seq));
                assert_eq!(stored[0]["text"].as_str(), Some(text.as_str()));
                total += 1;
            }
            let receipt = described["receipts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["participant"] == name.as_str())
                .unwrap();
            assert!(
                receipt["read_up_to"].as_u64().unwrap() >= ledger.max_cursor,
                "{name}'s cursor moved back below {}",
                ledger.max_cursor
            );
        }
    }
    println!("{total} acknowledged messages checked across {KILLS} kills");
    assert!(total > 50, "the test exercised enough pushes ({total})");
}
