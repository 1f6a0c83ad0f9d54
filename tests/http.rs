//! Black-box tests: the real binary on port 0 with a temporary database, over HTTP.

mod common;

use std::time::Duration;

use common::TestServer;
use serde_json::{Value, json};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn two_participants_talk_with_a_held_push() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;

    let (status, body) = s
        .act(&c, "bob", "append", json!({"text": "I think "}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["action"], "append");
    assert_eq!(body["result"]["appended_chars"], 8);
    assert_eq!(body["draft"], json!({"segments": 1, "chars": 8}));

    let (_, body) = s
        .act(&c, "bob", "append", json!({"text": "we should go."}))
        .await;
    assert_eq!(body["draft"]["segments"], 2);

    let (status, sent) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "actually, it's raining"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(sent["result"]["status"], "sent");
    assert_eq!(sent["result"]["message"]["seq"], 1);
    assert_eq!(
        sent["composing"],
        json!(["bob"]),
        "bob's non-empty draft shows as composing"
    );

    // Bob has not seen alice's message: the push is held and the message handed over.
    let (status, held) = s.act(&c, "bob", "push", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        held["result"],
        json!({"status": "held", "reason": "unseen_messages"})
    );
    assert_eq!(held["incoming"][0]["text"], "actually, it's raining");
    assert_eq!(held["incoming"][0]["from"], "alice");
    assert_eq!(held["cursor"], 1);
    assert_eq!(held["draft"]["chars"], 21, "a held push keeps the draft");

    // Bob revises and pushes again: now it sends.
    let (_, undo) = s.act(&c, "bob", "undo", json!({})).await;
    assert_eq!(undo["result"]["removed"], "we should go.");
    s.act(&c, "bob", "append", json!({"text": "we should wait."}))
        .await;
    let (_, preview) = s.act(&c, "bob", "preview", json!({})).await;
    assert_eq!(preview["result"]["text"], "I think we should wait.");
    let (_, pushed) = s.act(&c, "bob", "push", json!({})).await;
    assert_eq!(pushed["result"]["status"], "sent");
    assert_eq!(pushed["result"]["duplicate"], false);
    let message = &pushed["result"]["message"];
    assert_eq!(message["seq"], 2);
    assert_eq!(message["text"], "I think we should wait.");
    assert_eq!(message["from"], "bob");
    assert_eq!(message["id"], format!("{}-2", c.id));
    let sent_at = message["sent_at"].as_str().unwrap();
    assert!(
        sent_at.ends_with('Z') && sent_at.len() == 24,
        "RFC 3339 with ms: {sent_at}"
    );
    assert_eq!(pushed["draft"], json!({"segments": 0, "chars": 0}));

    // Alice hears bob's message on her next action, with bob's receipt.
    let (_, alice) = s.act(&c, "alice", "typing", json!({"typing": true})).await;
    assert_eq!(alice["result"], json!({}));
    assert_eq!(alice["incoming"][0]["seq"], 2);
    assert_eq!(
        alice["receipts"],
        json!([{"participant": "bob", "read_up_to": 2}])
    );
}

#[tokio::test]
async fn reset_read_and_force_push() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    s.act(&c, "bob", "append", json!({"text": "scrap this"}))
        .await;
    let (_, reset) = s.act(&c, "bob", "reset", json!({})).await;
    assert_eq!(reset["result"]["discarded_chars"], 10);

    s.act(&c, "alice", "send", json!({"text": "one"})).await;
    s.act(&c, "alice", "send", json!({"text": "two"})).await;
    let (status, read) = s.act(&c, "bob", "read", json!({"up_to": 1})).await;
    assert_eq!(status, 200);
    assert!(read["cursor"].as_u64().unwrap() >= 1);

    s.act(&c, "bob", "append", json!({"text": "sending anyway"}))
        .await;
    s.act(&c, "alice", "send", json!({"text": "three"})).await;
    let (_, forced) = s.act(&c, "bob", "push", json!({"force": true})).await;
    assert_eq!(forced["result"]["status"], "sent");
    assert_eq!(
        forced["incoming"].as_array().unwrap().last().unwrap()["text"],
        "three"
    );
}

