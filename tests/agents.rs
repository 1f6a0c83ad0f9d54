//! Built-in agents end to end: the real binary, its HTTP API, and a stand-in model server that
//! speaks the OpenAI wire format (hark-test-llm), with scripted latencies.
//!
//! Only what needs real processes and the real wire is here: one path per behaviour class (a
//! burst, a barge-in that closes the model's HTTP stream, a restart after `kill -9`, `hark talk`,
//! the endpoint model's requests and its key). The drivers' behaviours in detail (echoes,
//! errors, retries, typing leases, loop guards, endpoint verdicts, restarts) are tested on a
//! virtual clock in `crates/hark-server/tests/{reply,actions}_driver.rs`.

mod common;

use std::time::Duration;

use common::coach::{config, create};
use common::{Conversation, Events, TestServer};
use hark_test_llm::{Script, StandIn};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

async fn start(stand_in: &StandIn) -> (TestServer, Conversation) {
    let server = TestServer::start_with(Some(&config(stand_in, "")), &[]).await;
    let conversation = create(&server).await;
    (server, conversation)
}

async fn say(server: &TestServer, c: &Conversation, text: &str) -> u64 {
    let (status, body) = server.act(c, "pat", "send", json!({"text": text})).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["message"]["seq"].as_u64().unwrap()
}

/// The next message from the coach on the stream.
async fn next_from_coach(events: &mut Events) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, events.next_message())
            .await
            .expect("the coach answers in time")
            .expect("the stream stays open");
        if message["from"] == "coach" {
            return message;
        }
    }
}

async fn history(server: &TestServer, c: &Conversation) -> Vec<Value> {
    let (_, page) = server
        .get(
            &format!("/v1/conversations/{}/messages?limit=1000", c.id),
            Some(c.token("pat")),
        )
        .await;
    page["messages"].as_array().unwrap().clone()
}

/// The messages of an OpenAI request body, without the system message.
fn conversation_of(request: &hark_test_llm::RecordedRequest) -> Vec<Value> {
    request.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_three_bubble_burst_gets_one_reply_that_read_all_three() {
    let stand_in = StandIn::start().await;
    stand_in.set_responder(|_| Script::text("Try a mushroom risotto."));
    let (server, c) = start(&stand_in).await;
    let mut events = server.events(&c, "pat", None).await;

    say(&server, &c, "hey").await;
    say(&server, &c, "so i was thinking").await;
    let last = say(&server, &c, "what should i cook tonight?").await;
    let reply = next_from_coach(&mut events).await;
    assert_eq!(reply["text"], "Try a mushroom risotto.");
    assert!(reply["seq"].as_u64().unwrap() > last);

    let requests = stand_in.requests();
    assert_eq!(requests.len(), 1, "one generation for the burst");
    let messages = conversation_of(&requests[0]);
    assert_eq!(
        messages.len(),
        1,
        "the burst is one user message: {messages:?}"
    );
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(
        messages[0]["content"],
        "hey\nso i was thinking\nwhat should i cook tonight?"
    );
    let system = requests[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("You are a warm, concise coach."),
        "{system}"
    );

    // The next message opens the next turn: exactly one reply came for the burst.
    say(&server, &c, "thanks!").await;
    next_from_coach(&mut events).await;
    let from_coach: Vec<Value> = history(&server, &c)
        .await
        .into_iter()
        .filter(|m| m["from"] == "coach")
        .collect();
    assert_eq!(from_coach.len(), 2);
    let second = conversation_of(&stand_in.requests()[1]);
    assert_eq!(second.len(), 3, "user, assistant, user: {second:?}");
    assert_eq!(second[1]["content"], "Try a mushroom risotto.");
    assert_eq!(second[2]["content"], "thanks!");
}

#[tokio::test]
async fn a_bubble_during_generation_aborts_it_and_the_stale_answer_is_never_sent() {
    let stand_in = StandIn::start().await;
    // The first generation is slow; anything after it answers at once.
    stand_in.push(
        Script::text("STALE answer that must never be sent.")
            .chunked(4)
            .first_delay_ms(1_500)
            .chunk_delay_ms(100),
    );
    stand_in.set_responder(|_| Script::text("Fresh answer."));
    let (server, c) = start(&stand_in).await;
    let mut events = server.events(&c, "pat", None).await;

    say(&server, &c, "what about dinner?").await;
    let first = stand_in.wait_for_requests(1, PATIENCE).await;
    assert_eq!(first.len(), 1, "the generation started");
    say(&server, &c, "vegetarian please").await;
    assert!(
        stand_in.wait_for_close(0, PATIENCE).await,
        "the stand-in saw the aborted stream's connection close"
    );

    let reply = next_from_coach(&mut events).await;
    assert_eq!(reply["text"], "Fresh answer.");
    let requests = stand_in.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].last_user_text().as_deref(),
        Some("what about dinner?\nvegetarian please"),
        "the next request includes the bubble that interrupted"
    );
    let texts: Vec<String> = history(&server, &c)
        .await
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(texts.iter().all(|t| !t.contains("STALE")), "{texts:?}");
}

