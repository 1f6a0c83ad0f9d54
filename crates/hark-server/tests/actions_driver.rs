//! The actions-mode agent's driver on a virtual clock: the model calls the protocol's actions as
//! tools; each request below shows only its last message (the tool result the model reads, or
//! the conversation it is shown). See `support/mod.rs` for the script language.

mod support;

use expect_test::{Expect, expect};

async fn check(script: &str, expect: Expect) {
    expect.assert_eq(&support::run(script).await);
}

#[tokio::test(start_paused = true)]
async fn a_held_push_shows_the_news_and_the_model_pushes_again() {
    // pat writes again between the model's append and its push: the push is held, the tool
    // result shows the news as an MCP client's model would read it, and the second push sends.
    check(
        r#"
config mode=actions
model: call append {"text": "Noon works for me."} after 1s
model: call push {} after 1s
model: call push {} after 1s
t=0      pat: lunch tomorrow at noon?
t=1.5s   pat: actually, 12:30?
"#,
        expect![[r#"
            0s      [1] pat: lunch tomorrow at noon?
            0s      model ← [U "The conversation so far:\npat: lunch tomorrow at noon?\n\nYour draft is empty."]
            1s      coach composing
            1s      model ← [T "Appended 18 characters (draft: 1 segment, 18 characters)."]
            1.5s    [2] pat: actually, 12:30?
            2s      model ← [T "New since you last looked:\n[2] pat: actually, 12:30?\n\nYour push was held: 1 new message arrived — read it, then push again to send as is, or revise.\npat has read up to [2]."]
            2s      coach's push is held (1 unseen)
            3s      [3] coach: Noon works for me.
            3s      coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn arguments_are_checked_by_the_tool_table() {
    // A typo in the arguments is refused with the same sentence MCP gives; a tool the agent was
    // not offered does not exist for it.
    check(
        r#"
config mode=actions
model: call append {"txt": "hi"} after 100ms
model: call check {} after 100ms
model: call append {"text": "hi"} after 100ms
model: call push {} after 100ms
t=0      pat: hello?
"#,
        expect![[r#"
            0s      [1] pat: hello?
            0s      model ← [U "The conversation so far:\npat: hello?\n\nYour draft is empty."]
            0.1s    model ← [E "bad_request: The arguments are not valid for this tool: unknown field `txt`, expected `text`."]
            0.2s    model ← [E "There is no tool named check."]
            0.3s    coach composing
            0.3s    model ← [T "Appended 2 characters (draft: 1 segment, 2 characters)."]
            0.4s    [2] coach: hi
            0.4s    coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn messages_per_minute_are_bounded() {
    // Two messages a minute: the third turn waits until a minute after the first message.
    check(
        r#"
config mode=actions max_messages_per_minute=2
model: call append {"text": "One."} after 100ms
model: call push {} after 100ms
model: call append {"text": "Two."} after 100ms
model: call push {} after 100ms
model: call append {"text": "Three."} after 100ms
model: call push {} after 100ms
t=0      pat: a
t=10s    pat: b
t=20s    pat: c
"#,
        expect![[r#"
            0s      [1] pat: a
            0s      model ← [U "The conversation so far:\npat: a\n\nYour draft is empty."]
            0.1s    coach composing
            0.1s    model ← [T "Appended 4 characters (draft: 1 segment, 4 characters)."]
            0.2s    [2] coach: One.
            0.2s    coach stops composing
            10s     [3] pat: b
            10s     model ← [U "The conversation so far:\npat: a\ncoach: One.\npat: b\n\nYour draft is empty."]
            10.1s   coach composing
            10.1s   model ← [T "Appended 4 characters (draft: 1 segment, 4 characters).\npat has read up to [3]."]
            10.2s   [4] coach: Two.
            10.2s   coach stops composing
            20s     [5] pat: c
            60.2s   model ← [U "The conversation so far:\npat: a\ncoach: One.\npat: b\ncoach: Two.\npat: c\n\nYour draft is empty."]
            60.3s   coach composing
            60.3s   model ← [T "Appended 6 characters (draft: 1 segment, 6 characters)."]
            60.4s   [6] coach: Three.
            60.4s   coach stops composing
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_turns_stops_the_agent() {
    check(
        r#"
config mode=actions max_turns=2
model: call append {"text": "One."} after 100ms
model: call push {} after 100ms
model: call append {"text": "Two."} after 100ms
model: call push {} after 100ms
t=0      pat: a
t=10s    pat: b
t=20s    pat: c
"#,
        expect![[r#"
            0s      [1] pat: a
            0s      model ← [U "The conversation so far:\npat: a\n\nYour draft is empty."]
            0.1s    coach composing
            0.1s    model ← [T "Appended 4 characters (draft: 1 segment, 4 characters)."]
            0.2s    [2] coach: One.
            0.2s    coach stops composing
            10s     [3] pat: b
            10s     model ← [U "The conversation so far:\npat: a\ncoach: One.\npat: b\n\nYour draft is empty."]
            10.1s   coach composing
            10.1s   model ← [T "Appended 4 characters (draft: 1 segment, 4 characters).\npat has read up to [3]."]
            10.2s   [4] coach: Two.
            10.2s   coach stops composing
            20s     [5] pat: c
            20s     coach stops: reached max_turns (2)
        "#]],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_provider_error_ends_the_turn_and_the_next_message_starts_another() {
    check(
        r#"
config mode=actions
model: fail after 2s
model: call append {"text": "Here now."} after 100ms
model: call push {} after 100ms
t=0      pat: are you there?
t=10s    pat: hello?
"#,
        expect![[r#"
            0s      [1] pat: are you there?
            0s      model ← [U "The conversation so far:\npat: are you there?\n\nYour draft is empty."]
            2s      model fails
            2s      coach's model failed: the provider failed (HTTP 503): overloaded (test)
            10s     [2] pat: hello?
            10s     model ← [U "The conversation so far:\npat: are you there?\npat: hello?\n\nYour draft is empty."]
            10.1s   coach composing
            10.1s   model ← [T "Appended 9 characters (draft: 1 segment, 9 characters).\npat has read up to [2]."]
            10.2s   [3] coach: Here now.
            10.2s   coach stops composing
        "#]],
    )
    .await;
}
