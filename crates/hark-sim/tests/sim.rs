//! The simulator end to end: metrics computed by hand on a tiny trace, typing synthesis,
//! determinism and the JSON shape.

use std::path::{Path, PathBuf};

use hark_core::turn::{cadence_ms, split_bubbles};
use hark_sim::policy::Policy;
use hark_sim::report::{PolicyReport, to_json};
use hark_sim::sim::LlmModel;
use hark_sim::trace::{ConversationBuilder, EventKind, Trace};
use hark_sim::{ConditionRun, SimArgs, TypingSpeed, evaluate, simulate, typing};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const LLM: LlmModel = LlmModel {
    ttft_ms: 600,
    tokens_per_s: 40.0,
    reply_tokens: 20,
};

/// Ann: "hey" at 1 s, types from 4 s, "so what about dinner?" at 6 s (turn 1, ends at 6 s).
/// Bob: "pizza" at 31 s (turn 2). Ann: "ok." at 61 s (turn 3).
fn tiny() -> Trace {
    let mut b = ConversationBuilder::new("c1");
    b.message("ann", 1000, "hey", None);
    b.typing("ann", 4000, true);
    b.message("ann", 6000, "so what about dinner?", None);
    b.message("bob", 31_000, "pizza", None);
    b.message("ann", 61_000, "ok.", None);
    Trace::from_conversations(vec![b.build()])
}

fn run(trace: &Trace, policy: &str) -> PolicyReport {
    let p = Policy::parse(policy).unwrap();
    simulate(trace, &[p], &LLM, 1, false).remove(0)
}

/// The engine shows typing for the first bubble from the commit: the bubble goes out at
/// commit + max(generation, cadence). Generation is 600 + 20 / 40 s = 1100 ms; the first bubble
/// is 41 characters, typed at 30 chars/s: 1366 ms.
const CADENCE: u64 = 1366;

#[test]
fn the_stand_in_llm() {
    assert_eq!(LLM.generation_ms(), 1100);
    let bubbles = split_bubbles(&LLM.reply(7), 4);
    assert_eq!(bubbles.len(), 2);
    assert_eq!(bubbles[0].chars().count(), 41);
    assert_eq!(cadence_ms(41, 30, 400, 3000), CADENCE);
    assert_ne!(LLM.reply(7), LLM.reply(8), "each epoch says something new");
    assert_eq!(LLM.reply(7).len(), LLM.reply(8).len());
}

#[test]
fn fixed_by_hand() {
    // Turn 1: the 2 s debounce closes at 3 s, before "so what about dinner?" (6 s): the reply
    // (read only "hey") goes out at 3 s + 1366 ms. Premature. The second bubble waits for the
    // next turn: a second generation. Turns 2 and 3: one bubble each, commit at end + 2 s,
    // first bubble at end + 2 s + 1366 ms.
    let r = run(&tiny(), "fixed:2000");
    assert_eq!(r.turns, 3);
    assert_eq!(r.premature, 1);
    assert_eq!(r.dead_air_ms, [2000 + CADENCE, 2000 + CADENCE]);
    assert_eq!(r.endpoint_ms, [2000, 2000]);
    assert_eq!(r.llm_calls, 4);
    assert_eq!(r.wasted_tokens, 0.0);
    assert_eq!(r.dead_air(0.5), Some(2000 + CADENCE));
}

#[test]
fn typing_by_hand() {
    // Turn 1: the 2 s window after "hey" closes at 3 s: commit, generation until 4.1 s. Ann types
    // from 4 s, so the deliver-time recheck holds the reply; "so what about dinner?" at 6 s
    // supersedes it (20 tokens wasted, not premature) and the burst is collected again: commit at
    // 8 s, first bubble at 8 s + 1366 ms. Turns 2 and 3 as under fixed:2000.
    let r = run(&tiny(), "typing");
    assert_eq!(r.premature, 0);
    assert_eq!(r.dead_air_ms, [2000 + CADENCE; 3]);
    assert_eq!(r.endpoint_ms, [2000; 3]);
    assert_eq!(r.llm_calls, 4);
    assert_eq!(r.wasted_tokens, 20.0);

    // Without the deliver-time recheck nothing holds the reply: it goes out at 3 s + 1366 ms,
    // while Ann is typing the rest of her turn. Premature.
    let r = run(&tiny(), "typing-nobargein");
    assert_eq!(r.premature, 1);
    assert_eq!(r.dead_air_ms, [2000 + CADENCE; 2]);

    // Hidden typing: the recheck has nothing to hold on, the reply crosses Ann's typing.
    let r = run(&tiny(), "typing-notyping");
    assert_eq!(r.premature, 1);
}