#[tokio::test]
async fn a_reply_cut_off_by_max_tokens_ends_at_its_last_sentence_in_both_wire_formats() {
    for provider in ["openai", "anthropic"] {
        let stand_in = StandIn::start().await;
        // The first answer is cut mid-sentence; the second has no finished sentence at all.
        stand_in.push(
            Script::text("Sure, here it is. First boil the pasta. Then I went to the store and")
                .max_tokens(),
        );
        stand_in.push(Script::text("Well, I think that the").max_tokens());
        stand_in.set_responder(|_| Script::text("Anything else?"));
        let base_url = match provider {
            "openai" => stand_in.openai_base_url(),
            _ => stand_in.anthropic_base_url(),
        };
        // One bubble per reply, so that each turn's whole answer is one message.
        let toml = config(&stand_in, "max_bubbles = 1").replace(
            &format!(
                "provider = \"openai\"\nbase_url = \"{}\"",
                stand_in.openai_base_url()
            ),
            &format!("provider = \"{provider}\"\nbase_url = \"{base_url}\""),
        );
        assert!(
            toml.contains(&format!("provider = \"{provider}\"")),
            "{toml}"
        );
        let server = TestServer::start_with(Some(&toml), &[]).await;
        let c = create(&server).await;
        let mut events = server.events(&c, "pat", None).await;

        say(&server, &c, "how do I cook pasta?").await;
        let first = next_from_coach(&mut events).await;
        assert_eq!(
            first["text"], "Sure, here it is. First boil the pasta.",
            "{provider}: the cut-off sentence is gone"
        );

        // The second turn ends (the coach stops composing) without a message: a fragment alone
        // is not said.
        say(&server, &c, "and then?").await;
        stand_in.wait_for_requests(2, PATIENCE).await;
        let mut composing = false;
        loop {
            let event = events.next().await.expect("the stream stays open");
            let data = &event.data;
            if event.event == "message" && data["from"] == "coach" {
                panic!("{provider}: the coach said a fragment: {data}");
            }
            if event.event == "composing" && data["participant"] == "coach" {
                if data["composing"] == true {
                    composing = true;
                } else if composing {
                    break;
                }
            }
        }
        say(&server, &c, "hello?").await;
        assert_eq!(next_from_coach(&mut events).await["text"], "Anything else?");
    }
}

#[tokio::test]
async fn a_restart_mid_turn_answers_the_burst_exactly_once() {
    let stand_in = StandIn::start().await;
    // The generation in flight when the server dies never finishes.
    stand_in.push(Script::hang());
    stand_in.set_responder(|r| {
        if r.last_user_text().is_some_and(|t| t.contains("ok thanks")) {
            Script::text("You're welcome.")
        } else {
            Script::text("Answered once.")
        }
    });
    let (mut server, c) = start(&stand_in).await;

    let asked = say(&server, &c, "quick question: tea or coffee?").await;
    assert_eq!(stand_in.wait_for_requests(1, PATIENCE).await.len(), 1);
    server.kill9().await;
    server.restart().await;

    // After the restart the agent finds the unanswered burst and answers it.
    let mut events = server.events(&c, "pat", Some(asked)).await;
    let reply = next_from_coach(&mut events).await;
    assert_eq!(reply["text"], "Answered once.");
    say(&server, &c, "ok thanks").await;
    let second = next_from_coach(&mut events).await;
    assert_eq!(second["text"], "You're welcome.");
    let from_coach: Vec<String> = history(&server, &c)
        .await
        .iter()
        .filter(|m| m["from"] == "coach")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(from_coach, ["Answered once.", "You're welcome."]);

    // And a second restart does not answer anything again.
    server.kill9().await;
    server.restart().await;
    say(&server, &c, "bye").await;
    let mut events = server.events(&c, "pat", None).await;
    let third = next_from_coach(&mut events).await;
    assert_eq!(
        third["text"], "Answered once.",
        "the responder's default text"
    );
    let count = history(&server, &c)
        .await
        .iter()
        .filter(|m| m["from"] == "coach")
        .count();
    assert_eq!(count, 3, "one reply per burst, none repeated");
}