#[tokio::test]
async fn conversation_routes_describe_add_and_page_history() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let (status, added) = s
        .post_raw(
            &format!("/v1/conversations/{}/participants", c.id),
            None,
            json!({"name": "carol", "kind": "human"}).to_string().into(),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(added["name"], "carol");
    let carol = added["token"].as_str().unwrap().to_owned();
    assert!(carol.len() >= 32, "tokens carry at least 128 bits");

    for i in 1..=5 {
        s.act(&c, "alice", "send", json!({"text": format!("m{i}")}))
            .await;
    }
    let path = format!("/v1/conversations/{}/messages?after=1&limit=2", c.id);
    let (status, page) = s.get(&path, Some(&carol)).await;
    assert_eq!(status, 200);
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3"]);
    assert_eq!(page["more"], true);
    let (_, rest) = s
        .get(
            &format!("/v1/conversations/{}/messages?after=3", c.id),
            Some(&carol),
        )
        .await;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 2);
    assert_eq!(rest["more"], false);

    // History does not move the cursor: carol's next action still hands everything over.
    let (_, envelope) = s
        .post_raw(
            &format!("/v1/conversations/{}/preview", c.id),
            Some(&carol),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(envelope["incoming"].as_array().unwrap().len(), 5);

    s.act(&c, "bob", "typing", json!({"typing": true})).await;
    let (status, described) = s
        .get(&format!("/v1/conversations/{}", c.id), Some(&carol))
        .await;
    assert_eq!(status, 200);
    assert_eq!(described["id"], c.id);
    assert_eq!(described["title"], "test");
    assert_eq!(described["last_seq"], 5);
    assert_eq!(described["participants"].as_array().unwrap().len(), 3);
    assert_eq!(described["composing"], json!(["bob"]));
    // What a page re-reads after a reconnect: who types (a lease), apart from who drafts.
    assert_eq!(described["typing"], json!(["bob"]));
    let receipts = described["receipts"].as_array().unwrap();
    assert!(receipts.contains(&json!({"participant": "carol", "read_up_to": 5})));
    s.act(&c, "bob", "typing", json!({"typing": false})).await;
    s.act(&c, "alice", "append", json!({"text": "drafting"}))
        .await;
    let (_, described) = s
        .get(&format!("/v1/conversations/{}", c.id), Some(&carol))
        .await;
    assert_eq!(described["composing"], json!(["alice"]));
    assert_eq!(described["typing"], json!([]));

    let (status, health) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn idempotent_push_returns_the_original_message() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let (_, first) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "once", "client_id": "k1"}),
        )
        .await;
    let (_, again) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "twice", "client_id": "k1"}),
        )
        .await;
    assert_eq!(again["result"]["duplicate"], true);
    assert_eq!(again["result"]["message"], first["result"]["message"]);
    assert_eq!(again["result"]["message"]["client_id"], "k1");
    let (_, history) = s
        .get(
            &format!("/v1/conversations/{}/messages", c.id),
            Some(c.token("bob")),
        )
        .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn every_error_code_is_json_with_the_right_status() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let other = s.create(&[("zed", "human")]).await;
    let act = |action: &str| format!("/v1/conversations/{}/{action}", c.id);
    let alice = Some(c.token("alice"));

    let cases: Vec<(u16, &str, (u16, Value))> = vec![
        (400, "bad_request", s.post_raw(&act("append"), alice, b"{not json".to_vec()).await),
        (400, "bad_request", s.post_raw(&act("append"), alice, br#"{"text": 5}"#.to_vec()).await),
        (400, "bad_request", s.post_raw(&act("append"), alice, br#"{"txt": "x"}"#.to_vec()).await),
        (400, "bad_request", s.post_raw(&act("read"), alice, br#"{"up_to": -3}"#.to_vec()).await),
        (400, "bad_request", s.post_raw(&act("read"), alice, br#"{"up_to": 1e999}"#.to_vec()).await),
        (400, "bad_request", s.post_raw(&act("dance"), alice, b"{}".to_vec()).await),
        (400, "bad_request", s.post_raw(&act("append"), alice, vec![b'"', 0xff, 0xfe, b'"']).await),
        (400, "bad_request", s.post_raw(&act("push"), alice, br#"{"client_id": ""}"#.to_vec()).await),
        (413, "too_large", s.post_raw(&act("append"), alice, vec![b' '; 1024 * 1024 + 1]).await),
        (401, "unauthorized", s.post_raw(&act("preview"), None, b"{}".to_vec()).await),
        (401, "unauthorized", s.post_raw(&act("preview"), Some("hark_forged"), b"{}".to_vec()).await),
        (403, "forbidden", s.post_raw(&act("preview"), Some(other.token("zed")), b"{}".to_vec()).await),
        (404, "not_found", s.get("/v1/conversations/0000/messages", alice).await),
        (404, "not_found", s.get("/v1/conversations/0000", None).await),
        (404, "not_found", s.get("/no/such/route", None).await),
        (422, "empty_text", s.post_raw(&act("append"), alice, br#"{"text": ""}"#.to_vec()).await),
        (409, "nothing_to_undo", s.post_raw(&act("undo"), alice, b"".to_vec()).await),
        (409, "empty_draft", s.post_raw(&act("push"), alice, b"{}".to_vec()).await),
        (
            422,
            "too_long",
            s.post_raw(&act("send"), alice, json!({"text": "x".repeat(20_001)}).to_string().into())
                .await,
        ),
        (
            409,
            "duplicate_name",
            s.post_raw(
                &format!("/v1/conversations/{}/participants", c.id),
                None,
                json!({"name": "bob", "kind": "human"}).to_string().into(),
            )
            .await,
        ),
        (
            409,
            "duplicate_name",
            s.post_raw(
                "/v1/conversations",
                None,
                json!({"participants": [{"name": "a", "kind": "human"}, {"name": "a", "kind": "agent"}]})
                    .to_string()
                    .into(),
            )
            .await,
        ),
        (
            400,
            "bad_request",
            s.post_raw(
                "/v1/conversations",
                None,
                json!({"participants": [{"name": "no spaces", "kind": "human"}]}).to_string().into(),
            )
            .await,
        ),
        (
            400,
            "bad_request",
            s.post_raw(
                "/v1/conversations",
                None,
                json!({"participants": [{"name": "r2", "kind": "robot"}]}).to_string().into(),
            )
            .await,
        ),
        (
            422,
            "unknown_agent",
            s.post_raw(
                "/v1/conversations",
                None,
                json!({"participants": [{"name": "c", "kind": "agent", "agent": "nope"}]})
                    .to_string()
                    .into(),
            )
            .await,
        ),
    ];
    for (index, (status, expected_code, (got_status, body))) in cases.iter().enumerate() {
        assert_eq!(got_status, status, "case {index}: {body}");
        assert_eq!(code(body), *expected_code, "case {index}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.len() > 10,
            "case {index} explains itself: {message}"
        );
    }

    // None of those errors handed anything over or moved alice's cursor.
    let (_, preview) = s.act(&c, "alice", "preview", json!({})).await;
    assert_eq!(preview["cursor"], 0);
    assert_eq!(preview["draft"]["chars"], 0);
}

#[tokio::test]
async fn admin_token_rules() {
    let s = TestServer::start_with(None, &[("HARK_ADMIN_TOKEN", "sesame-admin-token")]).await;
    let create = json!({"participants": [{"name": "alice", "kind": "human"}]}).to_string();
    let (status, body) = s
        .post_raw("/v1/conversations", None, create.clone().into())
        .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = s
        .post_raw("/v1/conversations", Some("wrong"), create.clone().into())
        .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, created) = s
        .post_raw(
            "/v1/conversations",
            Some("sesame-admin-token"),
            create.into(),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    let alice = created["participants"][0]["token"].as_str().unwrap();

    // A participant token on an admin route, and the admin token on a participant route.
    let (status, body) = s
        .post_raw(
            &format!("/v1/conversations/{id}/participants"),
            Some(alice),
            json!({"name": "eve", "kind": "human"}).to_string().into(),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, body) = s
        .post_raw(
            &format!("/v1/conversations/{id}/preview"),
            Some("sesame-admin-token"),
            vec![],
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    // The admin may describe any conversation; nobody without a token may.
    let (status, _) = s
        .get(
            &format!("/v1/conversations/{id}"),
            Some("sesame-admin-token"),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.get(&format!("/v1/conversations/{id}"), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn refuses_a_public_address_without_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(dir.path().join("x.db"))
        .env_remove("HARK_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin token"), "says why: {stderr}");
}

#[tokio::test]
async fn rate_limit_answers_429_per_token() {
    let s = TestServer::start_with(
        Some("[server]\nrate_limit_per_s = 1\nrate_limit_burst = 3\n"),
        &[],
    )
    .await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(s.act(&c, "alice", "preview", json!({})).await);
    }
    let limited: Vec<&(u16, Value)> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{statuses:?}");
    assert_eq!(code(&limited[0].1), "rate_limited");
    // Another token is not affected.
    let (status, _) = s.act(&c, "bob", "preview", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unicode_limits_count_scalar_values_and_never_split_a_character() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    // 1,999 ASCII characters and then multi-byte ones: the cut lands after the first emoji.
    let text = format!("{}🙂🙃日本", "a".repeat(1_999));
    let (status, body) = s.act(&c, "alice", "append", json!({"text": text})).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["appended_chars"], 2_000);
    assert_eq!(body["result"]["truncated"], true);
    assert_eq!(body["result"]["dropped_chars"], 3);
    let notice = body["result"]["notice"].as_str().unwrap();
    assert!(
        notice.contains("🙃日本"),
        "the notice quotes what was dropped: {notice}"
    );
    let (_, preview) = s.act(&c, "alice", "preview", json!({})).await;
    let kept = preview["result"]["text"].as_str().unwrap();
    assert!(kept.ends_with('🙂'));
    assert_eq!(kept.chars().count(), 2_000);
}

#[tokio::test]
async fn check_wakes_on_another_participants_push_and_times_out_otherwise() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let (status, quiet) = s.act(&c, "bob", "check", json!({"timeout_ms": 200})).await;
    assert_eq!(status, 200);
    assert_eq!(quiet["result"]["timed_out"], true);

    let waiting = s.spawn_check(&c, "bob");
    // The check is parked (the description lists bob as checking) before alice sends.
    s.until_checking(&c, "bob", true).await;
    assert!(!waiting.is_finished());
    s.act(&c, "alice", "send", json!({"text": "wake up"})).await;
    let woken = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("check returns long before its 60 s timeout")
        .unwrap();
    assert_eq!(woken["result"]["timed_out"], false);
    assert_eq!(woken["incoming"][0]["text"], "wake up");
}

#[tokio::test]
async fn event_stream_resumes_without_gaps_or_duplicates() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    for i in 1..=3 {
        s.act(&c, "alice", "send", json!({"text": format!("m{i}")}))
            .await;
    }
    // Resume after seq 1: replays 2 and 3, then goes live with 4 and 5.
    let mut events = s.events(&c, "bob", Some(1)).await;
    let a = events.next_message().await.unwrap();
    let b = events.next_message().await.unwrap();
    assert_eq!((a["seq"].as_u64(), b["seq"].as_u64()), (Some(2), Some(3)));
    s.act(&c, "alice", "send", json!({"text": "m4"})).await;
    s.act(&c, "bob", "send", json!({"text": "m5"})).await;
    let d = events.next_message().await.unwrap();
    let e = events.next_message().await.unwrap();
    assert_eq!(
        (d["text"].as_str(), e["text"].as_str()),
        (Some("m4"), Some("m5"))
    );

    // A fresh stream with ?after=0 replays all five in order, each exactly once.
    let response = s
        .client
        .get(format!(
            "{}/v1/conversations/{}/events?after=0",
            s.url, c.id
        ))
        .bearer_auth(c.token("bob"))
        .send()
        .await
        .unwrap();
    let mut replay = common::Events::from_response(response);
    for seq in 1..=5 {
        assert_eq!(replay.next_message().await.unwrap()["seq"], seq);
    }

    // Composing and receipt events arrive too.
    s.act(&c, "alice", "typing", json!({"typing": true})).await;
    let mut kinds = Vec::new();
    loop {
        let event = events.next().await.unwrap();
        if event.event == "composing" {
            assert_eq!(
                event.data,
                json!({"participant": "alice", "composing": true})
            );
            break;
        }
        kinds.push(event.event);
    }
    assert!(
        kinds.iter().any(|k| k == "receipt"),
        "receipts were streamed: {kinds:?}"
    );
}

#[tokio::test]
async fn concurrent_pushes_from_many_participants_get_gapless_seqs() {
    let s = TestServer::start().await;
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let list: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "agent")).collect();
    let c = std::sync::Arc::new(s.create(&list).await);
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for name in names.clone() {
        let (s, c) = (s.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let (status, body) = s
                    .act(&c, &name, "send", json!({"text": format!("{name}:{i}")}))
                    .await;
                assert_eq!(status, 200, "{body}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (_, history) = s
        .get(
            &format!("/v1/conversations/{}/messages?limit=1000", c.id),
            Some(c.token("p0")),
        )
        .await;
    let seqs: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=160).collect::<Vec<u64>>());
}

#[tokio::test]
async fn an_acknowledged_message_survives_kill_9() {
    let mut s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    s.act(&c, "bob", "append", json!({"text": "half-written "}))
        .await;
    let (status, sent) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "remember me", "client_id": "c-1"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(sent["result"]["status"], "sent");
    s.kill9().await;
    s.restart().await;

    let (_, history) = s
        .get(
            &format!("/v1/conversations/{}/messages", c.id),
            Some(c.token("bob")),
        )
        .await;
    assert_eq!(history["messages"][0]["text"], "remember me");
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    // The retry of the acknowledged push is recognised, and bob's draft survived intact.
    let (_, retry) = s
        .act(
            &c,
            "alice",
            "send",
            json!({"text": "remember me", "client_id": "c-1"}),
        )
        .await;
    assert_eq!(retry["result"]["duplicate"], true);
    let (_, preview) = s.act(&c, "bob", "preview", json!({})).await;
    assert_eq!(preview["result"]["text"], "half-written ");
    assert_eq!(preview["incoming"][0]["seq"], 1);
}

#[tokio::test]
async fn sigterm_ends_event_streams_and_waiting_checks() {
    let mut s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let mut events = s.events(&c, "alice", None).await;
    let waiting = s.spawn_check(&c, "bob");
    s.until_checking(&c, "bob", true).await;
    let exit = s.terminate().await;
    assert_eq!(exit, Some(0));
    let check = waiting.await.unwrap();
    assert_eq!(check["result"]["timed_out"], true);
    assert!(events.next().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn http2_clients_with_prior_knowledge_are_served() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let waiting = {
        let (h2, url, id, token) = (
            h2.clone(),
            s.url.clone(),
            c.id.clone(),
            c.token("bob").to_owned(),
        );
        tokio::spawn(async move {
            h2.post(format!("{url}/v1/conversations/{id}/check"))
                .bearer_auth(token)
                .json(&json!({"timeout_ms": 60_000}))
                .send()
                .await
                .unwrap()
        })
    };
    let sent = h2
        .post(format!("{}/v1/conversations/{}/send", s.url, c.id))
        .bearer_auth(c.token("alice"))
        .json(&json!({"text": "over h2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.version(), reqwest::Version::HTTP_2);
    assert_eq!(sent.status(), 200);
    let woken = waiting.await.unwrap();
    assert_eq!(woken.version(), reqwest::Version::HTTP_2);
    let body: Value = woken.json().await.unwrap();
    assert_eq!(body["incoming"][0]["text"], "over h2");
}

#[tokio::test]
async fn tokens_are_stored_only_as_digests_and_open_only_their_conversation() {
    let s = TestServer::start().await;
    let c = s.create(&[("alice", "human"), ("bob", "agent")]).await;
    let other = s.create(&[("mallory", "human")]).await;
    s.act(&c, "alice", "send", json!({"text": "for bob only"}))
        .await;

    // No token appears anywhere in the database files, write-ahead log included.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("hark.db")
        {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!stored.is_empty());
    for (_, token) in c.tokens.iter().chain(&other.tokens) {
        let secret = token.trim_start_matches("hark_").as_bytes();
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret),
            "a token is stored in clear"
        );
    }

    // Another conversation's token reads and hears nothing here.
    let mallory = Some(other.token("mallory"));
    for path in [
        format!("/v1/conversations/{}/messages", c.id),
        format!("/v1/conversations/{}/events", c.id),
        format!("/v1/conversations/{}", c.id),
    ] {
        let (status, body) = s.get(&path, mallory).await;
        assert_eq!((status, code(&body)), (403, "forbidden"), "{path}");
    }
}

#[tokio::test]
async fn display_names_in_any_script_are_kept_beside_the_handle_across_a_restart() {
    let mut s = TestServer::start().await;
    let (status, created) = s
        .post_raw(
            "/v1/conversations",
            None,
            json!({"participants": [
                {"name": "zoe", "kind": "human", "display_name": "  Zoë  "},
                {"name": "p2", "kind": "human"},
            ]})
            .to_string()
            .into(),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["participants"][0]["display_name"], "Zoë", "trimmed");
    assert!(created["participants"][1].get("display_name").is_none());
    let id = created["id"].as_str().unwrap().to_owned();
    let zoe = created["participants"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, added) = s
        .post_raw(
            &format!("/v1/conversations/{id}/participants"),
            None,
            json!({"name": "sara", "kind": "human", "display_name": "سارا"})
                .to_string()
                .into(),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["display_name"], "سارا");

    // Refused with a sentence that says why: empty, too long, a control character.
    for bad in [json!("   "), json!("x".repeat(65)), json!("Sam\nSmith")] {
        let (status, body) = s
            .post_raw(
                &format!("/v1/conversations/{id}/participants"),
                None,
                json!({"name": "bad", "kind": "human", "display_name": bad})
                    .to_string()
                    .into(),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(code(&body), "bad_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("display name"),
            "{body}"
        );
    }
    // 64 scalar values of a four-byte character are fine.
    let (status, _) = s
        .post_raw(
            &format!("/v1/conversations/{id}/participants"),
            None,
            json!({"name": "emoji", "kind": "human", "display_name": "😀".repeat(64)})
                .to_string()
                .into(),
        )
        .await;
    assert_eq!(status, 201);

    s.kill9().await;
    s.restart().await;
    let (_, me) = s.get("/v1/whoami", Some(&zoe)).await;
    assert_eq!(me["you"]["name"], "zoe");
    assert_eq!(me["you"]["display_name"], "Zoë");
    let listed: Vec<(Value, Value)> = me["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["display_name"].clone()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (json!("zoe"), json!("Zoë")),
            (json!("p2"), Value::Null),
            (json!("sara"), json!("سارا")),
            (json!("emoji"), json!("😀".repeat(64))),
        ]
    );
    let (_, sent) = s
        .post_raw(
            &format!("/v1/conversations/{id}/send"),
            Some(&zoe),
            json!({"text": "hi"}).to_string().into(),
        )
        .await;
    assert_eq!(
        sent["result"]["message"]["from"], "zoe",
        "messages keep the handle"
    );
}

/// A 1×1 PNG, base64.
const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

#[tokio::test]
async fn a_photo_is_stored_durably_type_checked_size_limited_and_served_to_participants_only() {
    let mut s = TestServer::start_with(Some("[limits]\nmax_attachment_bytes = 100\n"), &[]).await;
    let c = s.create(&[("alice", "human"), ("bob", "human")]).await;
    let other = s.create(&[("eve", "human")]).await;
    let path = format!("/v1/conversations/{}/attachments", c.id);
    let upload = |mime: &str, data: &str| json!({"mime": mime, "data": data}).to_string().into();

    let (status, stored) = s
        .post_raw(&path, Some(c.token("alice")), upload("image/png", PNG_1X1))
        .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["attachment"]["mime"], "image/png");
    assert_eq!(stored["attachment"]["bytes"], 70);
    let aid = stored["attachment"]["id"].as_str().unwrap().to_owned();

    // Refused, each with its own sentence: a type that is not an image this server takes, bytes
    // that are not what the type says, data that is not base64, more than the configured size.
    for (mime, data, want_status, want_code, says) in [
        ("image/svg+xml", PNG_1X1, 400, "bad_request", "image/png"),
        (
            "image/jpeg",
            PNG_1X1,
            400,
            "bad_request",
            "not a image/jpeg",
        ),
        ("image/png", "not base64!", 400, "bad_request", "base64"),
        (
            "image/gif",
            &format!("R0lGODlh{}", "A".repeat(200)),
            413,
            "too_large",
            "100",
        ),
    ] {
        let (status, body) = s
            .post_raw(&path, Some(c.token("alice")), upload(mime, data))
            .await;
        assert_eq!(
            (status, code(&body)),
            (want_status, want_code),
            "{mime}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{mime}: {message}");
    }
    let (status, _) = s.post_raw(&path, None, upload("image/png", PNG_1X1)).await;
    assert_eq!(status, 401);

    s.kill9().await;
    s.restart().await;
    let get = |token: Option<String>| {
        let request = s.client.get(format!("{}{path}/{aid}", s.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let response = get(Some(c.token("bob").to_owned())).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), 70);
    assert_eq!(&bytes[..4], b"\x89PNG");
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(
        get(Some(other.token("eve").to_owned()))
            .await
            .unwrap()
            .status(),
        403,
        "another conversation's token does not open it"
    );
    let (status, body) = s.get(&format!("{path}/nope"), Some(c.token("bob"))).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}
