//! Data-driven tests of the turn engine's pure helpers: completeness, control words, bubble
//! splitting, typing cadence, the rhythm model, the learned completeness model and the endpoint
//! decision. Each is a table in, a table out.

use expect_test::{Expect, expect};
use hark_core::turn::{
    Attachment, Completeness, CompletenessModel, Evidence, PersonRhythm, TurnConfig, cadence_ms,
    completeness, control_word, decide, split_bubbles,
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
    // Two quick resumptions (not pauses) and two pauses.
    for gap in [200, 1000, 4000, 2000] {
        r.observe_gap(gap);
    }
    r.observe_reply_latency(10_000_000);
    let restored = PersonRhythm { ..r };
    assert_eq!(
        restored, r,
        "plain fields: the runtime persists and restores them as they are"
    );
    expect![
        "pauses 0.50 of 4 gaps, pause median 2828ms, log sd 0.35, reply median 600000ms over 1"
    ]
    .assert_eq(&format!(
        "pauses {:.2} of {} gaps, pause median {:.0}ms, log sd {:.2}, reply median {:.0}ms over {}",
        r.pause_rate,
        r.gap_samples,
        r.typical_gap_ms().unwrap(),
        r.gap_log_var.sqrt(),
        r.typical_reply_ms().unwrap(),
        r.reply_samples
    ));
    // After many samples the weight of one sample is 0.1: the model follows a change of pace.
    for _ in 0..50 {
        r.observe_gap(8000);
    }
    let typical = r.typical_gap_ms().unwrap();
    assert!((7900.0..8100.0).contains(&typical), "{typical}");
    assert!(r.pause_rate > 0.99, "{}", r.pause_rate);
}

#[test]
fn the_learned_completeness_model_ranks_endings() {
    // Not a measurement (that is `hark sim --eval-completeness`): a sanity check that the shipped
    // weights point the right way on bubbles whose meaning is plain.
    let m = CompletenessModel::builtin();
    let p = |text: &str| m.probability(text, None, 0);
    assert!(
        p("ok thanks, bye!") > p("so the thing is"),
        "a goodbye ends more than a lead-in"
    );
    assert!(
        p("what do you think?") > p("and then"),
        "a question ends more than a conjunction"
    );
    for text in ["", "hi", "😀", "a very long bubble ".repeat(40).as_str()] {
        let x = p(text);
        assert!(x > 0.0 && x < 1.0, "{text:?}: {x}");
    }
}

fn evidence(class: Completeness, question: bool, index: u32, typing: bool) -> Evidence {
    Evidence {
        class,
        question,
        index,
        model_logit: None,
        typing,
        cap_left_ms: 10_000,
    }
}

/// A person whose client sends typing, after `gaps` quiet gaps (each `gap_ms`) over `bursts`
/// bursts that followed a reply of the agent.
fn typist(gaps: &[u64], bursts: u32) -> PersonRhythm {
    let mut r = PersonRhythm::default();
    r.observe_typing_start();
    for &g in gaps {
        r.observe_gap(g);
    }
    for _ in 0..bursts {
        r.observe_reply_latency(15_000);
    }
    r
}

