//! Data-driven tests of the turn engine: a script of timed inputs, a trace of timed outputs.
//!
//! Script lines (blank lines and `#` comments are skipped):
//!
//! - `config key=value …` before any timed line: `endpoint=fixed:MS|punct|typing:MS|adaptive`,
//!   `bargein`, `deliver_recheck`, `bargein_recheck`, `speculate`, `control_words`, `learn_rhythm`,
//!   `use_tempo`, `prompts`, `text_model` (on/off), `model=MS` (endpoint model timeout),
//!   `patience=MS` (`endpoint_patience_ms`; `patience=800` pins every adaptive window to the 800ms
//!   floor, for scripts about other mechanisms), `max_spec_restarts=N`, `max_bubbles=N`,
//!   `typing_cps=N`, `hard_cap=MS`, `manual_delivery` (no automatic `BubbleDelivered`).
//! - `t=TIME EVENT`, TIME like `0`, `1.2s`, `800ms`. The harness first fires every timer due up to
//!   TIME (each at its own deadline, as a driver on a virtual clock would), then applies EVENT:
//!   - `person: TEXT` (next seq; `[photo]` or `[photo] caption` for an attachment), `typing`,
//!     `stopped typing`, `agent: TEXT`;
//!   - `gen E done "TEXT"`, `gen E silent`, `gen E wait MS`, `gen E failed`, `gen E streamed "T"`;
//!   - `verdict A done`, `verdict A wait MS`; `delivered E #I`;
//!   - `restart`: the process died; a new engine is restored from the stored log and the last
//!     persisted snapshot (everything else, including generations in flight, is lost). As the
//!     runtime does, the harness reads the answered mark and the last epoch from the log too: each
//!     stored bubble's client id is its [`TurnId`], parsed back. `restart without snapshot`: the
//!     saved state is lost as well, and only the log's client ids say what was answered;
//!   - `show rhythm`, `show snapshot`, `tick` (only fire timers).
//!
//! After the last line the harness fires timers for another 60 s. Every `SendBubble` is stored at
//! once with the next seq, its [`TurnId`] as the client id, and acknowledged with
//! `BubbleDelivered` (unless `manual_delivery`); the snapshot is persisted after every step, as
//! the runtime does after each delivery. A bubble shows as `send turn-E-I-rR [i/n] "text"`: the
//! client id the runtime stores it under.
//!
//! The trace prints each output with the time it was emitted, and `-- STATE` after a step that
//! changed the state (sampled once per step, so a step through several states shows the last).

use expect_test::{Expect, expect};
use hark_core::time::Millis;
use hark_core::turn::{
    Attachment, EndpointPolicy, GenerationResult, Input, LogMessage, Output, PersonMessage, Prompt,
    Role, State, TurnConfig, TurnEngine, TurnId, TurnSnapshot,
};

fn check(script: &str, expect: Expect) {
    let trace = Harness::run(script);
    expect.assert_eq(&trace);
}

// --- The seed catalogue ------------------------------------------------------------------------

