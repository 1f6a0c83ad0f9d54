//! Data-driven tests of the turn engine's pure helpers: completeness, control words, bubble
//! splitting, typing cadence and the rhythm model. Each is a table in, a table out.

use expect_test::{Expect, expect};
use hark_core::turn::{
    Attachment, PersonRhythm, TurnConfig, cadence_ms, completeness, control_word, split_bubbles,
};

fn check_lines(input: &str, f: impl Fn(&str) -> String, expect: Expect) {
    let mut out = String::new();
    for line in input.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(&format!("{line:<34} {}\n", f(line)));
    }
    expect.assert_eq(&out);
}

#[test]
fn completeness_of_a_bubble() {
    check_lines(
        r#"
what time is the game?
sounds good.
yes!!
see you there 😂
love it ❤️
thumbs up 👍🏽
ok :)
(really?)
"fine."
ok
thanks
haha
that was fun lol
so the thing is,
and then...
well…
i was thinking about
and
so
i
um
hey
pizza tonight
i think so
can we talk
"#,
        |t| format!("{:?}", completeness(t, None)),
        expect![[r#"
            what time is the game?             Complete
            sounds good.                       Complete
            yes!!                              Complete
            see you there 😂                    Complete
            love it ❤️                         Complete
            thumbs up 👍🏽                       Complete
            ok :)                              Complete
            (really?)                          Complete
            "fine."                            Complete
            ok                                 Complete
            thanks                             Complete
            haha                               Complete
            that was fun lol                   Complete
            so the thing is,                   Partial
            and then...                        Partial
            well…                              Partial
            i was thinking about               Neutral
            and                                Partial
            so                                 Partial
            i                                  Partial
            um                                 Partial
            hey                                Neutral
            pizza tonight                      Neutral
            i think so                         Neutral
            can we talk                        Neutral
        "#]],
    );
}