#[test]
fn oracle_by_hand() {
    // Commits exactly at every turn's end: endpoint delay 0, dead air = max(generation, cadence).
    let r = run(&tiny(), "oracle");
    assert_eq!(r.premature, 0);
    assert_eq!(r.endpoint_ms, [0; 3]);
    assert_eq!(r.dead_air_ms, [CADENCE; 3]);
    assert_eq!(r.llm_calls, 3);
    assert_eq!(r.wasted_tokens, 0.0);
}

#[test]
fn typing_synthesis() {
    let mut b = ConversationBuilder::new("c");
    b.message("ann", 10_000, "hello there", None); // 11 chars: 3667 ms at 3 cps
    b.message("ann", 11_000, "how are you", None); // would start at 7333: not before 10 s
    b.message("ann", 11_000, "x", None); // the same instant: no room to type
    b.message("bob", 200_000, "y".repeat(300), None); // 100 s at 3 cps, clamped to 60 s
    b.message("ann", 201_000, "", Some(hark_core::turn::Attachment::Photo)); // no text
    let mut c = b.build();
    assert!(typing::synthesise(&mut c, 3.0));
    let typing: Vec<(u64, usize)> = c
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Typing(true))
        .map(|e| (e.ts_ms, e.sender))
        .collect();
    assert_eq!(typing, [(10_000 - 3667, 0), (10_000, 0), (140_000, 1)]);
    assert!(c.events.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
    // A conversation with typing of its own is left alone.
    assert!(!typing::synthesise(&mut c, 3.0));
}

fn args() -> SimArgs {
    let mut a = SimArgs::new(fixture("chat.jsonl"));
    a.typing_cps = vec![TypingSpeed::Cps(3.0)];
    a
}

/// The one condition of a run.
fn one(runs: Vec<ConditionRun>) -> (hark_sim::report::TraceSummary, Vec<PolicyReport>) {
    assert_eq!(runs.len(), 1);
    let r = runs.into_iter().next().unwrap();
    (r.summary, r.reports)
}

#[test]
fn deterministic_whatever_the_threads() {
    let mut one_thread = args();
    one_thread.jobs = Some(1);
    let mut three = args();
    three.jobs = Some(3);
    let (s1, r1) = one(evaluate(&one_thread, false).unwrap());
    let (s3, r3) = one(evaluate(&three, false).unwrap());
    let (s3b, r3b) = one(evaluate(&three, false).unwrap());
    let a = to_json(&s1, &r1).to_string();
    assert_eq!(a, to_json(&s3, &r3).to_string());
    assert_eq!(a, to_json(&s3b, &r3b).to_string());
}

#[test]
fn json_shape() {
    let (summary, reports) = one(evaluate(&args(), false).unwrap());
    let v = to_json(&summary, &reports);
    let trace = &v["trace"];
    assert_eq!(trace["format"], "jsonl");
    assert_eq!(trace["conversations"], 2);
    assert_eq!(trace["skipped_one_sender"], 1);
    assert_eq!(trace["messages"], 6);
    assert_eq!(trace["turns"], 5);
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), hark_sim::policy::DEFAULT_POLICIES.len());
    assert_eq!(policies[0]["policy"], "fixed:800");
    for p in policies {
        assert!(p["policy"].is_string());
        assert_eq!(p["turns"], 5);
        assert!(p["premature_rate"].is_f64());
        for key in ["dead_air_ms", "endpoint_delay_ms"] {
            for q in ["p50", "p90"] {
                assert!(p[key][q].is_u64() || p[key][q].is_null(), "{key}.{q}: {p}");
            }
        }
        assert!(p["llm_calls_per_turn"].is_number());
        assert!(p["wasted_tokens_per_turn"].is_number());
    }
    let oracle = policies.iter().find(|p| p["policy"] == "oracle").unwrap();
    assert_eq!(oracle["premature_rate"], 0.0);
    assert_eq!(oracle["endpoint_delay_ms"]["p90"], 0);
    assert!(matches!(v, Value::Object(ref o) if o.len() == 2));
}