#[test]
fn fixed_window() {
    // The `fixed:2000` baseline: a plain debounce from the last bubble, no barge-in. The bubble at
    // 3.5s lands while the engine thinks; the generation is not aborted, the reply (a fragment
    // answer, by design) goes out, and the late bubble gets its own turn afterwards.
    check(
        r#"
config endpoint=fixed:2000 bargein=off deliver_recheck=off bargein_recheck=off speculate=off control_words=off
t=0    person: hi
t=1s   person: are you free saturday
t=3.5s person: for the move?
t=4s   gen 1 done "Hi! Yes, I'm free."
t=6s   gen 2 done "Sure, I can help with the move."
"#,
        expect![[r#"
            0s      -- COLLECTING
            3s      commit e1 read=2
            3s      start e1 read=2 [U "hi\nare you free saturday"]
            3s      typing on
            3s      -- THINKING
            4s      send turn-1-0-r2 [1/2] "Hi!" (seq 4)
            4s      typing on
            4s      -- SPEAKING
            4.466s  send turn-1-1-r2 [2/2] "Yes, I'm free." (seq 5)
            4.466s  end e1 Replied
            4.466s  -- COLLECTING
            5.5s    commit e2 read=3
            5.5s    start e2 read=3 [U "hi\nare you free saturday\nfor the move?", A "Hi!\nYes, I'm free."]
            5.5s    typing on
            5.5s    -- THINKING
            6s      -- SPEAKING
            6.533s  send turn-2-0-r3 [1/1] "Sure, I can help with the move." (seq 6)
            6.533s  end e2 Replied
            6.533s  -- IDLE
        "#]],
    );
}

#[test]
fn adaptive_window_from_completeness() {
    // A question: 800ms, the shortest window. A trailing comma looks mid-thought: never less than
    // `window_partial_ms`, 6s. "hey" is neither; the decision finds no reason to wait for a
    // person it knows nothing of (their bubbles mostly end a turn): 800ms too. Speculation off so
    // that only the windows show.
    check(
        r#"
config speculate=off use_tempo=off
t=0     person: what time is the game?
t=2s    gen 1 done "7pm."
t=10s   person: so the thing is,
t=30s   gen 2 done "Go on."
t=50s   person: hey
t=60s   gen 3 done "Hey!"
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 [U "what time is the game?"]
            0.8s    typing on
            0.8s    -- THINKING
            2s      send turn-1-0-r1 [1/1] "7pm." (seq 2)
            2s      end e1 Replied
            2s      -- IDLE
            10s     -- COLLECTING
            16s     commit e2 read=3
            16s     start e2 read=3 [U "what time is the game?", A "7pm.", U "so the thing is,"]
            16s     typing on
            16s     -- THINKING
            30s     send turn-2-0-r3 [1/1] "Go on." (seq 4)
            30s     end e2 Replied
            30s     -- IDLE
            50s     -- COLLECTING
            50.8s   commit e3 read=5
            50.8s   start e3 read=5 [U "what time is the game?", A "7pm.", U "so the thing is,", A "Go on.", U "hey"]
            50.8s   typing on
            50.8s   -- THINKING
            60s     send turn-3-0-r5 [1/1] "Hey!" (seq 6)
            60s     end e3 Replied
            60s     -- IDLE
        "#]],
    );
}

#[test]
fn typing_gate_with_grace() {
    // "hey" opens an 800ms window; the person starts typing inside it, so the window never fires.
    // They stop at 5s without sending: the engine waits the 900ms grace, then commits.
    check(
        r#"
config speculate=off use_tempo=off
t=0     person: hey
t=0.5s  typing
t=3s    typing
t=5s    stopped typing
t=6.5s  gen 1 done "Hey, what's up?"
"#,
        expect![[r#"
            0s      -- COLLECTING
            5.9s    commit e1 read=1
            5.9s    start e1 read=1 [U "hey"]
            5.9s    typing on
            5.9s    -- THINKING
            6.5s    send turn-1-0-r1 [1/1] "Hey, what's up?" (seq 2)
            6.5s    end e1 Replied
            6.5s    -- IDLE
        "#]],
    );
}

#[test]
fn a_newcomers_statement_is_answered_at_the_short_window() {
    // Someone new types a statement (no question mark) and sends it: nothing says they will go
    // on (most bubbles end a turn, and this person has not shown otherwise), so the engine commits
    // after 800ms of quiet. The draft, started with the bubble, is done at 3.2s and its first
    // bubble goes out at once: 1.2s after the end of typing, not at the 10s hard cap.
    check(
        r#"
t=0      typing
t=2s     person: i had a really long day at work today
t=3.2s   gen 1 done "That sounds exhausting. What happened?"
"#,
        expect![[r#"
            2s      start e1 read=1 spec [U "i had a really long day at work today"]
            2s      -- COLLECTING
            2.8s    commit e1 read=1
            2.8s    typing on
            2.8s    -- THINKING
            3.2s    send turn-1-0-r1 [1/2] "That sounds exhausting." (seq 2)
            3.2s    typing on
            3.2s    -- SPEAKING
            3.666s  send turn-1-1-r1 [2/2] "What happened?" (seq 3)
            3.666s  end e1 Replied
            3.666s  -- IDLE
        "#]],
    );
}

#[test]
fn a_typing_person_who_resumes_at_once_is_answered_fast() {
    // A person whose client sends typing starts typing again right after each bubble: the lease
    // holds the commit, and after their last bubble the quiet means "done" (800ms window).
    check(
        r#"
config speculate=off use_tempo=off
t=0     typing
t=1s    person: so
t=1s    typing
t=2s    person: i was thinking
t=2s    typing
t=3s    person: we could go hiking
t=3s    typing
t=4s    person: on sunday
t=4s    typing
t=5s    person: ok with you?
t=6.5s  gen 1 done "Sure!"
t=7s    show rhythm
"#,
        expect![[r#"
            1s      -- COLLECTING
            5.8s    commit e1 read=5
            5.8s    start e1 read=5 [U "so\ni was thinking\nwe could go hiking\non sunday\nok with you?"]
            5.8s    typing on
            5.8s    -- THINKING
            6.5s    send turn-1-0-r5 [1/1] "Sure!" (seq 6)
            6.5s    end e1 Replied
            6.5s    -- IDLE
            7s      rhythm: typical gap - (sd 0.00, n=4), typical reply - (n=0), pauses 0.00, typing starts 5
        "#]],
    );
}

#[test]
fn a_person_who_pauses_mid_burst_gets_longer_windows_once_they_have() {
    // Each burst: a bubble, three seconds of quiet (thinking, not typing), then a question. At
    // first the engine knows nothing of this person and commits 800ms after the first bubble;
    // they type on, the reply is held and their question supersedes it (a wasted generation; had
    // the model been faster, a premature reply). It learns the pause: from the next burst on,
    // after a first bubble it waits its patience (3.6s), longer than their pause, and one
    // generation reads the whole burst. Their questions still get the short window.
    check(
        r#"
config speculate=off use_tempo=off
t=0      typing
t=1s     person: so i talked to my boss
t=4s     typing
t=5s     person: can i take friday off?
t=6.5s   gen 2 done "Sure, enjoy it."
t=30s    typing
t=31s    person: the trip is booked
t=34s    typing
t=35s    person: should i pack a tent?
t=36.5s  gen 3 done "Yes, take the tent."
t=60s    typing
t=61s    person: i bought the tent
t=64s    typing
t=65s    person: is it too heavy?
t=66.5s  gen 4 done "It looks light enough."
t=67s    show rhythm
"#,
        expect![[r#"
            1s      -- COLLECTING
            1.8s    commit e1 read=1
            1.8s    start e1 read=1 [U "so i talked to my boss"]
            1.8s    typing on
            1.8s    -- THINKING
            5s      abort e1
            5s      typing off
            5s      end e1 Superseded
            5s      -- COLLECTING
            5.8s    commit e2 read=2
            5.8s    start e2 read=2 [U "so i talked to my boss\ncan i take friday off?"]
            5.8s    typing on
            5.8s    -- THINKING
            6.5s    send turn-2-0-r2 [1/1] "Sure, enjoy it." (seq 3)
            6.5s    end e2 Replied
            6.5s    -- IDLE
            31s     -- COLLECTING
            35.8s   commit e3 read=5
            35.8s   start e3 read=5 [U "so i talked to my boss\ncan i take friday off?", A "Sure, enjoy it.", U "the trip is booked\nshould i pack a tent?"]
            35.8s   typing on
            35.8s   -- THINKING
            36.5s   send turn-3-0-r5 [1/1] "Yes, take the tent." (seq 6)
            36.5s   end e3 Replied
            36.5s   -- IDLE
            61s     -- COLLECTING
            65.8s   commit e4 read=8
            65.8s   start e4 read=8 [U "so i talked to my boss\ncan i take friday off?", A "Sure, enjoy it.", U "the trip is booked\nshould i pack a tent?", A "Yes, take the tent.", U "i bought the tent\nis it too heavy?"]
            65.8s   typing on
            65.8s   -- THINKING
            66.5s   -- SPEAKING
            66.533s send turn-4-0-r8 [1/1] "It looks light enough." (seq 9)
            66.533s end e4 Replied
            66.533s -- IDLE
            67s     rhythm: typical gap 3000ms (sd 0.00, n=3), typical reply 23500ms (n=2), pauses 1.00, typing starts 6
        "#]],
    );
}

#[test]
fn typing_gate_with_an_expired_lease() {
    // The "typing stopped" event is lost. The lease, last refreshed at 0.5s, expires at 8.5s
    // (typing_timeout_ms 8000); the grace runs from the expiry and the engine commits at 9.4s,
    // before the 10s hard cap.
    check(
        r#"
config speculate=off use_tempo=off
t=0     person: hey
t=0.5s  typing
t=10s   gen 1 done "Hey!"
"#,
        expect![[r#"
            0s      -- COLLECTING
            9.4s    commit e1 read=1
            9.4s    start e1 read=1 [U "hey"]
            9.4s    typing on
            9.4s    -- THINKING
            10s     send turn-1-0-r1 [1/1] "Hey!" (seq 2)
            10s     end e1 Replied
            10s     -- IDLE
        "#]],
    );
}

#[test]
fn hard_cap() {
    // Every bubble trails off, so each re-opens a 6s window; the hard cap commits 10s after the
    // first bubble anyway. The person is typing again at that moment: the generation runs, but
    // delivery waits for the lease to drop plus the grace (no fragment reply).
    check(
        r#"
config speculate=off use_tempo=off learn_rhythm=off
t=0     person: so i was thinking,
t=3s    person: maybe we could go to the lake and
t=6s    person: i mean if the weather holds,
t=9.5s  typing
t=11s   gen 1 done "The lake sounds great."
t=13s   stopped typing
"#,
        expect![[r#"
            0s      -- COLLECTING
            10s     commit e1 read=3
            10s     start e1 read=3 [U "so i was thinking,\nmaybe we could go to the lake and\ni mean if the weather holds,"]
            10s     typing on
            10s     -- THINKING
            11s     -- SPEAKING
            13.9s   send turn-1-0-r3 [1/1] "The lake sounds great." (seq 4)
            13.9s   end e1 Replied
            13.9s   -- IDLE
        "#]],
    );
}

#[test]
fn per_person_rhythm_without_typing() {
    // No typing leases: the gaps between bubbles are all the engine sees. "hi" looks like the end
    // of a turn, as a newcomer's bubbles mostly are: 800ms. This person then sends bursts with
    // two seconds between bubbles. Without typing a two-second quiet says little, so after a
    // bubble that seldom ends a turn ("so" trails off: at least 6s; "i was thinking", "maybe a
    // hike") the engine waits its patience, 3.6s: longer than their gaps, so every burst is read
    // whole, and each reply comes 3.6s after its last bubble. The rhythm shows the learned pauses.
    check(
        r#"
config speculate=off use_tempo=off prompts=off
t=0      person: hi
t=3s     gen 1 done "Hi!"
t=30s    person: so
t=32s    person: i was thinking
t=34s    person: about the weekend
t=40s    gen 2 done "Tell me."
t=60s    person: maybe a hike
t=62s    person: or a movie
t=64s    person: not sure
t=70s    gen 3 done "Both sound good."
t=101s   show rhythm
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 []
            0.8s    typing on
            0.8s    -- THINKING
            3s      send turn-1-0-r1 [1/1] "Hi!" (seq 2)
            3s      end e1 Replied
            3s      -- IDLE
            30s     -- COLLECTING
            37.6s   commit e2 read=5
            37.6s   start e2 read=5 []
            37.6s   typing on
            37.6s   -- THINKING
            40s     send turn-2-0-r5 [1/1] "Tell me." (seq 6)
            40s     end e2 Replied
            40s     -- IDLE
            60s     -- COLLECTING
            67.6s   commit e3 read=9
            67.6s   start e3 read=9 []
            67.6s   typing on
            67.6s   -- THINKING
            70s     send turn-3-0-r9 [1/1] "Both sound good." (seq 10)
            70s     end e3 Replied
            70s     -- IDLE
            101s    rhythm: typical gap 2000ms (sd 0.00, n=4), typical reply 23238ms (n=2)
        "#]],
    );
}

#[test]
fn speculation_hit() {
    // The draft starts with the bubble and is ready before the window closes: at the commit the
    // engine goes straight to speaking; the dead air is the window plus the typing cadence.
    check(
        r#"
t=0      person: what's the weather tomorrow?
t=0.5s   gen 1 done "Sunny, 24 degrees."
"#,
        expect![[r#"
            0s      start e1 read=1 spec [U "what's the weather tomorrow?"]
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    typing on
            0.8s    -- SPEAKING
            1.2s    send turn-1-0-r1 [1/1] "Sunny, 24 degrees." (seq 2)
            1.2s    end e1 Replied
            1.2s    -- IDLE
        "#]],
    );
}

#[test]
fn speculation_miss() {
    // Each new bubble aborts the draft and restarts it on the longer burst. The aborted draft's
    // late result is dropped. The third draft reads the whole burst; it is still running at the
    // commit, so it becomes the turn's generation (no restart).
    check(
        r#"
t=0      person: hey
t=0.5s   person: so
t=1.2s   gen 1 done "Hey there!"
t=3s     person: can you help me move on saturday?
t=4.5s   gen 3 done "Of course! What time?"
"#,
        expect![[r#"
            0s      start e1 read=1 spec [U "hey"]
            0s      -- COLLECTING
            0.5s    abort e1
            0.5s    start e2 read=2 spec [U "hey\nso"]
            3s      abort e2
            3s      start e3 read=3 spec [U "hey\nso\ncan you help me move on saturday?"]
            3.8s    commit e3 read=3
            3.8s    typing on
            3.8s    -- THINKING
            4.5s    send turn-3-0-r3 [1/2] "Of course!" (seq 4)
            4.5s    typing on
            4.5s    -- SPEAKING
            4.9s    send turn-3-1-r3 [2/2] "What time?" (seq 5)
            4.9s    end e3 Replied
            4.9s    -- IDLE
        "#]],
    );
}

#[test]
fn restart_cap() {
    // max_spec_restarts=2: the first draft and two restarts; the fourth and fifth bubbles start
    // none, and the commit starts a plain (non-speculative) generation.
    check(
        r#"
config max_spec_restarts=2 prompts=off
t=0      person: ok
t=0.3s   person: so
t=0.6s   person: um
t=0.9s   person: the thing
t=1.2s   person: is tomorrow ok?
t=3s     gen 4 done "Tomorrow works."
"#,
        expect![[r#"
            0s      start e1 read=1 spec []
            0s      -- COLLECTING
            0.3s    abort e1
            0.3s    start e2 read=2 spec []
            0.6s    abort e2
            0.6s    start e3 read=3 spec []
            0.9s    abort e3
            2s      commit e4 read=5
            2s      start e4 read=5 []
            2s      typing on
            2s      -- THINKING
            3s      send turn-4-0-r5 [1/1] "Tomorrow works." (seq 6)
            3s      end e4 Replied
            3s      -- IDLE
        "#]],
    );
}

#[test]
fn bargein_while_thinking() {
    // A bubble while the generation runs aborts it, ends its epoch as superseded and folds the
    // bubble into the burst; the next generation reads both. The aborted epoch's late result is
    // dropped. (patience=800: every window is 800ms, so only the barge-in shows.)
    check(
        r#"
config speculate=off patience=800
t=0      person: what should i cook tonight?
t=1.5s   person: something vegetarian!
t=2s     gen 1 done "How about steak?"
t=3s     gen 2 done "A mushroom risotto."
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 [U "what should i cook tonight?"]
            0.8s    typing on
            0.8s    -- THINKING
            1.5s    abort e1
            1.5s    typing off
            1.5s    end e1 Superseded
            1.5s    -- COLLECTING
            2.3s    commit e2 read=2
            2.3s    start e2 read=2 [U "what should i cook tonight?\nsomething vegetarian!"]
            2.3s    typing on
            2.3s    -- THINKING
            3s      send turn-2-0-r2 [1/1] "A mushroom risotto." (seq 3)
            3s      end e2 Replied
            3s      -- IDLE
        "#]],
    );
}

#[test]
fn recheck_while_speaking() {
    // A three-bubble reply. The person answers the first bubble while the second is being typed:
    // the first stands, the rest is dropped, the burst is collected again, and the next
    // generation reads what was already sent. It repeats its first sentence: suppressed as a
    // duplicate of a bubble of the same turn.
    check(
        r#"
config speculate=off patience=800
t=0      person: any plans for the weekend?
t=1s     gen 1 done "Not yet. Maybe a hike. Want to join?"
t=1.4s   person: hiking is not my thing
t=4s     gen 2 done "Not yet. How about a movie instead?"
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 [U "any plans for the weekend?"]
            0.8s    typing on
            0.8s    -- THINKING
            1s      -- SPEAKING
            1.2s    send turn-1-0-r1 [1/3] "Not yet." (seq 2)
            1.2s    typing on
            1.4s    typing off
            1.4s    end e1 Replied
            1.4s    -- COLLECTING
            2.2s    commit e2 read=3
            2.2s    start e2 read=3 [U "any plans for the weekend?", A "Not yet.", U "hiking is not my thing"]
            2.2s    typing on
            2.2s    -- THINKING
            4s      send turn-2-0-r3 [1/1] "How about a movie instead?" (seq 4)
            4s      end e2 Replied
            4s      -- IDLE
        "#]],
    );
}

#[test]
fn stale_epoch_dropped() {
    // Results, failures and deltas of epochs that are not in flight are ignored: the speculative
    // e1 (aborted), an epoch never issued, and e2 again after it finished. ("quick question:"
    // trails off: 6s.)
    check(
        r#"
t=0      person: hi
t=0.5s   person: quick question:
t=0.6s   gen 1 done "Hello!"
t=0.7s   gen 1 failed
t=0.8s   gen 7 done "Nonsense."
t=0.9s   gen 2 streamed "Sure"
t=1s     gen 2 done "Sure, ask away."
t=1.1s   gen 2 done "Sure, ask away twice."
"#,
        expect![[r#"
            0s      start e1 read=1 spec [U "hi"]
            0s      -- COLLECTING
            0.5s    abort e1
            0.5s    start e2 read=2 spec [U "hi\nquick question:"]
            6.5s    commit e2 read=2
            6.5s    typing on
            6.5s    -- SPEAKING
            6.9s    send turn-2-0-r2 [1/1] "Sure, ask away." (seq 3)
            6.9s    end e2 Replied
            6.9s    -- IDLE
        "#]],
    );
}

#[test]
fn stay_silent() {
    // The model chose stay_silent: the turn ends silent, no bubble, the indicator goes off, and
    // the burst counts as answered.
    check(
        r#"
config speculate=off
t=0      person: ok thanks, bye!
t=2s     gen 1 silent
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 [U "ok thanks, bye!"]
            0.8s    typing on
            0.8s    -- THINKING
            2s      typing off
            2s      end e1 Silent
            2s      -- IDLE
        "#]],
    );
}

#[test]
fn wait_for_more() {
    // The model asks to wait 4s. Nothing comes: the engine generates again without the tool
    // (a speculative draft starts at once and is used at the deadline). Later the model waits
    // again and the person does go on: the window follows the new bubble. (patience=800.)
    check(
        r#"
config use_tempo=off patience=800
t=0      person: i need to tell you something.
t=0.5s   gen 1 wait 4000
t=1s     gen 2 done "I'm listening."
t=20s    person: guess what.
t=20.5s  gen 3 wait 8000
t=23s    person: i got the job!
t=23.5s  gen 4 done "Stale: e4 was aborted."
t=24s    gen 5 done "Congratulations!!"
"#,
        expect![[r#"
            0s      start e1 read=1 spec [U "i need to tell you something."]
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    typing on
            0.8s    typing off
            0.8s    end e1 Superseded
            0.8s    start e2 read=1 spec (no wait) [U "i need to tell you something."]
            4.8s    commit e2 read=1
            4.8s    typing on
            4.8s    -- SPEAKING
            5.2s    send turn-2-0-r1 [1/1] "I'm listening." (seq 2)
            5.2s    end e2 Replied
            5.2s    -- IDLE
            20s     start e3 read=3 spec [U "i need to tell you something.", A "I'm listening.", U "guess what."]
            20s     -- COLLECTING
            20.8s   commit e3 read=3
            20.8s   typing on
            20.8s   typing off
            20.8s   end e3 Superseded
            20.8s   start e4 read=3 spec (no wait) [U "i need to tell you something.", A "I'm listening.", U "guess what."]
            23s     abort e4
            23s     start e5 read=4 spec [U "i need to tell you something.", A "I'm listening.", U "guess what.\ni got the job!"]
            23.8s   commit e5 read=4
            23.8s   typing on
            23.8s   -- THINKING
            24s     -- SPEAKING
            24.2s   send turn-5-0-r4 [1/1] "Congratulations!!" (seq 5)
            24.2s   end e5 Replied
            24.2s   -- IDLE
        "#]],
    );
}

#[test]
fn caption_after_photo() {
    // A bare photo looks partial (6s window). Its caption arrives at 2s and completes it: the
    // window is the 800ms of a complete bubble. (patience=800.)
    check(
        r#"
config speculate=off use_tempo=off patience=800
t=0      person: [photo]
t=2s     person: my new kitchen
t=3s     gen 1 done "Wow, it looks great!"
t=20s    person: [photo]
t=30s    gen 2 done "Nice shot."
"#,
        expect![[r#"
            0s      -- COLLECTING
            2.8s    commit e1 read=2
            2.8s    start e1 read=2 [U "[photo]\nmy new kitchen"]
            2.8s    typing on
            2.8s    -- THINKING
            3s      -- SPEAKING
            3.466s  send turn-1-0-r2 [1/1] "Wow, it looks great!" (seq 3)
            3.466s  end e1 Replied
            3.466s  -- IDLE
            20s     -- COLLECTING
            26s     commit e2 read=4
            26s     start e2 read=4 [U "[photo]\nmy new kitchen", A "Wow, it looks great!", U "[photo]"]
            26s     typing on
            26s     -- THINKING
            30s     send turn-2-0-r4 [1/1] "Nice shot." (seq 5)
            30s     end e2 Replied
            30s     -- IDLE
        "#]],
    );
}

#[test]
fn restart_after_a_crash() {
    // The process dies while e1 is generating. The restored engine finds the burst unanswered
    // (snapshot: answered_up_to 0), and its window long past: it commits at once, under an epoch
    // above every old one. The old epoch's result, should it arrive, is dropped. After the reply
    // is delivered, a second restart answers nothing again.
    check(
        r#"
config speculate=off
t=0      person: hi
t=0.5s   person: can you remind me what we said about the trip?
t=3s     restart
t=3.5s   gen 1 done "Old answer."
t=4s     gen 2 done "We said Lisbon in May."
t=10s    show snapshot
t=10s    restart
"#,
        expect![[r#"
            0s      -- COLLECTING
            1.3s    commit e1 read=2
            1.3s    start e1 read=2 [U "hi\ncan you remind me what we said about the trip?"]
            1.3s    typing on
            1.3s    -- THINKING
            3s      restart from answered_up_to=0 epoch=1 (the log's client ids say 0 and 0) and 2 logged messages
            3s      commit e2 read=2
            3s      start e2 read=2 [U "hi\ncan you remind me what we said about the trip?"]
            3s      typing on
            3s      -- THINKING
            4s      send turn-2-0-r2 [1/1] "We said Lisbon in May." (seq 3)
            4s      end e2 Replied
            4s      -- IDLE
            10s     snapshot: answered_up_to=2 epoch=2
            10s     restart from answered_up_to=2 epoch=2 (the log's client ids say 2 and 2) and 3 logged messages
        "#]],
    );
}

#[test]
fn restart_reads_what_was_answered_from_the_bubbles_client_ids() {
    // A two-bubble reply is stored (client ids turn-1-0-r2 and turn-1-1-r2), then the process
    // dies and its saved state is lost too. The log alone says that everything up to seq 2 was
    // answered by epoch 1: the restored engine answers nothing again, continues at epoch 2, and
    // answers only what came after.
    check(
        r#"
config speculate=off patience=800
t=0      person: hi
t=0.5s   person: what time is it?
t=2s     gen 1 done "Hi! It is noon."
t=5s     restart without snapshot
t=6s     person: thanks!
t=8s     gen 2 done "You are welcome."
"#,
        expect![[r#"
            0s      -- COLLECTING
            1.3s    commit e1 read=2
            1.3s    start e1 read=2 [U "hi\nwhat time is it?"]
            1.3s    typing on
            1.3s    -- THINKING
            2s      send turn-1-0-r2 [1/2] "Hi!" (seq 3)
            2s      typing on
            2s      -- SPEAKING
            2.4s    send turn-1-1-r2 [2/2] "It is noon." (seq 4)
            2.4s    end e1 Replied
            2.4s    -- IDLE
            5s      restart from answered_up_to=2 epoch=1 (the log's client ids say 2 and 1) and 4 logged messages
            6s      -- COLLECTING
            6.8s    commit e2 read=5
            6.8s    start e2 read=5 [U "hi\nwhat time is it?", A "Hi!\nIt is noon.", U "thanks!"]
            6.8s    typing on
            6.8s    -- THINKING
            8s      send turn-2-0-r5 [1/1] "You are welcome." (seq 6)
            8s      end e2 Replied
            8s      -- IDLE
        "#]],
    );
}

// --- Control words, the endpoint model, bubbles and failures ------------------------------------

#[test]
fn hold_word() {
    // "wait" holds the burst up to a fresh hard cap and starts no draft. A burst of nothing but
    // "wait" ends silent at the cap. Content after a hold is answered by its own window.
    check(
        r#"
t=0      person: wait
t=30s    person: hold on
t=32s    person: ok here it is: can we move the call to 5?
t=32.5s  gen 2 done "Yes, 5 works."
"#,
        expect![[r#"
            0s      -- COLLECTING
            10s     commit e1 read=1
            10s     end e1 Silent
            10s     -- IDLE
            30s     -- COLLECTING
            32s     start e2 read=3 spec [U "wait\nhold on\nok here it is: can we move the call to 5?"]
            32.8s   commit e2 read=3
            32.8s   typing on
            32.8s   -- SPEAKING
            33.2s   send turn-2-0-r3 [1/1] "Yes, 5 works." (seq 4)
            33.2s   end e2 Replied
            33.2s   -- IDLE
        "#]],
    );
}

#[test]
fn stop_word() {
    // "stop" cancels whatever is in progress: here the delivery of a three-bubble reply after its
    // first bubble. The stop itself is committed and ended silent. A later "nvm" out of the blue
    // is closed silently too. (patience=800: the story request is answered after 800ms.)
    check(
        r#"
config speculate=off patience=800
t=0      person: tell me a story.
t=1s     gen 1 done "Once upon a time. There was a cat. The end."
t=1.5s   person: stop
t=3s     person: nvm
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 [U "tell me a story."]
            0.8s    typing on
            0.8s    -- THINKING
            1s      -- SPEAKING
            1.366s  send turn-1-0-r1 [1/3] "Once upon a time." (seq 2)
            1.366s  typing on
            1.5s    typing off
            1.5s    end e1 Replied
            1.5s    commit e2 read=3
            1.5s    end e2 Silent
            1.5s    -- IDLE
            3s      commit e3 read=4
            3s      end e3 Silent
        "#]],
    );
}

#[test]
fn endpoint_model_verdict_and_timeout() {
    // With the model on, every bubble asks it. "done" commits at once (if nobody types); "wait"
    // sets the window; a verdict later than the timeout is ignored and the rules decide.
    check(
        r#"
config model=300 speculate=off use_tempo=off prompts=off
t=0      person: so
t=0.1s   verdict 1 done
t=1s     gen 1 done "So?"
t=10s    person: what do you think
t=10.2s  verdict 2 wait 3000
t=14s    gen 2 done "I think yes."
t=20s    person: really?
t=21s    verdict 3 wait 5000
t=22s    gen 3 done "Really."
"#,
        expect![[r#"
            0s      ask #1 read=1
            0s      -- COLLECTING
            0.1s    commit e1 read=1
            0.1s    start e1 read=1 []
            0.1s    typing on
            0.1s    -- THINKING
            1s      send turn-1-0-r1 [1/1] "So?" (seq 2)
            1s      end e1 Replied
            1s      -- IDLE
            10s     ask #2 read=3
            10s     -- COLLECTING
            13.2s   commit e2 read=3
            13.2s   start e2 read=3 []
            13.2s   typing on
            13.2s   -- THINKING
            14s     send turn-2-0-r3 [1/1] "I think yes." (seq 4)
            14s     end e2 Replied
            14s     -- IDLE
            20s     ask #3 read=5
            20s     -- COLLECTING
            20.8s   commit e3 read=5
            20.8s   start e3 read=5 []
            20.8s   typing on
            20.8s   -- THINKING
            22s     send turn-3-0-r5 [1/1] "Really." (seq 6)
            22s     end e3 Replied
            22s     -- IDLE
        "#]],
    );
}

#[test]
fn bubbles_and_cadence() {
    // Paragraphs are bubbles; at most max_bubbles (3 here), the last absorbs the rest. Before
    // each bubble the agent types len/30cps seconds, clamped to 0.4..3s; the first bubble's
    // typing counts from the commit, when the indicator went on.
    check(
        r#"
config speculate=off max_bubbles=3 prompts=off
t=0      person: how do i make tea?
t=5s     gen 1 done "Boil water.\n\nPour it over the leaves and wait three to five minutes, depending on how strong you like it.\n\nRemove the leaves.\n\nEnjoy!"
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 []
            0.8s    typing on
            0.8s    -- THINKING
            5s      send turn-1-0-r1 [1/3] "Boil water." (seq 2)
            5s      typing on
            5s      -- SPEAKING
            8s      send turn-1-1-r1 [2/3] "Pour it over the leaves and wait three to five minutes, depending on how strong you like it." (seq 3)
            8s      typing on
            8.866s  send turn-1-2-r1 [3/3] "Remove the leaves.\n\nEnjoy!" (seq 4)
            8.866s  end e1 Replied
            8.866s  -- IDLE
        "#]],
    );
}

#[test]
fn generation_failure() {
    // A failed generation ends the turn as failed; the burst stays unanswered in the snapshot
    // (a restart answers it), and the next bubble starts a new burst.
    check(
        r#"
config speculate=off prompts=off
t=0      person: hello?
t=1s     gen 1 failed
t=1s     show snapshot
t=5s     person: anyone there?
t=6s     gen 2 done "Yes, sorry!"
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 []
            0.8s    typing on
            0.8s    -- THINKING
            1s      typing off
            1s      end e1 Failed
            1s      -- IDLE
            1s      snapshot: answered_up_to=0 epoch=1
            5s      -- COLLECTING
            5.8s    commit e2 read=2
            5.8s    start e2 read=2 []
            5.8s    typing on
            5.8s    -- THINKING
            6s      -- SPEAKING
            6.2s    send turn-2-0-r2 [1/1] "Yes, sorry!" (seq 3)
            6.2s    end e2 Replied
            6.2s    -- IDLE
        "#]],
    );
}

#[test]
fn punct_ignores_typing_but_deliver_recheck_holds() {
    // `punct` ignores typing for the endpoint; the deliver-time recheck still holds the reply
    // while the person types, and drops it when they send a new bubble instead.
    check(
        r#"
config endpoint=punct speculate=off bargein=off
t=0      person: is it open today?
t=0.9s   typing
t=1.5s   gen 1 done "Yes, until 6."
t=3s     person: the pharmacy i mean
t=6s     gen 2 done "The pharmacy is open until 8."
"#,
        expect![[r#"
            0s      -- COLLECTING
            0.8s    commit e1 read=1
            0.8s    start e1 read=1 [U "is it open today?"]
            0.8s    typing on
            0.8s    -- THINKING
            1.5s    -- SPEAKING
            3s      typing off
            3s      end e1 Superseded
            3s      -- COLLECTING
            5s      commit e2 read=2
            5s      start e2 read=2 [U "is it open today?\nthe pharmacy i mean"]
            5s      typing on
            5s      -- THINKING
            6s      send turn-2-0-r2 [1/1] "The pharmacy is open until 8." (seq 3)
            6s      end e2 Replied
            6s      -- IDLE
        "#]],
    );
}

// --- The harness ---------------------------------------------------------------------------------

struct Harness {
    config: TurnConfig,
    engine: TurnEngine,
    now: Millis,
    /// The store: every person message and delivered bubble, with its seq and time.
    log: Vec<LogMessage>,
    /// The client id each stored bubble was sent with, by seq.
    client_ids: Vec<(u64, String)>,
    last_seq: u64,
    /// The snapshot as last persisted.
    persisted: TurnSnapshot,
    auto_deliver: bool,
    state: State,
    trace: String,
}

impl Harness {
    fn run(script: &str) -> String {
        let mut config = TurnConfig::default();
        let mut auto_deliver = true;
        let mut lines = Vec::new();
        for line in script.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("config") {
                assert!(lines.is_empty(), "config comes before timed lines");
                for kv in rest.split_whitespace() {
                    if kv == "manual_delivery" {
                        auto_deliver = false;
                    } else {
                        apply_config(&mut config, kv);
                    }
                }
                continue;
            }
            let (time, event) = line
                .strip_prefix("t=")
                .and_then(|l| l.split_once(char::is_whitespace))
                .unwrap_or_else(|| panic!("bad line: {line}"));
            lines.push((parse_time(time), event.trim().to_owned()));
        }
        let mut h = Harness {
            engine: TurnEngine::new(config.clone()),
            config,
            now: Millis::ZERO,
            log: Vec::new(),
            client_ids: Vec::new(),
            last_seq: 0,
            persisted: TurnSnapshot::default(),
            auto_deliver,
            state: State::Idle,
            trace: String::new(),
        };
        let mut end = Millis::ZERO;
        for (at, event) in lines {
            h.advance_to(at);
            h.event(&event);
            end = at;
        }
        h.advance_to(end.saturating_add(60_000));
        h.trace
    }

    /// Fires every timer due up to `to`, each at its deadline.
    fn advance_to(&mut self, to: Millis) {
        assert!(to >= self.now, "script times go forward");
        let mut fired = 0;
        while let Some(deadline) = self.engine.poll_timeout() {
            if deadline > to {
                break;
            }
            assert!(
                deadline > self.now || fired == 0,
                "timer did not move: {deadline:?}"
            );
            self.now = deadline.max(self.now);
            self.engine.handle_timeout(self.now);
            self.drain();
            fired += 1;
            assert!(fired < 10_000, "timer loop");
        }
        self.now = to;
    }

    fn input(&mut self, input: Input) {
        self.engine.handle_input(self.now, input);
        self.drain();
    }

    fn event(&mut self, event: &str) {
        let words: Vec<&str> = event.split_whitespace().collect();
        match words.as_slice() {
            ["person:", ..] => {
                let text = event["person:".len()..].trim();
                let (attachment, text) = match text.strip_prefix("[photo]") {
                    Some(caption) => (Some(Attachment::Photo), caption.trim()),
                    None => (None, text),
                };
                self.last_seq += 1;
                let seq = self.last_seq;
                self.log.push(LogMessage {
                    seq,
                    role: Role::User,
                    text: text.to_owned(),
                    attachment,
                    at: self.now,
                });
                self.input(Input::PersonMessage(PersonMessage {
                    seq,
                    text: text.to_owned(),
                    attachment,
                }));
            }
            ["agent:", ..] => {
                let text = event["agent:".len()..].trim().to_owned();
                self.last_seq += 1;
                let seq = self.last_seq;
                self.log.push(LogMessage {
                    seq,
                    role: Role::Assistant,
                    text: text.clone(),
                    attachment: None,
                    at: self.now,
                });
                self.input(Input::AgentMessage { seq, text });
            }
            ["typing"] => self.input(Input::PersonTyping(true)),
            ["stopped", "typing"] => self.input(Input::PersonTyping(false)),
            ["gen", e, "done", ..] => {
                let text = quoted(event);
                self.input(Input::GenerationFinished {
                    epoch: e.parse().unwrap(),
                    result: GenerationResult::Reply(text),
                });
            }
            ["gen", e, "silent"] => self.input(Input::GenerationFinished {
                epoch: e.parse().unwrap(),
                result: GenerationResult::StaySilent,
            }),
            ["gen", e, "wait", ms] => self.input(Input::GenerationFinished {
                epoch: e.parse().unwrap(),
                result: GenerationResult::WaitForMore {
                    ms: ms.parse().unwrap(),
                },
            }),
            ["gen", e, "failed"] => self.input(Input::GenerationFailed {
                epoch: e.parse().unwrap(),
                reason: "scripted".into(),
            }),
            ["gen", e, "streamed", ..] => {
                let delta = quoted(event);
                self.input(Input::GenerationStreamed {
                    epoch: e.parse().unwrap(),
                    delta,
                });
            }
            ["verdict", a, "done"] => self.input(Input::EndpointVerdict {
                ask: a.parse().unwrap(),
                done: true,
                wait_ms: 0,
            }),
            ["verdict", a, "wait", ms] => self.input(Input::EndpointVerdict {
                ask: a.parse().unwrap(),
                done: false,
                wait_ms: ms.parse().unwrap(),
            }),
            ["delivered", e, i] => self.deliver(
                e.parse().unwrap(),
                i.trim_start_matches('#').parse().unwrap(),
            ),
            ["restart", rest @ ..] => {
                if rest == ["without", "snapshot"] {
                    // The runtime's saved state is gone: only the log is left.
                    self.persisted = TurnSnapshot::default();
                }
                // What the log says, as the runtime reads it: the bubbles' client ids.
                let ids: Vec<TurnId> = self
                    .client_ids
                    .iter()
                    .map(|(_, id)| id.parse().expect("a bubble's client id is a TurnId"))
                    .collect();
                let from_log = TurnSnapshot {
                    answered_up_to: ids.iter().map(|id| id.read_up_to).max().unwrap_or(0),
                    epoch: ids.iter().map(|id| id.epoch).max().unwrap_or(0),
                    rhythm: self.persisted.rhythm,
                };
                let snapshot = TurnSnapshot {
                    answered_up_to: from_log.answered_up_to.max(self.persisted.answered_up_to),
                    epoch: from_log.epoch.max(self.persisted.epoch),
                    ..self.persisted
                };
                self.line(&format!(
                    "restart from answered_up_to={} epoch={} (the log's client ids say {} and {}) \
                     and {} logged messages",
                    snapshot.answered_up_to,
                    snapshot.epoch,
                    from_log.answered_up_to,
                    from_log.epoch,
                    self.log.len()
                ));
                self.engine =
                    TurnEngine::restore(self.config.clone(), snapshot, self.log.clone(), self.now);
                self.state = State::Idle;
                self.drain();
            }
            ["show", "snapshot"] => {
                let s = self.engine.snapshot();
                self.line(&format!(
                    "snapshot: answered_up_to={} epoch={}",
                    s.answered_up_to, s.epoch
                ));
            }
            ["show", "rhythm"] => {
                let r = self.engine.rhythm();
                let gap = r
                    .typical_gap_ms()
                    .map_or("-".into(), |g| format!("{g:.0}ms"));
                let reply = r
                    .typical_reply_ms()
                    .map_or("-".into(), |g| format!("{g:.0}ms"));
                let mut line = format!(
                    "rhythm: typical gap {gap} (sd {:.2}, n={}), typical reply {reply} (n={})",
                    r.gap_log_var.sqrt(),
                    r.gap_samples,
                    r.reply_samples
                );
                if r.typing_starts > 0 {
                    line.push_str(&format!(
                        ", pauses {:.2}, typing starts {}",
                        r.pause_rate, r.typing_starts
                    ));
                }
                self.line(&line);
            }
            ["tick"] => {}
            _ => panic!("unknown event: {event}"),
        }
    }

    fn deliver(&mut self, epoch: u64, index: u32) {
        self.last_seq += 1;
        let seq = self.last_seq;
        self.input(Input::BubbleDelivered { epoch, index, seq });
    }

    /// Drains the outputs into the trace; stores and acknowledges bubbles.
    fn drain(&mut self) {
        let mut deliveries = Vec::new();
        while let Some(out) = self.engine.poll_output() {
            let text = match out {
                Output::StartGeneration {
                    epoch,
                    read_up_to,
                    prompt,
                    speculative,
                } => format!(
                    "start e{epoch} read={read_up_to}{}{} {}",
                    if speculative { " spec" } else { "" },
                    if prompt.allow_wait { "" } else { " (no wait)" },
                    render(&prompt)
                ),
                Output::AbortGeneration { epoch } => format!("abort e{epoch}"),
                Output::ShowTyping(on) => format!("typing {}", if on { "on" } else { "off" }),
                Output::SendBubble {
                    epoch,
                    read_up_to,
                    text,
                    index,
                    of,
                } => {
                    let id = TurnId {
                        epoch,
                        index,
                        read_up_to,
                    }
                    .to_string();
                    let stored = if self.auto_deliver {
                        self.last_seq += 1;
                        let seq = self.last_seq;
                        deliveries.push((epoch, index, seq));
                        self.log.push(LogMessage {
                            seq,
                            role: Role::Assistant,
                            text: text.clone(),
                            attachment: None,
                            at: self.now,
                        });
                        self.client_ids.push((seq, id.clone()));
                        format!(" (seq {seq})")
                    } else {
                        String::new()
                    };
                    format!("send {id} [{}/{of}] {text:?}{stored}", index + 1)
                }
                Output::Committed { epoch, read_up_to } => {
                    format!("commit e{epoch} read={read_up_to}")
                }
                Output::TurnEnded { epoch, outcome } => format!("end e{epoch} {outcome:?}"),
                Output::AskEndpoint {
                    ask, read_up_to, ..
                } => format!("ask #{ask} read={read_up_to}"),
            };
            self.line(&text);
        }
        let state = self.engine.state();
        if state != self.state {
            self.state = state;
            self.line(&format!("-- {}", format!("{state:?}").to_uppercase()));
        }
        if let Some(deadline) = self.engine.poll_timeout() {
            assert!(
                deadline > self.now,
                "poll_timeout {deadline:?} not after {:?}",
                self.now
            );
        }
        self.persisted = self.engine.snapshot();
        for (epoch, index, seq) in deliveries {
            self.engine
                .handle_input(self.now, Input::BubbleDelivered { epoch, index, seq });
            self.drain();
        }
    }

    fn line(&mut self, text: &str) {
        self.trace
            .push_str(&format!("{:<8}{text}\n", fmt_time(self.now)));
    }
}

fn apply_config(c: &mut TurnConfig, kv: &str) {
    let (k, v) = kv.split_once('=').unwrap_or((kv, "on"));
    let on = || match v {
        "on" | "true" => true,
        "off" | "false" => false,
        _ => panic!("bad switch {kv}"),
    };
    let num = || {
        v.parse::<u64>()
            .unwrap_or_else(|_| panic!("bad number {kv}"))
    };
    match k {
        "endpoint" => {
            c.endpoint = match v.split_once(':') {
                Some(("fixed", ms)) => EndpointPolicy::Fixed {
                    window_ms: ms.parse().unwrap(),
                },
                Some(("typing", ms)) => EndpointPolicy::Typing {
                    window_ms: ms.parse().unwrap(),
                },
                None if v == "punct" => EndpointPolicy::Punct,
                None if v == "adaptive" => EndpointPolicy::Adaptive,
                _ => panic!("bad endpoint {v}"),
            }
        }
        "bargein" => c.bargein = on(),
        "deliver_recheck" => c.deliver_recheck = on(),
        "bargein_recheck" => c.bargein_recheck = on(),
        "speculate" => c.speculate = on(),
        "control_words" => c.control_words = on(),
        "learn_rhythm" => c.learn_rhythm = on(),
        "use_tempo" => c.use_tempo = on(),
        "prompts" => c.build_prompt = on(),
        "model" => c.endpoint_model_timeout_ms = Some(num()),
        "max_spec_restarts" => c.max_spec_restarts = num() as u32,
        "max_bubbles" => c.max_bubbles = num() as u32,
        "typing_cps" => c.typing_cps = num() as u32,
        "hard_cap" => c.window_hard_cap_ms = num(),
        "patience" => c.endpoint_patience_ms = num(),
        "text_model" => c.completeness_model = on(),
        _ => panic!("unknown config key {k}"),
    }
}

fn parse_time(s: &str) -> Millis {
    let ms = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<u64>().unwrap()
    } else {
        let secs: f64 = s.trim_end_matches('s').parse().unwrap();
        (secs * 1000.0).round() as u64
    };
    Millis(ms)
}

fn fmt_time(t: Millis) -> String {
    let s = format!("{}.{:03}", t.0 / 1000, t.0 % 1000);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

/// The text between the first and the last double quote, with `\n` unescaped.
fn quoted(event: &str) -> String {
    let (Some(a), Some(b)) = (event.find('"'), event.rfind('"')) else {
        panic!("no quoted text in {event}");
    };
    event[a + 1..b].replace("\\n", "\n")
}

fn render(prompt: &Prompt) -> String {
    let turns: Vec<String> = prompt
        .turns
        .iter()
        .map(|t| {
            let who = match t.role {
                Role::User => "U",
                Role::Assistant => "A",
            };
            format!("{who} {:?}", t.text)
        })
        .collect();
    format!("[{}]", turns.join(", "))
}