#[test]
fn completeness_of_attachments() {
    let table: Vec<String> = [
        ("", Some(Attachment::Photo)),
        ("", Some(Attachment::Video)),
        ("", Some(Attachment::File)),
        ("", Some(Attachment::Audio)),
        ("", Some(Attachment::Sticker)),
        ("look at this!", Some(Attachment::Photo)),
        ("my kitchen and", Some(Attachment::Photo)),
        ("", None),
    ]
    .iter()
    .map(|(t, a)| format!("{t:?} {a:?} -> {:?}", completeness(t, *a)))
    .collect();
    expect![[r#"
        "" Some(Photo) -> Partial
        "" Some(Video) -> Partial
        "" Some(File) -> Partial
        "" Some(Audio) -> Complete
        "" Some(Sticker) -> Complete
        "look at this!" Some(Photo) -> Complete
        "my kitchen and" Some(Photo) -> Partial
        "" None -> Neutral"#]]
    .assert_eq(&table.join("\n"));
}

#[test]
fn control_words() {
    check_lines(
        r#"
wait
Wait!!
wait...
hold on
Hang on a sec
one sec
brb
stop
STOP.
nvm
never mind
forget it
wait what?
stop by later?
don't stop
"#,
        |t| format!("{:?}", control_word(t)),
        expect![[r#"
            wait                               Some(Hold)
            Wait!!                             Some(Hold)
            wait...                            Some(Hold)
            hold on                            Some(Hold)
            Hang on a sec                      Some(Hold)
            one sec                            Some(Hold)
            brb                                Some(Hold)
            stop                               Some(Stop)
            STOP.                              Some(Stop)
            nvm                                Some(Stop)
            never mind                         Some(Stop)
            forget it                          Some(Stop)
            wait what?                         None
            stop by later?                     None
            don't stop                         None
        "#]],
    );
}

fn bubbles(reply: &str, max: u32) -> String {
    split_bubbles(reply, max)
        .iter()
        .map(|b| format!("[{b}]"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn bubble_splitting() {
    let cases = [
        ("Sure!", 4),
        ("Sure! I can help. What time works?", 4),
        ("One. Two. Three. Four. Five. Six.", 4),
        (
            "First paragraph. Still first.\n\nSecond one.\n\n\nThird.",
            4,
        ),
        ("A.\n\nB.\n\nC.\n\nD.\n\nE.", 3),
        ("Use e.g. tea. Or coffee.", 4),
        ("It costs 3.50 today. Cheap!", 4),
        ("Steps:\n1. Boil.\n2. Pour.", 4),
        ("Wait... really?! Yes.", 4),
        ("He said \"go.\" Then left.", 4),
        ("Options:\n- tea\n- coffee. Both good.", 4),
        ("sure! i can help.", 4),
        ("no-punctuation-at-all here", 4),
        ("   ", 4),
        ("Anything. At all.", 0),
    ];
    let out: Vec<String> = cases
        .iter()
        .map(|(r, m)| format!("{r:?} max={m} -> {}", bubbles(r, *m)))
        .collect();
    expect![[r#"
        "Sure!" max=4 -> [Sure!]
        "Sure! I can help. What time works?" max=4 -> [Sure!] [I can help.] [What time works?]
        "One. Two. Three. Four. Five. Six." max=4 -> [One.] [Two.] [Three.] [Four. Five. Six.]
        "First paragraph. Still first.\n\nSecond one.\n\n\nThird." max=4 -> [First paragraph. Still first.] [Second one.] [Third.]
        "A.\n\nB.\n\nC.\n\nD.\n\nE." max=3 -> [A.] [B.] [C.

        D.

        E.]
        "Use e.g. tea. Or coffee." max=4 -> [Use e.g. tea.] [Or coffee.]
        "It costs 3.50 today. Cheap!" max=4 -> [It costs 3.50 today.] [Cheap!]
        "Steps:\n1. Boil.\n2. Pour." max=4 -> [Steps:
        1. Boil.
        2. Pour.]
        "Wait... really?! Yes." max=4 -> [Wait... really?!] [Yes.]
        "He said \"go.\" Then left." max=4 -> [He said "go."] [Then left.]
        "Options:\n- tea\n- coffee. Both good." max=4 -> [Options:
        - tea
        - coffee. Both good.]
        "sure! i can help." max=4 -> [sure! i can help.]
        "no-punctuation-at-all here" max=4 -> [no-punctuation-at-all here]
        "   " max=4 -> 
        "Anything. At all." max=0 -> [Anything. At all.]"#]]
    .assert_eq(&out.join("\n"));
}

#[test]
fn bubbles_never_split_inside_a_word_and_keep_every_word() {
    let replies = [
        "Sure! I can help. What time works?",
        "Hmm... maybe. Let's see: Mon, Tue? Or Wed!",
        "Ünïcödé wörks. Ça va? 日本語。テスト. 🎉 Done.",
        "A.B.C. is an acronym. x.y",
    ];
    for reply in replies {
        for max in 1..6 {
            let bubbles = split_bubbles(reply, max);
            assert!(bubbles.len() <= max as usize);
            let words: Vec<&str> = reply.split_whitespace().collect();
            let rejoined: Vec<&str> = bubbles.iter().flat_map(|b| b.split_whitespace()).collect();
            assert_eq!(words, rejoined, "{reply:?} into {max}");
        }
    }
}

#[test]
fn typing_cadence() {
    let c = TurnConfig::default();
    let out: Vec<String> = [0, 5, 12, 30, 60, 90, 200]
        .iter()
        .map(|&n| {
            let ms = cadence_ms(
                n,
                c.typing_cps,
                c.typing_cadence_min_ms,
                c.typing_cadence_max_ms,
            );
            format!("{n} chars -> {ms}ms")
        })
        .collect();
    expect![[r#"
        0 chars -> 400ms
        5 chars -> 400ms
        12 chars -> 400ms
        30 chars -> 1000ms
        60 chars -> 2000ms
        90 chars -> 3000ms
        200 chars -> 3000ms"#]]
    .assert_eq(&out.join("\n"));
    assert_eq!(
        cadence_ms(30, 0, 400, 3000),
        3000,
        "0 cps: the longest cadence"
    );
}

#[test]
fn rhythm_learns_online_and_round_trips() {
    let mut r = PersonRhythm::default();
    assert_eq!(r.typical_gap_ms(), None);
    for gap in [1000, 2000, 4000, 0] {
        r.observe_gap(gap);
    }
    r.observe_reply_latency(10_000_000);
    let restored = PersonRhythm { ..r };
    assert_eq!(
        restored, r,
        "plain fields: the runtime persists and restores them as they are"
    );
    expect!["gap median 946ms over 4, log sd 1.39, reply median 600000ms over 1"].assert_eq(
        &format!(
            "gap median {:.0}ms over {}, log sd {:.2}, reply median {:.0}ms over {}",
            r.typical_gap_ms().unwrap(),
            r.gap_samples,
            r.gap_log_var.sqrt(),
            r.typical_reply_ms().unwrap(),
            r.reply_samples
        ),
    );
    // After many samples the weight of one sample is 0.1: the model follows a change of pace.
    for _ in 0..50 {
        r.observe_gap(8000);
    }
    let typical = r.typical_gap_ms().unwrap();
    assert!((7900.0..8100.0).contains(&typical), "{typical}");
}