#[tokio::test]
async fn hark_talk_shows_an_agent_interrupted_mid_draft_revising_before_it_pushes() {
    let stand_in = StandIn::start().await;
    stand_in.set_responder(|r| {
        let body = r.body.to_string();
        let prompt = r.last_user_text().unwrap_or_default();
        if body.contains("You are bob") {
            // Bob answers quickly, every time.
            return Script::text("Bob here: start small.");
        }
        if prompt.contains("While you were writing") {
            // Alice heard bob mid-draft: she throws the draft away...
            return Script::tool_call("reset", json!({}));
        }
        if prompt.contains("You called reset") {
            // ...and writes a revised message.
            return Script::text("Revised after hearing bob: small steps it is.");
        }
        // Alice's first draft streams slowly, sentence by sentence.
        Script::text("I think we should plan everything first. Then build it all at once. ")
            .chunked(6)
            .chunk_delay_ms(120)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("talk.toml");
    let agent = |name: &str| {
        format!(
            "[[agent]]\nname = \"{name}\"\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"stand-in\"\nmode = \"actions\"\nstreaming = true\nmax_retries = 0\n",
            stand_in.openai_base_url()
        )
    };
    std::fs::write(&config, format!("{}\n{}", agent("alice"), agent("bob"))).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hark"))
            .args([
                "talk",
                "--agents",
                "alice,bob",
                "--max-messages",
                "3",
                "--timeout-s",
                "60",
            ])
            .arg("--topic")
            .arg("How should we build the app?")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "error")
            .output(),
    )
    .await
    .expect("hark talk finishes")
    .unwrap();
    let transcript = String::from_utf8_lossy(&output.stdout);
    println!("{transcript}");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = |needle: &str| {
        transcript
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{transcript}"))
    };
    let drafting = line("+\"I think we should plan everything first. \"");
    let interrupted = line("alice      ⚡ interrupted mid-draft by bob");
    let revised = line("alice      ↺ reset");
    let sent = line("Revised after hearing bob: small steps it is.");
    assert!(drafting < interrupted && interrupted < revised && revised < sent);
    assert!(
        !transcript.contains("#2 I think we should plan"),
        "the interrupted draft was never sent as it was"
    );
}

#[tokio::test]
async fn the_endpoint_model_is_asked_over_the_wire_and_its_key_is_never_logged() {
    const KEY: &str = "sk-endpoint-7f3a9c1e5b";
    let stand_in = StandIn::start().await;
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    stand_in.set_responder(move |r| {
        if r.body["model"] != "small" {
            return Script::text("Go on.");
        }
        // First a verdict; then a refusal that echoes the key back, as some servers do.
        match count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Script::text(r#"{"done": true}"#),
            _ => Script::status(401, format!("invalid key {KEY}")),
        }
    });
    let endpoint = format!(
        "[agent.endpoint_model]\nprovider = \"openai\"\nbase_url = \"{}\"\nmodel = \"small\"\n\
         api_key_env = \"HARK_TEST_ENDPOINT_KEY\"\ntimeout_ms = 2000\n",
        stand_in.openai_base_url()
    );
    let server = TestServer::start_logged(
        Some(&config(&stand_in, &endpoint)),
        &[("HARK_TEST_ENDPOINT_KEY", KEY), ("RUST_LOG", "debug")],
    )
    .await;
    let c = create(&server).await;
    let mut events = server.events(&c, "pat", None).await;

    say(&server, &c, "so the thing is,").await;
    assert_eq!(next_from_coach(&mut events).await["text"], "Go on.");
    // The endpoint model refuses the key: nothing is fed, the engine's rules decide once its
    // timeout passes, and the reply still comes.
    say(&server, &c, "and then what?").await;
    assert_eq!(next_from_coach(&mut events).await["text"], "Go on.");

    let requests = stand_in.requests();
    let verdicts: Vec<_> = requests
        .iter()
        .filter(|r| r.body["model"] == "small")
        .collect();
    assert_eq!(verdicts.len(), 2, "one question per message");
    for request in &verdicts {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {KEY}").as_str()),
            "the key goes to the endpoint model, in the real wire format"
        );
        let system = request.body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("\"done\""), "{system}");
    }
    assert_eq!(
        verdicts[1].last_user_text().as_deref(),
        Some("and then what?"),
        "the question carries the conversation"
    );
    let log = server.log();
    assert!(
        log.contains("endpoint verdict"),
        "debug logs were on:\n{log}"
    );
    assert!(
        log.contains("the endpoint model failed"),
        "the refusal was logged:\n{log}"
    );
    assert!(!log.contains(KEY), "the key was logged:\n{log}");
}

#[tokio::test]
async fn a_photo_with_a_caption_reaches_the_model_as_a_photo_then_its_caption() {
    let stand_in = StandIn::start().await;
    stand_in.set_responder(|_| Script::text("What a view!"));
    let (server, c) = start(&stand_in).await;
    let mut events = server.events(&c, "pat", None).await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let (status, stored) = server
        .post_raw(
            &format!("/v1/conversations/{}/attachments", c.id),
            Some(c.token("pat")),
            json!({"mime": "image/png", "data": png}).to_string().into(),
        )
        .await;
    assert_eq!(status, 201, "{stored}");
    let aid = stored["attachment"]["id"].clone();
    let (status, sent) = server
        .act(
            &c,
            "pat",
            "send",
            json!({"text": "the view from the top", "attachment_id": aid}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let expected = json!({"id": aid, "mime": "image/png", "bytes": 70});
    assert_eq!(sent["result"]["message"]["attachment"], expected);
    assert_eq!(next_from_coach(&mut events).await["text"], "What a view!");
    let asked = conversation_of(&stand_in.requests()[0]);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["content"], "[photo] the view from the top");
    let kept = history(&server, &c).await;
    assert_eq!(kept[0]["attachment"], expected, "history keeps the photo");

    // An attachment id this conversation does not have is refused, and nothing is sent.
    let (status, body) = server
        .act(
            &c,
            "pat",
            "send",
            json!({"text": "again", "attachment_id": "nope"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(history(&server, &c).await.len(), 2);
}