#[test]
fn typing_before_the_first_message_reaches_the_engine() {
    // The conversation opens with Ann typing: the engine learns that her client sends typing (its
    // rhythm counts the typing start), unless the policy hides typing. Either way her first
    // statement, from a newcomer, is answered at the short window (800 ms), not held to the cap.
    let mut b = ConversationBuilder::new("c");
    b.typing("ann", 0, true);
    b.message("ann", 2000, "i had the best day", None);
    b.message("bob", 30_000, "tell me", None);
    let trace = Trace::from_conversations(vec![b.build()]);
    let episodes = hark_sim::sim::episodes(&trace.conversations[0]);
    for (policy, typing_starts) in [("default", 1), ("default-notyping", 0)] {
        let p = Policy::parse(policy).unwrap();
        let (result, rhythm) = hark_sim::sim::run_episode(
            &episodes[0],
            hark_core::turn::PersonRhythm::default(),
            &p,
            &LLM,
        );
        assert_eq!(rhythm.typing_starts, typing_starts, "{policy}");
        assert_eq!(result.endpoint_ms, Some(800), "{policy}: {result:?}");
        assert!(!result.premature);
    }
}

#[test]
fn a_trace_with_no_turn_to_replay_is_an_error_with_a_sentence() {
    // Two conversations, each with one sender: nobody answered anybody.
    let err = evaluate(&SimArgs::new(fixture("one-sender.jsonl")), false).unwrap_err();
    assert!(matches!(err, hark_sim::SimError::NoTurns(_)), "{err:?}");
    assert!(err.to_string().contains("holds no turn to replay"), "{err}");
}

#[test]
fn the_sweep_is_deterministic_and_shaped() {
    let mut a = SimArgs::new(fixture("chat.jsonl"));
    a.typing_cps = vec![TypingSpeed::Cps(3.0), TypingSpeed::None];
    a.jobs = Some(1);
    let single = hark_sim::sweep::sweep(&a, false).unwrap();
    a.jobs = Some(3);
    let three = hark_sim::sweep::sweep(&a, false).unwrap();
    let json = hark_sim::sweep::to_json(&single);
    assert_eq!(
        json,
        hark_sim::sweep::to_json(&three),
        "whatever the threads"
    );
    assert_eq!(
        hark_sim::sweep::to_table(&single),
        hark_sim::sweep::to_table(&three)
    );

    let conditions = json["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2);
    assert_eq!(conditions[0]["typing_cps"], 3.0);
    assert!(conditions[1]["typing_cps"].is_null());
    for c in conditions {
        let families = c["families"].as_object().unwrap();
        let names: Vec<&str> = families.keys().map(String::as_str).collect();
        assert_eq!(names, ["fixed", "typing+spec", "engine"]);
        assert_eq!(
            families["fixed"]["points"].as_array().unwrap().len(),
            hark_sim::sweep::WINDOWS_MS.len()
        );
        assert_eq!(
            families["engine"]["points"].as_array().unwrap().len(),
            hark_sim::sweep::PATIENCE_MS.len()
        );
        for b in hark_sim::sweep::DEAD_AIR_BUDGETS_MS {
            let at = &families["engine"]["premature_at_dead_air_ms"][b.to_string()];
            assert!(at.is_f64() || at.is_null(), "{at}");
        }
        // The p90 frontier: at every budget a rate or nothing, for each family and the envelope.
        for b in hark_sim::sweep::P90_BUDGETS_MS {
            let key = b.to_string();
            let env = &c["envelope_premature_at_p90_dead_air_ms"][&key];
            assert!(env.is_f64() || env.is_null(), "{env}");
            for f in ["fixed", "typing+spec", "engine"] {
                let p90 = &families[f]["premature_at_p90_dead_air_ms"][&key];
                assert!(p90.is_f64() || p90.is_null(), "{f} {p90}");
            }
        }
        assert_eq!(
            c["default"]["endpoint_patience_ms"],
            hark_core::turn::TurnConfig::default().endpoint_patience_ms
        );
    }

    // The default's point is exactly what `--policy default` measures in that condition.
    let mut b = SimArgs::new(fixture("chat.jsonl"));
    b.typing_cps = vec![TypingSpeed::Cps(3.0)];
    b.policies = vec!["default".into()];
    let (_, reports) = one(evaluate(&b, false).unwrap());
    let d = single[0].default;
    assert_eq!(d.premature, reports[0].premature_rate());
    assert_eq!(d.p50_ms, reports[0].dead_air(0.5));
    assert_eq!(d.p90_ms, reports[0].dead_air(0.9));
}
