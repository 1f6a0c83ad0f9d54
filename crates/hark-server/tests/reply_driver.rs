//! The reply-mode agent's driver on a virtual clock: a script of timed lines → a trace of what
//! the model was asked and what the conversation saw (see `support/mod.rs` for the script
//! language). The whole server runs on tokio's paused time, so each test takes milliseconds of
//! real time however many seconds it plays.
//!
//! Most scripts use the `fixed` or `typing` endpoint policies, whose windows are plain numbers,
//! so that what is checked here is the driver, not the engine's rules.

mod support;

use expect_test::{Expect, expect};

async fn check(script: &str, expect: Expect) {
    expect.assert_eq(&support::run(script).await);
}

#[tokio::test(start_paused = true)]
async fn a_burst_gets_one_reply_and_its_own_echo_starts_nothing() {
    // Three bubbles, one generation that read all three. The bubble comes back on the live
    // stream like anyone's message: the driver must not take it for the person's. After the
    // last bubble the agent's typing ends and is not refreshed again.
    check(
        r#"
config endpoint=fixed:1000 speculate=off typing_cps=1000
model: say "Try a mushroom risotto." after 500ms
t=0      pat: hey
t=300ms  pat: so i was thinking
t=600ms  pat: what should i cook tonight?
"#,
        expect![[r#"
            0s      [1] pat: hey
            0.3s    [2] pat: so i was thinking
            0.6s    [3] pat: what should i cook tonight?
            1.6s    model ← [U "hey\nso i was thinking\nwhat should i cook tonight?"]
            1.6s    coach composing
            2.1s    [4] coach: Try a mushroom risotto. (turn-1-0-r3)
            2.1s    coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_bubble_during_generation_aborts_it_and_the_next_reads_both() {
    check(
        r#"
config endpoint=fixed:500 speculate=off typing_cps=1000
model: say "STALE: must never be sent." after 3s
model: say "Fresh answer." after 300ms
t=0      pat: what about dinner?
t=1s     pat: vegetarian please
"#,
        expect![[r#"
            0s      [1] pat: what about dinner?
            0.5s    model ← [U "what about dinner?"]
            0.5s    coach composing
            1s      [2] pat: vegetarian please
            1s      model stream dropped before it finished
            1s      coach stops composing
            1.5s    model ← [U "what about dinner?\nvegetarian please"]
            1.5s    coach composing
            1.9s    [3] coach: Fresh answer. (turn-2-0-r2)
            1.9s    coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_provider_error_is_said_and_the_next_message_is_answered() {
    check(
        r#"
config endpoint=fixed:500 speculate=off typing_cps=1000
model: fail after 2s
model: say "Back again." after 300ms
t=0      pat: are you there?
t=10s    pat: trying again
"#,
        expect![[r#"
            0s      [1] pat: are you there?
            0.5s    model ← [U "are you there?"]
            0.5s    coach composing
            2.5s    model fails
            2.5s    coach stops composing
            2.5s    [2] coach: (I couldn't answer just now: my model did not respond. Send another message and I'll try again.) (notice-1-r1)
            10s     [3] pat: trying again
            10.5s   model ← [U "are you there?", A "(I couldn't answer just now: my model did not respond. Send another message and I'll try again.)", U "trying again"]
            10.5s   coach composing
            10.9s   [4] coach: Back again. (turn-2-0-r3)
            10.9s   coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_turn_given_up_with_a_notice_is_not_answered_after_a_restart() {
    // The notice closes the failed turn; a restart must not take its burst for an unanswered one
    // (no model call after the restart), and the next message is answered as usual.
    check(
        r#"
config endpoint=fixed:500 speculate=off typing_cps=1000
model: fail after 1s
model: say "Back again." after 300ms
t=0      pat: are you there?
t=5s     restart
t=10s    pat: hello?
"#,
        expect![[r#"
            0s      [1] pat: are you there?
            0.5s    model ← [U "are you there?"]
            0.5s    coach composing
            1.5s    model fails
            1.5s    coach stops composing
            1.5s    [2] coach: (I couldn't answer just now: my model did not respond. Send another message and I'll try again.) (notice-1-r1)
            5s      -- restart
            10s     [3] pat: hello?
            10.5s   model ← [U "are you there?", A "(I couldn't answer just now: my model did not respond. Send another message and I'll try again.)", U "hello?"]
            10.5s   coach composing
            10.9s   [4] coach: Back again. (turn-2-0-r3)
            10.9s   coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_bubble_the_store_refused_is_sent_again_once() {
    // The disk refuses the bubble's commit; the driver retries with the same turn id, and the
    // bubble is stored once.
    check(
        r#"
config endpoint=fixed:500 speculate=off typing_cps=1000
model: say "Here you go." after 1s
t=0      pat: a question
t=1s     disk full
"#,
        expect![[r#"
            0s      [1] pat: a question
            0.5s    model ← [U "a question"]
            0.5s    coach composing
            1s      -- the disk is full for one commit
            1.6s    [2] coach: Here you go. (turn-1-0-r1)
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_typing_lease_is_refreshed_while_the_model_writes() {
    // The lease lasts 8 s; the model takes 20 s. Without a refresh every 4 s the agent would
    // stop composing at 8.5 s; with it, composing ends only with the bubble.
    check(
        r#"
config endpoint=fixed:500 speculate=off typing_cps=1000 typing_timeout_ms=8000
model: say "A long, careful answer." after 20s
t=0      pat: explain everything
"#,
        expect![[r#"
            0s      [1] pat: explain everything
            0.5s    model ← [U "explain everything"]
            0.5s    coach composing
            20.5s   [2] coach: A long, careful answer. (turn-1-0-r1)
            20.5s   coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_person_typing_holds_the_reply() {
    // The typing gate: the window does not run while pat types, and a lease that is not
    // refreshed lapses after typing_timeout_ms (a lost "stopped typing" cannot hang the agent).
    check(
        r#"
config endpoint=typing:1000 speculate=off typing_cps=1000 typing_grace_ms=500 typing_timeout_ms=5000
model: say "Got both." after 200ms
model: say "Got it." after 200ms
t=0      pat: first thought
t=500ms  pat typing
t=3s     pat typing
t=4s     pat: second thought
t=4.2s   pat typing
"#,
        expect![[r#"
            0s      [1] pat: first thought
            0.5s    pat composing
            4s      [2] pat: second thought
            4s      pat stops composing
            4.2s    pat composing
            9.2s    pat stops composing
            9.7s    model ← [U "first thought\nsecond thought"]
            9.7s    coach composing
            10.1s   [3] coach: Got both. (turn-1-0-r2)
            10.1s   coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_mid_generation_answers_the_burst_once_and_nothing_twice() {
    // The process dies while the model writes. The new process finds the burst unanswered and
    // answers it; a second restart answers nothing again, and the next burst gets its reply.
    check(
        r#"
config endpoint=fixed:500 speculate=off typing_cps=1000
model: hang
model: say "Answered once." after 300ms
model: say "You're welcome." after 300ms
t=0      pat: quick question: tea or coffee?
t=2s     restart
t=10s    restart
t=15s    pat: ok thanks
"#,
        expect![[r#"
            0s      [1] pat: quick question: tea or coffee?
            0.5s    model ← [U "quick question: tea or coffee?"]
            0.5s    coach composing
            2s      -- restart
            2s      model stream dropped before it finished
            2s      model ← [U "quick question: tea or coffee?"]
            2s      coach composing
            2.4s    [2] coach: Answered once. (turn-1-0-r1)
            2.4s    coach stops composing
            10s     -- restart
            15s     [3] pat: ok thanks
            15.5s   model ← [U "quick question: tea or coffee?", A "Answered once.", U "ok thanks"]
            15.5s   coach composing
            15.9s   [4] coach: You're welcome. (turn-2-0-r3)
            15.9s   coach stops composing
        "#]],
    )
    .await;
}

// ---- the endpoint model (issue 16, item 3) ------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_done_verdict_commits_before_the_rule_window() {
    // "so the thing is," looks mid-thought: the rules would wait seconds. The endpoint model
    // says done after 100 ms, and the reply starts then.
    check(
        r#"
config speculate=off typing_cps=1000 use_tempo=off endpoint_timeout_ms=400
endpoint: say "{\"done\": true}" after 100ms
model: say "Go on, I'm listening." after 300ms
t=0      pat: so the thing is,
"#,
        expect![[r#"
            0s      [1] pat: so the thing is,
            0s      endpoint ← [U "so the thing is,"]
            0.1s    model ← [U "so the thing is,"]
            0.1s    coach composing
            0.5s    [2] coach: Go on, I'm listening. (turn-1-0-r1)
            0.5s    coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_wait_verdict_holds_past_the_rule_window() {
    // A question would be answered after the short window; the endpoint model asks to wait
    // 3 s more, and the reply waits.
    check(
        r#"
config speculate=off typing_cps=1000 use_tempo=off endpoint_timeout_ms=400
endpoint: say "```json\n{\"done\": false, \"wait_ms\": 3000}\n```" after 100ms
model: say "Seven." after 300ms
t=0      pat: what time is the game?
"#,
        expect![[r#"
            0s      [1] pat: what time is the game?
            0s      endpoint ← [U "what time is the game?"]
            3.1s    model ← [U "what time is the game?"]
            3.1s    coach composing
            3.5s    [2] coach: Seven. (turn-1-0-r1)
            3.5s    coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_or_garbled_endpoint_model_falls_back_to_the_rules() {
    // First burst: the endpoint model never answers within its 400 ms; its stream is dropped
    // and the rules decide. Second: it answers garbage, which feeds nothing. Third: it fails.
    // Each time the reply comes when the rules say, and the stale ask costs at most the
    // timeout.
    check(
        r#"
config speculate=off typing_cps=1000 use_tempo=off endpoint_timeout_ms=400
endpoint: hang
endpoint: say "yes, probably" after 100ms
endpoint: fail after 100ms
model: say "One." after 300ms
model: say "Two." after 300ms
model: say "Three." after 300ms
t=0      pat: what time is the game?
t=20s    pat: and where is it?
t=40s    pat: who plays?
"#,
        expect![[r#"
            0s      [1] pat: what time is the game?
            0s      endpoint ← [U "what time is the game?"]
            0.4s    endpoint stream dropped before it finished
            0.8s    model ← [U "what time is the game?"]
            0.8s    coach composing
            1.2s    [2] coach: One. (turn-1-0-r1)
            1.2s    coach stops composing
            20s     [3] pat: and where is it?
            20s     endpoint ← [U "what time is the game?", A "One.", U "and where is it?"]
            20.8s   model ← [U "what time is the game?", A "One.", U "and where is it?"]
            20.8s   coach composing
            21.2s   [4] coach: Two. (turn-2-0-r3)
            21.2s   coach stops composing
            40s     [5] pat: who plays?
            40s     endpoint ← [U "what time is the game?", A "One.", U "and where is it?", A "Two.", U "who plays?"]
            40.1s   endpoint fails
            40.8s   model ← [U "what time is the game?", A "One.", U "and where is it?", A "Two.", U "who plays?"]
            40.8s   coach composing
            41.2s   [6] coach: Three. (turn-3-0-r5)
            41.2s   coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_newer_message_cancels_the_question_in_flight() {
    // The second bubble supersedes the first question: its stream is dropped, and only the
    // newer question's verdict counts.
    check(
        r#"
config speculate=off typing_cps=1000 use_tempo=off endpoint_timeout_ms=1000
endpoint: say "{\"done\": true}" after 800ms
endpoint: say "{\"done\": true}" after 100ms
model: say "Both read." after 300ms
t=0      pat: so,
t=300ms  pat: what now?
"#,
        expect![[r#"
            0s      [1] pat: so,
            0s      endpoint ← [U "so,"]
            0.3s    [2] pat: what now?
            0.3s    endpoint stream dropped before it finished
            0.3s    endpoint ← [U "so,\nwhat now?"]
            0.4s    model ← [U "so,\nwhat now?"]
            0.4s    coach composing
            0.8s    [3] coach: Both read. (turn-1-0-r2)
            0.8s    coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_agent_keeps_its_conversation_loaded_and_answers_after_a_long_silence() {
    // Conversations nobody uses are unloaded after a minute; the agent listens, so its
    // conversation stays, and each burst is answered once however long the silence before it.
    check(
        r#"
config endpoint=fixed:1000 speculate=off typing_cps=1000
model: say "Hi." after 500ms
model: say "Still here." after 500ms
t=0      observer leaves
t=0      pat: are you there?
t=300s   loaded
t=300s   pat: still there?
t=400s   loaded
"#,
        expect![[r#"
            0s      -- the observer leaves
            1s      model ← [U "are you there?"]
            300s    -- conversations loaded: 1
            301s    model ← [U "are you there?", A "Hi.", U "still there?"]
            400s    -- conversations loaded: 1
        "#]],
    )
    .await;
}