#[test]
fn the_decision_in_a_table() {
    // Window (ms) and P(this bubble ends the turn) at the default patience (3600ms), by who is
    // typing and what they sent. The floor is 800ms; a bubble that trails off never waits less
    // than 6s; nothing waits longer than the patience (or the hard cap).
    let config = TurnConfig {
        completeness_model: false,
        ..TurnConfig::default()
    };
    let newcomer = PersonRhythm::default();
    let mut typing_newcomer = PersonRhythm::default();
    typing_newcomer.observe_typing_start();
    let never_pauses = typist(&[0; 12], 6);
    let pauses_often = typist(&[3000, 200, 2500, 3500, 2800, 3000, 150, 2600], 4);
    let cases: [(&str, Evidence, &PersonRhythm); 9] = [
        (
            "newcomer, no typing, statement",
            evidence(Completeness::Neutral, false, 0, false),
            &newcomer,
        ),
        (
            "newcomer, no typing, 2nd bubble",
            evidence(Completeness::Neutral, false, 1, false),
            &newcomer,
        ),
        (
            "newcomer, typing, statement",
            evidence(Completeness::Neutral, false, 0, true),
            &typing_newcomer,
        ),
        (
            "newcomer, typing, question",
            evidence(Completeness::Complete, true, 0, true),
            &typing_newcomer,
        ),
        (
            "newcomer, typing, trails off",
            evidence(Completeness::Partial, false, 0, true),
            &typing_newcomer,
        ),
        (
            "never pauses, statement",
            evidence(Completeness::Neutral, false, 0, true),
            &never_pauses,
        ),
        (
            "pauses often, statement",
            evidence(Completeness::Neutral, false, 0, true),
            &pauses_often,
        ),
        (
            "pauses often, question",
            evidence(Completeness::Complete, true, 0, true),
            &pauses_often,
        ),
        (
            "pauses often, 4th bubble",
            evidence(Completeness::Neutral, false, 3, true),
            &pauses_often,
        ),
    ];
    let mut out = String::new();
    for (name, ev, rhythm) in cases {
        let d = decide(&ev, rhythm, &config);
        out.push_str(&format!(
            "{name:<32} window {:>5}  P(end) {:.2}  pauses {:.2} of median {:.1}s\n",
            d.window_ms,
            d.p_end,
            d.pause_share,
            d.pause_median_ms / 1000.0
        ));
    }
    expect![[r#"
        newcomer, no typing, statement   window  3600  P(end) 0.51  pauses 0.95 of median 10.0s
        newcomer, no typing, 2nd bubble  window   800  P(end) 0.58  pauses 0.95 of median 10.0s
        newcomer, typing, statement      window   800  P(end) 0.51  pauses 0.49 of median 8.0s
        newcomer, typing, question       window   800  P(end) 0.76  pauses 0.49 of median 8.0s
        newcomer, typing, trails off     window  6000  P(end) 0.38  pauses 0.49 of median 8.0s
        never pauses, statement          window   800  P(end) 0.34  pauses 0.11 of median 8.0s
        pauses often, statement          window  3600  P(end) 0.35  pauses 0.68 of median 4.1s
        pauses often, question           window  3600  P(end) 0.63  pauses 0.68 of median 4.1s
        pauses often, 4th bubble         window  3600  P(end) 0.29  pauses 0.68 of median 4.1s
    "#]]
    .assert_eq(&out);
}

#[test]
fn more_patience_never_shortens_a_window_and_the_ceiling_holds() {
    let rhythms = [
        PersonRhythm::default(),
        typist(&[0; 12], 6),
        typist(&[3000, 200, 2500, 3500, 2800, 3000, 150, 2600], 4),
    ];
    for rhythm in &rhythms {
        for class in [
            Completeness::Neutral,
            Completeness::Complete,
            Completeness::Partial,
        ] {
            for typing in [false, true] {
                for cap_left_ms in [500, 4000, 10_000] {
                    let mut last = 0;
                    for patience in [800, 2000, 3600, 6000, 10_000, 40_000] {
                        let config = TurnConfig {
                            endpoint_patience_ms: patience,
                            ..TurnConfig::default()
                        };
                        let ev = Evidence {
                            cap_left_ms,
                            ..evidence(class, false, 0, typing)
                        };
                        let w = decide(&ev, rhythm, &config).window_ms;
                        assert!(w >= last, "{class:?} {typing} {patience}: {w} < {last}");
                        assert!(w <= cap_left_ms, "never past the hard cap");
                        let floor = if class == Completeness::Partial {
                            6000
                        } else {
                            800
                        };
                        assert!(
                            w <= patience.max(floor).min(cap_left_ms),
                            "{class:?} {patience}: {w}"
                        );
                        last = w;
                    }
                }
            }
        }
    }
}

#[test]
fn tempo_moves_the_expected_pause() {
    // Same evidence and rhythm; only how fast the person answers the agent differs. A person in a
    // fast back-and-forth is expected to pause a little shorter than one in a cold chat.
    let config = TurnConfig::default();
    let ev = evidence(Completeness::Neutral, false, 0, true);
    let with_latency = |ms: u64| {
        let mut r = typist(&[3000, 3000], 0);
        for _ in 0..3 {
            r.observe_reply_latency(ms);
        }
        decide(&ev, &r, &config).pause_median_ms
    };
    let (fast, neutral, cold) = (
        with_latency(2000),
        with_latency(15_000),
        with_latency(300_000),
    );
    assert!(fast < neutral && neutral < cold, "{fast} {neutral} {cold}");
    let off = TurnConfig {
        use_tempo: false,
        ..TurnConfig::default()
    };
    let mut r = typist(&[3000, 3000], 0);
    for _ in 0..3 {
        r.observe_reply_latency(2000);
    }
    assert_eq!(
        decide(&ev, &r, &off).pause_median_ms,
        neutral,
        "use_tempo off: no shift"
    );
}
